// cxx_exceptions.cpp: C++ exceptions through JIT-compiled frames. A throw 40 frames deep caught
// in main (std::runtime_error and a class hierarchy caught by base), destructors of locals
// run while unwinding (RAII), a rethrow from a catch block, a catch(...) that translates, a
// throw out of a std::sort comparator (guest → libstdc++ template → guest), a throw out of a
// qsort comparator through libc's frames (guest → libc → guest), std::vector::at's
// std::out_of_range from libstdc++, and hot loops whose frames OSR can move while calls below
// them throw now and then (the exception then unwinds through the moved frames), and 20,000
// throws through a frame whose local array's address escapes.
// uppercut-test: args=""
// uppercut-test: args="4"
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

static int live_guards;
static long guard_log;

struct Guard {
  int id;
  explicit Guard(int i) : id(i) { live_guards++; }
  ~Guard() {
    live_guards--;
    guard_log = guard_log * 31 + id;
  }
};

struct AppError : std::runtime_error {
  int code;
  AppError(const std::string &what, int c) : std::runtime_error(what), code(c) {}
};
struct DeepError : AppError {
  int depth;
  DeepError(int d) : AppError("deep error at depth " + std::to_string(d), 7), depth(d) {}
};

static int descend(int depth, int throw_at) {
  Guard g(depth);
  if (depth == throw_at) throw DeepError(depth);
  if (depth == 0) return 0;
  return descend(depth - 1, throw_at) + 1;
}

// No locals with destructors: no landing pads, so OSR may give these frames sites.
__attribute__((noinline)) static long leaf(long k) {
  if (k % 9973 == 0) throw AppError("leaf " + std::to_string(k), (int)(k % 13));
  return k * 3 + 1;
}
__attribute__((noinline)) static long middle(long start, long n) {
  long acc = 0;
  for (long k = start; k < start + n; k++) acc += leaf(k) % 1000;
  return acc;
}
__attribute__((noinline)) static long outer(long start, long n) {
  long acc = 0;
  for (long k = start; k < start + n; k += 50) acc += middle(k, 50) ^ k;
  return acc;
}

// A local array whose address escapes: under OSR instrumentation it lives in a shadow-stack
// frame, which a throw skips the closing of; 20,000 throws of 4 KiB frames overflow a shadow
// stack that keeps them.
__attribute__((noinline)) static void bump(long *slot, long k) { *slot += leaf(k * 9973); }
__attribute__((noinline)) static long with_escaping_local(long k) {
  long local[512] = {0};
  for (int i = 0; i < 2; i++) bump(&local[i * 300], k + i);
  return local[0] + local[300];
}

static int compare_ints(const void *a, const void *b) {
  int x = *static_cast<const int *>(a), y = *static_cast<const int *>(b);
  if (x == 4242) throw std::invalid_argument("qsort comparator saw 4242");
  return (x > y) - (x < y);
}

static void rethrower(int n) {
  try {
    descend(n, n / 2);
  } catch (AppError &e) {
    std::printf("rethrower saw '%s', %d guards live\n", e.what(), live_guards);
    throw;
  }
}

static void translator() {
  try {
    std::vector<int> v(3);
    std::printf("never printed %d\n", v.at(7));
  } catch (...) {
    throw AppError("translated out_of_range", 99);
  }
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 1;
  try {
    descend(40, 3);
  } catch (const DeepError &e) {
    std::printf("caught DeepError '%s' depth %d code %d, %d guards live, log %ld\n", e.what(),
                e.depth, e.code, live_guards, guard_log);
  }
  try {
    rethrower(30);
  } catch (const std::exception &e) {
    std::printf("main caught rethrown '%s', %d guards live\n", e.what(), live_guards);
  }
  try {
    translator();
  } catch (const AppError &e) {
    std::printf("caught '%s' code %d\n", e.what(), e.code);
  }
  std::vector<int> v;
  for (int i = 0; i < 5000; i++) v.push_back((i * 7919) % 5003);
  try {
    static int comparisons;
    std::sort(v.begin(), v.end(), [](int a, int b) {
      if (++comparisons == 20000) throw std::logic_error("sort comparator gave up");
      return a < b;
    });
    std::printf("sorted without a throw\n");
  } catch (const std::logic_error &e) {
    std::printf("caught from std::sort: %s\n", e.what());
  }
  v.push_back(4242);
  try {
    std::qsort(v.data(), v.size(), sizeof(int), compare_ints);
    std::printf("qsort finished\n");
  } catch (const std::invalid_argument &e) {
    std::printf("caught through qsort: %s\n", e.what());
  }
  long total = 0;
  int caught = 0;
  for (int r = 0; r < rounds * 40; r++) {
    try {
      total += outer(r * 1000L + 1, 1000);
    } catch (const AppError &e) {
      caught++;
      total += e.code;
    }
  }
  std::printf("hot loops: total %ld, %d exceptions caught, %d guards live\n", total, caught,
              live_guards);
  long escaped = 0;
  for (long k = 1; k <= 20000; k++) {
    try {
      escaped += with_escaping_local(k);
    } catch (const AppError &e) {
      escaped += e.code;
    }
  }
  std::printf("escaping locals: %ld\n", escaped);
  return live_guards == 0 ? 0 : 1;
}

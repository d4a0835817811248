// cxx_threads.cpp: thread_local objects with constructors and destructors under std::thread.
// Each of four threads runs a hot loop over a thread_local accumulator object (constructed on
// the thread's first use, destroyed when the thread exits, registered with
// __cxa_thread_atexit), a thread_local std::vector, and a plain thread_local counter; the main
// thread has its own instances, destroyed at exit. Results are gathered under a mutex and
// printed after the joins, in thread order.
// uppercut-test: args="" lli-differs="lli-19 crashes (SIGSEGV) in both JIT kinds (LLVM 19.1.7)"
// uppercut-test: args="3" lli-differs="lli-19 crashes (SIGSEGV) in both JIT kinds (LLVM 19.1.7)"
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

static std::mutex results_lock;
static long results[8];
static int destroyed_with[8];
static int constructions;

struct Accumulator {
  int owner = -1;
  long total = 0;
  Accumulator() {
    std::lock_guard<std::mutex> g(results_lock);
    constructions++;
  }
  ~Accumulator() {
    if (owner < 0) return;
    std::lock_guard<std::mutex> g(results_lock);
    results[owner] = total;
    destroyed_with[owner] = 1;
  }
};

thread_local Accumulator acc;
thread_local std::vector<int> history;
thread_local long calls;

__attribute__((noinline)) static long step(long i) {
  calls++;
  history.push_back((int)(i % 97));
  if (history.size() > 32) history.erase(history.begin(), history.begin() + 16);
  return i * 2654435761u % 1009;
}

static void worker(int id, int scale) {
  acc.owner = id;
  for (long i = 0; i < 60000L * scale; i++) acc.total += step(i + id) ^ (long)history.size();
  acc.total += calls;
}

int main(int argc, char **argv) {
  int scale = argc > 1 ? std::atoi(argv[1]) : 1;
  std::vector<std::thread> threads;
  for (int id = 1; id <= 4; id++) threads.emplace_back(worker, id, scale);
  for (auto &t : threads) t.join();
  for (int id = 1; id <= 4; id++)
    std::printf("thread %d: total %ld, destructor ran %d\n", id, results[id], destroyed_with[id]);
  worker(0, scale);
  std::printf("main: total %ld, %ld calls, history %zu, %d constructions\n", acc.total, calls,
              history.size(), constructions);
  return 0;
}

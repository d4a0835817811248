// cxx_stl.cpp: the C++ standard library under the JIT. STL containers (vector, map,
// unordered_map, deque, set, list, priority_queue) driven by hot loops, algorithms with guest
// comparators and predicates (sort, stable_sort, lower_bound, accumulate, transform,
// nth_element), std::function, virtual dispatch through a class hierarchy, templates
// instantiated at several types, std::string building and iostream formatting. Each phase
// checks its result against a plain second computation and prints FAIL and exits 1 on a
// mismatch.
// uppercut-test: args="" lli-differs="lli-19 --jit-kind=mcjit crashes (SIGSEGV) before any output (LLVM 19.1.7)"
// uppercut-test: args="3" lli-differs="lli-19 --jit-kind=mcjit crashes (SIGSEGV) before any output (LLVM 19.1.7)"
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <iomanip>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <numeric>
#include <queue>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

static void check(bool ok, const char *what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what);
    std::exit(1);
  }
}

static unsigned long lcg_state = 12345;
static unsigned next_random() {
  lcg_state = lcg_state * 6364136223846793005ul + 1442695040888963407ul;
  return (unsigned)(lcg_state >> 33);
}

struct Shape {
  virtual ~Shape() = default;
  virtual long area() const = 0;
  virtual const char *name() const = 0;
};
struct Square : Shape {
  long side;
  explicit Square(long s) : side(s) {}
  long area() const override { return side * side; }
  const char *name() const override { return "square"; }
};
struct Rect : Shape {
  long w, h;
  Rect(long w, long h) : w(w), h(h) {}
  long area() const override { return w * h; }
  const char *name() const override { return "rect"; }
};
struct Tri : Rect {
  Tri(long w, long h) : Rect(w, h) {}
  long area() const override { return w * h / 2; }
  const char *name() const override { return "tri"; }
};

template <typename T> struct Stats {
  T sum{};
  T min{};
  T max{};
  size_t n = 0;
  void add(T x) {
    if (n == 0 || x < min) min = x;
    if (n == 0 || x > max) max = x;
    sum += x;
    n++;
  }
};

template <typename T, typename F> std::vector<T> generate(size_t n, F f) {
  std::vector<T> out;
  out.reserve(n);
  for (size_t i = 0; i < n; i++) out.push_back(f(i));
  return out;
}

struct ByLengthThenText {
  bool operator()(const std::string &a, const std::string &b) const {
    if (a.size() != b.size()) return a.size() < b.size();
    return a < b;
  }
};

static long phase_sort(int rounds) {
  long digest = 0;
  for (int r = 0; r < rounds; r++) {
    auto v = generate<int>(20000, [](size_t) { return (int)(next_random() % 100000); });
    auto copy = v;
    std::sort(v.begin(), v.end(), [](int a, int b) { return a % 1000 < b % 1000 || (a % 1000 == b % 1000 && a < b); });
    for (size_t i = 1; i < v.size(); i++)
      check(v[i - 1] % 1000 < v[i] % 1000 || (v[i - 1] % 1000 == v[i] % 1000 && v[i - 1] <= v[i]), "sort order");
    std::stable_sort(copy.begin(), copy.end(), std::greater<int>());
    check(std::is_sorted(copy.begin(), copy.end(), std::greater<int>()), "stable_sort");
    auto it = std::lower_bound(copy.begin(), copy.end(), 50000, std::greater<int>());
    digest += it - copy.begin();
    std::nth_element(v.begin(), v.begin() + 100, v.end());
    digest += v[100] % 1000;
    digest += std::accumulate(v.begin(), v.end(), 0L) % 9973;
  }
  return digest;
}

static long phase_maps(int rounds) {
  std::map<std::string, long> ordered;
  std::unordered_map<long, long> hashed;
  std::set<std::string, ByLengthThenText> words;
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < 5000; i++) {
      long k = next_random() % 700;
      std::string key = "key" + std::to_string(k);
      ordered[key] += i;
      hashed[k] += i;
      words.insert(key.substr(0, 3 + (size_t)(k % 4)));
    }
  }
  long check_sum = 0;
  for (auto &kv : ordered) check_sum += kv.second;
  long hashed_sum = 0;
  for (auto &kv : hashed) hashed_sum += kv.second;
  check(check_sum == hashed_sum, "map sums agree");
  std::ostringstream out;
  for (auto &w : words) out << w << ',';
  std::cout << "words " << out.str() << '\n';
  return check_sum % 1000003 + (long)ordered.size() * 7 + (long)words.size();
}

static long phase_shapes() {
  std::vector<std::unique_ptr<Shape>> shapes;
  for (int i = 0; i < 3000; i++) {
    switch (i % 3) {
    case 0: shapes.push_back(std::make_unique<Square>(i % 17)); break;
    case 1: shapes.push_back(std::make_unique<Rect>(i % 13, i % 7)); break;
    default: shapes.push_back(std::make_unique<Tri>(i % 11, i % 5 + 1)); break;
    }
  }
  std::map<std::string, Stats<long>> by_name;
  long total = 0;
  for (int pass = 0; pass < 20; pass++)
    for (auto &s : shapes) {
      long a = s->area();
      total += a;
      if (pass == 0) by_name[s->name()].add(a);
    }
  for (auto &kv : by_name)
    std::cout << std::setw(7) << kv.first << ": n=" << kv.second.n << " sum=" << kv.second.sum
              << " min=" << kv.second.min << " max=" << kv.second.max << '\n';
  return total;
}

static double phase_templates() {
  Stats<double> d;
  Stats<int> i;
  Stats<std::string> s;
  for (int k = 0; k < 2000; k++) {
    d.add(k * 0.5 - 300);
    i.add((k * 37) % 501 - 250);
    if (k % 100 == 0) s.add(std::string(1, (char)('a' + k / 100)));
  }
  std::cout << std::fixed << std::setprecision(2) << "double " << d.sum << ' ' << d.min << ' '
            << d.max << " int " << i.sum << ' ' << i.min << ' ' << i.max << " string " << s.sum
            << ' ' << s.min << ' ' << s.max << '\n';
  return d.sum + i.sum;
}

static long phase_queues() {
  std::deque<int> dq;
  std::list<int> lst;
  std::priority_queue<int, std::vector<int>, std::function<bool(int, int)>> pq(
      [](int a, int b) { return (a ^ 0x55) < (b ^ 0x55); });
  long digest = 0;
  for (int k = 0; k < 30000; k++) {
    int x = (int)(next_random() % 1000);
    if (x & 1) dq.push_front(x); else dq.push_back(x);
    if (dq.size() > 64) { digest += dq.front() - dq.back(); dq.pop_front(); dq.pop_back(); }
    lst.push_back(x);
    if (lst.size() > 100) lst.remove_if([x](int y) { return y % 7 == x % 7; });
    pq.push(x);
    if (pq.size() > 50) { digest += pq.top(); pq.pop(); }
  }
  std::function<long(long)> fold = [&](long acc) { return acc * 31 + (long)lst.size(); };
  return fold(digest);
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 1;
  std::cout << "sort " << phase_sort(rounds) << std::endl;
  std::cout << "maps " << phase_maps(rounds) << std::endl;
  std::cout << "shapes " << phase_shapes() << std::endl;
  std::cout << "templates " << phase_templates() << std::endl;
  std::cout << "queues " << phase_queues() << std::endl;
  std::cout << "cxx_stl: ok" << std::endl;
  return 0;
}

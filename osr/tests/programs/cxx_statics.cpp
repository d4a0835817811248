// cxx_statics.cpp: static objects and the exit paths. Global objects with constructors and
// destructors (their destructors registered with __cxa_atexit and __dso_handle), ordered by
// init_priority, next to __attribute__((constructor(N))) functions; function-local statics
// constructed on first use; atexit handlers interleaved with the C++ registrations; a static
// std::string and std::vector whose destructors run at exit. MODE "return" returns from main,
// "exit" calls exit(3) from 2,000 frames deep while the statics are live, "hot" first runs a
// hot loop through a function-local static (for OSR) and then returns.
// uppercut-test: args="return" lli-differs="lli-19 --jit-kind=mcjit crashes (SIGSEGV) before any output (LLVM 19.1.7)"
// uppercut-test: args="exit" exit=3 lli-differs="lli-19 --jit-kind=mcjit crashes (SIGSEGV) before any output (LLVM 19.1.7)"
// uppercut-test: args="hot" lli-differs="lli-19 --jit-kind=mcjit crashes (SIGSEGV) before any output (LLVM 19.1.7)"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static int events;

struct Tracer {
  const char *name;
  int order;
  explicit Tracer(const char *n) : name(n), order(++events) {
    std::printf("construct %s (#%d)\n", name, order);
  }
  ~Tracer() { std::printf("destroy %s (constructed #%d)\n", name, order); }
};

__attribute__((constructor(101))) static void first_constructor() {
  std::printf("constructor(101) runs first\n");
}
static Tracer late_global("late_global (default priority)");
static Tracer early_global __attribute__((init_priority(200)))("early_global (init_priority 200)");
static Tracer middle_global __attribute__((init_priority(300)))("middle_global (init_priority 300)");
__attribute__((constructor(250))) static void between_constructor() {
  std::printf("constructor(250) runs between them\n");
}
static std::string greeting = std::string("hello from a static ") + "std::string";
static std::vector<std::string> names = {"alpha", "beta", "gamma"};

static void at_exit_handler() { std::printf("atexit handler (registered in main)\n"); }

static Tracer &local_static(int k) {
  static Tracer t("function-local static");
  (void)k;
  return t;
}

static long hot(int n) {
  long acc = 0;
  for (int i = 0; i < n; i++) acc += local_static(i).order * (i % 7) + (long)names[i % 3].size();
  return acc;
}

static int descend(int depth, const char *mode) {
  if (depth == 0) {
    static Tracer deep("deep function-local static");
    std::printf("bottom: %s, %zu names\n", greeting.c_str(), names.size());
    if (std::strcmp(mode, "exit") == 0) {
      std::fflush(stdout);
      std::exit(3);
    }
    return 0;
  }
  return descend(depth - 1, mode) + 1;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "return";
  std::printf("main starts after %d constructions\n", events);
  std::atexit(at_exit_handler);
  local_static(0);
  if (std::strcmp(mode, "hot") == 0) std::printf("hot %ld\n", hot(200000));
  int depth = descend(2000, mode);
  std::printf("returned from depth %d\n", depth);
  return 0;
}

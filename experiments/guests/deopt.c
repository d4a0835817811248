// deopt: a function is redefined while a deep recursion through code specialised on its old
// definition is live (the 2009 design note's `eval` / `define_method` case).
//
//   deopt DEPTH REPS redefine|same
//
// The global `definition` selects which body `op` has (0 or 1, like a method table entry that
// `define_method` overwrites). `rec(d)` computes `op(d)` on its way down, recurses, and on its
// way up combines the callee's result with `op` again. Each repetition:
//
//   1. stores `definition = 0` (under `uppercut run --osr-specialize=definition`, `rec` is
//      rebuilt with the first body of `op` folded in; no frame of `rec` is live yet), then,
//      timed, the value the bottom will store (with no frame of `rec` live: the store's cost
//      without moving frames), then 0 again;
//   2. calls `rec(DEPTH)`; at the bottom, `bottom()` stores the new definition: 1 with
//      `redefine` (the redefinition: every one of the DEPTH + 1 live frames of `rec`,
//      rec(DEPTH) down to rec(0), assumes 0 and must be deoptimised and moved into code for 1)
//      or 0 again with `same` (a store of the value already assumed: the hypercall finds
//      nothing to do);
//   3. unwinds: every frame finishes with the body of `op` stored at the bottom, so a frame
//      left in its old code gives a wrong result.
//
// It prints one line per repetition:
//
//   rep I shallow_ns H descend_ns A store_ns S unwind_ns U result R
//
// H: the store of step 1 with no frame of rec live (its hypercall included, under Uppercut);
// A: from the call of rec(DEPTH) to just before the store at the bottom; S: that store (its
// hypercall included); U: from just after the store until rec(DEPTH) has returned;
// R: rec(DEPTH) (unsigned 64-bit arithmetic, wrapping). The recursion runs on a thread with a
// 1 GiB stack, whatever `ulimit -s` says.
//
// Build: clang-19 -O2 -S -emit-llvm deopt.c -o deopt.ll, then
// uppercut run --osr-specialize=definition --osr-stats deopt.ll 1000 10 redefine
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// Which body `op` has: the global that `--osr-specialize` watches.
long definition = 0;

// What `bottom` stores: 1 (a redefinition) or 0 (the same definition again).
static long stored_at_bottom;
static long store_begin_ns, store_end_ns;

static long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static unsigned long op(unsigned long x) {
  switch (definition) {
  case 0:
    return x * 3 + 1;
  case 1:
    return (x ^ 0x9e3779b97f4a7c15UL) + 7;
  default:
    return x - 1;
  }
}

__attribute__((noinline)) static unsigned long bottom(void) {
  store_begin_ns = now_ns();
  definition = stored_at_bottom;
  store_end_ns = now_ns();
  return 1;
}

__attribute__((noinline)) unsigned long rec(unsigned long d) {
  if (d == 0)
    return bottom();
  unsigned long before = op(d); // the definition current on the way down
  unsigned long r = rec(d - 1);
  return op(r) ^ before; // the definition current on the way up
}

struct job {
  unsigned long depth;
  long reps;
};

static void *run(void *arg) {
  const struct job *job = arg;
  for (long i = 0; i < job->reps; i++) {
    definition = 0;
    // The same store with no frame of rec live: what it costs without moving frames.
    long shallow_begin = now_ns();
    definition = stored_at_bottom;
    long shallow_end = now_ns();
    definition = 0;
    long start = now_ns();
    unsigned long result = rec(job->depth);
    long end = now_ns();
    printf("rep %ld shallow_ns %ld descend_ns %ld store_ns %ld unwind_ns %ld result %lu\n", i,
           shallow_end - shallow_begin, store_begin_ns - start, store_end_ns - store_begin_ns,
           end - store_end_ns, result);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4 || (strcmp(argv[3], "redefine") != 0 && strcmp(argv[3], "same") != 0)) {
    fprintf(stderr, "usage: deopt DEPTH REPS redefine|same\n");
    return 2;
  }
  struct job job = {strtoul(argv[1], NULL, 10), strtol(argv[2], NULL, 10)};
  stored_at_bottom = strcmp(argv[3], "redefine") == 0;
  pthread_attr_t attr;
  pthread_t thread;
  if (pthread_attr_init(&attr) != 0 || pthread_attr_setstacksize(&attr, 1UL << 30) != 0 ||
      pthread_create(&thread, &attr, run, &job) != 0) {
    fprintf(stderr, "deopt: cannot start a thread with a 1 GiB stack\n");
    return 1;
  }
  pthread_join(thread, NULL);
  return 0;
}

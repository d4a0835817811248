// setjmp_longjmp.c: non-local exits. longjmp from up to 5,000 frames deep back to a setjmp in
// a loop, nested handlers where an inner handler rethrows to an outer one, longjmp with value 0
// arriving as 1, volatile locals keeping values changed after setjmp, sigsetjmp / siglongjmp
// restoring the signal mask, and a longjmp out of a qsort comparator (through libc frames).
// Kept in its own file: frames that setjmp returns into twice cannot simply be moved, so an OSR
// engine may refuse to transfer them (the tag below marks it).
// uppercut-test: args="" tags="setjmp"
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static jmp_buf top;
static unsigned long deepest;

__attribute__((noinline)) static unsigned long dive(int depth, int throw_at,
                                                   unsigned long acc) {
  unsigned long here = acc * 31 + (unsigned long)depth;
  if (depth == throw_at) {
    deepest = here;
    longjmp(top, depth % 7 + 1);
  }
  if (depth == 0)
    return here;
  return dive(depth - 1, throw_at, here) + 1;
}

static jmp_buf *handler_stack[8];
static int handler_depth;

__attribute__((noinline)) static void throw_error(int code) {
  longjmp(*handler_stack[handler_depth - 1], code);
}

__attribute__((noinline)) static int inner_task(int n) {
  jmp_buf here;
  handler_stack[handler_depth++] = &here;
  volatile int attempts = 0;
  int code = setjmp(here);
  if (code != 0) {
    attempts++;
    if (code == 99) { // not ours: rethrow to the outer handler
      handler_depth--;
      throw_error(code + 1);
    }
  }
  if (attempts < 3 && n % 5 != 0)
    throw_error(attempts + 1);
  if (n % 5 == 0 && attempts == 0)
    throw_error(99);
  handler_depth--;
  return attempts;
}

__attribute__((noinline)) static int outer_task(int n) {
  jmp_buf here;
  handler_stack[handler_depth++] = &here;
  int code = setjmp(here);
  int result;
  if (code == 0)
    result = inner_task(n);
  else
    result = -code;
  handler_depth--;
  return result;
}

static jmp_buf sort_escape;
static int comparisons;
static int cmp_or_escape(const void *a, const void *b) {
  if (++comparisons == 40)
    longjmp(sort_escape, 5);
  return *(const int *)a - *(const int *)b;
}

static sigjmp_buf masked;

int main(void) {
  unsigned long total = 0;
  long jump_sum = 0;
  for (int round = 0; round < 5000; round++) {
    volatile long before = round * 3;
    int v = setjmp(top);
    if (v == 0) {
      before += 1000000;
      total += dive(5000, round % 2 ? round * 7 % 5000 : 6000, (unsigned long)round);
    } else {
      jump_sum += v;
      CHECK(before == round * 3 + 1000000, "volatile local survives longjmp");
      total += deepest % 1000;
    }
  }
  printf("dive: total %lu, jump values %ld\n", total, jump_sum);

  volatile int zero_became = -1;
  if (setjmp(top) == 0)
    longjmp(top, 0);
  else
    zero_became = 1;
  CHECK(zero_became == 1, "longjmp(0) returns 1");

  int results[12];
  for (int n = 0; n < 12; n++)
    results[n] = outer_task(n);
  printf("nested handlers:");
  for (int n = 0; n < 12; n++)
    printf(" %d", results[n]);
  printf("\n");
  CHECK(results[0] == -100 && results[1] == 3 && results[5] == -100, "nested handlers");
  CHECK(handler_depth == 0, "handler stack balanced");

  sigset_t block, now;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  int jumped = sigsetjmp(masked, 1);
  if (!jumped) {
    sigprocmask(SIG_BLOCK, &block, NULL);
    siglongjmp(masked, 1);
  }
  sigprocmask(SIG_BLOCK, NULL, &now);
  CHECK(!sigismember(&now, SIGUSR1), "siglongjmp restored the signal mask");
  printf("signal mask restored: %d\n", !sigismember(&now, SIGUSR1));

  int values[64];
  for (int i = 0; i < 64; i++)
    values[i] = (i * 37) % 64;
  int escaped = setjmp(sort_escape);
  if (!escaped)
    qsort(values, 64, sizeof values[0], cmp_or_escape);
  CHECK(escaped == 5 && comparisons == 40, "escaped from qsort");
  printf("escaped from qsort after %d comparisons with %d\n", comparisons, escaped);

  printf("%s\n", failures ? "setjmp_longjmp: FAILED" : "setjmp_longjmp: ok");
  return failures ? 1 : 0;
}

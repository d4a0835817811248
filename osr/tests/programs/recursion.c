// recursion.c: deep non-tail recursion (20,000 frames), frames that own stack arrays
// (10,000 of them live at once), Ackermann (millions of calls), naive Fibonacci, and recursion
// through a function pointer. Every result is checked against an iterative computation.
// uppercut-test: args="" stdin=""
#include <stdio.h>
#include <string.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

// Non-tail: the combination after the call is not an accumulator LLVM can turn into a loop, and
// `mine` is live across the call.
__attribute__((noinline)) static unsigned long deep_mix(unsigned long n, unsigned long salt) {
  if (n == 0)
    return salt & 0xff;
  unsigned long mine = (n * 2654435761u) ^ salt;
  unsigned long below = deep_mix(n - 1, salt + 3);
  return (below * 31 + mine % 1000) % 1000003;
}

static unsigned long deep_mix_iterative(unsigned long n, unsigned long salt) {
  // deep_mix(k) is called with salt + 3 * (n - k).
  unsigned long acc = (salt + 3 * n) & 0xff;
  for (unsigned long k = 1; k <= n; k++) {
    unsigned long s = salt + 3 * (n - k);
    unsigned long mine = (k * 2654435761u) ^ s;
    acc = (acc * 31 + mine % 1000) % 1000003;
  }
  return acc;
}

// Each frame owns an array whose contents are read after the recursive call returns.
__attribute__((noinline)) static unsigned frame_arrays(int depth, unsigned seed) {
  unsigned char buf[48];
  for (int i = 0; i < 48; i++)
    buf[i] = (unsigned char)(seed * 7 + i * 13 + depth);
  unsigned below = depth > 0 ? frame_arrays(depth - 1, seed * 1103515245u + 12345u) : 0;
  unsigned sum = 0;
  for (int i = 0; i < 48; i++)
    sum = sum * 33 + buf[i];
  return below ^ (sum + (unsigned)depth);
}

static unsigned frame_arrays_iterative(int depth, unsigned seed) {
  static unsigned seeds[10001];
  for (int d = depth; d >= 0; d--) {
    seeds[d] = seed;
    seed = seed * 1103515245u + 12345u;
  }
  unsigned acc = 0;
  for (int d = 0; d <= depth; d++) {
    unsigned sum = 0;
    for (int i = 0; i < 48; i++)
      sum = sum * 33 + (unsigned char)(seeds[d] * 7 + i * 13 + d);
    acc = acc ^ (sum + (unsigned)d);
  }
  return acc;
}

static unsigned long ack_calls;
__attribute__((noinline)) static unsigned long ackermann(unsigned long m, unsigned long n) {
  ack_calls++;
  if (m == 0)
    return n + 1;
  if (n == 0)
    return ackermann(m - 1, 1);
  return ackermann(m - 1, ackermann(m, n - 1));
}

__attribute__((noinline)) static long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

// Recursion through a function pointer read from a table on each call.
typedef long (*step_fn)(long n, int which);
static long count_down_a(long n, int which);
static long count_down_b(long n, int which);
static step_fn steps[2] = {count_down_a, count_down_b};
static long count_down_a(long n, int which) {
  return n == 0 ? 0 : 1 + steps[(which + 1) & 1](n - 1, which + 1);
}
static long count_down_b(long n, int which) {
  return n == 0 ? 0 : 2 + steps[(which + 1) & 1](n - 1, which + 1);
}

int main(void) {
  unsigned long total = 0;
  for (unsigned long salt = 0; salt < 40; salt++) {
    unsigned long r = deep_mix(20000, salt);
    CHECK(r == deep_mix_iterative(20000, salt), "deep_mix");
    printf("deep_mix(20000, %lu) = %lu\n", salt, r);
    total += r;
  }

  for (unsigned seed = 1; seed <= 20; seed++) {
    unsigned r = frame_arrays(10000, seed);
    CHECK(r == frame_arrays_iterative(10000, seed), "frame_arrays");
    printf("frame_arrays(10000, %u) = %u\n", seed, r);
    total += r;
  }

  unsigned long a = ackermann(3, 9);
  CHECK(a == 4093, "ackermann(3, 9)");
  printf("ackermann(3, 9) = %lu after %lu calls\n", a, ack_calls);

  long f = fib(30);
  CHECK(f == 832040, "fib(30)");
  printf("fib(30) = %ld\n", f);

  long c = count_down_a(15000, 0);
  CHECK(c == 15000 / 2 * 3, "count_down");
  printf("count_down(15000) = %ld\n", c);

  printf("total = %lu\n", total + a + (unsigned long)f + (unsigned long)c);
  printf("%s\n", failures ? "recursion: FAILED" : "recursion: ok");
  return failures ? 1 : 0;
}

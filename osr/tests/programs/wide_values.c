// wide_values.c: values wider or odder than a machine word, live across calls in loops:
// __int128 (a register pair; its division and remainder call the compiler runtime's __udivti3
// and __umodti3), 128- and 256-bit vectors (vector_size: SSE registers, and memory without
// AVX), long double (x87, 80 bits), _Complex double with libm (cexp, cabs; complex multiply
// calls __muldc3 at -O0), _Bool, and bitfields. Passed to and returned from functions by value.
// uppercut-test: args=""
#include <complex.h>
#include <stdint.h>
#include <stdio.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

typedef uint32_t v4su __attribute__((vector_size(16)));
typedef double v2df __attribute__((vector_size(16)));
// 256 bits: without AVX it is passed and returned in memory.
typedef uint64_t v4du __attribute__((vector_size(32)));
#pragma clang diagnostic ignored "-Wpsabi"
typedef unsigned __int128 u128;

static void print_u128(const char *label, u128 v) {
  char digits[40];
  int n = 0;
  do {
    digits[n++] = (char)('0' + (int)(v % 10));
    v /= 10;
  } while (v);
  printf("%s", label);
  while (n)
    putchar(digits[--n]);
  putchar('\n');
}

__attribute__((noinline)) static u128 mul_mod(u128 a, u128 b, u128 m) { return a * b % m; }
__attribute__((noinline)) static v4su v4_step(v4su v, v4su k) { return v * k + (v >> 3); }
__attribute__((noinline)) static v2df v2_step(v2df v, double s) { return v * s + (v2df){1, -1}; }
__attribute__((noinline)) static v4du v4d_step(v4du v) {
  return (v ^ (v << 7)) + (v4du){1, 2, 3, 4};
}
__attribute__((noinline)) static long double ld_step(long double x) { return x * 1.0000001L + 1; }
__attribute__((noinline)) static double complex rotate(double complex z, double angle) {
  return z * cexp(I * angle);
}

struct flags {
  unsigned ready : 1;
  unsigned mode : 3;
  signed level : 5;
  unsigned long long big : 40;
};
__attribute__((noinline)) static struct flags advance(struct flags f) {
  f.ready = !f.ready;
  f.mode = (f.mode + 3) & 7;
  f.level = f.level < 15 ? f.level + 1 : -16;
  f.big = (f.big * 5 + 1) & ((1ull << 40) - 1);
  return f;
}

int main(void) {
  // 2^127 - 1 is prime: Fermat says 3^(p-1) = 1 mod p. Square-and-multiply with 128-bit products
  // would overflow, so use a smaller prime modulus 2^61 - 1 and a 128-bit accumulator.
  const u128 p61 = ((u128)1 << 61) - 1;
  u128 acc = 1, base = 3;
  for (u128 e = p61 - 1; e; e >>= 1) {
    if (e & 1)
      acc = mul_mod(acc, base, p61);
    base = mul_mod(base, base, p61);
  }
  CHECK(acc == 1, "fermat mod 2^61-1");
  u128 product = (u128)0xffffffffffffffffull * 0xfffffffffffffffbull;
  print_u128("128-bit product: ", product);
  __int128 half = (__int128)(product >> 1), negative = -half / 7;
  CHECK(negative < 0 && -negative == half / 7 && -half % 7 == -(half % 7), "signed 128-bit");

  v4su vi = {1, 2, 3, 4};
  v2df vd = {0.5, -0.25};
  v4du vl = {1, (uint64_t)-1, 1 << 20, (uint64_t)-(1 << 20)};
  long double ld = 1;
  double complex z = 1.0;
  _Bool parity = 0;
  struct flags f = {0, 0, 0, 1};
  u128 wide = 1;
  for (int i = 0; i < 1000000; i++) {
    vi = v4_step(vi, (v4su){3, 5, 7, 9});
    vd = v2_step(vd, 0.999);
    vl = v4d_step(vl);
    ld = ld_step(ld);
    if (i % 5000 == 0)
      z = rotate(z, 0.001 * (i / 5000));
    parity ^= (vi[0] & 1) != 0;
    f = advance(f);
    wide = wide * 6364136223846793005ull + vl[i & 3];
  }
  printf("v4su: %u %u %u %u\n", vi[0], vi[1], vi[2], vi[3]);
  printf("v2df: %.6f %.6f\n", vd[0], vd[1]);
  printf("v4du: %llu %llu %llu %llu\n", (unsigned long long)vl[0], (unsigned long long)vl[1],
         (unsigned long long)vl[2], (unsigned long long)vl[3]);
  printf("long double: %.10Lf\n", ld);
  printf("complex: %.6f %+.6fi |z| = %.12f\n", creal(z), cimag(z), cabs(z));
  printf("parity %d flags ready %u mode %u level %d big %llu\n", parity, f.ready, f.mode, f.level,
         (unsigned long long)f.big);
  print_u128("wide: ", wide);
  CHECK(cabs(z) > 0.999999 && cabs(z) < 1.000001, "rotation keeps |z|");

  printf("%s\n", failures ? "wide_values: FAILED" : "wide_values: ok");
  return failures ? 1 : 0;
}

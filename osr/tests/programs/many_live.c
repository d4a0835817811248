// many_live.c: many values of every scalar width live across calls in a hot loop. 26 locals
// (i8, u8, i16, u16, i32, u32, i64, u64, float, double, _Bool, pointers, a function pointer) are
// all read after each call, so an on-stack replacement at any call site must carry every one.
// The calls are an opaque guest function, a call through a function pointer, and a libc call.
// uppercut-test: args="" stdin=""
#include <stdint.h>
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

static int32_t table[64];
static volatile int64_t sink;

__attribute__((noinline)) static int64_t opaque(int64_t x) {
  sink = x;
  return (int64_t)(((uint64_t)x * 6364136223846793005ull + 1442695040888963407ull) >> 17);
}
static int64_t twist_a(int64_t x) { return x ^ (x >> 7); }
static int64_t twist_b(int64_t x) { return (int64_t)((uint64_t)x * 9u) >> 4; }
static int64_t (*const twists[2])(int64_t) = {twist_a, twist_b};

struct state {
  uint64_t hash;
  double dsum;
  float fsum;
};

// One loop with every kind of value live across three calls per iteration.
__attribute__((noinline)) static struct state churn(int iterations, int seed) {
  int8_t a8 = (int8_t)seed, b8 = -3;
  uint8_t c8 = 200, d8 = (uint8_t)(seed * 7);
  int16_t a16 = -1234, b16 = (int16_t)seed;
  uint16_t c16 = 60000, d16 = 7;
  int32_t a32 = seed * 1000, b32 = -77777;
  uint32_t c32 = 4000000000u, d32 = 12345;
  int64_t a64 = (int64_t)seed << 40, b64 = -5;
  uint64_t c64 = 0x9e3779b97f4a7c15ull, d64 = 1;
  float f1 = 1.5f, f2 = -0.25f, f3 = (float)seed;
  double g1 = 0.1, g2 = 1e6, g3 = -2.0;
  _Bool flag = 0;
  int32_t *p1 = &table[seed & 63], *p2 = &table[(seed * 5) & 63];
  const char *text = "live values";
  int64_t (*twist)(int64_t) = twists[seed & 1];

  for (int i = 0; i < iterations; i++) {
    int64_t r = opaque(a64 ^ (int64_t)i);
    a8 = (int8_t)(a8 + (int8_t)r);
    b8 = (int8_t)(b8 ^ a8);
    c8 = (uint8_t)(c8 * 3 + (uint8_t)i);
    d8 = (uint8_t)(d8 + c8);
    a16 = (int16_t)(a16 + (int16_t)(r >> 3));
    b16 = (int16_t)(b16 - a16);
    c16 = (uint16_t)(c16 * 5 + d16);
    d16 = (uint16_t)(d16 + (uint16_t)b8);
    int64_t t = twist(r + b16) >> 8;
    a32 = (int32_t)((uint32_t)a32 * 1664525u + 1013904223u);
    b32 = b32 ^ (int32_t)t;
    c32 = c32 + (uint32_t)a16 * 3u;
    d32 = (d32 << 1) | (d32 >> 31);
    a64 = (int64_t)((uint64_t)a64 + (uint64_t)t);
    b64 = (int64_t)((uint64_t)b64 * 3u + c8);
    c64 = c64 ^ (uint64_t)a64;
    d64 = d64 * 0x100000001b3ull + c16;
    f1 = f1 * 0.999f + (float)(a8 & 7);
    f2 = f2 + f1 * 0.001f;
    f3 = f3 - (float)(c8 & 3) * 0.5f;
    g1 = g1 * 1.0001 + (double)(d16 & 15);
    g2 = g2 / 1.00001 + 1.0;
    g3 = g3 + (double)(a32 & 1023) * 1e-3;
    flag = flag ^ (r & 1);
    int32_t *tmp = p1;
    p1 = p2;
    p2 = tmp;
    *p1 += (int32_t)(d8 + a8);
    int64_t len = (int64_t)strlen(text + (i & 7));
    b64 = (int64_t)((uint64_t)b64 + (uint64_t)len);
  }
  struct state s;
  s.hash = (uint64_t)a8 ^ ((uint64_t)b8 << 8) ^ ((uint64_t)c8 << 16) ^ ((uint64_t)d8 << 24);
  s.hash = s.hash * 31 + (uint64_t)a16 + (uint64_t)b16 * 7 + c16 * 11u + d16 * 13u;
  s.hash = s.hash * 31 + (uint64_t)a32 + (uint64_t)b32 * 7 + c32 * 11ull + d32 * 13ull;
  s.hash = s.hash * 31 + (uint64_t)a64 + (uint64_t)b64 * 7 + c64 * 11 + d64 * 13;
  s.hash = s.hash * 31 + flag + (uint64_t)(p1 - table) * 17 + (uint64_t)(p2 - table);
  s.dsum = g1 + g2 + g3;
  s.fsum = f1 + f2 + f3;
  return s;
}

int main(void) {
  uint64_t hash = 0;
  double dsum = 0;
  for (int seed = 0; seed < 40; seed++) {
    struct state s = churn(50000, seed);
    hash = hash * 1000003 ^ s.hash;
    dsum += s.dsum;
    if (seed % 8 == 0)
      printf("seed %2d: hash %016llx dsum %.6f fsum %.4f\n", seed, (unsigned long long)s.hash,
             s.dsum, (double)s.fsum);
  }
  int64_t tsum = 0;
  for (int i = 0; i < 64; i++)
    tsum += table[i] * (i + 1);
  printf("hash = %016llx, dsum = %.6f, table sum = %lld\n", (unsigned long long)hash, dsum,
         (long long)tsum);
  struct state again = churn(50000, 3);
  struct state first = churn(50000, 3);
  CHECK(again.hash == first.hash, "churn is deterministic for the same table");
  printf("%s\n", failures ? "many_live: FAILED" : "many_live: ok");
  return failures ? 1 : 0;
}

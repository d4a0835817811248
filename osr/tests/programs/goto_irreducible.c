// goto_irreducible.c: control flow that is not neatly nested. An irreducible loop (a cycle
// entered at two different blocks, chosen by data), Duff's device (a switch jumping into the
// middle of a do-while), a tokenizer written as a goto state machine, breaking out of three
// nested loops with goto, and a retry loop made of a backward goto. Loop headers here are not
// the single-entry kind that loop passes and OSR entry points usually assume.
// uppercut-test: args=""
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

__attribute__((noinline)) static unsigned long opaque(unsigned long x) {
  return x * 2862933555777941757ul + 3037000493ul;
}

// The cycle A <-> B can be entered at A or at B.
__attribute__((noinline)) static unsigned long irreducible(unsigned long seed, int steps) {
  unsigned long x = seed;
  int n = 0;
  if (seed & 1)
    goto block_b;
block_a:
  x = opaque(x) ^ (x >> 5);
  if (++n >= steps)
    return x;
  if (x & 2)
    goto block_a;
block_b:
  x += (x >> 11) + (unsigned long)n;
  if (++n >= steps)
    return x ^ 0xabcdef;
  if (x & 4)
    goto block_b;
  goto block_a;
}

__attribute__((noinline)) static void duff_copy(unsigned char *to, const unsigned char *from,
                                                int count) {
  int n = (count + 7) / 8;
  if (count <= 0)
    return;
  switch (count % 8) {
  case 0: do { *to++ = *from++;
  case 7:      *to++ = *from++;
  case 6:      *to++ = *from++;
  case 5:      *to++ = *from++;
  case 4:      *to++ = *from++;
  case 3:      *to++ = *from++;
  case 2:      *to++ = *from++;
  case 1:      *to++ = *from++;
          } while (--n > 0);
  }
}

struct tokens {
  int numbers, words, symbols;
  long number_sum;
};

__attribute__((noinline)) static struct tokens tokenize(const char *s) {
  struct tokens t = {0, 0, 0, 0};
  long value = 0;
start:
  if (*s == 0)
    return t;
  if (*s == ' ') {
    s++;
    goto start;
  }
  if (*s >= '0' && *s <= '9') {
    value = 0;
    goto in_number;
  }
  if ((*s >= 'a' && *s <= 'z') || *s == '_')
    goto in_word;
  t.symbols++;
  s++;
  goto start;
in_number:
  value = value * 10 + (*s++ - '0');
  if (*s >= '0' && *s <= '9')
    goto in_number;
  t.numbers++;
  t.number_sum += value;
  goto start;
in_word:
  s++;
  if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')
    goto in_word;
  t.words++;
  goto start;
}

// Finds the first (i, j, k) with i*i + j*j == k*k + target, leaving all three loops at once.
__attribute__((noinline)) static long find_triple(int target) {
  long found = -1;
  for (int i = 1; i < 100; i++)
    for (int j = i; j < 100; j++)
      for (int k = 1; k < 150; k++)
        if (i * i + j * j == k * k + target) {
          found = i * 1000000L + j * 1000L + k;
          goto done;
        }
done:
  return found;
}

// A retry loop made of a backward goto, with a second entry into its body from outside.
__attribute__((noinline)) static int retries(unsigned long seed) {
  int attempts = 0;
  unsigned long x = seed;
  if (seed % 3 == 0)
    goto check; // enters the loop below at its middle
again:
  attempts++;
  x = opaque(x);
check:
  if ((x >> 20) % 5 != 0 && attempts < 50)
    goto again;
  return attempts;
}

int main(void) {
  unsigned long h = 0;
  for (unsigned long seed = 0; seed < 4000; seed++)
    h = h * 1000003 ^ irreducible(seed, 500);
  printf("irreducible hash %lu\n", h);

  unsigned char src[1000], dst[1000];
  for (int i = 0; i < 1000; i++)
    src[i] = (unsigned char)(i * 7 + 3);
  unsigned long copied = 0;
  for (int round = 0; round < 5000; round++) {
    int count = round % 1000;
    memset(dst, 0, sizeof dst);
    duff_copy(dst, src, count);
    CHECK(memcmp(dst, src, (size_t)count) == 0 && (count == 1000 || dst[count] == 0),
          "duff_copy");
    copied += (unsigned long)count;
  }
  printf("duff's device copied %lu bytes\n", copied);

  struct tokens t = {0, 0, 0, 0};
  for (int round = 0; round < 20000; round++)
    t = tokenize("x1 = 42 + foo_bar*(7-y) ; z9 = 1000 / 8 #");
  CHECK(t.numbers == 4 && t.words == 4 && t.symbols == 10 && t.number_sum == 1057, "tokenize");
  printf("tokens: %d numbers (sum %ld), %d words, %d symbols\n", t.numbers, t.number_sum, t.words,
         t.symbols);

  unsigned long triples = 0;
  for (int target = 1; target <= 60; target++)
    triples = triples * 7 + (unsigned long)find_triple(target);
  long t5 = find_triple(5);
  CHECK(t5 >= 0 && (t5 / 1000000) * (t5 / 1000000) + (t5 / 1000 % 1000) * (t5 / 1000 % 1000) ==
                       (t5 % 1000) * (t5 % 1000) + 5,
        "find_triple(5)");
  printf("find_triple(5) = %ld, hash %lu\n", t5, triples);

  long attempts = 0;
  for (unsigned long seed = 0; seed < 30000; seed++)
    attempts += retries(seed);
  printf("retries: %ld attempts\n", attempts);

  printf("%s\n", failures ? "goto_irreducible: FAILED" : "goto_irreducible: ok");
  return failures ? 1 : 0;
}

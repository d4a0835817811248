// mutual_recursion.c: mutual recursion. A recursive-descent parser (expr -> term -> factor ->
// expr) evaluates generated expressions nested 3,000 parentheses deep (about 12,000 live frames
// of four functions); is_even/is_odd recurse 15,001 deep; Hofstadter's Female/Male sequences
// recurse into each other non-tail.
// uppercut-test: args="" stdin=""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

// ---- recursive-descent parser over unsigned arithmetic modulo 2^64 ----
static const char *cursor;
static unsigned long parse_calls;
static unsigned long expr(void);

__attribute__((noinline)) static unsigned long factor(void) {
  parse_calls++;
  if (*cursor == '(') {
    cursor++;
    unsigned long v = expr();
    if (*cursor != ')') {
      printf("FAIL: expected ')' at '%.10s'\n", cursor);
      exit(2);
    }
    cursor++;
    return v;
  }
  if (*cursor == '-') {
    cursor++;
    return 0 - factor();
  }
  unsigned long v = 0;
  while (*cursor >= '0' && *cursor <= '9')
    v = v * 10 + (unsigned long)(*cursor++ - '0');
  return v;
}

__attribute__((noinline)) static unsigned long term(void) {
  parse_calls++;
  unsigned long v = factor();
  while (*cursor == '*' || *cursor == '%') {
    char op = *cursor++;
    unsigned long rhs = factor();
    v = op == '*' ? v * rhs : (rhs ? v % rhs : v);
  }
  return v;
}

__attribute__((noinline)) static unsigned long expr(void) {
  parse_calls++;
  unsigned long v = term();
  while (*cursor == '+' || *cursor == '-') {
    char op = *cursor++;
    unsigned long rhs = term();
    v = op == '+' ? v + rhs : v - rhs;
  }
  return v;
}

// Builds "(((k0+(k1*(k2-(...)))...)" nested `depth` deep, and computes its value directly.
static char *build(int depth, unsigned long seed, unsigned long *expected) {
  char *text = malloc((size_t)depth * 24 + 32);
  char *p = text;
  static char ops[3] = {'+', '*', '-'};
  unsigned long *ks = malloc(sizeof(unsigned long) * (size_t)depth);
  for (int i = 0; i < depth; i++) {
    seed = seed * 6364136223846793005ul + 1442695040888963407ul;
    ks[i] = (seed >> 33) % 1000 + 1;
    p += sprintf(p, "(%lu%c", ks[i], ops[i % 3]);
  }
  p += sprintf(p, "7");
  for (int i = 0; i < depth; i++)
    *p++ = ')';
  *p = 0;
  unsigned long v = 7;
  for (int i = depth - 1; i >= 0; i--) {
    switch (ops[i % 3]) {
    case '+': v = ks[i] + v; break;
    case '*': v = ks[i] * v; break;
    default: v = ks[i] - v; break;
    }
  }
  free(ks);
  *expected = v;
  return text;
}

// ---- even/odd ----
__attribute__((noinline)) static int is_odd(unsigned n);
__attribute__((noinline)) static int is_even(unsigned n) { return n == 0 ? 1 : is_odd(n - 1); }
__attribute__((noinline)) static int is_odd(unsigned n) { return n == 0 ? 0 : is_even(n - 1); }

// ---- Hofstadter Female and Male sequences ----
static int male(int n);
__attribute__((noinline)) static int female(int n) { return n == 0 ? 1 : n - male(female(n - 1)); }
__attribute__((noinline)) static int male(int n) { return n == 0 ? 0 : n - female(male(n - 1)); }

int main(void) {
  unsigned long checksum = 0;
  for (int round = 0; round < 100; round++) {
    unsigned long expected;
    char *text = build(3000, (unsigned long)round, &expected);
    cursor = text;
    unsigned long got = expr();
    CHECK(*cursor == 0, "parser consumed everything");
    CHECK(got == expected, "parser value");
    if (round < 3)
      printf("expression %d: %zu chars = %lu\n", round, strlen(text), got);
    checksum = checksum * 1000003 + got;
    free(text);
  }
  printf("parser checksum = %lu after %lu calls\n", checksum, parse_calls);

  int parity = 0;
  for (unsigned n = 14990; n <= 15001; n++)
    parity = parity * 2 + is_even(n);
  CHECK(parity == 0xaaa, "is_even parity");
  printf("parity bits = %x, is_odd(15001) = %d\n", parity, is_odd(15001));

  // F and M differ exactly at n = 1 + fib(k) for k >= 3 (e.g. 3, 6, 9, 14, 22).
  int diffs = 0;
  printf("F:");
  for (int n = 0; n < 24; n++) {
    int f = female(n), m = male(n);
    printf(" %d", f);
    diffs += f != m;
  }
  printf("\nF != M at %d places\n", diffs);
  CHECK(female(23) == 14 && male(23) == 14, "hofstadter(23)");
  long hsum = 0;
  for (int n = 0; n < 70; n++)
    hsum += female(n) * 3 + male(n);
  printf("hofstadter sum = %ld\n", hsum);

  printf("%s\n", failures ? "mutual_recursion: FAILED" : "mutual_recursion: ok");
  return failures ? 1 : 0;
}

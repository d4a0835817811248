// stack_save.c: functions whose frames save and restore the stack pointer. At -O0 clang makes
// a local array whose size is a `const int` a variable-length array: the function saves the
// stack pointer (llvm.stacksave) where the array's scope begins and restores it
// (llvm.stackrestore) where it ends, so the saved stack pointer is live across every call in
// the scope. Here such scopes hold hot loops full of calls (OSR moves those frames mid-scope):
// one at the function's top level, one opened and closed in every pass of a loop, nested
// scopes, and a recursive function with an array in each frame. Each result is checked
// against a closed form or a second computation.
// uppercut-test: args=""
// uppercut-test: args="3"
#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what) {
  printf("FAIL: %s\n", what);
  exit(1);
}

__attribute__((noinline)) static long mix(long a, long b) { return (a * 31 + b) % 1000003; }

static long top_level(int seed) {
  const int n = 64;
  int buf[n];
  for (int i = 0; i < n; i++) buf[i] = seed * i + 1;
  long s = 0;
  for (int r = 0; r < 200; r++)
    for (int i = 0; i < n; i++) s = mix(s, buf[(i * 7 + r) % n] ^ r);
  long check = 0;
  for (int r = 0; r < 200; r++)
    for (int i = 0; i < n; i++) check = (check * 31 + (((i * 7 + r) % n * seed + 1) ^ r)) % 1000003;
  if (s != check) fail("top-level scope");
  return s;
}

static long scope_per_pass(int rounds) {
  long s = 0;
  for (int r = 0; r < rounds; r++) {
    const int n = 16 + r % 3;
    long buf[n];
    for (int i = 0; i < n; i++) buf[i] = mix(r, i);
    for (int i = 0; i < n; i++) s = mix(s, buf[n - 1 - i]);
    {
      const int m = 8;
      int inner[m];
      for (int j = 0; j < m; j++) inner[j] = (int)mix(j, buf[j % n]);
      for (int j = 0; j < m; j++) s = mix(s, inner[j]);
    }
  }
  return s;
}

static long recurse(int depth) {
  const int n = 4;
  long here[n];
  for (int i = 0; i < n; i++) here[i] = mix(depth, i);
  long below = depth > 0 ? recurse(depth - 1) : 1;
  long s = below;
  for (int i = 0; i < n; i++) s = mix(s, here[i]);
  return s;
}

int main(int argc, char **argv) {
  int scale = argc > 1 ? atoi(argv[1]) : 1;
  long total = 0;
  for (int k = 0; k < 40 * scale; k++) total = mix(total, top_level(k));
  printf("top level %ld\n", total);
  printf("scope per pass %ld\n", scope_per_pass(3000 * scale));
  long r = 0;
  for (int k = 0; k < 200 * scale; k++) r = mix(r, recurse(50 + k % 7));
  printf("recursion %ld\n", r);
  return 0;
}

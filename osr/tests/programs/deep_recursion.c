// deep_recursion.c: 40,000 (by default) live frames of one recursive function, with a hot loop
// at the bottom (a million passes, 200,000 of its header even when clang -O2 unrolls it: more
// than the calls on the way down, so that a threshold between the two fires the loop's site
// before the function's entry site). Under `--osr=tier` the loop's site fires that deep and
// every frame of `descend` moves to O2 code at once (each with its own live `n` and `salt`);
// the second argument repeats the descent, so frames that moved move back through the same site.
// uppercut-test: args="" stdin=""
// uppercut-test: args="1000 3" stdin=""
#include <stdio.h>
#include <stdlib.h>

// Non-tail: `below * 3 + ...` is not an accumulator LLVM can turn into a loop, and `n` and
// `salt` are live across the call.
__attribute__((noinline)) static unsigned long descend(unsigned long n, unsigned long salt) {
  if (n == 0) {
    unsigned long s = salt;
    for (unsigned long i = 0; i < 1000000; i++)
      s = s * 6364136223846793005ul + (i ^ (s >> 29));
    return s & 0xffff;
  }
  unsigned long below = descend(n - 1, salt * 7 + n);
  return below * 3 + (n ^ salt) % 13;
}

int main(int argc, char **argv) {
  unsigned long depth = argc > 1 ? strtoul(argv[1], NULL, 10) : 40000;
  int rounds = argc > 2 ? atoi(argv[2]) : 1;
  unsigned long total = 0;
  for (int r = 0; r < rounds; r++)
    total = total * 31 + descend(depth, (unsigned long)r + 1);
  printf("depth %lu rounds %d: %lu\n", depth, rounds, total);
  return 0;
}

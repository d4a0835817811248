// A configuration global flipped every few iterations of the loop that reads it. Under
// `--osr-specialize=mode` every change deoptimises and specialises again, until the storm guard
// gives up on `mode` (after `SPECIALISE_MAX_CHANGES` changes) and the readers go back to reading
// it from memory. The result must not change.
//
// uppercut-test: args="3000"
#include <stdio.h>
#include <stdlib.h>

int mode = 0;

__attribute__((noinline)) static long step(long i) {
  return mode ? i * 3 : i + 1;
}

__attribute__((noinline)) static long run(long n) {
  long total = 0;
  for (long i = 0; i < n; i++) {
    total += step(i) + mode;
    if (i % 3 == 0)
      mode = (int)((i / 3) & 1);
  }
  return total;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 3000;
  printf("%ld %d\n", run(n), mode);
  return 0;
}

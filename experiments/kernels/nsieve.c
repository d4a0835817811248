// nsieve: the sieve of Eratosthenes up to M = 10000 * 2^N, M/2 and M/4 (the Computer Language
// Shootout's nsieve), each printed with its count of primes; repeated R times when a second
// argument is given, to make the run longer without more memory.
//
// usage: nsieve [N [R]]   (0 <= N <= 16, default 2; 1 <= R <= 10000, default 1)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long parse_arg(int argc, char **argv, int index, long fallback, long lo, long hi) {
  if (argc <= index)
    return fallback;
  char *end;
  long v = strtol(argv[index], &end, 10);
  if (*argv[index] == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "argument %d must be an integer in %ld..%ld\n", index, lo, hi);
    exit(2);
  }
  return v;
}

// The number of primes in 2..m, using flags[0..m].
static long nsieve(char *flags, long m) {
  memset(flags, 1, (size_t)m + 1);
  long count = 0;
  for (long i = 2; i <= m; i++) {
    if (flags[i]) {
      count++;
      for (long k = i + i; k <= m; k += i)
        flags[k] = 0;
    }
  }
  return count;
}

int main(int argc, char **argv) {
  long n = parse_arg(argc, argv, 1, 2, 0, 16);
  long rounds = parse_arg(argc, argv, 2, 1, 1, 10000);
  long m = 10000L << n;
  char *flags = malloc((size_t)m + 1);
  if (!flags) {
    fprintf(stderr, "out of memory\n");
    return 3;
  }
  long total = 0;
  for (long r = 0; r < rounds; r++) {
    for (int i = 0; i < 3; i++) {
      long count = nsieve(flags, m >> i);
      total += count;
      if (r == 0)
        printf("Primes up to %8ld %8ld\n", m >> i, count);
    }
  }
  printf("total over %ld rounds: %ld\n", rounds, total);
  free(flags);
  return 0;
}

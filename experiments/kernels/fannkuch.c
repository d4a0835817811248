// fannkuch-redux: for every permutation of 1..n, count the prefix reversals ("pancake flips")
// until 1 comes first; print the alternating checksum of the flip counts and the maximum.
// Permutations are enumerated in the order of the Computer Language Benchmarks Game, so the
// results match its published ones (n = 7: 228 and 16).
//
// usage: fannkuch [N]   (1 <= N <= 12, default 7)
#include <stdio.h>
#include <stdlib.h>

#define MAX_N 12

static int parse_size(int argc, char **argv, int fallback, int lo, int hi) {
  if (argc < 2)
    return fallback;
  char *end;
  long v = strtol(argv[1], &end, 10);
  if (*argv[1] == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "size must be an integer in %d..%d\n", lo, hi);
    exit(2);
  }
  return (int)v;
}

// Flips of one permutation: reverse the first perm[0] + 1 elements until perm[0] is 0.
static int count_flips(const int *perm1, int n) {
  int perm[MAX_N];
  for (int i = 0; i < n; i++)
    perm[i] = perm1[i];
  int flips = 0;
  int k;
  while ((k = perm[0]) != 0) {
    for (int i = 0, j = k; i < j; i++, j--) {
      int t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    flips++;
  }
  return flips;
}

static void fannkuch(int n, long *checksum, int *max_flips) {
  int perm1[MAX_N], count[MAX_N];
  for (int i = 0; i < n; i++)
    perm1[i] = i;
  long sum = 0;
  int max = 0;
  long index = 0;
  int r = n;
  for (;;) {
    for (; r != 1; r--)
      count[r - 1] = r;
    int flips = count_flips(perm1, n);
    if (flips > max)
      max = flips;
    sum += index % 2 == 0 ? flips : -flips;
    // The next permutation: rotate the first r + 1 elements left until a counter is left.
    for (;;) {
      if (r == n) {
        *checksum = sum;
        *max_flips = max;
        return;
      }
      int first = perm1[0];
      for (int i = 0; i < r; i++)
        perm1[i] = perm1[i + 1];
      perm1[r] = first;
      if (--count[r] > 0)
        break;
      r++;
    }
    index++;
  }
}

int main(int argc, char **argv) {
  int n = parse_size(argc, argv, 7, 1, MAX_N);
  long checksum;
  int max_flips;
  fannkuch(n, &checksum, &max_flips);
  printf("%ld\nPfannkuchen(%d) = %d\n", checksum, n, max_flips);
  return 0;
}

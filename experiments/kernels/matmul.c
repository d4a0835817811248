// matmul: C = A B for dense N x N matrices of doubles with the naive i-k-j triple loop;
// A(i,j) = ((31 i + 17 j) mod 101) / 50 - 1 and B(i,j) = ((13 i + 7 j) mod 89) / 44 - 1.
// Prints the trace of C, the sum of all its entries and one entry, with six decimals (the
// sums are taken in a fixed order, so -O0 and -O2 agree without fast-math).
//
// usage: matmul [N]   (1 <= N <= 4000, default 60)
#include <stdio.h>
#include <stdlib.h>

static long parse_size(int argc, char **argv, long fallback, long lo, long hi) {
  if (argc < 2)
    return fallback;
  char *end;
  long v = strtol(argv[1], &end, 10);
  if (*argv[1] == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "size must be an integer in %ld..%ld\n", lo, hi);
    exit(2);
  }
  return v;
}

static void multiply(long n, const double *a, const double *b, double *c) {
  for (long i = 0; i < n * n; i++)
    c[i] = 0;
  for (long i = 0; i < n; i++)
    for (long k = 0; k < n; k++) {
      double aik = a[i * n + k];
      for (long j = 0; j < n; j++)
        c[i * n + j] += aik * b[k * n + j];
    }
}

int main(int argc, char **argv) {
  long n = parse_size(argc, argv, 60, 1, 4000);
  double *a = malloc(n * n * sizeof *a);
  double *b = malloc(n * n * sizeof *b);
  double *c = malloc(n * n * sizeof *c);
  if (!a || !b || !c) {
    fprintf(stderr, "out of memory\n");
    return 3;
  }
  for (long i = 0; i < n; i++)
    for (long j = 0; j < n; j++) {
      a[i * n + j] = (double)((31 * i + 17 * j) % 101) / 50.0 - 1.0;
      b[i * n + j] = (double)((13 * i + 7 * j) % 89) / 44.0 - 1.0;
    }
  multiply(n, a, b, c);
  double trace = 0, sum = 0;
  for (long i = 0; i < n; i++) {
    trace += c[i * n + i];
    for (long j = 0; j < n; j++)
      sum += c[i * n + j];
  }
  printf("matmul %ld: trace %.6f, sum %.6f, c[n/2][n/3] %.6f\n", n, trace, sum,
         c[(n / 2) * n + n / 3]);
  free(a);
  free(b);
  free(c);
  return 0;
}

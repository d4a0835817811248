// spectral-norm: the largest singular value of the infinite matrix A(i,j) = 1/((i+j)(i+j+1)/2
// + i + 1), truncated to N x N, by ten steps of the power method on A^T A; printed with nine
// decimals (N = 100: 1.274219991).
//
// usage: spectralnorm [N]   (1 <= N <= 100000, default 100)
#include <math.h>
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

static double a(long i, long j) { return 1.0 / ((i + j) * (i + j + 1) / 2 + i + 1); }

// out = A v
static void mul_av(long n, const double *v, double *out) {
  for (long i = 0; i < n; i++) {
    double sum = 0;
    for (long j = 0; j < n; j++)
      sum += a(i, j) * v[j];
    out[i] = sum;
  }
}

// out = A^T v
static void mul_atv(long n, const double *v, double *out) {
  for (long i = 0; i < n; i++) {
    double sum = 0;
    for (long j = 0; j < n; j++)
      sum += a(j, i) * v[j];
    out[i] = sum;
  }
}

// out = A^T A v, through tmp
static void mul_atav(long n, const double *v, double *out, double *tmp) {
  mul_av(n, v, tmp);
  mul_atv(n, tmp, out);
}

int main(int argc, char **argv) {
  long n = parse_size(argc, argv, 100, 1, 100000);
  double *u = malloc(n * sizeof *u);
  double *v = malloc(n * sizeof *v);
  double *tmp = malloc(n * sizeof *tmp);
  if (!u || !v || !tmp) {
    fprintf(stderr, "out of memory\n");
    return 3;
  }
  for (long i = 0; i < n; i++)
    u[i] = 1;
  for (int step = 0; step < 10; step++) {
    mul_atav(n, u, v, tmp);
    mul_atav(n, v, u, tmp);
  }
  double vbv = 0, vv = 0;
  for (long i = 0; i < n; i++) {
    vbv += u[i] * v[i];
    vv += v[i] * v[i];
  }
  printf("%.9f\n", sqrt(vbv / vv));
  free(u);
  free(v);
  free(tmp);
  return 0;
}

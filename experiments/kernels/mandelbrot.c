// mandelbrot: the Computer Language Benchmarks Game's N x N bitmap of the Mandelbrot set over
// [-1.5, 0.5] x [-1, 1] (50 iterations, escape radius 2), packed eight pixels a byte as in its
// PBM output; prints the number of points inside and an FNV-1a hash of the packed rows
// instead of the image.
//
// usage: mandelbrot [N]   (1 <= N <= 100000, default 200)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ITERATIONS 50

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

// 1 when c = cr + ci i stays bounded for ITERATIONS steps of z = z^2 + c.
static int inside(double cr, double ci) {
  double zr = 0, zi = 0, tr = 0, ti = 0;
  for (int i = 0; i < ITERATIONS && tr + ti <= 4.0; i++) {
    zi = 2.0 * zr * zi + ci;
    zr = tr - ti + cr;
    tr = zr * zr;
    ti = zi * zi;
  }
  return tr + ti <= 4.0;
}

int main(int argc, char **argv) {
  long n = parse_size(argc, argv, 200, 1, 100000);
  uint64_t hash = 14695981039346656037ULL;
  long points = 0;
  for (long y = 0; y < n; y++) {
    double ci = 2.0 * y / n - 1.0;
    unsigned bits = 0;
    int nbits = 0;
    for (long x = 0; x < n; x++) {
      double cr = 2.0 * x / n - 1.5;
      int in = inside(cr, ci);
      points += in;
      bits = bits << 1 | (unsigned)in;
      if (++nbits == 8 || x == n - 1) {
        bits <<= 8 - nbits;
        hash = (hash ^ (bits & 0xff)) * 1099511628211ULL;
        bits = 0;
        nbits = 0;
      }
    }
  }
  printf("mandelbrot %ld: %ld points inside, hash %016llx\n", n, points,
         (unsigned long long)hash);
  return 0;
}

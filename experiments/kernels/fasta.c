// fasta: the Computer Language Benchmarks Game's DNA generator (a repeated ALU sequence of
// 2N nucleotides, then 3N and 5N drawn from two weighted alphabets with its linear
// congruential generator), 60 nucleotides a line. Instead of the text it prints, for each of
// the three sequences, its length, its lines, how often each letter occurs, and an FNV-1a
// hash of the exact bytes the benchmark would print (headers included).
//
// usage: fasta [N]   (0 <= N <= 100000000, default 1000)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE 60
#define IM 139968
#define IA 3877
#define IC 29573

struct amino {
  char c;
  double p;
};

static struct amino iub[] = {
    {'a', 0.27}, {'c', 0.12}, {'g', 0.12}, {'t', 0.27}, {'B', 0.02}, {'D', 0.02},
    {'H', 0.02}, {'K', 0.02}, {'M', 0.02}, {'N', 0.02}, {'R', 0.02}, {'S', 0.02},
    {'V', 0.02}, {'W', 0.02}, {'Y', 0.02},
};

static struct amino homo_sapiens[] = {
    {'a', 0.3029549426680},
    {'c', 0.1979883004921},
    {'g', 0.1975473066391},
    {'t', 0.3015094502008},
};

static const char alu[] = "GGCCGGGCGCGGTGGCTCACGCCTGTAATCCCAGCACTTTGG"
                          "GAGGCCGAGGCGGGCGGATCACCTGAGGTCAGGAGTTCGAGA"
                          "CCAGCCTGGCCAACATGGTGAAACCCCGTCTCTACTAAAAAT"
                          "ACAAAAATTAGCCGGGCGTGGTGGCGCGCCTGCGCCTGTAAT"
                          "CCCAGCTACTCGGGAGGCTGAGGCAGGAGAATCGCTTGAACC"
                          "CGGGAGGCGGAGGTTGCAGTGAGCCGAGATCGCGCCACTGCA"
                          "CTCCAGCCTGGGCGACAGAGCGAGACTCCGTCTCAAAAA";

// What one sequence's output looked like.
struct digest {
  uint64_t hash;
  long letters, lines;
  long count[256];
};

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

static void digest_init(struct digest *d) {
  memset(d, 0, sizeof *d);
  d->hash = 14695981039346656037ULL;
}

static void digest_bytes(struct digest *d, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    d->hash = (d->hash ^ (unsigned char)s[i]) * 1099511628211ULL;
}

// One line of nucleotides and its newline.
static void digest_line(struct digest *d, const char *s, size_t n) {
  digest_bytes(d, s, n);
  digest_bytes(d, "\n", 1);
  for (size_t i = 0; i < n; i++)
    d->count[(unsigned char)s[i]]++;
  d->letters += (long)n;
  d->lines++;
}

static void repeat_fasta(struct digest *d, const char *s, long n) {
  size_t len = strlen(s);
  size_t pos = 0;
  char line[LINE];
  while (n > 0) {
    size_t m = n < LINE ? (size_t)n : LINE;
    for (size_t i = 0; i < m; i++) {
      line[i] = s[pos];
      if (++pos == len)
        pos = 0;
    }
    digest_line(d, line, m);
    n -= (long)m;
  }
}

static long last = 42;

static double random_next(double max) {
  last = (last * IA + IC) % IM;
  return max * last / IM;
}

static void random_fasta(struct digest *d, struct amino *genes, int ngenes, long n) {
  double cumulative = 0;
  for (int i = 0; i < ngenes; i++) {
    cumulative += genes[i].p;
    genes[i].p = cumulative;
  }
  char line[LINE];
  while (n > 0) {
    size_t m = n < LINE ? (size_t)n : LINE;
    for (size_t i = 0; i < m; i++) {
      double r = random_next(1.0);
      int g = 0;
      while (g < ngenes - 1 && genes[g].p < r)
        g++;
      line[i] = genes[g].c;
    }
    digest_line(d, line, m);
    n -= (long)m;
  }
}

static void report(const char *id, const struct digest *d) {
  printf("%s: %ld nucleotides, %ld lines, hash %016llx\n", id, d->letters, d->lines,
         (unsigned long long)d->hash);
  printf("  ");
  for (int c = 0; c < 256; c++)
    if (d->count[c])
      printf(" %c=%ld", c, d->count[c]);
  printf("\n");
}

int main(int argc, char **argv) {
  long n = parse_size(argc, argv, 1000, 0, 100000000L);
  static struct digest d;
  static const char h1[] = ">ONE Homo sapiens alu\n";
  static const char h2[] = ">TWO IUB ambiguity codes\n";
  static const char h3[] = ">THREE Homo sapiens frequency\n";

  digest_init(&d);
  digest_bytes(&d, h1, strlen(h1));
  repeat_fasta(&d, alu, 2 * n);
  report("ONE", &d);

  digest_init(&d);
  digest_bytes(&d, h2, strlen(h2));
  random_fasta(&d, iub, (int)(sizeof iub / sizeof iub[0]), 3 * n);
  report("TWO", &d);

  digest_init(&d);
  digest_bytes(&d, h3, strlen(h3));
  random_fasta(&d, homo_sapiens, (int)(sizeof homo_sapiens / sizeof homo_sapiens[0]), 5 * n);
  report("THREE", &d);
  return 0;
}

// binary-trees: allocate and walk many perfect binary trees with malloc and free, as the
// Computer Language Benchmarks Game's program does: a stretch tree of depth N + 1, a long-lived
// tree of depth N, and 2^(N - d + 4) trees of each even depth d from 4 to N, each checked by
// counting its nodes.
//
// usage: binarytrees [N]   (0 <= N <= 24, default 10)
#include <stdio.h>
#include <stdlib.h>

struct node {
  struct node *left, *right;
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

static struct node *make(int depth) {
  struct node *n = malloc(sizeof *n);
  if (!n) {
    fprintf(stderr, "out of memory\n");
    exit(3);
  }
  if (depth > 0) {
    n->left = make(depth - 1);
    n->right = make(depth - 1);
  } else {
    n->left = n->right = NULL;
  }
  return n;
}

static long check(const struct node *n) {
  return 1 + (n->left ? check(n->left) + check(n->right) : 0);
}

static void release(struct node *n) {
  if (n->left) {
    release(n->left);
    release(n->right);
  }
  free(n);
}

int main(int argc, char **argv) {
  int max_depth = (int)parse_size(argc, argv, 10, 0, 24);
  if (max_depth < 6)
    max_depth = 6;

  struct node *stretch = make(max_depth + 1);
  printf("stretch tree of depth %d\t check: %ld\n", max_depth + 1, check(stretch));
  release(stretch);

  struct node *long_lived = make(max_depth);
  for (int depth = 4; depth <= max_depth; depth += 2) {
    long iterations = 1L << (max_depth - depth + 4);
    long sum = 0;
    for (long i = 0; i < iterations; i++) {
      struct node *t = make(depth);
      sum += check(t);
      release(t);
    }
    printf("%ld\t trees of depth %d\t check: %ld\n", iterations, depth, sum);
  }
  printf("long lived tree of depth %d\t check: %ld\n", max_depth, check(long_lived));
  release(long_lived);
  return 0;
}

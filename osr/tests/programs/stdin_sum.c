// stdin_sum.c: standard input. In "numbers" mode it reads whitespace-separated numbers with
// scanf until EOF and prints their count, integer sum and floating sum; in "lines" mode it reads
// lines with fgets, splits words with strtok and counts lines, words and characters; in "chars"
// mode it reads with getchar/ungetc and folds every byte into a hash.
// uppercut-test: args="numbers" stdin="1 2 3\n-4 5.5\n1e3\n  17\n"
// uppercut-test: args="numbers" stdin=""
// uppercut-test: args="numbers" stdin="12 -3 4.25 1000000 " stdin-repeat=20000
// uppercut-test: args="lines" stdin="hello world\n  two   words\n\nthe last line has no newline"
// uppercut-test: args="chars" stdin="abc\x01\xff\n\tzz" stdin-repeat=5000
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int numbers(void) {
  double value, fsum = 0;
  long isum = 0, count = 0;
  while (scanf("%lf", &value) == 1) {
    count++;
    fsum += value;
    isum += (long)value;
  }
  if (!feof(stdin)) {
    printf("FAIL: stopped before EOF\n");
    return 1;
  }
  printf("%ld numbers, integer parts sum to %ld, sum = %.6f\n", count, isum, fsum);
  return 0;
}

static int lines(void) {
  char line[256];
  long nlines = 0, nwords = 0, nchars = 0;
  while (fgets(line, sizeof line, stdin)) {
    nlines++;
    nchars += (long)strlen(line);
    int first = 1;
    for (char *w = strtok(line, " \t\n"); w; w = strtok(NULL, " \t\n")) {
      nwords++;
      printf("%s%s", first ? "" : "|", w);
      first = 0;
    }
    printf("\n");
  }
  printf("%ld lines, %ld words, %ld chars\n", nlines, nwords, nchars);
  return 0;
}

static int chars(void) {
  unsigned long hash = 5381, count = 0;
  int c;
  while ((c = getchar()) != EOF) {
    if (c == '\n') {
      int next = getchar();
      if (next != EOF)
        ungetc(next, stdin);
      hash = hash * 33 + (next == EOF ? 1 : 2);
    }
    hash = hash * 33 + (unsigned)c;
    count++;
  }
  printf("%lu bytes, hash %lu\n", count, hash);
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "numbers";
  if (strcmp(mode, "numbers") == 0)
    return numbers();
  if (strcmp(mode, "lines") == 0)
    return lines();
  if (strcmp(mode, "chars") == 0)
    return chars();
  fprintf(stderr, "unknown mode %s\n", mode);
  return 2;
}

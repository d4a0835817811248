// argv.c: the command line. Prints argc and every argument after argv[0] (argv[0] is the
// program's name, which differs between a native executable and a JIT runner, so it is only
// checked to be a non-empty string), checks argv[argc] == NULL, modifies the argument strings
// in place (they are writable), and sums the arguments that parse as integers.
// uppercut-test: args="alpha beta gamma 42 -7 0x10"
// uppercut-test: args=""
// uppercut-test: arg="with space" arg="" arg="tab\there" arg="\xc3\xbcnic\xc3\xb6de" arg="--flag=1"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  int failures = 0;
  printf("argc = %d\n", argc);
  if (argc < 1 || argv[0] == NULL || argv[0][0] == 0) {
    printf("FAIL: argv[0] missing\n");
    failures++;
  }
  if (argv[argc] != NULL) {
    printf("FAIL: argv[argc] is not NULL\n");
    failures++;
  }
  long sum = 0;
  int numbers = 0;
  size_t total_length = 0;
  for (int i = 1; i < argc; i++) {
    size_t len = strlen(argv[i]);
    total_length += len;
    printf("argv[%d] = \"%s\" (%zu bytes)\n", i, argv[i], len);
    char *end;
    long v = strtol(argv[i], &end, 0);
    if (len > 0 && *end == 0) {
      sum += v;
      numbers++;
    }
    for (char *p = argv[i]; *p; p++)
      *p = (char)toupper((unsigned char)*p);
  }
  for (int i = 1; i < argc; i++)
    printf("upper[%d] = %s\n", i, argv[i]);
  printf("%d numeric arguments sum to %ld; %zu bytes in all\n", numbers, sum, total_length);
  return failures;
}

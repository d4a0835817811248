// exit_code.c: main's return value is the exit status, truncated to 8 bits (300 -> 44,
// -1 -> 255), and returning from main runs atexit handlers and flushes stdout like exit() does.
// main also calls itself recursively (legal C): each level drops the last argument, and the
// outermost returns the sum of all the codes (the status is that sum modulo 256).
// Arguments: CODE... (each an integer).
// uppercut-test: args="0" exit=0
// uppercut-test: args="7" exit=7
// uppercut-test: args="300" exit=44
// uppercut-test: args="-1" exit=255
// uppercut-test: args="1 2 3 250" exit=0
// uppercut-test: args="100 20 3" exit=123
// uppercut-test: args="" exit=1
#include <stdio.h>
#include <stdlib.h>

static int depth;
static void at_exit_report(void) { printf("atexit: main was entered %d times\n", depth); }

int main(int argc, char **argv) {
  int level = ++depth;
  if (level == 1) {
    atexit(at_exit_report);
    if (argc < 2) {
      fprintf(stderr, "usage: exit_code CODE...\n");
      return 1;
    }
  }
  int code = atoi(argv[argc - 1]);
  int rest = argc > 2 ? main(argc - 1, argv) : 0;
  int total = code + rest;
  printf("level %d: code %d + rest %d = %d\n", level, code, rest, total);
  return total;
}

// quick_exit.c: quick_exit(CODE) from DEPTH frames deep. It runs the at_quick_exit handlers
// (in reverse order of registration) but neither the atexit handlers nor a final stdio flush:
// stdout is fully buffered, and only what a handler flushes itself appears.
// at_quick_exit, like atexit, is not in libc.so but in libc_nonshared.a (linked statically into
// each executable), so a JIT has to supply it; lli's MCJIT does not (it special-cases atexit
// only) and crashes on any module that merely mentions it, hence lli-differs.
// Arguments: DEPTH CODE
// uppercut-test: args="3000 3" exit=3 lli-differs="MCJIT cannot resolve at_quick_exit"
// uppercut-test: args="1 0" exit=0 lli-differs="MCJIT cannot resolve at_quick_exit"
#include <stdio.h>
#include <stdlib.h>

static char stdout_buffer[1 << 16];
static long frames_entered;

static void never_runs(void) { printf("FAIL: atexit handler ran after quick_exit\n"); }
static void quick_first(void) {
  printf("at_quick_exit handler registered first (runs last), %ld frames\n", frames_entered);
  fflush(stdout);
}
static void quick_second(void) { printf("at_quick_exit handler registered second (runs first)\n"); }

__attribute__((noinline)) static int descend(int depth, int code) {
  frames_entered++;
  if (depth == 0) {
    printf("bottom reached; quick_exit(%d)\n", code);
    fprintf(stderr, "stderr: quick_exit(%d)\n", code);
    quick_exit(code);
  }
  return descend(depth - 1, code) + 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: quick_exit DEPTH CODE\n");
    return 2;
  }
  setvbuf(stdout, stdout_buffer, _IOFBF, sizeof stdout_buffer);
  atexit(never_runs);
  at_quick_exit(quick_first);
  at_quick_exit(quick_second);
  printf("buffered before descending\n");
  return descend(atoi(argv[1]), atoi(argv[2]));
}

// exit_deep.c: leaving the program from deep inside. Recursion DEPTH frames deep (each frame
// holding live values), the deepest frame calls exit(CODE) or _exit(CODE), or returns CODE all
// the way up to main. stdout is fully buffered with unflushed text in it; atexit handlers (run
// in reverse order of registration, each printing state) show which exit path ran. With _exit
// nothing buffered may appear. (quick_exit is in quick_exit.c.)
// Arguments: DEPTH CODE MODE where MODE is exit, _exit or return.
// uppercut-test: args="5000 42 exit" exit=42
// uppercut-test: args="20000 0 exit" exit=0
// uppercut-test: args="1 7 exit" exit=7
// uppercut-test: args="3000 9 _exit" exit=9
// uppercut-test: args="12000 5 return" exit=5
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char stdout_buffer[1 << 16];
static long frames_entered;
static unsigned long path_hash;
static const char *mode;

static void handler_first(void) { printf("atexit handler registered first (runs last)\n"); }
static void handler_second(void) {
  printf("atexit handler registered second: %ld frames entered, path hash %lu\n", frames_entered,
         path_hash);
}
static void handler_third(void) {
  printf("atexit handler registered third (runs first)");
  fputs(" -- and its output has no newline either", stdout);
}

__attribute__((noinline)) static int descend(int depth, int code, unsigned long salt) {
  frames_entered++;
  unsigned long local = salt * 6364136223846793005ul + (unsigned long)depth;
  path_hash ^= local >> 13;
  if (depth == 0) {
    printf("bottom reached after %ld frames; leaving with %s(%d)", frames_entered, mode, code);
    fprintf(stderr, "stderr is unbuffered: leaving with %s(%d)\n", mode, code);
    if (strcmp(mode, "exit") == 0)
      exit(code);
    if (strcmp(mode, "_exit") == 0)
      _exit(code);
    return code;
  }
  int r = descend(depth - 1, code, local);
  // Only reached on the "return" path: unwinding frame by frame.
  path_hash += local & 0xff;
  return r;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: exit_deep DEPTH CODE MODE\n");
    return 2;
  }
  setvbuf(stdout, stdout_buffer, _IOFBF, sizeof stdout_buffer);
  int depth = atoi(argv[1]), code = atoi(argv[2]);
  mode = argv[3];
  atexit(handler_first);
  atexit(handler_second);
  atexit(handler_third);
  printf("buffered: depth %d, code %d, mode %s\n", depth, code, mode);
  int r = descend(depth, code, 1);
  printf("\nreturned %d to main; path hash %lu\n", r, path_hash);
  return r;
}

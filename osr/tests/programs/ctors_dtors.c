// ctors_dtors.c: static constructors and destructors (llvm.global_ctors / llvm.global_dtors)
// around main, with priorities, interleaved with atexit handlers. Natively the constructors run
// before main in priority order; on exit, atexit handlers registered in main run first (reverse
// order), then the destructors (reverse priority order), all before stdio is flushed for the
// last time. Argument "exit" leaves through exit() inside a callee instead of returning.
// lli-19 differs from native here (MCJIT runs destructors before atexit handlers, and none on
// exit(); ORC runs neither on exit()): marked lli-differs so the lli debugging run skips it.
// uppercut-test: args="return" lli-differs="destructor and atexit order"
// uppercut-test: args="exit" exit=3 lli-differs="destructors skipped on exit()"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int trace[16];
static int trace_len;
static long table[256];

__attribute__((constructor(101))) static void early(void) {
  trace[trace_len++] = 101;
  for (int i = 0; i < 256; i++)
    table[i] = (long)i * i;
  printf("constructor 101: table ready\n");
}
__attribute__((constructor(200))) static void later(void) {
  trace[trace_len++] = 200;
  printf("constructor 200: table[255] = %ld, ran after %d\n", table[255], trace[0]);
}
__attribute__((constructor)) static void unprioritised(void) {
  trace[trace_len++] = 65535;
  printf("constructor (default priority) runs last of the constructors\n");
}

__attribute__((destructor(101))) static void destroy_early(void) {
  printf("destructor 101 (runs last)\n");
}
__attribute__((destructor(200))) static void destroy_later(void) {
  printf("destructor 200: trace length %d\n", trace_len);
}

static void handler_a(void) { printf("atexit a (registered first)\n"); }
static void handler_b(void) {
  trace[trace_len++] = -1;
  printf("atexit b (registered second, runs first)\n");
}

__attribute__((noinline)) static void leave(int code) {
  printf("leaving through exit(%d)", code);
  exit(code);
}

int main(int argc, char **argv) {
  printf("main: constructors ran in order %d %d %d\n", trace[0], trace[1], trace[2]);
  int ok = trace_len == 3 && trace[0] == 101 && trace[1] == 200 && trace[2] == 65535;
  atexit(handler_a);
  atexit(handler_b);
  long sum = 0;
  for (int round = 0; round < 1000; round++)
    for (int i = 0; i < 256; i++)
      sum += table[i] % (round + 1);
  printf("main: sum %ld\n", sum);
  if (argc > 1 && strcmp(argv[1], "exit") == 0)
    leave(3);
  return ok ? 0 : 1;
}

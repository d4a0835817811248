// linkage.c: symbols the JIT must link the way the static linker and ld.so do: undefined weak
// functions and variables are null (and a program may test them), a defined weak function is
// used, glibc's inline-able library functions (atoi, strtol, atof) called with and without
// optimisation, static functions and variables with the same names in different scopes, and
// function pointers to libc functions compared and called.
// uppercut-test: args="41 2.5"
// uppercut-test: args="-7 1e3" exit=3
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int uppercut_test_undefined_weak_fn(void) __attribute__((weak));
extern int uppercut_test_undefined_weak_var __attribute__((weak));

__attribute__((weak)) int defined_weak(int x) { return x * 3; }

static int counter(void) {
  static int calls;
  return ++calls;
}

static int scoped(int x) {
  static int calls = 100;
  calls += x;
  return calls;
}

typedef size_t (*len_fn)(const char *);

int main(int argc, char **argv) {
  printf("weak fn %s\n", uppercut_test_undefined_weak_fn ? "present" : "absent");
  printf("weak var %s\n", &uppercut_test_undefined_weak_var ? "present" : "absent");
  if (uppercut_test_undefined_weak_fn) printf("%d\n", uppercut_test_undefined_weak_fn());
  printf("defined weak %d\n", defined_weak(14));
  for (int i = 0; i < 3; i++) printf("counter %d scoped %d\n", counter(), scoped(i));
  int n = argc > 1 ? atoi(argv[1]) : 0;
  long l = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
  double d = argc > 2 ? atof(argv[2]) : 0.0;
  printf("atoi %d strtol %ld atof %.3f\n", n, l, d);
  len_fn f = strlen;
  printf("strlen via pointer %zu, same function %d\n", f("linkage"), f == strlen);
  return n < 0 ? 3 : 0;
}

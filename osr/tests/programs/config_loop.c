// The design note's scenario: a server loop that reads a configuration global on every request
// (like Apache httpd's ap_extended_status). Under `uppercut run --osr-specialize=extended_status`
// each store to it is followed by a hypercall: the functions that read it are rebuilt with the
// value as a constant, the running loop moves into that specialisation, and the next store with
// another value deoptimises it and specialises again. The result must not change.
//
// uppercut-test: args="20000"
// uppercut-test: args="3"
#include <stdio.h>
#include <stdlib.h>

int extended_status = 0;

__attribute__((noinline)) static long account(long request, long bytes) {
  if (extended_status == 0)
    return bytes;
  if (extended_status == 1)
    return bytes + (request & 7);
  return bytes * 2 + (request % 13);
}

__attribute__((noinline)) long serve(long requests) {
  long total = 0;
  for (long r = 0; r < requests; r++) {
    long bytes = 100 + r % 57;
    total += account(r, bytes);
    if (extended_status)
      total += extended_status * 3;
    // The administrator turns the status page on, then up, then off again, mid-loop.
    if (r == requests / 4)
      extended_status = 1;
    if (r == requests / 2)
      extended_status = 2;
    if (r == 3 * requests / 4)
      extended_status = 0;
  }
  return total;
}

// The same computation without the global: what `serve` must return.
static long expected(long requests) {
  long total = 0;
  int status = 0;
  for (long r = 0; r < requests; r++) {
    long bytes = 100 + r % 57;
    total += status == 0 ? bytes : status == 1 ? bytes + (r & 7) : bytes * 2 + (r % 13);
    total += status * 3;
    if (r == requests / 4)
      status = 1;
    if (r == requests / 2)
      status = 2;
    if (r == 3 * requests / 4)
      status = 0;
  }
  return total;
}

int main(int argc, char **argv) {
  long requests = argc > 1 ? atol(argv[1]) : 20000;
  long got = serve(requests);
  long want = expected(requests);
  printf("served %ld requests: total %ld (expected %ld), status %d\n", requests, got, want,
         extended_status);
  return got == want ? 0 : 1;
}

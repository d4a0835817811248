// hotswap.c: the headline demo (not part of the differential matrix: it needs the engine).
//
// A program asks the engine, from inside itself, to recompile a hot function at O2, and keeps
// running with the same results. Two phases:
//   1. main calls hot_kernel() round after round; halfway through, main asks for hot_kernel to
//      be recompiled. No hot_kernel frame is live then: later calls go to the new code.
//   2. hot_loop() is one long-running loop; halfway through its own loop it asks for hot_loop
//      itself to be recompiled. Its live frame stays in the old code, unless on-stack
//      replacement moves it: under `--osr=tier` the loop's counter fires once it is hot and the
//      frame moves into O2 code mid-loop. Either way the output must not change.
// Every round's checksum is checked against reference_kernel(), which is never recompiled.
//
// The request is the hypercall
//   void *PerformCustomCallback(const char *name, void *args);
// with name "uppercut.recompile" and args pointing to { const char *function; long opt_level; }.
// It returns a NUL-terminated status string or NULL; a non-NULL status is printed on a line
// starting with "engine:", the only lines that may differ from run to run. Everything else is
// deterministic. It cannot run natively (PerformCustomCallback is the engine's).
//
// Run it (the engine lifts clang -O0's `optnone` from the versions it builds at O1 and above,
// so the O2 version really is optimised code):
//   clang-19 -O0 -S -emit-llvm hotswap.c -o hotswap.ll
//   uppercut run -O0 --osr=tier --osr-stats hotswap.ll
#include <stdint.h>
#include <stdio.h>

extern void *PerformCustomCallback(const char *name, void *args);

struct recompile_request {
  const char *function;
  long opt_level;
};

#define N 4096
#define ROUNDS 2000
#define REPORT_EVERY 250
static uint32_t data[N];

// The hot function of phase 1.
__attribute__((noinline)) uint64_t hot_kernel(const uint32_t *values, long n, uint64_t seed) {
  uint64_t h = seed;
  for (long i = 0; i < n; i++) {
    h ^= values[i] + (uint64_t)i;
    h *= 0x100000001b3ull;
    h ^= h >> 29;
  }
  return h;
}

// The same computation, written separately and never recompiled: the reference.
__attribute__((noinline)) static uint64_t reference_kernel(const uint32_t *values, long n,
                                                           uint64_t seed) {
  uint64_t h = seed;
  long i = 0;
  while (i < n) {
    uint64_t v = values[i];
    v += (uint64_t)i++;
    h = (h ^ v) * 0x100000001b3ull;
    h = h ^ (h >> 29);
  }
  return h;
}

// Asks the engine to recompile `function` at `opt_level`, and prints what it answered.
__attribute__((noinline)) static void request_recompile(const char *function, long opt_level) {
  struct recompile_request request = {function, opt_level};
  printf("requesting recompilation of %s at O%ld\n", function, opt_level);
  fflush(stdout);
  const char *status = PerformCustomCallback("uppercut.recompile", &request);
  if (status)
    printf("engine: %s\n", status);
  fflush(stdout);
}

static int mismatches;

// Phase 2's hot function: the whole loop lives in one frame, which asks for its own
// recompilation halfway through.
__attribute__((noinline)) uint64_t hot_loop(const uint32_t *values, long n, long rounds) {
  uint64_t checksum = 0;
  for (long round = 0; round < rounds; round++) {
    if (round == rounds / 2)
      request_recompile("hot_loop", 2);
    uint64_t h = (uint64_t)round;
    for (long i = 0; i < n; i++) {
      h ^= values[i] + (uint64_t)i;
      h *= 0x100000001b3ull;
      h ^= h >> 29;
    }
    if (h != reference_kernel(values, n, (uint64_t)round))
      mismatches++;
    checksum = checksum * 31 + h;
    if ((round + 1) % REPORT_EVERY == 0)
      printf("hot_loop   round %3ld: checksum %016llx\n", round + 1,
             (unsigned long long)checksum);
  }
  return checksum;
}

int main(void) {
  uint32_t x = 2463534242u;
  for (int i = 0; i < N; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    data[i] = x;
  }

  printf("phase 1: main calls hot_kernel %d times\n", ROUNDS);
  uint64_t checksum = 0;
  for (long round = 0; round < ROUNDS; round++) {
    if (round == ROUNDS / 2)
      request_recompile("hot_kernel", 2);
    uint64_t h = hot_kernel(data, N, (uint64_t)round);
    if (h != reference_kernel(data, N, (uint64_t)round))
      mismatches++;
    checksum = checksum * 31 + h;
    if ((round + 1) % REPORT_EVERY == 0)
      printf("hot_kernel round %3ld: checksum %016llx\n", round + 1,
             (unsigned long long)checksum);
  }

  printf("phase 2: hot_loop runs %d rounds in one frame\n", ROUNDS);
  uint64_t looped = hot_loop(data, N, ROUNDS);

  printf("phase checksums %s: %016llx %016llx\n", checksum == looped ? "agree" : "DISAGREE",
         (unsigned long long)checksum, (unsigned long long)looped);
  printf("%d mismatches against the reference\n", mismatches);
  printf("%s\n", mismatches == 0 && checksum == looped ? "hotswap: ok" : "hotswap: FAILED");
  return mismatches == 0 && checksum == looped ? 0 : 1;
}

// threads_shared.c: four threads run the same function over and over while the main thread
// flips a configuration flag (`extended`) that the function reads on every pass, 64 times. Under
// `--osr-specialize=extended` every flip recompiles and relinks `work` specialised on the new
// value, and every thread's frames of `work` move at that thread's next site; under `--osr=tier`
// the first thread whose loop gets hot relinks `work` at O2 and the others follow. The printed
// results do not depend on the flag (it only switches extra bookkeeping on, as Apache's
// `ap_extended_status` does), so they must match the native run exactly.
// uppercut-test: args="" stdin=""
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

#define THREADS 4
#define PASSES 1000000L

long extended;
static unsigned long bookkeeping[THREADS];

__attribute__((noinline)) static unsigned long mix(unsigned long h, long i) {
  h ^= (unsigned long)i + 0x9e3779b97f4a7c15ul + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdul;
}

__attribute__((noinline)) unsigned long work(int t, long passes) {
  unsigned long h = (unsigned long)t * 1000003ul;
  for (long i = 0; i < passes; i++) {
    h = mix(h, i);
    if (extended)
      bookkeeping[t] += h & 1;
  }
  return h;
}

static unsigned long results[THREADS];
static long rounds[THREADS];
static int done;

// Every round computes the same value: how many rounds run (which depends on timing) does not
// change the result.
static void *worker(void *arg) {
  int t = (int)(long)arg;
  do {
    results[t] = work(t, PASSES);
    __atomic_fetch_add(&rounds[t], 1, __ATOMIC_RELEASE);
  } while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE));
  return NULL;
}

int main(void) {
  pthread_t threads[THREADS];
  for (long t = 0; t < THREADS; t++)
    pthread_create(&threads[t], NULL, worker, (void *)t);
  // Flip the flag while the workers run (a store, then a hypercall, under specialisation), and
  // let every worker finish a round of `work` before the next flip, so that however fast a flip
  // is (a cached specialisation is relinked in microseconds) and however the threads are
  // scheduled, workers are inside `work` when it is relinked.
  for (int flip = 0; flip < 64; flip++) {
    long seen[THREADS];
    for (int t = 0; t < THREADS; t++)
      seen[t] = __atomic_load_n(&rounds[t], __ATOMIC_ACQUIRE);
    __atomic_store_n(&extended, flip & 1, __ATOMIC_RELAXED);
    for (int t = 0; t < THREADS; t++)
      while (__atomic_load_n(&rounds[t], __ATOMIC_ACQUIRE) <= seen[t])
        sched_yield();
  }
  extended = 0;
  __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
  for (int t = 0; t < THREADS; t++)
    pthread_join(threads[t], NULL);
  for (int t = 0; t < THREADS; t++)
    printf("thread %d: %016lx\n", t, results[t]);
  return 0;
}

// threads.c: guest code on several threads at once. Four pthreads run the same guest loop
// (calls, a thread-local counter, a stack array) on their own stacks; a mutex-protected shared
// total and a condition-variable handshake synchronise them; results are combined in thread
// order so the output does not depend on scheduling.
// uppercut-test: args=""
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

#define THREADS 4
static _Thread_local unsigned long calls_here;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t all_ready = PTHREAD_COND_INITIALIZER;
static int ready;
static unsigned long shared_total;

__attribute__((noinline)) static unsigned long mix(unsigned long x, unsigned long k) {
  calls_here++;
  return (x ^ (x >> 29)) * 0xbf58476d1ce4e5b9ul + k;
}

struct work {
  int id;
  unsigned long result;
  unsigned long calls;
};

static void *worker(void *arg) {
  struct work *w = arg;
  // Wait until every thread has started, so they really run concurrently.
  pthread_mutex_lock(&lock);
  ready++;
  if (ready == THREADS)
    pthread_cond_broadcast(&all_ready);
  while (ready < THREADS)
    pthread_cond_wait(&all_ready, &lock);
  pthread_mutex_unlock(&lock);

  unsigned long window[16];
  memset(window, 0, sizeof window);
  unsigned long x = (unsigned long)w->id + 1;
  for (int i = 0; i < 2000000; i++) {
    x = mix(x, (unsigned long)i);
    window[i & 15] ^= x;
    if (i % 250000 == 0) {
      pthread_mutex_lock(&lock);
      shared_total += x & 0xffff;
      pthread_mutex_unlock(&lock);
    }
  }
  for (int i = 0; i < 16; i++)
    x ^= window[i] * (unsigned long)(i + 1);
  w->result = x;
  w->calls = calls_here;
  return NULL;
}

int main(void) {
  pthread_t threads[THREADS];
  struct work work[THREADS];
  for (int t = 0; t < THREADS; t++) {
    work[t] = (struct work){t, 0, 0};
    if (pthread_create(&threads[t], NULL, worker, &work[t]) != 0) {
      printf("FAIL: pthread_create\n");
      return 1;
    }
  }
  for (int t = 0; t < THREADS; t++)
    pthread_join(threads[t], NULL);

  // The same computation on the main thread must give thread 0's result.
  struct work again = {0, 0, 0};
  ready = THREADS;
  unsigned long before = shared_total;
  worker(&again);
  CHECK(again.result == work[0].result, "main thread agrees with thread 0");
  CHECK(calls_here == 2000000, "thread-local counter is per thread");
  for (int t = 0; t < THREADS; t++) {
    printf("thread %d: result %016lx after %lu calls\n", t, work[t].result, work[t].calls);
    CHECK(work[t].calls == 2000000, "calls per thread");
  }
  printf("shared total %lu (main thread added %lu)\n", shared_total, shared_total - before);
  printf("%s\n", failures ? "threads: FAILED" : "threads: ok");
  return failures ? 1 : 0;
}

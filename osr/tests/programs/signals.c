// signals.c: signals delivered into guest code. In "handlers" mode: the inherited SIGPIPE
// disposition must be the default (a runner that ignores SIGPIPE for itself must restore it for
// the guest); a guest SIGUSR1 handler runs 20,000 times from raise() inside a loop with live
// values; an SA_SIGINFO handler receives sigqueue's value; a signal blocked with sigprocmask
// stays pending until unblocked. The other modes end the program with a signal, which the
// exit status must show as natively: "abort" (SIGABRT), "segv" (a real fault: a store through a
// null pointer the compiler cannot see), "term" (raise(SIGTERM) with the default action).
// lli-19 installs LLVM's own handlers (SIGPIPE, and crash handlers printing a stack dump on
// SIGABRT/SIGSEGV), so those cases are marked lli-differs.
// uppercut-test: args="handlers" lli-differs="lli handles SIGPIPE itself"
// uppercut-test: args="abort" signal=6 lli-differs="lli prints a stack dump on SIGABRT"
// uppercut-test: args="segv" signal=11 lli-differs="lli prints a stack dump on SIGSEGV"
// uppercut-test: args="term" signal=15
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t usr1_count;
static volatile sig_atomic_t last_value;
static volatile sig_atomic_t usr2_seen;

static void on_usr1(int sig) { usr1_count += sig == SIGUSR1; }
static void on_info(int sig, siginfo_t *info, void *context) {
  (void)context;
  if (sig == SIGRTMIN && info->si_code == SI_QUEUE)
    last_value = info->si_value.sival_int;
}
static void on_usr2(int sig) { usr2_seen = sig; }

static int handlers(void) {
  int failures = 0;
  struct sigaction old;
  sigaction(SIGPIPE, NULL, &old);
  int pipe_default = old.sa_handler == SIG_DFL;
  printf("SIGPIPE disposition at start: %s\n", pipe_default ? "default" : "NOT default");
  failures += !pipe_default;

  signal(SIGUSR1, on_usr1);
  unsigned long mix = 17;
  double drift = 1.0;
  for (int i = 0; i < 20000; i++) {
    unsigned long before = mix;
    raise(SIGUSR1);
    mix = before * 31 + (unsigned long)usr1_count;
    drift = drift * 1.0000001 + 1e-9;
  }
  printf("SIGUSR1 handled %d times, mix %lu, drift %.9f\n", (int)usr1_count, mix, drift);
  failures += usr1_count != 20000;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_info;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGRTMIN, &sa, NULL);
  long values = 0;
  for (int i = 1; i <= 1000; i++) {
    union sigval v = {.sival_int = i * 3};
    sigqueue(getpid(), SIGRTMIN, v);
    values += last_value;
  }
  printf("sigqueue values sum %ld\n", values);
  failures += values != 3L * 1000 * 1001 / 2;

  signal(SIGUSR2, on_usr2);
  sigset_t block, previous;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  sigprocmask(SIG_BLOCK, &block, &previous);
  raise(SIGUSR2);
  int seen_while_blocked = usr2_seen;
  sigset_t pending;
  sigpending(&pending);
  int was_pending = sigismember(&pending, SIGUSR2);
  sigprocmask(SIG_SETMASK, &previous, NULL);
  printf("SIGUSR2 while blocked: seen %d pending %d; after unblocking: seen %d\n",
         seen_while_blocked, was_pending, (int)usr2_seen == SIGUSR2);
  failures += seen_while_blocked != 0 || was_pending != 1 || usr2_seen != SIGUSR2;

  printf("%s\n", failures ? "signals: FAILED" : "signals: ok");
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "handlers";
  if (strcmp(mode, "handlers") == 0)
    return handlers();
  printf("about to die by %s\n", mode);
  fflush(stdout);
  if (strcmp(mode, "abort") == 0)
    abort();
  if (strcmp(mode, "segv") == 0) {
    int *volatile hidden = NULL; // a volatile load: the compiler cannot see the null
    int *nowhere = hidden;
    *nowhere = 1;
    printf("FAIL: the store did not fault\n");
    return 1;
  }
  if (strcmp(mode, "term") == 0) {
    signal(SIGTERM, SIG_DFL);
    raise(SIGTERM);
    printf("FAIL: still alive after SIGTERM\n");
    return 1;
  }
  fprintf(stderr, "unknown mode %s\n", mode);
  return 2;
}

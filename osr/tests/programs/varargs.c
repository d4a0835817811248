// varargs.c: variadic calls both ways. printf with many mixed arguments (more integer and
// floating arguments than there are argument registers, so some travel on the stack; chars,
// shorts, long long, size_t, long double, strings, %n-free); a guest variadic logger that
// forwards its va_list to vsnprintf; guest variadic functions that walk va_list with va_arg over
// mixed ints and doubles, use va_copy, and pass a va_list down to another guest function.
// uppercut-test: args="" stdin=""
#include <stdarg.h>
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

static char log_buffer[256];
static unsigned long log_hash;

__attribute__((noinline, format(printf, 2, 3))) static int log_line(int level, const char *fmt,
                                                                    ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(log_buffer, sizeof log_buffer, fmt, ap);
  va_end(ap);
  for (const char *p = log_buffer; *p; p++)
    log_hash = log_hash * 131 + (unsigned char)*p;
  if (level > 0)
    printf("[%d] %s\n", level, log_buffer);
  return n;
}

// Descriptor string: 'i' int, 'l' long, 'd' double, 's' string (its length counts).
static double sum_tail(const char *desc, va_list ap) {
  double total = 0;
  for (; *desc; desc++) {
    switch (*desc) {
    case 'i': total += va_arg(ap, int); break;
    case 'l': total += (double)va_arg(ap, long); break;
    case 'd': total += va_arg(ap, double); break;
    case 's': total += (double)strlen(va_arg(ap, const char *)); break;
    }
  }
  return total;
}

// Walks the arguments twice: once through a va_copy handed to sum_tail, once here.
__attribute__((noinline)) static double mixed_sum(const char *desc, ...) {
  va_list ap, again;
  va_start(ap, desc);
  va_copy(again, ap);
  double first = sum_tail(desc, again);
  va_end(again);
  double second = sum_tail(desc, ap);
  va_end(ap);
  if (first != second)
    printf("FAIL: va_copy walk differs: %f vs %f\n", first, second);
  return first;
}

__attribute__((noinline)) static long sum_ints(int count, ...) {
  va_list ap;
  va_start(ap, count);
  long s = 0;
  for (int i = 0; i < count; i++)
    s += va_arg(ap, int) * (i + 1);
  va_end(ap);
  return s;
}

int main(void) {
  char c = 'Q';
  short sh = -1234;
  unsigned char uc = 250;
  long long big = -9007199254740993LL;
  unsigned long long ubig = 18446744073709551615ULL;
  size_t sz = sizeof(long double);
  long double ld = 3.14159265358979323846264338327950288L;
  float f = 1.5f;

  // 14 integer-class and 10 floating arguments after the format: both register classes overflow.
  printf("ints: %d %u %ld %lld %llu %hd %hhu %c %x %o %zu %5d|%-5d|%05d\n", 42, 4000000000u,
         -1234567890123L, big, ubig, sh, uc, c, 0xbeef, 0755, sz, 7, 8, 9);
  printf("floats: %.6f %.6f %e %g %.3f %.10g %.2f %.6f %.6f %a %Lf %.20Lf\n", 0.1, -2.5, 6.02214076e23,
         1e-5, (double)f, 1.0 / 3.0, 99.999, 1e100 / 1e99, -0.0, 1.0, ld, ld);
  printf("mixed: %s=%d %s=%.4f %s=%c %s=%ld %s=%.2e %s=%p\n", "a", 1, "b", 2.25, "c", 'z', "d",
         123456789012L, "e", 0.000123, "null", (void *)0);
  printf("strings: [%10s] [%-10s] [%.3s] [%%]\n", "right", "left", "truncated");

  long s = 0;
  for (int round = 0; round < 100000; round++) {
    s += sum_ints(10, round, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    log_line(round % 25000 == 0 ? 1 : 0, "round %d: %s %ld %.3f %c %lu", round, "sum", s,
             round * 0.125, 'a' + round % 26, (unsigned long)round * 2654435761u);
  }
  printf("sum_ints total = %ld, log hash = %lu\n", s, log_hash);
  CHECK(s == 100000L * 99999L / 2 + 100000L * (2 * 1 + 3 * 2 + 4 * 3 + 5 * 4 + 6 * 5 + 7 * 6 + 8 * 7 +
                                                9 * 8 + 10 * 9),
        "sum_ints");

  double total = 0;
  for (int i = 0; i < 60000; i++)
    total += mixed_sum("idlsdiidldd", i, 0.5, (long)i * 3, "four", 0.25, 1, 2, 1.0, -7L, 2.0,
                       i * 0.001);
  printf("mixed_sum total = %.6f\n", total);
  double want = 0;
  for (int i = 0; i < 60000; i++)
    want += i + 0.5 + (double)((long)i * 3) + 4 + 0.25 + 1 + 2 + 1.0 + -7.0 + 2.0 + i * 0.001;
  CHECK(total == want, "mixed_sum");

  int n = log_line(0, "%d-%d-%d-%s-%08.3f", 1, 22, 333, "xyz", 3.14159);
  CHECK(n == 21 && strcmp(log_buffer, "1-22-333-xyz-0003.142") == 0, "vsnprintf");
  printf("vsnprintf: %d \"%s\"\n", n, log_buffer);

  printf("%s\n", failures ? "varargs: FAILED" : "varargs: ok");
  return failures ? 1 : 0;
}

// floats.c: float and double arithmetic with libm. sqrt, sin, cos, pow, exp, log, atan2, fmod,
// floor, and their float forms; Simpson integration and Newton iteration in hot loops (float and
// double values live across libm calls); a*b+c that must not be contracted into an FMA;
// conversions, NaN and infinity; long double (x87) arithmetic; results printed with %.6f and
// bit-exactly with %a.
// uppercut-test: args="" stdin=""
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

typedef double (*real_fn)(double);
static double bump(double x) { return exp(-x * x) * (1.0 + 0.5 * sin(3.0 * x)); }
static double poly(double x) { return ((2.0 * x - 3.0) * x + 0.5) * x; }
static const struct {
  const char *name;
  real_fn f;
  double a, b;
} integrands[] = {{"sin", sin, 0.0, M_PI}, {"sqrt", sqrt, 0.0, 4.0}, {"bump", bump, -3.0, 3.0},
                  {"poly", poly, -1.0, 2.0}, {"log", log, 1.0, M_E}};

__attribute__((noinline)) static double simpson(real_fn f, double a, double b, int n) {
  double h = (b - a) / n, s = f(a) + f(b);
  for (int i = 1; i < n; i++)
    s += f(a + i * h) * (i % 2 ? 4.0 : 2.0);
  return s * h / 3.0;
}

__attribute__((noinline)) static float newton_cbrtf(float v) {
  float x = v > 1.0f ? v / 3.0f : 1.0f;
  for (int i = 0; i < 40; i++)
    x = x - (x * x * x - v) / (3.0f * x * x);
  return x;
}

__attribute__((noinline)) static double multiply_add(double a, double b, double c) {
  return a * b + c;
}

int main(void) {
  double total = 0;
  for (size_t k = 0; k < sizeof integrands / sizeof integrands[0]; k++) {
    double r = simpson(integrands[k].f, integrands[k].a, integrands[k].b, 200000);
    printf("integral of %-4s over [%.4f, %.4f] = %.6f (%a)\n", integrands[k].name,
           integrands[k].a, integrands[k].b, r, r);
    total += r;
  }
  CHECK(fabs(simpson(sin, 0, M_PI, 1000) - 2.0) < 1e-9, "integral of sin");
  CHECK(fabs(simpson(poly, -1, 2, 1000) + 0.75) < 1e-9, "integral of poly");
  printf("total = %.6f\n", total);

  float fsum = 0;
  double dsum = 0;
  for (int i = 1; i <= 100000; i++) {
    float c = newton_cbrtf((float)i);
    fsum += c;
    dsum += pow((double)i, 1.0 / 3.0) - cbrt((double)i);
    if (i % 25000 == 0)
      printf("cbrtf(%d) = %.6f sqrtf = %.6f sinf = %.6f\n", i, (double)c, (double)sqrtf((float)i),
             (double)sinf((float)i));
  }
  CHECK(fabsf(newton_cbrtf(27.0f) - 3.0f) < 1e-5f, "newton_cbrtf(27)");
  printf("fsum = %.6f (%a), dsum = %.6e\n", (double)fsum, (double)fsum, dsum);

  // Inputs the compiler cannot see, so the result comes from the code generated for the target
  // the IR names (x86-64 without FMA), not from constant folding.
  volatile double x = 0.1, y = 10.0, z = -1.0;
  double fused_or_not = multiply_add(x, y, z);
  CHECK(fused_or_not == 0.0, "a*b+c rounded twice, not fused");
  printf("0.1*10-1 = %a\n", fused_or_not);

  printf("atan2 = %.6f fmod = %.6f floor = %.1f ceil = %.1f round = %.1f trunc = %.1f\n",
         atan2(-1.0, -1.0), fmod(17.75, 5.5), floor(-2.5), ceil(-2.5), round(-2.5), trunc(-2.7));
  printf("exp(1) = %.15f log10(2) = %.15f hypot = %.6f pow(2, 0.5) = %a\n", exp(1.0),
         log10(2.0), hypot(3.0, 4.0), pow(2.0, 0.5));

  volatile double zero = 0.0;
  double nan_value = zero / zero, inf_value = 1.0 / zero;
  CHECK(nan_value != nan_value, "NaN is unordered");
  CHECK(isinf(inf_value) && inf_value > 0, "infinity");
  printf("nan: %f %d, inf: %f %f, -0: %f %d\n", fabs(nan_value), isnan(nan_value), inf_value,
         -inf_value, -zero, signbit(-zero) != 0);

  double values[] = {2.5, -2.5, 1e10, -0.999, 4294967295.9};
  for (int i = 0; i < 5; i++)
    printf("conv %g: (int)%d (long)%ld lrint %ld (float)%.9g (unsigned)%u\n", values[i],
           (int)(values[i] > 2e9 ? 0 : values[i]), (long)values[i], lrint(values[i]),
           (double)(float)values[i], (unsigned)(values[i] < 0 || values[i] >= 4294967296.0 ? 0 : values[i]));

  long double ls = 0;
  for (int i = 1; i <= 50000; i++)
    ls += 1.0L / ((long double)i * i);
  printf("sum 1/i^2 = %.18Lf (pi^2/6 = %.18Lf)\n", ls, (long double)M_PI * M_PI / 6);
  CHECK(fabsl(ls - 1.644934066848226436L) < 3e-5L, "basel sum");

  printf("strtod: %.6f %.6f %a\n", strtod("3.25e2", NULL), strtod("-0x1.8p1", NULL),
         strtod("0.1", NULL));

  printf("%s\n", failures ? "floats: FAILED" : "floats: ok");
  return failures ? 1 : 0;
}

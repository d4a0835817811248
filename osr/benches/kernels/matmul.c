// Naive matrix multiply: three nested loops, no calls in the inner loop. The only call that
// can reach a hypercall is on a path that never runs.
void *PerformCustomCallback(const char *name, void *args);

#define N 96
double a[N][N], b[N][N], c[N][N];

long kernel(long n) {
    if (n < 0 || n > N)
        PerformCustomCallback("never", 0);
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) {
            a[i][j] = (double)(i + j) / n;
            b[i][j] = (double)(i - j) / n;
        }
    for (long i = 0; i < n; i++)
        for (long j = 0; j < n; j++) {
            double s = 0;
            for (long k = 0; k < n; k++)
                s += a[i][k] * b[k][j];
            c[i][j] = s;
        }
    double t = 0;
    for (long i = 0; i < n; i++)
        t += c[i][i];
    return (long)t;
}

// Sum over an array with a non-inlined call per element; the callee can make a hypercall
// (on a path that never runs), so every call in the loop is an OSR call site.
void *PerformCustomCallback(const char *name, void *args);

#define LEN 4096
long data[LEN];

__attribute__((noinline)) long element(long x) {
    if (x < 0)
        PerformCustomCallback("never", 0);
    return x * 3 + (x >> 2);
}

long kernel(long rounds) {
    for (long i = 0; i < LEN; i++)
        data[i] = i * 7 % 1000;
    long sum = 0;
    for (long r = 0; r < rounds; r++)
        for (long i = 0; i < LEN; i++)
            sum += element(data[i] + r);
    return sum;
}

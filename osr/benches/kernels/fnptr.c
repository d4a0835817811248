// A loop over an array of function pointers: one indirect call per element (every indirect
// call can reach a hypercall, so each is an OSR call site).
void *PerformCustomCallback(const char *name, void *args);

typedef long (*op)(long);

long twice(long x) { return 2 * x; }
long plus_one(long x) { return x + 1; }
long halve(long x) { return x >> 1; }
long checked(long x) {
    if (x < 0)
        PerformCustomCallback("never", 0);
    return x ^ 0x55;
}

#define LEN 4096
op table[LEN];

long kernel(long rounds) {
    op ops[4] = {twice, plus_one, halve, checked};
    for (long i = 0; i < LEN; i++)
        table[i] = ops[(i * 7 + i / 3) % 4];
    long sum = 0;
    for (long r = 0; r < rounds; r++)
        for (long i = 0; i < LEN; i++)
            sum += table[i](i + r);
    return sum;
}

// Recursion whose every frame already has a shadow-stack frame (a local whose address
// escapes): with shadow discovery, the only extra work is the stores (the machine frame and a
// cleared site at entry, the site id before the recursive call). `touch` cannot reach a
// hypercall, so it has no sites and no frame either way.
void *PerformCustomCallback(const char *name, void *args);

__attribute__((noinline)) long touch(long *cell) {
    *cell = *cell * 5 + 3;
    return *cell >> 1;
}

__attribute__((noinline)) long walk(long n) {
    long cell = n;
    if (n < 0)
        PerformCustomCallback("never", 0);
    if (n == 0)
        return touch(&cell);
    return walk(n - 1) * 3 + touch(&cell);
}

long kernel(long rounds) {
    long sum = 0;
    for (long r = 0; r < rounds; r++)
        sum += walk(64 + (r & 7));
    return sum;
}

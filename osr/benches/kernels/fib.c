// Recursive Fibonacci: every recursive call can reach a hypercall (on a path that never
// runs), so each is an OSR call site.
void *PerformCustomCallback(const char *name, void *args);

long fib(long n) {
    if (n < 0)
        PerformCustomCallback("never", 0);
    if (n < 2)
        return n;
    return fib(n - 1) + fib(n - 2);
}

long kernel(long n) { return fib(n); }

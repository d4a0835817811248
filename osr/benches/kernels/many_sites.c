// A function with many OSR sites (for benches/continuations.rs): five loops before a hot loop,
// and seven calls that can reach a hypercall (six of `probe`, one hypercall), some inside
// loops. The hot loop runs `k` times between the moment its frame moves (its loop site) and
// the `t1` hypercall right after it.
void *PerformCustomCallback(const char *name, void *args);

__attribute__((noinline)) unsigned long probe(unsigned long x) {
    return x ^ (unsigned long)PerformCustomCallback("probe", 0);
}

unsigned long kernel(unsigned long n, unsigned long k) {
    unsigned long a = n | 1, b = 0x9e3779b97f4a7c15ul, c = 0xbf58476d1ce4e5b9ul;
    unsigned long d = 0x94d049bb133111ebul;
    double x = 0.5, y = 1.5;
    a += probe(a);
    for (unsigned long i = 0; i < n; i++) {
        a = a * 6364136223846793005ul + b;
        x = x * 0.999 + (double)(a >> 40);
    }
    b ^= probe(a);
    for (unsigned long i = 0; i < n; i++) {
        b = (b << 13 | b >> 51) + c;
        if ((b & 15) == 3)
            c += probe(b);
    }
    c ^= probe(c);
    for (unsigned long i = 0; i < n; i++) {
        c ^= c >> 29;
        c *= 0xff51afd7ed558ccdul;
        y += (double)(c & 1023) * 0.25;
    }
    d += probe(d ^ c);
    for (unsigned long i = 0; i < n; i++)
        for (unsigned long j = 0; j < 4; j++)
            d = d * 31 + (a ^ j);
    unsigned long h = a ^ b ^ c ^ d, g = h | 1;
    double z = x + y;
    for (unsigned long i = 0; i < k; i++) {
        h ^= h >> 33;
        h *= 0xc4ceb9fe1a85ec53ul;
        g += (h >> 7) ^ i;
        if ((g & 255) == 17)
            z += (double)(g & 7);
    }
    PerformCustomCallback("t1", 0);
    return h + g + probe(h) + (unsigned long)z;
}

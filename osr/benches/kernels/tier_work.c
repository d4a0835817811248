/* The guest of tier_latency.rs (and experiments' exp-compile): `work` has one loop of about
   100 instructions at O2 (clang's -O2 gives 115). */
void *PerformCustomCallback(const char *name, void *args);

unsigned long work(unsigned long n) {
    unsigned long a = n, b = 0x9e3779b97f4a7c15ul, c = 0xbf58476d1ce4e5b9ul;
    unsigned long d = 0x94d049bb133111ebul, e = 1, f = 3, g = 5, h = 7;
    PerformCustomCallback("t0", 0);
    for (unsigned long i = 0; i < n; i++) {
        if (i == 0)
            PerformCustomCallback("t1", 0);
        a += b ^ (c >> 7);
        b = (b << 13 | b >> 51) * 5 + i;
        c ^= a * 0x2545f4914f6cdd1dul;
        d += (c >> 29) ^ (a << 3);
        e = e * 6364136223846793005ul + 1442695040888963407ul;
        f ^= e >> 33;
        g += (f * 0xff51afd7ed558ccdul) >> 17;
        h = (h ^ g) * 0xc4ceb9fe1a85ec53ul;
        a ^= h >> 31;
        b += d ^ (g << 11);
        c = (c << 17 | c >> 47) + f;
        d ^= (e + h) >> 9;
        if ((a & 255) == 17)
            e += d;
        else
            f -= c;
        g = g * 31 + (b & 0xffff);
        h += (a ^ b ^ c ^ d) >> 3;
        if (h % 7 == 3)
            a += g;
    }
    return a ^ b ^ c ^ d ^ e ^ f ^ g ^ h;
}

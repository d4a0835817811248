// A recursion `depth` frames deep whose bottom makes a hypercall (`walk`): the frames the walk
// benchmark walks. `* 3 + n` keeps the recursion a recursion (not an accumulator loop).
void *PerformCustomCallback(const char *name, void *args);

__attribute__((noinline)) long dive(long n) {
    if (n == 0)
        return (long)PerformCustomCallback("walk", 0);
    return dive(n - 1) * 3 + n;
}

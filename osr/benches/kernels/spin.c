/* The guest of stall.rs (and experiments' exp-compile): `spin` loops until the host says its
   frame moved. */
void *PerformCustomCallback(const char *name, void *args);
unsigned long spin(unsigned long seed) {
  unsigned long h = seed;
  for (unsigned long i = 1;; i++) {
    h = h * 6364136223846793005ul + (i ^ (h >> 31));
    if ((i & 0xffff) == 0 && PerformCustomCallback("stop", (void *)i))
      return h;
  }
}

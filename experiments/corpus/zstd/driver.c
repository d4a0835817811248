/* A driver for zstd's library (common/, compress/, decompress/): the second
 * real program of the corpus.
 *
 *   driver        256 KiB of input
 *   driver KIB    KIB kibibytes of input (1 to 1048576)
 *
 * The input is generated here, deterministically: log-like text lines drawn
 * from a skewed vocabulary, with a block of random (incompressible) bytes every
 * 64 KiB. Each round compresses it and decompresses the result, which must
 * equal the input: one-shot (ZSTD_compressCCtx, ZSTD_decompressDCtx) at levels
 * 1, 3 and 9; streaming (ZSTD_compressStream2, ZSTD_decompressStream, odd
 * buffer sizes, a checksum) at level 5; and one-shot at level 19 on the first
 * sixteenth of the input. Output is deterministic: sizes and FNV-1a digests of
 * the compressed frames only. The first line is printed and flushed before
 * zstd is touched. No state outlives a run of main, so a host may run it again
 * in the same process. Exits 0, or 1 with one line on stderr at the first
 * error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zstd.h"

static void fail(const char *what, const char *why) {
  fprintf(stderr, "zstd driver: %s: %s\n", what, why);
  exit(1);
}

static size_t check(size_t r, const char *what) {
  if (ZSTD_isError(r)) fail(what, ZSTD_getErrorName(r));
  return r;
}

static void *alloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) fail("malloc", "out of memory");
  return p;
}

static uint32_t fnv(const unsigned char *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

static uint64_t next(uint64_t *x) { /* xorshift64* */
  *x ^= *x >> 12, *x ^= *x << 25, *x ^= *x >> 27;
  return *x * 2685821657736338717u;
}

/* n bytes of log-like text with a random block every 64 KiB. */
static unsigned char *generate(size_t n) {
  static const char *const words[] = {
      "GET",     "POST",    "index",   "static", "images", "api",     "v2",
      "users",   "orders",  "search",  "cart",   "login",  "logout",  "assets",
      "style",   "script",  "thumb",   "report", "export", "import",  "status",
      "health",  "metrics", "admin",   "config", "upload", "preview", "archive",
      "session", "token",   "profile", "feed"};
  unsigned char *buf = alloc(n);
  uint64_t x = 0x9e3779b97f4a7c15u;
  size_t at = 0;
  char line[256];
  while (at < n) {
    if (at % 65536 < 2048 && at >= 65536) { /* an incompressible stretch */
      size_t end = at - at % 65536 + 2048;
      while (at < end && at < n) buf[at++] = (unsigned char)(next(&x) >> 56);
      continue;
    }
    uint64_t r = next(&x);
    /* Skewed: low indexes far more often than high ones. */
    unsigned a = (unsigned)((r & 31) * ((r >> 5) & 31) / 31);
    unsigned b = (unsigned)(((r >> 10) & 31) * ((r >> 15) & 31) / 31);
    unsigned c = (unsigned)((r >> 20) & 31);
    int len = snprintf(line, sizeof line,
                       "2024-03-%02u %02u:%02u:%02u %s /%s/%s/%s?id=%u %u %u\n",
                       (unsigned)(r >> 25) % 28 + 1, (unsigned)(r >> 30) % 24,
                       (unsigned)(r >> 35) % 60, (unsigned)(r >> 41) % 60,
                       words[a & 1], words[a], words[b], words[c],
                       (unsigned)(r >> 47) % 10000, 200 + (unsigned)(a == 7) * 204,
                       (unsigned)(r >> 52) % 4096 * 16);
    for (int i = 0; i < len && at < n; i++) buf[at++] = (unsigned char)line[i];
  }
  return buf;
}

static void same(const unsigned char *src, const unsigned char *back, size_t n,
                 size_t got, const char *what) {
  if (got != n) fail(what, "round trip changed the size");
  if (memcmp(src, back, n) != 0) fail(what, "round trip changed the data");
}

/* One-shot compression at `level` of src[0..n), then decompression. */
static void one_shot(ZSTD_CCtx *cctx, ZSTD_DCtx *dctx, const unsigned char *src,
                     size_t n, int level) {
  char what[32];
  snprintf(what, sizeof what, "level %d", level);
  size_t cap = ZSTD_compressBound(n);
  unsigned char *dst = alloc(cap), *back = alloc(n);
  size_t z = check(ZSTD_compressCCtx(cctx, dst, cap, src, n, level), what);
  unsigned long long content = ZSTD_getFrameContentSize(dst, z);
  if (content != n) fail(what, "wrong frame content size");
  size_t got = check(ZSTD_decompressDCtx(dctx, back, n, dst, z), what);
  same(src, back, n, got, what);
  printf("%s: %zu -> %zu bytes fnv=%08x\n", what, n, z, fnv(dst, z));
  free(dst);
  free(back);
}

/* Streaming compression at `level` with a checksum, fed in 13,001-byte
 * pieces into a 4,099-byte output buffer; decompressed in 7,001-byte pieces. */
static void streaming(ZSTD_CCtx *cctx, ZSTD_DCtx *dctx, const unsigned char *src,
                      size_t n, int level) {
  const char *what = "stream";
  check(ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters), what);
  check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level), what);
  check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1), what);
  size_t cap = ZSTD_compressBound(n) + 4096, z = 0;
  unsigned char *dst = alloc(cap), *back = alloc(n), out_buf[4099];
  for (size_t at = 0;;) {
    size_t piece = n - at < 13001 ? n - at : 13001;
    int last = at + piece == n;
    ZSTD_inBuffer in = {src + at, piece, 0};
    size_t left;
    do {
      ZSTD_outBuffer out = {out_buf, sizeof out_buf, 0};
      left = check(ZSTD_compressStream2(cctx, &out, &in, last ? ZSTD_e_end : ZSTD_e_continue),
                   what);
      if (z + out.pos > cap) fail(what, "compressed output too large");
      memcpy(dst + z, out_buf, out.pos);
      z += out.pos;
    } while (last ? left != 0 : in.pos < in.size);
    at += piece;
    if (last) break;
  }
  check(ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only), what);
  size_t got = 0, ret = 1;
  for (size_t at = 0; at < z;) {
    size_t piece = z - at < 7001 ? z - at : 7001;
    ZSTD_inBuffer in = {dst + at, piece, 0};
    while (in.pos < in.size) {
      ZSTD_outBuffer out = {back + got, n - got, 0};
      size_t before = in.pos;
      ret = check(ZSTD_decompressStream(dctx, &out, &in), what);
      got += out.pos;
      if (out.pos == 0 && in.pos == before) fail(what, "decompressed output too large");
    }
    at += piece;
  }
  if (ret != 0) fail(what, "truncated frame");
  same(src, back, n, got, what);
  printf("stream level %d: %zu -> %zu bytes fnv=%08x\n", level, n, z, fnv(dst, z));
  free(dst);
  free(back);
}

int main(int argc, char **argv) {
  printf("zstd driver: start\n");
  fflush(stdout);
  long kib = 256;
  if (argc > 2) fail("usage", "driver [KIB]");
  if (argc > 1) {
    char *end;
    kib = strtol(argv[1], &end, 10);
    if (*end || kib < 1 || kib > 1048576) fail("bad size (KiB, 1 to 1048576)", argv[1]);
  }
  size_t n = (size_t)kib * 1024;
  unsigned char *src = generate(n);
  printf("zstd %s, input: %zu bytes fnv=%08x\n", ZSTD_versionString(), n, fnv(src, n));
  ZSTD_CCtx *cctx = ZSTD_createCCtx();
  ZSTD_DCtx *dctx = ZSTD_createDCtx();
  if (!cctx || !dctx) fail("contexts", "out of memory");
  one_shot(cctx, dctx, src, n, 1);
  one_shot(cctx, dctx, src, n, 3);
  one_shot(cctx, dctx, src, n, 9);
  streaming(cctx, dctx, src, n, 5);
  one_shot(cctx, dctx, src, n / 16 ? n / 16 : n, 19);
  ZSTD_freeCCtx(cctx);
  ZSTD_freeDCtx(dctx);
  free(src);
  printf("zstd driver: ok\n");
  return 0;
}

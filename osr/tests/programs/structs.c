// structs.c: structs by value across the x86-64 SysV ABI. Small integer structs in one or two
// registers, float/double structs in SSE registers, mixed {long, double} split across both
// classes, large structs returned through a hidden sret pointer and passed byval on the stack,
// nested structs with arrays, struct returns through function pointers, and libc's own struct
// returns (div, ldiv, lldiv).
// uppercut-test: args="" stdin=""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

struct pair { int a, b; };                      // one INTEGER eightbyte
struct triple { char c; short s; long l; };      // two INTEGER eightbytes
struct vec2 { double x, y; };                    // two SSE eightbytes
struct vec3f { float x, y, z; };                 // two SSE eightbytes, packed floats
struct mixed { long id; double weight; };        // INTEGER + SSE
struct big { long v[9]; double d; char tag[5]; }; // MEMORY: sret and byval
struct nested { struct pair p; struct vec3f f; unsigned char bytes[3]; };

__attribute__((noinline)) static struct pair swap_pair(struct pair p) {
  return (struct pair){p.b, p.a};
}
__attribute__((noinline)) static struct triple bump_triple(struct triple t, int by) {
  t.c = (char)(t.c + by);
  t.s = (short)(t.s * 2);
  t.l = t.l * 3 + by;
  return t;
}
__attribute__((noinline)) static struct vec2 rotate90(struct vec2 v) {
  return (struct vec2){-v.y, v.x};
}
__attribute__((noinline)) static struct vec2 vadd(struct vec2 a, struct vec2 b, double scale) {
  return (struct vec2){(a.x + b.x) * scale, (a.y + b.y) * scale};
}
__attribute__((noinline)) static struct vec3f cross(struct vec3f a, struct vec3f b) {
  return (struct vec3f){a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}
__attribute__((noinline)) static struct mixed heavier(struct mixed a, struct mixed b) {
  return a.weight >= b.weight ? a : b;
}
// Ten struct arguments: registers run out and the rest go on the stack.
__attribute__((noinline)) static long many_pairs(struct pair p0, struct pair p1, struct pair p2,
                                                 struct pair p3, struct pair p4, struct pair p5,
                                                 struct pair p6, struct pair p7, struct vec2 v0,
                                                 struct mixed m0) {
  return p0.a + p1.a * 2 + p2.a * 3 + p3.a * 4 + p4.a * 5 + p5.a * 6 + p6.a * 7 + p7.a * 8 +
         p7.b * 9 + (long)v0.x + (long)v0.y + m0.id + (long)m0.weight;
}
__attribute__((noinline)) static struct big make_big(long seed) {
  struct big b;
  for (int i = 0; i < 9; i++)
    b.v[i] = seed * (i + 1) - i;
  b.d = (double)seed / 4;
  memcpy(b.tag, "big!", 5);
  return b;
}
__attribute__((noinline)) static struct big transform_big(struct big in, struct big other) {
  struct big out = in;
  for (int i = 0; i < 9; i++)
    out.v[i] = in.v[i] * 2 - other.v[8 - i];
  out.d = in.d + other.d;
  out.tag[0] = other.tag[3];
  return out;
}
__attribute__((noinline)) static struct nested make_nested(int k) {
  struct nested n = {{k, -k}, {k * 0.5f, k * 0.25f, -1.0f}, {(unsigned char)k, 2, 3}};
  return n;
}

typedef struct vec2 (*vec_op)(struct vec2);
static struct vec2 identity(struct vec2 v) { return v; }
static struct vec2 twice(struct vec2 v) { return (struct vec2){v.x * 2, v.y * 2}; }
static const vec_op vec_ops[] = {identity, rotate90, twice};

int main(void) {
  long acc = 0;
  struct vec2 walker = {1, 0};
  struct big carried = make_big(1);
  for (int i = 0; i < 1000000; i++) {
    struct pair p = swap_pair((struct pair){i, i * 2});
    acc += p.a - p.b;
    struct triple t = bump_triple((struct triple){'a', (short)(i & 0x3ff), i}, i & 3);
    acc += t.c + t.s + t.l;
    walker = vec_ops[i % 3](walker);
    if (walker.x > 1e6 || walker.x < -1e6 || walker.y > 1e6 || walker.y < -1e6)
      walker = (struct vec2){walker.x / 1048576, walker.y / 1048576};
    struct mixed m = heavier((struct mixed){i, i % 17 * 1.5}, (struct mixed){-i, i % 13 * 2.0});
    acc += m.id;
    if (i % 1000 == 0) {
      carried = transform_big(carried, make_big(i));
      for (int k = 0; k < 9; k++)
        carried.v[k] %= 1000003;
    }
  }
  printf("acc = %ld\n", acc);
  printf("walker = (%.6f, %.6f)\n", walker.x, walker.y);
  printf("carried = {%ld %ld %ld ... %ld} d=%.3f tag=%s\n", carried.v[0], carried.v[1],
         carried.v[2], carried.v[8], carried.d, carried.tag);

  struct vec2 s = vadd((struct vec2){1.5, 2.5}, (struct vec2){0.25, -0.5}, 2.0);
  CHECK(s.x == 3.5 && s.y == 4.0, "vadd");
  struct vec3f c = cross((struct vec3f){1, 0, 0}, (struct vec3f){0, 1, 0});
  CHECK(c.x == 0 && c.y == 0 && c.z == 1, "cross");
  printf("vadd = (%.3f, %.3f), cross = (%.1f, %.1f, %.1f)\n", s.x, s.y, c.x, c.y, c.z);

  long mp = many_pairs((struct pair){1, 0}, (struct pair){2, 0}, (struct pair){3, 0},
                       (struct pair){4, 0}, (struct pair){5, 0}, (struct pair){6, 0},
                       (struct pair){7, 0}, (struct pair){8, 10}, (struct vec2){100.5, 200.5},
                       (struct mixed){1000, 3000.75});
  CHECK(mp == 1 + 4 + 9 + 16 + 25 + 36 + 49 + 64 + 90 + 100 + 200 + 1000 + 3000, "many_pairs");
  printf("many_pairs = %ld\n", mp);

  struct big b1 = make_big(5), b2 = make_big(7);
  struct big b3 = transform_big(b1, b2);
  CHECK(b3.v[0] == 5 * 2 - (7 * 9 - 8) && b3.d == 3.0 && b3.tag[0] == '!', "transform_big");
  printf("big: %ld %ld %.2f %c%s\n", b3.v[0], b3.v[8], b3.d, b3.tag[0], b3.tag + 1);

  struct nested n = make_nested(6);
  CHECK(n.p.a == 6 && n.p.b == -6 && n.f.x == 3.0f && n.f.z == -1.0f && n.bytes[0] == 6,
        "nested");
  printf("nested: %d %d %.2f %.2f %.2f %d%d%d\n", n.p.a, n.p.b, n.f.x, n.f.y, n.f.z, n.bytes[0],
         n.bytes[1], n.bytes[2]);

  div_t d = div(-17, 5);
  ldiv_t ld = ldiv(1000000000007L, 97);
  lldiv_t lld = lldiv(-9000000000000000001LL, 1000);
  CHECK(d.quot == -3 && d.rem == -2, "div");
  CHECK(ld.quot * 97 + ld.rem == 1000000000007L, "ldiv");
  CHECK(lld.quot * 1000 + lld.rem == -9000000000000000001LL, "lldiv");
  printf("div: %d %d, ldiv: %ld %ld, lldiv: %lld %lld\n", d.quot, d.rem, ld.quot, ld.rem, lld.quot,
         lld.rem);

  printf("%s\n", failures ? "structs: FAILED" : "structs: ok");
  return failures ? 1 : 0;
}

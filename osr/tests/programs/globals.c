// globals.c: global state of every kind. Mutable scalars and arrays, a const CRC-32 table,
// tables of function pointers (a dispatch table of operations and a state machine), globals
// whose initialisers hold the addresses of other globals and functions, static locals inside
// functions, a 1 MiB zero-initialised array, thread-local variables, and the libc globals
// stdout and stderr used directly.
// uppercut-test: args="" stdin=""
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static const uint32_t crc_table[16] = {
    0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
    0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
    0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c};

static uint32_t crc32(const unsigned char *data, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    crc = crc_table[(crc ^ data[i]) & 0xf] ^ (crc >> 4);
    crc = crc_table[(crc ^ (data[i] >> 4)) & 0xf] ^ (crc >> 4);
  }
  return ~crc;
}

long counter = 10;
int histogram[32];
double averages[4] = {1.0, 2.0, 3.0, 4.0};
static unsigned char big_zeroed[1 << 20];
_Thread_local long tls_calls = 100;
static _Thread_local int tls_array[4] = {1, 2, 3, 4};

static long op_add(long a, long b) { return a + b; }
static long op_sub(long a, long b) { return a - b; }
static long op_mul(long a, long b) { return a * b % 1000003; }
static long op_xor(long a, long b) { return a ^ b; }
typedef long (*binop)(long, long);
binop operations[] = {op_add, op_sub, op_mul, op_xor};
static const char *const operation_names[] = {"add", "sub", "mul", "xor"};

// Globals pointing at globals and functions (relocations in data).
struct registry {
  const char *name;
  long *counter;
  int *bucket;
  binop op;
  const struct registry *next;
};
static const struct registry reg_c = {"third", &counter, &histogram[31], op_xor, NULL};
static const struct registry reg_b = {"second", &counter, &histogram[7], op_mul, &reg_c};
static const struct registry reg_a = {"first", &counter, histogram, op_add, &reg_b};
static const struct registry *const registry_head = &reg_a;
static long *const counter_alias = &counter;
static const char *greeting = "hello from a global pointer";

// A state machine whose transition table is an array of function pointers that return indices.
enum { S_START, S_WORD, S_SPACE, S_COUNT };
static long words, spaces;
static int on_start(char c) { return c == ' ' ? S_SPACE : S_WORD; }
static int on_word(char c) {
  if (c == ' ') {
    words++;
    return S_SPACE;
  }
  return S_WORD;
}
static int on_space(char c) {
  spaces++;
  return c == ' ' ? S_SPACE : S_WORD;
}
static int (*const transitions[S_COUNT])(char) = {on_start, on_word, on_space};

__attribute__((noinline)) static long next_id(void) {
  static long id = 1000; // static local
  tls_calls++;
  return id++;
}

__attribute__((noinline)) static void record(long value) {
  histogram[value & 31]++;
  big_zeroed[(unsigned long)value % sizeof big_zeroed] ^= (unsigned char)value;
  *counter_alias += value & 1;
  tls_array[value & 3] += 1;
}

int main(void) {
  long acc = 1;
  for (int i = 0; i < 2000000; i++) {
    int k = i & 3;
    acc = operations[k](acc, i % 1000 + 1);
    if (acc < 0)
      acc = -acc;
    acc %= 1000000007;
    record(acc);
  }
  printf("acc = %ld, counter = %ld\n", acc, counter);
  long hsum = 0;
  for (int i = 0; i < 32; i++)
    hsum += histogram[i];
  CHECK(hsum == 2000000, "histogram total");
  unsigned long zsum = 0;
  for (size_t i = 0; i < sizeof big_zeroed; i++)
    zsum += big_zeroed[i] * (i % 13 + 1);
  printf("big_zeroed weighted sum = %lu\n", zsum);

  for (const struct registry *r = registry_head; r; r = r->next) {
    *r->bucket += 1000;
    printf("registry %s: counter=%ld bucket=%d op(6,7)=%ld\n", r->name, *r->counter, *r->bucket,
           r->op(6, 7));
  }
  CHECK(registry_head->next->next->op == op_xor, "function pointer in global initialiser");
  CHECK(registry_head->counter == &counter, "address of global in global initialiser");
  for (int k = 0; k < 4; k++)
    printf("%s(100, 7) = %ld\n", operation_names[k], operations[k](100, 7));

  long id_sum = 0;
  for (int i = 0; i < 1000; i++)
    id_sum += next_id();
  CHECK(id_sum == 1000L * 1000 + 999L * 1000 / 2, "static local");
  CHECK(tls_calls == 1100, "thread-local counter");
  printf("ids %ld, tls_calls %ld, tls_array %d %d %d %d\n", id_sum, tls_calls, tls_array[0],
         tls_array[1], tls_array[2], tls_array[3]);

  const char *text = " the quick  brown fox jumps over   the lazy dog ";
  int state = S_START;
  for (int round = 0; round < 2000; round++)
    for (const char *p = text; *p; p++)
      state = transitions[state](*p);
  printf("state machine: %ld words, %ld spaces, final state %d\n", words, spaces, state);
  CHECK(words == 2000L * 9, "word count");

  uint32_t crc = crc32((const unsigned char *)"123456789", 9);
  CHECK(crc == 0xcbf43926u, "crc32 check value");
  printf("crc32(\"123456789\") = %08x, crc32(greeting) = %08x\n", crc,
         crc32((const unsigned char *)greeting, strlen(greeting)));
  averages[2] *= 1.5;
  fprintf(stdout, "averages %.2f %.2f %.2f %.2f\n", averages[0], averages[1], averages[2],
          averages[3]);
  fflush(stdout);
  fprintf(stderr, "globals: this line goes to stderr through the stderr global\n");

  printf("%s\n", failures ? "globals: FAILED" : "globals: ok");
  return failures ? 1 : 0;
}

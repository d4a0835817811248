// address_taken.c: locals whose address escapes. Callees write through pointers to a caller's
// scalars and stack arrays; a pointer to a local is parked in a global and used by later
// callees while the frame is live; recursion passes a pointer to its own local down 5,000
// levels, and the deepest callee writes into every frame above; variable-length arrays and
// alloca() change the frame size at run time; a stack struct points into itself.
// uppercut-test: args="" stdin=""
#include <alloca.h>
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

__attribute__((noinline)) static void divmod(long a, long b, long *q, long *r) {
  *q = a / b;
  *r = a % b;
}

__attribute__((noinline)) static void fill(int *array, int n, int base) {
  for (int i = 0; i < n; i++)
    array[i] = base + i * i;
}

__attribute__((noinline)) static void reverse(int *array, int n) {
  for (int i = 0, j = n - 1; i < j; i++, j--) {
    int t = array[i];
    array[i] = array[j];
    array[j] = t;
  }
}

static long *parked;
__attribute__((noinline)) static void park(long *p) { parked = p; }
__attribute__((noinline)) static void bump_parked(long by) { *parked += by; }

// Each level links its own local into a chain; the deepest level walks the chain upward and
// writes a value into every ancestor's local, which each ancestor then reads.
struct link {
  struct link *up;
  long value;
};
__attribute__((noinline)) static long chain(struct link *up, int depth) {
  struct link me = {up, -1};
  if (depth == 0) {
    long n = 0;
    for (struct link *l = &me; l; l = l->up)
      l->value = n++;
    return n;
  }
  long total = chain(&me, depth - 1);
  return total + me.value * 0 + (me.value == depth ? 0 : 1000000);
}

// A variable-length array and an alloca block sized by the argument, both handed to callees.
__attribute__((noinline)) static long dynamic_frames(int n) {
  int vla[n];
  fill(vla, n, n);
  int *block = alloca(sizeof(int) * (size_t)(n + 3));
  fill(block, n + 3, -n);
  reverse(vla, n);
  long s = 0;
  for (int i = 0; i < n; i++)
    s += (long)vla[i] * (i + 1) - block[i + 3];
  return s;
}

struct self_ref {
  int data[8];
  int *cursor;
  struct self_ref *self;
};
__attribute__((noinline)) static void advance(struct self_ref *s) {
  *s->cursor += 10;
  s->cursor++;
  if (s->cursor == s->data + 8)
    s->cursor = s->self->data;
}

int main(void) {
  long quotient_sum = 0, remainder_sum = 0;
  long counter = 0;
  park(&counter);
  for (long i = 1; i <= 1500000; i++) {
    long q, r;
    divmod(i * 7919, i % 97 + 1, &q, &r);
    quotient_sum += q;
    remainder_sum += r;
    bump_parked(r & 3);
  }
  printf("divmod: quotients %ld remainders %ld counter %ld\n", quotient_sum, remainder_sum, counter);
  CHECK(parked == &counter && counter > 0, "parked pointer");

  int arr[100];
  long arr_hash = 0;
  for (int round = 0; round < 2000; round++) {
    fill(arr, 100, round);
    reverse(arr, 100);
    reverse(arr + 10, 50);
    for (int i = 0; i < 100; i++)
      arr_hash = (arr_hash * 31 + arr[i]) % 1000000007;
  }
  CHECK(arr[0] == 1999 + 99 * 99, "stack array after reverse");
  printf("stack array hash %ld, arr[0] %d arr[10] %d arr[99] %d\n", arr_hash, arr[0], arr[10],
         arr[99]);

  long chained = 0;
  for (int round = 0; round < 100; round++)
    chained += chain(NULL, 5000);
  CHECK(chained == 100 * 5001, "chain wrote every ancestor");
  printf("chain total %ld\n", chained);

  long dyn = 0;
  for (int n = 1; n <= 1500; n++)
    dyn += dynamic_frames(n);
  printf("dynamic frames %ld\n", dyn);

  struct self_ref s;
  memset(&s, 0, sizeof s);
  s.cursor = s.data;
  s.self = &s;
  for (int i = 0; i < 1003; i++)
    advance(&s);
  CHECK(s.cursor == s.data + 3 && s.data[0] == 1260 && s.data[7] == 1250, "self_ref");
  printf("self_ref: cursor at %d, data %d %d %d\n", (int)(s.cursor - s.data), s.data[0], s.data[3],
         s.data[7]);

  printf("%s\n", failures ? "address_taken: FAILED" : "address_taken: ok");
  return failures ? 1 : 0;
}

// callbacks.c: guest functions called back from libc. qsort and bsearch with guest comparators
// over ints, structs (multi-key, with doubles) and strings; comparators picked from a table of
// function pointers; and a comparator that itself calls bsearch, so the stack interleaves guest
// and libc frames twice (guest -> qsort -> guest -> bsearch -> guest).
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

static unsigned long rng = 88172645463325252ul;
static unsigned next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (unsigned)(rng >> 16);
}

static unsigned long compare_calls;

static int cmp_int_asc(const void *a, const void *b) {
  compare_calls++;
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}
static int cmp_int_desc(const void *a, const void *b) { return cmp_int_asc(b, a); }
// Sorts by the low byte first, then by the whole value: an order no library default gives.
static int cmp_int_lowbyte(const void *a, const void *b) {
  compare_calls++;
  int x = *(const int *)a, y = *(const int *)b;
  if ((x & 0xff) != (y & 0xff))
    return (x & 0xff) - (y & 0xff);
  return (x > y) - (x < y);
}

typedef int (*comparator)(const void *, const void *);
static const struct {
  const char *name;
  comparator cmp;
} comparators[] = {
    {"ascending", cmp_int_asc},
    {"descending", cmp_int_desc},
    {"low byte", cmp_int_lowbyte},
};

struct person {
  char name[12];
  int age;
  double score;
};

static int cmp_person(const void *a, const void *b) {
  compare_calls++;
  const struct person *p = a, *q = b;
  if (p->age != q->age)
    return p->age - q->age;
  if (p->score != q->score)
    return p->score < q->score ? 1 : -1; // higher score first
  return strcmp(p->name, q->name);
}

static int cmp_str(const void *a, const void *b) {
  compare_calls++;
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// A ranking table searched with bsearch from inside a qsort comparator.
struct rank {
  int key;
  int rank;
};
static struct rank ranks[512];
static int cmp_rank_key(const void *key, const void *elem) {
  int k = *(const int *)key, e = ((const struct rank *)elem)->key;
  return (k > e) - (k < e);
}
static int rank_of(int key) {
  const struct rank *r = bsearch(&key, ranks, 512, sizeof ranks[0], cmp_rank_key);
  return r ? r->rank : -1;
}
static int cmp_by_rank(const void *a, const void *b) {
  compare_calls++;
  int ra = rank_of(*(const int *)a), rb = rank_of(*(const int *)b);
  if (ra != rb)
    return ra - rb;
  return cmp_int_asc(a, b);
}

static int check_sorted(const void *base, size_t n, size_t size, comparator cmp) {
  const char *p = base;
  for (size_t i = 1; i < n; i++)
    if (cmp(p + (i - 1) * size, p + i * size) > 0)
      return 0;
  return 1;
}

#define N 20000

int main(void) {
  static int values[N], copy[N];
  for (int i = 0; i < N; i++)
    values[i] = (int)(next_rand() % 100000) - 50000;

  for (size_t c = 0; c < sizeof comparators / sizeof comparators[0]; c++) {
    memcpy(copy, values, sizeof values);
    compare_calls = 0;
    qsort(copy, N, sizeof copy[0], comparators[c].cmp);
    CHECK(check_sorted(copy, N, sizeof copy[0], comparators[c].cmp), comparators[c].name);
    CHECK(compare_calls >= N - 1, "comparator was called");
    long weighted = 0;
    for (int i = 0; i < N; i++)
      weighted += (long)copy[i] * (i % 7 + 1);
    printf("%-10s first=%d last=%d weighted=%ld\n", comparators[c].name, copy[0], copy[N - 1],
           weighted);
  }

  // bsearch in the ascending copy: every probe agrees with a linear scan.
  memcpy(copy, values, sizeof values);
  qsort(copy, N, sizeof copy[0], cmp_int_asc);
  int found = 0;
  for (int probe = -50000; probe < 50000; probe += 37) {
    int *hit = bsearch(&probe, copy, N, sizeof copy[0], cmp_int_asc);
    int linear = 0;
    for (int i = 0; i < N && copy[i] <= probe; i++)
      linear |= copy[i] == probe;
    CHECK((hit != NULL) == linear, "bsearch agrees with linear search");
    CHECK(hit == NULL || *hit == probe, "bsearch hit value");
    found += hit != NULL;
  }
  printf("bsearch found %d of %d probes\n", found, 100000 / 37 + 1);

  static struct person people[300];
  static const char *first[] = {"ada", "bob", "cy", "dee", "eve", "fay", "gus", "hal"};
  for (int i = 0; i < 300; i++) {
    snprintf(people[i].name, sizeof people[i].name, "%s%d", first[next_rand() % 8],
             (int)(next_rand() % 50));
    people[i].age = 20 + (int)(next_rand() % 10);
    people[i].score = (double)(next_rand() % 1000) / 8.0;
  }
  qsort(people, 300, sizeof people[0], cmp_person);
  CHECK(check_sorted(people, 300, sizeof people[0], cmp_person), "people sorted");
  for (int i = 0; i < 5; i++)
    printf("person %d: %s age %d score %.3f\n", i, people[i].name, people[i].age,
           people[i].score);
  struct person key = people[123];
  struct person *hit = bsearch(&key, people, 300, sizeof people[0], cmp_person);
  CHECK(hit != NULL && cmp_person(hit, &key) == 0, "bsearch person");

  static char words_storage[400][16];
  static const char *words[400];
  for (int i = 0; i < 400; i++) {
    int len = 3 + (int)(next_rand() % 8);
    for (int j = 0; j < len; j++)
      words_storage[i][j] = (char)('a' + next_rand() % 6);
    words_storage[i][len] = 0;
    words[i] = words_storage[i];
  }
  qsort(words, 400, sizeof words[0], cmp_str);
  CHECK(check_sorted(words, 400, sizeof words[0], cmp_str), "words sorted");
  printf("words: %s %s %s ... %s\n", words[0], words[1], words[2], words[399]);
  const char *want = words[200];
  const char **w = bsearch(&want, words, 400, sizeof words[0], cmp_str);
  CHECK(w != NULL && strcmp(*w, want) == 0, "bsearch word");

  // Nested: the comparator bsearches the rank table.
  for (int i = 0; i < 512; i++) {
    ranks[i].key = i * 3;
    ranks[i].rank = (int)((i * 7919u) % 64);
  }
  int ranked[3000];
  for (int i = 0; i < 3000; i++)
    ranked[i] = (int)(next_rand() % 512) * 3;
  compare_calls = 0;
  qsort(ranked, 3000, sizeof ranked[0], cmp_by_rank);
  CHECK(check_sorted(ranked, 3000, sizeof ranked[0], cmp_by_rank), "ranked sorted");
  long rsum = 0;
  for (int i = 0; i < 3000; i++)
    rsum = rsum * 31 % 1000000007 + ranked[i];
  printf("ranked: first=%d (rank %d) last=%d (rank %d) hash=%ld\n", ranked[0], rank_of(ranked[0]),
         ranked[2999], rank_of(ranked[2999]), rsum);

  printf("%s\n", failures ? "callbacks: FAILED" : "callbacks: ok");
  return failures ? 1 : 0;
}

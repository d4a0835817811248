// strings.c: C strings through libc. strtok and nested strtok_r over a CSV-like text, strcmp /
// strncmp / strcasecmp ordering, snprintf building and truncating, strchr/strrchr/strstr,
// overlapping memmove, strdup/strcat/strncpy, strtol with errno on overflow, sscanf, and a word
// frequency table built in a hot loop.
// uppercut-test: args=""
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int failures;
#define CHECK(cond, what)                                                                          \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      printf("FAIL: %s\n", what);                                                                  \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static const char *const corpus =
    "the quick brown fox jumps over the lazy dog and the dog sleeps while the fox runs "
    "into the brown forest where every quick fox finds a lazy dog to jump over again";

struct word_count {
  char word[16];
  int count;
};

static int by_count_then_word(const void *a, const void *b) {
  const struct word_count *x = a, *y = b;
  if (x->count != y->count)
    return y->count - x->count;
  return strcmp(x->word, y->word);
}

__attribute__((noinline)) static int count_words(const char *text, struct word_count *table,
                                                 int capacity) {
  char *copy = strdup(text);
  int used = 0;
  for (char *w = strtok(copy, " "); w; w = strtok(NULL, " ")) {
    int i;
    for (i = 0; i < used; i++)
      if (strcmp(table[i].word, w) == 0)
        break;
    if (i == used && used < capacity) {
      strncpy(table[used].word, w, sizeof table[used].word - 1);
      table[used].word[sizeof table[used].word - 1] = 0;
      table[used++].count = 0;
    }
    if (i < used)
      table[i].count++;
  }
  free(copy);
  return used;
}

int main(void) {
  struct word_count table[64];
  int used = 0;
  for (int round = 0; round < 10000; round++) {
    memset(table, 0, sizeof table);
    used = count_words(corpus, table, 64);
  }
  qsort(table, (size_t)used, sizeof table[0], by_count_then_word);
  printf("%d distinct words; top:", used);
  for (int i = 0; i < 6; i++)
    printf(" %s=%d", table[i].word, table[i].count);
  printf("\n");
  CHECK(strcmp(table[0].word, "the") == 0 && table[0].count == 5, "most frequent word");

  // Nested tokenising needs strtok_r.
  char records[] = "alice:30:paris;bob:25:rome;carol:41:oslo;dave:19:lima";
  char *outer_save, *inner_save;
  long age_sum = 0;
  for (char *rec = strtok_r(records, ";", &outer_save); rec;
       rec = strtok_r(NULL, ";", &outer_save)) {
    char *name = strtok_r(rec, ":", &inner_save);
    char *age = strtok_r(NULL, ":", &inner_save);
    char *city = strtok_r(NULL, ":", &inner_save);
    age_sum += strtol(age, NULL, 10);
    printf("record: %-6s %3s %s\n", name, age, city);
  }
  CHECK(age_sum == 115, "ages");

  const char *names[] = {"apple", "Apple", "apricot", "banana", "app", ""};
  for (int i = 0; i < 6; i++)
    for (int j = 0; j < 6; j++) {
      int c = strcmp(names[i], names[j]), ci = strcasecmp(names[i], names[j]);
      int n3 = strncmp(names[i], names[j], 3);
      CHECK((c > 0) == (strcmp(names[j], names[i]) < 0), "strcmp antisymmetric");
      if (i == 0 && j < 6)
        printf("cmp(%s, %s): %d %d %d\n", names[i], names[j], (c > 0) - (c < 0),
               (ci > 0) - (ci < 0), (n3 > 0) - (n3 < 0));
    }

  char buf[32];
  int want = snprintf(buf, sizeof buf, "%s-%05d-%.2f-%c%c", "prefix", 42, 3.14159, 'o', 'k');
  printf("snprintf: \"%s\" (%d)\n", buf, want);
  want = snprintf(buf, 10, "%s", "this is far too long to fit");
  CHECK(want == 27 && strlen(buf) == 9, "snprintf truncation");
  printf("truncated: \"%s\" (wanted %d)\n", buf, want);

  const char *path = "/usr/local/lib/libexample.so.1.2";
  printf("strchr: %s | strrchr: %s | strstr: %s | strspn: %zu | strcspn: %zu\n",
         strchr(path + 1, '/'), strrchr(path, '/'), strstr(path, "lib"), strspn(path, "/usr"),
         strcspn(path, "."));

  char overlap[32] = "0123456789abcdef";
  memmove(overlap + 4, overlap, 10);
  printf("memmove forward: %s\n", overlap);
  memmove(overlap, overlap + 6, 10);
  printf("memmove backward: %s\n", overlap);
  CHECK(strcmp(overlap, "23456789ef6789ef") == 0, "memmove");

  char *joined = malloc(256);
  joined[0] = 0;
  for (int i = 0; i < 10; i++) {
    char piece[8];
    snprintf(piece, sizeof piece, "%d,", i * i);
    strcat(joined, piece);
  }
  for (char *p = joined; *p; p++)
    *p = (char)(isdigit((unsigned char)*p) ? *p : ';');
  printf("joined: %s\n", joined);
  free(joined);

  errno = 0;
  long big = strtol("99999999999999999999", NULL, 10);
  int overflow_errno = errno;
  CHECK(big == LONG_MAX && overflow_errno == ERANGE, "strtol overflow");
  char *end;
  long hex = strtol("0x7fZ", &end, 16);
  printf("strtol: overflow -> %s (errno ERANGE: %d), hex %ld rest \"%s\"\n",
         big == LONG_MAX ? "LONG_MAX" : "?", overflow_errno == ERANGE, hex, end);

  int day, year;
  char month[8];
  int got = sscanf("Date: 14 Jul 1789", "Date: %d %7s %d", &day, month, &year);
  CHECK(got == 3 && day == 14 && year == 1789 && strcmp(month, "Jul") == 0, "sscanf");
  printf("sscanf: %d fields: %d %s %d; strerror(ENOENT) = %s\n", got, day, month, year,
         strerror(ENOENT));

  unsigned long h = 0;
  char line[64];
  for (int i = 0; i < 100000; i++) {
    int n = snprintf(line, sizeof line, "%d:%x:%s", i, i * 7, (i & 1) ? "odd" : "even");
    for (int k = 0; k < n; k++)
      h = h * 131 + (unsigned char)line[k];
  }
  printf("snprintf loop hash %lu\n", h);

  printf("%s\n", failures ? "strings: FAILED" : "strings: ok");
  return failures ? 1 : 0;
}

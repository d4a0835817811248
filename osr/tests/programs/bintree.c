// bintree.c: malloc-heavy linked structures. An unbalanced binary search tree of 60,000 nodes
// (insert, lookup, delete of a third, recursive in-order walk, height, free), a singly linked
// list merge-sorted recursively, and a vector grown with realloc; every node is a separate
// malloc/calloc and everything is freed. Results are checked against plain arrays.
// uppercut-test: args=""
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

static unsigned long rng = 0x2545f4914f6cdd1dul;
static unsigned next_rand(void) {
  rng = rng * 6364136223846793005ul + 1442695040888963407ul;
  return (unsigned)(rng >> 33);
}

struct node {
  long key;
  long payload;
  struct node *left, *right;
};

__attribute__((noinline)) static struct node *insert(struct node *root, long key) {
  struct node **slot = &root;
  while (*slot) {
    if (key == (*slot)->key)
      return root;
    slot = key < (*slot)->key ? &(*slot)->left : &(*slot)->right;
  }
  struct node *n = malloc(sizeof *n);
  n->key = key;
  n->payload = key * 3 + 1;
  n->left = n->right = NULL;
  *slot = n;
  return root;
}

__attribute__((noinline)) static struct node *find(struct node *root, long key) {
  while (root && root->key != key)
    root = key < root->key ? root->left : root->right;
  return root;
}

// Recursive delete: replaces a two-child node by its in-order successor.
__attribute__((noinline)) static struct node *delete(struct node *root, long key) {
  if (!root)
    return NULL;
  if (key < root->key) {
    root->left = delete(root->left, key);
  } else if (key > root->key) {
    root->right = delete(root->right, key);
  } else if (!root->left || !root->right) {
    struct node *child = root->left ? root->left : root->right;
    free(root);
    return child;
  } else {
    struct node *succ = root->right;
    while (succ->left)
      succ = succ->left;
    root->key = succ->key;
    root->payload = succ->payload;
    root->right = delete(root->right, succ->key);
  }
  return root;
}

static long walk_count;
__attribute__((noinline)) static void in_order(const struct node *n, long *out, long *len) {
  if (!n)
    return;
  walk_count++;
  in_order(n->left, out, len);
  out[(*len)++] = n->key;
  in_order(n->right, out, len);
}

__attribute__((noinline)) static int height(const struct node *n) {
  if (!n)
    return 0;
  int l = height(n->left), r = height(n->right);
  return 1 + (l > r ? l : r);
}

__attribute__((noinline)) static void free_tree(struct node *n) {
  if (!n)
    return;
  free_tree(n->left);
  free_tree(n->right);
  free(n);
}

struct item {
  long value;
  struct item *next;
};

static struct item *merge(struct item *a, struct item *b) {
  struct item head = {0, NULL}, *tail = &head;
  while (a && b) {
    struct item **smaller = a->value <= b->value ? &a : &b;
    tail->next = *smaller;
    tail = *smaller;
    *smaller = (*smaller)->next;
  }
  tail->next = a ? a : b;
  return head.next;
}

__attribute__((noinline)) static struct item *merge_sort(struct item *list) {
  if (!list || !list->next)
    return list;
  struct item *slow = list, *fast = list->next;
  while (fast && fast->next) {
    slow = slow->next;
    fast = fast->next->next;
  }
  struct item *second = slow->next;
  slow->next = NULL;
  return merge(merge_sort(list), merge_sort(second));
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

#define KEYS 60000

int main(void) {
  static long keys[KEYS], walked[KEYS], expect[KEYS];
  struct node *root = NULL;
  for (int i = 0; i < KEYS; i++) {
    keys[i] = (long)(next_rand() % 1000000);
    root = insert(root, keys[i]);
  }
  memcpy(expect, keys, sizeof keys);
  qsort(expect, KEYS, sizeof expect[0], cmp_long);
  long distinct = 0;
  for (int i = 0; i < KEYS; i++)
    if (i == 0 || expect[i] != expect[i - 1])
      expect[distinct++] = expect[i];

  long len = 0;
  in_order(root, walked, &len);
  CHECK(len == distinct && memcmp(walked, expect, sizeof(long) * (size_t)len) == 0,
        "in-order walk is the sorted distinct keys");
  printf("tree: %ld distinct keys, height %d, min %ld max %ld\n", len, height(root), walked[0],
         walked[len - 1]);

  long hits = 0, payload = 0;
  for (long probe = 0; probe < 1000000; probe += 7) {
    struct node *n = find(root, probe);
    if (n) {
      hits++;
      payload += n->payload;
    }
  }
  printf("lookups: %ld hits, payload sum %ld\n", hits, payload);

  for (int i = 0; i < KEYS; i += 3)
    root = delete(root, keys[i]);
  len = 0;
  in_order(root, walked, &len);
  int sorted = 1;
  for (long i = 1; i < len; i++)
    sorted &= walked[i - 1] < walked[i];
  CHECK(sorted, "still a search tree after deletes");
  for (int i = 0; i < KEYS; i += 3)
    CHECK(find(root, keys[i]) == NULL, "deleted key is gone");
  printf("after deletes: %ld keys, height %d, walks visited %ld nodes\n", len, height(root),
         walk_count);
  free_tree(root);

  struct item *list = NULL;
  long list_sum = 0;
  for (int i = 0; i < 50000; i++) {
    struct item *it = calloc(1, sizeof *it);
    it->value = (long)(next_rand() % 100000);
    list_sum += it->value;
    it->next = list;
    list = it;
  }
  list = merge_sort(list);
  long count = 0, check_sum = 0, ok = 1, prev = -1, weighted = 0;
  for (struct item *it = list; it; it = it->next) {
    ok &= prev <= it->value;
    prev = it->value;
    check_sum += it->value;
    weighted += it->value * (count++ % 10);
  }
  CHECK(ok && count == 50000 && check_sum == list_sum, "merge sort");
  printf("list: %ld items sorted, weighted sum %ld\n", count, weighted);
  while (list) {
    struct item *next = list->next;
    free(list);
    list = next;
  }

  long *vec = NULL;
  size_t vlen = 0, cap = 0;
  for (long i = 0; i < 200000; i++) {
    if (vlen == cap) {
      cap = cap ? cap * 2 : 4;
      vec = realloc(vec, cap * sizeof *vec);
    }
    vec[vlen++] = i * i % 1009;
  }
  long vsum = 0;
  for (size_t i = 0; i < vlen; i++)
    vsum += vec[i];
  free(vec);
  printf("vector: %zu elements, capacity %zu, sum %ld\n", vlen, cap, vsum);

  printf("%s\n", failures ? "bintree: FAILED" : "bintree: ok");
  return failures ? 1 : 0;
}

/* A driver for SQLite's amalgamation: the large guest of the startup corpus.
 *
 *   driver        a trivial run: a five-row table in memory, one aggregate
 *   driver N      N inserts in a transaction, an index, then GROUP BY,
 *                 ORDER BY, join, LIKE, point lookups and an UPDATE
 *
 * The first line is printed and flushed before SQLite is touched, so a
 * runner can time startup (load + codegen) apart from the work. Output is
 * deterministic: counts, sums and FNV-1a digests of result rows. Exits 0,
 * or 1 with one line on stderr at the first SQLite error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "sqlite3.h"

static sqlite3 *db;

static void fail(const char *what) {
  fprintf(stderr, "sqlite driver: %s: %s\n", what, sqlite3_errmsg(db));
  exit(1);
}

static void exec(const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "sqlite driver: %s: %s\n", sql, err ? err : "?");
    exit(1);
  }
}

static sqlite3_stmt *prepare(const char *sql) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) fail(sql);
  return st;
}

static int step(sqlite3_stmt *st, const char *what) {
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) fail(what);
  return rc == SQLITE_ROW;
}

static uint32_t fnv(uint32_t h, const unsigned char *p, int n) {
  for (int i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h;
}

/* Runs a query and prints its row count and a digest of every column's
 * text, or the single row itself when the query returns one row. */
static void digest(const char *label, const char *sql) {
  sqlite3_stmt *st = prepare(sql);
  uint32_t h = 2166136261u;
  long rows = 0;
  char line[256];
  int len = 0;
  while (step(st, sql)) {
    len = 0;
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      const unsigned char *t = sqlite3_column_text(st, c);
      int n = sqlite3_column_bytes(st, c);
      h = fnv(h, t ? t : (const unsigned char *)"", n);
      h = fnv(h, (const unsigned char *)"|", 1);
      if (len < (int)sizeof line - 2)
        len += snprintf(line + len, sizeof line - len, "%s%s", c ? "|" : "",
                        t ? (const char *)t : "NULL");
    }
    rows++;
  }
  sqlite3_finalize(st);
  if (rows == 1)
    printf("%s: %.*s\n", label, len, line);
  else
    printf("%s: rows=%ld fnv=%08x\n", label, rows, h);
}

static void trivial(void) {
  exec("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);"
       "INSERT INTO t(name, qty) VALUES ('apple', 3), ('pear', 5),"
       " ('plum', 7), ('fig', 11), ('kiwi', 13);");
  digest("trivial", "SELECT count(*), sum(qty), max(name) FROM t");
}

static void workload(long n) {
  static const char *const words[] = {"alpha", "bravo", "charlie", "delta",
                                      "echo",  "foxtrot", "golf", "hotel"};
  exec("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, grp INTEGER, name TEXT);"
       "CREATE TABLE g(grp INTEGER PRIMARY KEY, label TEXT);"
       "BEGIN;");
  sqlite3_stmt *ins = prepare("INSERT INTO t(k, grp, name) VALUES (?, ?, ?)");
  uint64_t x = 88172645463325252u; /* xorshift64 seed */
  char name[64];
  for (long i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    long k = (long)(x % 1000000);
    snprintf(name, sizeof name, "%s-%05lx", words[(x >> 32) % 8],
             (unsigned long)(x >> 40) & 0xfffff);
    sqlite3_bind_int64(ins, 1, k);
    sqlite3_bind_int64(ins, 2, k % 100);
    sqlite3_bind_text(ins, 3, name, -1, SQLITE_TRANSIENT);
    step(ins, "insert");
    sqlite3_reset(ins);
  }
  sqlite3_finalize(ins);
  exec("COMMIT;"
       "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < 99)"
       " INSERT INTO g SELECT i, 'group-' || (i % 10) FROM c;"
       "CREATE INDEX t_k ON t(k);");
  printf("inserted: %ld\n", n);

  digest("group by", "SELECT grp, count(*), sum(k), min(name) FROM t GROUP BY grp ORDER BY grp");
  digest("order by", "SELECT name, k, id FROM t ORDER BY name, k, id");
  digest("join", "SELECT g.label, count(*), sum(t.k) FROM t JOIN g USING (grp)"
                 " WHERE t.k BETWEEN 250000 AND 750000 GROUP BY g.label ORDER BY g.label");
  digest("like", "SELECT count(*), sum(k) FROM t WHERE name LIKE '%a-1%'");
  digest("range", "SELECT id, k FROM t WHERE k < 5000 ORDER BY k, id");

  sqlite3_stmt *look = prepare("SELECT count(*) FROM t WHERE k = ?");
  long hits = 0;
  for (long i = 0; i < n / 4; i++) {
    sqlite3_bind_int64(look, 1, (i * 7919) % 1000000);
    if (step(look, "lookup")) hits += sqlite3_column_int64(look, 0);
    sqlite3_reset(look);
  }
  sqlite3_finalize(look);
  printf("lookups: %ld hits=%ld\n", n / 4, hits);

  exec("UPDATE t SET k = k + 1 WHERE grp % 7 = 3; DELETE FROM t WHERE grp = 42;");
  digest("after update", "SELECT count(*), sum(k), total_changes() FROM t");
}

int main(int argc, char **argv) {
  printf("sqlite driver: start\n");
  fflush(stdout);
  long n = 0;
  if (argc > 1) {
    char *end;
    n = strtol(argv[1], &end, 10);
    if (*end || n < 1) {
      fprintf(stderr, "sqlite driver: bad row count '%s'\n", argv[1]);
      return 2;
    }
  }
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) fail("open");
  if (n == 0)
    trivial();
  else
    workload(n);
  if (sqlite3_close(db) != SQLITE_OK) fail("close");
  printf("sqlite driver: ok\n");
  return 0;
}

// httpd: a small HTTP/1.1 server, the guest of the web-server experiments.
//
// It listens on 127.0.0.1:PORT (argv[1]; 0 picks a free port), prints `listening on PORT` on
// stdout once it accepts connections, and serves them from one thread: a poll() loop over the
// listening socket and every open connection (the live frame that on-stack replacement moves).
// Connections are kept alive (HTTP/1.1 by default, HTTP/1.0 with `Connection: keep-alive`),
// requests may be pipelined and may arrive a byte at a time; request bodies framed by
// Content-Length are read and discarded. Responses always carry Content-Length.
//
//   GET /                  a small HTML page
//   GET /hello?name=X      "Hello, X!" (X percent-decoded; "world" without a name)
//   GET /compute?n=N       the number of primes below N by trial division (0 <= N <= 1000000,
//                          default 1000): CPU work on the request path
//   GET /status            counters, one `key value` line each (below)
//   GET /control?extended=0|1
//                          stores the flag in the global `extended_status`
//   GET /quit              answers "bye", then the server finishes: it flushes what it owes,
//                          prints `served N requests on M connections` and exits 0
//
// HEAD is accepted wherever GET is; other methods get 405, unknown paths 404, malformed
// requests 400 (and the connection is closed), oversized headers 431, bodies over 1 MiB 413,
// chunked bodies 501, versions other than HTTP/1.0 and 1.1 505.
//
// `extended_status` plays Apache httpd's `ap_extended_status`: it is read on every request and
// on every wake-up of the loop, and while it is non-zero the server does extra bookkeeping
// (per-path counts, bytes in and out, a ring of the last request timings, loop wake-ups) that
// /status reports. Its only uses are plain loads and stores, so under
// `uppercut run --osr-specialize=extended_status` every store through /control makes the
// functions that read it (this loop included) run code specialised on the value just stored.
//
// /status lines: `requests` counts every request parsed so far (or refused as malformed), the
// /status request itself included; `responses_2xx`, `responses_4xx`, `responses_5xx` count
// responses already queued, so in a /status response requests = their sum + 1;
// `connections_accepted` and `connections_open` count connections. The `extended_*` lines
// count only while extended_status is non-zero: `extended_requests` (the sum of the
// `extended_path` lines) and `extended_bytes_in` count requests that began while it was on,
// the /status request itself included; `extended_bytes_out` and the timing ring
// (`extended_timed`, `extended_timing_mean_ns`, `extended_timing_max_ns`) count responses to
// requests that began and ended while it was on; `extended_wakeups` counts loop wake-ups.
//
// Connections closed by the server (after /quit, a malformed request, `Connection: close` or
// an HTTP/1.0 request) are shut down for writing first and drained for up to 2 s, so that
// unread input cannot make the close reset the connection before the client reads the answer.
//
// Build: clang-19 -O2 httpd.c -o httpd, or clang-19 -O2 -S -emit-llvm httpd.c -o httpd.ll and
// uppercut run --osr-specialize=extended_status --osr-stats httpd.ll 0
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// The configuration global of the experiment: 0 = plain counting, non-zero = extended.
// With HTTPD_EXTENDED_STATUS defined (`#define HTTPD_EXTENDED_STATUS 0` before this file, or
// -DHTTPD_EXTENDED_STATUS=0), it is that compile-time constant instead, and /control answers
// with it without storing: the hand-specialised baseline of the experiments.
#ifdef HTTPD_EXTENDED_STATUS
#define extended_status (HTTPD_EXTENDED_STATUS)
#else
int extended_status = 0;
#endif

#define MAX_CONNS 1000
#define IN_CAP 16384
#define MAX_HEAD 8192
#define MAX_TARGET 2048
#define MAX_BODY (1L << 20)
#define OUT_HIGH_WATER (256 * 1024)
#define RING 256
#define MAX_COMPUTE 1000000L
#define LINGER_NS 2000000000L

enum path_id { P_ROOT, P_HELLO, P_COMPUTE, P_STATUS, P_CONTROL, P_QUIT, P_OTHER, P_COUNT };
static const char *const path_names[P_COUNT] = {"/",        "/hello", "/compute", "/status",
                                                "/control", "/quit",  "other"};

struct timing {
  int path;
  int status;
  long ns;
};

struct counters {
  long requests;
  long responses[6]; // by status class: [2] = 2xx, [4] = 4xx, [5] = 5xx
  long accepted;
  long open;
  // Kept only while extended_status is non-zero.
  long ext_requests;
  long ext_by_path[P_COUNT];
  long ext_bytes_in;
  long ext_bytes_out;
  long ext_wakeups;
  long ext_timed; // timings recorded in total (the ring keeps the last RING)
  struct timing ring[RING];
};

static struct counters stats;

struct conn {
  int fd;
  size_t in_len;
  long skip;       // bytes of a request body still to discard
  int close_after; // close once the output is flushed; read no more requests
  int peer_closed; // the client sent EOF: answer what is complete, then close
  int dead;        // an I/O error: close now
  long linger_until; // after the last answer and shutdown(SHUT_WR): discard input until EOF
                     // or this time (so that closing with unread input cannot reset the
                     // connection before the client has read its answer)
  char *out;
  size_t out_len, out_off, out_cap;
  char in[IN_CAP];
};

// What one request asked for.
struct request {
  int head_only;
  int http10;
  int keep_alive;
  long content_length;
  size_t head_len; // bytes of the request line and headers, blank line included
  long start_ns;   // when handling began (only measured while extended)
  enum path_id path;
  char method[16];
  char target[MAX_TARGET];
};

static int quitting;

static long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

// ----------------------------------------------------------------------------------------
// Output
// ----------------------------------------------------------------------------------------

static void out_append(struct conn *c, const char *data, size_t len) {
  if (c->dead)
    return;
  if (c->out_len + len > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + len)
      cap *= 2;
    char *grown = realloc(c->out, cap);
    if (!grown) {
      c->dead = 1;
      return;
    }
    c->out = grown;
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, data, len);
  c->out_len += len;
}

static size_t pending(const struct conn *c) { return c->out_len - c->out_off; }

// Sends what the socket takes now; the rest waits for POLLOUT.
static void flush_out(struct conn *c) {
  while (!c->dead && pending(c) > 0) {
    ssize_t n = send(c->fd, c->out + c->out_off, pending(c), MSG_NOSIGNAL);
    if (n > 0) {
      c->out_off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      c->dead = 1;
    }
  }
  if (pending(c) == 0)
    c->out_off = c->out_len = 0;
}

static const char *reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 413:
    return "Content Too Large";
  case 431:
    return "Request Header Fields Too Large";
  case 501:
    return "Not Implemented";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Unknown";
  }
}

// Queues one response. `r` is NULL when the request could not be parsed: the connection is
// closed after it.
static void respond(struct conn *c, const struct request *r, int status, const char *type,
                    const char *body, size_t len) {
  int keep = r && r->keep_alive && !c->close_after;
  if (!keep)
    c->close_after = 1;
  const char *connection = !keep ? "Connection: close\r\n"
                           : r->http10 ? "Connection: keep-alive\r\n"
                                       : "";
  const char *allow = status == 405 ? "Allow: GET, HEAD\r\n" : "";
  char head[512];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nServer: uppercut-httpd\r\nContent-Type: %s\r\n"
                   "Content-Length: %zu\r\n%s%s\r\n",
                   status, reason(status), type, len, allow, connection);
  out_append(c, head, (size_t)n);
  if (!(r && r->head_only))
    out_append(c, body, len);
  if (status / 100 < 6)
    stats.responses[status / 100]++;
  if (extended_status && r && r->start_ns) { // r began while extended, and still is
    stats.ext_bytes_out += (long)n + (r->head_only ? 0 : (long)len);
    struct timing *t = &stats.ring[stats.ext_timed % RING];
    t->path = r->path;
    t->status = status;
    t->ns = now_ns() - r->start_ns;
    stats.ext_timed++;
  }
}

static void respond_text(struct conn *c, const struct request *r, int status, const char *text) {
  respond(c, r, status, "text/plain; charset=utf-8", text, strlen(text));
}

// ----------------------------------------------------------------------------------------
// Parsing
// ----------------------------------------------------------------------------------------

// The length of the request head (through its blank line) at the start of buf, or 0 when it
// is not complete yet. Lines end with CRLF or a bare LF.
static size_t head_end(const char *buf, size_t len) {
  for (size_t i = 0; i + 1 < len; i++) {
    if (buf[i] != '\n')
      continue;
    if (buf[i + 1] == '\n')
      return i + 2;
    if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
      return i + 3;
  }
  return 0;
}

static int is_tchar(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch; }

// Case-insensitive comparison of s[0..len] with the NUL-terminated lower-case word.
static int same_word(const char *s, size_t len, const char *word) {
  size_t wlen = strlen(word);
  if (len != wlen)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (lower((unsigned char)s[i]) != word[i])
      return 0;
  return 1;
}

// Whether a comma-separated header value holds the token `word` (case-insensitive).
static int has_token(const char *v, size_t len, const char *word) {
  size_t i = 0;
  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t start = i;
    while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
      i++;
    if (i > start && same_word(v + start, i - start, word))
      return 1;
  }
  return 0;
}

// Parses the head of a request into r. Returns 0, or the status to answer with.
static int parse_head(const char *buf, size_t head_len, struct request *r) {
  const char *end = buf + head_len;
  const char *line = buf;
  const char *eol = memchr(line, '\n', head_len);
  size_t len = (size_t)(eol - line);
  if (len > 0 && line[len - 1] == '\r')
    len--;

  // Request line: METHOD SP TARGET SP VERSION
  size_t i = 0;
  while (i < len && is_tchar(line[i]))
    i++;
  if (i == 0 || i >= sizeof r->method || i >= len || line[i] != ' ')
    return 400;
  memcpy(r->method, line, i);
  r->method[i] = '\0';
  size_t t0 = ++i;
  while (i < len && line[i] != ' ')
    i++;
  size_t tlen = i - t0;
  if (tlen == 0 || i >= len || line[t0] != '/')
    return 400;
  if (tlen >= sizeof r->target)
    return 431;
  for (size_t k = t0; k < i; k++)
    if ((unsigned char)line[k] <= ' ' || (unsigned char)line[k] >= 127)
      return 400;
  memcpy(r->target, line + t0, tlen);
  r->target[tlen] = '\0';
  const char *version = line + i + 1;
  size_t vlen = len - i - 1;
  if (vlen == 8 && memcmp(version, "HTTP/1.1", 8) == 0) {
    r->http10 = 0;
  } else if (vlen == 8 && memcmp(version, "HTTP/1.0", 8) == 0) {
    r->http10 = 1;
  } else if (vlen >= 5 && memcmp(version, "HTTP/", 5) == 0) {
    return 505;
  } else {
    return 400;
  }
  r->head_only = strcmp(r->method, "HEAD") == 0;

  // Header fields.
  int saw_host = 0, saw_length = 0, conn_close = 0, conn_keep = 0, chunked = 0;
  line = eol + 1;
  while (line < end) {
    eol = memchr(line, '\n', (size_t)(end - line));
    len = (size_t)(eol - line);
    if (len > 0 && line[len - 1] == '\r')
      len--;
    if (len == 0)
      break; // the blank line
    if (line[0] == ' ' || line[0] == '\t')
      return 400; // obsolete line folding
    size_t n = 0;
    while (n < len && is_tchar(line[n]))
      n++;
    if (n == 0 || n >= len || line[n] != ':')
      return 400;
    const char *v = line + n + 1;
    size_t vl = len - n - 1;
    while (vl > 0 && (*v == ' ' || *v == '\t'))
      v++, vl--;
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
      vl--;
    for (size_t k = 0; k < vl; k++)
      if ((unsigned char)v[k] < ' ' && v[k] != '\t')
        return 400;
    if (same_word(line, n, "host")) {
      saw_host++;
    } else if (same_word(line, n, "content-length")) {
      if (vl == 0 || vl > 18)
        return vl == 0 ? 400 : 413;
      long value = 0;
      for (size_t k = 0; k < vl; k++) {
        if (v[k] < '0' || v[k] > '9')
          return 400;
        value = value * 10 + (v[k] - '0');
      }
      if (saw_length && value != r->content_length)
        return 400;
      saw_length = 1;
      r->content_length = value;
    } else if (same_word(line, n, "transfer-encoding")) {
      chunked = 1;
    } else if (same_word(line, n, "connection")) {
      conn_close |= has_token(v, vl, "close");
      conn_keep |= has_token(v, vl, "keep-alive");
    }
    line = eol + 1;
  }
  if (chunked)
    return 501;
  if (!r->http10 && saw_host != 1)
    return 400;
  if (r->content_length > MAX_BODY)
    return 413;
  r->keep_alive = r->http10 ? conn_keep && !conn_close : !conn_close;
  return 0;
}

static int hex_digit(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

// Finds `key` in a query string and percent-decodes its value into out (at most cap - 1
// bytes, then truncated). Returns 1 if found, 0 if absent, -1 if its encoding is malformed.
static int query_param(const char *query, const char *key, char *out, size_t cap) {
  size_t klen = strlen(key);
  const char *p = query;
  while (p && *p) {
    const char *amp = strchr(p, '&');
    size_t plen = amp ? (size_t)(amp - p) : strlen(p);
    if (plen >= klen + 1 && memcmp(p, key, klen) == 0 && p[klen] == '=') {
      size_t o = 0;
      for (size_t i = klen + 1; i < plen; i++) {
        int ch = (unsigned char)p[i];
        if (ch == '+') {
          ch = ' ';
        } else if (ch == '%') {
          if (i + 2 >= plen)
            return -1;
          int h = hex_digit(p[i + 1]), l = hex_digit(p[i + 2]);
          if (h < 0 || l < 0)
            return -1;
          ch = h * 16 + l;
          i += 2;
        }
        if (o + 1 < cap)
          out[o++] = (char)ch;
      }
      out[o] = '\0';
      return 1;
    }
    p = amp ? amp + 1 : NULL;
  }
  return 0;
}

// ----------------------------------------------------------------------------------------
// Handlers
// ----------------------------------------------------------------------------------------

static const char index_page[] =
    "<!DOCTYPE html>\n<html><head><title>uppercut httpd</title></head>\n"
    "<body><h1>uppercut httpd</h1><p>Try <a href=\"/hello?name=you\">/hello</a>, "
    "<a href=\"/compute?n=10000\">/compute</a> or <a href=\"/status\">/status</a>.</p>"
    "</body></html>\n";

static void handle_hello(struct conn *c, const struct request *r, const char *query) {
  char name[65];
  int found = query_param(query, "name", name, sizeof name);
  if (found < 0) {
    respond_text(c, r, 400, "malformed query\n");
    return;
  }
  if (!found || name[0] == '\0')
    strcpy(name, "world");
  for (char *p = name; *p; p++)
    if ((unsigned char)*p < ' ' || (unsigned char)*p >= 127)
      *p = '?';
  char body[128];
  int n = snprintf(body, sizeof body, "Hello, %s!\n", name);
  respond(c, r, 200, "text/plain; charset=utf-8", body, (size_t)n);
}

// Parses a decimal in 0..max; -1 if it is not one.
static long parse_decimal(const char *s, long max) {
  if (*s == '\0')
    return -1;
  long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    v = v * 10 + (*s - '0');
    if (v > max)
      return -1;
  }
  return v;
}

static long primes_below(long n) {
  long count = 0;
  for (long k = 2; k < n; k++) {
    int prime = 1;
    for (long d = 2; d * d <= k; d++)
      if (k % d == 0) {
        prime = 0;
        break;
      }
    count += prime;
  }
  return count;
}

static void handle_compute(struct conn *c, const struct request *r, const char *query) {
  char arg[16];
  long n = 1000;
  int found = query_param(query, "n", arg, sizeof arg);
  if (found != 0 && (found < 0 || (n = parse_decimal(arg, MAX_COMPUTE)) < 0)) {
    respond_text(c, r, 400, "n must be an integer in 0..1000000\n");
    return;
  }
  char body[96];
  int len = snprintf(body, sizeof body, "primes below %ld: %ld\n", n, primes_below(n));
  respond(c, r, 200, "text/plain; charset=utf-8", body, (size_t)len);
}

// A text buffer for the status page.
struct text {
  char buf[4096];
  size_t len;
};

static void put_line(struct text *t, const char *key, const char *key2, long value) {
  int n = snprintf(t->buf + t->len, sizeof t->buf - t->len, "%s%s%s %ld\n", key,
                   key2[0] ? " " : "", key2, value);
  if (n > 0 && (size_t)n < sizeof t->buf - t->len)
    t->len += (size_t)n;
}

static void handle_status(struct conn *c, const struct request *r) {
  static struct text t;
  t.len = 0;
  put_line(&t, "requests", "", stats.requests);
  put_line(&t, "responses_2xx", "", stats.responses[2]);
  put_line(&t, "responses_4xx", "", stats.responses[4]);
  put_line(&t, "responses_5xx", "", stats.responses[5]);
  put_line(&t, "connections_accepted", "", stats.accepted);
  put_line(&t, "connections_open", "", stats.open);
  put_line(&t, "extended_status", "", extended_status);
  put_line(&t, "extended_requests", "", stats.ext_requests);
  for (int p = 0; p < P_COUNT; p++)
    put_line(&t, "extended_path", path_names[p], stats.ext_by_path[p]);
  put_line(&t, "extended_bytes_in", "", stats.ext_bytes_in);
  put_line(&t, "extended_bytes_out", "", stats.ext_bytes_out);
  put_line(&t, "extended_wakeups", "", stats.ext_wakeups);
  long kept = stats.ext_timed < RING ? stats.ext_timed : RING;
  long total = 0, max = 0;
  for (long i = 0; i < kept; i++) {
    total += stats.ring[i].ns;
    if (stats.ring[i].ns > max)
      max = stats.ring[i].ns;
  }
  put_line(&t, "extended_timed", "", stats.ext_timed);
  put_line(&t, "extended_timing_mean_ns", "", kept ? total / kept : 0);
  put_line(&t, "extended_timing_max_ns", "", max);
  respond(c, r, 200, "text/plain; charset=utf-8", t.buf, t.len);
}

static void handle_control(struct conn *c, const struct request *r, const char *query) {
  char arg[8];
  if (query_param(query, "extended", arg, sizeof arg) != 1 ||
      (strcmp(arg, "0") != 0 && strcmp(arg, "1") != 0)) {
    respond_text(c, r, 400, "usage: /control?extended=0|1\n");
    return;
  }
#ifdef HTTPD_EXTENDED_STATUS
  arg[0] = extended_status ? '1' : '0'; // a constant: nothing to store
#else
  if (arg[0] == '1')
    extended_status = 1;
  else
    extended_status = 0;
#endif
  respond_text(c, r, 200, arg[0] == '1' ? "extended_status 1\n" : "extended_status 0\n");
}

static enum path_id classify(const char *path) {
  for (int p = 0; p < P_OTHER; p++)
    if (strcmp(path, path_names[p]) == 0)
      return (enum path_id)p;
  return P_OTHER;
}

// Answers one parsed request.
static void dispatch(struct conn *c, struct request *r) {
  char *query = strchr(r->target, '?');
  if (query)
    *query++ = '\0';
  else
    query = "";
  r->path = classify(r->target);
  stats.requests++;
  if (extended_status) {
    r->start_ns = now_ns();
    stats.ext_requests++;
    stats.ext_by_path[r->path]++;
    stats.ext_bytes_in += (long)r->head_len + r->content_length;
  }
  if (strcmp(r->method, "GET") != 0 && !r->head_only) {
    respond_text(c, r, 405, "only GET and HEAD\n");
    return;
  }
  switch (r->path) {
  case P_ROOT:
    respond(c, r, 200, "text/html; charset=utf-8", index_page, sizeof index_page - 1);
    break;
  case P_HELLO:
    handle_hello(c, r, query);
    break;
  case P_COMPUTE:
    handle_compute(c, r, query);
    break;
  case P_STATUS:
    handle_status(c, r);
    break;
  case P_CONTROL:
    handle_control(c, r, query);
    break;
  case P_QUIT:
    c->close_after = 1;
    respond_text(c, r, 200, "bye\n");
    quitting = 1;
    break;
  default:
    respond_text(c, r, 404, "not found\n");
    break;
  }
}

static void consume(struct conn *c, size_t n) {
  memmove(c->in, c->in + n, c->in_len - n);
  c->in_len -= n;
}

// Answers every complete request in c's input, in order.
static void process_input(struct conn *c) {
  while (!c->close_after && !c->dead && !quitting) {
    if (c->skip > 0) {
      size_t n = c->in_len < (size_t)c->skip ? c->in_len : (size_t)c->skip;
      consume(c, n);
      c->skip -= (long)n;
      if (c->skip > 0)
        return;
    }
    // Empty lines before a request line are ignored (RFC 9112, 2.2).
    size_t blank = 0;
    while (blank < c->in_len && (c->in[blank] == '\r' || c->in[blank] == '\n'))
      blank++;
    consume(c, blank);
    if (pending(c) > OUT_HIGH_WATER)
      return; // resume once the client has read some of its answers
    size_t len = head_end(c->in, c->in_len);
    if (len == 0 ? c->in_len >= MAX_HEAD : len > MAX_HEAD) {
      stats.requests++;
      respond_text(c, NULL, 431, "request head too large\n");
      return;
    }
    if (len == 0)
      return; // wait for the rest
    static struct request r;
    memset(&r, 0, sizeof r);
    r.head_len = len;
    int status = parse_head(c->in, len, &r);
    if (status) {
      stats.requests++;
      respond_text(c, NULL, status, status == 400 ? "malformed request\n" : reason(status));
      return;
    }
    consume(c, len);
    c->skip = r.content_length;
    dispatch(c, &r);
  }
}

// Reads what has arrived.
static void read_input(struct conn *c) {
  while (c->in_len < IN_CAP) {
    ssize_t n = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
    if (n > 0) {
      c->in_len += (size_t)n;
    } else if (n == 0) {
      c->peer_closed = 1;
      return;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return;
    } else {
      c->dead = 1;
      return;
    }
  }
}

// Reads and discards what has arrived on a lingering connection.
static void drain_input(struct conn *c) {
  static char scratch[IN_CAP];
  for (;;) {
    ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
    if (n > 0)
      continue;
    if (n == 0)
      c->peer_closed = 1;
    else if (errno == EINTR)
      continue;
    else if (errno != EAGAIN && errno != EWOULDBLOCK)
      c->dead = 1;
    return;
  }
}

// ----------------------------------------------------------------------------------------
// The event loop
// ----------------------------------------------------------------------------------------

static int set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static void close_conn(struct conn *c) {
  close(c->fd);
  free(c->out);
  free(c);
  stats.open--;
}

// Accepts every waiting connection into conns; returns the new count.
static int accept_all(int lfd, struct conn **conns, int n) {
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR)
        continue;
      return n; // EAGAIN, or a connection that failed before we took it
    }
    struct conn *c = n < MAX_CONNS ? calloc(1, sizeof *c) : NULL;
    if (!c || set_nonblocking(fd) < 0) {
      free(c);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    conns[n++] = c;
    stats.accepted++;
    stats.open++;
  }
}

// Serves until /quit; returns 0, or 1 if poll failed.
static int serve(int lfd) {
  static struct conn *conns[MAX_CONNS];
  static struct pollfd fds[MAX_CONNS + 1];
  int n = 0;
  int quit_rounds = 0;
  for (;;) {
    int owed = 0;
    for (int i = 0; i < n; i++)
      owed |= pending(conns[i]) > 0;
    if (quitting && (!owed || quit_rounds++ > 50))
      break;
    fds[0].fd = lfd;
    fds[0].events = quitting ? 0 : POLLIN;
    int lingering = 0;
    for (int i = 0; i < n; i++) {
      struct conn *c = conns[i];
      fds[i + 1].fd = c->fd;
      fds[i + 1].events = 0;
      if (c->linger_until) {
        fds[i + 1].events = POLLIN;
        lingering = 1;
        continue;
      }
      if (!c->close_after && !c->peer_closed && c->in_len < IN_CAP && !quitting)
        fds[i + 1].events |= POLLIN;
      if (pending(c) > 0)
        fds[i + 1].events |= POLLOUT;
    }
    int ready = poll(fds, (nfds_t)n + 1, quitting || lingering ? 100 : -1);
    if (ready < 0) {
      if (errno == EINTR)
        continue;
      perror("poll");
      return 1;
    }
    if (extended_status)
      stats.ext_wakeups++;
    int before = n;
    for (int i = 0; i < before; i++) {
      struct conn *c = conns[i];
      short rev = fds[i + 1].revents;
      if (c->linger_until) {
        if (rev & (POLLIN | POLLHUP | POLLERR))
          drain_input(c);
        continue;
      }
      if (rev & (POLLIN | POLLHUP | POLLERR))
        read_input(c);
      process_input(c);
      if (rev & POLLERR && !(rev & POLLIN))
        c->dead = 1;
      flush_out(c);
    }
    if (!quitting && (fds[0].revents & POLLIN))
      n = accept_all(lfd, conns, n);
    // Drop the connections that are finished; answered ones linger first.
    int kept = 0;
    for (int i = 0; i < n; i++) {
      struct conn *c = conns[i];
      int done = c->dead;
      if (!done && c->close_after && pending(c) == 0) {
        if (!c->linger_until) {
          shutdown(c->fd, SHUT_WR);
          c->linger_until = now_ns() + LINGER_NS;
        }
        done = c->peer_closed || now_ns() > c->linger_until;
      } else if (!done && c->peer_closed && pending(c) == 0) {
        done = head_end(c->in, c->in_len) == 0; // nothing complete is left to answer
      }
      if (done)
        close_conn(c);
      else
        conns[kept++] = c;
    }
    n = kept;
  }
  for (int i = 0; i < n; i++)
    close_conn(conns[i]);
  return 0;
}

int main(int argc, char **argv) {
  long port = argc > 1 ? parse_decimal(argv[1], 65535) : 8080;
  if (port < 0) {
    fprintf(stderr, "usage: httpd [PORT]   (0..65535; 0 picks a free port)\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) {
    perror("socket");
    return 1;
  }
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    perror("bind");
    return 1;
  }
  if (listen(lfd, 512) < 0 || set_nonblocking(lfd) < 0) {
    perror("listen");
    return 1;
  }
  socklen_t alen = sizeof addr;
  if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
    perror("getsockname");
    return 1;
  }
  printf("listening on %d\n", ntohs(addr.sin_port));
  fflush(stdout);
  int status = serve(lfd);
  close(lfd);
  printf("served %ld requests on %ld connections\n", stats.requests, stats.accepted);
  return status;
}

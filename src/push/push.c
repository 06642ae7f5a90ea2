/*
 * push.c: push notifications for offline users (push.h), sent by a thread of
 * its own to --push-webhook with a minimal HTTP/1.1 client.
 *
 * What it owns: the queue of notifications (a binary min-heap ordered by due
 * time, then by arrival, so a notification waiting for its delay or its next
 * retry never holds up one that is due), the per-user rate table, the parsed
 * webhook URL, the push thread and its wake-up eventfd, and the counters.
 * Each notification is one allocation (item, user and room) plus its JSON
 * body, built once by push_enqueue on the caller's thread; the push thread
 * frees it when it is sent, failed, skipped or dropped.
 *
 * Invariants:
 * - One mutex (statically initialised, never destroyed) guards the heap, the
 *   rate table and `running`; it is a leaf lock: nothing is called with it
 *   held but malloc and the heap and map helpers. still_unread and every
 *   socket call run without it, on the push thread only.
 * - push_enqueue never blocks on I/O: it builds the body, then takes the
 *   mutex to check the user's rate and the bound, link the item and signal.
 * - `queued` (a counter) = items in the heap + the one being tried, and never
 *   exceeds queue_max: a full queue drops the new notification (counted).
 * - Every try is preceded by still_unread(user, room, seq); 0 drops the item
 *   as skipped. Items are due at enqueue + delay_ms, retries at the end of
 *   their backoff; the thread sleeps until the earliest due time or a signal.
 * - Counters are atomics, readable at any time by push_stats, even before
 *   push_start or after push_stop; push_start resets them.
 *
 * Numbers: a try is one connection (Connection: close) with 5 s to connect,
 * 5 s to send and 5 s to read the status line, then at most 64 KiB and
 * 250 ms idle of the rest is drained before closing. A 2xx answer is sent;
 * a connection error, a timeout, an unparseable answer, 429 or 5xx is tried
 * again after 500 ms x 2^(tries-1), at most 30 s, until `attempts` tries were
 * made (then failed); any other status fails at once. The rate is a fixed
 * 60 s window per user; the table holds max(2 x queue_max, 100 000) users,
 * expired windows are swept when it is full (at most once until the oldest
 * live window can have expired), and a new user over that bound is dropped.
 * The preview is the first 100 characters (code points, cut on a UTF-8
 * boundary) plus "…" when cut. Warnings about drops and failures are logged
 * at most once per 10 s per kind, with the count since the last line.
 * push_stop wakes the thread (also out of a blocked connect, send or
 * receive, though not out of a DNS lookup) and counts what is left as
 * dropped.
 */
#include "push/push.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json_esc.h"
#include "util/log.h"
#include "util/map.h"
#include "util/metrics.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PUSH__PREVIEW_CHARS 100
#define PUSH__BACKOFF_MS 500
#define PUSH__BACKOFF_MAX_MS 30000
#define PUSH__TIMEOUT_MS 5000
#define PUSH__DRAIN_IDLE_MS 250
#define PUSH__DRAIN_MAX 65536
#define PUSH__STATUS_MAX 1024
#define PUSH__WINDOW_MS 60000
#define PUSH__USERS_MIN 100000
#define PUSH__URL_MAX 2048
#define PUSH__HOST_MAX 255
#define PUSH__LOG_EVERY_MS 10000

/* Not const so that the unit test can shorten them. */
static int push__backoff_ms = PUSH__BACKOFF_MS;
static int push__timeout_ms = PUSH__TIMEOUT_MS;

typedef struct push_item {
    int64_t due;    /* monotonic ms */
    uint64_t order; /* arrival, breaks ties between equal due times */
    int64_t seq;
    int tries;      /* made so far */
    char kind[8];
    char *user;     /* both point into this allocation */
    char *room;
    buf_t body;     /* the JSON document */
} push_item_t;

typedef struct {
    int64_t start; /* monotonic ms the user's window began */
    int count;     /* notifications accepted in it */
    size_t len;
    char name[];
} push_rate_t;

typedef struct {
    int64_t last;        /* monotonic ms of the last line, 0: never */
    uint64_t suppressed; /* not logged since */
} push_lograte_t;

typedef struct {
    char host[PUSH__HOST_MAX + 1];      /* without the [] of an IPv6 literal */
    char port[8];
    char authority[PUSH__HOST_MAX + 9]; /* host[:port] as written: the Host header */
    char path[PUSH__URL_MAX + 2];
} push_url_t;

/* Outcomes of one try, besides an HTTP status (> 0). */
enum { PUSH__SKIP = -1000, PUSH__STOP = -1001, PUSH__NETERR = -1002 };

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the push thread waits on it; CLOCK_MONOTONIC */
    pthread_t thread;
    int running;         /* started and not being stopped (under lock) */
    int stopping;        /* under lock */
    int wake_fd;         /* eventfd, written once by push_stop */
    push_config_t cfg;   /* cfg.url not kept */
    size_t rates_max;
    push_url_t url;
    /* under lock: */
    push_item_t **heap;
    size_t n, cap;
    uint64_t order;
    map_t rates;
    int64_t rates_next_sweep;
    push_lograte_t log_full, log_rate, log_users, log_fail;
} push__g = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake_fd = -1};

static atomic_int push__on;
static struct {
    _Atomic uint64_t sent, failed, dropped, skipped, retries, queued;
} push__n;

static int64_t push__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define PUSH__ADD(c, v) atomic_fetch_add_explicit(&push__n.c, (v), memory_order_relaxed)
#define PUSH__SUB(c, v) atomic_fetch_sub_explicit(&push__n.c, (v), memory_order_relaxed)

/* Under lock: 0 if this line should be skipped, else 1 + how many were
 * skipped since the last one logged. */
static uint64_t push__lograte(push_lograte_t *l, int64_t now)
{
    if (l->last && now - l->last < PUSH__LOG_EVERY_MS) {
        l->suppressed++;
        return 0;
    }
    uint64_t r = l->suppressed + 1;
    l->last = now;
    l->suppressed = 0;
    return r;
}

/* ---- the URL ---- */

/* Fills u from http://host[:port][/path]. 0, or SORI_EINVAL with a sentence
 * in err. */
static int push__parse_url(const char *url, push_url_t *u, char *err, size_t errlen)
{
    size_t n = strlen(url);
    if (n > PUSH__URL_MAX) {
        snprintf(err, errlen, "the URL is longer than %d bytes", PUSH__URL_MAX);
        return SORI_EINVAL;
    }
    if (!strncasecmp(url, "https://", 8)) {
        snprintf(err, errlen, "https:// is not supported; point it at a local gateway or proxy that speaks http://");
        return SORI_EINVAL;
    }
    if (strncasecmp(url, "http://", 7)) {
        snprintf(err, errlen, "\"%.64s\" is not an http://host[:port]/path URL", url);
        return SORI_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(err, errlen, "the URL contains a space, a control or a non-ASCII character");
            return SORI_EINVAL;
        }
    }
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (memchr(a, '@', alen)) {
        snprintf(err, errlen, "a user or password in the URL (user@host) is not supported");
        return SORI_EINVAL;
    }
    if (alen == 0 || alen > PUSH__HOST_MAX + 7) {
        snprintf(err, errlen, "\"%.64s\" has no host or a host longer than %d bytes", url, PUSH__HOST_MAX);
        return SORI_EINVAL;
    }
    const char *h, *rest;
    size_t hlen;
    if (a[0] == '[') {
        const char *close = memchr(a, ']', alen);
        h = a + 1;
        hlen = close ? (size_t)(close - h) : 0;
        if (!close || hlen == 0 || strspn(h, "0123456789abcdefABCDEF:.") < hlen) {
            snprintf(err, errlen, "\"%.64s\" has a malformed [IPv6] host", url);
            return SORI_EINVAL;
        }
        rest = close + 1;
    } else {
        const char *colon = memchr(a, ':', alen);
        h = a;
        hlen = colon ? (size_t)(colon - a) : alen;
        static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._";
        size_t good = 0;
        while (good < hlen && strchr(ok, h[good])) good++;
        if (hlen == 0 || good < hlen) {
            snprintf(err, errlen, "\"%.64s\" has no host or a malformed one", url);
            return SORI_EINVAL;
        }
        rest = h + hlen;
    }
    if (hlen > PUSH__HOST_MAX) {
        snprintf(err, errlen, "the host is longer than %d bytes", PUSH__HOST_MAX);
        return SORI_EINVAL;
    }
    const char *aend = a + alen;
    if (rest < aend) {
        /* ":port" must be all that is left of the authority. */
        size_t plen = (size_t)(aend - rest) - 1;
        long port = 0;
        if (*rest != ':' || plen == 0 || plen > 5 || strspn(rest + 1, "0123456789") < plen ||
            (port = strtol(rest + 1, NULL, 10)) < 1 || port > 65535) {
            snprintf(err, errlen, "\"%.64s\" has a malformed port (1-65535)", url);
            return SORI_EINVAL;
        }
        snprintf(u->port, sizeof u->port, "%ld", port);
    } else {
        snprintf(u->port, sizeof u->port, "80");
    }
    memcpy(u->host, h, hlen);
    u->host[hlen] = 0;
    memcpy(u->authority, a, alen);
    u->authority[alen] = 0;
    /* The path: "/" when absent, a leading "/" before a bare "?query", no
     * #fragment (it is never sent). */
    size_t plen = strcspn(aend, "#");
    size_t o = 0;
    if (plen == 0 || aend[0] != '/') u->path[o++] = '/';
    memcpy(u->path + o, aend, plen);
    u->path[o + plen] = 0;
    return 0;
}

int push_url_check(const char *url, char *err, size_t errlen)
{
    push_url_t u;
    return url && url[0] ? push__parse_url(url, &u, err, errlen) : 0;
}

/* ---- the HTTP client (push thread only) ---- */

/* Waits until fd is ready for ev or the deadline passes. 0 ready,
 * SORI_EAGAIN timed out, SORI_ECLOSED push_stop was called, SORI_EIO. */
static int push__wait(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - push__now_ms();
        if (left <= 0) return SORI_EAGAIN;
        struct pollfd p[2] = {{.fd = fd, .events = ev}, {.fd = push__g.wake_fd, .events = POLLIN}};
        int r = poll(p, 2, (int)left);
        if (r < 0) {
            if (errno == EINTR) continue;
            return SORI_EIO;
        }
        if (p[1].revents) return SORI_ECLOSED;
        if (p[0].revents) return 0; /* errors and hang-ups are for the next call to report */
    }
}

/* A connected socket, or PUSH__STOP / PUSH__NETERR with a sentence in err. */
static int push__connect(char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(push__g.url.host, push__g.url.port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "cannot resolve %s: %s", push__g.url.host, gai_strerror(rc));
        return PUSH__NETERR;
    }
    int64_t deadline = push__now_ms() + push__timeout_ms;
    int fd = -1, e = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        e = errno;
        if (e == EINPROGRESS) {
            int w = push__wait(fd, POLLOUT, deadline);
            if (w == SORI_ECLOSED) {
                close(fd);
                freeaddrinfo(res);
                return PUSH__STOP;
            }
            socklen_t sl = sizeof e;
            if (w == SORI_EAGAIN) e = ETIMEDOUT;
            else if (w) e = errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl)) e = errno;
            if (w == 0 && e == 0) break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) return fd;
    snprintf(err, errlen, "cannot connect to %s: %s", push__g.url.authority, strerror(e));
    return PUSH__NETERR;
}

/* Sends p[0..n) by the deadline: 0, or PUSH__STOP / PUSH__NETERR. */
static int push__send_all(int fd, const char *p, size_t n, int64_t deadline, char *err, size_t errlen)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = push__wait(fd, POLLOUT, deadline);
            if (r == SORI_ECLOSED) return PUSH__STOP;
            if (r == 0) continue;
            snprintf(err, errlen, "sending to %s: %s", push__g.url.authority, r == SORI_EAGAIN ? "timed out" : strerror(errno));
            return PUSH__NETERR;
        }
        snprintf(err, errlen, "sending to %s: %s", push__g.url.authority, strerror(errno));
        return PUSH__NETERR;
    }
    return 0;
}

/* Parses "HTTP/1.x NNN ..." from the first line; the status or -1. */
static int push__status(const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) || s[7] < '0' || s[7] > '9' || s[8] != ' ') return -1;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        st = st * 10 + (s[i] - '0');
    }
    if (n > 12 && s[12] != ' ' && s[12] != '\r' && s[12] != '\n') return -1;
    return st < 100 ? -1 : st;
}

/* POSTs body to the webhook: the HTTP status, or PUSH__STOP / PUSH__NETERR
 * with a sentence in err. */
static int push__post(const buf_t *body, char *err, size_t errlen)
{
    buf_t req = {0};
    if (buf_appendf(&req,
                    "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sori\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    push__g.url.path, push__g.url.authority, body->len) ||
        buf_append(&req, body->data, body->len)) {
        buf_free(&req);
        snprintf(err, errlen, "out of memory");
        return PUSH__NETERR;
    }
    int fd = push__connect(err, errlen);
    if (fd < 0) {
        buf_free(&req);
        return fd;
    }
    int rc = push__send_all(fd, req.data, req.len, push__now_ms() + push__timeout_ms, err, errlen);
    buf_free(&req);
    if (rc) {
        close(fd);
        return rc;
    }
    /* The status line, by the deadline. */
    char line[PUSH__STATUS_MAX];
    size_t have = 0;
    int64_t deadline = push__now_ms() + push__timeout_ms;
    while (!memchr(line, '\n', have)) {
        if (have == sizeof line) {
            snprintf(err, errlen, "%s answered with a status line over %d bytes", push__g.url.authority, PUSH__STATUS_MAX);
            close(fd);
            return PUSH__NETERR;
        }
        ssize_t r = recv(fd, line + have, sizeof line - have, 0);
        if (r > 0) {
            have += (size_t)r;
            continue;
        }
        if (r == 0) {
            snprintf(err, errlen, "%s closed the connection before answering", push__g.url.authority);
            close(fd);
            return PUSH__NETERR;
        }
        if (errno == EINTR) continue;
        int w = (errno == EAGAIN || errno == EWOULDBLOCK) ? push__wait(fd, POLLIN, deadline) : SORI_EIO;
        if (w == 0) continue;
        if (w == SORI_ECLOSED) {
            close(fd);
            return PUSH__STOP;
        }
        snprintf(err, errlen, "waiting for %s: %s", push__g.url.authority, w == SORI_EAGAIN ? "timed out" : strerror(errno));
        close(fd);
        return PUSH__NETERR;
    }
    int status = push__status(line, have);
    if (status < 0) {
        snprintf(err, errlen, "%s did not answer with an HTTP/1.x status line", push__g.url.authority);
        close(fd);
        return PUSH__NETERR;
    }
    /* Drain what follows (bounded) so that the server's writes do not meet
     * a reset, then close. */
    char sink[4096];
    size_t drained = 0;
    while (drained < PUSH__DRAIN_MAX) {
        ssize_t r = recv(fd, sink, sizeof sink, 0);
        if (r > 0) {
            drained += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int64_t idle = push__now_ms() + PUSH__DRAIN_IDLE_MS;
            if (push__wait(fd, POLLIN, idle < deadline ? idle : deadline) == 0) continue;
        }
        break;
    }
    close(fd);
    return status;
}

/* ---- the queue (under lock) ---- */

static int push__before(const push_item_t *a, const push_item_t *b)
{
    return a->due < b->due || (a->due == b->due && a->order < b->order);
}

static int push__heap_add(push_item_t *it)
{
    if (push__g.n == push__g.cap) {
        size_t cap = push__g.cap ? push__g.cap * 2 : 64;
        push_item_t **h = realloc(push__g.heap, cap * sizeof *h);
        if (!h) return SORI_ENOMEM;
        push__g.heap = h;
        push__g.cap = cap;
    }
    it->order = push__g.order++;
    size_t i = push__g.n++;
    while (i && push__before(it, push__g.heap[(i - 1) / 2])) {
        push__g.heap[i] = push__g.heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    push__g.heap[i] = it;
    return 0;
}

static push_item_t *push__heap_pop(void)
{
    push_item_t *top = push__g.heap[0], *last = push__g.heap[--push__g.n];
    size_t i = 0, n = push__g.n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && push__before(push__g.heap[c + 1], push__g.heap[c])) c++;
        if (!push__before(push__g.heap[c], last)) break;
        push__g.heap[i] = push__g.heap[c];
        i = c;
    }
    if (n) push__g.heap[i] = last;
    return top;
}

static void push__item_free(push_item_t *it)
{
    buf_free(&it->body);
    free(it);
}

/* ---- the per-user rate (under lock) ---- */

typedef struct {
    push_rate_t **dead;
    size_t n, cap;
    int64_t now, oldest;
} push_sweep_t;

static void push__sweep_one(const char *key, size_t klen, void *value, void *arg)
{
    (void)key, (void)klen;
    push_sweep_t *s = arg;
    push_rate_t *r = value;
    if (s->now - r->start < PUSH__WINDOW_MS) {
        if (r->start < s->oldest) s->oldest = r->start;
        return;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        push_rate_t **d = realloc(s->dead, cap * sizeof *d);
        if (!d) return; /* swept next time */
        s->dead = d;
        s->cap = cap;
    }
    s->dead[s->n++] = r;
}

/* Frees the users whose window has ended; the next sweep is not before the
 * oldest remaining window can end. */
static void push__rate_sweep(int64_t now)
{
    push_sweep_t s = {.now = now, .oldest = now};
    map_each(&push__g.rates, push__sweep_one, &s);
    for (size_t i = 0; i < s.n; i++) {
        map_del(&push__g.rates, s.dead[i]->name, s.dead[i]->len);
        free(s.dead[i]);
    }
    free(s.dead);
    push__g.rates_next_sweep = s.oldest + PUSH__WINDOW_MS;
}

/* The user's window (started now if it had ended), or NULL when the table
 * is full of live windows (or out of memory). */
static push_rate_t *push__rate_get(const char *user, size_t len, int64_t now)
{
    push_rate_t *r = map_get(&push__g.rates, user, len);
    if (r) {
        if (now - r->start >= PUSH__WINDOW_MS) {
            r->start = now;
            r->count = 0;
        }
        return r;
    }
    if (push__g.rates.count >= push__g.rates_max) {
        if (now >= push__g.rates_next_sweep) push__rate_sweep(now);
        if (push__g.rates.count >= push__g.rates_max) return NULL;
    }
    r = malloc(sizeof *r + len + 1);
    if (!r) return NULL;
    r->start = now;
    r->count = 0;
    r->len = len;
    memcpy(r->name, user, len + 1);
    if (map_put(&push__g.rates, r->name, len, r)) {
        free(r);
        return NULL;
    }
    return r;
}

static void push__rate_free_one(const char *key, size_t klen, void *value, void *arg)
{
    (void)key, (void)klen, (void)arg;
    free(value);
}

/* ---- enqueue ---- */

/* How many bytes of s[0..n) hold its first PUSH__PREVIEW_CHARS characters
 * (s is valid UTF-8: a character starts at every non-continuation byte). */
static size_t push__preview_len(const char *s, size_t n, int *cut)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xc0) == 0x80) continue;
        if (chars == PUSH__PREVIEW_CHARS) {
            *cut = 1;
            return i;
        }
        chars++;
    }
    *cut = 0;
    return n;
}

/* The JSON document of push.h's notification; 0 or SORI_ENOMEM. */
static int push__body(buf_t *b, const char *kind, const char *user, const char *room, const char *from,
                      uint64_t msg_id, int64_t seq, int64_t ts, const char *text, size_t text_len, int preview)
{
    int rc = buf_append(b, "{\"type\":", 8);
    rc |= json_esc_append(b, kind, strlen(kind));
    rc |= buf_append(b, ",\"user\":", 8);
    rc |= json_esc_append(b, user, strlen(user));
    rc |= buf_append(b, ",\"room\":", 8);
    rc |= json_esc_append(b, room, strlen(room));
    rc |= buf_append(b, ",\"from\":", 8);
    rc |= json_esc_append(b, from, strlen(from));
    rc |= buf_appendf(b, ",\"id\":\"%llu\",\"seq\":%lld,\"ts\":%lld", (unsigned long long)msg_id, (long long)seq,
                      (long long)ts);
    if (preview) {
        int cut = 0;
        size_t n = text ? push__preview_len(text, text_len, &cut) : 0;
        rc |= buf_append(b, ",\"text\":", 8);
        rc |= json_esc_append(b, text ? text : "", n);
        if (cut && !rc) {
            b->len--; /* reopen the string for the ellipsis */
            rc |= buf_append(b, "\xe2\x80\xa6\"", 4);
        }
    }
    rc |= buf_append(b, "}", 1);
    return rc ? SORI_ENOMEM : 0;
}

void push_enqueue(const char *kind, const char *user, const char *room, const char *from, uint64_t msg_id,
                  int64_t seq, int64_t ts, const char *text, size_t text_len)
{
    if (!atomic_load_explicit(&push__on, memory_order_acquire) || !kind || !user || !room) return;
    size_t ul = strlen(user), rl = strlen(room);
    push_item_t *it = malloc(sizeof *it + ul + rl + 2);
    if (!it) {
        PUSH__ADD(dropped, 1);
        return;
    }
    *it = (push_item_t){.seq = seq};
    snprintf(it->kind, sizeof it->kind, "%s", kind);
    it->user = (char *)(it + 1);
    it->room = it->user + ul + 1;
    memcpy(it->user, user, ul + 1);
    memcpy(it->room, room, rl + 1);
    /* cfg is written by push_start before push__on is set and not changed
     * until push_stop cleared it, except the four fields push_set_limits
     * changes on SIGHUP: those are read with atomic loads. */
    if (push__body(&it->body, kind, user, room, from ? from : "", msg_id, seq, ts, text, text_len,
                   __atomic_load_n(&push__g.cfg.preview, __ATOMIC_RELAXED))) {
        push__item_free(it);
        PUSH__ADD(dropped, 1);
        return;
    }

    enum { KEPT, FULL, RATE, USERS } why = KEPT;
    uint64_t report = 0;
    pthread_mutex_lock(&push__g.lock);
    if (!push__g.running) {
        pthread_mutex_unlock(&push__g.lock);
        push__item_free(it);
        return;
    }
    int64_t now = push__now_ms();
    push_rate_t *r = push__rate_get(user, ul, now);
    if (!r) {
        why = USERS;
        report = push__lograte(&push__g.log_users, now);
    } else if (r->count >= __atomic_load_n(&push__g.cfg.rate_per_min, __ATOMIC_RELAXED)) {
        why = RATE;
        report = push__lograte(&push__g.log_rate, now);
    } else if (atomic_load_explicit(&push__n.queued, memory_order_relaxed) >= (uint64_t)push__g.cfg.queue_max) {
        why = FULL;
        report = push__lograte(&push__g.log_full, now);
    } else {
        it->due = now + __atomic_load_n(&push__g.cfg.delay_ms, __ATOMIC_RELAXED);
        if (push__heap_add(it)) {
            why = FULL;
            report = push__lograte(&push__g.log_full, now);
        } else {
            r->count++;
            PUSH__ADD(queued, 1);
            pthread_cond_signal(&push__g.cond);
        }
    }
    pthread_mutex_unlock(&push__g.lock);
    if (why == KEPT) return;
    PUSH__ADD(dropped, 1);
    if (report) {
        if (why == FULL)
            LOG_WARN("push", "queue full (%d waiting): dropped %llu notification(s) since the last report",
                     push__g.cfg.queue_max, (unsigned long long)report);
        else if (why == RATE)
            LOG_INFO("push", "%s is over %d notifications a minute: dropped %llu notification(s) "
                     "since the last report",
                     user, __atomic_load_n(&push__g.cfg.rate_per_min, __ATOMIC_RELAXED), (unsigned long long)report);
        else
            LOG_WARN("push", "more than %zu users notified within a minute: dropped %llu notification(s) "
                     "since the last report",
                     push__g.rates_max, (unsigned long long)report);
    }
    push__item_free(it);
}

/* ---- the push thread ---- */

static int64_t push__backoff(int tries)
{
    int64_t d = push__backoff_ms;
    for (int i = 1; i < tries && d < PUSH__BACKOFF_MAX_MS; i++) d *= 2;
    return d < PUSH__BACKOFF_MAX_MS ? d : PUSH__BACKOFF_MAX_MS;
}

/* One try of it, without the lock: an HTTP status, PUSH__SKIP, PUSH__STOP
 * or PUSH__NETERR (err says why). */
static int push__try(push_item_t *it, char *err, size_t errlen)
{
    if (push__g.cfg.still_unread && !push__g.cfg.still_unread(it->user, it->room, it->seq)) return PUSH__SKIP;
    if (it->tries++) PUSH__ADD(retries, 1);
    return push__post(&it->body, err, errlen);
}

static void *push__main(void *arg)
{
    (void)arg;
    char err[512];
    pthread_mutex_lock(&push__g.lock);
    while (!push__g.stopping) {
        if (!push__g.n) {
            pthread_cond_wait(&push__g.cond, &push__g.lock);
            continue;
        }
        int64_t due = push__g.heap[0]->due;
        if (due > push__now_ms()) {
            struct timespec at = {.tv_sec = due / 1000, .tv_nsec = (due % 1000) * 1000000};
            pthread_cond_timedwait(&push__g.cond, &push__g.lock, &at);
            continue;
        }
        push_item_t *it = push__heap_pop(); /* still counted in queued while tried */
        pthread_mutex_unlock(&push__g.lock);

        err[0] = 0;
        int st = push__try(it, err, sizeof err);
        int retry = st == PUSH__NETERR || st == 429 || (st >= 500 && st <= 599);
        if (st == PUSH__NETERR) LOG_DEBUG("push", "try %d for %s: %s", it->tries, it->user, err);
        else if (st > 0 && (st < 200 || st > 299))
            LOG_DEBUG("push", "try %d for %s: status %d", it->tries, it->user, st);

        pthread_mutex_lock(&push__g.lock);
        int64_t now = push__now_ms();
        if (st == PUSH__SKIP || st == PUSH__STOP || (st >= 200 && st <= 299)) {
            if (st == PUSH__SKIP) PUSH__ADD(skipped, 1);
            else if (st == PUSH__STOP) PUSH__ADD(dropped, 1);
            else PUSH__ADD(sent, 1);
            PUSH__SUB(queued, 1);
            push__item_free(it);
            continue;
        }
        if (retry && it->tries < __atomic_load_n(&push__g.cfg.attempts, __ATOMIC_RELAXED)) {
            it->due = now + push__backoff(it->tries);
            if (!push__heap_add(it)) continue;
            snprintf(err, sizeof err, "out of memory");
        }
        PUSH__ADD(failed, 1);
        PUSH__SUB(queued, 1);
        uint64_t report = push__lograte(&push__g.log_fail, now);
        pthread_mutex_unlock(&push__g.lock);
        if (report) {
            if (st > 0) snprintf(err, sizeof err, "the webhook answered %d", st);
            LOG_WARN("push", "gave up on a %s notification for %s at try %d: %s (%llu failed since the last report)",
                     it->kind, it->user, it->tries, err, (unsigned long long)report);
        }
        push__item_free(it);
        pthread_mutex_lock(&push__g.lock);
    }
    pthread_mutex_unlock(&push__g.lock);
    return NULL;
}

/* ---- life cycle ---- */

void push_set_limits(int preview, int rate_per_min, int attempts, int delay_ms)
{
    __atomic_store_n(&push__g.cfg.preview, preview, __ATOMIC_RELAXED);
    __atomic_store_n(&push__g.cfg.rate_per_min, rate_per_min < 1 ? 1 : rate_per_min, __ATOMIC_RELAXED);
    __atomic_store_n(&push__g.cfg.attempts, attempts < 1 ? 1 : attempts, __ATOMIC_RELAXED);
    __atomic_store_n(&push__g.cfg.delay_ms, delay_ms < 0 ? 0 : delay_ms, __ATOMIC_RELAXED);
}

int push_start(const push_config_t *cfg, char *err, size_t errlen)
{
    pthread_mutex_lock(&push__g.lock);
    int busy = push__g.running;
    pthread_mutex_unlock(&push__g.lock);
    if (busy) {
        snprintf(err, errlen, "push notifications are already started");
        return SORI_EINVAL;
    }
    atomic_store(&push__n.sent, 0);
    atomic_store(&push__n.failed, 0);
    atomic_store(&push__n.dropped, 0);
    atomic_store(&push__n.skipped, 0);
    atomic_store(&push__n.retries, 0);
    atomic_store(&push__n.queued, 0);
    if (!cfg || !cfg->url || !cfg->url[0]) return 0;
    int rc = push__parse_url(cfg->url, &push__g.url, err, errlen);
    if (rc) return rc;

    push__g.cfg = *cfg;
    push__g.cfg.url = NULL; /* borrowed: not kept */
    if (push__g.cfg.queue_max < 1) push__g.cfg.queue_max = 1;
    if (push__g.cfg.rate_per_min < 1) push__g.cfg.rate_per_min = 1;
    if (push__g.cfg.attempts < 1) push__g.cfg.attempts = 1;
    if (push__g.cfg.delay_ms < 0) push__g.cfg.delay_ms = 0;
    size_t users = (size_t)push__g.cfg.queue_max * 2;
    push__g.rates_max = users > PUSH__USERS_MIN ? users : PUSH__USERS_MIN;
    push__g.rates_next_sweep = 0;
    push__g.order = 0;
    push__g.stopping = 0;
    memset(&push__g.log_full, 0, sizeof push__g.log_full);
    push__g.log_rate = push__g.log_users = push__g.log_fail = push__g.log_full;

    push__g.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (push__g.wake_fd < 0) {
        snprintf(err, errlen, "cannot create an eventfd: %s", strerror(errno));
        return SORI_EIO;
    }
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca)) goto nomem;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&push__g.cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) goto nomem;

    /* Set before the thread exists, so it sees running and enqueue may link. */
    pthread_mutex_lock(&push__g.lock);
    push__g.running = 1;
    pthread_mutex_unlock(&push__g.lock);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&push__g.thread, NULL, push__main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        pthread_mutex_lock(&push__g.lock);
        push__g.running = 0;
        pthread_mutex_unlock(&push__g.lock);
        pthread_cond_destroy(&push__g.cond);
        close(push__g.wake_fd);
        push__g.wake_fd = -1;
        snprintf(err, errlen, "cannot start the push thread: %s", strerror(rc));
        return SORI_EIO;
    }
    pthread_setname_np(push__g.thread, "sori-push");
    atomic_store_explicit(&push__on, 1, memory_order_release);
    LOG_INFO("push", "notifications for offline users go to http://%s (queue %d, %d per user a minute, %d tries, "
             "delay %d ms, preview %s)",
             push__g.url.authority, push__g.cfg.queue_max, push__g.cfg.rate_per_min, push__g.cfg.attempts,
             push__g.cfg.delay_ms, push__g.cfg.preview ? "on" : "off");
    return 0;
nomem:
    close(push__g.wake_fd);
    push__g.wake_fd = -1;
    snprintf(err, errlen, "out of memory");
    return SORI_ENOMEM;
}

void push_stop(void)
{
    pthread_mutex_lock(&push__g.lock);
    if (!push__g.running) {
        pthread_mutex_unlock(&push__g.lock);
        return;
    }
    push__g.running = 0;
    push__g.stopping = 1;
    atomic_store_explicit(&push__on, 0, memory_order_relaxed);
    pthread_cond_signal(&push__g.cond);
    pthread_mutex_unlock(&push__g.lock);
    uint64_t one = 1;
    ssize_t w = write(push__g.wake_fd, &one, sizeof one); /* interrupts a try under way */
    (void)w;
    pthread_join(push__g.thread, NULL);

    pthread_mutex_lock(&push__g.lock);
    size_t left = push__g.n;
    for (size_t i = 0; i < push__g.n; i++) push__item_free(push__g.heap[i]);
    free(push__g.heap);
    push__g.heap = NULL;
    push__g.n = push__g.cap = 0;
    map_each(&push__g.rates, push__rate_free_one, NULL);
    map_free(&push__g.rates);
    push__g.stopping = 0;
    pthread_mutex_unlock(&push__g.lock);
    PUSH__ADD(dropped, left);
    PUSH__SUB(queued, left);
    pthread_cond_destroy(&push__g.cond);
    close(push__g.wake_fd);
    push__g.wake_fd = -1;
    if (left) LOG_INFO("push", "stopped with %zu notification(s) unsent (counted as dropped)", left);
}

int push_enabled(void)
{
    return atomic_load_explicit(&push__on, memory_order_acquire);
}

void push_stats(push_stats_t *out)
{
    out->sent = atomic_load_explicit(&push__n.sent, memory_order_relaxed);
    out->failed = atomic_load_explicit(&push__n.failed, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&push__n.dropped, memory_order_relaxed);
    out->skipped = atomic_load_explicit(&push__n.skipped, memory_order_relaxed);
    out->retries = atomic_load_explicit(&push__n.retries, memory_order_relaxed);
    out->queued = atomic_load_explicit(&push__n.queued, memory_order_relaxed);
}

#define PUSH__READER(field)                                                                  \
    static double push__m_##field(void)                                                    \
    {                                                                                      \
        return (double)atomic_load_explicit(&push__n.field, memory_order_relaxed);          \
    }
PUSH__READER(sent)
PUSH__READER(failed)
PUSH__READER(dropped)
PUSH__READER(skipped)
PUSH__READER(retries)
PUSH__READER(queued)

void push_metrics_register(void)
{
    metrics_counter_fn("sori_push_sent_total", "Push notifications delivered (2xx).", push__m_sent);
    metrics_counter_fn("sori_push_failed_total", "Push notifications given up on.", push__m_failed);
    metrics_counter_fn("sori_push_dropped_total", "Push notifications dropped (queue full, rate, shutdown).",
                       push__m_dropped);
    metrics_counter_fn("sori_push_skipped_total", "Push notifications not sent: the room was read meanwhile.",
                       push__m_skipped);
    metrics_counter_fn("sori_push_retries_total", "Push attempts after the first.", push__m_retries);
    metrics_gauge("sori_push_queued", "Push notifications waiting.", push__m_queued);
}

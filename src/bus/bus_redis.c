/*
 * bus_redis.c: the bus over Redis pub/sub (bus.h), with hiredis's async API
 * on a thread and libuv loop of its own.
 *
 * What it owns: the bus thread and its loop; two hiredis connections, `cmd`
 * (PUBLISH, presence and registry writes, callers' commands, scripts) and
 * `sub` (subscribe mode only: a subscribed connection cannot run other
 * commands), attached to the loop by our own poll glue (Debian's hiredis
 * 0.14 libuv adapter ignores poll errors, see bus__ev_cb); the request queue
 * (FIFO of bus_req_t, one allocation each holding its command's argv); the
 * subscription table (channel -> reference count) and the presence table
 * (user -> online on this node), each with a list of the entries changed
 * since the bus thread last looked ("dirty"); the registration (ws url, load
 * function); the counters.
 *
 * Threads and locks:
 * - One mutex guards the queue, both tables, their dirty lists, the
 *   registration and `closing`. Callers hold it to link a request or change
 *   a count, and to uv_async_send the bus thread (under the lock, so the
 *   async handle cannot be closed under a sender); the bus thread holds it
 *   to take the queue or copy a dirty list out, never while it calls hiredis
 *   or a callback. Table entries are freed only by the bus thread, so it may
 *   read an entry's (immutable) name after unlocking.
 * - Everything else (the connections, the link state, the set of channels
 *   SUBSCRIBEd on the current connection, what was written to Redis) is the
 *   bus thread's alone. `up`, the queue occupancy and the counters are
 *   atomics. Callers never wait for I/O; callbacks never run on their thread.
 *
 * The link: DOWN (retry timer armed) -> CONNECTING (both connections
 * created and the handshake pipelined: on cmd AUTH, SELECT, the presence
 * hash rewritten whole, the node key written, PING; on sub AUTH, PING, then
 * SUBSCRIBE of every channel with a count > 0) -> UP once both PINGs are
 * answered and every SUBSCRIBE is confirmed (on_state(1)). Any failure (a
 * refused or lost connection, an error reply to the handshake, no handshake
 * within connect_timeout_ms, the oldest unanswered command on cmd older than
 * reply_timeout_ms) moves to FAILED (on_state(0) if it was UP): both
 * connections are freed from a 0 ms timer, never inside a hiredis callback
 * (hiredis then answers their pending commands with NULL replies: those
 * requests complete with SORI_ECLOSED), and the retry timer is armed with
 * the backoff (backoff_min_ms doubling to backoff_max_ms, reset once up).
 * Requests are accepted only while up and are failed, not kept, when the bus
 * thread finds the link not up: nothing waits for a reconnect and nothing is
 * lost silently. Subscription and presence changes are accepted in any state
 * and reconciled with Redis whenever a connection is there; messages
 * published while a node was down are not replayed (catch up from the
 * store after on_state(1)).
 *
 * Wire format: a published frame is "<origin node id in decimal>:<payload>";
 * presence notices are frames on sori:presence whose payload is "+user",
 * "-user" or "*" (whole set rewritten on connect, or dropped on a clean
 * close). Keys: sori:online:<id> (hash, TTL presence_ttl_ms, PEXPIREd every
 * presence_refresh_ms; a refresh that finds it gone while users are online
 * rewrites it), sori:presence:nodes (set of ids), sori:node:<id> (JSON, TTL
 * node_ttl_ms, rewritten every node_refresh_ms), sori:nodes (set of ids).
 * Presence changes go in one MULTI/EXEC per pass, then their notices. The
 * read scripts (EVAL) prune ids whose key has expired.
 *
 * Numbers: the queue holds at most queue_max_msgs requests (65536) and
 * queue_max_bytes (64 MiB) from acceptance until Redis answered (hiredis's
 * output buffer holds a second copy of what is not yet written, so memory is
 * bounded by twice that); a payload over queue_max_bytes is SORI_E2BIG.
 * Subscriptions go out 256 channels per SUBSCRIBE, hash fields 1024 per
 * HSET/HDEL; channel and user names are at most 1024 bytes, queries at most
 * 65536 names. Reconnects: 100 ms doubling to 5 s; a failed attempt is
 * logged the first time and every 60th after. The watchdog looks every
 * min(1 s, reply_timeout_ms / 4). TCP keepalive on both connections (hiredis:
 * idle 15 s). bus_close waits at most 1 s for the answers to what was sent.
 */
#include "bus/bus.h"
#include "util/err.h"
#include "util/log.h"
#include "util/map.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <uv.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BUS__NAME_MAX 1024
#define BUS__URL_MAX 2048
#define BUS__SUB_CHUNK 256
#define BUS__HSET_CHUNK 1024
#define BUS__QUERY_MAX 65536
#define BUS__CLOSE_WAIT_MS 1000
#define BUS__TICK_MS 1000
#define BUS__WARN_EVERY 60 /* failed attempts between warnings: 5 min at the 5 s backoff */

#define BUS__KEY_ONLINE "sori:online:"
#define BUS__KEY_PRES_NODES "sori:presence:nodes"
#define BUS__KEY_NODE "sori:node:"
#define BUS__KEY_NODES "sori:nodes"

/* Which users of ARGV are online on a live node: 1 or 0 per name. */
static const char bus__script_query[] =
    "local ids = redis.call('SMEMBERS', '" BUS__KEY_PRES_NODES "')\n"
    "local out = {}\n"
    "for i = 1, #ARGV do out[i] = 0 end\n"
    "for _, id in ipairs(ids) do\n"
    "  local key = '" BUS__KEY_ONLINE "' .. id\n"
    "  if redis.call('EXISTS', key) == 0 then\n"
    "    redis.call('SREM', '" BUS__KEY_PRES_NODES "', id)\n"
    "  else\n"
    "    for s = 1, #ARGV, 512 do\n"
    "      local v = redis.call('HMGET', key, unpack(ARGV, s, math.min(s + 511, #ARGV)))\n"
    "      for j = 1, #v do if v[j] then out[s + j - 1] = 1 end end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* The JSON of every live node. */
static const char bus__script_discover[] =
    "local ids = redis.call('SMEMBERS', '" BUS__KEY_NODES "')\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local v = redis.call('GET', '" BUS__KEY_NODE "' .. id)\n"
    "  if v then out[#out + 1] = v else redis.call('SREM', '" BUS__KEY_NODES "', id) end\n"
    "end\n"
    "return out\n";

enum { BUS__DOWN, BUS__CONNECTING, BUS__UP, BUS__FAILED, BUS__CLOSED };
enum { BUS__REQ_PUBLISH, BUS__REQ_COMMAND, BUS__REQ_QUERY, BUS__REQ_DISCOVER };

typedef struct bus_op bus_op_t;
/* What to do with a reply on the bus thread; r is NULL when the connection
 * was freed first. Every command carries one (requests embed theirs). */
struct bus_op {
    void (*fn)(bus_t *b, bus_op_t *op, redisReply *r);
};

typedef struct bus_req {
    bus_op_t op; /* first: the hiredis privdata */
    struct bus_req *next;
    int kind;
    size_t cost; /* bytes counted in q_bytes */
    void *arg;
    union {
        void (*pub)(void *arg, int status);
        void (*cmd)(void *arg, int status, const bus_reply_t *reply);
        void (*query)(void *arg, int status, const uint8_t *online);
        void (*disc)(void *arg, int status, const bus_node_t *nodes, size_t n);
    } cb;
    size_t n; /* query: names */
    int argc;
    const char **argv;
    size_t *argvlen;
    char *data; /* where the next copied argument goes */
} bus_req_t;

typedef struct bus_sub {
    struct bus_sub *dirty_next; /* mu */
    long count;                 /* mu */
    int dirty;                  /* mu */
    size_t len;
    char name[];
} bus_sub_t;

typedef struct bus_pres {
    struct bus_pres *dirty_next; /* mu */
    int online;                  /* mu: what the callers said last */
    int dirty;                   /* mu */
    int written;                 /* bus thread: what Redis holds (or will, after the next rewrite) */
    size_t len;
    char name[];
} bus_pres_t;

struct bus {
    /* set by bus_open, read-only afterwards */
    int node_id;
    char node_str[16];
    char prefix[16]; /* "<id>:" */
    size_t prefix_len;
    char key_online[48];
    char key_node[48];
    bus_handler_t h;
    bus_opts_t o;
    char *host, *user, *pass;
    int port, db;
    char ttl_presence[16], ttl_node[16]; /* ms, as PX/PEXPIRE arguments */

    pthread_t thread;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t t_retry, t_reap, t_handshake, t_tick, t_presence, t_node, t_close;

    pthread_mutex_t mu;
    /* guarded by mu */
    bus_req_t *rq_head, *rq_tail;
    map_t subs; /* channel -> bus_sub_t */
    bus_sub_t *subs_dirty;
    map_t pres; /* user -> bus_pres_t */
    bus_pres_t *pres_dirty;
    char *reg_url;
    double (*reg_load)(void);
    int reg_dirty;
    int closing;

    atomic_int up;
    atomic_size_t q_msgs, q_bytes;
    struct {
        atomic_uint_fast64_t published, publish_failed, queue_full, received, own_dropped, malformed, ups, downs,
            connect_failed;
    } n;

    /* bus thread only */
    int state;
    redisAsyncContext *cmd, *sub;
    int cmd_ready, sub_ready;
    size_t sub_outstanding; /* SUBSCRIBEd channels not yet confirmed */
    map_t sent;             /* channels SUBSCRIBEd on `sub` (values: the bus) */
    int backoff_ms;
    int failures;           /* attempts failed since the last up */
    uint64_t cmd_pending;   /* commands on `cmd` not yet answered */
    uint64_t cmd_progress;  /* loop ms of the last answer (or of the first pending command) */
    size_t pres_written;    /* entries with written = 1 */
    int close_begun;
    void **scratch;         /* reconcile: entries copied out of a dirty list */
    size_t scratch_cap;
};

#define BUS__INC(b, c) atomic_fetch_add_explicit(&(b)->n.c, 1, memory_order_relaxed)

/* ---- pure helpers ---- */

int bus_frame_parse(const char *data, size_t len, int *origin, const char **payload, size_t *plen)
{
    size_t i = 0;
    long long v = 0;
    while (i < len && i < 11 && data[i] >= '0' && data[i] <= '9') v = v * 10 + (data[i++] - '0');
    if (i == 0 || i > 10 || i >= len || data[i] != ':' || v > INT_MAX) return SORI_EINVAL;
    *origin = (int)v;
    *payload = data + i + 1;
    *plen = len - i - 1;
    return 0;
}

int bus_presence_notice_parse(const char *data, size_t len, int *online, const char **user, size_t *ulen)
{
    if (len == 1 && data[0] == '*') {
        *online = -1;
        *user = NULL;
        *ulen = 0;
        return 0;
    }
    if (len < 2 || (data[0] != '+' && data[0] != '-')) return SORI_EINVAL;
    *online = data[0] == '+';
    *user = data + 1;
    *ulen = len - 1;
    return 0;
}

static int bus__hex(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A malloc'd copy of s[0..n) with %XX decoded; NULL on a bad escape, an
 * encoded NUL or no memory. */
static char *bus__pct_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        if (i + 2 >= n || bus__hex(s[i + 1]) < 0 || bus__hex(s[i + 2]) < 0) goto bad;
        int c = bus__hex(s[i + 1]) * 16 + bus__hex(s[i + 2]);
        if (c == 0) goto bad;
        *o++ = (char)c;
        i += 2;
    }
    *o = 0;
    return out;
bad:
    free(out);
    return NULL;
}

typedef struct {
    char *host, *user, *pass;
    int port, db;
} bus_url_t;

static void bus__url_free(bus_url_t *u)
{
    free(u->host);
    free(u->user);
    free(u->pass);
    memset(u, 0, sizeof *u);
}

/* Parses redis://[[user]:password@]host[:port][/db] into u (malloc'd
 * strings). 0, or SORI_EINVAL with a sentence in err. */
static int bus__parse_url(const char *url, bus_url_t *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    size_t n = url ? strlen(url) : 0;
    if (!url || n == 0) {
        snprintf(err, errlen, "bus: no Redis URL");
        return SORI_EINVAL;
    }
    if (n > BUS__URL_MAX) {
        snprintf(err, errlen, "bus: the Redis URL is longer than %d bytes", BUS__URL_MAX);
        return SORI_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f) {
            snprintf(err, errlen, "bus: the Redis URL contains a space, a control or a non-ASCII character");
            return SORI_EINVAL;
        }
    }
    if (!strncasecmp(url, "rediss://", 9)) {
        snprintf(err, errlen, "bus: rediss:// (TLS) is not supported; use redis:// on a trusted network");
        return SORI_EINVAL;
    }
    if (strncasecmp(url, "redis://", 8)) {
        snprintf(err, errlen, "bus: \"%.64s\" is not a redis://[:password@]host[:port][/db] URL", url);
        return SORI_EINVAL;
    }
    const char *a = url + 8;
    size_t alen = strcspn(a, "/?#");
    const char *rest = a + alen;
    if (*rest == '?' || *rest == '#' || (*rest == '/' && strpbrk(rest, "?#"))) {
        snprintf(err, errlen, "bus: options (?...) and fragments (#...) in the Redis URL are not supported");
        return SORI_EINVAL;
    }
    const char *at = NULL;
    for (const char *p = a; p < rest; p++)
        if (*p == '@') at = p;
    const char *h = a;
    if (at) {
        const char *colon = memchr(a, ':', (size_t)(at - a));
        if (!colon) {
            snprintf(err, errlen, "bus: put the Redis password after a colon: redis://:password@host");
            return SORI_EINVAL;
        }
        u->user = bus__pct_decode(a, (size_t)(colon - a));
        u->pass = bus__pct_decode(colon + 1, (size_t)(at - colon - 1));
        if (!u->user || !u->pass) {
            snprintf(err, errlen, "bus: a malformed %%XX escape (or %%00) in the Redis user or password");
            goto fail;
        }
        h = at + 1;
    }
    /* host[:port] in h..rest */
    const char *hend, *portp = NULL;
    if (*h == '[') {
        const char *close = memchr(h, ']', (size_t)(rest - h));
        if (!close || close == h + 1 || strspn(h + 1, "0123456789abcdefABCDEF:.") < (size_t)(close - h - 1)) {
            snprintf(err, errlen, "bus: a malformed [IPv6] host in the Redis URL");
            goto fail;
        }
        u->host = strndup(h + 1, (size_t)(close - h - 1));
        hend = close + 1;
    } else {
        hend = memchr(h, ':', (size_t)(rest - h));
        if (!hend) hend = rest;
        static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._";
        size_t hl = (size_t)(hend - h), good = 0;
        while (good < hl && strchr(ok, h[good])) good++;
        if (hl == 0 || good < hl || hl > 255) {
            snprintf(err, errlen, "bus: the Redis URL has no host or a malformed one");
            goto fail;
        }
        u->host = strndup(h, hl);
    }
    if (!u->host) {
        snprintf(err, errlen, "bus: out of memory");
        goto fail;
    }
    if (hend < rest) {
        if (*hend != ':') {
            snprintf(err, errlen, "bus: unexpected characters after the host in the Redis URL");
            goto fail;
        }
        portp = hend + 1;
        size_t pl = (size_t)(rest - portp);
        long port = 0;
        if (pl == 0 || pl > 5 || strspn(portp, "0123456789") < pl || (port = strtol(portp, NULL, 10)) < 1 ||
            port > 65535) {
            snprintf(err, errlen, "bus: a malformed port in the Redis URL (1-65535)");
            goto fail;
        }
        u->port = (int)port;
    }
    if (*rest == '/' && rest[1]) {
        size_t dl = strlen(rest + 1);
        if (dl > 5 || strspn(rest + 1, "0123456789") < dl) {
            snprintf(err, errlen, "bus: the Redis database must be a number (/0 to /99999)");
            goto fail;
        }
        u->db = atoi(rest + 1);
    }
    return 0;
fail:
    bus__url_free(u);
    return SORI_EINVAL;
}

/* ---- replies: hiredis trees to bus_reply_t ---- */

static void bus__reply_size(const redisReply *r, size_t *nodes, size_t *bytes)
{
    (*nodes)++;
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR: *bytes += r->len + 1; break;
    case REDIS_REPLY_ARRAY:
        for (size_t i = 0; i < r->elements; i++) bus__reply_size(r->element[i], nodes, bytes);
        break;
    default: break;
    }
}

static void bus__reply_fill(const redisReply *r, bus_reply_t *d, bus_reply_t **nodes, char **bytes)
{
    memset(d, 0, sizeof *d);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        d->type = r->type == REDIS_REPLY_STRING ? BUS_REPLY_STRING
                  : r->type == REDIS_REPLY_STATUS ? BUS_REPLY_STATUS
                                                  : BUS_REPLY_ERROR;
        memcpy(*bytes, r->str, r->len);
        (*bytes)[r->len] = 0;
        d->str = *bytes;
        d->len = r->len;
        *bytes += r->len + 1;
        break;
    case REDIS_REPLY_INTEGER:
        d->type = BUS_REPLY_INTEGER;
        d->integer = r->integer;
        break;
    case REDIS_REPLY_ARRAY: {
        bus_reply_t *kids = *nodes;
        *nodes += r->elements;
        d->type = BUS_REPLY_ARRAY;
        d->element = kids;
        d->elements = r->elements;
        for (size_t i = 0; i < r->elements; i++) bus__reply_fill(r->element[i], &kids[i], nodes, bytes);
        break;
    }
    default: d->type = BUS_REPLY_NIL; break;
    }
}

/* One allocation holding the whole tree (nodes, then string bytes); the
 * root is its start. NULL on allocation failure. */
static bus_reply_t *bus__reply_convert(const redisReply *r)
{
    size_t nodes = 0, bytes = 0;
    bus__reply_size(r, &nodes, &bytes);
    bus_reply_t *root = malloc(nodes * sizeof *root + bytes);
    if (!root) return NULL;
    bus_reply_t *next = root + 1;
    char *str = (char *)(root + nodes);
    bus__reply_fill(r, root, &next, &str);
    return root;
}

/* ---- requests: built on the caller's thread ---- */

static bus_req_t *bus__req_new(int kind, int argc, size_t bytes)
{
    size_t argv_sz = (size_t)argc * (sizeof(char *) + sizeof(size_t));
    bus_req_t *r = malloc(sizeof *r + argv_sz + bytes);
    if (!r) return NULL;
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->argc = argc;
    r->argvlen = (size_t *)(r + 1);
    r->argv = (const char **)(r->argvlen + argc);
    r->data = (char *)(r->argv + argc);
    r->cost = sizeof *r + argv_sz + bytes;
    return r;
}

/* Sets argument i to a static string (not copied). */
static void bus__req_static(bus_req_t *r, int i, const char *s, size_t len)
{
    r->argv[i] = s;
    r->argvlen[i] = len;
}

/* Sets argument i to a copy of a[0..alen) followed by p[0..plen). */
static void bus__req_copy(bus_req_t *r, int i, const char *a, size_t alen, const void *p, size_t plen)
{
    r->argv[i] = r->data;
    r->argvlen[i] = alen + plen;
    if (alen) memcpy(r->data, a, alen);
    if (plen) memcpy(r->data + alen, p, plen);
    r->data += alen + plen;
}

static void bus__release(bus_t *b, size_t cost)
{
    atomic_fetch_sub_explicit(&b->q_msgs, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&b->q_bytes, cost, memory_order_relaxed);
}

/* Counts a request into the queue bound, or refuses it (SORI_ELIMIT). */
static int bus__admit(bus_t *b, size_t cost)
{
    size_t m = atomic_fetch_add_explicit(&b->q_msgs, 1, memory_order_relaxed) + 1;
    size_t by = atomic_fetch_add_explicit(&b->q_bytes, cost, memory_order_relaxed) + cost;
    if (m > b->o.queue_max_msgs || by > b->o.queue_max_bytes) {
        bus__release(b, cost);
        BUS__INC(b, queue_full);
        return SORI_ELIMIT;
    }
    return 0;
}

/* Queues r for the bus thread (taking ownership). 0, or SORI_ECLOSED,
 * SORI_ELIMIT (r freed). */
static int bus__submit(bus_t *b, bus_req_t *r)
{
    if (!atomic_load_explicit(&b->up, memory_order_acquire)) {
        free(r);
        return SORI_ECLOSED;
    }
    int rc = bus__admit(b, r->cost);
    if (rc) {
        free(r);
        return rc;
    }
    r->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (b->closing) {
        pthread_mutex_unlock(&b->mu);
        bus__release(b, r->cost);
        free(r);
        return SORI_ECLOSED;
    }
    if (b->rq_tail) b->rq_tail->next = r;
    else b->rq_head = r;
    b->rq_tail = r;
    uv_async_send(&b->wake);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

/* ---- the bus thread: sending ---- */

static void bus__link_fail(bus_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bus__on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    bus_t *b = ac->data;
    bus_op_t *op = priv;
    if (reply && ac == b->cmd) {
        if (b->cmd_pending) b->cmd_pending--;
        b->cmd_progress = uv_now(&b->loop);
    }
    op->fn(b, op, reply);
}

/* Sends a command with op on ac. 0, or SORI_ECLOSED when hiredis refuses
 * (the connection is going away; op is not called). */
static int bus__send(bus_t *b, redisAsyncContext *ac, bus_op_t *op, int argc, const char **argv, const size_t *lens)
{
    if (!ac || redisAsyncCommandArgv(ac, bus__on_reply, op, argc, argv, lens) != REDIS_OK) return SORI_ECLOSED;
    if (ac == b->cmd && b->cmd_pending++ == 0) b->cmd_progress = uv_now(&b->loop);
    return 0;
}

/* Internal commands with nothing to do on success: log error replies. */
static void bus__log_reply(bus_t *b, bus_op_t *op, redisReply *r)
{
    (void)b, (void)op;
    if (!r) return;
    if (r->type == REDIS_REPLY_ERROR) LOG_WARN("bus", "redis: %s", r->str);
    if (r->type == REDIS_REPLY_ARRAY) /* EXEC */
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_ERROR) LOG_WARN("bus", "redis: %s", r->element[i]->str);
}
static bus_op_t bus__op_log = {bus__log_reply};

/* Sends a command of static or caller-owned strings with bus__op_log. */
static int bus__sendv(bus_t *b, redisAsyncContext *ac, int argc, const char **argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++) lens[i] = strlen(argv[i]);
    return bus__send(b, ac, &bus__op_log, argc, argv, lens);
}

static void bus__publish_notice(bus_t *b, const char *sign, const char *user, size_t ulen)
{
    char buf[16 + 1 + BUS__NAME_MAX];
    int n = snprintf(buf, sizeof buf, "%s%s%.*s", b->prefix, sign, (int)ulen, user ? user : "");
    const char *argv[3] = {"PUBLISH", BUS_PRESENCE_CHANNEL, buf};
    size_t lens[3] = {7, sizeof BUS_PRESENCE_CHANNEL - 1, (size_t)n};
    bus__send(b, b->cmd, &bus__op_log, 3, argv, lens);
}

/* ---- requests: completion on the bus thread ---- */

static void bus__query_done(bus_t *b, bus_req_t *q, redisReply *r)
{
    uint8_t *online = NULL;
    int status = SORI_ECLOSED;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == q->n) {
        online = malloc(q->n ? q->n : 1);
        status = online ? 0 : SORI_ENOMEM;
        for (size_t i = 0; online && i < q->n; i++)
            online[i] = r->element[i]->type == REDIS_REPLY_INTEGER && r->element[i]->integer != 0;
    } else if (r) {
        LOG_WARN("bus", "presence query: unexpected reply%s%s", r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r->type == REDIS_REPLY_ERROR ? r->str : "");
        status = SORI_EIO;
    }
    (void)b;
    q->cb.query(q->arg, status, status ? NULL : online);
    free(online);
}

static void bus__discover_done(bus_t *b, bus_req_t *q, redisReply *r)
{
    (void)b;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r) LOG_WARN("bus", "discover: unexpected reply%s%s", r->type == REDIS_REPLY_ERROR ? ": " : "",
                        r->type == REDIS_REPLY_ERROR ? r->str : "");
        q->cb.disc(q->arg, r ? SORI_EIO : SORI_ECLOSED, NULL, 0);
        return;
    }
    bus_node_t *nodes = calloc(r->elements ? r->elements : 1, sizeof *nodes);
    json_t **docs = calloc(r->elements ? r->elements : 1, sizeof *docs);
    if (!nodes || !docs) {
        free(nodes);
        free(docs);
        q->cb.disc(q->arg, SORI_ENOMEM, NULL, 0);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_STRING) continue;
        json_t *j = json_loadb(e->str, e->len, 0, NULL);
        json_t *id = json_object_get(j, "node"), *ws = json_object_get(j, "ws"), *ld = json_object_get(j, "load");
        if (!json_is_integer(id) || !json_is_string(ws) || json_integer_value(id) < 0 ||
            json_integer_value(id) > INT_MAX) {
            LOG_DEBUG("bus", "discover: skipped a malformed node entry");
            json_decref(j);
            continue;
        }
        nodes[n].node = (int)json_integer_value(id);
        nodes[n].ws = json_string_value(ws);
        nodes[n].load = json_is_number(ld) ? json_number_value(ld) : 0;
        docs[n++] = j;
    }
    q->cb.disc(q->arg, 0, nodes, n);
    for (size_t i = 0; i < n; i++) json_decref(docs[i]);
    free(docs);
    free(nodes);
}

static void bus__req_reply(bus_t *b, bus_op_t *op, redisReply *r)
{
    bus_req_t *q = (bus_req_t *)op;
    switch (q->kind) {
    case BUS__REQ_PUBLISH: {
        int status = !r ? SORI_ECLOSED : r->type == REDIS_REPLY_ERROR ? SORI_EIO : 0;
        if (r && r->type == REDIS_REPLY_ERROR) LOG_WARN("bus", "PUBLISH refused: %s", r->str);
        if (status) BUS__INC(b, publish_failed);
        else BUS__INC(b, published);
        if (q->cb.pub) q->cb.pub(q->arg, status);
        break;
    }
    case BUS__REQ_COMMAND: {
        bus_reply_t *t = r ? bus__reply_convert(r) : NULL;
        q->cb.cmd(q->arg, !r ? SORI_ECLOSED : t ? 0 : SORI_ENOMEM, t);
        free(t);
        break;
    }
    case BUS__REQ_QUERY: bus__query_done(b, q, r); break;
    case BUS__REQ_DISCOVER: bus__discover_done(b, q, r); break;
    }
    bus__release(b, q->cost);
    free(q);
}

/* Sends a dequeued request, or fails it when the link is not up. */
static void bus__dispatch(bus_t *b, bus_req_t *q)
{
    q->op.fn = bus__req_reply;
    if (b->state == BUS__UP && bus__send(b, b->cmd, &q->op, q->argc, q->argv, q->argvlen) == 0) return;
    bus__req_reply(b, &q->op, NULL);
}

/* ---- tables: subscriptions and presence, reconciled on the bus thread ---- */

static int bus__scratch(bus_t *b, size_t n)
{
    if (n <= b->scratch_cap) return 0;
    size_t cap = b->scratch_cap ? b->scratch_cap : 64;
    while (cap < n) cap *= 2;
    void **p = realloc(b->scratch, cap * sizeof *p);
    if (!p) return SORI_ENOMEM;
    b->scratch = p;
    b->scratch_cap = cap;
    return 0;
}

typedef struct {
    bus_t *b;
    size_t n;
    int oom;
    int presence; /* 0: subscriptions with a count > 0; 1: users online */
} bus_walk_t;

/* map_each callback (under mu): appends the entries to keep to scratch.
 * For presence it also records that the rewrite about to be sent makes
 * Redis hold exactly the online users. */
static void bus__walk_fn(const char *key, size_t klen, void *value, void *arg)
{
    (void)key, (void)klen;
    bus_walk_t *w = arg;
    int keep;
    if (w->presence) {
        bus_pres_t *p = value;
        p->written = p->online;
        keep = p->online;
    } else {
        keep = ((bus_sub_t *)value)->count > 0;
    }
    if (keep && !w->oom) {
        if (bus__scratch(w->b, w->n + 1)) w->oom = 1;
        else w->b->scratch[w->n++] = value;
    }
}

/* Copies the entries of m to keep into b->scratch[0..n) (see bus__walk_fn).
 * n, or SORI_ENOMEM. */
static long bus__snapshot(bus_t *b, map_t *m, int presence)
{
    bus_walk_t w = {b, 0, 0, presence};
    pthread_mutex_lock(&b->mu);
    map_each(m, bus__walk_fn, &w);
    pthread_mutex_unlock(&b->mu);
    return w.oom ? SORI_ENOMEM : (long)w.n;
}

static void bus__on_sub(redisAsyncContext *ac, void *reply, void *priv);

/* SUBSCRIBEs v[0..n) on the current sub connection, BUS__SUB_CHUNK
 * channels per command; each is then in `sent` and awaits a confirmation.
 * 0, or < 0 (the caller fails the link). */
static int bus__subscribe(bus_t *b, bus_sub_t **v, size_t n)
{
    const char *argv[BUS__SUB_CHUNK + 1];
    size_t lens[BUS__SUB_CHUNK + 1];
    argv[0] = "SUBSCRIBE";
    lens[0] = 9;
    for (size_t at = 0; at < n; at += BUS__SUB_CHUNK) {
        size_t k = n - at < BUS__SUB_CHUNK ? n - at : BUS__SUB_CHUNK;
        for (size_t i = 0; i < k; i++) {
            argv[i + 1] = v[at + i]->name;
            lens[i + 1] = v[at + i]->len;
            if (map_put(&b->sent, v[at + i]->name, v[at + i]->len, b)) return SORI_ENOMEM;
        }
        /* hiredis routes these channels' confirmations and messages to
         * bus__on_sub (privdata b) until they are unsubscribed. */
        if (redisAsyncCommandArgv(b->sub, bus__on_sub, b, (int)k + 1, argv, lens) != REDIS_OK) return SORI_ECLOSED;
        b->sub_outstanding += k;
    }
    return 0;
}

/* UNSUBSCRIBEs v[0..n) (hiredis sends no callback for it: each channel's
 * confirmation reaches bus__on_sub, which ignores it). */
static void bus__unsubscribe(bus_t *b, bus_sub_t **v, size_t n)
{
    const char *argv[BUS__SUB_CHUNK + 1];
    size_t lens[BUS__SUB_CHUNK + 1];
    argv[0] = "UNSUBSCRIBE";
    lens[0] = 11;
    for (size_t at = 0; at < n; at += BUS__SUB_CHUNK) {
        size_t k = n - at < BUS__SUB_CHUNK ? n - at : BUS__SUB_CHUNK;
        for (size_t i = 0; i < k; i++) {
            argv[i + 1] = v[at + i]->name;
            lens[i + 1] = v[at + i]->len;
            map_del(&b->sent, v[at + i]->name, v[at + i]->len);
        }
        if (redisAsyncCommandArgv(b->sub, NULL, NULL, (int)k + 1, argv, lens) != REDIS_OK) return;
    }
}

/* Unlinks a table's dirty list into scratch (under mu): scratch[0..n) the
 * entries, scratch[n..2n) the same entry when it was removed from the map
 * (its count or online flag dropped to 0; freed by the caller after use),
 * else NULL; scratch[2n..3n) is room for the caller. n, or SORI_ENOMEM (the
 * list is left for the next pass). */
static long bus__take_dirty(bus_t *b, int presence)
{
    pthread_mutex_lock(&b->mu);
    size_t n = 0;
    if (presence)
        for (bus_pres_t *p = b->pres_dirty; p; p = p->dirty_next) n++;
    else
        for (bus_sub_t *s = b->subs_dirty; s; s = s->dirty_next) n++;
    if (n && bus__scratch(b, 3 * n)) {
        pthread_mutex_unlock(&b->mu);
        return SORI_ENOMEM;
    }
    size_t i = 0;
    if (presence) {
        for (bus_pres_t *p = b->pres_dirty, *next; p; p = next, i++) {
            next = p->dirty_next;
            p->dirty_next = NULL;
            p->dirty = 0;
            b->scratch[i] = p;
            b->scratch[n + i] = p->online ? NULL : map_del(&b->pres, p->name, p->len);
        }
        b->pres_dirty = NULL;
    } else {
        for (bus_sub_t *s = b->subs_dirty, *next; s; s = next, i++) {
            next = s->dirty_next;
            s->dirty_next = NULL;
            s->dirty = 0;
            b->scratch[i] = s;
            b->scratch[n + i] = s->count > 0 ? NULL : map_del(&b->subs, s->name, s->len);
        }
        b->subs_dirty = NULL;
    }
    pthread_mutex_unlock(&b->mu);
    return (long)n;
}

/* Makes the sub connection match the subscriptions changed since the last
 * pass. Without a connection there is nothing to do: the next connect
 * subscribes the whole table. */
static void bus__subs_reconcile(bus_t *b)
{
    long n = bus__take_dirty(b, 0);
    if (n < 0) {
        LOG_ERROR("bus", "out of memory reconciling subscriptions");
        return;
    }
    int live = (b->state == BUS__CONNECTING || b->state == BUS__UP) && b->sub;
    /* Compacted in place: want-subscribe entries to the front of
     * scratch[0..n), want-unsubscribe ones into scratch[n..2n) slots that
     * were already looked at are kept apart in `gone`. */
    bus_sub_t **v = (bus_sub_t **)b->scratch;
    bus_sub_t *unsub[BUS__SUB_CHUNK];
    size_t nsub = 0, nunsub = 0;
    int rc = 0;
    for (long k = 0; k < n; k++) {
        bus_sub_t *s = v[k];
        int want = b->scratch[n + k] == NULL;
        int have = map_get(&b->sent, s->name, s->len) != NULL;
        if (!live || want == have) continue;
        if (want) {
            v[nsub++] = s;
        } else {
            unsub[nunsub++] = s;
            if (nunsub == BUS__SUB_CHUNK) {
                bus__unsubscribe(b, unsub, nunsub);
                nunsub = 0;
            }
        }
    }
    if (nunsub) bus__unsubscribe(b, unsub, nunsub);
    if (nsub) rc = bus__subscribe(b, v, nsub);
    for (long k = 0; k < n; k++) free(b->scratch[n + k]);
    if (rc) bus__link_fail(b, "cannot send SUBSCRIBE (%s)", sori_strerror(rc));
}

/* Sends HSET key u1 1 u2 1 ... (set) or HDEL key u1 u2 ... for v[0..n),
 * BUS__HSET_CHUNK fields per command. */
static void bus__hash_fields(bus_t *b, int set, bus_pres_t **v, size_t n)
{
    size_t per = set ? 2 : 1, max = 2 + per * BUS__HSET_CHUNK;
    const char **argv = malloc(max * sizeof *argv);
    size_t *lens = malloc(max * sizeof *lens);
    if (!argv || !lens) {
        LOG_ERROR("bus", "out of memory writing presence (fixed by the next rewrite)");
        goto out;
    }
    argv[0] = set ? "HSET" : "HDEL";
    lens[0] = 4;
    argv[1] = b->key_online;
    lens[1] = strlen(b->key_online);
    for (size_t at = 0; at < n; at += BUS__HSET_CHUNK) {
        size_t k = n - at < BUS__HSET_CHUNK ? n - at : BUS__HSET_CHUNK, a = 2;
        for (size_t i = 0; i < k; i++) {
            argv[a] = v[at + i]->name;
            lens[a++] = v[at + i]->len;
            if (set) {
                argv[a] = "1";
                lens[a++] = 1;
            }
        }
        bus__send(b, b->cmd, &bus__op_log, (int)a, argv, lens);
    }
out:
    free(argv);
    free(lens);
}

/* The tail of every presence transaction: expiry, node set, EXEC. */
static void bus__presence_tail(bus_t *b)
{
    const char *pexpire[] = {"PEXPIRE", b->key_online, b->ttl_presence};
    const char *sadd[] = {"SADD", BUS__KEY_PRES_NODES, b->node_str};
    const char *exec[] = {"EXEC"};
    bus__sendv(b, b->cmd, 3, pexpire);
    bus__sendv(b, b->cmd, 3, sadd);
    bus__sendv(b, b->cmd, 1, exec);
}

/* Rewrites sori:online:<id> whole from the table, in one transaction, and
 * tells the other nodes ("*"). */
static void bus__presence_rewrite(bus_t *b)
{
    long n = bus__snapshot(b, &b->pres, 1);
    if (n < 0) {
        bus__link_fail(b, "out of memory rewriting presence");
        return;
    }
    const char *multi[] = {"MULTI"};
    const char *del[] = {"DEL", b->key_online};
    bus__sendv(b, b->cmd, 1, multi);
    bus__sendv(b, b->cmd, 2, del);
    bus__hash_fields(b, 1, (bus_pres_t **)b->scratch, (size_t)n);
    bus__presence_tail(b);
    bus__publish_notice(b, "*", NULL, 0);
    b->pres_written = (size_t)n;
}

/* Writes the presence changes since the last pass (when a connection is
 * there; else the next connect rewrites the whole hash). */
static void bus__pres_reconcile(bus_t *b)
{
    long n = bus__take_dirty(b, 1);
    if (n < 0) {
        LOG_ERROR("bus", "out of memory reconciling presence");
        return;
    }
    int live = (b->state == BUS__CONNECTING || b->state == BUS__UP) && b->cmd;
    bus_pres_t **v = (bus_pres_t **)b->scratch;
    /* on: compacted to the front of scratch[0..n); off: scratch[2n..3n) */
    bus_pres_t **off = (bus_pres_t **)b->scratch + 2 * n;
    size_t non = 0, noff = 0;
    for (long k = 0; k < n; k++) {
        bus_pres_t *p = v[k];
        int want = b->scratch[n + k] == NULL;
        if (want == p->written) continue;
        p->written = want;
        if (want) b->pres_written++;
        else b->pres_written--;
        if (!live) continue;
        if (want) v[non++] = p;
        else off[noff++] = p;
    }
    if (live && (non || noff)) {
        const char *multi[] = {"MULTI"};
        bus__sendv(b, b->cmd, 1, multi);
        if (non) bus__hash_fields(b, 1, v, non);
        if (noff) bus__hash_fields(b, 0, off, noff);
        bus__presence_tail(b);
        for (size_t i = 0; i < non; i++) bus__publish_notice(b, "+", v[i]->name, v[i]->len);
        for (size_t i = 0; i < noff; i++) bus__publish_notice(b, "-", off[i]->name, off[i]->len);
    }
    for (long k = 0; k < n; k++) free(b->scratch[n + k]);
}

/* PEXPIRE answered 0: the hash is gone (expired while we could not refresh
 * it, or Redis lost it) although users are online here: rewrite it. */
static void bus__pexpire_reply(bus_t *b, bus_op_t *op, redisReply *r)
{
    (void)op;
    if (!r) return;
    if (r->type == REDIS_REPLY_ERROR) {
        LOG_WARN("bus", "redis: %s", r->str);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer == 0 && b->pres_written > 0 && b->state == BUS__UP) {
        LOG_WARN("bus", "presence hash %s had expired with %zu users online here: rewritten", b->key_online,
                 b->pres_written);
        bus__presence_rewrite(b);
    }
}
static bus_op_t bus__op_pexpire = {bus__pexpire_reply};

static void bus__presence_refresh(bus_t *b)
{
    const char *pexpire[] = {"PEXPIRE", b->key_online, b->ttl_presence};
    const char *sadd[] = {"SADD", BUS__KEY_PRES_NODES, b->node_str};
    size_t lens[3] = {7, strlen(b->key_online), strlen(b->ttl_presence)};
    if (!b->pres_written) return; /* no hash to keep */
    bus__send(b, b->cmd, &bus__op_pexpire, 3, pexpire, lens);
    bus__sendv(b, b->cmd, 3, sadd);
}

/* Writes sori:node:<id> (when registered). */
static void bus__write_node(bus_t *b)
{
    pthread_mutex_lock(&b->mu);
    char *url = b->reg_url ? strdup(b->reg_url) : NULL;
    double (*load)(void) = b->reg_load;
    pthread_mutex_unlock(&b->mu);
    if (!url) return;
    double l = load ? load() : 0;
    if (!isfinite(l)) l = 0;
    json_t *j = json_pack("{s:i, s:s, s:f}", "node", b->node_id, "ws", url, "load", l);
    char *doc = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (doc) {
        const char *set[] = {"SET", b->key_node, doc, "PX", b->ttl_node};
        const char *sadd[] = {"SADD", BUS__KEY_NODES, b->node_str};
        bus__sendv(b, b->cmd, 5, set);
        bus__sendv(b, b->cmd, 3, sadd);
    } else {
        LOG_ERROR("bus", "cannot encode the node registration");
    }
    free(doc);
    json_decref(j);
    free(url);
}

/* ---- hiredis on the libuv loop ----
 *
 * Our own glue rather than hiredis's adapters/libuv.h: Debian's 0.14
 * adapter drops a poll callback whose status is an error, and libuv reports
 * a refused or reset connection exactly so (POLLERR -> UV_EBADF, handle
 * stopped): a connect to a Redis that is down would then hang until the
 * handshake timeout instead of failing at once. Here an error status is
 * handed to hiredis, which reads the socket error itself (SO_ERROR while
 * connecting, read() once connected) and fails the connection. */

typedef struct {
    redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
    uv_poll_t poll;
    int events;
} bus_ev_t;

static void bus__ev_cb(uv_poll_t *h, int status, int events)
{
    bus_ev_t *e = h->data;
    if (status < 0) {
        if (e->ac && !(e->ac->c.flags & REDIS_CONNECTED)) redisAsyncHandleWrite(e->ac);
        else if (e->ac) redisAsyncHandleRead(e->ac);
        return;
    }
    /* either call may free the context: cleanup clears e->ac first */
    if (e->ac && (events & UV_READABLE)) redisAsyncHandleRead(e->ac);
    if (e->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(e->ac);
}

static void bus__ev_set(bus_ev_t *e, int add, int ev)
{
    e->events = add ? e->events | ev : e->events & ~ev;
    if (e->events) uv_poll_start(&e->poll, e->events, bus__ev_cb);
    else uv_poll_stop(&e->poll);
}

static void bus__ev_add_read(void *p) { bus__ev_set(p, 1, UV_READABLE); }
static void bus__ev_del_read(void *p) { bus__ev_set(p, 0, UV_READABLE); }
static void bus__ev_add_write(void *p) { bus__ev_set(p, 1, UV_WRITABLE); }
static void bus__ev_del_write(void *p) { bus__ev_set(p, 0, UV_WRITABLE); }

static void bus__ev_closed(uv_handle_t *h)
{
    free(h->data);
}

/* hiredis frees the context: the poll handle goes with it. */
static void bus__ev_cleanup(void *p)
{
    bus_ev_t *e = p;
    e->ac = NULL;
    uv_close((uv_handle_t *)&e->poll, bus__ev_closed);
}

static int bus__ev_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    bus_ev_t *e = calloc(1, sizeof *e);
    if (!e) return SORI_ENOMEM;
    if (uv_poll_init_socket(loop, &e->poll, ac->c.fd)) {
        free(e);
        return SORI_EIO;
    }
    e->ac = ac;
    e->poll.data = e;
    ac->ev.data = e;
    ac->ev.addRead = bus__ev_add_read;
    ac->ev.delRead = bus__ev_del_read;
    ac->ev.addWrite = bus__ev_add_write;
    ac->ev.delWrite = bus__ev_del_write;
    ac->ev.cleanup = bus__ev_cleanup;
    return 0;
}

/* ---- the link ---- */

static void bus__retry_cb(uv_timer_t *t);
static void bus__presence_cb(uv_timer_t *t);
static void bus__node_cb(uv_timer_t *t);
static void bus__finish(bus_t *b);

/* Frees both connections (hiredis answers their pending commands with NULL
 * replies) and forgets what was sent on them. Never from a hiredis
 * callback. */
static void bus__drop_conns(bus_t *b)
{
    redisAsyncContext *c = b->cmd, *s = b->sub;
    b->cmd = b->sub = NULL;
    if (c) redisAsyncFree(c);
    if (s) redisAsyncFree(s);
    map_free(&b->sent);
    b->sub_outstanding = 0;
    b->cmd_pending = 0;
    b->cmd_ready = b->sub_ready = 0;
}

static void bus__reap_cb(uv_timer_t *t)
{
    bus_t *b = t->data;
    bus__drop_conns(b);
    if (b->close_begun || b->state == BUS__CLOSED) {
        bus__finish(b);
        return;
    }
    b->state = BUS__DOWN;
    uv_timer_start(&b->t_retry, bus__retry_cb, (uint64_t)b->backoff_ms, 0);
    b->backoff_ms = b->backoff_ms * 2 > b->o.backoff_max_ms ? b->o.backoff_max_ms : b->backoff_ms * 2;
}

static void bus__link_fail(bus_t *b, const char *fmt, ...)
{
    if (b->state != BUS__CONNECTING && b->state != BUS__UP) return;
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    int was_up = b->state == BUS__UP;
    b->state = BUS__FAILED;
    uv_timer_stop(&b->t_handshake);
    uv_timer_stop(&b->t_tick);
    uv_timer_stop(&b->t_presence);
    uv_timer_stop(&b->t_node);
    uv_timer_start(&b->t_reap, bus__reap_cb, 0, 0);
    if (was_up) {
        LOG_WARN("bus", "link to redis %s:%d lost (%s); reconnecting", b->host, b->port, why);
        atomic_store_explicit(&b->up, 0, memory_order_release);
        BUS__INC(b, downs);
        if (b->h.on_state && !b->close_begun) b->h.on_state(b->h.arg, 0);
    } else if (BUS__INC(b, connect_failed), b->failures++ % BUS__WARN_EVERY == 0) {
        LOG_WARN("bus", "cannot connect to redis %s:%d (%s); retrying (attempt %d)", b->host, b->port, why,
                 b->failures);
    } else {
        LOG_DEBUG("bus", "connect attempt %d to redis %s:%d failed (%s)", b->failures, b->host, b->port, why);
    }
}

static void bus__check_up(bus_t *b)
{
    if (b->state != BUS__CONNECTING || !b->cmd_ready || !b->sub_ready || b->sub_outstanding) return;
    b->state = BUS__UP;
    uv_timer_stop(&b->t_handshake);
    b->backoff_ms = b->o.backoff_min_ms;
    if (b->failures) LOG_INFO("bus", "link to redis %s:%d up after %d failed attempts", b->host, b->port, b->failures);
    else LOG_INFO("bus", "link to redis %s:%d up (node %d)", b->host, b->port, b->node_id);
    b->failures = 0;
    uv_timer_start(&b->t_presence, bus__presence_cb, (uint64_t)b->o.presence_refresh_ms,
                   (uint64_t)b->o.presence_refresh_ms);
    uv_timer_start(&b->t_node, bus__node_cb, (uint64_t)b->o.node_refresh_ms, (uint64_t)b->o.node_refresh_ms);
    /* A registration made while the link was coming up was skipped by the
     * wake (not up yet): write it now rather than a refresh period later
     * (a node was missing from discovery for up to TTL/3 after its start). */
    bus__write_node(b);
    atomic_store_explicit(&b->up, 1, memory_order_release);
    BUS__INC(b, ups);
    if (b->h.on_state) b->h.on_state(b->h.arg, 1);
}

/* Handshake commands: an error reply fails the link; the PINGs mark their
 * connection ready. */
typedef struct {
    bus_op_t op;
    const char *what;
    int ready; /* 0: none, 1: cmd, 2: sub */
} bus_hs_op_t;

static void bus__hs_reply(bus_t *b, bus_op_t *op, redisReply *r)
{
    bus_hs_op_t *hs = (bus_hs_op_t *)op;
    if (!r) return;
    if (r->type == REDIS_REPLY_ERROR) {
        bus__link_fail(b, "%s: %s", hs->what, r->str);
        return;
    }
    if (hs->ready == 1) b->cmd_ready = 1;
    if (hs->ready == 2) b->sub_ready = 1;
    bus__check_up(b);
}
static bus_hs_op_t bus__op_auth = {{bus__hs_reply}, "AUTH", 0};
static bus_hs_op_t bus__op_select = {{bus__hs_reply}, "SELECT", 0};
static bus_hs_op_t bus__op_ping_cmd = {{bus__hs_reply}, "PING", 1};
static bus_hs_op_t bus__op_ping_sub = {{bus__hs_reply}, "PING", 2};

/* Messages and (un)subscribe confirmations of the sub connection. */
static void bus__on_sub(redisAsyncContext *ac, void *reply, void *priv)
{
    bus_t *b = priv;
    redisReply *r = reply;
    if (!r || ac != b->sub || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    redisReply *ch = r->element[1];
    if (!strcmp(kind, "message")) {
        redisReply *d = r->element[2];
        /* a message racing its UNSUBSCRIBE is no longer wanted */
        if (d->type != REDIS_REPLY_STRING || !map_get(&b->sent, ch->str, ch->len)) return;
        int origin;
        const char *payload;
        size_t plen;
        if (bus_frame_parse(d->str, d->len, &origin, &payload, &plen)) {
            BUS__INC(b, malformed);
            return;
        }
        if (origin == b->node_id) {
            BUS__INC(b, own_dropped);
            return;
        }
        BUS__INC(b, received);
        if (b->h.on_message) b->h.on_message(b->h.arg, origin, ch->str, payload, plen);
    } else if (!strcmp(kind, "subscribe")) {
        if (b->sub_outstanding) b->sub_outstanding--;
        bus__check_up(b);
    }
}

static void bus__on_connect(const redisAsyncContext *ac, int status)
{
    bus_t *b = ac->data;
    if (status == REDIS_OK) return;
    /* hiredis frees the context after this callback */
    if (ac == b->cmd) b->cmd = NULL;
    else if (ac == b->sub) b->sub = NULL;
    else return;
    bus__link_fail(b, "%s", ac->c.errstr[0] ? ac->c.errstr : "connect failed");
}

static void bus__on_disconnect(const redisAsyncContext *ac, int status)
{
    bus_t *b = ac->data;
    const char *which;
    /* hiredis frees the context after this callback */
    if (ac == b->cmd) {
        b->cmd = NULL;
        which = "command";
    } else if (ac == b->sub) {
        b->sub = NULL;
        which = "subscriber";
    } else {
        return; /* freed by bus__drop_conns */
    }
    bus__link_fail(b, "%s connection: %s", which,
                   status == REDIS_OK ? "closed" : ac->c.errstr[0] ? ac->c.errstr : "error");
}

/* A new connection attached to the loop, or NULL with a reason. */
static redisAsyncContext *bus__conn_new(bus_t *b, char *why, size_t whylen)
{
    redisAsyncContext *ac = redisAsyncConnect(b->host, b->port);
    if (!ac) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    if (ac->err) {
        snprintf(why, whylen, "%s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = b;
    if (bus__ev_attach(ac, &b->loop)) {
        snprintf(why, whylen, "cannot attach to the loop");
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, bus__on_connect);
    redisAsyncSetDisconnectCallback(ac, bus__on_disconnect);
    redisEnableKeepAlive(&ac->c);
    return ac;
}

static void bus__handshake_cb(uv_timer_t *t)
{
    bus_t *b = t->data;
    bus__link_fail(b, "no handshake within %d ms", b->o.connect_timeout_ms);
}

static void bus__tick_cb(uv_timer_t *t)
{
    bus_t *b = t->data;
    uint64_t now = uv_now(&b->loop);
    if (b->cmd_pending && now - b->cmd_progress > (uint64_t)b->o.reply_timeout_ms)
        bus__link_fail(b, "no reply for %llu ms", (unsigned long long)(now - b->cmd_progress));
}

static void bus__presence_cb(uv_timer_t *t)
{
    bus_t *b = t->data;
    if (b->state == BUS__UP && !b->close_begun) bus__presence_refresh(b);
}

static void bus__node_cb(uv_timer_t *t)
{
    bus_t *b = t->data;
    if (b->state == BUS__UP && !b->close_begun) bus__write_node(b);
}

static void bus__connect(bus_t *b)
{
    char why[256];
    b->state = BUS__CONNECTING;
    b->cmd_ready = b->sub_ready = 0;
    b->sub_outstanding = 0;
    b->cmd_pending = 0;
    b->cmd = bus__conn_new(b, why, sizeof why);
    if (b->cmd) b->sub = bus__conn_new(b, why, sizeof why);
    if (!b->cmd || !b->sub) {
        bus__link_fail(b, "%s", why);
        return;
    }
    uv_timer_start(&b->t_handshake, bus__handshake_cb, (uint64_t)b->o.connect_timeout_ms, 0);
    uint64_t tick = b->o.reply_timeout_ms / 4 < BUS__TICK_MS ? (uint64_t)b->o.reply_timeout_ms / 4 + 1 : BUS__TICK_MS;
    uv_timer_start(&b->t_tick, bus__tick_cb, tick, tick);
    if (b->pass && b->pass[0]) {
        const char *argv[3] = {"AUTH", b->user, b->pass};
        size_t lens[3] = {4, strlen(b->user), strlen(b->pass)};
        int rc = 0;
        if (b->user[0]) {
            rc |= bus__send(b, b->cmd, &bus__op_auth.op, 3, argv, lens);
            rc |= bus__send(b, b->sub, &bus__op_auth.op, 3, argv, lens);
        } else {
            argv[1] = b->pass;
            lens[1] = lens[2];
            rc |= bus__send(b, b->cmd, &bus__op_auth.op, 2, argv, lens);
            rc |= bus__send(b, b->sub, &bus__op_auth.op, 2, argv, lens);
        }
        if (rc) goto fail;
    }
    if (b->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", b->db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, strlen(db)};
        if (bus__send(b, b->cmd, &bus__op_select.op, 2, argv, lens)) goto fail;
    }
    bus__presence_rewrite(b);
    bus__write_node(b);
    {
        const char *ping[1] = {"PING"};
        size_t lens[1] = {4};
        if (bus__send(b, b->cmd, &bus__op_ping_cmd.op, 1, ping, lens) ||
            bus__send(b, b->sub, &bus__op_ping_sub.op, 1, ping, lens))
            goto fail;
    }
    long n = bus__snapshot(b, &b->subs, 0);
    if (n < 0 || bus__subscribe(b, (bus_sub_t **)b->scratch, (size_t)n)) goto fail;
    return;
fail:
    bus__link_fail(b, "cannot queue the handshake");
}

static void bus__retry_cb(uv_timer_t *t)
{
    bus_t *b = t->data;
    if (b->state == BUS__DOWN && !b->close_begun) bus__connect(b);
}

/* ---- closing ---- */

static void bus__close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Last act of the bus thread: frees the connections (pending requests
 * complete with SORI_ECLOSED) and closes every handle, which ends uv_run. */
static void bus__finish(bus_t *b)
{
    if (b->state == BUS__CLOSED) return;
    b->state = BUS__CLOSED;
    atomic_store_explicit(&b->up, 0, memory_order_release);
    bus__drop_conns(b);
    bus__close_handle((uv_handle_t *)&b->wake);
    bus__close_handle((uv_handle_t *)&b->t_retry);
    bus__close_handle((uv_handle_t *)&b->t_reap);
    bus__close_handle((uv_handle_t *)&b->t_handshake);
    bus__close_handle((uv_handle_t *)&b->t_tick);
    bus__close_handle((uv_handle_t *)&b->t_presence);
    bus__close_handle((uv_handle_t *)&b->t_node);
    bus__close_handle((uv_handle_t *)&b->t_close);
}

static void bus__close_reply(bus_t *b, bus_op_t *op, redisReply *r)
{
    (void)op, (void)r;
    bus__finish(b);
}
static bus_op_t bus__op_close = {bus__close_reply};

static void bus__close_timeout_cb(uv_timer_t *t)
{
    bus_t *b = t->data;
    LOG_WARN("bus", "closing: redis did not answer within %d ms", BUS__CLOSE_WAIT_MS);
    bus__finish(b);
}

static void bus__begin_close(bus_t *b)
{
    if (b->close_begun) return;
    b->close_begun = 1;
    uv_timer_stop(&b->t_retry);
    /* No refresh may follow the DELs below while the PING is out: one that
     * did would put this node back in the registry (and its users back
     * online) for a TTL after it left (seen as a stopped node still
     * discovered, under ASan in make test). */
    uv_timer_stop(&b->t_node);
    uv_timer_stop(&b->t_presence);
    if (b->state != BUS__UP || !b->cmd) {
        bus__finish(b);
        return;
    }
    if (!b->o.keep_keys_on_close) {
        const char *del1[] = {"DEL", b->key_online};
        const char *srem1[] = {"SREM", BUS__KEY_PRES_NODES, b->node_str};
        const char *del2[] = {"DEL", b->key_node};
        const char *srem2[] = {"SREM", BUS__KEY_NODES, b->node_str};
        bus__sendv(b, b->cmd, 2, del1);
        bus__sendv(b, b->cmd, 3, srem1);
        bus__sendv(b, b->cmd, 2, del2);
        bus__sendv(b, b->cmd, 3, srem2);
        bus__publish_notice(b, "*", NULL, 0);
    }
    /* answered after everything sent before it */
    const char *ping[1] = {"PING"};
    size_t lens[1] = {4};
    if (bus__send(b, b->cmd, &bus__op_close, 1, ping, lens)) {
        bus__finish(b);
        return;
    }
    uv_timer_start(&b->t_close, bus__close_timeout_cb, BUS__CLOSE_WAIT_MS, 0);
}

/* ---- the inbox ---- */

static void bus__wake_cb(uv_async_t *a)
{
    bus_t *b = a->data;
    pthread_mutex_lock(&b->mu);
    bus_req_t *q = b->rq_head;
    b->rq_head = b->rq_tail = NULL;
    int closing = b->closing, reg = b->reg_dirty;
    int subs = b->subs_dirty != NULL, pres = b->pres_dirty != NULL;
    b->reg_dirty = 0;
    pthread_mutex_unlock(&b->mu);
    if (subs) bus__subs_reconcile(b);
    if (pres) bus__pres_reconcile(b);
    if (reg && b->state == BUS__UP && !b->close_begun) bus__write_node(b);
    while (q) {
        bus_req_t *next = q->next;
        bus__dispatch(b, q);
        q = next;
    }
    if (closing) bus__begin_close(b);
}

static void *bus__main(void *arg)
{
    bus_t *b = arg;
    bus__connect(b);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- the API ---- */

static void bus__mark_sub(bus_t *b, bus_sub_t *s)
{
    if (!s->dirty) {
        s->dirty = 1;
        s->dirty_next = b->subs_dirty;
        b->subs_dirty = s;
    }
    uv_async_send(&b->wake);
}

static void bus__mark_pres(bus_t *b, bus_pres_t *p)
{
    if (!p->dirty) {
        p->dirty = 1;
        p->dirty_next = b->pres_dirty;
        b->pres_dirty = p;
    }
    uv_async_send(&b->wake);
}

static int bus__name_ok(const char *s, size_t *len)
{
    if (!s) return 0;
    *len = strnlen(s, BUS__NAME_MAX + 1);
    return *len > 0 && *len <= BUS__NAME_MAX;
}

int bus_subscribe(bus_t *b, const char *channel)
{
    size_t len;
    if (!b || !bus__name_ok(channel, &len)) return SORI_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    bus_sub_t *s = b->closing ? NULL : map_get(&b->subs, channel, len);
    if (b->closing) {
        rc = SORI_ECLOSED;
    } else if (!s) {
        s = calloc(1, sizeof *s + len + 1);
        if (!s || map_put(&b->subs, channel, len, s)) {
            free(s);
            s = NULL;
            rc = SORI_ENOMEM;
        } else {
            memcpy(s->name, channel, len);
            s->len = len;
        }
    }
    if (s && s->count++ == 0) bus__mark_sub(b, s);
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int bus_unsubscribe(bus_t *b, const char *channel)
{
    size_t len;
    if (!b || !bus__name_ok(channel, &len)) return SORI_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    bus_sub_t *s = b->closing ? NULL : map_get(&b->subs, channel, len);
    if (b->closing) rc = SORI_ECLOSED;
    else if (!s || s->count <= 0) rc = SORI_ENOTFOUND;
    else if (--s->count == 0) bus__mark_sub(b, s);
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int bus_presence_set(bus_t *b, const char *user, int online)
{
    size_t len;
    if (!b || !bus__name_ok(user, &len)) return SORI_EINVAL;
    online = online != 0;
    int rc = 0;
    pthread_mutex_lock(&b->mu);
    bus_pres_t *p = b->closing ? NULL : map_get(&b->pres, user, len);
    if (b->closing) {
        rc = SORI_ECLOSED;
    } else if (!p && online) {
        p = calloc(1, sizeof *p + len + 1);
        if (!p || map_put(&b->pres, user, len, p)) {
            free(p);
            p = NULL;
            rc = SORI_ENOMEM;
        } else {
            memcpy(p->name, user, len);
            p->len = len;
        }
    }
    if (p && p->online != online) {
        p->online = online;
        bus__mark_pres(b, p);
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

int bus_register(bus_t *b, const char *ws_url, double (*load)(void))
{
    if (!b || !ws_url || !ws_url[0] || strlen(ws_url) > BUS__URL_MAX) return SORI_EINVAL;
    json_t *check = json_string(ws_url); /* valid UTF-8? */
    if (!check) return SORI_EINVAL;
    json_decref(check);
    char *copy = strdup(ws_url);
    if (!copy) return SORI_ENOMEM;
    pthread_mutex_lock(&b->mu);
    if (b->closing) {
        pthread_mutex_unlock(&b->mu);
        free(copy);
        return SORI_ECLOSED;
    }
    free(b->reg_url);
    b->reg_url = copy;
    b->reg_load = load;
    b->reg_dirty = 1;
    uv_async_send(&b->wake);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

int bus_publish(bus_t *b, const char *channel, const void *data, size_t len, void (*done)(void *arg, int status),
                void *arg)
{
    size_t clen;
    if (!b || !bus__name_ok(channel, &clen) || (len && !data)) return SORI_EINVAL;
    if (len > b->o.queue_max_bytes) return SORI_E2BIG;
    if (!atomic_load_explicit(&b->up, memory_order_acquire)) return SORI_ECLOSED;
    bus_req_t *r = bus__req_new(BUS__REQ_PUBLISH, 3, clen + b->prefix_len + len);
    if (!r) return SORI_ENOMEM;
    bus__req_static(r, 0, "PUBLISH", 7);
    bus__req_copy(r, 1, channel, clen, NULL, 0);
    bus__req_copy(r, 2, b->prefix, b->prefix_len, data, len);
    r->cb.pub = done;
    r->arg = arg;
    return bus__submit(b, r);
}

/* Commands that would break the shared command connection: subscribe
 * mode, connection state, transactions (the bus's own commands would land
 * inside them), and blocking commands (the connection would stall). */
static const char *const bus__refused[] = {
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE", "MONITOR",
    "SELECT", "AUTH", "HELLO", "QUIT", "RESET", "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SYNC", "PSYNC",
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF",
};

static int bus__word_is(const char *w, size_t len, const char *name)
{
    return strlen(name) == len && !strncasecmp(w, name, len);
}

int bus_command(bus_t *b, int argc, const char **argv, const size_t *argvlen,
                void (*cb)(void *arg, int status, const bus_reply_t *reply), void *arg)
{
    if (!b || argc < 1 || argc > 1 << 20 || !argv || !cb) return SORI_EINVAL;
    size_t total = 0;
    for (int i = 0; i < argc; i++) {
        if (!argv[i]) return SORI_EINVAL;
        total += argvlen ? argvlen[i] : strlen(argv[i]);
    }
    size_t l0 = argvlen ? argvlen[0] : strlen(argv[0]);
    for (size_t i = 0; i < sizeof bus__refused / sizeof bus__refused[0]; i++)
        if (bus__word_is(argv[0], l0, bus__refused[i])) return SORI_EINVAL;
    /* CLIENT REPLY OFF|SKIP would desynchronise replies and callbacks */
    if (argc > 1 && bus__word_is(argv[0], l0, "CLIENT") &&
        bus__word_is(argv[1], argvlen ? argvlen[1] : strlen(argv[1]), "REPLY"))
        return SORI_EINVAL;
    if (total > b->o.queue_max_bytes) return SORI_E2BIG;
    if (!atomic_load_explicit(&b->up, memory_order_acquire)) return SORI_ECLOSED;
    bus_req_t *r = bus__req_new(BUS__REQ_COMMAND, argc, total);
    if (!r) return SORI_ENOMEM;
    for (int i = 0; i < argc; i++) bus__req_copy(r, i, argv[i], argvlen ? argvlen[i] : strlen(argv[i]), NULL, 0);
    r->cb.cmd = cb;
    r->arg = arg;
    return bus__submit(b, r);
}

int bus_presence_query(bus_t *b, const char *const *users, size_t n,
                       void (*cb)(void *arg, int status, const uint8_t *online), void *arg)
{
    if (!b || !users || n < 1 || n > BUS__QUERY_MAX || !cb) return SORI_EINVAL;
    size_t total = 0, len;
    for (size_t i = 0; i < n; i++) {
        if (!bus__name_ok(users[i], &len)) return SORI_EINVAL;
        total += len;
    }
    if (!atomic_load_explicit(&b->up, memory_order_acquire)) return SORI_ECLOSED;
    bus_req_t *r = bus__req_new(BUS__REQ_QUERY, (int)n + 3, total);
    if (!r) return SORI_ENOMEM;
    bus__req_static(r, 0, "EVAL", 4);
    bus__req_static(r, 1, bus__script_query, sizeof bus__script_query - 1);
    bus__req_static(r, 2, "0", 1);
    for (size_t i = 0; i < n; i++) bus__req_copy(r, (int)i + 3, users[i], strlen(users[i]), NULL, 0);
    r->n = n;
    r->cb.query = cb;
    r->arg = arg;
    return bus__submit(b, r);
}

int bus_discover(bus_t *b, void (*cb)(void *arg, int status, const bus_node_t *nodes, size_t n), void *arg)
{
    if (!b || !cb) return SORI_EINVAL;
    if (!atomic_load_explicit(&b->up, memory_order_acquire)) return SORI_ECLOSED;
    bus_req_t *r = bus__req_new(BUS__REQ_DISCOVER, 3, 0);
    if (!r) return SORI_ENOMEM;
    bus__req_static(r, 0, "EVAL", 4);
    bus__req_static(r, 1, bus__script_discover, sizeof bus__script_discover - 1);
    bus__req_static(r, 2, "0", 1);
    r->cb.disc = cb;
    r->arg = arg;
    return bus__submit(b, r);
}

int bus_up(const bus_t *b)
{
    return b && atomic_load_explicit(&((bus_t *)b)->up, memory_order_acquire);
}

void bus_stats(const bus_t *b, bus_stats_t *out)
{
    bus_t *m = (bus_t *)b;
#define BUS__GET(c) out->c = atomic_load_explicit(&m->n.c, memory_order_relaxed)
    BUS__GET(published);
    BUS__GET(publish_failed);
    BUS__GET(queue_full);
    BUS__GET(received);
    BUS__GET(own_dropped);
    BUS__GET(malformed);
    BUS__GET(ups);
    BUS__GET(downs);
    BUS__GET(connect_failed);
#undef BUS__GET
}

/* ---- life cycle ---- */

static void bus__free_entry(const char *key, size_t klen, void *value, void *arg)
{
    (void)key, (void)klen, (void)arg;
    free(value);
}

/* Frees what bus_open built (the thread has exited or never started). */
static void bus__free(bus_t *b)
{
    for (bus_req_t *q = b->rq_head, *next; q; q = next) {
        next = q->next;
        free(q);
    }
    map_each(&b->subs, bus__free_entry, NULL);
    map_free(&b->subs);
    map_each(&b->pres, bus__free_entry, NULL);
    map_free(&b->pres);
    map_free(&b->sent);
    free(b->scratch);
    free(b->reg_url);
    free(b->host);
    free(b->user);
    free(b->pass);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* bus_open failed after the loop was set up: closes its handles (as
 * bus__finish would on the bus thread) and frees everything. */
static void bus__abort_open(bus_t *b)
{
    bus__finish(b);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
    bus__free(b);
}

static int bus__min(int a, int b)
{
    return a < b ? a : b;
}

static int bus__opt(int v, int def, int lo, int hi, const char *name, char *err, size_t errlen)
{
    if (v == 0) return def;
    if (v < lo || v > hi) {
        snprintf(err, errlen, "bus: %s %d is outside %d..%d", name, v, lo, hi);
        return -1;
    }
    return v;
}

bus_t *bus_open_opts(const char *url, int node_id, const bus_handler_t *h, const bus_opts_t *opts, char *err,
                     size_t errlen)
{
    bus_url_t u;
    bus_opts_t o = opts ? *opts : (bus_opts_t){0};
    if (node_id < 0) {
        snprintf(err, errlen, "bus: node id %d is negative", node_id);
        return NULL;
    }
    if (!o.queue_max_msgs) o.queue_max_msgs = 65536;
    if (!o.queue_max_bytes) o.queue_max_bytes = (size_t)64 << 20;
    if ((o.backoff_min_ms = bus__opt(o.backoff_min_ms, 100, 1, 60000, "backoff_min_ms", err, errlen)) < 0 ||
        (o.backoff_max_ms = bus__opt(o.backoff_max_ms, 5000, o.backoff_min_ms, 600000, "backoff_max_ms", err,
                                     errlen)) < 0 ||
        (o.connect_timeout_ms = bus__opt(o.connect_timeout_ms, 5000, 10, 600000, "connect_timeout_ms", err,
                                         errlen)) < 0 ||
        (o.reply_timeout_ms = bus__opt(o.reply_timeout_ms, 10000, 10, 600000, "reply_timeout_ms", err, errlen)) <
            0 ||
        (o.presence_ttl_ms = bus__opt(o.presence_ttl_ms, 30000, 100, 86400000, "presence_ttl_ms", err, errlen)) <
            0 ||
        (o.presence_refresh_ms = bus__opt(o.presence_refresh_ms, bus__min(10000, o.presence_ttl_ms / 3), 10,
                                          o.presence_ttl_ms - 1,
                                          "presence_refresh_ms", err, errlen)) < 0 ||
        (o.node_ttl_ms = bus__opt(o.node_ttl_ms, 15000, 100, 86400000, "node_ttl_ms", err, errlen)) < 0 ||
        (o.node_refresh_ms = bus__opt(o.node_refresh_ms, bus__min(5000, o.node_ttl_ms / 3), 10,
                                      o.node_ttl_ms - 1, "node_refresh_ms", err, errlen)) < 0)
        return NULL;
    if (bus__parse_url(url, &u, err, errlen)) return NULL;
    bus_t *b = calloc(1, sizeof *b);
    if (!b) {
        bus__url_free(&u);
        snprintf(err, errlen, "bus: out of memory");
        return NULL;
    }
    b->node_id = node_id;
    snprintf(b->node_str, sizeof b->node_str, "%d", node_id);
    b->prefix_len = (size_t)snprintf(b->prefix, sizeof b->prefix, "%d:", node_id);
    snprintf(b->key_online, sizeof b->key_online, BUS__KEY_ONLINE "%d", node_id);
    snprintf(b->key_node, sizeof b->key_node, BUS__KEY_NODE "%d", node_id);
    snprintf(b->ttl_presence, sizeof b->ttl_presence, "%d", o.presence_ttl_ms);
    snprintf(b->ttl_node, sizeof b->ttl_node, "%d", o.node_ttl_ms);
    if (h) b->h = *h;
    b->o = o;
    b->host = u.host;
    b->user = u.user;
    b->pass = u.pass;
    b->port = u.port;
    b->db = u.db;
    b->state = BUS__DOWN;
    b->backoff_ms = o.backoff_min_ms;
    pthread_mutex_init(&b->mu, NULL);
    uv_loop_init(&b->loop);
    uv_async_init(&b->loop, &b->wake, bus__wake_cb);
    b->wake.data = b;
    uv_timer_t *timers[] = {&b->t_retry, &b->t_reap, &b->t_handshake, &b->t_tick,
                            &b->t_presence, &b->t_node, &b->t_close};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(&b->loop, timers[i]);
        timers[i]->data = b;
    }
    /* the presence notices of the other nodes, for as long as the bus lives */
    int rc = bus_subscribe(b, BUS_PRESENCE_CHANNEL);
    if (rc) {
        snprintf(err, errlen, "bus: out of memory");
        bus__abort_open(b);
        return NULL;
    }
    /* The bus thread blocks every signal (they are the main loop's
     * business; a write to a dead Redis socket then fails with EPIPE instead
     * of raising SIGPIPE). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&b->thread, NULL, bus__main, b);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        snprintf(err, errlen, "bus: cannot start the bus thread: %s", strerror(rc));
        bus__abort_open(b);
        return NULL;
    }
    pthread_setname_np(b->thread, "sori-bus");
    LOG_INFO("bus", "node %d: redis bus to %s:%d%s", node_id, b->host, b->port, b->pass ? " (with AUTH)" : "");
    return b;
}

bus_t *bus_open(const char *url, int node_id, const bus_handler_t *h, char *err, size_t errlen)
{
    return bus_open_opts(url, node_id, h, NULL, err, errlen);
}

void bus_close(bus_t *b)
{
    if (!b) return;
    if (pthread_equal(pthread_self(), b->thread)) {
        LOG_ERROR("bus", "bus_close called from a bus callback: refused");
        return;
    }
    pthread_mutex_lock(&b->mu);
    b->closing = 1;
    uv_async_send(&b->wake);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    if (uv_loop_close(&b->loop)) LOG_ERROR("bus", "closing: the loop still had handles");
    bus_stats_t st;
    bus_stats(b, &st);
    LOG_INFO("bus", "node %d: bus closed (%llu published, %llu received)", b->node_id,
             (unsigned long long)st.published, (unsigned long long)st.received);
    bus__free(b);
}

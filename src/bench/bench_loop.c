/*
 * bench_loop.c: the bench's loop threads: raw epoll, non-blocking sockets,
 * the WebSocket client side of the handshake, and the scenarios' reactions
 * to what the server sends.
 *
 * Each loop thread owns a fixed array of connections and never shares one.
 * The loop is edge-triggered: a readable socket is read in 64 KiB recv()s
 * into the thread's scratch buffer until a short read (the socket is then
 * drained; new data raises a new edge), the frames are handled in place, and
 * only an incomplete last frame is copied into the connection's own carry
 * buffer (bounded by BENCH_FRAME_MAX, so a connection never holds more than
 * one frame of input). Almost all of the bench's CPU is the kernel's TCP
 * receive path: on loopback it also pays for the server socket's handling
 * of the ACKs it sends. Handlers only append to a
 * connection's output buffer and put it on the thread's dirty list; the end
 * of each turn writes every dirty connection once (one send() per connection
 * per turn). Output is bounded too: a publisher whose unsent bytes exceed
 * BENCH_OUT_MAX skips sends and counts them as stalls.
 *
 * Outgoing messages are built once per connection as a complete masked
 * frame (a random, fixed mask per connection) whose text and ref both hold a
 * fixed-width timestamp, "t=" and 19 decimal digits of CLOCK_REALTIME µs.
 * Sending copies the frame and rewrites only those 2 x 19 bytes, masked.
 * Received frames are not parsed as JSON: the type is read from the
 * `{"type":"` prefix the server writes first, and seq, the timestamp, ref
 * and from are found with memmem. That is enough because every text this
 * bench reads back is one it wrote.
 *
 * --peer-protocol nchan (fanout and connections only) speaks to an Nchan
 * pubsub location instead, for the comparison in bench/compare.sh: each
 * connection opens <url path><room>, so the connection is the subscription;
 * there is no hello, create or join (the upgrade stands for hello, and the
 * join is counted at once with no seq); a send publishes a message-shaped
 * JSON text {"type":"message","room","from","text","ref"} that Nchan relays
 * verbatim to every subscriber of the channel, the publisher included; and
 * since Nchan answers nothing to a websocket publish, the publisher's own
 * copy stands for the ack. Without seq, loss is counted (expected minus
 * delivered) but duplicates, order and gaps are not checked.
 *
 * wss:// targets speak TLS (OpenSSL, one client context, certificates not
 * checked: the bench measures servers it started itself): a connection
 * shakes hands (BC_TLS) before its upgrade request, then reads and writes
 * through SSL_read/SSL_write on the same buffers; a read drains OpenSSL
 * until it wants the socket again, so the edge-triggered loop stays right.
 *
 * With several URLs (--url A,B, --pub-url) each connection has a target
 * (bench_target_of: by role, connection or room, see --spread), and a
 * delivery whose sender (the "from" of the message, b<tag>.<gidx>) has
 * another target than its receiver counts as crossing servers.
 *
 * Phases come from the coordinator (bench_g.phase, with an eventfd to wake
 * the thread); open-loop publishers are paced by a timerfd. With nothing to
 * do the thread sleeps in epoll_wait with no timeout.
 */
#include "bench/bench.h"
#include "util/base64.h"
#include "util/err.h"
#include "ws/ws_frame.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define BENCH_READ (64u * 1024)           /* one recv() */
#define BENCH_FRAME_MAX (1u << 20)        /* largest frame accepted from the server */
#define BENCH_CARRY_MAX (BENCH_FRAME_MAX + WS_FRAME_HEADER_MAX) /* per-connection input */
#define BENCH_HEAD_MAX 8192               /* handshake response head */
#define BENCH_OUT_MAX (4u << 20)          /* unsent output per connection */
#define BENCH_PACE_MIN_NS 50000           /* open loop: at most 20 000 timer wake-ups/s */

enum { BC_IDLE, BC_CONNECTING, BC_TLS, BC_HANDSHAKE, BC_HELLO, BC_OPEN, BC_CLOSING, BC_CLOSED };
enum { R_SUB, R_PUB, R_DM_A, R_DM_B, R_DUR, R_IDLE };

typedef struct bench_conn {
    int fd;
    SSL *ssl;                  /* wss:// targets */
    uint8_t state, role, creator, epout, dirty, joined, sent_close;
    uint8_t await_create, await_join; /* a setup reply is due */
    uint8_t tg;                /* its server: bench_g.o.tg[tg] */
    uint8_t mask[4];
    uint32_t gidx, room, inflight;
    int64_t last_seq;          /* -1: not known yet */
    uint64_t last_send_us;     /* dm initiator: for the round trip */
    char user[40];
    uint8_t user_len;
    char accept[32];           /* expected Sec-WebSocket-Accept */
    uint8_t *tmpl;             /* the masked send frame */
    uint32_t tmpl_len, tmpl_hdr;
    uint32_t ts_off[2];        /* payload offsets of the two digit fields */
    uint8_t *out;
    uint32_t out_len, out_off, out_cap;
    uint8_t *in;
    uint32_t in_len, in_cap;
    struct bench_conn *next_dirty;
} bench_conn_t;

static const ws_parse_opts_t bench__parse_opts = {.allowed_rsv = 0, .require_mask = 0, .forbid_mask = 1};

/* ---- small helpers ---- */

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t bench_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

/* One writer per counter: a plain load and store, no locked instruction. */
#define BUMP(x) atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + 1, memory_order_relaxed)
#define BUMPN(x, n) atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n), memory_order_relaxed)

static uint64_t bench__rand(bench_thread_t *t)
{
    /* xorshift64* */
    uint64_t x = t->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    t->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void bench__note(bench_thread_t *t, const char *what, const char *detail)
{
    if (t->st.first_error[0]) return;
    snprintf(t->st.first_error, sizeof t->st.first_error, "%s%s%.120s", what, detail ? ": " : "",
             detail ? detail : "");
}

static void bench__ts_digits(char d[BENCH_TS_DIGITS], uint64_t v)
{
    for (int i = BENCH_TS_DIGITS - 1; i >= 0; i--) {
        d[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* 19 digits at p -> value; UINT64_MAX if one is not a digit. */
static uint64_t bench__ts_parse(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < BENCH_TS_DIGITS; i++) {
        unsigned d = (unsigned)p[i] - '0';
        if (d > 9) return UINT64_MAX;
        v = v * 10 + d;
    }
    return v;
}

/* The integer after `key` in p[0..n), or -1; *at = where key starts (or NULL). */
static int64_t bench__find_int(const uint8_t *p, size_t n, const char *key, size_t klen, const uint8_t **at)
{
    const uint8_t *q = memmem(p, n, key, klen);
    if (at) *at = q;
    if (!q) return -1;
    q += klen;
    const uint8_t *end = p + n;
    if (q >= end || (unsigned)(*q - '0') > 9) return -1;
    int64_t v = 0;
    while (q < end && (unsigned)(*q - '0') <= 9 && v < INT64_MAX / 10) v = v * 10 + (*q++ - '0');
    return v;
}

/* The timestamp after `key` ("...t=") in p[0..n), or UINT64_MAX. */
static uint64_t bench__find_ts(const uint8_t *p, size_t n, const char *key, size_t klen)
{
    const uint8_t *q = memmem(p, n, key, klen);
    if (!q || (size_t)(p + n - (q + klen)) < BENCH_TS_DIGITS) return UINT64_MAX;
    return bench__ts_parse(q + klen);
}

static void bench__user_name(char *out, size_t cap, uint32_t gidx)
{
    snprintf(out, cap, "b%s.%u", bench_g.o.tag, gidx);
}

static void bench__room_name(char *out, size_t cap, uint32_t room)
{
    snprintf(out, cap, "bench.%s.%u", bench_g.o.tag, room);
}

/* ---- output ---- */

static void bench__mark_dirty(bench_thread_t *t, bench_conn_t *c)
{
    if (c->dirty) return;
    c->dirty = 1;
    c->next_dirty = t->dirty;
    t->dirty = c;
}

/* Room for n more output bytes, or NULL past BENCH_OUT_MAX (or no memory). */
static uint8_t *bench__out_reserve(bench_conn_t *c, size_t n)
{
    if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len - c->out_off + n > BENCH_OUT_MAX) return NULL;
    if (c->out_len + n > c->out_cap) {
        if (c->out_off) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_len + n > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 512;
            while (cap < c->out_len + n) cap *= 2;
            uint8_t *p = realloc(c->out, cap);
            if (!p) return NULL;
            c->out = p;
            c->out_cap = (uint32_t)cap;
        }
    }
    return c->out + c->out_len;
}

/* Queues one masked frame with payload p[0..n). 0 or -1 (output full). */
static int bench__queue_frame(bench_thread_t *t, bench_conn_t *c, int opcode, const void *p, size_t n)
{
    uint8_t *o = bench__out_reserve(c, WS_FRAME_HEADER_MAX + n);
    if (!o) return -1;
    size_t h = ws_frame_header_write(o, opcode, 1, 0, n, c->mask);
    memcpy(o + h, p, n);
    ws_mask_apply(o + h, n, c->mask, 0);
    c->out_len += (uint32_t)(h + n);
    bench__mark_dirty(t, c);
    return 0;
}

static int bench__queue_text(bench_thread_t *t, bench_conn_t *c, const char *s, size_t n)
{
    return bench__queue_frame(t, c, WS_OP_TEXT, s, n);
}

/* ---- connection life ---- */

static void bench__epoll_set(bench_thread_t *t, bench_conn_t *c, int want_out)
{
    if (c->epout == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET | (want_out ? EPOLLOUT : 0),
                             .data.u64 = (uint64_t)(c - t->conns) + 2};
    epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->epout = (uint8_t)want_out;
}

/* Closes the socket and frees the buffers; the slot stays (it may still be
 * on the dirty list, which checks the state). */
static void bench__close(bench_thread_t *t, bench_conn_t *c)
{
    if (c->state == BC_CLOSED) return;
    int was_pending = c->state >= BC_CONNECTING && c->state <= BC_HELLO;
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = BC_CLOSED;
    free(c->out);
    free(c->in);
    c->out = c->in = NULL;
    c->out_len = c->out_off = c->out_cap = c->in_len = c->in_cap = 0;
    /* what this connection was waiting for will never come: settle it so the
     * coordinator's barriers and the drain do not wait for it */
    if (c->inflight) BUMPN(t->live.replies, c->inflight);
    c->inflight = 0;
    if (c->await_create) BUMP(t->live.created);
    if (c->await_join) BUMP(t->live.join_failed);
    c->await_create = c->await_join = 0;
    BUMP(t->live.closed);
    if (was_pending) t->pending--; /* the loop starts the next connect */
}

/* A connection that did not get as far as `hello`. */
static void bench__fail(bench_thread_t *t, bench_conn_t *c, const char *why, const char *detail)
{
    bench__note(t, why, detail);
    BUMP(t->live.failed);
    bench__close(t, c);
}

/* The server ended an open connection (close frame, EOF or reset). */
static void bench__lost(bench_thread_t *t, bench_conn_t *c, const char *why)
{
    if (c->state == BC_CLOSING) {
        bench__close(t, c);
        return;
    }
    if (c->state < BC_OPEN) {
        bench__fail(t, c, "handshake failed", why);
        return;
    }
    t->st.server_closes++;
    bench__note(t, "server closed a connection", why);
    bench__close(t, c);
}

static void bench__start(bench_thread_t *t, bench_conn_t *c)
{
    const bench_opts_t *o = &bench_g.o;
    const bench_target_t *tg = &o->tg[c->tg];
    int fd = socket(tg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->state = BC_CLOSED;
        BUMP(t->live.failed);
        BUMP(t->live.closed);
        bench__note(t, "socket", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = BC_CONNECTING;
    t->pending++;
    if (o->sources > 1) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + c->gidx % (uint32_t)o->sources);
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
            bench__fail(t, c, "bind to a source address", strerror(errno));
            return;
        }
    }
    if (connect(fd, (const struct sockaddr *)&tg->addr, tg->addrlen) != 0 && errno != EINPROGRESS) {
        bench__fail(t, c, "connect", strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = (uint64_t)(c - t->conns) + 2};
    c->epout = 1;
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) bench__fail(t, c, "epoll_ctl", strerror(errno));
}

static void bench__start_connects(bench_thread_t *t)
{
    while (t->phase == BP_CONNECT && t->pending < t->max_pending && t->next_connect < t->nconns)
        bench__start(t, &t->conns[t->next_connect++]);
}

/* ---- TLS (wss://) ---- */

static SSL_CTX *bench__tls_ctx;
static pthread_once_t bench__tls_once = PTHREAD_ONCE_INIT;

static void bench__tls_init(void)
{
    bench__tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!bench__tls_ctx) return;
    SSL_CTX_set_verify(bench__tls_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(bench__tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                         SSL_MODE_RELEASE_BUFFERS);
}

/* recv() or SSL_read into buf: bytes, 0 at the end, -1 with errno (EAGAIN:
 * drained). *again: a TLS error is waiting behind the bytes returned (read
 * once more: no new edge would come for it). */
static ssize_t bench__recv(bench_conn_t *c, uint8_t *buf, size_t len, int *again)
{
    *again = 0;
    if (!c->ssl) {
        ssize_t r;
        do
            r = recv(c->fd, buf, len, 0);
        while (r < 0 && errno == EINTR);
        return r;
    }
    size_t got = 0;
    while (got < len) {
        size_t n = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(c->ssl, buf + got, len - got, &n) > 0) {
            got += n;
            continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        int drained = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
        if (got) {
            *again = !drained;
            break;
        }
        if (drained) {
            errno = EAGAIN;
            return -1;
        }
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !ERR_peek_error() && !errno)) return 0;
        ERR_clear_error();
        if (!errno) errno = EPROTO;
        return -1;
    }
    return (ssize_t)got;
}

/* send() or SSL_write: bytes written, or -1 with errno (EAGAIN: full). A
 * TLS write retried after EAGAIN offers the same bytes (the output buffer
 * only grows at its end; a compaction moves them, which the mode allows). */
static ssize_t bench__send(bench_conn_t *c, const uint8_t *p, size_t n)
{
    if (!c->ssl) return send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    size_t w = 0;
    ERR_clear_error();
    if (SSL_write_ex(c->ssl, p, n, &w) > 0) return (ssize_t)w;
    int e = SSL_get_error(c->ssl, 0);
    ERR_clear_error();
    errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
    return -1;
}

static void bench__send_upgrade(bench_thread_t *t, bench_conn_t *c);

/* BC_TLS: one step of the client handshake; the upgrade request follows. */
static void bench__tls_step(bench_thread_t *t, bench_conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        bench__send_upgrade(t, c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        bench__epoll_set(t, c, e == SSL_ERROR_WANT_WRITE);
        return;
    }
    char why[160] = "connection closed";
    unsigned long code = ERR_get_error();
    if (code) ERR_error_string_n(code, why, sizeof why);
    ERR_clear_error();
    bench__fail(t, c, "TLS handshake", why);
}

/* The socket connected: shake hands (wss://), then send the upgrade request. */
static void bench__connected(bench_thread_t *t, bench_conn_t *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err) {
        bench__fail(t, c, "connect", strerror(err));
        return;
    }
    if (bench_g.o.tg[c->tg].tls) {
        pthread_once(&bench__tls_once, bench__tls_init);
        c->ssl = bench__tls_ctx ? SSL_new(bench__tls_ctx) : NULL;
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
            ERR_clear_error();
            bench__fail(t, c, "TLS", "cannot make a TLS session");
            return;
        }
        SSL_set_connect_state(c->ssl);
        c->state = BC_TLS;
        bench__tls_step(t, c);
        return;
    }
    bench__send_upgrade(t, c);
}

static void bench__send_upgrade(bench_thread_t *t, bench_conn_t *c)
{
    const bench_opts_t *o = &bench_g.o;
    const bench_target_t *tg = &o->tg[c->tg];
    unsigned char raw[16];
    uint64_t r1 = bench__rand(t), r2 = bench__rand(t);
    memcpy(raw, &r1, 8);
    memcpy(raw + 8, &r2, 8);
    char key[32];
    base64_encode(raw, 16, key, 0);
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char cat[24 + sizeof guid], digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    memcpy(cat, key, 24);
    memcpy(cat + 24, guid, sizeof guid - 1);
    if (!EVP_Digest(cat, 24 + sizeof guid - 1, digest, &dlen, EVP_sha1(), NULL) || dlen != 20) {
        bench__fail(t, c, "SHA-1", NULL);
        return;
    }
    base64_encode(digest, 20, c->accept, 0);
    char req[1024], room[96] = "";
    if (o->nchan) bench__room_name(room, sizeof room, c->room); /* the channel is in the path */
    int n = snprintf(req, sizeof req,
                     "GET %s%s%cuser=%s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     tg->path, room, strchr(tg->path, '?') ? '&' : '?', c->user, tg->host, tg->port_str, key);
    uint8_t *p = bench__out_reserve(c, (size_t)n);
    if (n <= 0 || (size_t)n >= sizeof req || !p) {
        bench__fail(t, c, "handshake request too long", NULL);
        return;
    }
    memcpy(p, req, (size_t)n);
    c->out_len += (uint32_t)n;
    c->state = BC_HANDSHAKE;
    bench__epoll_set(t, c, 0);
    bench__mark_dirty(t, c);
}

/* Parses the upgrade response in p[0..n): head length, 0 for more, -1 bad
 * (with *why set, possibly pointing into status[0..cap)). */
static int bench__response(bench_conn_t *c, const uint8_t *p, size_t n, const char **why, char *status,
                           size_t cap)
{
    const uint8_t *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n > BENCH_HEAD_MAX) {
            *why = "response head too long";
            return -1;
        }
        return 0;
    }
    size_t head = (size_t)(end - p) + 4;
    if (head < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0) {
        *why = "not an HTTP/1.1 response";
        return -1;
    }
    if (memcmp(p + 9, "101", 3) != 0) {
        const uint8_t *eol = memchr(p, '\r', head);
        size_t l = eol ? (size_t)(eol - p) : 12;
        snprintf(status, cap, "%.*s", (int)(l > 60 ? 60 : l), (const char *)p);
        *why = status;
        return -1;
    }
    /* header lines: "name: value\r\n"; names compared whole, by length first */
    const uint8_t *line = memchr(p, '\n', head) + 1;
    while (line < end) {
        const uint8_t *eol = memchr(line, '\r', (size_t)(end + 2 - line));
        if (!eol) break;
        const uint8_t *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon && colon - line == 20 && !strncasecmp((const char *)line, "Sec-WebSocket-Accept", 20)) {
            const uint8_t *v = colon + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const uint8_t *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            if ((size_t)(ve - v) == 28 && !memcmp(v, c->accept, 28)) return (int)head;
            *why = "wrong Sec-WebSocket-Accept";
            return -1;
        }
        line = eol + 2;
    }
    *why = "no Sec-WebSocket-Accept";
    return -1;
}

/* ---- sending messages ---- */

/* Builds the connection's send frame: {"type":"send","room":R,...} or
 * {"type":"dm","to":U,...}, text "t=<19 digits>" padded to --size, ref
 * "t=<19 digits>", masked with the connection's mask. */
static int bench__build_template(bench_conn_t *c)
{
    const bench_opts_t *o = &bench_g.o;
    char target[96];
    const char *head;
    if (c->role == R_DM_A || c->role == R_DM_B) {
        head = "{\"type\":\"dm\",\"to\":\"";
        bench__user_name(target, sizeof target, c->gidx ^ 1u);
    } else {
        head = "{\"type\":\"send\",\"room\":\"";
        bench__room_name(target, sizeof target, c->room);
    }
    char nchan_head[160];
    if (o->nchan) { /* published verbatim: shaped like the message event, with from */
        snprintf(nchan_head, sizeof nchan_head, "{\"type\":\"message\",\"from\":\"%s\",\"room\":\"", c->user);
        head = nchan_head;
    }
    size_t pad = (size_t)o->size - BENCH_TS_TEXT;
    size_t cap = 256 + (size_t)o->size;
    char *json = malloc(cap);
    if (!json) return -1;
    int n = snprintf(json, cap, "%s%s\",\"text\":\"t=", head, target);
    c->ts_off[0] = (uint32_t)n;
    memset(json + n, '0', BENCH_TS_DIGITS);
    n += BENCH_TS_DIGITS;
    memset(json + n, 'x', pad);
    n += (int)pad;
    n += snprintf(json + n, cap - (size_t)n, "\",\"ref\":\"t=");
    c->ts_off[1] = (uint32_t)n;
    memset(json + n, '0', BENCH_TS_DIGITS);
    n += BENCH_TS_DIGITS;
    n += snprintf(json + n, cap - (size_t)n, "\"}");
    c->tmpl = malloc(WS_FRAME_HEADER_MAX + (size_t)n);
    if (!c->tmpl) {
        free(json);
        return -1;
    }
    c->tmpl_hdr = (uint32_t)ws_frame_header_write(c->tmpl, WS_OP_TEXT, 1, 0, (uint64_t)n, c->mask);
    memcpy(c->tmpl + c->tmpl_hdr, json, (size_t)n);
    ws_mask_apply(c->tmpl + c->tmpl_hdr, (size_t)n, c->mask, 0);
    c->tmpl_len = c->tmpl_hdr + (uint32_t)n;
    free(json);
    return 0;
}

/* Queues one message stamped now. 0, or -1 when the output is full. */
static int bench__send_msg(bench_thread_t *t, bench_conn_t *c, uint64_t now_us)
{
    uint8_t *p = bench__out_reserve(c, c->tmpl_len);
    if (!p) {
        t->st.stalls++;
        return -1;
    }
    memcpy(p, c->tmpl, c->tmpl_len);
    char d[BENCH_TS_DIGITS];
    bench__ts_digits(d, now_us);
    for (int k = 0; k < 2; k++) {
        uint32_t off = c->ts_off[k];
        uint8_t *q = p + c->tmpl_hdr + off;
        for (uint32_t j = 0; j < BENCH_TS_DIGITS; j++) q[j] = (uint8_t)d[j] ^ c->mask[(off + j) & 3];
    }
    c->out_len += c->tmpl_len;
    c->inflight++;
    c->last_send_us = now_us;
    BUMP(t->live.sent);
    if (atomic_load_explicit(&bench_g.measuring, memory_order_relaxed)) t->st.w_sent++;
    bench__mark_dirty(t, c);
    return 0;
}

/* ---- received frames ---- */

static int bench__running(const bench_thread_t *t) { return t->phase == BP_RUN; }

/* The global index of the sender named in p[0..n) ("from":"b<tag>.<n>"),
 * or -1 when it is not one of this run's connections. */
static int64_t bench__sender(const uint8_t *p, size_t n)
{
    const uint8_t *f = memmem(p, n, "\"from\":\"b", 9);
    if (!f) return -1;
    f += 9;
    size_t tl = strlen(bench_g.o.tag);
    if ((size_t)(p + n - f) <= tl + 1 || memcmp(f, bench_g.o.tag, tl) || f[tl] != '.') return -1;
    int64_t v = bench__find_int(f + tl, (size_t)(p + n - f) - tl, ".", 1, NULL);
    return v >= 0 && v < (int64_t)bench_g.nconns ? v : -1;
}

static void bench__on_ack(bench_thread_t *t, bench_conn_t *c, const uint8_t *p, size_t n, uint64_t now_us,
                          int measuring);

static void bench__on_message(bench_thread_t *t, bench_conn_t *c, const uint8_t *p, size_t n, uint64_t now_us,
                              int measuring)
{
    BUMP(t->live.deliveries);
    if (measuring) {
        t->st.w_deliveries++;
        t->st.w_deliveries_tg[c->tg]++;
    }
    /* the server writes room, id, seq, from, text in this order: each search
     * starts where the previous one matched, falling back to the whole frame */
    const uint8_t *q;
    int64_t seq = bench__find_int(p, n, "\"seq\":", 6, &q);
    size_t skip = q ? (size_t)(q - p) : 0;
    if (measuring && bench_g.o.ntg > 1) {
        int64_t from = bench__sender(p + skip, n - skip);
        if (from < 0 && skip) from = bench__sender(p, n);
        if (from >= 0 && bench_target_of((uint32_t)from) != c->tg) t->st.w_cross++;
    }
    if (seq >= 0) {
        if (c->last_seq < 0) {
            c->last_seq = seq;
        } else if (seq == c->last_seq) {
            t->st.duplicates++;
        } else if (seq < c->last_seq) {
            t->st.out_of_order++;
        } else {
            t->st.gaps += (uint64_t)(seq - c->last_seq - 1);
            c->last_seq = seq;
        }
    }
    uint64_t ts = bench__find_ts(p + skip, n - skip, "\"text\":\"t=", 10);
    if (ts == UINT64_MAX && skip) ts = bench__find_ts(p, n, "\"text\":\"t=", 10);
    if (measuring && ts != UINT64_MAX) bench_hist_add(&t->lat, now_us > ts ? now_us - ts : 0);
    if (bench_g.o.nchan) {
        if (c->role == R_PUB && n > 26u + c->user_len && !memcmp(p, "{\"type\":\"message\",\"from\":\"", 26) &&
            !memcmp(p + 26, c->user, c->user_len) && p[26 + c->user_len] == '"')
            bench__on_ack(t, c, p, n, now_us, measuring);
        return;
    }
    if (c->role != R_DM_A && c->role != R_DM_B) return;
    /* dm: answer the peer's messages, not the echo of our own */
    const uint8_t *f = memmem(p + skip, n - skip, "\"from\":\"", 8);
    if (!f) f = memmem(p, n, "\"from\":\"", 8);
    if (!f) return;
    f += 8;
    if ((size_t)(p + n - f) > c->user_len && !memcmp(f, c->user, c->user_len) && f[c->user_len] == '"') return;
    if (c->role == R_DM_A) {
        if (measuring) {
            bench_hist_add(&t->rtt, now_us - c->last_send_us);
            t->st.w_rtts++;
        }
    }
    if (bench__running(t)) bench__send_msg(t, c, bench_wall_us());
}

/* A reply to one of our sends arrived (ack or error): refill a closed loop. */
static void bench__reply(bench_thread_t *t, bench_conn_t *c)
{
    BUMP(t->live.replies);
    if (c->inflight) c->inflight--;
    int closed_loop = (c->role == R_PUB && bench_g.o.rate <= 0) || c->role == R_DUR;
    if (closed_loop && bench__running(t)) bench__send_msg(t, c, bench_wall_us());
}

static void bench__on_ack(bench_thread_t *t, bench_conn_t *c, const uint8_t *p, size_t n, uint64_t now_us,
                          int measuring)
{
    t->st.acked++;
    atomic_fetch_add_explicit(&bench_g.room_acked[c->room], 1, memory_order_relaxed);
    if (measuring) {
        t->st.w_acked++;
        t->st.w_acked_tg[c->tg]++;
        uint64_t ts = bench__find_ts(p, n, "\"ref\":\"t=", 9);
        if (ts != UINT64_MAX) bench_hist_add(&t->ack, now_us > ts ? now_us - ts : 0);
    }
    bench__reply(t, c);
}

static void bench__on_error(bench_thread_t *t, bench_conn_t *c, const uint8_t *p, size_t n)
{
    char code[32] = "";
    const uint8_t *q = memmem(p, n, "\"code\":\"", 8);
    if (q) {
        q += 8;
        size_t i = 0;
        while (q + i < p + n && q[i] != '"' && i < sizeof code - 1) i++;
        memcpy(code, q, i);
        code[i] = 0;
    }
    if (memmem(p, n, "\"ref\":\"t=", 9)) { /* a send */
        t->st.send_errors++;
        if (!strcmp(code, "rate_limited")) t->st.rate_limited++;
        bench__note(t, "send refused", code);
        bench__reply(t, c);
    } else if (memmem(p, n, "\"ref\":\"c\"", 9)) { /* create */
        c->await_create = 0;
        if (strcmp(code, "conflict")) {
            t->st.setup_errors++;
            bench__note(t, "create refused", code);
        }
        BUMP(t->live.created);
    } else if (memmem(p, n, "\"ref\":\"j\"", 9)) { /* join */
        c->await_join = 0;
        t->st.setup_errors++;
        bench__note(t, "join refused", code);
        BUMP(t->live.join_failed);
    } else {
        t->st.other_errors++;
        bench__note(t, "error", code);
    }
}

/* hello arrived (or, with --peer-protocol nchan, the upgrade was accepted). */
static void bench__opened(bench_thread_t *t, bench_conn_t *c)
{
    c->state = BC_OPEN;
    t->pending--;
    BUMP(t->live.opened);
    if (bench_g.o.scenario == BENCH_DM)
        atomic_fetch_add_explicit(&bench_g.room_members[c->room], 1, memory_order_relaxed);
}

static void bench__on_text(bench_thread_t *t, bench_conn_t *c, const uint8_t *p, size_t n, uint64_t now_us,
                           int measuring)
{
    if (c->state == BC_HELLO) {
        if (!memmem(p, n, "\"type\":\"hello\"", 14)) {
            bench__fail(t, c, "expected hello", NULL);
            return;
        }
        bench__opened(t, c);
        return;
    }
    if (c->state != BC_OPEN) return;
    const uint8_t *q;
    if (n > 9 && !memcmp(p, "{\"type\":\"", 9)) {
        q = p + 9;
    } else {
        q = memmem(p, n, "\"type\":\"", 8);
        if (!q) return;
        q += 8;
    }
    size_t rest = (size_t)(p + n - q);
    if (rest >= 8 && !memcmp(q, "message\"", 8)) {
        bench__on_message(t, c, p, n, now_us, measuring);
    } else if (rest >= 4 && !memcmp(q, "ack\"", 4)) {
        bench__on_ack(t, c, p, n, now_us, measuring);
    } else if (rest >= 6 && !memcmp(q, "error\"", 6)) {
        bench__on_error(t, c, p, n);
    } else if (rest >= 8 && !memcmp(q, "created\"", 8)) {
        c->await_create = 0;
        BUMP(t->live.created);
    } else if (rest >= 7 && !memcmp(q, "joined\"", 7)) {
        int64_t seq = bench__find_int(p, n, "\"seq\":", 6, NULL);
        c->last_seq = seq; /* -1 if absent: the first message sets it */
        c->joined = 1;
        c->await_join = 0;
        atomic_fetch_add_explicit(&bench_g.room_members[c->room], 1, memory_order_relaxed);
        BUMP(t->live.joined);
    }
    /* anything else (pong, member, presence, typing...) is ignored */
}

static void bench__send_close(bench_thread_t *t, bench_conn_t *c, unsigned code)
{
    if (c->sent_close) return;
    uint8_t body[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    c->sent_close = 1;
    bench__queue_frame(t, c, WS_OP_CLOSE, body, code ? 2 : 0);
}

/* Handles the frames in p[0..n); returns the bytes used (the rest is an
 * incomplete frame), or -1 when the connection was closed. */
static long bench__frames(bench_thread_t *t, bench_conn_t *c, uint8_t *p, size_t n, uint64_t now_us)
{
    int measuring = atomic_load_explicit(&bench_g.measuring, memory_order_relaxed);
    size_t pos = 0;
    while (pos < n) {
        ws_frame_t f;
        int cc = 0;
        int h = ws_frame_parse(p + pos, n - pos, &bench__parse_opts, &f, &cc);
        if (h == SORI_EAGAIN) break;
        if (h < 0 || f.payload_len > BENCH_FRAME_MAX || !f.fin || f.opcode == WS_OP_CONT) {
            t->st.protocol_errors++;
            bench__note(t, "protocol error",
                        h < 0 ? "bad frame header"
                              : f.payload_len > BENCH_FRAME_MAX ? "frame over 1 MiB" : "fragmented message");
            if (c->state < BC_OPEN) {
                bench__fail(t, c, "protocol error", NULL);
            } else {
                if (c->state == BC_OPEN) t->st.server_closes++; /* counted as lost to the server */
                bench__close(t, c);
            }
            return -1;
        }
        if ((uint64_t)(n - pos - (size_t)h) < f.payload_len) break;
        uint8_t *pl = p + pos + h;
        size_t plen = (size_t)f.payload_len;
        pos += (size_t)h + plen;
        switch (f.opcode) {
        case WS_OP_TEXT:
            bench__on_text(t, c, pl, plen, now_us, measuring);
            if (c->state == BC_CLOSED) return -1;
            break;
        case WS_OP_PING:
            bench__queue_frame(t, c, WS_OP_PONG, pl, plen);
            break;
        case WS_OP_CLOSE: {
            char why[96] = "close frame";
            unsigned code = 1005;
            if (plen >= 2) {
                code = (unsigned)pl[0] << 8 | pl[1];
                snprintf(why, sizeof why, "close %u %.*s", code, (int)(plen - 2 > 80 ? 80 : plen - 2),
                         (const char *)pl + 2);
            }
            if (c->state != BC_CLOSING) {
                /* echo the close (§5.5.1), then hang up */
                bench__send_close(t, c, code == 1005 ? 0 : code);
                if (c->out_len > c->out_off) bench__send(c, c->out + c->out_off, c->out_len - c->out_off);
            }
            bench__lost(t, c, why);
            return -1;
        }
        default:
            break; /* pong, binary: nothing to do */
        }
    }
    return (long)pos;
}

/* One recv() and the frames it completes. Returns 1 when the read filled
 * the buffer (there may be more), else 0. */
static int bench__read_once(bench_thread_t *t, bench_conn_t *c)
{
    /* scratch = [carry area BENCH_CARRY_MAX][read area BENCH_READ] */
    uint8_t *rd = t->scratch + BENCH_CARRY_MAX;
    int again;
    ssize_t r = bench__recv(c, rd, BENCH_READ, &again);
    if (r == 0) {
        bench__lost(t, c, "end of stream");
        return 0;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (c->state == BC_OPEN) t->st.io_errors++;
        bench__lost(t, c, strerror(errno));
        return 0;
    }
    int more = r == (ssize_t)BENCH_READ || again;
    uint64_t now_us = bench_wall_us();
    uint8_t *p = rd - c->in_len;
    size_t n = c->in_len + (size_t)r;
    if (c->in_len) memcpy(p, c->in, c->in_len);
    c->in_len = 0;
    if (c->state == BC_HANDSHAKE) {
        const char *why = NULL;
        char status[64];
        int head = bench__response(c, p, n, &why, status, sizeof status);
        if (head < 0) {
            bench__fail(t, c, "handshake refused", why);
            return 0;
        }
        if (head == 0) goto carry;
        c->state = BC_HELLO;
        p += head;
        n -= (size_t)head;
        if (bench_g.o.nchan) bench__opened(t, c); /* no hello */
    }
    if (c->state >= BC_HELLO) {
        long used = bench__frames(t, c, p, n, now_us);
        if (used < 0) return 0;
        p += used;
        n -= (size_t)used;
    }
carry:
    if (!n) return more;
    if (n > BENCH_CARRY_MAX) { /* cannot happen: a frame is bounded; keep the promise anyway */
        bench__lost(t, c, "input over the bound");
        return 0;
    }
    if (n > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 256;
        while (cap < n) cap *= 2;
        uint8_t *q = realloc(c->in, cap);
        if (!q) {
            bench__lost(t, c, "out of memory");
            return 0;
        }
        c->in = q;
        c->in_cap = (uint32_t)cap;
    }
    memcpy(c->in, p, n);
    c->in_len = (uint32_t)n;
    return more;
}

/* Edge-triggered: read until a short read (which means the socket was
 * drained; data arriving later raises a new edge). */
static void bench__read(bench_thread_t *t, bench_conn_t *c)
{
    while (bench__read_once(t, c) && c->state != BC_CLOSED) {
    }
}

static void bench__flush(bench_thread_t *t, bench_conn_t *c)
{
    size_t left = c->out_len - c->out_off;
    if (!left) return;
    ssize_t w = bench__send(c, c->out + c->out_off, left);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            bench__epoll_set(t, c, 1);
            return;
        }
        if (c->state == BC_OPEN) t->st.io_errors++;
        bench__lost(t, c, strerror(errno));
        return;
    }
    c->out_off += (uint32_t)w;
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        bench__epoll_set(t, c, 0);
    } else {
        bench__epoll_set(t, c, 1);
    }
}

static void bench__flush_dirty(bench_thread_t *t)
{
    bench_conn_t *c;
    while ((c = t->dirty)) {
        t->dirty = c->next_dirty;
        c->dirty = 0;
        if (c->state != BC_CLOSED && c->state != BC_CONNECTING && c->state != BC_TLS) bench__flush(t, c);
    }
}

/* ---- open-loop pacing ---- */

static void bench__arm(bench_thread_t *t, uint64_t at_ns)
{
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(at_ns / 1000000000ull),
                                          .tv_nsec = (long)(at_ns % 1000000000ull)}};
    timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Sends every slot that is due. Slot k goes to publisher k mod npubs at
 * pace_start + k / (npubs * rate): every publisher sends at --rate, evenly
 * spaced, and the thread's publishers are interleaved. The schedule is kept
 * when the thread falls behind (the late slots go out at once and are
 * counted when over 1 ms late); only a backlog over 100 ms is skipped. */
static void bench__pace(bench_thread_t *t)
{
    if (!bench__running(t) || !t->npubs) return;
    double agg = (double)t->npubs * bench_g.o.rate; /* slots per second */
    double ns_per_slot = 1e9 / agg;
    uint64_t now = bench_now_ns();
    uint64_t due = (uint64_t)((double)(now - t->pace_start_ns) / ns_per_slot) + 1;
    uint64_t backlog = (uint64_t)(agg / 10) + 1;
    if (due > t->pace_slot + backlog) {
        t->st.skipped_slots += due - backlog - t->pace_slot;
        t->pace_slot = due - backlog;
    }
    uint64_t now_us = bench_wall_us();
    for (; t->pace_slot < due; t->pace_slot++) {
        bench_conn_t *c = t->pubs[t->pace_slot % t->npubs];
        if (c->state != BC_OPEN || !c->joined) continue;
        uint64_t at = t->pace_start_ns + (uint64_t)((double)t->pace_slot * ns_per_slot);
        if (now > at + 1000000) t->st.late_slots++;
        bench__send_msg(t, c, now_us);
    }
    uint64_t next = t->pace_start_ns + (uint64_t)((double)t->pace_slot * ns_per_slot);
    if (next < now + BENCH_PACE_MIN_NS) next = now + BENCH_PACE_MIN_NS;
    bench__arm(t, next);
}

/* ---- phases ---- */

/* Enters `phase`; act = 0 passes through it without its actions (the
 * coordinator jumped ahead, e.g. from connect straight to close on ^C). */
static void bench__enter(bench_thread_t *t, int phase, int act)
{
    const bench_opts_t *o = &bench_g.o;
    t->phase = phase;
    char buf[256], room[96];
    switch (act ? phase : -1) {
    case BP_CONNECT:
        bench__start_connects(t);
        break;
    case BP_CREATE:
        /* whatever has not reached `hello` by now has failed */
        for (uint32_t i = 0; i < t->nconns; i++) {
            bench_conn_t *c = &t->conns[i];
            if (c->state == BC_IDLE) {
                c->state = BC_CLOSED;
                BUMP(t->live.failed);
                BUMP(t->live.closed);
                bench__note(t, "not connected within --connect-timeout", NULL);
            } else if (c->state > BC_IDLE && c->state < BC_OPEN) {
                bench__fail(t, c, "not connected within --connect-timeout", NULL);
            }
        }
        t->next_connect = t->nconns;
        for (uint32_t i = 0; i < t->nconns; i++) {
            bench_conn_t *c = &t->conns[i];
            if (c->state != BC_OPEN || !c->creator || o->nchan) continue; /* nchan: no rooms to create */
            bench__room_name(room, sizeof room, c->room);
            int n = snprintf(buf, sizeof buf, "{\"type\":\"create\",\"room\":\"%s\",\"kind\":\"public\",\"ref\":\"c\"}",
                             room);
            bench__queue_text(t, c, buf, (size_t)n);
            c->await_create = 1;
            BUMP(t->live.creators);
        }
        break;
    case BP_JOIN:
        if (o->scenario == BENCH_DM) break;
        for (uint32_t i = 0; i < t->nconns; i++) {
            bench_conn_t *c = &t->conns[i];
            if (c->state != BC_OPEN) continue;
            if (o->nchan) { /* the connection is the subscription: joined, seq unknown */
                BUMP(t->live.joins);
                c->joined = 1;
                atomic_fetch_add_explicit(&bench_g.room_members[c->room], 1, memory_order_relaxed);
                BUMP(t->live.joined);
                continue;
            }
            bench__room_name(room, sizeof room, c->room);
            int n = snprintf(buf, sizeof buf, "{\"type\":\"join\",\"room\":\"%s\",\"ref\":\"j\"}", room);
            bench__queue_text(t, c, buf, (size_t)n);
            c->await_join = 1;
            BUMP(t->live.joins);
        }
        break;
    case BP_RUN:
        if (o->scenario == BENCH_FANOUT && o->rate > 0) {
            t->pace_start_ns = bench_now_ns();
            t->pace_slot = 0;
            bench__pace(t);
            break;
        }
        for (uint32_t i = 0; i < t->nconns; i++) {
            bench_conn_t *c = &t->conns[i];
            if (c->state != BC_OPEN) continue;
            int w = 0;
            if ((c->role == R_PUB || c->role == R_DUR) && c->joined) w = o->window;
            if (c->role == R_DM_A &&
                atomic_load_explicit(&bench_g.room_members[c->room], memory_order_relaxed) == 2)
                w = 1;
            for (int k = 0; k < w; k++) bench__send_msg(t, c, bench_wall_us());
        }
        break;
    case BP_DRAIN:
        bench__arm(t, 0);
        break;
    case BP_CLOSE:
        bench__arm(t, 0);
        for (uint32_t i = 0; i < t->nconns; i++) {
            bench_conn_t *c = &t->conns[i];
            if (c->state == BC_OPEN) {
                bench__send_close(t, c, 1000);
                c->state = BC_CLOSING;
            } else if (c->state != BC_CLOSED && c->state != BC_CLOSING) {
                BUMP(t->live.failed); /* still connecting: timed out, or the run was cut short */
                bench__note(t, "still connecting at the end", "see --connect-timeout");
                bench__close(t, c);
            }
        }
        break;
    case BP_DONE:
        for (uint32_t i = 0; i < t->nconns; i++) bench__close(t, &t->conns[i]);
        break;
    default:
        break;
    }
    atomic_store_explicit(&t->live.phase_seen, (uint64_t)phase, memory_order_release);
}

void *bench_thread_main(void *arg)
{
    bench_thread_t *t = arg;
    struct epoll_event ev[512];
    atomic_store(&t->os_tid, (int)gettid());
    t->phase = -1;
    while (t->phase != BP_DONE) {
        int ph = atomic_load_explicit(&bench_g.phase, memory_order_acquire);
        while (t->phase < ph) bench__enter(t, t->phase + 1, t->phase + 1 == ph || t->phase + 1 >= BP_CLOSE);
        bench__flush_dirty(t);
        if (t->phase == BP_DONE) break;
        int n = epoll_wait(t->epfd, ev, 512, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            bench__note(t, "epoll_wait", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            uint64_t id = ev[i].data.u64;
            if (id == 0) {
                uint64_t v;
                if (read(t->evfd, &v, sizeof v) < 0) { /* woken; the phase is read above */
                }
                continue;
            }
            if (id == 1) {
                uint64_t v;
                if (read(t->tfd, &v, sizeof v) < 0) {
                }
                bench__pace(t);
                continue;
            }
            bench_conn_t *c = &t->conns[id - 2];
            if (c->state == BC_CLOSED) continue;
            uint32_t e = ev[i].events;
            if (c->state == BC_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) bench__connected(t, c);
                continue;
            }
            if (c->state == BC_TLS) {
                bench__tls_step(t, c);
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) bench__read(t, c);
            if (c->state != BC_CLOSED && (e & EPOLLOUT)) bench__flush(t, c);
        }
        if (t->phase == BP_CONNECT) bench__start_connects(t);
        bench__flush_dirty(t);
    }
    for (uint32_t i = 0; i < t->nconns; i++) bench__close(t, &t->conns[i]);
    atomic_store_explicit(&t->live.phase_seen, BP_DONE, memory_order_release);
    return NULL;
}

void bench_thread_wake(bench_thread_t *t)
{
    uint64_t one = 1;
    if (write(t->evfd, &one, sizeof one) < 0) { /* the counter is saturated: it is awake anyway */
    }
}

int bench_target_of(uint32_t gidx)
{
    const bench_opts_t *o = &bench_g.o;
    if (o->ntg <= 1) return 0;
    const int *list = o->urls;
    int n = o->nurls;
    uint32_t room, k;
    switch (o->scenario) {
    case BENCH_FANOUT: {
        uint32_t per = (uint32_t)(o->pubs + o->subs), at = gidx % per;
        room = gidx / per;
        if (at < (uint32_t)o->pubs) {
            list = o->pub_urls;
            n = o->npub_urls;
            k = room * (uint32_t)o->pubs + at; /* the k-th publisher */
        } else {
            k = room * (uint32_t)o->subs + (at - (uint32_t)o->pubs); /* the k-th subscriber */
        }
        break;
    }
    case BENCH_DM:
        room = gidx / 2;
        k = gidx;
        break;
    default:
        room = gidx % (uint32_t)o->rooms;
        k = gidx;
        break;
    }
    return list[(o->spread_room ? room : k) % (uint32_t)n];
}

/* Roles, rooms and names of the connections with global index gidx. */
static void bench__assign(bench_conn_t *c, uint32_t gidx)
{
    const bench_opts_t *o = &bench_g.o;
    c->gidx = gidx;
    c->fd = -1;
    c->last_seq = -1;
    bench__user_name(c->user, sizeof c->user, gidx);
    c->user_len = (uint8_t)strlen(c->user);
    switch (o->scenario) {
    case BENCH_FANOUT: {
        uint32_t per = (uint32_t)(o->pubs + o->subs);
        c->room = gidx / per;
        c->role = gidx % per < (uint32_t)o->pubs ? R_PUB : R_SUB;
        c->creator = gidx % per == 0;
        break;
    }
    case BENCH_CONNECTIONS:
        c->room = gidx % (uint32_t)o->rooms;
        c->role = R_IDLE;
        c->creator = gidx < (uint32_t)o->rooms;
        break;
    case BENCH_DURABLE:
        c->room = gidx % (uint32_t)o->rooms;
        c->role = R_DUR;
        c->creator = gidx < (uint32_t)o->rooms;
        break;
    case BENCH_DM:
        c->room = gidx / 2;
        c->role = gidx & 1 ? R_DM_B : R_DM_A;
        c->last_seq = 0; /* a new dm room: names carry the run's tag */
        break;
    }
}

int bench_thread_setup(bench_thread_t *t, char *err, size_t errlen)
{
    const bench_opts_t *o = &bench_g.o;
    uint32_t T = (uint32_t)o->threads;
    t->epfd = t->evfd = t->tfd = -1;
    bench_hist_init(&t->lat);
    bench_hist_init(&t->ack);
    bench_hist_init(&t->rtt);
    if (getrandom(&t->rng, sizeof t->rng, 0) != (ssize_t)sizeof t->rng || !t->rng)
        t->rng = bench_now_ns() | 1;
    t->nconns = bench_g.nconns / T + ((uint32_t)t->id < bench_g.nconns % T);
    t->max_pending = (uint32_t)o->connect_concurrency / T;
    if (t->max_pending < 1) t->max_pending = 1;
    t->conns = calloc(t->nconns ? t->nconns : 1, sizeof *t->conns);
    t->pubs = calloc(t->nconns ? t->nconns : 1, sizeof *t->pubs);
    t->scratch = malloc(BENCH_CARRY_MAX + BENCH_READ);
    if (!t->conns || !t->pubs || !t->scratch) goto nomem;
    for (uint32_t i = 0; i < t->nconns; i++) {
        bench_conn_t *c = &t->conns[i];
        bench__assign(c, (uint32_t)t->id + i * T);
        c->tg = (uint8_t)bench_target_of(c->gidx);
        t->st.conns_tg[c->tg]++;
        do {
            uint64_t r = bench__rand(t);
            memcpy(c->mask, &r, 4);
        } while (!(c->mask[0] | c->mask[1] | c->mask[2] | c->mask[3]));
        if (c->role == R_PUB || c->role == R_DUR || c->role == R_DM_A || c->role == R_DM_B) {
            if (bench__build_template(c)) goto nomem;
        }
        if (c->role == R_PUB) t->pubs[t->npubs++] = c;
    }
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (t->epfd < 0 || t->evfd < 0 || t->tfd < 0) {
        snprintf(err, errlen, "cannot set up the event loop: %s", strerror(errno));
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->evfd, &ev);
    ev.data.u64 = 1;
    epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->tfd, &ev);
    return 0;
nomem:
    snprintf(err, errlen, "out of memory for %u connections", t->nconns);
    return -1;
}

void bench_thread_free(bench_thread_t *t)
{
    if (t->conns) {
        for (uint32_t i = 0; i < t->nconns; i++) {
            bench_conn_t *c = &t->conns[i];
            if (c->fd >= 0) close(c->fd);
            free(c->out);
            free(c->in);
            free(c->tmpl);
        }
    }
    free(t->conns);
    free(t->pubs);
    free(t->scratch);
    if (t->epfd >= 0) close(t->epfd);
    if (t->evfd >= 0) close(t->evfd);
    if (t->tfd >= 0) close(t->tfd);
    t->conns = NULL;
    t->pubs = NULL;
    t->scratch = NULL;
}

/*
 * net_conn.c: one connection's life on its worker: reading, the output queue,
 * flushing, closing and its place on the timer wheel.
 *
 * Owns conn_t. Only the owning worker's thread touches a connection. Bytes
 * move through the connection's transport (c->type: plain TCP here, TLS in
 * net_tls.c); a transport that must wait for the other readiness (TLS
 * handshake and post-handshake messages) says so with a CONN__TP_* flag,
 * and input it holds where poll cannot see it is read at the flush hook.
 * Invariants: a connection is on the wheel from accept until it is freed (so
 * the wheel lists every live connection of a worker); output bytes only
 * leave through net__conn_service, run from the worker's prepare hook or
 * on POLLOUT, so handlers never write to sockets themselves; memory is freed
 * only after uv_close's callback.
 * Numbers: the queue ring starts at 4 entries and doubles (a ring grown by a
 * burst is freed once it is empty again); a flush writes at
 * most 64 buffers per writev; a read turn reads at most 4 x 64 KiB before
 * yielding to other connections; an idle connection holds no input buffer.
 */
#include "net/net_internal.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONN_IOV_MAX 64
#define CONN_READ_ROUNDS 4
#define CONN_LINGER_SECS 2

/* ---- the plain TCP transport ---- */

static ssize_t plain_read(conn_t *c, char *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(c->fd, buf, len);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return SORI_EAGAIN;
        return SORI_EIO;
    }
}

static ssize_t plain_writev(conn_t *c, const struct iovec *iov, int iovcnt)
{
    struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    for (;;) {
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return SORI_EAGAIN;
        return SORI_EIO;
    }
}

static void plain_shutdown_write(conn_t *c) { shutdown(c->fd, SHUT_WR); }

const conn_type_t conn_type_plain = {
    .name = "tcp",
    .read = plain_read,
    .writev = plain_writev,
    .shutdown_write = plain_shutdown_write,
};

/* ---- wheel ---- */

void net__wheel_unlink(net_worker_t *w, conn_t *c)
{
    if (!c->slot_at) return;
    if (c->wheel_prev)
        c->wheel_prev->wheel_next = c->wheel_next;
    else
        w->wheel[c->slot_at % NET_WHEEL_SLOTS] = c->wheel_next;
    if (c->wheel_next) c->wheel_next->wheel_prev = c->wheel_prev;
    c->wheel_prev = c->wheel_next = NULL;
    c->slot_at = 0;
}

void net__wheel_link(net_worker_t *w, conn_t *c)
{
    uint32_t at = c->deadline ? c->deadline : w->tick + NET_WHEEL_SLOTS - 1;
    if (at <= w->tick) at = w->tick + 1;
    if (at > w->tick + NET_WHEEL_SLOTS - 1) at = w->tick + NET_WHEEL_SLOTS - 1;
    conn_t **head = &w->wheel[at % NET_WHEEL_SLOTS];
    c->slot_at = at;
    c->wheel_prev = NULL;
    c->wheel_next = *head;
    if (*head) (*head)->wheel_prev = c;
    *head = c;
}

void conn_set_deadline(conn_t *c, uint32_t secs)
{
    if (c->flags & CONN_FREED) return;
    net_worker_t *w = c->w;
    c->deadline = secs ? w->tick + secs : 0;
    /* Lazy: a connection already in an earlier slot is re-examined there. */
    if (c->slot_at && c->deadline && c->slot_at <= c->deadline) return;
    if (c->slot_at && !c->deadline) return;
    net__wheel_unlink(w, c);
    net__wheel_link(w, c);
}

uint32_t net_now_sec(const net_worker_t *w) { return w->tick; }
uint64_t net_now_ms(net_worker_t *w) { return uv_now(&w->loop); }

/* ---- lifecycle ---- */

static void conn__poll_cb(uv_poll_t *p, int status, int events);

static void conn__update_poll(conn_t *c)
{
    if (c->flags & CONN_FREED) return;
    int ev = 0;
    int reading = !(c->flags & CONN_CLOSING) && !(c->flags & CONN_READ_PAUSED);
    if ((c->flags & CONN_SHUT_WR) && !(c->flags & CONN__LINGER_EOF)) reading = 1;
    /* A TLS write that needs input waits for POLLIN, not POLLOUT (which
     * would fire at once and spin); a TLS read that needs to send (a
     * handshake message) waits for POLLOUT. */
    if (reading || (c->flags & CONN__TP_WRITE_WANTS_READ)) ev |= UV_READABLE;
    if ((c->flags & CONN_WANT_WRITE) && !(c->flags & CONN__TP_WRITE_WANTS_READ)) ev |= UV_WRITABLE;
    if (c->flags & CONN__TP_READ_WANTS_WRITE) ev |= UV_WRITABLE;
    if (ev)
        uv_poll_start(&c->poll, ev, conn__poll_cb);
    else
        uv_poll_stop(&c->poll);
}

conn_t *net__conn_new(net_worker_t *w, int fd, const struct sockaddr_storage *ss)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (uv_poll_init_socket(&w->loop, &c->poll, fd) != 0) {
        free(c);
        return NULL;
    }
    c->poll.data = c;
    c->w = w;
    c->fd = fd;
    c->type = &conn_type_plain;
    c->id = ((uint64_t)w->index << 48) | ++w->conn_seq;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        memset(c->peer, 0, 10);
        c->peer[10] = c->peer[11] = 0xff;
        memcpy(c->peer + 12, &a->sin_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        memcpy(c->peer, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    }
    w->nconns++;
    net__conn_count_add(1);
    metrics_inc(M_CONNECTIONS_ACCEPTED);
    net__wheel_link(w, c);
    conn__update_poll(c);
    return c;
}

void conn_peer_str(const conn_t *c, char *out, size_t cap)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(c->peer, v4mapped, 12) == 0)
        inet_ntop(AF_INET, c->peer + 12, out, (socklen_t)cap);
    else
        inet_ntop(AF_INET6, c->peer, out, (socklen_t)cap);
}

static void conn__closed_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    net_worker_t *w = c->w;
    if (c->flags & CONN__IP_COUNTED) net__ip_release(c);
    close(c->fd);
    free(c);
    w->nconns--;
    net__conn_count_add(-1);
}

static void conn__outq_clear(conn_t *c)
{
    for (uint32_t i = 0; i < c->outq_len; i++)
        sbuf_unref(c->outq[(c->outq_head + i) % c->outq_cap].b);
    c->outq_len = c->outq_head = 0;
    c->out_bytes = 0;
}

/* Frees the connection; only called from the flush hook or the sweep, never
 * from inside a handler callback. */
static void conn__free(conn_t *c)
{
    if (c->flags & CONN_FREED) return;
    if (c->h && c->h->on_free) c->h->on_free(c);
    if (c->type->free) c->type->free(c);
    c->flags |= CONN_FREED;
    net__wheel_unlink(c->w, c);
    conn__outq_clear(c);
    free(c->outq);
    c->outq = NULL;
    buf_free(&c->in);
    uv_close((uv_handle_t *)&c->poll, conn__closed_cb);
}

void net__add_flush(conn_t *c)
{
    if (c->flags & (CONN_IN_FLUSH | CONN_FREED)) return;
    c->flags |= CONN_IN_FLUSH;
    c->flush_next = c->w->flush_list;
    c->w->flush_list = c;
}

void conn_close(conn_t *c, int mode)
{
    if (c->flags & CONN_FREED) return;
    c->flags |= CONN_CLOSING;
    if (mode == CONN_CLOSE_NOW) {
        c->flags |= CONN__CLOSE_NOW;
        conn__outq_clear(c);
    } else if (mode == CONN_CLOSE_LINGER) {
        c->flags |= CONN_LINGER;
    }
    conn__update_poll(c);
    net__add_flush(c);
}

void conn_notify_drain(conn_t *c)
{
    if (c->flags & (CONN_FREED | CONN_CLOSING)) return;
    c->flags |= CONN_WANT_DRAIN;
    net__add_flush(c); /* an already empty queue reports at the next turn */
}

void conn_pause_read(conn_t *c)
{
    c->flags |= CONN_READ_PAUSED;
    conn__update_poll(c);
}

void conn_resume_read(conn_t *c)
{
    if (!(c->flags & CONN_READ_PAUSED)) return;
    c->flags &= ~CONN_READ_PAUSED;
    conn__update_poll(c);
    if (c->in.len) {
        c->flags |= CONN__PENDING_INPUT;
        net__add_flush(c);
    }
    if (c->type->pending && c->type->pending(c)) { /* poll will not say so */
        c->flags |= CONN__READ_AGAIN;
        net__add_flush(c);
    }
}

/* ---- output ---- */

int conn_write(conn_t *c, sbuf_t *b, uint32_t off, uint32_t len, int force)
{
    if (c->flags & CONN_FREED) return SORI_ECLOSED;
    if (!force) {
        if (c->flags & CONN_CLOSING) return SORI_ECLOSED;
        if (c->out_bytes + len > __atomic_load_n(&net__cfg.out_limit, __ATOMIC_RELAXED)) return SORI_E2BIG;
    }
    if (c->flags & CONN__CLOSE_NOW) return SORI_ECLOSED;
    if (len == 0) return 0;
    if (c->outq_len == c->outq_cap) {
        uint32_t cap = c->outq_cap ? c->outq_cap * 2 : 4;
        conn_out_t *q = malloc(cap * sizeof *q);
        if (!q) return SORI_ENOMEM;
        for (uint32_t i = 0; i < c->outq_len; i++) q[i] = c->outq[(c->outq_head + i) % c->outq_cap];
        free(c->outq);
        c->outq = q;
        c->outq_cap = cap;
        c->outq_head = 0;
    }
    conn_out_t *e = &c->outq[(c->outq_head + c->outq_len) % c->outq_cap];
    e->b = sbuf_ref(b);
    e->off = off;
    e->len = len;
    c->outq_len++;
    c->out_bytes += len;
    if (!(c->flags & CONN_WANT_WRITE)) net__add_flush(c);
    return 0;
}

int conn_write_copy(conn_t *c, const void *p, size_t n, int force)
{
    sbuf_t *b = sbuf_copy(p, n);
    if (!b) return SORI_ENOMEM;
    int rc = conn_write(c, b, 0, (uint32_t)n, force);
    sbuf_unref(b);
    return rc;
}

void conn_discard_unsent(conn_t *c)
{
    if (!c->outq_len) return;
    /* The head may be partly written: keeping it is always safe. So are the
     * entries a transport already took into a record it has not finished
     * sending (tp_hold bytes from the front): it must be offered the same
     * bytes again, so they stay. Everything after is untouched: dropped. */
    uint32_t keep = 1;
    uint64_t held = c->outq[c->outq_head].len;
    while (keep < c->outq_len && held < c->tp_hold)
        held += c->outq[(c->outq_head + keep++) % c->outq_cap].len;
    for (uint32_t i = keep; i < c->outq_len; i++) {
        conn_out_t *e = &c->outq[(c->outq_head + i) % c->outq_cap];
        c->out_bytes -= e->len;
        sbuf_unref(e->b);
    }
    c->outq_len = keep;
}

/* Writes as much queued output as the socket takes. Returns 1 when the queue
 * is empty, 0 when the socket is full, -1 when the connection failed. */
static int conn__flush(conn_t *c)
{
    while (c->outq_len) {
        struct iovec iov[CONN_IOV_MAX];
        int n = 0;
        size_t total = 0;
        for (uint32_t i = 0; i < c->outq_len && n < CONN_IOV_MAX; i++, n++) {
            conn_out_t *e = &c->outq[(c->outq_head + i) % c->outq_cap];
            iov[n].iov_base = e->b->data + e->off;
            iov[n].iov_len = e->len;
            total += e->len;
        }
        ssize_t wr = c->type->writev(c, iov, n);
        if (wr == SORI_EAGAIN) {
            c->flags |= CONN_WANT_WRITE;
            conn__update_poll(c);
            return 0;
        }
        if (wr < 0) return -1;
        size_t left = (size_t)wr;
        c->out_bytes -= left;
        while (left) {
            conn_out_t *e = &c->outq[c->outq_head];
            if (left >= e->len) {
                left -= e->len;
                sbuf_unref(e->b);
                c->outq_head = (c->outq_head + 1) % c->outq_cap;
                c->outq_len--;
            } else {
                e->off += (uint32_t)left;
                e->len -= (uint32_t)left;
                left = 0;
            }
        }
        if ((size_t)wr < total) {
            c->flags |= CONN_WANT_WRITE;
            conn__update_poll(c);
            return 0;
        }
    }
    c->outq_head = 0;
    if (c->flags & CONN_WANT_WRITE) {
        c->flags &= ~CONN_WANT_WRITE;
        conn__update_poll(c);
    }
    return 1;
}

/* ---- input ---- */

static void conn__offer(conn_t *c, char *data, size_t len, size_t *used_out)
{
    size_t used = 0;
    while (used < len) {
        if (c->flags & (CONN_CLOSING | CONN_READ_PAUSED)) break;
        size_t u = c->h->on_data(c, data + used, len - used);
        if (u == 0) break;
        used += u;
    }
    *used_out = used;
}

static void conn__eof(conn_t *c)
{
    if (c->flags & (CONN_SHUT_WR | CONN_CLOSING)) {
        conn_close(c, CONN_CLOSE_NOW);
        return;
    }
    if (c->h && c->h->on_eof)
        c->h->on_eof(c);
    else
        conn_close(c, CONN_CLOSE_NOW);
}

static void conn__process_buffered(conn_t *c)
{
    size_t used;
    conn__offer(c, c->in.data, c->in.len, &used);
    if (c->flags & CONN_FREED) return;
    buf_consume(&c->in, used);
    if (c->in.len == 0) buf_free(&c->in);
}

static void conn__read(conn_t *c)
{
    net_worker_t *w = c->w;
    for (int round = 0; round < CONN_READ_ROUNDS; round++) {
        if (c->flags & (CONN_FREED | CONN__CLOSE_NOW)) return;
        int discard = (c->flags & CONN_CLOSING) != 0;
        if ((c->flags & CONN_READ_PAUSED) && !discard) return;
        char *dst;
        size_t room;
        if (c->in.len == 0 || discard) {
            dst = w->scratch;
            room = NET_SCRATCH;
        } else {
            if (buf_reserve(&c->in, 16384)) {
                conn_close(c, CONN_CLOSE_NOW);
                return;
            }
            dst = c->in.data + c->in.len;
            room = c->in.cap - c->in.len;
        }
        ssize_t n = c->type->read(c, dst, room);
        if (n == SORI_EAGAIN) {
            if (c->flags & CONN__TP_READ_WANTS_WRITE) conn__update_poll(c);
            return;
        }
        if (n <= 0) {
            conn__eof(c);
            return;
        }
        if (discard) continue;
        if (c->in.len == 0) {
            size_t used;
            conn__offer(c, dst, (size_t)n, &used);
            if (c->flags & CONN_FREED) return;
            if (used < (size_t)n && !(c->flags & CONN_CLOSING) &&
                buf_append(&c->in, dst + used, (size_t)n - used)) {
                conn_close(c, CONN_CLOSE_NOW);
                return;
            }
        } else {
            c->in.len += (size_t)n;
            conn__process_buffered(c);
        }
        if ((size_t)n < room) return;
    }
    /* Read rounds used up: input the transport already holds would not wake
     * poll again, so come back for it at the flush hook. */
    if (c->type->pending && c->type->pending(c)) {
        c->flags |= CONN__READ_AGAIN;
        net__add_flush(c);
    }
}

static void conn__poll_cb(uv_poll_t *p, int status, int events)
{
    conn_t *c = p->data;
    if (c->flags & CONN_FREED) return;
    if (status < 0) {
        conn_close(c, CONN_CLOSE_NOW);
        return;
    }
    if ((events & UV_READABLE) && (c->flags & CONN__TP_WRITE_WANTS_READ)) {
        c->flags &= ~(CONN__TP_WRITE_WANTS_READ | CONN_WANT_WRITE);
        conn__update_poll(c);
        net__add_flush(c);
    }
    if ((events & UV_WRITABLE) && (c->flags & CONN__TP_READ_WANTS_WRITE)) {
        c->flags &= ~CONN__TP_READ_WANTS_WRITE;
        conn__update_poll(c);
        conn__read(c);
        if (c->flags & CONN_FREED) return;
    }
    if ((events & UV_WRITABLE) && c->outq_len && !(c->flags & CONN__TP_WRITE_WANTS_READ)) {
        c->flags &= ~CONN_WANT_WRITE;
        net__add_flush(c);
    }
    if (events & (UV_READABLE | UV_DISCONNECT)) conn__read(c);
}

/* Flush-hook service: called once per loop turn for each dirty connection. */
void net__conn_service(conn_t *c)
{
    if (c->flags & CONN_FREED) return;
    if (c->flags & CONN__PENDING_INPUT) {
        c->flags &= ~CONN__PENDING_INPUT;
        if (!(c->flags & (CONN_CLOSING | CONN_READ_PAUSED)) && c->in.len) conn__process_buffered(c);
        if (c->flags & CONN_FREED) return;
    }
    if (c->flags & CONN__READ_AGAIN) {
        c->flags &= ~CONN__READ_AGAIN;
        conn__read(c);
        if (c->flags & CONN_FREED) return;
    }
    if (c->flags & CONN__CLOSE_NOW) {
        conn__free(c);
        return;
    }
    if (c->flags & CONN_WANT_WRITE) return; /* POLLOUT will bring us back */
    int r = conn__flush(c);
    if (r < 0) {
        conn__free(c);
        return;
    }
    if (r == 1 && (c->flags & CONN_CLOSING)) {
        if ((c->flags & CONN_LINGER) && !(c->flags & CONN_SHUT_WR)) {
            c->type->shutdown_write(c);
            c->flags |= CONN_SHUT_WR;
            conn_set_deadline(c, CONN_LINGER_SECS);
            conn__update_poll(c);
        } else if (!(c->flags & CONN_LINGER)) {
            conn__free(c);
        }
    }
    if (r == 1 && (c->flags & CONN_WANT_DRAIN) && !(c->flags & CONN_CLOSING)) {
        c->flags &= ~CONN_WANT_DRAIN;
        if (c->h && c->h->on_drain) c->h->on_drain(c);
        if (c->flags & CONN_FREED) return;
    }
    if (c->outq_len == 0 && c->outq_cap > 4) { /* keep the small ring, drop a burst's */
        free(c->outq);
        c->outq = NULL;
        c->outq_cap = 0;
    }
}

/* The wheel sweep found this connection's deadline passed. */
void net__conn_expired(conn_t *c);
void net__conn_expired(conn_t *c)
{
    if (c->flags & CONN_FREED) return;
    if (c->flags & CONN_CLOSING) {
        /* Lingering or stuck flushing: give up on the peer. */
        conn__free(c);
        return;
    }
    if (c->h && c->h->on_timeout)
        c->h->on_timeout(c);
    else
        conn_close(c, CONN_CLOSE_NOW);
}

/* Drain: frees a connection that did not close in time. */
void net__conn_force_free(conn_t *c);
void net__conn_force_free(conn_t *c) { conn__free(c); }

/*
 * net.h: worker threads, connections, transports, output queues, timers.
 *
 * Knows bytes, not chat. Each worker thread runs one libuv loop with its own
 * SO_REUSEPORT listener; a connection belongs to one worker for its whole life
 * and only that worker's thread touches it. Layers above (http/, ws/) see a
 * conn_t and a handler table, never a socket.
 *
 * Output: handlers only queue refcounted buffers (conn_write); a prepare hook
 * ("before poll") flushes every dirty connection with one writev per turn.
 * Input: a worker reads into its own scratch buffer; only bytes a handler did
 * not consume are copied into the connection, so an idle connection holds no
 * input buffer. Timers: one 1-second sweep over a hashed wheel per worker,
 * O(1) per connection per deadline, never a timer per connection.
 */
#ifndef SORI_NET_NET_H
#define SORI_NET_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <uv.h>

#include "util/buf.h"

typedef struct net_worker net_worker_t;
typedef struct conn conn_t;

/* The transport under a connection: plain TCP or TLS (net_tls.c). */
typedef struct conn_type {
    const char *name;
    /* > 0 bytes read, 0 at EOF, SORI_EAGAIN, or SORI_EIO. */
    ssize_t (*read)(conn_t *c, char *buf, size_t len);
    /* Bytes written (maybe fewer than asked), SORI_EAGAIN or SORI_EIO. */
    ssize_t (*writev)(conn_t *c, const struct iovec *iov, int iovcnt);
    /* Half-closes the sending side after the last byte (FIN; TLS sends its
     * close_notify first). */
    void (*shutdown_write)(conn_t *c);
    /* Optional: nonzero when input is buffered inside the transport, where
     * poll cannot see it (TLS records already read from the socket). */
    size_t (*pending)(conn_t *c);
    /* Optional: frees the transport's state (c->tp); the fd stays open. */
    void (*free)(conn_t *c);
} conn_type_t;

extern const conn_type_t conn_type_plain;
extern const conn_type_t conn_type_tls;

/* What runs on a connection: HTTP first, WebSocket after an upgrade. */
typedef struct conn_handler {
    /* Input bytes, mutable (a handler may unmask in place). Returns the bytes
     * consumed: the rest is kept and offered again with more data. A handler
     * that closes the connection returns anything; net stops calling it. */
    size_t (*on_data)(conn_t *c, char *data, size_t len);
    /* The connection's deadline passed (conn_set_deadline). */
    void (*on_timeout)(conn_t *c);
    /* The worker is draining (SIGTERM): say goodbye and close. */
    void (*on_shutdown)(conn_t *c);
    /* The peer closed (EOF) or the transport failed. Default: close now. */
    void (*on_eof)(conn_t *c);
    /* Last call: free the handler's state. No more output is possible. */
    void (*on_free)(conn_t *c);
    /* Optional: the output queue emptied after conn_notify_drain. */
    void (*on_drain)(conn_t *c);
} conn_handler_t;

typedef struct {
    sbuf_t *b;
    uint32_t off, len;
} conn_out_t;

enum {
    CONN_CLOSING = 1u << 0,     /* no more input is handled; output drains */
    CONN_IN_FLUSH = 1u << 1,    /* on the worker's flush list */
    CONN_WANT_WRITE = 1u << 2,  /* the socket was full: waiting for POLLOUT */
    CONN_LINGER = 1u << 3,      /* after the flush, FIN then read until EOF */
    CONN_FREED = 1u << 4,       /* uv_close issued */
    CONN_READ_PAUSED = 1u << 5, /* a handler asked to stop reading */
    CONN_SHUT_WR = 1u << 6,     /* FIN sent */
    CONN_WANT_DRAIN = 1u << 7,  /* call on_drain when the queue empties */
};

struct conn {
    uv_poll_t poll; /* poll.data == this */
    net_worker_t *w;
    const conn_type_t *type;
    void *tp; /* the transport's state: the SSL object of a TLS connection */
    const conn_handler_t *h;
    void *hdata;
    int fd;
    uint32_t flags;
    uint32_t deadline; /* worker seconds; 0 = none */
    uint32_t slot_at;  /* the wheel tick whose slot holds us */
    conn_t *wheel_prev, *wheel_next;
    conn_t *flush_next;
    buf_t in;           /* unconsumed input; empty when idle */
    conn_out_t *outq;   /* ring of queued output */
    uint32_t outq_head, outq_len, outq_cap;
    uint32_t tp_hold;   /* front bytes the transport took and must be offered
                           again (a TLS record waiting for the socket) */
    uint64_t out_bytes; /* queued and not yet written */
    uint64_t id;
    uint8_t peer[16];   /* IPv4-mapped or IPv6 address of the peer */
};

/* ---- connections (worker thread only) ---- */

/*
 * Queues len bytes of b starting at off; takes its own reference to b (the
 * caller keeps its own). Returns 0; SORI_E2BIG when the queue would exceed
 * the output limit (nothing queued: the caller decides, e.g. close with
 * 1008); SORI_ECLOSED when the connection is closing and force is 0.
 * With force = 1 the limit and the closing state are ignored (close frames).
 * Never calls back.
 */
int conn_write(conn_t *c, sbuf_t *b, uint32_t off, uint32_t len, int force);
/* Copies p[0..n) into a new buffer and queues it; as conn_write. */
int conn_write_copy(conn_t *c, const void *p, size_t n, int force);
/* Drops queued output that has not started to be written (keeps a partly
 * written head buffer so the byte stream stays well-formed). */
void conn_discard_unsent(conn_t *c);

enum { CONN_CLOSE_NOW = 0, CONN_CLOSE_AFTER_FLUSH = 1, CONN_CLOSE_LINGER = 2 };
/*
 * Starts closing. NOW: drop output, close the socket at the end of this loop
 * turn. AFTER_FLUSH: stop handling input, write what is queued, then close.
 * LINGER: as AFTER_FLUSH, then send FIN and read (discarding) until the peer
 * closes or `linger_ms` passes, so the peer sees our last bytes (RFC 6455
 * §7.1.1, and the usual HTTP lingering close). Idempotent; a stronger mode
 * (NOW) overrides a weaker one. The handler's on_free runs later, from the
 * loop, never from inside this call.
 */
void conn_close(conn_t *c, int mode);

/* Calls on_timeout when the worker clock reaches now + secs (0 clears). */
void conn_set_deadline(conn_t *c, uint32_t secs);

/* Asks for one on_drain call once everything queued has been written (from
 * the worker's flush hook, never from inside this call). */
void conn_notify_drain(conn_t *c);

/* Stops / resumes reading (e.g. while a request is handled elsewhere). */
void conn_pause_read(conn_t *c);
void conn_resume_read(conn_t *c);

/* The worker's clock in whole seconds (monotonic, from uv_now). */
uint32_t net_now_sec(const net_worker_t *w);
/* The worker's clock in milliseconds (uv_now of its loop). */
uint64_t net_now_ms(net_worker_t *w);
/* The peer address as text ("127.0.0.1"), for logs. */
void conn_peer_str(const conn_t *c, char *out, size_t cap);

/* ---- workers ---- */

struct net_worker {
    uv_loop_t loop;
    uv_thread_t thread;
    int index;
    int listen_fd;
    uv_poll_t listener;
    uv_prepare_t flush_hook;
    uv_timer_t sweep_timer;
    uv_timer_t accept_backoff;
    uv_async_t inbox_async;
    uv_mutex_t inbox_lock;
    struct net_task *inbox_head, *inbox_tail;
    conn_t *flush_list;
    conn_t **wheel; /* NET_WHEEL_SLOTS list heads */
    uint32_t tick;  /* seconds; the last slot swept */
    uint64_t conn_seq;
    uint32_t nconns;
    int draining;
    int closed; /* the loop ended: posts are refused (guarded by inbox_lock) */
    uint64_t drain_deadline_ms;
    char *scratch; /* NET_SCRATCH bytes for reads */
    void *ctx;     /* per-worker state of the layers above (http, ws, chat) */
};

#define NET_WHEEL_SLOTS 256
#define NET_SCRATCH (64 * 1024)

/* Runs fn(w, arg) on worker w's thread, soon. Thread-safe; never calls back
 * on the caller's thread. 0, SORI_ENOMEM, or SORI_ECLOSED once the worker's
 * loop has ended (the caller then cleans up arg itself). */
int net_worker_post(net_worker_t *w, void (*fn)(net_worker_t *w, void *arg), void *arg);

/* What a new connection runs first; set before net_start. */
typedef void (*net_accept_cb)(conn_t *c);

typedef struct {
    const char *host;
    int port;
    int workers;
    uint64_t max_connections;
    uint64_t out_limit;
    net_accept_cb on_accept;         /* installs the first handler */
    void (*on_worker_start)(net_worker_t *w); /* per-worker setup, on the worker thread */
    void (*on_worker_stop)(net_worker_t *w);
} net_config_t;

/* Binds one SO_REUSEPORT listener per worker and starts the threads.
 * 0, or an error with a sentence in err. */
int net_start(const net_config_t *cfg, char *err, size_t errlen);
/* SIGHUP reload (main thread): new limits for every worker; each is stored
 * atomically and read atomically (the next accept, the next queued write).
 * A connection already over a lowered out_limit is cut at its next write. */
void net_set_limits(uint64_t max_connections, uint64_t out_limit);
/* Asks every worker to drain: stop accepting, call on_shutdown on every
 * connection, and exit once they are closed or drain_ms passed. Thread-safe. */
void net_drain(unsigned drain_ms);
/* Waits for every worker thread to end. Workers stay allocated (refusing
 * posts) until net_free, so late posts from other threads are safe. */
void net_join(void);
void net_free(void);
/* The number of workers and worker i (for fan-out across workers). */
int net_worker_count(void);
net_worker_t *net_worker_get(int i);
/* The worker running on the calling thread, or NULL off worker threads. */
net_worker_t *net_current_worker(void);
/* Open connections on all workers (approximate, lock-free read). */
uint64_t net_connections(void);
/* The bound port (the real one when --port 0 was asked). */
int net_port(void);

/* ---- TLS (net_tls.c) ---- */

/*
 * Turns TLS on for every connection accepted from now on: loads the PEM
 * certificate chain and private key and builds the server context (TLS 1.2+,
 * ALPN http/1.1). Main thread, before net_start; reads files. 0, or an error
 * with a sentence in err (the files are named). Never calls back.
 */
int net_tls_init(const char *cert, const char *key, char *err, size_t errlen);
/*
 * Loads the files again (SIGHUP) and swaps the context: new connections get
 * the new certificate, open ones keep theirs. On error the running context
 * stays and err says why. Main thread only; thread-safe against workers.
 */
int net_tls_reload(const char *cert, const char *key, char *err, size_t errlen);
/* Nonzero when the listener speaks TLS. Any thread. */
int net_tls_on(void);
/* Drops the context (after net_join). */
void net_tls_free(void);

#endif

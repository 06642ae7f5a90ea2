/*
 * net_worker.c: worker threads, listeners, accept, the inbox, the flush hook,
 * the timer wheel sweep and draining.
 *
 * Owns the worker array (created by net_start, read-only afterwards until
 * net_join) and the global connection count (atomic). Each worker has: one
 * libuv loop, one SO_REUSEPORT listener, one prepare hook that flushes the
 * connections written during the turn, one 1-second timer that sweeps one
 * wheel slot per second, and one uv_async inbox for work from other threads.
 * Accept takes at most 64 connections per readiness event; when the process
 * runs out of file descriptors it pauses accepting for 100 ms instead of
 * spinning.
 *
 * Admission, in this order, before any byte is read or parsed (a refusal
 * is one non-blocking send of a canned HTTP answer and a close): draining
 * or --max-connections -> 503 unavailable; per client address
 * (net_iptable.c, one table for all
 * workers; loopback exempt unless --ip-limits-loopback) --max-conns-per-ip
 * -> 429 rate_limited, --conn-rate-per-ip -> 429 rate_limited with
 * Retry-After: 1. The limits are read at each accept (reloadable).
 * --memory-high-water is not applied here but per request (http_server.c,
 * proto_ws.c, chat_cmd.c), so /healthz, /metrics and reads keep working
 * while new sessions and writes are refused.
 */
#include "net/net_internal.h"
#include "net/net_iptable.h"
#include "util/config.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

net_config_t net__cfg;
static net_worker_t *net__workers;
static int net__nworkers;
static atomic_ulong net__nconns;
static __thread net_worker_t *net__current;
static net_iptable_t *net__ipt; /* per-address counts, all workers */

#define NET_IPT_CAPACITY 65536

net_worker_t *net_current_worker(void) { return net__current; }

void net__conn_expired(conn_t *c);
void net__conn_force_free(conn_t *c);

void net__conn_count_add(int delta) { atomic_fetch_add(&net__nconns, (unsigned long)(long)delta); }
uint64_t net_connections(void) { return atomic_load(&net__nconns); }
int net_worker_count(void) { return net__nworkers; }
net_worker_t *net_worker_get(int i) { return &net__workers[i]; }

/* ---- inbox ---- */

int net_worker_post(net_worker_t *w, void (*fn)(net_worker_t *w, void *arg), void *arg)
{
    net_task_t *t = malloc(sizeof *t);
    if (!t) return SORI_ENOMEM;
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    uv_mutex_lock(&w->inbox_lock);
    if (w->closed) {
        uv_mutex_unlock(&w->inbox_lock);
        free(t);
        return SORI_ECLOSED;
    }
    if (w->inbox_tail)
        w->inbox_tail->next = t;
    else
        w->inbox_head = t;
    w->inbox_tail = t;
    uv_mutex_unlock(&w->inbox_lock);
    uv_async_send(&w->inbox_async);
    return 0;
}

static void worker__inbox_cb(uv_async_t *a)
{
    net_worker_t *w = a->data;
    uv_mutex_lock(&w->inbox_lock);
    net_task_t *t = w->inbox_head;
    w->inbox_head = w->inbox_tail = NULL;
    uv_mutex_unlock(&w->inbox_lock);
    while (t) {
        net_task_t *next = t->next;
        t->fn(w, t->arg);
        free(t);
        t = next;
    }
}

/* ---- flush hook and sweep ---- */

static void worker__check_drained(net_worker_t *w);

static void worker__flush_cb(uv_prepare_t *h)
{
    net_worker_t *w = h->data;
    conn_t *c;
    while ((c = w->flush_list)) {
        w->flush_list = c->flush_next;
        c->flush_next = NULL;
        c->flags &= ~CONN_IN_FLUSH;
        net__conn_service(c);
    }
}

static void worker__sweep_cb(uv_timer_t *t)
{
    net_worker_t *w = t->data;
    uint32_t now = (uint32_t)(uv_now(&w->loop) / 1000);
    while (w->tick < now) {
        w->tick++;
        conn_t **slot = &w->wheel[w->tick % NET_WHEEL_SLOTS];
        conn_t *list = *slot;
        *slot = NULL;
        while (list) {
            conn_t *c = list;
            list = c->wheel_next;
            c->wheel_prev = c->wheel_next = NULL;
            c->slot_at = 0;
            if (list) list->wheel_prev = NULL;
            if (c->deadline && c->deadline <= w->tick) {
                c->deadline = 0;
                net__wheel_link(w, c); /* keeps it listed; on_timeout may move it */
                net__conn_expired(c);
            } else {
                net__wheel_link(w, c);
            }
        }
    }
    if (w->draining) worker__check_drained(w);
}

/* ---- accept ---- */

static void worker__accept_resume(uv_timer_t *t);
static void worker__accept_cb(uv_poll_t *p, int status, int events);

/* Answers a refused connection with one canned response and closes it;
 * never blocks (a full socket buffer just loses the answer). */
static void worker__refuse(int fd, int status, const char *code, const char *message, const char *extra)
{
    if (net_tls_on()) { /* no plaintext answer on a TLS port: just close */
        close(fd);
        return;
    }
    char body[256], resp[512];
    int bn = snprintf(body, sizeof body, "{\"error\":\"%s\",\"message\":\"%s\"}", code, message);
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                     status, status == 429 ? "Too Many Requests" : "Service Unavailable", extra, bn, body);
    ssize_t w = send(fd, resp, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    close(fd);
}

static void worker__reject(int fd)
{
    worker__refuse(fd, 503, "unavailable", "The server is at its connection limit.", "");
}

/* Ends a counted connection (net_conn.c, when its handle is closed). */
void net__ip_release(conn_t *c)
{
    if (net__ipt) net_iptable_release(net__ipt, c->peer, uv_now(&c->w->loop));
}

/* Applies the per-address limits to a new connection: 0 (refused: fd
 * closed), 1 (admitted, counted), 2 (admitted, not counted). */
static int worker__admit_ip(net_worker_t *w, int fd, const uint8_t peer[16])
{
    if (!net__ipt || (!CONFIG_GET(ip_limits_loopback) && net_addr_is_loopback(peer))) return 2;
    int max = CONFIG_GET(max_conns_per_ip), rate = CONFIG_GET(conn_rate_per_ip);
    if (!max && !rate) return 2;
    int rc = net_iptable_acquire(net__ipt, peer, uv_now(&w->loop), (uint32_t)max, (uint32_t)rate,
                                 (uint32_t)CONFIG_GET(conn_burst_per_ip));
    if (rc == SORI_ELIMIT) {
        metrics_inc(M_REFUSED_IP_CONNS);
        worker__refuse(fd, 429, "rate_limited",
                       "Too many open connections from your address; close some and retry.", "");
        return 0;
    }
    if (rc == SORI_EAGAIN) {
        metrics_inc(M_REFUSED_IP_RATE);
        worker__refuse(fd, 429, "rate_limited", "Too many new connections from your address; retry in a second.",
                       "Retry-After: 1\r\n");
        return 0;
    }
    return rc == 0 ? 1 : 2;
}

static void worker__accept_cb(uv_poll_t *p, int status, int events)
{
    (void)events;
    net_worker_t *w = p->data;
    if (status < 0) return;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(w->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                LOG_WARN("net", "accept: %s; pausing accepts for 100 ms", strerror(errno));
                uv_poll_stop(&w->listener);
                uv_timer_start(&w->accept_backoff, worker__accept_resume, 100, 0);
            }
            return;
        }
        if (w->draining || net_connections() >= __atomic_load_n(&net__cfg.max_connections, __ATOMIC_RELAXED)) {
            worker__reject(fd);
            continue;
        }
        uint8_t peer[16] = {0};
        if (ss.ss_family == AF_INET) {
            peer[10] = peer[11] = 0xff;
            memcpy(peer + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        } else if (ss.ss_family == AF_INET6) {
            memcpy(peer, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        }
        int admitted = worker__admit_ip(w, fd, peer);
        if (!admitted) continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = net__conn_new(w, fd, &ss);
        if (!c) {
            if (admitted == 1) net_iptable_release(net__ipt, peer, uv_now(&w->loop));
            close(fd);
            continue;
        }
        if (admitted == 1) c->flags |= CONN__IP_COUNTED;
        if (net_tls_on() && net__tls_attach(c) != 0) {
            conn_close(c, CONN_CLOSE_NOW);
            continue;
        }
        net__cfg.on_accept(c);
    }
}

static void worker__accept_resume(uv_timer_t *t)
{
    net_worker_t *w = t->data;
    if (!w->draining) uv_poll_start(&w->listener, UV_READABLE, worker__accept_cb);
}

/* ---- drain and stop ---- */

static void worker__walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void worker__for_each_conn(net_worker_t *w, void (*fn)(conn_t *c))
{
    /* Collect first: callbacks may move connections on the wheel. */
    size_t n = 0, cap = w->nconns + 1;
    conn_t **all = malloc(cap * sizeof *all);
    if (!all) return;
    for (int s = 0; s < NET_WHEEL_SLOTS; s++)
        for (conn_t *c = w->wheel[s]; c; c = c->wheel_next)
            if (n < cap && !(c->flags & CONN_FREED)) all[n++] = c;
    for (size_t i = 0; i < n; i++) fn(all[i]);
    free(all);
}

static void worker__shutdown_conn(conn_t *c)
{
    if (c->flags & CONN_CLOSING) return;
    if (c->h && c->h->on_shutdown)
        c->h->on_shutdown(c);
    else
        conn_close(c, CONN_CLOSE_AFTER_FLUSH);
}

static void worker__check_drained(net_worker_t *w)
{
    if (w->nconns == 0) {
        uv_stop(&w->loop);
        return;
    }
    if (uv_now(&w->loop) >= w->drain_deadline_ms) {
        LOG_WARN("net", "worker %d: %u connections did not close in time; closing them", w->index,
                 w->nconns);
        worker__for_each_conn(w, net__conn_force_free);
    }
}

static void worker__drain_task(net_worker_t *w, void *arg)
{
    unsigned ms = (unsigned)(uintptr_t)arg;
    if (w->draining) return;
    w->draining = 1;
    w->drain_deadline_ms = uv_now(&w->loop) + ms;
    uv_poll_stop(&w->listener);
    /* Stop listening now, not at exit: a connect during the drain is
     * refused (and the ones waiting in the backlog are reset) instead of
     * hanging unaccepted; a balancer moves on at once. Linux turns a
     * shut-down listening socket back to CLOSED; the descriptor itself is
     * closed when the worker ends, as before. */
    if (shutdown(w->listen_fd, SHUT_RDWR) != 0)
        LOG_WARN("net", "worker %d: cannot stop listening: %s", w->index, strerror(errno));
    uv_timer_stop(&w->accept_backoff);
    worker__for_each_conn(w, worker__shutdown_conn);
    /* Check often while draining, not once a second. */
    uv_timer_start(&w->sweep_timer, worker__sweep_cb, 50, 50);
}

void net_set_limits(uint64_t max_connections, uint64_t out_limit)
{
    __atomic_store_n(&net__cfg.max_connections, max_connections, __ATOMIC_RELAXED);
    __atomic_store_n(&net__cfg.out_limit, out_limit, __ATOMIC_RELAXED);
}

void net_drain(unsigned drain_ms)
{
    for (int i = 0; i < net__nworkers; i++)
        net_worker_post(&net__workers[i], worker__drain_task, (void *)(uintptr_t)drain_ms);
}

static void worker__main(void *arg)
{
    net_worker_t *w = arg;
    net__current = w;
    if (net__cfg.on_worker_start) net__cfg.on_worker_start(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Drained: free what is left and close every handle. */
    worker__for_each_conn(w, net__conn_force_free);
    worker__inbox_cb(&w->inbox_async); /* run what was posted before closing */
    uv_mutex_lock(&w->inbox_lock);
    w->closed = 1;
    uv_mutex_unlock(&w->inbox_lock);
    if (net__cfg.on_worker_stop) net__cfg.on_worker_stop(w);
    uv_walk(&w->loop, worker__walk_close, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    close(w->listen_fd);
    if (uv_loop_close(&w->loop) != 0) LOG_WARN("net", "worker %d: loop did not close cleanly", w->index);
}

/* ---- start ---- */

static int net__listen(const char *host, int *port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", *port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "--host %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, *port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    if (*port == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

int net_start(const net_config_t *cfg, char *err, size_t errlen)
{
    net__cfg = *cfg;
    if (!net__ipt && !(net__ipt = net_iptable_new(NET_IPT_CAPACITY))) return SORI_ENOMEM;
    net__nworkers = cfg->workers;
    net__workers = calloc((size_t)cfg->workers, sizeof *net__workers);
    if (!net__workers) return SORI_ENOMEM;
    int port = cfg->port;
    for (int i = 0; i < cfg->workers; i++) {
        net_worker_t *w = &net__workers[i];
        w->index = i;
        w->listen_fd = net__listen(cfg->host, &port, err, errlen);
        if (w->listen_fd < 0) return SORI_EIO;
    }
    net__cfg.port = port;
    for (int i = 0; i < cfg->workers; i++) {
        net_worker_t *w = &net__workers[i];
        w->wheel = calloc(NET_WHEEL_SLOTS, sizeof *w->wheel);
        w->scratch = malloc(NET_SCRATCH);
        if (!w->wheel || !w->scratch) return SORI_ENOMEM;
        uv_loop_init(&w->loop);
        w->tick = (uint32_t)(uv_now(&w->loop) / 1000);
        uv_mutex_init(&w->inbox_lock);
        uv_async_init(&w->loop, &w->inbox_async, worker__inbox_cb);
        w->inbox_async.data = w;
        uv_prepare_init(&w->loop, &w->flush_hook);
        w->flush_hook.data = w;
        uv_prepare_start(&w->flush_hook, worker__flush_cb);
        uv_timer_init(&w->loop, &w->sweep_timer);
        w->sweep_timer.data = w;
        uv_timer_start(&w->sweep_timer, worker__sweep_cb, 1000, 1000);
        uv_timer_init(&w->loop, &w->accept_backoff);
        w->accept_backoff.data = w;
        uv_poll_init_socket(&w->loop, &w->listener, w->listen_fd);
        w->listener.data = w;
        uv_poll_start(&w->listener, UV_READABLE, worker__accept_cb);
    }
    /* Workers (and the libuv thread pool they start) block every signal:
     * SIGTERM and SIGINT go to the main thread's loop, never to a worker
     * busy elsewhere (under TSan a signal caught by a worker could wait
     * there for its next intercepted call). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (int i = 0; i < cfg->workers && !rc; i++) {
        if (uv_thread_create(&net__workers[i].thread, worker__main, &net__workers[i]) != 0) {
            snprintf(err, errlen, "cannot start worker thread %d", i);
            rc = SORI_EIO;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int net_port(void) { return net__cfg.port; }

void net_join(void)
{
    for (int i = 0; i < net__nworkers; i++) uv_thread_join(&net__workers[i].thread);
}

void net_free(void)
{
    for (int i = 0; i < net__nworkers; i++) {
        net_worker_t *w = &net__workers[i];
        uv_mutex_destroy(&w->inbox_lock);
        free(w->wheel);
        free(w->scratch);
    }
    free(net__workers);
    net__workers = NULL;
    net__nworkers = 0;
    net_iptable_free(net__ipt);
    net__ipt = NULL;
}

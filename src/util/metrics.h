/*
 * metrics.h: the node's counters, gauges and histograms, and their
 * Prometheus text exposition (GET /metrics).
 *
 * Every metric is a fixed slot of relaxed atomics: adding is one atomic add
 * on a shared cache line, so hot paths add once per batch (a fan-out adds
 * its delivery count, a commit its batch), never once per byte. Gauges that
 * other modules own (connections, rooms, push queue) are read through
 * callbacks at scrape time.
 */
#ifndef SORI_UTIL_METRICS_H
#define SORI_UTIL_METRICS_H

#include <stdint.h>

#include "util/buf.h"

typedef enum {
    M_CONNECTIONS_ACCEPTED,  /* TCP connections accepted */
    M_WS_OPENED,             /* WebSocket handshakes completed */
    M_FRAMES_IN,             /* WebSocket messages received */
    M_FRAMES_OUT,            /* WebSocket messages queued (shared frames count once per connection) */
    M_MESSAGES_IN,           /* chat messages accepted (acked), from every front end */
    M_DELIVERIES,            /* message events queued to a connection */
    M_SLOW_CONSUMERS,        /* connections closed with 1008 slow consumer */
    M_HTTP_REQUESTS,         /* HTTP requests answered */
    M_LOGIN_FAILED,          /* logins refused (bad credentials) */
    M_RATE_LIMITED,          /* requests or commands refused by a rate limit */
    M_UPLOADS,               /* uploads stored */
    M_REFUSED_IP_CONNS,      /* connections refused: --max-conns-per-ip */
    M_REFUSED_IP_RATE,       /* connections refused: --conn-rate-per-ip */
    M_REFUSED_USER_CONNS,    /* WebSocket handshakes refused: --max-conns-per-user */
    M_REFUSED_MEMBERSHIP,    /* create/join/invite refused: rooms per user, members per room */
    M_REFUSED_MEMORY,        /* connections, sends, creates refused over --memory-high-water */
    M_REFUSED_STORE_QUEUE,   /* sends refused: the store's queue is over --store-queue-max */
    M_COUNTER__N
} metric_counter_t;

typedef enum {
    H_STORE_BATCH_OPS,       /* ops per committed batch */
    H_STORE_COMMIT_MS,       /* milliseconds per commit (apply + fsync) */
    H__N
} metric_hist_t;

void metrics_add(metric_counter_t c, uint64_t n);
static inline void metrics_inc(metric_counter_t c) { metrics_add(c, 1); }
void metrics_observe(metric_hist_t h, double v);

/* A gauge read at scrape time. */
typedef double (*metrics_gauge_fn)(void);
/* Registers a gauge (before serving; at most 32). name: sori_..., help: a line. */
void metrics_gauge(const char *name, const char *help, metrics_gauge_fn fn);
/* A counter owned elsewhere, read at scrape time (push counters). */
void metrics_counter_fn(const char *name, const char *help, metrics_gauge_fn fn);

/* Appends the whole exposition (text/plain; version=0.0.4) to b. */
int metrics_render(buf_t *b);

#endif

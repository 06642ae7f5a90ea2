/*
 * metrics.c: see metrics.h. Counters are sharded: each thread adds to one
 * of METRICS__SHARDS cache-line-sized rows (picked round-robin on its first
 * add), so workers counting frames and messages never share a line; a
 * scrape sums the rows. Histograms (store commits, a few thousand a second
 * at most) have fixed buckets, cumulative on output as Prometheus wants;
 * their sums are kept in micro-units so that adding stays an integer add.
 */
#include "util/metrics.h"

#include <stdatomic.h>
#include <stdio.h>

#define METRICS__SHARDS 16

/* One row per shard, padded to whole cache lines. */
typedef struct {
    _Alignas(64) _Atomic uint64_t v[M_COUNTER__N];
} metrics_shard_t;

static metrics_shard_t metrics__c[METRICS__SHARDS];
static atomic_uint metrics__next_shard;
static _Thread_local int metrics__shard = -1;

static const struct {
    const char *name, *help;
} metrics__cdesc[M_COUNTER__N] = {
    [M_CONNECTIONS_ACCEPTED] = {"sori_connections_accepted_total", "TCP connections accepted."},
    [M_WS_OPENED] = {"sori_websockets_opened_total", "WebSocket handshakes completed."},
    [M_FRAMES_IN] = {"sori_ws_messages_in_total", "WebSocket messages received."},
    [M_FRAMES_OUT] = {"sori_ws_messages_out_total", "WebSocket messages queued for sending."},
    [M_MESSAGES_IN] = {"sori_messages_in_total", "Chat messages accepted (acknowledged)."},
    [M_DELIVERIES] = {"sori_deliveries_total", "Chat message events queued to connections."},
    [M_SLOW_CONSUMERS] = {"sori_slow_consumers_total", "Connections closed as slow consumers (1008)."},
    [M_HTTP_REQUESTS] = {"sori_http_requests_total", "HTTP requests answered."},
    [M_LOGIN_FAILED] = {"sori_logins_failed_total", "Logins refused for bad credentials."},
    [M_RATE_LIMITED] = {"sori_rate_limited_total", "Requests and commands refused by a rate limit."},
    [M_UPLOADS] = {"sori_uploads_total", "Uploads stored."},
    [M_REFUSED_IP_CONNS] = {"sori_refused_conns_per_ip_total", "Connections refused by --max-conns-per-ip."},
    [M_REFUSED_IP_RATE] = {"sori_refused_conn_rate_total", "Connections refused by --conn-rate-per-ip."},
    [M_REFUSED_USER_CONNS] = {"sori_refused_conns_per_user_total", "WebSocket handshakes refused by --max-conns-per-user."},
    [M_REFUSED_MEMBERSHIP] = {"sori_refused_membership_total", "Creates, joins and invites refused by --max-rooms-per-user or --max-members-per-room."},
    [M_REFUSED_MEMORY] = {"sori_refused_memory_total", "Connections, sends and creates refused over --memory-high-water."},
    [M_REFUSED_STORE_QUEUE] = {"sori_refused_store_queue_total", "Sends refused because the store's write queue is over --store-queue-max."},
};

#define METRICS__BUCKETS 12

static const struct {
    const char *name, *help;
    double le[METRICS__BUCKETS];
} metrics__hdesc[H__N] = {
    [H_STORE_BATCH_OPS] = {"sori_store_batch_ops", "Store operations per committed batch.",
                           {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096}},
    [H_STORE_COMMIT_MS] = {"sori_store_commit_ms", "Milliseconds per store commit.",
                           {0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000}},
};

static struct {
    _Atomic uint64_t bucket[METRICS__BUCKETS];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_micro;
} metrics__h[H__N];

typedef struct {
    const char *name, *help;
    metrics_gauge_fn fn;
    int counter;
} metrics_fn_t;

static metrics_fn_t metrics__fns[32];
static int metrics__nfns;

void metrics_add(metric_counter_t c, uint64_t n)
{
    if (metrics__shard < 0)
        metrics__shard = (int)(atomic_fetch_add_explicit(&metrics__next_shard, 1, memory_order_relaxed) % METRICS__SHARDS);
    atomic_fetch_add_explicit(&metrics__c[metrics__shard].v[c], n, memory_order_relaxed);
}

static uint64_t metrics__sum(metric_counter_t c)
{
    uint64_t t = 0;
    for (int i = 0; i < METRICS__SHARDS; i++) t += atomic_load_explicit(&metrics__c[i].v[c], memory_order_relaxed);
    return t;
}

void metrics_observe(metric_hist_t h, double v)
{
    for (int i = 0; i < METRICS__BUCKETS; i++)
        if (v <= metrics__hdesc[h].le[i]) {
            atomic_fetch_add_explicit(&metrics__h[h].bucket[i], 1, memory_order_relaxed);
            break;
        }
    atomic_fetch_add_explicit(&metrics__h[h].count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&metrics__h[h].sum_micro, (uint64_t)(v * 1e6), memory_order_relaxed);
}

static void metrics__reg(const char *name, const char *help, metrics_gauge_fn fn, int counter)
{
    if (metrics__nfns == (int)(sizeof metrics__fns / sizeof metrics__fns[0])) return;
    metrics__fns[metrics__nfns++] = (metrics_fn_t){name, help, fn, counter};
}

void metrics_gauge(const char *name, const char *help, metrics_gauge_fn fn) { metrics__reg(name, help, fn, 0); }
void metrics_counter_fn(const char *name, const char *help, metrics_gauge_fn fn) { metrics__reg(name, help, fn, 1); }

int metrics_render(buf_t *b)
{
    int rc = 0;
    for (int i = 0; i < M_COUNTER__N; i++)
        rc |= buf_appendf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", metrics__cdesc[i].name,
                          metrics__cdesc[i].help, metrics__cdesc[i].name, metrics__cdesc[i].name,
                          (unsigned long long)metrics__sum((metric_counter_t)i));
    for (int i = 0; i < metrics__nfns; i++) {
        const metrics_fn_t *f = &metrics__fns[i];
        rc |= buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", f->name, f->help, f->name,
                          f->counter ? "counter" : "gauge", f->name, f->fn());
    }
    for (int h = 0; h < H__N; h++) {
        const char *n = metrics__hdesc[h].name;
        rc |= buf_appendf(b, "# HELP %s %s\n# TYPE %s histogram\n", n, metrics__hdesc[h].help, n);
        uint64_t cum = 0;
        for (int i = 0; i < METRICS__BUCKETS; i++) {
            cum += atomic_load_explicit(&metrics__h[h].bucket[i], memory_order_relaxed);
            rc |= buf_appendf(b, "%s_bucket{le=\"%g\"} %llu\n", n, metrics__hdesc[h].le[i], (unsigned long long)cum);
        }
        uint64_t count = atomic_load_explicit(&metrics__h[h].count, memory_order_relaxed);
        if (count < cum) count = cum; /* a scrape between the two adds */
        rc |= buf_appendf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", n, (unsigned long long)count,
                          n, (double)atomic_load_explicit(&metrics__h[h].sum_micro, memory_order_relaxed) / 1e6, n,
                          (unsigned long long)count);
    }
    return rc;
}

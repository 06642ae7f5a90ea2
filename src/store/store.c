/*
 * store.c: the store's threads and queues (store.h).
 *
 * Two threads, each with its own backend connection. The writer owns a FIFO
 * of store_job_t; it takes everything queued (up to STORE__BATCH_OPS ops, at
 * least one job), applies all the jobs' ops with ONE backend apply (one
 * transaction: group commit), then calls each job's done(job, 0) in FIFO
 * order. While it commits, new jobs pile up and form the next batch, so the
 * cost of a durable commit is shared by everyone who wrote meanwhile.
 * STORE_SYNC starts a batch as soon as a job is queued. STORE_ASYNC waits
 * until flush_ms have passed since the oldest queued job arrived, or until
 * STORE__BATCH_OPS ops are queued, so at most flush_ms of writes are at risk.
 *
 * A failed apply (disk full, SQLITE_BUSY, a lost database) is logged, sets the
 * failing flag (/healthz), and the SAME batch is retried after 10 ms, 20 ms,
 * ... up to 1 s between tries, forever: jobs are never dropped or reordered
 * and done() only follows a successful commit, because chat/ relies on
 * committed seqs being gapless. A batch that can never commit (a caller bug
 * such as a duplicate (room, seq)) therefore stalls the writer, loudly.
 *
 * The reader runs store_read_t jobs FIFO with its connection, each only once
 * every write queued before it has been committed (read-your-writes; an
 * async writer is asked to flush at once when a read waits). store_load uses
 * a third, temporary connection on the caller's thread.
 *
 * Locking: one mutex guards both queues and the closing flags; callers hold
 * it only to link a job and maybe signal, never while a backend runs. The
 * counters are atomics. store_close: jobs queued before it are committed (or
 * run); jobs queued after it began are refused on the store's thread
 * (done(job, SORI_ECLOSED); run(rd, type, NULL): clean up only). Queuing after
 * the threads have exited is a caller bug: it is logged and refused inline.
 * Callbacks must not call store_close.
 */
#include "store/store.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <uv.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STORE__BATCH_OPS 4096
#define STORE__BACKOFF_MIN_MS 10
#define STORE__BACKOFF_MAX_MS 1000
#define STORE__FLUSH_MAX_MS 1000

struct store {
    const store_type_t *type;
    char *url;
    int mode;
    int flush_ms;

    pthread_mutex_t mu;
    pthread_cond_t wcond; /* writer: work queued, threshold crossed, closing */
    pthread_cond_t rcond; /* reader: work queued, closing */
    /* guarded by mu */
    store_job_t *wq_head, *wq_tail;
    size_t wq_nops;
    int64_t wq_oldest_ns; /* arrival of the oldest queued job (monotonic) */
    store_job_t *wlate_head, *wlate_tail; /* queued after close began: refused */
    store_read_t *rq_head, *rq_tail;
    store_read_t *rlate_head, *rlate_tail;
    int closing;
    int w_exited, r_exited;
    uint64_t w_queued;    /* jobs accepted by store_write */
    uint64_t w_committed; /* jobs whose batch committed */
    int flush_now;        /* a read waits: async writer, do not wait */

    pthread_t writer, reader;
    int w_started, r_started;
    store_backend_t *wb, *rb;
    store_op_t *ops; /* writer only: the batch's ops, contiguous */
    size_t ops_cap;

    atomic_uint_fast64_t n_batches, n_ops, n_failures;
    atomic_uint_fast64_t backlog; /* ops accepted by store_write, not yet committed */
    atomic_int failing;
};

static const store_type_t *const store__types[] = {&store_type_sqlite, &store_type_pg};

const store_type_t *store_type_find(const char *name)
{
    if (!name) return NULL;
    if (strcmp(name, "postgres") == 0) return &store_type_pg; /* the usual short name */
    for (size_t i = 0; i < sizeof store__types / sizeof store__types[0]; i++)
        if (strcmp(store__types[i]->name, name) == 0) return store__types[i];
    return NULL;
}

/* Copies url for the log with any password masked: the user:PASSWORD@ of a
 * URL and the value of password= (a conninfo string or a URL query). */
static void store__redact(const char *url, char *out, size_t size)
{
    const char *from = NULL, *to = NULL, *s = strstr(url, "://");
    if (s) {
        const char *host = s + 3, *end = host + strcspn(host, "/?#"), *at = NULL, *colon;
        for (const char *c = host; c < end; c++)
            if (*c == '@') at = c;
        if (at && (colon = memchr(host, ':', (size_t)(at - host)))) from = colon + 1, to = at;
    }
    size_t o = 0;
    for (const char *c = url; *c && o + 1 < size;) {
        const char *mask = NULL;
        if (c == from) {
            mask = "***";
            c = to;
        } else if (strncmp(c, "password=", 9) == 0) {
            mask = "password=***";
            c += 9 + strcspn(c + 9, " &");
        }
        if (mask)
            for (; *mask && o + 1 < size; mask++) out[o++] = *mask;
        else
            out[o++] = *c++;
    }
    out[o] = 0;
}

static int64_t store__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void store__sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the writer ---- */

/* Unlinks the head of the queue: jobs while they fit in STORE__BATCH_OPS
 * ops (at least one). Called with mu held and a non-empty queue. Jobs left
 * behind keep wq_oldest_ns, which is no later than their own arrival: in
 * async mode they are due no later than flush_ms after it (a little early,
 * never late). */
static store_job_t *store__take(store_t *s, size_t *nops)
{
    store_job_t *head = s->wq_head, *last = head;
    size_t n = head->nops;
    while (last->next && n + last->next->nops <= STORE__BATCH_OPS) {
        last = last->next;
        n += last->nops;
    }
    s->wq_head = last->next;
    if (!s->wq_head) s->wq_tail = NULL;
    last->next = NULL;
    s->wq_nops -= n;
    *nops = n;
    return head;
}

/* Copies the batch's ops into one array for apply. 0 or SORI_ENOMEM. */
static int store__gather(store_t *s, store_job_t *batch, size_t nops)
{
    if (nops > s->ops_cap) {
        store_op_t *p = realloc(s->ops, nops * sizeof *p);
        if (!p) return SORI_ENOMEM;
        s->ops = p;
        s->ops_cap = nops;
    }
    size_t at = 0;
    for (store_job_t *j = batch; j; j = j->next) {
        if (j->nops) memcpy(s->ops + at, j->ops, j->nops * sizeof *j->ops);
        at += j->nops;
    }
    return 0;
}

/* Commits one batch, retrying until it succeeds, then reports it. Runs on
 * the writer thread without the lock. */
static void store__commit(store_t *s, store_job_t *batch, size_t nops)
{
    int backoff = STORE__BACKOFF_MIN_MS, gathered = 0;
    uint64_t tries = 0;
    for (;;) {
        int rc = gathered ? 0 : store__gather(s, batch, nops);
        if (rc == 0) {
            gathered = 1;
            uint64_t t0 = uv_hrtime();
            rc = s->type->apply(s->wb, s->ops, nops);
            if (rc == 0) {
                metrics_observe(H_STORE_COMMIT_MS, (double)(uv_hrtime() - t0) / 1e6);
                metrics_observe(H_STORE_BATCH_OPS, (double)nops);
            }
        }
        if (rc == 0) break;
        tries++;
        atomic_fetch_add_explicit(&s->n_failures, 1, memory_order_relaxed);
        atomic_store_explicit(&s->failing, 1, memory_order_relaxed);
        LOG_ERROR("store", "commit of %zu ops failed (%s, try %llu); retrying in %d ms", nops, sori_strerror(rc),
                  (unsigned long long)tries, backoff);
        store__sleep_ms(backoff);
        backoff = backoff * 2 > STORE__BACKOFF_MAX_MS ? STORE__BACKOFF_MAX_MS : backoff * 2;
    }
    if (tries) {
        atomic_store_explicit(&s->failing, 0, memory_order_relaxed);
        LOG_INFO("store", "commits succeed again after %llu failed tries", (unsigned long long)tries);
    }
    atomic_fetch_add_explicit(&s->n_batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->n_ops, nops, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->backlog, nops, memory_order_relaxed);
    /* done may free the job: read next first. */
    uint64_t njobs = 0;
    for (store_job_t *j = batch, *next; j; j = next) {
        next = j->next;
        j->done(j, 0);
        njobs++;
    }
    pthread_mutex_lock(&s->mu);
    s->w_committed += njobs;
    pthread_cond_broadcast(&s->rcond); /* a read may wait for these */
    pthread_mutex_unlock(&s->mu);
}

static void store__timedwait(pthread_cond_t *c, pthread_mutex_t *mu, int64_t due_ns)
{
    struct timespec ts = {(time_t)(due_ns / 1000000000), (long)(due_ns % 1000000000)};
    pthread_cond_timedwait(c, mu, &ts);
}

static void *store__writer(void *arg)
{
    store_t *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (!s->wq_head) {
            /* Refusals come after every accepted job has been reported. */
            if (s->wlate_head) {
                store_job_t *j = s->wlate_head, *next;
                s->wlate_head = s->wlate_tail = NULL;
                pthread_mutex_unlock(&s->mu);
                for (; j; j = next) {
                    next = j->next;
                    j->done(j, SORI_ECLOSED);
                }
                pthread_mutex_lock(&s->mu);
                continue;
            }
            if (s->closing) break;
            pthread_cond_wait(&s->wcond, &s->mu);
            continue;
        }
        if (s->mode == STORE_ASYNC && !s->closing && !s->flush_now && s->wq_nops < STORE__BATCH_OPS) {
            int64_t due = s->wq_oldest_ns + (int64_t)s->flush_ms * 1000000;
            if (store__now_ns() < due) {
                store__timedwait(&s->wcond, &s->mu, due);
                continue;
            }
        }
        size_t nops;
        store_job_t *batch = store__take(s, &nops);
        if (!s->wq_head) s->flush_now = 0;
        pthread_mutex_unlock(&s->mu);
        store__commit(s, batch, nops);
        pthread_mutex_lock(&s->mu);
    }
    s->w_exited = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void store_write(store_t *s, store_job_t *job)
{
    job->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->w_exited) {
        pthread_mutex_unlock(&s->mu);
        LOG_ERROR("store", "write after store_close: refused");
        job->done(job, SORI_ECLOSED);
        return;
    }
    if (s->closing) {
        if (s->wlate_tail) s->wlate_tail->next = job;
        else s->wlate_head = job;
        s->wlate_tail = job;
        pthread_cond_signal(&s->wcond);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    int was_empty = s->wq_head == NULL;
    size_t before = s->wq_nops;
    if (s->wq_tail) s->wq_tail->next = job;
    else s->wq_head = job;
    s->wq_tail = job;
    s->wq_nops += job->nops;
    s->w_queued++;
    atomic_fetch_add_explicit(&s->backlog, job->nops, memory_order_relaxed);
    int wake;
    if (s->mode == STORE_ASYNC) {
        if (was_empty) s->wq_oldest_ns = store__now_ns();
        wake = was_empty || (before < STORE__BATCH_OPS && s->wq_nops >= STORE__BATCH_OPS);
    } else {
        /* The sync writer only sleeps on an empty queue. */
        wake = was_empty;
    }
    if (wake) pthread_cond_signal(&s->wcond);
    pthread_mutex_unlock(&s->mu);
}

/* ---- the reader ---- */

static void *store__reader(void *arg)
{
    store_t *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        store_read_t *rd = s->rq_head;
        store_backend_t *b = s->rb;
        if (rd && rd->barrier > s->w_committed && !s->closing) {
            /* Read-your-writes: wait for the writes queued before it. */
            s->flush_now = 1;
            pthread_cond_signal(&s->wcond);
            pthread_cond_wait(&s->rcond, &s->mu);
            continue;
        }
        if (rd) {
            s->rq_head = rd->next;
            if (!s->rq_head) s->rq_tail = NULL;
        } else if ((rd = s->rlate_head)) {
            s->rlate_head = rd->next;
            if (!s->rlate_head) s->rlate_tail = NULL;
            b = NULL;
        } else if (s->closing) {
            break;
        } else {
            pthread_cond_wait(&s->rcond, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        rd->next = NULL;
        rd->run(rd, s->type, b);
        pthread_mutex_lock(&s->mu);
    }
    s->r_exited = 1;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void store_read(store_t *s, store_read_t *rd)
{
    rd->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->r_exited) {
        pthread_mutex_unlock(&s->mu);
        LOG_ERROR("store", "read after store_close: refused");
        rd->run(rd, s->type, NULL);
        return;
    }
    rd->barrier = s->w_queued;
    store_read_t **head = s->closing ? &s->rlate_head : &s->rq_head;
    store_read_t **tail = s->closing ? &s->rlate_tail : &s->rq_tail;
    int was_empty = !s->rq_head && !s->rlate_head;
    if (*tail) (*tail)->next = rd;
    else *head = rd;
    *tail = rd;
    if (was_empty) pthread_cond_signal(&s->rcond);
    pthread_mutex_unlock(&s->mu);
}

/* ---- life cycle ---- */

/* Starts fn on a thread that blocks every signal (signals are the loops'
 * business). 0 or an errno. */
static int store__spawn(pthread_t *t, void *(*fn)(void *), store_t *s, const char *name)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) pthread_setname_np(*t, name);
    return rc;
}

/* Stops the threads that were started; commits what the writer has. */
static void store__stop(store_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->closing = 1;
    pthread_cond_broadcast(&s->wcond);
    pthread_cond_broadcast(&s->rcond);
    pthread_mutex_unlock(&s->mu);
    if (s->w_started) pthread_join(s->writer, NULL);
    if (s->r_started) pthread_join(s->reader, NULL);
    s->w_started = s->r_started = 0;
}

store_t *store_open(const store_type_t *type, const char *url, int mode, int flush_ms, char *err, size_t errlen)
{
    store_t *s = NULL;
    pthread_condattr_t ca;
    int have_mu = 0, have_wcond = 0, have_rcond = 0, rc;
    if (!type || !url) {
        snprintf(err, errlen, "store: no backend or no url");
        return NULL;
    }
    if (mode != STORE_SYNC && mode != STORE_ASYNC) {
        snprintf(err, errlen, "store: unknown durability mode %d", mode);
        return NULL;
    }
    if (mode == STORE_ASYNC && (flush_ms < 1 || flush_ms > STORE__FLUSH_MAX_MS)) {
        snprintf(err, errlen, "store: flush interval %d ms is outside 1..%d", flush_ms, STORE__FLUSH_MAX_MS);
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->type = type;
    s->mode = mode;
    s->flush_ms = flush_ms;
    s->url = strdup(url);
    s->ops_cap = STORE__BATCH_OPS;
    s->ops = malloc(s->ops_cap * sizeof *s->ops);
    if (!s->url || !s->ops) goto nomem;
    if (pthread_mutex_init(&s->mu, NULL)) goto nomem;
    have_mu = 1;
    /* Async deadlines are monotonic: a clock step must not stretch them. */
    if (pthread_condattr_init(&ca)) goto nomem;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    have_wcond = pthread_cond_init(&s->wcond, &ca) == 0;
    have_rcond = pthread_cond_init(&s->rcond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!have_wcond || !have_rcond) goto nomem;

    s->wb = type->open(url, 1, err, errlen);
    if (!s->wb) goto fail;
    s->rb = type->open(url, 0, err, errlen);
    if (!s->rb) goto fail;

    rc = store__spawn(&s->writer, store__writer, s, "sori-store-w");
    if (rc) {
        snprintf(err, errlen, "store: cannot start the writer thread: %s", strerror(rc));
        goto fail;
    }
    s->w_started = 1;
    rc = store__spawn(&s->reader, store__reader, s, "sori-store-r");
    if (rc) {
        snprintf(err, errlen, "store: cannot start the reader thread: %s", strerror(rc));
        goto fail;
    }
    s->r_started = 1;
    char shown[512];
    store__redact(url, shown, sizeof shown);
    LOG_INFO("store", "%s store open at %s, %s durability", type->name, shown,
             mode == STORE_SYNC ? "sync" : "async");
    return s;
nomem:
    snprintf(err, errlen, "store: out of memory");
fail:
    if (!s) return NULL;
    if (s->w_started) store__stop(s);
    if (s->rb) type->close(s->rb);
    if (s->wb) type->close(s->wb);
    if (have_rcond) pthread_cond_destroy(&s->rcond);
    if (have_wcond) pthread_cond_destroy(&s->wcond);
    if (have_mu) pthread_mutex_destroy(&s->mu);
    free(s->ops);
    free(s->url);
    free(s);
    return NULL;
}

int store_load(store_t *s, int recent, int64_t idem_since_ms, const store_load_cb_t *cb)
{
    char err[256];
    store_backend_t *b = s->type->open(s->url, 0, err, sizeof err);
    if (!b) {
        LOG_ERROR("store", "load: %s", err);
        return SORI_EIO;
    }
    int rc = s->type->load(b, recent, idem_since_ms, cb);
    s->type->close(b);
    return rc;
}

void store_close(store_t *s)
{
    if (!s) return;
    store__stop(s);
    s->type->close(s->rb);
    s->type->close(s->wb);
    pthread_cond_destroy(&s->rcond);
    pthread_cond_destroy(&s->wcond);
    pthread_mutex_destroy(&s->mu);
    LOG_INFO("store", "store closed: %llu batches, %llu ops committed",
             (unsigned long long)atomic_load(&s->n_batches), (unsigned long long)atomic_load(&s->n_ops));
    free(s->ops);
    free(s->url);
    free(s);
}

void store_stats(store_t *s, uint64_t *batches, uint64_t *ops, uint64_t *failures)
{
    if (batches) *batches = atomic_load_explicit(&s->n_batches, memory_order_relaxed);
    if (ops) *ops = atomic_load_explicit(&s->n_ops, memory_order_relaxed);
    if (failures) *failures = atomic_load_explicit(&s->n_failures, memory_order_relaxed);
}

uint64_t store_backlog(store_t *s)
{
    return atomic_load_explicit(&s->backlog, memory_order_relaxed);
}

int store_failing(store_t *s)
{
    return atomic_load_explicit(&s->failing, memory_order_relaxed);
}

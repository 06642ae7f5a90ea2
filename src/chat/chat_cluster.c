/*
 * chat_cluster.c: this node's part in a cluster (docs/OPERATIONS.md
 * "Cluster mode"): the bus (src/bus, Redis) for presence across nodes, the
 * node registry and discovery, and the bus's health.
 *
 * Owns the bus_t and one small thread that, every presence TTL/3, checks
 * that the nodes our users are marked online on still have their presence
 * hash (a crashed node sends nothing; its hash expires). The bus pointer is
 * published under a lock because the bus thread may call back before
 * bus_open returns. Presence: a user's first and last local
 * session tell the bus (chat_core.c calls chat__cluster_presence); each
 * user record keeps the set of other nodes the user is online on (from
 * their "+user"/"-user" notices, and from a node's whole hash after its "*"
 * notice or when our link comes up), and presence events go to local
 * watchers only when the overall state (local sessions or any other node)
 * changes. A presence command about users not online here asks Redis (any
 * live node) for the reply, and resyncs every node's set if that user was
 * not in ours (a late watcher then hears them go offline).
 * Bus callbacks run on the bus thread: they take user locks (leaves of the
 * lock order) and post to workers; they never block. Numbers: one
 * bus_presence_query per presence command that names users not online
 * here; one HKEYS per node after its "*", per node when the link comes up
 * and per node whose hash vanished; one EXISTS per such node every TTL/3;
 * the registry is rewritten every TTL/3.
 */
#include "bus/bus.h"
#include "chat/chat_internal.h"
#include "net/net.h"
#include "util/err.h"
#include "util/log.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    bus_t *bus;
    int on;               /* set once by chat_cluster_start, before any session */
    uv_rwlock_t bus_lock; /* held for reading around the relay's bus calls; stop takes it to write */
    int ttl_ms;           /* presence TTL: the liveness check runs every ttl/3 */
    uv_thread_t thread;   /* the liveness check */
    uv_mutex_t lock;
    uv_cond_t cond;
    int stop, started;
} chat__cl;

int chat_cluster_on(void) { return chat__cl.on; }
int chat__relay_on(void) { return chat__cl.on; }

struct bus *chat__cluster_bus_hold(void)
{
    if (!chat__cl.on) return NULL;
    uv_rwlock_rdlock(&chat__cl.bus_lock);
    uv_mutex_lock(&chat__cl.lock);
    bus_t *b = chat__cl.stop ? NULL : chat__cl.bus;
    uv_mutex_unlock(&chat__cl.lock);
    return b;
}

void chat__cluster_bus_release(void)
{
    if (chat__cl.on) uv_rwlock_rdunlock(&chat__cl.bus_lock);
}
int chat_cluster_up(void) { return chat__cl.bus && bus_up(chat__cl.bus); }

static struct {
    int self;
} chat__cl_id;

/* The bus, for its own callbacks, which may run before bus_open returned. */
static bus_t *chat__cl_bus(void)
{
    uv_mutex_lock(&chat__cl.lock);
    while (!chat__cl.bus && !chat__cl.stop) uv_cond_wait(&chat__cl.cond, &chat__cl.lock);
    bus_t *b = chat__cl.bus;
    uv_mutex_unlock(&chat__cl.lock);
    return b;
}

static int chat__cl_online_locked(const chat_user_t *u) { return u->nsessions > 0 || u->nrnodes > 0; }

/* Marks user u online (on = 1) or not on node `node`; emits a presence
 * event to local watchers when the user's overall state moves. */
static void chat__cl_mark(chat_user_t *u, int node, int on)
{
    int64_t now = chat__now_ms();
    uv_mutex_lock(&u->lock);
    int was = chat__cl_online_locked(u), at = -1;
    for (uint16_t i = 0; i < u->nrnodes && at < 0; i++)
        if (u->rnodes[i] == node) at = i;
    if (on && at < 0) {
        if (u->nrnodes == u->caprnodes) {
            uint16_t cap = u->caprnodes ? (uint16_t)(u->caprnodes * 2) : 2;
            uint16_t *v = realloc(u->rnodes, cap * sizeof *v);
            if (v) u->rnodes = v, u->caprnodes = cap;
        }
        if (u->nrnodes < u->caprnodes) u->rnodes[u->nrnodes++] = (uint16_t)node;
    } else if (!on && at >= 0) {
        u->rnodes[at] = u->rnodes[--u->nrnodes];
    }
    int is = chat__cl_online_locked(u);
    if (was && !is) u->last_seen = now;
    uv_mutex_unlock(&u->lock);
    if (was != is) chat__presence_changed(u, is, is ? 0 : now);
}

/* ---- a node's whole set: after its "*" notice, and for every node when
 * our link comes up (notices may have been missed) ---- */

typedef struct {
    int node;
    map_t names; /* the users online there (values unused) */
} chat_cl_sync_t;

static void chat__cl_sync_user(const char *k, size_t kl, void *v, void *arg)
{
    chat_cl_sync_t *y = arg;
    chat__cl_mark(v, y->node, map_get(&y->names, k, kl) != NULL);
}

static void chat__cl_node_set(void *arg, int status, const bus_reply_t *r)
{
    chat_cl_sync_t *y = arg;
    if (status == 0 && r && r->type == BUS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i].type == BUS_REPLY_STRING && r->element[i].len <= CHAT_USER_MAX)
                map_put(&y->names, r->element[i].str, r->element[i].len, (void *)1);
        chat__users_foreach(chat__cl_sync_user, y);
    }
    map_free(&y->names);
    free(y);
}

static void chat__cl_sync_node(int node)
{
    if (node == chat__cl_id.self) return;
    chat_cl_sync_t *y = calloc(1, sizeof *y);
    if (!y) return;
    y->node = node;
    char key[64];
    snprintf(key, sizeof key, "sori:online:%d", node);
    const char *argv[2] = {"HKEYS", key};
    if (bus_command(chat__cl_bus(), 2, argv, NULL, chat__cl_node_set, y)) free(y);
}

static void chat__cl_nodes(void *arg, int status, const bus_reply_t *r)
{
    (void)arg;
    if (status || !r || r->type != BUS_REPLY_ARRAY) return;
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i].type == BUS_REPLY_STRING) chat__cl_sync_node(atoi(r->element[i].str));
}

static void chat__cl_presence_notice(int origin, const char *data, size_t len)
{
    int online;
    const char *name;
    size_t nl;
    if (origin < 0 || origin > UINT16_MAX || bus_presence_notice_parse(data, len, &online, &name, &nl) != 0)
        return;
    if (online < 0) {
        chat__cl_sync_node(origin); /* it rewrote or dropped its whole set */
        return;
    }
    if (nl > CHAT_USER_MAX) return;
    char user[CHAT_USER_MAX + 1];
    memcpy(user, name, nl);
    user[nl] = 0;
    chat_user_t *u = chat__user_get(user, 0);
    if (u) chat__cl_mark(u, origin, online); /* else nobody here knows or watches them */
}

static void chat__cl_on_message(void *arg, int origin, const char *channel, const char *data, size_t len)
{
    (void)arg;
    if (!strcmp(channel, BUS_PRESENCE_CHANNEL))
        chat__cl_presence_notice(origin, data, len);
    else
        chat__relay_on_message(origin, channel, data, len);
}

/* Every other node's whole set (HKEYS each): when our link comes up, and
 * when a watcher asks about someone online where we do not know. */
static void chat__cl_sync_all(void)
{
    const char *argv[2] = {"SMEMBERS", "sori:presence:nodes"};
    bus_command(chat__cl_bus(), 2, argv, NULL, chat__cl_nodes, NULL);
}

static void chat__cl_on_state(void *arg, int up)
{
    (void)arg;
    if (up) {
        LOG_INFO("cluster", "bus up");
        chat__cl_sync_all();
        chat__relay_on_up();
    } else {
        LOG_WARN("cluster", "bus down: /healthz answers 503 until it is back");
        chat__relay_on_down();
    }
}

/* ---- nodes that die without a word ---- */

/* A crashed node sends no "-user": its hash just expires. Every TTL/3 the
 * nodes our users are marked online on are checked; one whose hash is gone
 * is synced (to empty: its users go offline here). */
static void chat__cl_collect_nodes(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl;
    chat_user_t *u = v;
    uint8_t *seen = arg; /* [UINT16_MAX + 1] */
    uv_mutex_lock(&u->lock);
    for (uint16_t i = 0; i < u->nrnodes; i++) seen[u->rnodes[i]] = 1;
    uv_mutex_unlock(&u->lock);
}

static void chat__cl_exists(void *arg, int status, const bus_reply_t *r)
{
    int node = (int)(intptr_t)arg;
    if (status == 0 && r && r->type == BUS_REPLY_INTEGER && r->integer == 0) chat__cl_sync_node(node);
}

static void chat__cl_check_nodes(void)
{
    uint8_t *seen = calloc(UINT16_MAX + 1, 1);
    if (!seen) return;
    chat__users_foreach(chat__cl_collect_nodes, seen);
    for (int n = 0; n <= UINT16_MAX; n++) {
        if (!seen[n]) continue;
        char key[64];
        snprintf(key, sizeof key, "sori:online:%d", n);
        const char *argv[2] = {"EXISTS", key};
        bus_command(chat__cl.bus, 2, argv, NULL, chat__cl_exists, (void *)(intptr_t)n);
    }
    free(seen);
}

static void chat__cl_main(void *arg)
{
    (void)arg;
    uv_mutex_lock(&chat__cl.lock);
    while (!chat__cl.stop) {
        uv_cond_timedwait(&chat__cl.cond, &chat__cl.lock, (uint64_t)(chat__cl.ttl_ms / 3) * 1000000ull);
        if (chat__cl.stop) break;
        uv_mutex_unlock(&chat__cl.lock);
        if (bus_up(chat__cl.bus)) chat__cl_check_nodes();
        uv_mutex_lock(&chat__cl.lock);
    }
    uv_mutex_unlock(&chat__cl.lock);
}

static double chat__cl_load(void) { return (double)net_connections(); }

int chat_cluster_start(const char *redis_url, int node_id, int presence_ttl_ms, int node_ttl_ms, char *err,
                       size_t errlen)
{
    bus_handler_t h = {.arg = NULL, .on_message = chat__cl_on_message, .on_state = chat__cl_on_state};
    bus_opts_t o = {
        .presence_ttl_ms = presence_ttl_ms,
        .presence_refresh_ms = presence_ttl_ms / 3,
        .node_ttl_ms = node_ttl_ms,
        .node_refresh_ms = node_ttl_ms / 3,
    };
    chat__cl_id.self = node_id;
    chat__cl.ttl_ms = presence_ttl_ms;
    chat__cl.stop = 0;
    uv_mutex_init(&chat__cl.lock);
    uv_cond_init(&chat__cl.cond);
    uv_rwlock_init(&chat__cl.bus_lock);
    chat__cl.on = 1;
    /* the bus thread may call back before bus_open returns: its callbacks
     * wait for the pointer (chat__cl_bus) */
    bus_t *b = bus_open_opts(redis_url, node_id, &h, &o, err, errlen);
    uv_mutex_lock(&chat__cl.lock);
    chat__cl.bus = b;
    chat__cl.stop = !b;
    uv_cond_broadcast(&chat__cl.cond);
    uv_mutex_unlock(&chat__cl.lock);
    if (!b) {
        chat__cl.on = 0;
        uv_rwlock_destroy(&chat__cl.bus_lock);
        uv_cond_destroy(&chat__cl.cond);
        uv_mutex_destroy(&chat__cl.lock);
        return SORI_EINVAL;
    }
    /* signals are the main loop's: the check thread blocks them */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = uv_thread_create(&chat__cl.thread, chat__cl_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        snprintf(err, errlen, "cannot start the cluster thread");
        bus_close(chat__cl.bus);
        chat__cl.bus = NULL;
        return SORI_EIO;
    }
    chat__cl.started = 1;
    if (chat__relay_start()) {
        snprintf(err, errlen, "cannot start the relay thread");
        chat_cluster_stop();
        return SORI_EIO;
    }
    return 0;
}

int chat_cluster_register(const char *ws_url)
{
    return chat__cl.bus ? bus_register(chat__cl.bus, ws_url, chat__cl_load) : SORI_ENOTFOUND;
}

void chat_cluster_stop(void)
{
    if (chat__cl.on) {
        /* the relay's calls (store and bus threads) see stop and skip the bus */
        uv_rwlock_wrlock(&chat__cl.bus_lock);
        uv_mutex_lock(&chat__cl.lock);
        chat__cl.stop = 1;
        uv_mutex_unlock(&chat__cl.lock);
        uv_rwlock_wrunlock(&chat__cl.bus_lock);
    }
    chat__relay_stop();
    if (chat__cl.started) {
        uv_mutex_lock(&chat__cl.lock);
        chat__cl.stop = 1;
        uv_cond_signal(&chat__cl.cond);
        uv_mutex_unlock(&chat__cl.lock);
        uv_thread_join(&chat__cl.thread);
        chat__cl.started = 0;
    }
    /* The lock and cond stay: bus callbacks use them until bus_close has
     * joined the bus thread (a peer's "*" notice during our stop once hit a
     * destroyed mutex), and the store's last commits (chat_shutdown) ask for
     * the bus after that. */
    bus_close(chat__cl.bus);
    uv_mutex_lock(&chat__cl.lock);
    chat__cl.bus = NULL;
    uv_mutex_unlock(&chat__cl.lock);
}

void chat__cluster_presence(const char *user, int online)
{
    if (chat__cl.bus && bus_presence_set(chat__cl.bus, user, online))
        LOG_WARN("cluster", "presence of %s not recorded", user);
}

/* ---- the presence command: users not online here are asked about ---- */

typedef struct {
    chat_session_t *s;
    json_t *ref;   /* held copy */
    json_t *reply; /* {type:"presence", users:[...]}: touched on s's worker only */
    size_t n;
    uint8_t *online;
    chat_user_t **users;
    size_t *index; /* positions in users[] of the reply */
    int status;
} chat_cl_presence_t;

static void chat__cl_presence_free(chat_cl_presence_t *p)
{
    json_decref(p->ref);
    json_decref(p->reply);
    chat__session_unref(p->s);
    free(p->online);
    free(p->users);
    free(p->index);
    free(p);
}

static void chat__cl_presence_reply(net_worker_t *w, void *arg)
{
    (void)w;
    chat_cl_presence_t *p = arg;
    json_t *list = json_object_get(p->reply, "users");
    int untracked = 0;
    for (size_t i = 0; i < p->n && p->status == 0; i++) {
        if (!p->online[i]) continue;
        if (p->users[i]) {
            /* online elsewhere but not in our sets (we were not watching
             * when they came online): learn where, so their going offline
             * reaches the new watcher */
            uv_mutex_lock(&p->users[i]->lock);
            untracked |= !chat__cl_online_locked(p->users[i]);
            uv_mutex_unlock(&p->users[i]->lock);
        }
        json_t *o = json_array_get(list, p->index[i]);
        json_object_set_new(o, "online", json_true());
        json_object_set_new(o, "last_seen", json_null());
    }
    if (!p->s->closed) {
        chat__reply(p->s, p->ref, p->reply);
        p->reply = NULL;
    }
    if (untracked) chat__cl_sync_all();
    chat__cl_presence_free(p);
}

static void chat__cl_presence_answer(void *arg, int status, const uint8_t *online)
{
    chat_cl_presence_t *p = arg;
    p->status = status;
    if (status == 0) memcpy(p->online, online, p->n);
    if (net_worker_post(net_worker_get(p->s->worker), chat__cl_presence_reply, p)) chat__cl_presence_free(p);
}

int chat__cluster_presence_reply(chat_session_t *s, json_t *ref, json_t *reply, const char *const *names,
                                 chat_user_t **users, const size_t *index, size_t n)
{
    if (!chat__cl.bus || !n) return -1;
    chat_cl_presence_t *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->online = calloc(n, 1);
    p->users = calloc(n, sizeof *p->users);
    p->index = calloc(n, sizeof *p->index);
    if (!p->online || !p->users || !p->index) {
        free(p->online), free(p->users), free(p->index), free(p);
        return -1;
    }
    p->s = chat__session_ref(s);
    p->ref = chat__ref_hold(ref);
    p->reply = reply;
    p->n = n;
    memcpy(p->users, users, n * sizeof *users);
    memcpy(p->index, index, n * sizeof *index);
    if (bus_presence_query(chat__cl.bus, names, n, chat__cl_presence_answer, p)) {
        p->reply = NULL; /* the caller still owns it */
        chat__cl_presence_free(p);
        return -1;
    }
    return 0;
}

/* ---- discovery ---- */

typedef struct {
    net_worker_t *w;
    chat_discover_fn done;
    void *arg;
    int status;
    int node;
    char ws[512];
} chat_cl_discover_t;

static void chat__cl_discover_task(net_worker_t *w, void *arg)
{
    chat_cl_discover_t *d = arg;
    d->done(w, d->arg, d->status, d->ws, d->node);
    free(d);
}

static void chat__cl_discovered(void *arg, int status, const bus_node_t *nodes, size_t n)
{
    chat_cl_discover_t *d = arg;
    d->status = status == 0 && n == 0 ? SORI_ENOTFOUND : status;
    const bus_node_t *best = NULL;
    for (size_t i = 0; status == 0 && i < n; i++)
        if (!best || nodes[i].load < best->load) best = &nodes[i];
    if (best) {
        snprintf(d->ws, sizeof d->ws, "%s", best->ws);
        d->node = best->node;
    }
    if (net_worker_post(d->w, chat__cl_discover_task, d)) free(d);
}

int chat_cluster_discover(net_worker_t *w, chat_discover_fn done, void *arg)
{
    if (!chat__cl.bus) return SORI_ENOTFOUND;
    chat_cl_discover_t *d = calloc(1, sizeof *d);
    if (!d) return SORI_ENOMEM;
    d->w = w;
    d->done = done;
    d->arg = arg;
    int rc = bus_discover(chat__cl.bus, chat__cl_discovered, d);
    if (rc) free(d);
    return rc;
}

/*
 * chat_cluster.c: this node's part in a cluster (docs/OPERATIONS.md
 * "Cluster mode"): the bus (src/bus, Redis) for presence across nodes, the
 * node registry and discovery, and the bus's health.
 *
 * Owns the bus_t and nothing else. Presence: a user's first and last local
 * session tell the bus (chat_core.c calls chat__cluster_presence); notices
 * of other nodes update chat_user_t.remote_online and emit presence events
 * to local watchers only when the user's overall state (local sessions or
 * online elsewhere) changes; an "offline" notice is checked against every
 * live node (the user may still be online on a third) before it counts.
 * Bus callbacks run on the bus thread: they take user locks (leaves of the
 * lock order) and post to workers; they never block. Numbers: one
 * bus_presence_query per offline notice and per presence command that names
 * users not online here; the registry is rewritten every 5 s (TTL 15 s).
 */
#include "bus/bus.h"
#include "chat/chat_internal.h"
#include "net/net.h"
#include "util/err.h"
#include "util/log.h"

#include <stdlib.h>
#include <string.h>

static struct {
    bus_t *bus;
} chat__cl;

int chat_cluster_on(void) { return chat__cl.bus != NULL; }
int chat_cluster_up(void) { return chat__cl.bus && bus_up(chat__cl.bus); }

static int chat__cl_online_locked(const chat_user_t *u)
{
    return u->nsessions > 0 || atomic_load(&u->remote_online);
}

/* Sets the user's remote state; emits an event if the overall state moved. */
static void chat__cl_set_remote(chat_user_t *u, int remote)
{
    int64_t now = chat__now_ms();
    uv_mutex_lock(&u->lock);
    int was = chat__cl_online_locked(u);
    atomic_store(&u->remote_online, (uint8_t)remote);
    int is = chat__cl_online_locked(u);
    if (was && !is) u->last_seen = now;
    uv_mutex_unlock(&u->lock);
    if (was != is) chat__presence_changed(u, is, is ? 0 : now);
}

typedef struct {
    size_t n;
    chat_user_t *users[];
} chat_cl_query_t;

static void chat__cl_query_done(void *arg, int status, const uint8_t *online)
{
    chat_cl_query_t *q = arg;
    if (status == 0)
        for (size_t i = 0; i < q->n; i++) chat__cl_set_remote(q->users[i], online[i]);
    free(q);
}

/* Re-asks the bus whether users[0..n) are online anywhere (bus thread or any). */
static void chat__cl_requery(chat_user_t **users, size_t n)
{
    if (!n) return;
    chat_cl_query_t *q = malloc(sizeof *q + n * sizeof q->users[0]);
    const char **names = malloc(n * sizeof *names);
    if (!q || !names) {
        free(q);
        free(names);
        return;
    }
    q->n = n;
    for (size_t i = 0; i < n; i++) {
        q->users[i] = users[i];
        names[i] = users[i]->name;
    }
    if (bus_presence_query(chat__cl.bus, names, n, chat__cl_query_done, q)) free(q);
    free(names);
}

typedef struct {
    chat_user_t **v;
    uint32_t n, cap;
} chat_cl_users_t;

static void chat__cl_collect_remote(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl;
    chat_user_t *u = v;
    chat_cl_users_t *list = arg;
    if (atomic_load(&u->remote_online)) chat__arr_add((void ***)&list->v, &list->n, &list->cap, u);
}

static void chat__cl_presence_notice(const char *data, size_t len)
{
    int online;
    const char *name;
    size_t nl;
    if (bus_presence_notice_parse(data, len, &online, &name, &nl) != 0) return;
    if (online < 0) {
        /* a node rewrote or dropped its whole set: re-ask about everyone we
         * think is online elsewhere */
        chat_cl_users_t list = {0};
        chat__users_foreach(chat__cl_collect_remote, &list);
        chat__cl_requery(list.v, list.n);
        free(list.v);
        return;
    }
    if (nl > CHAT_USER_MAX) return;
    char user[CHAT_USER_MAX + 1];
    memcpy(user, name, nl);
    user[nl] = 0;
    chat_user_t *u = chat__user_get(user, 0);
    if (!u) return; /* nobody here knows or watches them */
    if (online)
        chat__cl_set_remote(u, 1);
    else
        chat__cl_requery(&u, 1); /* offline there; maybe online on a third node */
}

static void chat__cl_on_message(void *arg, int origin, const char *channel, const char *data, size_t len)
{
    (void)arg, (void)origin;
    if (!strcmp(channel, BUS_PRESENCE_CHANNEL)) chat__cl_presence_notice(data, len);
}

static void chat__cl_on_state(void *arg, int up)
{
    (void)arg;
    if (up) {
        LOG_INFO("cluster", "bus up");
        /* notices may have been missed while down */
        chat_cl_users_t list = {0};
        chat__users_foreach(chat__cl_collect_remote, &list);
        chat__cl_requery(list.v, list.n);
        free(list.v);
    } else {
        LOG_WARN("cluster", "bus down: /healthz answers 503 until it is back");
    }
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
    chat__cl.bus = bus_open_opts(redis_url, node_id, &h, &o, err, errlen);
    return chat__cl.bus ? 0 : SORI_EINVAL;
}

int chat_cluster_register(const char *ws_url)
{
    return chat__cl.bus ? bus_register(chat__cl.bus, ws_url, chat__cl_load) : SORI_ENOTFOUND;
}

void chat_cluster_stop(void)
{
    bus_close(chat__cl.bus);
    chat__cl.bus = NULL;
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
    for (size_t i = 0; i < p->n && p->status == 0; i++) {
        if (p->users[i]) {
            uv_mutex_lock(&p->users[i]->lock);
            int local = p->users[i]->nsessions > 0;
            uv_mutex_unlock(&p->users[i]->lock);
            if (!local) chat__cl_set_remote(p->users[i], p->online[i]);
        }
        if (!p->online[i]) continue;
        json_t *o = json_array_get(list, p->index[i]);
        json_object_set_new(o, "online", json_true());
        json_object_set_new(o, "last_seen", json_null());
    }
    if (!p->s->closed) {
        chat__reply(p->s, p->ref, p->reply);
        p->reply = NULL;
    }
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

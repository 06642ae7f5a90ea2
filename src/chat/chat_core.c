/*
 * chat_core.c: the chat core's tables and machinery: rooms, users,
 * sessions, message objects, ids, subscriptions, fan-out, store jobs,
 * catch-up, startup load and shutdown. The commands are in chat_cmd.c.
 *
 * Ordering (ARCHITECTURE.md "Ordering and durability"): a room's seq is
 * assigned under room->lock, and the message's store job is queued under the
 * same lock, so the writer sees a room's messages in seq order. With sync
 * durability the writer's done() marks the message committed, appends it to
 * the room's ring and posts it to every worker with subscribers, all under
 * room->lock, in commit (= seq) order; with async durability the sender's
 * worker does the same at once. Each worker's inbox is FIFO, so every
 * subscriber sees a room's messages in seq order. A subscription remembers
 * the last seq it delivered; anything at or below it is skipped, which is
 * what makes the catch-up seam (ring or store, then live) duplicate-free.
 *
 * Ids: 41 bits of milliseconds since 2024-01-01, 10 bits of node id, 12
 * bits of counter: 4096 ids per ms per node, time-ordered, unique across
 * nodes with distinct --node-id.
 */
#include "chat/chat_internal.h"
#include "util/config.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/json_esc.h"
#include "util/log.h"
#include "util/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAT_ID_EPOCH_MS 1704067200000LL
#define CHAT_CATCHUP_PAGE 500

chat_t chat__g;
static void (*chat__cache_destroy[2])(void *);

int64_t chat__now_ms(void) { return clock_now_ms(); }

uint64_t chat__next_id(int64_t now_ms)
{
    uv_mutex_lock(&chat__g.id_lock);
    int64_t ms = now_ms - CHAT_ID_EPOCH_MS;
    if (ms < chat__g.id_ms) ms = chat__g.id_ms; /* the clock went back: stay monotonic */
    if (ms == chat__g.id_ms) {
        if (++chat__g.id_ctr > 4095) {
            ms++;
            chat__g.id_ctr = 0;
        }
    } else {
        chat__g.id_ctr = 0;
    }
    chat__g.id_ms = ms;
    uint64_t id = ((uint64_t)ms << 22) | ((uint64_t)(chat__g.cfg.node_id & 1023) << 12) | chat__g.id_ctr;
    uv_mutex_unlock(&chat__g.id_lock);
    return id;
}

const char *chat__kind_name(char kind)
{
    return kind == 'p' ? "public" : kind == 'r' ? "private" : "dm";
}

const char *chat__role_name(char role)
{
    return role == 'o' ? "owner" : role == 'a' ? "admin" : "member";
}

int chat_valid_room(const char *id)
{
    size_t n = strlen(id);
    size_t max = strncmp(id, "dm:", 3) == 0 ? CHAT_ROOM_MAX : 64;
    if (n < 1 || n > max) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == ':' || ch == '-'))
            return 0;
    }
    return 1;
}

/* ---- rooms and users ---- */

chat_room_t *chat__room_get(const char *id)
{
    uv_rwlock_rdlock(&chat__g.rooms_lock);
    chat_room_t *r = map_get(&chat__g.rooms, id, strlen(id));
    uv_rwlock_rdunlock(&chat__g.rooms_lock);
    return r;
}

chat_room_t *chat__room_create(const char *id, char kind, const char *title, int64_t created_at,
                               int *created)
{
    *created = 0;
    uv_rwlock_wrlock(&chat__g.rooms_lock);
    chat_room_t *r = map_get(&chat__g.rooms, id, strlen(id));
    if (r) {
        uv_rwlock_wrunlock(&chat__g.rooms_lock);
        return r;
    }
    int w = chat__g.cfg.workers;
    r = calloc(1, sizeof *r);
    if (r) {
        r->subs = calloc((size_t)w, sizeof *r->subs);
        r->nsubs = calloc((size_t)w, sizeof *r->nsubs);
        r->title = strdup(title ? title : "");
    }
    if (!r || !r->subs || !r->nsubs || !r->title || map_put(&chat__g.rooms, id, strlen(id), r)) {
        if (r) {
            free(r->subs);
            free(r->nsubs);
            free(r->title);
            free(r);
        }
        uv_rwlock_wrunlock(&chat__g.rooms_lock);
        return NULL;
    }
    snprintf(r->id, sizeof r->id, "%s", id);
    r->kind = kind;
    r->created_at = created_at;
    uv_mutex_init(&r->lock);
    *created = 1;
    uv_rwlock_wrunlock(&chat__g.rooms_lock);
    return r;
}

chat_user_t *chat__user_get(const char *name, int create)
{
    size_t n = strlen(name);
    if (n > CHAT_USER_MAX) return NULL; /* never a user: u->name would cut it, apart from its key */
    uv_rwlock_rdlock(&chat__g.users_lock);
    chat_user_t *u = map_get(&chat__g.users, name, n);
    uv_rwlock_rdunlock(&chat__g.users_lock);
    if (u || !create) return u;
    uv_rwlock_wrlock(&chat__g.users_lock);
    u = map_get(&chat__g.users, name, n);
    if (!u && (u = calloc(1, sizeof *u))) {
        snprintf(u->name, sizeof u->name, "%s", name);
        uv_mutex_init(&u->lock);
        u->created_at = chat__now_ms();
        if (map_put(&chat__g.users, name, n, u)) {
            uv_mutex_destroy(&u->lock);
            free(u);
            u = NULL;
        }
    }
    uv_rwlock_wrunlock(&chat__g.users_lock);
    return u;
}

/* ---- messages ---- */

json_t *chat__msg_obj(const chat_msg_t *m)
{
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)m->id);
    json_t *o = json_object();
    json_object_set_new(o, "room", json_string(m->room->id));
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "seq", json_integer(m->seq));
    json_object_set_new(o, "from", json_string(m->from));
    json_object_set_new(o, "text", json_stringn(m->text, m->text_len));
    json_object_set_new(o, "ts", json_integer(m->ts));
    if (m->cid) json_object_set_new(o, "cid", json_string(m->cid));
    chat__obj_add_meta(o, m->meta);
    return o;
}

void chat__obj_add_meta(json_t *o, const char *meta)
{
    if (!meta || !o) return;
    json_t *mo = json_loads(meta, 0, NULL);
    if (json_is_object(mo)) json_object_update(o, mo);
    json_decref(mo);
}

chat_msg_t *chat__msg_new(chat_room_t *room, uint64_t id, int64_t seq, int64_t ts, const char *from,
                          const char *text, size_t len, const char *cid, const char *meta)
{
    size_t fl = strlen(from), cl = cid ? strlen(cid) : 0, ml = meta ? strlen(meta) : 0;
    if (ml < 2 || meta[0] != '{' || meta[ml - 1] != '}') ml = 0, meta = NULL;
    chat_msg_t *m = calloc(1, sizeof *m + fl + 1 + len + 1 + (cid ? cl + 1 : 0) + (meta ? ml + 1 : 0));
    if (!m) return NULL;
    atomic_init(&m->refs, 1);
    m->room = room;
    m->id = id;
    m->seq = seq;
    m->ts = ts;
    char *p = (char *)(m + 1);
    m->from = memcpy(p, from, fl + 1);
    p += fl + 1;
    m->text = memcpy(p, text, len);
    m->text[len] = 0;
    m->text_len = len;
    p += len + 1;
    if (cid) m->cid = memcpy(p, cid, cl + 1);
    p += cid ? cl + 1 : 0;
    if (meta) m->meta = memcpy(p, meta, ml + 1);
    if (chat__msg_encode(m)) {
        free(m);
        return NULL;
    }
    return m;
}

int chat__msg_encode(chat_msg_t *m)
{
    /* The event, encoded once by hand (the same fields and order as
     * chat__msg_obj): this runs for every message sent. */
    const chat_room_t *room = m->room;
    const char *cid = m->cid, *meta = m->meta;
    size_t fl = strlen(m->from), cl = cid ? strlen(cid) : 0, ml = meta ? strlen(meta) : 0;
    uint64_t id = m->id;
    int64_t seq = m->seq, ts = m->ts;
    buf_t b = {0};
    char num[96];
    int rc = buf_append(&b, LIT("{\"type\":\"message\",\"room\":")) | json_esc_append(&b, room->id, strlen(room->id));
    snprintf(num, sizeof num, ",\"id\":\"%llu\",\"seq\":%lld,\"from\":", (unsigned long long)id, (long long)seq);
    rc |= buf_append(&b, num, strlen(num)) | json_esc_append(&b, m->from, fl) | buf_append(&b, LIT(",\"text\":")) |
          json_esc_append(&b, m->text, m->text_len);
    snprintf(num, sizeof num, ",\"ts\":%lld", (long long)ts);
    rc |= buf_append(&b, num, strlen(num));
    if (cid) rc |= buf_append(&b, LIT(",\"cid\":")) | json_esc_append(&b, cid, cl);
    if (meta && ml > 2) rc |= buf_append(&b, ",", 1) | buf_append(&b, meta + 1, ml - 2); /* its fields */
    rc |= buf_append(&b, "}", 2); /* with the NUL */
    if (rc) {
        buf_free(&b);
        return SORI_ENOMEM;
    }
    free(m->json);
    m->json = b.data;
    m->json_len = b.len - 1;
    return 0;
}

chat_msg_t *chat__event_new(json_t *obj)
{
    chat_msg_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    atomic_init(&m->refs, 1);
    m->is_event = 1;
    m->json = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!m->json) {
        free(m);
        return NULL;
    }
    m->json_len = strlen(m->json);
    return m;
}

chat_msg_t *chat__event_text_new(const char *json, size_t len)
{
    chat_msg_t *m = calloc(1, sizeof *m);
    if (!m || !(m->json = strndup(json, len))) {
        free(m);
        return NULL;
    }
    atomic_init(&m->refs, 1);
    m->is_event = 1;
    m->json_len = len;
    return m;
}

chat_msg_t *chat__msg_ref(chat_msg_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void chat__msg_unref(chat_msg_t *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
    for (int i = 0; i < 2; i++) {
        void *v = atomic_load(&m->cache[i]);
        if (v && chat__cache_destroy[i]) chat__cache_destroy[i](v);
    }
    free(m->json);
    for (uint32_t i = 0; i < m->nmentions; i++) free(m->mentions[i]);
    free(m->mentions);
    free(m->xops);
    free(m);
}

const char *chat_msg_json(const chat_msg_t *m, size_t *len)
{
    if (len) *len = m->json_len;
    return m->json;
}

uint64_t chat_msg_seq(const chat_msg_t *m) { return (uint64_t)m->seq; }
uint64_t chat_msg_id(const chat_msg_t *m) { return m->id; }
int64_t chat_msg_ts(const chat_msg_t *m) { return m->ts; }
const char *chat_msg_from(const chat_msg_t *m) { return m->from ? m->from : ""; }
const char *chat_msg_room(const chat_msg_t *m) { return m->room ? m->room->id : NULL; }
int chat_msg_is_event(const chat_msg_t *m) { return m->is_event; }

void *chat_msg_cache_get(chat_msg_t *m, int slot)
{
    return atomic_load_explicit(&m->cache[slot], memory_order_acquire);
}

void *chat_msg_cache_set(chat_msg_t *m, int slot, void *value)
{
    void *expected = NULL;
    if (atomic_compare_exchange_strong(&m->cache[slot], &expected, value)) return value;
    if (chat__cache_destroy[slot]) chat__cache_destroy[slot](value);
    return expected;
}

void chat_msg_cache_register(int slot, void (*destroy)(void *value)) { chat__cache_destroy[slot] = destroy; }

void chat__ring_push(chat_room_t *r, chat_msg_t *m)
{
    /* At least the newest message is kept (rooms' last_message). */
    uint32_t max = chat__g.cfg.ring > 0 ? (uint32_t)chat__g.cfg.ring : 1;
    if (r->ring_n == r->ring_cap && r->ring_cap < max) {
        uint32_t cap = r->ring_cap ? r->ring_cap * 2 : 8;
        if (cap > max) cap = max;
        chat_msg_t **ring = malloc(cap * sizeof *ring);
        if (ring) {
            for (uint32_t i = 0; i < r->ring_n; i++) ring[i] = r->ring[(r->ring_head + i) % r->ring_cap];
            free(r->ring);
            r->ring = ring;
            r->ring_cap = cap;
            r->ring_head = 0;
        }
    }
    if (r->ring_cap == 0) return;
    if (r->ring_n == r->ring_cap) {
        chat__msg_unref(r->ring[r->ring_head]);
        r->ring[r->ring_head] = chat__msg_ref(m);
        r->ring_head = (r->ring_head + 1) % r->ring_cap;
    } else {
        r->ring[(r->ring_head + r->ring_n) % r->ring_cap] = chat__msg_ref(m);
        r->ring_n++;
    }
}

/* ---- sessions ---- */

chat_session_t *chat__session_ref(chat_session_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void chat__session_unref(chat_session_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    free(s->subs);
    free(s->watching);
    free(s);
}

void *chat_session_data(const chat_session_t *s) { return s->sink_data; }
const char *chat_session_user(const chat_session_t *s) { return s->user->name; }

static int chat__on_worker(const chat_session_t *s)
{
    net_worker_t *w = net_current_worker();
    return w && w->index == s->worker;
}

typedef struct {
    chat_session_t *s;
    json_t *ref;
    json_t *obj;
    const char *code;
    char message[160];
} chat_post_reply_t;

static void chat__reply_task(net_worker_t *w, void *arg)
{
    (void)w;
    chat_post_reply_t *p = arg;
    if (!p->s->closed) {
        if (p->obj)
            p->s->sink->send(p->s, p->ref, p->obj);
        else
            p->s->sink->error(p->s, p->ref, p->code, p->message);
    }
    json_decref(p->obj);
    json_decref(p->ref);
    chat__session_unref(p->s);
    free(p);
}

static void chat__post_reply(chat_session_t *s, json_t *ref, json_t *obj, const char *code,
                             const char *msg)
{
    chat_post_reply_t *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(obj);
        return;
    }
    p->s = chat__session_ref(s);
    p->ref = chat__ref_hold(ref);
    p->obj = obj;
    p->code = code;
    if (msg) snprintf(p->message, sizeof p->message, "%s", msg);
    if (net_worker_post(net_worker_get(s->worker), chat__reply_task, p)) chat__reply_task(NULL, p);
}

void chat__reply(chat_session_t *s, json_t *ref, json_t *obj)
{
    if (!obj) return;
    if (chat__on_worker(s)) {
        if (!s->closed) s->sink->send(s, ref, obj);
        json_decref(obj);
        return;
    }
    chat__post_reply(s, ref, obj, NULL, NULL);
}

typedef struct {
    chat_session_t *s;
    json_t *ref;
    char *text;
    size_t len;
} chat_post_text_t;

static void chat__text_deliver(chat_session_t *s, json_t *ref, const char *text, size_t len)
{
    if (s->closed) return;
    if (s->sink->send_text) {
        s->sink->send_text(s, ref, text, len);
        return;
    }
    json_t *obj = json_loadb(text, len, 0, NULL);
    if (obj) s->sink->send(s, ref, obj);
    json_decref(obj);
}

static void chat__text_task(net_worker_t *w, void *arg)
{
    (void)w;
    chat_post_text_t *p = arg;
    chat__text_deliver(p->s, p->ref, p->text, p->len);
    json_decref(p->ref);
    chat__session_unref(p->s);
    free(p->text);
    free(p);
}

void chat__reply_text(chat_session_t *s, json_t *ref, char *text, size_t len)
{
    if (chat__on_worker(s)) {
        chat__text_deliver(s, ref, text, len);
        free(text);
        return;
    }
    chat_post_text_t *p = malloc(sizeof *p);
    if (!p) {
        free(text);
        return;
    }
    p->s = chat__session_ref(s);
    p->ref = chat__ref_hold(ref);
    p->text = text;
    p->len = len;
    if (net_worker_post(net_worker_get(s->worker), chat__text_task, p)) chat__text_task(NULL, p);
}

void chat__reply_ack(chat_session_t *s, json_t *ref, const chat_room_t *r, uint64_t id, int64_t seq, int64_t ts)
{
    buf_t b = {0};
    char num[96];
    int rc = buf_append(&b, LIT("{\"type\":\"ack\",\"room\":")) | json_esc_append(&b, r->id, strlen(r->id));
    snprintf(num, sizeof num, ",\"id\":\"%llu\",\"seq\":%lld,\"ts\":%lld}", (unsigned long long)id,
             (long long)seq, (long long)ts);
    rc |= buf_append(&b, num, strlen(num) + 1);
    if (rc) {
        buf_free(&b);
        return;
    }
    chat__reply_text(s, ref, b.data, b.len - 1);
}

void chat__error(chat_session_t *s, json_t *ref, const char *code, const char *msg)
{
    if (chat__on_worker(s)) {
        if (!s->closed) s->sink->error(s, ref, code, msg);
        return;
    }
    chat__post_reply(s, ref, NULL, code, msg);
}

/* ---- subscriptions (worker thread) ---- */

chat_sub_t *chat__sub_find(chat_session_t *s, chat_room_t *r)
{
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i]->room == r) return s->subs[i];
    return NULL;
}

chat_sub_t *chat__sub_add(chat_session_t *s, chat_room_t *r)
{
    chat_sub_t *sub = chat__sub_find(s, r);
    if (sub) return sub;
    chat_subs_t *list = &r->subs[s->worker];
    if (list->n == list->cap) {
        uint32_t cap = list->cap ? list->cap * 2 : 4;
        chat_sub_t **v = realloc(list->v, cap * sizeof *v);
        if (!v) return NULL;
        list->v = v;
        list->cap = cap;
    }
    if (s->nsubs == s->capsubs) {
        uint32_t cap = s->capsubs ? s->capsubs * 2 : 4;
        chat_sub_t **v = realloc(s->subs, cap * sizeof *v);
        if (!v) return NULL;
        s->subs = v;
        s->capsubs = cap;
    }
    sub = calloc(1, sizeof *sub);
    if (!sub) return NULL;
    sub->s = s;
    sub->room = r;
    sub->idx = list->n;
    list->v[list->n++] = sub;
    s->subs[s->nsubs++] = sub;
    /* Counted before the caller reads r->committed under the lock: see the
     * ordering note at the top. */
    atomic_fetch_add(&r->nsubs[s->worker], 1);
    if (chat__relay_on()) {
        uv_mutex_lock(&r->lock);
        if (r->nlocal++ == 0) chat__relay_watch_locked(r, 1);
        uv_mutex_unlock(&r->lock);
    }
    return sub;
}

void chat__sub_remove(chat_sub_t *sub)
{
    chat_session_t *s = sub->s;
    chat_room_t *r = sub->room;
    chat_subs_t *list = &r->subs[s->worker];
    chat_sub_t *last = list->v[--list->n];
    list->v[sub->idx] = last;
    last->idx = sub->idx;
    if (list->n == 0) {
        free(list->v);
        list->v = NULL;
        list->cap = 0;
    }
    atomic_fetch_sub(&r->nsubs[s->worker], 1);
    if (chat__relay_on()) {
        uv_mutex_lock(&r->lock);
        if (--r->nlocal == 0) chat__relay_watch_locked(r, 0);
        uv_mutex_unlock(&r->lock);
    }
    json_decref(sub->ref);
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i] == sub) {
            s->subs[i] = s->subs[--s->nsubs];
            break;
        }
    free(sub);
}

/* ---- fan-out ---- */

typedef struct {
    chat_room_t *room;
    chat_msg_t *m;
    chat_session_t *except;
} chat_fanout_t;

static void chat__fanout_task(net_worker_t *w, void *arg)
{
    chat_fanout_t *f = arg;
    chat_subs_t *list = &f->room->subs[w->index];
    chat_msg_t *m = f->m;
    uint64_t delivered = 0;
    for (uint32_t i = 0; i < list->n; i++) {
        chat_sub_t *sub = list->v[i];
        chat_session_t *s = sub->s;
        if (s->closed || s == f->except) continue;
        if (!m->is_event) {
            if (sub->catching_up || m->seq <= sub->last_seq) continue;
            sub->last_seq = m->seq;
            delivered++;
        }
        s->sink->message(s, m);
    }
    if (delivered) metrics_add(M_DELIVERIES, delivered);
    chat__msg_unref(m);
    chat__session_unref(f->except);
    free(f);
}

static void chat__fanout(chat_room_t *r, chat_msg_t *m, chat_session_t *except)
{
    for (int w = 0; w < chat__g.cfg.workers; w++) {
        if (atomic_load(&r->nsubs[w]) == 0) continue;
        chat_fanout_t *f = malloc(sizeof *f);
        if (!f) continue;
        f->room = r;
        f->m = chat__msg_ref(m);
        f->except = except ? chat__session_ref(except) : NULL;
        if (net_worker_post(net_worker_get(w), chat__fanout_task, f)) {
            chat__msg_unref(m);
            chat__session_unref(f->except);
            free(f);
        }
    }
}

void chat__publish(chat_room_t *r, chat_msg_t *m) { chat__fanout(r, m, NULL); }

void chat__room_event(chat_room_t *r, json_t *obj, chat_session_t *except)
{
    chat_msg_t *ev = chat__event_new(obj);
    if (!ev) return;
    ev->room = r; /* rooms live until shutdown */
    chat__fanout(r, ev, except);
    chat__relay_room_event(r, ev);
    chat__msg_unref(ev);
}

typedef struct {
    chat_session_t *s;
    chat_msg_t *m;
} chat_direct_t;

static void chat__direct_task(net_worker_t *w, void *arg)
{
    (void)w;
    chat_direct_t *d = arg;
    if (!d->s->closed) d->s->sink->message(d->s, d->m);
    chat__msg_unref(d->m);
    chat__session_unref(d->s);
    free(d);
}

static void chat__session_event(chat_session_t *s, chat_msg_t *ev)
{
    chat_direct_t *d = malloc(sizeof *d);
    if (!d) return;
    d->s = chat__session_ref(s);
    d->m = chat__msg_ref(ev);
    if (net_worker_post(net_worker_get(s->worker), chat__direct_task, d)) chat__direct_task(NULL, d);
}

void chat__user_event(chat_user_t *u, json_t *obj)
{
    chat_msg_t *ev = chat__event_new(obj);
    if (!ev) return;
    chat__user_event_local(u, ev);
    chat__relay_user_event(u, ev);
    chat__msg_unref(ev);
}

void chat__user_event_local(chat_user_t *u, chat_msg_t *ev)
{
    uv_mutex_lock(&u->lock);
    for (uint32_t i = 0; i < u->nsessions; i++) chat__session_event(u->sessions[i], ev);
    uv_mutex_unlock(&u->lock);
}

typedef struct {
    chat_session_t *s;
    chat_room_t *r;
    int subscribe;
    int64_t from_seq; /* the room's committed seq when the task was posted */
} chat_subtask_t;

static void chat__subscribe_task(net_worker_t *w, void *arg)
{
    (void)w;
    chat_subtask_t *t = arg;
    if (!t->s->closed) {
        chat_sub_t *sub = chat__sub_find(t->s, t->r);
        if (t->subscribe && !sub) {
            /* Messages committed between the post and now were fanned out
             * before we counted in nsubs: take them from the ring. */
            sub = chat__sub_add(t->s, t->r);
            if (sub) {
                sub->last_seq = t->from_seq;
                sub->catching_up = 1;
                chat__catchup(sub, NULL, 0);
            }
        } else if (!t->subscribe && sub) {
            chat__sub_remove(sub);
        }
    }
    chat__session_unref(t->s);
    free(t);
}

void chat__user_subscribe(chat_user_t *u, chat_room_t *r, int subscribe)
{
    uv_mutex_lock(&r->lock);
    int64_t from = r->committed;
    uv_mutex_unlock(&r->lock);
    uv_mutex_lock(&u->lock);
    for (uint32_t i = 0; i < u->nsessions; i++) {
        chat_subtask_t *t = malloc(sizeof *t);
        if (!t) continue;
        t->s = chat__session_ref(u->sessions[i]);
        t->r = r;
        t->subscribe = subscribe;
        t->from_seq = from;
        if (net_worker_post(net_worker_get(t->s->worker), chat__subscribe_task, t)) {
            chat__session_unref(t->s);
            free(t);
        }
    }
    uv_mutex_unlock(&u->lock);
}

/* ---- store jobs ---- */

typedef struct {
    store_job_t job;
    store_op_t ops[4];
    chat_session_t *s;
    json_t *ref;
    json_t *reply;
} chat_wjob_t;

static void chat__wjob_reply(chat_wjob_t *j, int status);

static void chat__wjob_published(void *arg, int status)
{
    (void)status; /* committed either way: the notice is best effort */
    chat__wjob_reply(arg, 0);
}

static void chat__wjob_done(store_job_t *job, int status)
{
    chat_wjob_t *j = job->arg;
    if (status == 0 && chat__g.cfg.durability == STORE_SYNC && chat__relay_on()) {
        /* in a cluster the reply waits until Redis has the notice: a client
         * told "created" can send others to any node */
        if (j->s && j->reply) {
            if (chat__relay_state_then(j->ops, j->job.nops, chat__wjob_published, j) == 0) return;
        } else {
            chat__relay_state(j->ops, j->job.nops);
        }
    }
    chat__wjob_reply(j, status);
}

static void chat__wjob_reply(chat_wjob_t *j, int status)
{
    if (j->s && j->reply) {
        if (status == 0)
            chat__reply(j->s, j->ref, j->reply);
        else {
            json_decref(j->reply);
            chat__error(j->s, j->ref, "unavailable", "The store is not available; try again.");
        }
        j->reply = NULL;
    }
    json_decref(j->reply);
    json_decref(j->ref);
    chat__session_unref(j->s);
    free(j);
}

void chat__write(chat_session_t *s, json_t *ref, json_t *reply, const store_op_t *ops, size_t n)
{
    chat_wjob_t *j = calloc(1, sizeof *j);
    if (!j || n > 4) {
        free(j);
        if (s && reply) chat__error(s, ref, "internal", "Out of memory.");
        json_decref(reply);
        return;
    }
    memcpy(j->ops, ops, n * sizeof *ops);
    j->job.ops = j->ops;
    j->job.nops = n;
    j->job.done = chat__wjob_done;
    j->job.arg = j;
    if (chat__g.cfg.durability == STORE_ASYNC) chat__relay_state(ops, n); /* as the reply: now */
    if (reply && s) {
        if (chat__g.cfg.durability == STORE_ASYNC) {
            chat__reply(s, ref, reply);
        } else {
            j->s = chat__session_ref(s);
            j->ref = chat__ref_hold(ref);
            j->reply = reply;
        }
    } else {
        json_decref(reply);
    }
    store_write(chat__g.store, &j->job);
}

/* Marks m committed and published (room lock held); returns the waiters. */
static chat_waiter_t *chat__commit_locked(chat_msg_t *m)
{
    chat_room_t *r = m->room;
    m->committed = 1;
    chat__ring_push(r, m);
    r->committed = m->seq;
    chat__publish(r, m);
    chat_waiter_t *w = m->waiters;
    m->waiters = NULL;
    return w;
}

void chat__waiters_reply(chat_msg_t *m, chat_waiter_t *w, const char *error)
{
    while (w) {
        chat_waiter_t *next = w->next;
        if (error)
            chat__error(w->s, w->ref, "unavailable", error);
        else
            chat__reply_ack(w->s, w->ref, m->room, m->id, m->seq, m->ts);
        json_decref(w->ref);
        chat__session_unref(w->s);
        free(w);
        w = next;
    }
}

static void chat__ack_waiters(chat_msg_t *m, chat_waiter_t *w)
{
    metrics_inc(M_MESSAGES_IN);
    chat__waiters_reply(m, w, NULL);
}

static void chat__msg_job_done(store_job_t *job, int status)
{
    chat_msg_t *m = job->arg;
    if (chat__relay_on()) {
        if (chat__g.cfg.durability == STORE_SYNC) chat__relay_committed(m, status);
    } else if (chat__g.cfg.durability == STORE_SYNC) {
        chat_waiter_t *w;
        uv_mutex_lock(&m->room->lock);
        if (status == 0) {
            w = chat__commit_locked(m);
        } else {
            w = m->waiters;
            m->waiters = NULL;
        }
        uv_mutex_unlock(&m->room->lock);
        if (status == 0) {
            chat__ack_waiters(m, w);
            chat__push_msg(m);
        } else {
            chat__waiters_reply(m, w, "The store is shutting down; resend.");
        }
    }
    chat__msg_unref(m);
}

void chat__write_msg(chat_msg_t *m)
{
    m->op.kind = STORE_OP_MESSAGE;
    m->op.u.msg = (store_msg_t){.id = m->id, .seq = m->seq, .ts = m->ts, .room = m->room->id,
                                .from = m->from, .text = m->text, .text_len = m->text_len, .cid = m->cid,
                                .meta = m->meta};
    if (chat__relay_on() && chat__g.cfg.durability == STORE_SYNC) { /* the store assigns the seq */
        m->op.u.msg.seq_out = &m->a_seq;
        m->op.u.msg.id_out = &m->a_id;
        m->op.u.msg.ts_out = &m->a_ts;
    }
    if (m->xops) {
        m->xops[0] = m->op;
        m->job.ops = m->xops; /* nops set by the sender */
    } else {
        m->job.ops = &m->op;
        m->job.nops = 1;
    }
    m->job.done = chat__msg_job_done;
    m->job.arg = chat__msg_ref(m);
    store_write(chat__g.store, &m->job);
    if (chat__g.cfg.durability == STORE_ASYNC && !chat__relay_on()) { /* a cluster's relay delivered it */
        chat_waiter_t *w = chat__commit_locked(m);
        /* the room lock is held by the caller: ack after it drops */
        m->waiters = w;
    }
}

/* Called by chat_cmd after dropping the room lock (async mode). */
void chat__ack_now(chat_msg_t *m);
void chat__ack_now(chat_msg_t *m)
{
    chat_waiter_t *w = m->waiters;
    m->waiters = NULL;
    chat__ack_waiters(m, w);
    chat__push_msg(m);
}

/* ---- catch-up ---- */

/* A backlog is queued only up to the budget; then the catch-up pauses until
 * the connection's output drains (chat_session_drained). */
static int chat__over_budget(chat_session_t *s)
{
    uint64_t budget = __atomic_load_n(&chat__g.cfg.catchup_budget, __ATOMIC_RELAXED);
    return s->sink->unsent && s->sink->notify_drain && budget && s->sink->unsent(s) > budget;
}

static void chat__pause(chat_sub_t *sub, json_t *ref, int announce)
{
    sub->paused = 1;
    sub->announce = (uint8_t)announce;
    if (sub->ref != ref) {
        json_decref(sub->ref);
        sub->ref = chat__ref_hold(ref);
    }
    sub->s->sink->notify_drain(sub->s);
}

void chat_session_drained(chat_session_t *s)
{
    for (uint32_t i = 0; i < s->nsubs && !s->closed; i++) {
        chat_sub_t *sub = s->subs[i];
        if (!sub->paused) continue;
        sub->paused = 0;
        json_t *ref = sub->ref;
        sub->ref = NULL;
        chat__catchup(sub, ref, sub->announce);
        json_decref(ref);
    }
}

typedef struct {
    store_read_t rd;
    chat_session_t *s;
    chat_room_t *room;
    json_t *ref;
    int announce;
    int64_t after, before;
    chat_msg_t **msgs;
    int n, cap;
} chat_cread_t;

int chat__msgs_add_row(chat_msg_t ***v, int *n, int *cap, chat_room_t *r, const store_msg_t *sm)
{
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 64;
        chat_msg_t **nv = realloc(*v, (size_t)c * sizeof *nv);
        if (!nv) return SORI_ENOMEM;
        *v = nv;
        *cap = c;
    }
    chat_msg_t *m = chat__msg_new(r, sm->id, sm->seq, sm->ts, sm->from, sm->text, sm->text_len, sm->cid, sm->meta);
    if (!m) return SORI_ENOMEM;
    m->committed = 1;
    (*v)[(*n)++] = m;
    return 0;
}

static int chat__cread_row(void *arg, const store_msg_t *sm)
{
    chat_cread_t *c = arg;
    return chat__msgs_add_row(&c->msgs, &c->n, &c->cap, c->room, sm);
}

static void chat__cread_free(chat_cread_t *c)
{
    for (int i = 0; i < c->n; i++) chat__msg_unref(c->msgs[i]);
    free(c->msgs);
    json_decref(c->ref);
    chat__session_unref(c->s);
    free(c);
}

static void chat__cread_deliver(net_worker_t *w, void *arg)
{
    (void)w;
    chat_cread_t *c = arg;
    chat_sub_t *sub = c->s->closed ? NULL : chat__sub_find(c->s, c->room);
    if (sub && sub->catching_up) {
        for (int i = 0; i < c->n; i++) {
            if (c->msgs[i]->seq <= sub->last_seq) continue;
            if (chat__over_budget(c->s)) {
                chat__pause(sub, c->ref, c->announce); /* the rest is read again later */
                chat__cread_free(c);
                return;
            }
            sub->last_seq = c->msgs[i]->seq;
            c->s->sink->message(c->s, c->msgs[i]);
        }
        /* Rows missing from the store (lost in an async-mode crash) must not
         * stall the catch-up: move past the range we asked for. */
        if (c->n < CHAT_CATCHUP_PAGE && sub->last_seq < c->before - 1) sub->last_seq = c->before - 1;
        chat__catchup(sub, c->ref, c->announce);
    }
    chat__cread_free(c);
}

static void chat__cread_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    chat_cread_t *c = rd->arg;
    if (!b) { /* the store is closing */
        chat__cread_free(c);
        return;
    }
    store_range_t q = {.room = c->room->id, .after = c->after, .before = c->before, .limit = CHAT_CATCHUP_PAGE};
    if (type->range(b, &q, chat__cread_row, c) < 0) LOG_WARN("chat", "catch-up read of %s failed", c->room->id);
    if (net_worker_post(net_worker_get(c->s->worker), chat__cread_deliver, c)) chat__cread_free(c);
}

void chat__catchup(chat_sub_t *sub, json_t *ref, int announce)
{
    chat_room_t *r = sub->room;
    chat_session_t *s = sub->s;
    sub->paused = 0;
    uv_mutex_lock(&r->lock);
    int64_t S = r->committed;
    int64_t first = S - (int64_t)r->ring_n + 1;
    if (sub->last_seq < S && sub->last_seq + 1 < first) {
        /* Older than the ring: one page from the store, then come back. */
        uv_mutex_unlock(&r->lock);
        chat_cread_t *c = calloc(1, sizeof *c);
        if (!c) {
            chat__error(s, ref, "internal", "Out of memory.");
            return;
        }
        c->s = chat__session_ref(s);
        c->room = r;
        c->ref = chat__ref_hold(ref);
        c->announce = announce;
        c->after = sub->last_seq;
        c->before = first;
        c->rd.run = chat__cread_run;
        c->rd.arg = c;
        store_read(chat__g.store, &c->rd);
        return;
    }
    chat_msg_t *stack[64], **list = stack;
    int n = 0;
    if (sub->last_seq < S) {
        int want = (int)(S - sub->last_seq);
        if (want > 64 && !(list = malloc((size_t)want * sizeof *list))) {
            uv_mutex_unlock(&r->lock);
            chat__error(s, ref, "internal", "Out of memory.");
            return;
        }
        for (uint32_t i = 0; i < r->ring_n; i++) {
            chat_msg_t *m = r->ring[(r->ring_head + i) % r->ring_cap];
            if (m->seq > sub->last_seq) list[n++] = chat__msg_ref(m);
        }
    }
    uv_mutex_unlock(&r->lock);
    int paused = 0;
    for (int i = 0; i < n; i++) {
        if (!paused && list[i]->seq > sub->last_seq) {
            if (chat__over_budget(s)) {
                paused = 1;
            } else {
                sub->last_seq = list[i]->seq;
                if (!s->closed) s->sink->message(s, list[i]);
            }
        }
        chat__msg_unref(list[i]);
    }
    if (list != stack) free(list);
    if (paused) {
        chat__pause(sub, ref, announce);
        return;
    }
    if (sub->last_seq < S) sub->last_seq = S;
    sub->catching_up = 0;
    if (announce)
        chat__reply(s, ref, json_pack("{s:s, s:s, s:I, s:s}", "type", "joined", "room", r->id, "seq",
                                      (json_int_t)S, "kind", chat__kind_name(r->kind)));
}

/* ---- sessions: open and close ---- */

void chat__presence_changed(chat_user_t *u, int online, int64_t last_seen)
{
    json_t *o = json_pack("{s:s, s:s, s:b}", "type", "presence", "user", u->name, "online", online);
    json_object_set_new(o, "last_seen", online ? json_null() : json_integer(last_seen));
    chat_msg_t *ev = chat__event_new(o);
    json_decref(o);
    if (!ev) return;
    uv_mutex_lock(&u->lock);
    for (uint32_t i = 0; i < u->nwatchers; i++) chat__session_event(u->watchers[i], ev);
    uv_mutex_unlock(&u->lock);
    chat__msg_unref(ev);
}

int chat__arr_add(void ***v, uint32_t *n, uint32_t *cap, void *x)
{
    if (*n == *cap) {
        uint32_t c = *cap ? *cap * 2 : 4;
        void **nv = realloc(*v, c * sizeof *nv);
        if (!nv) return SORI_ENOMEM;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

void chat__arr_del(void **v, uint32_t *n, void *x)
{
    for (uint32_t i = 0; i < *n; i++)
        if (v[i] == x) {
            v[i] = v[--*n];
            return;
        }
}

chat_session_t *chat_session_open(const char *user, int worker, int flags, const chat_sink_t *sink,
                                  void *sink_data)
{
    chat_user_t *u = chat__user_get(user, 1);
    chat_session_t *s = u ? calloc(1, sizeof *s) : NULL;
    if (!s) return NULL;
    atomic_init(&s->refs, 1);
    atomic_store_explicit(&u->known, 1, memory_order_relaxed); /* only ever set to 1 */
    s->user = u;
    s->worker = worker;
    s->flags = flags;
    s->sink = sink;
    s->sink_data = sink_data;
    if (flags & CHAT_SESSION_TRANSIENT) return s;

    uv_mutex_lock(&u->lock);
    int first = u->nsessions == 0;
    int elsewhere = u->nrnodes > 0; /* online on another node: no event */
    int is_new = u->last_seen == 0 && first;
    if (chat__arr_add((void ***)&u->sessions, &u->nsessions, &u->capsessions, s)) {
        uv_mutex_unlock(&u->lock);
        free(s);
        return NULL;
    }
    /* Direct messages reach every connection without a join: all of the
     * user's dm rooms (copied out, subscribed after the lock drops). */
    chat_room_t **dms = NULL;
    uint32_t ndm = 0, capdm = 0;
    for (size_t i = 0; i < u->rooms.nbuckets; i++)
        for (map_entry_t *e = u->rooms.buckets[i]; e; e = e->next)
            if (((chat_room_t *)e->value)->kind == 'd' && chat__arr_add((void ***)&dms, &ndm, &capdm, e->value))
                LOG_WARN("chat", "%s: out of memory subscribing dm rooms", u->name);
    uv_mutex_unlock(&u->lock);
    for (uint32_t i = 0; i < ndm; i++) {
        chat_sub_t *sub = chat__sub_add(s, dms[i]);
        if (!sub) continue;
        uv_mutex_lock(&dms[i]->lock);
        sub->last_seq = dms[i]->committed;
        uv_mutex_unlock(&dms[i]->lock);
    }
    free(dms);
    if (is_new) {
        store_op_t op = {.kind = STORE_OP_USER, .u.user = {.name = u->name, .created_at = u->created_at}};
        chat__write(NULL, NULL, NULL, &op, 1);
    }
    if (first) {
        chat__cluster_presence(u->name, 1);
        if (!elsewhere) chat__presence_changed(u, 1, 0);
    }
    return s;
}

void chat_session_close(chat_session_t *s)
{
    s->closed = 1;
    while (s->nsubs) chat__sub_remove(s->subs[s->nsubs - 1]);
    for (uint32_t i = 0; i < s->nwatching; i++) {
        chat_user_t *w = s->watching[i];
        uv_mutex_lock(&w->lock);
        chat__arr_del((void **)w->watchers, &w->nwatchers, s);
        uv_mutex_unlock(&w->lock);
        chat__session_unref(s);
    }
    s->nwatching = 0;
    if (!(s->flags & CHAT_SESSION_TRANSIENT)) {
        chat_user_t *u = s->user;
        int64_t now = chat__now_ms();
        uv_mutex_lock(&u->lock);
        chat__arr_del((void **)u->sessions, &u->nsessions, s);
        int last = u->nsessions == 0;
        int elsewhere = u->nrnodes > 0;
        if (last) u->last_seen = now;
        uv_mutex_unlock(&u->lock);
        if (last) {
            chat__cluster_presence(u->name, 0);
            if (!elsewhere) chat__presence_changed(u, 0, now);
            store_op_t op = {.kind = STORE_OP_USER,
                             .u.user = {.name = u->name, .created_at = u->created_at, .last_seen = now}};
            chat__write(NULL, NULL, NULL, &op, 1);
        }
    }
    chat__session_unref(s);
}

/* ---- startup ---- */

static int chat__load_user(void *arg, const store_user_t *su)
{
    (void)arg;
    chat_user_t *u = chat__user_get(su->name, 1);
    if (!u) return SORI_ENOMEM;
    u->known = 1;
    u->created_at = su->created_at;
    u->last_seen = su->last_seen;
    if (su->pw_hash && !u->pw_hash && !(u->pw_hash = strdup(su->pw_hash))) return SORI_ENOMEM;
    return 0;
}

static int chat__load_upload(void *arg, const store_upload_t *su)
{
    (void)arg;
    chat_user_t *u = su->user ? chat__user_get(su->user, 1) : NULL;
    chat_room_t *r = su->room ? chat__room_get(su->room) : NULL;
    if (!u && !r) return 0;
    return chat__upload_link(su->id, su->type, su->size, su->created_at, u, r);
}

static int chat__load_mention(void *arg, const store_mention_t *sm)
{
    (void)arg;
    chat_room_t *r = chat__room_get(sm->room);
    chat_member_t *m = r ? map_get(&r->members, sm->user, strlen(sm->user)) : NULL;
    if (m && sm->seq > m->last_read) chat__member_mention(m, sm->seq);
    return 0;
}

void chat__member_mention(chat_member_t *m, int64_t seq)
{
    if (m->nment && m->ment[m->nment - 1] >= seq) return;
    if (m->nment == CHAT_MENTIONS_KEPT) {
        memmove(m->ment, m->ment + 1, (m->nment - 1) * sizeof *m->ment);
        m->nment--;
    }
    /* grows by powers of two: 1, 2, 4, ... */
    if ((m->nment & (m->nment - 1)) == 0) {
        int64_t *v = realloc(m->ment, (m->nment ? m->nment * 2 : 1) * sizeof *v);
        if (!v) return;
        m->ment = v;
    }
    m->ment[m->nment++] = seq;
}

void chat__member_read(chat_member_t *m, int64_t seq)
{
    uint32_t k = 0;
    while (k < m->nment && m->ment[k] <= seq) k++;
    if (!k) return;
    memmove(m->ment, m->ment + k, (m->nment - k) * sizeof *m->ment);
    m->nment -= k;
    if (!m->nment) {
        free(m->ment);
        m->ment = NULL;
    }
}

void chat__member_free(chat_member_t *m)
{
    if (!m) return;
    free(m->ment);
    free(m);
}

static char chat__kind_code(const char *kind)
{
    return !strcmp(kind, "public") ? 'p' : !strcmp(kind, "private") ? 'r' : 'd';
}

static int chat__load_room(void *arg, const store_room_t *sr)
{
    (void)arg;
    int created;
    chat_room_t *r = chat__room_create(sr->id, chat__kind_code(sr->kind), sr->title, sr->created_at, &created);
    if (!r) return SORI_ENOMEM;
    r->seq = r->committed = sr->seq;
    return 0;
}

static int chat__load_member(void *arg, const store_member_t *sm)
{
    (void)arg;
    chat_room_t *r = chat__room_get(sm->room);
    chat_user_t *u = chat__user_get(sm->user, 1);
    if (!r || !u) return 0;
    u->known = 1;
    chat_member_t *m = calloc(1, sizeof *m);
    if (!m) return SORI_ENOMEM;
    m->role = sm->role[0] == 'o' ? 'o' : sm->role[0] == 'a' ? 'a' : 'm';
    m->last_read = sm->last_read;
    map_put(&r->members, u->name, strlen(u->name), m);
    map_put(&u->rooms, r->id, strlen(r->id), r);
    return 0;
}

static int chat__load_recent(void *arg, const store_msg_t *sm)
{
    (void)arg;
    chat_room_t *r = chat__room_get(sm->room);
    if (!r) return 0;
    chat_msg_t *m = chat__msg_new(r, sm->id, sm->seq, sm->ts, sm->from, sm->text, sm->text_len, sm->cid, sm->meta);
    if (!m) return SORI_ENOMEM;
    m->committed = 1;
    chat__ring_push(r, m);
    chat__msg_unref(m);
    if (sm->seq > r->committed) r->seq = r->committed = sm->seq;
    return 0;
}

void chat__idem_free(chat_idem_t *e)
{
    if (!e) return;
    chat__msg_unref(e->pending);
    free(e);
}

typedef struct {
    chat_user_t *u;
    int64_t now;
    char **dead;
    size_t n, cap;
} chat_sweep_t;

static void chat__idem_check(const char *k, size_t kl, void *v, void *arg)
{
    chat_sweep_t *sw = arg;
    chat_idem_t *e = v;
    if (e->pending) {
        uv_mutex_lock(&e->room->lock);
        int done = e->pending->committed;
        uv_mutex_unlock(&e->room->lock);
        if (done) {
            chat__msg_unref(e->pending);
            e->pending = NULL;
        }
    }
    if (e->ts + CHAT_IDEM_MS < sw->now && !e->pending) {
        if (sw->n == sw->cap) {
            size_t cap = sw->cap ? sw->cap * 2 : 64;
            char **d = realloc(sw->dead, cap * sizeof *d);
            if (!d) return;
            sw->dead = d;
            sw->cap = cap;
        }
        sw->dead[sw->n++] = strndup(k, kl);
    }
}

void chat__idem_sweep(chat_user_t *u, int64_t now)
{
    chat_sweep_t sw = {.u = u, .now = now};
    map_each(&u->idem, chat__idem_check, &sw);
    for (size_t i = 0; i < sw.n; i++) {
        if (sw.dead[i]) chat__idem_free(map_del(&u->idem, sw.dead[i], strlen(sw.dead[i])));
        free(sw.dead[i]);
    }
    free(sw.dead);
}

static int chat__load_idem(void *arg, const store_msg_t *sm)
{
    (void)arg;
    chat_room_t *r = chat__room_get(sm->room);
    chat_user_t *u = chat__user_get(sm->from, 1);
    if (!r || !u || !sm->cid) return 0;
    chat_idem_t *e = malloc(sizeof *e);
    if (!e) return SORI_ENOMEM;
    *e = (chat_idem_t){.room = r, .id = sm->id, .seq = sm->seq, .ts = sm->ts};
    chat_idem_t *old = map_get(&u->idem, sm->cid, strlen(sm->cid));
    if (map_put(&u->idem, sm->cid, strlen(sm->cid), e)) {
        free(e);
        return SORI_ENOMEM;
    }
    if (old != e) chat__idem_free(old);
    return 0;
}

int chat_init(const chat_config_t *cfg, const store_type_t *type, const char *url, char *err,
              size_t errlen)
{
    memset(&chat__g, 0, sizeof chat__g);
    chat__g.cfg = *cfg;
    uv_rwlock_init(&chat__g.rooms_lock);
    uv_rwlock_init(&chat__g.users_lock);
    uv_mutex_init(&chat__g.id_lock);
    uv_mutex_init(&chat__g.uploads_lock);
    chat__g.store = store_open(type, url, cfg->durability, cfg->flush_ms, err, errlen);
    if (!chat__g.store) return SORI_EIO;
    store_load_cb_t cb = {.user = chat__load_user, .room = chat__load_room, .member = chat__load_member,
                          .recent = chat__load_recent, .idem = chat__load_idem, .upload = chat__load_upload,
                          .mention = chat__load_mention};
    int rc = store_load(chat__g.store, cfg->ring > 0 ? cfg->ring : 1, chat__now_ms() - CHAT_IDEM_MS, &cb);
    if (rc) {
        snprintf(err, errlen, "cannot load the store: %s", sori_strerror(rc));
        return rc;
    }
    LOG_INFO("chat", "loaded %zu rooms, %zu users (%s durability)", chat__g.rooms.count, chat__g.users.count,
             cfg->durability == STORE_SYNC ? "sync" : "async");
    return 0;
}

void chat_counts(uint64_t *rooms, uint64_t *users)
{
    uv_rwlock_rdlock(&chat__g.rooms_lock);
    *rooms = chat__g.rooms.count;
    uv_rwlock_rdunlock(&chat__g.rooms_lock);
    uv_rwlock_rdlock(&chat__g.users_lock);
    *users = chat__g.users.count;
    uv_rwlock_rdunlock(&chat__g.users_lock);
}

uint64_t chat_store_queue(void) { return chat__g.store ? store_backlog(chat__g.store) : 0; }

int chat_user_conns(const char *user)
{
    chat_user_t *u = chat__user_get(user, 0);
    if (!u) return 0;
    uv_mutex_lock(&u->lock);
    int n = (int)u->nsessions;
    uv_mutex_unlock(&u->lock);
    return n;
}

int chat_user_conns_check(const char *user, char *msg, size_t cap)
{
    int max = CONFIG_GET(max_conns_per_user);
    if (!max || chat_user_conns(user) < max) return 0;
    metrics_inc(M_REFUSED_USER_CONNS);
    snprintf(msg, cap, "This user has %d open connections on this server, the most allowed; close one and retry.",
             max);
    return SORI_ELIMIT;
}

int chat_unhealthy(void)
{
    return (chat__g.store && store_failing(chat__g.store)) || (chat_cluster_on() && !chat_cluster_up());
}

void chat__rooms_foreach(void (*fn)(const char *k, size_t kl, void *v, void *arg), void *arg)
{
    uv_rwlock_rdlock(&chat__g.rooms_lock);
    map_each(&chat__g.rooms, fn, arg);
    uv_rwlock_rdunlock(&chat__g.rooms_lock);
}

void chat__users_foreach(void (*fn)(const char *k, size_t kl, void *v, void *arg), void *arg)
{
    uv_rwlock_rdlock(&chat__g.users_lock);
    map_each(&chat__g.users, fn, arg);
    uv_rwlock_rdunlock(&chat__g.users_lock);
}

static void chat__free_member(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl, (void)arg;
    chat__member_free(v);
}

static void chat__free_upload(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl, (void)arg;
    chat__upload_free(v);
}

static void chat__free_room(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl, (void)arg;
    chat_room_t *r = v;
    for (uint32_t i = 0; i < r->ring_n; i++) chat__msg_unref(r->ring[(r->ring_head + i) % r->ring_cap]);
    free(r->ring);
    for (uint32_t i = 0; i < r->nheld; i++) chat__msg_unref(r->held[i]);
    free(r->held);
    for (uint32_t i = 0; i < r->ninitq; i++) chat__msg_unref(r->initq[i]);
    free(r->initq);
    map_each(&r->members, chat__free_member, NULL);
    map_free(&r->members);
    for (int w = 0; w < chat__g.cfg.workers; w++) free(r->subs[w].v);
    free(r->subs);
    free(r->nsubs);
    free(r->title);
    uv_mutex_destroy(&r->lock);
    free(r);
}

static void chat__free_idem(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl, (void)arg;
    chat__idem_free(v);
}

static void chat__free_user(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl, (void)arg;
    chat_user_t *u = v;
    map_each(&u->idem, chat__free_idem, NULL);
    map_free(&u->idem);
    map_free(&u->rooms);
    free(u->sessions);
    free(u->watchers);
    free(u->rnodes);
    free(u->pw_hash);
    uv_mutex_destroy(&u->lock);
    free(u);
}

void chat_set_limits(size_t max_text, int max_rooms_per_conn, uint64_t catchup_budget)
{
    __atomic_store_n(&chat__g.cfg.max_text, max_text, __ATOMIC_RELAXED);
    __atomic_store_n(&chat__g.cfg.max_rooms_per_conn, max_rooms_per_conn, __ATOMIC_RELAXED);
    __atomic_store_n(&chat__g.cfg.catchup_budget, catchup_budget, __ATOMIC_RELAXED);
}

void chat_shutdown(void)
{
    if (chat__g.store) store_close(chat__g.store);
    chat__g.store = NULL;
    map_each(&chat__g.rooms, chat__free_room, NULL);
    map_free(&chat__g.rooms);
    map_each(&chat__g.users, chat__free_user, NULL);
    map_free(&chat__g.users);
    map_each(&chat__g.uploads, chat__free_upload, NULL);
    map_free(&chat__g.uploads);
    uv_mutex_destroy(&chat__g.uploads_lock);
    uv_rwlock_destroy(&chat__g.rooms_lock);
    uv_rwlock_destroy(&chat__g.users_lock);
    uv_mutex_destroy(&chat__g.id_lock);
}

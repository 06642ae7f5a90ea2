/*
 * chat_relay.c: room traffic between the nodes of a cluster
 * (ARCHITECTURE.md "Ordering and durability"): messages, room and user
 * events, and the state changes other nodes keep in memory.
 *
 * Messages, sync durability. The store assigns a message's seq in its
 * inserting transaction
 * (the room row is locked until the commit, so seqs are gapless in commit
 * order across nodes). After the commit the origin acks the sender,
 * publishes the message on the room's channel "chatroom-<room>" and
 * delivers it here through chat__relay_deliver, the one path every node
 * uses for every message: under the room lock, the next seq is committed to
 * the ring and fanned out, a later one is held (a gap), an old one dropped.
 * A gap is filled from the store after RELAY_GAP_MS (the missing message is
 * committed: a later seq's transaction waited for its row lock).
 * Async durability: one Lua script in Redis assigns the seq and publishes
 * (chat__relay_assign_locked); the origin acks and delivers on its answer
 * and writes behind (a gap may then wait two flush windows for the store).
 *
 * Channels. A node subscribes to a room's channel while it has local
 * subscriptions (room->nlocal > 0). A room without them goes stale here; the
 * first subscription makes it "cold" until a sync read (its newest ring of
 * messages) brings it up to date, and a join or history on a cold room runs
 * after that read (chat__relay_sync). RELAY_SUB_FILL_MS after a subscription
 * one more read collects what was published before Redis confirmed it; after
 * the bus comes back every watched room is read from its committed seq on.
 *
 * State notices lost while the bus was down are made up for when it comes
 * back: users, rooms, memberships and uploads are read again from the store
 * and applied like notices, and memberships the store no longer has are
 * dropped (chat__relay_on_up).
 *
 * Payloads: on a room's channel the message's or event's JSON as clients
 * get it (a message's begins {"type":"message",); on "sori:state", 's' + a JSON
 * array of committed state ops, 'u' + user name + '\n' + a user event's JSON.
 * What arrives is framed and decoded by the pure functions of chat_wire.c
 * (fuzzed by tests/fuzz/fuzz_relay.c); this file applies the result.
 *
 * Threads: store writer threads (commits), the reader thread (fills), the
 * bus thread (remote traffic) and this module's timer thread; none blocks.
 * Locks: user -> room (chat_internal.h), then the relay queue's leaf lock;
 * bus calls run under chat__cluster_bus_hold (a read lock that stop takes).
 * Numbers: one PUBLISH per message (plus one per room event); a gap costs
 * one range read of at most RELAY_FILL_PAGE rows per RELAY_GAP_MS.
 */
#include "bus/bus.h"
#include "chat/chat_internal.h"
#include "chat/chat_wire.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RELAY_GAP_MS 100       /* a held message waits this long before the store is read */
#define RELAY_SUB_FILL_MS 200  /* after a channel is subscribed: one read of what raced it */
#define RELAY_HELD_MAX 4096    /* held messages per room; beyond, they are read from the store */
#define RELAY_FILL_PAGE 500
#define RELAY_STATE_CHANNEL CHAT_WIRE_STATE_CHANNEL


/* ---- publishing ---- */

/* Publishes data, after a one-byte kind unless kind is 0 (room channels:
 * the JSON as clients get it, sent without a copy here). */
static int chat__relay_publish(const char *channel, char kind, const char *data, size_t len)
{
    char *p = NULL;
    if (kind) {
        if (!(p = malloc(len + 1))) return SORI_ENOMEM;
        p[0] = kind;
        memcpy(p + 1, data, len);
    }
    struct bus *b = chat__cluster_bus_hold();
    int rc = b ? bus_publish(b, channel, p ? p : data, len + (p != NULL), NULL, NULL) : SORI_ECLOSED;
    chat__cluster_bus_release();
    free(p);
    return rc;
}

static void chat__relay_channel(char *out, size_t cap, const chat_room_t *r)
{
    snprintf(out, cap, "chatroom-%s", r->id);
}

/* ---- the timer thread: rooms to read from the store ---- */

typedef struct {
    chat_room_t *room;
    chat_msg_t *m; /* non-NULL: set up the room's seq counter (async), else a fill */
    int64_t due_ms;
} chat_relay_due_t;

static struct {
    uv_mutex_t lock; /* a leaf */
    uv_cond_t cond;
    uv_thread_t thread;
    int started, stop;
    chat_relay_due_t *due;
    uint32_t ndue, capdue;
} chat__rl;

static void chat__relay_fill_start(chat_room_t *r);
static void chat__relay_init_start(chat_room_t *r);
static void chat__relay_init_done(chat_room_t *r, int ok);

static int chat__relay_due_add(chat_room_t *r, chat_msg_t *m, int64_t due_ms)
{
    if (chat__rl.ndue == chat__rl.capdue) {
        uint32_t cap = chat__rl.capdue ? chat__rl.capdue * 2 : 16;
        chat_relay_due_t *v = realloc(chat__rl.due, cap * sizeof *v);
        if (!v) return SORI_ENOMEM;
        chat__rl.due = v, chat__rl.capdue = cap;
    }
    chat__rl.due[chat__rl.ndue++] = (chat_relay_due_t){r, m, due_ms};
    uv_cond_signal(&chat__rl.cond);
    return 0;
}

/* Queues a fill of r at due_ms (room lock held: r->fill says one is queued). */
static void chat__relay_schedule_locked(chat_room_t *r, int64_t due_ms)
{
    if (r->fill || !chat__rl.started) return;
    uv_mutex_lock(&chat__rl.lock);
    if (chat__relay_due_add(r, NULL, due_ms) == 0) r->fill = 1;
    uv_mutex_unlock(&chat__rl.lock);
}

static void chat__relay_main(void *arg)
{
    (void)arg;
    uv_mutex_lock(&chat__rl.lock);
    while (!chat__rl.stop) {
        int64_t now = chat__now_ms(), next = now + 1000;
        for (uint32_t i = 0; i < chat__rl.ndue;) {
            if (chat__rl.due[i].due_ms <= now) {
                chat_room_t *r = chat__rl.due[i].room;
                chat_msg_t *m = chat__rl.due[i].m;
                chat__rl.due[i] = chat__rl.due[--chat__rl.ndue];
                uv_mutex_unlock(&chat__rl.lock);
                if (m)
                    chat__relay_init_start(r);
                else
                    chat__relay_fill_start(r);
                uv_mutex_lock(&chat__rl.lock);
                i = 0; /* the array may have changed */
                now = chat__now_ms();
                continue;
            }
            if (chat__rl.due[i].due_ms < next) next = chat__rl.due[i].due_ms;
            i++;
        }
        if (chat__rl.stop) break;
        uv_cond_timedwait(&chat__rl.cond, &chat__rl.lock, (uint64_t)(next - now) * 1000000ull);
    }
    uv_mutex_unlock(&chat__rl.lock);
}

int chat__relay_start(void)
{
    uv_mutex_init(&chat__rl.lock);
    uv_cond_init(&chat__rl.cond);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = uv_thread_create(&chat__rl.thread, chat__relay_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) return SORI_EIO;
    chat__rl.started = 1;
    struct bus *b = chat__cluster_bus_hold(); /* state notices: every node, always */
    rc = b ? bus_subscribe(b, RELAY_STATE_CHANNEL) : SORI_ECLOSED;
    chat__cluster_bus_release();
    return rc;
}

void chat__relay_stop(void)
{
    if (!chat__rl.started) return;
    uv_mutex_lock(&chat__rl.lock);
    chat__rl.stop = 1;
    uv_cond_signal(&chat__rl.cond);
    uv_mutex_unlock(&chat__rl.lock);
    uv_thread_join(&chat__rl.thread);
    chat__rl.started = 0;
    for (uint32_t i = 0; i < chat__rl.ndue; i++)
        if (chat__rl.due[i].m) chat__relay_init_done(chat__rl.due[i].room, 0);
    free(chat__rl.due);
    chat__rl.due = NULL;
    chat__rl.ndue = chat__rl.capdue = 0;
}

/* ---- ordered delivery ---- */

/* Commits m as r's next message: its mentions to the members, the ring,
 * the fan-out (room lock held). */
static void chat__relay_commit_locked(chat_room_t *r, chat_msg_t *m)
{
    for (uint32_t i = 0; i < m->nmentions; i++) {
        chat_member_t *mb = map_get(&r->members, m->mentions[i], strlen(m->mentions[i]));
        if (mb) chat__member_mention(mb, m->seq);
    }
    chat__ring_push(r, m);
    r->committed = m->seq;
    if (r->seq < m->seq) r->seq = m->seq;
    chat__publish(r, m);
}

/* Commits the held messages that follow r->committed (room lock held). */
static void chat__relay_drain_locked(chat_room_t *r)
{
    uint32_t k = 0;
    while (k < r->nheld && r->held[k]->seq <= r->committed + 1) {
        if (r->held[k]->seq == r->committed + 1) chat__relay_commit_locked(r, r->held[k]);
        chat__msg_unref(r->held[k]);
        k++;
    }
    if (k) {
        memmove(r->held, r->held + k, (r->nheld - k) * sizeof *r->held);
        r->nheld -= k;
        r->gap_ms = r->nheld ? chat__now_ms() : 0;
    }
}

static void chat__relay_hold_locked(chat_room_t *r, chat_msg_t *m)
{
    uint32_t at = r->nheld;
    while (at > 0 && r->held[at - 1]->seq > m->seq) at--;
    if (at > 0 && r->held[at - 1]->seq == m->seq) return; /* already held */
    if (r->nheld == r->capheld) {
        uint32_t cap = r->capheld ? r->capheld * 2 : 8;
        chat_msg_t **v = cap <= RELAY_HELD_MAX ? realloc(r->held, cap * sizeof *v) : NULL;
        if (!v) return; /* the store has it: the fill reads it */
        r->held = v;
        r->capheld = cap;
    }
    memmove(r->held + at + 1, r->held + at, (r->nheld - at) * sizeof *r->held);
    r->held[at] = chat__msg_ref(m);
    r->nheld++;
    if (!r->gap_ms) r->gap_ms = chat__now_ms();
    chat__relay_schedule_locked(r, r->gap_ms + RELAY_GAP_MS);
}

void chat__relay_deliver(chat_msg_t *m)
{
    chat_room_t *r = m->room;
    uv_mutex_lock(&r->lock);
    if (m->seq == r->committed + 1) {
        chat__relay_commit_locked(r, m);
        chat__relay_drain_locked(r);
    } else if (m->seq > r->committed + 1) {
        chat__relay_hold_locked(r, m);
    }
    uv_mutex_unlock(&r->lock);
}

/* ---- what a remote or stored message teaches this node ---- */

/* Mentions and attachments of a message from elsewhere, from its event
 * object: m->mentions for the members' unread counts, upload links so that
 * readers of the room may fetch the files. */
static int chat__relay_learn_meta(chat_msg_t *m, json_t *o)
{
    json_t *men = json_object_get(o, "mentions"), *at = json_object_get(o, "attachments");
    size_t n = json_array_size(men), i;
    json_t *v;
    if (n) {
        if (!(m->mentions = calloc(n, sizeof *m->mentions))) return SORI_ENOMEM;
        json_array_foreach(men, i, v)
        {
            const char *name = json_string_value(v);
            if (name && strlen(name) <= CHAT_USER_MAX && (m->mentions[m->nmentions] = strdup(name)))
                m->nmentions++;
        }
    }
    if (json_array_size(at)) {
        uv_mutex_lock(&chat__g.uploads_lock);
        json_array_foreach(at, i, v)
        {
            const char *id = json_string_value(json_object_get(v, "id"));
            const char *type = json_string_value(json_object_get(v, "type"));
            if (id && type && strlen(id) < 65)
                chat__upload_link(id, type, json_integer_value(json_object_get(v, "size")), m->ts, NULL, m->room);
        }
        uv_mutex_unlock(&chat__g.uploads_lock);
    }
    return 0;
}

/* The sender's idempotency key, so that a resend to this node gets the
 * first ack without a store round trip (no lock held). */
static void chat__relay_learn_idem(const chat_msg_t *m)
{
    if (!m->cid) return;
    chat_user_t *u = chat__user_get(m->from, 0);
    if (!u) return;
    uv_mutex_lock(&u->lock);
    if (!map_get(&u->idem, m->cid, strlen(m->cid))) {
        chat_idem_t *e = malloc(sizeof *e);
        if (e) {
            *e = (chat_idem_t){.room = m->room, .id = m->id, .seq = m->seq, .ts = m->ts, .pending = NULL};
            if (map_put(&u->idem, m->cid, strlen(m->cid), e)) free(e);
        }
    }
    uv_mutex_unlock(&u->lock);
}

/* A message object (the event JSON) to a committed message of room r. */
static chat_msg_t *chat__relay_msg_from_obj(chat_room_t *r, json_t *o)
{
    chat_wire_msg_t w;
    if (chat_wire_msg_decode(o, &w)) return NULL;
    json_t *meta = json_object();
    json_t *at = w.attachments, *men = w.mentions;
    if (at) json_object_set(meta, "attachments", at);
    if (men) json_object_set(meta, "mentions", men);
    char *metas = json_object_size(meta) ? json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(meta);
    chat_msg_t *m = chat__msg_new(r, w.id, w.seq, w.ts, w.from, w.text, w.text_len, w.cid, metas);
    free(metas);
    if (!m) return NULL;
    m->committed = 1;
    if (chat__relay_learn_meta(m, o)) {
        chat__msg_unref(m);
        return NULL;
    }
    return m;
}

/* ---- messages committed here ---- */

/* Replies an error to m's waiters and forgets its idempotency key (no lock
 * held): the message was not stored, a resend may try again. */
void chat__relay_fail(chat_msg_t *m, const char *msg)
{
    chat_room_t *r = m->room;
    chat_user_t *u = chat__user_get(m->from, 0);
    if (u) uv_mutex_lock(&u->lock);
    uv_mutex_lock(&r->lock);
    chat_waiter_t *w = m->waiters;
    m->waiters = NULL;
    uv_mutex_unlock(&r->lock);
    if (u && m->cid) {
        chat_idem_t *e = map_get(&u->idem, m->cid, strlen(m->cid));
        if (e && e->pending == m) chat__idem_free(map_del(&u->idem, m->cid, strlen(m->cid)));
    }
    if (u) uv_mutex_unlock(&u->lock);
    chat__waiters_reply(m, w, msg);
}

static void chat__relay_ack(chat_msg_t *m, chat_waiter_t *w) { chat__waiters_reply(m, w, NULL); }

void chat__relay_committed(chat_msg_t *m, int status)
{
    chat_room_t *r = m->room;
    if (status) {
        chat__relay_fail(m, "The store is shutting down; resend.");
        return;
    }
    uv_mutex_lock(&r->lock);
    m->seq = m->a_seq;
    if (m->a_id != m->id) { /* an earlier message of this sender and cid: its ack */
        m->dup = 1;
        m->id = m->a_id;
        m->ts = m->a_ts;
    }
    m->committed = 1;
    chat_waiter_t *w = m->waiters;
    m->waiters = NULL;
    uv_mutex_unlock(&r->lock);
    if (!m->dup) {
        if (chat__msg_encode(m)) {
            LOG_ERROR("relay", "%s: out of memory encoding seq %lld; other nodes read it from the store", r->id,
                      (long long)m->seq);
        } else {
            char ch[CHAT_ROOM_MAX + 16];
            chat__relay_channel(ch, sizeof ch, r);
            int rc = chat__relay_publish(ch, 0, m->json, m->json_len);
            if (rc) /* committed and acked: the others read it at their next gap or reconnect */
                LOG_WARN("relay", "%s seq %lld not published (%s)", r->id, (long long)m->seq, sori_strerror(rc));
            chat__relay_deliver(m);
        }
        metrics_inc(M_MESSAGES_IN);
    }
    chat__relay_ack(m, w);
    if (!m->dup) chat__push_msg(m);
}

/* ---- async durability: Redis assigns the seq ----
 *
 * One script per message: an idempotency key (sender, room, cid) answers a
 * resend with the first ack; else INCR of sori:seq:<room> and PUBLISH of
 * the message with that seq, in the bus's frame ("<node>:{...}"), so every
 * node gets the room's messages in seq order (ordering by Redis). The
 * origin acks and delivers when the script answers and queues the store
 * write behind it (--flush-ms). A missing counter (the room's first message
 * in async mode, or a Redis that lost its data) answers {-1}: the counter is
 * set from the store (SET NX) after 2 flush windows, so that writes of
 * seqs Redis gave before are in the store by then, and the script runs
 * again. */

static const char chat__relay_lua[] =
    "if ARGV[6] == '1' then local p = redis.call('GET', KEYS[2]) if p then return {0, p} end end "
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end "
    "local s = redis.call('INCR', KEYS[1]) "
    "redis.call('PUBLISH', ARGV[1], ARGV[2] .. s .. ARGV[3]) "
    "if ARGV[6] == '1' then redis.call('SET', KEYS[2], s .. ':' .. ARGV[4] .. ':' .. ARGV[5], 'PX', 86400000) end "
    "return {1, s}";

static void chat__relay_assigned(void *arg, int status, const bus_reply_t *rp);

/* Sends m's script (room lock held); 0 or < 0 (nothing sent). */
static int chat__relay_eval_locked(chat_msg_t *m)
{
    const char *at = strstr(m->json, ",\"seq\":0,"); /* room ids hold no quote: the first is ours */
    struct bus *b = at ? chat__cluster_bus_hold() : NULL;
    int rc = at ? SORI_ECLOSED : SORI_EINVAL;
    if (b) {
        char key[CHAT_ROOM_MAX + 16], idem[CHAT_ROOM_MAX + CHAT_USER_MAX + 96], ch[CHAT_ROOM_MAX + 16];
        char prefix[16], id[24], ts[24];
        snprintf(key, sizeof key, "sori:seq:%s", m->room->id);
        snprintf(idem, sizeof idem, "sori:idem:%s:%s:%s", m->from, m->room->id, m->cid ? m->cid : "");
        chat__relay_channel(ch, sizeof ch, m->room);
        snprintf(id, sizeof id, "%llu", (unsigned long long)m->id);
        snprintf(ts, sizeof ts, "%lld", (long long)m->ts);
        int pl = snprintf(prefix, sizeof prefix, "%d:", chat__g.cfg.node_id);
        size_t head = (size_t)(at - m->json) + 7; /* through ,"seq": */
        char *pre = malloc((size_t)pl + head);
        rc = SORI_ENOMEM;
        if (pre) {
            memcpy(pre, prefix, (size_t)pl);
            memcpy(pre + pl, m->json, head);
            const char *argv[11] = {"EVAL", chat__relay_lua, "2", key, idem, ch, pre, at + 8, id, ts,
                                    m->cid ? "1" : "0"};
            size_t lens[11];
            for (int i = 0; i < 11; i++) /* pre (6) is not NUL-terminated */
                lens[i] = i == 6 ? (size_t)pl + head : i == 7 ? m->json_len - (head + 1) : strlen(argv[i]);
            chat__msg_ref(m);
            rc = bus_command(b, 11, argv, lens, chat__relay_assigned, m);
            if (rc) chat__msg_unref(m);
            free(pre);
        }
    }
    chat__cluster_bus_release();
    return rc;
}

/* Appends m to its room's queue of sends waiting for the counter (room
 * lock held); 0 or SORI_ENOMEM. */
static int chat__relay_initq_add_locked(chat_room_t *r, chat_msg_t *m)
{
    if (chat__arr_add((void ***)&r->initq, &r->ninitq, &r->capinitq, m)) return SORI_ENOMEM;
    /* scripts in flight come back -1 in their order, but after sends that
     * were queued meanwhile: keep the queue in issue order */
    uint32_t at = r->ninitq - 1;
    while (at > 0 && r->initq[at - 1]->issue > m->issue) {
        r->initq[at] = r->initq[at - 1];
        at--;
    }
    r->initq[at] = m;
    chat__msg_ref(m);
    return 0;
}

int chat__relay_assign_locked(chat_msg_t *m)
{
    chat_room_t *r = m->room;
    m->issue = ++r->issued;
    if (r->initing) return chat__relay_initq_add_locked(r, m); /* behind the counter's setup, in order */
    return chat__relay_eval_locked(m);
}

static void chat__relay_init_later(chat_room_t *r);

static void chat__relay_assigned(void *arg, int status, const bus_reply_t *rp)
{
    chat_msg_t *m = arg;
    chat_room_t *r = m->room;
    long long code = status == 0 && rp && rp->type == BUS_REPLY_ARRAY && rp->elements >= 1 &&
                             rp->element[0].type == BUS_REPLY_INTEGER
                         ? rp->element[0].integer
                         : -2;
    if (code == -1) { /* no counter: m and the room's later sends wait for it, in order */
        uv_mutex_lock(&r->lock);
        int start = !r->initing, rc = chat__relay_initq_add_locked(r, m);
        if (rc == 0) r->initing = 1;
        uv_mutex_unlock(&r->lock);
        if (rc) chat__relay_fail(m, "Out of memory.");
        else if (start) chat__relay_init_later(r);
        chat__msg_unref(m);
        return;
    }
    if (code == 1 && rp->elements == 2 && rp->element[1].type == BUS_REPLY_INTEGER) {
        uv_mutex_lock(&r->lock);
        m->seq = rp->element[1].integer;
        uv_mutex_unlock(&r->lock);
        /* Redis published it with its seq; here the text must say it too,
         * else it is left to the gap fill (the store has it soon) */
        int encoded = chat__msg_encode(m) == 0;
        if (!encoded) LOG_ERROR("relay", "%s: out of memory encoding seq %lld", r->id, (long long)m->seq);
        uv_mutex_lock(&r->lock);
        m->committed = 1;
        chat_waiter_t *w = m->waiters;
        m->waiters = NULL;
        uv_mutex_unlock(&r->lock);
        chat__relay_ack(m, w);
        if (encoded) chat__relay_deliver(m);
        chat__write_msg(m); /* batched behind (async durability) */
        metrics_inc(M_MESSAGES_IN);
        chat__push_msg(m);
    } else if (code == 0 && rp->elements == 2 && rp->element[1].type == BUS_REPLY_STRING) {
        long long seq = 0, ts = 0;
        unsigned long long id = 0;
        if (sscanf(rp->element[1].str, "%lld:%llu:%lld", &seq, &id, &ts) == 3) {
            uv_mutex_lock(&r->lock);
            m->dup = 1, m->seq = seq, m->id = id, m->ts = ts;
            m->committed = 1;
            chat_waiter_t *w = m->waiters;
            m->waiters = NULL;
            uv_mutex_unlock(&r->lock);
            chat__relay_ack(m, w);
        } else {
            chat__relay_fail(m, "A bad idempotency record; try again.");
        }
    } else {
        if (status == 0 && rp && rp->type == BUS_REPLY_ERROR) LOG_WARN("relay", "seq script: %s", rp->str);
        chat__relay_fail(m, "The cluster's bus (Redis) is not reachable; try again.");
    }
    chat__msg_unref(m);
}

/* ---- events ---- */

void chat__relay_room_event(chat_room_t *r, const chat_msg_t *ev)
{
    if (!chat__relay_on()) return;
    char ch[CHAT_ROOM_MAX + 16];
    chat__relay_channel(ch, sizeof ch, r);
    chat__relay_publish(ch, 0, ev->json, ev->json_len);
}

void chat__relay_user_event(const chat_user_t *u, const chat_msg_t *ev)
{
    if (!chat__relay_on()) return;
    size_t nl = strlen(u->name);
    char *p = malloc(nl + 1 + ev->json_len);
    if (!p) return;
    memcpy(p, u->name, nl);
    p[nl] = '\n';
    memcpy(p + nl + 1, ev->json, ev->json_len);
    chat__relay_publish(RELAY_STATE_CHANNEL, 'u', p, nl + 1 + ev->json_len);
    free(p);
}

/* ---- state ---- */

static int chat__relay_state_pub(const store_op_t *ops, size_t n, void (*done)(void *arg, int status), void *arg);

void chat__relay_state(const store_op_t *ops, size_t n) { chat__relay_state_pub(ops, n, NULL, NULL); }

int chat__relay_state_then(const store_op_t *ops, size_t n, void (*done)(void *arg, int status), void *arg)
{
    return chat__relay_state_pub(ops, n, done, arg);
}

static int chat__relay_state_pub(const store_op_t *ops, size_t n, void (*done)(void *arg, int status), void *arg)
{
    if (!chat__relay_on() || !n) return SORI_ENOTFOUND;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const store_op_t *op = &ops[i];
        json_t *o = NULL;
        switch (op->kind) {
        case STORE_OP_USER:
            o = json_pack("{s:s, s:s, s:I}", "k", "user", "name", op->u.user.name, "created_at",
                          (json_int_t)op->u.user.created_at);
            break;
        case STORE_OP_ACCOUNT:
            o = json_pack("{s:s, s:s, s:I, s:s?}", "k", "account", "name", op->u.user.name, "created_at",
                          (json_int_t)op->u.user.created_at, "pw_hash", op->u.user.pw_hash);
            break;
        case STORE_OP_ROOM:
            o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "k", "room", "id", op->u.room.id, "kind", op->u.room.kind,
                          "title", op->u.room.title ? op->u.room.title : "", "created_at",
                          (json_int_t)op->u.room.created_at);
            break;
        case STORE_OP_MEMBER:
            o = json_pack("{s:s, s:s, s:s, s:s}", "k", "member", "room", op->u.member.room, "user",
                          op->u.member.user, "role", op->u.member.role);
            break;
        case STORE_OP_MEMBER_DEL:
            o = json_pack("{s:s, s:s, s:s}", "k", "member_del", "room", op->u.member.room, "user",
                          op->u.member.user);
            break;
        case STORE_OP_READ:
            o = json_pack("{s:s, s:s, s:s, s:I}", "k", "read", "room", op->u.member.room, "user", op->u.member.user,
                          "seq", (json_int_t)op->u.member.last_read);
            break;
        case STORE_OP_UPLOAD:
            o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s?}", "k", "upload", "id", op->u.upload.id, "type",
                          op->u.upload.type, "size", (json_int_t)op->u.upload.size, "created_at",
                          (json_int_t)op->u.upload.created_at, "user", op->u.upload.user);
            break;
        default: /* messages, mentions and upload-room links travel with their message */
            break;
        }
        if (o) json_array_append_new(a, o);
    }
    char *text = json_array_size(a) ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    int rc = SORI_ENOTFOUND;
    if (text) {
        size_t len = strlen(text);
        char *p = malloc(len + 1);
        rc = SORI_ENOMEM;
        if (p) {
            p[0] = 's';
            memcpy(p + 1, text, len);
            struct bus *b = chat__cluster_bus_hold();
            rc = b ? bus_publish(b, RELAY_STATE_CHANNEL, p, len + 1, done, arg) : SORI_ECLOSED;
            chat__cluster_bus_release();
            free(p);
        }
        if (rc) LOG_WARN("relay", "a state change was not published (%s)", sori_strerror(rc));
        free(text);
    }
    return rc;
}

static void chat__relay_apply_op(json_t *o)
{
    chat_wire_op_t op;
    if (chat_wire_op_decode(o, &op)) return;
    if (op.k == CHAT_WIRE_OP_USER || op.k == CHAT_WIRE_OP_ACCOUNT) {
        chat_user_t *u = chat__user_get(op.name, 1);
        if (!u) return;
        uv_mutex_lock(&u->lock);
        if (!u->created_at) u->created_at = op.created_at;
        if (op.pw_hash) {
            char *c = strdup(op.pw_hash);
            if (c) free(u->pw_hash), u->pw_hash = c;
        }
        uv_mutex_unlock(&u->lock);
        atomic_store(&u->known, 1);
        return;
    }
    if (op.k == CHAT_WIRE_OP_UPLOAD) {
        chat_user_t *u = op.user ? chat__user_get(op.user, 1) : NULL;
        uv_mutex_lock(&chat__g.uploads_lock);
        chat__upload_link(op.id, op.type, op.size, op.created_at, u, NULL);
        uv_mutex_unlock(&chat__g.uploads_lock);
        return;
    }
    if (op.k == CHAT_WIRE_OP_ROOM) {
        if (!chat_valid_room(op.id)) return;
        int created;
        chat__room_create(op.id, op.kind, op.title, op.created_at, &created);
        return;
    }
    chat_room_t *r = chat__room_get(op.room);
    chat_user_t *u = chat__user_get(op.user, 1);
    if (!r || !u) return;
    atomic_store(&u->known, 1);
    if (op.k == CHAT_WIRE_OP_MEMBER) {
        int added = chat__add_member(r, u, op.role, NULL, 0);
        if (added == 0) { /* a role change */
            uv_mutex_lock(&r->lock);
            chat_member_t *m = map_get(&r->members, u->name, strlen(u->name));
            if (m) m->role = op.role;
            uv_mutex_unlock(&r->lock);
        }
        /* as on the origin: every connection of a dm's member has the room */
        if (added == 1 && r->kind == 'd') chat__user_subscribe(u, r, 1);
    } else if (op.k == CHAT_WIRE_OP_MEMBER_DEL) {
        chat__del_member(r, u);
        chat__user_subscribe(u, r, 0);
    } else if (op.k == CHAT_WIRE_OP_READ) {
        int64_t seq = op.seq;
        uv_mutex_lock(&r->lock);
        chat_member_t *m = map_get(&r->members, u->name, strlen(u->name));
        if (m && seq > m->last_read) {
            m->last_read = seq;
            chat__member_read(m, seq);
        }
        uv_mutex_unlock(&r->lock);
    }
}

/* ---- remote traffic (bus thread) ---- */

static void chat__relay_room_message(chat_room_t *r, const chat_wire_payload_t *p)
{
    if (p->kind == CHAT_WIRE_ROOM_EVENT) {
        chat_msg_t *ev = chat__event_text_new(p->body, p->body_len);
        if (!ev) return;
        ev->room = r;
        chat__publish(r, ev); /* to every local subscriber (events need no lock) */
        chat__msg_unref(ev);
        return;
    }
    json_t *o = json_loadb(p->body, p->body_len, 0, NULL);
    chat_msg_t *m = o ? chat__relay_msg_from_obj(r, o) : NULL;
    json_decref(o);
    if (!m) {
        LOG_WARN("relay", "%s: a malformed message from the bus was dropped", r->id);
        return;
    }
    chat__relay_learn_idem(m);
    chat__relay_deliver(m);
    chat__msg_unref(m);
}

static void chat__relay_state_message(const chat_wire_payload_t *p)
{
    if (p->kind == CHAT_WIRE_USER_EVENT) {
        chat_user_t *u = chat__user_get(p->user, 0);
        if (!u) return;
        chat_msg_t *ev = chat__event_text_new(p->body, p->body_len);
        if (!ev) return;
        chat__user_event_local(u, ev);
        chat__msg_unref(ev);
        return;
    }
    json_t *a = json_loadb(p->body, p->body_len, 0, NULL);
    size_t i;
    json_t *o;
    json_array_foreach(a, i, o) chat__relay_apply_op(o);
    json_decref(a);
}

void chat__relay_on_message(int origin, const char *channel, const char *data, size_t len)
{
    (void)origin;
    chat_wire_payload_t p;
    switch (chat_wire_classify(channel, data, len, &p)) {
    case CHAT_WIRE_STATE:
    case CHAT_WIRE_USER_EVENT:
        chat__relay_state_message(&p);
        break;
    case CHAT_WIRE_ROOM_MESSAGE:
    case CHAT_WIRE_ROOM_EVENT: {
        /* no room: its state notice is late, and the room's first join reads the store */
        chat_room_t *r = chat__room_get(p.room);
        if (r) chat__relay_room_message(r, &p);
        break;
    }
    }
}

/* ---- channels ---- */

void chat__relay_watch_locked(chat_room_t *r, int on)
{
    char ch[CHAT_ROOM_MAX + 16];
    chat__relay_channel(ch, sizeof ch, r);
    struct bus *b = chat__cluster_bus_hold();
    if (b) {
        if (on)
            bus_subscribe(b, ch);
        else
            bus_unsubscribe(b, ch);
    }
    chat__cluster_bus_release();
    if (on) /* async: after the writes of what came before have landed */
        chat__relay_schedule_locked(r, chat__now_ms() + RELAY_SUB_FILL_MS +
                                           (chat__g.cfg.durability == STORE_ASYNC ? 2LL * chat__g.cfg.flush_ms : 0));
    else
        r->synced = r->warm = 0; /* unwatched, the room goes stale here */
}

static void chat__relay_refill(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl, (void)arg;
    chat_room_t *r = v;
    uv_mutex_lock(&r->lock);
    if (r->nlocal) chat__relay_schedule_locked(r, chat__now_ms());
    uv_mutex_unlock(&r->lock);
}

static void chat__relay_unsync(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl, (void)arg;
    chat_room_t *r = v;
    uv_mutex_lock(&r->lock);
    r->synced = 0;
    uv_mutex_unlock(&r->lock);
}

void chat__relay_on_down(void)
{
    /* what others publish meanwhile is lost to us: joins read the store */
    chat__rooms_foreach(chat__relay_unsync, NULL);
}

/* ---- state resync: after the bus comes back, the state notices of the
 * outage are lost; users, rooms, memberships and uploads are read again
 * from the store (one REPEATABLE READ snapshot) and applied like notices;
 * memberships this node knew of before the read began and the store no
 * longer has are dropped (kicks and parts of the outage). ---- */

typedef struct {
    store_read_t rd;
    int64_t started_ms;
    map_t seen; /* "room\x01user" of every stored membership */
} chat_relay_resync_t;

static int chat__rs_user(void *arg, const store_user_t *su)
{
    (void)arg;
    json_t *o = json_pack("{s:s, s:s, s:I, s:s?}", "k", "account", "name", su->name, "created_at",
                          (json_int_t)su->created_at, "pw_hash", su->pw_hash);
    if (o) chat__relay_apply_op(o);
    json_decref(o);
    return 0;
}

static int chat__rs_room(void *arg, const store_room_t *sr)
{
    (void)arg;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "k", "room", "id", sr->id, "kind", sr->kind, "title",
                          sr->title ? sr->title : "", "created_at", (json_int_t)sr->created_at);
    if (o) chat__relay_apply_op(o);
    json_decref(o);
    return 0;
}

static int chat__rs_member(void *arg, const store_member_t *sm)
{
    chat_relay_resync_t *x = arg;
    char key[CHAT_ROOM_MAX + CHAT_USER_MAX + 2];
    int n = snprintf(key, sizeof key, "%s\x01%s", sm->room, sm->user);
    if (n > 0 && (size_t)n < sizeof key) map_put(&x->seen, key, (size_t)n, (void *)1);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "k", "member", "room", sm->room, "user", sm->user, "role", sm->role);
    if (o) chat__relay_apply_op(o);
    json_decref(o);
    json_t *rd = json_pack("{s:s, s:s, s:s, s:I}", "k", "read", "room", sm->room, "user", sm->user, "seq",
                           (json_int_t)sm->last_read);
    if (rd) chat__relay_apply_op(rd);
    json_decref(rd);
    return 0;
}

static int chat__rs_upload(void *arg, const store_upload_t *su)
{
    (void)arg;
    chat_room_t *r = su->room ? chat__room_get(su->room) : NULL;
    chat_user_t *u = su->user ? chat__user_get(su->user, 1) : NULL;
    if (strlen(su->id) >= 65) return 0;
    uv_mutex_lock(&chat__g.uploads_lock);
    chat__upload_link(su->id, su->type, su->size, su->created_at, u, r);
    uv_mutex_unlock(&chat__g.uploads_lock);
    return 0;
}

typedef struct {
    chat_room_t *room;
    char user[CHAT_USER_MAX + 1];
} chat_rs_gone_t;

typedef struct {
    chat_relay_resync_t *x;
    chat_room_t *room;
    chat_rs_gone_t *gone;
    uint32_t ngone, capgone;
} chat_rs_sweep_t;

static void chat__rs_member_check(const char *k, size_t kl, void *v, void *arg)
{
    chat_rs_sweep_t *w = arg;
    chat_member_t *m = v;
    char key[CHAT_ROOM_MAX + CHAT_USER_MAX + 2];
    int n = snprintf(key, sizeof key, "%s\x01%.*s", w->room->id, (int)kl, k);
    if (m->added_ms >= w->x->started_ms || n <= 0 || (size_t)n >= sizeof key || map_get(&w->x->seen, key, (size_t)n))
        return;
    if (w->ngone == w->capgone) {
        uint32_t cap = w->capgone ? w->capgone * 2 : 8;
        chat_rs_gone_t *g = realloc(w->gone, cap * sizeof *g);
        if (!g) return;
        w->gone = g;
        w->capgone = cap;
    }
    w->gone[w->ngone].room = w->room;
    snprintf(w->gone[w->ngone++].user, CHAT_USER_MAX + 1, "%.*s", (int)kl, k);
}

/* Collects the memberships to drop (rooms table and room locks held). */
static void chat__rs_room_sweep(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl;
    chat_rs_sweep_t *w = arg;
    w->room = v;
    uv_mutex_lock(&w->room->lock);
    map_each(&w->room->members, chat__rs_member_check, w);
    uv_mutex_unlock(&w->room->lock);
}

static void chat__relay_resync_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    chat_relay_resync_t *x = rd->arg;
    if (b) {
        store_load_cb_t cb = {.arg = x, .user = chat__rs_user, .room = chat__rs_room, .member = chat__rs_member,
                              .upload = chat__rs_upload};
        if (type->load(b, 0, 0, &cb) == 0) {
            chat_rs_sweep_t w = {.x = x};
            chat__rooms_foreach(chat__rs_room_sweep, &w);
            for (uint32_t i = 0; i < w.ngone; i++) { /* no table lock held now */
                json_t *o = json_pack("{s:s, s:s, s:s}", "k", "member_del", "room", w.gone[i].room->id, "user",
                                      w.gone[i].user);
                if (o) chat__relay_apply_op(o);
                json_decref(o);
            }
            free(w.gone);
            LOG_INFO("relay", "state read again from the store after the bus came back");
        } else {
            LOG_WARN("relay", "reading the state again after the bus came back failed");
        }
    }
    map_free(&x->seen);
    free(x);
}

void chat__relay_on_up(void)
{
    /* publishes made while our link was down never reached us */
    chat__rooms_foreach(chat__relay_refill, NULL);
    static atomic_int ups;
    if (atomic_fetch_add(&ups, 1) == 0) return; /* the first link: the state was just loaded */
    chat_relay_resync_t *x = calloc(1, sizeof *x);
    if (!x) return;
    x->started_ms = chat__now_ms();
    x->rd.run = chat__relay_resync_run;
    x->rd.arg = x;
    store_read(chat__g.store, &x->rd);
}

/* ---- reads of the store: fills (after committed, in order) and syncs
 * (a cold room's newest ring, then a continuation) ---- */

typedef struct {
    store_read_t rd;
    chat_room_t *room;
    int sync;
    /* a sync's continuation, run on s's worker */
    chat_session_t *s;
    json_t *ref;
    chat_relay_cont_fn cont;
    int64_t args[4];
    uint64_t mark; /* an id taken when the command ran */
    chat_msg_t **msgs;
    int n, cap;
} chat_relay_read_t;

static int chat__relay_read_row(void *arg, const store_msg_t *sm)
{
    chat_relay_read_t *rr = arg;
    int rc = chat__msgs_add_row(&rr->msgs, &rr->n, &rr->cap, rr->room, sm);
    if (rc == 0 && sm->meta) {
        json_t *o = json_loads(sm->meta, 0, NULL);
        if (o) chat__relay_learn_meta(rr->msgs[rr->n - 1], o);
        json_decref(o);
    }
    return rc;
}

static void chat__relay_read_free(chat_relay_read_t *rr)
{
    for (int i = 0; i < rr->n; i++) chat__msg_unref(rr->msgs[i]);
    free(rr->msgs);
    json_decref(rr->ref);
    if (rr->s) chat__session_unref(rr->s);
    free(rr);
}

static void chat__relay_cont_task(net_worker_t *w, void *arg)
{
    (void)w;
    chat_relay_read_t *rr = arg;
    if (!rr->s->closed) rr->cont(rr->s, rr->ref, rr->room, rr->args);
    chat__relay_read_free(rr);
}

/* A sync's rows (the room's newest, ascending) into r (room lock held):
 * those that follow committed are delivered; a jump past it resets the
 * ring without a fan-out (the room was not watched: nobody here was live). */
static void chat__relay_sync_apply_locked(chat_room_t *r, chat_relay_read_t *rr)
{
    if (!rr->n || rr->msgs[rr->n - 1]->seq <= r->committed) return;
    if (rr->msgs[0]->seq > r->committed + 1) {
        int live = r->warm; /* watched all along (a long bus outage): the live get what we have */
        for (uint32_t i = 0; i < r->ring_n; i++) chat__msg_unref(r->ring[(r->ring_head + i) % r->ring_cap]);
        r->ring_n = r->ring_head = 0;
        for (int i = 0; i < rr->n; i++) {
            chat__ring_push(r, rr->msgs[i]);
            for (uint32_t k = 0; k < rr->msgs[i]->nmentions; k++) {
                chat_member_t *mb = map_get(&r->members, rr->msgs[i]->mentions[k], strlen(rr->msgs[i]->mentions[k]));
                if (mb) chat__member_mention(mb, rr->msgs[i]->seq);
            }
        }
        r->committed = rr->msgs[rr->n - 1]->seq;
        if (r->seq < r->committed) r->seq = r->committed;
        for (int i = 0; live && i < rr->n; i++) chat__publish(r, rr->msgs[i]);
    } else {
        for (int i = 0; i < rr->n; i++)
            if (rr->msgs[i]->seq == r->committed + 1) chat__relay_commit_locked(r, rr->msgs[i]);
    }
    chat__relay_drain_locked(r);
}

static void chat__relay_read_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    chat_relay_read_t *rr = rd->arg;
    chat_room_t *r = rr->room;
    if (!b) { /* the store is closing */
        uv_mutex_lock(&r->lock);
        if (!rr->sync) r->fill = 0;
        uv_mutex_unlock(&r->lock);
        chat__relay_read_free(rr);
        return;
    }
    uv_mutex_lock(&r->lock);
    int64_t after = r->committed;
    /* a scheduled read of a room not yet read since it is watched is a sync
     * too: a dm's connections start live from the latest, as on one node */
    int sync = rr->sync || !r->warm;
    if (!rr->sync) r->fill = 0; /* from here a new gap schedules another read */
    /* A held message seen before the read began was committed before its
     * snapshot, and so was every seq below it (sync durability: a later
     * seq's transaction waited for the earlier one): only those may be
     * declared missing. One that arrives during the read proves nothing. */
    int64_t held_before = r->nheld ? r->held[0]->seq : 0;
    uv_mutex_unlock(&r->lock);
    store_range_t q = {.room = r->id, .after = sync ? 0 : after, .limit = sync ? (chat__g.cfg.ring > 0 ? chat__g.cfg.ring : 1) : RELAY_FILL_PAGE,
                       .newest_first = sync};
    int got = type->range(b, &q, chat__relay_read_row, rr);
    if (got < 0) LOG_WARN("relay", "%s: reading the store failed; retried", r->id);
    for (int i = 0; i < rr->n; i++) chat__relay_learn_idem(rr->msgs[i]);
    uv_mutex_lock(&r->lock);
    if (sync) {
        chat__relay_sync_apply_locked(r, rr);
        if (got >= 0 && r->nlocal) r->synced = r->warm = 1;
        if (r->nheld) chat__relay_schedule_locked(r, chat__now_ms() + RELAY_GAP_MS);
    } else {
        for (int i = 0; i < rr->n; i++)
            if (rr->msgs[i]->seq == r->committed + 1) chat__relay_commit_locked(r, rr->msgs[i]);
        chat__relay_drain_locked(r);
        /* async: the origin writes within --flush-ms; give it two */
        int64_t patience = chat__g.cfg.durability == STORE_ASYNC ? 2LL * chat__g.cfg.flush_ms + 1000 : 0;
        if (got >= 0 && got < RELAY_FILL_PAGE && r->nheld && r->held[0]->seq > r->committed + 1 && held_before &&
            r->held[0]->seq <= held_before && chat__now_ms() - r->gap_ms >= patience) {
            /* the store has nothing before the held message: move past */
            LOG_WARN("relay", "%s: seqs %lld..%lld are not in the store; skipped", r->id,
                     (long long)r->committed + 1, (long long)r->held[0]->seq - 1);
            r->committed = r->held[0]->seq - 1;
            chat__relay_drain_locked(r);
        }
        if (got < 0 || got == RELAY_FILL_PAGE || r->nheld)
            chat__relay_schedule_locked(r, chat__now_ms() + (got < 0 ? 1000 : got == RELAY_FILL_PAGE ? 0 : RELAY_GAP_MS));
        else if (r->nlocal && chat_cluster_up())
            r->synced = 1; /* caught up after the bus came back */
    }
    uv_mutex_unlock(&r->lock);
    if (rr->sync && rr->s) {
        /* the join point: what precedes the first message sent after the
         * command (ids grow with time; exact for this node's own) */
        int k = 0;
        while (k < rr->n && rr->msgs[k]->id < rr->mark) k++;
        rr->args[3] = got < 0 ? -1 : k ? rr->msgs[k - 1]->seq : rr->n ? rr->msgs[0]->seq - 1 : 0;
        if (!net_worker_post(net_worker_get(rr->s->worker), chat__relay_cont_task, rr)) return;
    }
    chat__relay_read_free(rr);
}

static void chat__relay_fill_start(chat_room_t *r)
{
    chat_relay_read_t *rr = calloc(1, sizeof *rr);
    if (!rr) {
        uv_mutex_lock(&r->lock);
        r->fill = 0;
        chat__relay_schedule_locked(r, chat__now_ms() + 1000);
        uv_mutex_unlock(&r->lock);
        return;
    }
    rr->room = r;
    rr->rd.run = chat__relay_read_run;
    rr->rd.arg = rr;
    store_read(chat__g.store, &rr->rd);
}

int chat__relay_sync(chat_room_t *r, chat_session_t *s, json_t *ref, chat_relay_cont_fn cont, const int64_t args[4])
{
    if (!chat__relay_on()) return -1;
    uv_mutex_lock(&r->lock);
    int synced = r->synced;
    uv_mutex_unlock(&r->lock);
    if (synced) return -1;
    chat_relay_read_t *rr = calloc(1, sizeof *rr);
    if (!rr) return -1;
    rr->room = r;
    rr->sync = 1;
    rr->s = chat__session_ref(s);
    rr->ref = chat__ref_hold(ref);
    rr->cont = cont;
    memcpy(rr->args, args, sizeof rr->args);
    rr->mark = chat__next_id(chat__now_ms());
    rr->rd.run = chat__relay_read_run;
    rr->rd.arg = rr;
    store_read(chat__g.store, &rr->rd);
    return 0;
}

/* ---- async: a room's missing seq counter ---- */

typedef struct {
    store_read_t rd;
    chat_room_t *room;
    int64_t max;
} chat_relay_init_t;

/* Ends a room's counter setup (no lock held): ok sends the waiting scripts
 * in order, else their senders get unavailable. */
static void chat__relay_init_done(chat_room_t *r, int ok)
{
    uv_mutex_lock(&r->lock);
    chat_msg_t **q = r->initq;
    uint32_t n = r->ninitq, k = 0;
    r->initq = NULL;
    r->ninitq = r->capinitq = 0;
    r->initing = 0;
    for (; ok && k < n; k++) /* under the lock: before any later send of the room */
        if (chat__relay_eval_locked(q[k])) break;
    uv_mutex_unlock(&r->lock);
    for (uint32_t i = 0; i < n; i++) {
        if (i >= k) chat__relay_fail(q[i], "The cluster's bus (Redis) is not reachable; try again.");
        chat__msg_unref(q[i]);
    }
    free(q);
}

static void chat__relay_init_later(chat_room_t *r)
{
    uv_mutex_lock(&r->lock);
    int fresh = r->committed == 0 && r->seq == 0; /* nothing was ever sent to it that we know of */
    uv_mutex_unlock(&r->lock);
    int64_t wait = fresh ? 0 : 2LL * chat__g.cfg.flush_ms + 500;
    uv_mutex_lock(&chat__rl.lock);
    int rc = chat__rl.started && !chat__rl.stop ? chat__relay_due_add(r, (chat_msg_t *)1, chat__now_ms() + wait)
                                               : SORI_ECLOSED;
    uv_mutex_unlock(&chat__rl.lock);
    if (rc)
        chat__relay_init_done(r, 0);
    else if (!fresh)
        LOG_WARN("relay", "%s: no seq counter in Redis; set from the store in %lld ms", r->id, (long long)wait);
}

static int chat__relay_init_row(void *arg, const store_msg_t *sm)
{
    chat_relay_init_t *x = arg;
    if (sm->seq > x->max) x->max = sm->seq;
    return 0;
}

static void chat__relay_init_set(void *arg, int status, const bus_reply_t *rp)
{
    (void)rp;
    chat__relay_init_done(arg, status == 0);
}

static void chat__relay_init_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    chat_relay_init_t *x = rd->arg;
    chat_room_t *r = x->room;
    store_range_t q = {.room = r->id, .limit = 1, .newest_first = 1};
    int got = b ? type->range(b, &q, chat__relay_init_row, x) : SORI_ECLOSED;
    int64_t max = x->max;
    free(x);
    if (got < 0) {
        chat__relay_init_done(r, 0);
        return;
    }
    uv_mutex_lock(&r->lock);
    int64_t floor = r->committed > max ? r->committed : max;
    uv_mutex_unlock(&r->lock);
    char key[CHAT_ROOM_MAX + 16], v[24];
    snprintf(key, sizeof key, "sori:seq:%s", r->id);
    snprintf(v, sizeof v, "%lld", (long long)floor);
    const char *argv[4] = {"SET", key, v, "NX"};
    struct bus *bus = chat__cluster_bus_hold();
    int rc = bus ? bus_command(bus, 4, argv, NULL, chat__relay_init_set, r) : SORI_ECLOSED;
    chat__cluster_bus_release();
    if (rc) chat__relay_init_done(r, 0);
}

static void chat__relay_init_start(chat_room_t *r)
{
    chat_relay_init_t *x = calloc(1, sizeof *x);
    if (!x) {
        chat__relay_init_done(r, 0);
        return;
    }
    x->room = r;
    x->rd.run = chat__relay_init_run;
    x->rd.arg = x;
    store_read(chat__g.store, &x->rd);
}

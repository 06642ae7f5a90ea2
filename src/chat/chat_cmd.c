/*
 * chat_cmd.c: the commands of PROTOCOL.md §3, shared by every front end.
 *
 * Each command checks its arguments and its caller's rights, changes the
 * in-memory state under the locks chat_internal.h orders, queues the store
 * ops, and replies through the session's sink (after the commit with sync
 * durability). Authorization lives here and only here: a private or dm room
 * is invisible to non-members (forbidden), sending needs membership
 * (not_member), roles gate invite/kick/role as §3 says.
 *
 * Limits live here too, once for every front end (OPERATIONS.md "Limits";
 * read at each use, so a reload applies): --max-rooms-per-user and
 * --max-members-per-room on create, join and invite (too_large; checked
 * under the user's and the room's locks when the membership is added, so
 * they hold exactly; direct-message rooms and memberships applied from
 * other nodes are never refused), and while the node is over
 * --memory-high-water or its store queue over --store-queue-max, sends
 * and creates answer unavailable (joins, history, reads keep working).
 */
#include "auth/auth.h"
#include "chat/chat_internal.h"
#include "chat/chat_text.h"
#include "util/config.h"
#include "util/err.h"
#include "util/json_esc.h"
#include "util/log.h"
#include "util/memwatch.h"
#include "util/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void chat__ack_now(chat_msg_t *m);

#define CHAT_TITLE_MAX 200
#define CHAT_TYPING_MS 1000
#define CHAT_WATCH_MAX 1000
#define CHAT_ATTACH_MAX 10
#define CHAT_MENTIONS_MAX 50
_Static_assert(CHAT_TEXT_NAME_MAX == CHAT_USER_MAX, "mention names are user names");

static chat_member_t *chat__member(chat_room_t *r, const char *user)
{
    return map_get(&r->members, user, strlen(user));
}

/* Looks the room up: bad_request for a malformed id, not_found for an
 * unknown one (replied; NULL returned). */
static chat_room_t *chat__find_room(chat_session_t *s, json_t *ref, const char *room)
{
    if (!chat_valid_room(room)) {
        chat__error(s, ref, "bad_request", "Room ids are 1-64 of A-Z a-z 0-9 _ . : -");
        return NULL;
    }
    chat_room_t *r = chat__room_get(room);
    if (!r) chat__error(s, ref, "not_found", "There is no such room.");
    return r;
}

/* Looks the room up and checks that the caller may see it: public rooms are
 * visible to everyone, private and dm rooms to their members. Replies with
 * the error and returns NULL otherwise. */
static chat_room_t *chat__visible_room(chat_session_t *s, json_t *ref, const char *room)
{
    chat_room_t *r = chat__find_room(s, ref, room);
    if (!r) return NULL;
    if (r->kind != 'p') {
        uv_mutex_lock(&r->lock);
        int member = chat__member(r, s->user->name) != NULL;
        uv_mutex_unlock(&r->lock);
        if (!member) {
            chat__error(s, ref, "forbidden", "This room is private to its members.");
            return NULL;
        }
    }
    return r;
}

/* Why new work is refused now, or NULL: the node is short of memory or
 * (for sends, `send` = 1) its store queue is over --store-queue-max. The
 * refusal is counted; the caller replies unavailable with the sentence.
 * Lock-free. */
static const char *chat__overloaded(int send)
{
    if (memwatch_over()) {
        metrics_inc(M_REFUSED_MEMORY);
        return "The server is low on memory; retry later.";
    }
    int qmax = CONFIG_GET(store_queue_max);
    if (send && qmax && store_backlog(chat__g.store) >= (uint64_t)qmax) {
        metrics_inc(M_REFUSED_STORE_QUEUE);
        return "The server is behind on storing messages; retry in a moment.";
    }
    return NULL;
}

/* Replies to a refused chat__add_member (its negative result). */
static void chat__add_error(chat_session_t *s, json_t *ref, int rc)
{
    char msg[160];
    if (rc == SORI_ELIMIT) {
        snprintf(msg, sizeof msg,
                 "A user may be a member of at most %d rooms; leave one (part) first.", CONFIG_GET(max_rooms_per_user));
    } else if (rc == SORI_E2BIG) {
        snprintf(msg, sizeof msg, "This room has %d members, the most allowed.", CONFIG_GET(max_members_per_room));
    } else {
        chat__error(s, ref, "internal", "Out of memory.");
        return;
    }
    metrics_inc(M_REFUSED_MEMBERSHIP);
    chat__error(s, ref, "too_large", msg);
}

int chat__add_member(chat_room_t *r, chat_user_t *u, char role, store_op_t *op, int limits)
{
    uv_mutex_lock(&u->lock);
    uv_mutex_lock(&r->lock);
    int rc = 0;
    int max_rooms = limits ? CONFIG_GET(max_rooms_per_user) : 0;
    int max_members = limits ? CONFIG_GET(max_members_per_room) : 0;
    if (!chat__member(r, u->name)) {
        chat_member_t *m = NULL;
        if (max_rooms && u->rooms.count >= (size_t)max_rooms)
            rc = SORI_ELIMIT;
        else if (max_members && r->members.count >= (size_t)max_members)
            rc = SORI_E2BIG;
        else if (!(m = calloc(1, sizeof *m)) || map_put(&r->members, u->name, strlen(u->name), m)) {
            free(m);
            rc = SORI_ENOMEM;
        } else if (map_put(&u->rooms, r->id, strlen(r->id), r)) {
            chat__member_free(map_del(&r->members, u->name, strlen(u->name)));
            rc = SORI_ENOMEM;
        } else {
            m->role = role;
            m->added_ms = chat__now_ms();
            rc = 1;
        }
    }
    uv_mutex_unlock(&r->lock);
    uv_mutex_unlock(&u->lock);
    if (rc == 1 && op)
        *op = (store_op_t){.kind = STORE_OP_MEMBER,
                           .u.member = {.room = r->id, .user = u->name, .role = chat__role_name(role),
                                        .joined_at = chat__now_ms()}};
    return rc;
}

void chat__del_member(chat_room_t *r, chat_user_t *u)
{
    uv_mutex_lock(&u->lock);
    uv_mutex_lock(&r->lock);
    chat__member_free(map_del(&r->members, u->name, strlen(u->name)));
    map_del(&u->rooms, r->id, strlen(r->id));
    uv_mutex_unlock(&r->lock);
    uv_mutex_unlock(&u->lock);
}

static json_t *chat__member_event(chat_room_t *r, const char *user, const char *event)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "type", "member", "room", r->id, "user", user, "event", event);
}

/* ---- join, leave, part ---- */

/* The end of a join (args: since, fresh), once the room is up to date. */
static void chat__join_catchup(chat_session_t *s, json_t *ref, chat_room_t *r, const int64_t args[4])
{
    int64_t since = args[0];
    chat_sub_t *sub = chat__sub_find(s, r);
    if (!sub) return; /* left meanwhile */
    if (since >= 0) {
        /* A since beyond the latest seq (a client that saw messages an
         * async-mode crash lost) counts as the latest: nothing is missed. */
        uv_mutex_lock(&r->lock);
        sub->last_seq = since < r->committed ? since : r->committed;
        uv_mutex_unlock(&r->lock);
    } else if (args[1]) {
        /* after a cluster's read of a cold room, from what the store had
         * then: what was delivered meanwhile came after the join */
        uv_mutex_lock(&r->lock);
        sub->last_seq = args[3] >= 0 && args[3] < r->committed ? args[3] : r->committed;
        uv_mutex_unlock(&r->lock);
    }
    chat__catchup(sub, ref, 1);
}

void chat_join(chat_session_t *s, json_t *ref, const char *room, int64_t since)
{
    chat_room_t *r = chat__find_room(s, ref, room);
    if (!r) return;
    uv_mutex_lock(&r->lock);
    int member = chat__member(r, s->user->name) != NULL;
    uv_mutex_unlock(&r->lock);
    if (!member && r->kind != 'p') {
        chat__error(s, ref, "forbidden", "This room is private to its members.");
        return;
    }
    chat_sub_t *sub = chat__sub_find(s, r);
    if (!sub) {
        int joined = 0;
        for (uint32_t i = 0; i < s->nsubs; i++) joined += s->subs[i]->joined;
        int max_rooms = __atomic_load_n(&chat__g.cfg.max_rooms_per_conn, __ATOMIC_RELAXED);
        if (joined >= max_rooms) {
            char msg[96];
            snprintf(msg, sizeof msg, "A connection may join at most %d rooms.", max_rooms);
            chat__error(s, ref, "too_large", msg);
            return;
        }
    }
    if (!member) {
        store_op_t op;
        int added = chat__add_member(r, s->user, 'm', &op, 1);
        if (added < 0) {
            chat__add_error(s, ref, added);
            return;
        }
        if (added) {
            chat__write(NULL, NULL, NULL, &op, 1);
            json_t *ev = chat__member_event(r, s->user->name, "joined");
            chat__room_event(r, ev, s);
            json_decref(ev);
        }
    }
    int fresh = sub == NULL;
    if (fresh && !(sub = chat__sub_add(s, r))) {
        chat__error(s, ref, "internal", "Out of memory.");
        return;
    }
    sub->joined = 1;
    sub->catching_up = 1;
    int64_t args[4] = {since, fresh, 0, -1};
    if (chat__relay_sync(r, s, ref, chat__join_catchup, args) == 0) return; /* a cold cluster room: read first */
    chat__join_catchup(s, ref, r, args);
}

void chat_leave(chat_session_t *s, json_t *ref, const char *room)
{
    if (!chat_valid_room(room)) {
        chat__error(s, ref, "bad_request", "Room ids are 1-64 of A-Z a-z 0-9 _ . : -");
        return;
    }
    chat_room_t *r = chat__room_get(room);
    chat_sub_t *sub = r ? chat__sub_find(s, r) : NULL;
    if (sub) chat__sub_remove(sub);
    chat__reply(s, ref, json_pack("{s:s, s:s}", "type", "left", "room", room));
}

void chat_part(chat_session_t *s, json_t *ref, const char *room)
{
    chat_room_t *r = chat__visible_room(s, ref, room);
    if (!r) return;
    uv_mutex_lock(&r->lock);
    chat_member_t *m = chat__member(r, s->user->name);
    char role = m ? m->role : 0;
    uv_mutex_unlock(&r->lock);
    if (!role) {
        chat__error(s, ref, "not_member", "You are not a member of this room.");
        return;
    }
    if (r->kind == 'd') {
        chat__error(s, ref, "forbidden", "A direct-message room cannot be left.");
        return;
    }
    if (role == 'o') {
        chat__error(s, ref, "forbidden", "The owner must hand ownership to another member first (role).");
        return;
    }
    chat__del_member(r, s->user);
    chat__user_subscribe(s->user, r, 0);
    json_t *ev = chat__member_event(r, s->user->name, "left");
    chat__room_event(r, ev, NULL);
    json_decref(ev);
    store_op_t op = {.kind = STORE_OP_MEMBER_DEL, .u.member = {.room = r->id, .user = s->user->name}};
    chat__write(s, ref, json_pack("{s:s, s:s}", "type", "parted", "room", r->id), &op, 1);
}

/* ---- send and dm ---- */

/* What a send carries besides its text: resolved attachments. */
typedef struct {
    chat_upload_t *ups[CHAT_ATTACH_MAX];
    size_t n;
    char *json; /* [{id, url, type, size}, ...] or NULL */
} chat_attach_t;

/* Mention-scanner callback: is this name a member of the room (its lock held)? */
static int chat__is_member_name(void *ctx, const char *name, size_t len)
{
    return map_get(&((chat_room_t *)ctx)->members, name, len) != NULL;
}

/* The message's meta object text, or NULL when it has nothing. */
static char *chat__meta(const chat_attach_t *at, char names[][CHAT_USER_MAX + 1], uint32_t nm)
{
    if (!(at && at->json) && !nm) return NULL;
    buf_t b = {0};
    int rc = buf_append(&b, "{", 1);
    if (at && at->json) rc |= buf_append(&b, LIT("\"attachments\":")) | buf_append(&b, at->json, strlen(at->json));
    if (nm) {
        rc |= buf_append(&b, at && at->json ? ",\"mentions\":[" : "\"mentions\":[", at && at->json ? 13 : 12);
        for (uint32_t i = 0; i < nm; i++)
            rc |= (i ? buf_append(&b, ",", 1) : 0) | json_esc_append(&b, names[i], strlen(names[i]));
        rc |= buf_append(&b, "]", 1);
    }
    rc |= buf_append(&b, "}", 2);
    if (rc) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static void chat__send_to(chat_session_t *s, json_t *ref, chat_room_t *r, const char *text, size_t len,
                          const char *cid, const chat_attach_t *at)
{
    chat_user_t *u = s->user;
    int64_t now = chat__now_ms();
    uv_mutex_lock(&u->lock);
    if (cid) {
        chat_idem_t *prev = map_get(&u->idem, cid, strlen(cid));
        if (prev && prev->ts + CHAT_IDEM_MS < now) {
            map_del(&u->idem, cid, strlen(cid));
            chat__idem_free(prev);
            prev = NULL;
        }
        if (prev) {
            /* The same cid again: the first ack, and no second message. */
            chat_idem_t copy = *prev;
            if (prev->pending) {
                uv_mutex_lock(&prev->room->lock);
                if (!prev->pending->committed) {
                    chat_waiter_t *w = calloc(1, sizeof *w);
                    if (w) {
                        w->s = chat__session_ref(s);
                        w->ref = chat__ref_hold(ref);
                        w->next = prev->pending->waiters;
                        prev->pending->waiters = w;
                    }
                    uv_mutex_unlock(&prev->room->lock);
                    uv_mutex_unlock(&u->lock);
                    return;
                }
                /* in a cluster the store gave the seq (or an earlier id) at the commit */
                copy.id = prev->pending->id, copy.seq = prev->pending->seq, copy.ts = prev->pending->ts;
                uv_mutex_unlock(&prev->room->lock);
            }
            uv_mutex_unlock(&u->lock);
            chat__reply_ack(s, ref, copy.room, copy.id, copy.seq, copy.ts);
            return;
        }
    }
    if (chat__relay_on() && !chat_cluster_up()) {
        uv_mutex_unlock(&u->lock);
        chat__error(s, ref, "unavailable", "The cluster's bus (Redis) is not reachable; try again.");
        return;
    }
    if (store_failing(chat__g.store)) { /* commits are being retried: fail fast, nothing is acked */
        uv_mutex_unlock(&u->lock);
        chat__error(s, ref, "unavailable", "The store is not available; try again.");
        return;
    }
    const char *busy = chat__overloaded(1);
    if (busy) {
        uv_mutex_unlock(&u->lock);
        chat__error(s, ref, "unavailable", busy);
        return;
    }
    int cl = chat__relay_on(); /* the store assigns the seq; delivery waits for the commit */
    uv_mutex_lock(&r->lock);
    if (!chat__member(r, u->name)) {
        uv_mutex_unlock(&r->lock);
        uv_mutex_unlock(&u->lock);
        chat__error(s, ref, "not_member", "Only members may send to this room; join it first.");
        return;
    }
    char names[CHAT_MENTIONS_MAX][CHAT_USER_MAX + 1];
    uint32_t nm = chat_text_mentions(text, len, u->name, chat__is_member_name, r, names, CHAT_MENTIONS_MAX);
    char *meta = chat__meta(at, names, nm);
    size_t nat = at ? at->n : 0;
    chat_msg_t *m = chat__msg_new(r, chat__next_id(now), cl ? 0 : r->seq + 1, now, u->name, text, len, cid, meta);
    free(meta);
    if (m && (nm || nat)) {
        m->xops = calloc(1 + nm + nat, sizeof *m->xops);
        m->mentions = nm ? calloc(nm, sizeof *m->mentions) : NULL;
        if (!m->xops || (nm && !m->mentions)) {
            chat__msg_unref(m);
            m = NULL;
        }
    }
    chat_waiter_t *w = calloc(1, sizeof *w);
    if (!m || !w) {
        uv_mutex_unlock(&r->lock);
        uv_mutex_unlock(&u->lock);
        free(w);
        chat__msg_unref(m);
        chat__error(s, ref, "internal", "Out of memory.");
        return;
    }
    if (!cl) r->seq++;
    size_t nops = 1;
    for (uint32_t i = 0; i < nm; i++) {
        chat_member_t *mb = chat__member(r, names[i]);
        if (!mb || !(m->mentions[m->nmentions] = strdup(names[i]))) continue;
        if (!cl) chat__member_mention(mb, m->seq); /* else when delivered, as on every node */
        m->xops[nops++] = (store_op_t){.kind = STORE_OP_MENTION,
                                       .u.mention = {.room = r->id, .user = m->mentions[m->nmentions], .seq = m->seq,
                                                     .msg_id = m->id}};
        m->nmentions++;
    }
    if (nat) {
        uv_mutex_lock(&chat__g.uploads_lock); /* a leaf lock */
        for (size_t i = 0; i < nat; i++) {
            chat__upload_link(at->ups[i]->id, at->ups[i]->type, at->ups[i]->size, at->ups[i]->created_at, NULL, r);
            m->xops[nops++] = (store_op_t){.kind = STORE_OP_UPLOAD_ROOM,
                                           .u.upload = {.id = at->ups[i]->id, .room = r->id}};
        }
        uv_mutex_unlock(&chat__g.uploads_lock);
    }
    if (m->xops) m->job.nops = nops;
    w->s = chat__session_ref(s);
    w->ref = chat__ref_hold(ref);
    m->waiters = w;
    if (cid) {
        chat_idem_t *e = malloc(sizeof *e);
        if (e) {
            *e = (chat_idem_t){.room = r, .id = m->id, .seq = m->seq, .ts = m->ts, .pending = chat__msg_ref(m)};
            if (map_put(&u->idem, cid, strlen(cid), e)) chat__idem_free(e);
        }
    }
    int arc = 0;
    if (cl && chat__g.cfg.durability == STORE_ASYNC)
        arc = chat__relay_assign_locked(m); /* Redis assigns the seq and publishes; written after */
    else
        chat__write_msg(m);
    uv_mutex_unlock(&r->lock);
    if (cid && ++u->idem_inserts % 1024 == 0) chat__idem_sweep(u, now);
    uv_mutex_unlock(&u->lock);
    if (arc) chat__relay_fail(m, "The cluster's bus (Redis) is not reachable; try again.");
    if (chat__g.cfg.durability == STORE_ASYNC && !cl) chat__ack_now(m);
    chat__msg_unref(m);
}

static int chat__check_text(chat_session_t *s, json_t *ref, size_t len, const char *cid)
{
    if (len == 0) {
        chat__error(s, ref, "bad_request", "A message needs some text.");
        return -1;
    }
    size_t max_text = __atomic_load_n(&chat__g.cfg.max_text, __ATOMIC_RELAXED);
    if (len > max_text) {
        char msg[96];
        snprintf(msg, sizeof msg, "Message texts are at most %zu bytes.", max_text);
        chat__error(s, ref, "too_large", msg);
        return -1;
    }
    if (cid && (strlen(cid) < 1 || strlen(cid) > 64)) {
        chat__error(s, ref, "bad_request", "A cid is 1-64 characters.");
        return -1;
    }
    return 0;
}

/* Resolves attachment ids: each must exist and be readable by the sender
 * (its uploader, or a reader of a room it was posted in). Replies with the
 * error and returns -1 otherwise. */
static int chat__attach(chat_session_t *s, json_t *ref, const char *const *ids, size_t n, chat_attach_t *at)
{
    at->n = 0;
    at->json = NULL;
    if (!n) return 0;
    if (n > CHAT_ATTACH_MAX) {
        chat__error(s, ref, "bad_request", "A message carries at most 10 attachments.");
        return -1;
    }
    buf_t b = {0};
    int rc = buf_append(&b, "[", 1);
    for (size_t i = 0; i < n; i++) {
        char type[16];
        int64_t size;
        int c = ids[i] ? chat_upload_check(s->user->name, ids[i], type, sizeof type, &size) : SORI_ENOTFOUND;
        if (c) {
            buf_free(&b);
            chat__error(s, ref, c == SORI_EPERM ? "forbidden" : "not_found",
                        c == SORI_EPERM ? "An attachment is not yours to post." : "There is no upload with this id.");
            return -1;
        }
        uv_mutex_lock(&chat__g.uploads_lock);
        at->ups[at->n++] = chat__upload_get(ids[i]); /* uploads live as long as the node */
        uv_mutex_unlock(&chat__g.uploads_lock);
        char num[64];
        snprintf(num, sizeof num, "\",\"type\":\"%s\",\"size\":%lld}", type, (long long)size);
        rc |= buf_append(&b, i ? ",{\"id\":\"" : "{\"id\":\"", i ? 8 : 7) | buf_append(&b, ids[i], strlen(ids[i])) |
              buf_append(&b, LIT("\",\"url\":\"/uploads/")) | buf_append(&b, ids[i], strlen(ids[i])) |
              buf_append(&b, num, strlen(num));
    }
    rc |= buf_append(&b, "]", 2);
    if (rc) {
        buf_free(&b);
        chat__error(s, ref, "internal", "Out of memory.");
        return -1;
    }
    at->json = b.data;
    return 0;
}

void chat_send(chat_session_t *s, json_t *ref, const char *room, const char *text, size_t len,
               const char *cid, const char *const *attachments, size_t nattach)
{
    if (chat__check_text(s, ref, len, cid)) return;
    chat_room_t *r = chat__find_room(s, ref, room);
    chat_attach_t at;
    if (!r || chat__attach(s, ref, attachments, nattach, &at)) return;
    chat__send_to(s, ref, r, text, len, cid, &at);
    free(at.json);
}

void chat_dm(chat_session_t *s, json_t *ref, const char *to, const char *text, size_t len,
             const char *cid)
{
    if (chat__check_text(s, ref, len, cid)) return;
    if (!auth_valid_user(to, strlen(to))) {
        chat__error(s, ref, "bad_request", "`to` must be a user name.");
        return;
    }
    if (!strcmp(to, s->user->name)) {
        chat__error(s, ref, "bad_request", "A direct message goes to another user.");
        return;
    }
    chat_user_t *peer = chat__user_get(to, 0);
    if (!peer || !peer->known) {
        chat__error(s, ref, "not_found", "There is no such user.");
        return;
    }
    const char *a = s->user->name, *b = to;
    if (strcmp(a, b) > 0) a = to, b = s->user->name;
    char id[CHAT_ROOM_MAX + 1];
    snprintf(id, sizeof id, "dm:%s:%s", a, b);
    int created = 0;
    chat_room_t *r = chat__room_get(id);
    if (!r) r = chat__room_create(id, 'd', "", chat__now_ms(), &created);
    if (!r) {
        chat__error(s, ref, "internal", "Out of memory.");
        return;
    }
    store_op_t ops[3];
    size_t n = 0;
    if (created)
        ops[n++] = (store_op_t){.kind = STORE_OP_ROOM,
                                .u.room = {.id = r->id, .kind = "dm", .title = "", .created_at = r->created_at}};
    chat_user_t *both[2] = {s->user, peer};
    int added[2];
    for (int i = 0; i < 2; i++) {
        added[i] = chat__add_member(r, both[i], 'm', &ops[n], 0);
        if (added[i] == 1) n++;
    }
    if (n) chat__write(NULL, NULL, NULL, ops, n);
    /* Every connection of both users receives the room without joining;
     * these tasks run before the message's fan-out (FIFO inboxes). */
    for (int i = 0; i < 2; i++)
        if (added[i] == 1) chat__user_subscribe(both[i], r, 1);
    chat__send_to(s, ref, r, text, len, cid, NULL);
}

/* ---- history ---- */

typedef struct {
    store_read_t rd;
    chat_session_t *s;
    json_t *ref;
    chat_room_t *room;
    store_range_t q; /* one bound and a limit: after ascending, or before newest first */
    json_t *msgs;
    int64_t latest; /* the room's committed seq when asked */
    chat_msg_t **ring; /* the ring's part of the page, ascending (refs): */
    uint32_t nring;    /* messages not written yet (async) are there only */
    int has_more;
    int failed;
} chat_hread_t;

/* A stored message as a message object (the fields of chat__msg_obj). */
static json_t *chat__row_obj(const store_msg_t *sm)
{
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)sm->id);
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s%, s:I}", "room", sm->room, "id", id, "seq",
                          (json_int_t)sm->seq, "from", sm->from, "text", sm->text, sm->text_len, "ts",
                          (json_int_t)sm->ts);
    if (o && sm->cid) json_object_set_new(o, "cid", json_string(sm->cid));
    chat__obj_add_meta(o, sm->meta);
    return o;
}

static int chat__hread_row(void *arg, const store_msg_t *sm)
{
    json_t *o = chat__row_obj(sm);
    return o ? json_array_append_new(((chat_hread_t *)arg)->msgs, o) : SORI_ENOMEM;
}

static void chat__hread_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    chat_hread_t *h = rd->arg;
    int got = b ? type->range(b, &h->q, chat__hread_row, h) : SORI_ECLOSED; /* !b: closing */
    if (got < 0) h->failed = 1;
    /* Then the ring's messages newer than the store's rows (written later,
     * with async durability): the page is the store's and the ring's. */
    size_t n = json_array_size(h->msgs);
    json_int_t top = n ? json_integer_value(json_object_get(json_array_get(h->msgs, n - 1), "seq"))
                       : h->q.newest_first ? 0 : h->q.after;
    for (uint32_t i = 0; i < h->nring && !h->failed; i++) {
        if (h->ring[i]->seq <= top) continue;
        if (!h->q.newest_first && json_array_size(h->msgs) >= (size_t)h->q.limit) break;
        json_array_append_new(h->msgs, chat__msg_obj(h->ring[i]));
    }
    while (json_array_size(h->msgs) > (size_t)h->q.limit) json_array_remove(h->msgs, 0); /* the newest limit */
    /* a full page may have more beyond it (a final empty page is possible,
     * a loop is not: the next page starts past this one) */
    n = json_array_size(h->msgs);
    json_int_t first = json_integer_value(json_object_get(json_array_get(h->msgs, 0), "seq"));
    json_int_t last = json_integer_value(json_object_get(json_array_get(h->msgs, n ? n - 1 : 0), "seq"));
    h->has_more = n == (size_t)h->q.limit && (h->q.newest_first ? first > 1 : last < h->latest);
    if (h->failed)
        chat__error(h->s, h->ref, "unavailable", "History is not available right now; try again.");
    else {
        /* the list is handed over to the worker ("o" steals it) */
        chat__reply(h->s, h->ref, json_pack("{s:s, s:s, s:o, s:b}", "type", "history", "room", h->room->id,
                                            "messages", h->msgs, "has_more", h->has_more));
        h->msgs = NULL;
    }
    json_decref(h->msgs);
    json_decref(h->ref);
    for (uint32_t i = 0; i < h->nring; i++) chat__msg_unref(h->ring[i]);
    free(h->ring);
    chat__session_unref(h->s);
    free(h);
}

static void chat__history_run(chat_session_t *s, json_t *ref, chat_room_t *r, const int64_t args[4]);

void chat_history(chat_session_t *s, json_t *ref, const char *room, int64_t before, int64_t after,
                  int limit)
{
    chat_room_t *r = chat__visible_room(s, ref, room);
    if (!r) return;
    int64_t args[4] = {before, after, limit, -1};
    if (chat__relay_sync(r, s, ref, chat__history_run, args) == 0) return; /* a cold cluster room: read first */
    chat__history_run(s, ref, r, args);
}

/* args: before, after, limit. Pages are counted in messages, not in seq
 * arithmetic: a room's seqs may have gaps (a cluster's async-mode crash
 * loses seqs Redis gave), and a page must never come back empty while
 * has_more says there is more. The ring holds every committed message from
 * its oldest on, so it answers when it reaches far enough back. */
static void chat__history_run(chat_session_t *s, json_t *ref, chat_room_t *r, const int64_t args[4])
{
    int64_t before = args[0], after = args[1];
    int limit = (int)args[2];
    json_t *msgs = NULL;
    int has_more = 0;
    uv_mutex_lock(&r->lock);
    int64_t S = r->committed;
    uint32_t n = r->ring_n;
#define RING_AT(i) (r->ring[(r->ring_head + (i)) % r->ring_cap])
    int64_t oldest = n ? RING_AT(0)->seq : S + 1;
    if (after >= 0 && after >= S) {
        msgs = json_array(); /* nothing after the latest */
    } else if (after >= 0 && after + 1 >= oldest) {
        msgs = json_array();
        uint32_t i = 0;
        while (i < n && RING_AT(i)->seq <= after) i++;
        for (int k = 0; i < n && k < limit; i++, k++) json_array_append_new(msgs, chat__msg_obj(RING_AT(i)));
        has_more = i < n;
    } else if (after < 0) {
        int64_t below = before >= 0 ? before : INT64_MAX;
        uint32_t end = n; /* ring[0..end) are below `below` */
        while (end > 0 && RING_AT(end - 1)->seq >= below) end--;
        if (end >= (uint32_t)limit || (n && oldest <= 1) || (!n && S == 0)) {
            msgs = json_array();
            uint32_t from = end > (uint32_t)limit ? end - (uint32_t)limit : 0;
            for (uint32_t i = from; i < end; i++) json_array_append_new(msgs, chat__msg_obj(RING_AT(i)));
            has_more = from > 0 || (end > 0 && RING_AT(from)->seq > 1);
        }
    }
    chat_hread_t *h = NULL;
    if (!msgs && (h = calloc(1, sizeof *h))) {
        /* the store answers; the ring's part of the same window joins it: the
         * oldest `limit` of the ring going forward, its newest `limit` below
         * `before` going back */
        uint32_t from = 0, to = n;
        if (after >= 0) {
            to = n < (uint32_t)limit ? n : (uint32_t)limit;
        } else {
            int64_t below = before >= 0 ? before : INT64_MAX;
            while (to > 0 && RING_AT(to - 1)->seq >= below) to--;
            from = to > (uint32_t)limit ? to - (uint32_t)limit : 0;
        }
        if (to > from && (h->ring = malloc((to - from) * sizeof *h->ring)))
            for (uint32_t i = from; i < to; i++) h->ring[h->nring++] = chat__msg_ref(RING_AT(i));
    }
#undef RING_AT
    uv_mutex_unlock(&r->lock);
    if (msgs) {
        chat__reply(s, ref, json_pack("{s:s, s:s, s:o, s:b}", "type", "history", "room", r->id, "messages", msgs,
                                      "has_more", has_more));
        return;
    }
    if (!h) {
        chat__error(s, ref, "internal", "Out of memory.");
        return;
    }
    h->s = chat__session_ref(s);
    h->ref = chat__ref_hold(ref);
    h->room = r;
    if (after >= 0)
        h->q = (store_range_t){.room = r->id, .after = after, .limit = limit};
    else
        h->q = (store_range_t){.room = r->id, .before = before > 0 ? before : 0, .limit = limit, .newest_first = 1};
    h->msgs = json_array();
    h->latest = S;
    h->rd.run = chat__hread_run;
    h->rd.arg = h;
    store_read(chat__g.store, &h->rd);
}

/* ---- rooms ---- */

typedef struct {
    json_t *list;
} chat_dir_t;

static void chat__dir_room(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl;
    chat_room_t *r = v;
    if (r->kind != 'p') return;
    chat_dir_t *d = arg;
    uv_mutex_lock(&r->lock);
    json_array_append_new(d->list, json_pack("{s:s, s:s, s:s, s:I, s:I}", "id", r->id, "kind", "public",
                                             "title", r->title, "seq", (json_int_t)r->committed, "members",
                                             (json_int_t)r->members.count));
    uv_mutex_unlock(&r->lock);
}

void chat_rooms(chat_session_t *s, json_t *ref, int public_directory)
{
    json_t *list = json_array();
    if (public_directory) {
        chat_dir_t d = {list};
        uv_rwlock_rdlock(&chat__g.rooms_lock);
        map_each(&chat__g.rooms, chat__dir_room, &d);
        uv_rwlock_rdunlock(&chat__g.rooms_lock);
    } else {
        chat_user_t *u = s->user;
        uv_mutex_lock(&u->lock);
        size_t n = u->rooms.count, i = 0;
        chat_room_t **rooms = malloc((n ? n : 1) * sizeof *rooms);
        for (size_t b = 0; rooms && b < u->rooms.nbuckets; b++)
            for (map_entry_t *e = u->rooms.buckets[b]; e; e = e->next) rooms[i++] = e->value;
        uv_mutex_unlock(&u->lock);
        for (size_t j = 0; rooms && j < i; j++) {
            chat_room_t *r = rooms[j];
            uv_mutex_lock(&r->lock);
            chat_member_t *m = chat__member(r, u->name);
            int64_t last_read = m ? m->last_read : 0;
            int64_t unread = r->committed > last_read ? r->committed - last_read : 0;
            json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "id", r->id, "kind",
                                  chat__kind_name(r->kind), "title", r->title, "seq", (json_int_t)r->committed,
                                  "last_read", (json_int_t)last_read, "unread", (json_int_t)unread, "mentions",
                                  (json_int_t)(m ? m->nment : 0));
            if (r->ring_n)
                json_object_set_new(o, "last_message",
                                    chat__msg_obj(r->ring[(r->ring_head + r->ring_n - 1) % r->ring_cap]));
            else
                json_object_set_new(o, "last_message", json_null());
            uv_mutex_unlock(&r->lock);
            json_array_append_new(list, o);
        }
        free(rooms);
    }
    chat__reply(s, ref, json_pack("{s:s, s:o}", "type", "rooms", "rooms", list));
}

/* ---- create, invite, kick, role, members ---- */

void chat_create(chat_session_t *s, json_t *ref, const char *room, const char *kind, const char *title)
{
    if (!chat_valid_room(room) || !strncmp(room, "dm:", 3) || strlen(room) > 64) {
        chat__error(s, ref, "bad_request", "Room ids are 1-64 of A-Z a-z 0-9 _ . : - and may not start with dm:");
        return;
    }
    char k = !strcmp(kind, "public") ? 'p' : !strcmp(kind, "private") ? 'r' : 0;
    if (!k) {
        chat__error(s, ref, "bad_request", "kind is public or private.");
        return;
    }
    if (title && strlen(title) > CHAT_TITLE_MAX) {
        chat__error(s, ref, "too_large", "Titles are at most 200 bytes.");
        return;
    }
    const char *busy = chat__overloaded(0);
    if (busy) {
        chat__error(s, ref, "unavailable", busy);
        return;
    }
    int max_rooms = CONFIG_GET(max_rooms_per_user);
    if (max_rooms) {
        /* Checked before the room exists (racing creates by one user on
         * several workers may pass together: one extra per worker). */
        uv_mutex_lock(&s->user->lock);
        size_t have = s->user->rooms.count;
        uv_mutex_unlock(&s->user->lock);
        if (have >= (size_t)max_rooms) {
            chat__add_error(s, ref, SORI_ELIMIT);
            return;
        }
    }
    int created;
    chat_room_t *r = chat__room_create(room, k, title, chat__now_ms(), &created);
    if (!r) {
        chat__error(s, ref, "internal", "Out of memory.");
        return;
    }
    if (!created) {
        chat__error(s, ref, "conflict", "A room with this id exists.");
        return;
    }
    store_op_t ops[2];
    ops[0] = (store_op_t){.kind = STORE_OP_ROOM,
                          .u.room = {.id = r->id, .kind = chat__kind_name(k), .title = r->title,
                                     .created_at = r->created_at}};
    if (chat__add_member(r, s->user, 'o', &ops[1], 0) != 1) {
        chat__error(s, ref, "internal", "Out of memory.");
        return;
    }
    chat__write(s, ref, json_pack("{s:s, s:s, s:s}", "type", "created", "room", r->id, "kind", chat__kind_name(k)),
                ops, 2);
}

/* The caller's role in r, 0 if not a member. */
static char chat__role_of(chat_room_t *r, const char *user)
{
    uv_mutex_lock(&r->lock);
    chat_member_t *m = chat__member(r, user);
    char role = m ? m->role : 0;
    uv_mutex_unlock(&r->lock);
    return role;
}

static chat_user_t *chat__target_user(chat_session_t *s, json_t *ref, const char *user)
{
    if (!auth_valid_user(user, strlen(user))) {
        chat__error(s, ref, "bad_request", "`user` must be a user name.");
        return NULL;
    }
    chat_user_t *u = chat__user_get(user, 0);
    if (!u || !u->known) {
        chat__error(s, ref, "not_found", "There is no such user.");
        return NULL;
    }
    return u;
}

void chat_invite(chat_session_t *s, json_t *ref, const char *room, const char *user)
{
    chat_room_t *r = chat__visible_room(s, ref, room);
    if (!r) return;
    char role = chat__role_of(r, s->user->name);
    if (!role) {
        chat__error(s, ref, "not_member", "Only members may invite.");
        return;
    }
    if (r->kind == 'd' || (r->kind == 'r' && role == 'm')) {
        chat__error(s, ref, "forbidden", "Only the owner or an admin may invite to this room.");
        return;
    }
    chat_user_t *u = chat__target_user(s, ref, user);
    if (!u) return;
    store_op_t op;
    int added = chat__add_member(r, u, 'm', &op, 1);
    if (added < 0) {
        chat__add_error(s, ref, added);
        return;
    }
    json_t *reply = json_pack("{s:s, s:s, s:s}", "type", "invited", "room", r->id, "user", u->name);
    if (added) {
        json_t *ev = chat__member_event(r, u->name, "invited");
        chat__room_event(r, ev, NULL);
        chat__user_event(u, ev);
        json_decref(ev);
        chat__write(s, ref, reply, &op, 1);
    } else {
        chat__reply(s, ref, reply);
    }
}

void chat_kick(chat_session_t *s, json_t *ref, const char *room, const char *user)
{
    chat_room_t *r = chat__visible_room(s, ref, room);
    if (!r) return;
    char role = chat__role_of(r, s->user->name);
    if (!role) {
        chat__error(s, ref, "not_member", "You are not a member of this room.");
        return;
    }
    chat_user_t *u = chat__target_user(s, ref, user);
    if (!u) return;
    if (u == s->user) {
        chat__error(s, ref, "bad_request", "To leave a room, use part.");
        return;
    }
    char target = chat__role_of(r, u->name);
    if (!target) {
        chat__error(s, ref, "not_member", "That user is not a member of this room.");
        return;
    }
    if (r->kind == 'd' || !(role == 'o' || (role == 'a' && target == 'm'))) {
        chat__error(s, ref, "forbidden", "The owner may kick anyone else; an admin may kick members.");
        return;
    }
    chat__del_member(r, u);
    chat__user_subscribe(u, r, 0);
    json_t *ev = chat__member_event(r, u->name, "kicked");
    chat__room_event(r, ev, NULL);
    chat__user_event(u, ev);
    json_decref(ev);
    store_op_t op = {.kind = STORE_OP_MEMBER_DEL, .u.member = {.room = r->id, .user = u->name}};
    chat__write(s, ref, json_pack("{s:s, s:s, s:s}", "type", "kicked", "room", r->id, "user", u->name), &op, 1);
}

void chat_role(chat_session_t *s, json_t *ref, const char *room, const char *user, const char *role)
{
    chat_room_t *r = chat__visible_room(s, ref, room);
    if (!r) return;
    char want = !strcmp(role, "owner") ? 'o' : !strcmp(role, "admin") ? 'a' : !strcmp(role, "member") ? 'm' : 0;
    if (!want) {
        chat__error(s, ref, "bad_request", "role is owner, admin or member.");
        return;
    }
    if (chat__role_of(r, s->user->name) != 'o' || r->kind == 'd') {
        chat__error(s, ref, "forbidden", "Only the owner may change roles.");
        return;
    }
    chat_user_t *u = chat__target_user(s, ref, user);
    if (!u) return;
    if (u == s->user) {
        chat__error(s, ref, "bad_request", "Hand ownership over by giving another member the owner role.");
        return;
    }
    store_op_t ops[2];
    size_t n = 0;
    uv_mutex_lock(&r->lock);
    chat_member_t *m = chat__member(r, u->name), *me = chat__member(r, s->user->name);
    if (!m) {
        uv_mutex_unlock(&r->lock);
        chat__error(s, ref, "not_member", "That user is not a member of this room.");
        return;
    }
    m->role = want;
    ops[n++] = (store_op_t){.kind = STORE_OP_MEMBER,
                            .u.member = {.room = r->id, .user = u->name, .role = chat__role_name(want)}};
    if (want == 'o' && me) {
        me->role = 'a';
        ops[n++] = (store_op_t){.kind = STORE_OP_MEMBER,
                                .u.member = {.room = r->id, .user = s->user->name, .role = "admin"}};
    }
    uv_mutex_unlock(&r->lock);
    chat__write(s, ref, json_pack("{s:s, s:s, s:s, s:s}", "type", "role_ok", "room", r->id, "user", u->name,
                                  "role", chat__role_name(want)),
                ops, n);
}

typedef struct {
    json_t *list;
} chat_mlist_t;

static void chat__collect_member(const char *k, size_t kl, void *v, void *arg)
{
    (void)kl;
    chat_mlist_t *l = arg;
    json_array_append_new(l->list, json_pack("{s:s, s:s}", "user", k, "role", chat__role_name(((chat_member_t *)v)->role)));
}

void chat_members(chat_session_t *s, json_t *ref, const char *room)
{
    chat_room_t *r = chat__visible_room(s, ref, room);
    if (!r) return;
    chat_mlist_t l = {json_array()};
    uv_mutex_lock(&r->lock);
    map_each(&r->members, chat__collect_member, &l);
    uv_mutex_unlock(&r->lock);
    /* online needs each user's lock: taken after the room lock is dropped */
    size_t i;
    json_t *o;
    json_array_foreach(l.list, i, o)
    {
        chat_user_t *u = chat__user_get(json_string_value(json_object_get(o, "user")), 0);
        int online = 0;
        if (u) {
            uv_mutex_lock(&u->lock);
            online = u->nsessions > 0;
            uv_mutex_unlock(&u->lock);
        }
        json_object_set_new(o, "online", json_boolean(online));
    }
    chat__reply(s, ref, json_pack("{s:s, s:s, s:o}", "type", "members", "room", r->id, "members", l.list));
}

/* ---- read, typing, presence ---- */

void chat_read(chat_session_t *s, json_t *ref, const char *room, int64_t seq)
{
    chat_room_t *r = chat__visible_room(s, ref, room);
    if (!r) return;
    uv_mutex_lock(&r->lock);
    chat_member_t *m = chat__member(r, s->user->name);
    if (!m) {
        uv_mutex_unlock(&r->lock);
        chat__error(s, ref, "not_member", "You are not a member of this room.");
        return;
    }
    /* a cluster node knows the latest seq only of the rooms it watches */
    if (seq < 0 || (seq > r->committed && !(chat__relay_on() && !r->synced))) {
        uv_mutex_unlock(&r->lock);
        chat__error(s, ref, "bad_request", "seq is beyond the room's latest message.");
        return;
    }
    int moved = seq > m->last_read;
    if (moved) m->last_read = seq;
    chat__member_read(m, m->last_read);
    int64_t stored = m->last_read;
    uv_mutex_unlock(&r->lock);
    if (moved) {
        store_op_t op = {.kind = STORE_OP_READ, .u.member = {.room = r->id, .user = s->user->name, .last_read = stored}};
        chat__write(NULL, NULL, NULL, &op, 1);
        json_t *ev = json_pack("{s:s, s:s, s:s, s:I}", "type", "receipt", "room", r->id, "user", s->user->name,
                               "seq", (json_int_t)stored);
        chat__room_event(r, ev, NULL);
        json_decref(ev);
    }
    chat__reply(s, ref, json_pack("{s:s, s:s, s:I}", "type", "read_ok", "room", r->id, "seq", (json_int_t)stored));
}

void chat_typing(chat_session_t *s, const char *room)
{
    if (!chat_valid_room(room)) return;
    chat_room_t *r = chat__room_get(room);
    if (!r || !chat__role_of(r, s->user->name)) return; /* typing has no reply, errors neither */
    int64_t now = chat__now_ms();
    chat_sub_t *sub = chat__sub_find(s, r);
    int64_t *last = sub ? &sub->typing_ms : &s->typing_ms;
    if (now - *last < CHAT_TYPING_MS) return; /* at most one per second per room */
    *last = now;
    json_t *ev = json_pack("{s:s, s:s, s:s}", "type", "typing", "room", r->id, "user", s->user->name);
    chat__room_event(r, ev, s);
    json_decref(ev);
}

void chat_presence(chat_session_t *s, json_t *ref, const char *const *users, size_t n)
{
    json_t *list = json_array();
    /* in a cluster, who is not online here is asked about */
    const char **ask = chat_cluster_on() ? calloc(n ? n : 1, sizeof *ask) : NULL;
    chat_user_t **ask_u = ask ? calloc(n ? n : 1, sizeof *ask_u) : NULL;
    size_t *ask_i = ask ? calloc(n ? n : 1, sizeof *ask_i) : NULL;
    size_t nask = 0;
    for (size_t i = 0; i < n; i++) {
        if (!auth_valid_user(users[i], strlen(users[i]))) continue;
        /* Watching a user never seen makes their (in-memory) record, so the
         * event comes when they first connect. */
        chat_user_t *u = chat__user_get(users[i], !(s->flags & CHAT_SESSION_TRANSIENT));
        int online = 0;
        int64_t last_seen = 0;
        if (u) {
            uv_mutex_lock(&u->lock);
            online = u->nsessions > 0;
            last_seen = u->last_seen;
            int watching = 0;
            for (uint32_t j = 0; j < s->nwatching; j++) watching |= s->watching[j] == u;
            if (!watching && s->nwatching < CHAT_WATCH_MAX && !(s->flags & CHAT_SESSION_TRANSIENT) &&
                chat__arr_add((void ***)&s->watching, &s->nwatching, &s->capwatching, u) == 0) {
                /* the watcher's reference is dropped in chat_session_close */
                if (chat__arr_add((void ***)&u->watchers, &u->nwatchers, &u->capwatchers, s) == 0)
                    chat__session_ref(s);
                else
                    s->nwatching--;
            }
            uv_mutex_unlock(&u->lock);
        }
        if (!online && ask && ask_u && ask_i) {
            ask[nask] = users[i];
            ask_u[nask] = u;
            ask_i[nask++] = json_array_size(list);
        }
        json_t *o = json_pack("{s:s, s:b}", "user", users[i], "online", online);
        json_object_set_new(o, "last_seen", online || !last_seen ? json_null() : json_integer(last_seen));
        json_array_append_new(list, o);
    }
    json_t *reply = json_pack("{s:s, s:o}", "type", "presence", "users", list);
    if (!(nask && ask_u && ask_i && chat__cluster_presence_reply(s, ref, reply, ask, ask_u, ask_i, nask) == 0))
        chat__reply(s, ref, reply);
    free(ask);
    free(ask_u);
    free(ask_i);
}

/* ---- search ---- */

typedef struct {
    store_read_t rd;
    chat_session_t *s;
    json_t *ref;
    store_search_t q;
    char *match, *rooms_json, *room;
    json_t *results;
} chat_sread_t;

static int chat__sread_row(void *arg, const store_msg_t *sm)
{
    json_t *o = chat__row_obj(sm);
    return o ? json_array_append_new(((chat_sread_t *)arg)->results, o) : SORI_ENOMEM;
}

static void chat__sread_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    chat_sread_t *h = rd->arg;
    if (!b || !type->search || type->search(b, &h->q, chat__sread_row, h) < 0) {
        chat__error(h->s, h->ref, "unavailable", "Search is not available right now; try again.");
    } else {
        chat__reply(h->s, h->ref, json_pack("{s:s, s:o}", "type", "search", "results", h->results));
        h->results = NULL;
    }
    json_decref(h->results);
    json_decref(h->ref);
    chat__session_unref(h->s);
    free(h->match);
    free(h->rooms_json);
    free(h->room);
    free(h);
}

void chat_search(chat_session_t *s, json_t *ref, const char *q, const char *room, int limit)
{
    if (!q || strlen(q) > 512) {
        chat__error(s, ref, "bad_request", "q is the text to search for (at most 512 bytes).");
        return;
    }
    chat_room_t *only = NULL;
    if (room && !(only = chat__visible_room(s, ref, room))) return;
    chat_sread_t *h = calloc(1, sizeof *h);
    if (!h) {
        chat__error(s, ref, "internal", "Out of memory.");
        return;
    }
    if (!(h->match = chat_text_fts_match(q))) {
        free(h);
        chat__error(s, ref, "bad_request", "q needs at least one word.");
        return;
    }
    /* The caller's rooms (private and dm ones matter; public ones are
     * readable by everyone anyway). */
    json_t *rooms = json_array();
    chat_user_t *u = s->user;
    uv_mutex_lock(&u->lock);
    for (size_t i = 0; i < u->rooms.nbuckets; i++)
        for (map_entry_t *e = u->rooms.buckets[i]; e; e = e->next)
            if (((chat_room_t *)e->value)->kind != 'p') json_array_append_new(rooms, json_string(e->key));
    uv_mutex_unlock(&u->lock);
    h->rooms_json = json_dumps(rooms, JSON_COMPACT);
    json_decref(rooms);
    h->room = only ? strdup(only->id) : NULL;
    h->s = chat__session_ref(s);
    h->ref = chat__ref_hold(ref);
    h->results = json_array();
    h->q = (store_search_t){.match = h->match, .rooms_json = h->rooms_json, .room = h->room, .limit = limit};
    h->rd.run = chat__sread_run;
    h->rd.arg = h;
    store_read(chat__g.store, &h->rd);
}

/*
 * chat_internal.h: the chat core's tables, shared by chat_core.c and
 * chat_cmd.c only.
 *
 * Locks, always taken in this order, never two of one kind at once:
 *   chat.rooms_lock / chat.users_lock (rwlocks: the id -> object tables)
 *   -> user->lock -> room->lock -> (a worker's inbox lock, inside net).
 * Rooms and users are never freed while the node runs, so pointers to them
 * (and to their id and name strings) stay valid; store ops borrow them.
 * Per-worker subscriber lists (room->subs[w]) are touched only by worker w.
 * JSON values are never shared between threads: a ref kept for a later
 * reply is a deep copy, a reply built on another thread is handed over.
 */
#ifndef SORI_CHAT_INTERNAL_H
#define SORI_CHAT_INTERNAL_H

#include <stdatomic.h>
#include <uv.h>

#include "chat/chat.h"
#include "net/net.h"
#include "util/map.h"

#define CHAT_ROOM_MAX 72  /* "dm:" + 32 + ":" + 32 = 68 (rounded up), and 64 for other rooms */
#define CHAT_USER_MAX 32
#define CHAT_IDEM_MS (24LL * 3600 * 1000)
#define LIT(s) (s), sizeof(s) - 1 /* a string literal and its length */

typedef struct chat_room chat_room_t;
typedef struct chat_user chat_user_t;

typedef struct chat_sub {
    chat_session_t *s;
    chat_room_t *room;
    int64_t last_seq;  /* the newest seq delivered to s */
    int64_t typing_ms; /* when s last sent a typing event to the room */
    uint32_t idx;      /* position in room->subs[w] */
    uint8_t catching_up;
    uint8_t joined;    /* by `join` (else only by being in a dm room) */
    uint8_t paused;    /* catch-up waits for the connection's output to drain */
    uint8_t announce;  /* reply `joined` when the catch-up ends */
    json_t *ref;       /* the join's ref while paused */
} chat_sub_t;

typedef struct {
    chat_sub_t **v;
    uint32_t n, cap;
} chat_subs_t;

typedef struct {
    char role;         /* 'o' owner, 'a' admin, 'm' member */
    uint32_t nment;    /* unread mentions of this member: their seqs, ascending */
    int64_t last_read;
    int64_t added_ms;  /* when this node learned of the membership (cluster resync) */
    int64_t *ment;     /* at most CHAT_MENTIONS_KEPT (the oldest are dropped) */
} chat_member_t;

#define CHAT_MENTIONS_KEPT 999

/* An upload (chat_account.c): who uploaded it, where it was posted. */
typedef struct {
    char id[65];
    char type[16];
    int64_t size;
    int64_t created_at;
    chat_user_t **owners;
    uint32_t nowners, capowners;
    chat_room_t **rooms;
    uint32_t nrooms, caprooms;
} chat_upload_t;

struct chat_room {
    char id[CHAT_ROOM_MAX + 1];
    char kind; /* 'p' public, 'r' private, 'd' dm */
    char *title;
    int64_t created_at;
    uv_mutex_t lock; /* everything below but subs/nsubs */
    int64_t seq;        /* last assigned */
    int64_t committed;  /* last committed and published, in order */
    map_t members;      /* user name -> chat_member_t* */
    chat_msg_t **ring;  /* the newest committed messages, ring_n of them */
    uint32_t ring_cap, ring_n, ring_head;
    chat_subs_t *subs;  /* [workers] */
    atomic_int *nsubs;  /* [workers] */
    /* cluster (chat_relay.c), room lock: */
    uint32_t nlocal;    /* subscriptions on this node: the bus channel is subscribed while > 0 */
    chat_msg_t **held;  /* committed messages after a gap, ascending seq */
    uint32_t nheld, capheld;
    int64_t gap_ms;     /* when the oldest held message arrived (0: no gap) */
    uint8_t fill;       /* a read of the store for this room is queued */
    uint8_t synced;     /* up to date (watched, read since, bus up): joins and history may use the ring */
    uint8_t warm;       /* watched and read since (kept while the bus is down: fills then go on in order) */
    uint8_t initing;    /* async: the room's seq counter is being set up; sends wait in initq, in order */
    chat_msg_t **initq; /* by issue */
    uint32_t ninitq, capinitq;
    uint64_t issued;    /* async: sends handed to Redis or queued, in order (m->issue) */
};

struct chat_user {
    char name[CHAT_USER_MAX + 1];
    uv_mutex_t lock;
    chat_session_t **sessions; /* live sessions on every worker */
    uint32_t nsessions, capsessions;
    chat_session_t **watchers; /* sessions subscribed to our presence */
    uint32_t nwatchers, capwatchers;
    int64_t last_seen;
    int64_t created_at;
    _Atomic uint8_t known; /* has connected or is stored; else only watched by presence (set once, any thread) */
    uint16_t *rnodes; /* cluster: the other nodes this user is online on (u->lock; chat_cluster.c) */
    uint16_t nrnodes, caprnodes;
    map_t rooms; /* room id -> chat_room_t* we are a member of */
    map_t idem;  /* cid -> chat_idem_t*, 24 h; swept every 1024 inserts */
    char *pw_hash; /* an account's argon2id string, or NULL */
    uint32_t idem_inserts;
};

/* An idempotency key's first ack; the message itself only until it is
 * committed (resends wait on it), so old texts are not kept for 24 h. */
typedef struct {
    chat_room_t *room;
    uint64_t id;
    int64_t seq, ts;
    chat_msg_t *pending;
} chat_idem_t;

struct chat_session {
    atomic_uint refs;
    chat_user_t *user;
    int worker;
    int flags;
    int closed; /* worker-thread only */
    const chat_sink_t *sink;
    void *sink_data;
    chat_sub_t **subs; /* this session's subscriptions (worker-thread only) */
    uint32_t nsubs, capsubs;
    chat_user_t **watching; /* presence subscriptions (worker-thread only) */
    uint32_t nwatching, capwatching;
    int64_t typing_ms;
};

typedef struct chat_waiter {
    struct chat_waiter *next;
    chat_session_t *s;
    json_t *ref;
} chat_waiter_t;

struct chat_msg {
    atomic_uint refs;
    uint8_t is_event; /* 1: typing/receipt/member/presence: no seq, not stored */
    uint64_t id;
    int64_t seq, ts;
    chat_room_t *room;
    char *from, *text, *cid;
    size_t text_len;
    char *json;       /* the event as sent */
    size_t json_len;
    _Atomic(void *) cache[2];
    char *meta;            /* {"attachments":[...],"mentions":[...]} as stored, or NULL */
    char **mentions;       /* member names mentioned as @name (in meta's block) */
    uint32_t nmentions;
    /* cluster: what the store assigned or found (an earlier message of
     * the same sender and cid, then dup is set) */
    int64_t a_seq, a_ts;
    uint64_t a_id;
    uint8_t dup;
    uint64_t issue; /* async cluster: the send's place in its room's order (room lock) */
    /* until committed (guarded by room->lock) */
    int committed;
    chat_waiter_t *waiters; /* the sender and idempotent resends awaiting the ack */
    store_job_t job;
    store_op_t op;
    store_op_t *xops; /* op and the mention / attachment rows, when there are any */
};

typedef struct {
    chat_config_t cfg;
    store_t *store;
    uv_rwlock_t rooms_lock;
    map_t rooms; /* id -> chat_room_t* */
    uv_rwlock_t users_lock;
    map_t users; /* name -> chat_user_t* */
    uv_mutex_t id_lock;
    int64_t id_ms;
    uint32_t id_ctr;
    uv_mutex_t uploads_lock; /* a leaf lock */
    map_t uploads;           /* id -> chat_upload_t* */
} chat_t;

extern chat_t chat__g;

int64_t chat__now_ms(void);
uint64_t chat__next_id(int64_t now_ms);
chat_room_t *chat__room_get(const char *id);
/* Creates the room if absent (rooms_lock held for writing inside); *created
 * tells which. NULL on allocation failure. */
chat_room_t *chat__room_create(const char *id, char kind, const char *title, int64_t created_at,
                               int *created);
/* The user named name, created when create is set; NULL when absent (not
 * created), on allocation failure, or when name is over CHAT_USER_MAX bytes. */
chat_user_t *chat__user_get(const char *name, int create);
/* fn for every user, under the users table's read lock (fn takes no table lock). */
void chat__users_foreach(void (*fn)(const char *k, size_t kl, void *v, void *arg), void *arg);
/* Presence events to the user's watchers (any thread; takes u->lock). */
void chat__presence_changed(chat_user_t *u, int online, int64_t last_seen);
/* Cluster (chat_cluster.c): a user's first/last local session; no-op on one node. */
void chat__cluster_presence(const char *user, int online);
/* Cluster: answers a presence command after asking the bus about names[0..n)
 * (users[i] their records or NULL; index[i] their position in reply's
 * users); 0 when it took reply over, -1 when the caller replies itself. */
int chat__cluster_presence_reply(chat_session_t *s, json_t *ref, json_t *reply, const char *const *names,
                                 chat_user_t **users, const size_t *index, size_t n);
/* Cluster room traffic (chat_relay.c). chat__relay_on is 1 on a node with
 * --redis. Messages: the store assigns seq (sync durability only), the
 * origin publishes the committed message on the room's channel, and every
 * node, the origin included, delivers through chat__relay_deliver in seq
 * order, filling gaps from the store. */
int chat__relay_on(void);
/* Sync durability: a message write done (store thread): status 0 acks its
 * waiters, publishes it and delivers it in order; else they get an error. */
void chat__relay_committed(chat_msg_t *m, int status);
/* Async durability: asks Redis for m's seq (one Lua script assigns it and
 * publishes m); then acks, delivers and queues the store write. m's room
 * lock held (the user lock may be too); never blocks, the answer comes on
 * the bus thread. Sends of one room reach Redis in the order of the calls.
 * 0, or < 0 when nothing was queued (call chat__relay_fail unlocked). */
int chat__relay_assign_locked(chat_msg_t *m);
/* After chat__relay_assign_locked failed (no lock held): m's waiters get
 * `unavailable`, its idempotency key is forgotten. */
void chat__relay_fail(chat_msg_t *m, const char *msg);
/* A message from the store or the bus, committed (m->committed set), to
 * local subscribers in seq order (room lock taken inside; consumes no ref). */
void chat__relay_deliver(chat_msg_t *m);
/* A room event (already fanned out here) to the other nodes. */
void chat__relay_room_event(chat_room_t *r, const chat_msg_t *ev);
/* A user event (already sent to local sessions) to the other nodes. */
void chat__relay_user_event(const chat_user_t *u, const chat_msg_t *ev);
/* State ops committed here, to the other nodes (any thread). */
void chat__relay_state(const store_op_t *ops, size_t n);
/* The same; done(arg, status) runs once on the bus thread when Redis has
 * taken the notice (it is then on its way to every node). 0, or < 0 when
 * nothing was published (done is not called). */
int chat__relay_state_then(const store_op_t *ops, size_t n, void (*done)(void *arg, int status), void *arg);
/* The room's local subscription count moved 0 -> 1 (on = 1) or 1 -> 0
 * (room lock held by the caller: only takes the bus's own lock). */
void chat__relay_watch_locked(chat_room_t *r, int on);
/* A cold room (not watched since its last sync) is read from the store
 * (its newest ring) before a join's catch-up or a history runs on it:
 * returns 0 when it took over (cont(s, ref, r, args) then runs on s's
 * worker unless s closed), -1 when the caller goes on now (one node, a
 * synced room, no memory). args[3] is set for cont: the room's latest seq
 * in the store as the read saw it (the point a fresh join starts from). */
typedef void (*chat_relay_cont_fn)(chat_session_t *s, json_t *ref, chat_room_t *r, const int64_t args[4]);
int chat__relay_sync(chat_room_t *r, chat_session_t *s, json_t *ref, chat_relay_cont_fn cont, const int64_t args[4]);
/* The relay's timer thread (chat_cluster.c starts and stops it). */
int chat__relay_start(void);
void chat__relay_stop(void);
/* Bus callbacks routed by chat_cluster.c (bus thread). */
void chat__relay_on_message(int origin, const char *channel, const char *data, size_t len);
void chat__relay_on_up(void);
void chat__relay_on_down(void);
/* The bus for a call (chat_cluster.c): NULL on one node or once stopping.
 * Always pair with chat__cluster_bus_release (a read lock that
 * chat_cluster_stop takes to write, so the bus is not closed under a call). */
struct bus;
struct bus *chat__cluster_bus_hold(void);
void chat__cluster_bus_release(void);
void chat__rooms_foreach(void (*fn)(const char *k, size_t kl, void *v, void *arg), void *arg);
const char *chat__kind_name(char kind);
const char *chat__role_name(char role);

chat_msg_t *chat__msg_new(chat_room_t *room, uint64_t id, int64_t seq, int64_t ts, const char *from,
                          const char *text, size_t len, const char *cid, const char *meta);
chat_msg_t *chat__event_new(json_t *obj); /* obj borrowed */
/* An event from its encoded text (copied). */
chat_msg_t *chat__event_text_new(const char *json, size_t len);
/* Re-encodes m->json after its id, seq or ts changed (before any delivery);
 * 0 or SORI_ENOMEM (the old text kept). */
int chat__msg_encode(chat_msg_t *m);
chat_msg_t *chat__msg_ref(chat_msg_t *m);
void chat__msg_unref(chat_msg_t *m);
/* {room, id, seq, from, text, ts, cid?} without "type" (new reference). */
json_t *chat__msg_obj(const chat_msg_t *m);
/* Merges a message's meta fields (attachments, mentions) into o. */
void chat__obj_add_meta(json_t *o, const char *meta);
void chat__ring_push(chat_room_t *r, chat_msg_t *m); /* room lock held */
/* After m is committed (no lock held): push notifications to the offline
 * users it concerns: the other member of a dm room, the mentioned members
 * (chat_push.c). Never blocks. */
void chat__push_msg(chat_msg_t *m);


/* A private copy of a command's ref, to keep past the command: jansson's
 * refcounts are not safe to share between threads, so a json_t never is. */
static inline json_t *chat__ref_hold(json_t *ref) { return ref ? json_deep_copy(ref) : NULL; }

chat_session_t *chat__session_ref(chat_session_t *s);
void chat__session_unref(chat_session_t *s);

/* Replies on the session's worker: now if we are there, else posted. */
void chat__reply(chat_session_t *s, json_t *ref, json_t *obj);   /* obj consumed */
void chat__error(chat_session_t *s, json_t *ref, const char *code, const char *msg);
/* A reply already encoded (text is malloc'd and consumed). */
void chat__reply_text(chat_session_t *s, json_t *ref, char *text, size_t len);
/* The ack of a send (PROTOCOL.md §3), encoded by hand. */
void chat__reply_ack(chat_session_t *s, json_t *ref, const chat_room_t *r, uint64_t id, int64_t seq, int64_t ts);
/* Answers and frees a waiter list: m's ack, or `unavailable` with error
 * when error is set (no lock held). */
void chat__waiters_reply(chat_msg_t *m, chat_waiter_t *w, const char *error);
/* Publishes m to every worker with subscribers (room lock held). */
void chat__publish(chat_room_t *r, chat_msg_t *m);
/* Publishes an event to the room, except session `except` (room lock not held). */
void chat__room_event(chat_room_t *r, json_t *obj, chat_session_t *except);
/* Sends an event to every live session of user (posted to their workers). */
void chat__user_event(chat_user_t *u, json_t *obj);
/* The same for an event from another node: this node's sessions only. */
void chat__user_event_local(chat_user_t *u, chat_msg_t *ev);
/* Subscribes s to r on s's worker (worker-thread only); returns the sub. */
chat_sub_t *chat__sub_add(chat_session_t *s, chat_room_t *r);
chat_sub_t *chat__sub_find(chat_session_t *s, chat_room_t *r);
void chat__sub_remove(chat_sub_t *sub);
/* Asks user's live sessions to subscribe to (1) or drop (0) room r. */
void chat__user_subscribe(chat_user_t *u, chat_room_t *r, int subscribe);
/* Queues ops; in sync mode the reply goes out after the commit, in async
 * mode now. ops borrow strings from rooms, users and static literals. */
void chat__write(chat_session_t *s, json_t *ref, json_t *reply, const store_op_t *ops, size_t n);
/* Writes one message: job embedded in m (room lock held, seq assigned). */
void chat__write_msg(chat_msg_t *m);
/* Appends x to a growable pointer array (0 or SORI_ENOMEM); removes x
 * (order not kept). */
int chat__arr_add(void ***v, uint32_t *n, uint32_t *cap, void *x);
void chat__arr_del(void **v, uint32_t *n, void *x);
void chat__idem_free(chat_idem_t *e);
/* Drops expired keys and committed messages from u->idem (user lock held). */
void chat__idem_sweep(chat_user_t *u, int64_t now);
/* Delivers what sub missed (ring, else the store page by page), then
 * replies `joined` when announce is set (worker thread). */
void chat__catchup(chat_sub_t *sub, json_t *ref, int announce);

/* Uploads (chat_account.c), uploads_lock held for both. */
chat_upload_t *chat__upload_get(const char *id);
int chat__upload_link(const char *id, const char *type, int64_t size, int64_t created_at, chat_user_t *owner,
                      chat_room_t *room);
void chat__upload_free(chat_upload_t *up);
/* Adds user to r's members with role (user lock then room lock inside);
 * op (may be NULL) gets the store op. 1 if added, 0 if already a member,
 * < 0 on failure (chat_cmd.c). With limits = 1, SORI_ELIMIT when the user
 * has --max-rooms-per-user memberships, SORI_E2BIG when the room has
 * --max-members-per-room members (checked under both locks). */
int chat__add_member(chat_room_t *r, chat_user_t *u, char role, store_op_t *op, int limits);
/* Removes user from r's members (user lock then room lock inside). */
void chat__del_member(chat_room_t *r, chat_user_t *u);
/* A stored message as a committed chat_msg_t of r, appended to (*v)[*n]
 * (growing it); 0 or SORI_ENOMEM. For store range callbacks. */
int chat__msgs_add_row(chat_msg_t ***v, int *n, int *cap, chat_room_t *r, const store_msg_t *sm);
/* Adds a mention seq to a member (room lock held). */
void chat__member_mention(chat_member_t *m, int64_t seq);
/* Drops a member's mentions up to seq (room lock held). */
void chat__member_read(chat_member_t *m, int64_t seq);
void chat__member_free(chat_member_t *m);

#endif

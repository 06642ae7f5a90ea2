/*
 * chat.h: the command layer. Every front end (JSON over WebSocket, STOMP,
 * REST) decodes its input into these calls and encodes what comes back
 * through its chat_sink_t; none of them holds chat logic.
 *
 * Threads: a session belongs to one worker; its commands are called on that
 * worker's thread and its sink is only ever called there too (results that
 * complete elsewhere, e.g. after a store commit, are posted back). Replies
 * and events are JSON objects shaped as PROTOCOL.md §3-§4 says, with "type";
 * the sink adds "ref" when the command had one. Message events are
 * chat_msg_t: encoded once, shared by every recipient.
 */
#ifndef SORI_CHAT_CHAT_H
#define SORI_CHAT_CHAT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "net/net.h"
#include "store/store.h"

typedef struct chat_session chat_session_t;
typedef struct chat_msg chat_msg_t;

typedef struct chat_sink {
    /* A message of a room the session receives (seq order, no duplicates). */
    void (*message)(chat_session_t *s, chat_msg_t *m);
    /* A reply (ref as given to the command, or NULL) or an event (ref NULL).
     * obj is borrowed. */
    void (*send)(chat_session_t *s, json_t *ref, json_t *obj);
    /* Optional: a reply already encoded as one JSON object (hot paths such
     * as acks); the sink adds "ref". Without it, chat parses the text and
     * calls send. */
    void (*send_text)(chat_session_t *s, json_t *ref, const char *json, size_t len);
    /* An error reply: code from PROTOCOL.md §4, a sentence for a person. */
    void (*error)(chat_session_t *s, json_t *ref, const char *code, const char *message);
    /* Optional flow control for backlogs (catch-up): bytes queued and not
     * yet written, and a request to call chat_session_drained once they
     * are. Without them a backlog is sent at once. */
    uint64_t (*unsent)(chat_session_t *s);
    void (*notify_drain)(chat_session_t *s);
} chat_sink_t;

typedef struct {
    int durability;      /* STORE_SYNC or STORE_ASYNC */
    int flush_ms;        /* async: the longest a write waits */
    int ring;            /* recent messages kept per room */
    size_t max_text;     /* bytes of a message text */
    int max_rooms_per_conn;
    uint64_t catchup_budget; /* bytes of backlog queued per connection before pausing */
    int node_id;
    int workers;
} chat_config_t;

/* Opens the store, loads rooms, members, users, recent messages and
 * idempotency keys. Call once before serving. 0 or an error with err. */
int chat_init(const chat_config_t *cfg, const store_type_t *type, const char *url, char *err,
              size_t errlen);
/* SIGHUP reload (main thread): new per-connection limits, stored atomically
 * and read atomically by the command layer (the next join, send, catch-up). */
void chat_set_limits(size_t max_text, int max_rooms_per_conn, uint64_t catchup_budget);
/* After the workers stopped: commits what is queued and frees everything. */
void chat_shutdown(void);
/* Rooms and users the node knows (for /metrics). Any thread. */
void chat_counts(uint64_t *rooms, uint64_t *users);
/* 1 while the store cannot commit (health checks say 503). */
int chat_unhealthy(void);
/* Store writes queued and not committed (the /metrics gauge). Any thread. */
uint64_t chat_store_queue(void);
/* Live (WebSocket) sessions of user on this node. Any thread. */
int chat_user_conns(const char *user);
/* --max-conns-per-user: 0 if user may open one more live session, else
 * SORI_ELIMIT with a sentence for the client in msg (counted in
 * /metrics). Per node; racing handshakes on several workers may pass
 * together (at most one extra per worker). Any thread; never calls back. */
int chat_user_conns_check(const char *user, char *msg, size_t cap);

/* ---- sessions ---- */

enum { CHAT_SESSION_LIVE = 0, CHAT_SESSION_TRANSIENT = 1 };

/* A session for user on worker `worker` (the calling thread's). LIVE
 * sessions count for presence and receive the user's direct messages;
 * TRANSIENT ones (a REST request) do not. Never calls back. */
chat_session_t *chat_session_open(const char *user, int worker, int flags, const chat_sink_t *sink,
                                  void *sink_data);
/* Ends the session: leaves every room it joined, updates presence. The
 * sink is never called again. Call on the session's worker. */
void chat_session_close(chat_session_t *s);
/* The session's output drained (after sink->notify_drain): paused
 * catch-ups continue. May call the sink. */
void chat_session_drained(chat_session_t *s);
void *chat_session_data(const chat_session_t *s);
const char *chat_session_user(const chat_session_t *s);

/* ---- messages ---- */

/* The message event as JSON text ({"type":"message",...}), encoded once. */
const char *chat_msg_json(const chat_msg_t *m, size_t *len);
uint64_t chat_msg_seq(const chat_msg_t *m);
uint64_t chat_msg_id(const chat_msg_t *m);
int64_t chat_msg_ts(const chat_msg_t *m);
const char *chat_msg_from(const chat_msg_t *m);
/* The room of a message or room event; NULL for events addressed to a user
 * (presence, member notices). */
const char *chat_msg_room(const chat_msg_t *m);
/* 1 for typing/receipt/member/presence events (no id, seq or from). */
int chat_msg_is_event(const chat_msg_t *m);
/* A per-protocol encoding cached on the message (slot 0: JSON frame,
 * slot 1: STOMP), built by the first recipient that needs it. get returns
 * NULL if absent; set returns the winner (yours or an earlier one, in which
 * case yours was freed with the slot's destructor). */
void *chat_msg_cache_get(chat_msg_t *m, int slot);
void *chat_msg_cache_set(chat_msg_t *m, int slot, void *value);
void chat_msg_cache_register(int slot, void (*destroy)(void *value));

/* ---- accounts and uploads (REST, PROTOCOL.md §7) ---- */

/* A completion on worker w: status 0 once committed, < 0 if not. */
typedef void (*chat_done_fn)(net_worker_t *w, void *arg, int status);

/* Claims name for an account with hash (an argon2id string). SORI_EEXIST if
 * the node knows the name already (an account, or a user who connected or
 * is stored); else 0 and done runs on w after the commit. Any thread. */
int chat_account_create(const char *name, const char *hash, net_worker_t *w, chat_done_fn done, void *arg);
/* Copies name's password hash into out: 0, or SORI_ENOTFOUND (no account). */
int chat_account_hash(const char *name, char *out, size_t cap);
/* Records an upload by user (content-addressed id, a MIME type); done runs
 * on w after the commit. Any thread. */
int chat_upload_add(const char *id, const char *type, int64_t size, const char *user, net_worker_t *w,
                    chat_done_fn done, void *arg);
/* 0 and type/size if user may read upload id (its uploader, or a reader of a
 * room it was posted in); SORI_ENOTFOUND; SORI_EPERM. Any thread. */
int chat_upload_check(const char *user, const char *id, char *type, size_t typecap, int64_t *size);

/* ---- commands (PROTOCOL.md §3); all on the session's worker ---- */

/* {type:"me", user, created_at, account, rooms} (REST GET /api/me). */
void chat_me(chat_session_t *s, json_t *ref);
/* q: words (each must appear); room: NULL for every readable room. */
void chat_search(chat_session_t *s, json_t *ref, const char *q, const char *room, int limit);

void chat_join(chat_session_t *s, json_t *ref, const char *room, int64_t since);
void chat_leave(chat_session_t *s, json_t *ref, const char *room);
void chat_part(chat_session_t *s, json_t *ref, const char *room);
/* attachments: upload ids (n of them, may be 0), each uploaded by the sender
 * or readable by them. */
void chat_send(chat_session_t *s, json_t *ref, const char *room, const char *text, size_t len,
               const char *cid, const char *const *attachments, size_t nattach);
void chat_dm(chat_session_t *s, json_t *ref, const char *to, const char *text, size_t len,
             const char *cid);
/* before/after: -1 when absent (both set is the front end's bad_request). */
void chat_history(chat_session_t *s, json_t *ref, const char *room, int64_t before, int64_t after,
                  int limit);
void chat_rooms(chat_session_t *s, json_t *ref, int public_directory);
void chat_create(chat_session_t *s, json_t *ref, const char *room, const char *kind,
                 const char *title);
void chat_invite(chat_session_t *s, json_t *ref, const char *room, const char *user);
void chat_kick(chat_session_t *s, json_t *ref, const char *room, const char *user);
void chat_role(chat_session_t *s, json_t *ref, const char *room, const char *user, const char *role);
void chat_members(chat_session_t *s, json_t *ref, const char *room);
void chat_read(chat_session_t *s, json_t *ref, const char *room, int64_t seq);
void chat_typing(chat_session_t *s, const char *room);
void chat_presence(chat_session_t *s, json_t *ref, const char *const *users, size_t n);

/* For push/: 1 if user is a member of room whose last_read < seq (any
 * thread; takes the room lock). */
int chat_push_still_unread(const char *user, const char *room, int64_t seq);

/* ---- cluster (chat_cluster.c) ---- */

/* Joins the cluster through the bus at redis_url (presence hashes expire
 * presence_ttl_ms, registry entries node_ttl_ms after their last refresh;
 * refreshed three times per TTL). Call after chat_init, before serving. 0
 * or an error with err (a malformed URL; a Redis that is down is not an
 * error: the bus connects when it can). */
int chat_cluster_start(const char *redis_url, int node_id, int presence_ttl_ms, int node_ttl_ms, char *err,
                       size_t errlen);
/* Registers this node's public WebSocket URL for discovery (once listening). */
int chat_cluster_register(const char *ws_url);
void chat_cluster_stop(void);
int chat_cluster_on(void);
int chat_cluster_up(void);
/* The least-loaded live node: done(w, arg, 0, ws, node) on worker w, or a
 * status < 0. 0, or an error (and done is not called). */
typedef void (*chat_discover_fn)(net_worker_t *w, void *arg, int status, const char *ws, int node);
int chat_cluster_discover(net_worker_t *w, chat_discover_fn done, void *arg);

/* 1 if id is a valid room id ([A-Za-z0-9_.:-]{1,64}). */
int chat_valid_room(const char *id);

#endif

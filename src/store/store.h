/*
 * store.h: durable state behind one interface (ARCHITECTURE.md "store/").
 *
 * Two layers:
 *  - a backend (store_type_t): synchronous functions over one connection,
 *    called only from store threads; SQLite or PostgreSQL. Callers
 *    never include sqlite3.h or libpq-fe.h.
 *  - the store (store_t, store.c): owns a writer thread that applies queued
 *    write jobs in batches (one transaction per batch: group commit) and a
 *    reader thread for queries, each with its own backend connection.
 *    Callbacks run on those threads; they must not block and typically post
 *    to a worker's inbox.
 *
 * Data: users, rooms (with their latest seq), members (role, last_read),
 * messages (id, room, seq, sender, text, ts, cid, meta). Idempotency keys
 * are the (sender, cid) of messages of the last 24 h.
 */
#ifndef SORI_STORE_STORE_H
#define SORI_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t id;
    int64_t seq;
    int64_t ts;          /* ms since the epoch */
    const char *room;
    const char *from;
    const char *text;
    size_t text_len;
    const char *cid;     /* NULL if none */
    const char *meta;    /* JSON object text (attachments, mentions) or NULL */
    /* Writes only (STORE_OP_MESSAGE): non-NULL asks the store to assign seq
     * itself, as the room row's seq + 1 in the same transaction (the row is
     * locked until the commit, so concurrent writers of one room, e.g. the
     * nodes of a cluster, get gapless seqs in commit order); `seq` is then
     * ignored, the room row must exist (else the batch fails), and the seq
     * is written here, valid once apply returned 0.
     * With a cid, an assigned-seq write is also idempotent across writers:
     * if the room holds a message of the same sender and cid whose ts is
     * at most 24 h before this one's, nothing is inserted (and no seq is
     * taken) and the outs report that message (serialized per sender and
     * cid, so two writers of one pair cannot both insert). */
    int64_t *seq_out;
    uint64_t *id_out; /* optional, with seq_out: the id written or found */
    int64_t *ts_out;  /* optional, with seq_out: its ts */
} store_msg_t;

typedef struct {
    const char *id;
    const char *kind;    /* "public", "private", "dm" */
    const char *title;   /* may be "" */
    int64_t created_at;  /* ms */
    int64_t seq;         /* latest seq, on load */
} store_room_t;

typedef struct {
    const char *room;
    const char *user;
    const char *role;    /* "owner", "admin", "member" */
    int64_t last_read;
    int64_t joined_at;   /* ms */
} store_member_t;

typedef struct {
    const char *name;
    int64_t created_at;  /* ms */
    int64_t last_seen;   /* ms, 0 if never */
    const char *pw_hash; /* argon2id string of an account, or NULL */
} store_user_t;

/* An uploaded file (content-addressed id) and one of its links: an
 * uploader (user) or a room it was posted in (room); the other is NULL. */
typedef struct {
    const char *id;
    const char *type;    /* "image/png", ... */
    int64_t size;
    int64_t created_at;  /* ms */
    const char *user;
    const char *room;
} store_upload_t;

/* A mention of user in room's message seq (unread ones are loaded). A
 * write with seq 0 names the message by msg_id instead (its seq assigned
 * earlier in the same batch): nothing is written when no message of the
 * room has that id (an idempotent resend that inserted nothing). */
typedef struct {
    const char *room;
    const char *user;
    int64_t seq;
    uint64_t msg_id;
} store_mention_t;

enum store_op_kind {
    STORE_OP_USER,        /* insert the user if absent (created_at), else update last_seen if > 0 */
    STORE_OP_ROOM,        /* insert the room if absent */
    STORE_OP_MEMBER,      /* insert or update (role); last_read kept on update */
    STORE_OP_MEMBER_DEL,  /* delete membership */
    STORE_OP_READ,        /* last_read = max(last_read, seq) */
    STORE_OP_MESSAGE,     /* insert message (and its search row); rooms.seq = max(rooms.seq, seq) */
    STORE_OP_ACCOUNT,     /* insert the user with pw_hash, or set pw_hash of an existing row */
    STORE_OP_UPLOAD,      /* insert the upload if absent, and its uploader link (user) */
    STORE_OP_UPLOAD_ROOM, /* link an upload to a room it was posted in (id, room) */
    STORE_OP_MENTION,     /* record a mention */
};

typedef struct {
    enum store_op_kind kind;
    union {
        store_user_t user;
        store_room_t room;
        store_member_t member; /* MEMBER, MEMBER_DEL (room, user), READ (room, user, last_read) */
        store_msg_t msg;
        store_upload_t upload;
        store_mention_t mention;
    } u;
} store_op_t;

/* What load() reports at startup, in this order: users, rooms, members,
 * then for each room its newest `recent` messages oldest first, then the
 * messages of the last 24 h that carry a cid (idempotency keys). The
 * pointers are valid only during the call. */
typedef struct {
    void *arg;
    int (*user)(void *arg, const store_user_t *u);
    int (*room)(void *arg, const store_room_t *r);
    int (*member)(void *arg, const store_member_t *m);
    int (*recent)(void *arg, const store_msg_t *m);
    int (*idem)(void *arg, const store_msg_t *m);
    int (*upload)(void *arg, const store_upload_t *u); /* one call per link */
    int (*mention)(void *arg, const store_mention_t *m); /* those after the member's last_read */
} store_load_cb_t;

/* A full-text search (SQLite: FTS5 over message texts). match is a query
 * in the backend's syntax, already made safe by the caller; results are the
 * messages of public rooms and of the rooms in rooms_json (a JSON array of
 * room ids), or of `room` only when set; newest first, at most limit. */
typedef struct {
    const char *match;
    const char *rooms_json;
    const char *room;
    int limit;
} store_search_t;

/* One query over a room's messages: seq in (after, before) (0 means
 * unbounded on that side), at most `limit`; newest_first picks the newest
 * ones (they are still reported oldest first). */
typedef struct {
    const char *room;
    int64_t after;
    int64_t before;
    int limit;
    int newest_first;
} store_range_t;

typedef int (*store_msg_cb)(void *arg, const store_msg_t *m);

typedef struct store_backend store_backend_t; /* one backend connection */

typedef struct store_type {
    const char *name;
    /* Opens a connection; url is a path (SQLite: the data dir) or a URL.
     * Creates and migrates the schema when `migrate` is 1. NULL with err. */
    store_backend_t *(*open)(const char *url, int migrate, char *err, size_t errlen);
    void (*close)(store_backend_t *b);
    /* Applies ops in one transaction; 0 or a negative code (nothing applied). */
    int (*apply)(store_backend_t *b, const store_op_t *ops, size_t n);
    int (*load)(store_backend_t *b, int recent, int64_t idem_since_ms, const store_load_cb_t *cb);
    /* Reports the messages of a range oldest first; returns how many, or < 0. */
    int (*range)(store_backend_t *b, const store_range_t *q, store_msg_cb cb, void *arg);
    /* Reports the matches newest first; returns how many, or < 0. */
    int (*search)(store_backend_t *b, const store_search_t *q, store_msg_cb cb, void *arg);
} store_type_t;

extern const store_type_t store_type_sqlite;
extern const store_type_t store_type_pg;

/* Finds a backend by name ("sqlite", "postgresql" or "postgres"), or NULL. */
const store_type_t *store_type_find(const char *name);

/* ---- the store: threads and queues (store.c) ---- */

typedef struct store store_t;

enum { STORE_SYNC = 0, STORE_ASYNC = 1 };

/* A write job: ops applied in the same transaction as the jobs batched with
 * it. done() runs on the writer thread after the commit (status 0) or, when
 * the store is closing, with a negative status. Ops and the job stay owned by
 * the caller until done() is called; done may free them. */
typedef struct store_job {
    struct store_job *next;
    store_op_t *ops;
    size_t nops;
    void (*done)(struct store_job *job, int status);
    void *arg;
} store_job_t;

/* A read job: run() executes on the reader thread with the reader's backend
 * connection and does its queries with the backend functions directly. */
typedef struct store_read {
    struct store_read *next;
    uint64_t barrier; /* (store.c) writes queued before this read */
    void (*run)(struct store_read *rd, const store_type_t *type, store_backend_t *b);
    void *arg;
} store_read_t;

/* Opens the backend (migrating it), starts the writer and reader threads.
 * mode: STORE_SYNC (commit before done) or STORE_ASYNC (batches at most
 * flush_ms apart). NULL with a sentence in err. */
store_t *store_open(const store_type_t *type, const char *url, int mode, int flush_ms, char *err,
                    size_t errlen);
/* Loads the state (on the caller's thread, before serving). */
int store_load(store_t *s, int recent, int64_t idem_since_ms, const store_load_cb_t *cb);
/* Queues a write job. Thread-safe; never calls back on the caller's thread. */
void store_write(store_t *s, store_job_t *job);
/* Queues a read job. It runs after every write queued before it is
 * committed (read-your-writes: with async durability the reader asks the
 * writer to flush early rather than read stale rows). Thread-safe; never
 * calls back on the caller's thread. */
void store_read(store_t *s, store_read_t *rd);
/* Applies every queued write, stops the threads, closes the backend. */
void store_close(store_t *s);
/* Statistics: batches committed, ops committed, failed commits (retrying). */
void store_stats(store_t *s, uint64_t *batches, uint64_t *ops, uint64_t *failures);
/* Ops queued by store_write and not yet committed (any thread, lock-free):
 * the write backlog that --store-queue-max bounds. */
uint64_t store_backlog(store_t *s);
/* 1 while commits fail (the writer retries; /healthz reports 503). */
int store_failing(store_t *s);

#endif

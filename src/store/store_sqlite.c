/*
 * store_sqlite.c: the SQLite backend (store_type_sqlite), the embedded default.
 *
 * One store_backend_t is one sqlite3 connection used by one thread only, so
 * it is opened with SQLITE_OPEN_NOMUTEX; store.c opens one for the writer,
 * one for the reader and a short-lived one for store_load. The database is
 * DATA_DIR/sori.db in WAL mode: readers never block the writer and the writer
 * never blocks readers. synchronous=FULL makes WAL sync on every COMMIT, so a
 * committed transaction survives a power loss, not just a crash of sori
 * (NORMAL, SQLite's WAL default, may lose the last commits on power loss).
 * That costs an fsync per commit: on the 2-core test VM a 4 KiB fdatasync
 * takes ~0.5 ms and a one-message commit 0.5-0.8 ms, i.e. only ~1,200-1,800
 * commits per second. The writer's group commit puts a whole queue of jobs
 * in one transaction, so the fsync is paid per batch, not per message (the
 * same VM commits ~120,000 single-message jobs per second that way).
 *
 * Schema: numbered migrations, each applied once in one IMMEDIATE
 * transaction together with its row in schema_version, so concurrent opens
 * and reopens are idempotent; a database from a newer sori is refused.
 * Message ids are uint64 stored in SQLite's signed INTEGER (bit-cast).
 * Every statement is prepared once per connection (SQLITE_PREPARE_PERSISTENT)
 * and reset after each use. apply() is BEGIN IMMEDIATE, the ops, COMMIT; any
 * error rolls back the whole transaction and is returned (nothing applied).
 * In load() and range() a callback's non-zero result stops the walk: load()
 * returns it, range() returns it when negative and the count so far when
 * positive. range() with limit <= 0 reports nothing. Search is FTS5 over a
 * contentless index keyed by message id (the text is stored once, in
 * messages), written in the message's transaction.
 */
#include "store/store.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SQLITE__BUSY_MS 5000

/* One column list for every query that reports messages; sqlite__msg reads
 * the columns in this order. */
#define SQLITE__MSG_COLS "room, seq, id, sender, text, ts, cid, meta"

enum {
    SQ_BEGIN,
    SQ_BEGIN_READ,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_USER,
    SQ_ROOM,
    SQ_MEMBER,
    SQ_MEMBER_DEL,
    SQ_READ,
    SQ_MSG,
    SQ_MSG_SEQ,
    SQ_MSG_ASSIGN,
    SQ_RANGE_ASC,
    SQ_RANGE_DESC,
    SQ_LOAD_USERS,
    SQ_LOAD_ROOMS,
    SQ_LOAD_MEMBERS,
    SQ_LOAD_IDEM,
    SQ_ACCOUNT,
    SQ_MSG_FTS,
    SQ_UPLOAD,
    SQ_UPLOAD_OWNER,
    SQ_UPLOAD_ROOM,
    SQ_MENTION,
    SQ_MENTION_BY_ID,
    SQ_MSG_DUP,
    SQ_LOAD_UPLOADS,
    SQ_LOAD_MENTIONS,
    SQ_SEARCH,
    SQ__COUNT
};

static const char *const sqlite__sql[SQ__COUNT] = {
    [SQ_BEGIN] = "BEGIN IMMEDIATE",
    [SQ_BEGIN_READ] = "BEGIN",
    [SQ_COMMIT] = "COMMIT",
    [SQ_ROLLBACK] = "ROLLBACK",
    [SQ_USER] = "INSERT INTO users(name, created_at, last_seen) VALUES(?1, ?2, ?3)"
                " ON CONFLICT(name) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)"
                " WHERE excluded.last_seen > 0",
    [SQ_ROOM] = "INSERT INTO rooms(id, kind, title, created_at, seq) VALUES(?1, ?2, ?3, ?4, ?5)"
                " ON CONFLICT(id) DO NOTHING",
    [SQ_MEMBER] = "INSERT INTO members(room, user, role, last_read, joined_at) VALUES(?1, ?2, ?3, ?4, ?5)"
                  " ON CONFLICT(room, user) DO UPDATE SET role = excluded.role",
    [SQ_MEMBER_DEL] = "DELETE FROM members WHERE room = ?1 AND user = ?2",
    [SQ_READ] = "UPDATE members SET last_read = max(last_read, ?3) WHERE room = ?1 AND user = ?2",
    [SQ_MSG] = "INSERT INTO messages(" SQLITE__MSG_COLS ") VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    /* A message for a room without a row updates nothing: a caller bug, not a crash. */
    [SQ_MSG_SEQ] = "UPDATE rooms SET seq = max(seq, ?2) WHERE id = ?1",
    [SQ_MSG_ASSIGN] = "UPDATE rooms SET seq = seq + 1 WHERE id = ?1 RETURNING seq",
    /* ?2/?3: exclusive bounds, ?4: limit. Both walk the (room, seq) key. */
    [SQ_RANGE_ASC] = "SELECT " SQLITE__MSG_COLS " FROM messages"
                     " WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT ?4",
    [SQ_RANGE_DESC] = "SELECT " SQLITE__MSG_COLS " FROM (SELECT " SQLITE__MSG_COLS " FROM messages"
                      " WHERE room = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4)"
                      " ORDER BY seq",
    [SQ_LOAD_USERS] = "SELECT name, created_at, last_seen, pw_hash FROM users ORDER BY name",
    [SQ_LOAD_ROOMS] = "SELECT id, kind, title, created_at, seq FROM rooms ORDER BY id",
    [SQ_LOAD_MEMBERS] = "SELECT room, user, role, last_read, joined_at FROM members ORDER BY room, user",
    /* Uses the partial index messages_cid_ts (its WHERE is repeated here). */
    [SQ_LOAD_IDEM] = "SELECT " SQLITE__MSG_COLS " FROM messages"
                     " WHERE cid IS NOT NULL AND ts >= ?1 ORDER BY ts",
    [SQ_ACCOUNT] = "INSERT INTO users(name, created_at, last_seen, pw_hash) VALUES(?1, ?2, 0, ?3)"
                   " ON CONFLICT(name) DO UPDATE SET pw_hash = excluded.pw_hash",
    /* The search row's rowid is the message id (bit-cast), contentless. */
    [SQ_MSG_FTS] = "INSERT INTO messages_fts(rowid, text) VALUES(?1, ?2)",
    [SQ_UPLOAD] = "INSERT INTO uploads(id, type, size, created_at) VALUES(?1, ?2, ?3, ?4) ON CONFLICT(id) DO NOTHING",
    [SQ_UPLOAD_OWNER] = "INSERT INTO upload_links(id, kind, name) VALUES(?1, 'u', ?2) ON CONFLICT DO NOTHING",
    [SQ_UPLOAD_ROOM] = "INSERT INTO upload_links(id, kind, name) VALUES(?1, 'r', ?2) ON CONFLICT DO NOTHING",
    [SQ_MENTION] = "INSERT INTO mentions(room, user, seq) VALUES(?1, ?2, ?3) ON CONFLICT DO NOTHING",
    [SQ_MENTION_BY_ID] = "INSERT INTO mentions(room, user, seq) SELECT ?1, ?2, seq FROM messages"
                         " WHERE room = ?1 AND id = ?3 ON CONFLICT DO NOTHING",
    /* uses messages_idem (sender, cid) */
    [SQ_MSG_DUP] = "SELECT seq, id, ts FROM messages WHERE sender = ?2 AND cid = ?3 AND room = ?1 AND ts >= ?4"
                   " ORDER BY ts LIMIT 1",
    [SQ_LOAD_UPLOADS] = "SELECT u.id, u.type, u.size, u.created_at, l.kind, l.name FROM uploads u"
                        " JOIN upload_links l ON l.id = u.id ORDER BY u.id",
    [SQ_LOAD_MENTIONS] = "SELECT n.room, n.user, n.seq FROM mentions n JOIN members m"
                         " ON m.room = n.room AND m.user = n.user WHERE n.seq > m.last_read"
                         " ORDER BY n.room, n.user, n.seq",
    /* ?1 match, ?2 JSON array of the caller's rooms, ?3 one room or NULL, ?4 limit. */
    [SQ_SEARCH] = "SELECT m.room, m.seq, m.id, m.sender, m.text, m.ts, m.cid, m.meta"
                  " FROM messages_fts f JOIN messages m ON m.id = f.rowid JOIN rooms r ON r.id = m.room"
                  " WHERE messages_fts MATCH ?1 AND (?3 IS NULL OR m.room = ?3)"
                  " AND (r.kind = 'public' OR m.room IN (SELECT value FROM json_each(?2)))"
                  " ORDER BY m.id DESC LIMIT ?4",
};

/* Migration n brings the schema from version n-1 to n. Append, never edit. */
static const char *const sqlite__migrations[] = {
    /* 1: the initial schema. messages_cid_ts serves load()'s idempotency
     * scan (cid IS NOT NULL AND ts >= since) without reading every message
     * at startup; messages_idem finds a (sender, cid) pair. */
    "CREATE TABLE users("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  last_seen INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE TABLE rooms("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  title TEXT NOT NULL DEFAULT '',"
    "  created_at INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL DEFAULT 0"
    ") WITHOUT ROWID;"
    "CREATE TABLE members("
    "  room TEXT NOT NULL,"
    "  user TEXT NOT NULL,"
    "  role TEXT NOT NULL,"
    "  last_read INTEGER NOT NULL DEFAULT 0,"
    "  joined_at INTEGER NOT NULL,"
    "  PRIMARY KEY(room, user)"
    ") WITHOUT ROWID;"
    "CREATE INDEX members_user ON members(user);"
    "CREATE TABLE messages("
    "  room TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  id INTEGER NOT NULL UNIQUE,"
    "  sender TEXT NOT NULL,"
    "  text TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  cid TEXT,"
    "  meta TEXT,"
    "  PRIMARY KEY(room, seq)"
    ") WITHOUT ROWID;"
    "CREATE INDEX messages_idem ON messages(sender, cid) WHERE cid IS NOT NULL;"
    "CREATE INDEX messages_cid_ts ON messages(ts) WHERE cid IS NOT NULL;",
    /* 2: accounts, uploads, mentions, search. messages_fts is contentless
     * (the text lives in messages once), keyed by message id. Messages of
     * version 1 are indexed by the migration itself. */
    "ALTER TABLE users ADD COLUMN pw_hash TEXT;"
    "CREATE TABLE uploads("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  type TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE TABLE upload_links("
    "  id TEXT NOT NULL,"
    "  kind TEXT NOT NULL," /* 'u' uploader, 'r' room */
    "  name TEXT NOT NULL,"
    "  PRIMARY KEY(id, kind, name)"
    ") WITHOUT ROWID;"
    "CREATE TABLE mentions("
    "  room TEXT NOT NULL,"
    "  user TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  PRIMARY KEY(room, user, seq)"
    ") WITHOUT ROWID;"
    "CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='', tokenize='unicode61 remove_diacritics 2');"
    "INSERT INTO messages_fts(rowid, text) SELECT id, text FROM messages;",
};

#define SQLITE__VERSION ((int)(sizeof sqlite__migrations / sizeof sqlite__migrations[0]))

struct store_backend {
    sqlite3 *db;
    sqlite3_stmt *st[SQ__COUNT];
    char errmsg[256]; /* the last statement error, kept across reset/rollback */
};

static int sqlite__err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK: return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return SORI_EAGAIN;
    case SQLITE_NOMEM: return SORI_ENOMEM;
    case SQLITE_TOOBIG: return SORI_E2BIG;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE: return SORI_EINVAL;
    default: return SORI_EIO;
    }
}

static void sqlite__keep_errmsg(store_backend_t *b)
{
    snprintf(b->errmsg, sizeof b->errmsg, "%s", sqlite3_errmsg(b->db));
}

/* Steps a statement that returns no rows, then resets it and clears its
 * bindings. SQLITE_OK or the error (message kept in b->errmsg). */
static int sqlite__run(store_backend_t *b, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) rc = SQLITE_OK;
    else sqlite__keep_errmsg(b);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static void sqlite__done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Binding helpers: each does nothing once *rc holds an error, so a sequence
 * of binds is checked once. */
static void sqlite__bind_str(sqlite3_stmt *st, int i, const char *s, int *rc)
{
    if (*rc != SQLITE_OK) return;
    *rc = s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static void sqlite__bind_text(sqlite3_stmt *st, int i, const char *s, size_t len, int *rc)
{
    if (*rc != SQLITE_OK) return;
    *rc = sqlite3_bind_text64(st, i, s ? s : "", s ? (sqlite3_uint64)len : 0, SQLITE_STATIC, SQLITE_UTF8);
}

static void sqlite__bind_i64(sqlite3_stmt *st, int i, int64_t v, int *rc)
{
    if (*rc != SQLITE_OK) return;
    *rc = sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}

static const char *sqlite__col_str(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* Fills m from a row of SQLITE__MSG_COLS; pointers live until the next step. */
static void sqlite__msg(sqlite3_stmt *st, store_msg_t *m)
{
    memset(m, 0, sizeof *m);
    m->room = sqlite__col_str(st, 0);
    m->seq = sqlite3_column_int64(st, 1);
    m->id = (uint64_t)sqlite3_column_int64(st, 2);
    m->from = sqlite__col_str(st, 3);
    m->text = sqlite__col_str(st, 4);
    m->text_len = (size_t)sqlite3_column_bytes(st, 4);
    if (!m->text) m->text = "";
    m->ts = sqlite3_column_int64(st, 5);
    m->cid = sqlite__col_str(st, 6);
    m->meta = sqlite__col_str(st, 7);
}

/* ---- open, migrate, close ---- */

static int sqlite__exec(sqlite3 *db, const char *sql, char *err, size_t errlen, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: %s: %s", what, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return rc;
}

/* The schema version, 0 for an empty database; -1 on error. */
static int sqlite__version(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'",
                                -1, &st, NULL);
    if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) goto fail;
    int exists = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (!exists) return 0;
    rc = sqlite3_prepare_v2(db, "SELECT coalesce(max(version), 0) FROM schema_version", -1, &st, NULL);
    if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) goto fail;
    int v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
fail:
    snprintf(err, errlen, "sqlite: reading the schema version: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return -1;
}

static int sqlite__migrate(sqlite3 *db, char *err, size_t errlen)
{
    /* IMMEDIATE: two processes opening a fresh directory at once serialise
     * here (busy_timeout), and the second one finds the work done. */
    if (sqlite__exec(db, "BEGIN IMMEDIATE", err, errlen, "starting the migration")) return SORI_EIO;
    if (sqlite__exec(db, "CREATE TABLE IF NOT EXISTS schema_version("
                         "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                     err, errlen, "creating schema_version"))
        goto fail;
    int v = sqlite__version(db, err, errlen);
    if (v < 0) goto fail;
    if (v > SQLITE__VERSION) {
        snprintf(err, errlen, "sqlite: the database has schema version %d, this sori knows up to %d", v,
                 SQLITE__VERSION);
        goto fail;
    }
    for (; v < SQLITE__VERSION; v++) {
        char what[64], sql[128];
        snprintf(what, sizeof what, "migration %d", v + 1);
        if (sqlite__exec(db, sqlite__migrations[v], err, errlen, what)) goto fail;
        snprintf(sql, sizeof sql, "INSERT INTO schema_version(version, applied_at) VALUES(%d, %lld)", v + 1,
                 (long long)time(NULL) * 1000);
        if (sqlite__exec(db, sql, err, errlen, what)) goto fail;
        LOG_INFO("store", "sqlite: applied migration %d", v + 1);
    }
    if (sqlite__exec(db, "COMMIT", err, errlen, "committing the migration")) goto fail;
    return 0;
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return SORI_EIO;
}

static void sqlite__close(store_backend_t *b)
{
    if (!b) return;
    for (int i = 0; i < SQ__COUNT; i++) sqlite3_finalize(b->st[i]);
    if (sqlite3_close(b->db) != SQLITE_OK)
        LOG_ERROR("store", "sqlite: close: %s", sqlite3_errmsg(b->db));
    free(b);
}

static store_backend_t *sqlite__open(const char *url, int migrate, char *err, size_t errlen)
{
    char path[PATH_MAX];
    store_backend_t *b = NULL;
    if (!url || !*url) {
        snprintf(err, errlen, "sqlite: no data directory given");
        return NULL;
    }
    if ((size_t)snprintf(path, sizeof path, "%s/sori.db", url) >= sizeof path) {
        snprintf(err, errlen, "sqlite: data directory path too long");
        return NULL;
    }
    if (migrate && mkdir(url, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "sqlite: cannot create the data directory %s: %s", url, strerror(errno));
        return NULL;
    }
    b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "sqlite: out of memory");
        return NULL;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (migrate ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &b->db, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "sqlite: cannot open %s: %s", path,
                 b->db ? sqlite3_errmsg(b->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(b->db, 1);
    sqlite3_busy_timeout(b->db, SQLITE__BUSY_MS);
    /* journal_mode answers with the mode in force; anything but "wal" (a
     * filesystem without shared memory, say) is an error, not a surprise. */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(b->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc != SQLITE_ROW || sqlite3_stricmp(sqlite__col_str(st, 0) ? sqlite__col_str(st, 0) : "", "wal") != 0) {
        snprintf(err, errlen, "sqlite: cannot use WAL mode on %s: %s", path,
                 rc == SQLITE_ROW ? "unsupported here" : sqlite3_errmsg(b->db));
        sqlite3_finalize(st);
        goto fail;
    }
    sqlite3_finalize(st);
    if (sqlite__exec(b->db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF", err, errlen, "pragmas")) goto fail;
    if (migrate) {
        if (sqlite__migrate(b->db, err, errlen)) goto fail;
    } else {
        int v = sqlite__version(b->db, err, errlen);
        if (v < 0) goto fail;
        if (v != SQLITE__VERSION) {
            snprintf(err, errlen, "sqlite: %s has schema version %d, this sori needs %d (open it with migration)",
                     path, v, SQLITE__VERSION);
            goto fail;
        }
    }
    for (int i = 0; i < SQ__COUNT; i++) {
        rc = sqlite3_prepare_v3(b->db, sqlite__sql[i], -1, SQLITE_PREPARE_PERSISTENT, &b->st[i], NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, errlen, "sqlite: preparing statement %d: %s", i, sqlite3_errmsg(b->db));
            goto fail;
        }
    }
    return b;
fail:
    sqlite__close(b);
    return NULL;
}

/* ---- apply ---- */

static int sqlite__op(store_backend_t *b, const store_op_t *op)
{
    int rc = SQLITE_OK;
    sqlite3_stmt *st;
    switch (op->kind) {
    case STORE_OP_USER:
        st = b->st[SQ_USER];
        sqlite__bind_str(st, 1, op->u.user.name, &rc);
        sqlite__bind_i64(st, 2, op->u.user.created_at, &rc);
        sqlite__bind_i64(st, 3, op->u.user.last_seen, &rc);
        break;
    case STORE_OP_ROOM:
        st = b->st[SQ_ROOM];
        sqlite__bind_str(st, 1, op->u.room.id, &rc);
        sqlite__bind_str(st, 2, op->u.room.kind, &rc);
        sqlite__bind_str(st, 3, op->u.room.title ? op->u.room.title : "", &rc);
        sqlite__bind_i64(st, 4, op->u.room.created_at, &rc);
        sqlite__bind_i64(st, 5, op->u.room.seq, &rc);
        break;
    case STORE_OP_MEMBER:
        st = b->st[SQ_MEMBER];
        sqlite__bind_str(st, 1, op->u.member.room, &rc);
        sqlite__bind_str(st, 2, op->u.member.user, &rc);
        sqlite__bind_str(st, 3, op->u.member.role, &rc);
        sqlite__bind_i64(st, 4, op->u.member.last_read, &rc);
        sqlite__bind_i64(st, 5, op->u.member.joined_at, &rc);
        break;
    case STORE_OP_MEMBER_DEL:
        st = b->st[SQ_MEMBER_DEL];
        sqlite__bind_str(st, 1, op->u.member.room, &rc);
        sqlite__bind_str(st, 2, op->u.member.user, &rc);
        break;
    case STORE_OP_READ:
        st = b->st[SQ_READ];
        sqlite__bind_str(st, 1, op->u.member.room, &rc);
        sqlite__bind_str(st, 2, op->u.member.user, &rc);
        sqlite__bind_i64(st, 3, op->u.member.last_read, &rc);
        break;
    case STORE_OP_MESSAGE: {
        const store_msg_t *m = &op->u.msg;
        int64_t seq = m->seq;
        if (m->seq_out && m->cid) {
            /* an earlier message of this sender and cid: report it, insert
             * nothing (one writer: no race to guard against) */
            st = b->st[SQ_MSG_DUP];
            sqlite__bind_str(st, 1, m->room, &rc);
            sqlite__bind_str(st, 2, m->from, &rc);
            sqlite__bind_str(st, 3, m->cid, &rc);
            sqlite__bind_i64(st, 4, m->ts - 24LL * 3600 * 1000, &rc);
            if (rc != SQLITE_OK) break;
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                *m->seq_out = sqlite3_column_int64(st, 0);
                if (m->id_out) *m->id_out = (uint64_t)sqlite3_column_int64(st, 1);
                if (m->ts_out) *m->ts_out = sqlite3_column_int64(st, 2);
            }
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            if (rc == SQLITE_ROW) return SQLITE_OK;
            if (rc != SQLITE_DONE) return rc;
            rc = SQLITE_OK;
        }
        if (m->seq_out) {
            /* the store assigns: the room row's next seq */
            st = b->st[SQ_MSG_ASSIGN];
            sqlite__bind_str(st, 1, m->room, &rc);
            if (rc != SQLITE_OK) break;
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                seq = sqlite3_column_int64(st, 0);
                rc = sqlite3_step(st);
            } else if (rc == SQLITE_DONE) {
                rc = SQLITE_CONSTRAINT;
                snprintf(b->errmsg, sizeof b->errmsg, "a message for room %s, which has no row, asks for a seq",
                         m->room);
            }
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            if (rc != SQLITE_DONE) return rc == SQLITE_OK ? SQLITE_ERROR : rc;
            rc = SQLITE_OK;
            *m->seq_out = seq;
            if (m->id_out) *m->id_out = m->id;
            if (m->ts_out) *m->ts_out = m->ts;
        }
        st = b->st[SQ_MSG];
        sqlite__bind_str(st, 1, m->room, &rc);
        sqlite__bind_i64(st, 2, seq, &rc);
        sqlite__bind_i64(st, 3, (int64_t)m->id, &rc);
        sqlite__bind_str(st, 4, m->from, &rc);
        sqlite__bind_text(st, 5, m->text, m->text_len, &rc);
        sqlite__bind_i64(st, 6, m->ts, &rc);
        sqlite__bind_str(st, 7, m->cid, &rc);
        sqlite__bind_str(st, 8, m->meta, &rc);
        if (rc != SQLITE_OK) break;
        rc = sqlite__run(b, st);
        if (rc != SQLITE_OK) return rc;
        st = b->st[SQ_MSG_FTS];
        sqlite__bind_i64(st, 1, (int64_t)m->id, &rc);
        sqlite__bind_text(st, 2, m->text, m->text_len, &rc);
        if (rc != SQLITE_OK) break;
        rc = sqlite__run(b, st);
        if (rc != SQLITE_OK) return rc;
        if (m->seq_out) return SQLITE_OK; /* rooms.seq is already it */
        st = b->st[SQ_MSG_SEQ];
        sqlite__bind_str(st, 1, m->room, &rc);
        sqlite__bind_i64(st, 2, m->seq, &rc);
        break;
    }
    case STORE_OP_ACCOUNT:
        st = b->st[SQ_ACCOUNT];
        sqlite__bind_str(st, 1, op->u.user.name, &rc);
        sqlite__bind_i64(st, 2, op->u.user.created_at, &rc);
        sqlite__bind_str(st, 3, op->u.user.pw_hash, &rc);
        break;
    case STORE_OP_UPLOAD: {
        const store_upload_t *u = &op->u.upload;
        st = b->st[SQ_UPLOAD];
        sqlite__bind_str(st, 1, u->id, &rc);
        sqlite__bind_str(st, 2, u->type, &rc);
        sqlite__bind_i64(st, 3, u->size, &rc);
        sqlite__bind_i64(st, 4, u->created_at, &rc);
        if (rc != SQLITE_OK) break;
        rc = sqlite__run(b, st);
        if (rc != SQLITE_OK) return rc;
        st = b->st[SQ_UPLOAD_OWNER];
        sqlite__bind_str(st, 1, u->id, &rc);
        sqlite__bind_str(st, 2, u->user, &rc);
        break;
    }
    case STORE_OP_UPLOAD_ROOM:
        st = b->st[SQ_UPLOAD_ROOM];
        sqlite__bind_str(st, 1, op->u.upload.id, &rc);
        sqlite__bind_str(st, 2, op->u.upload.room, &rc);
        break;
    case STORE_OP_MENTION:
        st = b->st[op->u.mention.seq ? SQ_MENTION : SQ_MENTION_BY_ID];
        sqlite__bind_str(st, 1, op->u.mention.room, &rc);
        sqlite__bind_str(st, 2, op->u.mention.user, &rc);
        if (op->u.mention.seq)
            sqlite__bind_i64(st, 3, op->u.mention.seq, &rc);
        else
            sqlite__bind_i64(st, 3, (int64_t)op->u.mention.msg_id, &rc);
        break;
    default:
        snprintf(b->errmsg, sizeof b->errmsg, "unknown op kind %d", (int)op->kind);
        return SQLITE_MISUSE;
    }
    if (rc != SQLITE_OK) {
        sqlite__keep_errmsg(b);
        sqlite__done(st);
        return rc;
    }
    return sqlite__run(b, st);
}

static int sqlite__apply(store_backend_t *b, const store_op_t *ops, size_t n)
{
    size_t i = 0;
    if (n == 0) return 0;
    int rc = sqlite__run(b, b->st[SQ_BEGIN]);
    if (rc != SQLITE_OK) goto fail;
    for (; i < n; i++) {
        rc = sqlite__op(b, &ops[i]);
        if (rc != SQLITE_OK) goto fail;
    }
    rc = sqlite__run(b, b->st[SQ_COMMIT]);
    if (rc != SQLITE_OK) goto fail;
    return 0;
fail:
    LOG_ERROR("store", "sqlite: transaction of %zu ops rolled back at op %zu: %s", n, i, b->errmsg);
    /* A failed COMMIT (SQLITE_BUSY, I/O) leaves the transaction open. */
    if (!sqlite3_get_autocommit(b->db)) sqlite__run(b, b->st[SQ_ROLLBACK]);
    return sqlite__err(rc);
}

/* ---- queries ---- */

/* Steps a message query, reporting each row to cb. Returns the count, the
 * callback's non-zero result (negative: returned as is; positive: stops, and
 * the count is returned), or a negative error. */
static int sqlite__each_msg(store_backend_t *b, sqlite3_stmt *st, store_msg_cb cb, void *arg, int *stopped)
{
    int n = 0, rc;
    *stopped = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_msg_t m;
        sqlite__msg(st, &m);
        n++;
        int r = cb(arg, &m);
        if (r) {
            *stopped = r;
            sqlite__done(st);
            return n;
        }
    }
    if (rc != SQLITE_DONE) {
        sqlite__keep_errmsg(b);
        LOG_ERROR("store", "sqlite: query: %s", b->errmsg);
        sqlite__done(st);
        return sqlite__err(rc);
    }
    sqlite__done(st);
    return n;
}

static int sqlite__range_stmt(store_backend_t *b, const char *room, int64_t after, int64_t before, int limit,
                              int newest_first, sqlite3_stmt **out)
{
    sqlite3_stmt *st = b->st[newest_first ? SQ_RANGE_DESC : SQ_RANGE_ASC];
    int rc = SQLITE_OK;
    sqlite__bind_str(st, 1, room, &rc);
    sqlite__bind_i64(st, 2, after ? after : INT64_MIN, &rc);
    sqlite__bind_i64(st, 3, before ? before : INT64_MAX, &rc);
    sqlite__bind_i64(st, 4, limit, &rc);
    if (rc != SQLITE_OK) {
        sqlite__keep_errmsg(b);
        LOG_ERROR("store", "sqlite: binding a range: %s", b->errmsg);
        sqlite__done(st);
        return sqlite__err(rc);
    }
    *out = st;
    return 0;
}

static int sqlite__range(store_backend_t *b, const store_range_t *q, store_msg_cb cb, void *arg)
{
    sqlite3_stmt *st;
    int stopped;
    if (!q->room || q->limit <= 0) return 0;
    int rc = sqlite__range_stmt(b, q->room, q->after, q->before, q->limit, q->newest_first, &st);
    if (rc) return rc;
    rc = sqlite__each_msg(b, st, cb, arg, &stopped);
    return stopped < 0 ? stopped : rc;
}

static int sqlite__load(store_backend_t *b, int recent, int64_t idem_since_ms, const store_load_cb_t *cb)
{
    sqlite3_stmt *st = NULL;
    int rc, r = 0, stopped = 0;
    /* One read transaction: the five parts are one consistent snapshot. */
    rc = sqlite__run(b, b->st[SQ_BEGIN_READ]);
    if (rc != SQLITE_OK) goto fail;
    if (cb->user) {
        st = b->st[SQ_LOAD_USERS];
        while (!r && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            store_user_t u = {sqlite__col_str(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
                              sqlite__col_str(st, 3)};
            r = cb->user(cb->arg, &u);
        }
        if (!r && rc != SQLITE_DONE) goto fail;
        sqlite__done(st);
        if (r) goto stop;
    }
    if (cb->room) {
        st = b->st[SQ_LOAD_ROOMS];
        while (!r && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *title = sqlite__col_str(st, 2);
            store_room_t room = {sqlite__col_str(st, 0), sqlite__col_str(st, 1), title ? title : "",
                                 sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4)};
            r = cb->room(cb->arg, &room);
        }
        if (!r && rc != SQLITE_DONE) goto fail;
        sqlite__done(st);
        if (r) goto stop;
    }
    if (cb->member) {
        st = b->st[SQ_LOAD_MEMBERS];
        while (!r && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            store_member_t m = {sqlite__col_str(st, 0), sqlite__col_str(st, 1), sqlite__col_str(st, 2),
                                sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4)};
            r = cb->member(cb->arg, &m);
        }
        if (!r && rc != SQLITE_DONE) goto fail;
        sqlite__done(st);
        if (r) goto stop;
    }
    if (cb->recent && recent > 0) {
        /* Per room, the newest `recent` rows by a descending walk of the
         * (room, seq) key: a seek and `recent` steps, never a room scan. */
        st = b->st[SQ_LOAD_ROOMS];
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            sqlite3_stmt *q;
            int n = sqlite__range_stmt(b, sqlite__col_str(st, 0), 0, 0, recent, 1, &q);
            if (n == 0) n = sqlite__each_msg(b, q, cb->recent, cb->arg, &stopped);
            if (n < 0) {
                sqlite__done(st);
                r = n;
                goto stop;
            }
            if (stopped) {
                sqlite__done(st);
                r = stopped;
                goto stop;
            }
        }
        if (rc != SQLITE_DONE) goto fail;
        sqlite__done(st);
    }
    if (cb->idem) {
        st = b->st[SQ_LOAD_IDEM];
        rc = sqlite3_bind_int64(st, 1, idem_since_ms);
        if (rc != SQLITE_OK) goto fail;
        int n = sqlite__each_msg(b, st, cb->idem, cb->arg, &stopped);
        if (n < 0 || stopped) {
            r = n < 0 ? n : stopped;
            goto stop;
        }
    }
    if (cb->upload) {
        st = b->st[SQ_LOAD_UPLOADS];
        while (!r && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *kind = sqlite__col_str(st, 4);
            store_upload_t u = {sqlite__col_str(st, 0), sqlite__col_str(st, 1), sqlite3_column_int64(st, 2),
                                sqlite3_column_int64(st, 3), NULL, NULL};
            if (kind && kind[0] == 'u') u.user = sqlite__col_str(st, 5);
            else u.room = sqlite__col_str(st, 5);
            r = cb->upload(cb->arg, &u);
        }
        if (!r && rc != SQLITE_DONE) goto fail;
        sqlite__done(st);
        if (r) goto stop;
    }
    if (cb->mention) {
        st = b->st[SQ_LOAD_MENTIONS];
        while (!r && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            store_mention_t m = {sqlite__col_str(st, 0), sqlite__col_str(st, 1), sqlite3_column_int64(st, 2)};
            r = cb->mention(cb->arg, &m);
        }
        if (!r && rc != SQLITE_DONE) goto fail;
        sqlite__done(st);
        if (r) goto stop;
    }
    sqlite__run(b, b->st[SQ_COMMIT]);
    return 0;
fail:
    sqlite__keep_errmsg(b);
    LOG_ERROR("store", "sqlite: load: %s", b->errmsg);
    if (st) sqlite__done(st);
    r = sqlite__err(rc);
stop:
    if (!sqlite3_get_autocommit(b->db)) sqlite__run(b, b->st[SQ_ROLLBACK]);
    return r;
}

static int sqlite__search(store_backend_t *b, const store_search_t *q, store_msg_cb cb, void *arg)
{
    sqlite3_stmt *st = b->st[SQ_SEARCH];
    int rc = SQLITE_OK, stopped;
    if (!q->match || q->limit <= 0) return 0;
    sqlite__bind_str(st, 1, q->match, &rc);
    sqlite__bind_str(st, 2, q->rooms_json ? q->rooms_json : "[]", &rc);
    sqlite__bind_str(st, 3, q->room, &rc);
    sqlite__bind_i64(st, 4, q->limit, &rc);
    if (rc != SQLITE_OK) {
        sqlite__keep_errmsg(b);
        sqlite__done(st);
        return sqlite__err(rc);
    }
    int n = sqlite__each_msg(b, st, cb, arg, &stopped);
    return stopped < 0 ? stopped : n;
}

const store_type_t store_type_sqlite = {
    .name = "sqlite",
    .open = sqlite__open,
    .close = sqlite__close,
    .apply = sqlite__apply,
    .load = sqlite__load,
    .range = sqlite__range,
    .search = sqlite__search,
};

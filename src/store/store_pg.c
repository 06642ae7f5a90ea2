/*
 * store_pg.c: the PostgreSQL backend (store_type_pg), for clusters whose nodes
 * share one database. Same data and same semantics as store_sqlite.c.
 *
 * One store_backend_t owns one libpq connection, used by one thread only
 * (store.c opens one for the writer, one for the reader, a short-lived one
 * for store_load). The url is anything PQconnectdb accepts
 * ("postgresql://user:pw@host:port/db?options=..."); application_name=sori
 * and connect_timeout=5 are defaults the url may override.
 *
 * Never blocking without a bound: the connection is non-blocking and every
 * wait is a poll() on its socket. Connecting (PQconnectStartParams and
 * PQconnectPoll, TLS included) has PG__CONNECT_MS in all; name resolution
 * inside PQconnectStart is the one blocking step (a store thread, never a
 * worker loop). A query waits at most PG__IO_MS for each readiness of the
 * socket, and the session's statement_timeout (PG__STMT_MS, a little
 * shorter) makes the server give up first, so a slow statement fails cleanly
 * and the connection stays usable; load() and migrations allow
 * PG__SLOW_MS. A wait that times out or a lost connection drops the
 * connection (PQfinish) and fails the call with SORI_EIO; the next call
 * connects again, so store.c's commit retries ride out a PostgreSQL restart.
 *
 * apply() is one transaction: BEGIN, txid_current(), every op, then a Sync,
 * all sent as one pipeline (PQenterPipelineMode: one round trip for a batch
 * of 4,096 ops, not 4,096); if every statement succeeded a COMMIT follows,
 * else ROLLBACK, and the first error's SQLSTATE picks the SORI_E code
 * (23xxx and 22xxx: SORI_EINVAL). A connection lost after COMMIT was sent
 * leaves the outcome unknown: the backend keeps the transaction id and a hash
 * of the batch, and the next apply asks txid_status() first. If that
 * transaction committed and the batch is the same (store.c retries the very
 * same batch), apply returns 0 without applying it twice (a second insert
 * would fail on (room, seq) forever); "in progress" returns SORI_EAGAIN.
 * rooms.seq is updated once per room and batch, not once per message (see
 * pg__seq_*). On the 2-core test VM against a local server (fsync on) a
 * one-message commit takes ~0.6 ms (SQLite: ~0.3 ms) and a 4,096-message
 * batch ~280 ms (SQLite: ~40 ms; ~800 ms with an update per message).
 *
 * Schema: the SQLite backend's tables and its migrations 1 and 2, numbered
 * alike in schema_version. The pending ones are applied in one transaction
 * that first takes pg_advisory_xact_lock(PG__MIGRATE_LOCK), so nodes starting
 * at once against a fresh database serialise and the later ones find the work
 * done; a database of a newer sori is refused. Key columns are TEXT COLLATE "C"
 * (byte order, as SQLite's BINARY). Message ids are uint64 stored in BIGINT
 * as the same bit pattern (cast to int64 and back), as SQLite stores them, so
 * ids >= 2^63 read back unchanged and "newest first" (ORDER BY id DESC)
 * orders exactly as SQLite does. Parameters are always sent separately from
 * the SQL (prepared statements, PQsendQueryPrepared); nothing is
 * interpolated. A message text goes as a binary-format text parameter, so
 * text_len bounds it without a copy.
 *
 * Search: messages.tsv is a stored generated tsvector over the first
 * PG__FTS_CHARS characters of the text (a tsvector is capped at 1 MB) with a
 * GIN index. To find what FTS5's unicode61 tokenizer finds, ASCII
 * punctuation becomes space before parsing (so "example.com" is two words,
 * not a host name) and the configuration sori_search is "simple" (lower case,
 * no stop words, no stemming) behind unaccent when the server has that
 * extension (diacritics removed, as remove_diacritics 2), else plain
 * "simple" with a warning. The caller's FTS5 expression ("w1" "w""2": every
 * word quoted, quotes doubled, all required) is parsed back into words; each
 * becomes phraseto_tsquery (a word of several tokens is a phrase, as in
 * FTS5) and they are ANDed by the aggregate sori_tsquery_and.
 *
 * In load() and range() a callback's non-zero result stops the walk, as in
 * SQLite; the rest of that result is read and dropped. load() is one REPEATABLE
 * READ snapshot and streams rows (single-row mode); range() with limit <= 0
 * reports nothing.
 */
#include "store/store.h"
#include "util/err.h"
#include "util/log.h"

#include <libpq-fe.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PG__CONNECT_MS 5000
#define PG__STMT_MS 5000
#define PG__IO_MS 6000
#define PG__SLOW_MS 600000
#define PG__FTS_CHARS 100000
#define PG__MIGRATE_LOCK INT64_C(0x736F72692D6D6967) /* "sori-mig" */
#define PG__MAX_PARAMS 8

/* ASCII punctuation and as many spaces: translate() maps one to the other. */
#define PG__PUNCT "E'!\"#$%&\\'()*+,-./:;<=>?@[\\\\]^_`{|}~'"
#define PG__SPACES "'                                '"
#define PG__STR_(x) #x
#define PG__STR(x) PG__STR_(x)
#define PG__FTS_DOC(col) "to_tsvector('sori_search'::regconfig, translate(left(" col ", " \
    PG__STR(PG__FTS_CHARS) "), " PG__PUNCT ", " PG__SPACES "))"

/* Every query that reports messages reads these columns in this order. */
#define PG__MSG_COLS "room, seq, id, sender, text, ts, cid, meta"

enum {
    PQ_USER,
    PQ_ROOM,
    PQ_MEMBER,
    PQ_MEMBER_DEL,
    PQ_READ,
    PQ_MSG,
    PQ_MSG_ASSIGN,
    PQ_MSG_SEQ,
    PQ_ACCOUNT,
    PQ_UPLOAD,
    PQ_UPLOAD_OWNER,
    PQ_UPLOAD_ROOM,
    PQ_MENTION,
    PQ_MENTION_BY_ID,
    PQ_MSG_LOCK,
    PQ_MSG_ASSIGN_CID,
    PQ_XID,
    PQ_XID_STATUS,
    PQ_RANGE_ASC,
    PQ_RANGE_DESC,
    PQ_LOAD_USERS,
    PQ_LOAD_ROOMS,
    PQ_LOAD_MEMBERS,
    PQ_LOAD_RECENT,
    PQ_LOAD_IDEM,
    PQ_LOAD_UPLOADS,
    PQ_LOAD_MENTIONS,
    PQ_SEARCH,
    PQ_SEARCH_ROOM,
    PQ__COUNT
};

/* The search condition: $1 is a text[] of words (one phrase each). */
#define PG__SEARCH_HEAD                                                                                    \
    "SELECT m.room, m.seq, m.id, m.sender, m.text, m.ts, m.cid, m.meta"                                   \
    " FROM messages m JOIN rooms r ON r.id = m.room"                                                      \
    " WHERE m.tsv @@ (SELECT sori_tsquery_and(phraseto_tsquery('sori_search'::regconfig, translate(w, " \
    PG__PUNCT ", " PG__SPACES "))) FROM unnest($1::text[]) AS w)"                                        \
    " AND (r.kind = 'public' OR m.room IN (SELECT jsonb_array_elements_text($2::jsonb)))"

static const char *const pg__sql[PQ__COUNT] = {
    [PQ_USER] = "INSERT INTO users(name, created_at, last_seen) VALUES($1, $2, $3)"
                " ON CONFLICT(name) DO UPDATE SET last_seen = GREATEST(users.last_seen, excluded.last_seen)"
                " WHERE excluded.last_seen > 0",
    [PQ_ROOM] = "INSERT INTO rooms(id, kind, title, created_at, seq) VALUES($1, $2, $3, $4, $5)"
                " ON CONFLICT(id) DO NOTHING",
    [PQ_MEMBER] = "INSERT INTO members(room, user_name, role, last_read, joined_at) VALUES($1, $2, $3, $4, $5)"
                  " ON CONFLICT(room, user_name) DO UPDATE SET role = excluded.role",
    [PQ_MEMBER_DEL] = "DELETE FROM members WHERE room = $1 AND user_name = $2",
    [PQ_READ] = "UPDATE members SET last_read = GREATEST(last_read, $3::bigint) WHERE room = $1 AND user_name = $2",
    [PQ_MSG] = "INSERT INTO messages(" PG__MSG_COLS ") VALUES($1, $2, $3, $4, $5, $6, $7, $8)",
    /* the store assigns seq: the room row's next, locked until the commit */
    [PQ_MSG_ASSIGN] = "WITH s AS (UPDATE rooms SET seq = seq + 1 WHERE id = $1::text RETURNING seq)"
                      " INSERT INTO messages(" PG__MSG_COLS ")"
                      " SELECT $1::text, s.seq, $2::bigint, $3::text, $4::text, $5::bigint, $6::text, $7::text FROM s"
                      " RETURNING seq, id, ts",
    /* With a cid: PQ_MSG_LOCK first serializes the writers of one (room,
     * sender, cid) until their commit, so this statement's snapshot sees
     * the other's row; an earlier message of the pair (24 h) is reported
     * and nothing is inserted or assigned. Both return (seq, id, ts): the
     * only message statements with three columns. */
    [PQ_MSG_LOCK] = "SELECT FROM pg_advisory_xact_lock(hashtextextended($1::text || chr(1) || $2::text || chr(1)"
                    " || $3::text, 0))",
    [PQ_MSG_ASSIGN_CID] =
        "WITH p AS (SELECT seq, id, ts FROM messages WHERE sender = $3::text AND cid = $6::text AND room = $1::text"
        "           AND ts >= $5::bigint - 86400000 ORDER BY ts LIMIT 1),"
        " s AS (UPDATE rooms SET seq = seq + 1 WHERE id = $1::text AND NOT EXISTS (SELECT 1 FROM p) RETURNING seq),"
        " i AS (INSERT INTO messages(" PG__MSG_COLS ")"
        "       SELECT $1::text, s.seq, $2::bigint, $3::text, $4::text, $5::bigint, $6::text, $7::text FROM s"
        "       RETURNING seq, id, ts)"
        " SELECT seq, id, ts FROM i UNION ALL SELECT seq, id, ts FROM p",
    /* rooms.seq = max(rooms.seq, $2), once per room and batch (pg__seq_*);
     * a room without a row updates nothing (a caller bug, not a failure). */
    [PQ_MSG_SEQ] = "UPDATE rooms SET seq = $2 WHERE id = $1 AND seq < $2",
    [PQ_ACCOUNT] = "INSERT INTO users(name, created_at, last_seen, pw_hash) VALUES($1, $2, 0, $3)"
                   " ON CONFLICT(name) DO UPDATE SET pw_hash = excluded.pw_hash",
    [PQ_UPLOAD] = "INSERT INTO uploads(id, type, size, created_at) VALUES($1, $2, $3, $4) ON CONFLICT(id) DO NOTHING",
    [PQ_UPLOAD_OWNER] = "INSERT INTO upload_links(id, kind, name) VALUES($1, 'u', $2) ON CONFLICT DO NOTHING",
    [PQ_UPLOAD_ROOM] = "INSERT INTO upload_links(id, kind, name) VALUES($1, 'r', $2) ON CONFLICT DO NOTHING",
    [PQ_MENTION] = "INSERT INTO mentions(room, user_name, seq) VALUES($1, $2, $3) ON CONFLICT DO NOTHING",
    [PQ_MENTION_BY_ID] = "INSERT INTO mentions(room, user_name, seq) SELECT $1::text, $2::text, seq FROM messages"
                         " WHERE room = $1::text AND id = $3::bigint ON CONFLICT DO NOTHING",
    [PQ_XID] = "SELECT txid_current()",
    [PQ_XID_STATUS] = "SELECT txid_status($1::bigint)",
    /* $2/$3: exclusive bounds, $4: limit. Both walk the (room, seq) key. */
    [PQ_RANGE_ASC] = "SELECT " PG__MSG_COLS " FROM messages"
                     " WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq LIMIT $4",
    [PQ_RANGE_DESC] = "SELECT " PG__MSG_COLS " FROM (SELECT " PG__MSG_COLS " FROM messages"
                      " WHERE room = $1 AND seq > $2 AND seq < $3 ORDER BY seq DESC LIMIT $4) t ORDER BY seq",
    [PQ_LOAD_USERS] = "SELECT name, created_at, last_seen, pw_hash FROM users ORDER BY name",
    [PQ_LOAD_ROOMS] = "SELECT id, kind, title, created_at, seq FROM rooms ORDER BY id",
    [PQ_LOAD_MEMBERS] = "SELECT room, user_name, role, last_read, joined_at FROM members ORDER BY room, user_name",
    /* Per room (in id order) its newest $1 messages, oldest first: one
     * backward walk of the (room, seq) key per room, in one statement. */
    [PQ_LOAD_RECENT] = "SELECT m.room, m.seq, m.id, m.sender, m.text, m.ts, m.cid, m.meta FROM rooms r"
                       " CROSS JOIN LATERAL (SELECT " PG__MSG_COLS " FROM messages"
                       " WHERE room = r.id ORDER BY seq DESC LIMIT $1) m ORDER BY r.id, m.seq",
    /* Uses the partial index messages_cid_ts (its WHERE is repeated here). */
    [PQ_LOAD_IDEM] = "SELECT " PG__MSG_COLS " FROM messages WHERE cid IS NOT NULL AND ts >= $1 ORDER BY ts",
    [PQ_LOAD_UPLOADS] = "SELECT u.id, u.type, u.size, u.created_at, l.kind, l.name FROM uploads u"
                        " JOIN upload_links l ON l.id = u.id ORDER BY u.id, l.kind, l.name",
    [PQ_LOAD_MENTIONS] = "SELECT n.room, n.user_name, n.seq FROM mentions n JOIN members m"
                         " ON m.room = n.room AND m.user_name = n.user_name WHERE n.seq > m.last_read"
                         " ORDER BY n.room, n.user_name, n.seq",
    /* $1 words, $2 JSON array of the caller's rooms, $3 limit (SEARCH_ROOM: $4 the room). */
    [PQ_SEARCH] = PG__SEARCH_HEAD " ORDER BY m.id DESC LIMIT $3",
    [PQ_SEARCH_ROOM] = PG__SEARCH_HEAD " AND m.room = $4 ORDER BY m.id DESC LIMIT $3",
};

/* Migration n brings the schema from version n-1 to n, as in SQLite.
 * Append, never edit. */
static const char *const pg__migrations[] = {
    /* 1: the initial schema. messages_cid_ts serves load()'s idempotency
     * scan; messages_idem finds a (sender, cid) pair. */
    "CREATE TABLE users("
    "  name TEXT COLLATE \"C\" PRIMARY KEY,"
    "  created_at BIGINT NOT NULL,"
    "  last_seen BIGINT NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE rooms("
    "  id TEXT COLLATE \"C\" PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  title TEXT NOT NULL DEFAULT '',"
    "  created_at BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE members("
    "  room TEXT COLLATE \"C\" NOT NULL,"
    "  user_name TEXT COLLATE \"C\" NOT NULL,"
    "  role TEXT NOT NULL,"
    "  last_read BIGINT NOT NULL DEFAULT 0,"
    "  joined_at BIGINT NOT NULL,"
    "  PRIMARY KEY(room, user_name)"
    ");"
    "CREATE INDEX members_user ON members(user_name);"
    "CREATE TABLE messages("
    "  room TEXT COLLATE \"C\" NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  id BIGINT NOT NULL UNIQUE," /* uint64 bit pattern */
    "  sender TEXT COLLATE \"C\" NOT NULL,"
    "  text TEXT NOT NULL,"
    "  ts BIGINT NOT NULL,"
    "  cid TEXT COLLATE \"C\","
    "  meta TEXT,"
    "  PRIMARY KEY(room, seq)"
    ");"
    "CREATE INDEX messages_idem ON messages(sender, cid) WHERE cid IS NOT NULL;"
    "CREATE INDEX messages_cid_ts ON messages(ts) WHERE cid IS NOT NULL;",
    /* 2: accounts, uploads, mentions, search. The generated tsv column
     * indexes the messages of version 1 as it is added. unaccent is optional
     * (a server without it, or a user not allowed to create it, gets an
     * accent-sensitive search and a warning); the dictionary is named with
     * its schema, so a search_path without that schema still finds it. */
    "ALTER TABLE users ADD COLUMN pw_hash TEXT;"
    "CREATE TABLE uploads("
    "  id TEXT COLLATE \"C\" PRIMARY KEY,"
    "  type TEXT NOT NULL,"
    "  size BIGINT NOT NULL,"
    "  created_at BIGINT NOT NULL"
    ");"
    "CREATE TABLE upload_links("
    "  id TEXT COLLATE \"C\" NOT NULL,"
    "  kind TEXT COLLATE \"C\" NOT NULL," /* 'u' uploader, 'r' room */
    "  name TEXT COLLATE \"C\" NOT NULL,"
    "  PRIMARY KEY(id, kind, name)"
    ");"
    "CREATE TABLE mentions("
    "  room TEXT COLLATE \"C\" NOT NULL,"
    "  user_name TEXT COLLATE \"C\" NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  PRIMARY KEY(room, user_name, seq)"
    ");"
    "CREATE TEXT SEARCH CONFIGURATION sori_search (COPY = pg_catalog.simple);"
    "DO $sori$ DECLARE s name; BEGIN"
    "  BEGIN"
    "    CREATE EXTENSION IF NOT EXISTS unaccent;"
    "    SELECT n.nspname INTO STRICT s FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
    "      WHERE e.extname = 'unaccent';"
    "    EXECUTE format('ALTER TEXT SEARCH CONFIGURATION sori_search ALTER MAPPING FOR asciiword, word, numword,"
    " asciihword, hword, numhword, hword_asciipart, hword_part, hword_numpart WITH %I.unaccent, simple', s);"
    "  EXCEPTION WHEN OTHERS THEN"
    "    RAISE WARNING 'sori: no unaccent (%): search will be accent-sensitive', SQLERRM;"
    "  END;"
    "END $sori$;"
    "ALTER TABLE messages ADD COLUMN tsv tsvector GENERATED ALWAYS AS (" PG__FTS_DOC("text") ") STORED;"
    "CREATE INDEX messages_tsv ON messages USING gin(tsv);"
    "CREATE AGGREGATE sori_tsquery_and(tsquery) (SFUNC = tsquery_and, STYPE = tsquery);",
};

#define PG__VERSION ((int)(sizeof pg__migrations / sizeof pg__migrations[0]))

struct store_backend {
    PGconn *conn;         /* NULL once dropped: the next call connects again */
    char *url;
    int io_ms;            /* the longest wait for the socket */
    char errmsg[256];     /* the last error, for the log */
    /* The batch's latest seq per room (pg__seq_*): an open-addressing table
     * of seq_cap slots (a power of two), reused by every apply. */
    struct pg__seq {
        const char *room; /* borrowed from the ops, NULL: free slot */
        int64_t seq;
        int live;         /* an update is still due */
    } *seq;
    size_t seq_cap, seq_mask;
    uint32_t *at;         /* apply: the op of each statement sent, for the log */
    size_t at_cap;
    char last_xid[24];    /* of the last commit */
    /* A COMMIT whose outcome is unknown (the connection was lost meanwhile). */
    int limbo;
    char limbo_xid[24];
    uint64_t limbo_hash;
};

typedef struct {
    int n;
    const char *v[PG__MAX_PARAMS];
    int len[PG__MAX_PARAMS];
    int fmt[PG__MAX_PARAMS];
    char num[PG__MAX_PARAMS][24];
} pg__params_t;

static int64_t pg__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Copies a libpq message as one log line: its newlines and tabs (DETAIL:,
 * HINT:, continuation lines) become single spaces, none at the end. */
static void pg__keep(char *dst, size_t size, const char *what, const char *msg)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s%s%s", what ? what : "", what && msg ? ": " : "", msg ? msg : "");
    size_t n = 0;
    for (const char *c = tmp; *c && n + 1 < size; c++) {
        int space = *c == '\n' || *c == '\t' || *c == ' ';
        if (space && (n == 0 || dst[n - 1] == ' ')) continue;
        dst[n++] = space ? ' ' : *c;
    }
    while (n && dst[n - 1] == ' ') n--;
    dst[n] = 0;
}

static void pg__notice(void *arg, const PGresult *r)
{
    (void)arg;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    char msg[512];
    pg__keep(msg, sizeof msg, NULL, PQresultErrorMessage(r));
    if (sev && strcmp(sev, "WARNING") == 0) LOG_WARN("store", "postgresql: %s", msg);
    else LOG_DEBUG("store", "postgresql: %s", msg);
}

/* Drops the connection after a failure; the next call connects again. */
static void pg__drop(store_backend_t *b, const char *why)
{
    if (!b->conn) return;
    LOG_WARN("store", "postgresql: dropping the connection: %s", why);
    PQfinish(b->conn);
    b->conn = NULL;
}

/* Maps a failed result to a SORI_E code by its SQLSTATE. */
static int pg__code(const PGresult *r)
{
    const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!st || strlen(st) != 5) return SORI_EIO;
    if (!strncmp(st, "23", 2) || !strncmp(st, "22", 2)) return SORI_EINVAL; /* constraint, bad data */
    if (!strncmp(st, "40", 2) || !strcmp(st, "55P03") || !strcmp(st, "57014")) return SORI_EAGAIN;
    if (!strcmp(st, "53200")) return SORI_ENOMEM;
    if (!strncmp(st, "54", 2)) return SORI_E2BIG;
    return SORI_EIO;
}

/* ---- waiting on the socket ---- */

/* Waits until the socket is readable (or writable too when `events` has
 * POLLOUT), at most ms. The ready events, or 0 on timeout, or < 0. */
static int pg__poll(PGconn *conn, short events, int ms)
{
    int fd = PQsocket(conn);
    if (fd < 0) return -1;
    int64_t due = pg__now_ms() + ms;
    for (;;) {
        struct pollfd p = {fd, events, 0};
        int64_t left = due - pg__now_ms();
        if (left < 0) left = 0;
        int r = poll(&p, 1, (int)left);
        if (r > 0) return p.revents ? p.revents : events;
        if (r == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

/* Sends everything libpq has buffered, reading input meanwhile (the server
 * may be writing results while we write queries). 0 or SORI_EIO (dropped). */
static int pg__flush(store_backend_t *b)
{
    for (;;) {
        int r = PQflush(b->conn);
        if (r == 0) return 0;
        if (r < 0) break;
        int ev = pg__poll(b->conn, POLLIN | POLLOUT, b->io_ms);
        if (ev == 0) {
            snprintf(b->errmsg, sizeof b->errmsg, "could not send to the server within %d ms", b->io_ms);
            pg__drop(b, b->errmsg);
            return SORI_EIO;
        }
        if (ev < 0) break;
        if ((ev & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(b->conn)) break;
    }
    pg__keep(b->errmsg, sizeof b->errmsg, "sending", PQerrorMessage(b->conn));
    pg__drop(b, b->errmsg);
    return SORI_EIO;
}

/* The next result (NULL ends a query's results), waiting at most io_ms for
 * each arrival of data. Sets *lost (and drops the connection) when the
 * connection failed or the server did not answer in time. */
static PGresult *pg__result(store_backend_t *b, int *lost)
{
    *lost = 0;
    while (PQisBusy(b->conn)) {
        int ev = pg__poll(b->conn, POLLIN, b->io_ms);
        if (ev <= 0) {
            if (ev == 0) snprintf(b->errmsg, sizeof b->errmsg, "no answer from the server within %d ms", b->io_ms);
            else snprintf(b->errmsg, sizeof b->errmsg, "poll: %s", strerror(errno));
            pg__drop(b, b->errmsg);
            *lost = 1;
            return NULL;
        }
        if (!PQconsumeInput(b->conn)) {
            pg__keep(b->errmsg, sizeof b->errmsg, "receiving", PQerrorMessage(b->conn));
            pg__drop(b, b->errmsg);
            *lost = 1;
            return NULL;
        }
    }
    PGresult *r = PQgetResult(b->conn);
    if (PQstatus(b->conn) == CONNECTION_BAD) {
        pg__keep(b->errmsg, sizeof b->errmsg, NULL, r ? PQresultErrorMessage(r) : PQerrorMessage(b->conn));
        PQclear(r);
        pg__drop(b, b->errmsg[0] ? b->errmsg : "connection lost");
        *lost = 1;
        return NULL;
    }
    return r;
}

/* Runs SQL text with the simple protocol (several statements allowed, no
 * parameters: constants only). 0, or the first error's code (the connection
 * is dropped when it was lost). */
static int pg__exec(store_backend_t *b, const char *sql)
{
    int rc = 0, lost;
    if (!PQsendQuery(b->conn, sql)) {
        pg__keep(b->errmsg, sizeof b->errmsg, "sending", PQerrorMessage(b->conn));
        pg__drop(b, b->errmsg);
        return SORI_EIO;
    }
    if (pg__flush(b)) return SORI_EIO;
    for (;;) {
        PGresult *r = pg__result(b, &lost);
        if (lost) return SORI_EIO;
        if (!r) break;
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !rc) {
            rc = pg__code(r);
            pg__keep(b->errmsg, sizeof b->errmsg, NULL, PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    return rc;
}

/* ---- parameters ---- */

static void pg__p_str(pg__params_t *p, const char *s)
{
    p->v[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n] = 0;
    p->n++;
}

static void pg__p_i64(pg__params_t *p, int64_t x)
{
    snprintf(p->num[p->n], sizeof p->num[p->n], "%" PRId64, x);
    pg__p_str(p, p->num[p->n]);
}

/* A text parameter bounded by length (binary format: the bytes as they are;
 * the server still checks the encoding). */
static int pg__p_text(pg__params_t *p, const char *s, size_t len)
{
    if (len > INT_MAX) return SORI_E2BIG;
    p->v[p->n] = s ? s : "";
    p->len[p->n] = s ? (int)len : 0;
    p->fmt[p->n] = 1;
    p->n++;
    return 0;
}

static const char *pg__name(int st, char buf[24])
{
    snprintf(buf, 24, "sori_%d", st);
    return buf;
}

static int pg__send(store_backend_t *b, int st, const pg__params_t *p)
{
    char name[24];
    if (PQsendQueryPrepared(b->conn, pg__name(st, name), p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
                            p ? p->fmt : NULL, 0))
        return 0;
    pg__keep(b->errmsg, sizeof b->errmsg, "sending", PQerrorMessage(b->conn));
    pg__drop(b, b->errmsg);
    return SORI_EIO;
}

/* ---- open, migrate, close ---- */

/* Reads the schema version into *v (0 for an empty database). */
static int pg__version(store_backend_t *b, int *v)
{
    int lost, rc = 0;
    *v = 0;
    if (!PQsendQuery(b->conn, "SELECT CASE WHEN to_regclass('schema_version') IS NULL THEN 0"
                              " ELSE (SELECT coalesce(max(version), 0) FROM schema_version) END")) {
        pg__keep(b->errmsg, sizeof b->errmsg, "sending", PQerrorMessage(b->conn));
        pg__drop(b, b->errmsg);
        return SORI_EIO;
    }
    if (pg__flush(b)) return SORI_EIO;
    for (;;) {
        PGresult *r = pg__result(b, &lost);
        if (lost) return SORI_EIO;
        if (!r) break;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            *v = atoi(PQgetvalue(r, 0, 0));
        } else if (!rc) {
            rc = PQresultStatus(r) == PGRES_TUPLES_OK ? SORI_EIO : pg__code(r);
            pg__keep(b->errmsg, sizeof b->errmsg, NULL, PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    return rc;
}

static int pg__migrate(store_backend_t *b, char *err, size_t errlen)
{
    char sql[384];
    int v = 0, rc;
    b->io_ms = PG__SLOW_MS;
    /* The advisory lock first: a second node waits here until the first
     * one's migrations are committed, then finds them done. */
    snprintf(sql, sizeof sql,
             "BEGIN; SET LOCAL statement_timeout = %d; SET LOCAL lock_timeout = %d;"
             " SELECT pg_advisory_xact_lock(%" PRId64 ");"
             " CREATE TABLE IF NOT EXISTS schema_version(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
             PG__SLOW_MS, PG__SLOW_MS, PG__MIGRATE_LOCK);
    if ((rc = pg__exec(b, sql))) {
        snprintf(err, errlen, "postgresql: starting the migration: %s", b->errmsg);
        goto fail;
    }
    if ((rc = pg__version(b, &v))) {
        snprintf(err, errlen, "postgresql: reading the schema version: %s", b->errmsg);
        goto fail;
    }
    if (v > PG__VERSION) {
        snprintf(err, errlen, "postgresql: the database has schema version %d, this sori knows up to %d", v,
                 PG__VERSION);
        rc = SORI_EIO;
        goto fail;
    }
    for (; v < PG__VERSION; v++) {
        if ((rc = pg__exec(b, pg__migrations[v]))) {
            snprintf(err, errlen, "postgresql: migration %d: %s", v + 1, b->errmsg);
            goto fail;
        }
        /* Two integers of ours, not input: nothing to escape. */
        snprintf(sql, sizeof sql, "INSERT INTO schema_version(version, applied_at) VALUES(%d, %lld)", v + 1,
                 (long long)time(NULL) * 1000);
        if ((rc = pg__exec(b, sql))) {
            snprintf(err, errlen, "postgresql: migration %d: %s", v + 1, b->errmsg);
            goto fail;
        }
        LOG_INFO("store", "postgresql: applied migration %d", v + 1);
    }
    if ((rc = pg__exec(b, "COMMIT"))) {
        snprintf(err, errlen, "postgresql: committing the migration: %s", b->errmsg);
        goto fail;
    }
    b->io_ms = PG__IO_MS;
    return 0;
fail:
    if (b->conn) pg__exec(b, "ROLLBACK");
    b->io_ms = PG__IO_MS;
    return rc ? rc : SORI_EIO;
}

/* Prepares every statement, in one pipeline. */
static int pg__prepare(store_backend_t *b, char *err, size_t errlen)
{
    char name[24];
    int lost, rc = 0, bad = -1;
    if (!PQenterPipelineMode(b->conn)) goto lost;
    for (int i = 0; i < PQ__COUNT; i++)
        if (!PQsendPrepare(b->conn, pg__name(i, name), pg__sql[i], 0, NULL)) goto lost;
    if (!PQpipelineSync(b->conn)) goto lost;
    if (pg__flush(b)) goto lost;
    for (int i = 0; i <= PQ__COUNT; i++) {
        PGresult *r = pg__result(b, &lost);
        if (lost || !r) goto lost;
        ExecStatusType st = PQresultStatus(r);
        if (i == PQ__COUNT) {
            PQclear(r);
            if (st != PGRES_PIPELINE_SYNC) goto lost;
            break;
        }
        if (st != PGRES_COMMAND_OK && st != PGRES_PIPELINE_ABORTED && bad < 0) {
            bad = i;
            rc = pg__code(r);
            pg__keep(b->errmsg, sizeof b->errmsg, NULL, PQresultErrorMessage(r));
        }
        PQclear(r);
        if ((r = pg__result(b, &lost)) || lost) {
            PQclear(r);
            goto lost;
        }
    }
    if (!PQexitPipelineMode(b->conn)) goto lost;
    if (bad >= 0) {
        snprintf(err, errlen, "postgresql: preparing statement %d: %s", bad, b->errmsg);
        return rc ? rc : SORI_EIO;
    }
    return 0;
lost:
    if (b->conn) pg__keep(b->errmsg, sizeof b->errmsg, NULL, PQerrorMessage(b->conn));
    snprintf(err, errlen, "postgresql: preparing statements: %s", b->errmsg);
    pg__drop(b, b->errmsg);
    return SORI_EIO;
}

/* Connects (bounded by PG__CONNECT_MS), sets up the session, checks the
 * schema version (or migrates), prepares the statements. */
static int pg__connect(store_backend_t *b, int migrate, char *err, size_t errlen)
{
    static const char *const kw[] = {"application_name", "connect_timeout", "dbname", NULL};
    const char *val[] = {"sori", "5", b->url, NULL};
    char what[320];
    PGconn *conn = PQconnectStartParams(kw, val, 1);
    if (!conn) {
        snprintf(err, errlen, "postgresql: out of memory");
        return SORI_ENOMEM;
    }
    int64_t due = pg__now_ms() + PG__CONNECT_MS;
    PostgresPollingStatusType ps = PGRES_POLLING_WRITING;
    while (PQstatus(conn) != CONNECTION_BAD && ps != PGRES_POLLING_OK && ps != PGRES_POLLING_FAILED) {
        int64_t left = due - pg__now_ms();
        int ev = left > 0 ? pg__poll(conn, ps == PGRES_POLLING_READING ? POLLIN : POLLOUT, (int)left) : 0;
        if (ev == 0) {
            snprintf(err, errlen, "postgresql: connecting: no answer within %d ms", PG__CONNECT_MS);
            PQfinish(conn);
            return SORI_EIO;
        }
        if (ev < 0) break;
        ps = PQconnectPoll(conn);
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        pg__keep(what, sizeof what, "postgresql: connecting", PQerrorMessage(conn));
        snprintf(err, errlen, "%s", what);
        PQfinish(conn);
        return SORI_EIO;
    }
    if (PQserverVersion(conn) < 120000) {
        snprintf(err, errlen, "postgresql: the server is version %d; sori needs 12 or later", PQserverVersion(conn));
        PQfinish(conn);
        return SORI_EIO;
    }
    PQsetNoticeReceiver(conn, pg__notice, b);
    if (PQsetnonblocking(conn, 1) != 0) {
        snprintf(err, errlen, "postgresql: cannot make the connection non-blocking");
        PQfinish(conn);
        return SORI_EIO;
    }
    b->conn = conn;
    b->io_ms = PG__IO_MS;
    /* The server gives up on a statement a little before we would, so a slow
     * one fails with an error and the connection stays usable. A client that
     * died inside a transaction does not hold its locks for long. */
    char sql[256];
    snprintf(sql, sizeof sql,
             "SET statement_timeout = %d; SET lock_timeout = %d; SET idle_in_transaction_session_timeout = %d;"
             " SET client_min_messages = warning%s",
             PG__STMT_MS, PG__STMT_MS, 10 * PG__IO_MS,
             PQserverVersion(conn) >= 140000 ? "; SET client_connection_check_interval = 2000" : "");
    int rc = pg__exec(b, sql);
    if (rc) {
        snprintf(err, errlen, "postgresql: setting up the session: %s", b->errmsg);
        goto fail;
    }
    if (migrate) {
        if ((rc = pg__migrate(b, err, errlen))) goto fail;
    } else {
        int v;
        if ((rc = pg__version(b, &v))) {
            snprintf(err, errlen, "postgresql: reading the schema version: %s", b->errmsg);
            goto fail;
        }
        if (v != PG__VERSION) {
            snprintf(err, errlen, "postgresql: the database has schema version %d, this sori needs %d"
                     " (open it with migration)", v, PG__VERSION);
            rc = SORI_EIO;
            goto fail;
        }
    }
    if ((rc = pg__prepare(b, err, errlen))) goto fail;
    return 0;
fail:
    if (b->conn) PQfinish(b->conn);
    b->conn = NULL;
    return rc ? rc : SORI_EIO;
}

/* Makes sure there is a connection: after a drop, connects again (without
 * migrating: the schema was checked at open). 0 or SORI_EIO. */
static int pg__ready(store_backend_t *b)
{
    if (b->conn && PQstatus(b->conn) == CONNECTION_OK && PQtransactionStatus(b->conn) == PQTRANS_IDLE &&
        PQpipelineStatus(b->conn) == PQ_PIPELINE_OFF)
        return 0;
    if (b->conn) pg__drop(b, "the connection is not idle");
    char err[512];
    if (pg__connect(b, 0, err, sizeof err)) {
        LOG_ERROR("store", "%s", err);
        return SORI_EIO;
    }
    LOG_INFO("store", "postgresql: connected again");
    return 0;
}

static void pg__close(store_backend_t *b)
{
    if (!b) return;
    if (b->conn) PQfinish(b->conn);
    free(b->seq);
    free(b->at);
    free(b->url);
    free(b);
}

static store_backend_t *pg__open(const char *url, int migrate, char *err, size_t errlen)
{
    if (!url || !*url) {
        snprintf(err, errlen, "postgresql: no database url given");
        return NULL;
    }
    store_backend_t *b = calloc(1, sizeof *b);
    if (!b || !(b->url = strdup(url))) {
        free(b);
        snprintf(err, errlen, "postgresql: out of memory");
        return NULL;
    }
    if (pg__connect(b, migrate, err, errlen)) {
        pg__close(b);
        return NULL;
    }
    return b;
}

/* ---- apply ---- */

static uint64_t pg__hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

static uint64_t pg__hash_str(uint64_t h, const char *s)
{
    return s ? pg__hash_bytes(h, s, strlen(s) + 1) : pg__hash_bytes(h, "\xff", 1);
}

static uint64_t pg__hash_i64(uint64_t h, int64_t v)
{
    return pg__hash_bytes(h, &v, sizeof v);
}

/* A fingerprint of a batch: tells a retry of the same batch. */
static uint64_t pg__hash(const store_op_t *ops, size_t n)
{
    uint64_t h = pg__hash_i64(1469598103934665603ULL, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        const store_op_t *op = &ops[i];
        h = pg__hash_i64(h, op->kind);
        switch (op->kind) {
        case STORE_OP_USER:
        case STORE_OP_ACCOUNT:
            h = pg__hash_str(h, op->u.user.name);
            h = pg__hash_i64(h, op->u.user.created_at);
            h = pg__hash_i64(h, op->u.user.last_seen);
            h = pg__hash_str(h, op->kind == STORE_OP_ACCOUNT ? op->u.user.pw_hash : NULL);
            break;
        case STORE_OP_ROOM:
            h = pg__hash_str(h, op->u.room.id);
            h = pg__hash_str(h, op->u.room.kind);
            h = pg__hash_str(h, op->u.room.title);
            h = pg__hash_i64(h, op->u.room.created_at);
            break;
        case STORE_OP_MEMBER:
        case STORE_OP_MEMBER_DEL:
        case STORE_OP_READ:
            h = pg__hash_str(h, op->u.member.room);
            h = pg__hash_str(h, op->u.member.user);
            h = pg__hash_str(h, op->u.member.role);
            h = pg__hash_i64(h, op->u.member.last_read);
            break;
        case STORE_OP_MESSAGE:
            h = pg__hash_i64(h, (int64_t)op->u.msg.id);
            h = pg__hash_str(h, op->u.msg.room);
            h = pg__hash_i64(h, op->u.msg.seq);
            h = pg__hash_i64(h, op->u.msg.ts);
            h = pg__hash_bytes(h, op->u.msg.text ? op->u.msg.text : "", op->u.msg.text ? op->u.msg.text_len : 0);
            break;
        case STORE_OP_UPLOAD:
        case STORE_OP_UPLOAD_ROOM:
            h = pg__hash_str(h, op->u.upload.id);
            h = pg__hash_str(h, op->u.upload.user);
            h = pg__hash_str(h, op->u.upload.room);
            break;
        case STORE_OP_MENTION:
            h = pg__hash_str(h, op->u.mention.room);
            h = pg__hash_str(h, op->u.mention.user);
            h = pg__hash_i64(h, op->u.mention.seq);
            break;
        }
    }
    return h;
}

/* ---- rooms.seq, once per room and batch ----
 *
 * Updating one rooms row per message makes a hot room's row a chain of 4,096
 * versions in a big batch, each update walking it: ~300 ms of a 4,096-message
 * commit. Instead each room's highest seq is noted and updated once, at the
 * end of the batch, rooms in name order (two nodes' batches lock rooms rows in
 * the same order). The result is SQLite's: rows appear only by ROOM ops, so a
 * pending update is sent just before a ROOM op of that room (a message
 * ahead of its room's row still updates nothing), and max() commutes. */

/* Empties the table, sized for nmsg rooms. 0 or SORI_ENOMEM. */
static int pg__seq_reset(store_backend_t *b, size_t nmsg)
{
    size_t cap = 16;
    while (cap < 2 * nmsg) cap *= 2;
    if (cap > b->seq_cap) {
        struct pg__seq *t = realloc(b->seq, cap * sizeof *t);
        if (!t) return SORI_ENOMEM;
        b->seq = t;
        b->seq_cap = cap;
    }
    memset(b->seq, 0, cap * sizeof *b->seq);
    b->seq_mask = cap - 1;
    return 0;
}

static struct pg__seq *pg__seq_slot(store_backend_t *b, const char *room)
{
    uint64_t h = pg__hash_str(1469598103934665603ULL, room);
    for (size_t i = (size_t)h & b->seq_mask;; i = (i + 1) & b->seq_mask)
        if (!b->seq[i].room || strcmp(b->seq[i].room, room) == 0) return &b->seq[i];
}

static void pg__seq_note(store_backend_t *b, const char *room, int64_t seq)
{
    if (!room) return; /* the insert fails on it anyway */
    struct pg__seq *e = pg__seq_slot(b, room);
    if (!e->room || !e->live || seq > e->seq) e->seq = seq;
    e->room = room;
    e->live = 1;
}

static int pg__seq_send(store_backend_t *b, struct pg__seq *e)
{
    pg__params_t p = {0};
    pg__p_str(&p, e->room);
    pg__p_i64(&p, e->seq);
    e->live = 0;
    return pg__send(b, PQ_MSG_SEQ, &p);
}

static int pg__seq_cmp(const void *x, const void *y)
{
    return strcmp(((const struct pg__seq *)x)->room, ((const struct pg__seq *)y)->room);
}

/* Sends the due updates in room order; returns how many, or < 0. */
static int pg__seq_flush(store_backend_t *b)
{
    size_t n = 0;
    for (size_t i = 0; i <= b->seq_mask; i++)
        if (b->seq[i].room && b->seq[i].live) b->seq[n++] = b->seq[i]; /* n <= i: compacts in place */
    qsort(b->seq, n, sizeof *b->seq, pg__seq_cmp);
    for (size_t i = 0; i < n; i++)
        if (pg__seq_send(b, &b->seq[i])) return SORI_EIO;
    return (int)n;
}

/* Sends room's pending rooms.seq update now, when it has one: before a
 * statement that must see it (the room's row inserted, a seq assigned from
 * it). Returns how many statements it queued (0 or 1), or < 0. */
static int pg__seq_send_pending(store_backend_t *b, const char *room)
{
    struct pg__seq *e = room ? pg__seq_slot(b, room) : NULL;
    if (!(e && e->room && e->live)) return 0;
    int rc = pg__seq_send(b, e);
    return rc ? rc : 1;
}

/* Queues the statements of one op; returns how many (0 to 2) or < 0. */
static int pg__send_op(store_backend_t *b, const store_op_t *op)
{
    pg__params_t p = {0};
    int st, rc;
    switch (op->kind) {
    case STORE_OP_USER:
        st = PQ_USER;
        pg__p_str(&p, op->u.user.name);
        pg__p_i64(&p, op->u.user.created_at);
        pg__p_i64(&p, op->u.user.last_seen);
        break;
    case STORE_OP_ROOM: {
        int pre = pg__seq_send_pending(b, op->u.room.id);
        if (pre < 0) return pre;
        pg__p_str(&p, op->u.room.id);
        pg__p_str(&p, op->u.room.kind);
        pg__p_str(&p, op->u.room.title ? op->u.room.title : "");
        pg__p_i64(&p, op->u.room.created_at);
        pg__p_i64(&p, op->u.room.seq);
        return (rc = pg__send(b, PQ_ROOM, &p)) ? rc : 1 + pre;
    }
    case STORE_OP_MEMBER:
        st = PQ_MEMBER;
        pg__p_str(&p, op->u.member.room);
        pg__p_str(&p, op->u.member.user);
        pg__p_str(&p, op->u.member.role);
        pg__p_i64(&p, op->u.member.last_read);
        pg__p_i64(&p, op->u.member.joined_at);
        break;
    case STORE_OP_MEMBER_DEL:
        st = PQ_MEMBER_DEL;
        pg__p_str(&p, op->u.member.room);
        pg__p_str(&p, op->u.member.user);
        break;
    case STORE_OP_READ:
        st = PQ_READ;
        pg__p_str(&p, op->u.member.room);
        pg__p_str(&p, op->u.member.user);
        pg__p_i64(&p, op->u.member.last_read);
        break;
    case STORE_OP_MESSAGE: {
        const store_msg_t *m = &op->u.msg;
        st = !m->seq_out ? PQ_MSG : m->cid ? PQ_MSG_ASSIGN_CID : PQ_MSG_ASSIGN;
        /* an assigned seq follows the room's explicit ones of this batch:
         * their pending rooms.seq update goes first */
        int pre = m->seq_out ? pg__seq_send_pending(b, m->room) : 0;
        if (pre < 0) return pre;
        if (st == PQ_MSG_ASSIGN_CID) {
            pg__p_str(&p, m->room);
            pg__p_str(&p, m->from);
            pg__p_str(&p, m->cid);
            if ((rc = pg__send(b, PQ_MSG_LOCK, &p))) return rc;
            p.n = 0;
            pre++;
        }
        pg__p_str(&p, m->room);
        if (!m->seq_out) pg__p_i64(&p, m->seq);
        pg__p_i64(&p, (int64_t)m->id); /* the bit pattern */
        pg__p_str(&p, m->from);
        if ((rc = pg__p_text(&p, m->text, m->text_len))) return rc;
        pg__p_i64(&p, m->ts);
        pg__p_str(&p, m->cid);
        pg__p_str(&p, m->meta);
        if ((rc = pg__send(b, st, &p))) return rc;
        if (!m->seq_out) pg__seq_note(b, m->room, m->seq); /* an assigned one is in rooms.seq already */
        return 1 + pre;
    }
    case STORE_OP_ACCOUNT:
        st = PQ_ACCOUNT;
        pg__p_str(&p, op->u.user.name);
        pg__p_i64(&p, op->u.user.created_at);
        pg__p_str(&p, op->u.user.pw_hash);
        break;
    case STORE_OP_UPLOAD: {
        const store_upload_t *u = &op->u.upload;
        pg__p_str(&p, u->id);
        pg__p_str(&p, u->type);
        pg__p_i64(&p, u->size);
        pg__p_i64(&p, u->created_at);
        if ((rc = pg__send(b, PQ_UPLOAD, &p))) return rc;
        p.n = 0;
        pg__p_str(&p, u->id);
        pg__p_str(&p, u->user);
        return (rc = pg__send(b, PQ_UPLOAD_OWNER, &p)) ? rc : 2;
    }
    case STORE_OP_UPLOAD_ROOM:
        st = PQ_UPLOAD_ROOM;
        pg__p_str(&p, op->u.upload.id);
        pg__p_str(&p, op->u.upload.room);
        break;
    case STORE_OP_MENTION:
        st = op->u.mention.seq ? PQ_MENTION : PQ_MENTION_BY_ID;
        pg__p_str(&p, op->u.mention.room);
        pg__p_str(&p, op->u.mention.user);
        pg__p_i64(&p, op->u.mention.seq ? op->u.mention.seq : (int64_t)op->u.mention.msg_id);
        break;
    default:
        snprintf(b->errmsg, sizeof b->errmsg, "unknown op kind %d", (int)op->kind);
        return SORI_EINVAL;
    }
    return (rc = pg__send(b, st, &p)) ? rc : 1;
}

/* Settles a COMMIT whose outcome was unknown: 0 if it committed and this is
 * the same batch (nothing to do), 1 to apply the batch, < 0 to try later. */
static int pg__settle(store_backend_t *b, uint64_t hash)
{
    pg__params_t p = {0};
    int lost, rc = SORI_EIO, out = SORI_EIO;
    pg__p_str(&p, b->limbo_xid);
    if (pg__send(b, PQ_XID_STATUS, &p) || pg__flush(b)) return SORI_EIO;
    for (;;) {
        PGresult *r = pg__result(b, &lost);
        if (lost) return SORI_EIO;
        if (!r) break;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            const char *s = PQgetisnull(r, 0, 0) ? "unknown" : PQgetvalue(r, 0, 0);
            if (!strcmp(s, "committed")) out = hash == b->limbo_hash ? 0 : 1;
            else if (!strcmp(s, "in progress")) out = SORI_EAGAIN;
            else out = 1; /* aborted, or too old to tell: it did not commit */
            LOG_WARN("store", "postgresql: the transaction %s whose COMMIT went unanswered: %s%s", b->limbo_xid, s,
                     out == 0 ? " (the batch is not applied again)" : "");
            rc = 0;
        } else {
            pg__keep(b->errmsg, sizeof b->errmsg, NULL, PQresultErrorMessage(r));
            rc = pg__code(r);
        }
        PQclear(r);
    }
    if (rc) return rc;
    if (out != SORI_EAGAIN) b->limbo = 0;
    return out;
}

/* Notes that statements [from, to) belong to op i. 0 or SORI_ENOMEM. */
static int pg__at(store_backend_t *b, size_t from, size_t to, size_t i)
{
    if (to > b->at_cap) {
        size_t cap = b->at_cap ? b->at_cap : 64;
        while (cap < to) cap *= 2;
        uint32_t *a = realloc(b->at, cap * sizeof *a);
        if (!a) return SORI_ENOMEM;
        b->at = a;
        b->at_cap = cap;
    }
    for (size_t k = from; k < to; k++) b->at[k] = (uint32_t)i;
    return 0;
}

static int pg__apply(store_backend_t *b, const store_op_t *ops, size_t n)
{
    int rc, lost, err = 0;
    size_t i = 0, sent = 0, failed_at = 0, got;
    char xid[24] = "";
    if (n == 0) return 0;
    if ((rc = pg__ready(b))) return rc;
    uint64_t hash = pg__hash(ops, n);
    if (b->limbo && (rc = pg__settle(b, hash)) <= 0) return rc;

    size_t nmsg = 0;
    for (size_t k = 0; k < n; k++) nmsg += ops[k].kind == STORE_OP_MESSAGE;
    if ((rc = pg__seq_reset(b, nmsg))) return rc;

    if (!PQenterPipelineMode(b->conn)) goto lost;
    if (!PQsendQueryParams(b->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0)) goto lost;
    if (pg__send(b, PQ_XID, NULL)) goto lost;
    sent = 2;
    if (pg__at(b, 0, sent, 0)) err = SORI_ENOMEM;
    for (; i < n && !err; i++) {
        b->errmsg[0] = 0;
        int k = pg__send_op(b, &ops[i]);
        if (k < 0) {
            if (!b->conn) goto lost;
            err = k; /* a bad op: end the pipeline, roll back */
            failed_at = i;
            if (!b->errmsg[0]) snprintf(b->errmsg, sizeof b->errmsg, "%s", sori_strerror(k));
            break;
        }
        if (pg__at(b, sent, sent + (size_t)k, i)) err = SORI_ENOMEM;
        sent += (size_t)k;
    }
    if (!err) {
        int k = pg__seq_flush(b);
        if (k < 0) goto lost;
        if (pg__at(b, sent, sent + (size_t)k, n - 1)) err = SORI_ENOMEM;
        sent += (size_t)k;
    }
    if (!PQpipelineSync(b->conn) || pg__flush(b)) goto lost;
    /* One result then NULL per statement (PIPELINE_ABORTED after an error),
     * then the sync. */
    for (got = 0; got <= sent; got++) {
        PGresult *r = pg__result(b, &lost);
        if (lost || !r) goto lost;
        ExecStatusType st = PQresultStatus(r);
        if (got == sent) {
            PQclear(r);
            if (st != PGRES_PIPELINE_SYNC) goto lost;
            break;
        }
        const store_op_t *op = got >= 2 && got < sent && b->at[got] < n ? &ops[b->at[got]] : NULL;
        if (st == PGRES_TUPLES_OK && got == 1 && PQntuples(r) == 1) {
            snprintf(xid, sizeof xid, "%s", PQgetvalue(r, 0, 0));
        } else if (st == PGRES_TUPLES_OK && op && op->kind == STORE_OP_MESSAGE && op->u.msg.seq_out &&
                   PQnfields(r) == 3) {
            /* the seq the store assigned (or an earlier message's of the same
             * sender and cid); no row: the room has no row */
            if (PQntuples(r) == 1) {
                *op->u.msg.seq_out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
                if (op->u.msg.id_out) *op->u.msg.id_out = (uint64_t)strtoll(PQgetvalue(r, 0, 1), NULL, 10);
                if (op->u.msg.ts_out) *op->u.msg.ts_out = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
            } else if (!err) {
                err = SORI_EINVAL;
                failed_at = b->at[got];
                snprintf(b->errmsg, sizeof b->errmsg, "a message for room %s, which has no row, asks for a seq",
                         op->u.msg.room);
            }
        } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_PIPELINE_ABORTED && !err) {
            err = pg__code(r);
            failed_at = got < b->at_cap ? b->at[got] : 0;
            pg__keep(b->errmsg, sizeof b->errmsg, NULL, PQresultErrorMessage(r));
        }
        PQclear(r);
        if ((r = pg__result(b, &lost)) || lost) {
            PQclear(r);
            goto lost;
        }
    }
    if (!PQexitPipelineMode(b->conn)) goto lost;
    if (err) {
        LOG_ERROR("store", "postgresql: transaction of %zu ops rolled back at op %zu: %s", n, failed_at, b->errmsg);
        if (pg__exec(b, "ROLLBACK") && b->conn) pg__drop(b, "ROLLBACK failed");
        return err;
    }
    rc = pg__exec(b, "COMMIT");
    if (rc == 0) {
        memcpy(b->last_xid, xid, sizeof xid);
        return 0;
    }
    if (!b->conn && xid[0]) {
        /* Sent, unanswered: it may have committed. */
        b->limbo = 1;
        b->limbo_hash = hash;
        snprintf(b->limbo_xid, sizeof b->limbo_xid, "%s", xid);
    }
    LOG_ERROR("store", "postgresql: COMMIT of %zu ops failed: %s", n, b->errmsg);
    if (b->conn && PQtransactionStatus(b->conn) != PQTRANS_IDLE) pg__drop(b, "COMMIT left a transaction open");
    return rc;
lost:
    if (b->conn) {
        pg__keep(b->errmsg, sizeof b->errmsg, NULL, PQerrorMessage(b->conn));
        pg__drop(b, b->errmsg);
    }
    LOG_ERROR("store", "postgresql: transaction of %zu ops failed (connection lost before COMMIT): %s", n,
              b->errmsg);
    return SORI_EIO;
}

/* ---- queries ---- */

typedef int (*pg__row_fn)(void *ctx, const PGresult *r, int row);

static const char *pg__str(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static int64_t pg__i64(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Runs prepared statement st, reporting each row to fn until it returns
 * non-zero (kept in *stopped; the rest is read and dropped). single_row
 * streams the rows instead of holding the whole result. The count of rows
 * reported, or a negative code. */
static int pg__query(store_backend_t *b, int st, const pg__params_t *p, int single_row, pg__row_fn fn, void *ctx,
                     int *stopped)
{
    int n = 0, rc = 0, lost;
    *stopped = 0;
    if (pg__send(b, st, p)) return SORI_EIO;
    if (single_row) PQsetSingleRowMode(b->conn);
    if (pg__flush(b)) return SORI_EIO;
    for (;;) {
        PGresult *r = pg__result(b, &lost);
        if (lost) return SORI_EIO;
        if (!r) break;
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_SINGLE_TUPLE || s == PGRES_TUPLES_OK) {
            int rows = PQntuples(r);
            for (int i = 0; i < rows && !*stopped && !rc; i++) {
                n++;
                *stopped = fn(ctx, r, i);
            }
        } else if (!rc) {
            rc = pg__code(r);
            pg__keep(b->errmsg, sizeof b->errmsg, NULL, PQresultErrorMessage(r));
            LOG_ERROR("store", "postgresql: query: %s", b->errmsg);
        }
        PQclear(r);
    }
    return rc ? rc : n;
}

/* Fills m from a row of PG__MSG_COLS; pointers live as long as r. */
static void pg__msg(const PGresult *r, int row, store_msg_t *m)
{
    memset(m, 0, sizeof *m);
    m->room = pg__str(r, row, 0);
    m->seq = pg__i64(r, row, 1);
    m->id = (uint64_t)pg__i64(r, row, 2);
    m->from = pg__str(r, row, 3);
    m->text = PQgetvalue(r, row, 4);
    m->text_len = (size_t)PQgetlength(r, row, 4);
    m->ts = pg__i64(r, row, 5);
    m->cid = pg__str(r, row, 6);
    m->meta = pg__str(r, row, 7);
}

typedef struct {
    store_msg_cb cb;
    void *arg;
} pg__msg_ctx_t;

static int pg__msg_row(void *ctx, const PGresult *r, int row)
{
    pg__msg_ctx_t *c = ctx;
    store_msg_t m;
    pg__msg(r, row, &m);
    return c->cb(c->arg, &m);
}

static int pg__range(store_backend_t *b, const store_range_t *q, store_msg_cb cb, void *arg)
{
    pg__params_t p = {0};
    pg__msg_ctx_t c = {cb, arg};
    int stopped, rc;
    if (!q->room || q->limit <= 0) return 0;
    if ((rc = pg__ready(b))) return rc;
    pg__p_str(&p, q->room);
    pg__p_i64(&p, q->after ? q->after : INT64_MIN);
    pg__p_i64(&p, q->before ? q->before : INT64_MAX);
    pg__p_i64(&p, q->limit);
    rc = pg__query(b, q->newest_first ? PQ_RANGE_DESC : PQ_RANGE_ASC, &p, 0, pg__msg_row, &c, &stopped);
    return stopped < 0 ? stopped : rc;
}

static int pg__user_row(void *ctx, const PGresult *r, int row)
{
    const store_load_cb_t *cb = ctx;
    store_user_t u = {pg__str(r, row, 0), pg__i64(r, row, 1), pg__i64(r, row, 2), pg__str(r, row, 3)};
    return cb->user(cb->arg, &u);
}

static int pg__room_row(void *ctx, const PGresult *r, int row)
{
    const store_load_cb_t *cb = ctx;
    const char *title = pg__str(r, row, 2);
    store_room_t x = {pg__str(r, row, 0), pg__str(r, row, 1), title ? title : "", pg__i64(r, row, 3),
                      pg__i64(r, row, 4)};
    return cb->room(cb->arg, &x);
}

static int pg__member_row(void *ctx, const PGresult *r, int row)
{
    const store_load_cb_t *cb = ctx;
    store_member_t m = {pg__str(r, row, 0), pg__str(r, row, 1), pg__str(r, row, 2), pg__i64(r, row, 3),
                        pg__i64(r, row, 4)};
    return cb->member(cb->arg, &m);
}

static int pg__upload_row(void *ctx, const PGresult *r, int row)
{
    const store_load_cb_t *cb = ctx;
    const char *kind = pg__str(r, row, 4);
    store_upload_t u = {pg__str(r, row, 0), pg__str(r, row, 1), pg__i64(r, row, 2), pg__i64(r, row, 3), NULL, NULL};
    if (kind && kind[0] == 'u') u.user = pg__str(r, row, 5);
    else u.room = pg__str(r, row, 5);
    return cb->upload(cb->arg, &u);
}

static int pg__mention_row(void *ctx, const PGresult *r, int row)
{
    const store_load_cb_t *cb = ctx;
    store_mention_t m = {pg__str(r, row, 0), pg__str(r, row, 1), pg__i64(r, row, 2)};
    return cb->mention(cb->arg, &m);
}

static int pg__load(store_backend_t *b, int recent, int64_t idem_since_ms, const store_load_cb_t *cb)
{
    int rc, stopped = 0;
    pg__params_t p = {0};
    pg__msg_ctx_t c;
    if ((rc = pg__ready(b))) return rc;
    b->io_ms = PG__SLOW_MS;
    /* One snapshot: the parts are consistent with each other. */
    char sql[192];
    snprintf(sql, sizeof sql,
             "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = %d;"
             " SET LOCAL lock_timeout = %d",
             PG__SLOW_MS, PG__SLOW_MS);
    if ((rc = pg__exec(b, sql))) goto fail;
#define PG__PART(cond, st, params, fn, ctx)                                 \
    if (cond) {                                                             \
        rc = pg__query(b, (st), (params), 1, (fn), (ctx), &stopped);        \
        if (rc < 0) goto fail;                                              \
        if (stopped) goto stop;                                             \
    }
    PG__PART(cb->user, PQ_LOAD_USERS, NULL, pg__user_row, (void *)cb);
    PG__PART(cb->room, PQ_LOAD_ROOMS, NULL, pg__room_row, (void *)cb);
    PG__PART(cb->member, PQ_LOAD_MEMBERS, NULL, pg__member_row, (void *)cb);
    c = (pg__msg_ctx_t){cb->recent, cb->arg};
    p.n = 0;
    pg__p_i64(&p, recent);
    PG__PART(cb->recent && recent > 0, PQ_LOAD_RECENT, &p, pg__msg_row, &c);
    c = (pg__msg_ctx_t){cb->idem, cb->arg};
    p.n = 0;
    pg__p_i64(&p, idem_since_ms);
    PG__PART(cb->idem, PQ_LOAD_IDEM, &p, pg__msg_row, &c);
    PG__PART(cb->upload, PQ_LOAD_UPLOADS, NULL, pg__upload_row, (void *)cb);
    PG__PART(cb->mention, PQ_LOAD_MENTIONS, NULL, pg__mention_row, (void *)cb);
#undef PG__PART
    rc = pg__exec(b, "COMMIT");
    b->io_ms = PG__IO_MS;
    return rc;
fail:
    LOG_ERROR("store", "postgresql: load: %s", b->errmsg);
    stopped = rc ? rc : SORI_EIO;
stop:
    if (b->conn && pg__exec(b, "ROLLBACK") && b->conn) pg__drop(b, "ROLLBACK failed");
    b->io_ms = PG__IO_MS;
    return stopped;
}

/* ---- search ---- */

/* Parses the FTS5 expression ("w1" "w""2" ...; bare words too) into a
 * PostgreSQL array literal {"w1","w\"2"} in out (malloc'd). The count of
 * words, or < 0. */
static int pg__words(const char *match, char **out)
{
    size_t cap = 3 * strlen(match) + 8, at = 0; /* each byte at most escaped, each word quoted and a comma */
    int words = 0;
    char *a = malloc(cap);
    if (!a) return SORI_ENOMEM;
    a[at++] = '{';
    for (const char *s = match; *s;) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
            s++;
            continue;
        }
        if (words) a[at++] = ',';
        a[at++] = '"';
        if (*s == '"') {
            for (s++; *s; s++) {
                if (*s == '"') {
                    if (s[1] != '"') {
                        s++;
                        break;
                    }
                    s++; /* "" is one quote */
                }
                if (*s == '"' || *s == '\\') a[at++] = '\\';
                a[at++] = *s;
            }
        } else {
            for (; *s && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r'; s++) {
                if (*s == '"' || *s == '\\') a[at++] = '\\';
                a[at++] = *s;
            }
        }
        a[at++] = '"';
        words++;
    }
    a[at++] = '}';
    a[at] = 0;
    *out = a;
    return words;
}

static int pg__search(store_backend_t *b, const store_search_t *q, store_msg_cb cb, void *arg)
{
    pg__params_t p = {0};
    pg__msg_ctx_t c = {cb, arg};
    char *words = NULL;
    int stopped, rc;
    if (!q->match || q->limit <= 0) return 0;
    if ((rc = pg__words(q->match, &words)) <= 0) {
        free(words);
        return rc < 0 ? rc : SORI_EINVAL;
    }
    if ((rc = pg__ready(b))) {
        free(words);
        return rc;
    }
    pg__p_str(&p, words);
    pg__p_str(&p, q->rooms_json ? q->rooms_json : "[]");
    pg__p_i64(&p, q->limit);
    if (q->room) pg__p_str(&p, q->room);
    rc = pg__query(b, q->room ? PQ_SEARCH_ROOM : PQ_SEARCH, &p, 0, pg__msg_row, &c, &stopped);
    free(words);
    return stopped < 0 ? stopped : rc;
}

const store_type_t store_type_pg = {
    .name = "postgresql",
    .open = pg__open,
    .close = pg__close,
    .apply = pg__apply,
    .load = pg__load,
    .range = pg__range,
    .search = pg__search,
};

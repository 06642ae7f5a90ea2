/* The store conformance suite: store/store.c (threads, queues, group commit)
 * and the backend named by SORI_STORE_TYPE (default "sqlite"), driven
 * through store_type_t and through store_t. SORI_STORE_URL selects the
 * database (default: a fresh mkdtemp directory per test, removed after). So
 * that the suite can run against one shared database (PostgreSQL), every test
 * names its users and rooms with a prefix unique to the run and the test, and
 * only looks at what carries its prefix. SORI_TEST_LOG=1 shows the log.
 * test_sqlite_specifics and test_pg_* run for their backend only (store_pg.c
 * is included too, for its internals); test_pg_restart needs SORI_PG_CTL
 * (scripts/pg-test.sh sets it: `scripts/pg-test.sh build/tests/test_store`). */
#include "store/store.c"
#include "store/store_pg.c"
#include "chat/chat_text.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <limits.h>
#include <sqlite3.h>
#include <unistd.h>

static const store_type_t *T;

/* ---- per-test context: the url, a name prefix, a string arena ---- */

typedef struct {
    char url[PATH_MAX];
    int own_dir;
    char pfx[48];
    char arena[1 << 16];
    size_t used;
} tctx_t;

static int tctx_counter;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    tctx_t *t = calloc(1, sizeof *t);
    if (!t) return -1;
    const char *url = getenv("SORI_STORE_URL");
    if (url && *url) {
        snprintf(t->url, sizeof t->url, "%s", url);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(t->url, sizeof t->url, "%s/sori-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(t->url)) {
            free(t);
            return -1;
        }
        t->own_dir = 1;
    }
    snprintf(t->pfx, sizeof t->pfx, "t%ld.%ld.%d.", (long)getpid(), (long)time(NULL), ++tctx_counter);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tctx_t *t = *state;
    if (t->own_dir) nftw(t->url, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(t);
    return 0;
}

/* "<prefix><name>", living as long as the test. */
static const char *nm(tctx_t *t, const char *name)
{
    size_t n = strlen(t->pfx) + strlen(name) + 1;
    assert_true(t->used + n <= sizeof t->arena);
    char *p = t->arena + t->used;
    snprintf(p, n, "%s%s", t->pfx, name);
    t->used += n;
    return p;
}

static int mine(const char *pfx, const char *s)
{
    return s && strncmp(s, pfx, strlen(pfx)) == 0;
}

static store_backend_t *bopen(tctx_t *t, int migrate)
{
    char err[256] = "";
    store_backend_t *b = T->open(t->url, migrate, err, sizeof err);
    if (!b) print_error("open %s: %s\n", t->url, err);
    assert_non_null(b);
    return b;
}

/* ---- op builders ---- */

static store_op_t op_user(const char *name, int64_t created, int64_t seen)
{
    return (store_op_t){.kind = STORE_OP_USER, .u.user = {name, created, seen}};
}

static store_op_t op_room(const char *id, const char *kind, const char *title, int64_t created)
{
    return (store_op_t){.kind = STORE_OP_ROOM, .u.room = {id, kind, title, created, 0}};
}

static store_op_t op_member(int kind, const char *room, const char *user, const char *role, int64_t last_read,
                            int64_t joined)
{
    return (store_op_t){.kind = kind, .u.member = {room, user, role, last_read, joined}};
}

/* Message ids: high bit set on purpose (uint64 round trip). */
static uint64_t msg_id(const char *room, int64_t seq)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = room; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return (h ^ ((uint64_t)seq * 0x9E3779B97F4A7C15ULL)) | (1ULL << 63);
}

static store_op_t op_msg(const char *room, int64_t seq, const char *from, const char *text, int64_t ts,
                         const char *cid, const char *meta)
{
    return (store_op_t){.kind = STORE_OP_MESSAGE,
                        .u.msg = {msg_id(room, seq), seq, ts, room, from, text, text ? strlen(text) : 0, cid, meta}};
}

/* ---- a recorder for load() and range() ---- */

typedef struct {
    char room[96], from[96], text[256], cid[96], meta[256];
    size_t text_len;
    int has_cid, has_meta;
    uint64_t id;
    int64_t seq, ts;
} r_msg_t;

typedef struct {
    const char *pfx;
    int phase, phase_err;
    struct {
        char name[96];
        int64_t created_at, last_seen;
    } users[32];
    int nusers;
    struct {
        char id[96], kind[16], title[96];
        int64_t created_at, seq;
    } rooms[32];
    int nrooms;
    struct {
        char room[96], user[96], role[16];
        int64_t last_read, joined_at;
    } members[32];
    int nmembers;
    r_msg_t recent[2048];
    int nrecent;
    r_msg_t idem[256];
    int nidem;
    int stop_users_at; /* >0: the user callback returns 7 on that call */
} rec_t;

static void rec_phase(rec_t *r, int phase)
{
    if (phase < r->phase) r->phase_err++;
    r->phase = phase;
}

static void copy_msg(r_msg_t *o, const store_msg_t *m)
{
    snprintf(o->room, sizeof o->room, "%s", m->room);
    snprintf(o->from, sizeof o->from, "%s", m->from);
    assert_true(m->text_len < sizeof o->text);
    memcpy(o->text, m->text, m->text_len);
    o->text[m->text_len] = 0;
    o->text_len = m->text_len;
    o->has_cid = m->cid != NULL;
    o->has_meta = m->meta != NULL;
    snprintf(o->cid, sizeof o->cid, "%s", m->cid ? m->cid : "");
    snprintf(o->meta, sizeof o->meta, "%s", m->meta ? m->meta : "");
    o->id = m->id;
    o->seq = m->seq;
    o->ts = m->ts;
}

static int rec_user(void *arg, const store_user_t *u)
{
    rec_t *r = arg;
    rec_phase(r, 1);
    if (!mine(r->pfx, u->name)) return 0;
    assert_true(r->nusers < 32);
    snprintf(r->users[r->nusers].name, 96, "%s", u->name);
    r->users[r->nusers].created_at = u->created_at;
    r->users[r->nusers].last_seen = u->last_seen;
    r->nusers++;
    if (r->stop_users_at && r->nusers == r->stop_users_at) return 7;
    return 0;
}

static int rec_room(void *arg, const store_room_t *x)
{
    rec_t *r = arg;
    rec_phase(r, 2);
    if (!mine(r->pfx, x->id)) return 0;
    assert_true(r->nrooms < 32);
    snprintf(r->rooms[r->nrooms].id, 96, "%s", x->id);
    snprintf(r->rooms[r->nrooms].kind, 16, "%s", x->kind);
    snprintf(r->rooms[r->nrooms].title, 96, "%s", x->title);
    r->rooms[r->nrooms].created_at = x->created_at;
    r->rooms[r->nrooms].seq = x->seq;
    r->nrooms++;
    return 0;
}

static int rec_member(void *arg, const store_member_t *m)
{
    rec_t *r = arg;
    rec_phase(r, 3);
    if (!mine(r->pfx, m->room)) return 0;
    assert_true(r->nmembers < 32);
    snprintf(r->members[r->nmembers].room, 96, "%s", m->room);
    snprintf(r->members[r->nmembers].user, 96, "%s", m->user);
    snprintf(r->members[r->nmembers].role, 16, "%s", m->role);
    r->members[r->nmembers].last_read = m->last_read;
    r->members[r->nmembers].joined_at = m->joined_at;
    r->nmembers++;
    return 0;
}

static int rec_recent(void *arg, const store_msg_t *m)
{
    rec_t *r = arg;
    rec_phase(r, 4);
    if (!mine(r->pfx, m->room)) return 0;
    assert_true(r->nrecent < 2048);
    copy_msg(&r->recent[r->nrecent++], m);
    return 0;
}

static int rec_idem(void *arg, const store_msg_t *m)
{
    rec_t *r = arg;
    rec_phase(r, 5);
    if (!mine(r->pfx, m->room)) return 0;
    assert_true(r->nidem < 256);
    copy_msg(&r->idem[r->nidem++], m);
    return 0;
}

static rec_t *rec_new(tctx_t *t)
{
    rec_t *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->pfx = t->pfx;
    return r;
}

static store_load_cb_t rec_cb(rec_t *r)
{
    return (store_load_cb_t){r, rec_user, rec_room, rec_member, rec_recent, rec_idem};
}

static int find_user(rec_t *r, const char *name)
{
    for (int i = 0; i < r->nusers; i++)
        if (strcmp(r->users[i].name, name) == 0) return i;
    return -1;
}

static int find_room(rec_t *r, const char *id)
{
    for (int i = 0; i < r->nrooms; i++)
        if (strcmp(r->rooms[i].id, id) == 0) return i;
    return -1;
}

static int find_member(rec_t *r, const char *room, const char *user)
{
    for (int i = 0; i < r->nmembers; i++)
        if (strcmp(r->members[i].room, room) == 0 && strcmp(r->members[i].user, user) == 0) return i;
    return -1;
}

/* The recent messages of one room, in the order reported; checks that a
 * room's messages are reported together. */
static int recent_of(rec_t *r, const char *room, int64_t *seqs, int max)
{
    int n = 0, first = -1, last = -1;
    for (int i = 0; i < r->nrecent; i++) {
        if (strcmp(r->recent[i].room, room) != 0) continue;
        if (first < 0) first = i;
        last = i;
        if (n < max) seqs[n] = r->recent[i].seq;
        n++;
    }
    if (n) assert_int_equal(last - first + 1, n);
    return n;
}

typedef struct {
    r_msg_t m[256];
    int n;
    int stop_at; /* >0: return -3 on that call */
} range_rec_t;

static int range_cb(void *arg, const store_msg_t *m)
{
    range_rec_t *rr = arg;
    assert_true(rr->n < 256);
    copy_msg(&rr->m[rr->n++], m);
    if (rr->stop_at && rr->n == rr->stop_at) return -3;
    return 0;
}

/* ===================== backend level ===================== */

static void test_type_find(void **state)
{
    (void)state;
    assert_ptr_equal(store_type_find("sqlite"), &store_type_sqlite);
    assert_ptr_equal(store_type_find("postgresql"), &store_type_pg);
    assert_ptr_equal(store_type_find("postgres"), &store_type_pg);
    assert_null(store_type_find("nope"));
    assert_null(store_type_find(NULL));
    assert_non_null(T);
}

static void test_migrations_idempotent(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    T->close(b);
    /* again, then two at once, then one that does not migrate */
    store_backend_t *b1 = bopen(t, 1);
    store_backend_t *b2 = bopen(t, 1);
    store_backend_t *b3 = bopen(t, 0);
    store_op_t op = op_user(nm(t, "alice"), 10, 0);
    assert_int_equal(T->apply(b1, &op, 1), 0);
    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(T->load(b3, 10, 0, &cb), 0);
    assert_int_equal(r->nusers, 1);
    T->close(b1);
    T->close(b2);
    T->close(b3);
    /* and once more after data exists */
    b = bopen(t, 1);
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    assert_int_equal(T->load(b, 10, 0, &cb), 0);
    assert_int_equal(r->nusers, 1);
    T->close(b);
    free(r);
}

static void test_apply_and_load(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *alice = nm(t, "alice"), *bob = nm(t, "bob"), *carol = nm(t, "carol");
    const char *r1 = nm(t, "r1"), *r2 = nm(t, "r2"), *r3 = nm(t, "r3");
    const int64_t now = 1700000000000LL, since = now - 86400000LL;
    store_op_t ops[32];
    int n = 0;
    ops[n++] = op_user(alice, 100, 0);
    ops[n++] = op_user(bob, 200, 250);
    ops[n++] = op_user(carol, 300, 0);
    ops[n++] = op_room(r1, "public", "Room one", 1000);
    ops[n++] = op_room(r2, "dm", "", 1100);
    ops[n++] = op_room(r3, "private", NULL, 1200); /* NULL title reads back as "" */
    ops[n++] = op_member(STORE_OP_MEMBER, r1, alice, "owner", 0, 1000);
    ops[n++] = op_member(STORE_OP_MEMBER, r1, bob, "member", 0, 1001);
    ops[n++] = op_member(STORE_OP_MEMBER, r2, alice, "member", 0, 1100);
    ops[n++] = op_member(STORE_OP_MEMBER, r2, bob, "member", 0, 1100);
    /* r1: seq 1..5; 1 is old (outside the idem window), 2 and 4 carry cids */
    ops[n++] = op_msg(r1, 1, alice, "one", since - 1, "c-old", NULL);
    ops[n++] = op_msg(r1, 2, bob, "two", now + 2, "c2", "{\"mentions\":[\"alice\"]}");
    ops[n++] = op_msg(r1, 3, alice, "three", now + 3, NULL, NULL);
    ops[n++] = op_msg(r1, 4, alice, "four", since, "c4", NULL); /* exactly at the bound: in */
    ops[n++] = op_msg(r1, 5, bob, "five", now + 5, NULL, "{}");
    ops[n++] = op_msg(r2, 1, alice, "dm one", now + 6, NULL, NULL);
    ops[n++] = op_msg(r2, 2, bob, "dm two", now + 7, "c7", NULL);
    assert_int_equal(T->apply(b, ops, (size_t)n), 0);

    n = 0;
    ops[n++] = op_user(alice, 999, 500);                                  /* created_at kept, last_seen set */
    ops[n++] = op_user(bob, 999, 0);                                      /* last_seen 0: kept */
    ops[n++] = op_room(r1, "private", "changed", 5);                      /* exists: unchanged */
    ops[n++] = op_member(STORE_OP_READ, r1, alice, NULL, 3, 0);           /* last_read 3 */
    ops[n++] = op_member(STORE_OP_READ, r1, alice, NULL, 2, 0);           /* never backwards */
    ops[n++] = op_member(STORE_OP_MEMBER, r1, alice, "admin", 0, 77);     /* role only */
    ops[n++] = op_member(STORE_OP_MEMBER_DEL, r2, alice, NULL, 0, 0);     /* gone */
    ops[n++] = op_member(STORE_OP_READ, r3, carol, NULL, 9, 0);           /* not a member: nothing */
    ops[n++] = op_member(STORE_OP_MEMBER_DEL, r3, carol, NULL, 0, 0);     /* absent: fine */
    assert_int_equal(T->apply(b, ops, (size_t)n), 0);
    assert_int_equal(T->apply(b, ops, 0), 0);

    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(T->load(b, 3, since, &cb), 0);
    assert_int_equal(r->phase_err, 0);

    assert_int_equal(r->nusers, 3);
    int i = find_user(r, alice);
    assert_true(i >= 0);
    assert_int_equal(r->users[i].created_at, 100);
    assert_int_equal(r->users[i].last_seen, 500);
    i = find_user(r, bob);
    assert_int_equal(r->users[i].created_at, 200);
    assert_int_equal(r->users[i].last_seen, 250);
    i = find_user(r, carol);
    assert_int_equal(r->users[i].last_seen, 0);

    assert_int_equal(r->nrooms, 3);
    i = find_room(r, r1);
    assert_string_equal(r->rooms[i].kind, "public");
    assert_string_equal(r->rooms[i].title, "Room one");
    assert_int_equal(r->rooms[i].created_at, 1000);
    assert_int_equal(r->rooms[i].seq, 5);
    i = find_room(r, r2);
    assert_string_equal(r->rooms[i].kind, "dm");
    assert_string_equal(r->rooms[i].title, "");
    assert_int_equal(r->rooms[i].seq, 2);
    i = find_room(r, r3);
    assert_string_equal(r->rooms[i].title, "");
    assert_int_equal(r->rooms[i].seq, 0);

    assert_int_equal(r->nmembers, 3);
    i = find_member(r, r1, alice);
    assert_true(i >= 0);
    assert_string_equal(r->members[i].role, "admin");
    assert_int_equal(r->members[i].last_read, 3);
    assert_int_equal(r->members[i].joined_at, 1000);
    i = find_member(r, r1, bob);
    assert_string_equal(r->members[i].role, "member");
    assert_int_equal(r->members[i].last_read, 0);
    assert_int_equal(r->members[i].joined_at, 1001);
    assert_true(find_member(r, r2, alice) < 0);
    assert_true(find_member(r, r2, bob) >= 0);
    assert_true(find_member(r, r3, carol) < 0);

    /* recent: the newest 3 per room, oldest first */
    int64_t seqs[8];
    assert_int_equal(recent_of(r, r1, seqs, 8), 3);
    assert_int_equal(seqs[0], 3);
    assert_int_equal(seqs[1], 4);
    assert_int_equal(seqs[2], 5);
    assert_int_equal(recent_of(r, r2, seqs, 8), 2);
    assert_int_equal(seqs[0], 1);
    assert_int_equal(seqs[1], 2);
    assert_int_equal(recent_of(r, r3, seqs, 8), 0);
    assert_int_equal(r->nrecent, 5);
    for (i = 0; i < r->nrecent; i++) {
        r_msg_t *m = &r->recent[i];
        assert_int_equal(m->id, msg_id(m->room, m->seq));
        if (strcmp(m->room, r1) == 0 && m->seq == 5) {
            assert_string_equal(m->text, "five");
            assert_int_equal(m->text_len, 4);
            assert_string_equal(m->from, bob);
            assert_int_equal(m->ts, now + 5);
            assert_false(m->has_cid);
            assert_true(m->has_meta);
            assert_string_equal(m->meta, "{}");
        }
    }

    /* idem: messages with a cid and ts >= since */
    assert_int_equal(r->nidem, 3);
    int seen = 0;
    for (i = 0; i < r->nidem; i++) {
        r_msg_t *m = &r->idem[i];
        assert_true(m->has_cid);
        if (strcmp(m->cid, "c2") == 0) {
            seen |= 1;
            assert_string_equal(m->from, bob);
            assert_string_equal(m->room, r1);
            assert_int_equal(m->seq, 2);
            assert_string_equal(m->meta, "{\"mentions\":[\"alice\"]}");
        } else if (strcmp(m->cid, "c4") == 0) {
            seen |= 2;
        } else if (strcmp(m->cid, "c7") == 0) {
            seen |= 4;
            assert_string_equal(m->room, r2);
        }
    }
    assert_int_equal(seen, 7);

    /* recent = 0 and NULL callbacks report nothing of those kinds */
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    store_load_cb_t some = {r, NULL, rec_room, NULL, rec_recent, NULL};
    assert_int_equal(T->load(b, 0, since, &some), 0);
    assert_int_equal(r->nusers, 0);
    assert_int_equal(r->nrooms, 3);
    assert_int_equal(r->nrecent, 0);
    assert_int_equal(r->nidem, 0);

    /* a callback's non-zero result stops the load and is returned */
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    r->stop_users_at = 1;
    assert_int_equal(T->load(b, 3, since, &cb), 7);
    assert_int_equal(r->nusers, 1);
    assert_int_equal(r->nrooms, 0);
    /* and the connection still works */
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    assert_int_equal(T->load(b, 3, since, &cb), 0);
    assert_int_equal(r->nusers, 3);

    free(r);
    T->close(b);
}

static void test_read_and_member_rules(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "u"), *room = nm(t, "room");
    store_op_t ops[4] = {op_user(u, 1, 0), op_room(room, "public", "x", 1),
                         op_member(STORE_OP_MEMBER, room, u, "member", 4, 50)};
    assert_int_equal(T->apply(b, ops, 3), 0);
    int64_t reads[] = {10, 3, 10, 0, 11, -5};
    int64_t want[] = {10, 10, 10, 10, 11, 11};
    rec_t *r = rec_new(t);
    store_load_cb_t cb = {r, NULL, NULL, rec_member, NULL, NULL};
    for (int k = 0; k < 6; k++) {
        store_op_t op = op_member(STORE_OP_READ, room, u, NULL, reads[k], 0);
        assert_int_equal(T->apply(b, &op, 1), 0);
        memset(r, 0, sizeof *r);
        r->pfx = t->pfx;
        assert_int_equal(T->load(b, 0, 0, &cb), 0);
        assert_int_equal(r->nmembers, 1);
        assert_int_equal(r->members[0].last_read, want[k]);
    }
    /* MEMBER again: role changes, last_read and joined_at stay */
    ops[0] = op_member(STORE_OP_MEMBER, room, u, "owner", 0, 999);
    assert_int_equal(T->apply(b, ops, 1), 0);
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    assert_int_equal(T->load(b, 0, 0, &cb), 0);
    assert_int_equal(r->nmembers, 1);
    assert_string_equal(r->members[0].role, "owner");
    assert_int_equal(r->members[0].last_read, 11);
    assert_int_equal(r->members[0].joined_at, 50);
    /* MEMBER_DEL, then MEMBER again starts afresh */
    ops[0] = op_member(STORE_OP_MEMBER_DEL, room, u, NULL, 0, 0);
    assert_int_equal(T->apply(b, ops, 1), 0);
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    assert_int_equal(T->load(b, 0, 0, &cb), 0);
    assert_int_equal(r->nmembers, 0);
    ops[0] = op_member(STORE_OP_MEMBER, room, u, "member", 0, 60);
    assert_int_equal(T->apply(b, ops, 1), 0);
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    assert_int_equal(T->load(b, 0, 0, &cb), 0);
    assert_int_equal(r->nmembers, 1);
    assert_int_equal(r->members[0].last_read, 0);
    assert_int_equal(r->members[0].joined_at, 60);
    free(r);
    T->close(b);
}

static void test_failing_op_rolls_back_batch(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "u"), *v = nm(t, "v"), *room = nm(t, "room"), *other = nm(t, "other");
    store_op_t ops[8] = {op_user(u, 1, 0), op_room(room, "public", "t", 1), op_msg(room, 1, u, "a", 5, NULL, NULL)};
    assert_int_equal(T->apply(b, ops, 3), 0);

    /* duplicate (room, seq) at the end of a batch */
    ops[0] = op_user(v, 2, 0);
    ops[1] = op_room(other, "public", "o", 2);
    ops[2] = op_member(STORE_OP_MEMBER, room, v, "member", 0, 2);
    ops[3] = op_msg(room, 2, u, "b", 6, NULL, NULL);
    ops[4] = op_msg(room, 1, u, "dup", 7, NULL, NULL);
    assert_true(T->apply(b, ops, 5) < 0);
    /* duplicate id under another (room, seq) */
    ops[4] = op_msg(room, 3, u, "dup id", 7, NULL, NULL);
    ops[4].u.msg.id = msg_id(room, 1);
    assert_true(T->apply(b, ops, 5) < 0);
    /* a missing required field */
    ops[4] = op_user(NULL, 1, 0);
    assert_true(T->apply(b, ops, 5) < 0);

    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(T->load(b, 10, 0, &cb), 0);
    assert_int_equal(r->nusers, 1);
    assert_string_equal(r->users[0].name, u);
    assert_int_equal(r->nrooms, 1);
    assert_int_equal(r->rooms[0].seq, 1);
    assert_int_equal(r->nmembers, 0);
    assert_int_equal(r->nrecent, 1);
    assert_string_equal(r->recent[0].text, "a");

    /* the connection is usable afterwards */
    assert_int_equal(T->apply(b, ops, 4), 0);
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    assert_int_equal(T->load(b, 10, 0, &cb), 0);
    assert_int_equal(r->nusers, 2);
    assert_int_equal(r->nrooms, 2);
    assert_int_equal(r->nmembers, 1);
    assert_int_equal(r->nrecent, 2);
    assert_int_equal(r->rooms[find_room(r, room)].seq, 2);
    free(r);
    T->close(b);
}

/* seq_out: the store assigns each message the room row's next seq, in the
 * transaction; explicit seqs and assigned ones mix; a batch that fails
 * gives its seqs back; a room without a row fails the batch. */
static void test_store_assigned_seq(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "u"), *ra = nm(t, "ra"), *rb = nm(t, "rb"), *ghost = nm(t, "ghost");
    store_op_t rooms[2] = {op_room(ra, "public", "", 1), op_room(rb, "public", "", 1)};
    assert_int_equal(T->apply(b, rooms, 2), 0);
    /* one batch: a, b, a, a (assigned) */
    int64_t got[6] = {0};
    const char *which[6] = {ra, rb, ra, ra, rb, ra};
    store_op_t ops[6];
    for (int i = 0; i < 4; i++) {
        ops[i] = op_msg(which[i], 0, u, "assigned", 10 + i, NULL, NULL);
        ops[i].u.msg.id = msg_id(which[i], 100 + i);
        ops[i].u.msg.seq_out = &got[i];
    }
    assert_int_equal(T->apply(b, ops, 4), 0);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 1);
    assert_int_equal(got[2], 2);
    assert_int_equal(got[3], 3);
    /* an explicit seq 10 in room a, then an assigned one: 11 */
    ops[0] = op_msg(ra, 10, u, "explicit", 20, NULL, NULL);
    ops[1] = op_msg(ra, 0, u, "after", 21, NULL, NULL);
    ops[1].u.msg.id = msg_id(ra, 111);
    ops[1].u.msg.seq_out = &got[4];
    assert_int_equal(T->apply(b, ops, 2), 0);
    assert_int_equal(got[4], 11);
    /* a failing batch (a duplicate id) gives its seq back */
    ops[0] = op_msg(rb, 0, u, "rolled back", 30, NULL, NULL);
    ops[0].u.msg.id = msg_id(rb, 200);
    ops[0].u.msg.seq_out = &got[5];
    ops[1] = op_msg(rb, 77, u, "dup id", 31, NULL, NULL);
    ops[1].u.msg.id = msg_id(ra, 100); /* already stored */
    assert_true(T->apply(b, ops, 2) < 0);
    ops[1] = op_msg(rb, 0, u, "kept", 32, NULL, NULL);
    ops[1].u.msg.id = msg_id(rb, 201);
    ops[1].u.msg.seq_out = &got[5];
    assert_int_equal(T->apply(b, &ops[1], 1), 0);
    assert_int_equal(got[5], 2);
    /* what is stored: room a 1, 2, 3, 10, 11; room b 1, 2 */
    range_rec_t *rr = calloc(1, sizeof *rr);
    store_range_t q = {ra, 0, 0, 10, 0};
    assert_int_equal(T->range(b, &q, range_cb, rr), 5);
    int64_t want_a[5] = {1, 2, 3, 10, 11};
    for (int i = 0; i < 5; i++) assert_int_equal(rr->m[i].seq, want_a[i]);
    memset(rr, 0, sizeof *rr);
    store_range_t qb = {rb, 0, 0, 10, 0};
    assert_int_equal(T->range(b, &qb, range_cb, rr), 2);
    assert_string_equal(rr->m[1].text, "kept");
    assert_int_equal(rr->m[1].seq, 2);
    free(rr);
    /* a room without a row: the batch fails, nothing of it is stored */
    int64_t g = 0;
    ops[0] = op_msg(ghost, 0, u, "nowhere", 40, NULL, NULL);
    ops[0].u.msg.seq_out = &g;
    assert_true(T->apply(b, ops, 1) < 0);
    T->close(b);
}

static void test_message_without_room(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "u"), *room = nm(t, "ghost");
    store_op_t op = op_msg(room, 1, u, "lost", 1, NULL, NULL);
    assert_int_equal(T->apply(b, &op, 1), 0); /* a caller bug, but no crash and no failure */
    range_rec_t *rr = calloc(1, sizeof *rr);
    store_range_t q = {room, 0, 0, 10, 0};
    assert_int_equal(T->range(b, &q, range_cb, rr), 1);
    free(rr);
    T->close(b);
}

static void test_message_fields(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "\xc3\xa9mile"), *room = nm(t, "room");
    const char *txt = "h\xc3\xa9llo \xe2\x9c\x93 \"quoted\" tail-not-stored";
    store_op_t ops[4] = {op_room(room, "public", "t", 1)};
    ops[1] = op_msg(room, 1, u, txt, INT64_C(1) << 42, "cid-1", "{\"a\":[1,2]}");
    ops[1].u.msg.text_len = strlen(txt) - strlen(" tail-not-stored"); /* bound by length */
    const uint64_t big_id = msg_id(room, 1), small_id = msg_id(room, 2) >> 40; /* unique per test */
    ops[2] = op_msg(room, 2, u, "", 0, NULL, NULL);
    ops[1].u.msg.id = big_id;
    ops[2].u.msg.id = small_id;
    assert_int_equal(T->apply(b, ops, 3), 0);
    range_rec_t *rr = calloc(1, sizeof *rr);
    store_range_t q = {room, 0, 0, 10, 0};
    assert_int_equal(T->range(b, &q, range_cb, rr), 2);
    r_msg_t *m = &rr->m[0];
    assert_string_equal(m->room, room);
    assert_string_equal(m->from, u);
    assert_int_equal(m->seq, 1);
    assert_true(m->id == big_id && big_id > (uint64_t)INT64_MAX);
    assert_int_equal(m->ts, INT64_C(1) << 42);
    assert_int_equal(m->text_len, strlen(txt) - strlen(" tail-not-stored"));
    assert_string_equal(m->text, "h\xc3\xa9llo \xe2\x9c\x93 \"quoted\"");
    assert_true(m->has_cid);
    assert_string_equal(m->cid, "cid-1");
    assert_string_equal(m->meta, "{\"a\":[1,2]}");
    m = &rr->m[1];
    assert_int_equal(m->id, small_id);
    assert_int_equal(m->text_len, 0);
    assert_string_equal(m->text, "");
    assert_false(m->has_cid);
    assert_false(m->has_meta);
    free(rr);
    T->close(b);
}

static void test_range_every_combination(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "u"), *room = nm(t, "room"), *room1 = nm(t, "room1"), *empty = nm(t, "empty");
    enum { N = 20 };
    store_op_t ops[N + 8];
    int n = 0;
    ops[n++] = op_room(room, "public", "", 1);
    ops[n++] = op_room(room1, "public", "", 1);
    ops[n++] = op_room(empty, "public", "", 1);
    for (int s = 1; s <= N; s++) ops[n++] = op_msg(room, s, u, "m", s, NULL, NULL);
    /* a neighbour whose name extends the room's: must not leak in */
    ops[n++] = op_msg(room1, 7, u, "x", 7, NULL, NULL);
    assert_int_equal(T->apply(b, ops, (size_t)n), 0);

    const int64_t afters[] = {0, 1, 5, 19, 20, 25};
    const int64_t befores[] = {0, 1, 2, 6, 15, 21, 30};
    const int limits[] = {0, 1, 3, 100};
    range_rec_t *rr = calloc(1, sizeof *rr);
    int cases = 0, empties = 0;
    for (size_t ai = 0; ai < sizeof afters / sizeof *afters; ai++)
        for (size_t bi = 0; bi < sizeof befores / sizeof *befores; bi++)
            for (size_t li = 0; li < sizeof limits / sizeof *limits; li++)
                for (int nf = 0; nf < 2; nf++) {
                    int64_t lo = afters[ai], hi = befores[bi];
                    int lim = limits[li];
                    /* the model: seqs in (lo, hi), then the first or last lim */
                    int64_t in[N];
                    int k = 0;
                    for (int s = 1; s <= N; s++)
                        if ((lo == 0 || s > lo) && (hi == 0 || s < hi)) in[k++] = s;
                    int take = k < lim ? k : lim, from = nf ? k - take : 0;
                    memset(rr, 0, sizeof *rr);
                    store_range_t q = {room, lo, hi, lim, nf};
                    int got = T->range(b, &q, range_cb, rr);
                    if (got != take)
                        print_error("after %lld before %lld limit %d newest_first %d: %d, want %d\n",
                                    (long long)lo, (long long)hi, lim, nf, got, take);
                    assert_int_equal(got, take);
                    assert_int_equal(rr->n, take);
                    for (int j = 0; j < take; j++) {
                        assert_int_equal(rr->m[j].seq, in[from + j]);
                        assert_string_equal(rr->m[j].room, room);
                    }
                    cases++;
                    empties += take == 0;
                }
    assert_int_equal(cases, 6 * 7 * 4 * 2);
    assert_true(empties > 0);

    /* empty room, unknown room */
    store_range_t q = {empty, 0, 0, 10, 1};
    assert_int_equal(T->range(b, &q, range_cb, rr), 0);
    q.room = nm(t, "nosuch");
    assert_int_equal(T->range(b, &q, range_cb, rr), 0);
    /* a negative callback result stops the range and is returned */
    memset(rr, 0, sizeof *rr);
    rr->stop_at = 2;
    q = (store_range_t){room, 0, 0, 10, 0};
    assert_int_equal(T->range(b, &q, range_cb, rr), -3);
    assert_int_equal(rr->n, 2);
    /* the statement was reset: the next range is complete */
    memset(rr, 0, sizeof *rr);
    assert_int_equal(T->range(b, &q, range_cb, rr), 10);
    free(rr);
    T->close(b);
}

static void test_recent_many_rooms(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "u");
    const char *rooms[5];
    store_op_t ops[5 * 40 + 5];
    int n = 0;
    for (int k = 0; k < 5; k++) {
        char name[16];
        snprintf(name, sizeof name, "room%d", k);
        rooms[k] = nm(t, name);
        ops[n++] = op_room(rooms[k], "public", "", 1);
        for (int s = 1; s <= k * 10; s++) ops[n++] = op_msg(rooms[k], s, u, "m", s, NULL, NULL);
    }
    assert_int_equal(T->apply(b, ops, (size_t)n), 0);
    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(T->load(b, 15, 0, &cb), 0);
    assert_int_equal(r->phase_err, 0);
    for (int k = 0; k < 5; k++) {
        int64_t seqs[64];
        int want = k * 10 < 15 ? k * 10 : 15;
        assert_int_equal(recent_of(r, rooms[k], seqs, 64), want);
        for (int j = 0; j < want; j++) assert_int_equal(seqs[j], k * 10 - want + 1 + j);
        assert_int_equal(r->rooms[find_room(r, rooms[k])].seq, k * 10);
    }
    free(r);
    T->close(b);
}

/* Accounts, uploads (one load call per link), mentions (only those after
 * the member's last_read), all insert-if-absent where SQLite's are. */
typedef struct {
    const char *pfx;
    struct {
        char name[96], pw[64];
        int has_pw;
        int64_t created_at;
    } users[16];
    int nusers;
    struct {
        char id[96], type[32], user[96], room[96];
        int64_t size, created_at;
    } ups[16];
    int nups;
    struct {
        char room[96], user[96];
        int64_t seq;
    } mentions[16];
    int nmentions;
} xrec_t;

static int xrec_user(void *arg, const store_user_t *u)
{
    xrec_t *x = arg;
    if (!mine(x->pfx, u->name)) return 0;
    assert_true(x->nusers < 16);
    snprintf(x->users[x->nusers].name, 96, "%s", u->name);
    snprintf(x->users[x->nusers].pw, 64, "%s", u->pw_hash ? u->pw_hash : "");
    x->users[x->nusers].has_pw = u->pw_hash != NULL;
    x->users[x->nusers].created_at = u->created_at;
    x->nusers++;
    return 0;
}

static int xrec_upload(void *arg, const store_upload_t *u)
{
    xrec_t *x = arg;
    if (!mine(x->pfx, u->id)) return 0;
    assert_true(x->nups < 16);
    assert_true((u->user == NULL) != (u->room == NULL));
    snprintf(x->ups[x->nups].id, 96, "%s", u->id);
    snprintf(x->ups[x->nups].type, 32, "%s", u->type);
    snprintf(x->ups[x->nups].user, 96, "%s", u->user ? u->user : "");
    snprintf(x->ups[x->nups].room, 96, "%s", u->room ? u->room : "");
    x->ups[x->nups].size = u->size;
    x->ups[x->nups].created_at = u->created_at;
    x->nups++;
    return 0;
}

static int xrec_mention(void *arg, const store_mention_t *m)
{
    xrec_t *x = arg;
    if (!mine(x->pfx, m->room)) return 0;
    assert_true(x->nmentions < 16);
    snprintf(x->mentions[x->nmentions].room, 96, "%s", m->room);
    snprintf(x->mentions[x->nmentions].user, 96, "%s", m->user);
    x->mentions[x->nmentions].seq = m->seq;
    x->nmentions++;
    return 0;
}

static void test_accounts_uploads_mentions(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *alice = nm(t, "alice"), *bob = nm(t, "bob"), *carol = nm(t, "carol"), *room = nm(t, "room");
    const char *f1 = nm(t, "f1"), *f2 = nm(t, "f2");
    store_op_t ops[16];
    int n = 0;
    ops[n++] = op_user(alice, 10, 0);
    ops[n++] = (store_op_t){.kind = STORE_OP_ACCOUNT, .u.user = {alice, 99, 0, "$argon2id$alice"}}; /* existing */
    ops[n++] = (store_op_t){.kind = STORE_OP_ACCOUNT, .u.user = {bob, 20, 0, "$argon2id$bob"}};     /* new */
    ops[n++] = op_room(room, "private", "r", 1);
    ops[n++] = op_member(STORE_OP_MEMBER, room, alice, "owner", 0, 1);
    ops[n++] = op_member(STORE_OP_MEMBER, room, bob, "member", 0, 1);
    ops[n++] = (store_op_t){.kind = STORE_OP_UPLOAD, .u.upload = {f1, "image/png", 1234, 50, alice, NULL}};
    /* the same file again: the upload is kept, the second uploader linked */
    ops[n++] = (store_op_t){.kind = STORE_OP_UPLOAD, .u.upload = {f1, "image/gif", 1, 60, bob, NULL}};
    ops[n++] = (store_op_t){.kind = STORE_OP_UPLOAD_ROOM, .u.upload = {f1, NULL, 0, 0, NULL, room}};
    ops[n++] = (store_op_t){.kind = STORE_OP_UPLOAD_ROOM, .u.upload = {f1, NULL, 0, 0, NULL, room}}; /* dup */
    ops[n++] = (store_op_t){.kind = STORE_OP_UPLOAD, .u.upload = {f2, "image/jpeg", 7, 70, alice, NULL}};
    ops[n++] = (store_op_t){.kind = STORE_OP_MENTION, .u.mention = {room, bob, 3}};
    ops[n++] = (store_op_t){.kind = STORE_OP_MENTION, .u.mention = {room, bob, 3}}; /* dup */
    ops[n++] = (store_op_t){.kind = STORE_OP_MENTION, .u.mention = {room, bob, 5}};
    ops[n++] = (store_op_t){.kind = STORE_OP_MENTION, .u.mention = {room, alice, 1}};
    ops[n++] = (store_op_t){.kind = STORE_OP_MENTION, .u.mention = {room, carol, 9}}; /* not a member */
    assert_int_equal(T->apply(b, ops, (size_t)n), 0);
    store_op_t rd[2] = {op_member(STORE_OP_READ, room, bob, NULL, 3, 0), op_member(STORE_OP_READ, room, alice, NULL, 1, 0)};
    assert_int_equal(T->apply(b, rd, 2), 0);

    xrec_t *x = calloc(1, sizeof *x);
    x->pfx = t->pfx;
    store_load_cb_t cb = {x, xrec_user, NULL, NULL, NULL, NULL, xrec_upload, xrec_mention};
    assert_int_equal(T->load(b, 0, 0, &cb), 0);
    assert_int_equal(x->nusers, 2);
    for (int i = 0; i < 2; i++) {
        assert_true(x->users[i].has_pw);
        if (!strcmp(x->users[i].name, alice)) {
            assert_string_equal(x->users[i].pw, "$argon2id$alice");
            assert_int_equal(x->users[i].created_at, 10);
        } else {
            assert_string_equal(x->users[i].name, bob);
            assert_string_equal(x->users[i].pw, "$argon2id$bob");
            assert_int_equal(x->users[i].created_at, 20);
        }
    }
    /* f1: its two uploaders and its room; f2: its uploader */
    assert_int_equal(x->nups, 4);
    int f1_user = 0, f1_room = 0, f2_user = 0;
    for (int i = 0; i < x->nups; i++) {
        if (!strcmp(x->ups[i].id, f1)) {
            assert_string_equal(x->ups[i].type, "image/png");
            assert_int_equal(x->ups[i].size, 1234);
            assert_int_equal(x->ups[i].created_at, 50);
            f1_user += !strcmp(x->ups[i].user, alice) + 2 * !strcmp(x->ups[i].user, bob);
            f1_room += !strcmp(x->ups[i].room, room);
        } else {
            assert_string_equal(x->ups[i].id, f2);
            assert_string_equal(x->ups[i].type, "image/jpeg");
            f2_user += !strcmp(x->ups[i].user, alice);
        }
    }
    assert_int_equal(f1_user, 3);
    assert_int_equal(f1_room, 1);
    assert_int_equal(f2_user, 1);
    /* bob read up to 3: only 5 is left; alice read 1: none; carol is no member */
    assert_int_equal(x->nmentions, 1);
    assert_string_equal(x->mentions[0].user, bob);
    assert_int_equal(x->mentions[0].seq, 5);
    /* the password of an account changes */
    store_op_t acc = {.kind = STORE_OP_ACCOUNT, .u.user = {bob, 0, 0, "$argon2id$new"}};
    assert_int_equal(T->apply(b, &acc, 1), 0);
    memset(x, 0, sizeof *x);
    x->pfx = t->pfx;
    assert_int_equal(T->load(b, 0, 0, &cb), 0);
    for (int i = 0; i < x->nusers; i++)
        if (!strcmp(x->users[i].name, bob)) assert_string_equal(x->users[i].pw, "$argon2id$new");
    free(x);
    T->close(b);
}

/* Assigned-seq writes with a cid are idempotent per (room, sender, cid)
 * within 24 h: a second write inserts nothing, takes no seq and reports the
 * first; a mention named by msg_id follows its message (none for the
 * resend). Two connections racing on one pair insert it once. */
typedef struct {
    store_backend_t *b;
    store_op_t op;
    int64_t seq;
    uint64_t id;
    int rc;
    pthread_barrier_t *go;
} idem_race_t;

static void *idem_race(void *arg)
{
    idem_race_t *r = arg;
    r->op.u.msg.seq_out = &r->seq;
    r->op.u.msg.id_out = &r->id;
    pthread_barrier_wait(r->go);
    r->rc = T->apply(r->b, &r->op, 1);
    return NULL;
}

static void test_store_assigned_idem(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "u"), *m1 = nm(t, "m1"), *m2 = nm(t, "m2"), *ra = nm(t, "ra"), *rb = nm(t, "rb");
    store_op_t setup[5] = {op_room(ra, "public", "", 1), op_room(rb, "public", "", 1),
                           op_member(STORE_OP_MEMBER, ra, m1, "member", 0, 1),
                           op_member(STORE_OP_MEMBER, ra, m2, "member", 0, 1),
                           op_member(STORE_OP_MEMBER, rb, m1, "member", 0, 1)};
    assert_int_equal(T->apply(b, setup, 5), 0);
    const int64_t day = 24LL * 3600 * 1000, t0 = 1700000000000LL;
    int64_t seq = 0, ts = 0;
    uint64_t id = 0;
    /* the first write of cid c1, with a mention of m1 by id */
    store_op_t ops[2] = {op_msg(ra, 1001, u, "first", t0, "c1", NULL),
                         {.kind = STORE_OP_MENTION, .u.mention = {ra, m1, 0, msg_id(ra, 1001)}}};
    ops[0].u.msg.seq_out = &seq, ops[0].u.msg.id_out = &id, ops[0].u.msg.ts_out = &ts;
    assert_int_equal(T->apply(b, ops, 2), 0);
    assert_int_equal(seq, 1);
    assert_true(id == msg_id(ra, 1001));
    assert_int_equal(ts, t0);
    /* the same pair again (another id, a mention of m2): the first reported */
    ops[0] = op_msg(ra, 1002, u, "resend", t0 + 500, "c1", NULL);
    ops[1] = (store_op_t){.kind = STORE_OP_MENTION, .u.mention = {ra, m2, 0, msg_id(ra, 1002)}};
    ops[0].u.msg.seq_out = &seq, ops[0].u.msg.id_out = &id, ops[0].u.msg.ts_out = &ts;
    seq = 0, id = 0, ts = 0;
    assert_int_equal(T->apply(b, ops, 2), 0);
    assert_int_equal(seq, 1);
    assert_true(id == msg_id(ra, 1001));
    assert_int_equal(ts, t0);
    /* another cid, another room, and the pair again after 24 h: inserted */
    int64_t s2 = 0, s3 = 0, s4 = 0;
    store_op_t more[3] = {op_msg(ra, 1003, u, "other cid", t0 + 600, "c2", NULL),
                          op_msg(rb, 1004, u, "other room", t0 + 700, "c1", NULL),
                          op_msg(ra, 1005, u, "a day later", t0 + day + 1, "c1", NULL)};
    more[0].u.msg.seq_out = &s2, more[1].u.msg.seq_out = &s3, more[2].u.msg.seq_out = &s4;
    assert_int_equal(T->apply(b, more, 3), 0);
    assert_int_equal(s2, 2);
    assert_int_equal(s3, 1);
    assert_int_equal(s4, 3);
    range_rec_t *rr = calloc(1, sizeof *rr);
    store_range_t q = {ra, 0, 0, 10, 0};
    assert_int_equal(T->range(b, &q, range_cb, rr), 3);
    assert_string_equal(rr->m[0].text, "first");
    assert_string_equal(rr->m[1].text, "other cid");
    assert_string_equal(rr->m[2].text, "a day later");
    /* the mention by id has the first's seq; the resend's was not written */
    xrec_t *x = calloc(1, sizeof *x);
    x->pfx = t->pfx;
    store_load_cb_t cb = {x, NULL, NULL, NULL, NULL, NULL, NULL, xrec_mention};
    assert_int_equal(T->load(b, 0, 0, &cb), 0);
    assert_int_equal(x->nmentions, 1);
    assert_string_equal(x->mentions[0].user, m1);
    assert_int_equal(x->mentions[0].seq, 1);
    free(x);
    /* two connections racing on one pair, 10 times: one insert each time */
    store_backend_t *b2 = bopen(t, 0);
    pthread_barrier_t go;
    for (int i = 0; i < 10; i++) {
        char cid[16];
        snprintf(cid, sizeof cid, "race%d", i);
        pthread_barrier_init(&go, NULL, 2);
        idem_race_t r[2] = {{b, op_msg(rb, 2000 + 2 * i, u, "a", t0 + 1000 + i, cid, NULL), 0, 0, 0, &go},
                            {b2, op_msg(rb, 2001 + 2 * i, u, "b", t0 + 1000 + i, cid, NULL), 0, 0, 0, &go}};
        pthread_t th[2];
        for (int k = 0; k < 2; k++) assert_int_equal(pthread_create(&th[k], NULL, idem_race, &r[k]), 0);
        for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
        pthread_barrier_destroy(&go);
        /* SQLite may answer busy to the loser; a retry then finds the row */
        for (int k = 0; k < 2; k++)
            for (int tries = 0; r[k].rc != 0 && tries < 50; tries++) {
                usleep(10000);
                r[k].rc = T->apply(r[k].b, &r[k].op, 1);
            }
        assert_int_equal(r[0].rc, 0);
        assert_int_equal(r[1].rc, 0);
        assert_int_equal(r[0].seq, r[1].seq);
        assert_true(r[0].id == r[1].id);
        assert_int_equal(r[0].seq, 2 + i);
    }
    memset(rr, 0, sizeof *rr);
    store_range_t qb = {rb, 0, 0, 100, 0};
    assert_int_equal(T->range(b, &qb, range_cb, rr), 11);
    free(rr);
    T->close(b2);
    T->close(b);
}

/* Search: the caller's expression (chat_text_fts_match), public rooms plus
 * the caller's rooms, or one room; newest (highest id) first, at most
 * limit. Every text carries a word unique to the run, so other runs sharing
 * the database never match. */
typedef struct {
    char tok[48];
    range_rec_t rr;
} srch_t;

static int srch_run(store_backend_t *b, srch_t *s, const char *q, const char *rooms_json, const char *room, int limit)
{
    char full[256];
    snprintf(full, sizeof full, "%s %s", s->tok, q);
    char *match = chat_text_fts_match(full);
    assert_non_null(match);
    memset(&s->rr, 0, sizeof s->rr);
    store_search_t sq = {match, rooms_json, room, limit};
    int n = T->search(b, &sq, range_cb, &s->rr);
    free(match);
    return n;
}

static void test_search(void **state)
{
    tctx_t *t = *state;
    store_backend_t *b = bopen(t, 1);
    const char *u = nm(t, "u"), *pub = nm(t, "pub"), *priv = nm(t, "priv"), *other = nm(t, "other");
    srch_t *s = calloc(1, sizeof *s);
    snprintf(s->tok, sizeof s->tok, "k%ldx%ldx%d", (long)getpid(), (long)time(NULL), tctx_counter);
    const char *texts[] = {
        "Hello world",               /* pub 1 */
        "caf\xc3\xa9 au lait",       /* pub 2 */
        "see example.com for more",  /* pub 3 */
        "say \"quoted\" words",      /* pub 4 */
        "hello from the private room", /* priv 1 */
        "hello elsewhere",           /* other 1: private, not the caller's */
    };
    const char *rooms[] = {pub, pub, pub, pub, priv, other};
    const int64_t seqs[] = {1, 2, 3, 4, 1, 1};
    store_op_t ops[16];
    char text[6][128];
    int n = 0;
    ops[n++] = op_room(pub, "public", "", 1);
    ops[n++] = op_room(priv, "private", "", 1);
    ops[n++] = op_room(other, "dm", "", 1);
    /* ids grow with the order above: the newest is the last */
    const uint64_t base = (msg_id(pub, 0) & 0x3fffffffffffff00ULL);
    for (int i = 0; i < 6; i++) {
        snprintf(text[i], sizeof text[i], "%s %s", texts[i], s->tok);
        ops[n] = op_msg(rooms[i], seqs[i], u, text[i], 1000 + i, i == 0 ? "c1" : NULL, i == 0 ? "{\"m\":1}" : NULL);
        ops[n++].u.msg.id = base + (uint64_t)i;
    }
    assert_int_equal(T->apply(b, ops, (size_t)n), 0);

    /* public rooms only */
    assert_int_equal(srch_run(b, s, "hello", "[]", NULL, 10), 1);
    assert_string_equal(s->rr.m[0].room, pub);
    assert_int_equal(s->rr.m[0].seq, 1);
    assert_int_equal(s->rr.m[0].id, base);
    assert_string_equal(s->rr.m[0].from, u);
    assert_string_equal(s->rr.m[0].text, text[0]);
    assert_int_equal(s->rr.m[0].ts, 1000);
    assert_string_equal(s->rr.m[0].cid, "c1");
    assert_string_equal(s->rr.m[0].meta, "{\"m\":1}");
    /* plus the caller's rooms, newest first */
    char rj[256];
    snprintf(rj, sizeof rj, "[\"%s\"]", priv);
    assert_int_equal(srch_run(b, s, "HELLO", rj, NULL, 10), 2);
    assert_string_equal(s->rr.m[0].room, priv);
    assert_string_equal(s->rr.m[1].room, pub);
    assert_false(s->rr.m[1].has_cid == 0);
    /* limit */
    assert_int_equal(srch_run(b, s, "hello", rj, NULL, 1), 1);
    assert_string_equal(s->rr.m[0].room, priv);
    assert_int_equal(srch_run(b, s, "hello", rj, NULL, 0), 0);
    /* one room only; a private room of someone else stays hidden */
    assert_int_equal(srch_run(b, s, "hello", rj, pub, 10), 1);
    assert_string_equal(s->rr.m[0].room, pub);
    assert_int_equal(srch_run(b, s, "hello", "[]", other, 10), 0);
    snprintf(rj, sizeof rj, "[\"%s\", \"%s\"]", priv, other);
    assert_int_equal(srch_run(b, s, "hello", rj, other, 10), 1);
    assert_string_equal(s->rr.m[0].room, other);
    assert_true(s->rr.m[0].has_cid == 0 && s->rr.m[0].has_meta == 0);
    /* every word is required */
    assert_int_equal(srch_run(b, s, "hello world", rj, NULL, 10), 1);
    assert_int_equal(srch_run(b, s, "hello nowhere", rj, NULL, 10), 0);
    /* diacritics and case fold; punctuation separates words */
    assert_int_equal(srch_run(b, s, "CAFE", "[]", NULL, 10), 1);
    assert_int_equal(s->rr.m[0].seq, 2);
    assert_int_equal(srch_run(b, s, "caf\xc3\xa9 lait", "[]", NULL, 10), 1);
    assert_int_equal(srch_run(b, s, "example", "[]", NULL, 10), 1);
    assert_int_equal(s->rr.m[0].seq, 3);
    assert_int_equal(srch_run(b, s, "example.com", "[]", NULL, 10), 1);
    assert_int_equal(srch_run(b, s, "com", "[]", NULL, 10), 1);
    /* quotes in the query are no syntax */
    assert_int_equal(srch_run(b, s, "\"quoted\"", "[]", NULL, 10), 1);
    assert_int_equal(s->rr.m[0].seq, 4);
    assert_int_equal(srch_run(b, s, "say\" OR \"hello", "[]", NULL, 10), 0);
    assert_int_equal(srch_run(b, s, "wor*", "[]", NULL, 10), 0);
    /* a callback's negative result stops the search and is returned */
    memset(&s->rr, 0, sizeof s->rr);
    s->rr.stop_at = 1;
    char *match = chat_text_fts_match(s->tok);
    store_search_t sq = {match, "[]", NULL, 10};
    assert_int_equal(T->search(b, &sq, range_cb, &s->rr), -3);
    assert_int_equal(s->rr.n, 1);
    free(match);
    /* and the connection is fine afterwards */
    assert_int_equal(srch_run(b, s, "", "[]", NULL, 10), 4);
    free(s);
    T->close(b);
}

/* SQLite only: the file layout and schema versioning. */
static void test_sqlite_specifics(void **state)
{
    tctx_t *t = *state;
    char err[256] = "";
    if (strcmp(T->name, "sqlite") != 0 || !t->own_dir) {
        skip();
        return;
    }
    /* without migration an empty directory has no database */
    assert_null(T->open(t->url, 0, err, sizeof err));
    assert_true(err[0] != 0);
    err[0] = 0;
    assert_null(T->open("/proc/nonexistent/dir", 1, err, sizeof err));
    assert_true(err[0] != 0);
    store_backend_t *b = bopen(t, 1);
    T->close(b);
    /* WAL mode, and a database from a newer sori is refused */
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/sori.db", t->url);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    /* the recent walk uses the primary key, the idem walk its partial index */
    assert_int_equal(sqlite3_prepare_v2(db, "EXPLAIN QUERY PLAN SELECT room, seq, id, sender, text, ts, cid, meta"
                                            " FROM messages WHERE cid IS NOT NULL AND ts >= 5 ORDER BY ts",
                                        -1, &st, NULL),
                     SQLITE_OK);
    int idx = 0;
    while (sqlite3_step(st) == SQLITE_ROW)
        idx |= strstr((const char *)sqlite3_column_text(st, 3), "messages_cid_ts") != NULL;
    sqlite3_finalize(st);
    assert_true(idx);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO schema_version VALUES(99, 0)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    err[0] = 0;
    assert_null(T->open(t->url, 1, err, sizeof err));
    assert_non_null(strstr(err, "99"));
    assert_null(T->open(t->url, 0, err, sizeof err));
}

/* ===================== store_t level ===================== */

static store_t *sopen(tctx_t *t, int mode, int flush_ms)
{
    char err[256] = "";
    store_t *s = store_open(T, t->url, mode, flush_ms, err, sizeof err);
    if (!s) print_error("store_open: %s\n", err);
    assert_non_null(s);
    return s;
}

static int64_t now_ms(void)
{
    return store__now_ns() / 1000000;
}

/* Jobs that remember who made them, and a log of done() calls. */
typedef struct {
    store_job_t job;
    store_op_t op;
    int producer, idx;
    long ticket;
    int status;
    int64_t done_ns;
} tjob_t;

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int ndone, bad_status, bad_order, dup;
    int next_idx[8];
    long next_ticket;
    int check_tickets;
    pthread_t writer_seen;
    int other_thread;
} tlog_t;

static void tlog_init(tlog_t *l)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cond, NULL);
}

static void tlog_destroy(tlog_t *l)
{
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->mu);
}

static pthread_t main_thread;

static int store__is_closing(store_t *s)
{
    pthread_mutex_lock(&s->mu);
    int c = s->closing;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static void tjob_done(store_job_t *job, int status)
{
    tjob_t *j = (tjob_t *)job;
    tlog_t *l = job->arg;
    pthread_mutex_lock(&l->mu);
    j->status = status;
    j->done_ns = store__now_ns();
    if (status != 0) l->bad_status++;
    if (j->idx != l->next_idx[j->producer]) l->bad_order++;
    l->next_idx[j->producer] = j->idx + 1;
    if (l->check_tickets && j->ticket != l->next_ticket) l->bad_order++;
    l->next_ticket = j->ticket + 1;
    if (pthread_equal(pthread_self(), main_thread)) l->other_thread++;
    l->ndone++;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mu);
}

static void tjob_make(tjob_t *j, tlog_t *l, int producer, int idx, store_op_t op)
{
    memset(j, 0, sizeof *j);
    j->op = op;
    j->producer = producer;
    j->idx = idx;
    j->job.ops = &j->op;
    j->job.nops = 1;
    j->job.done = tjob_done;
    j->job.arg = l;
    j->status = 1;
}

/* Waits until n jobs are done (at most timeout_ms); returns how many are. */
static int tlog_wait(tlog_t *l, int n, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    pthread_mutex_lock(&l->mu);
    while (l->ndone < n)
        if (pthread_cond_timedwait(&l->cond, &l->mu, &ts) != 0) break;
    int d = l->ndone;
    pthread_mutex_unlock(&l->mu);
    return d;
}

static int tlog_done(tlog_t *l)
{
    pthread_mutex_lock(&l->mu);
    int d = l->ndone;
    pthread_mutex_unlock(&l->mu);
    return d;
}

/* A synchronous job: writes ops and waits for the commit. */
static void write_wait(store_t *s, store_op_t *ops, size_t n)
{
    tlog_t l;
    tlog_init(&l);
    tjob_t j;
    tjob_make(&j, &l, 0, 0, ops[0]);
    j.job.ops = ops;
    j.job.nops = n;
    store_write(s, &j.job);
    assert_int_equal(tlog_wait(&l, 1, 10000), 1);
    assert_int_equal(j.status, 0);
    tlog_destroy(&l);
}

enum { GC_PRODUCERS = 4, GC_PER = 250 };

typedef struct {
    store_t *s;
    tlog_t *log;
    tjob_t *jobs;
    int producer;
    const char *room;
    pthread_mutex_t *ticket_mu;
    long *ticket;
} producer_arg_t;

static void *producer_main(void *arg)
{
    producer_arg_t *a = arg;
    for (int i = 0; i < GC_PER; i++) {
        tjob_t *j = &a->jobs[i];
        tjob_make(j, a->log, a->producer, i,
                  op_msg(a->room, i + 1, a->room, "group commit", 1000 + i, NULL, NULL));
        /* pause now and then, so that commits and writes interleave */
        if (i % 25 == 24) usleep(200);
        if (a->ticket_mu) {
            /* the ticket order is the queue order: done must follow it */
            pthread_mutex_lock(a->ticket_mu);
            j->ticket = (*a->ticket)++;
            store_write(a->s, &j->job);
            pthread_mutex_unlock(a->ticket_mu);
        } else {
            store_write(a->s, &j->job);
        }
    }
    return NULL;
}

static void group_commit(tctx_t *t, int global_fifo)
{
    store_t *s = sopen(t, STORE_SYNC, 0);
    const char *rooms[GC_PRODUCERS];
    store_op_t rops[GC_PRODUCERS];
    for (int p = 0; p < GC_PRODUCERS; p++) {
        char name[16];
        snprintf(name, sizeof name, "g%d", p);
        rooms[p] = nm(t, name);
        rops[p] = op_room(rooms[p], "public", "", 1);
    }
    write_wait(s, rops, GC_PRODUCERS);
    uint64_t b0, o0, f0;
    store_stats(s, &b0, &o0, &f0);
    assert_int_equal(b0, 1);
    assert_int_equal(o0, GC_PRODUCERS);

    tlog_t l;
    tlog_init(&l);
    l.check_tickets = global_fifo;
    tjob_t *jobs = calloc(GC_PRODUCERS * GC_PER, sizeof *jobs);
    assert_non_null(jobs);
    pthread_t th[GC_PRODUCERS];
    producer_arg_t pa[GC_PRODUCERS];
    pthread_mutex_t ticket_mu = PTHREAD_MUTEX_INITIALIZER;
    long ticket = 0;
    for (int p = 0; p < GC_PRODUCERS; p++) {
        pa[p] = (producer_arg_t){s, &l, jobs + p * GC_PER, p, rooms[p], global_fifo ? &ticket_mu : NULL, &ticket};
        assert_int_equal(pthread_create(&th[p], NULL, producer_main, &pa[p]), 0);
    }
    for (int p = 0; p < GC_PRODUCERS; p++) pthread_join(th[p], NULL);
    assert_int_equal(tlog_wait(&l, GC_PRODUCERS * GC_PER, 60000), GC_PRODUCERS * GC_PER);
    /* exactly once: no late extra callback */
    usleep(20000);
    assert_int_equal(tlog_done(&l), GC_PRODUCERS * GC_PER);
    assert_int_equal(l.bad_status, 0);
    assert_int_equal(l.bad_order, 0);
    assert_int_equal(l.other_thread, 0);
    for (int p = 0; p < GC_PRODUCERS; p++) assert_int_equal(l.next_idx[p], GC_PER);
    for (int i = 0; i < GC_PRODUCERS * GC_PER; i++) assert_int_equal(jobs[i].status, 0);
    uint64_t b1, o1, f1;
    store_stats(s, &b1, &o1, &f1);
    print_message("  %d jobs from %d threads in %llu batches\n", GC_PRODUCERS * GC_PER, GC_PRODUCERS,
                  (unsigned long long)(b1 - b0));
    assert_true(b1 - b0 < GC_PRODUCERS * GC_PER);
    assert_int_equal(o1 - o0, GC_PRODUCERS * GC_PER);
    assert_int_equal(f1, 0);
    assert_int_equal(store_failing(s), 0);
    store_close(s);

    /* all of it is there after a restart */
    s = sopen(t, STORE_SYNC, 0);
    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(store_load(s, GC_PER, 0, &cb), 0);
    for (int p = 0; p < GC_PRODUCERS; p++) {
        int64_t seqs[GC_PER];
        assert_int_equal(recent_of(r, rooms[p], seqs, GC_PER), GC_PER);
        for (int i = 0; i < GC_PER; i++) assert_int_equal(seqs[i], i + 1);
        assert_int_equal(r->rooms[find_room(r, rooms[p])].seq, GC_PER);
    }
    free(r);
    store_close(s);
    free(jobs);
    tlog_destroy(&l);
}

static void test_group_commit_per_thread_fifo(void **state)
{
    group_commit(*state, 0);
}

static void test_group_commit_global_fifo(void **state)
{
    group_commit(*state, 1);
}

static void test_close_commits_queued(void **state)
{
    tctx_t *t = *state;
    enum { NJ = 300 };
    /* async with a long flush interval: nothing would commit for a second */
    store_t *s = sopen(t, STORE_ASYNC, 1000);
    const char *room = nm(t, "room"), *u = nm(t, "u");
    tlog_t l;
    tlog_init(&l);
    tjob_t *jobs = calloc(NJ + 1, sizeof *jobs);
    tjob_make(&jobs[0], &l, 0, 0, op_room(room, "public", "", 1));
    store_write(s, &jobs[0].job);
    for (int i = 1; i <= NJ; i++) {
        tjob_make(&jobs[i], &l, 0, i, op_msg(room, i, u, "bye", i, NULL, NULL));
        store_write(s, &jobs[i].job);
    }
    int64_t t0 = now_ms();
    store_close(s);
    int64_t took = now_ms() - t0;
    /* close does not wait for the flush interval, and everything is done */
    assert_true(took < 900);
    assert_int_equal(l.ndone, NJ + 1);
    assert_int_equal(l.bad_status, 0);
    assert_int_equal(l.bad_order, 0);

    s = sopen(t, STORE_SYNC, 0);
    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(store_load(s, 1000, 0, &cb), 0);
    int64_t seqs[NJ];
    assert_int_equal(recent_of(r, room, seqs, NJ), NJ);
    assert_int_equal(seqs[NJ - 1], NJ);
    assert_int_equal(r->rooms[find_room(r, room)].seq, NJ);
    free(r);
    store_close(s);
    free(jobs);
    tlog_destroy(&l);
}

/* Jobs queued once store_close has begun are refused on the store's
 * threads: here a done() and a run() queue more while the store closes. */
typedef struct {
    tjob_t first, late;
    store_read_t rd, late_rd;
    store_t *s;
    int late_rd_backend, late_rd_runs, first_rd_backend;
    pthread_t late_rd_thread;
} closing_t;

static void closing_first_done(store_job_t *job, int status)
{
    closing_t *c = (closing_t *)((char *)job - offsetof(closing_t, first));
    tjob_done(job, status);
    store_write(c->s, &c->late.job); /* store_close is under way: refused */
}

static void closing_late_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    (void)type;
    closing_t *c = (closing_t *)((char *)rd - offsetof(closing_t, late_rd));
    c->late_rd_backend = b != NULL;
    c->late_rd_runs++;
    c->late_rd_thread = pthread_self();
}

static void closing_first_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    (void)type;
    closing_t *c = (closing_t *)((char *)rd - offsetof(closing_t, rd));
    c->first_rd_backend = b != NULL;
    /* hold the reader until store_close has begun, then queue another */
    while (!store__is_closing(c->s)) usleep(1000);
    store_read(c->s, &c->late_rd);
}

static void test_close_refuses_late_jobs(void **state)
{
    tctx_t *t = *state;
    store_t *s = sopen(t, STORE_ASYNC, 1000);
    const char *room = nm(t, "room");
    tlog_t l;
    tlog_init(&l);
    closing_t *c = calloc(1, sizeof *c);
    c->s = s;
    tjob_make(&c->first, &l, 0, 0, op_room(room, "public", "", 1));
    c->first.job.done = closing_first_done;
    tjob_make(&c->late, &l, 0, 1, op_room(nm(t, "late"), "public", "", 1));
    c->rd.run = closing_first_run;
    c->late_rd.run = closing_late_run;
    store_read(s, &c->rd);
    store_write(s, &c->first.job);
    store_close(s);
    assert_int_equal(l.ndone, 2);
    assert_int_equal(l.bad_order, 0);
    assert_int_equal(l.other_thread, 0);
    assert_int_equal(c->first.status, 0);
    assert_int_equal(c->late.status, SORI_ECLOSED);
    assert_true(c->first_rd_backend);
    assert_int_equal(c->late_rd_runs, 1);
    assert_false(c->late_rd_backend);
    assert_false(pthread_equal(c->late_rd_thread, main_thread));

    s = sopen(t, STORE_SYNC, 0);
    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(store_load(s, 0, 0, &cb), 0);
    assert_int_equal(r->nrooms, 1);
    assert_string_equal(r->rooms[0].id, room);
    free(r);
    store_close(s);
    free(c);
    tlog_destroy(&l);
}

static void test_async_commits_within_flush(void **state)
{
    tctx_t *t = *state;
    enum { FLUSH = 150 };
    store_t *s = sopen(t, STORE_ASYNC, FLUSH);
    const char *room = nm(t, "room"), *u = nm(t, "u");
    tlog_t l;
    tlog_init(&l);
    enum { NJ = 10 };
    tjob_t *jobs = calloc(NJ + 1, sizeof *jobs);
    int64_t t0 = store__now_ns();
    tjob_make(&jobs[0], &l, 0, 0, op_room(room, "public", "", 1));
    store_write(s, &jobs[0].job);
    for (int i = 1; i <= NJ; i++) {
        tjob_make(&jobs[i], &l, 0, i, op_msg(room, i, u, "later", i, NULL, NULL));
        store_write(s, &jobs[i].job);
    }
    assert_int_equal(tlog_wait(&l, NJ + 1, 10000), NJ + 1);
    int64_t first = jobs[0].done_ns - t0, last = jobs[NJ].done_ns - t0;
    print_message("  async %d ms: first done after %.1f ms, last after %.1f ms\n", FLUSH, first / 1e6, last / 1e6);
    /* not before the interval, and well within it plus one commit */
    assert_true(first >= (int64_t)FLUSH * 1000000);
    assert_true(last < (int64_t)(FLUSH + 500) * 1000000);
    uint64_t batches;
    store_stats(s, &batches, NULL, NULL);
    assert_int_equal(batches, 1);
    assert_int_equal(l.bad_order, 0);

    /* A queue of >= 4096 ops does not wait for the interval. Timed against
     * a sync commit of as many ops measured just before (this machine, this
     * build: TSan makes one such commit take most of a second): waiting for
     * the interval would add most of its 1000 ms on top. */
    store_close(s);
    enum { BIG = 5000 };
    tjob_t *big = calloc(BIG, sizeof *big);
    tlog_t l1;
    tlog_init(&l1);
    s = sopen(t, STORE_SYNC, 0);
    int64_t full = 0;
    for (int i = 0; i < STORE__BATCH_OPS; i++) {
        tjob_make(&big[i], &l1, 0, i, op_msg(room, NJ + 1 + i, u, "sync", i, NULL, NULL));
        store_write(s, &big[i].job);
    }
    full = store__now_ns();
    assert_int_equal(tlog_wait(&l1, STORE__BATCH_OPS, 20000), STORE__BATCH_OPS);
    int64_t sync_commit = big[STORE__BATCH_OPS - 1].done_ns - full;
    store_close(s);
    tlog_destroy(&l1);

    s = sopen(t, STORE_ASYNC, 1000);
    tlog_t l2;
    tlog_init(&l2);
    memset(big, 0, BIG * sizeof *big);
    int base = NJ + 1 + STORE__BATCH_OPS;
    t0 = store__now_ns();
    for (int i = 0; i < BIG; i++) {
        tjob_make(&big[i], &l2, 0, i, op_msg(room, base + i, u, "bulk", i, NULL, NULL));
        store_write(s, &big[i].job);
        if (i == STORE__BATCH_OPS - 1) full = store__now_ns();
    }
    assert_int_equal(tlog_wait(&l2, BIG, 20000), BIG);
    /* the first 4096 go at once; the rest when their interval is up */
    int64_t took = big[STORE__BATCH_OPS - 1].done_ns - full, all = big[BIG - 1].done_ns - t0;
    print_message("  async 1000 ms, %d jobs: first %d done %.1f ms after the %dth was queued (a sync commit of "
                  "as many: %.1f ms), all after %.1f ms\n",
                  BIG, STORE__BATCH_OPS, took / 1e6, STORE__BATCH_OPS, sync_commit / 1e6, all / 1e6);
    assert_true(took < sync_commit + 400 * 1000000LL);
    assert_true(all >= 1000 * 1000000LL - 50 * 1000000LL); /* the rest did wait for the interval */
    assert_int_equal(l2.bad_order, 0);
    store_stats(s, &batches, NULL, NULL);
    assert_true(batches >= 2);
    store_close(s);
    free(big);
    free(jobs);
    tlog_destroy(&l2);
    tlog_destroy(&l);
}

/* Reads: FIFO on the reader thread, with the reader's connection. */
typedef struct {
    store_read_t rd;
    store_range_t q;
    tlog_t *log;
    int idx, got, had_backend;
    pthread_t thread;
} tread_t;

static void tread_run(store_read_t *rd, const store_type_t *type, store_backend_t *b)
{
    tread_t *r = (tread_t *)rd;
    range_rec_t *rr = calloc(1, sizeof *rr);
    r->had_backend = b != NULL;
    r->got = b ? type->range(b, &r->q, range_cb, rr) : -100;
    r->thread = pthread_self();
    free(rr);
    pthread_mutex_lock(&r->log->mu);
    if (r->idx != r->log->next_idx[0]) r->log->bad_order++;
    r->log->next_idx[0] = r->idx + 1;
    if (pthread_equal(pthread_self(), main_thread)) r->log->other_thread++;
    r->log->ndone++;
    pthread_cond_broadcast(&r->log->cond);
    pthread_mutex_unlock(&r->log->mu);
}

static void test_reads(void **state)
{
    tctx_t *t = *state;
    store_t *s = sopen(t, STORE_SYNC, 0);
    const char *room = nm(t, "room"), *u = nm(t, "u");
    store_op_t ops[11] = {op_room(room, "public", "", 1)};
    for (int i = 1; i <= 10; i++) ops[i] = op_msg(room, i, u, "r", i, NULL, NULL);
    write_wait(s, ops, 11);
    tlog_t l;
    tlog_init(&l);
    enum { NR = 50 };
    tread_t *rs = calloc(NR, sizeof *rs);
    for (int i = 0; i < NR; i++) {
        rs[i].rd.run = tread_run;
        rs[i].log = &l;
        rs[i].idx = i;
        rs[i].q = (store_range_t){room, i % 5, 0, 3 + i % 4, i & 1};
        store_read(s, &rs[i].rd);
    }
    assert_int_equal(tlog_wait(&l, NR, 10000), NR);
    assert_int_equal(l.bad_order, 0);
    assert_int_equal(l.other_thread, 0);
    for (int i = 0; i < NR; i++) {
        int avail = 10 - i % 5, lim = 3 + i % 4;
        assert_true(rs[i].had_backend);
        assert_int_equal(rs[i].got, avail < lim ? avail : lim);
        assert_true(pthread_equal(rs[i].thread, rs[0].thread));
    }
    /* a committed write is visible to the reader at once */
    store_op_t op = op_msg(room, 11, u, "new", 11, NULL, NULL);
    write_wait(s, &op, 1);
    tread_t one = {.rd.run = tread_run, .log = &l, .idx = NR, .q = {room, 10, 0, 10, 0}};
    store_read(s, &one.rd);
    assert_int_equal(tlog_wait(&l, NR + 1, 10000), NR + 1);
    assert_int_equal(one.got, 1);
    store_close(s);
    free(rs);
    tlog_destroy(&l);
}

/* A backend whose apply fails the first N times: the writer must retry the
 * same batch, report failing meanwhile, and lose or reorder nothing. */
static atomic_int flaky_left;
static store_type_t flaky_type;

static int flaky_apply(store_backend_t *b, const store_op_t *ops, size_t n)
{
    if (atomic_fetch_sub(&flaky_left, 1) > 0) return SORI_EIO;
    return T->apply(b, ops, n);
}

static void test_commit_failure_retries(void **state)
{
    tctx_t *t = *state;
    flaky_type = *T;
    flaky_type.apply = flaky_apply;
    atomic_store(&flaky_left, 0);
    char err[256];
    store_t *s = store_open(&flaky_type, t->url, STORE_SYNC, 0, err, sizeof err);
    assert_non_null(s);
    const char *room = nm(t, "room"), *u = nm(t, "u");
    store_op_t rop = op_room(room, "public", "", 1);
    write_wait(s, &rop, 1);

    atomic_store(&flaky_left, 4); /* 10 + 20 + 40 + 80 ms of backoff */
    tlog_t l;
    tlog_init(&l);
    enum { NJ = 40 };
    tjob_t *jobs = calloc(NJ, sizeof *jobs);
    int64_t t0 = now_ms();
    for (int i = 0; i < NJ; i++) {
        tjob_make(&jobs[i], &l, 0, i, op_msg(room, i + 1, u, "retry", i, NULL, NULL));
        store_write(s, &jobs[i].job);
    }
    int saw_failing = 0;
    while (tlog_done(&l) < NJ && now_ms() - t0 < 10000) {
        /* done count first: a done() seen here happened after failing was cleared */
        int d = tlog_done(&l);
        if (store_failing(s)) {
            saw_failing = 1;
            assert_int_equal(d, 0); /* nothing reported while the first batch fails */
        }
        usleep(1000);
    }
    assert_int_equal(tlog_wait(&l, NJ, 10000), NJ);
    assert_true(saw_failing);
    assert_true(now_ms() - t0 >= 150);
    assert_int_equal(store_failing(s), 0);
    assert_int_equal(l.bad_order, 0);
    assert_int_equal(l.bad_status, 0);
    uint64_t batches, ops, failures;
    store_stats(s, &batches, &ops, &failures);
    assert_int_equal(failures, 4);
    assert_int_equal(ops, NJ + 1);
    store_close(s);

    s = sopen(t, STORE_SYNC, 0);
    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(store_load(s, 100, 0, &cb), 0);
    int64_t seqs[NJ];
    assert_int_equal(recent_of(r, room, seqs, NJ), NJ);
    for (int i = 0; i < NJ; i++) assert_int_equal(seqs[i], i + 1);
    free(r);
    store_close(s);
    free(jobs);
    tlog_destroy(&l);
}

static void test_durability_across_restart(void **state)
{
    tctx_t *t = *state;
    const char *alice = nm(t, "alice"), *room = nm(t, "room");
    for (int round = 0; round < 3; round++) {
        store_t *s = sopen(t, round == 1 ? STORE_ASYNC : STORE_SYNC, 50);
        store_op_t ops[4];
        int n = 0;
        if (round == 0) {
            ops[n++] = op_user(alice, 1, 0);
            ops[n++] = op_room(room, "private", "secret", 2);
            ops[n++] = op_member(STORE_OP_MEMBER, room, alice, "owner", 0, 3);
        }
        ops[n++] = op_msg(room, round + 1, alice, "persist", 10 + round, "cid", NULL);
        /* fire and forget: close must commit it */
        tlog_t l;
        tlog_init(&l);
        tjob_t j;
        tjob_make(&j, &l, 0, 0, ops[0]);
        j.job.ops = ops;
        j.job.nops = (size_t)n;
        store_write(s, &j.job);
        store_close(s);
        assert_int_equal(j.status, 0);
        tlog_destroy(&l);
    }
    store_t *s = sopen(t, STORE_SYNC, 0);
    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(store_load(s, 10, 0, &cb), 0);
    assert_int_equal(r->nusers, 1);
    assert_int_equal(r->nrooms, 1);
    assert_string_equal(r->rooms[0].title, "secret");
    assert_int_equal(r->rooms[0].seq, 3);
    assert_int_equal(r->nmembers, 1);
    assert_string_equal(r->members[0].role, "owner");
    assert_int_equal(r->nrecent, 3);
    assert_int_equal(r->nidem, 3);
    free(r);
    store_close(s);
}

static void test_open_errors(void **state)
{
    tctx_t *t = *state;
    char err[256] = "";
    assert_null(store_open(T, t->url, STORE_ASYNC, 0, err, sizeof err));
    assert_true(err[0] != 0);
    err[0] = 0;
    assert_null(store_open(T, t->url, STORE_ASYNC, 1001, err, sizeof err));
    assert_true(err[0] != 0);
    err[0] = 0;
    assert_null(store_open(T, t->url, 7, 0, err, sizeof err));
    assert_true(err[0] != 0);
    if (strcmp(T->name, "sqlite") == 0) {
        err[0] = 0;
        assert_null(store_open(T, "/proc/nonexistent/dir", STORE_SYNC, 0, err, sizeof err));
        assert_true(err[0] != 0);
    }
    /* an idle store opens and closes cleanly, in both modes */
    store_close(sopen(t, STORE_SYNC, 0));
    store_close(sopen(t, STORE_ASYNC, 1000));
    store_close(NULL);
}

/* ===================== PostgreSQL only ===================== */

/* The search words back out of an FTS5 expression, as an array literal. */
static void test_pg_words(void **state)
{
    (void)state;
    const char *in[] = {"\"a\"", "\"a\" \"b\"", "\"say \"\"hi\"\"\"", "\"back\\slash\"", "bare \"q\"", "\"\"",
                        "  ", "\"open"};
    const char *want[] = {"{\"a\"}", "{\"a\",\"b\"}", "{\"say \\\"hi\\\"\"}", "{\"back\\\\slash\"}",
                          "{\"bare\",\"q\"}", "{\"\"}", "{}", "{\"open\"}"};
    const int nwords[] = {1, 2, 1, 1, 2, 1, 0, 1};
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        char *out = NULL;
        assert_int_equal(pg__words(in[i], &out), nwords[i]);
        assert_string_equal(out, want[i]);
        free(out);
    }
    /* every word of the real builder comes back whole */
    char *m = chat_text_fts_match("a\"b c\\d \"\"");
    char *out = NULL;
    assert_int_equal(pg__words(m, &out), 3);
    assert_string_equal(out, "{\"a\\\"b\",\"c\\\\d\",\"\\\"\\\"\"}");
    free(out);
    free(m);
}

static PGconn *pg_admin(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) print_error("admin connection: %s", PQerrorMessage(c));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static void pg_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        print_error("%s: %s", sql, PQresultErrorMessage(r));
    assert_true(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
}

static long long pg_num(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) print_error("%s: %s", sql, PQresultErrorMessage(r));
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* Ends every server connection opened with the test's application_name;
 * returns how many. */
static long long pg_kill(PGconn *admin, const char *app)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE application_name = '%s'",
             app);
    return pg_num(admin, sql);
}

static void *pg_open_main(void *arg)
{
    char err[256] = "";
    store_backend_t *b = T->open(arg, 1, err, sizeof err);
    if (!b) print_error("open: %s\n", err);
    return b;
}

typedef struct {
    int count;
    const char *room;
} count_cb_t;

static int count_cb(void *arg, const store_msg_t *m)
{
    (void)m;
    ((count_cb_t *)arg)->count++;
    return 0;
}

/* In a schema of its own (search_path and application_name in the url), so
 * that it can migrate from nothing, hold locks and end its own connections
 * without disturbing anything else in the database. */
static void test_pg_specifics(void **state)
{
    tctx_t *t = *state;
    if (strcmp(T->name, "postgresql") != 0) {
        skip();
        return;
    }
    char schema[64], url[PATH_MAX + 256], sql[512], err[512];
    snprintf(schema, sizeof schema, "sori_t%ld_%ld_%d", (long)getpid(), (long)time(NULL), tctx_counter);
    snprintf(url, sizeof url, "%s%soptions=-csearch_path%%3D%s&application_name=%s", t->url,
             strchr(t->url, '?') ? "&" : "?", schema, schema);
    PGconn *admin = pg_admin(t->url);
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
    pg_ok(admin, sql);

    /* four nodes start at once on an empty schema: one migrates, all open */
    pthread_t th[4];
    store_backend_t *bs[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, pg_open_main, url), 0);
    for (int i = 0; i < 4; i++) {
        void *p;
        pthread_join(th[i], &p);
        bs[i] = p;
        assert_non_null(bs[i]);
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s.schema_version", schema);
    assert_int_equal(pg_num(admin, sql), PG__VERSION);
    for (int i = 1; i < 4; i++) T->close(bs[i]);
    store_backend_t *b = bs[0];

    /* search works in a schema of its own (its configuration, unaccent) */
    const char *room = nm(t, "room"), *u = nm(t, "u");
    store_op_t ops[4] = {op_room(room, "public", "", 1), op_msg(room, 1, u, "Cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e", 1, NULL, NULL)};
    assert_int_equal(T->apply(b, ops, 2), 0);
    count_cb_t cc = {0};
    store_search_t sq = {"\"creme\" \"BRULEE\"", "[]", NULL, 10};
    assert_int_equal(T->search(b, &sq, count_cb, &cc), 1);

    /* the server ends the connection: that call fails, the next one connects again */
    store_op_t op = op_user(nm(t, "v"), 1, 0);
    assert_int_equal(pg_kill(admin, schema), 1);
    assert_true(T->apply(b, &op, 1) < 0);
    assert_int_equal(T->apply(b, &op, 1), 0);
    store_range_t q = {room, 0, 0, 10, 0};
    assert_int_equal(pg_kill(admin, schema), 1);
    assert_true(T->range(b, &q, count_cb, &cc) < 0);
    assert_int_equal(T->range(b, &q, count_cb, &cc), 1);
    assert_int_equal(pg_kill(admin, schema), 1);
    assert_true(T->search(b, &sq, count_cb, &cc) < 0);
    assert_int_equal(T->search(b, &sq, count_cb, &cc), 1);
    rec_t *r = rec_new(t);
    store_load_cb_t cb = rec_cb(r);
    assert_int_equal(pg_kill(admin, schema), 1);
    assert_true(T->load(b, 10, 0, &cb) < 0);
    memset(r, 0, sizeof *r);
    r->pfx = t->pfx;
    assert_int_equal(T->load(b, 10, 0, &cb), 0);
    assert_int_equal(r->nusers, 1);
    assert_int_equal(r->nrecent, 1);

    /* a COMMIT that went unanswered, as the next apply settles it */
    store_op_t m2 = op_msg(room, 2, u, "limbo", 2, NULL, NULL);
    assert_int_equal(T->apply(b, &m2, 1), 0);
    b->limbo = 1; /* committed, and the same batch: not applied twice */
    memcpy(b->limbo_xid, b->last_xid, sizeof b->limbo_xid);
    b->limbo_hash = pg__hash(&m2, 1);
    assert_int_equal(T->apply(b, &m2, 1), 0);
    assert_int_equal(b->limbo, 0);
    assert_true(T->apply(b, &m2, 1) < 0); /* really a duplicate now */
    pg_ok(admin, "BEGIN");                /* still in progress: try later */
    long long open_xid = pg_num(admin, "SELECT txid_current()");
    store_op_t m3 = op_msg(room, 3, u, "limbo 3", 3, NULL, NULL);
    b->limbo = 1;
    snprintf(b->limbo_xid, sizeof b->limbo_xid, "%lld", open_xid);
    b->limbo_hash = pg__hash(&m3, 1);
    assert_int_equal(T->apply(b, &m3, 1), SORI_EAGAIN);
    assert_int_equal(b->limbo, 1);
    pg_ok(admin, "ROLLBACK"); /* aborted: the batch is applied */
    assert_int_equal(T->apply(b, &m3, 1), 0);
    assert_int_equal(b->limbo, 0);
    store_op_t m4 = op_msg(room, 4, u, "limbo 4", 4, NULL, NULL);
    b->limbo = 1; /* committed, but another batch: this one is applied */
    memcpy(b->limbo_xid, b->last_xid, sizeof b->limbo_xid);
    b->limbo_hash = pg__hash(&m3, 1);
    assert_int_equal(T->apply(b, &m4, 1), 0);
    cc.count = 0;
    assert_int_equal(T->range(b, &q, count_cb, &cc), 4);

    /* a lock held elsewhere: the statement gives up in about PG__STMT_MS and
     * the connection stays usable */
    pg_ok(admin, "BEGIN");
    snprintf(sql, sizeof sql, "LOCK TABLE %s.rooms IN ACCESS EXCLUSIVE MODE", schema);
    pg_ok(admin, sql);
    store_op_t rop = op_room(nm(t, "locked"), "public", "", 1);
    int64_t t0 = store__now_ns();
    int rc = T->apply(b, &rop, 1);
    int64_t took = (store__now_ns() - t0) / 1000000;
    print_message("  a locked table: %s after %lld ms\n", sori_strerror(rc), (long long)took);
    assert_true(rc < 0);
    assert_true(took >= PG__STMT_MS - 500 && took < PG__IO_MS + 1000);
    pg_ok(admin, "ROLLBACK");
    assert_int_equal(T->apply(b, &rop, 1), 0);
    T->close(b);

    /* the store's writer rides out lost connections (it retries) */
    store_t *s = store_open(T, url, STORE_SYNC, 0, err, sizeof err);
    if (!s) print_error("store_open: %s\n", err);
    assert_non_null(s);
    store_op_t m5 = op_msg(room, 5, u, "after a restart", 5, NULL, NULL);
    write_wait(s, &m5, 1);
    assert_int_equal(pg_kill(admin, schema), 2); /* writer and reader */
    store_op_t m6 = op_msg(room, 6, u, "after a restart", 6, NULL, NULL);
    write_wait(s, &m6, 1);
    uint64_t failures;
    store_stats(s, NULL, NULL, &failures);
    assert_true(failures >= 1);
    assert_int_equal(store_failing(s), 0);
    store_close(s);

    /* a database of a newer sori is refused, with or without migrating */
    snprintf(sql, sizeof sql, "INSERT INTO %s.schema_version VALUES(99, 0)", schema);
    pg_ok(admin, sql);
    err[0] = 0;
    assert_null(T->open(url, 1, err, sizeof err));
    assert_non_null(strstr(err, "99"));
    err[0] = 0;
    assert_null(T->open(url, 0, err, sizeof err));
    assert_true(err[0] != 0);

    /* a server that never answers: open gives up after PG__CONNECT_MS */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char silent[128];
    snprintf(silent, sizeof silent, "postgresql://nobody@127.0.0.1:%d/x?sslmode=disable&gssencmode=disable",
             ntohs(sa.sin_port));
    t0 = store__now_ns();
    err[0] = 0;
    assert_null(T->open(silent, 0, err, sizeof err));
    took = (store__now_ns() - t0) / 1000000;
    print_message("  a silent server: \"%s\" after %lld ms\n", err, (long long)took);
    assert_true(took >= PG__CONNECT_MS - 500 && took < PG__CONNECT_MS + 2000);
    close(fd);
    /* nobody listening: at once */
    snprintf(silent, sizeof silent, "postgresql://nobody@127.0.0.1:%d/x", ntohs(sa.sin_port));
    t0 = store__now_ns();
    assert_null(T->open(silent, 0, err, sizeof err));
    assert_true((store__now_ns() - t0) / 1000000 < 2000);

    snprintf(sql, sizeof sql, "DROP SCHEMA %s CASCADE", schema);
    pg_ok(admin, sql);
    PQfinish(admin);
    free(r);
}

/* A real restart of the server (scripts/pg-test.sh's SORI_PG_CTL): writes
 * queued while it is down are retried, then committed in order. */
static void test_pg_restart(void **state)
{
    tctx_t *t = *state;
    const char *ctl = getenv("SORI_PG_CTL");
    if (strcmp(T->name, "postgresql") != 0 || !ctl || !*ctl) {
        skip();
        return;
    }
    char cmd[PATH_MAX + 64];
    store_t *s = sopen(t, STORE_SYNC, 0);
    const char *room = nm(t, "room"), *u = nm(t, "u");
    store_op_t rop = op_room(room, "public", "", 1);
    write_wait(s, &rop, 1);
    snprintf(cmd, sizeof cmd, "%s stop >/dev/null 2>&1", ctl);
    assert_int_equal(system(cmd), 0);
    enum { NJ = 20 };
    tlog_t l;
    tlog_init(&l);
    tjob_t *jobs = calloc(NJ, sizeof *jobs);
    for (int i = 0; i < NJ; i++) {
        tjob_make(&jobs[i], &l, 0, i, op_msg(room, i + 1, u, "through a restart", i, NULL, NULL));
        store_write(s, &jobs[i].job);
    }
    usleep(300000);
    assert_int_equal(tlog_done(&l), 0);
    assert_int_equal(store_failing(s), 1);
    int64_t t0 = now_ms();
    snprintf(cmd, sizeof cmd, "%s start >/dev/null 2>&1", ctl);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(tlog_wait(&l, NJ, 15000), NJ);
    print_message("  committed %lld ms after the server was back\n", (long long)(now_ms() - t0));
    assert_int_equal(l.bad_order, 0);
    assert_int_equal(l.bad_status, 0);
    assert_int_equal(store_failing(s), 0);
    /* the reader's connection died with the old server: its first read
     * fails, the next one connects again */
    tread_t rd1 = {.rd.run = tread_run, .log = &l, .idx = NJ, .q = {room, 0, 0, 100, 0}};
    tread_t rd2 = {.rd.run = tread_run, .log = &l, .idx = NJ + 1, .q = {room, 0, 0, 100, 0}};
    store_read(s, &rd1.rd);
    store_read(s, &rd2.rd);
    assert_int_equal(tlog_wait(&l, NJ + 2, 10000), NJ + 2);
    assert_int_equal(l.bad_order, 0);
    assert_true(rd1.got < 0);
    assert_int_equal(rd2.got, NJ);
    store_close(s);
    free(jobs);
    tlog_destroy(&l);
}

#define T_(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const char *type = getenv("SORI_STORE_TYPE");
    T = store_type_find(type && *type ? type : "sqlite");
    if (!T) {
        fprintf(stderr, "unknown SORI_STORE_TYPE %s\n", type);
        return 1;
    }
    main_thread = pthread_self();
    log_level_set(getenv("SORI_TEST_LOG") ? LOG_LEVEL_DEBUG : -1);
    const struct CMUnitTest tests[] = {
        T_(test_type_find),
        T_(test_migrations_idempotent),
        T_(test_apply_and_load),
        T_(test_read_and_member_rules),
        T_(test_failing_op_rolls_back_batch),
        T_(test_message_without_room),
        T_(test_store_assigned_seq),
        T_(test_message_fields),
        T_(test_range_every_combination),
        T_(test_recent_many_rooms),
        T_(test_accounts_uploads_mentions),
        T_(test_store_assigned_idem),
        T_(test_search),
        T_(test_sqlite_specifics),
        T_(test_group_commit_per_thread_fifo),
        T_(test_group_commit_global_fifo),
        T_(test_close_commits_queued),
        T_(test_close_refuses_late_jobs),
        T_(test_async_commits_within_flush),
        T_(test_reads),
        T_(test_commit_failure_retries),
        T_(test_durability_across_restart),
        T_(test_open_errors),
        T_(test_pg_words),
        T_(test_pg_specifics),
        T_(test_pg_restart),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}

/* Unit tests of the chat core's pure logic (src/chat/chat_core.c, included
 * so its internals are reachable; the store and net functions it references
 * come from libsori.a and are never called here):
 *   - chat__next_id: 41 bits of ms since 2024-01-01 | 10 bits node | 12 bits
 *     counter; monotonic, rollover inside one ms, a clock going backwards;
 *   - chat_valid_room: PROTOCOL.md §1 room ids, dm ids up to 72 chars;
 *   - chat__ring_push: growth 8, 16, ... up to cfg.ring, overwriting the
 *     oldest, ring_n/ring_head invariants, references taken and dropped. */
#include "chat/chat_core.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#define EPOCH CHAT_ID_EPOCH_MS
#define ID_MS(id) ((int64_t)((id) >> 22))
#define ID_NODE(id) ((int)(((id) >> 12) & 1023))
#define ID_CTR(id) ((int)((id) & 4095))

static int setup(void **state)
{
    (void)state;
    memset(&chat__g, 0, sizeof chat__g);
    uv_mutex_init(&chat__g.id_lock);
    chat__g.cfg.workers = 1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    uv_mutex_destroy(&chat__g.id_lock);
    return 0;
}

/* ---- ids ---- */

static void test_id_layout(void **state)
{
    (void)state;
    chat__g.cfg.node_id = 5;
    int64_t now = EPOCH + 123456789;
    uint64_t id = chat__next_id(now);
    assert_int_equal(ID_MS(id), 123456789);
    assert_int_equal(ID_NODE(id), 5);
    assert_int_equal(ID_CTR(id), 0);
    /* the same ms: the counter moves, nothing else */
    uint64_t id2 = chat__next_id(now);
    assert_int_equal(ID_MS(id2), 123456789);
    assert_int_equal(ID_NODE(id2), 5);
    assert_int_equal(ID_CTR(id2), 1);
    /* a new ms: the counter starts again */
    uint64_t id3 = chat__next_id(now + 1);
    assert_int_equal(ID_MS(id3), 123456790);
    assert_int_equal(ID_CTR(id3), 0);
    assert_true(id < id2 && id2 < id3);
}

static void test_id_node_bits(void **state)
{
    (void)state;
    int64_t now = EPOCH + 1000;
    int nodes[] = {0, 1, 512, 1023};
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        chat__g.cfg.node_id = nodes[i];
        uint64_t id = chat__next_id(now + (int64_t)i * 10);
        assert_int_equal(ID_NODE(id), nodes[i]);
        assert_int_equal(ID_MS(id), 1000 + (int64_t)i * 10);
        assert_int_equal(ID_CTR(id), 0);
    }
    /* node ids only take their 10 bits: they never spill into the ms bits */
    chat__g.cfg.node_id = 1024 + 7;
    uint64_t id = chat__next_id(now + 100);
    assert_int_equal(ID_NODE(id), 7);
    assert_int_equal(ID_MS(id), 1100);
    /* two nodes in the same ms never collide */
    chat__g.cfg.node_id = 1;
    uint64_t a = chat__next_id(now + 200);
    chat__g.id_ms = 0;
    chat__g.id_ctr = 0;
    chat__g.cfg.node_id = 2;
    uint64_t b = chat__next_id(now + 200);
    assert_true(a != b);
    assert_int_equal(ID_MS(a), ID_MS(b));
}

static void test_id_monotonic_many(void **state)
{
    (void)state;
    chat__g.cfg.node_id = 3;
    int64_t now = chat__now_ms();
    uint64_t prev = 0;
    for (int i = 0; i < 100000; i++) {
        /* a clock that mostly stands still, sometimes moves on */
        uint64_t id = chat__next_id(now + i / 1000);
        assert_true(id > prev);
        assert_int_equal(ID_NODE(id), 3);
        prev = id;
    }
    /* the real clock too */
    for (int i = 0; i < 10000; i++) {
        uint64_t id = chat__next_id(chat__now_ms());
        assert_true(id > prev);
        prev = id;
    }
}

static void test_id_counter_rollover(void **state)
{
    (void)state;
    chat__g.cfg.node_id = 9;
    int64_t now = EPOCH + 5000;
    uint64_t prev = 0;
    for (int i = 0; i < 4096; i++) {
        uint64_t id = chat__next_id(now);
        assert_int_equal(ID_MS(id), 5000);
        assert_int_equal(ID_CTR(id), i);
        assert_true(id > prev);
        prev = id;
    }
    /* the 4097th id of one ms borrows the next ms, counter 0 */
    uint64_t id = chat__next_id(now);
    assert_int_equal(ID_MS(id), 5001);
    assert_int_equal(ID_CTR(id), 0);
    assert_int_equal(ID_NODE(id), 9);
    assert_true(id > prev);
    /* and the clock reaching that ms continues from there */
    uint64_t next = chat__next_id(now + 1);
    assert_int_equal(ID_MS(next), 5001);
    assert_int_equal(ID_CTR(next), 1);
    assert_true(next > id);
    /* 3 x 4096 ids in one ms: still strictly increasing, ms borrowed ahead */
    prev = next;
    for (int i = 0; i < 3 * 4096; i++) {
        uint64_t x = chat__next_id(now);
        assert_true(x > prev);
        prev = x;
    }
    assert_true(ID_MS(prev) >= 5003);
}

static void test_id_clock_backwards(void **state)
{
    (void)state;
    chat__g.cfg.node_id = 1;
    int64_t now = EPOCH + 100000;
    uint64_t a = chat__next_id(now);
    uint64_t b = chat__next_id(now - 5000); /* the clock jumped back 5 s */
    assert_true(b > a);
    assert_int_equal(ID_MS(b), 100000);
    assert_int_equal(ID_CTR(b), 1);
    uint64_t c = chat__next_id(now - 1);
    assert_true(c > b);
    uint64_t d = chat__next_id(now + 1); /* and forward again */
    assert_true(d > c);
    assert_int_equal(ID_MS(d), 100001);
    assert_int_equal(ID_CTR(d), 0);
}

/* ---- room ids ---- */

static void fill(char *buf, const char *prefix, size_t total, char ch)
{
    size_t p = strlen(prefix);
    memcpy(buf, prefix, p);
    for (size_t i = p; i < total; i++) buf[i] = ch;
    buf[total] = 0;
}

static void test_valid_room(void **state)
{
    (void)state;
    const char *good[] = {"a", "lobby", "Room_1", "a.b-c:d", "0", "-", ":", "UPPER.lower_09-:", "dm:alice:bob"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) assert_true(chat_valid_room(good[i]));
    const char *bad[] = {"", " ", "a b", "a/b", "é", "room!", "a\tb", "x#", "a,b", "tab\n", "dm:a b:c", "ä"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_false(chat_valid_room(bad[i]));

    char buf[200];
    fill(buf, "", 64, 'x');
    assert_true(chat_valid_room(buf));
    fill(buf, "", 65, 'x');
    assert_false(chat_valid_room(buf)); /* 65 chars, not a dm id */
    fill(buf, "dx:", 65, 'x');
    assert_false(chat_valid_room(buf));
    fill(buf, "DM:", 65, 'x');
    assert_false(chat_valid_room(buf)); /* the dm prefix is case-sensitive */
    /* the longest real dm id, dm:<32>:<32>, is 3 + 32 + 1 + 32 = 68 chars */
    char dm[80];
    snprintf(dm, sizeof dm, "dm:%.32s:%.32s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    assert_int_equal(strlen(dm), 68);
    assert_true(chat_valid_room(dm));
    fill(buf, "dm:", 65, 'x');
    assert_true(chat_valid_room(buf));
    fill(buf, "dm:", 72, 'x'); /* CHAT_ROOM_MAX: ids starting dm: may be up to 72 */
    assert_true(chat_valid_room(buf));
    fill(buf, "dm:", 73, 'x');
    assert_false(chat_valid_room(buf));
    fill(buf, "dm:", 100, 'x');
    assert_false(chat_valid_room(buf));
    fill(buf, "dm:", 70, 'x');
    buf[40] = '/';
    assert_false(chat_valid_room(buf));
    assert_true(CHAT_ROOM_MAX == 72);
}

/* ---- the ring ---- */

static chat_msg_t *msg(chat_room_t *r, int64_t seq)
{
    char text[32];
    int n = snprintf(text, sizeof text, "m%lld", (long long)seq);
    chat_msg_t *m = chat__msg_new(r, (uint64_t)seq * 10, seq, 1000 + seq, "alice", text, (size_t)n, NULL, NULL);
    assert_non_null(m);
    return m;
}

static unsigned refs(chat_msg_t *m) { return atomic_load(&m->refs); }

/* The ring holds exactly seqs lo..hi, oldest at ring_head. */
static void check_ring(chat_room_t *r, int64_t lo, int64_t hi)
{
    assert_int_equal(r->ring_n, (uint32_t)(hi - lo + 1));
    assert_true(r->ring_n <= r->ring_cap);
    assert_true(r->ring_head < r->ring_cap || r->ring_cap == 0);
    for (uint32_t i = 0; i < r->ring_n; i++) {
        chat_msg_t *m = r->ring[(r->ring_head + i) % r->ring_cap];
        assert_int_equal(m->seq, lo + i);
    }
}

static void test_ring_growth_and_overwrite(void **state)
{
    (void)state;
    chat__g.cfg.ring = 50;
    chat_room_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "ring");
    enum { N = 130 };
    chat_msg_t *all[N + 1];
    uint32_t caps[N + 1];
    for (int s = 1; s <= N; s++) {
        all[s] = msg(&r, s);
        chat__ring_push(&r, all[s]);
        caps[s] = r.ring_cap;
        int64_t lo = s > 50 ? s - 50 + 1 : 1;
        check_ring(&r, lo, s);
    }
    /* capacity: 8 for the first 8, then 16, 32, then capped at 50 */
    assert_int_equal(caps[1], 8);
    assert_int_equal(caps[8], 8);
    assert_int_equal(caps[9], 16);
    assert_int_equal(caps[16], 16);
    assert_int_equal(caps[17], 32);
    assert_int_equal(caps[32], 32);
    assert_int_equal(caps[33], 50);
    assert_int_equal(caps[N], 50);
    /* references: the ring holds one on each of the newest 50, none on the
     * overwritten ones */
    for (int s = 1; s <= N; s++) assert_int_equal(refs(all[s]), s > N - 50 ? 2u : 1u);
    /* the oldest is at ring_head */
    assert_int_equal(r.ring[r.ring_head]->seq, N - 50 + 1);
    assert_int_equal(r.ring[(r.ring_head + r.ring_n - 1) % r.ring_cap]->seq, N);
    for (uint32_t i = 0; i < r.ring_n; i++) chat__msg_unref(r.ring[(r.ring_head + i) % r.ring_cap]);
    free(r.ring);
    for (int s = 1; s <= N; s++) {
        assert_int_equal(refs(all[s]), 1u);
        chat__msg_unref(all[s]);
    }
}

static void test_ring_power_of_two_max_and_wrap(void **state)
{
    (void)state;
    chat__g.cfg.ring = 16;
    chat_room_t r;
    memset(&r, 0, sizeof r);
    chat_msg_t *keep[40];
    for (int s = 1; s <= 40; s++) {
        keep[s - 1] = msg(&r, s);
        chat__ring_push(&r, keep[s - 1]);
        assert_true(r.ring_cap == 8 || r.ring_cap == 16);
        check_ring(&r, s > 16 ? s - 15 : 1, s);
        if (s > 16) assert_int_equal(r.ring_head, (uint32_t)((s - 16) % 16));
    }
    assert_int_equal(r.ring_cap, 16);
    for (uint32_t i = 0; i < r.ring_n; i++) chat__msg_unref(r.ring[(r.ring_head + i) % r.ring_cap]);
    free(r.ring);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(refs(keep[i]), 1u);
        chat__msg_unref(keep[i]);
    }
}

static void test_ring_small_and_zero(void **state)
{
    (void)state;
    /* a ring smaller than the first allocation: capped at once */
    chat__g.cfg.ring = 3;
    chat_room_t r;
    memset(&r, 0, sizeof r);
    chat_msg_t *keep[10];
    for (int s = 1; s <= 10; s++) {
        keep[s - 1] = msg(&r, s);
        chat__ring_push(&r, keep[s - 1]);
        assert_int_equal(r.ring_cap, 3);
        check_ring(&r, s > 3 ? s - 2 : 1, s);
    }
    for (uint32_t i = 0; i < r.ring_n; i++) chat__msg_unref(r.ring[(r.ring_head + i) % r.ring_cap]);
    free(r.ring);
    for (int i = 0; i < 10; i++) chat__msg_unref(keep[i]);

    /* --room-ring 0 still keeps the newest message (rooms' last_message) */
    chat__g.cfg.ring = 0;
    memset(&r, 0, sizeof r);
    chat_msg_t *m = msg(&r, 1), *m2 = msg(&r, 2);
    chat__ring_push(&r, m);
    chat__ring_push(&r, m2);
    assert_int_equal(r.ring_n, 1);
    assert_int_equal(r.ring_cap, 1);
    assert_ptr_equal(r.ring[r.ring_head], m2);
    assert_int_equal(refs(m), 1u);
    assert_int_equal(refs(m2), 2u);
    chat__msg_unref(r.ring[r.ring_head]);
    free(r.ring);
    chat__msg_unref(m);
    chat__msg_unref(m2);

    /* a ring of one */
    chat__g.cfg.ring = 1;
    memset(&r, 0, sizeof r);
    chat_msg_t *a = msg(&r, 1), *b = msg(&r, 2);
    chat__ring_push(&r, a);
    chat__ring_push(&r, b);
    check_ring(&r, 2, 2);
    assert_int_equal(refs(a), 1u);
    assert_int_equal(refs(b), 2u);
    chat__msg_unref(r.ring[0]);
    free(r.ring);
    chat__msg_unref(a);
    chat__msg_unref(b);
}

static void test_msg_json(void **state)
{
    (void)state;
    chat_room_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "lobby");
    chat_msg_t *m = chat__msg_new(&r, 12345678901234567890ULL, 7, 1700000000000LL, "bob", "hi \"x\"", 6, "c1", NULL);
    assert_non_null(m);
    size_t len;
    const char *js = chat_msg_json(m, &len);
    assert_int_equal(len, strlen(js));
    assert_string_equal(js, "{\"type\":\"message\",\"room\":\"lobby\",\"id\":\"12345678901234567890\",\"seq\":7,"
                            "\"from\":\"bob\",\"text\":\"hi \\\"x\\\"\",\"ts\":1700000000000,\"cid\":\"c1\"}");
    assert_int_equal(chat_msg_seq(m), 7);
    chat__msg_unref(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_id_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_node_bits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_monotonic_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_counter_rollover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_clock_backwards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_valid_room, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_growth_and_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_power_of_two_max_and_wrap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ring_small_and_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msg_json, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

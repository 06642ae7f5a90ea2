/* Unit tests for net/net_iptable.c: counts per address and back to zero,
 * IPv6 by /64, the per-address rate bucket, bounded size with untracked
 * overflow, reuse of idle entries, and threads counting at once. */
#include "net/net_iptable.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static void v4(uint8_t a[16], uint32_t ip)
{
    memset(a, 0, 16);
    a[10] = a[11] = 0xff;
    a[12] = (uint8_t)(ip >> 24), a[13] = (uint8_t)(ip >> 16), a[14] = (uint8_t)(ip >> 8), a[15] = (uint8_t)ip;
}

static void test_counts_and_back_to_zero(void **state)
{
    (void)state;
    net_iptable_t *t = net_iptable_new(1024);
    assert_non_null(t);
    uint8_t a[16], b[16];
    v4(a, 0x0a000001);
    v4(b, 0x0a000002);
    for (int i = 0; i < 3; i++) assert_int_equal(net_iptable_acquire(t, a, 1000, 3, 0, 1), 0);
    assert_int_equal(net_iptable_acquire(t, a, 1000, 3, 0, 1), SORI_ELIMIT);
    assert_int_equal(net_iptable_acquire(t, b, 1000, 3, 0, 1), 0); /* another address */
    assert_int_equal(net_iptable_count(t, a), 3);
    assert_int_equal(net_iptable_count(t, b), 1);
    assert_int_equal(net_iptable_size(t), 2);
    net_iptable_release(t, a, 1000);
    assert_int_equal(net_iptable_acquire(t, a, 1000, 3, 0, 1), 0);
    for (int i = 0; i < 3; i++) net_iptable_release(t, a, 1000);
    net_iptable_release(t, b, 1000);
    assert_int_equal(net_iptable_count(t, a), 0);
    assert_int_equal(net_iptable_size(t), 0); /* dropped at zero */
    net_iptable_release(t, a, 1000);          /* an extra release is harmless */
    assert_int_equal(net_iptable_size(t), 0);
    net_iptable_free(t);
}

static void test_ipv6_by_64(void **state)
{
    (void)state;
    net_iptable_t *t = net_iptable_new(1024);
    uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t b[16];
    memcpy(b, a, 16);
    b[15] = 2;
    b[9] = 7; /* same /64, another host */
    uint8_t c[16];
    memcpy(c, a, 16);
    c[7] = 2; /* another /64 */
    assert_int_equal(net_iptable_acquire(t, a, 0, 2, 0, 1), 0);
    assert_int_equal(net_iptable_acquire(t, b, 0, 2, 0, 1), 0);
    assert_int_equal(net_iptable_acquire(t, b, 0, 2, 0, 1), SORI_ELIMIT);
    assert_int_equal(net_iptable_acquire(t, c, 0, 2, 0, 1), 0);
    assert_int_equal(net_iptable_count(t, a), 2);
    net_iptable_free(t);
}

static void test_loopback(void **state)
{
    (void)state;
    uint8_t a[16], six[16] = {0};
    v4(a, 0x7f000001);
    assert_true(net_addr_is_loopback(a));
    v4(a, 0x7f000002);
    assert_true(net_addr_is_loopback(a));
    v4(a, 0x0a000001);
    assert_false(net_addr_is_loopback(a));
    six[15] = 1;
    assert_true(net_addr_is_loopback(six));
    six[15] = 2;
    assert_false(net_addr_is_loopback(six));
}

static void test_rate_bucket(void **state)
{
    (void)state;
    net_iptable_t *t = net_iptable_new(1024);
    uint8_t a[16];
    v4(a, 0x0a000009);
    /* 10 per second, burst 3: three at once, then one per 100 ms */
    uint64_t now = 5000;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(net_iptable_acquire(t, a, now, 0, 10, 3), 0);
        net_iptable_release(t, a, now);
    }
    assert_int_equal(net_iptable_acquire(t, a, now, 0, 10, 3), SORI_EAGAIN);
    assert_int_equal(net_iptable_size(t), 1); /* the debt is kept though no connection is open */
    assert_int_equal(net_iptable_acquire(t, a, now + 50, 0, 10, 3), SORI_EAGAIN);
    assert_int_equal(net_iptable_acquire(t, a, now + 110, 0, 10, 3), 0);
    net_iptable_release(t, a, now + 110);
    /* once the bucket is full again the entry is dropped */
    uint8_t b[16];
    v4(b, 0x0a00000a);
    assert_int_equal(net_iptable_acquire(t, b, now + 10000, 0, 10, 3), 0);
    net_iptable_release(t, b, now + 10000);
    net_iptable_release(t, a, now + 10000); /* a's bucket is full again: dropped */
    assert_int_equal(net_iptable_size(t), 1); /* b still refills its one token */
    assert_int_equal(net_iptable_acquire(t, b, now + 20000, 0, 10, 3), 0);
    net_iptable_release(t, b, now + 20000 + 101);
    assert_int_equal(net_iptable_size(t), 0);
    net_iptable_free(t);
}

static void test_bounded_untracked_and_reuse(void **state)
{
    (void)state;
    net_iptable_t *t = net_iptable_new(NET_IPT_SHARDS * 2); /* 2 per shard */
    size_t cap = (size_t)NET_IPT_SHARDS * 2;
    uint8_t a[16];
    size_t tracked = 0, untracked = 0;
    for (uint32_t i = 0; i < 100000; i++) {
        v4(a, 0x0b000000 + i);
        int rc = net_iptable_acquire(t, a, 0, 1, 0, 1);
        assert_true(rc == 0 || rc == NET_IPT_UNTRACKED);
        if (rc == 0)
            tracked++;
        else
            untracked++;
    }
    assert_int_equal(tracked, cap);
    assert_int_equal(net_iptable_size(t), cap);
    assert_int_equal(untracked, 100000 - cap);
    /* release everything: the table empties and takes new addresses */
    for (uint32_t i = 0; i < 100000; i++) {
        v4(a, 0x0b000000 + i);
        net_iptable_release(t, a, 0);
    }
    assert_int_equal(net_iptable_size(t), 0);
    v4(a, 0x0c000001);
    assert_int_equal(net_iptable_acquire(t, a, 0, 1, 0, 1), 0);
    net_iptable_free(t);
}

static void test_full_shard_reclaims_idle(void **state)
{
    (void)state;
    net_iptable_t *t = net_iptable_new(NET_IPT_SHARDS); /* 1 per shard */
    uint8_t a[16];
    /* fill with rate debt only (no open connection) */
    int filled = 0;
    for (uint32_t i = 0; i < 10000 && filled < NET_IPT_SHARDS * 4; i++) {
        v4(a, 0x0d000000 + i);
        if (net_iptable_acquire(t, a, 0, 0, 1, 1) == 0) {
            net_iptable_release(t, a, 0);
            filled++;
        }
    }
    assert_true(net_iptable_size(t) <= NET_IPT_SHARDS);
    /* a second later every bucket is full: the entries are reclaimed */
    size_t ok = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        v4(a, 0x0e000000 + i);
        if (net_iptable_acquire(t, a, 5000, 0, 1, 1) == 0) ok++;
    }
    assert_int_equal(ok, NET_IPT_SHARDS);
    net_iptable_free(t);
}

typedef struct {
    net_iptable_t *t;
    int seed;
} thr_arg_t;

static void *thr_main(void *p)
{
    thr_arg_t *x = p;
    uint8_t a[16];
    for (int i = 0; i < 20000; i++) {
        v4(a, 0x0f000000 + (uint32_t)((i * 7 + x->seed) % 50));
        if (net_iptable_acquire(x->t, a, 0, 1000000, 0, 1) == 0) net_iptable_release(x->t, a, 0);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    net_iptable_t *t = net_iptable_new(4096);
    pthread_t th[4];
    thr_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg_t){t, i};
        pthread_create(&th[i], NULL, thr_main, &args[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_int_equal(net_iptable_size(t), 0);
    net_iptable_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_back_to_zero),
        cmocka_unit_test(test_ipv6_by_64),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_rate_bucket),
        cmocka_unit_test(test_bounded_untracked_and_reuse),
        cmocka_unit_test(test_full_shard_reclaims_idle),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_ws_utf8.c: unit tests for the incremental UTF-8 validator. Includes
 * the .c so ws__utf8_run (which reports the failing index) is reachable.
 * Besides fixed cases from RFC 3629 and the Autobahn test suite's §6 ideas,
 * it compares the validator against an independent reference written from
 * RFC 3629 §3 (bit patterns + range checks) for every sequence of up to
 * three bytes.
 */
#include "ws/ws_utf8.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

/* Index of the first byte the validator rejects, or n when all are fine. */
static size_t fail_index(const uint8_t *p, size_t n)
{
    uint32_t s = 0;
    return ws__utf8_run(&s, p, n);
}

/*
 * Reference from RFC 3629 §3: the lead byte's high bits give the length,
 * continuations are 10xxxxxx, and the decoded value must use the shortest
 * form, not be a surrogate (U+D800..U+DFFF) and not exceed U+10FFFF.
 * Returns 1 if p[0..n) is valid UTF-8.
 */
static int ref_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = p[i];
        size_t len;
        uint32_t cp, min;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            len = 2, cp = b & 0x1F, min = 0x80;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3, cp = b & 0x0F, min = 0x800;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4, cp = b & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

/* Feeds p in the pieces given by the cut points; returns 0 or SORI_EUTF8
 * from the first failing feed, or from finish. */
static int feed_split(const uint8_t *p, size_t n, size_t c1, size_t c2)
{
    ws_utf8_t u;
    ws_utf8_init(&u);
    if (ws_utf8_feed(&u, p, c1)) return SORI_EUTF8;
    if (ws_utf8_feed(&u, p + c1, c2 - c1)) return SORI_EUTF8;
    if (ws_utf8_feed(&u, p + c2, n - c2)) return SORI_EUTF8;
    return ws_utf8_finish(&u);
}

/* RFC 3629 §4: well-formed sequences, including every boundary code point. */
static void test_valid_strings(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n;
    } cases[] = {
        {"", 0},
        {"Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xC3\xA4\xC3\xBC\xC3\xA0\xC3\xA1-UTF-8!!", 0},
        {"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5", 0}, /* κόσμε */
        {"\x00", 1},                                            /* U+0000 */
        {"\x7F", 0},                                            /* U+007F */
        {"\xC2\x80", 0},                                        /* U+0080 */
        {"\xDF\xBF", 0},                                        /* U+07FF */
        {"\xE0\xA0\x80", 0},                                    /* U+0800 */
        {"\xED\x9F\xBF", 0},                                    /* U+D7FF */
        {"\xEE\x80\x80", 0},                                    /* U+E000 */
        {"\xEF\xBF\xBD", 0},                                    /* U+FFFD */
        {"\xEF\xBF\xBF", 0},                                    /* U+FFFF (noncharacter, valid) */
        {"\xF0\x90\x80\x80", 0},                                /* U+10000 */
        {"\xF3\xBF\xBF\xBF", 0},                                /* U+FFFFF */
        {"\xF4\x8F\xBF\xBF", 0},                                /* U+10FFFF */
        {"\xF0\x9F\x98\x80 emoji", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint8_t *p = (const uint8_t *)cases[i].s;
        size_t n = cases[i].n ? cases[i].n : strlen(cases[i].s);
        assert_true(ws_utf8_valid(p, n));
        assert_int_equal(fail_index(p, n), n);
        ws_utf8_t u;
        ws_utf8_init(&u);
        assert_int_equal(ws_utf8_feed(&u, p, n), 0);
        assert_int_equal(ws_utf8_finish(&u), 0);
    }
}

/* RFC 6455 §8.1 (Autobahn 6.2-6.4 style): a valid text message validates
 * under every split into two or three fragments. */
static void test_every_split_valid(void **state)
{
    (void)state;
    const char *s = "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5 \xF0\x9F\x98\x80"
                    "\xF4\x8F\xBF\xBF\xE0\xA0\x80\xED\x9F\xBF\xC2\x80-ascii";
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s);
    assert_true(ws_utf8_valid(p, n));
    for (size_t c1 = 0; c1 <= n; c1++)
        for (size_t c2 = c1; c2 <= n; c2++) assert_int_equal(feed_split(p, n, c1, c2), 0);
    /* One byte per feed. */
    ws_utf8_t u;
    ws_utf8_init(&u);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ws_utf8_feed(&u, p + i, 1), 0);
        /* Mid-sequence is only a failure at the end of the message. */
    }
    assert_int_equal(ws_utf8_finish(&u), 0);
}

/* RFC 6455 §8.1, Autobahn 6.3.1: "κόσμε-edited" with a surrogate fails at
 * the byte that makes it invalid, whichever fragment that byte is in. */
static void test_autobahn_invalid_fragmented(void **state)
{
    (void)state;
    const uint8_t p[] = {0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE,
                         0xB5, 0xED, 0xA0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64};
    const size_t n = sizeof p, bad = 12; /* A0 after ED (a surrogate) */
    assert_false(ws_utf8_valid(p, n));
    assert_int_equal(fail_index(p, n), bad);
    for (size_t cut = 0; cut <= n; cut++) {
        ws_utf8_t u;
        ws_utf8_init(&u);
        int r1 = ws_utf8_feed(&u, p, cut);
        if (cut > bad) {
            assert_int_equal(r1, SORI_EUTF8); /* fails within the first piece */
        } else {
            assert_int_equal(r1, 0);
            assert_int_equal(ws_utf8_feed(&u, p + cut, n - cut), SORI_EUTF8);
        }
    }
}

/* RFC 3629 §3, §10: invalid sequences and the index of the first bad byte. */
static void test_invalid_sequences(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t n, bad;
    } cases[] = {
        /* overlongs */
        {"\xC0\x80", 2, 0},
        {"\xC1\xBF", 2, 0},
        {"\xE0\x80\x80", 3, 1},
        {"\xE0\x9F\xBF", 3, 1},
        {"\xF0\x80\x80\x80", 4, 1},
        {"\xF0\x8F\xBF\xBF", 4, 1},
        {"\xF8\x88\x80\x80\x80", 5, 0}, /* 5-byte form */
        {"\xFC\x84\x80\x80\x80\x80", 6, 0},
        /* surrogates U+D800..U+DFFF */
        {"\xED\xA0\x80", 3, 1},
        {"\xED\xAD\xBF", 3, 1},
        {"\xED\xAE\x80", 3, 1},
        {"\xED\xBF\xBF", 3, 1},
        {"\xED\xA0\x80\xED\xB0\x80", 6, 1}, /* a surrogate pair */
        /* above U+10FFFF */
        {"\xF4\x90\x80\x80", 4, 1},
        {"\xF4\xBF\xBF\xBF", 4, 1},
        {"\xF5\x80\x80\x80", 4, 0},
        {"\xF7\xBF\xBF\xBF", 4, 0},
        {"\xFE", 1, 0},
        {"\xFF", 1, 0},
        {"a\xFF", 2, 1},
        /* lone continuation bytes */
        {"\x80", 1, 0},
        {"\xBF", 1, 0},
        {"ab\x80\x80", 4, 2},
        {"\xC2\x80\x80", 3, 2},
        /* truncated sequence followed by ASCII: fails at the ASCII byte */
        {"\xE2\x82" "A", 3, 2},
        {"\xC2" "A", 2, 1},
        {"\xF0\x9F\x98" "A", 4, 3},
        {"\xF0\x9F" " ", 3, 2},
        /* a lead byte where a continuation is due */
        {"\xC2\xC2\x80", 3, 1},
        {"\xE1\x80\xE1", 3, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint8_t *p = (const uint8_t *)cases[i].s;
        assert_false(ws_utf8_valid(p, cases[i].n));
        assert_int_equal(fail_index(p, cases[i].n), cases[i].bad);
        /* Fed one byte at a time, the feed of byte `bad` is the one that fails. */
        ws_utf8_t u;
        ws_utf8_init(&u);
        for (size_t k = 0; k < cases[i].bad; k++) assert_int_equal(ws_utf8_feed(&u, p + k, 1), 0);
        assert_int_equal(ws_utf8_feed(&u, p + cases[i].bad, 1), SORI_EUTF8);
    }
    /* Every byte F5..FF and C0, C1 is invalid anywhere. */
    for (unsigned b = 0; b < 256; b++) {
        uint8_t one = (uint8_t)b;
        int want = b < 0x80; /* as a whole string, only ASCII is valid alone */
        assert_int_equal(ws_utf8_valid(&one, 1), want);
        uint32_t s = 0;
        size_t at = ws__utf8_run(&s, &one, 1);
        int lead_ok = b < 0x80 || (b >= 0xC2 && b <= 0xF4);
        assert_int_equal(at, lead_ok ? 1 : 0);
    }
}

/* RFC 6455 §8.1: a message that ends mid-sequence fails at finish. */
static void test_finish_mid_sequence(void **state)
{
    (void)state;
    const char *truncs[] = {"\xC2", "\xE0\xA0", "\xF0\x90\x80", "abc\xF4", "\xE1"};
    for (size_t i = 0; i < sizeof truncs / sizeof truncs[0]; i++) {
        ws_utf8_t u;
        ws_utf8_init(&u);
        assert_int_equal(ws_utf8_feed(&u, (const uint8_t *)truncs[i], strlen(truncs[i])), 0);
        assert_int_equal(ws_utf8_finish(&u), SORI_EUTF8);
        assert_false(ws_utf8_valid((const uint8_t *)truncs[i], strlen(truncs[i])));
    }
}

/* A failure is sticky: later valid bytes do not revive the stream. */
static void test_reject_sticky(void **state)
{
    (void)state;
    ws_utf8_t u;
    ws_utf8_init(&u);
    assert_int_equal(ws_utf8_feed(&u, (const uint8_t *)"\xFF", 1), SORI_EUTF8);
    assert_int_equal(ws_utf8_feed(&u, (const uint8_t *)"abc", 3), SORI_EUTF8);
    assert_int_equal(ws_utf8_feed(&u, NULL, 0), SORI_EUTF8);
    assert_int_equal(ws_utf8_finish(&u), SORI_EUTF8);
    /* init resets it. */
    ws_utf8_init(&u);
    assert_int_equal(ws_utf8_feed(&u, (const uint8_t *)"abc", 3), 0);
    assert_int_equal(ws_utf8_finish(&u), 0);
}

/* The 8-byte ASCII fast path: a bad byte at any position in a long ASCII
 * run, and multi-byte characters straddling word boundaries. */
static void test_fast_path_positions(void **state)
{
    (void)state;
    uint8_t buf[80];
    for (size_t pos = 0; pos < sizeof buf; pos++) {
        memset(buf, 'x', sizeof buf);
        buf[pos] = 0x80;
        assert_int_equal(fail_index(buf, sizeof buf), pos);
        /* From every starting alignment. */
        for (size_t a = 0; a < 8 && a <= pos; a++)
            assert_int_equal(fail_index(buf + a, sizeof buf - a), pos - a);
    }
    for (size_t pos = 0; pos + 4 <= sizeof buf; pos++) {
        memset(buf, 'y', sizeof buf);
        memcpy(buf + pos, "\xF0\x9F\x98\x80", 4);
        assert_true(ws_utf8_valid(buf, sizeof buf));
        buf[pos + 3] = 'z'; /* truncated: fails at the ASCII byte */
        assert_int_equal(fail_index(buf, sizeof buf), pos + 3);
    }
}

/* RFC 3629 §3/§4: the table-driven validator equals the bit-pattern reference
 * for every 1-, 2- and 3-byte input. */
static void test_exhaustive_up_to_3(void **state)
{
    (void)state;
    uint8_t p[3];
    for (unsigned a = 0; a < 256; a++) {
        p[0] = (uint8_t)a;
        assert_int_equal(ws_utf8_valid(p, 1), ref_valid(p, 1));
        for (unsigned b = 0; b < 256; b++) {
            p[1] = (uint8_t)b;
            assert_int_equal(ws_utf8_valid(p, 2), ref_valid(p, 2));
            if (a < 0xC0 && a >= 0x80) continue; /* invalid lead: 3-byte answer is 0 for both */
            for (unsigned c = 0; c < 256; c++) {
                p[2] = (uint8_t)c;
                if (ws_utf8_valid(p, 3) != ref_valid(p, 3)) fail_msg("%02x %02x %02x", a, b, c);
            }
        }
    }
}

/* RFC 3629 §4: 4-byte leads against the reference, over every interesting
 * continuation value (range edges and non-continuations). */
static void test_four_byte_edges(void **state)
{
    (void)state;
    const uint8_t cont[] = {0x00, 0x41, 0x7F, 0x80, 0x81, 0x8F, 0x90, 0x9F,
                            0xA0, 0xBF, 0xC0, 0xC2, 0xE0, 0xF0, 0xF4, 0xFF};
    const size_t nc = sizeof cont;
    uint8_t p[4];
    for (unsigned a = 0xE0; a < 0x100; a++) {
        p[0] = (uint8_t)a;
        for (size_t i = 0; i < nc; i++)
            for (size_t j = 0; j < nc; j++)
                for (size_t k = 0; k < nc; k++) {
                    p[1] = cont[i];
                    p[2] = cont[j];
                    p[3] = cont[k];
                    if (ws_utf8_valid(p, 4) != ref_valid(p, 4))
                        fail_msg("%02x %02x %02x %02x", p[0], p[1], p[2], p[3]);
                }
    }
}

/* Random byte soup: validator, reference and 3-piece incremental feeds agree. */
static void test_random_agree(void **state)
{
    (void)state;
    uint64_t x = 0x9E3779B97F4A7C15u;
    uint8_t buf[64];
    for (int iter = 0; iter < 200000; iter++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t n = x % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            /* Mostly bytes near the interesting ranges. */
            static const uint8_t pick[] = {'a', 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC2,
                                           0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xC0};
            buf[i] = (x >> 8) & 1 ? pick[(x >> 16) % sizeof pick] : (uint8_t)(x >> 24);
        }
        int want = ref_valid(buf, n);
        assert_int_equal(ws_utf8_valid(buf, n), want);
        size_t c1 = n ? (x >> 32) % (n + 1) : 0;
        size_t c2 = c1 + (n - c1 ? (x >> 40) % (n - c1 + 1) : 0);
        assert_int_equal(feed_split(buf, n, c1, c2) == 0, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_strings),
        cmocka_unit_test(test_every_split_valid),
        cmocka_unit_test(test_autobahn_invalid_fragmented),
        cmocka_unit_test(test_invalid_sequences),
        cmocka_unit_test(test_finish_mid_sequence),
        cmocka_unit_test(test_reject_sticky),
        cmocka_unit_test(test_fast_path_positions),
        cmocka_unit_test(test_exhaustive_up_to_3),
        cmocka_unit_test(test_four_byte_edges),
        cmocka_unit_test(test_random_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

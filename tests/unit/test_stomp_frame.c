/*
 * test_stomp_frame.c: cmocka tests for src/proto/stomp_frame.c against the
 * STOMP 1.2 specification (https://stomp.github.io/stomp-specification-1.2.html):
 * frame structure, EOLs and heart-beats, content-length and NUL-terminated
 * bodies, header escapes per version (none in CONNECT), repeated headers,
 * incomplete frames left untouched, limits, and the header encoder.
 * Inputs are exactly-sized heap copies so ASan sees any read past the end.
 */
#include "proto/stomp_frame.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

static const stomp_limits_t lim = {STOMP_HEADERS_MAX, 1024, 4096};
static stomp_frame_t f;
static char *copy;

static int parse_v(const char *s, size_t n, int version)
{
    free(copy);
    copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    return stomp_frame_parse(copy, n, version, &lim, &f);
}

#define PARSE(lit, v) parse_v(lit, sizeof(lit) - 1, v)

static void assert_header(const char *name, const char *value)
{
    const slice_t *h = stomp_header_get(&f, name);
    assert_non_null(h);
    assert_int_equal(h->len, strlen(value));
    assert_memory_equal(h->p, value, h->len);
}

static void test_simple_frame(void **state)
{
    (void)state;
    assert_int_equal(PARSE("SEND\ndestination:/topic/room.a\n\nhello\0", 12), (int)sizeof("SEND\ndestination:/topic/room.a\n\nhello\0") - 1);
    assert_int_equal(f.command, STOMP_SEND);
    assert_int_equal(f.nheaders, 1);
    assert_header("destination", "/topic/room.a");
    assert_int_equal(f.body_len, 5);
    assert_memory_equal(f.body, "hello", 5);
    assert_int_equal(f.body[5], 0);
    assert_null(stomp_header_get(&f, "receipt"));
}

static void test_crlf_and_no_headers(void **state)
{
    (void)state;
    assert_int_equal(PARSE("DISCONNECT\r\nreceipt:77\r\n\r\n\0", 12), 27);
    assert_int_equal(f.command, STOMP_DISCONNECT);
    assert_header("receipt", "77");
    assert_int_equal(PARSE("ACK\n\n\0", 12), 6);
    assert_int_equal(f.nheaders, 0);
    assert_int_equal(f.body_len, 0);
}

static void test_content_length_body_with_nul(void **state)
{
    (void)state;
    assert_int_equal(PARSE("SEND\ncontent-length:3\n\na\0b\0", 12), 27);
    assert_int_equal(f.body_len, 3);
    assert_memory_equal(f.body, "a\0b", 3);
    /* the NUL must be where content-length says */
    assert_int_equal(PARSE("SEND\ncontent-length:2\n\nabc\0", 12), SORI_EINVAL);
    assert_non_null(f.error);
    assert_int_equal(PARSE("SEND\ncontent-length:x\n\nabc\0", 12), SORI_EINVAL);
    /* the first content-length wins, as for every header */
    assert_int_equal(PARSE("SEND\ncontent-length:1\ncontent-length:3\n\na\0", 12), 42);
    assert_int_equal(f.body_len, 1);
}

static void test_incomplete_is_eagain_and_untouched(void **state)
{
    (void)state;
    static const char full[] = "SEND\ndestination:a\\cb\nreceipt:r\n\nbody\0";
    for (size_t n = 1; n < sizeof full - 1; n++) {
        assert_int_equal(parse_v(full, n, 12), SORI_EAGAIN);
        assert_memory_equal(copy, full, n); /* nothing decoded in place yet */
    }
    assert_int_equal(parse_v(full, sizeof full - 1, 12), (int)sizeof full - 1);
    assert_header("destination", "a:b");
    /* with content-length: incomplete until the NUL after the body */
    assert_int_equal(PARSE("SEND\ncontent-length:4\n\nab\0", 12), SORI_EAGAIN);
}

static void test_escapes_per_version(void **state)
{
    (void)state;
    assert_int_equal(PARSE("SEND\nk\\c:a\\\\b\\nc\\rd\n\n\0", 12) > 0, 1);
    assert_header("k:", "a\\b\nc\rd");
    /* 1.1 has no \r */
    assert_int_equal(PARSE("SEND\nk:a\\rb\n\n\0", 11), SORI_EINVAL);
    assert_int_equal(PARSE("SEND\nk:a\\cb\n\n\0", 11) > 0, 1);
    assert_header("k", "a:b");
    /* 1.0: verbatim */
    assert_int_equal(PARSE("SEND\nk:a\\cb\n\n\0", 10) > 0, 1);
    assert_header("k", "a\\cb");
    /* undefined escapes and a trailing backslash are errors */
    assert_int_equal(PARSE("SEND\nk:a\\tb\n\n\0", 12), SORI_EINVAL);
    assert_int_equal(PARSE("SEND\nk:ab\\\n\n\0", 12), SORI_EINVAL);
    /* CONNECT and STOMP are never unescaped */
    assert_int_equal(PARSE("CONNECT\npasscode:a\\tb\n\n\0", 12) > 0, 1);
    assert_header("passcode", "a\\tb");
}

static void test_values_may_hold_colons(void **state)
{
    (void)state;
    assert_int_equal(PARSE("SEND\ndestination:/topic/room.dm:a:b\n\n\0", 10) > 0, 1);
    assert_header("destination", "/topic/room.dm:a:b");
}

static void test_malformed(void **state)
{
    (void)state;
    assert_int_equal(PARSE("FROB\n\n\0", 12), SORI_EINVAL);
    assert_int_equal(PARSE("send\n\n\0", 12), SORI_EINVAL);         /* commands are case-sensitive */
    assert_int_equal(PARSE("MESSAGE\n\n\0", 12), SORI_EINVAL);      /* a server frame */
    assert_int_equal(PARSE("SEND\nnocolon\n\n\0", 12), SORI_EINVAL);
    assert_int_equal(PARSE("SEND\n:v\n\n\0", 12), SORI_EINVAL);
    assert_int_equal(PARSE("SEND\n\0", 12), SORI_EINVAL);           /* no blank line */
    assert_int_equal(PARSE("SEND\nk:v\0\n\n\0", 12), SORI_EINVAL);  /* NUL in a header */
    assert_int_equal(PARSE("\n\n\0", 12), SORI_EINVAL);             /* EOLs are skipped first */
}

static void test_limits(void **state)
{
    (void)state;
    char big[2048];
    int n = snprintf(big, sizeof big, "SEND\n");
    for (int i = 0; i < STOMP_HEADERS_MAX + 1; i++) n += snprintf(big + n, sizeof big - (size_t)n, "h:%d\n", i);
    n += snprintf(big + n, sizeof big - (size_t)n, "\n");
    big[n++] = 0;
    assert_int_equal(parse_v(big, (size_t)n, 12), SORI_E2BIG);
    /* headers over max_header_bytes, even before they end */
    memset(big, 'x', sizeof big);
    memcpy(big, "SEND\nk:", 7);
    assert_int_equal(parse_v(big, 1500, 12), SORI_E2BIG);
    assert_int_equal(parse_v(big, 1000, 12), SORI_EAGAIN);
    /* a body over max_body, with and without content-length */
    assert_int_equal(PARSE("SEND\ncontent-length:5000\n\n", 12), SORI_E2BIG);
    char body[4200] = "SEND\n\n";
    memset(body + 6, 'b', sizeof body - 6);
    assert_int_equal(parse_v(body, sizeof body, 12), SORI_E2BIG);
    assert_int_equal(parse_v(body, 4000, 12), SORI_EAGAIN);
}

static void test_skip_eols(void **state)
{
    (void)state;
    assert_int_equal(stomp_skip_eols("\n\r\n\nSEND", 8), 4);
    assert_int_equal(stomp_skip_eols("\r", 1), 0);
    assert_int_equal(stomp_skip_eols("\n\r", 2), 1);
    assert_int_equal(stomp_skip_eols("", 0), 0);
}

static void test_several_frames_in_a_row(void **state)
{
    (void)state;
    static const char two[] = "SEND\n\na\0\nSEND\n\nb\0";
    int a = parse_v(two, sizeof two - 1, 12);
    assert_int_equal(a, 8);
    size_t off = (size_t)a + stomp_skip_eols(copy + a, sizeof two - 1 - (size_t)a);
    assert_int_equal(stomp_frame_parse(copy + off, sizeof two - 1 - off, 12, &lim, &f), 8);
    assert_memory_equal(f.body, "b", 1);
}

static void test_header_append(void **state)
{
    (void)state;
    buf_t b = {0};
    assert_int_equal(stomp_header_append(&b, 12, "k", "a:b\\c\nd\re", 9), 0);
    assert_int_equal(stomp_header_append(&b, 11, "k", "a:b\re", 5), 0);
    assert_int_equal(stomp_header_append(&b, 10, "k", "a:b\nc", 5), 0);
    assert_int_equal(buf_append(&b, "", 1), 0);
    assert_string_equal(b.data, "k:a\\cb\\\\c\\nd\\re\nk:a\\cbe\nk:a:bc\n");
    buf_free(&b);
}

static int teardown(void **state)
{
    (void)state;
    free(copy);
    copy = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_frame),
        cmocka_unit_test(test_crlf_and_no_headers),
        cmocka_unit_test(test_content_length_body_with_nul),
        cmocka_unit_test(test_incomplete_is_eagain_and_untouched),
        cmocka_unit_test(test_escapes_per_version),
        cmocka_unit_test(test_values_may_hold_colons),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_skip_eols),
        cmocka_unit_test(test_several_frames_in_a_row),
        cmocka_unit_test(test_header_append),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}

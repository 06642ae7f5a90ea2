/*
 * test_ws_deflate.c: unit tests for permessage-deflate negotiation and
 * per-message compression. Includes the .c so static helpers are reachable.
 * Compressed examples come from RFC 7692 §7.2.3.
 */
#include "ws/ws_deflate.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#define RESP_BASE "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

/* ---- negotiation ---- */

/* Runs negotiation on a NUL-terminated header value. */
static int nego(const char *hv, ws_deflate_params_t *p, char *resp, size_t cap)
{
    slice_t s = {hv, strlen(hv)};
    return ws_deflate_negotiate(s, p, resp, cap);
}

static void expect_accept(const char *hv, int bits, const char *want_resp)
{
    ws_deflate_params_t p = {-1, -1};
    char resp[256];
    memset(resp, 'Z', sizeof resp);
    int rc = nego(hv, &p, resp, sizeof resp);
    if (rc != 1) fail_msg("expected accept for [%s], got %d", hv, rc);
    assert_int_equal(p.enabled, 1);
    assert_int_equal(p.server_window_bits, bits);
    assert_string_equal(resp, want_resp);
    /* RFC 7692 §7.1.2.2: we never answer with client_max_window_bits. */
    assert_null(strstr(resp, "client_max_window_bits"));
}

static void expect_decline(const char *hv)
{
    ws_deflate_params_t p = {-1, -1};
    char resp[256] = "junk";
    int rc = nego(hv, &p, resp, sizeof resp);
    if (rc != 0) fail_msg("expected decline for [%s], got %d", hv, rc);
    assert_int_equal(p.enabled, 0);
    assert_string_equal(resp, "");
}

static void expect_garbage(const char *hv)
{
    ws_deflate_params_t p = {-1, -1};
    char resp[256];
    int rc = nego(hv, &p, resp, sizeof resp);
    if (rc != SORI_EINVAL) fail_msg("expected EINVAL for [%s], got %d", hv, rc);
    assert_int_equal(p.enabled, 0);
}

/* RFC 7692 §5, §7.1.1: a plain offer is accepted, and we add both
 * no_context_takeover parameters (§7.1.1.2: the server may add the client's). */
static void test_nego_plain(void **state)
{
    (void)state;
    expect_accept("permessage-deflate", 15, RESP_BASE);
    expect_accept("permessage-deflate; client_max_window_bits", 15, RESP_BASE);
    expect_accept("permessage-deflate; server_no_context_takeover", 15, RESP_BASE);
    expect_accept("permessage-deflate; client_no_context_takeover; server_no_context_takeover",
                  15, RESP_BASE);
}

/* RFC 7692 §7.1.2.1: server_max_window_bits=N is echoed and used. */
static void test_nego_server_window(void **state)
{
    (void)state;
    expect_accept("permessage-deflate; server_max_window_bits=10", 10,
                  RESP_BASE "; server_max_window_bits=10");
    expect_accept("permessage-deflate; server_max_window_bits=9", 9,
                  RESP_BASE "; server_max_window_bits=9");
    expect_accept("permessage-deflate; server_max_window_bits=15", 15,
                  RESP_BASE "; server_max_window_bits=15");
    /* §7.1.2.1: a value is required, 8..15, no leading zeroes. */
    expect_decline("permessage-deflate; server_max_window_bits");
    expect_decline("permessage-deflate; server_max_window_bits=7");
    expect_decline("permessage-deflate; server_max_window_bits=16");
    expect_decline("permessage-deflate; server_max_window_bits=010");
    expect_decline("permessage-deflate; server_max_window_bits=0");
    expect_decline("permessage-deflate; server_max_window_bits=1O");
    expect_decline("permessage-deflate; server_max_window_bits=100000000000000000015");
}

/* RFC 7692 §7.1.2.1 with zlib: 8 is declined; the next acceptable offer wins
 * (§5: the server picks one of the offers, in order of preference). */
static void test_nego_window8_then_second(void **state)
{
    (void)state;
    expect_decline("permessage-deflate; server_max_window_bits=8");
    expect_accept("permessage-deflate; server_max_window_bits=8, permessage-deflate; "
                  "server_max_window_bits=12",
                  12, RESP_BASE "; server_max_window_bits=12");
    expect_accept("permessage-deflate; server_max_window_bits=8, permessage-deflate", 15,
                  RESP_BASE);
    /* The first acceptable offer wins, not the last. */
    expect_accept("permessage-deflate; server_max_window_bits=11, permessage-deflate; "
                  "server_max_window_bits=12",
                  11, RESP_BASE "; server_max_window_bits=11");
}

/* RFC 7692 §7.1: an unknown parameter declines the offer. */
static void test_nego_unknown_param(void **state)
{
    (void)state;
    expect_decline("permessage-deflate; foo");
    expect_decline("permessage-deflate; foo=bar");
    /* Names match exactly, not by prefix (STYLE.md practice 3). */
    expect_decline("permessage-deflate; server_no_context_takeoverx");
    expect_decline("permessage-deflate; server_no_context_takeove");
    expect_decline("permessage-deflate; server_max_window_bitsx=10");
    expect_accept("permessage-deflate; foo, permessage-deflate", 15, RESP_BASE);
}

/* RFC 7692 §7.1: a duplicate parameter declines the offer. */
static void test_nego_duplicate_param(void **state)
{
    (void)state;
    expect_decline("permessage-deflate; server_no_context_takeover; server_no_context_takeover");
    expect_decline("permessage-deflate; client_no_context_takeover; client_no_context_takeover");
    expect_decline("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10");
    expect_decline("permessage-deflate; client_max_window_bits; client_max_window_bits=10");
    expect_decline("permessage-deflate; SERVER_NO_CONTEXT_TAKEOVER; server_no_context_takeover");
}

/* RFC 6455 §9.1: values may be quoted strings whose content is a token. */
static void test_nego_quoted(void **state)
{
    (void)state;
    expect_accept("permessage-deflate; server_max_window_bits=\"10\"", 10,
                  RESP_BASE "; server_max_window_bits=10");
    expect_accept("permessage-deflate; server_max_window_bits=\"1\\3\"", 13,
                  RESP_BASE "; server_max_window_bits=13");
    expect_accept("permessage-deflate; client_max_window_bits=\"15\"", 15, RESP_BASE);
    expect_decline("permessage-deflate; server_max_window_bits=\"8\"");
    expect_decline("permessage-deflate; server_no_context_takeover=\"x\"");
    /* Other extensions' quoted values are skipped. */
    expect_accept("foo; bar=\"baz\", permessage-deflate", 15, RESP_BASE);
}

/* RFC 7692 §7.1.2.2: client_max_window_bits with or without a value; never
 * answered. */
static void test_nego_client_window(void **state)
{
    (void)state;
    expect_accept("permessage-deflate; client_max_window_bits", 15, RESP_BASE);
    expect_accept("permessage-deflate; client_max_window_bits=10", 15, RESP_BASE);
    expect_accept("permessage-deflate; client_max_window_bits=8", 15, RESP_BASE);
    expect_accept("permessage-deflate; client_max_window_bits=15; server_max_window_bits=9", 9,
                  RESP_BASE "; server_max_window_bits=9");
    expect_decline("permessage-deflate; client_max_window_bits=16");
    expect_decline("permessage-deflate; client_max_window_bits=7");
    expect_decline("permessage-deflate; client_max_window_bits=09");
}

/* RFC 7692 §7.1.1.1, §7.1.1.2: no_context_takeover takes no value. */
static void test_nego_nct_value(void **state)
{
    (void)state;
    expect_decline("permessage-deflate; server_no_context_takeover=1");
    expect_decline("permessage-deflate; client_no_context_takeover=true");
}

/* RFC 6455 §9.1: names are tokens, compared case-insensitively; other
 * extensions in the list are skipped; whitespace is optional. */
static void test_nego_lists_and_case(void **state)
{
    (void)state;
    expect_accept("x-webkit-deflate-frame, permessage-deflate", 15, RESP_BASE);
    expect_accept("x-webkit-deflate-frame; no_context_takeover, permessage-deflate; "
                  "client_max_window_bits",
                  15, RESP_BASE);
    expect_accept("PerMessage-Deflate; Server_Max_Window_Bits=11", 11,
                  RESP_BASE "; server_max_window_bits=11");
    expect_accept("  permessage-deflate ;\tserver_max_window_bits = 10 , ", 10,
                  RESP_BASE "; server_max_window_bits=10");
    expect_accept(", , permessage-deflate,,", 15, RESP_BASE);
    expect_decline("x-webkit-deflate-frame");
    expect_decline("permessage-deflatex");
    expect_decline("permessage-deflat");
    expect_decline("");
    expect_decline(" , ,\t");
}

/* RFC 6455 §9.1: a value that is not the extension grammar is unparseable. */
static void test_nego_garbage(void **state)
{
    (void)state;
    expect_garbage("permessage-deflate;");
    expect_garbage("permessage-deflate; ;");
    expect_garbage(";;");
    expect_garbage("@@@");
    expect_garbage("permessage-deflate; a=");
    expect_garbage("permessage-deflate; a=\"unterminated");
    expect_garbage("permessage-deflate; a=\"\"");
    expect_garbage("permessage-deflate; a=\"1 0\"");
    expect_garbage("permessage-deflate; a=\"ab\\");
    expect_garbage("permessage deflate");
    expect_garbage("permessage-deflate server_max_window_bits=10");
    expect_garbage("permessage-deflate; server_max_window_bits==10");
    expect_garbage("permessage-deflate, garbage@");
    expect_garbage("=");
    expect_garbage("permessage-deflate; x=y z");
    /* Garbage after an acceptable offer still makes the value unparseable. */
    expect_garbage("permessage-deflate, \x01");
    const char nul[] = "permessage-deflate\0; x";
    ws_deflate_params_t p;
    char resp[200];
    assert_int_equal(ws_deflate_negotiate((slice_t){nul, sizeof nul - 1}, &p, resp, sizeof resp),
                     SORI_EINVAL);
}

/* The parser stays inside the slice: the value need not be NUL-terminated. */
static void test_nego_slice_bounds(void **state)
{
    (void)state;
    const char *full = "permessage-deflate; server_max_window_bits=10";
    size_t n = strlen(full) - 1; /* "...=1" */
    char *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, full, n);
    ws_deflate_params_t p;
    char resp[200];
    assert_int_equal(ws_deflate_negotiate((slice_t){copy, n}, &p, resp, sizeof resp), 0);
    for (size_t k = 0; k <= n; k++) { /* every prefix; none reads past k */
        int rc = ws_deflate_negotiate((slice_t){copy, k}, &p, resp, sizeof resp);
        assert_true(rc == 0 || rc == 1 || rc == SORI_EINVAL);
    }
    free(copy);
    assert_int_equal(ws_deflate_negotiate((slice_t){NULL, 0}, &p, resp, sizeof resp), 0);
}

/* The response must fit: SORI_E2BIG otherwise, exact fit accepted. */
static void test_nego_resp_cap(void **state)
{
    (void)state;
    ws_deflate_params_t p;
    const char *want = RESP_BASE "; server_max_window_bits=10";
    size_t need = strlen(want) + 1;
    char resp[200];
    slice_t hv = SLICE_LIT("permessage-deflate; server_max_window_bits=10");
    assert_int_equal(ws_deflate_negotiate(hv, &p, resp, need), 1);
    assert_string_equal(resp, want);
    assert_int_equal(ws_deflate_negotiate(hv, &p, resp, need - 1), SORI_E2BIG);
    assert_int_equal(p.enabled, 0);
    assert_string_equal(resp, "");
    assert_int_equal(ws_deflate_negotiate(hv, &p, NULL, 0), SORI_E2BIG);
    /* Nothing accepted: no response needed, so a small buffer is fine. */
    assert_int_equal(ws_deflate_negotiate(SLICE_LIT("foo"), &p, resp, 1), 0);
}

/* ---- compression ---- */

static uint64_t rng = 0x243F6A8885A308D3u;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(next_rand() >> 24);
}

/* Text-like data: compresses well. */
static void fill_text(uint8_t *p, size_t n)
{
    static const char *words[] = {"hello ", "world ", "sori ", "chat ", "room ", "message "};
    size_t i = 0;
    while (i < n) {
        const char *w = words[next_rand() % 6];
        for (size_t k = 0; w[k] && i < n; k++) p[i++] = (uint8_t)w[k];
    }
}

static void inflate_expect(const uint8_t *in, size_t n, const char *want, size_t want_n)
{
    ws_inflater_t *z = ws_inflater_new();
    assert_non_null(z);
    buf_t out = {0};
    assert_int_equal(ws_inflate_message(z, in, n, 1 << 20, &out), 0);
    assert_int_equal(out.len, want_n);
    if (want_n) assert_memory_equal(out.data, want, want_n);
    buf_free(&out);
    ws_inflater_free(z);
}

/* RFC 7692 §7.2.3.1: "Hello" compressed is f2 48 cd c9 c9 07 00. */
static void test_inflate_rfc_hello(void **state)
{
    (void)state;
    const uint8_t c[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    inflate_expect(c, sizeof c, "Hello", 5);
}

/* RFC 7692 §7.2.3.3: "Hello" in a stored (uncompressed) block. */
static void test_inflate_rfc_stored(void **state)
{
    (void)state;
    const uint8_t c[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00};
    inflate_expect(c, sizeof c, "Hello", 5);
}

/* RFC 7692 §7.2.3.4: BFINAL set, then a trailing 0x00: accepted. */
static void test_inflate_rfc_bfinal(void **state)
{
    (void)state;
    const uint8_t c[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00};
    inflate_expect(c, sizeof c, "Hello", 5);
    /* Without the trailing byte, and with junk after the final block. */
    inflate_expect(c, 7, "Hello", 5);
    const uint8_t junk[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xde, 0xad, 0xbe, 0xef};
    inflate_expect(junk, sizeof junk, "Hello", 5);
}

/* RFC 7692 §7.2.3.5: two DEFLATE blocks in one message. */
static void test_inflate_rfc_two_blocks(void **state)
{
    (void)state;
    const uint8_t c[] = {0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00};
    inflate_expect(c, sizeof c, "Hello", 5);
}

/* RFC 7692 §7.2.3.6: an empty message is the single byte 0x00, both ways. */
static void test_empty_message(void **state)
{
    (void)state;
    const uint8_t c[] = {0x00};
    inflate_expect(c, 1, "", 0);
    ws_deflater_t *d = ws_deflater_new(6, 15);
    assert_non_null(d);
    buf_t out = {0};
    assert_int_equal(ws_deflate_message(d, NULL, 0, &out), 0);
    assert_int_equal(out.len, 1);
    assert_int_equal((uint8_t)out.data[0], 0x00);
    buf_free(&out);
    ws_deflater_free(d);
    /* An empty RSV1 payload (no bytes at all) inflates to empty too. */
    inflate_expect(NULL, 0, "", 0);
}

/* RFC 7692 §7.2.1: output never ends with the 00 00 FF FF tail; "Hello"
 * compresses to the RFC's bytes at the default level. */
static void test_deflate_hello(void **state)
{
    (void)state;
    ws_deflater_t *d = ws_deflater_new(6, 15);
    assert_non_null(d);
    buf_t out = {0};
    assert_int_equal(ws_deflate_message(d, (const uint8_t *)"Hello", 5, &out), 0);
    const uint8_t want[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    /* Fresh context per message (no_context_takeover): identical output. */
    assert_int_equal(ws_deflate_message(d, (const uint8_t *)"Hello", 5, &out), 0);
    assert_int_equal(out.len, 2 * sizeof want);
    assert_memory_equal(out.data + sizeof want, want, sizeof want);
    buf_free(&out);
    ws_deflater_free(d);
}

/* RFC 7692 §7.2: compress then decompress gives the input back, for every
 * size class, window 9..15 and a few levels; output is appended to out. */
static void test_round_trip_sizes(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 2, 125, 126, 1000, 65535, 65536, 1 << 20};
    const size_t big = 1 << 20;
    uint8_t *src = malloc(big);
    assert_non_null(src);
    ws_inflater_t *z = ws_inflater_new();
    assert_non_null(z);
    for (int wb = 9; wb <= 15; wb++) {
        const int levels[] = {1, 6, 9};
        for (int li = 0; li < 3; li++) {
            ws_deflater_t *d = ws_deflater_new(levels[li], wb);
            assert_non_null(d);
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
                size_t n = sizes[si];
                /* The 1 MiB case only at the ends of the window range. */
                if (n == big && wb != 9 && wb != 15) continue;
                for (int kind = 0; kind < 2; kind++) {
                    if (kind)
                        fill_text(src, n);
                    else
                        fill_random(src, n);
                    buf_t c = {0}, o = {0};
                    assert_int_equal(buf_append(&c, "pre", 3), 0);
                    assert_int_equal(ws_deflate_message(d, src, n, &c), 0);
                    assert_memory_equal(c.data, "pre", 3);
                    if (c.len >= 3 + 4)
                        assert_false(memcmp(c.data + c.len - 4, "\0\0\xff\xff", 4) == 0);
                    assert_int_equal(buf_append(&o, "x", 1), 0);
                    assert_int_equal(ws_inflate_message(z, (uint8_t *)c.data + 3, c.len - 3, n,
                                                        &o),
                                     0);
                    assert_int_equal(o.len, n + 1);
                    assert_memory_equal(o.data, "x", 1);
                    if (n) assert_memory_equal(o.data + 1, src, n);
                    buf_free(&c);
                    buf_free(&o);
                }
            }
            ws_deflater_free(d);
        }
    }
    ws_inflater_free(z);
    free(src);
}

/* A compressor with a w-bit window produces streams any 15-bit inflater
 * reads, and zlib's own raw inflate with exactly w bits reads them too. */
static void test_window_respected(void **state)
{
    (void)state;
    const size_t n = 200000;
    uint8_t *src = malloc(n);
    assert_non_null(src);
    fill_text(src, n);
    for (int wb = 9; wb <= 15; wb++) {
        ws_deflater_t *d = ws_deflater_new(9, wb);
        assert_non_null(d);
        buf_t c = {0};
        assert_int_equal(ws_deflate_message(d, src, n, &c), 0);
        assert_int_equal(buf_append(&c, "\0\0\xff\xff", 4), 0);
        z_stream zs = {0};
        assert_int_equal(inflateInit2(&zs, -wb), Z_OK);
        uint8_t *o = malloc(n + 1);
        assert_non_null(o);
        zs.next_in = (const Bytef *)c.data;
        zs.avail_in = (uInt)c.len;
        zs.next_out = o;
        zs.avail_out = (uInt)n + 1;
        int zr = inflate(&zs, Z_SYNC_FLUSH);
        assert_true(zr == Z_OK || zr == Z_BUF_ERROR);
        assert_int_equal(zs.total_out, n);
        assert_memory_equal(o, src, n);
        inflateEnd(&zs);
        free(o);
        buf_free(&c);
        ws_deflater_free(d);
    }
    free(src);
}

/* ws_inflate_message: SORI_E2BIG as soon as the output passes max_out; exact
 * fit is fine; the buffer is restored and never grows far past the cap. */
static void test_inflate_max_out(void **state)
{
    (void)state;
    const size_t n = 100000;
    uint8_t *src = malloc(n);
    assert_non_null(src);
    fill_text(src, n);
    ws_deflater_t *d = ws_deflater_new(6, 15);
    ws_inflater_t *z = ws_inflater_new();
    assert_non_null(d);
    assert_non_null(z);
    buf_t c = {0}, o = {0};
    assert_int_equal(ws_deflate_message(d, src, n, &c), 0);

    assert_int_equal(ws_inflate_message(z, (uint8_t *)c.data, c.len, n, &o), 0);
    assert_int_equal(o.len, n);
    o.len = 0;
    assert_int_equal(ws_inflate_message(z, (uint8_t *)c.data, c.len, n - 1, &o), SORI_E2BIG);
    assert_int_equal(o.len, 0);
    assert_int_equal(buf_append(&o, "keep", 4), 0);
    assert_int_equal(ws_inflate_message(z, (uint8_t *)c.data, c.len, 0, &o), SORI_E2BIG);
    assert_int_equal(o.len, 4);
    assert_memory_equal(o.data, "keep", 4);
    /* The inflater is reusable after a failure. */
    o.len = 0;
    assert_int_equal(ws_inflate_message(z, (uint8_t *)c.data, c.len, SIZE_MAX, &o), 0);
    assert_int_equal(o.len, n);
    assert_memory_equal(o.data, src, n);
    buf_free(&o);
    buf_free(&c);
    ws_deflater_free(d);
    ws_inflater_free(z);
    free(src);
}

/* A decompression bomb (64 MiB of zeros, ~64 KiB compressed) stops at the
 * cap: memory stays near max_out, not near the decompressed size. */
static void test_inflate_bomb(void **state)
{
    (void)state;
    const size_t n = 64u << 20;
    uint8_t *zeros = calloc(1, n);
    assert_non_null(zeros);
    ws_deflater_t *d = ws_deflater_new(9, 15);
    ws_inflater_t *z = ws_inflater_new();
    buf_t c = {0}, o = {0};
    assert_int_equal(ws_deflate_message(d, zeros, n, &c), 0);
    free(zeros);
    assert_true(c.len < n / 500);
    const size_t cap = 64 * 1024;
    assert_int_equal(ws_inflate_message(z, (uint8_t *)c.data, c.len, cap, &o), SORI_E2BIG);
    assert_int_equal(o.len, 0);
    assert_true(o.cap <= 2 * (cap + 1));
    buf_free(&o);
    buf_free(&c);
    ws_deflater_free(d);
    ws_inflater_free(z);
}

/* Corrupted deflate data is SORI_EINVAL and leaves out untouched. */
static void test_inflate_corrupt(void **state)
{
    (void)state;
    ws_inflater_t *z = ws_inflater_new();
    assert_non_null(z);
    buf_t o = {0};
    assert_int_equal(buf_append(&o, "ab", 2), 0);
    /* BTYPE 11 is reserved (RFC 1951 §3.2.3). */
    const uint8_t reserved[] = {0x06};
    assert_int_equal(ws_inflate_message(z, reserved, sizeof reserved, 1000, &o), SORI_EINVAL);
    const uint8_t reserved_final[] = {0x07, 0x00};
    assert_int_equal(ws_inflate_message(z, reserved_final, 2, 1000, &o), SORI_EINVAL);
    /* Stored block whose NLEN is not the complement of LEN (RFC 1951 §3.2.4). */
    const uint8_t badlen[] = {0x00, 0x05, 0x00, 0x00, 0x00, 'H', 'e', 'l', 'l', 'o'};
    assert_int_equal(ws_inflate_message(z, badlen, sizeof badlen, 1000, &o), SORI_EINVAL);
    /* A fixed-Huffman match (length 3, distance 1) before any output:
     * "invalid distance too far back" (RFC 1951 §3.2.5). */
    const uint8_t far[] = {0x02, 0x02, 0x00};
    assert_int_equal(ws_inflate_message(z, far, sizeof far, 1000, &o), SORI_EINVAL);
    int rc;
    /* Truncated messages do not end on a block boundary. */
    const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    for (size_t k = 1; k < sizeof hello - 1; k++) {
        rc = ws_inflate_message(z, hello, k, 1000, &o);
        if (rc != SORI_EINVAL) fail_msg("truncated to %zu bytes: %d", k, rc);
        assert_int_equal(o.len, 2);
    }
    assert_memory_equal(o.data, "ab", 2);
    /* Still fine afterwards. */
    assert_int_equal(ws_inflate_message(z, hello, sizeof hello, 1000, &o), 0);
    assert_int_equal(o.len, 7);
    assert_memory_equal(o.data, "abHello", 7);
    buf_free(&o);
    ws_inflater_free(z);
}

/* Random input never crashes and never exceeds the cap. */
static void test_inflate_random_garbage(void **state)
{
    (void)state;
    ws_inflater_t *z = ws_inflater_new();
    assert_non_null(z);
    uint8_t in[256];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = next_rand() % sizeof in;
        fill_random(in, n);
        buf_t o = {0};
        int rc = ws_inflate_message(z, in, n, 4096, &o);
        assert_true(rc == 0 || rc == SORI_EINVAL || rc == SORI_E2BIG);
        assert_true(o.len <= 4096);
        if (rc) assert_int_equal(o.len, 0);
        buf_free(&o);
    }
    ws_inflater_free(z);
}

/* Constructor contracts: window 9..15, level 1..9. */
static void test_new_params(void **state)
{
    (void)state;
    assert_null(ws_deflater_new(6, 8));
    assert_null(ws_deflater_new(6, 16));
    assert_null(ws_deflater_new(0, 15));
    assert_null(ws_deflater_new(10, 15));
    ws_deflater_t *d = ws_deflater_new(1, 9);
    assert_non_null(d);
    ws_deflater_free(d);
    ws_deflater_free(NULL);
    ws_inflater_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nego_plain),
        cmocka_unit_test(test_nego_server_window),
        cmocka_unit_test(test_nego_window8_then_second),
        cmocka_unit_test(test_nego_unknown_param),
        cmocka_unit_test(test_nego_duplicate_param),
        cmocka_unit_test(test_nego_quoted),
        cmocka_unit_test(test_nego_client_window),
        cmocka_unit_test(test_nego_nct_value),
        cmocka_unit_test(test_nego_lists_and_case),
        cmocka_unit_test(test_nego_garbage),
        cmocka_unit_test(test_nego_slice_bounds),
        cmocka_unit_test(test_nego_resp_cap),
        cmocka_unit_test(test_inflate_rfc_hello),
        cmocka_unit_test(test_inflate_rfc_stored),
        cmocka_unit_test(test_inflate_rfc_bfinal),
        cmocka_unit_test(test_inflate_rfc_two_blocks),
        cmocka_unit_test(test_empty_message),
        cmocka_unit_test(test_deflate_hello),
        cmocka_unit_test(test_round_trip_sizes),
        cmocka_unit_test(test_window_respected),
        cmocka_unit_test(test_inflate_max_out),
        cmocka_unit_test(test_inflate_bomb),
        cmocka_unit_test(test_inflate_corrupt),
        cmocka_unit_test(test_inflate_random_garbage),
        cmocka_unit_test(test_new_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

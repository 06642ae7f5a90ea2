/*
 * test_ws_frame.c: unit tests for the RFC 6455 frame codec, masking and
 * close-frame checks. Includes the .c so static helpers are reachable. Every
 * parse of a prefix runs on an exact-size heap copy, so ASan catches a read
 * past `len`.
 */
#include "ws/ws_frame.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

static const ws_parse_opts_t server_opts = {.allowed_rsv = 0, .require_mask = 1};
static const ws_parse_opts_t server_deflate_opts = {.allowed_rsv = WS_RSV1, .require_mask = 1};
static const ws_parse_opts_t client_opts = {.allowed_rsv = 0, .forbid_mask = 1};
static const ws_parse_opts_t lax_opts = {0};

/* Parses buf[0..len) from an exact-size heap copy (ASan-visible bounds). */
static int parse_exact(const uint8_t *buf, size_t len, const ws_parse_opts_t *o, ws_frame_t *f,
                       int *cc)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, buf, len);
    int rc = ws_frame_parse(copy, len, o, f, cc);
    free(copy);
    return rc;
}

/* Expects a protocol error with close code 1002. */
static void expect_1002(const uint8_t *buf, size_t len, const ws_parse_opts_t *o)
{
    ws_frame_t f;
    int cc = 0;
    assert_int_equal(parse_exact(buf, len, o, &f, &cc), SORI_EINVAL);
    assert_int_equal(cc, 1002);
}

/* RFC 6455 §5.2: fewer than 2 bytes, or a partial extended length or mask,
 * is "need more". */
static void test_parse_needs_more(void **state)
{
    (void)state;
    ws_frame_t f;
    int cc = 0;
    assert_int_equal(parse_exact(NULL, 0, &server_opts, &f, &cc), SORI_EAGAIN);
    const uint8_t one[] = {0x81};
    assert_int_equal(parse_exact(one, 1, &server_opts, &f, &cc), SORI_EAGAIN);

    /* 64-bit length, masked: complete at 14 bytes, need-more before. */
    uint8_t h[WS_FRAME_HEADER_MAX];
    const uint8_t mask[4] = {1, 2, 3, 4};
    size_t hl = ws_frame_header_write(h, WS_OP_BINARY, 1, 0, 70000, mask);
    assert_int_equal(hl, 14);
    for (size_t i = 0; i < hl; i++)
        assert_int_equal(parse_exact(h, i, &server_opts, &f, &cc), SORI_EAGAIN);
    assert_int_equal(parse_exact(h, hl, &server_opts, &f, &cc), 14);

    /* 16-bit length, masked: 8 bytes. */
    hl = ws_frame_header_write(h, WS_OP_TEXT, 1, 0, 300, mask);
    assert_int_equal(hl, 8);
    for (size_t i = 0; i < hl; i++)
        assert_int_equal(parse_exact(h, i, &server_opts, &f, &cc), SORI_EAGAIN);
    assert_int_equal(parse_exact(h, hl, &server_opts, &f, &cc), 8);
}

/* RFC 6455 §5.7: the example frames parse to the documented fields. */
static void test_parse_rfc_examples(void **state)
{
    (void)state;
    ws_frame_t f;
    int cc = 0;

    /* A single-frame unmasked text message "Hello". */
    const uint8_t hello[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    assert_int_equal(parse_exact(hello, sizeof hello, &client_opts, &f, &cc), 2);
    assert_int_equal(f.fin, 1);
    assert_int_equal(f.opcode, WS_OP_TEXT);
    assert_int_equal(f.masked, 0);
    assert_int_equal(f.payload_len, 5);

    /* A single-frame masked text message "Hello". */
    uint8_t mhello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    assert_int_equal(parse_exact(mhello, sizeof mhello, &server_opts, &f, &cc), 6);
    assert_int_equal(f.masked, 1);
    assert_int_equal(f.payload_len, 5);
    assert_memory_equal(f.mask, mhello + 2, 4);
    ws_mask_apply(mhello + 6, 5, f.mask, 0);
    assert_memory_equal(mhello + 6, "Hello", 5);

    /* A fragmented unmasked text message: "Hel" then "lo". */
    const uint8_t frag1[] = {0x01, 0x03, 0x48, 0x65, 0x6c};
    const uint8_t frag2[] = {0x80, 0x02, 0x6c, 0x6f};
    assert_int_equal(parse_exact(frag1, sizeof frag1, &client_opts, &f, &cc), 2);
    assert_int_equal(f.fin, 0);
    assert_int_equal(f.opcode, WS_OP_TEXT);
    assert_int_equal(parse_exact(frag2, sizeof frag2, &client_opts, &f, &cc), 2);
    assert_int_equal(f.fin, 1);
    assert_int_equal(f.opcode, WS_OP_CONT);

    /* Unmasked ping with "Hello", then a masked pong. */
    const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    assert_int_equal(parse_exact(ping, sizeof ping, &client_opts, &f, &cc), 2);
    assert_int_equal(f.opcode, WS_OP_PING);
    const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    assert_int_equal(parse_exact(pong, sizeof pong, &server_opts, &f, &cc), 6);
    assert_int_equal(f.opcode, WS_OP_PONG);

    /* 256 bytes binary in one unmasked frame: 16-bit length. */
    const uint8_t b256[] = {0x82, 0x7E, 0x01, 0x00};
    assert_int_equal(parse_exact(b256, sizeof b256, &client_opts, &f, &cc), 4);
    assert_int_equal(f.payload_len, 256);
    assert_int_equal(f.opcode, WS_OP_BINARY);

    /* 64 KiB binary in one unmasked frame: 64-bit length. */
    const uint8_t b64k[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
    assert_int_equal(parse_exact(b64k, sizeof b64k, &client_opts, &f, &cc), 10);
    assert_int_equal(f.payload_len, 65536);
}

/* RFC 6455 §5.2: the writer uses the shortest length encoding, and every
 * length class parses back to the same fields. */
static void test_header_round_trip(void **state)
{
    (void)state;
    const uint64_t lens[] = {0,      1,       125,        126,           127,
                             65535,  65536,   (1u << 31), UINT64_C(1) << 32,
                             UINT64_C(0x7FFFFFFFFFFFFFFF)};
    const uint8_t mask[4] = {0xde, 0xad, 0xbe, 0xef};
    const int ops[] = {WS_OP_CONT, WS_OP_TEXT, WS_OP_BINARY};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        for (int masked = 0; masked < 2; masked++) {
            for (int oi = 0; oi < 3; oi++) {
                for (int fin = 0; fin < 2; fin++) {
                    for (int rsv = 0; rsv < 8; rsv++) {
                        uint8_t h[WS_FRAME_HEADER_MAX];
                        memset(h, 0xAA, sizeof h);
                        size_t hl = ws_frame_header_write(h, ops[oi], fin, rsv, lens[li],
                                                          masked ? mask : NULL);
                        size_t want = 2 + (lens[li] <= 125 ? 0 : lens[li] <= 0xFFFF ? 2 : 8) +
                                      (masked ? 4 : 0);
                        assert_int_equal(hl, want);
                        ws_parse_opts_t o = {.allowed_rsv = 7};
                        ws_frame_t f;
                        int cc = 0;
                        assert_int_equal(parse_exact(h, hl, &o, &f, &cc), (int)hl);
                        assert_int_equal(f.header_len, hl);
                        assert_int_equal(f.fin, fin);
                        assert_int_equal(f.rsv, rsv);
                        assert_int_equal(f.opcode, ops[oi]);
                        assert_int_equal(f.masked, masked);
                        assert_true(f.payload_len == lens[li]);
                        if (masked) assert_memory_equal(f.mask, mask, 4);
                    }
                }
            }
        }
    }
    /* Control frames round-trip at 0 and 125 bytes. */
    for (int op = WS_OP_CLOSE; op <= WS_OP_PONG; op++) {
        uint8_t h[WS_FRAME_HEADER_MAX];
        ws_frame_t f;
        int cc = 0;
        size_t hl = ws_frame_header_write(h, op, 1, 0, 125, mask);
        assert_int_equal(parse_exact(h, hl, &server_opts, &f, &cc), 6);
        assert_int_equal(f.payload_len, 125);
        assert_int_equal(f.opcode, op);
    }
}

/* RFC 6455 §5.2: exact bytes of written headers (network byte order). */
static void test_header_write_bytes(void **state)
{
    (void)state;
    uint8_t h[WS_FRAME_HEADER_MAX];
    assert_int_equal(ws_frame_header_write(h, WS_OP_TEXT, 1, 0, 5, NULL), 2);
    assert_memory_equal(h, "\x81\x05", 2);
    assert_int_equal(ws_frame_header_write(h, WS_OP_TEXT, 0, WS_RSV1, 0, NULL), 2);
    assert_memory_equal(h, "\x41\x00", 2);
    assert_int_equal(ws_frame_header_write(h, WS_OP_BINARY, 1, 0, 256, NULL), 4);
    assert_memory_equal(h, "\x82\x7e\x01\x00", 4);
    assert_int_equal(ws_frame_header_write(h, WS_OP_BINARY, 1, 0, 65536, NULL), 10);
    assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    assert_int_equal(ws_frame_header_write(h, WS_OP_TEXT, 1, 0, 5, mask), 6);
    assert_memory_equal(h, "\x81\x85\x37\xfa\x21\x3d", 6);
    assert_int_equal(ws_frame_header_write(h, WS_OP_CLOSE, 1, 0, 2, NULL), 2);
    assert_memory_equal(h, "\x88\x02", 2);
}

/* RFC 6455 §5.2: the most significant bit of a 64-bit length MUST be 0. */
static void test_parse_64bit_msb(void **state)
{
    (void)state;
    const uint8_t bad[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    expect_1002(bad, sizeof bad, &server_opts);
    const uint8_t good[] = {0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4};
    ws_frame_t f;
    int cc = 0;
    assert_int_equal(parse_exact(good, sizeof good, &server_opts, &f, &cc), 14);
    assert_true(f.payload_len == UINT64_C(0x7FFFFFFFFFFFFFFF));
}

/* RFC 6455 §5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved: fail with 1002. */
static void test_parse_reserved_opcodes(void **state)
{
    (void)state;
    for (int op = 0; op < 16; op++) {
        uint8_t b[6] = {(uint8_t)(0x80 | op), 0x80, 1, 2, 3, 4};
        ws_frame_t f;
        int cc = 0;
        int rc = parse_exact(b, sizeof b, &server_opts, &f, &cc);
        int known = op <= 2 || (op >= 8 && op <= 0xA);
        if (known) {
            assert_int_equal(rc, 6);
            assert_int_equal(f.opcode, op);
        } else {
            assert_int_equal(rc, SORI_EINVAL);
            assert_int_equal(cc, 1002);
            /* Detected from the first two bytes alone. */
            expect_1002(b, 2, &server_opts);
        }
    }
}

/* RFC 6455 §5.2: RSV bits must be 0 unless an extension allows them;
 * RFC 7692 §6.1: RSV1 means "compressed" on data frames only. */
static void test_parse_rsv(void **state)
{
    (void)state;
    ws_frame_t f;
    int cc = 0;
    for (int rsv = 1; rsv < 8; rsv++) {
        uint8_t b[6] = {(uint8_t)(0x80 | rsv << 4 | WS_OP_TEXT), 0x80, 1, 2, 3, 4};
        expect_1002(b, sizeof b, &server_opts);
        int rc = parse_exact(b, sizeof b, &server_deflate_opts, &f, &cc);
        if (rsv == WS_RSV1) {
            assert_int_equal(rc, 6);
            assert_int_equal(f.rsv, WS_RSV1);
        } else {
            assert_int_equal(rc, SORI_EINVAL);
            assert_int_equal(cc, 1002);
        }
        /* A continuation frame may carry RSV1 only if allowed (the caller
         * checks it against the message's first frame). */
        b[0] = (uint8_t)(0x80 | rsv << 4 | WS_OP_CONT);
        expect_1002(b, sizeof b, &server_opts);
        /* Control frames: RSV is a protocol error even when RSV1 is allowed. */
        for (int op = WS_OP_CLOSE; op <= WS_OP_PONG; op++) {
            b[0] = (uint8_t)(0x80 | rsv << 4 | op);
            expect_1002(b, sizeof b, &server_deflate_opts);
            ws_parse_opts_t all = {.allowed_rsv = 7, .require_mask = 1};
            expect_1002(b, sizeof b, &all);
        }
    }
}

/* RFC 6455 §5.5: control frames must not be fragmented and carry at most
 * 125 bytes of payload. */
static void test_parse_control_rules(void **state)
{
    (void)state;
    ws_frame_t f;
    int cc = 0;
    for (int op = WS_OP_CLOSE; op <= WS_OP_PONG; op++) {
        /* FIN clear: detected from two bytes. */
        uint8_t nofin[6] = {(uint8_t)op, 0x80, 1, 2, 3, 4};
        expect_1002(nofin, 2, &server_opts);
        expect_1002(nofin, sizeof nofin, &server_opts);

        uint8_t ok[6] = {(uint8_t)(0x80 | op), 0x80 | 125, 1, 2, 3, 4};
        assert_int_equal(parse_exact(ok, sizeof ok, &server_opts, &f, &cc), 6);

        /* 126 and 65535 bytes via the 16-bit form. */
        uint8_t big[8] = {(uint8_t)(0x80 | op), 0x80 | 126, 0x00, 126, 1, 2, 3, 4};
        expect_1002(big, sizeof big, &server_opts);
        big[2] = 0xFF;
        big[3] = 0xFF;
        expect_1002(big, sizeof big, &server_opts);

        /* 64-bit form with a large length. */
        uint8_t huge[14] = {(uint8_t)(0x80 | op), 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4};
        expect_1002(huge, sizeof huge, &server_opts);

        /* A non-minimal 16-bit encoding of 5 bytes is still <= 125: the
         * parser does not enforce the sender's shortest-form rule. */
        uint8_t nonmin[8] = {(uint8_t)(0x80 | op), 0x80 | 126, 0x00, 5, 1, 2, 3, 4};
        assert_int_equal(parse_exact(nonmin, sizeof nonmin, &server_opts, &f, &cc), 8);
        assert_int_equal(f.payload_len, 5);
    }
    /* Data frames may be fragmented and large. */
    uint8_t data[8] = {WS_OP_TEXT, 0x80 | 126, 0x10, 0x00, 1, 2, 3, 4};
    assert_int_equal(parse_exact(data, sizeof data, &server_opts, &f, &cc), 8);
    assert_int_equal(f.fin, 0);
    assert_int_equal(f.payload_len, 4096);
}

/* RFC 6455 §5.1: a server fails unmasked client frames; a client fails
 * masked server frames. */
static void test_parse_mask_rules(void **state)
{
    (void)state;
    ws_frame_t f;
    int cc = 0;
    const uint8_t unmasked[] = {0x81, 0x05};
    expect_1002(unmasked, sizeof unmasked, &server_opts);
    assert_int_equal(parse_exact(unmasked, sizeof unmasked, &client_opts, &f, &cc), 2);
    assert_int_equal(parse_exact(unmasked, sizeof unmasked, &lax_opts, &f, &cc), 2);
    assert_memory_equal(f.mask, "\0\0\0\0", 4);

    const uint8_t masked[] = {0x81, 0x85, 1, 2, 3, 4};
    expect_1002(masked, sizeof masked, &client_opts);
    /* Detected before the mask bytes arrive. */
    expect_1002(masked, 2, &client_opts);
    assert_int_equal(parse_exact(masked, sizeof masked, &server_opts, &f, &cc), 6);
    assert_int_equal(parse_exact(masked, sizeof masked, &lax_opts, &f, &cc), 6);

    /* An unmasked 64-bit frame fails on the second byte, not after 10. */
    const uint8_t unmasked64[] = {0x82, 0x7F};
    expect_1002(unmasked64, sizeof unmasked64, &server_opts);
}

/* The parser never reads past len: every prefix of every header shape, on
 * exact-size heap copies, is need-more or complete. */
static void test_parse_prefixes_in_bounds(void **state)
{
    (void)state;
    const uint64_t lens[] = {0, 100, 126, 65535, 65536, UINT64_C(1) << 40};
    const uint8_t mask[4] = {9, 8, 7, 6};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        for (int m = 0; m < 2; m++) {
            uint8_t h[WS_FRAME_HEADER_MAX];
            size_t hl = ws_frame_header_write(h, WS_OP_BINARY, 1, 0, lens[li], m ? mask : NULL);
            for (size_t i = 0; i <= hl; i++) {
                ws_frame_t f;
                int cc = 0;
                int rc = parse_exact(h, i, &lax_opts, &f, &cc);
                if (i < hl)
                    assert_int_equal(rc, SORI_EAGAIN);
                else
                    assert_int_equal(rc, (int)hl);
            }
        }
    }
}

/* NULL opts means no RSV allowed and no mask rule; NULL close_code is fine. */
static void test_parse_null_args(void **state)
{
    (void)state;
    ws_frame_t f;
    const uint8_t ok[] = {0x82, 0x00};
    assert_int_equal(ws_frame_parse(ok, sizeof ok, NULL, &f, NULL), 2);
    const uint8_t rsv[] = {0xC2, 0x00};
    assert_int_equal(ws_frame_parse(rsv, sizeof rsv, NULL, &f, NULL), SORI_EINVAL);
}

static void naive_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off)
{
    for (size_t i = 0; i < n; i++) p[i] ^= mask[(off + i) % 4];
}

/* RFC 6455 §5.3: byte i of the payload XORs with mask[i mod 4]; the fast
 * path matches a byte loop at every offset, length and alignment. */
static void test_mask_against_naive(void **state)
{
    (void)state;
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t src[64], a[64], b[64];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 37 + 11);
    for (uint64_t off = 0; off < 8; off++) {
        for (size_t n = 0; n <= 40; n++) {
            for (size_t align = 0; align < 8; align++) {
                memcpy(a, src, sizeof a);
                memcpy(b, src, sizeof b);
                ws_mask_apply(a + align, n, mask, off);
                naive_mask(b + align, n, mask, off);
                assert_memory_equal(a, b, sizeof a); /* nothing outside touched */
            }
        }
    }
    /* Offsets beyond 32 bits keep the phase (offset mod 4). */
    memcpy(a, src, 40);
    memcpy(b, src, 40);
    ws_mask_apply(a, 40, mask, (UINT64_C(1) << 40) + 3);
    naive_mask(b, 40, mask, 3);
    assert_memory_equal(a, b, 40);
}

/* RFC 6455 §5.3: unmasking in pieces at any split equals unmasking whole,
 * and masking twice restores the payload. */
static void test_mask_pieces(void **state)
{
    (void)state;
    const uint8_t mask[4] = {0xa1, 0xb2, 0xc3, 0xd4};
    uint8_t src[300], whole[300], pieces[300];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i ^ (i >> 3));
    memcpy(whole, src, sizeof whole);
    ws_mask_apply(whole, sizeof whole, mask, 0);
    for (size_t cut1 = 0; cut1 <= 40; cut1++) {
        for (size_t cut2 = cut1; cut2 <= sizeof src; cut2 += 37) {
            memcpy(pieces, src, sizeof pieces);
            ws_mask_apply(pieces, cut1, mask, 0);
            ws_mask_apply(pieces + cut1, cut2 - cut1, mask, cut1);
            ws_mask_apply(pieces + cut2, sizeof src - cut2, mask, cut2);
            assert_memory_equal(pieces, whole, sizeof whole);
        }
    }
    ws_mask_apply(whole, sizeof whole, mask, 0);
    assert_memory_equal(whole, src, sizeof src);
}

/* RFC 6455 §7.4.1 and the IANA registry (§11.7): which codes a peer may send. */
static void test_close_code_valid(void **state)
{
    (void)state;
    for (unsigned c = 0; c < 70000; c++) {
        int want = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
                   (c >= 3000 && c <= 4999);
        assert_int_equal(ws_close_code_valid(c), want);
    }
    assert_false(ws_close_code_valid(1004)); /* reserved */
    assert_false(ws_close_code_valid(1005)); /* "no status", never sent */
    assert_false(ws_close_code_valid(1006)); /* "abnormal", never sent */
    assert_false(ws_close_code_valid(1015)); /* TLS failure, never sent */
    assert_false(ws_close_code_valid(2999));
    assert_false(ws_close_code_valid(5000));
}

/* RFC 6455 §5.5.1, §7.1.5, §7.4.1, §8.1: close payload checks. */
static void test_close_payload(void **state)
{
    (void)state;
    unsigned code = 0;
    /* §7.1.5: an empty body reads as 1005. */
    assert_int_equal(ws_close_payload_check(NULL, 0, &code), 0);
    assert_int_equal(code, 1005);
    /* §5.5.1: a 1-byte body is malformed. */
    const uint8_t one[] = {0x03};
    assert_int_equal(ws_close_payload_check(one, 1, &code), 1002);
    /* A bare code. */
    const uint8_t normal[] = {0x03, 0xE8};
    assert_int_equal(ws_close_payload_check(normal, 2, &code), 0);
    assert_int_equal(code, 1000);
    /* A code with a UTF-8 reason ("κόσμε"). */
    const uint8_t reason[] = {0x0F, 0xA0, 0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83,
                              0xCE, 0xBC, 0xCE, 0xB5};
    assert_int_equal(ws_close_payload_check(reason, sizeof reason, &code), 0);
    assert_int_equal(code, 4000);
    /* §7.4.1: codes that may not be sent. */
    const unsigned bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t p[2] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
        code = 7;
        assert_int_equal(ws_close_payload_check(p, 2, &code), 1002);
        assert_int_equal(code, 7); /* untouched on failure */
    }
    /* §8.1: a reason that is not UTF-8 answers 1007. */
    const uint8_t badutf[] = {0x03, 0xE8, 'o', 'k', 0xED, 0xA0, 0x80};
    assert_int_equal(ws_close_payload_check(badutf, sizeof badutf, &code), 1007);
    const uint8_t truncated[] = {0x03, 0xE8, 0xCE};
    assert_int_equal(ws_close_payload_check(truncated, sizeof truncated, &code), 1007);
    /* An invalid code wins over an invalid reason. */
    const uint8_t both[] = {0x03, 0xED, 0xFF};
    assert_int_equal(ws_close_payload_check(both, sizeof both, &code), 1002);
    /* NULL code pointer is allowed. */
    assert_int_equal(ws_close_payload_check(normal, 2, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_needs_more),
        cmocka_unit_test(test_parse_rfc_examples),
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_header_write_bytes),
        cmocka_unit_test(test_parse_64bit_msb),
        cmocka_unit_test(test_parse_reserved_opcodes),
        cmocka_unit_test(test_parse_rsv),
        cmocka_unit_test(test_parse_control_rules),
        cmocka_unit_test(test_parse_mask_rules),
        cmocka_unit_test(test_parse_prefixes_in_bounds),
        cmocka_unit_test(test_parse_null_args),
        cmocka_unit_test(test_mask_against_naive),
        cmocka_unit_test(test_mask_pieces),
        cmocka_unit_test(test_close_code_valid),
        cmocka_unit_test(test_close_payload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_http_parse.c: cmocka tests for src/http/http_parse.c, which is
 * included so its static helpers (the byte-class table, line finder) are
 * reachable. Each group names the RFC 9112 / RFC 9110 clause it checks.
 * Inputs are copied into exactly-sized heap buffers before parsing, so the
 * sanitizer build catches any read past `len`.
 */
#include "http/http_parse.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

static http_request_t req;

/* Parses s[0..n) from an exactly-sized heap copy. */
static int parse_n(const char *s, size_t n)
{
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    int rc = http_request_parse(copy, n, &req);
    free(copy);
    return rc;
}

/* Parses in place (slices stay valid); literals may hold NUL bytes. */
#define PARSE(lit) http_request_parse((lit), sizeof(lit) - 1, &req)
#define PARSE_COPY(lit) parse_n((lit), sizeof(lit) - 1)

static void assert_slice(slice_t s, const char *want)
{
    size_t n = strlen(want);
    if (s.len != n) fail_msg("slice \"%.*s\" (len %zu) != \"%s\"", (int)s.len, s.p, s.len, want);
    if (n) assert_memory_equal(s.p, want, n);
}

static slice_t S(const char *s)
{
    return (slice_t){s, strlen(s)};
}

/* Every proper prefix of s[0..n) is SORI_EAGAIN, the whole is n. */
static void assert_incremental(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        int rc = parse_n(s, k);
        if (rc != SORI_EAGAIN) fail_msg("prefix of %zu/%zu bytes gave %d", k, n, rc);
    }
    assert_int_equal(parse_n(s, n), (int)n);
}

/* ---- byte classes: RFC 9110 §5.6.2 tchar, §5.5 field-value, RFC 9112 §3.2 ---- */

static void test_class_table(void **state)
{
    (void)state;
    static const char tchars[] = "!#$%&'*+-.^_`|~0123456789"
                                 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (int c = 0; c < 256; c++) {
        int want_t = c != 0 && strchr(tchars, c) != NULL;
        int want_s = c != 0 && (http__is_alpha((char)c) || (c >= '0' && c <= '9') ||
                                c == '+' || c == '-' || c == '.');
        int want_v = c == '\t' || (c >= 0x20 && c != 0x7f);
        int want_g = c >= 0x21 && c <= 0x7e;
        assert_int_equal(http__is((char)c, HTTP__C_TCHAR), want_t);
        assert_int_equal(http__is((char)c, HTTP__C_SCHEME), want_s);
        assert_int_equal(http__is((char)c, HTTP__C_FVALUE), want_v);
        assert_int_equal(http__is((char)c, HTTP__C_TARGET), want_g);
    }
}

/* ---- RFC 9112 §3: request line ---- */

static void test_minimal_get(void **state)
{
    (void)state;
    static const char r[] = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(PARSE(r), (int)sizeof(r) - 1);
    assert_slice(req.method, "GET");
    assert_slice(req.target, "/");
    assert_slice(req.path, "/");
    assert_slice(req.query, "");
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.nheaders, 0);
}

static void test_websocket_upgrade(void **state)
{
    (void)state;
    static const char r[] = "GET /ws?user=alice&x=1 HTTP/1.1\r\n"
                            "Host: localhost:8080\r\n"
                            "Upgrade: websocket\r\n"
                            "Connection: keep-alive, Upgrade\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                            "Sec-WebSocket-Version: 13\r\n"
                            "\r\n";
    assert_int_equal(PARSE(r), (int)sizeof(r) - 1);
    assert_slice(req.method, "GET");
    assert_slice(req.target, "/ws?user=alice&x=1");
    assert_slice(req.path, "/ws");
    assert_slice(req.query, "user=alice&x=1");
    assert_int_equal(req.nheaders, 5);
    assert_slice(req.headers[0].name, "Host");
    assert_slice(req.headers[0].value, "localhost:8080");
    assert_slice(req.headers[4].name, "Sec-WebSocket-Version");
    assert_slice(req.headers[4].value, "13");
    const slice_t *c = http_header_get(&req, "connection");
    assert_non_null(c);
    assert_true(http_header_has_token(*c, "upgrade"));
    /* slices are borrowed views into the caller's buffer */
    assert_true(req.headers[2].value.p > r && req.headers[2].value.p < r + sizeof(r));
}

static void test_http10(void **state)
{
    (void)state;
    assert_int_equal(PARSE("GET /a HTTP/1.0\r\n\r\n"), 19);
    assert_int_equal(req.minor_version, 0);
}

static void test_version_invalid(void **state)
{
    (void)state;
    assert_int_equal(PARSE_COPY("GET / HTTP/1.2\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/2.0\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/0.9\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / http/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.10\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1 \r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /\r\n\r\n"), SORI_EINVAL); /* HTTP/0.9 form */
    assert_int_equal(PARSE_COPY("GET / \r\n\r\n"), SORI_EINVAL);
}

static void test_method_token(void **state)
{
    (void)state;
    assert_int_equal(PARSE("M-SEARCH * HTTP/1.1\r\n\r\n"), 23);
    assert_slice(req.method, "M-SEARCH");
    assert_int_equal(PARSE("get / HTTP/1.1\r\n\r\n"), 18); /* a token; case kept */
    assert_slice(req.method, "get");
    assert_int_equal(PARSE_COPY("G(ET / HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("G\"T / HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET\t/ HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY(" / HTTP/1.1\r\n\r\n"), SORI_EINVAL); /* empty method */
    assert_int_equal(PARSE_COPY("GET\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("G\xc3\xa9T / HTTP/1.1\r\n\r\n"), SORI_EINVAL);
}

static void test_single_sp(void **state)
{
    (void)state;
    assert_int_equal(PARSE_COPY("GET  / HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /  HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1  \r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /\tHTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY(" GET / HTTP/1.1\r\n\r\n"), SORI_EINVAL);
}

/* RFC 9112 §3.2: request-target forms, printable ASCII only. */
static void test_target_chars(void **state)
{
    (void)state;
    assert_int_equal(PARSE_COPY("GET /a\x01z HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /a\x7fz HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /a\x00z HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /a\tz HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE("GET /a%20b~!$&'()*+,;=:@[] HTTP/1.1\r\n\r\n"), 39);
    assert_slice(req.path, "/a%20b~!$&'()*+,;=:@[]");
}

static void test_target_forms(void **state)
{
    (void)state;
    assert_int_equal(PARSE("OPTIONS * HTTP/1.1\r\n\r\n"), 22);
    assert_slice(req.target, "*");
    assert_slice(req.path, "*");
    assert_slice(req.query, "");
    assert_int_equal(PARSE_COPY("OPTIONS *x HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("OPTIONS *? HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET ws HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET ?a=1 HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET %2F HTTP/1.1\r\n\r\n"), SORI_EINVAL);
}

static void test_absolute_form(void **state)
{
    (void)state;
    static const char r1[] = "GET http://example.com:80/ws?user=a HTTP/1.1\r\n\r\n";
    assert_int_equal(PARSE(r1), (int)sizeof(r1) - 1);
    assert_slice(req.target, "http://example.com:80/ws?user=a");
    assert_slice(req.path, "/ws");
    assert_slice(req.query, "user=a");
    static const char r2[] = "GET HTTPS://h HTTP/1.1\r\n\r\n";
    assert_int_equal(PARSE(r2), (int)sizeof(r2) - 1);
    assert_slice(req.path, ""); /* no path after the authority */
    assert_true(req.path.p == req.target.p + req.target.len);
    static const char r3[] = "GET http://h?x=1/2 HTTP/1.1\r\n\r\n";
    assert_int_equal(PARSE(r3), (int)sizeof(r3) - 1);
    assert_slice(req.path, "");
    assert_slice(req.query, "x=1/2");
    static const char r4[] = "GET coap+tcp.v1-x://h/ HTTP/1.1\r\n\r\n";
    assert_int_equal(PARSE(r4), (int)sizeof(r4) - 1);
    assert_slice(req.path, "/");
    assert_int_equal(PARSE_COPY("GET http:// HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET http:///x HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET http://?x HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET http:/x HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET http HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET 1http://h/ HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET ht_tp://h/ HTTP/1.1\r\n\r\n"), SORI_EINVAL);
}

static void test_path_query_split(void **state)
{
    (void)state;
    assert_int_equal(PARSE("GET /ws? HTTP/1.1\r\n\r\n"), 21);
    assert_slice(req.path, "/ws");
    assert_slice(req.query, "");
    assert_int_equal(PARSE("GET /?a?b HTTP/1.1\r\n\r\n"), 22);
    assert_slice(req.path, "/");
    assert_slice(req.query, "a?b");
    assert_int_equal(PARSE("GET /a/b/../c HTTP/1.1\r\n\r\n"), 26);
    assert_slice(req.path, "/a/b/../c"); /* not normalised: the router's job */
}

/* ---- RFC 9112 §2.2: message parsing, line ends, leading empty lines ---- */

static void test_leading_empty_lines(void **state)
{
    (void)state;
    static const char r[] = "\r\n\n\r\nGET / HTTP/1.1\r\n\r\n";
    assert_int_equal(PARSE(r), (int)sizeof(r) - 1);
    assert_slice(req.method, "GET");
    assert_int_equal(PARSE_COPY("\r\n"), SORI_EAGAIN);
    assert_int_equal(PARSE_COPY("\r"), SORI_EAGAIN);
    assert_int_equal(PARSE_COPY("\r\r\nGET / HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("\rGET / HTTP/1.1\r\n\r\n"), SORI_EINVAL);
}

static void test_bare_lf(void **state)
{
    (void)state;
    static const char r[] = "GET / HTTP/1.1\nHost: a\r\nX: y\n\n";
    assert_int_equal(PARSE(r), (int)sizeof(r) - 1);
    assert_int_equal(req.nheaders, 2);
    assert_slice(req.headers[0].value, "a");
    assert_slice(req.headers[1].value, "y");
}

static void test_bare_cr(void **state)
{
    (void)state;
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\rHost: a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /\r HTTP/1.1\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost: a\r\n\rX"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\n\r\r"), SORI_EINVAL);
}

static void test_empty_input(void **state)
{
    (void)state;
    assert_int_equal(http_request_parse(NULL, 0, &req), SORI_EAGAIN);
    assert_int_equal(PARSE_COPY(""), SORI_EAGAIN);
}

/* ---- RFC 9112 §5, RFC 9110 §5.5: field lines ---- */

static void test_header_ows_trim(void **state)
{
    (void)state;
    static const char r[] = "GET / HTTP/1.1\r\n"
                            "A:   a b \t \r\n"
                            "B:\r\n"
                            "C: \t \r\n"
                            "D:x\ty\r\n"
                            "E: caf\xc3\xa9 \x80\xff\r\n"
                            "\r\n";
    assert_int_equal(PARSE(r), (int)sizeof(r) - 1);
    assert_int_equal(req.nheaders, 5);
    assert_slice(req.headers[0].value, "a b");
    assert_slice(req.headers[1].value, "");
    assert_slice(req.headers[2].value, "");
    assert_slice(req.headers[3].value, "x\ty");
    assert_slice(req.headers[4].value, "caf\xc3\xa9 \x80\xff"); /* obs-text allowed */
}

static void test_header_value_ctl(void **state)
{
    (void)state;
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nA: a\x01z\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nA: a\x7fz\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nA: a\x00z\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nA: \x1b[31m\r\n\r\n"), SORI_EINVAL);
}

static void test_header_name(void **state)
{
    (void)state;
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHo st: a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\n: a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nH(st: a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nH\xc3\xa9: a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE("GET / HTTP/1.1\r\nX-a_b.c~!#$%&'*+^`|: v\r\n\r\n"), 42);
    assert_slice(req.headers[0].name, "X-a_b.c~!#$%&'*+^`|");
    assert_int_equal(PARSE("GET / HTTP/1.1\r\nA:b:c\r\n\r\n"), 25);
    assert_slice(req.headers[0].value, "b:c");
}

/* RFC 9112 §5.2: obs-fold is rejected; §2.2: no SP before the first field. */
static void test_obs_fold(void **state)
{
    (void)state;
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nA: a\r\n b\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nA: a\r\n\tb\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nA: a\r\n "), SORI_EINVAL); /* fast */
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nA: a\r\n \r\n\r\n"), SORI_EINVAL);
}

/* Builds a request with n headers "H<i>: v" into buf; returns its length. */
static size_t build_headers(char *buf, size_t cap, int n, const char *tail)
{
    size_t len = (size_t)snprintf(buf, cap, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < n; i++) len += (size_t)snprintf(buf + len, cap - len, "H%d: v%d\r\n", i, i);
    len += (size_t)snprintf(buf + len, cap - len, "%s", tail);
    assert_true(len < cap);
    return len;
}

static void test_max_headers(void **state)
{
    (void)state;
    char buf[4096];
    size_t n = build_headers(buf, sizeof(buf), HTTP_MAX_HEADERS, "\r\n");
    assert_int_equal(parse_n(buf, n), (int)n);
    assert_int_equal(http_request_parse(buf, n, &req), (int)n);
    assert_int_equal(req.nheaders, HTTP_MAX_HEADERS);
    assert_slice(req.headers[HTTP_MAX_HEADERS - 1].name, "H63");
    assert_slice(req.headers[HTTP_MAX_HEADERS - 1].value, "v63");
    n = build_headers(buf, sizeof(buf), HTTP_MAX_HEADERS + 1, "\r\n");
    assert_int_equal(parse_n(buf, n), SORI_E2BIG);
    n = build_headers(buf, sizeof(buf), HTTP_MAX_HEADERS + 100, "\r\n");
    assert_int_equal(parse_n(buf, n), SORI_E2BIG);
}

static void test_max_headers_partial(void **state)
{
    (void)state;
    char buf[4096];
    /* a 65th field line that has begun is already too many */
    size_t n = build_headers(buf, sizeof(buf), HTTP_MAX_HEADERS, "X-Ext");
    assert_int_equal(parse_n(buf, n), SORI_E2BIG);
    /* ... unless it is visibly invalid */
    n = build_headers(buf, sizeof(buf), HTTP_MAX_HEADERS, "X Ext");
    assert_int_equal(parse_n(buf, n), SORI_EINVAL);
    /* the end of the head after exactly 64 is still awaited */
    n = build_headers(buf, sizeof(buf), HTTP_MAX_HEADERS, "\r");
    assert_int_equal(parse_n(buf, n), SORI_EAGAIN);
}

static void test_nheaders_reset(void **state)
{
    (void)state;
    assert_int_equal(PARSE("GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"), 30);
    assert_int_equal(req.nheaders, 2);
    assert_int_equal(PARSE("GET / HTTP/1.1\r\n\r\n"), 18);
    assert_int_equal(req.nheaders, 0);
    assert_null(http_header_get(&req, "A"));
}

/* ---- RFC 9112 §2.2 / §9.3: incremental input and pipelining ---- */

static void test_incremental(void **state)
{
    (void)state;
    static const char *reqs[] = {
        "GET / HTTP/1.1\r\n\r\n",
        ("GET /ws?user=a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
         "Connection: Upgrade\r\n\r\n"),
        "\r\n\nPOST /api/login HTTP/1.0\nContent-Length: 2\n\n",
        "GET http://example.com/x?y HTTP/1.1\r\nA:\r\nB: \t b \t\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++)
        assert_incremental(reqs[i], strlen(reqs[i]));
    char buf[4096];
    size_t n = build_headers(buf, sizeof(buf), HTTP_MAX_HEADERS, "\r\n");
    assert_incremental(buf, n);
}

static void test_fast_fail(void **state)
{
    (void)state;
    /* visibly invalid prefixes fail without waiting for the line end */
    assert_int_equal(PARSE_COPY("G("), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("\x16\x03\x01\x02\x00"), SORI_EINVAL); /* TLS hello */
    assert_int_equal(PARSE_COPY("GET  "), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET %"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET x"), SORI_EAGAIN); /* may be "x://..." */
    assert_int_equal(PARSE_COPY("GET *x"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET ht!"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET http:x"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET http:///"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET /a\x01"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / X"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/2"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.2"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1x"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1\r"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHo st"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost: a\x01"), SORI_EINVAL);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost\r"), SORI_EINVAL);
    /* and valid prefixes wait */
    assert_int_equal(PARSE_COPY("GET"), SORI_EAGAIN);
    assert_int_equal(PARSE_COPY("GET ht"), SORI_EAGAIN);
    assert_int_equal(PARSE_COPY("GET http://"), SORI_EAGAIN);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r"), SORI_EAGAIN);
    assert_int_equal(PARSE_COPY("GET / HTTP/1.1\r\nHost: a\r\n\r"), SORI_EAGAIN);
}

static void test_pipelined(void **state)
{
    (void)state;
    static const char r[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                            "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
                            "GET /c HT";
    int n1 = PARSE(r);
    assert_int_equal(n1, 28);
    assert_slice(req.path, "/a");
    int n2 = http_request_parse(r + n1, sizeof(r) - 1 - (size_t)n1, &req);
    assert_int_equal(n2, 28);
    assert_slice(req.path, "/b");
    int n3 = http_request_parse(r + n1 + n2, sizeof(r) - 1 - (size_t)(n1 + n2), &req);
    assert_int_equal(n3, SORI_EAGAIN);
}

static void test_body_not_consumed(void **state)
{
    (void)state;
    static const char r[] = "POST /api/login HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    assert_int_equal(PARSE(r), (int)sizeof(r) - 1 - 5);
    /* a body full of garbage does not matter */
    static const char r2[] = "POST / HTTP/1.1\r\n\r\n\x00\x01\r\r\xff";
    assert_int_equal(PARSE(r2), 19);
}

/* ---- RFC 9110 §5.1, §5.3: field names are case-insensitive ---- */

static void test_header_get(void **state)
{
    (void)state;
    static const char r[] = "GET / HTTP/1.1\r\n"
                            "Hostname: wrong\r\n"
                            "HOST: first\r\n"
                            "host: second\r\n"
                            "X-A: 1\r\n"
                            "\r\n";
    assert_int_equal(PARSE(r), (int)sizeof(r) - 1);
    const slice_t *v = http_header_get(&req, "host");
    assert_non_null(v);
    assert_slice(*v, "first"); /* first match wins, "Hostname" is not a match */
    assert_non_null(http_header_get(&req, "Host"));
    assert_non_null(http_header_get(&req, "x-a"));
    assert_null(http_header_get(&req, "Hos"));    /* never a prefix */
    assert_null(http_header_get(&req, "X-A-B"));  /* nor a longer name */
    assert_null(http_header_get(&req, "X_A"));
    assert_null(http_header_get(&req, ""));
    assert_null(http_header_get(&req, "Upgrade"));
}

static void test_ieq_ascii_only(void **state)
{
    (void)state;
    assert_true(http__ieq("AbZ", "aBz", 3));
    assert_false(http__ieq("@", "`", 1)); /* 0x40 vs 0x60: not letters */
    assert_false(http__ieq("[", "{", 1));
    assert_false(http__ieq("\xc3", "\xe3", 1));
}

/* ---- RFC 9110 §5.6.1: lists; §7.6.1 Connection, §7.8 Upgrade ---- */

static void test_has_token(void **state)
{
    (void)state;
    assert_true(http_header_has_token(S("keep-alive, Upgrade"), "upgrade"));
    assert_true(http_header_has_token(S("Upgrade"), "upgrade"));
    assert_true(http_header_has_token(S("UPGRADE"), "Upgrade"));
    assert_true(http_header_has_token(S(" \tupgrade\t "), "upgrade"));
    assert_true(http_header_has_token(S("a,,upgrade,"), "upgrade"));
    assert_true(http_header_has_token(S("a , upgrade ; q=1 , b"), "upgrade"));
    assert_true(http_header_has_token(S("permessage-deflate; client_max_window_bits"),
                                      "permessage-deflate"));
    assert_true(http_header_has_token(S("x, websocket"), "websocket"));
    assert_false(http_header_has_token(S("upgrade2"), "upgrade"));
    assert_false(http_header_has_token(S("2upgrade"), "upgrade"));
    assert_false(http_header_has_token(S("upgra"), "upgrade"));
    assert_false(http_header_has_token(S("up grade"), "upgrade"));
    assert_false(http_header_has_token(S("keep-alive"), "upgrade"));
    assert_false(http_header_has_token(S("x;upgrade"), "upgrade")); /* a parameter */
    assert_false(http_header_has_token(S(""), "upgrade"));
    assert_false(http_header_has_token((slice_t){NULL, 0}, "upgrade"));
    assert_false(http_header_has_token(S("a,,b"), ""));
}

/* ---- RFC 9110 §8.6: Content-Length = 1*DIGIT ---- */

static void test_content_length(void **state)
{
    (void)state;
    uint64_t v = 7;
    assert_int_equal(http_parse_content_length(S("0"), &v), 0);
    assert_true(v == 0);
    assert_int_equal(http_parse_content_length(S("42"), &v), 0);
    assert_true(v == 42);
    assert_int_equal(http_parse_content_length(S("007"), &v), 0);
    assert_true(v == 7);
    assert_int_equal(http_parse_content_length(S("999999999999999999"), &v), 0);
    assert_true(v == 999999999999999999ULL);
    v = 5;
    assert_int_equal(http_parse_content_length(S("1000000000000000000"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S("0000000000000000001"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S("99999999999999999999999"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S("+1"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S("-1"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S("1 2"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S(""), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S(" 1"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S("1,1"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S("0x10"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length(S("1a"), &v), SORI_EINVAL);
    assert_int_equal(http_parse_content_length((slice_t){"1\0", 2}, &v), SORI_EINVAL);
    assert_true(v == 5); /* untouched on failure */
}

/* ---- RFC 3986 §2.1 percent-encoding; HTML form '+' ---- */

static void test_url_decode(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(http_url_decode(S("/a/b"), out, sizeof(out), 0), 4);
    assert_string_equal(out, "/a/b");
    assert_int_equal(http_url_decode(S("a%2Fb%2fc"), out, sizeof(out), 0), 5);
    assert_string_equal(out, "a/b/c");
    assert_int_equal(http_url_decode(S("%C3%A9%e2%82%AC"), out, sizeof(out), 0), 5);
    assert_string_equal(out, "\xc3\xa9\xe2\x82\xac");
    assert_int_equal(http_url_decode(S("%25%2B"), out, sizeof(out), 1), 2);
    assert_string_equal(out, "%+");
    assert_int_equal(http_url_decode(S(""), out, sizeof(out), 0), 0);
    assert_string_equal(out, "");
    assert_int_equal(http_url_decode((slice_t){NULL, 0}, out, sizeof(out), 0), 0);
}

static void test_url_decode_plus(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(http_url_decode(S("a+b"), out, sizeof(out), 1), 3);
    assert_string_equal(out, "a b");
    assert_int_equal(http_url_decode(S("a+b"), out, sizeof(out), 0), 3);
    assert_string_equal(out, "a+b");
}

static void test_url_decode_bad(void **state)
{
    (void)state;
    char out[16];
    assert_int_equal(http_url_decode(S("%zz"), out, sizeof(out), 0), SORI_EINVAL);
    assert_string_equal(out, "");
    assert_int_equal(http_url_decode(S("%0"), out, sizeof(out), 0), SORI_EINVAL);
    assert_int_equal(http_url_decode(S("a%"), out, sizeof(out), 0), SORI_EINVAL);
    assert_int_equal(http_url_decode(S("%g0"), out, sizeof(out), 0), SORI_EINVAL);
    assert_int_equal(http_url_decode(S("%0g"), out, sizeof(out), 0), SORI_EINVAL);
    assert_int_equal(http_url_decode(S("%00"), out, sizeof(out), 0), SORI_EINVAL);
    assert_int_equal(http_url_decode(S("a%00b"), out, sizeof(out), 1), SORI_EINVAL);
    assert_int_equal(http_url_decode((slice_t){"a\0b", 3}, out, sizeof(out), 0), SORI_EINVAL);
    /* the escape must not read past the slice, even if bytes follow it */
    assert_int_equal(http_url_decode((slice_t){"%41", 2}, out, sizeof(out), 0), SORI_EINVAL);
}

static void test_url_decode_cap(void **state)
{
    (void)state;
    char out[8];
    memset(out, 'x', sizeof(out));
    assert_int_equal(http_url_decode(S("abc"), out, 4, 0), 3); /* cap = len + 1 */
    assert_string_equal(out, "abc");
    assert_int_equal(http_url_decode(S("abcd"), out, 4, 0), SORI_E2BIG);
    assert_string_equal(out, "");
    assert_int_equal(http_url_decode(S("%41%42%43"), out, 4, 0), 3);
    assert_string_equal(out, "ABC");
    assert_int_equal(http_url_decode(S("a"), out, 0, 0), SORI_E2BIG);
    assert_int_equal(http_url_decode(S(""), out, 1, 0), 0);
    assert_string_equal(out, "");
    assert_int_equal(http_url_decode(S("a"), out, 1, 0), SORI_E2BIG);
}

/* ---- RFC 3986 §3.4 query, application/x-www-form-urlencoded pairs ---- */

static void test_query_get(void **state)
{
    (void)state;
    char out[32];
    slice_t q = S("user=alice&token=a.b.c&empty=&flag&name=hello+world%21&dup=1&dup=2");
    assert_int_equal(http_query_get(q, "user", out, sizeof(out)), 5);
    assert_string_equal(out, "alice");
    assert_int_equal(http_query_get(q, "token", out, sizeof(out)), 5);
    assert_string_equal(out, "a.b.c");
    assert_int_equal(http_query_get(q, "empty", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(http_query_get(q, "flag", out, sizeof(out)), 0); /* no '=' */
    assert_string_equal(out, "");
    assert_int_equal(http_query_get(q, "name", out, sizeof(out)), 12);
    assert_string_equal(out, "hello world!");
    assert_int_equal(http_query_get(q, "dup", out, sizeof(out)), 1);
    assert_string_equal(out, "1"); /* first match wins */
}

static void test_query_whole_keys(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(http_query_get(S("username=x"), "user", out, sizeof(out)), SORI_ENOTFOUND);
    assert_int_equal(http_query_get(S("xuser=x"), "user", out, sizeof(out)), SORI_ENOTFOUND);
    assert_int_equal(http_query_get(S("use=x"), "user", out, sizeof(out)), SORI_ENOTFOUND);
    assert_int_equal(http_query_get(S("username=x&user=y"), "user", out, sizeof(out)), 1);
    assert_string_equal(out, "y");
    assert_int_equal(http_query_get(S("a=user=b"), "user", out, sizeof(out)), SORI_ENOTFOUND);
    assert_int_equal(http_query_get(S("a=b=c"), "a", out, sizeof(out)), 3);
    assert_string_equal(out, "b=c");
    assert_int_equal(http_query_get(S("User=x"), "user", out, sizeof(out)), SORI_ENOTFOUND);
    /* keys are compared undecoded */
    assert_int_equal(http_query_get(S("us%65r=x"), "user", out, sizeof(out)), SORI_ENOTFOUND);
    assert_int_equal(http_query_get(S("us%65r=x"), "us%65r", out, sizeof(out)), 1);
    assert_int_equal(http_query_get(S("a+b=x"), "a b", out, sizeof(out)), SORI_ENOTFOUND);
}

static void test_query_edges(void **state)
{
    (void)state;
    char out[4];
    assert_int_equal(http_query_get(S(""), "a", out, sizeof(out)), SORI_ENOTFOUND);
    assert_int_equal(http_query_get((slice_t){NULL, 0}, "a", out, sizeof(out)), SORI_ENOTFOUND);
    assert_int_equal(http_query_get(S("&&a=1&"), "a", out, sizeof(out)), 1);
    assert_string_equal(out, "1");
    assert_int_equal(http_query_get(S("&&"), "", out, sizeof(out)), SORI_ENOTFOUND);
    assert_int_equal(http_query_get(S("x&=v"), "", out, sizeof(out)), 1);
    assert_int_equal(http_query_get(S("a=%zz&a=1"), "a", out, sizeof(out)), SORI_EINVAL);
    assert_int_equal(http_query_get(S("a=%00"), "a", out, sizeof(out)), SORI_EINVAL);
    assert_int_equal(http_query_get(S("a=1234"), "a", out, sizeof(out)), SORI_E2BIG);
    assert_string_equal(out, "");
    assert_int_equal(http_query_get(S("a=123"), "a", out, sizeof(out)), 3);
    assert_int_equal(http_query_get(S("a=1"), "a", out, 0), SORI_E2BIG);
}

/* The query slice from a parsed request feeds http_query_get directly. */
static void test_query_from_request(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(PARSE("GET /ws?token=abc&user=bob%40x HTTP/1.1\r\n\r\n"), 43);
    assert_int_equal(http_query_get(req.query, "user", out, sizeof(out)), 5);
    assert_string_equal(out, "bob@x");
    assert_int_equal(http_url_decode(req.path, out, sizeof(out), 0), 3);
    assert_string_equal(out, "/ws");
}

/* ---- RFC 9110 §15: reason phrases ---- */

/* ---- REST path segments (/api/rooms/{room}/{what}) ---- */

static void test_path_segments(void **state)
{
    (void)state;
    char seg[3][HTTP_SEG_MAX];
    size_t skip = strlen("/api/rooms/");
    assert_int_equal(http_path_segments(S("/api/rooms/general/messages"), skip, seg, 3), 2);
    assert_string_equal(seg[0], "general");
    assert_string_equal(seg[1], "messages");
    assert_int_equal(http_path_segments(S("/api/rooms/a%2Fb/members/bob"), skip, seg, 3), 3);
    assert_string_equal(seg[0], "a/b");
    assert_string_equal(seg[2], "bob");
    assert_int_equal(http_path_segments(S("/api/rooms/general/"), skip, seg, 3), 1); /* one trailing '/' */
    assert_int_equal(http_path_segments(S("/api/rooms/"), skip, seg, 3), 0);
    assert_int_equal(http_path_segments(S("/api/rooms/a//b"), skip, seg, 3), -1);    /* empty segment */
    assert_int_equal(http_path_segments(S("/api/rooms/a/b/c/d"), skip, seg, 3), -1); /* too many */
    assert_int_equal(http_path_segments(S("/api/rooms/a%zz"), skip, seg, 3), -1);    /* bad escape */
    assert_int_equal(http_path_segments(S("/api/rooms/a%00"), skip, seg, 3), -1);    /* decoded NUL */
    char longseg[200];
    memset(longseg, 'x', sizeof longseg);
    memcpy(longseg, "/api/rooms/", skip);
    assert_int_equal(http_path_segments((slice_t){longseg, HTTP_SEG_MAX - 1 + skip}, skip, seg, 3), 1);
    assert_int_equal(strlen(seg[0]), HTTP_SEG_MAX - 1);
    assert_int_equal(http_path_segments((slice_t){longseg, HTTP_SEG_MAX + skip}, skip, seg, 3), -1);
}

static void test_status_text(void **state)
{
    (void)state;
    assert_string_equal(http_status_text(101), "Switching Protocols");
    assert_string_equal(http_status_text(200), "OK");
    assert_string_equal(http_status_text(404), "Not Found");
    assert_string_equal(http_status_text(413), "Content Too Large");
    assert_string_equal(http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(http_status_text(503), "Service Unavailable");
    assert_string_equal(http_status_text(999), "Unknown");
    assert_string_equal(http_status_text(0), "Unknown");
    assert_string_equal(http_status_text(-1), "Unknown");
}

/* The line finder (RFC 9112 §2.2). */
static void test_line_helper(void **state)
{
    (void)state;
    size_t n = 99, next = 99;
    int whole = 9;
    assert_int_equal(http__line("ab\r\ncd", 6, 0, &n, &next, &whole), 1);
    assert_int_equal(n, 2);
    assert_int_equal(next, 4);
    assert_int_equal(whole, 1);
    assert_int_equal(http__line("ab\r\ncd", 6, 4, &n, &next, &whole), 0);
    assert_int_equal(n, 2);
    assert_int_equal(whole, 0);
    assert_int_equal(http__line("ab\r", 3, 0, &n, &next, &whole), 0);
    assert_int_equal(n, 2);
    assert_int_equal(whole, 1);
    assert_int_equal(http__line("ab", 2, 2, &n, &next, &whole), 0);
    assert_int_equal(n, 0);
    assert_int_equal(whole, 0);
    assert_int_equal(http__line("\n", 1, 0, &n, &next, &whole), 1);
    assert_int_equal(n, 0);
    assert_int_equal(next, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_class_table),
        cmocka_unit_test(test_minimal_get),
        cmocka_unit_test(test_websocket_upgrade),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_version_invalid),
        cmocka_unit_test(test_method_token),
        cmocka_unit_test(test_single_sp),
        cmocka_unit_test(test_target_chars),
        cmocka_unit_test(test_target_forms),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_path_query_split),
        cmocka_unit_test(test_leading_empty_lines),
        cmocka_unit_test(test_bare_lf),
        cmocka_unit_test(test_bare_cr),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_header_ows_trim),
        cmocka_unit_test(test_header_value_ctl),
        cmocka_unit_test(test_header_name),
        cmocka_unit_test(test_obs_fold),
        cmocka_unit_test(test_max_headers),
        cmocka_unit_test(test_max_headers_partial),
        cmocka_unit_test(test_nheaders_reset),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_fast_fail),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_body_not_consumed),
        cmocka_unit_test(test_header_get),
        cmocka_unit_test(test_ieq_ascii_only),
        cmocka_unit_test(test_has_token),
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_url_decode_plus),
        cmocka_unit_test(test_url_decode_bad),
        cmocka_unit_test(test_url_decode_cap),
        cmocka_unit_test(test_query_get),
        cmocka_unit_test(test_query_whole_keys),
        cmocka_unit_test(test_query_edges),
        cmocka_unit_test(test_query_from_request),
        cmocka_unit_test(test_path_segments),
        cmocka_unit_test(test_status_text),
        cmocka_unit_test(test_line_helper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

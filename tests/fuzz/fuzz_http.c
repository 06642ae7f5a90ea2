/*
 * fuzz_http.c: libFuzzer target for src/http/http_parse.c.
 *
 * Parses the input as a request head and checks the contract: the result is
 * a head length in (0, len] or one of SORI_EAGAIN / SORI_EINVAL / SORI_E2BIG;
 * every slice lies inside the head; names are tokens and values are trimmed
 * and CTL-free; every proper prefix of a parsed head is SORI_EAGAIN (spot
 * checked) and the head parses alone to the same length; an error stays an
 * error when more bytes follow. On success it drives every helper over the
 * parsed slices: header lookup, token lists, Content-Length, query lookup
 * and percent-decoding of the path, checking their results too, and the
 * WebSocket upgrade checks (ws_handshake_check: Origin allow-list,
 * sub-protocols, the key and permessage-deflate offers).
 * libFuzzer hands over an exactly-sized heap copy, so ASan sees any read
 * past `len`.
 */
#include "http/http_parse.h"
#include "util/config.h"
#include "util/err.h"
#include "ws/ws.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) __builtin_trap();                                             \
    } while (0)

static http_request_t req, req2;

static int inside(slice_t s, const char *lo, const char *hi)
{
    return s.p >= lo && s.len <= (size_t)(hi - lo) && s.p + s.len <= hi;
}

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int parse_copy(const uint8_t *data, size_t n, http_request_t *r)
{
    char *b = malloc(n ? n : 1);
    CHECK(b != NULL);
    memcpy(b, data, n);
    int rc = http_request_parse(b, n, r);
    free(b);
    return rc;
}

static void check_decode(slice_t in, int plus)
{
    char out[512], small[4];
    int rc = http_url_decode(in, out, sizeof(out), plus);
    CHECK(rc == SORI_EINVAL || rc == SORI_E2BIG || rc >= 0);
    if (rc >= 0) {
        CHECK((size_t)rc <= in.len && (size_t)rc < sizeof(out));
        CHECK(strlen(out) == (size_t)rc); /* NUL-terminated, no NUL inside */
    } else {
        CHECK(out[0] == '\0');
    }
    int rc2 = http_url_decode(in, small, sizeof(small), plus);
    CHECK(rc2 == SORI_EINVAL || rc2 == SORI_E2BIG || (rc2 >= 0 && rc2 < 4));
    if (rc2 >= 0) CHECK(rc == rc2 && memcmp(out, small, (size_t)rc2 + 1) == 0);
    if (rc >= 0 && (size_t)rc < sizeof(small)) CHECK(rc2 == rc);
}

static void check_query(slice_t q, const char *key)
{
    char out[256];
    int rc = http_query_get(q, key, out, sizeof(out));
    CHECK(rc == SORI_ENOTFOUND || rc == SORI_EINVAL || rc == SORI_E2BIG || rc >= 0);
    if (rc >= 0) {
        CHECK((size_t)rc <= q.len && strlen(out) == (size_t)rc);
    } else {
        CHECK(out[0] == '\0');
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    int rc = http_request_parse(buf, size, &req);

    if (rc < 0) {
        CHECK(rc == SORI_EAGAIN || rc == SORI_EINVAL || rc == SORI_E2BIG);
        if (rc == SORI_EAGAIN) {
            /* a prefix of a valid prefix is a valid prefix */
            CHECK(parse_copy(data, size / 2, &req2) == SORI_EAGAIN);
            if (size) CHECK(parse_copy(data, size - 1, &req2) == SORI_EAGAIN);
        } else if (size < 4096) {
            /* an error stays an error whatever follows */
            uint8_t *more = malloc(size + 4);
            CHECK(more != NULL);
            memcpy(more, data, size);
            memcpy(more + size, "\r\n\r\n", 4);
            int rc2 = http_request_parse((const char *)more, size + 4, &req2);
            CHECK(rc2 == SORI_EINVAL || rc2 == SORI_E2BIG);
            free(more);
        }
        return 0;
    }

    size_t n = (size_t)rc;
    const char *end = buf + n;
    CHECK(n > 0 && n <= size);
    CHECK(buf[n - 1] == '\n');

    /* the head alone parses the same; its proper prefixes need more bytes */
    CHECK(parse_copy(data, n, &req2) == rc);
    CHECK(req2.nheaders == req.nheaders);
    CHECK(parse_copy(data, n - 1, &req2) == SORI_EAGAIN);
    CHECK(parse_copy(data, n / 2, &req2) == SORI_EAGAIN);
    if (n > 2) CHECK(parse_copy(data, n - 2, &req2) == SORI_EAGAIN);

    /* request line */
    CHECK(req.minor_version == 0 || req.minor_version == 1);
    CHECK(req.method.len > 0 && inside(req.method, buf, end));
    for (size_t i = 0; i < req.method.len; i++) CHECK(is_tchar((unsigned char)req.method.p[i]));
    CHECK(req.target.len > 0 && inside(req.target, buf, end));
    const char *t0 = req.target.p, *t1 = req.target.p + req.target.len;
    CHECK(inside(req.path, t0, t1) && inside(req.query, t0, t1));
    for (size_t i = 0; i < req.target.len; i++) CHECK(t0[i] > 0x20 && t0[i] < 0x7f);
    CHECK(req.target.p[0] == '/' || req.target.p[0] == '*' || req.path.len == 0 ||
          req.path.p[0] == '/');
    CHECK(memchr(req.path.p, '?', req.path.len) == NULL);

    /* headers */
    CHECK(req.nheaders <= HTTP_MAX_HEADERS);
    for (size_t i = 0; i < req.nheaders; i++) {
        const http_header_t *h = &req.headers[i];
        CHECK(h->name.len > 0 && inside(h->name, buf, end) && inside(h->value, buf, end));
        for (size_t k = 0; k < h->name.len; k++) CHECK(is_tchar((unsigned char)h->name.p[k]));
        for (size_t k = 0; k < h->value.len; k++) {
            unsigned char c = (unsigned char)h->value.p[k];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (h->value.len) {
            CHECK(h->value.p[0] != ' ' && h->value.p[0] != '\t');
            CHECK(h->value.p[h->value.len - 1] != ' ' && h->value.p[h->value.len - 1] != '\t');
        }

        /* the lookup by this name finds this header or an earlier one */
        char name[256], val[256];
        if (h->name.len < sizeof(name)) {
            memcpy(name, h->name.p, h->name.len);
            name[h->name.len] = '\0';
            const slice_t *v = http_header_get(&req, name);
            CHECK(v != NULL && v >= &req.headers[0].value && v <= &h->value);
        }

        /* token lists: a value without ',' or ';' holds itself as a token */
        (void)http_header_has_token(h->value, "upgrade");
        (void)http_header_has_token(h->value, "keep-alive");
        (void)http_header_has_token(h->value, "permessage-deflate");
        if (h->value.len && h->value.len < sizeof(val)) {
            memcpy(val, h->value.p, h->value.len);
            val[h->value.len] = '\0';
            if (!memchr(val, ',', h->value.len) && !memchr(val, ';', h->value.len))
                CHECK(http_header_has_token(h->value, val) == 1);
        }

        uint64_t cl = UINT64_MAX;
        if (http_parse_content_length(h->value, &cl) == 0) {
            CHECK(cl < 1000000000000000000ULL && h->value.len <= 18);
        } else {
            CHECK(cl == UINT64_MAX);
        }
    }

    /* query and path helpers */
    static const char *keys[] = {"user", "token", "a", "", "user=x", "&"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) check_query(req.query, keys[i]);
    check_decode(req.path, 0);
    check_decode(req.query, 1);
    (void)http_status_text((int)(size & 0x3ff));

    /* the WebSocket upgrade checks (ws_handshake_check), with and without
     * an Origin allow-list and deflate, picked by the input's length */
    static const char *const protos[] = {"v12.stomp", "v11.stomp", "v10.stomp", "json", NULL};
    sori_config.allowed_origins = (size & 1) ? (char *)" https://a.example , http://b:8080," : NULL;
    sori_config.ws_deflate = (size & 2) != 0;
    ws_handshake_t hs;
    const char *msg = NULL;
    int st = ws_handshake_check(&req, protos, &hs, &msg);
    if (st == 0) {
        CHECK(strlen(hs.accept) == 28 && hs.accept[27] == '=');
        CHECK(memchr(hs.extensions, '\0', sizeof hs.extensions) != NULL);
        CHECK(!hs.deflate.enabled || (sori_config.ws_deflate && hs.extensions[0]));
        if (hs.subprotocol) {
            int known = 0;
            for (size_t i = 0; protos[i]; i++) known |= hs.subprotocol == protos[i];
            CHECK(known);
        }
    } else {
        CHECK((st == 400 || st == 403 || st == 426) && msg && *msg);
    }
    return 0;
}

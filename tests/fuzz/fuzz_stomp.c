/*
 * fuzz_stomp.c: libFuzzer target for src/proto/stomp_frame.c.
 *
 * The first byte picks the version (1.0, 1.1, 1.2) and a split point; the
 * rest is a stream of client frames, parsed the way proto_stomp.c does:
 * skip EOLs, parse, advance. Checks the contract: results are a length in
 * (0, n], SORI_EAGAIN, SORI_EINVAL or SORI_E2BIG (errors with a sentence);
 * an incomplete frame leaves the buffer untouched and is still incomplete
 * or complete-and-equal once the rest arrives; every header and the body lie
 * inside the frame, the body is followed by its NUL, names are non-empty,
 * and no header value holds an unescaped EOL. Also drives the encoder:
 * what stomp_header_append writes parses back to the same value.
 */
#include "proto/stomp_frame.h"
#include "util/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) __builtin_trap();                                             \
    } while (0)

static const stomp_limits_t lim = {32, 2048, 8192};

static int inside(slice_t s, const char *lo, const char *hi)
{
    return s.p >= lo && s.p + s.len <= hi;
}

static void check_frame(const stomp_frame_t *f, const char *p, int rc)
{
    const char *end = p + rc;
    CHECK(f->command >= STOMP_CONNECT && f->command <= STOMP_DISCONNECT);
    CHECK(f->nheaders <= lim.max_headers);
    for (uint32_t i = 0; i < f->nheaders; i++) {
        CHECK(f->headers[i].name.len > 0);
        CHECK(inside(f->headers[i].name, p, end) && inside(f->headers[i].value, p, end));
    }
    CHECK(f->body >= p && f->body + f->body_len < end && f->body[f->body_len] == 0);
    CHECK(f->body_len <= lim.max_body);
}

static void roundtrip(const uint8_t *data, size_t size, int version)
{
    buf_t b = {0};
    size_t vlen = size > 200 ? 200 : size;
    if (buf_append(&b, "SEND\n", 5) || stomp_header_append(&b, version, "k", (const char *)data, vlen) ||
        buf_append(&b, "\n", 2)) {
        buf_free(&b);
        return;
    }
    stomp_frame_t f;
    int rc = stomp_frame_parse(b.data, b.len, version, &lim, &f);
    /* 1.0 cannot carry CR/LF (dropped) and a value with NUL is refused */
    if (memchr(data, 0, vlen)) {
        CHECK(rc == SORI_EINVAL);
    } else {
        CHECK(rc == (int)b.len);
        const slice_t *v = stomp_header_get(&f, "k");
        CHECK(v);
        if (version >= 12 || !(memchr(data, '\r', vlen) || (version == 10 && memchr(data, '\n', vlen)))) {
            CHECK(v->len == vlen && !memcmp(v->p, data, vlen));
        }
    }
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int version = 10 + data[0] % 3;
    size_t n = size - 1;
    char *p = malloc(n ? n : 1);
    char *orig = malloc(n ? n : 1);
    if (!p || !orig) {
        free(p);
        free(orig);
        return 0;
    }
    memcpy(p, data + 1, n);
    memcpy(orig, data + 1, n);
    size_t off = 0;
    for (int frames = 0; off < n && frames < 64; frames++) {
        off += stomp_skip_eols(p + off, n - off);
        if (off == n) break;
        stomp_frame_t f;
        /* a prefix first: EAGAIN leaves it untouched, errors stay errors */
        size_t cut = (data[0] >> 2) % (n - off + 1);
        int pr = stomp_frame_parse(p + off, cut, version, &lim, &f);
        CHECK(pr == SORI_EAGAIN || pr == SORI_EINVAL || pr == SORI_E2BIG || (pr > 0 && (size_t)pr <= cut));
        if (pr == SORI_EAGAIN) CHECK(!memcmp(p + off, orig + off, cut));
        if (pr != SORI_EAGAIN) memcpy(p + off, orig + off, n - off); /* it may have decoded in place */
        int rc = stomp_frame_parse(p + off, n - off, version, &lim, &f);
        CHECK(rc == SORI_EAGAIN || rc == SORI_EINVAL || rc == SORI_E2BIG || (rc > 0 && (size_t)rc <= n - off));
        if (pr > 0) CHECK(rc == pr);
        if (pr == SORI_EINVAL || pr == SORI_E2BIG) CHECK(rc < 0 && rc != SORI_EAGAIN);
        if (rc < 0) {
            if (rc != SORI_EAGAIN) CHECK(f.error && f.error[0]);
            else CHECK(!memcmp(p + off, orig + off, n - off));
            break;
        }
        check_frame(&f, p + off, rc);
        off += (size_t)rc;
    }
    roundtrip(data + 1, n, version);
    free(p);
    free(orig);
    return 0;
}

/*
 * fuzz_ws_frame.c: libFuzzer target for the WebSocket read path. The input
 * is a stream of client frames, parsed the way a server does (require_mask,
 * RSV1 allowed for permessage-deflate): each payload is unmasked in two
 * pieces at an input-dependent split, text messages go through the
 * incremental UTF-8 validator, close payloads through the close checks, and
 * compressed (RSV1) messages through the inflater with a 1 MiB cap. The first
 * up to 200 bytes are also read as a Sec-WebSocket-Extensions value. Every
 * result is checked against the header contracts; a broken invariant aborts.
 * The message bookkeeping here is this target's own model, for the codec's
 * sake; the server's real message assembly (src/ws/ws_reader.c) is driven
 * by fuzz_ws_reader.
 */
#include "util/buf.h"
#include "util/err.h"
#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"
#include "ws/ws_utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                        \
    do {                                                                                \
        if (!(x)) {                                                                     \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #x, __FILE__, __LINE__);  \
            abort();                                                                    \
        }                                                                               \
    } while (0)

#define MSG_MAX (1u << 20)
#define RESP_BASE "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

static void fuzz_negotiate(const uint8_t *data, size_t size)
{
    size_t n = size < 200 ? size : 200;
    slice_t hv = {(const char *)data, n};
    ws_deflate_params_t p;
    char resp[256];
    memset(resp, 'Z', sizeof resp);
    int rc = ws_deflate_negotiate(hv, &p, resp, sizeof resp);
    CHECK(rc == 0 || rc == 1 || rc == SORI_EINVAL);
    if (rc == 1) {
        CHECK(p.enabled == 1);
        CHECK(p.server_window_bits >= 9 && p.server_window_bits <= 15);
        CHECK(memchr(resp, '\0', sizeof resp) != NULL);
        CHECK(strncmp(resp, RESP_BASE, sizeof RESP_BASE - 1) == 0);
        CHECK(strstr(resp, "client_max_window_bits") == NULL);
        /* The same value again with too small a buffer: E2BIG, never 1. */
        char tiny[16];
        ws_deflate_params_t q;
        CHECK(ws_deflate_negotiate(hv, &q, tiny, sizeof tiny) == SORI_E2BIG);
        CHECK(q.enabled == 0);
    } else {
        CHECK(p.enabled == 0);
        CHECK(resp[0] == '\0');
    }
}

typedef struct {
    int active;     /* a data message is open (waiting for FIN) */
    int opcode;     /* WS_OP_TEXT or WS_OP_BINARY */
    int compressed; /* RSV1 on the first frame */
    int utf8_bad;   /* the incremental validator failed */
    ws_utf8_t utf8;
    buf_t body; /* the message so far (capped at MSG_MAX) */
} msg_t;

static ws_inflater_t *inflater;

static void finish_message(msg_t *m)
{
    if (m->compressed) {
        buf_t out = {0};
        int rc = ws_inflate_message(inflater, (const uint8_t *)m->body.data, m->body.len, MSG_MAX,
                                    &out);
        CHECK(rc == 0 || rc == SORI_EINVAL || rc == SORI_E2BIG);
        CHECK(out.len <= MSG_MAX);
        if (rc) CHECK(out.len == 0);
        if (rc == 0 && m->opcode == WS_OP_TEXT) {
            ws_utf8_t u;
            ws_utf8_init(&u);
            int ok = ws_utf8_feed(&u, (const uint8_t *)out.data, out.len) == 0 &&
                     ws_utf8_finish(&u) == 0;
            CHECK(ok == ws_utf8_valid((const uint8_t *)out.data, out.len));
        }
        buf_free(&out);
    } else if (m->opcode == WS_OP_TEXT) {
        int ok = !m->utf8_bad && ws_utf8_finish(&m->utf8) == 0;
        /* Incremental over fragments equals a whole-buffer check. */
        CHECK(ok == ws_utf8_valid((const uint8_t *)m->body.data, m->body.len));
    }
    m->active = 0;
    m->body.len = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!inflater) {
        inflater = ws_inflater_new();
        CHECK(inflater != NULL);
    }
    fuzz_negotiate(data, size);

    /* A private, exactly sized copy: unmasking writes in place, and ASan
     * catches any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    CHECK(buf != NULL);
    if (size) memcpy(buf, data, size);
    const ws_parse_opts_t opts = {.allowed_rsv = WS_RSV1, .require_mask = 1};
    msg_t m = {0};
    size_t pos = 0;

    while (pos < size) {
        ws_frame_t f;
        int cc = 0;
        size_t avail = size - pos;
        int rc = ws_frame_parse(buf + pos, avail, &opts, &f, &cc);
        if (rc == SORI_EAGAIN) {
            CHECK(avail < WS_FRAME_HEADER_MAX);
            break;
        }
        if (rc == SORI_EINVAL) {
            CHECK(cc == 1002);
            break;
        }
        CHECK(rc > 0);
        CHECK((size_t)rc == f.header_len);
        CHECK(f.header_len >= 2 && f.header_len <= WS_FRAME_HEADER_MAX);
        CHECK(f.header_len <= avail);
        CHECK(f.masked == 1);
        CHECK((f.rsv & ~WS_RSV1) == 0);
        CHECK(f.opcode <= WS_OP_BINARY || (f.opcode >= WS_OP_CLOSE && f.opcode <= WS_OP_PONG));
        CHECK((f.payload_len >> 63) == 0);
        if (f.opcode >= WS_OP_CLOSE) CHECK(f.fin && f.rsv == 0 && f.payload_len <= 125);

        /* The writer's shortest encoding is never longer and parses back. */
        uint8_t h[WS_FRAME_HEADER_MAX];
        size_t hl = ws_frame_header_write(h, f.opcode, f.fin, f.rsv, f.payload_len, f.mask);
        CHECK(hl <= f.header_len);
        ws_frame_t g;
        CHECK(ws_frame_parse(h, hl, &opts, &g, &cc) == (int)hl);
        CHECK(g.fin == f.fin && g.rsv == f.rsv && g.opcode == f.opcode &&
              g.payload_len == f.payload_len && memcmp(g.mask, f.mask, 4) == 0);

        pos += f.header_len;
        if (f.payload_len > size - pos) break; /* payload not all here */
        size_t n = (size_t)f.payload_len;
        uint8_t *p = buf + pos;
        pos += n;

        /* Unmask in two pieces and compare with a byte loop. */
        uint8_t *ref = malloc(n ? n : 1);
        CHECK(ref != NULL);
        for (size_t i = 0; i < n; i++) ref[i] = p[i] ^ f.mask[i & 3];
        size_t split = n ? ((size_t)f.mask[0] * 131 + (size_t)f.mask[3] + n) % (n + 1) : 0;
        ws_mask_apply(p, split, f.mask, 0);
        ws_mask_apply(p + split, n - split, f.mask, split);
        CHECK(n == 0 || memcmp(p, ref, n) == 0);
        free(ref);

        if (f.opcode == WS_OP_CLOSE) {
            unsigned code = 0;
            int r = ws_close_payload_check(p, n, &code);
            CHECK(r == 0 || r == 1002 || r == 1007);
            if (r == 0) CHECK(n == 0 ? code == 1005 : ws_close_code_valid(code));
            if (r == 1007) CHECK(!ws_utf8_valid(p + 2, n - 2));
            continue;
        }
        if (f.opcode == WS_OP_PING || f.opcode == WS_OP_PONG) continue;

        /* Data frames: RFC 6455 §5.4 ordering, RFC 7692 §6.1 RSV1 rules. */
        if (f.opcode == WS_OP_CONT) {
            if (!m.active || f.rsv) break;
        } else {
            if (m.active) break;
            m.active = 1;
            m.opcode = f.opcode;
            m.compressed = (f.rsv & WS_RSV1) != 0;
            m.utf8_bad = 0;
            ws_utf8_init(&m.utf8);
            m.body.len = 0;
        }
        if (m.body.len + n > MSG_MAX) break;
        CHECK(buf_append(&m.body, p, n) == 0);
        if (!m.compressed && m.opcode == WS_OP_TEXT && !m.utf8_bad)
            m.utf8_bad = ws_utf8_feed(&m.utf8, p, n) != 0;
        if (f.fin) finish_message(&m);
    }
    buf_free(&m.body);
    free(buf);
    return 0;
}

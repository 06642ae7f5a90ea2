/*
 * ws_conn.c: a WebSocket connection after the upgrade: frame reading,
 * message reassembly, UTF-8 checks, control frames, the closing handshake,
 * heartbeats, slow consumers and permessage-deflate.
 *
 * Owns ws_conn_t (one per WebSocket, freed from net's on_free) and this
 * thread's zlib state: one deflater per window size in use and one inflater,
 * reset for every message (we always negotiate no_context_takeover both
 * ways, so a connection holds zero bytes of zlib state; a worker holds about
 * 270 KiB per deflater window size in use plus 44 KiB for its inflater).
 * Invariants: the app sees only whole messages, text ones valid UTF-8
 * (RFC 6455 §8.1); a message that arrives whole in one read and is not
 * compressed is delivered from the read buffer without a copy; anything
 * else is reassembled in ws->rd (ws_reader.c, the frame and message state
 * machine this file feeds), bounded by ws-max-message (1009).
 * Per connection: 112 bytes of ws_conn_t (x86-64; 72 of them the reader),
 * plus the message buffer only while a message is incomplete and 125 bytes
 * only while a control frame is read.
 */
#include "util/config.h"
#include "util/err.h"
#include "util/log.h"
#include "util/metrics.h"
#include "ws/ws.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WS_CLOSE_WAIT_SECS 5

static __thread ws_deflater_t *ws__deflaters[16];
static __thread ws_inflater_t *ws__inflater;
static __thread buf_t ws__inbuf;  /* inflated incoming message */
static __thread buf_t ws__outbuf; /* compressed outgoing message */
static __thread sbuf_t *ws__ping;  /* the empty ping frame, shared forever */

static const conn_handler_t ws__handler;

void ws_thread_cleanup(void)
{
    for (int i = 0; i < 16; i++) {
        ws_deflater_free(ws__deflaters[i]);
        ws__deflaters[i] = NULL;
    }
    ws_inflater_free(ws__inflater);
    ws__inflater = NULL;
    buf_free(&ws__inbuf);
    buf_free(&ws__outbuf);
    sbuf_unref(ws__ping);
    ws__ping = NULL;
}

static uint32_t ws__hb_secs(void) { return (uint32_t)(sori_config.heartbeat_ms + 999) / 1000; }

/* ---- encoding ---- */

static sbuf_t *ws__frame(int opcode, int rsv, const void *payload, size_t len)
{
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t h = ws_frame_header_write(hdr, opcode, 1, rsv, len, NULL);
    sbuf_t *b = sbuf_new(h + len);
    if (!b) return NULL;
    memcpy(b->data, hdr, h);
    if (len) memcpy(b->data + h, payload, len);
    return b;
}

/* Compresses payload with this thread's deflater for `bits`; the result is
 * in ws__outbuf. 0 or an error. */
static int ws__compress(int bits, const void *payload, size_t len)
{
    if (!ws__deflaters[bits]) {
        ws__deflaters[bits] = ws_deflater_new(6, bits);
        if (!ws__deflaters[bits]) return SORI_ENOMEM;
    }
    ws__outbuf.len = 0;
    return ws_deflate_message(ws__deflaters[bits], payload, len, &ws__outbuf);
}

static void ws__shrink(buf_t *b)
{
    if (b->cap > (1u << 20)) buf_free(b);
    else b->len = 0;
}

/* ---- closing ---- */

static void ws__send_close(ws_conn_t *ws, unsigned code, const char *reason)
{
    uint8_t payload[125];
    size_t n = 0;
    if (code) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        n = 2;
        size_t rl = reason ? strlen(reason) : 0;
        if (rl > 123) rl = 123;
        if (rl) memcpy(payload + 2, reason, rl);
        n += rl;
    }
    sbuf_t *b = ws__frame(WS_OP_CLOSE, 0, payload, n);
    if (b) {
        conn_write(ws->c, b, 0, b->len, 1);
        sbuf_unref(b);
    }
}

/* Fails the connection (§7.1.7): a close frame with `code`, then TCP close. */
static void ws__fail(ws_conn_t *ws, unsigned code, const char *reason)
{
    if (ws->state == WS_OPEN) ws__send_close(ws, code, reason);
    ws->state = WS_CLOSED;
    LOG_DEBUG("ws", "conn %llx failed: %u %s", (unsigned long long)ws->c->id, code, reason);
    conn_close(ws->c, CONN_CLOSE_LINGER);
}

void ws_close(ws_conn_t *ws, unsigned code, const char *reason)
{
    if (ws->state != WS_OPEN) return;
    ws__send_close(ws, code, reason);
    ws->state = WS_CLOSE_SENT;
    conn_set_deadline(ws->c, WS_CLOSE_WAIT_SECS); /* for the peer's close */
}

static void ws__slow_consumer(ws_conn_t *ws)
{
    LOG_INFO("ws", "conn %llx: slow consumer (%llu bytes unsent); closing", (unsigned long long)ws->c->id,
             (unsigned long long)ws->c->out_bytes);
    conn_discard_unsent(ws->c);
    metrics_inc(M_SLOW_CONSUMERS);
    if (ws->state == WS_OPEN) ws__send_close(ws, 1008, "slow consumer");
    ws->state = WS_CLOSED;
    /* Lingering: a close() with unread input would send an RST that
     * discards the close frame the client needs to see (RFC 6455 §7.1.1). */
    conn_close(ws->c, CONN_CLOSE_LINGER);
    conn_set_deadline(ws->c, WS_CLOSE_WAIT_SECS);
}

static int ws__queue(ws_conn_t *ws, sbuf_t *b, uint32_t off, uint32_t len)
{
    if (ws->state != WS_OPEN) return SORI_ECLOSED;
    int rc = conn_write(ws->c, b, off, len, 0);
    if (rc == SORI_E2BIG) ws__slow_consumer(ws);
    return rc;
}

/* ---- sending ---- */

int ws_send(ws_conn_t *ws, int opcode, const void *data, size_t len)
{
    metrics_inc(M_FRAMES_OUT);
    if (ws->state != WS_OPEN) return SORI_ECLOSED;
    sbuf_t *b;
    if (ws->deflate_bits && len >= (size_t)sori_config.ws_deflate_min &&
        ws__compress(ws->deflate_bits, data, len) == 0) {
        b = ws__frame(opcode, WS_RSV1, ws__outbuf.data, ws__outbuf.len);
        ws__shrink(&ws__outbuf);
    } else {
        b = ws__frame(opcode, 0, data, len);
    }
    if (!b) return SORI_ENOMEM;
    int rc = ws__queue(ws, b, 0, b->len);
    sbuf_unref(b);
    return rc;
}

struct ws_shared {
    atomic_uint refs;
    uint8_t opcode;
    uint32_t hdr;                /* header length of plain */
    sbuf_t *plain;               /* header + payload */
    _Atomic(sbuf_t *) z[16];     /* compressed frames by window bits, built lazily */
};

ws_shared_t *ws_shared_new(int opcode, const void *data, size_t len)
{
    ws_shared_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->plain = ws__frame(opcode, 0, data, len);
    if (!s->plain) {
        free(s);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->opcode = (uint8_t)opcode;
    s->hdr = (uint32_t)(s->plain->len - len);
    return s;
}

ws_shared_t *ws_shared_ref(ws_shared_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void ws_shared_unref(ws_shared_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    sbuf_unref(s->plain);
    for (int i = 0; i < 16; i++) sbuf_unref(atomic_load(&s->z[i]));
    free(s);
}

/* s's frame compressed for `bits`, built by the first thread that needs it;
 * NULL if compression failed. */
static sbuf_t *ws__shared_z(ws_shared_t *s, int bits)
{
    sbuf_t *z = atomic_load_explicit(&s->z[bits], memory_order_acquire);
    if (z || ws__compress(bits, s->plain->data + s->hdr, s->plain->len - s->hdr) != 0) return z;
    sbuf_t *mine = ws__frame(s->opcode, WS_RSV1, ws__outbuf.data, ws__outbuf.len);
    ws__shrink(&ws__outbuf);
    sbuf_t *expected = NULL;
    if (mine && !atomic_compare_exchange_strong(&s->z[bits], &expected, mine)) {
        sbuf_unref(mine); /* another thread built it first */
        mine = expected;
    }
    return mine;
}

int ws_send_shared(ws_conn_t *ws, ws_shared_t *s)
{
    metrics_inc(M_FRAMES_OUT);
    if (ws->state != WS_OPEN) return SORI_ECLOSED;
    size_t plen = s->plain->len - s->hdr;
    int bits = ws->deflate_bits;
    if (bits && plen >= (size_t)sori_config.ws_deflate_min) {
        sbuf_t *z = ws__shared_z(s, bits);
        if (z) return ws__queue(ws, z, 0, z->len);
    }
    return ws__queue(ws, s->plain, 0, s->plain->len);
}

/* The header length of a frame we built (RFC 6455 §5.2; never masked). */
static uint32_t ws__hdr_len(const sbuf_t *f)
{
    uint8_t l = (uint8_t)f->data[1] & 0x7f;
    return l == 127 ? 10 : l == 126 ? 4 : 2;
}

int ws_send_shared_prefixed(ws_conn_t *ws, const void *prefix, size_t plen, ws_shared_t *s)
{
    metrics_inc(M_FRAMES_OUT);
    if (ws->state != WS_OPEN) return SORI_ECLOSED;
    if (plen > WS_PREFIX_MAX) return SORI_E2BIG;
    uint8_t head[WS_FRAME_HEADER_MAX + 5 + WS_PREFIX_MAX];
    size_t body = s->plain->len - s->hdr, h;
    sbuf_t *src = s->plain;
    uint32_t off = s->hdr;
    int bits = ws->deflate_bits;
    sbuf_t *z = bits && plen + body >= (size_t)sori_config.ws_deflate_min ? ws__shared_z(s, bits) : NULL;
    if (z) {
        /* [stored block: the prefix][the shared compressed body]: one valid
         * deflate stream, since the body refers to nothing before it. */
        src = z;
        off = ws__hdr_len(z);
        body = z->len - off;
        h = ws_frame_header_write(head, s->opcode, 1, WS_RSV1, 5 + plen + body, NULL);
        head[h++] = 0x00; /* BFINAL 0, BTYPE 00 (stored), padding to the byte */
        head[h++] = (uint8_t)plen;
        head[h++] = (uint8_t)(plen >> 8);
        head[h++] = (uint8_t)~plen;
        head[h++] = (uint8_t)(~plen >> 8);
    } else {
        h = ws_frame_header_write(head, s->opcode, 1, 0, plen + body, NULL);
    }
    memcpy(head + h, prefix, plen);
    int rc = conn_write_copy(ws->c, head, h + plen, 0);
    if (rc == 0) return ws__queue(ws, src, off, (uint32_t)body);
    if (rc == SORI_E2BIG) ws__slow_consumer(ws);
    return rc;
}

/* ---- receiving ---- */

static void ws__deliver(ws_conn_t *ws, ws_rd_event_t *ev)
{
    if (ev->deflated) {
        if (!ws__inflater && !(ws__inflater = ws_inflater_new())) {
            ws__fail(ws, 1011, "out of memory");
            return;
        }
        if (ws_reader_inflate(ws__inflater, &ws__inbuf, (uint64_t)sori_config.ws_max_message, ev)) {
            ws__fail(ws, ev->code, ev->reason);
            return;
        }
        metrics_inc(M_FRAMES_IN);
        ws->app->on_message(ws, ev->opcode, (char *)ev->data, ev->len);
        ws__shrink(&ws__inbuf);
        return;
    }
    metrics_inc(M_FRAMES_IN);
    ws->app->on_message(ws, ev->opcode, (char *)ev->data, ev->len);
}

static void ws__control(ws_conn_t *ws, int opcode, const uint8_t *p, size_t n)
{
    switch (opcode) {
    case WS_OP_PING:
        if (ws->state == WS_OPEN) {
            sbuf_t *b = ws__frame(WS_OP_PONG, 0, p, n);
            if (b) {
                ws__queue(ws, b, 0, b->len);
                sbuf_unref(b);
            }
        }
        break;
    case WS_OP_PONG:
        break;
    case WS_OP_CLOSE: {
        unsigned code = 0;
        int bad = ws_close_payload_check(p, n, &code);
        if (bad) {
            ws__fail(ws, (unsigned)bad, bad == 1007 ? "invalid UTF-8 in close reason" : "invalid close frame");
            return;
        }
        if (ws->state == WS_OPEN) {
            /* Echo the code (§5.5.1); an empty close gets an empty one. */
            if (code == 1005)
                ws__send_close(ws, 0, NULL);
            else
                ws__send_close(ws, code, NULL);
        }
        ws->state = WS_CLOSED;
        conn_close(ws->c, CONN_CLOSE_LINGER);
        break;
    }
    }
}

static size_t ws__on_data(conn_t *c, char *data, size_t len)
{
    ws_conn_t *ws = c->hdata;
    /* Liveness counts whole messages and control frames only: a peer
     * trickling one frame a byte at a time is closed by the heartbeat check
     * like a silent one. */
    uint64_t now = net_now_ms(c->w);
    ws_parse_opts_t opts = {.allowed_rsv = ws->deflate_bits ? WS_RSV1 : 0, .require_mask = 1};
    size_t pos = 0;
    while (pos < len) {
        if (ws->state == WS_CLOSED) return len;
        ws_rd_event_t ev;
        int kind = ws_reader_step(&ws->rd, &opts, (uint64_t)sori_config.ws_max_message, ws->state == WS_OPEN,
                                  (uint8_t *)data, len, &pos, &ev);
        if (kind == WS_RD_NEED) break;
        if (kind == WS_RD_FAIL) {
            ws__fail(ws, ev.code, ev.reason);
            return len;
        }
        ws->last_seen = now;
        if (kind == WS_RD_CONTROL)
            ws__control(ws, ev.opcode, ev.data, ev.len);
        else
            ws__deliver(ws, &ev);
        ws_reader_release(&ws->rd);
    }
    return pos;
}

static void ws__on_timeout(conn_t *c)
{
    ws_conn_t *ws = c->hdata;
    if (ws->state != WS_OPEN) {
        conn_close(c, CONN_CLOSE_NOW); /* the peer never answered our close */
        return;
    }
    /* Two whole intervals of silence, measured in ms: the sweep runs once a
     * second, so the close comes between two and three intervals. */
    uint32_t hb = ws__hb_secs();
    if (net_now_ms(c->w) - ws->last_seen >= 2 * (uint64_t)sori_config.heartbeat_ms) {
        ws__send_close(ws, 1001, "no heartbeat");
        ws->state = WS_CLOSED;
        conn_close(c, CONN_CLOSE_AFTER_FLUSH);
        return;
    }
    if (!ws__ping) ws__ping = ws__frame(WS_OP_PING, 0, NULL, 0);
    if (ws__ping) ws__queue(ws, ws__ping, 0, ws__ping->len);
    if (ws->state == WS_OPEN) conn_set_deadline(c, hb);
}

static void ws__on_shutdown(conn_t *c)
{
    ws_conn_t *ws = c->hdata;
    if (ws->app->on_shutdown)
        ws->app->on_shutdown(ws);
    else
        ws_close(ws, WS_CLOSE_RESTART, WS_RESTART_REASON);
}

static void ws__on_eof(conn_t *c) { conn_close(c, CONN_CLOSE_NOW); }

static void ws__on_drain(conn_t *c)
{
    ws_conn_t *ws = c->hdata;
    if (ws->state == WS_OPEN && ws->app->on_drain) ws->app->on_drain(ws);
}

uint64_t ws_unsent(const ws_conn_t *ws) { return ws->c->out_bytes; }
void ws_notify_drain(ws_conn_t *ws) { conn_notify_drain(ws->c); }

static void ws__on_free(conn_t *c)
{
    ws_conn_t *ws = c->hdata;
    if (ws->app->on_close) ws->app->on_close(ws);
    ws_reader_free(&ws->rd);
    free(ws);
    c->hdata = NULL;
}

static const conn_handler_t ws__handler = {
    .on_data = ws__on_data,
    .on_timeout = ws__on_timeout,
    .on_shutdown = ws__on_shutdown,
    .on_eof = ws__on_eof,
    .on_free = ws__on_free,
    .on_drain = ws__on_drain,
};

ws_conn_t *ws_accept(http_req_t *r, const ws_handshake_t *hs, const ws_app_t *app, void *app_data)
{
    ws_conn_t *ws = calloc(1, sizeof *ws);
    if (!ws) {
        http_respond_error(r, 500, "internal", "Out of memory.");
        return NULL;
    }
    metrics_inc(M_WS_OPENED);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n%s%s%s%s%s%s\r\n",
                     hs->accept, hs->subprotocol ? "Sec-WebSocket-Protocol: " : "",
                     hs->subprotocol ? hs->subprotocol : "", hs->subprotocol ? "\r\n" : "",
                     hs->deflate.enabled ? "Sec-WebSocket-Extensions: " : "",
                     hs->deflate.enabled ? hs->extensions : "", hs->deflate.enabled ? "\r\n" : "");
    conn_write_copy(r->c, head, (size_t)n, 1);
    r->answered = 1;
    ws->c = r->c;
    ws->app = app;
    ws->app_data = app_data;
    ws->deflate_bits = hs->deflate.enabled ? (uint8_t)hs->deflate.server_window_bits : 0;
    ws->last_seen = net_now_ms(r->c->w);
    r->c->h = &ws__handler;
    r->c->hdata = ws;
    conn_set_deadline(r->c, ws__hb_secs());
    return ws;
}

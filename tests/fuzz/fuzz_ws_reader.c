/*
 * fuzz_ws_reader.c: libFuzzer target for WebSocket message assembly,
 * src/ws/ws_reader.c: the state machine ws_conn.c feeds with every read
 * (fragmented messages, control frames between fragments, permessage-deflate
 * messages compressed across fragments, UTF-8 checked across fragment
 * boundaries, the ws-max-message bound). Input: byte 0 seeds the read sizes,
 * byte 1 holds flags (bit 0: deflate negotiated, so RSV1 allowed; bit 1: the
 * close handshake began, so messages are dropped; bit 2: a 1 KiB message
 * limit instead of 64 KiB), the rest is the client's byte stream.
 *
 * The stream is read twice, as one read and as reads of 1..64 bytes that
 * keep the unconsumed tail the way net/ does, each in an exactly sized heap
 * buffer. Every event is checked against the contract in ws_reader.h
 * (compressed ones inflated by ws_reader_inflate, as ws_conn.c does), and
 * the two runs must produce the same events with the same payloads: the
 * fast path that hands a message out of the read buffer and the
 * reassembly path must agree. A run stops at a failure or a close frame,
 * as the connection does.
 */
#include "util/buf.h"
#include "util/err.h"
#include "ws/ws_reader.h"

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

typedef struct {
    size_t events;
    uint64_t hash;
} trace_t;

static ws_inflater_t *inflater;
static buf_t inflated;

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ULL; }

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = mix(h, p[i]);
    return h;
}

/* Checks and records one event; 1 when the connection would stop. */
static int record(trace_t *t, ws_rd_event_t *ev, int deflate, int open, uint64_t max)
{
    if (ev->kind == WS_RD_MESSAGE) {
        CHECK(open);
        CHECK(ev->opcode == WS_OP_TEXT || ev->opcode == WS_OP_BINARY);
        CHECK(ev->len <= max);
        CHECK(ev->data != NULL || ev->len == 0);
        if (ev->deflated) {
            CHECK(deflate);
            int k = ws_reader_inflate(inflater, &inflated, max, ev);
            CHECK(k == 0 || (k == WS_RD_FAIL && ev->kind == WS_RD_FAIL));
            if (k == 0) {
                CHECK(!ev->deflated && ev->len <= max);
                CHECK(ev->len == 0 || ev->data == (uint8_t *)inflated.data);
            }
        }
        if (ev->kind == WS_RD_MESSAGE && ev->opcode == WS_OP_TEXT) CHECK(ws_utf8_valid(ev->data, ev->len));
    }
    if (ev->kind == WS_RD_CONTROL) {
        CHECK(ev->opcode == WS_OP_CLOSE || ev->opcode == WS_OP_PING || ev->opcode == WS_OP_PONG);
        CHECK(ev->len <= 125 && ev->data != NULL);
    }
    if (ev->kind == WS_RD_FAIL) CHECK(ev->code == 1002 || ev->code == 1007 || ev->code == 1009);
    t->events++;
    t->hash = mix(t->hash, (uint64_t)ev->kind);
    t->hash = mix(t->hash, (uint64_t)ev->opcode);
    t->hash = mix(t->hash, ev->code);
    if (ev->kind != WS_RD_FAIL) {
        t->hash = mix(t->hash, ev->len);
        t->hash = mix(t->hash, hash_bytes(ev->data, ev->len));
    }
    return ev->kind == WS_RD_FAIL || (ev->kind == WS_RD_CONTROL && ev->opcode == WS_OP_CLOSE);
}

static void run(const uint8_t *s, size_t n, uint32_t seed, int deflate, int open, uint64_t max, trace_t *t)
{
    const ws_parse_opts_t opts = {.allowed_rsv = deflate ? WS_RSV1 : 0, .require_mask = 1};
    ws_reader_t r = {0};
    uint8_t *tail = NULL;
    size_t tail_len = 0, off = 0;
    int stop = 0;
    memset(t, 0, sizeof *t);
    while (!stop && off < n) {
        size_t c = n - off;
        if (seed) {
            seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
            size_t want = 1 + seed % 64;
            if (want < c) c = want;
        }
        size_t len = tail_len + c;
        uint8_t *b = malloc(len);
        CHECK(b != NULL);
        if (tail_len) memcpy(b, tail, tail_len);
        memcpy(b + tail_len, s + off, c);
        off += c;
        size_t pos = 0;
        while (pos < len) {
            ws_rd_event_t ev;
            size_t before = pos;
            int kind = ws_reader_step(&r, &opts, max, open, b, len, &pos, &ev);
            CHECK(kind == ev.kind || (kind == WS_RD_NEED && ev.kind == 0));
            if (kind == WS_RD_FAIL) {
                record(t, &ev, deflate, open, max);
                stop = 1;
                break;
            }
            CHECK(pos >= before && pos <= len);
            if (kind == WS_RD_NEED) {
                /* All consumed, or the rest is a header still incomplete. */
                CHECK(pos == len || (!r.in_frame && len - pos < WS_FRAME_HEADER_MAX));
                break;
            }
            stop = record(t, &ev, deflate, open, max);
            ws_reader_release(&r);
            if (stop) break;
        }
        free(tail);
        tail_len = stop ? 0 : len - pos;
        tail = malloc(tail_len ? tail_len : 1);
        CHECK(tail != NULL);
        if (tail_len) memcpy(tail, b + pos, tail_len);
        free(b);
    }
    free(tail);
    ws_reader_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    if (!inflater) {
        inflater = ws_inflater_new();
        CHECK(inflater != NULL);
    }
    int deflate = data[1] & 1, open = !(data[1] & 2);
    uint64_t max = data[1] & 4 ? 1024 : 65536;
    trace_t whole, pieces;
    run(data + 2, size - 2, 0, deflate, open, max, &whole);
    run(data + 2, size - 2, 0x9e3779b9u ^ data[0] ^ ((uint32_t)data[0] << 16), deflate, open, max, &pieces);
    CHECK(whole.events == pieces.events);
    CHECK(whole.hash == pieces.hash);
    if (inflated.cap > (1u << 20)) buf_free(&inflated);
    return 0;
}

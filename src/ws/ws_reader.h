/*
 * ws_reader.h: the receive side of a WebSocket connection as a pure state
 * machine: frames in, whole messages and control frames out (RFC 6455 §5.4
 * fragmentation, §5.5 control frames between fragments, §8.1 UTF-8, RFC 7692
 * §6.1 RSV1 on the first frame only). No loop, no connection, no sending:
 * ws_conn.c feeds it the bytes a read brought and acts on the events, and
 * tests/fuzz/fuzz_ws_reader.c drives the same code with any bytes.
 */
#ifndef SORI_WS_READER_H
#define SORI_WS_READER_H

#include "util/buf.h"
#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"
#include "ws/ws_utf8.h"

#include <stddef.h>
#include <stdint.h>

/* Zero-initialise; free with ws_reader_free. */
typedef struct {
    ws_frame_t f;         /* the frame being read */
    uint64_t f_got;       /* payload bytes of f read so far */
    buf_t msg;            /* message being reassembled */
    ws_utf8_t utf8;       /* incremental check of an uncompressed text message */
    uint8_t in_frame;     /* 1 while reading f's payload */
    uint8_t msg_op;       /* opcode of the message in progress, 0 if none */
    uint8_t msg_deflated; /* RSV1 on its first frame */
    uint8_t ctrl_len;
    uint8_t *ctrl;        /* control frame payload (≤ 125 bytes), only while one is read */
} ws_reader_t;

enum { WS_RD_NEED = 0, WS_RD_MESSAGE = 1, WS_RD_CONTROL = 2, WS_RD_FAIL = 3 };

typedef struct {
    int kind;           /* WS_RD_* */
    int opcode;         /* message: WS_OP_TEXT/BINARY; control: WS_OP_CLOSE/PING/PONG */
    uint8_t *data;      /* payload, unmasked (see ws_reader_step for how long it lives) */
    size_t len;
    int deflated;       /* message: RSV1, still compressed (ws_reader_inflate) */
    unsigned code;      /* fail: the close code, 1002, 1007 or 1009 */
    const char *reason; /* fail: a static string for the close frame */
} ws_rd_event_t;

/*
 * Reads from data[*pos..len) (the caller's bytes, unmasked in place) until
 * one event, advancing *pos past what it consumed; bytes not consumed must be
 * presented again, with more after them, on the next call. open = 0 (the
 * close handshake began) reads data frames but drops their messages.
 * Returns the event's kind:
 * - WS_RD_NEED: all bytes consumed or the rest is an incomplete header.
 * - WS_RD_MESSAGE: a whole data message (max_message bytes at most before
 *   inflating), uncompressed text already valid UTF-8. data points into the
 *   caller's buffer (a message whole in one read, uncompressed) or into the
 *   reader; either way valid until ws_reader_release.
 * - WS_RD_CONTROL: a close, ping or pong; data valid until ws_reader_release.
 * - WS_RD_FAIL: a protocol error; the reader must not be used again (only
 *   freed). 1002 frame order or header, 1007 bad UTF-8, 1009 too big.
 * Call ws_reader_release after acting on a MESSAGE or CONTROL event.
 */
int ws_reader_step(ws_reader_t *r, const ws_parse_opts_t *opts, uint64_t max_message, int open,
                   uint8_t *data, size_t len, size_t *pos, ws_rd_event_t *ev);

/* After a MESSAGE or CONTROL event: drops its payload (the message buffer is
 * kept for the next message when at most 64 KiB, else freed). */
void ws_reader_release(ws_reader_t *r);

/*
 * For a MESSAGE event with deflated set: inflates it into out (cleared first;
 * at most max_message bytes) with z, and checks a text message's UTF-8.
 * Returns 0 with ev->data/len pointing into out and deflated cleared, or
 * turns ev into WS_RD_FAIL (1009 too big, 1007 bad data or UTF-8) and
 * returns its kind.
 */
int ws_reader_inflate(ws_inflater_t *z, buf_t *out, uint64_t max_message, ws_rd_event_t *ev);

void ws_reader_free(ws_reader_t *r);

#endif

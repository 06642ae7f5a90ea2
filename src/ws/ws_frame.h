/*
 * ws_frame.h: the RFC 6455 frame codec (§5.2) and close-frame rules (§5.5.1,
 * §7.4). Pure functions over caller buffers: no allocation, no I/O.
 */
#ifndef SORI_WS_FRAME_H
#define SORI_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* RSV bits as a 3-bit mask, RSV1 = 4 (permessage-deflate's "compressed"). */
#define WS_RSV1 4
#define WS_RSV2 2
#define WS_RSV3 1

/* Largest header: 2 + 8 (64-bit length) + 4 (mask). */
#define WS_FRAME_HEADER_MAX 14

typedef struct {
    uint8_t fin;
    uint8_t rsv;    /* RSV1<<2 | RSV2<<1 | RSV3 */
    uint8_t opcode;
    uint8_t masked;
    uint8_t mask[4];
    uint64_t payload_len;
    size_t header_len; /* 2..14 */
} ws_frame_t;

/* Parse options. */
typedef struct {
    uint8_t allowed_rsv;  /* RSV bits the negotiated extensions allow (WS_RSV1 with deflate) */
    uint8_t require_mask; /* 1 on a server: client frames must be masked (§5.1) */
    uint8_t forbid_mask;  /* 1 on a client: server frames must not be masked */
} ws_parse_opts_t;

/*
 * Parses one frame header from buf[0..len).
 * Returns header_len (> 0) with *f filled when the header is complete;
 * SORI_EAGAIN when more bytes are needed; SORI_EINVAL on a protocol error, with
 * *close_code = 1002: unknown opcode (§5.2: 3-7, 0xB-0xF), RSV bits not in
 * allowed_rsv, RSV bits on a control frame, a control frame with FIN clear or
 * a payload over 125 bytes (§5.5), a 64-bit length with the top bit set, a
 * mask missing (require_mask) or present (forbid_mask). Continuation-order
 * rules are the caller's (it knows the message state).
 */
int ws_frame_parse(const uint8_t *buf, size_t len, const ws_parse_opts_t *opts, ws_frame_t *f,
                   int *close_code);

/* XORs p[0..n) with the mask, starting at byte `offset` of the payload
 * (so a payload may be unmasked in pieces). Works 8 bytes at a time. */
void ws_mask_apply(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

/* Writes a frame header for a payload of `len` bytes into out (at least
 * WS_FRAME_HEADER_MAX bytes); masked when mask != NULL (client side).
 * Uses the shortest length encoding. Returns the header length. */
size_t ws_frame_header_write(uint8_t *out, int opcode, int fin, int rsv, uint64_t len,
                             const uint8_t *mask);

/* 1 if `code` may appear in a close frame sent by a peer (§7.4.1, IANA
 * registry): 1000-1003, 1007-1014, 3000-4999. 1004-1006, 1015, others: 0. */
int ws_close_code_valid(unsigned code);

/*
 * Checks a received close payload (already unmasked). Returns 0 with *code set
 * to the peer's code (1005 when the payload is empty) when it is valid;
 * otherwise the close code to answer with: 1002 for a 1-byte payload or an
 * invalid code, 1007 when the reason is not valid UTF-8.
 */
int ws_close_payload_check(const uint8_t *p, size_t len, unsigned *code);

#endif

/*
 * ws_frame.c: the RFC 6455 frame header codec (§5.2), payload masking (§5.3)
 * and close-frame checks (§5.5.1, §7.4). Pure functions over caller buffers:
 * nothing here allocates, keeps state or reads past the `len` it is given.
 * A header is 2..14 bytes: 2 fixed, then 0, 2 or 8 bytes of extended length
 * (7-bit values 0..125 inline, 126 = 16-bit, 127 = 64-bit with the top bit
 * clear), then 4 mask bytes when the MASK bit is set. The parser checks
 * everything the first two bytes can tell (opcode, RSV, control-frame FIN,
 * mask) before asking for more input, so a bad frame fails early. It does not
 * insist on the shortest length encoding (§5.2 asks senders for it; the
 * writer here always uses it). Masking runs 8 bytes per step with the mask
 * rotated to the payload offset, so a payload may be unmasked in pieces.
 */
#include "ws/ws_frame.h"
#include "ws/ws_utf8.h"
#include "util/err.h"

#include <string.h>

static int ws__fail(int *close_code)
{
    if (close_code) *close_code = 1002;
    return SORI_EINVAL;
}

int ws_frame_parse(const uint8_t *buf, size_t len, const ws_parse_opts_t *opts, ws_frame_t *f,
                   int *close_code)
{
    if (len < 2) return SORI_EAGAIN;

    uint8_t fin = buf[0] >> 7;
    uint8_t rsv = (buf[0] >> 4) & 7;
    uint8_t opcode = buf[0] & 0x0F;
    uint8_t masked = buf[1] >> 7;
    uint8_t len7 = buf[1] & 0x7F;
    int control = opcode >= 0x8;

    /* §5.2: opcodes 3-7 and 0xB-0xF are reserved. */
    if ((opcode >= 0x3 && opcode <= 0x7) || opcode >= 0xB) return ws__fail(close_code);
    /* §5.2: RSV bits need a negotiated extension; none of ours covers control
     * frames (RFC 7692 §6.1: RSV1 is for data frames only). */
    if (rsv & ~(opts ? opts->allowed_rsv : 0)) return ws__fail(close_code);
    if (control && rsv) return ws__fail(close_code);
    /* §5.5: control frames are never fragmented. */
    if (control && !fin) return ws__fail(close_code);
    /* §5.1: client frames are masked, server frames are not. */
    if (opts && opts->require_mask && !masked) return ws__fail(close_code);
    if (opts && opts->forbid_mask && masked) return ws__fail(close_code);

    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t hlen = 2 + ext + (masked ? 4 : 0);
    if (len < hlen) return SORI_EAGAIN;

    uint64_t plen = len7;
    if (len7 == 126) {
        plen = (uint64_t)buf[2] << 8 | buf[3];
    } else if (len7 == 127) {
        plen = 0;
        for (int i = 0; i < 8; i++) plen = plen << 8 | buf[2 + i];
        /* §5.2: the most significant bit of a 64-bit length MUST be 0. */
        if (plen >> 63) return ws__fail(close_code);
    }
    /* §5.5: control frame payloads are at most 125 bytes. */
    if (control && plen > 125) return ws__fail(close_code);

    f->fin = fin;
    f->rsv = rsv;
    f->opcode = opcode;
    f->masked = masked;
    if (masked)
        memcpy(f->mask, buf + 2 + ext, 4);
    else
        memset(f->mask, 0, 4);
    f->payload_len = plen;
    f->header_len = hlen;
    return (int)hlen;
}

void ws_mask_apply(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    /* The mask rotated so that m[i] applies to payload byte offset + i; eight
     * bytes long, so every 8-byte step starts on the same phase. */
    uint8_t m[8];
    for (int i = 0; i < 8; i++) m[i] = mask[(offset + (uint64_t)i) & 3];
    uint64_t m64;
    memcpy(&m64, m, 8);

    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w ^= m64;
        memcpy(p + i, &w, 8);
    }
    for (size_t k = 0; i < n; i++, k++) p[i] ^= m[k];
}

size_t ws_frame_header_write(uint8_t *out, int opcode, int fin, int rsv, uint64_t len,
                             const uint8_t *mask)
{
    size_t h = 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 7) << 4 | (opcode & 0x0F));
    uint8_t mbit = mask ? 0x80 : 0;
    if (len <= 125) {
        out[h++] = (uint8_t)(mbit | len);
    } else if (len <= 0xFFFF) {
        out[h++] = mbit | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = mbit | 127;
        for (int s = 56; s >= 0; s -= 8) out[h++] = (uint8_t)(len >> s);
    }
    if (mask) {
        memcpy(out + h, mask, 4);
        h += 4;
    }
    return h;
}

int ws_close_code_valid(unsigned code)
{
    if (code >= 1000 && code <= 1003) return 1;
    if (code >= 1007 && code <= 1014) return 1;
    if (code >= 3000 && code <= 4999) return 1;
    return 0;
}

int ws_close_payload_check(const uint8_t *p, size_t len, unsigned *code)
{
    if (len == 0) {
        /* §7.1.5: no status code in the frame reads as 1005. */
        if (code) *code = 1005;
        return 0;
    }
    /* §5.5.1: a body starts with a 2-byte code; one byte alone is malformed. */
    if (len == 1) return 1002;
    unsigned c = (unsigned)p[0] << 8 | p[1];
    if (!ws_close_code_valid(c)) return 1002;
    /* §5.5.1: the reason is UTF-8; §8.1: invalid text fails with 1007. */
    if (!ws_utf8_valid(p + 2, len - 2)) return 1007;
    if (code) *code = c;
    return 0;
}

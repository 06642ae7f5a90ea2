/*
 * ws_utf8.c: incremental UTF-8 validation written from RFC 3629 §4 (the
 * well-formed byte sequences, also Unicode Table 3-7). The state is one
 * uint32_t: 0 between code points, else the number of continuation bytes
 * still due (bits 16..17) and the inclusive range the next byte must fall in
 * (low bound in bits 8..15, high bound in bits 0..7). Lead bytes narrow the
 * first continuation range where the table does: E0 -> A0..BF (no overlongs),
 * ED -> 80..9F (no surrogates), F0 -> 90..BF (no overlongs), F4 -> 80..8F
 * (nothing above U+10FFFF); every other continuation is 80..BF. C0, C1, F5..FF
 * and a continuation byte with nothing to continue are never valid. So the
 * first byte that cannot extend a valid prefix fails, whichever fragment it
 * arrives in (RFC 6455 §8.1). A failure is sticky (WS__UTF8_REJECT). While
 * between code points the scanner skips ASCII 8 bytes per step.
 */
#include "ws/ws_utf8.h"
#include "util/err.h"

#include <string.h>

#define WS__UTF8_REJECT UINT32_MAX
#define WS__UTF8_STATE(need, lo, hi) ((uint32_t)(need) << 16 | (uint32_t)(lo) << 8 | (uint32_t)(hi))
#define WS__UTF8_ASCII_MASK UINT64_C(0x8080808080808080)

/* The state after a non-ASCII lead byte, or WS__UTF8_REJECT. */
static uint32_t ws__utf8_lead(uint8_t b)
{
    if (b < 0xC2) return WS__UTF8_REJECT; /* 80..BF lone continuation, C0/C1 overlong */
    if (b <= 0xDF) return WS__UTF8_STATE(1, 0x80, 0xBF);
    if (b == 0xE0) return WS__UTF8_STATE(2, 0xA0, 0xBF);
    if (b == 0xED) return WS__UTF8_STATE(2, 0x80, 0x9F);
    if (b <= 0xEF) return WS__UTF8_STATE(2, 0x80, 0xBF);
    if (b == 0xF0) return WS__UTF8_STATE(3, 0x90, 0xBF);
    if (b <= 0xF3) return WS__UTF8_STATE(3, 0x80, 0xBF);
    if (b == 0xF4) return WS__UTF8_STATE(3, 0x80, 0x8F);
    return WS__UTF8_REJECT; /* F5..FF */
}

/*
 * Runs p[0..n) through *state. Returns n when every byte was acceptable,
 * otherwise the index of the first byte that was not (and *state is then
 * WS__UTF8_REJECT). Feeding a rejected state returns 0.
 */
static size_t ws__utf8_run(uint32_t *state, const uint8_t *p, size_t n)
{
    uint32_t s = *state;
    if (s == WS__UTF8_REJECT) return 0;
    size_t i = 0;
    while (i < n) {
        uint8_t b;
        if (s == 0) {
            while (n - i >= 8) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & WS__UTF8_ASCII_MASK) break;
                i += 8;
            }
            if (i == n) break;
            b = p[i];
            if (b < 0x80) {
                i++;
                continue;
            }
            s = ws__utf8_lead(b);
            if (s == WS__UTF8_REJECT) {
                *state = s;
                return i;
            }
            i++;
            continue;
        }
        b = p[i];
        if (b < ((s >> 8) & 0xFF) || b > (s & 0xFF)) {
            *state = WS__UTF8_REJECT;
            return i;
        }
        uint32_t need = (s >> 16) - 1;
        s = need ? WS__UTF8_STATE(need, 0x80, 0xBF) : 0;
        i++;
    }
    *state = s;
    return n;
}

void ws_utf8_init(ws_utf8_t *u)
{
    u->state = 0;
}

int ws_utf8_feed(ws_utf8_t *u, const uint8_t *p, size_t n)
{
    ws__utf8_run(&u->state, p, n);
    return u->state == WS__UTF8_REJECT ? SORI_EUTF8 : 0;
}

int ws_utf8_finish(const ws_utf8_t *u)
{
    return u->state == 0 ? 0 : SORI_EUTF8;
}

int ws_utf8_valid(const uint8_t *p, size_t n)
{
    uint32_t s = 0;
    ws__utf8_run(&s, p, n);
    return s == 0;
}

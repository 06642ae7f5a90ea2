/*
 * ws_utf8.h: incremental UTF-8 validation (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), for text messages that arrive in
 * fragments (RFC 6455 §8.1: fail as soon as the bytes cannot be valid).
 */
#ifndef SORI_WS_UTF8_H
#define SORI_WS_UTF8_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state; /* 0 = between code points; otherwise mid-sequence */
} ws_utf8_t;

void ws_utf8_init(ws_utf8_t *u);
/* Feeds the next bytes. 0 if they are valid so far, SORI_EUTF8 at the first
 * byte that cannot be part of valid UTF-8 (the state is then undefined). */
int ws_utf8_feed(ws_utf8_t *u, const uint8_t *p, size_t n);
/* 0 if the input ended on a code point boundary, SORI_EUTF8 if mid-sequence. */
int ws_utf8_finish(const ws_utf8_t *u);
/* Whole-buffer check: 1 if valid, 0 if not. */
int ws_utf8_valid(const uint8_t *p, size_t n);

#endif

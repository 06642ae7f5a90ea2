/*
 * ws_deflate.c: permessage-deflate (RFC 7692): the Sec-WebSocket-Extensions
 * negotiation (§5, §7.1) and whole-message compression with zlib (§7.2).
 *
 * Negotiation is a pure parser over the header value (RFC 6455 §9.1 grammar:
 * comma-separated extensions, ';' parameters, token or quoted-string values,
 * optional whitespace between items); names compare by length, then without
 * case. A syntax error anywhere in the value makes the whole value
 * unparseable (SORI_EINVAL), even after an acceptable offer.
 *
 * Compression owns one zlib stream per object, reset per message, so no
 * context survives between messages (we always negotiate both
 * no_context_takeover parameters). Memory, per worker thread rather than per
 * connection: the deflater takes (1 << (windowBits + 2)) + (1 << (memLevel +
 * 9)) bytes, memLevel 8: 256 KiB at window 15, 132 KiB at window 10; the
 * inflater takes its 32 KiB window (1 << 15) plus about 7 KiB of state.
 * Invariants: output is only ever appended to the caller's buf_t, and on any
 * error the buf_t is cut back to its length on entry; inflation never writes
 * more than max_out + 1 bytes of a message (the extra byte proves the limit
 * was crossed), so a decompression bomb costs at most max_out of memory.
 */
#define ZLIB_CONST
#include "ws/ws_deflate.h"
#include "util/err.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#define WS__MEM_LEVEL 8
#define WS__INFLATE_CHUNK (16 * 1024)
#define WS__DEFLATE_CHUNK (64 * 1024)
#define WS__DEFLATE_FIRST_MAX (256 * 1024)

/* ---- negotiation ---- */

typedef struct {
    const char *p;
    size_t len;
    size_t pos;
} ws__cur_t;

enum {
    WS__P_SNCT = 1, /* server_no_context_takeover */
    WS__P_CNCT = 2, /* client_no_context_takeover */
    WS__P_SMWB = 4, /* server_max_window_bits */
    WS__P_CMWB = 8, /* client_max_window_bits */
};

typedef struct {
    unsigned seen;   /* WS__P_* bits already present */
    int declined;    /* 1 when any parameter makes the offer unacceptable */
    int server_bits; /* server_max_window_bits value, 0 when absent */
} ws__offer_t;

/* RFC 7230 §3.2.6 tchar. */
static int ws__tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void ws__ows(ws__cur_t *c)
{
    while (c->pos < c->len && (c->p[c->pos] == ' ' || c->p[c->pos] == '\t')) c->pos++;
}

static int ws__peek(const ws__cur_t *c)
{
    return c->pos < c->len ? (unsigned char)c->p[c->pos] : -1;
}

/* A token at the cursor; returns its length (0 when there is none). */
static size_t ws__token(ws__cur_t *c, const char **start)
{
    *start = c->p + c->pos;
    size_t n = 0;
    while (c->pos < c->len && ws__tchar((unsigned char)c->p[c->pos])) {
        c->pos++;
        n++;
    }
    return n;
}

/* Length first, then case-insensitively (STYLE.md practice 3). */
static int ws__ieq(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

/*
 * A parameter value: a token, or a quoted-string whose unescaped content is
 * a token (RFC 6455 §9.1). Copies up to cap bytes into v and returns the full
 * unescaped length, or SORI_EINVAL on a syntax error.
 */
static int ws__value(ws__cur_t *c, char *v, size_t cap, size_t *vlen)
{
    size_t n = 0;
    if (ws__peek(c) != '"') {
        const char *t;
        n = ws__token(c, &t);
        if (n == 0) return SORI_EINVAL;
        memcpy(v, t, n < cap ? n : cap);
        *vlen = n;
        return 0;
    }
    c->pos++;
    for (;;) {
        if (c->pos >= c->len) return SORI_EINVAL; /* unterminated */
        unsigned char ch = (unsigned char)c->p[c->pos++];
        if (ch == '"') break;
        if (ch == '\\') {
            if (c->pos >= c->len) return SORI_EINVAL;
            ch = (unsigned char)c->p[c->pos++];
        }
        if (!ws__tchar(ch)) return SORI_EINVAL;
        if (n < cap) v[n] = (char)ch;
        n++;
    }
    if (n == 0) return SORI_EINVAL;
    *vlen = n;
    return 0;
}

/* RFC 7692 §7.1.2: a decimal 8..15 without leading zeroes; else -1. */
static int ws__window_bits(const char *v, size_t n)
{
    if (n == 1 && v[0] >= '8' && v[0] <= '9') return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + v[1] - '0';
    return -1;
}

/* Applies one permessage-deflate parameter to an offer (§7.1). */
static void ws__offer_param(ws__offer_t *o, const char *name, size_t nlen, int has_value,
                            const char *v, size_t vlen)
{
    unsigned bit;
    if (ws__ieq(name, nlen, "server_no_context_takeover"))
        bit = WS__P_SNCT;
    else if (ws__ieq(name, nlen, "client_no_context_takeover"))
        bit = WS__P_CNCT;
    else if (ws__ieq(name, nlen, "server_max_window_bits"))
        bit = WS__P_SMWB;
    else if (ws__ieq(name, nlen, "client_max_window_bits"))
        bit = WS__P_CMWB;
    else {
        o->declined = 1; /* §7.1: unknown parameter */
        return;
    }
    if (o->seen & bit) {
        o->declined = 1; /* §7.1: a parameter appears at most once */
        return;
    }
    o->seen |= bit;

    int bits;
    switch (bit) {
    case WS__P_SNCT:
    case WS__P_CNCT:
        if (has_value) o->declined = 1; /* §7.1.1.1, §7.1.1.2: no value */
        break;
    case WS__P_SMWB:
        /* §7.1.2.1: a value is required. 8 is legal but zlib's raw deflate
         * silently widens an 8-bit window to 9, so we cannot honour it. */
        bits = has_value ? ws__window_bits(v, vlen) : -1;
        if (bits < 9)
            o->declined = 1;
        else
            o->server_bits = bits;
        break;
    case WS__P_CMWB:
        /* §7.1.2.2: the value is optional; we inflate any window up to 15
         * and never answer with this parameter, so only its syntax matters. */
        if (has_value && ws__window_bits(v, vlen) < 0) o->declined = 1;
        break;
    }
}

int ws_deflate_negotiate(slice_t header_value, ws_deflate_params_t *out, char *resp,
                         size_t resp_cap)
{
    ws__cur_t c = {header_value.p, header_value.p ? header_value.len : 0, 0};
    int accepted = 0;
    int accepted_bits = 0;

    if (!resp) resp_cap = 0;
    out->enabled = 0;
    out->server_window_bits = 15;
    if (resp_cap) resp[0] = '\0';

    for (;;) {
        ws__ows(&c);
        int ch = ws__peek(&c);
        if (ch < 0) break;
        if (ch == ',') { /* RFC 7230 §7: empty list elements are ignored */
            c.pos++;
            continue;
        }
        const char *ext;
        size_t extlen = ws__token(&c, &ext);
        if (extlen == 0) return SORI_EINVAL;
        int pmd = ws__ieq(ext, extlen, "permessage-deflate");
        ws__offer_t offer = {0, 0, 0};

        ws__ows(&c);
        while (ws__peek(&c) == ';') {
            c.pos++;
            ws__ows(&c);
            const char *name;
            size_t nlen = ws__token(&c, &name);
            if (nlen == 0) return SORI_EINVAL;
            ws__ows(&c);
            int has_value = 0;
            char v[8];
            size_t vlen = 0;
            if (ws__peek(&c) == '=') {
                c.pos++;
                ws__ows(&c);
                if (ws__value(&c, v, sizeof v, &vlen) < 0) return SORI_EINVAL;
                has_value = 1;
                ws__ows(&c);
            }
            if (pmd) ws__offer_param(&offer, name, nlen, has_value, v, vlen);
        }
        ch = ws__peek(&c);
        if (ch >= 0 && ch != ',') return SORI_EINVAL;
        if (ch == ',') c.pos++;
        if (pmd && !offer.declined && !accepted) {
            accepted = 1;
            accepted_bits = offer.server_bits;
        }
    }
    if (!accepted) return 0;

    int n;
    if (accepted_bits)
        n = snprintf(resp, resp_cap,
                     "permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover; server_max_window_bits=%d",
                     accepted_bits);
    else
        n = snprintf(resp, resp_cap,
                     "permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover");
    if (n < 0 || (size_t)n >= resp_cap) {
        if (resp_cap) resp[0] = '\0';
        return SORI_E2BIG;
    }
    out->enabled = 1;
    out->server_window_bits = accepted_bits ? accepted_bits : 15;
    return 1;
}

/* ---- compression ---- */

struct ws_deflater {
    z_stream zs;
};

struct ws_inflater {
    z_stream zs;
};

ws_deflater_t *ws_deflater_new(int level, int window_bits)
{
    if (level < 1 || level > 9 || window_bits < 9 || window_bits > 15) return NULL;
    ws_deflater_t *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    /* Negative windowBits: raw deflate, no zlib header or checksum (§7.2.1). */
    if (deflateInit2(&d->zs, level, Z_DEFLATED, -window_bits, WS__MEM_LEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        free(d);
        return NULL;
    }
    return d;
}

void ws_deflater_free(ws_deflater_t *d)
{
    if (!d) return;
    deflateEnd(&d->zs);
    free(d);
}

static uInt ws__uint(size_t n)
{
    return n > UINT_MAX ? UINT_MAX : (uInt)n;
}

int ws_deflate_message(ws_deflater_t *d, const uint8_t *in, size_t n, buf_t *out)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xFF, 0xFF};
    size_t start = out->len;
    int rc;

    /* §7.2.3.6: an empty message is one empty stored block minus its
     * 00 00 FF FF: the single byte 0x00. */
    if (n == 0) return buf_append(out, tail, 1);

    z_stream *zs = &d->zs;
    if (deflateReset(zs) != Z_OK) return SORI_EIO;
    const uint8_t *next = in;
    size_t left = n;
    size_t room = n / 2 + 64;
    if (room > WS__DEFLATE_FIRST_MAX) room = WS__DEFLATE_FIRST_MAX;
    zs->avail_in = 0;
    for (;;) {
        if (zs->avail_in == 0 && left) {
            uInt take = ws__uint(left);
            zs->next_in = next;
            zs->avail_in = take;
            next += take;
            left -= take;
        }
        int flush = left ? Z_NO_FLUSH : Z_SYNC_FLUSH;
        rc = buf_reserve(out, room);
        if (rc) goto fail;
        uInt space = ws__uint(out->cap - out->len);
        zs->next_out = (Bytef *)out->data + out->len;
        zs->avail_out = space;
        int zr = deflate(zs, flush);
        out->len += space - zs->avail_out;
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = SORI_EIO;
            goto fail;
        }
        /* Z_SYNC_FLUSH is complete once it returns with output space left. */
        if (flush == Z_SYNC_FLUSH && zs->avail_in == 0 && zs->avail_out != 0) break;
        room = WS__DEFLATE_CHUNK;
    }
    /* §7.2.1: drop the 00 00 FF FF the sync flush ended with. */
    if (out->len - start < 4 || memcmp(out->data + out->len - 4, tail, 4) != 0) {
        rc = SORI_EIO;
        goto fail;
    }
    out->len -= 4;
    return 0;

fail:
    out->len = start;
    return rc;
}

ws_inflater_t *ws_inflater_new(void)
{
    ws_inflater_t *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    if (inflateInit2(&z->zs, -15) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

void ws_inflater_free(ws_inflater_t *z)
{
    if (!z) return;
    inflateEnd(&z->zs);
    free(z);
}

int ws_inflate_message(ws_inflater_t *z, const uint8_t *in, size_t n, size_t max_out,
                       buf_t *out)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xFF, 0xFF};
    size_t start = out->len;
    z_stream *zs = &z->zs;
    int rc;

    /* Not valid deflate, strictly, but zlib-based peers inflate an empty
     * RSV1 payload to an empty message, so we do too. */
    if (n == 0) return 0;
    if (inflateReset(zs) != Z_OK) return SORI_EIO;
    const uint8_t *next = in;
    size_t left = n;
    int tail_fed = 0;
    int pending = 0; /* inflate filled the output: it may hold more */
    zs->avail_in = 0;
    for (;;) {
        if (zs->avail_in == 0 && !pending) {
            if (left) {
                uInt take = ws__uint(left);
                zs->next_in = next;
                zs->avail_in = take;
                next += take;
                left -= take;
            } else if (!tail_fed) {
                /* §7.2.2: append 00 00 FF FF before decompressing. */
                zs->next_in = tail;
                zs->avail_in = 4;
                tail_fed = 1;
            } else {
                break;
            }
        }
        /* Room for at most one byte past max_out: writing it proves the
         * message is too big without ever buffering more. */
        size_t allow = max_out - (out->len - start);
        if (allow != SIZE_MAX) allow++;
        rc = buf_reserve(out, allow < WS__INFLATE_CHUNK ? allow : WS__INFLATE_CHUNK);
        if (rc) goto fail;
        size_t space = out->cap - out->len;
        if (space > allow) space = allow;
        uInt avail = ws__uint(space);
        zs->next_out = (Bytef *)out->data + out->len;
        zs->avail_out = avail;
        int zr = inflate(zs, Z_NO_FLUSH);
        out->len += avail - zs->avail_out;
        if (out->len - start > max_out) {
            rc = SORI_E2BIG;
            goto fail;
        }
        if (zr == Z_STREAM_END) {
            /* A final block (BFINAL, §7.2.3.4): what follows it, the
             * appended tail included, is ignored. */
            return 0;
        }
        if (zr == Z_BUF_ERROR) {
            if (zs->avail_in != 0 && zs->avail_out != 0) {
                rc = SORI_EIO; /* no progress with input and room: cannot happen */
                goto fail;
            }
        } else if (zr != Z_OK) {
            rc = zr == Z_MEM_ERROR ? SORI_ENOMEM : SORI_EINVAL;
            goto fail;
        }
        pending = zs->avail_out == 0;
    }
    /* All input, tail included, is consumed. A well-formed message ends on a
     * block boundary (the empty stored block of §7.2.1); zlib reports that
     * as data_type bit 128. Anything else is a truncated stream. */
    if (!(zs->data_type & 128)) {
        rc = SORI_EINVAL;
        goto fail;
    }
    return 0;

fail:
    out->len = start;
    return rc;
}

/*
 * base64.c: RFC 4648 encoder and strict decoder. The decoder accepts only the
 * canonical encoding (no whitespace, correct padding, zero trailing bits),
 * because it checks handshake keys and token signatures where laxness helps
 * nobody.
 */
#include "util/base64.h"
#include "util/err.h"

#include <stdint.h>

static const char base64__std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char base64__url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t base64_encode(const unsigned char *in, size_t n, char *out, int url)
{
    const char *a = url ? base64__url : base64__std;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        if (!url) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        if (!url) out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

static int base64__val(char ch, int url)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == (url ? '-' : '+')) return 62;
    if (ch == (url ? '_' : '/')) return 63;
    return -1;
}

int base64_decode(const char *in, size_t n, unsigned char *out, size_t cap, int url)
{
    size_t pad = 0;
    if (!url) {
        if (n % 4) return SORI_EINVAL;
        if (n && in[n - 1] == '=') pad++;
        if (n > 1 && in[n - 2] == '=') pad++;
        n -= pad;
    } else if (n % 4 == 1) {
        return SORI_EINVAL;
    }
    size_t outlen = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (outlen > cap) return SORI_E2BIG;
    size_t o = 0, i = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; i < n; i++) {
        int v = base64__val(in[i], url);
        if (v < 0) return SORI_EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return SORI_EINVAL; /* non-zero trailing bits */
    if (!url && pad && (n % 4) + pad != 4) return SORI_EINVAL;
    return (int)o;
}

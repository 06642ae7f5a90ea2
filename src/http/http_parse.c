/*
 * http_parse.c: the HTTP/1.1 request-head parser (RFC 9112 §2-§5) and its
 * helpers: header lookup, token lists, Content-Length, percent-decoding,
 * query lookup and reason phrases.
 *
 * It owns nothing: every function is pure over the caller's bytes, with no
 * allocation, no I/O and no state between calls. Slices written into an
 * http_request_t point into the caller's buffer and live as long as it does.
 *
 * Invariants: no byte at or past `len` is read; lines are found with memchr
 * and then checked with one 256-entry class table, so a head costs O(len)
 * per call. A request is re-parsed from its first byte on every call (the
 * caller bounds the head, so that stays cheap). SORI_EAGAIN is returned only
 * when the bytes so far can still become a valid head, so garbage fails on
 * the first visibly bad byte rather than at the line end. Header names are
 * matched by length first, then ASCII case-insensitively, never by prefix.
 *
 * Numbers: at most HTTP_MAX_HEADERS (64) headers, a 65th is SORI_E2BIG;
 * Content-Length is at most 18 digits (< 10^18, fits in int64_t); results
 * are ints, so a head or decoded string over INT_MAX bytes is SORI_E2BIG.
 *
 * Deliberate choices: any number of empty lines before the request line is
 * skipped and counted in the head length (RFC 9112 §2.2); obs-fold is
 * rejected, not unfolded (§5.2); request-targets must be printable ASCII
 * (0x21-0x7E: raw bytes >= 0x80 are not URI characters); an absolute-form
 * target "scheme://authority[/path][?query]" sets path to the part from the
 * first '/' after the authority, and to an empty slice when there is none.
 */
#include "http/http_parse.h"
#include "util/err.h"

#include <limits.h>
#include <string.h>

/* Byte classes, one table lookup per byte. */
enum {
    HTTP__C_TCHAR = 1,  /* RFC 9110 §5.6.2 tchar */
    HTTP__C_SCHEME = 2, /* RFC 3986 §3.1 scheme chars after the first ALPHA */
    HTTP__C_FVALUE = 4, /* field-value byte: HTAB, SP, VCHAR, obs-text */
    HTTP__C_TARGET = 8, /* request-target byte: VCHAR (0x21-0x7E) */
};

static const unsigned char http__class[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  4,  0,  0,  0,  0,  0,  0, /* 0x00 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 0x10 */
     4, 13, 12, 13, 13, 13, 13, 13, 12, 12, 13, 15, 12, 15, 15, 12, /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 12, 12, 12, 12, 12, 12, /* 0x30 */
    12, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 12, 12, 12, 13, 13, /* 0x50 */
    13, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 12, 13, 12, 13,  0, /* 0x70 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0x80 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0x90 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xA0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xB0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xC0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xD0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xE0 */
     4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4, /* 0xF0 */
};

static inline int http__is(char c, int cls)
{
    return (http__class[(unsigned char)c] & cls) != 0;
}

static inline int http__is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static inline int http__is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline unsigned char http__lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* 1 if a[0..n) and b[0..n) are equal ignoring ASCII case. */
static int http__ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (http__lower((unsigned char)a[i]) != http__lower((unsigned char)b[i])) return 0;
    return 1;
}

static int http__hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/*
 * Finds the line starting at buf[pos] (pos <= len). *n is its length without
 * the CRLF or LF. Returns 1 when an LF ended it, with *next the offset just
 * after the LF; else 0 and *n covers what is there. *whole is 1 when the
 * line's content is all there: an LF ended it, or the bytes end in a CR,
 * which only an LF may follow (any other CR stays in the line and fails the
 * byte checks: a bare CR is invalid everywhere, RFC 9112 §2.2).
 */
static int http__line(const char *buf, size_t len, size_t pos, size_t *n, size_t *next,
                      int *whole)
{
    size_t rest = len - pos;
    const char *p = buf + pos;
    const char *lf = rest ? memchr(p, '\n', rest) : NULL;
    if (lf) {
        size_t k = (size_t)(lf - p);
        *next = pos + k + 1;
        if (k > 0 && p[k - 1] == '\r') k--;
        *n = k;
        *whole = 1;
        return 1;
    }
    *whole = rest > 0 && p[rest - 1] == '\r';
    *n = *whole ? rest - 1 : rest;
    return 0;
}

/*
 * Checks the form of a request-target (RFC 9112 §3.2) p[0..n), all of whose
 * bytes are VCHARs: origin-form "/...", asterisk-form "*", or absolute-form
 * "scheme://authority...". When whole is 0 the target may continue. Returns
 * 0 (with *path_off where the path starts), SORI_EAGAIN or SORI_EINVAL.
 */
static int http__target_form(const char *p, size_t n, int whole, size_t *path_off)
{
    static const char sep[] = "://";
    if (n == 0) return whole ? SORI_EINVAL : SORI_EAGAIN;
    *path_off = 0;
    if (p[0] == '/') return 0;
    if (p[0] == '*') return n == 1 ? 0 : SORI_EINVAL;
    if (!http__is_alpha(p[0])) return SORI_EINVAL;
    size_t i = 1;
    while (i < n && http__is(p[i], HTTP__C_SCHEME)) i++;
    for (size_t k = 0; k < 3; k++, i++) {
        if (i == n) return whole ? SORI_EINVAL : SORI_EAGAIN;
        if (p[i] != sep[k]) return SORI_EINVAL;
    }
    size_t a = i;
    while (i < n && p[i] != '/' && p[i] != '?') i++;
    if (i == a) return (i == n && !whole) ? SORI_EAGAIN : SORI_EINVAL; /* empty authority */
    *path_off = i;
    return 0;
}

/*
 * Parses the request line p[0..n) (line end removed; RFC 9112 §3):
 * method SP request-target SP HTTP-version, single SPs. When whole is 0,
 * p[0..n) is a prefix and SORI_EAGAIN says it can still become valid.
 */
static int http__request_line(const char *p, size_t n, int whole, http_request_t *req)
{
    size_t i = 0, path_off = 0;
    int rc;

    while (i < n && http__is(p[i], HTTP__C_TCHAR)) i++;
    if (i == n) return whole ? SORI_EINVAL : SORI_EAGAIN;
    if (i == 0 || p[i] != ' ') return SORI_EINVAL;
    req->method = (slice_t){p, i};

    size_t t = ++i;
    while (i < n && http__is(p[i], HTTP__C_TARGET)) i++;
    if (i == n) {
        if (whole) return SORI_EINVAL;
        rc = http__target_form(p + t, i - t, 0, &path_off);
        return rc == SORI_EINVAL ? SORI_EINVAL : SORI_EAGAIN;
    }
    if (p[i] != ' ') return SORI_EINVAL; /* a control byte, or >= 0x80 */
    if ((rc = http__target_form(p + t, i - t, 1, &path_off)) != 0) return rc;
    const char *tp = p + t;
    size_t tn = i - t;
    req->target = (slice_t){tp, tn};
    const char *q = memchr(tp + path_off, '?', tn - path_off);
    if (q) {
        req->path = (slice_t){tp + path_off, (size_t)(q - tp) - path_off};
        req->query = (slice_t){q + 1, (size_t)(tp + tn - q - 1)};
    } else {
        req->path = (slice_t){tp + path_off, tn - path_off};
        req->query = (slice_t){tp + tn, 0};
    }

    const char *v = p + i + 1;
    size_t vn = n - i - 1;
    if (vn < 8) {
        if (whole || memcmp(v, "HTTP/1.", vn < 7 ? vn : 7) != 0) return SORI_EINVAL;
        return SORI_EAGAIN;
    }
    if (vn > 8 || memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1'))
        return SORI_EINVAL;
    req->minor_version = v[7] - '0';
    return whole ? 0 : SORI_EAGAIN;
}

/*
 * Parses one field line p[0..n) (line end removed, n > 0; RFC 9112 §5,
 * RFC 9110 §5.5): token ":" OWS field-value OWS. When whole is 0, p[0..n) is
 * a prefix and SORI_EAGAIN says it can still become valid.
 */
static int http__header_line(const char *p, size_t n, int whole, http_header_t *h)
{
    size_t i = 0;
    if (http__is_ows(p[0])) return SORI_EINVAL; /* obs-fold, or SP before the first field */
    while (i < n && http__is(p[i], HTTP__C_TCHAR)) i++;
    if (i == n) return whole ? SORI_EINVAL : SORI_EAGAIN;
    if (i == 0 || p[i] != ':') return SORI_EINVAL; /* empty name, or SP before ':' */
    size_t v = i + 1, e = n;
    for (size_t k = v; k < n; k++)
        if (!http__is(p[k], HTTP__C_FVALUE)) return SORI_EINVAL;
    if (!whole) return SORI_EAGAIN;
    while (v < e && http__is_ows(p[v])) v++;
    while (e > v && http__is_ows(p[e - 1])) e--;
    h->name = (slice_t){p, i};
    h->value = (slice_t){p + v, e - v};
    return 0;
}

int http_request_parse(const char *buf, size_t len, http_request_t *req)
{
    size_t pos = 0, n, next = 0;
    int whole, got, rc;

    req->nheaders = 0;
    /* RFC 9112 §2.2: ignore empty lines before the request line. */
    while (pos < len && (buf[pos] == '\r' || buf[pos] == '\n')) {
        if (buf[pos] == '\n') {
            pos++;
        } else if (pos + 1 == len) {
            return SORI_EAGAIN;
        } else if (buf[pos + 1] != '\n') {
            return SORI_EINVAL; /* bare CR */
        } else {
            pos += 2;
        }
    }
    if (pos == len) return SORI_EAGAIN;

    got = http__line(buf, len, pos, &n, &next, &whole);
    if ((rc = http__request_line(buf + pos, n, whole, req)) != 0) return rc;
    if (!got) return SORI_EAGAIN;
    pos = next;

    for (;;) {
        got = http__line(buf, len, pos, &n, &next, &whole);
        if (n == 0) {
            if (!got) return SORI_EAGAIN; /* nothing yet, or a final CR */
            return next > INT_MAX ? SORI_E2BIG : (int)next;
        }
        if (req->nheaders == HTTP_MAX_HEADERS) {
            http_header_t extra;
            rc = http__header_line(buf + pos, n, whole, &extra);
            return rc == SORI_EINVAL ? SORI_EINVAL : SORI_E2BIG;
        }
        rc = http__header_line(buf + pos, n, whole, &req->headers[req->nheaders]);
        if (rc) return rc;
        req->nheaders++;
        if (!got) return SORI_EAGAIN;
        pos = next;
    }
}

const slice_t *http_header_get(const http_request_t *req, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_header_t *h = &req->headers[i];
        if (h->name.len == len && http__ieq(h->name.p, name, len)) return &h->value;
    }
    return NULL;
}

int http_header_has_token(slice_t value, const char *token)
{
    size_t tlen = strlen(token);
    if (tlen == 0 || value.len == 0) return 0;
    const char *p = value.p, *end = value.p + value.len;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *semi = memchr(p, ';', (size_t)(e - p));
        const char *s = p;
        if (semi) e = semi;
        while (s < e && http__is_ows(*s)) s++;
        while (e > s && http__is_ows(e[-1])) e--;
        if ((size_t)(e - s) == tlen && http__ieq(s, token, tlen)) return 1;
        if (!comma) return 0;
        p = comma + 1;
    }
}

int http_parse_content_length(slice_t value, uint64_t *out)
{
    uint64_t v = 0;
    if (value.len == 0 || value.len > 18) return SORI_EINVAL;
    for (size_t i = 0; i < value.len; i++) {
        char c = value.p[i];
        if (c < '0' || c > '9') return SORI_EINVAL;
        v = v * 10 + (uint64_t)(c - '0');
    }
    *out = v;
    return 0;
}

/* On failure out is the empty string (when cap > 0). */
int http_url_decode(slice_t in, char *out, size_t cap, int plus_as_space)
{
    size_t o = 0;
    int rc = SORI_EINVAL;
    if (cap == 0) return SORI_E2BIG;
    for (size_t i = 0; i < in.len; i++) {
        unsigned char c = (unsigned char)in.p[i];
        if (c == '%') {
            int hi, lo;
            if (in.len - i < 3 || (hi = http__hexval(in.p[i + 1])) < 0 ||
                (lo = http__hexval(in.p[i + 2])) < 0)
                goto fail;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_as_space) {
            c = ' ';
        }
        if (c == 0) goto fail; /* a decoded or literal NUL */
        if (o + 1 >= cap || o >= INT_MAX) {
            rc = SORI_E2BIG;
            goto fail;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (int)o;
fail:
    out[0] = '\0';
    return rc;
}

/* On failure out is the empty string (when cap > 0). */
int http_path_segments(slice_t path, size_t skip, char seg[][HTTP_SEG_MAX], int max)
{
    int n = 0;
    size_t i = skip;
    while (i < path.len && n < max) {
        size_t j = i;
        while (j < path.len && path.p[j] != '/') j++;
        if (j == i || http_url_decode((slice_t){path.p + i, j - i}, seg[n], HTTP_SEG_MAX, 0) < 0) return -1;
        n++;
        i = j + 1;
        if (j == path.len) break;
    }
    if (i < path.len) return -1; /* more segments than expected */
    return n;
}

int http_query_get(slice_t query, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    if (cap > 0) out[0] = '\0';
    if (query.len == 0) return SORI_ENOTFOUND;
    const char *p = query.p, *end = query.p + query.len;
    for (;;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if (e > p) {
            const char *eq = memchr(p, '=', (size_t)(e - p));
            const char *ke = eq ? eq : e;
            if ((size_t)(ke - p) == klen && memcmp(p, key, klen) == 0) {
                slice_t v = eq ? (slice_t){eq + 1, (size_t)(e - eq - 1)} : (slice_t){e, 0};
                return http_url_decode(v, out, cap, 1);
            }
        }
        if (!amp) return SORI_ENOTFOUND;
        p = amp + 1;
    }
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

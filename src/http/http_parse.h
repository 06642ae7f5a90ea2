/*
 * http_parse.h: the HTTP/1.1 request-head parser and its small helpers.
 *
 * Pure functions over caller buffers: no allocation, no I/O, no globals.
 * Slices returned point into the caller's buffer and live as long as it does.
 */
#ifndef SORI_HTTP_PARSE_H
#define SORI_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define HTTP_MAX_HEADERS 64

typedef struct {
    slice_t name;
    slice_t value; /* leading and trailing OWS removed */
} http_header_t;

typedef struct {
    slice_t method;    /* a token, e.g. "GET" (case-sensitive per RFC 9110) */
    slice_t target;    /* the raw request-target, e.g. "/ws?user=a" */
    slice_t path;      /* target up to '?', not decoded */
    slice_t query;     /* after '?', without it; empty if none */
    int minor_version; /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
    size_t nheaders;
    http_header_t headers[HTTP_MAX_HEADERS];
} http_request_t;

/*
 * Parses one request head from buf[0..len).
 * Returns the length of the head in bytes (request line, headers and the
 * empty line) when it is complete; SORI_EAGAIN when more bytes are needed and
 * what is there is valid so far; SORI_EINVAL when the bytes are not a valid
 * request head (bad method token, bad target, version other than HTTP/1.0 or
 * HTTP/1.1, header name not a token, whitespace before the colon, obs-fold,
 * control characters, bare CR); SORI_E2BIG when there are more than
 * HTTP_MAX_HEADERS headers. Lines end in CRLF; a bare LF is also accepted as
 * a line end (RFC 9112 §2.2). The caller enforces the head size limit.
 */
int http_request_parse(const char *buf, size_t len, http_request_t *req);

/* The first header named `name` (ASCII case-insensitive, whole name: lengths
 * compared first), or NULL. */
const slice_t *http_header_get(const http_request_t *req, const char *name);

/* 1 if the comma-separated list `value` holds `token` (case-insensitive,
 * whole element, OWS around elements ignored, parameters after ';' ignored
 * for the comparison), else 0. E.g. Connection: "keep-alive, Upgrade". */
int http_header_has_token(slice_t value, const char *token);

/* Parses a Content-Length value: 1*DIGIT, at most 18 digits. 0 and *out set,
 * or SORI_EINVAL. */
int http_parse_content_length(slice_t value, uint64_t *out);

/* Percent-decodes `in` into out[0..cap) ('+' as space when plus_as_space).
 * Returns the decoded length, SORI_EINVAL on a bad %XX escape or a decoded
 * NUL byte, SORI_E2BIG if it does not fit. out is NUL-terminated on success
 * (so cap must exceed the decoded length). */
int http_url_decode(slice_t in, char *out, size_t cap, int plus_as_space);

/* Looks up `key` in a query string "a=1&b=2" and decodes its value into
 * out[0..cap) as http_url_decode does with plus_as_space. Returns the decoded
 * length, SORI_ENOTFOUND if the key is absent, or the decode error. A key with
 * no '=' has the empty value. */
int http_query_get(slice_t query, const char *key, char *out, size_t cap);

#define HTTP_SEG_MAX 128 /* a decoded path segment, NUL included */

/* Splits path[skip..] at '/' into at most max percent-decoded segments
 * ("/api/rooms/{a}/{b}" with skip = strlen("/api/rooms/")), each
 * NUL-terminated in seg[]; one trailing '/' is allowed. Returns the count,
 * or -1 for an empty segment, a bad escape, a decoded NUL, a segment longer
 * than HTTP_SEG_MAX - 1, or more than max segments. */
int http_path_segments(slice_t path, size_t skip, char seg[][HTTP_SEG_MAX], int max);

/* The reason phrase of a status code ("Not Found"), "Unknown" if unknown. */
const char *http_status_text(int status);

#endif

/*
 * stomp_frame.h: STOMP 1.0-1.2 frames (https://stomp.github.io/): a pure
 * parser for client frames and the helpers that encode server frames. No
 * I/O, no state beyond the caller's buffers. Fuzzed by
 * tests/fuzz/fuzz_stomp.c.
 */
#ifndef SORI_PROTO_STOMP_FRAME_H
#define SORI_PROTO_STOMP_FRAME_H

#include "util/buf.h"

#include <stddef.h>
#include <stdint.h>

#define STOMP_HEADERS_MAX 64

enum {
    STOMP_CONNECT = 1,
    STOMP_STOMP,
    STOMP_SEND,
    STOMP_SUBSCRIBE,
    STOMP_UNSUBSCRIBE,
    STOMP_ACK,
    STOMP_NACK,
    STOMP_BEGIN,
    STOMP_COMMIT,
    STOMP_ABORT,
    STOMP_DISCONNECT,
};

/* Protocol versions as numbers: 10, 11, 12. */
enum { STOMP_V10 = 10, STOMP_V11 = 11, STOMP_V12 = 12 };

typedef struct {
    slice_t name, value; /* decoded, inside the parsed buffer */
} stomp_header_t;

typedef struct {
    int command;          /* STOMP_CONNECT ... STOMP_DISCONNECT */
    uint32_t nheaders;
    stomp_header_t headers[STOMP_HEADERS_MAX];
    char *body;           /* inside the parsed buffer; NUL follows it */
    size_t body_len;
    const char *error;    /* on failure: a sentence for the ERROR frame */
} stomp_frame_t;

typedef struct {
    uint32_t max_headers;     /* ≤ STOMP_HEADERS_MAX */
    size_t max_header_bytes;  /* command line + header lines + blank line */
    size_t max_body;
} stomp_limits_t;

/* Leading end-of-lines ("\n" or "\r\n": heart-beats, or the optional EOLs
 * after a frame's NUL) in p[0..n): how many bytes they take. A lone "\r"
 * at the end is not counted (its "\n" may follow). */
size_t stomp_skip_eols(const char *p, size_t n);

/*
 * Parses one client frame at the start of p[0..n) (which must not start
 * with an EOL: skip those first). version (10, 11, 12) says which header
 * escapes apply; CONNECT and STOMP frames are never unescaped. A body ends
 * at content-length bytes when that header is present (a NUL must follow),
 * else at the first NUL. The first of repeated headers wins in lookups.
 *
 * Returns the frame's length through its NUL (> 0) with *f filled and
 * header escapes decoded in place (so p must be writable, and is left
 * untouched unless the whole frame is there); SORI_EAGAIN if the frame is
 * incomplete (p untouched); SORI_EINVAL (malformed) or SORI_E2BIG (over a
 * limit) with f->error set (p may be partly decoded: the stream is dead). An incomplete frame already over a limit is SORI_E2BIG.
 */
int stomp_frame_parse(char *p, size_t n, int version, const stomp_limits_t *lim, stomp_frame_t *f);

/* The value of the first header called name, or NULL. */
const slice_t *stomp_header_get(const stomp_frame_t *f, const char *name);

/* Appends "name:value\n" with value escaped as version requires (1.1: \\ \n
 * \c; 1.2: also \r; 1.0: verbatim, with CR and LF dropped). 0 or an error. */
int stomp_header_append(buf_t *b, int version, const char *name, const char *value, size_t vlen);

/* The command's name ("SEND"), for logs and errors. */
const char *stomp_command_name(int command);

#endif

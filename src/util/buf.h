/*
 * buf.h: byte buffers.
 *
 * buf_t   an owned, growable byte buffer (data may move on every append).
 * sbuf_t  a refcounted, immutable shared buffer: one allocation holding the
 *         header and the bytes. One sbuf_t is queued on many connections'
 *         output queues (fan-out without a copy per recipient); the last
 *         sbuf_unref frees it. The refcount is atomic, so the buffer may be
 *         handed between threads; its bytes must not change once shared.
 * slice_t a borrowed view; says nothing about lifetime, the caller does.
 */
#ifndef SORI_UTIL_BUF_H
#define SORI_UTIL_BUF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *p;
    size_t len;
} slice_t;

#define SLICE_LIT(s) ((slice_t){(s), sizeof(s) - 1})

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

/* Makes room for `extra` more bytes; may move data. 0 or -SORI_ENOMEM. */
int buf_reserve(buf_t *b, size_t extra);
int buf_append(buf_t *b, const void *p, size_t n);
int buf_appendf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (memmove of the rest). */
void buf_consume(buf_t *b, size_t n);
/* Frees the storage; the buffer is empty and reusable afterwards. */
void buf_free(buf_t *b);

typedef struct sbuf {
    atomic_uint refs;
    uint32_t len;
    char data[];
} sbuf_t;

/* A new buffer of `len` bytes with one reference; NULL on allocation failure.
 * The bytes are uninitialised: fill them before sharing. */
sbuf_t *sbuf_new(size_t len);
/* A new buffer holding a copy of p[0..len). */
sbuf_t *sbuf_copy(const void *p, size_t len);
static inline sbuf_t *sbuf_ref(sbuf_t *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}
/* Adds n references at once (fan-out to n queues). */
static inline void sbuf_ref_n(sbuf_t *b, unsigned n)
{
    atomic_fetch_add_explicit(&b->refs, n, memory_order_relaxed);
}
void sbuf_unref(sbuf_t *b);

#endif

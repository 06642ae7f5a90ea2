/*
 * fuzz_deflate.c: libFuzzer target for permessage-deflate compression. The
 * input is (1) inflated as a raw compressed message with a 64 KiB cap, which
 * must end in success, SORI_EINVAL or SORI_E2BIG without writing past the cap
 * or changing what the output buffer held before; and (2) compressed then
 * inflated again, which must give the input back exactly. The first byte
 * picks the compressor's window (9..15) and level (1, 6, 9); compressors are
 * cached, one per combination, like the per-worker ones in the server.
 */
#include "util/buf.h"
#include "util/err.h"
#include "ws/ws_deflate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                        \
    do {                                                                                \
        if (!(x)) {                                                                     \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #x, __FILE__, __LINE__);  \
            abort();                                                                    \
        }                                                                               \
    } while (0)

#define INFLATE_CAP (64u * 1024)

static ws_inflater_t *inflater;
static ws_deflater_t *deflaters[7][3];
static const int levels[3] = {1, 6, 9};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!inflater) {
        inflater = ws_inflater_new();
        CHECK(inflater != NULL);
    }

    /* (1) Raw input as a compressed message, appended after a prefix. */
    buf_t out = {0};
    CHECK(buf_append(&out, "pfx", 3) == 0);
    int rc = ws_inflate_message(inflater, data, size, INFLATE_CAP, &out);
    CHECK(rc == 0 || rc == SORI_EINVAL || rc == SORI_E2BIG);
    CHECK(out.len >= 3 && memcmp(out.data, "pfx", 3) == 0);
    CHECK(out.len - 3 <= INFLATE_CAP);
    if (rc) CHECK(out.len == 3);
    buf_free(&out);

    /* (2) Round trip. */
    unsigned sel = size ? data[0] : 0;
    int wi = (int)(sel % 7), li = (int)((sel / 7) % 3);
    if (!deflaters[wi][li]) {
        deflaters[wi][li] = ws_deflater_new(levels[li], 9 + wi);
        CHECK(deflaters[wi][li] != NULL);
    }
    buf_t c = {0};
    CHECK(ws_deflate_message(deflaters[wi][li], data, size, &c) == 0);
    CHECK(c.len > 0);
    /* §7.2.1: the 00 00 FF FF tail is stripped. */
    if (c.len >= 4) CHECK(memcmp(c.data + c.len - 4, "\0\0\xff\xff", 4) != 0);
    if (size == 0) CHECK(c.len == 1 && c.data[0] == 0);

    buf_t back = {0};
    rc = ws_inflate_message(inflater, (const uint8_t *)c.data, c.len, size, &back);
    CHECK(rc == 0);
    CHECK(back.len == size);
    CHECK(size == 0 || memcmp(back.data, data, size) == 0);
    if (size > 0) {
        /* One byte less room than the message needs: E2BIG, nothing kept. */
        back.len = 0;
        rc = ws_inflate_message(inflater, (const uint8_t *)c.data, c.len, size - 1, &back);
        CHECK(rc == SORI_E2BIG);
        CHECK(back.len == 0);
    }
    buf_free(&back);
    buf_free(&c);
    return 0;
}

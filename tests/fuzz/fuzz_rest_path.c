/*
 * fuzz_rest_path.c: libFuzzer target for http_path_segments
 * (src/http/http_parse.c), which splits REST paths like
 * /api/rooms/{room}/messages into percent-decoded segments.
 *
 * The first input byte picks skip (0..15) and max (1..4); the rest is the
 * path, in an exactly-sized copy so ASan sees reads past its end. Checks:
 * the result is -1 or 0..max; each segment is non-empty, NUL-free,
 * shorter than HTTP_SEG_MAX; a success has as many segments as the raw
 * path has non-empty '/'-separated parts after skip, each of which decodes
 * alone to the same bytes.
 */
#include "http/http_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) __builtin_trap();                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t skip = data[0] & 15;
    int max = ((data[0] >> 4) & 3) + 1;
    size_t n = size - 1;
    char *path = malloc(n ? n : 1);
    if (!path) return 0;
    memcpy(path, data + 1, n);
    static char seg[4][HTTP_SEG_MAX];
    int got = http_path_segments((slice_t){path, n}, skip, seg, max);
    CHECK(got >= -1 && got <= max);
    if (got >= 0) {
        int parts = 0;
        size_t i = skip;
        while (i < n) {
            size_t j = i;
            while (j < n && path[j] != '/') j++;
            CHECK(j > i); /* no empty segment was accepted */
            char one[HTTP_SEG_MAX];
            CHECK(parts < got);
            CHECK(http_url_decode((slice_t){path + i, j - i}, one, sizeof one, 0) >= 0);
            CHECK(!strcmp(one, seg[parts]));
            parts++;
            i = j + 1;
        }
        CHECK(parts == got);
        for (int k = 0; k < got; k++) {
            size_t l = strlen(seg[k]);
            CHECK(l >= 1 && l < HTTP_SEG_MAX);
        }
    }
    free(path);
    return 0;
}

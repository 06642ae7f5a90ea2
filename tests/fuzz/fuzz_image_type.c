/*
 * fuzz_image_type.c: libFuzzer target for proto_image_type
 * (src/proto/proto_rest.c), which names an upload's type from its first
 * bytes. Checks: no read past the buffer (exactly-sized copy under ASan);
 * the answer is NULL or one of the four types; each type is given exactly
 * when its magic number is there; the answer depends only on the first 12
 * bytes.
 */
#include "proto/proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) __builtin_trap();                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *p = malloc(size ? size : 1);
    if (!p) return 0;
    memcpy(p, data, size);
    const char *t = proto_image_type(p, size);
    int png = size >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8);
    int jpeg = size >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF;
    int gif = size >= 6 && (!memcmp(p, "GIF87a", 6) || !memcmp(p, "GIF89a", 6));
    int webp = size >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4);
    CHECK(!t == !(png || jpeg || gif || webp));
    if (t) {
        CHECK(!strcmp(t, png ? "image/png" : jpeg ? "image/jpeg" : gif ? "image/gif" : "image/webp"));
    }
    if (size > 12) CHECK(proto_image_type(p, 12) == t || (t && !strcmp(proto_image_type(p, 12), t)));
    free(p);
    return 0;
}

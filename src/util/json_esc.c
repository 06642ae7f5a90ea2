/*
 * json_esc.c: the JSON string escaper of json_esc.h. Copies runs of plain
 * bytes with one memcpy each; output is at most 6x the input (\u00XX).
 */
#include "util/json_esc.h"
#include "util/err.h"

#include <string.h>

int json_esc_append(buf_t *b, const char *s, size_t n)
{
    if (buf_reserve(b, n + 2)) return SORI_ENOMEM;
    b->data[b->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        if (buf_append(b, s + run, i - run)) return SORI_ENOMEM;
        run = i + 1;
        char esc[8];
        size_t el = 2;
        esc[0] = '\\';
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default: {
            static const char hex[] = "0123456789abcdef";
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            el = 6;
        }
        }
        if (buf_append(b, esc, el)) return SORI_ENOMEM;
    }
    if (buf_append(b, s + run, n - run) || buf_append(b, "\"", 1)) return SORI_ENOMEM;
    return 0;
}

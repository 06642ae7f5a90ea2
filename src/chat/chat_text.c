/*
 * chat_text.c: pure scanners over message and query text.
 *
 * Owns nothing and takes no lock: the mention scanner asks its caller
 * (chat_cmd.c, under the room lock) whether a name is a member through a
 * callback, and the FTS query builder only allocates its result. Both read
 * only the bytes they are given. Numbers: a message text is at most 16 KiB,
 * a search query at most 512 bytes; the scanner skips to each '@' with
 * memchr and tries at most two lengths per candidate name.
 */
#include "chat/chat_text.h"
#include "util/buf.h"

#include <stdlib.h>
#include <string.h>

static int chat_text__name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
}

uint32_t chat_text_mentions(const char *text, size_t len, const char *from, chat_text_is_member_fn is_member,
                            void *ctx, char names[][CHAT_TEXT_NAME_MAX + 1], uint32_t max)
{
    uint32_t n = 0;
    size_t i = 0;
    while (i < len && n < max) {
        const char *at = memchr(text + i, '@', len - i);
        if (!at) break;
        i = (size_t)(at - text);
        if (i > 0 && chat_text__name_char(text[i - 1])) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < len && chat_text__name_char(text[j])) j++;
        size_t nl = j - i - 1;
        char name[CHAT_TEXT_NAME_MAX + 1];
        /* "@bob." or "@bob..." at the end of a sentence: try the whole run,
         * then without its trailing dots. Runs longer than a name can be
         * (plus a few dots) are no mention at all. */
        int found = 0;
        if (nl > 0 && nl <= CHAT_TEXT_NAME_MAX + 8) {
            for (int k = 0; k < 2 && nl > 0 && !found; k++) {
                if (k == 1) {
                    if (text[i + nl] != '.') break;
                    while (nl > 0 && text[i + nl] == '.') nl--;
                }
                if (nl == 0 || nl > CHAT_TEXT_NAME_MAX) continue;
                memcpy(name, text + i + 1, nl);
                name[nl] = 0;
                found = is_member(ctx, name, nl);
            }
        }
        i = j;
        if (!found || (from && !strcmp(name, from))) continue;
        int dup = 0;
        for (uint32_t k = 0; k < n && !dup; k++) dup = !strcmp(names[k], name);
        if (!dup) memcpy(names[n++], name, nl + 1);
    }
    return n;
}

static int chat_text__space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

char *chat_text_fts_match(const char *q)
{
    buf_t b = {0};
    int rc = 0, words = 0;
    for (const char *p = q; *p;) {
        while (chat_text__space(*p)) p++;
        if (!*p) break;
        rc |= words ? buf_append(&b, " \"", 2) : buf_append(&b, "\"", 1);
        words++;
        for (; *p && !chat_text__space(*p); p++)
            rc |= *p == '"' ? buf_append(&b, "\"\"", 2) : buf_append(&b, p, 1);
        rc |= buf_append(&b, "\"", 1);
    }
    rc |= buf_append(&b, "", 1);
    if (rc || !words) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

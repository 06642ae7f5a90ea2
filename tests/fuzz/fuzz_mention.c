/*
 * fuzz_mention.c: libFuzzer target for chat_text_mentions (src/chat/chat_text.c).
 *
 * The input is a message text (no NUL terminator; libFuzzer's exactly-sized
 * copy lets ASan see any read past len). Members are every name whose first
 * byte is in a-m, so both hits and misses happen. Checks the contract: at
 * most max names, each a member, made of name characters, 1..32 bytes long,
 * distinct, not the sender, and written in the text right after an '@' that
 * is not preceded by a name character.
 */
#include "chat/chat_text.h"

#include <stdint.h>
#include <string.h>

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) __builtin_trap();                                             \
    } while (0)

static int name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
}

static int is_member(void *ctx, const char *name, size_t len)
{
    (void)ctx;
    CHECK(len >= 1 && len <= CHAT_TEXT_NAME_MAX && strlen(name) == len);
    return name[0] >= 'a' && name[0] <= 'm';
}

static int written_after_at(const char *t, size_t n, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl < n; i++)
        if (t[i] == '@' && (i == 0 || !name_char((unsigned char)t[i - 1])) && !memcmp(t + i + 1, name, nl)) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char names[50][CHAT_TEXT_NAME_MAX + 1];
    const char *text = (const char *)data;
    uint32_t max = size ? (uint32_t)(data[0] % 8) + 1 : 1;
    const char *from = "alice";
    uint32_t n = chat_text_mentions(text, size, from, is_member, NULL, names, max);
    CHECK(n <= max);
    for (uint32_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        CHECK(nl >= 1 && nl <= CHAT_TEXT_NAME_MAX);
        CHECK(names[i][0] >= 'a' && names[i][0] <= 'm');
        CHECK(strcmp(names[i], from) != 0);
        for (size_t k = 0; k < nl; k++) CHECK(name_char((unsigned char)names[i][k]));
        for (uint32_t k = 0; k < i; k++) CHECK(strcmp(names[k], names[i]) != 0);
        CHECK(written_after_at(text, size, names[i]));
    }
    /* the cap is a prefix: a larger cap finds the same names first */
    if (n == max && max < 50) {
        static char more[50][CHAT_TEXT_NAME_MAX + 1];
        uint32_t m = chat_text_mentions(text, size, from, is_member, NULL, more, 50);
        CHECK(m >= n);
        for (uint32_t i = 0; i < n; i++) CHECK(!strcmp(more[i], names[i]));
    }
    return 0;
}

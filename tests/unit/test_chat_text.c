/*
 * test_chat_text.c: cmocka tests for src/chat/chat_text.c: the @mention
 * scanner (word boundaries, sentence-end dots, duplicates, the sender, name
 * length, the cap) and the FTS5 query builder (quoting, whitespace, empty).
 */
#include "chat/chat_text.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

static const char *members[] = {"alice", "bob", "bob.smith", "carol-1", "x", NULL};

static int is_member(void *ctx, const char *name, size_t len)
{
    (void)ctx;
    for (int i = 0; members[i]; i++)
        if (strlen(members[i]) == len && !memcmp(members[i], name, len)) return 1;
    return 0;
}

static char names[8][CHAT_TEXT_NAME_MAX + 1];

static uint32_t scan(const char *text, const char *from, uint32_t max)
{
    size_t n = strlen(text);
    char *copy = malloc(n ? n : 1); /* exactly sized: no NUL to lean on */
    assert_non_null(copy);
    memcpy(copy, text, n);
    uint32_t got = chat_text_mentions(copy, n, from, is_member, NULL, names, max);
    free(copy);
    return got;
}

static void test_mentions_basic(void **state)
{
    (void)state;
    assert_int_equal(scan("hi @alice and @bob", "zed", 8), 2);
    assert_string_equal(names[0], "alice");
    assert_string_equal(names[1], "bob");
    assert_int_equal(scan("@alice", "zed", 8), 1);
    assert_int_equal(scan("no mention here", "zed", 8), 0);
    assert_int_equal(scan("", "zed", 8), 0);
    assert_int_equal(scan("@", "zed", 8), 0);
    assert_int_equal(scan("@@@@", "zed", 8), 0);
}

static void test_mentions_boundaries(void **state)
{
    (void)state;
    assert_int_equal(scan("mail alice@bob today", "zed", 8), 0); /* an address, not a mention */
    assert_int_equal(scan("(@alice)", "zed", 8), 1);
    assert_int_equal(scan("@alicex", "zed", 8), 0);              /* not a prefix match */
    assert_int_equal(scan("@nobody @alice", "zed", 8), 1);
    assert_string_equal(names[0], "alice");
}

static void test_mentions_dots(void **state)
{
    (void)state;
    assert_int_equal(scan("thanks @bob.", "zed", 8), 1);
    assert_string_equal(names[0], "bob");
    assert_int_equal(scan("thanks @bob...", "zed", 8), 1);
    assert_string_equal(names[0], "bob");
    assert_int_equal(scan("ask @bob.smith.", "zed", 8), 1);
    assert_string_equal(names[0], "bob.smith");
    assert_int_equal(scan("@carol-1, hi", "zed", 8), 1);
    assert_string_equal(names[0], "carol-1");
}

static void test_mentions_dedup_sender_cap(void **state)
{
    (void)state;
    assert_int_equal(scan("@bob @bob @alice @bob", "zed", 8), 2);
    assert_int_equal(scan("@alice @bob", "alice", 8), 1); /* not the sender */
    assert_string_equal(names[0], "bob");
    assert_int_equal(scan("@alice @bob @x", "zed", 2), 2); /* the cap */
    assert_int_equal(scan("@alice", NULL, 8), 1);
}

static void test_mentions_long_names(void **state)
{
    (void)state;
    char t[128];
    /* a run longer than any name is no mention, even if a member's name is its prefix */
    snprintf(t, sizeof t, "@x%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    assert_int_equal(scan(t, "zed", 8), 0);
    snprintf(t, sizeof t, "@%s", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx."); /* 33 chars + '.' */
    assert_int_equal(scan(t, "zed", 8), 0);
}

static void test_fts_match(void **state)
{
    (void)state;
    char *q = chat_text_fts_match("hello world");
    assert_string_equal(q, "\"hello\" \"world\"");
    free(q);
    q = chat_text_fts_match("  say \"hi\" \t\n");
    assert_string_equal(q, "\"say\" \"\"\"hi\"\"\"");
    free(q);
    q = chat_text_fts_match("NEAR(a b) OR c*");
    assert_string_equal(q, "\"NEAR(a\" \"b)\" \"OR\" \"c*\"");
    free(q);
    assert_null(chat_text_fts_match(""));
    assert_null(chat_text_fts_match(" \t\r\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mentions_basic),
        cmocka_unit_test(test_mentions_boundaries),
        cmocka_unit_test(test_mentions_dots),
        cmocka_unit_test(test_mentions_dedup_sender_cap),
        cmocka_unit_test(test_mentions_long_names),
        cmocka_unit_test(test_fts_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for util/json_esc.c: every escape of RFC 8259 §7, and the
 * output parses back (with jansson) to the input for all byte values. */
#include "util/json_esc.c"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>

static void check(const char *in, size_t n, const char *want)
{
    buf_t b = {0};
    assert_int_equal(json_esc_append(&b, in, n), 0);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    buf_free(&b);
}

static void test_escapes(void **state)
{
    (void)state;
    check("", 0, "\"\"");
    check("plain", 5, "\"plain\"");
    check("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    check("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    check("\x01\x1f", 2, "\"\\u0001\\u001f\"");
    check("caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""); /* UTF-8 passes through */
    check("x\0y", 3, "\"x\\u0000y\"");
    check("/<>", 3, "\"/<>\"");
}

static void test_round_trip_all_ascii(void **state)
{
    (void)state;
    char in[128];
    for (int i = 0; i < 128; i++) in[i] = (char)(i ? i : 'z');
    buf_t b = {0};
    assert_int_equal(json_esc_append(&b, in, sizeof in), 0);
    json_error_t err;
    json_t *v = json_loadb(b.data, b.len, JSON_DECODE_ANY, &err);
    assert_non_null(v);
    assert_int_equal(json_string_length(v), sizeof in);
    assert_memory_equal(json_string_value(v), in, sizeof in);
    json_decref(v);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_round_trip_all_ascii),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for auth/auth_jwt.c: HS256 round trip (RFC 7519), the RFC 7515
 * appendix A.1 style of check, tampering, alg confusion, expiry. */
#include "auth/auth_jwt.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static void test_round_trip(void **state)
{
    (void)state;
    char tok[512], user[AUTH_USER_MAX + 1];
    int64_t exp = 0;
    int n = auth_token_mint("s3cret", "alice", 1000, 2000, tok, sizeof tok);
    assert_true(n > 0);
    assert_int_equal(auth_token_verify("s3cret", tok, (size_t)n, 1500, user, &exp), 0);
    assert_string_equal(user, "alice");
    assert_int_equal(exp, 2000);
    /* expired at exp */
    assert_int_equal(auth_token_verify("s3cret", tok, (size_t)n, 2000, user, &exp), SORI_EPERM);
    /* another secret */
    assert_int_equal(auth_token_verify("other", tok, (size_t)n, 1500, user, &exp), SORI_EINVAL);
}

static void test_known_token(void **state)
{
    (void)state;
    /* Made independently (Python: hmac + base64url) for secret "k", sub "bob", exp 4102444800. */
    const char *tok = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib2IiLCJpYXQiOjAsImV4cCI6NDEwMjQ0NDgwMH0."
                      "gt9iBWGr4lR0juiAP96wdiac1IGbG8bPZfM9W1qmolE";
    char user[AUTH_USER_MAX + 1];
    int64_t exp;
    assert_int_equal(auth_token_verify("k", tok, strlen(tok), 1700000000, user, &exp), 0);
    assert_string_equal(user, "bob");
}

static void test_tampering(void **state)
{
    (void)state;
    char tok[512], user[AUTH_USER_MAX + 1];
    int n = auth_token_mint("k", "alice", 0, 4102444800LL, tok, sizeof tok);
    /* flip one character in the claims */
    char *dot = strchr(tok, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_token_verify("k", tok, (size_t)n, 1, user, NULL), SORI_EINVAL);
    /* alg none with an empty signature */
    const char *none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6NDEwMjQ0NDgwMH0.";
    assert_int_equal(auth_token_verify("k", none, strlen(none), 1, user, NULL), SORI_EINVAL);
    assert_int_equal(auth_token_verify("k", "abc", 3, 1, user, NULL), SORI_EINVAL);
    assert_int_equal(auth_token_verify("k", "a.b.c.d", 7, 1, user, NULL), SORI_EINVAL);
    assert_int_equal(auth_token_verify("k", "", 0, 1, user, NULL), SORI_EINVAL);
}

static void test_bad_users_not_minted(void **state)
{
    (void)state;
    char tok[512];
    assert_int_equal(auth_token_mint("k", "bad name", 0, 1, tok, sizeof tok), SORI_EINVAL);
    assert_int_equal(auth_token_mint("k", "", 0, 1, tok, sizeof tok), SORI_EINVAL);
    assert_int_equal(auth_token_mint("k", "alice", 0, 1, tok, 10), SORI_E2BIG);
    assert_int_equal(auth_valid_user("a.b-c_D9", 8), 1);
    assert_int_equal(auth_valid_user("\"x", 2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_known_token),
        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_bad_users_not_minted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

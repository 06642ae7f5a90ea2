/* Unit tests for util/base64.c: RFC 4648 §10 test vectors, the URL alphabet
 * (§5) and strict decoding. */
#include "util/base64.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char enc[16];
        unsigned char dec[16];
        size_t n = base64_encode((const unsigned char *)in[i], strlen(in[i]), enc, 0);
        assert_int_equal(n, strlen(out[i]));
        assert_string_equal(enc, out[i]);
        int d = base64_decode(out[i], strlen(out[i]), dec, sizeof dec, 0);
        assert_int_equal(d, (int)strlen(in[i]));
        assert_memory_equal(dec, in[i], strlen(in[i]));
    }
}

static void test_url_alphabet_unpadded(void **state)
{
    (void)state;
    const unsigned char raw[] = {0xfb, 0xff, 0xbf, 0x01};
    char enc[16];
    size_t n = base64_encode(raw, sizeof raw, enc, 1);
    assert_string_equal(enc, "-_-_AQ");
    assert_int_equal(n, 6);
    unsigned char dec[8];
    assert_int_equal(base64_decode(enc, n, dec, sizeof dec, 1), 4);
    assert_memory_equal(dec, raw, 4);
}

static void test_strict_decoding(void **state)
{
    (void)state;
    unsigned char dec[32];
    assert_int_equal(base64_decode("Zg=", 3, dec, sizeof dec, 0), SORI_EINVAL);   /* length */
    assert_int_equal(base64_decode("Z===", 4, dec, sizeof dec, 0), SORI_EINVAL);  /* too much padding */
    assert_int_equal(base64_decode("Zh==", 4, dec, sizeof dec, 0), SORI_EINVAL);  /* trailing bits */
    assert_int_equal(base64_decode("Zm 9", 4, dec, sizeof dec, 0), SORI_EINVAL);  /* whitespace */
    assert_int_equal(base64_decode("Zm-9", 4, dec, sizeof dec, 0), SORI_EINVAL);  /* url char in std */
    assert_int_equal(base64_decode("Zm+9", 4, dec, sizeof dec, 1), SORI_EINVAL);  /* std char in url */
    assert_int_equal(base64_decode("Z", 1, dec, sizeof dec, 1), SORI_EINVAL);     /* 1 char left */
    assert_int_equal(base64_decode("Zm9vYmFy", 8, dec, 5, 0), SORI_E2BIG);
    /* the RFC 6455 §1.3 handshake key decodes to 16 bytes */
    assert_int_equal(base64_decode("dGhlIHNhbXBsZSBub25jZQ==", 24, dec, sizeof dec, 0), 16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_url_alphabet_unpadded),
        cmocka_unit_test(test_strict_decoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

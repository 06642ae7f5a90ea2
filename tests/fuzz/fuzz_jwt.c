/*
 * fuzz_jwt.c: libFuzzer target for src/auth/auth_jwt.c (auth_token_verify).
 * A forged token stops at the HMAC, so the input is used twice: (1) as a raw
 * token, which must be refused (SORI_EINVAL, or SORI_EPERM when it is a
 * real signed token that has expired); and (2) split at the first 0xFF byte
 * into a header and a claims part (raw bytes, usually JSON), each
 * base64url-encoded and signed with the target's secret, so the verifier's
 * base64 and JSON parsing of both parts is reached with any bytes. A token
 * that verifies must name a valid user (checked against auth_valid_user and
 * against the claims parsed again here), carry exp > now, and say alg HS256.
 * Parts are capped at 1500 bytes each (tokens are at most 4 KiB).
 */
#include "auth/auth.h"
#include "util/base64.h"
#include "util/err.h"

#include <jansson.h>
#include <openssl/hmac.h>
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

#define SECRET "fuzz-secret"
#define NOW 1700000000LL
#define PART_MAX 1500

static void check_ok(const char *user, int64_t exp)
{
    CHECK(memchr(user, '\0', AUTH_USER_MAX + 1) != NULL);
    CHECK(auth_valid_user(user, strlen(user)));
    CHECK(exp > NOW);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char user[AUTH_USER_MAX + 1];
    int64_t exp = 0;

    /* (1) The input as a token: no valid signature can be guessed. */
    int rc = auth_token_verify(SECRET, (const char *)data, size, NOW, user, &exp);
    CHECK(rc == SORI_EINVAL || rc == SORI_EPERM || rc == 0);
    if (rc == 0) check_ok(user, exp);

    /* (2) Header and claims from the input, signed here. */
    const uint8_t *cut = memchr(data, 0xFF, size);
    size_t hl = cut ? (size_t)(cut - data) : 0;
    const uint8_t *claims = cut ? cut + 1 : data;
    size_t cl = cut ? size - hl - 1 : size;
    if (!cut) hl = 0;
    if (hl > PART_MAX || cl > PART_MAX) return 0;
    static const char def_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    const uint8_t *header = cut ? data : (const uint8_t *)def_header;
    if (!cut) hl = sizeof def_header - 1;

    char tok[BASE64_LEN(PART_MAX) * 2 + BASE64_LEN(32) + 8];
    size_t n = base64_encode(header, hl, tok, 1);
    tok[n++] = '.';
    n += base64_encode(claims, cl, tok + n, 1);
    unsigned char mac[32];
    unsigned mlen = 0;
    CHECK(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, n, mac, &mlen));
    tok[n++] = '.';
    n += base64_encode(mac, 32, tok + n, 1);

    /* An exactly sized heap copy, so ASan sees any read past the end. */
    char *copy = malloc(n);
    CHECK(copy != NULL);
    memcpy(copy, tok, n);
    memset(user, 'Z', sizeof user);
    rc = auth_token_verify(SECRET, copy, n, NOW, user, &exp);
    CHECK(rc == 0 || rc == SORI_EINVAL || rc == SORI_EPERM);
    if (rc == 0) {
        check_ok(user, exp);
        /* The verifier's user is exactly the claims' sub, alg is HS256. */
        json_t *c = json_loadb((const char *)claims, cl, 0, NULL);
        json_t *h = json_loadb((const char *)header, hl, 0, NULL);
        json_t *sub = json_object_get(c, "sub");
        CHECK(json_is_string(sub) && json_string_length(sub) == strlen(user) &&
              memcmp(json_string_value(sub), user, strlen(user)) == 0);
        CHECK(json_integer_value(json_object_get(c, "exp")) == exp);
        CHECK(json_is_string(json_object_get(h, "alg")) &&
              !strcmp(json_string_value(json_object_get(h, "alg")), "HS256"));
        json_decref(c);
        json_decref(h);
    }
    /* A flipped signature byte is always refused. */
    copy[n - 1] = copy[n - 1] == 'A' ? 'B' : 'A';
    CHECK(auth_token_verify(SECRET, copy, n, NOW, user, &exp) == SORI_EINVAL);
    free(copy);
    return 0;
}

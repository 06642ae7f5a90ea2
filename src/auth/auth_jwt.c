/*
 * auth_jwt.c: HS256 JSON Web Tokens.
 *
 * Tokens are base64url(header) "." base64url(claims) "." base64url(HMAC-
 * SHA256(secret, first two parts)). Verification recomputes the MAC and
 * compares in constant time before it parses anything, so a forged token
 * costs one HMAC. Limits: tokens up to 4 KiB; clock skew is not forgiven
 * (exp is compared with the server clock as is).
 */
#include "auth/auth.h"
#include "util/base64.h"
#include "util/err.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#define JWT_MAX 4096

int auth_valid_user(const char *name, size_t len)
{
    if (len < 1 || len > AUTH_USER_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

static int jwt__mac(const char *secret, const char *data, size_t len, unsigned char mac[32])
{
    unsigned int mlen = 0;
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)data, len, mac, &mlen) ||
        mlen != 32)
        return SORI_EIO;
    return 0;
}

int auth_token_mint(const char *secret, const char *user, int64_t iat, int64_t exp, char *out,
                    size_t cap)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char claims[160];
    int cl = snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"iat\":%lld,\"exp\":%lld}", user,
                      (long long)iat, (long long)exp);
    if (cl < 0 || (size_t)cl >= sizeof claims || !auth_valid_user(user, strlen(user))) return SORI_EINVAL;
    size_t need = BASE64_LEN(sizeof header) + BASE64_LEN((size_t)cl) + BASE64_LEN(32) + 3;
    if (cap < need) return SORI_E2BIG;
    size_t n = base64_encode((const unsigned char *)header, sizeof header - 1, out, 1);
    out[n++] = '.';
    n += base64_encode((const unsigned char *)claims, (size_t)cl, out + n, 1);
    unsigned char mac[32];
    if (jwt__mac(secret, out, n, mac)) return SORI_EIO;
    out[n++] = '.';
    n += base64_encode(mac, 32, out + n, 1);
    return (int)n;
}

int auth_token_verify(const char *secret, const char *token, size_t len, int64_t now, char *user,
                      int64_t *exp)
{
    if (len == 0 || len > JWT_MAX) return SORI_EINVAL;
    const char *dot1 = memchr(token, '.', len);
    if (!dot1) return SORI_EINVAL;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token))) return SORI_EINVAL;

    unsigned char sig[40], mac[32];
    if (base64_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), sig, sizeof sig, 1) != 32) return SORI_EINVAL;
    if (jwt__mac(secret, token, (size_t)(dot2 - token), mac)) return SORI_EIO;
    if (CRYPTO_memcmp(sig, mac, 32) != 0) return SORI_EINVAL;

    unsigned char part[JWT_MAX];
    int hl = base64_decode(token, (size_t)(dot1 - token), part, sizeof part, 1);
    if (hl < 0) return SORI_EINVAL;
    json_t *h = json_loadb((const char *)part, (size_t)hl, 0, NULL);
    const char *alg = json_string_value(json_object_get(h, "alg"));
    int alg_ok = alg && strcmp(alg, "HS256") == 0;
    json_decref(h);
    if (!alg_ok) return SORI_EINVAL;

    int pl = base64_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), part, sizeof part, 1);
    if (pl < 0) return SORI_EINVAL;
    json_t *c = json_loadb((const char *)part, (size_t)pl, 0, NULL);
    const char *sub = json_string_value(json_object_get(c, "sub"));
    json_t *jexp = json_object_get(c, "exp");
    int rc = 0;
    if (!sub || !auth_valid_user(sub, strlen(sub)) || !json_is_integer(jexp)) {
        rc = SORI_EINVAL;
    } else if (json_integer_value(jexp) <= now) {
        rc = SORI_EPERM;
    } else {
        memcpy(user, sub, strlen(sub) + 1);
        if (exp) *exp = json_integer_value(jexp);
    }
    json_decref(c);
    return rc;
}

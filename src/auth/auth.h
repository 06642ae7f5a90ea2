/*
 * auth.h: identity. JWT HS256 tokens (RFC 7519 with RFC 7515 JWS compact
 * serialization): any backend holding the server's secret can mint them;
 * the server only verifies. Claims used: sub (user name), iat, exp.
 */
#ifndef SORI_AUTH_AUTH_H
#define SORI_AUTH_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_USER_MAX 32

/* Mints a token for user valid from iat to exp (seconds since the epoch)
 * into out (NUL-terminated). Returns its length or SORI_E2BIG. */
int auth_token_mint(const char *secret, const char *user, int64_t iat, int64_t exp, char *out,
                    size_t cap);

/*
 * Verifies token[0..len) against secret at time `now` (seconds): the header
 * must say alg HS256 (a token with alg "none" or any other is refused), the
 * signature must match (constant-time), exp must be in the future and sub a
 * valid user name. Returns 0 and fills user (AUTH_USER_MAX + 1 bytes) and
 * *exp; SORI_EINVAL when malformed or badly signed; SORI_EPERM when expired.
 * Pure: no allocation outside jansson's parse of the two JSON parts.
 */
int auth_token_verify(const char *secret, const char *token, size_t len, int64_t now, char *user,
                      int64_t *exp);

/* ---- passwords (auth_pw.c): blocking, run them on the thread pool ---- */

#define AUTH_PW_HASH_MAX 128 /* crypto_pwhash_STRBYTES */
/* Once at startup: 0 or SORI_EIO. */
int auth_pw_init(void);
/* An argon2id string for pw[0..len) into out (cap >= AUTH_PW_HASH_MAX). */
int auth_pw_hash(const char *pw, size_t len, char *out, size_t cap);
/* 0 if pw matches hash, SORI_EPERM if not. hash NULL (no such account)
 * costs the same and fails. */
int auth_pw_verify(const char *hash, const char *pw, size_t len);

/* 1 if name is a valid user name: [A-Za-z0-9_.-]{1,32}. */
int auth_valid_user(const char *name, size_t len);

#endif

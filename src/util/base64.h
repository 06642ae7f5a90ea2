/*
 * base64.h: RFC 4648 base64 (§4, padded) and base64url (§5, unpadded, as JWTs
 * use). Pure functions over caller buffers.
 */
#ifndef SORI_UTIL_BASE64_H
#define SORI_UTIL_BASE64_H

#include <stddef.h>

/* Encoded length of n bytes (padded form), not counting a NUL. */
#define BASE64_LEN(n) ((((n) + 2) / 3) * 4)

/* Encodes n bytes into out (BASE64_LEN(n) + 1 bytes), NUL-terminated.
 * url = 1 uses the URL alphabet without padding. Returns the length. */
size_t base64_encode(const unsigned char *in, size_t n, char *out, int url);

/* Decodes into out[0..cap). Padded standard form when url = 0 (length a
 * multiple of 4), unpadded URL form when url = 1. Returns the decoded length,
 * SORI_EINVAL on a bad character, padding or length, SORI_E2BIG if it does
 * not fit. Non-zero trailing bits are rejected (canonical form only). */
int base64_decode(const char *in, size_t n, unsigned char *out, size_t cap, int url);

#endif

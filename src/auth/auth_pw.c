/*
 * auth_pw.c: password hashes, argon2id through libsodium.
 *
 * crypto_pwhash_str with the INTERACTIVE limits (2 passes, 64 MiB): about
 * 0.1-0.3 s and 64 MiB per call on the test VM, which is why callers run it
 * on the libuv thread pool (4 threads: at most 256 MiB at once), never on a
 * worker loop. Verification is libsodium's, in constant time for a given
 * hash; a login for a name without an account verifies against a fixed
 * hash so that both answers take as long.
 */
#include "auth/auth.h"
#include "util/err.h"

#include <sodium.h>
#include <string.h>

int auth_pw_init(void) { return sodium_init() < 0 ? SORI_EIO : 0; }

int auth_pw_hash(const char *pw, size_t len, char *out, size_t cap)
{
    if (cap < crypto_pwhash_STRBYTES) return SORI_E2BIG;
    char tmp[crypto_pwhash_STRBYTES];
    if (crypto_pwhash_str_alg(tmp, pw, len, crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return SORI_ENOMEM;
    memcpy(out, tmp, strlen(tmp) + 1);
    return 0;
}

int auth_pw_verify(const char *hash, const char *pw, size_t len)
{
    static char dummy[crypto_pwhash_STRBYTES];
    static int have_dummy;
    if (!hash) {
        /* the same cost as a real verification, and always a failure */
        if (!__atomic_load_n(&have_dummy, __ATOMIC_ACQUIRE)) {
            char tmp[crypto_pwhash_STRBYTES];
            if (crypto_pwhash_str_alg(tmp, "sori-no-such-account", 20, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                      crypto_pwhash_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13) == 0 &&
                !__atomic_exchange_n(&have_dummy, 2, __ATOMIC_ACQ_REL))
                memcpy(dummy, tmp, sizeof tmp);
        }
        if (__atomic_load_n(&have_dummy, __ATOMIC_ACQUIRE) && crypto_pwhash_str_verify(dummy, pw, len) == 0)
            return SORI_EPERM; /* cannot match; the same cost either way */
        return SORI_EPERM;
    }
    return crypto_pwhash_str_verify(hash, pw, len) == 0 ? 0 : SORI_EPERM;
}

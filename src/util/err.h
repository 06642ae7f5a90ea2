/*
 * err.h: sori's result codes.
 *
 * Every function that can fail returns 0 (or a byte count) on success and a
 * negative SORI_E* code on failure. Setup functions also fill a caller's
 * `char *err, size_t errlen` with a sentence naming what went wrong.
 */
#ifndef SORI_UTIL_ERR_H
#define SORI_UTIL_ERR_H

enum {
    SORI_OK = 0,
    SORI_EAGAIN = -1,   /* need more input / try later */
    SORI_EINVAL = -2,   /* malformed input */
    SORI_E2BIG = -3,    /* input over a configured limit */
    SORI_ENOMEM = -4,   /* allocation failed */
    SORI_EIO = -5,      /* system call failed */
    SORI_ENOTFOUND = -6,
    SORI_EPERM = -7,
    SORI_ECLOSED = -8,  /* peer or connection is gone */
    SORI_EUTF8 = -9,    /* invalid UTF-8 */
    SORI_ELIMIT = -10,  /* a rate or count limit was hit */
    SORI_EEXIST = -11,  /* already exists */
};

const char *sori_strerror(int code);

#endif

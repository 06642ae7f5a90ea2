/*
 * clock.h: wall-clock milliseconds since the Unix epoch (message ts, token
 * times, rate-limit buckets). One definition for every module.
 */
#ifndef SORI_UTIL_CLOCK_H
#define SORI_UTIL_CLOCK_H

#include <stdint.h>
#include <sys/time.h>

static inline int64_t clock_now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

#endif

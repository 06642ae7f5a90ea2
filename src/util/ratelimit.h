/*
 * ratelimit.h: fixed-window counters by key (login attempts per name and
 * per address, signups per address). Thread-safe (one mutex per table).
 * Bounded: at most `max_keys` keys; when full, expired windows are swept,
 * and if none expired the new key is not tracked (the request is allowed and
 * the table does not grow: an attacker can spend memory only up to the cap).
 */
#ifndef SORI_UTIL_RATELIMIT_H
#define SORI_UTIL_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "util/map.h"

typedef struct {
    uv_mutex_t lock;
    map_t keys; /* key -> ratelimit_win_t* */
    size_t max_keys;
    int64_t window_ms;
} ratelimit_t;

void ratelimit_init(ratelimit_t *rl, int64_t window_ms, size_t max_keys);
void ratelimit_free(ratelimit_t *rl);
/* Counts one hit of key at now_ms. 0 if within limit per window, else
 * SORI_ELIMIT with *retry_after_s (>= 1) set. */
int ratelimit_hit(ratelimit_t *rl, const char *key, int limit, int64_t now_ms, int *retry_after_s);

#endif

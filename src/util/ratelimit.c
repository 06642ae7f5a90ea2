/*
 * ratelimit.c: see ratelimit.h. A window is {start, count}; a hit in a
 * window older than window_ms starts a new one. Sweeps are O(keys) and run
 * only when the table is full.
 */
#include "util/ratelimit.h"
#include "util/err.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t start;
    int count;
} ratelimit_win_t;

void ratelimit_init(ratelimit_t *rl, int64_t window_ms, size_t max_keys)
{
    memset(rl, 0, sizeof *rl);
    uv_mutex_init(&rl->lock);
    rl->window_ms = window_ms;
    rl->max_keys = max_keys;
}

static void ratelimit__free_one(const char *k, size_t kl, void *v, void *arg)
{
    (void)k, (void)kl, (void)arg;
    free(v);
}

void ratelimit_free(ratelimit_t *rl)
{
    map_each(&rl->keys, ratelimit__free_one, NULL);
    map_free(&rl->keys);
    uv_mutex_destroy(&rl->lock);
}

typedef struct {
    ratelimit_t *rl;
    int64_t now;
    char (*expired)[128];
    size_t n, cap;
} ratelimit_sweep_t;

static void ratelimit__find_expired(const char *k, size_t kl, void *v, void *arg)
{
    ratelimit_sweep_t *sw = arg;
    ratelimit_win_t *w = v;
    if (sw->now - w->start >= sw->rl->window_ms && sw->n < sw->cap && kl < 128) {
        memcpy(sw->expired[sw->n], k, kl);
        sw->expired[sw->n++][kl] = 0;
    }
}

int ratelimit_hit(ratelimit_t *rl, const char *key, int limit, int64_t now_ms, int *retry_after_s)
{
    size_t kl = strlen(key);
    if (kl >= 128) kl = 127;
    int rc = 0;
    uv_mutex_lock(&rl->lock);
    ratelimit_win_t *w = map_get(&rl->keys, key, kl);
    if (!w && rl->keys.count >= rl->max_keys) {
        ratelimit_sweep_t sw = {rl, now_ms, malloc(1024 * 128), 0, 1024};
        if (sw.expired) {
            map_each(&rl->keys, ratelimit__find_expired, &sw);
            for (size_t i = 0; i < sw.n; i++) free(map_del(&rl->keys, sw.expired[i], strlen(sw.expired[i])));
            free(sw.expired);
        }
    }
    if (!w && rl->keys.count < rl->max_keys && (w = calloc(1, sizeof *w))) {
        w->start = now_ms;
        if (map_put(&rl->keys, key, kl, w)) {
            free(w);
            w = NULL;
        }
    }
    if (w) {
        if (now_ms - w->start >= rl->window_ms) {
            w->start = now_ms;
            w->count = 0;
        }
        if (w->count >= limit) {
            int64_t left = w->start + rl->window_ms - now_ms;
            *retry_after_s = (int)((left + 999) / 1000);
            if (*retry_after_s < 1) *retry_after_s = 1;
            rc = SORI_ELIMIT;
        } else {
            w->count++;
        }
    }
    uv_mutex_unlock(&rl->lock);
    return rc;
}

/*
 * map.c: chained hash map with FNV-1a hashes. Buckets double when the count
 * reaches the bucket count (load factor 1), starting at 4. Entries hold a
 * copy of the key, so callers may pass stack keys.
 */
#include "util/map.h"
#include "util/err.h"

#include <stdlib.h>
#include <string.h>

static uint64_t map__hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)k[i]) * 1099511628211ULL;
    return h;
}

static map_entry_t **map__slot(const map_t *m, const char *key, size_t klen, uint64_t h)
{
    map_entry_t **p = &m->buckets[h & (m->nbuckets - 1)];
    while (*p && !((*p)->hash == h && (*p)->klen == klen && memcmp((*p)->key, key, klen) == 0))
        p = &(*p)->next;
    return p;
}

void *map_get(const map_t *m, const char *key, size_t klen)
{
    if (!m->nbuckets) return NULL;
    map_entry_t *e = *map__slot(m, key, klen, map__hash(key, klen));
    return e ? e->value : NULL;
}

static int map__grow(map_t *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 4; /* small: most maps are a user's few rooms */
    map_entry_t **b = calloc(n, sizeof *b);
    if (!b) return SORI_ENOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        map_entry_t *e = m->buckets[i];
        while (e) {
            map_entry_t *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
    return 0;
}

int map_put(map_t *m, const char *key, size_t klen, void *value)
{
    if (m->count >= m->nbuckets && map__grow(m)) return SORI_ENOMEM;
    uint64_t h = map__hash(key, klen);
    map_entry_t **p = map__slot(m, key, klen, h);
    if (*p) {
        (*p)->value = value;
        return 0;
    }
    map_entry_t *e = malloc(sizeof *e + klen + 1);
    if (!e) return SORI_ENOMEM;
    e->next = NULL;
    e->hash = h;
    e->value = value;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->key[klen] = 0;
    *p = e;
    m->count++;
    return 0;
}

void *map_del(map_t *m, const char *key, size_t klen)
{
    if (!m->nbuckets) return NULL;
    map_entry_t **p = map__slot(m, key, klen, map__hash(key, klen));
    map_entry_t *e = *p;
    if (!e) return NULL;
    void *v = e->value;
    *p = e->next;
    free(e);
    m->count--;
    return v;
}

void map_each(const map_t *m, void (*fn)(const char *key, size_t klen, void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (map_entry_t *e = m->buckets[i]; e; e = e->next) fn(e->key, e->klen, e->value, arg);
}

void map_free(map_t *m)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        map_entry_t *e = m->buckets[i];
        while (e) {
            map_entry_t *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = m->count = 0;
}

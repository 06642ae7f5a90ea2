/*
 * map.h: a string-keyed hash map of pointers (separate chaining, FNV-1a,
 * doubling at load 1). Keys are copied into the entries; values are
 * borrowed. Not thread-safe: the owner of a map says which lock guards it.
 */
#ifndef SORI_UTIL_MAP_H
#define SORI_UTIL_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct map_entry {
    struct map_entry *next;
    uint64_t hash;
    void *value;
    size_t klen;
    char key[];
} map_entry_t;

typedef struct {
    map_entry_t **buckets;
    size_t nbuckets; /* a power of two, or 0 */
    size_t count;
} map_t;

void *map_get(const map_t *m, const char *key, size_t klen);
/* Inserts or replaces; returns 0 or SORI_ENOMEM. */
int map_put(map_t *m, const char *key, size_t klen, void *value);
/* Removes and returns the value, or NULL. */
void *map_del(map_t *m, const char *key, size_t klen);
/* Calls fn for every entry (the map must not change during the walk). */
void map_each(const map_t *m, void (*fn)(const char *key, size_t klen, void *value, void *arg), void *arg);
void map_free(map_t *m);

#endif

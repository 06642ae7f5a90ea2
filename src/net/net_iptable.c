/*
 * net_iptable.c: open connections and a new-connection token bucket per
 * client address, for every worker at once (net_iptable.h).
 *
 * Owns one table: NET_IPT_SHARDS shards, each a mutex, a fixed pool of
 * entries and a chained hash over them (bucket heads and `next` are pool
 * indices + 1). Everything is allocated once at creation (capacity 65536
 * addresses in net_worker.c: 48 bytes each, about 3.3 MiB, most of it never
 * touched), so no address, however many an attacker has, grows memory.
 * A shard is locked only for one lookup (a chain walk), held by an accept
 * or a close, never across a call out.
 *
 * Keys: the 16-byte address; IPv6 addresses (not IPv4-mapped) are cut to
 * their /64, since one host usually owns a whole /64. The hash is seeded
 * per process, so chains cannot be aimed at.
 *
 * Invariants: an entry is in use while it counts an open connection or its
 * bucket is still refilling (`full_at_ms` in the future): an address that
 * connects and closes at once keeps its rate debt. An entry whose count is
 * 0 and whose bucket is full is dropped when its count reaches 0, when its
 * chain is walked, or when its shard is full and needs room. If a shard is
 * full of live addresses, a new address is let through uncounted
 * (NET_IPT_UNTRACKED) rather than refused: --max-connections still bounds
 * the total.
 */
#include "net/net_iptable.h"
#include "util/err.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NET_IPT_SHARDS 64

typedef struct {
    uint8_t key[16];
    uint32_t count;     /* open connections */
    uint32_t next;      /* chain or free list: index + 1, 0 = end */
    float tokens;       /* bucket level at last_ms */
    uint32_t pad;
    uint64_t last_ms;   /* when tokens was computed */
    uint64_t full_at_ms; /* the bucket is full again by then (0: full) */
} net_ipt_entry_t;

typedef struct {
    pthread_mutex_t mu;
    uint32_t *heads;          /* cap bucket heads */
    net_ipt_entry_t *entries; /* cap entries */
    uint32_t free_head;
    uint32_t used;
    char pad[64];
} net_ipt_shard_t;

struct net_iptable {
    uint32_t cap; /* per shard */
    uint64_t seed;
    net_ipt_shard_t shards[NET_IPT_SHARDS];
};

static uint64_t ipt__mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static const uint8_t ipt__v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int net_addr_is_loopback(const uint8_t a[16])
{
    static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (memcmp(a, ipt__v4mapped, 12) == 0) return a[12] == 127;
    return memcmp(a, one, 16) == 0;
}

static void ipt__key(const uint8_t addr[16], uint8_t key[16])
{
    memcpy(key, addr, 16);
    if (memcmp(addr, ipt__v4mapped, 12) != 0) memset(key + 8, 0, 8); /* IPv6: the /64 */
}

static uint64_t ipt__hash(const net_iptable_t *t, const uint8_t key[16])
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    return ipt__mix(a ^ t->seed) ^ ipt__mix(b + t->seed * 31);
}

net_iptable_t *net_iptable_new(uint32_t capacity)
{
    net_iptable_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cap = (capacity + NET_IPT_SHARDS - 1) / NET_IPT_SHARDS;
    if (t->cap < 1) t->cap = 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t->seed = ipt__mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)t);
    for (int i = 0; i < NET_IPT_SHARDS; i++) {
        net_ipt_shard_t *s = &t->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->heads = calloc(t->cap, sizeof *s->heads);
        s->entries = calloc(t->cap, sizeof *s->entries);
        if (!s->heads || !s->entries) {
            net_iptable_free(t);
            return NULL;
        }
        for (uint32_t j = 0; j < t->cap; j++) s->entries[j].next = j + 1 < t->cap ? j + 2 : 0;
        s->free_head = 1;
    }
    return t;
}

void net_iptable_free(net_iptable_t *t)
{
    if (!t) return;
    for (int i = 0; i < NET_IPT_SHARDS; i++) {
        pthread_mutex_destroy(&t->shards[i].mu);
        free(t->shards[i].heads);
        free(t->shards[i].entries);
    }
    free(t);
}

static int ipt__idle(const net_ipt_entry_t *e, uint64_t now_ms)
{
    return e->count == 0 && now_ms >= e->full_at_ms;
}

/* Unlinks entry idx (its predecessor link is *link) to the free list. */
static void ipt__drop(net_ipt_shard_t *s, uint32_t *link, uint32_t idx)
{
    net_ipt_entry_t *e = &s->entries[idx - 1];
    *link = e->next;
    e->next = s->free_head;
    s->free_head = idx;
    s->used--;
}

/* Drops every idle entry of the shard (when it is full). */
static void ipt__sweep(net_ipt_shard_t *s, uint32_t cap, uint64_t now_ms)
{
    for (uint32_t b = 0; b < cap; b++) {
        uint32_t *link = &s->heads[b];
        while (*link) {
            uint32_t idx = *link;
            if (ipt__idle(&s->entries[idx - 1], now_ms))
                ipt__drop(s, link, idx);
            else
                link = &s->entries[idx - 1].next;
        }
    }
}

/* Finds key in its chain, dropping idle entries met on the way. With the
 * shard locked. */
static net_ipt_entry_t *ipt__find(net_ipt_shard_t *s, uint32_t *head, const uint8_t key[16], uint64_t now_ms)
{
    uint32_t *link = head;
    while (*link) {
        uint32_t idx = *link;
        net_ipt_entry_t *e = &s->entries[idx - 1];
        if (memcmp(e->key, key, 16) == 0) return e;
        if (ipt__idle(e, now_ms))
            ipt__drop(s, link, idx);
        else
            link = &e->next;
    }
    return NULL;
}

int net_iptable_acquire(net_iptable_t *t, const uint8_t addr[16], uint64_t now_ms, uint32_t max_conns,
                        uint32_t rate, uint32_t burst)
{
    uint8_t key[16];
    ipt__key(addr, key);
    uint64_t h = ipt__hash(t, key);
    net_ipt_shard_t *s = &t->shards[h % NET_IPT_SHARDS];
    uint32_t b = (uint32_t)((h >> 8) % t->cap);
    if (burst < 1) burst = 1;
    pthread_mutex_lock(&s->mu);
    net_ipt_entry_t *e = ipt__find(s, &s->heads[b], key, now_ms);
    if (!e) {
        if (!s->free_head) ipt__sweep(s, t->cap, now_ms);
        if (!s->free_head) {
            pthread_mutex_unlock(&s->mu);
            return NET_IPT_UNTRACKED;
        }
        uint32_t idx = s->free_head;
        e = &s->entries[idx - 1];
        s->free_head = e->next;
        s->used++;
        memset(e, 0, sizeof *e);
        memcpy(e->key, key, 16);
        e->tokens = (float)burst;
        e->last_ms = now_ms;
        e->next = s->heads[b];
        s->heads[b] = idx;
    }
    int rc = 0;
    if (max_conns && e->count >= max_conns) {
        rc = SORI_ELIMIT;
    } else if (rate) {
        double tokens = e->tokens + (double)(now_ms - e->last_ms) * rate / 1000.0;
        if (now_ms < e->last_ms) tokens = e->tokens;
        if (tokens > burst) tokens = burst;
        e->last_ms = now_ms;
        if (tokens < 1) {
            rc = SORI_EAGAIN;
        } else {
            tokens -= 1;
        }
        e->tokens = (float)tokens;
        e->full_at_ms = now_ms + (uint64_t)((burst - tokens) * 1000.0 / rate) + 1;
    } else {
        e->tokens = (float)burst;
        e->full_at_ms = 0;
    }
    if (rc == 0) e->count++;
    if (rc && ipt__idle(e, now_ms)) {
        uint32_t *link = &s->heads[b];
        while (*link && &s->entries[*link - 1] != e) link = &s->entries[*link - 1].next;
        if (*link) ipt__drop(s, link, *link);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void net_iptable_release(net_iptable_t *t, const uint8_t addr[16], uint64_t now_ms)
{
    uint8_t key[16];
    ipt__key(addr, key);
    uint64_t h = ipt__hash(t, key);
    net_ipt_shard_t *s = &t->shards[h % NET_IPT_SHARDS];
    uint32_t b = (uint32_t)((h >> 8) % t->cap);
    pthread_mutex_lock(&s->mu);
    uint32_t *link = &s->heads[b];
    while (*link && memcmp(s->entries[*link - 1].key, key, 16) != 0) link = &s->entries[*link - 1].next;
    if (*link) {
        net_ipt_entry_t *e = &s->entries[*link - 1];
        if (e->count) e->count--;
        if (ipt__idle(e, now_ms)) ipt__drop(s, link, *link);
    }
    pthread_mutex_unlock(&s->mu);
}

uint32_t net_iptable_count(net_iptable_t *t, const uint8_t addr[16])
{
    uint8_t key[16];
    ipt__key(addr, key);
    uint64_t h = ipt__hash(t, key);
    net_ipt_shard_t *s = &t->shards[h % NET_IPT_SHARDS];
    uint32_t b = (uint32_t)((h >> 8) % t->cap);
    pthread_mutex_lock(&s->mu);
    uint32_t n = 0;
    for (uint32_t i = s->heads[b]; i; i = s->entries[i - 1].next)
        if (memcmp(s->entries[i - 1].key, key, 16) == 0) n = s->entries[i - 1].count;
    pthread_mutex_unlock(&s->mu);
    return n;
}

size_t net_iptable_size(net_iptable_t *t)
{
    size_t n = 0;
    for (int i = 0; i < NET_IPT_SHARDS; i++) {
        pthread_mutex_lock(&t->shards[i].mu);
        n += t->shards[i].used;
        pthread_mutex_unlock(&t->shards[i].mu);
    }
    return n;
}

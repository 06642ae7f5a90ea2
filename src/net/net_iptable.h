/*
 * net_iptable.h: open connections and new-connection rate per client
 * address, shared by every worker (the same address lands on different
 * workers through SO_REUSEPORT). See net_iptable.c for the numbers.
 */
#ifndef SORI_NET_IPTABLE_H
#define SORI_NET_IPTABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct net_iptable net_iptable_t;

/* A table of at most `capacity` addresses (rounded up to a multiple of its
 * shards). NULL when out of memory. Free with net_iptable_free. */
net_iptable_t *net_iptable_new(uint32_t capacity);
void net_iptable_free(net_iptable_t *t);

/* Result of net_iptable_acquire besides 0 and the SORI_E* refusals. */
enum { NET_IPT_UNTRACKED = 1 };

/*
 * Counts a new connection from addr (16 bytes, IPv4-mapped or IPv6; IPv6
 * addresses count by their /64). now_ms: a monotonic clock in ms. Limits:
 * max_conns open at once (0: none), rate new connections per second with a
 * burst of `burst` (rate 0: none). Returns 0 (counted: call
 * net_iptable_release once when the connection ends), NET_IPT_UNTRACKED
 * (the table is full of live addresses: allowed, not counted, release
 * must not be called), SORI_ELIMIT (max_conns open already) or SORI_EAGAIN
 * (over the rate). Thread-safe; never calls back.
 */
int net_iptable_acquire(net_iptable_t *t, const uint8_t addr[16], uint64_t now_ms, uint32_t max_conns,
                        uint32_t rate, uint32_t burst);
/* Ends a counted connection from addr. Thread-safe. */
void net_iptable_release(net_iptable_t *t, const uint8_t addr[16], uint64_t now_ms);
/* Open connections counted for addr (tests, diagnostics). */
uint32_t net_iptable_count(net_iptable_t *t, const uint8_t addr[16]);
/* Addresses held (entries in use). */
size_t net_iptable_size(net_iptable_t *t);
/* 1 for 127.0.0.0/8 (IPv4-mapped) and ::1. */
int net_addr_is_loopback(const uint8_t addr[16]);

#endif

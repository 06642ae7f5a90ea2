/*
 * memwatch.h: the process's resident memory, sampled once a second, and the
 * high-water mark over which new work is refused (--memory-high-water).
 */
#ifndef SORI_UTIL_MEMWATCH_H
#define SORI_UTIL_MEMWATCH_H

#include <stdint.h>

/* Works out the automatic mark (80% of the smaller of physical memory and
 * the cgroup v2 memory.max) and takes a first sample. Call once at
 * startup, before serving; reads /proc and /sys (not on a worker loop). */
void memwatch_init(void);
/* Reads /proc/self/statm into the stored sample. Call from one thread
 * (the main loop's 1-second timer). 0 or SORI_EIO. */
int memwatch_sample(void);
/* The last sample, in bytes (any thread, lock-free). */
uint64_t memwatch_rss(void);
/* The mark in force: --memory-high-water, or the automatic one when it is
 * 0 (read at every call: a reload applies at once). */
uint64_t memwatch_high_water(void);
/* 1 while the last sample is over the mark (any thread, lock-free). */
int memwatch_over(void);

#endif

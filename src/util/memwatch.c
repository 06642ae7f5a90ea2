/*
 * memwatch.c: resident memory and the high-water mark (memwatch.h).
 *
 * Owns two atomics: the last RSS sample (bytes) and the automatic mark. The
 * main thread samples /proc/self/statm once a second (one small read of
 * procfs, about 10 us; never on a worker loop); workers, the command layer
 * and REST only load the atomics, so asking "over the mark?" costs one
 * relaxed load and a compare. The automatic mark (--memory-high-water 0) is
 * 80% of the smaller of physical memory (sysconf) and the cgroup v2 limit
 * (/sys/fs/cgroup/memory.max, when it is a number), computed once at start:
 * the point is to refuse new work with a clear `unavailable` before the
 * kernel's OOM killer ends every connection at once. A sample is at most a
 * second old, so a burst can overshoot the mark by what it allocates in a
 * second.
 */
#include "util/memwatch.h"
#include "util/config.h"
#include "util/err.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static _Atomic uint64_t memwatch__rss;
static _Atomic uint64_t memwatch__auto;

void memwatch_init(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    uint64_t ram = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
    if (f) {
        unsigned long long lim;
        if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && (ram == 0 || lim < ram)) ram = lim;
        fclose(f);
    }
    atomic_store_explicit(&memwatch__auto, ram / 10 * 8, memory_order_relaxed);
    memwatch_sample();
}

int memwatch_sample(void)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return SORI_EIO;
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return SORI_EIO;
    buf[n] = 0;
    unsigned long long size, resident;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2) return SORI_EIO;
    atomic_store_explicit(&memwatch__rss, resident * (uint64_t)sysconf(_SC_PAGESIZE), memory_order_relaxed);
    return 0;
}

uint64_t memwatch_rss(void) { return atomic_load_explicit(&memwatch__rss, memory_order_relaxed); }

uint64_t memwatch_high_water(void)
{
    int64_t set = CONFIG_GET(memory_high_water);
    return set > 0 ? (uint64_t)set : atomic_load_explicit(&memwatch__auto, memory_order_relaxed);
}

int memwatch_over(void)
{
    uint64_t mark = memwatch_high_water();
    return mark && memwatch_rss() > mark;
}

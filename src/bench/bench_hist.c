/*
 * bench_hist.c: the bench's latency histogram, log-linear like HdrHistogram
 * with three significant digits. Values 0..2047 have a bucket each; from 2048
 * on, each power of two [2^e, 2^(e+1)) is split into 1024 equal buckets, so a
 * value is known to within 1/1024 of itself. Adding is a count-leading-zeros,
 * a shift and an increment; there is no allocation and no floating point on
 * that path. Percentiles walk the buckets once.
 */
#include "bench/bench.h"

#include <string.h>

#define SUB (1u << BENCH_HIST_SUB_BITS) /* 1024 buckets per power of two */
#define LINEAR (2u * SUB)               /* 0..2047 exact */
#define VMAX ((1ull << (BENCH_HIST_SUB_BITS + 1 + BENCH_HIST_MAX_SHIFT)) - 1)

void bench_hist_init(bench_hist_t *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

uint32_t bench_hist_index(uint64_t v)
{
    if (v > VMAX) v = VMAX;
    if (v < LINEAR) return (uint32_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 11 */
    unsigned shift = e - BENCH_HIST_SUB_BITS;        /* >= 1 */
    uint32_t sub = (uint32_t)(v >> shift);           /* 1024..2047 */
    return LINEAR + (shift - 1) * SUB + (sub - SUB);
}

uint64_t bench_hist_highest(uint32_t idx)
{
    if (idx < LINEAR) return idx;
    uint32_t k = idx - LINEAR;
    unsigned shift = k / SUB + 1;
    uint64_t sub = SUB + k % SUB;
    return (sub << shift) + (1ull << shift) - 1;
}

void bench_hist_add(bench_hist_t *h, uint64_t v)
{
    h->counts[bench_hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

void bench_hist_merge(bench_hist_t *dst, const bench_hist_t *src)
{
    if (!src->count) return;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
}

uint64_t bench_hist_pct(const bench_hist_t *h, double pct)
{
    if (!h->count) return 0;
    /* the rank of the value: ceil(pct/100 * count), at least 1 */
    double want = pct / 100.0 * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want) rank++;
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = bench_hist_highest(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

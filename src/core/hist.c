/* The log-linear histogram of hist.h. Bucket i < 256 holds exactly the value
 * i. Above, a value v with highest set bit e (8 <= e < 36) keeps its top
 * eight bits: the bucket is 256 + (e - 8) * 128 + (v >> (e - 7)) - 128, and
 * spans 2^(e - 7) values starting at a multiple of that width. */
#include <string.h>

#include "tcpkit/hist.h"

#define SUB_COUNT (1u << TK_HDR_SUB_BITS)
#define LINEAR    (2u * SUB_COUNT)

void tk_hdr_reset(tk_hdr *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

unsigned tk_hdr_index(uint64_t v)
{
    if (v > TK_HDR_CEILING)
        v = TK_HDR_CEILING;
    if (v < LINEAR)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = e - TK_HDR_SUB_BITS;
    return LINEAR + (e - TK_HDR_SUB_BITS - 1) * SUB_COUNT + (unsigned)(v >> shift) - SUB_COUNT;
}

uint64_t tk_hdr_bucket_low(unsigned i)
{
    if (i < LINEAR)
        return i;
    unsigned k = (i - LINEAR) / SUB_COUNT; /* 0 for e == 8 */
    unsigned sub = (i - LINEAR) % SUB_COUNT;
    unsigned shift = k + 1;
    return (uint64_t)(SUB_COUNT + sub) << shift;
}

uint64_t tk_hdr_bucket_high(unsigned i)
{
    if (i < LINEAR)
        return i;
    unsigned shift = (i - LINEAR) / SUB_COUNT + 1;
    return tk_hdr_bucket_low(i) + (UINT64_C(1) << shift) - 1;
}

void tk_hdr_record_n(tk_hdr *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    if (v > TK_HDR_CEILING)
        h->clamped += n;
    h->counts[tk_hdr_index(v)] += n;
    h->total += n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->sum += (double)(v > TK_HDR_CEILING ? TK_HDR_CEILING : v) * (double)n;
}

void tk_hdr_record(tk_hdr *h, uint64_t v)
{
    tk_hdr_record_n(h, v, 1);
}

void tk_hdr_merge(tk_hdr *dst, const tk_hdr *src)
{
    if (src->total == 0)
        return;
    for (unsigned i = 0; i < TK_HDR_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->clamped += src->clamped;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t tk_hdr_quantile(const tk_hdr *h, double q)
{
    if (h->total == 0)
        return 0;
    if (q <= 0.0)
        return h->min;
    if (q >= 1.0)
        return h->max;
    /* The rank of the wanted value, 1-based: ceil(q * total), at least 1. */
    double r = q * (double)h->total;
    uint64_t rank = (uint64_t)r;
    if ((double)rank < r)
        rank++;
    if (rank == 0)
        rank = 1;
    if (rank > h->total - h->clamped && h->clamped > 0)
        return TK_HDR_CEILING;
    uint64_t seen = 0;
    for (unsigned i = 0; i < TK_HDR_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo = tk_hdr_bucket_low(i), hi = tk_hdr_bucket_high(i);
            uint64_t mid = lo + (hi - lo) / 2;
            if (mid < h->min)
                mid = h->min;
            if (mid > h->max)
                mid = h->max;
            return mid;
        }
    }
    return h->max;
}

double tk_hdr_mean(const tk_hdr *h)
{
    return h->total ? h->sum / (double)h->total : 0.0;
}

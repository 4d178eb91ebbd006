/* Counters and response-time histograms, one cache-line-aligned slot per
 * writer thread. Writers use relaxed loads and stores (no locked
 * instructions); readers may see a slightly stale but never torn value. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/metrics.h"

#define SUB_BITS  4
#define SUB_COUNT (1u << SUB_BITS)

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB_COUNT)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (msb - SUB_BITS)) & (SUB_COUNT - 1);
    unsigned b = SUB_COUNT + (msb - SUB_BITS) * SUB_COUNT + sub;
    return b < TK_HIST_BUCKETS ? b : TK_HIST_BUCKETS - 1;
}

/* The largest value that falls in bucket b. */
static uint64_t bucket_top(unsigned b)
{
    if (b < SUB_COUNT)
        return b;
    unsigned msb = (b - SUB_COUNT) / SUB_COUNT + SUB_BITS;
    uint64_t sub = (b - SUB_COUNT) % SUB_COUNT;
    uint64_t base = (1ull << msb) | (sub << (msb - SUB_BITS));
    return base + (1ull << (msb - SUB_BITS)) - 1;
}

void tk_hist_reset(tk_hist *h)
{
    memset(h, 0, sizeof(*h));
}

void tk_hist_add(tk_hist *h, uint64_t v, uint64_t count)
{
    h->counts[bucket_of(v)] += count;
    h->total += count;
    h->sum += v * count;
    if (v > h->max)
        h->max = v;
}

void tk_hist_merge(tk_hist *dst, const tk_hist *src)
{
    for (unsigned i = 0; i < TK_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum += src->sum;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t tk_hist_quantile(const tk_hist *h, double q)
{
    if (h->total == 0)
        return 0;
    if (q < 0)
        q = 0;
    if (q > 1)
        q = 1;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.5);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < TK_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

double tk_hist_mean(const tk_hist *h)
{
    return h->total ? (double)h->sum / (double)h->total : 0.0;
}

typedef _Atomic uint64_t counter;

struct tk_metrics_slot {
    counter conns_total;
    counter conns_closed;
    counter conns_rejected;
    counter bytes_in;
    counter bytes_out;
    counter messages;
    counter resp_sum;
    counter closes[16];
    counter hist[TK_HIST_BUCKETS];
} __attribute__((aligned(64)));

struct tk_metrics {
    unsigned nslots;
    tk_metrics_slot *slots;
};

static inline void bump(counter *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t get(counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

int tk_metrics_new(unsigned slots, tk_metrics **out)
{
    tk_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    if (slots == 0)
        slots = 1;
    m->slots = aligned_alloc(64, slots * sizeof(tk_metrics_slot));
    if (!m->slots) {
        free(m);
        return -ENOMEM;
    }
    memset(m->slots, 0, slots * sizeof(tk_metrics_slot));
    m->nslots = slots;
    *out = m;
    return 0;
}

void tk_metrics_free(tk_metrics *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

tk_metrics_slot *tk_metrics_slot_of(tk_metrics *m, unsigned i)
{
    return &m->slots[i % m->nslots];
}

void tk_metrics_conn_open(tk_metrics_slot *s)
{
    bump(&s->conns_total, 1);
}

void tk_metrics_conn_close(tk_metrics_slot *s, unsigned reason)
{
    bump(&s->conns_closed, 1);
    bump(&s->closes[reason < 16 ? reason : 15], 1);
}

void tk_metrics_conn_rejected(tk_metrics_slot *s)
{
    bump(&s->conns_rejected, 1);
}

void tk_metrics_bytes(tk_metrics_slot *s, uint64_t in, uint64_t out)
{
    if (in)
        bump(&s->bytes_in, in);
    if (out)
        bump(&s->bytes_out, out);
}

void tk_metrics_messages(tk_metrics_slot *s, uint64_t count)
{
    bump(&s->messages, count);
}

void tk_metrics_response(tk_metrics_slot *s, uint64_t count, uint64_t resp_us)
{
    bump(&s->resp_sum, resp_us * count);
    bump(&s->hist[bucket_of(resp_us)], count);
}

void tk_metrics_read(tk_metrics *m, tk_metrics_snapshot *out)
{
    memset(out, 0, sizeof(*out));
    tk_hist h;
    tk_hist_reset(&h);
    uint64_t closed = 0, resp_sum = 0;
    for (unsigned i = 0; i < m->nslots; i++) {
        tk_metrics_slot *s = &m->slots[i];
        out->conns_total += get(&s->conns_total);
        closed += get(&s->conns_closed);
        out->conns_rejected += get(&s->conns_rejected);
        out->bytes_in += get(&s->bytes_in);
        out->bytes_out += get(&s->bytes_out);
        out->messages += get(&s->messages);
        resp_sum += get(&s->resp_sum);
        for (unsigned r = 0; r < 16; r++)
            out->closes[r] += get(&s->closes[r]);
        for (unsigned b = 0; b < TK_HIST_BUCKETS; b++) {
            uint64_t n = get(&s->hist[b]);
            h.counts[b] += n;
            h.total += n;
        }
    }
    out->conns_active = out->conns_total > closed ? out->conns_total - closed : 0;
    out->resp_avg_us = h.total ? (double)resp_sum / (double)h.total : 0.0;
    h.max = UINT64_MAX;
    out->resp_p50_us = tk_hist_quantile(&h, 0.50);
    out->resp_p99_us = tk_hist_quantile(&h, 0.99);
}

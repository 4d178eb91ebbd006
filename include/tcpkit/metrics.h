/* Per-service metrics: connection and byte counters and a response-time
 * histogram. Each worker thread writes only its own slot (no atomic
 * read-modify-write on the hot path); readers sum the slots. */
#ifndef TCPKIT_METRICS_H
#define TCPKIT_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* A log-linear histogram of non-negative values (microseconds here): 16 linear
 * buckets, then 16 sub-buckets per power of two, so any percentile is within
 * about 6% of the true value. Values beyond 2^36 land in the last bucket. */
#define TK_HIST_BUCKETS (16 + 32 * 16)

typedef struct {
    uint64_t counts[TK_HIST_BUCKETS];
    uint64_t total;
    uint64_t sum;
    uint64_t max;
} tk_hist;

/* Empties the histogram. */
void tk_hist_reset(tk_hist *h);

/* Records value v, count times. */
void tk_hist_add(tk_hist *h, uint64_t v, uint64_t count);

/* Adds every sample of src into dst. */
void tk_hist_merge(tk_hist *dst, const tk_hist *src);

/* The value at quantile q (0..1), as the upper edge of its bucket; 0 if empty. */
uint64_t tk_hist_quantile(const tk_hist *h, double q);

/* Mean of the recorded values; 0 if empty. */
double tk_hist_mean(const tk_hist *h);

typedef struct tk_metrics tk_metrics;
typedef struct tk_metrics_slot tk_metrics_slot;

/* What a reader sees: the sum over all slots at one moment. */
typedef struct {
    uint64_t conns_total;
    uint64_t conns_active;
    uint64_t conns_rejected;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t messages;
    uint64_t closes[16]; /* by tk_close_reason */
    double resp_avg_us;
    uint64_t resp_p50_us;
    uint64_t resp_p99_us;
} tk_metrics_snapshot;

/* Creates metrics with one slot per writer thread; 0 or -ENOMEM. */
int tk_metrics_new(unsigned slots, tk_metrics **out);

/* Frees the metrics. */
void tk_metrics_free(tk_metrics *m);

/* The slot that thread i writes. */
tk_metrics_slot *tk_metrics_slot_of(tk_metrics *m, unsigned i);

/* Writers (one thread per slot). */
void tk_metrics_conn_open(tk_metrics_slot *s);
void tk_metrics_conn_close(tk_metrics_slot *s, unsigned reason);
void tk_metrics_conn_rejected(tk_metrics_slot *s);
void tk_metrics_bytes(tk_metrics_slot *s, uint64_t in, uint64_t out);
/* count requests answered (counted when answered, so a reader never sees a
 * reply before its count). */
void tk_metrics_messages(tk_metrics_slot *s, uint64_t count);
/* count replies that waited resp_us from request read to reply sent. */
void tk_metrics_response(tk_metrics_slot *s, uint64_t count, uint64_t resp_us);

/* Sums every slot into *out; safe from any thread. */
void tk_metrics_read(tk_metrics *m, tk_metrics_snapshot *out);

#endif

/* A high-dynamic-range latency histogram (log-linear, in the manner of
 * HdrHistogram). Values are non-negative integers in any unit; tcpkit records
 * microseconds. Values 0..255 each have their own bucket; above that every
 * power of two is split into 128 equal sub-buckets, so a bucket is never wider
 * than 1/128 of its lower edge and a reported percentile (the bucket's
 * midpoint, kept inside [min, max]) is within 0.4 % of a value recorded in that
 * bucket. The range ends at TK_HDR_CEILING (2^36 - 1, about 19 hours in
 * microseconds); larger values are clamped to it, counted in `clamped`, and a
 * percentile that falls among them reads TK_HDR_CEILING. Recording is O(1)
 * and allocation free; the struct is about 31 KiB and needs no cleanup. */
#ifndef TCPKIT_HIST_H
#define TCPKIT_HIST_H

#include <stdint.h>

#define TK_HDR_SUB_BITS 7 /* 128 sub-buckets per power of two */
#define TK_HDR_TOP_BITS 36
#define TK_HDR_CEILING  ((UINT64_C(1) << TK_HDR_TOP_BITS) - 1)
#define TK_HDR_BUCKETS                                                                             \
    ((2u << TK_HDR_SUB_BITS) + (TK_HDR_TOP_BITS - TK_HDR_SUB_BITS - 1) * (1u << TK_HDR_SUB_BITS))

typedef struct {
    uint64_t counts[TK_HDR_BUCKETS];
    uint64_t total;   /* values recorded */
    uint64_t clamped; /* the part of total that was above TK_HDR_CEILING */
    uint64_t min;     /* exact smallest value (UINT64_MAX while empty) */
    uint64_t max;     /* exact largest value, before clamping (0 while empty) */
    double sum;       /* of the values as recorded (clamped ones at the ceiling) */
} tk_hdr;

/* Empties the histogram. */
void tk_hdr_reset(tk_hdr *h);

/* Records value v once. */
void tk_hdr_record(tk_hdr *h, uint64_t v);

/* Records value v, n times. */
void tk_hdr_record_n(tk_hdr *h, uint64_t v, uint64_t n);

/* Adds every value of src into dst, as if each had been recorded there. */
void tk_hdr_merge(tk_hdr *dst, const tk_hdr *src);

/* The value at quantile q (0..1): the smallest bucket holding at least
 * ceil(q * total) values, reported as its midpoint within [min, max];
 * q <= 0 gives min, q >= 1 gives max (both exact). 0 if empty;
 * TK_HDR_CEILING if the quantile falls among clamped values. */
uint64_t tk_hdr_quantile(const tk_hdr *h, double q);

/* Mean of the recorded values; 0 if empty. */
double tk_hdr_mean(const tk_hdr *h);

/* The bucket index of v, and the lowest and highest value a bucket holds
 * (exposed for tests and plots). */
unsigned tk_hdr_index(uint64_t v);
uint64_t tk_hdr_bucket_low(unsigned i);
uint64_t tk_hdr_bucket_high(unsigned i);

#endif

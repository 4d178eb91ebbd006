/* A closed-loop load generator for line-echo servers. Each connection keeps a
 * fixed number of request lines in flight and sends one more for every reply
 * line it gets back, so the offered load follows the server's speed. The
 * engine parses no command line, prints nothing and never exits the process:
 * everything it learns is returned in a tk_bench_result. */
#ifndef TCPKIT_BENCH_H
#define TCPKIT_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/addr.h"

/* Upper bounds checked by tk_bench_run(); past them it returns -EINVAL. */
#define TK_BENCH_MAX_CONNECTIONS 1000000u
#define TK_BENCH_MAX_PIPELINE    65536u
#define TK_BENCH_MAX_SIZE        (16u * 1024 * 1024)
#define TK_BENCH_MAX_THREADS     1024u

typedef struct {
    const tk_addr *addrs;        /* where to connect, tried in order by each dial */
    size_t naddrs;               /* at least 1 */
    unsigned connections;        /* open connections (1 by default) */
    unsigned pipeline;           /* request lines in flight per connection (1) */
    size_t size;                 /* bytes per request line, '\n' included (64, >= 2) */
    uint32_t duration_ms;        /* measured time after every dial ended (5000) */
    uint32_t warmup_ms;          /* unmeasured time before it; UINT32_MAX (the default)
                                    means min(1 s, duration / 5) */
    unsigned threads;            /* client threads, one loop each (1); capped at connections */
    uint32_t connect_timeout_ms; /* per connection, every address included (10000; 0 same) */
} tk_bench_config;

typedef struct {
    uint64_t requests;       /* replies received inside the measured window */
    uint64_t errors;         /* connect failures, resets and early EOFs, whole run */
    uint64_t connect_errors; /* the part of errors that were failed dials */
    unsigned connected;      /* connections that were established */
    int last_error;          /* a failed dial's or lost connection's -errno (EOF: 0) */
    double elapsed_s;        /* length of the measured window */
    double rps;              /* requests / elapsed_s */
    uint64_t p50_us;         /* latency percentiles (send to reply), microseconds */
    uint64_t p99_us;
    uint64_t p999_us;
    uint64_t max_us;
    double mean_us;
    uint64_t bytes_in; /* bytes read and written inside the measured window */
    uint64_t bytes_out;
} tk_bench_result;

/* Fills the documented defaults; addrs must still be set. */
void tk_bench_config_init(tk_bench_config *c);

/* Runs one benchmark and blocks the calling thread until it is over (about
 * warm-up + duration once the connections are up, bounded by the connect
 * timeout before that). Returns 0 with *out filled — a run in which every
 * connection failed still returns 0, with connected == 0 — or a negative
 * errno: -EINVAL for a config outside its bounds, -ENOMEM, or the error of
 * creating a loop or thread. */
int tk_bench_run(const tk_bench_config *c, tk_bench_result *out);

#endif

/* A load generator for echo servers (and connect rates, chat fan-out, file
 * downloads: tk_bench_mode), closed or open loop.
 *
 * Closed loop (rate == 0, the default): each connection keeps a fixed number
 * of request lines in flight and sends one more for every reply line it gets
 * back, so the offered load follows the server's speed.
 *
 * Open loop (rate > 0): requests go out on a fixed schedule, `rate` per second
 * in total, connection i of C sending its j-th request at
 * start + i/rate + j*C/rate whatever the replies do, and latency is measured
 * from that intended time, not from the actual send, so a server that falls
 * behind sees its queueing counted (no coordinated omission, as in wrk2).
 * Requests that the socket cannot take yet wait on the client, unbounded.
 *
 * Except in connect mode, the connections come from a tk_pool and go back to
 * it at the end of the run: requests still unsent are dropped (a request
 * already partly written is finished), the replies of those sent are read,
 * and a connection that ends the run in step goes back for reuse; one that
 * saw an error, or whose replies did not all come within a second, is closed.
 *
 * The engine parses no command line, prints nothing and never exits the
 * process: everything it learns is returned in a tk_bench_result, plus the
 * optional histogram, per-second counts and progress callback below. */
#ifndef TCPKIT_BENCH_H
#define TCPKIT_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/addr.h"
#include "tcpkit/hist.h"
#include "tcpkit/pool.h"
#include "tcpkit/tls.h"

/* Upper bounds checked by tk_bench_run(); past them it returns -EINVAL. */
#define TK_BENCH_MAX_CONNECTIONS 1000000u
#define TK_BENCH_MAX_PIPELINE    65536u
#define TK_BENCH_MAX_SIZE        (16u * 1024 * 1024)
#define TK_BENCH_MAX_THREADS     1024u
#define TK_BENCH_MAX_RATE        10000000.0 /* requests per second, open loop */
/* Smallest request line of TK_BENCH_JSON: the JSON object around a request
 * id of up to four digits and an empty data string, '\n' included. */
#define TK_BENCH_JSON_MIN_SIZE 48u

/* What one request is on the wire, and what answers it. */
typedef enum {
    TK_BENCH_LINE = 0, /* a line of `size` bytes, '\n' included; one reply line each */
    TK_BENCH_LENGTH,   /* a frame [u32 big-endian length][`size` payload bytes]; one reply frame */
    TK_BENCH_JSON,     /* a JSON ECHO request line of `size` bytes with a numeric "id"; one
                          reply line each, whose "id" is checked (requests cycle through ids
                          0..K-1 per connection, K the requests of the shared pattern) */
    TK_BENCH_CONNECT,  /* each request on a new connection: connect, send one line of `size`
                          bytes, read the reply line, close; latency covers the connect */
    TK_BENCH_CHAT,     /* fan-out through a JSON chat server (chat-server --mode json):
                          `receivers` connections join one room and read, `senders` send
                          MESSAGE requests of `size` content bytes; a request is one
                          message, a reply one delivery to one receiver, its latency from
                          the send (open loop: intended) time carried in the text.
                          `connections`, `pipeline`, `threads` and `pool` are unused: one
                          thread drives every connection */
    TK_BENCH_FILE,     /* a version-1 GET of the file `file` from file-server; one
                          reply is the whole download (response, data, end frames);
                          `size` is unused */
} tk_bench_mode;

/* Most bytes kept of the first TLS failure's reason, '\0' included. */
#define TK_BENCH_TLS_ERROR_MAX 160u

/* Longest name of TK_BENCH_FILE (file-server's version-1 limit). */
#define TK_BENCH_MAX_FILE_NAME 4096u

/* Called on the caller's thread about once a second while the measured window
 * runs: replies counted so far in the window, and seconds elapsed in it. */
typedef void (*tk_bench_progress_fn)(void *arg, uint64_t replies, double elapsed_s);

typedef struct {
    const tk_addr *addrs;          /* where to connect, tried in order by each dial */
    size_t naddrs;                 /* at least 1 */
    tk_bench_mode mode;            /* TK_BENCH_LINE */
    unsigned connections;          /* open connections (1 by default); in connect mode the
                                      connections (and dials) in progress at a time */
    unsigned pipeline;             /* requests in flight per connection (1); 1 in connect mode */
    size_t size;                   /* bytes per request line, '\n' included (64, >= 2; json
                                      >= TK_BENCH_JSON_MIN_SIZE); length: payload bytes (>= 0) */
    uint32_t duration_ms;          /* measured time after every dial ended (5000) */
    uint32_t warmup_ms;            /* unmeasured time before it; UINT32_MAX (the default)
                                      means min(1 s, duration / 5) */
    unsigned threads;              /* client threads, one loop each (1); capped at connections */
    uint32_t connect_timeout_ms;   /* per connection, every address included (10000; 0 same) */
    double rate;                   /* open loop: requests per second in total; 0 closed loop (0) */
    uint64_t requests;             /* if > 0: send exactly this many requests in the whole run,
                                      warm-up included, and end once all are answered (or
                                      duration_ms passes, which is then only an upper bound) */
    tk_hdr *hist_out;              /* optional: receives the measured latencies */
    uint64_t *per_sec;             /* optional: replies in each whole second of the window */
    size_t per_sec_cap;            /* entries per_sec can hold */
    tk_bench_progress_fn progress; /* optional, see above */
    void *progress_arg;
    tk_pool *pool;        /* optional, all modes but connect: where the connections come from and
                             go back to, so several runs (--find-max-rate's probes) share warm
                             connections; its max_size must be at least `connections`. NULL: the
                             run uses a pool of its own, closed at its end (NULL) */
    unsigned receivers;   /* chat: connections that only read (10) */
    unsigned senders;     /* chat: connections that send; closed loop: one message in
                             flight each, the next when the server answers it (1) */
    const char *file;     /* file: the name to download, 1 to TK_BENCH_MAX_FILE_NAME bytes */
    tk_tls_ctx *tls;      /* optional client context: every connection does a TLS handshake
                             once connected (part of its dial: a failure is a connect error;
                             connect mode: one per request) and all requests go through TLS.
                             Connections then never go back to the pool for reuse (NULL) */
    const char *tls_name; /* the server name to verify and send (SNI); NULL: the chain only */
} tk_bench_config;

typedef struct {
    uint64_t requests;       /* replies received inside the measured window */
    uint64_t errors;         /* connect failures, resets, early EOFs, malformed replies
                                (length, json) and, with a request count, requests still
                                unanswered when the run ended; whole run */
    uint64_t timeouts;       /* the part of errors that were unanswered at the end */
    uint64_t connect_errors; /* the part of errors that were failed dials */
    uint64_t connected;      /* connections that were established (connect mode: one per
                                request that got connected) */
    int last_error;          /* a failed dial's or lost connection's -errno (EOF: 0;
                                a malformed reply: -EPROTO; unanswered: -ETIMEDOUT) */
    double elapsed_s;        /* length of the measured window */
    double rps;              /* requests / elapsed_s */
    uint64_t sent;           /* requests handed to the socket layer (open loop: queued;
                                connect mode: dials begun), whole run */
    uint64_t received;       /* replies matched with a request, whole run */
    uint64_t sent_measured;  /* requests sent (closed) or scheduled (open) in the window */
    uint64_t p50_us;         /* latency percentiles (send, or intended send in open loop,
                                to reply), microseconds, within 0.4 % (hist.h) */
    uint64_t p90_us;
    uint64_t p99_us;
    uint64_t p999_us;
    uint64_t max_us; /* exact */
    uint64_t min_us; /* exact */
    double mean_us;
    size_t per_sec_n;  /* entries written to cfg->per_sec */
    uint64_t bytes_in; /* bytes read and written inside the measured window */
    uint64_t bytes_out;
    uint64_t per_receiver_min; /* chat: the fewest and most messages one receiver got */
    uint64_t per_receiver_max;
    uint64_t file_bytes;   /* file: file bytes received in data frames, whole run */
    uint64_t tls_failures; /* handshakes that failed (counted in connect_errors too) */
    char tls_version[16];  /* the protocol of the first handshake that completed ("TLSv1.3") */
    char tls_error[TK_BENCH_TLS_ERROR_MAX]; /* the first failed handshake's reason, "" if none */
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

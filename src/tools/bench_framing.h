/* The wire side of `tcpkit bench`: how requests are laid out for each mode
 * and how replies are counted out of a byte stream. Pure functions over
 * bytes, no I/O, private to src/tools/. */
#ifndef TCPKIT_BENCH_FRAMING_H
#define TCPKIT_BENCH_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/bench.h"

/* The shared pattern holds whole requests and at least this many bytes, so a
 * large batch still goes out in one send(). */
#define BENCH_PATTERN_MIN (64 * 1024)
/* Bytes kept from the start of each reply to check it (json). */
#define BENCH_HEAD 32

/* Identical (line, length) or id-numbered (json) requests back to back. */
typedef struct {
    unsigned char *bytes;
    size_t len;       /* nreq * req_len */
    size_t req_len;   /* bytes of one request on the wire */
    unsigned nreq;    /* requests in the pattern; json ids run 0..nreq-1 */
    size_t max_reply; /* length: the largest reply frame payload accepted */
} bench_pattern;

/* Builds the pattern for mode and size. Returns 0, -EINVAL (size too small
 * for the mode) or -ENOMEM; free with bench_pattern_free(). */
int bench_pattern_make(bench_pattern *p, tk_bench_mode mode, size_t size);
/* The file mode's pattern: version-1 GET requests for name (1 to
 * TK_BENCH_MAX_FILE_NAME bytes). Returns 0, -EINVAL or -ENOMEM. */
int bench_pattern_make_file(bench_pattern *p, const char *name);
void bench_pattern_free(bench_pattern *p);

/* A reply parser's state between reads, one per connection. */
typedef struct {
    uint64_t skip;                  /* length: payload bytes of the current frame still due */
    uint64_t seq;                   /* json: replies parsed so far (the next id is seq % nreq) */
    uint64_t data_bytes;            /* file: file bytes received in data frames */
    unsigned char type;             /* file: the type of the frame being skipped */
    unsigned head_len;              /* bytes in head */
    unsigned char head[BENCH_HEAD]; /* length: a partial header; json: the line's first bytes */
} bench_parser;

/* Counts the complete replies in data[0..n), which continues the stream the
 * parser has seen so far, into *replies. Returns 0, or -EPROTO for a reply
 * that cannot be one (a frame over max_reply, a JSON line that is not an
 * ECHO reply carrying the expected id, a file frame that is not version 1,
 * an error frame); the stream is then unusable. A JSON banner line is not
 * counted; a file reply is counted at its end frame. */
int bench_parse(bench_parser *ps, const bench_pattern *pat, tk_bench_mode mode,
                const unsigned char *data, size_t n, uint64_t *replies);

#endif

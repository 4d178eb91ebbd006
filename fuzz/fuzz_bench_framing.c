/* Fuzzes the reply counter of `tcpkit bench` (src/tools/bench_framing.h),
 * which reads whatever the server under test sends. The first byte picks
 * the mode (line, length, json, file), the next two the largest reply frame
 * (length mode), the fourth the number of requests in the pattern (json ids
 * run 0..nreq-1); the rest is the server's byte stream.
 *
 * Invariants:
 * - the stream read whole, one byte at a time and in input-derived pieces
 *   gives the same answer (0 or -EPROTO, nothing else), the same number of
 *   replies and the same parser state; after -EPROTO nothing more is fed;
 * - line mode counts exactly the newlines;
 * - length and file modes agree with a reference walk of the frames written
 *   here from the documented formats (a length frame over the limit, or a
 *   file frame that is not a version-1 response, data or empty end frame, is
 *   -EPROTO), including the file bytes counted in data frames. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tools/bench_framing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    int rc;
    uint64_t replies;
    bench_parser ps;
} outcome;

/* Feeds in[0..n) whole (max_piece 0) or in pieces of 1 to max_piece bytes
 * drawn from an xorshift generator seeded by the input. */
static outcome feed(const bench_pattern *pat, tk_bench_mode mode, const unsigned char *in, size_t n,
                    uint32_t seed, size_t max_piece)
{
    outcome o;
    memset(&o, 0, sizeof(o));
    for (size_t off = 0; off < n && o.rc == 0;) {
        size_t k = n - off;
        if (max_piece) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            k = 1 + seed % max_piece;
            if (k > n - off)
                k = n - off;
        }
        /* An exactly sized copy: reads past the piece are caught. */
        unsigned char *piece = malloc(k);
        if (!piece)
            abort();
        memcpy(piece, in + off, k);
        o.rc = bench_parse(&o.ps, pat, mode, piece, k, &o.replies);
        free(piece);
        if (o.rc != 0 && o.rc != -EPROTO)
            abort();
        off += k;
    }
    return o;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reference for the length mode: frames of [u32 length][payload]. */
static void ref_length(const unsigned char *in, size_t n, size_t max_reply, int *rc,
                       uint64_t *replies)
{
    *rc = 0;
    *replies = 0;
    size_t off = 0;
    while (n - off >= 4) {
        uint32_t len = be32(in + off);
        if (len > max_reply) {
            *rc = -EPROTO;
            return;
        }
        if (n - off - 4 < len)
            return;
        off += 4 + (size_t)len;
        (*replies)++;
    }
}

/* Reference for the file mode: [1][type][u32 length][payload]. */
static void ref_file(const unsigned char *in, size_t n, int *rc, uint64_t *replies,
                     uint64_t *data_bytes)
{
    *rc = 0;
    *replies = 0;
    *data_bytes = 0;
    size_t off = 0;
    while (n - off >= 6) {
        const unsigned char *h = in + off;
        uint32_t len = be32(h + 2);
        int ok = h[0] == 1 && ((h[1] == 4 && len == 0) ||
                               (h[1] == 2 && len <= TK_BENCH_MAX_FILE_NAME + 32) || h[1] == 3);
        if (!ok) {
            *rc = -EPROTO;
            return;
        }
        off += 6;
        size_t take = n - off < len ? n - off : len;
        if (h[1] == 3)
            *data_bytes += take;
        if (h[1] == 4)
            (*replies)++;
        off += take;
    }
}

static int same(const outcome *a, const outcome *b)
{
    if (a->rc != b->rc || a->replies != b->replies)
        return 0;
    if (a->rc != 0)
        return 1; /* the stream is unusable: its state no longer matters */
    return a->ps.skip == b->ps.skip && a->ps.seq == b->ps.seq &&
           a->ps.data_bytes == b->ps.data_bytes && a->ps.head_len == b->ps.head_len &&
           memcmp(a->ps.head, b->ps.head, a->ps.head_len) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    static const tk_bench_mode modes[] = {TK_BENCH_LINE, TK_BENCH_LENGTH, TK_BENCH_JSON,
                                          TK_BENCH_FILE};
    tk_bench_mode mode = modes[data[0] % 4];
    bench_pattern pat;
    memset(&pat, 0, sizeof(pat));
    pat.max_reply = (size_t)data[1] << 8 | data[2];
    pat.nreq = 1u + data[3] % 16;
    const unsigned char *in = data + 4;
    size_t n = size - 4;

    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    if (!seed)
        seed = 1;

    outcome whole = feed(&pat, mode, in, n, seed, 0);
    outcome bytes = feed(&pat, mode, in, n, seed, 1);
    outcome pieces = feed(&pat, mode, in, n, seed, 64);
    if (!same(&whole, &bytes) || !same(&whole, &pieces))
        abort();

    int rc;
    uint64_t replies, data_bytes;
    switch (mode) {
    case TK_BENCH_LINE:
        replies = 0;
        for (size_t i = 0; i < n; i++)
            replies += in[i] == '\n';
        if (whole.rc != 0 || whole.replies != replies)
            abort();
        break;
    case TK_BENCH_LENGTH:
        ref_length(in, n, pat.max_reply, &rc, &replies);
        if (whole.rc != rc || whole.replies != replies)
            abort();
        break;
    case TK_BENCH_FILE:
        ref_file(in, n, &rc, &replies, &data_bytes);
        if (whole.rc != rc || whole.replies != replies ||
            (rc == 0 && whole.ps.data_bytes != data_bytes))
            abort();
        break;
    default:
        /* json: every counted reply is a line of its own. */
        replies = 0;
        for (size_t i = 0; i < n; i++)
            replies += in[i] == '\n';
        if (whole.replies > replies || (whole.rc == 0 && whole.ps.seq != whole.replies))
            abort();
        break;
    }
    return 0;
}

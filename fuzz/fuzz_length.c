/* Fuzzes tk_len_next. The first two bytes pick max_frame (0..65535), the rest
 * is the stream. Decoding it whole and in input-derived pieces must give the
 * same frames and stop at the same over-long header; every frame re-encodes
 * to exactly the bytes it was decoded from. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/codec.h"

/* Decodes in[0..n) fed in pieces (cut at the positions in cuts, ascending)
 * through a caller-held buffer. Returns the number of stream bytes consumed
 * as frames, and sets *too_long when an over-long header stopped decoding. */
static size_t decode(const unsigned char *in, size_t n, size_t max_frame, const size_t *cuts,
                     size_t ncuts, int *too_long)
{
    unsigned char *held = malloc(n ? n : 1);
    if (!held)
        abort();
    size_t held_len = 0, done = 0, fed = 0;
    *too_long = 0;
    for (size_t piece = 0; piece <= ncuts && !*too_long; piece++) {
        size_t end = piece < ncuts ? cuts[piece] : n;
        memcpy(held + held_len, in + fed, end - fed);
        held_len += end - fed;
        fed = end;
        for (;;) {
            const unsigned char *p = NULL;
            size_t plen = 0, consumed = 99;
            tk_codec_status st = tk_len_next(held, held_len, max_frame, &p, &plen, &consumed);
            if (st == TK_CODEC_NEED) {
                if (consumed != 0)
                    abort();
                break;
            }
            if (st == TK_CODEC_TOO_LONG) {
                if (consumed != 0 || plen <= max_frame || held_len < TK_LEN_HEADER)
                    abort();
                *too_long = 1;
                break;
            }
            if (st != TK_CODEC_OK || plen > max_frame || consumed != TK_LEN_HEADER + plen ||
                consumed > held_len || p != held + TK_LEN_HEADER)
                abort();
            /* The frame must be the stream bytes at this position, and
             * re-encoding its header gives the same four bytes. */
            unsigned char h[TK_LEN_HEADER];
            tk_len_header(h, (uint32_t)plen);
            if (memcmp(h, in + done, TK_LEN_HEADER) != 0 ||
                memcmp(p, in + done + TK_LEN_HEADER, plen) != 0)
                abort();
            done += consumed;
            memmove(held, held + consumed, held_len - consumed);
            held_len -= consumed;
        }
    }
    if (!*too_long && held_len >= TK_LEN_HEADER) {
        /* What is left must really be an incomplete frame. */
        size_t declared =
            (size_t)held[0] << 24 | (size_t)held[1] << 16 | (size_t)held[2] << 8 | (size_t)held[3];
        if (held_len - TK_LEN_HEADER >= declared)
            abort();
    }
    free(held);
    return done;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max_frame = (size_t)data[0] << 8 | data[1];
    const unsigned char *in = data + 2;
    size_t n = size - 2;

    int whole_too_long;
    size_t whole = decode(in, n, max_frame, NULL, 0, &whole_too_long);

    /* Cut points from a generator seeded by the input. */
    size_t cuts[64], ncuts = 0;
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    for (size_t pos = 0; ncuts < 64 && n > 0;) {
        seed = seed * 1103515245u + 12345u;
        pos += 1 + (seed >> 16) % 16;
        if (pos >= n)
            break;
        cuts[ncuts++] = pos;
    }
    int split_too_long;
    size_t split = decode(in, n, max_frame, cuts, ncuts, &split_too_long);

    if (whole != split || whole_too_long != split_too_long)
        abort();
    return 0;
}

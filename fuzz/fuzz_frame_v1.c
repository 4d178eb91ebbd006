/* Fuzzes the version 1 file-transfer frames: the input is a byte stream split
 * with tk_frame_next (payloads of at most 4096 bytes, the server's request
 * limit). Decoding it whole, in input-derived pieces and one byte at a time
 * must give the same frames and stop at the same over-long header. Every
 * RESPONSE (type 2) body goes through tk_v1_parse_response, whose answer is
 * checked against the digits after the last ':'. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/frame.h"

#define V1_MAX 4096u

/* One decoded frame, or the status that ended a decoding. */
typedef struct {
    tk_codec_status st;
    uint8_t version, type;
    uint32_t length;
    size_t at; /* stream offset of the frame (or of the undecoded rest) */
} seen;

typedef struct {
    seen *v;
    size_t n, cap;
} seen_list;

static void push(seen_list *l, tk_codec_status st, const tk_frame_hdr *h, size_t at)
{
    if (l->n == l->cap)
        abort();
    l->v[l->n++] = (seen){st, h->version, h->type, h->length, at};
}

/* The digits after the last ':' of a RESPONSE decide the answer: 0 with the
 * same number for 1..20 decimal digits whose value fits u64, -EINVAL for
 * anything else. */
static void check_response(const unsigned char *p, size_t n)
{
    uint64_t size = 0x5a5a5a5a5a5a5a5aull;
    int rc = tk_v1_parse_response(p, n, &size);
    if (rc != 0 && rc != -EINVAL)
        abort();

    size_t colon = n;
    while (colon > 0 && p[colon - 1] != ':')
        colon--;
    int ok = colon > 0 && colon < n && n - colon <= 20;
    for (size_t i = colon; ok && i < n; i++)
        ok = p[i] >= '0' && p[i] <= '9';
    if (ok && n - colon == 20)
        ok = memcmp(p + colon, "18446744073709551615", 20) <= 0;

    if (!ok) {
        if (rc != -EINVAL || size != 0x5a5a5a5a5a5a5a5aull)
            abort();
        return;
    }
    if (rc != 0)
        abort();
    /* Re-printed in decimal, the size is the digits without leading zeros. */
    size_t first = colon;
    while (first + 1 < n && p[first] == '0')
        first++;
    char text[32];
    int len = snprintf(text, sizeof(text), "%llu", (unsigned long long)size);
    if (len < 1 || (size_t)len != n - first || memcmp(text, p + first, n - first) != 0)
        abort();
}

/* Decodes in[0..n) fed in pieces ending at cuts[0..ncuts) (ascending), then
 * the rest, through a caller-held buffer (ncuts == SIZE_MAX: one byte at a
 * time). Records each frame and the status that ended decoding; with check,
 * also checks every RESPONSE body. */
static void decode(const unsigned char *in, size_t n, const size_t *cuts, size_t ncuts,
                   seen_list *out, int check)
{
    unsigned char *held = malloc(n ? n : 1);
    if (!held)
        abort();
    size_t held_len = 0, fed = 0, done = 0;
    tk_frame_hdr h = {0, 0, 0};
    for (size_t piece = 0; fed < n; piece++) {
        size_t end;
        if (ncuts == SIZE_MAX)
            end = fed + 1;
        else
            end = piece < ncuts ? cuts[piece] : n;
        memcpy(held + held_len, in + fed, end - fed);
        held_len += end - fed;
        fed = end;
        for (;;) {
            const unsigned char *p = held;
            size_t consumed = 99;
            tk_codec_status st = tk_frame_next(held, held_len, V1_MAX, &h, &p, &consumed);
            if (st == TK_CODEC_NEED) {
                if (consumed != 0)
                    abort();
                /* Only a short header or a short payload needs more: an
                 * over-long length is refused from the header alone. */
                if (held_len >= TK_FRAME_HEADER &&
                    (h.length != tk_get_u32(held + 2) || h.length > V1_MAX ||
                     held_len - TK_FRAME_HEADER >= h.length))
                    abort();
                break;
            }
            if (st == TK_CODEC_TOO_LONG) {
                if (consumed != 0 || h.length <= V1_MAX || held_len < TK_FRAME_HEADER)
                    abort();
                push(out, st, &h, done);
                free(held);
                return;
            }
            if (st != TK_CODEC_OK || h.length > V1_MAX || consumed != TK_FRAME_HEADER + h.length ||
                consumed > held_len || p != held + TK_FRAME_HEADER)
                abort();
            /* The frame is the stream's bytes at this offset, and its header
             * re-encodes to the same six bytes. */
            unsigned char hdr[TK_FRAME_HEADER];
            tk_frame_hdr_encode(hdr, h.version, h.type, h.length);
            if (memcmp(hdr, in + done, TK_FRAME_HEADER) != 0 ||
                memcmp(p, in + done + TK_FRAME_HEADER, h.length) != 0)
                abort();
            if (check && h.type == TK_V1_RESPONSE)
                check_response(p, h.length);
            push(out, st, &h, done);
            done += consumed;
            memmove(held, held + consumed, held_len - consumed);
            held_len -= consumed;
        }
    }
    tk_frame_hdr rest = {0, 0, (uint32_t)held_len};
    push(out, TK_CODEC_NEED, &rest, done);
    free(held);
}

static void same(const seen_list *a, const seen_list *b)
{
    if (a->n != b->n)
        abort();
    for (size_t i = 0; i < a->n; i++) {
        const seen *x = &a->v[i], *y = &b->v[i];
        if (x->st != y->st || x->version != y->version || x->type != y->type ||
            x->length != y->length || x->at != y->at)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* At most one record per 6 bytes, plus the final status. */
    size_t cap = size / TK_FRAME_HEADER + 2;
    seen_list whole = {malloc(cap * sizeof(seen)), 0, cap};
    seen_list cut = {malloc(cap * sizeof(seen)), 0, cap};
    seen_list bytes = {malloc(cap * sizeof(seen)), 0, cap};
    if (!whole.v || !cut.v || !bytes.v)
        abort();

    decode(data, size, NULL, 0, &whole, 1);

    /* Cut points from a generator seeded by the input. */
    size_t cuts[64], ncuts = 0;
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    for (size_t pos = 0; ncuts < 64;) {
        seed = seed * 1103515245u + 12345u;
        pos += 1 + (seed >> 16) % 24;
        if (pos >= size)
            break;
        cuts[ncuts++] = pos;
    }
    decode(data, size, cuts, ncuts, &cut, 0);
    decode(data, size, NULL, SIZE_MAX, &bytes, 0);

    same(&whole, &cut);
    same(&whole, &bytes);
    free(whole.v);
    free(cut.v);
    free(bytes.v);
    return 0;
}

/* Fuzzes tk_line_next. The first byte picks max_line (1..64), the rest is the
 * stream. The stream is decoded whole and again in pieces whose sizes come
 * from a generator seeded by the input, and both must report the same lines
 * and errors, and leave the same unfinished line. No line may pass max_line,
 * and between reads the caller never has to keep more than max_line bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/codec.h"

/* A growing record of what the decoder reported: 'L', a 4-byte length and the
 * line for each line; 'T' for each over-long line. */
typedef struct {
    unsigned char *p;
    size_t len, cap;
} record;

static void rec_put(record *r, const void *p, size_t n)
{
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        while (cap < r->len + n)
            cap *= 2;
        r->p = realloc(r->p, cap);
        if (!r->p)
            abort();
        r->cap = cap;
    }
    memcpy(r->p + r->len, p, n);
    r->len += n;
}

typedef struct {
    tk_line_decoder d;
    unsigned char *held; /* bytes not yet consumed, as a server keeps them */
    size_t held_len;
    record out;
} feeder;

static void feed(feeder *f, const unsigned char *p, size_t n)
{
    memcpy(f->held + f->held_len, p, n);
    f->held_len += n;
    int idle = 0;
    for (;;) {
        const unsigned char *line = NULL;
        size_t line_len = 0, consumed = 0;
        tk_codec_status st = tk_line_next(&f->d, f->held, f->held_len, &line, &line_len, &consumed);
        if (consumed > f->held_len)
            abort();
        if (st == TK_CODEC_OK) {
            if (line_len > f->d.max_line || line < f->held ||
                line + line_len > f->held + f->held_len || consumed <= line_len)
                abort();
            uint32_t n32 = (uint32_t)line_len;
            rec_put(&f->out, "L", 1);
            rec_put(&f->out, &n32, sizeof(n32));
            rec_put(&f->out, line, line_len);
        } else if (st == TK_CODEC_TOO_LONG) {
            rec_put(&f->out, "T", 1);
        } else if (st != TK_CODEC_NEED) {
            abort();
        }
        memmove(f->held, f->held + consumed, f->held_len - consumed);
        f->held_len -= consumed;
        if (st == TK_CODEC_NEED)
            break;
        idle = consumed ? 0 : idle + 1;
        if (idle > 1)
            abort(); /* two results in a row without progress */
    }
    if (f->held_len > f->d.max_line)
        abort(); /* an over-long partial line was not reported */
}

static void feeder_init(feeder *f, size_t max_line, size_t total)
{
    memset(f, 0, sizeof(*f));
    tk_line_init(&f->d, max_line);
    f->held = malloc(total ? total : 1);
    if (!f->held)
        abort();
}

static void feeder_free(feeder *f)
{
    free(f->held);
    free(f->out.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t max_line = 1 + data[0] % 64;
    const unsigned char *in = data + 1;
    size_t n = size - 1;

    feeder whole;
    feeder_init(&whole, max_line, n);
    feed(&whole, in, n);

    /* Piece sizes 0..2*max_line from an xorshift generator seeded by the
     * input, so each input always splits the same way. */
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    if (!seed)
        seed = 1;
    feeder pieces;
    feeder_init(&pieces, max_line, n);
    for (size_t off = 0; off < n;) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        size_t k = seed % (2 * max_line + 1);
        if (k > n - off)
            k = n - off;
        feed(&pieces, in + off, k);
        off += k;
    }

    if (whole.out.len != pieces.out.len ||
        (whole.out.len && memcmp(whole.out.p, pieces.out.p, whole.out.len) != 0))
        abort();
    /* Both keep the same unfinished last line. */
    if (whole.held_len != pieces.held_len ||
        (whole.held_len && memcmp(whole.held, pieces.held, whole.held_len) != 0))
        abort();
    feeder_free(&whole);
    feeder_free(&pieces);
    return 0;
}

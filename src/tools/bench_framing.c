/* Request patterns and reply counting for the modes of `tcpkit bench`.
 *
 * Every connection writes straight from one shared, read-only pattern of
 * requests laid back to back and walks it in order, wrapping at its end, so
 * the k-th request a connection sends is request k % nreq of the pattern. For
 * json that request carries the id k % nreq, and as replies come back in
 * request order the k-th reply must carry the same id: checking it costs a
 * counter per connection and a look at the first bytes of each reply line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/codec.h"
#include "tools/bench_framing.h"

/* A json request is JSON_PRE ID JSON_MID DATA JSON_END. */
#define JSON_PRE   "{\"type\":\"ECHO\",\"id\":"
#define JSON_MID   ",\"payload\":{\"data\":\""
#define JSON_END   "\"}}\n"
#define JSON_FIXED (sizeof(JSON_PRE) - 1 + sizeof(JSON_MID) - 1 + sizeof(JSON_END) - 1)
/* What a json reply to one of them starts with, and the banner notice. */
#define JSON_REPLY  "{\"type\":\"ECHO\",\"id\":"
#define JSON_BANNER "{\"type\":\"banner\""
/* File transfer, version 1: [version][type][u32 length] and the payload. */
#define FILE_HEADER   6
#define FILE_REQUEST  1
#define FILE_RESPONSE 2
#define FILE_DATA     3
#define FILE_END      4
/* Room for a length-mode reply beyond the payload ("Got: ", a banner). */
#define LENGTH_REPLY_SLACK (64 * 1024)

static int json_fill(unsigned char *out, size_t size, unsigned id)
{
    char idbuf[16];
    int nd = snprintf(idbuf, sizeof(idbuf), "%u", id);
    if (size < JSON_FIXED + (size_t)nd)
        return -EINVAL;
    size_t data = size - JSON_FIXED - (size_t)nd;
    unsigned char *p = out;
    memcpy(p, JSON_PRE, sizeof(JSON_PRE) - 1);
    p += sizeof(JSON_PRE) - 1;
    memcpy(p, idbuf, (size_t)nd);
    p += nd;
    memcpy(p, JSON_MID, sizeof(JSON_MID) - 1);
    p += sizeof(JSON_MID) - 1;
    memset(p, 'x', data);
    p += data;
    memcpy(p, JSON_END, sizeof(JSON_END) - 1);
    return 0;
}

int bench_pattern_make(bench_pattern *p, tk_bench_mode mode, size_t size)
{
    memset(p, 0, sizeof(*p));
    p->req_len = mode == TK_BENCH_LENGTH ? TK_LEN_HEADER + size : size;
    if (mode == TK_BENCH_LENGTH ? size > UINT32_MAX : size < 2)
        return -EINVAL;
    if (mode == TK_BENCH_JSON && size < TK_BENCH_JSON_MIN_SIZE)
        return -EINVAL;
    size_t nreq = (BENCH_PATTERN_MIN + p->req_len - 1) / p->req_len;
    p->bytes = malloc(nreq * p->req_len);
    if (!p->bytes)
        return -ENOMEM;
    p->nreq = (unsigned)nreq;
    p->len = nreq * p->req_len;
    p->max_reply = size + LENGTH_REPLY_SLACK;
    for (size_t i = 0; i < nreq; i++) {
        unsigned char *r = p->bytes + i * p->req_len;
        int err = 0;
        if (mode == TK_BENCH_LENGTH) {
            tk_len_header(r, (uint32_t)size);
            memset(r + TK_LEN_HEADER, 'x', size);
        } else if (mode == TK_BENCH_JSON) {
            err = json_fill(r, size, (unsigned)i);
        } else {
            memset(r, 'x', size - 1);
            r[size - 1] = '\n';
        }
        if (err < 0) {
            bench_pattern_free(p);
            return err;
        }
    }
    return 0;
}

int bench_pattern_make_file(bench_pattern *p, const char *name)
{
    size_t len = name ? strlen(name) : 0;
    memset(p, 0, sizeof(*p));
    if (len == 0 || len > TK_BENCH_MAX_FILE_NAME)
        return -EINVAL;
    p->req_len = FILE_HEADER + len;
    size_t nreq = (BENCH_PATTERN_MIN + p->req_len - 1) / p->req_len;
    p->bytes = malloc(nreq * p->req_len);
    if (!p->bytes)
        return -ENOMEM;
    p->nreq = (unsigned)nreq;
    p->len = nreq * p->req_len;
    for (size_t i = 0; i < nreq; i++) {
        unsigned char *r = p->bytes + i * p->req_len;
        r[0] = 1; /* version */
        r[1] = FILE_REQUEST;
        r[2] = (unsigned char)(len >> 24);
        r[3] = (unsigned char)(len >> 16);
        r[4] = (unsigned char)(len >> 8);
        r[5] = (unsigned char)len;
        memcpy(r + FILE_HEADER, name, len);
    }
    return 0;
}

void bench_pattern_free(bench_pattern *p)
{
    free(p->bytes);
    p->bytes = NULL;
}

static uint64_t count_lines(const unsigned char *p, size_t n)
{
    uint64_t lines = 0;
    const unsigned char *end = p + n;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return lines;
}

/* Frames: a header split across reads waits in head; a payload that goes
 * past the bytes at hand is skipped as it arrives. */
static int parse_length(bench_parser *ps, size_t max_reply, const unsigned char *data, size_t n,
                        uint64_t *replies)
{
    const unsigned char *payload;
    size_t plen, used;

    while (n > 0) {
        if (ps->skip > 0) {
            size_t take = ps->skip < n ? (size_t)ps->skip : n;
            ps->skip -= take;
            data += take;
            n -= take;
            if (ps->skip == 0)
                (*replies)++;
            continue;
        }
        const unsigned char *hdr = data;
        size_t avail = n;
        if (ps->head_len > 0 || n < TK_LEN_HEADER) {
            size_t take = TK_LEN_HEADER - ps->head_len;
            if (take > n)
                take = n;
            memcpy(ps->head + ps->head_len, data, take);
            ps->head_len += (unsigned)take;
            data += take;
            n -= take;
            if (ps->head_len < TK_LEN_HEADER)
                return 0;
            hdr = ps->head;
            avail = TK_LEN_HEADER;
            ps->head_len = 0;
        }
        tk_codec_status st = tk_len_next(hdr, avail, max_reply, &payload, &plen, &used);
        if (st == TK_CODEC_TOO_LONG)
            return -EPROTO;
        if (st == TK_CODEC_OK) {
            (*replies)++;
            if (hdr == data) {
                data += used;
                n -= used;
            }
            continue;
        }
        /* The header is complete, the payload is not: skip what is here. */
        size_t have = hdr == data ? avail - TK_LEN_HEADER : 0;
        ps->skip = plen - have;
        if (hdr == data) {
            data += avail;
            n = 0;
        }
    }
    return 0;
}

/* Version-1 file frames: data payloads are skipped and counted, the end
 * frame completes a reply; an error frame, another version or type, or a
 * response or end frame longer than a name and a size can be, is -EPROTO. */
static int parse_file(bench_parser *ps, const unsigned char *data, size_t n, uint64_t *replies)
{
    while (n > 0) {
        if (ps->skip > 0) {
            size_t take = ps->skip < n ? (size_t)ps->skip : n;
            ps->skip -= take;
            if (ps->type == FILE_DATA)
                ps->data_bytes += take;
            data += take;
            n -= take;
            continue;
        }
        size_t take = FILE_HEADER - ps->head_len;
        if (take > n)
            take = n;
        memcpy(ps->head + ps->head_len, data, take);
        ps->head_len += (unsigned)take;
        data += take;
        n -= take;
        if (ps->head_len < FILE_HEADER)
            return 0;
        ps->head_len = 0;
        const unsigned char *h = ps->head;
        uint64_t len = (uint64_t)h[2] << 24 | (uint64_t)h[3] << 16 | (uint64_t)h[4] << 8 | h[5];
        if (h[0] != 1)
            return -EPROTO;
        if (h[1] == FILE_END && len == 0)
            (*replies)++;
        else if (h[1] == FILE_RESPONSE && len <= TK_BENCH_MAX_FILE_NAME + 32)
            ps->skip = len;
        else if (h[1] == FILE_DATA)
            ps->skip = len;
        else
            return -EPROTO; /* an error frame: the file cannot be had */
        ps->type = h[1];
    }
    return 0;
}

/* One complete json reply line, of which head holds the first bytes:
 * 1 a reply with the expected id, 0 the banner, -EPROTO anything else. */
static int json_line(bench_parser *ps, unsigned nreq)
{
    size_t pre = sizeof(JSON_REPLY) - 1;
    if (ps->head_len >= sizeof(JSON_BANNER) - 1 &&
        memcmp(ps->head, JSON_BANNER, sizeof(JSON_BANNER) - 1) == 0)
        return 0;
    if (ps->head_len <= pre || memcmp(ps->head, JSON_REPLY, pre) != 0)
        return -EPROTO;
    uint64_t id = 0;
    unsigned i = (unsigned)pre;
    for (; i < ps->head_len && ps->head[i] >= '0' && ps->head[i] <= '9' && i < pre + 9; i++)
        id = id * 10 + (uint64_t)(ps->head[i] - '0');
    if (i == pre || i >= ps->head_len || ps->head[i] != ',' || id != ps->seq % nreq)
        return -EPROTO;
    ps->seq++;
    return 1;
}

static int parse_json(bench_parser *ps, unsigned nreq, const unsigned char *data, size_t n,
                      uint64_t *replies)
{
    while (n > 0) {
        const unsigned char *nl = memchr(data, '\n', n);
        size_t seg = nl ? (size_t)(nl - data) : n;
        size_t room = BENCH_HEAD - ps->head_len;
        size_t take = seg < room ? seg : room;
        memcpy(ps->head + ps->head_len, data, take);
        ps->head_len += (unsigned)take;
        if (!nl)
            return 0;
        int r = json_line(ps, nreq);
        if (r < 0)
            return r;
        *replies += (uint64_t)r;
        ps->head_len = 0;
        data = nl + 1;
        n -= seg + 1;
    }
    return 0;
}

int bench_parse(bench_parser *ps, const bench_pattern *pat, tk_bench_mode mode,
                const unsigned char *data, size_t n, uint64_t *replies)
{
    switch (mode) {
    case TK_BENCH_LENGTH: return parse_length(ps, pat->max_reply, data, n, replies);
    case TK_BENCH_JSON: return parse_json(ps, pat->nreq, data, n, replies);
    case TK_BENCH_FILE: return parse_file(ps, data, n, replies);
    default: *replies += count_lines(data, n); return 0;
    }
}

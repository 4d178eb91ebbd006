/* Fuzzes the version 2 file-transfer bodies. data[0..1] choose the stream:
 * bit 7 of data[0] says frames end with a 32-byte HMAC tag, the other 15
 * bits are the largest payload tk_frame_next accepts; the rest is the
 * stream. Each frame's body goes to tk_hello_decode (HELLO) or tk_v2_decode
 * (everything else), ENTRIES records through tk_entry_decode. The answer must
 * match the body lengths docs/PROTOCOL.md allows, and whatever decodes must
 * re-encode with the matching tk_v2_encode_* to the same bytes and decode
 * again to the same fields. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/frame.h"

/* What tk_v2_decode must answer for a body of n bytes, worked out from the
 * protocol's tables rather than from tk_v2_fixed_len. */
static int expected_rc(uint8_t type, const unsigned char *body, size_t n)
{
    int ok;
    switch (type) {
    case TK_V2_GET:
    case TK_V2_PUT: ok = n >= 13; break;
    case TK_V2_OPEN: ok = n == 29; break;
    case TK_V2_DATA:
    case TK_V2_LIST:
    case TK_V2_ENTRIES: ok = n >= 4; break;
    case TK_V2_END: ok = n == 12 || n == 12 + TK_FRAME_DIGEST; break;
    case TK_V2_ERROR: ok = n >= 6; break;
    case TK_V2_STAT: ok = n >= 5; break;
    case TK_V2_INFO: ok = n == 21 || n == 21 + TK_FRAME_DIGEST; break;
    case TK_V2_READY: ok = n == 12; break;
    case TK_V2_PING:
    case TK_V2_PONG: ok = n == 12 && tk_get_u32(body) == 0; break; /* stream 0 only */
    case TK_V2_DONE: ok = n == 12 + TK_FRAME_DIGEST; break;
    case TK_V2_CANCEL: ok = n == 4; break;
    default: return -ENOTSUP; /* HELLO included: tk_hello_decode's job */
    }
    return ok ? 0 : -EINVAL;
}

/* Two byte views hold the same bytes (both absent, or same length and
 * content). */
static int same_view(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
    if ((a == NULL) != (b == NULL) || alen != blen)
        return 0;
    return alen == 0 || memcmp(a, b, alen) == 0;
}

static void same_msg(const tk_v2_msg *x, const tk_v2_msg *y)
{
    if (x->stream != y->stream || x->flags != y->flags || x->kind != y->kind ||
        x->code != y->code || x->a != y->a || x->b != y->b || x->mtime != y->mtime ||
        x->has_digest != y->has_digest)
        abort();
    if (!same_view(x->digest, x->digest ? TK_FRAME_DIGEST : 0, y->digest,
                   y->digest ? TK_FRAME_DIGEST : 0) ||
        !same_view(x->name, x->name_len, y->name, y->name_len) ||
        !same_view(x->data, x->data_len, y->data, y->data_len))
        abort();
    if (x->has_digest != (x->digest != NULL))
        abort();
}

/* Re-encodes ENTRIES records one by one into out; a truncated tail (which
 * tk_entry_decode must refuse) is copied as it is. Returns the bytes
 * written. */
static size_t reencode_records(unsigned char *out, const unsigned char *p, size_t n)
{
    size_t off = 0, o = 0;
    while (off < n) {
        tk_entry e, back;
        size_t len = tk_entry_decode(p + off, n - off, &e);
        size_t left = n - off;
        int whole = left >= TK_ENTRY_FIXED &&
                    left - TK_ENTRY_FIXED >= ((size_t)p[off + 17] << 8 | p[off + 18]);
        if ((len != 0) != whole)
            abort();
        if (len == 0)
            break;
        if (len != TK_ENTRY_FIXED + e.name_len || e.name != p + off + TK_ENTRY_FIXED ||
            e.kind != p[off])
            abort();
        size_t w = tk_entry_encode(out + o, &e);
        if (w != len || memcmp(out + o, p + off, len) != 0)
            abort();
        if (tk_entry_decode(out + o, w, &back) != w || back.kind != e.kind || back.size != e.size ||
            back.mtime != e.mtime || !same_view(back.name, back.name_len, e.name, e.name_len))
            abort();
        o += w;
        off += len;
    }
    memcpy(out + o, p + off, n - off);
    return o + (n - off);
}

/* Encodes m as a frame of the given type with the matching encoder. */
static size_t reencode(unsigned char *out, size_t tag, uint8_t type, const tk_v2_msg *m)
{
    const unsigned char *digest = m->has_digest ? m->digest : NULL;
    size_t o;
    switch (type) {
    case TK_V2_GET:
        return tk_v2_encode_get(out, tag, m->stream, m->a, m->flags, m->name, m->name_len);
    case TK_V2_OPEN: return tk_v2_encode_open(out, tag, m->stream, m->b, m->a, m->mtime, m->flags);
    case TK_V2_DATA:
        o = tk_v2_encode_data_head(out, tag, m->stream, m->data_len);
        if (m->data_len)
            memcpy(out + o, m->data, m->data_len);
        return o + m->data_len;
    case TK_V2_END: return tk_v2_encode_end(out, tag, m->stream, m->a, digest);
    case TK_V2_ERROR: return tk_v2_encode_error(out, tag, m->stream, m->code, m->data, m->data_len);
    case TK_V2_LIST: return tk_v2_encode_list(out, tag, m->stream, m->name, m->name_len);
    case TK_V2_ENTRIES:
        o = tk_v2_encode_entries_head(out, tag, m->stream, m->data_len);
        return o + reencode_records(out + o, m->data, m->data_len);
    case TK_V2_STAT: return tk_v2_encode_stat(out, tag, m->stream, m->flags, m->name, m->name_len);
    case TK_V2_INFO: return tk_v2_encode_info(out, tag, m->stream, m->kind, m->a, m->mtime, digest);
    case TK_V2_PUT:
        return tk_v2_encode_put(out, tag, m->stream, m->a, m->flags, m->name, m->name_len);
    case TK_V2_READY: return tk_v2_encode_ready(out, tag, m->stream, m->a);
    case TK_V2_DONE:
        if (!digest)
            abort();
        return tk_v2_encode_done(out, tag, m->stream, m->a, digest);
    case TK_V2_CANCEL: return tk_v2_encode_cancel(out, tag, m->stream);
    case TK_V2_PING:
    case TK_V2_PONG: return tk_v2_encode_ping(out, tag, type, m->a);
    default: abort();
    }
}

/* The re-encoded frame out[0..k) has a v2 header of the given type whose
 * length counts the body and the tag, and splits whole once the tag is
 * there. Returns its body. */
static const unsigned char *check_header(unsigned char *out, size_t k, size_t tag, uint8_t type,
                                         size_t blen)
{
    if (k != TK_FRAME_HEADER + blen || out[0] != TK_FRAME_V2 || out[1] != type ||
        tk_get_u32(out + 2) != blen + tag)
        abort();
    memset(out + k, 0xa5, tag);
    tk_frame_hdr h;
    const unsigned char *p;
    size_t consumed;
    if (tk_frame_next(out, k + tag, UINT32_MAX, &h, &p, &consumed) != TK_CODEC_OK ||
        consumed != k + tag || p != out + TK_FRAME_HEADER || h.length != blen + tag)
        abort();
    return p;
}

static void check_hello(unsigned char *out, size_t tag, const unsigned char *body, size_t blen)
{
    tk_hello h, back;
    int rc = tk_hello_decode(body, blen, &h);
    if (rc != (blen == TK_HELLO_LEN && body[1] == 0 ? 0 : -EINVAL))
        abort();
    if (rc != 0)
        return;
    size_t k = tk_v2_encode_hello(out, tag, &h);
    const unsigned char *p = check_header(out, k, tag, TK_V2_HELLO, blen);
    if (memcmp(p, body, TK_HELLO_LEN) != 0)
        abort();
    if (tk_hello_decode(p, blen, &back) != 0 || back.flags != h.flags ||
        back.features != h.features || back.max_frame != h.max_frame ||
        memcmp(back.nonce, h.nonce, TK_FRAME_NONCE) != 0)
        abort();
}

static void check_body(unsigned char *out, size_t tag, uint8_t type, const unsigned char *body,
                       size_t blen)
{
    if (type == TK_V2_HELLO) {
        check_hello(out, tag, body, blen);
        return;
    }
    tk_v2_msg m, back;
    int rc = tk_v2_decode(type, body, blen, &m);
    if (rc != expected_rc(type, body, blen))
        abort();
    if (rc != 0)
        return;
    if (m.stream != tk_get_u32(body))
        abort();
    size_t k = reencode(out, tag, type, &m);
    const unsigned char *p = check_header(out, k, tag, type, blen);
    if (memcmp(p, body, blen) != 0)
        abort();
    if (tk_v2_decode(type, p, blen, &back) != 0)
        abort();
    same_msg(&back, &m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t tag = data[0] & 0x80 ? TK_FRAME_TAG : 0;
    uint32_t max = (uint32_t)(data[0] & 0x7f) << 8 | data[1];
    const unsigned char *in = data + 2;
    size_t n = size - 2;

    unsigned char *out = malloc(n + TK_FRAME_HEADER + TK_FRAME_TAG + TK_HELLO_LEN);
    if (!out)
        abort();
    size_t off = 0;
    for (;;) {
        tk_frame_hdr h;
        const unsigned char *p;
        size_t consumed;
        tk_codec_status st = tk_frame_next(in + off, n - off, max, &h, &p, &consumed);
        if (st != TK_CODEC_OK)
            break;
        if (consumed != TK_FRAME_HEADER + h.length || p != in + off + TK_FRAME_HEADER)
            abort();
        size_t t = h.length >= tag ? tag : 0;
        check_body(out, t, h.type, p, h.length - t);
        off += consumed;
    }
    free(out);
    return 0;
}

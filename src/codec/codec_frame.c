/* The file-transfer frames: header, version 1 response, version 2 bodies and
 * directory records. Decoders check every length against the bytes they were
 * given and never allocate. */
#include <errno.h>
#include <string.h>

#include "tcpkit/frame.h"

static const char *const err_names[TK_FERR_MAX] = {
    [TK_FERR_NOT_FOUND] = "not_found",
    [TK_FERR_NOT_REGULAR] = "not_regular",
    [TK_FERR_FORBIDDEN] = "forbidden",
    [TK_FERR_BAD_REQUEST] = "bad_request",
    [TK_FERR_TOO_LARGE] = "too_large",
    [TK_FERR_EXISTS] = "exists",
    [TK_FERR_BUSY] = "busy",
    [TK_FERR_NO_SPACE] = "no_space",
    [TK_FERR_READ_ONLY] = "read_only",
    [TK_FERR_DIGEST] = "digest_mismatch",
    [TK_FERR_IO] = "io_error",
    [TK_FERR_UNSUPPORTED] = "unsupported",
    [TK_FERR_AUTH] = "auth",
    [TK_FERR_SHUTDOWN] = "shutting_down",
    [TK_FERR_CHANGED] = "changed",
    [TK_FERR_CANCELLED] = "cancelled",
    [TK_FERR_NOT_DIR] = "not_a_directory",
    [TK_FERR_BAD_OFFSET] = "bad_offset",
    [TK_FERR_PROTOCOL] = "protocol",
    [TK_FERR_TIMEOUT] = "timeout",
};

const char *tk_file_err_name(unsigned code)
{
    return code < TK_FERR_MAX && err_names[code] ? err_names[code] : "unknown";
}

uint16_t tk_get_u16(const unsigned char *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

uint32_t tk_get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t tk_get_u64(const unsigned char *p)
{
    return (uint64_t)tk_get_u32(p) << 32 | tk_get_u32(p + 4);
}

void tk_put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

void tk_put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

void tk_put_u64(unsigned char *p, uint64_t v)
{
    tk_put_u32(p, (uint32_t)(v >> 32));
    tk_put_u32(p + 4, (uint32_t)v);
}

int tk_frame_hdr_decode(const unsigned char *p, size_t n, tk_frame_hdr *h)
{
    if (n < TK_FRAME_HEADER)
        return 0;
    h->version = p[0];
    h->type = p[1];
    h->length = tk_get_u32(p + 2);
    return 1;
}

tk_codec_status tk_frame_next(const unsigned char *data, size_t len, uint32_t max, tk_frame_hdr *h,
                              const unsigned char **payload, size_t *consumed)
{
    *consumed = 0;
    *payload = NULL;
    if (!tk_frame_hdr_decode(data, len, h))
        return TK_CODEC_NEED;
    if (h->length > max)
        return TK_CODEC_TOO_LONG;
    if (len - TK_FRAME_HEADER < h->length)
        return TK_CODEC_NEED;
    *payload = data + TK_FRAME_HEADER;
    *consumed = TK_FRAME_HEADER + (size_t)h->length;
    return TK_CODEC_OK;
}

void tk_frame_hdr_encode(unsigned char out[TK_FRAME_HEADER], uint8_t version, uint8_t type,
                         uint32_t length)
{
    out[0] = version;
    out[1] = type;
    tk_put_u32(out + 2, length);
}

int tk_v1_parse_response(const unsigned char *p, size_t n, uint64_t *size)
{
    size_t colon = n;
    while (colon > 0 && p[colon - 1] != ':')
        colon--;
    if (colon == 0 || colon == n || n - colon > 20)
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = colon; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *size = v;
    return 0;
}

int tk_hello_decode(const unsigned char *p, size_t n, tk_hello *h)
{
    if (n != TK_HELLO_LEN || p[1] != 0)
        return -EINVAL;
    h->flags = p[0];
    h->features = tk_get_u16(p + 2);
    h->max_frame = tk_get_u32(p + 4);
    memcpy(h->nonce, p + 8, TK_FRAME_NONCE);
    return 0;
}

void tk_hello_encode(unsigned char out[TK_HELLO_LEN], const tk_hello *h)
{
    out[0] = h->flags;
    out[1] = 0;
    tk_put_u16(out + 2, h->features);
    tk_put_u32(out + 4, h->max_frame);
    memcpy(out + 8, h->nonce, TK_FRAME_NONCE);
}

size_t tk_v2_fixed_len(uint8_t type)
{
    switch (type) {
    case TK_V2_GET: return 13;
    case TK_V2_OPEN: return 29;
    case TK_V2_DATA: return 4;
    case TK_V2_END: return 12;
    case TK_V2_ERROR: return 6;
    case TK_V2_LIST: return 4;
    case TK_V2_ENTRIES: return 4;
    case TK_V2_STAT: return 5;
    case TK_V2_INFO: return 21;
    case TK_V2_PUT: return 13;
    case TK_V2_READY: return 12;
    case TK_V2_DONE: return 44;
    case TK_V2_CANCEL: return 4;
    case TK_V2_PING:
    case TK_V2_PONG: return 12;
    case TK_V2_HELLO: return TK_HELLO_LEN;
    default: return 0;
    }
}

/* The name or data that follows the fixed part. */
static void rest(tk_v2_msg *m, const unsigned char *p, size_t n, size_t fixed, int as_name)
{
    if (as_name) {
        m->name = p + fixed;
        m->name_len = n - fixed;
    } else {
        m->data = p + fixed;
        m->data_len = n - fixed;
    }
}

int tk_v2_decode(uint8_t type, const unsigned char *p, size_t n, tk_v2_msg *m)
{
    memset(m, 0, sizeof(*m));
    size_t fixed = tk_v2_fixed_len(type);
    if (fixed == 0 || type == TK_V2_HELLO)
        return -ENOTSUP;
    if (n < fixed)
        return -EINVAL;
    m->stream = tk_get_u32(p);
    switch (type) {
    case TK_V2_GET:
        m->a = tk_get_u64(p + 4);
        m->flags = p[12];
        rest(m, p, n, fixed, 1);
        break;
    case TK_V2_OPEN:
        if (n != fixed)
            return -EINVAL;
        m->b = tk_get_u64(p + 4);
        m->a = tk_get_u64(p + 12);
        m->mtime = (int64_t)tk_get_u64(p + 20);
        m->flags = p[28];
        break;
    case TK_V2_DATA:
    case TK_V2_ENTRIES: rest(m, p, n, fixed, 0); break;
    case TK_V2_END:
        if (n != fixed && n != fixed + TK_FRAME_DIGEST)
            return -EINVAL;
        m->a = tk_get_u64(p + 4);
        m->has_digest = n > fixed;
        m->digest = m->has_digest ? p + fixed : NULL;
        break;
    case TK_V2_ERROR:
        m->code = tk_get_u16(p + 4);
        rest(m, p, n, fixed, 0);
        break;
    case TK_V2_LIST: rest(m, p, n, fixed, 1); break;
    case TK_V2_STAT:
        m->flags = p[4];
        rest(m, p, n, fixed, 1);
        break;
    case TK_V2_INFO:
        if (n != fixed && n != fixed + TK_FRAME_DIGEST)
            return -EINVAL;
        m->kind = p[4];
        m->a = tk_get_u64(p + 5);
        m->mtime = (int64_t)tk_get_u64(p + 13);
        m->has_digest = n > fixed;
        m->digest = m->has_digest ? p + fixed : NULL;
        break;
    case TK_V2_PUT:
        m->a = tk_get_u64(p + 4);
        m->flags = p[12];
        rest(m, p, n, fixed, 1);
        break;
    case TK_V2_READY:
    case TK_V2_PING:
    case TK_V2_PONG:
        if (n != fixed || (type != TK_V2_READY && m->stream != 0))
            return -EINVAL;
        m->a = tk_get_u64(p + 4);
        break;
    case TK_V2_DONE:
        if (n != fixed)
            return -EINVAL;
        m->a = tk_get_u64(p + 4);
        m->has_digest = 1;
        m->digest = p + 12;
        break;
    case TK_V2_CANCEL:
        if (n != fixed)
            return -EINVAL;
        break;
    default: return -ENOTSUP;
    }
    return 0;
}

/* Header plus stream id; returns the offset of the rest of the body. */
static size_t head(unsigned char *out, uint8_t type, size_t body, size_t tag_len, uint32_t stream)
{
    tk_frame_hdr_encode(out, TK_FRAME_V2, type, (uint32_t)(body + tag_len));
    tk_put_u32(out + TK_FRAME_HEADER, stream);
    return TK_FRAME_HEADER + TK_FRAME_STREAM;
}

/* "stream u64 flags name": the shape of GET and PUT. */
static size_t encode_u64_flags_name(unsigned char *out, uint8_t type, size_t tag_len,
                                    uint32_t stream, uint64_t v, uint8_t flags, const void *name,
                                    size_t name_len)
{
    size_t o = head(out, type, 13 + name_len, tag_len, stream);
    tk_put_u64(out + o, v);
    out[o + 8] = flags;
    if (name_len)
        memcpy(out + o + 9, name, name_len);
    return o + 9 + name_len;
}

size_t tk_v2_encode_get(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t offset,
                        uint8_t flags, const void *name, size_t name_len)
{
    return encode_u64_flags_name(out, TK_V2_GET, tag_len, stream, offset, flags, name, name_len);
}

size_t tk_v2_encode_put(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t size,
                        uint8_t flags, const void *name, size_t name_len)
{
    return encode_u64_flags_name(out, TK_V2_PUT, tag_len, stream, size, flags, name, name_len);
}

size_t tk_v2_encode_open(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t size,
                         uint64_t offset, int64_t mtime_ns, uint8_t flags)
{
    size_t o = head(out, TK_V2_OPEN, 29, tag_len, stream);
    tk_put_u64(out + o, size);
    tk_put_u64(out + o + 8, offset);
    tk_put_u64(out + o + 16, (uint64_t)mtime_ns);
    out[o + 24] = flags;
    return o + 25;
}

size_t tk_v2_encode_data_head(unsigned char *out, size_t tag_len, uint32_t stream, size_t data_len)
{
    return head(out, TK_V2_DATA, 4 + data_len, tag_len, stream);
}

size_t tk_v2_encode_end(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t count,
                        const unsigned char *digest)
{
    size_t dlen = digest ? TK_FRAME_DIGEST : 0;
    size_t o = head(out, TK_V2_END, 12 + dlen, tag_len, stream);
    tk_put_u64(out + o, count);
    if (digest)
        memcpy(out + o + 8, digest, TK_FRAME_DIGEST);
    return o + 8 + dlen;
}

size_t tk_v2_encode_error(unsigned char *out, size_t tag_len, uint32_t stream, uint16_t code,
                          const void *msg, size_t msg_len)
{
    size_t o = head(out, TK_V2_ERROR, 6 + msg_len, tag_len, stream);
    tk_put_u16(out + o, code);
    if (msg_len)
        memcpy(out + o + 2, msg, msg_len);
    return o + 2 + msg_len;
}

size_t tk_v2_encode_list(unsigned char *out, size_t tag_len, uint32_t stream, const void *name,
                         size_t name_len)
{
    size_t o = head(out, TK_V2_LIST, 4 + name_len, tag_len, stream);
    if (name_len)
        memcpy(out + o, name, name_len);
    return o + name_len;
}

size_t tk_v2_encode_stat(unsigned char *out, size_t tag_len, uint32_t stream, uint8_t flags,
                         const void *name, size_t name_len)
{
    size_t o = head(out, TK_V2_STAT, 5 + name_len, tag_len, stream);
    out[o] = flags;
    if (name_len)
        memcpy(out + o + 1, name, name_len);
    return o + 1 + name_len;
}

size_t tk_v2_encode_entries_head(unsigned char *out, size_t tag_len, uint32_t stream,
                                 size_t records_len)
{
    return head(out, TK_V2_ENTRIES, 4 + records_len, tag_len, stream);
}

size_t tk_v2_encode_info(unsigned char *out, size_t tag_len, uint32_t stream, uint8_t kind,
                         uint64_t size, int64_t mtime_ns, const unsigned char *digest)
{
    size_t dlen = digest ? TK_FRAME_DIGEST : 0;
    size_t o = head(out, TK_V2_INFO, 21 + dlen, tag_len, stream);
    out[o] = kind;
    tk_put_u64(out + o + 1, size);
    tk_put_u64(out + o + 9, (uint64_t)mtime_ns);
    if (digest)
        memcpy(out + o + 17, digest, TK_FRAME_DIGEST);
    return o + 17 + dlen;
}

size_t tk_v2_encode_ready(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t offset)
{
    size_t o = head(out, TK_V2_READY, 12, tag_len, stream);
    tk_put_u64(out + o, offset);
    return o + 8;
}

size_t tk_v2_encode_done(unsigned char *out, size_t tag_len, uint32_t stream, uint64_t size,
                         const unsigned char *digest)
{
    size_t o = head(out, TK_V2_DONE, 44, tag_len, stream);
    tk_put_u64(out + o, size);
    memcpy(out + o + 8, digest, TK_FRAME_DIGEST);
    return o + 8 + TK_FRAME_DIGEST;
}

size_t tk_v2_encode_cancel(unsigned char *out, size_t tag_len, uint32_t stream)
{
    return head(out, TK_V2_CANCEL, 4, tag_len, stream);
}

size_t tk_v2_encode_ping(unsigned char *out, size_t tag_len, uint8_t type, uint64_t token)
{
    size_t o = head(out, type, 12, tag_len, 0);
    tk_put_u64(out + o, token);
    return o + 8;
}

size_t tk_v2_encode_hello(unsigned char *out, size_t tag_len, const tk_hello *h)
{
    tk_frame_hdr_encode(out, TK_FRAME_V2, TK_V2_HELLO, (uint32_t)(TK_HELLO_LEN + tag_len));
    tk_hello_encode(out + TK_FRAME_HEADER, h);
    return TK_FRAME_HEADER + TK_HELLO_LEN;
}

size_t tk_entry_encode(unsigned char *out, const tk_entry *e)
{
    out[0] = e->kind;
    tk_put_u64(out + 1, e->size);
    tk_put_u64(out + 9, (uint64_t)e->mtime);
    tk_put_u16(out + 17, (uint16_t)e->name_len);
    if (e->name_len)
        memcpy(out + TK_ENTRY_FIXED, e->name, e->name_len);
    return TK_ENTRY_FIXED + e->name_len;
}

size_t tk_entry_decode(const unsigned char *p, size_t n, tk_entry *e)
{
    if (n < TK_ENTRY_FIXED)
        return 0;
    size_t len = tk_get_u16(p + 17);
    if (n - TK_ENTRY_FIXED < len)
        return 0;
    e->kind = p[0];
    e->size = tk_get_u64(p + 1);
    e->mtime = (int64_t)tk_get_u64(p + 9);
    e->name = p + TK_ENTRY_FIXED;
    e->name_len = len;
    return TK_ENTRY_FIXED + len;
}

/* Version-1 error messages: the seed's, and tcpkit's for what the seed
 * never had to say. */
static const struct {
    unsigned code;
    const char *msg;
} v1_errors[] = {
    {TK_FERR_NOT_FOUND, "File not found"},
    {TK_FERR_NOT_REGULAR, "Not a regular file"},
    {TK_FERR_NOT_REGULAR, "Is a directory"},
    {TK_FERR_FORBIDDEN, "Access denied"},
    {TK_FERR_TOO_LARGE, "Name too long"},
    {TK_FERR_BAD_REQUEST, "Bad file name"},
    {TK_FERR_BUSY, "Server busy"},
    {TK_FERR_CHANGED, "File changed while opening"},
    {TK_FERR_SHUTDOWN, "Server shutting down"},
    {TK_FERR_AUTH, "Authentication required (protocol version 2)"},
};

const char *tk_v1_error_message(unsigned code, int is_dir)
{
    if (code == TK_FERR_NOT_REGULAR && is_dir)
        return "Is a directory";
    for (size_t i = 0; i < sizeof(v1_errors) / sizeof(v1_errors[0]); i++)
        if (v1_errors[i].code == code)
            return v1_errors[i].msg;
    return "Read error";
}

unsigned tk_v1_error_code(const unsigned char *msg, size_t n)
{
    for (size_t i = 0; i < sizeof(v1_errors) / sizeof(v1_errors[0]); i++)
        if (strlen(v1_errors[i].msg) == n && memcmp(v1_errors[i].msg, msg, n) == 0)
            return v1_errors[i].code;
    return TK_FERR_IO;
}

void tk_heartbeat_init(tk_heartbeat *h, uint64_t now_ms)
{
    memset(h, 0, sizeof(*h));
    h->heard_ms = h->moved_ms = now_ms;
}

tk_hb_action tk_heartbeat_tick(tk_heartbeat *h, uint64_t now_ms, uint64_t bytes_out,
                               uint32_t interval_ms)
{
    uint64_t data = bytes_out > h->ping_out ? bytes_out - h->ping_out : 0;
    if (data > h->data_out) {
        h->data_out = data;
        h->moved_ms = now_ms;
    }
    uint64_t alive = h->heard_ms > h->moved_ms ? h->heard_ms : h->moved_ms;
    if (now_ms - alive >= 3ull * interval_ms)
        return TK_HB_DEAD;
    return now_ms - h->heard_ms >= interval_ms ? TK_HB_PING : TK_HB_QUIET;
}

void tk_heartbeat_pinged(tk_heartbeat *h, size_t frame_len)
{
    h->ping_out += frame_len;
}

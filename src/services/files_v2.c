/* Version 2: the HELLO exchange, frame checks (length limit, HMAC), and the
 * dispatch of requests to streams. DATA of a plain upload is passed to the
 * file as it arrives, without waiting for the whole frame. */
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#include "files_internal.h"

static void hello(files_conn *fc, const unsigned char *body, size_t n)
{
    tk_files *f = fc->fl->f;
    tk_hello h;
    if (tk_hello_decode(body, n, &h) < 0) {
        files_conn_fail(fc, TK_FERR_BAD_REQUEST, "malformed HELLO");
        return;
    }
    if (h.max_frame < 65536 || h.max_frame > 16u << 20) {
        files_conn_fail(fc, TK_FERR_BAD_REQUEST, "HELLO max_frame must be 64 KiB to 16 MiB");
        return;
    }
    if (f->cfg.auth_key && !(h.flags & TK_HELLO_AUTH)) {
        files_conn_fail(fc, TK_FERR_AUTH, "authentication required");
        return;
    }
    tk_hello mine = {
        .flags = f->cfg.auth_key ? TK_HELLO_AUTH : 0,
        .features = (uint16_t)(h.features & TK_FEATURE_ZSTD),
        .max_frame = f->cfg.max_frame,
    };
    if (RAND_bytes(mine.nonce, TK_FRAME_NONCE) != 1) {
        files_conn_fail(fc, TK_FERR_IO, "no randomness for the nonce");
        return;
    }
    fc->features = mine.features;
    fc->peer_max_frame = h.max_frame;
    if (f->cfg.auth_key) {
        unsigned char c2s[TK_FRAME_TAG], s2c[TK_FRAME_TAG];
        int rc =
            tk_frame_derive_keys(f->cfg.auth_key, f->cfg.auth_key_len, body, mine.nonce, c2s, s2c);
        if (rc == 0)
            rc = tk_frame_mac_new(c2s, &fc->mac_in);
        if (rc == 0)
            rc = tk_frame_mac_new(s2c, &fc->mac_out);
        memset(c2s, 0, sizeof(c2s));
        memset(s2c, 0, sizeof(s2c));
        if (rc < 0) {
            files_conn_fail(fc, TK_FERR_IO, "cannot set up authentication");
            return;
        }
        fc->tag_len = TK_FRAME_TAG;
    }
    fc->hello_done = 1;
    unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + TK_HELLO_LEN);
    if (p)
        files_frame_commit(fc, p, tk_v2_encode_hello(p, fc->tag_len, &mine));
}

/* A new GET, LIST, STAT or PUT. */
static void request(files_conn *fc, uint8_t type, const tk_v2_msg *m)
{
    tk_files *f = fc->fl->f;
    /* Both leave the client's streams ambiguous: the connection ends. */
    if (m->stream == 0) {
        files_conn_fail(fc, TK_FERR_BAD_REQUEST, "stream 0 is the connection, not a request");
        return;
    }
    if (files_stream_find(fc, m->stream)) {
        char msg[64];
        snprintf(msg, sizeof(msg), "stream %u is already open", (unsigned)m->stream);
        files_conn_fail(fc, TK_FERR_BAD_REQUEST, msg);
        return;
    }
    if (fc->closing) {
        files_send_error(fc, m->stream, TK_FERR_SHUTDOWN, "server shutting down");
        return;
    }
    if (fc->nstreams >= f->cfg.max_streams || atomic_load(&f->transfers) >= f->cfg.max_transfers) {
        char msg[80];
        if (fc->nstreams >= f->cfg.max_streams)
            snprintf(msg, sizeof(msg), "too many open streams (limit %u per connection)",
                     f->cfg.max_streams);
        else
            snprintf(msg, sizeof(msg), "too many transfers on the server (limit %u)",
                     f->cfg.max_transfers);
        files_send_error(fc, m->stream, TK_FERR_BUSY, msg);
        return;
    }
    uint8_t known = type == TK_V2_GET    ? TK_XFER_ZSTD
                    : type == TK_V2_PUT  ? (TK_XFER_ZSTD | TK_PUT_RESUME | TK_PUT_OVERWRITE)
                    : type == TK_V2_STAT ? TK_STAT_DIGEST
                                         : 0;
    if ((m->flags & ~known) ||
        ((m->flags & TK_XFER_ZSTD) && type != TK_V2_STAT && !(fc->features & TK_FEATURE_ZSTD))) {
        files_send_error(fc, m->stream, TK_FERR_UNSUPPORTED, "unknown or unagreed flags");
        return;
    }
    char path[FILES_NAME_MAX + 1];
    const char *msg = "";
    int rc = files_name_check(m->name, m->name_len, f->cfg.show_hidden, path, &msg);
    if (rc == 0 && (type == TK_V2_GET || type == TK_V2_PUT) && m->name_len == 0) {
        rc = -TK_FERR_BAD_REQUEST;
        msg = "no file name";
    }
    if (rc < 0) {
        files_send_error(fc, m->stream, (unsigned)-rc, msg);
        return;
    }
    files_kind_t kind = type == TK_V2_GET    ? KIND_GET
                        : type == TK_V2_LIST ? KIND_LIST
                        : type == TK_V2_STAT ? KIND_STAT
                                             : KIND_PUT;
    files_stream *s = files_stream_new(fc, m->stream, kind);
    if (!s) {
        files_send_error(fc, m->stream, TK_FERR_BUSY, "out of memory");
        return;
    }
    switch (type) {
    case TK_V2_GET:
        s->offset = m->a;
        s->zstd = (m->flags & TK_XFER_ZSTD) != 0;
        rc = files_get_start(fc, s, path, &msg);
        break;
    case TK_V2_LIST: rc = files_list_start(fc, s, path, &msg); break;
    case TK_V2_STAT: rc = files_stat_start(fc, s, path, m->flags, &msg); break;
    default: rc = files_put_start(fc, s, path, m->a, m->flags, &msg); break;
    }
    if (rc < 0) {
        files_stream_free(s);
        files_send_error(fc, m->stream, (unsigned)-rc, msg);
    }
}

static void dispatch(files_conn *fc, uint8_t type, const unsigned char *body, size_t n)
{
    if (!fc->hello_done) {
        if (type == TK_V2_HELLO)
            hello(fc, body, n);
        else
            files_conn_fail(fc, TK_FERR_PROTOCOL, "the first frame must be HELLO");
        return;
    }
    tk_v2_msg m;
    int rc = tk_v2_decode(type, body, n, &m);
    if (rc == -ENOTSUP) {
        char msg[48];
        if (type == TK_V2_HELLO) {
            files_conn_fail(fc, TK_FERR_PROTOCOL, "HELLO was already exchanged");
            return;
        }
        snprintf(msg, sizeof(msg), "unknown frame type %u", type);
        files_send_error(fc, n >= TK_FRAME_STREAM ? tk_get_u32(body) : 0, TK_FERR_UNSUPPORTED, msg);
        return;
    }
    if (rc < 0) {
        if (n >= TK_FRAME_STREAM && tk_get_u32(body) != 0)
            files_send_error(fc, tk_get_u32(body), TK_FERR_BAD_REQUEST, "malformed frame");
        else
            files_conn_fail(fc, TK_FERR_BAD_REQUEST, "malformed frame");
        return;
    }
    files_stream *s;
    switch (type) {
    case TK_V2_PING: {
        unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 12);
        if (p)
            files_frame_commit(fc, p, tk_v2_encode_ping(p, fc->tag_len, TK_V2_PONG, m.a));
        return;
    }
    case TK_V2_PONG: return; /* hearing from the peer was the point */
    case TK_V2_GET:
    case TK_V2_LIST:
    case TK_V2_STAT:
    case TK_V2_PUT: request(fc, type, &m); return;
    case TK_V2_DATA:
        s = files_stream_find(fc, m.stream);
        if (s && s->kind == KIND_PUT)
            files_put_frame(s, m.data, m.data_len);
        return; /* DATA for a stream already ended is dropped */
    case TK_V2_END:
        s = files_stream_find(fc, m.stream);
        if (s && s->kind == KIND_PUT)
            files_put_end(s, m.a, m.has_digest ? m.digest : NULL);
        return;
    case TK_V2_CANCEL:
    case TK_V2_ERROR:
        if (m.stream == 0 && type == TK_V2_ERROR) {
            tk_conn_close_after_flush(fc->conn, TK_CLOSE_PEER);
            return;
        }
        s = files_stream_find(fc, m.stream);
        if (s)
            files_stream_free(s);
        files_conn_maybe_finish(fc);
        return;
    default: {
        char msg[48];
        snprintf(msg, sizeof(msg), "frame type %u is sent by servers only", type);
        files_conn_fail(fc, TK_FERR_PROTOCOL, msg);
        return;
    }
    }
}

size_t files_v2_input(files_conn *fc, const unsigned char *data, size_t len)
{
    tk_files *f = fc->fl->f;
    size_t off = 0;
    while (off < len && !tk_conn_closing(fc->conn)) {
        if (fc->in_left) {
            size_t n = len - off < fc->in_left ? len - off : (size_t)fc->in_left;
            if (fc->in_stream)
                files_put_data(fc->in_stream, data + off, n);
            off += n;
            fc->in_left -= n;
            continue;
        }
        tk_frame_hdr h;
        if (!tk_frame_hdr_decode(data + off, len - off, &h))
            break;
        if (h.version != TK_FRAME_V2) {
            char msg[64];
            snprintf(msg, sizeof(msg), "version %u frame on a version-2 connection", h.version);
            files_conn_fail(fc, h.version == TK_FRAME_V1 ? TK_FERR_PROTOCOL : TK_FERR_UNSUPPORTED,
                            msg);
            return len;
        }
        if (h.length > f->cfg.max_frame) {
            char msg[80];
            snprintf(msg, sizeof(msg), "frame too large (%u bytes, limit %u)", (unsigned)h.length,
                     (unsigned)f->cfg.max_frame);
            files_conn_fail(fc, TK_FERR_TOO_LARGE, msg);
            return len;
        }
        /* A plain upload's DATA goes to the file as it arrives. */
        if (h.type == TK_V2_DATA && fc->hello_done && !fc->tag_len && h.length >= TK_FRAME_STREAM) {
            if (len - off < TK_FRAME_HEADER + TK_FRAME_STREAM)
                break;
            files_stream *s = files_stream_find(fc, tk_get_u32(data + off + TK_FRAME_HEADER));
            if (!s || s->kind != KIND_PUT || !s->zstd) {
                off += TK_FRAME_HEADER + TK_FRAME_STREAM;
                fc->in_left = h.length - TK_FRAME_STREAM;
                fc->in_stream = s && s->kind == KIND_PUT ? s : NULL;
                continue;
            }
        }
        const unsigned char *body;
        size_t used;
        if (tk_frame_next(data + off, len - off, f->cfg.max_frame, &h, &body, &used) ==
            TK_CODEC_NEED)
            break;
        const unsigned char *hdr = data + off;
        off += used;
        size_t n = h.length;
        if (fc->tag_len) {
            if (n < fc->tag_len || tk_frame_mac_verify(fc->mac_in, hdr, body, n - fc->tag_len,
                                                       body + n - fc->tag_len) < 0) {
                char who[TK_ADDR_STRLEN];
                tk_info("files: %s: a frame failed authentication",
                        tk_addr_format(tk_conn_peer(fc->conn), who, sizeof(who)));
                files_conn_fail(fc, TK_FERR_AUTH, "frame authentication failed");
                return len;
            }
            n -= fc->tag_len;
        }
        tk_metrics_messages(fc->fl->metrics, 1);
        dispatch(fc, h.type, body, n);
    }
    return off;
}

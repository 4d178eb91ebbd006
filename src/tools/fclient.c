/* The file client's connection: dialing, the HELLO exchange, reading and
 * checking frames, heartbeats, and starting queued transfers. */
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fclient_internal.h"
#include "tcpkit/log.h"
#include "tcpkit/sock.h"

void tk_fclient_config_init(tk_fclient_config *c)
{
    memset(c, 0, sizeof(*c));
    c->protocol = 2;
    c->connect_timeout_ms = 10 * 1000;
    c->heartbeat_ms = 15 * 1000;
    c->chunk_size = 1024 * 1024;
    c->max_frame = (uint32_t)(c->chunk_size + 64 * 1024);
    c->max_parallel = 16;
    c->zstd_level = 3;
    c->sync = 1;
}

unsigned tk_fclient_pending(const tk_fclient *c)
{
    unsigned n = 0;
    for (const tk_fxfer *x = c->all; x; x = x->next)
        n++;
    return n;
}

const char *tk_fxfer_remote(const tk_fxfer *x)
{
    return x->remote;
}

const char *tk_fxfer_local(const tk_fxfer *x)
{
    return x->local;
}

const unsigned char *tk_fxfer_digest(const tk_fxfer *x)
{
    return x->have_digest ? x->digest : NULL;
}

uint64_t tk_fxfer_resumed_from(const tk_fxfer *x)
{
    return x->offset;
}

void tk_fxfer_set_data(tk_fxfer *x, void *data)
{
    x->data = data;
}

void *tk_fxfer_data(const tk_fxfer *x)
{
    return x->data;
}

/* ---- frames out ---- */

unsigned char *fc_frame_reserve(tk_fclient *c, size_t len)
{
    if (!c->conn)
        return NULL;
    return tk_conn_write_reserve(c->conn, len + c->tag_len);
}

void fc_frame_commit(tk_fclient *c, unsigned char *frame, size_t len)
{
    if (c->tag_len && tk_frame_mac_sign(c->mac_out, frame, frame + TK_FRAME_HEADER,
                                        len - TK_FRAME_HEADER, frame + len) < 0) {
        tk_conn_close(c->conn, TK_CLOSE_ERROR, -EIO);
        return;
    }
    tk_conn_write_commit(c->conn, len + c->tag_len);
}

static void send_cancel(tk_fclient *c, uint32_t id)
{
    unsigned char *p = fc_frame_reserve(c, TK_FRAME_HEADER + 4);
    if (p)
        fc_frame_commit(c, p, tk_v2_encode_cancel(p, c->tag_len, id));
}

/* ---- transfers ---- */

static void unqueue_wait(tk_fclient *c, tk_fxfer *x)
{
    tk_fxfer **pp = &c->wait_head, *prev = NULL;
    while (*pp && *pp != x) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp)
        return;
    *pp = x->qnext;
    if (c->wait_tail == x)
        c->wait_tail = prev;
}

static void unqueue_send(tk_fclient *c, tk_fxfer *x)
{
    if (!x->queued)
        return;
    tk_fxfer **pp = &c->sq_head, *prev = NULL;
    while (*pp != x) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    *pp = x->qnext;
    if (c->sq_tail == x)
        c->sq_tail = prev;
    x->queued = 0;
}

static void conn_fail(tk_fclient *c, int err, const char *msg);

/* Version 1: takes x off the list of requests the server still answers.
 * Returns 1 if it was there. */
static int v1_unlink(tk_fclient *c, tk_fxfer *x)
{
    tk_fxfer **pp = &c->v1_head, *prev = NULL;
    while (*pp && *pp != x) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp)
        return 0;
    *pp = x->qnext;
    if (c->v1_tail == x)
        c->v1_tail = prev;
    return 1;
}

void fc_xfer_end(tk_fxfer *x, int err, const char *msg)
{
    tk_fclient *c = x->c;
    int v1_broken = 0;
    if (x->state == FXS_WAITING) {
        unqueue_wait(c, x);
    } else {
        c->running--;
        if (c->cfg.protocol == 2 && err && c->conn && !c->failed && x->state != FXS_END)
            send_cancel(c, x->id); /* the server may still be sending */
        /* Version 1 cannot cancel: the server's answer to x would be taken
         * for the next request's, so the connection ends. */
        if (c->cfg.protocol == 1 && v1_unlink(c, x))
            v1_broken = 1;
    }
    unqueue_send(c, x);
    if (c->in_x == x)
        c->in_x = NULL;
    if (x->prev)
        x->prev->next = x->next;
    else
        c->all = x->next;
    if (x->next)
        x->next->prev = x->prev;
    fc_xfer_cleanup(x, err);
    if (c->h.done)
        c->h.done(x, err, msg ? msg : "", c->arg);
    free(x->remote);
    free(x->local);
    free(x->tmp);
    free(x);
    if (v1_broken)
        conn_fail(c, -EPIPE, "an earlier version-1 download failed; the connection was closed");
    else if (c->ready && !c->failed && !c->starting)
        fc_start_waiting(c);
}

void fc_fail_all(tk_fclient *c, int err, const char *msg)
{
    c->v1_head = c->v1_tail = NULL;
    while (c->all)
        fc_xfer_end(c->all, err, msg);
}

/* Sends the request of a transfer (version 2). */
static void send_request(tk_fclient *c, tk_fxfer *x)
{
    size_t n = strlen(x->remote);
    unsigned char *p = fc_frame_reserve(c, TK_FRAME_HEADER + 13 + n);
    if (!p)
        return;
    size_t len;
    switch (x->kind) {
    case FX_GET:
        len = tk_v2_encode_get(p, c->tag_len, x->id, x->offset, x->zstd ? TK_XFER_ZSTD : 0,
                               x->remote, n);
        break;
    case FX_PUT: {
        uint8_t fl = (x->zstd ? TK_XFER_ZSTD : 0) |
                     ((x->flags & TK_FPUT_RESUME) ? TK_PUT_RESUME : 0) |
                     ((x->flags & TK_FPUT_OVERWRITE) ? TK_PUT_OVERWRITE : 0);
        len = tk_v2_encode_put(p, c->tag_len, x->id, x->size, fl, x->remote, n);
        break;
    }
    case FX_LIST: len = tk_v2_encode_list(p, c->tag_len, x->id, x->remote, n); break;
    default:
        len = tk_v2_encode_stat(p, c->tag_len, x->id, x->want_digest ? TK_STAT_DIGEST : 0,
                                x->remote, n);
        break;
    }
    fc_frame_commit(c, p, len);
}

static void send_v1_request(tk_fclient *c, tk_fxfer *x)
{
    size_t n = strlen(x->remote);
    unsigned char *p = tk_conn_write_reserve(c->conn, TK_FRAME_HEADER + n);
    if (!p)
        return;
    tk_frame_hdr_encode(p, TK_FRAME_V1, TK_V1_REQUEST, (uint32_t)n);
    memcpy(p + TK_FRAME_HEADER, x->remote, n);
    tk_conn_write_commit(c->conn, TK_FRAME_HEADER + n);
    x->qnext = NULL;
    if (c->v1_tail)
        c->v1_tail->qnext = x;
    else
        c->v1_head = x;
    c->v1_tail = x;
}

void fc_start_waiting(tk_fclient *c)
{
    c->starting = 1;
    while (c->wait_head && c->conn && !c->failed &&
           (c->cfg.protocol == 1 || c->running < c->cfg.max_parallel)) {
        tk_fxfer *x = c->wait_head;
        c->wait_head = x->qnext;
        if (!c->wait_head)
            c->wait_tail = NULL;
        x->qnext = NULL;
        x->state = FXS_SENT;
        c->running++;
        int rc = 0;
        if (x->kind == FX_GET)
            rc = fc_get_prepare(x);
        else if (x->kind == FX_PUT)
            rc = fc_put_prepare(x);
        if (rc < 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "cannot use %s", x->local);
            x->state = FXS_END; /* nothing was sent: no CANCEL */
            fc_xfer_end(x, rc, msg);
            continue;
        }
        if (c->cfg.protocol == 1) {
            send_v1_request(c, x);
        } else {
            x->id = ++c->next_id;
            send_request(c, x);
        }
    }
    c->starting = 0;
}

static tk_fxfer *xfer_new(tk_fclient *c, fx_kind kind, const char *remote, const char *local,
                          unsigned flags)
{
    if (c->cfg.protocol == 1 && kind != FX_GET)
        return NULL;
    tk_fxfer *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->c = c;
    x->kind = kind;
    x->flags = flags;
    x->fd = -1;
    x->remote = strdup(remote);
    x->local = strdup(local ? local : "");
    if (!x->remote || !x->local) {
        free(x->remote);
        free(x->local);
        free(x);
        return NULL;
    }
    x->want_digest = kind == FX_STAT && flags;
    x->next = c->all;
    if (c->all)
        c->all->prev = x;
    c->all = x;
    if (c->wait_tail)
        c->wait_tail->qnext = x;
    else
        c->wait_head = x;
    c->wait_tail = x;
    if (c->ready)
        fc_start_waiting(c);
    return x;
}

tk_fxfer *tk_fclient_get(tk_fclient *c, const char *remote, const char *local, unsigned flags)
{
    return xfer_new(c, FX_GET, remote, local, flags);
}

tk_fxfer *tk_fclient_put(tk_fclient *c, const char *local, const char *remote, unsigned flags)
{
    return xfer_new(c, FX_PUT, remote, local, flags);
}

tk_fxfer *tk_fclient_list(tk_fclient *c, const char *remote)
{
    return xfer_new(c, FX_LIST, remote, NULL, 0);
}

tk_fxfer *tk_fclient_stat(tk_fclient *c, const char *remote, int want_digest)
{
    return xfer_new(c, FX_STAT, remote, NULL, want_digest ? 1 : 0);
}

/* ---- the connection ---- */

/* Ends the connection for a reason every open transfer shares. */
static void conn_fail(tk_fclient *c, int err, const char *msg)
{
    if (c->failed)
        return;
    c->failed = 1;
    if (!c->ready && c->h.ready)
        c->h.ready(c, err, msg, c->arg);
    fc_fail_all(c, err, msg);
    if (c->conn)
        tk_conn_close_after_flush(c->conn, TK_CLOSE_LOCAL);
}

static void became_ready(tk_fclient *c)
{
    c->ready = 1;
    if (c->h.ready)
        c->h.ready(c, 0, "", c->arg);
    fc_start_waiting(c);
}

static tk_fxfer *find(tk_fclient *c, uint32_t id)
{
    for (tk_fxfer *x = c->all; x; x = x->next)
        if (x->state != FXS_WAITING && x->id == id)
            return x;
    return NULL;
}

/* The server's HELLO, tagged when authentication is on. */
static void on_hello(tk_fclient *c, const unsigned char *hdr, const unsigned char *body, size_t n)
{
    tk_hello h;
    size_t blen = n > TK_HELLO_LEN ? TK_HELLO_LEN : n;
    if (tk_hello_decode(body, blen, &h) < 0) {
        conn_fail(c, TK_FERR_PROTOCOL, "the server sent a malformed HELLO");
        return;
    }
    int want = c->key != NULL;
    int got = (h.flags & TK_HELLO_AUTH) != 0;
    if (want != got || n != TK_HELLO_LEN + (got ? TK_FRAME_TAG : 0)) {
        conn_fail(c, TK_FERR_AUTH,
                  want ? "the server does not authenticate (it has no --auth-key)"
                       : "the server requires authentication (--auth-key)");
        return;
    }
    if (got) {
        unsigned char c2s[TK_FRAME_TAG], s2c[TK_FRAME_TAG];
        int rc = tk_frame_derive_keys(c->key, c->cfg.auth_key_len, c->hello, h.nonce, c2s, s2c);
        if (rc == 0)
            rc = tk_frame_mac_new(s2c, &c->mac_in);
        if (rc == 0)
            rc = tk_frame_mac_new(c2s, &c->mac_out);
        memset(c2s, 0, sizeof(c2s));
        memset(s2c, 0, sizeof(s2c));
        if (rc == 0)
            rc = tk_frame_mac_verify(c->mac_in, hdr, body, TK_HELLO_LEN, body + TK_HELLO_LEN);
        if (rc < 0) {
            conn_fail(c, TK_FERR_AUTH, "authentication failed: the keys differ");
            return;
        }
        c->tag_len = TK_FRAME_TAG;
    }
    c->features = h.features;
    c->peer_max_frame = h.max_frame;
    became_ready(c);
}

static void on_entries(tk_fclient *c, tk_fxfer *x, const unsigned char *p, size_t n)
{
    while (n) {
        tk_entry e;
        size_t k = tk_entry_decode(p, n, &e);
        if (k == 0) {
            fc_xfer_end(x, TK_FERR_PROTOCOL, "malformed directory record");
            return;
        }
        if (c->h.entry)
            c->h.entry(x, &e, c->arg);
        x->pos++;
        p += k;
        n -= k;
    }
}

static void dispatch(tk_fclient *c, uint8_t type, const unsigned char *body, size_t n)
{
    tk_v2_msg m;
    if (tk_v2_decode(type, body, n, &m) < 0) {
        conn_fail(c, TK_FERR_PROTOCOL, "the server sent a malformed frame");
        return;
    }
    if (type == TK_V2_PING) {
        unsigned char *p = fc_frame_reserve(c, TK_FRAME_HEADER + 12);
        if (p)
            fc_frame_commit(c, p, tk_v2_encode_ping(p, c->tag_len, TK_V2_PONG, m.a));
        return;
    }
    if (type == TK_V2_PONG)
        return;
    if (type == TK_V2_ERROR && m.stream == 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%.*s", (int)(m.data_len < 400 ? m.data_len : 400), m.data);
        conn_fail(c, m.code, msg);
        return;
    }
    tk_fxfer *x = find(c, m.stream);
    if (!x)
        return; /* a stream we already ended */
    switch (type) {
    case TK_V2_ERROR: {
        char msg[512];
        snprintf(msg, sizeof(msg), "%.*s", (int)(m.data_len < 400 ? m.data_len : 400), m.data);
        x->state = FXS_END; /* the server is done with it: no CANCEL */
        fc_xfer_end(x, m.code ? m.code : TK_FERR_IO, msg);
        return;
    }
    case TK_V2_OPEN:
        if (x->kind == FX_GET)
            (void)fc_get_open(x, m.b, m.a, (m.flags & TK_XFER_ZSTD) != 0);
        return;
    case TK_V2_DATA:
        if (x->kind == FX_GET)
            fc_get_frame(x, m.data, m.data_len);
        return;
    case TK_V2_END:
        if (x->kind == FX_GET) {
            fc_get_end(x, m.a, m.digest);
        } else if (x->kind == FX_LIST) {
            x->state = FXS_END;
            if (m.a != x->pos)
                fc_xfer_end(x, TK_FERR_PROTOCOL, "the listing's count does not match");
            else
                fc_xfer_end(x, 0, "");
        }
        return;
    case TK_V2_ENTRIES:
        if (x->kind == FX_LIST)
            on_entries(c, x, m.data, m.data_len);
        return;
    case TK_V2_INFO:
        if (x->kind == FX_STAT) {
            if (c->h.info)
                c->h.info(x, m.kind, m.a, m.mtime, m.digest, c->arg);
            x->state = FXS_END;
            fc_xfer_end(x, 0, "");
        }
        return;
    case TK_V2_READY:
        if (x->kind == FX_PUT)
            fc_put_ready(x, m.a);
        return;
    case TK_V2_DONE:
        if (x->kind == FX_PUT)
            fc_put_done(x, m.a, m.digest);
        return;
    case TK_V2_CANCEL:
        x->state = FXS_END;
        fc_xfer_end(x, TK_FERR_CANCELLED, "the server cancelled the transfer");
        return;
    default: conn_fail(c, TK_FERR_PROTOCOL, "the server sent an unexpected frame"); return;
    }
}

/* Longest version-1 error message taken. */
#define FILES_V1_ERROR_MAX 400

static void v1_frame(tk_fclient *c, uint8_t type, const unsigned char *p, size_t n)
{
    tk_fxfer *x = c->v1_head;
    if (!x) {
        conn_fail(c, TK_FERR_PROTOCOL, "the server answered a request never sent");
        return;
    }
    if (type == TK_V1_RESPONSE) {
        uint64_t size;
        if (tk_v1_parse_response(p, n, &size) < 0) {
            conn_fail(c, TK_FERR_PROTOCOL, "malformed version-1 response");
            return;
        }
        (void)fc_get_open(x, size, 0, 0);
        return;
    }
    if (type == TK_V1_DATA) {
        fc_get_data(x, p, n);
        return;
    }
    /* END or ERROR: this request is answered; the next one is at the head. */
    c->v1_head = x->qnext;
    if (!c->v1_head)
        c->v1_tail = NULL;
    x->state = FXS_END;
    if (type == TK_V1_END) {
        fc_get_end(x, x->pos, NULL);
    } else if (type == TK_V1_ERROR) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%.*s", (int)(n < 400 ? n : 400), p);
        fc_xfer_end(x, (int)tk_v1_error_code(p, n), msg);
    } else {
        conn_fail(c, TK_FERR_PROTOCOL, "unknown version-1 frame type");
    }
}

/* Is a DATA payload for x to be written as it arrives (no zstd, no tag)? */
static int streams_through(const tk_fclient *c, const tk_fxfer *x)
{
    return x && x->kind == FX_GET && !x->zstd && !c->tag_len;
}

static size_t on_data(tk_conn *conn, const unsigned char *data, size_t len)
{
    tk_fclient *c = tk_conn_data(conn);
    if (!c)
        return len;
    c->beat.heard_ms = tk_loop_now(c->loop);
    uint8_t version = c->cfg.protocol == 1 ? TK_FRAME_V1 : TK_FRAME_V2;
    size_t off = 0;
    while (off < len && !c->failed) {
        if (c->in_left) {
            size_t n = len - off < c->in_left ? len - off : (size_t)c->in_left;
            if (c->in_x)
                fc_get_data(c->in_x, data + off, n);
            off += n;
            c->in_left -= n;
            continue;
        }
        tk_frame_hdr h;
        if (!tk_frame_hdr_decode(data + off, len - off, &h))
            break;
        if (h.version == TK_FRAME_V1 && h.type == TK_V1_ERROR && !c->ready) {
            /* Refused before HELLO (busy, authentication): in version 1. */
            const unsigned char *body;
            size_t used;
            tk_codec_status st =
                tk_frame_next(data + off, len - off, FILES_V1_ERROR_MAX, &h, &body, &used);
            if (st == TK_CODEC_NEED)
                break;
            char msg[512];
            snprintf(msg, sizeof(msg), "%.*s", st == TK_CODEC_OK ? (int)h.length : 0,
                     st == TK_CODEC_OK ? (const char *)body : "");
            conn_fail(c,
                      st == TK_CODEC_OK ? (int)tk_v1_error_code(body, h.length) : TK_FERR_PROTOCOL,
                      msg[0] ? msg : "the server refused the connection");
            return len;
        }
        if (h.version != version) {
            conn_fail(c, TK_FERR_PROTOCOL, "the server speaks another protocol or version");
            return len;
        }
        int is_data = h.type == (version == TK_FRAME_V1 ? TK_V1_DATA : TK_V2_DATA);
        /* Version-1 DATA is passed through whatever its size: no limit. */
        if (h.length > c->cfg.max_frame && !(version == TK_FRAME_V1 && is_data)) {
            conn_fail(c, TK_FERR_TOO_LARGE, "the server sent a frame over the limit");
            return len;
        }
        size_t hl = version == TK_FRAME_V1 ? TK_FRAME_HEADER : TK_FRAME_HEADER + TK_FRAME_STREAM;
        if (is_data && c->ready && h.length >= hl - TK_FRAME_HEADER) {
            if (len - off < hl)
                break;
            tk_fxfer *x = version == TK_FRAME_V1
                              ? c->v1_head
                              : find(c, tk_get_u32(data + off + TK_FRAME_HEADER));
            if (version == TK_FRAME_V1 && !x) {
                conn_fail(c, TK_FERR_PROTOCOL, "the server sent data nobody asked for");
                return len;
            }
            if (version == TK_FRAME_V1 || streams_through(c, x) || !x) {
                off += hl;
                c->in_left = h.length - (hl - TK_FRAME_HEADER);
                c->in_x = x;
                continue;
            }
        }
        const unsigned char *body;
        size_t used;
        if (tk_frame_next(data + off, len - off, c->cfg.max_frame, &h, &body, &used) ==
            TK_CODEC_NEED)
            break;
        const unsigned char *hdr = data + off;
        off += used;
        size_t n = h.length;
        if (version == TK_FRAME_V1) {
            v1_frame(c, h.type, body, n);
            continue;
        }
        if (!c->ready) {
            if (h.type == TK_V2_HELLO)
                on_hello(c, hdr, body, n);
            else if (h.type == TK_V2_ERROR && n >= 6) {
                char msg[512];
                snprintf(msg, sizeof(msg), "%.*s", (int)(n - 6 < 400 ? n - 6 : 400), body + 6);
                conn_fail(c, tk_get_u16(body + 4), msg);
            } else
                conn_fail(c, TK_FERR_PROTOCOL, "the server did not answer HELLO");
            continue;
        }
        if (c->tag_len) {
            if (n < c->tag_len || tk_frame_mac_verify(c->mac_in, hdr, body, n - c->tag_len,
                                                      body + n - c->tag_len) < 0) {
                conn_fail(c, TK_FERR_AUTH, "a frame from the server failed authentication");
                return len;
            }
            n -= c->tag_len;
        }
        dispatch(c, h.type, body, n);
    }
    return c->failed ? len : off;
}

static void on_sent(tk_conn *conn)
{
    tk_fclient *c = tk_conn_data(conn);
    if (c)
        fc_put_pump(c);
}

static void on_close(tk_conn *conn, tk_close_reason why, int err)
{
    tk_fclient *c = tk_conn_data(conn);
    if (!c)
        return;
    c->conn = NULL;
    tk_timer_stop(c->loop, &c->hb);
    if (c->failed)
        return;
    char msg[128];
    if (why == TK_CLOSE_PEER)
        snprintf(msg, sizeof(msg), "the server closed the connection");
    else if (why == TK_CLOSE_TLS)
        snprintf(msg, sizeof(msg), "tls: %s", tk_conn_tls_error(conn));
    else
        snprintf(msg, sizeof(msg), "the connection was lost (%s%s%s)", tk_close_reason_name(why),
                 err ? ": " : "", err ? strerror(-err) : "");
    conn_fail(c,
              why == TK_CLOSE_IDLE  ? -ETIMEDOUT
              : why == TK_CLOSE_TLS ? -EPROTO
                                    : -ECONNRESET,
              msg);
}

static const tk_conn_handler handler = {
    .on_data = on_data,
    .on_sent = on_sent,
    .on_close = on_close,
};

/* Heartbeat tick: the same rule as the server's (tk_heartbeat_tick). */
static void on_hb(tk_loop *loop, tk_timer *t)
{
    tk_fclient *c = (tk_fclient *)((char *)t - offsetof(tk_fclient, hb));
    if (!c->conn)
        return;
    switch (tk_heartbeat_tick(&c->beat, tk_loop_now(loop), tk_conn_bytes_out(c->conn),
                              c->cfg.heartbeat_ms)) {
    case TK_HB_DEAD: conn_fail(c, -ETIMEDOUT, "the server stopped answering"); return;
    case TK_HB_PING:
        if (c->ready) {
            unsigned char *p = fc_frame_reserve(c, TK_FRAME_HEADER + 12);
            if (p) {
                fc_frame_commit(c, p,
                                tk_v2_encode_ping(p, c->tag_len, TK_V2_PING, ++c->ping_token));
                tk_heartbeat_pinged(&c->beat, TK_FRAME_HEADER + 12 + c->tag_len);
            }
        }
        break;
    case TK_HB_QUIET: break;
    }
    (void)tk_timer_start(loop, &c->hb, c->cfg.heartbeat_ms);
}

static void on_connected(tk_loop *loop, int fd, int err, void *arg)
{
    tk_fclient *c = arg;
    c->dial = NULL;
    if (fd < 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "cannot connect: %s", strerror(-err));
        conn_fail(c, err, msg);
        return;
    }
    tk_sockopts so;
    tk_sockopts_init(&so);
    so.nodelay = 1;
    so.keepalive = 1;
    so.ka_idle_s = 60;
    (void)tk_sock_apply(fd, &so);
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    lim.max_input = c->cfg.max_frame + TK_FRAME_HEADER;
    lim.high_water = 64u << 20; /* never pause reading the server */
    lim.low_water = lim.high_water / 2;
    lim.max_output = 128u << 20;
    lim.stall_timeout_ms = c->cfg.heartbeat_ms ? 4 * c->cfg.heartbeat_ms : 0;
    lim.linger_ms = 1000;
    err = tk_conn_new(loop, fd, &handler, &lim, c, &c->conn);
    if (err < 0) {
        c->conn = NULL;
        conn_fail(c, err, "cannot set up the connection");
        return;
    }
    if (tk_conn_start_tls(c->conn, c->cfg.tls, c->cfg.tls_name) < 0)
        return; /* closed: on_close reports it */
    tk_heartbeat_init(&c->beat, tk_loop_now(loop));
    if (c->cfg.protocol == 1) {
        became_ready(c);
        return;
    }
    tk_hello h = {
        .flags = c->key ? TK_HELLO_AUTH : 0,
        .features = TK_FEATURE_ZSTD,
        .max_frame = c->cfg.max_frame,
    };
    if (RAND_bytes(h.nonce, TK_FRAME_NONCE) != 1) {
        conn_fail(c, -EIO, "no randomness for the nonce");
        return;
    }
    tk_hello_encode(c->hello, &h);
    unsigned char frame[TK_FRAME_HEADER + TK_HELLO_LEN];
    size_t n = tk_v2_encode_hello(frame, 0, &h);
    (void)tk_conn_write(c->conn, frame, n);
    if (c->cfg.heartbeat_ms)
        (void)tk_timer_start(loop, &c->hb, c->cfg.heartbeat_ms);
}

int tk_fclient_new(tk_loop *loop, const tk_addr *addrs, size_t n, const tk_fclient_config *cfg,
                   const tk_fclient_handlers *h, void *arg, tk_fclient **out)
{
    if (cfg->protocol != 1 && cfg->protocol != 2)
        return -EINVAL;
    if (cfg->max_frame < 65536 || cfg->max_frame > 16u << 20 || cfg->chunk_size < 4096 ||
        cfg->max_parallel == 0)
        return -EINVAL;
    tk_fclient *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->cfg = *cfg;
    c->h = *h;
    c->arg = arg;
    tk_timer_init(&c->hb, on_hb);
    c->buf = malloc(cfg->max_frame);
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    if (cfg->auth_key) {
        c->key = malloc(cfg->auth_key_len);
        if (c->key)
            memcpy(c->key, cfg->auth_key, cfg->auth_key_len);
    }
    int rc = (!c->buf || !c->cctx || !c->dctx || (cfg->auth_key && !c->key)) ? -ENOMEM : 0;
    if (rc == 0 && cfg->protocol == 2)
        rc = fc_hasher_new(&c->hasher);
    if (rc == 0) {
        ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, cfg->zstd_level);
        rc = tk_dial_start(loop, addrs, n, cfg->connect_timeout_ms, on_connected, c, &c->dial);
    }
    if (rc < 0) {
        c->dial = NULL;
        tk_fclient_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void tk_fclient_free(tk_fclient *c)
{
    if (!c)
        return;
    if (c->dial)
        tk_dial_cancel(c->dial);
    c->dial = NULL;
    c->failed = 1;
    fc_fail_all(c, -ECANCELED, "cancelled");
    if (c->conn) {
        tk_conn_set_data(c->conn, NULL);
        tk_conn_close(c->conn, TK_CLOSE_LOCAL, 0);
    }
    tk_timer_stop(c->loop, &c->hb);
    fc_hasher_free(c->hasher);
    tk_frame_mac_free(c->mac_in);
    tk_frame_mac_free(c->mac_out);
    if (c->key) {
        memset(c->key, 0, c->cfg.auth_key_len);
        free(c->key);
    }
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c->buf);
    free(c);
}

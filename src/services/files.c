/* The file service: configuration, per-loop state, connections, the choice
 * of protocol version, heartbeats and graceful shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files_internal.h"

/* Upload partials nobody resumed within partial_ttl_s are removed by a
 * worker thread walking the tree: at start, then hourly. */
#define SWEEP_FIRST_MS 0
#define SWEEP_EVERY_MS (3600 * 1000)

void tk_files_config_init(tk_files_config *c)
{
    memset(c, 0, sizeof(*c));
    c->max_upload = 16ull << 30;
    c->min_free = 64ull << 20;
    c->chunk_size = 1024 * 1024;
    c->max_frame = 0; /* chunk_size + 64 KiB */
    c->max_streams = 32;
    c->max_transfers = 1024;
    c->idle_timeout_ms = 300 * 1000;
    c->stall_timeout_ms = 60 * 1000;
    c->heartbeat_ms = 15 * 1000;
    c->partial_ttl_s = 24 * 3600;
    c->zstd_level = 3;
    c->hash_threads = 0; /* half the CPUs, at least 1 */
    tk_sockopts_init(&c->sockopts);
    c->sockopts.nodelay = 1;
}

static const unsigned char busy_frame[] = "\x01\x05\x00\x00\x00\x0bServer busy";

const void *tk_files_busy_message(size_t *len)
{
    *len = sizeof(busy_frame) - 1;
    return busy_frame;
}

tk_metrics *tk_files_metrics(tk_files *f)
{
    return f->metrics;
}

void tk_files_set_server(tk_files *f, tk_server *s)
{
    f->server = s;
    /* Before the loops run, loop 0 may be touched from this thread. */
    if (f->cfg.partial_ttl_s && f->cfg.allow_upload)
        (void)tk_timer_start(f->loops[0].loop, &f->sweep, SWEEP_FIRST_MS);
}

static int check_config(tk_files_config *c, char *err, size_t errcap)
{
    if (!c->root) {
        snprintf(err, errcap, "no directory to serve");
        return -EINVAL;
    }
    if (c->chunk_size < 4096 || c->chunk_size > 8u << 20) {
        snprintf(err, errcap, "the chunk size must be 4 KiB to 8 MiB");
        return -EINVAL;
    }
    if (c->max_frame == 0)
        c->max_frame = (uint32_t)(c->chunk_size + 64 * 1024);
    if (c->max_frame < c->chunk_size + 1024 || c->max_frame > 16u << 20) {
        snprintf(err, errcap,
                 "the frame limit must be at least the chunk size + 1 KiB and at "
                 "most 16 MiB");
        return -EINVAL;
    }
    if (c->max_streams == 0 || c->max_transfers == 0) {
        snprintf(err, errcap, "stream limits must be at least 1");
        return -EINVAL;
    }
    if (c->auth_key && c->auth_key_len < 16) {
        snprintf(err, errcap, "the authentication key must be at least 16 bytes");
        return -EINVAL;
    }
    if (c->zstd_level < 1 || c->zstd_level > 19) {
        snprintf(err, errcap, "the zstd level must be 1 to 19");
        return -EINVAL;
    }
    if (c->hash_threads == 0) {
        unsigned n = tk_cpu_count() / 2;
        c->hash_threads = n ? n : 1;
    }
    return 0;
}

static void loop_free(files_loop *fl)
{
    free(fl->buf);
    ZSTD_freeCCtx(fl->cctx);
    ZSTD_freeDCtx(fl->dctx);
}

static void on_swept(files_job *j, void *owner)
{
    tk_files *f = owner;
    f->sweep_job = NULL;
    if (j->removed)
        tk_info("files: removed %u upload partial(s) untouched for %u s", j->removed,
                f->cfg.partial_ttl_s);
    (void)tk_timer_start(f->loops[0].loop, &f->sweep, SWEEP_EVERY_MS);
}

static void on_sweep_timer(tk_loop *loop, tk_timer *t)
{
    tk_files *f = (tk_files *)((char *)t - offsetof(tk_files, sweep));
    f->sweep_job =
        files_sweep_start(f->work, loop, f->root_path, f->cfg.partial_ttl_s, on_swept, f);
    if (!f->sweep_job)
        (void)tk_timer_start(loop, &f->sweep, SWEEP_EVERY_MS);
}

int tk_files_new(const tk_files_config *c, tk_workers *w, tk_files **out, char *err, size_t errcap)
{
    tk_files *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->cfg = *c;
    f->rootfd = -1;
    int rc = check_config(&f->cfg, err, errcap);
    if (rc < 0)
        goto fail;
    f->rootfd = open(c->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->rootfd < 0) {
        rc = -errno;
        snprintf(err, errcap, "cannot open '%s': %s", c->root, strerror(errno));
        goto fail;
    }
    if (c->auth_key) {
        f->key = malloc(c->auth_key_len);
        if (!f->key) {
            rc = -ENOMEM;
            goto fail;
        }
        memcpy(f->key, c->auth_key, c->auth_key_len);
        f->cfg.auth_key = f->key;
    }
    f->nloops = tk_workers_count(w);
    f->loops = calloc(f->nloops, sizeof(*f->loops));
    rc = tk_metrics_new(f->nloops, &f->metrics);
    if (!f->loops || rc < 0) {
        rc = -ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < f->nloops; i++) {
        files_loop *fl = &f->loops[i];
        fl->f = f;
        fl->loop = tk_workers_loop(w, i);
        fl->index = i;
        fl->metrics = tk_metrics_slot_of(f->metrics, i);
        fl->buf = malloc(f->cfg.max_frame);
        fl->cctx = ZSTD_createCCtx();
        fl->dctx = ZSTD_createDCtx();
        if (!fl->buf || !fl->cctx || !fl->dctx) {
            rc = -ENOMEM;
            goto fail;
        }
        ZSTD_CCtx_setParameter(fl->cctx, ZSTD_c_compressionLevel, f->cfg.zstd_level);
        ZSTD_CCtx_setParameter(fl->cctx, ZSTD_c_contentSizeFlag, 1);
    }
    rc = files_work_start(f->cfg.hash_threads, &f->work);
    if (rc < 0) {
        snprintf(err, errcap, "cannot start the hash threads: %s", strerror(-rc));
        goto fail;
    }
    atomic_init(&f->transfers, 0);
    f->root_path = realpath(c->root, NULL);
    if (!f->root_path) {
        rc = -errno;
        snprintf(err, errcap, "cannot resolve '%s': %s", c->root, strerror(errno));
        goto fail;
    }
    tk_timer_init(&f->sweep, on_sweep_timer);
    mode_t mask = umask(0); /* reading the umask means setting it: put it back */
    umask(mask);
    f->file_mode = 0666 & ~mask;
    *out = f;
    return 0;
fail:
    if (rc == -ENOMEM && !err[0])
        snprintf(err, errcap, "out of memory");
    tk_files_free(f);
    return rc;
}

void tk_files_free(tk_files *f)
{
    if (!f)
        return;
    if (f->loops && f->nloops)
        tk_timer_stop(f->loops[0].loop, &f->sweep);
    files_work_stop(f->work);
    free(f->root_path);
    if (f->loops)
        for (unsigned i = 0; i < f->nloops; i++)
            loop_free(&f->loops[i]);
    free(f->loops);
    tk_metrics_free(f->metrics);
    if (f->rootfd >= 0)
        close(f->rootfd);
    if (f->key) {
        memset(f->key, 0, f->cfg.auth_key_len);
        free(f->key);
    }
    free(f);
}

/* ---- connections ---- */

static void hb_arm(files_conn *fc)
{
    uint32_t hb = fc->fl->f->cfg.heartbeat_ms;
    if (hb && fc->proto == PROTO_V2)
        (void)tk_timer_start(fc->fl->loop, &fc->hb, hb);
}

/* Heartbeat tick (v2): PING a silent peer, drop a gone one (the rule is
 * tk_heartbeat_tick's). No PING goes out before the HELLO is answered. */
static void on_hb(tk_loop *loop, tk_timer *t)
{
    files_conn *fc = (files_conn *)((char *)t - offsetof(files_conn, hb));
    uint64_t now = tk_loop_now(loop);
    switch (tk_heartbeat_tick(&fc->beat, now, tk_conn_bytes_out(fc->conn),
                              fc->fl->f->cfg.heartbeat_ms)) {
    case TK_HB_DEAD:
        tk_debug("files: peer silent for %llu ms", (unsigned long long)(now - fc->beat.heard_ms));
        tk_conn_close(fc->conn, TK_CLOSE_IDLE, -ETIMEDOUT);
        return;
    case TK_HB_PING:
        if (fc->hello_done) {
            unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 12);
            if (p) {
                files_frame_commit(fc, p,
                                   tk_v2_encode_ping(p, fc->tag_len, TK_V2_PING, ++fc->ping_token));
                tk_heartbeat_pinged(&fc->beat, TK_FRAME_HEADER + 12 + fc->tag_len);
            }
        }
        break;
    case TK_HB_QUIET: break;
    }
    hb_arm(fc);
}

/* The protocol decides itself on the first byte: version 1 or a version-2
 * HELLO. Anything else gets a version-1 error and the connection ends. */
static size_t on_data(tk_conn *c, const unsigned char *data, size_t len)
{
    files_conn *fc = tk_conn_data(c);
    fc->beat.heard_ms = tk_loop_now(fc->fl->loop);
    if (fc->proto == PROTO_UNKNOWN) {
        fc->proto = data[0] == TK_FRAME_V2 ? PROTO_V2 : PROTO_V1;
        if (data[0] != TK_FRAME_V1 && data[0] != TK_FRAME_V2) {
            char msg[64];
            snprintf(msg, sizeof(msg), "Unsupported protocol version %u", data[0]);
            files_conn_fail(fc, TK_FERR_UNSUPPORTED, msg);
            return len;
        }
        if (fc->proto == PROTO_V1 && fc->fl->f->cfg.auth_key) {
            /* Version 1 has no authentication: it cannot be let in. */
            files_conn_fail(fc, TK_FERR_AUTH, tk_v1_error_message(TK_FERR_AUTH, 0));
            return len;
        }
        if (fc->proto == PROTO_V2)
            hb_arm(fc);
    }
    if (fc->proto == PROTO_V2) {
        size_t used = files_v2_input(fc, data, len);
        if (!tk_conn_closing(c))
            files_pump(fc);
        return used;
    }
    /* Version 1 answers one request at a time: a small file is queued whole
     * by the pump and the next request follows at once; a large one pauses
     * the input until its stream ends (files_stream_free resumes it). */
    size_t used = 0;
    while (!tk_conn_closing(c)) {
        used += files_v1_input(fc, data + used, len - used);
        if (tk_conn_closing(c))
            break;
        files_pump(fc);
        if (fc->v1_current) {
            tk_conn_pause_read(c);
            break;
        }
        if (used == len || !fc->v1_progress)
            break;
    }
    return used;
}

static void on_eof(tk_conn *c, const unsigned char *rest, size_t len)
{
    (void)rest;
    (void)len;
    files_conn *fc = tk_conn_data(c);
    /* The client sent everything it will: downloads in progress are still
     * answered, then the connection closes. Uploads still waiting for data
     * end here (their partial files stay, unlocked, for a resume); one whose
     * END arrived is stored. A partial frame left over is dropped. */
    fc->closing = 1;
    for (files_stream *s = fc->streams, *next; s; s = next) {
        next = s->next;
        if (s->kind == KIND_PUT && !s->job)
            files_stream_free(s);
    }
    files_conn_maybe_finish(fc);
}

static void on_sent(tk_conn *c)
{
    files_conn *fc = tk_conn_data(c);
    files_pump(fc);
    files_conn_maybe_finish(fc);
}

static void unlink_conn(files_conn *fc)
{
    files_loop *fl = fc->fl;
    if (fc->prev)
        fc->prev->next = fc->next;
    else
        fl->conns = fc->next;
    if (fc->next)
        fc->next->prev = fc->prev;
    fl->nconns--;
}

static void on_close(tk_conn *c, tk_close_reason why, int err)
{
    files_conn *fc = tk_conn_data(c);
    files_loop *fl = fc->fl;
    tk_log_level lv = why == TK_CLOSE_LIMIT || why == TK_CLOSE_STALL || why == TK_CLOSE_ERROR
                          ? TK_LOG_INFO
                          : TK_LOG_DEBUG;
    if (tk_log_enabled(lv)) {
        char who[TK_ADDR_STRLEN];
        tk_log(lv, "files: closed %s (%s%s%s)", tk_addr_format(tk_conn_peer(c), who, sizeof(who)),
               tk_close_reason_name(why), err ? ": " : "", err ? strerror(-err) : "");
    }
    tk_timer_stop(fl->loop, &fc->hb);
    while (fc->streams)
        files_stream_free(fc->streams);
    tk_frame_mac_free(fc->mac_in);
    tk_frame_mac_free(fc->mac_out);
    tk_metrics_conn_close(fl->metrics, why);
    unlink_conn(fc);
    free(fc);
    if (fl->f->server)
        tk_server_release(fl->f->server, fl->index, tk_conn_peer(c));
    if (fl->shutting_down && fl->nconns == 0 && fl->f->server)
        tk_server_loop_done(fl->f->server, fl->index);
}

static const tk_conn_handler handler = {
    .on_data = on_data,
    .on_eof = on_eof,
    .on_sent = on_sent,
    .on_close = on_close,
};

/* 127.0.0.0/8, ::1, or ::ffff:127.x.y.z. */
static int is_loopback(const tk_addr *a)
{
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)&a->ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(in6))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(in6) && in6->s6_addr[12] == 127;
    }
    return 0;
}

static void svc_accept(void *svc, unsigned index, int fd, const tk_addr *peer)
{
    tk_files *f = svc;
    files_loop *fl = &f->loops[index];
    (void)tk_sock_apply(fd, &f->cfg.sockopts);
    files_conn *fc = calloc(1, sizeof(*fc));
    if (!fc) {
        close(fd);
        if (f->server)
            tk_server_release(f->server, index, peer);
        return;
    }
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    /* A whole frame may have to be held: DATA with zstd or authentication. */
    lim.max_input = f->cfg.max_frame + TK_FRAME_HEADER;
    /* Reading goes on while replies queue up to a few frames: PING and
     * CANCEL must get through during a transfer. */
    lim.high_water = FILES_PUMP_FRAMES * (f->cfg.chunk_size + 64 * 1024) + 256 * 1024;
    lim.low_water = lim.high_water / 2;
    lim.max_output = 2 * lim.high_water + 1024 * 1024;
    lim.idle_timeout_ms = f->cfg.idle_timeout_ms;
    lim.stall_timeout_ms = f->cfg.stall_timeout_ms;
    int err = tk_conn_new(fl->loop, fd, &handler, &lim, fc, &fc->conn);
    if (err < 0) {
        tk_warn("files: cannot take a client: %s", strerror(-err));
        free(fc);
        if (f->server)
            tk_server_release(f->server, index, peer);
        return;
    }
    tk_conn_set_peer(fc->conn, peer);
    fc->fl = fl;
    /* Over TLS, file ranges go through kernel TLS with sendfile() when the
     * kernel has it, and through one staging copy otherwise: never worse
     * than copying into the output queue. */
    tk_tls_ctx *tls = f->server ? tk_server_tls(f->server) : NULL;
    fc->sendfile = f->cfg.sendfile == TK_FILES_SENDFILE_ON ||
                   (f->cfg.sendfile == TK_FILES_SENDFILE_AUTO && (!is_loopback(peer) || tls));
    tk_heartbeat_init(&fc->beat, tk_loop_now(fl->loop));
    tk_timer_init(&fc->hb, on_hb);
    tk_conn_set_metrics(fc->conn, fl->metrics);
    tk_metrics_conn_open(fl->metrics);
    fc->next = fl->conns;
    if (fl->conns)
        fl->conns->prev = fc;
    fl->conns = fc;
    fl->nconns++;
    if (tk_conn_start_tls(fc->conn, tls, NULL) < 0)
        return; /* closed: on_close does the rest */
    if (fl->shutting_down) {
        fc->closing = 1;
        files_conn_maybe_finish(fc);
    }
}

void files_conn_fail(files_conn *fc, unsigned code, const char *msg)
{
    if (tk_conn_closing(fc->conn))
        return;
    if (fc->proto == PROTO_V2)
        files_send_error(fc, 0, code, msg);
    else
        files_v1_error(fc, msg);
    tk_conn_close_after_flush(fc->conn,
                              code == TK_FERR_TOO_LARGE ? TK_CLOSE_LIMIT : TK_CLOSE_LOCAL);
}

/* A closing connection (peer finished, or shutdown) ends once its streams
 * are done and their output is queued. */
void files_conn_maybe_finish(files_conn *fc)
{
    if (!fc->closing || fc->nstreams || tk_conn_closing(fc->conn))
        return;
    if (fc->fl->shutting_down && fc->proto == PROTO_V2)
        files_send_error(fc, 0, TK_FERR_SHUTDOWN, "server shutting down");
    tk_conn_close_after_flush(fc->conn, fc->fl->shutting_down ? TK_CLOSE_SHUTDOWN : TK_CLOSE_PEER);
}

static void svc_shutdown(void *svc, unsigned index)
{
    tk_files *f = svc;
    files_loop *fl = &f->loops[index];
    fl->shutting_down = 1;
    if (index == 0) {
        tk_timer_stop(fl->loop, &f->sweep);
        if (f->sweep_job)
            files_job_cancel(f->sweep_job);
        f->sweep_job = NULL;
    }
    for (files_conn *fc = fl->conns, *next; fc; fc = next) {
        next = fc->next;
        /* Requests already sent are answered (up to the shutdown timeout);
         * new ones are refused. */
        tk_conn_drain_input(fc->conn);
        fc->closing = 1;
        files_conn_maybe_finish(fc);
    }
    if (fl->nconns == 0 && f->server)
        tk_server_loop_done(f->server, index);
}

static void svc_abort(void *svc, unsigned index)
{
    tk_files *f = svc;
    files_loop *fl = &f->loops[index];
    for (files_conn *fc = fl->conns; fc; fc = fc->next)
        tk_conn_close(fc->conn, TK_CLOSE_SHUTDOWN, 0);
}

static void svc_rejected(void *svc, unsigned index)
{
    tk_files *f = svc;
    tk_metrics_conn_rejected(f->loops[index].metrics);
}

static const tk_service_ops ops = {
    .accept = svc_accept,
    .shutdown = svc_shutdown,
    .abort = svc_abort,
    .rejected = svc_rejected,
};

const tk_service_ops *tk_files_ops(void)
{
    return &ops;
}

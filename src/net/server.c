/* Listeners of one service spread over a worker pool, the client limit, and
 * the graceful-shutdown handshake between the main loop and the workers. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpkit/conn.h"
#include "tcpkit/listener.h"
#include "tcpkit/log.h"
#include "tcpkit/server.h"

/* After the service's abort, how long to wait for its loops to report done. */
#define TK_ABORT_GRACE_MS 1000
/* Refusals are summarised in the log at most this often. */
#define TK_REFUSAL_LOG_MS 1000
/* How long a refused client has to read the busy message. */
#define TK_REJECT_LINGER_MS 1000

typedef struct {
    tk_server *s;
    unsigned index;
    tk_listener *listeners[TK_SERVER_MAX_LISTEN];
    size_t nlisteners;
    int done;            /* main loop only */
    tk_timer access_log; /* writes the access refusal summary when it is due */
    uint64_t last_refusal_log;
    unsigned long refused_unlogged;
} srv_loop;

struct tk_server {
    tk_workers *w;
    const tk_service_ops *ops;
    void *svc;
    tk_server_config cfg;
    tk_access *access;
    atomic_uint active;
    tk_addr bound[TK_SERVER_MAX_LISTEN];
    size_t nbound;
    srv_loop *loops;
    unsigned nloops;

    /* Shutdown state, owned by the main loop. */
    tk_loop *main_loop;
    tk_timer deadline;
    unsigned ndone;
    int aborted;
    int finished;
    void (*done)(void *arg);
    void *done_arg;
};

static size_t reject_data(tk_conn *c, const unsigned char *data, size_t len)
{
    (void)c;
    (void)data;
    return len;
}

static const tk_conn_handler reject_handler = {.on_data = reject_data};

/* Tells an over-limit client why it is refused, then closes gracefully so the
 * message is not lost to a reset. */
static void reject(tk_loop *loop, int fd, tk_tls_ctx *tls, const void *msg, size_t len)
{
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    lim.linger_ms = TK_REJECT_LINGER_MS;
    lim.stall_timeout_ms = TK_REJECT_LINGER_MS;
    tk_conn *c;
    if (tk_conn_new(loop, fd, &reject_handler, &lim, NULL, &c) < 0)
        return;
    /* Over TLS the refusal is sent once the handshake is done (bounded by
     * its timeout), so the client can read it. */
    if (tk_conn_start_tls(c, tls, NULL) < 0)
        return;
    if (len)
        (void)tk_conn_write(c, msg, len);
    tk_conn_close_after_flush(c, TK_CLOSE_LIMIT);
}

/* Refusals are logged at most once a second per loop, with a count, so a
 * flood cannot flood the log. */
static void refused(srv_loop *sl, const tk_addr *peer, unsigned active)
{
    uint64_t now = tk_loop_now(tk_workers_loop(sl->s->w, sl->index));
    sl->refused_unlogged++;
    if (sl->last_refusal_log && now - sl->last_refusal_log < TK_REFUSAL_LOG_MS)
        return;
    char who[TK_ADDR_STRLEN];
    tk_info("refused %lu client(s) over --max-clients %u (%u active; latest %s)",
            sl->refused_unlogged, sl->s->cfg.max_clients, active,
            tk_addr_format(peer, who, sizeof(who)));
    sl->last_refusal_log = now;
    sl->refused_unlogged = 0;
}

/* A refused client gets a reset: nothing to send, nothing to wait for. */
static void reset_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void on_access_log(tk_loop *loop, tk_timer *t)
{
    srv_loop *sl = (srv_loop *)((char *)t - offsetof(srv_loop, access_log));
    uint32_t due = tk_access_log_flush(sl->s->access, tk_loop_now(loop), 0);
    if (due)
        (void)tk_timer_start(loop, t, due);
}

/* Checks the peer against the access rules; 0 if admitted, else the
 * client is reset and the summary's timer armed on this loop. */
static int access_check(srv_loop *sl, tk_loop *loop, int fd, const tk_addr *peer)
{
    uint64_t now = tk_loop_now(loop);
    if (tk_access_admit(sl->s->access, peer, now, NULL) == 0)
        return 0;
    reset_close(fd);
    uint32_t due = tk_access_log_flush(sl->s->access, now, 0);
    if (due && !tk_timer_active(&sl->access_log))
        (void)tk_timer_start(loop, &sl->access_log, due);
    return -EACCES;
}

static void on_accept(tk_listener *l, int fd, const tk_addr *peer, void *arg)
{
    srv_loop *sl = arg;
    tk_server *s = sl->s;
    tk_loop *loop = tk_workers_loop(s->w, sl->index);
    (void)l;
    if (s->access && access_check(sl, loop, fd, peer) < 0)
        return;
    if (s->cfg.max_clients) {
        unsigned prev = atomic_fetch_add(&s->active, 1);
        if (prev >= s->cfg.max_clients) {
            atomic_fetch_sub(&s->active, 1);
            if (s->access)
                tk_access_release(s->access, peer, tk_loop_now(loop));
            refused(sl, peer, prev);
            reject(loop, fd, s->cfg.tls, s->cfg.busy_msg, s->cfg.busy_len);
            if (s->ops->rejected)
                s->ops->rejected(s->svc, sl->index);
            return;
        }
    } else {
        atomic_fetch_add(&s->active, 1);
    }
    s->ops->accept(s->svc, sl->index, fd, peer);
}

/* Binds one socket per loop on addr; the first fixes the port when it is 0. */
static int bind_everywhere(tk_server *s, tk_addr *addr, int dual_stack, char *err, size_t errcap)
{
    tk_listen_opts o = {.backlog = s->cfg.backlog, .reuseport = s->nloops > 1, .udp = s->cfg.udp};
    char text[TK_ADDR_STRLEN];
    for (unsigned i = 0; i < s->nloops; i++) {
        int fd = tk_listen_socket(addr, &o, dual_stack);
        if (fd < 0) {
            snprintf(err, errcap, "cannot listen on %s: %s",
                     tk_addr_format(addr, text, sizeof(text)), strerror(-fd));
            return fd;
        }
        if (i == 0 && tk_addr_port(addr) == 0) {
            tk_addr real;
            if (tk_addr_of_socket(fd, 0, &real) == 0)
                tk_addr_set_port(addr, tk_addr_port(&real));
        }
        tk_loop *loop = tk_workers_loop(s->w, i);
        if (s->cfg.udp) {
            s->ops->accept(s->svc, i, fd, NULL);
            continue;
        }
        srv_loop *sl = &s->loops[i];
        /* Clients shed for lack of descriptors get no handshake: over TLS
         * they are just closed. */
        int rc =
            tk_listener_start(loop, fd, on_accept, sl, s->cfg.tls ? NULL : s->cfg.busy_msg,
                              s->cfg.tls ? 0 : s->cfg.busy_len, &sl->listeners[sl->nlisteners]);
        if (rc < 0) {
            snprintf(err, errcap, "cannot watch listener: %s", strerror(-rc));
            return rc;
        }
        sl->nlisteners++;
    }
    return 0;
}

/* ":port" means every interface: one dual-stack IPv6 socket, or IPv4 alone
 * where the host has no IPv6. */
static int open_one(tk_server *s, const char *spec, char *err, size_t errcap)
{
    char host[TK_HOST_MAX];
    int port;
    tk_addr addr;
    if (tk_addr_split(spec, host, &port) < 0) {
        snprintf(err, errcap, "bad listen address '%s' (want HOST:PORT, [IPv6]:PORT or :PORT)",
                 spec);
        return -EINVAL;
    }
    int dual = host[0] == '\0';
    if (dual) {
        char any6[16];
        snprintf(any6, sizeof(any6), "[::]:%d", port);
        tk_addr_parse(any6, &addr);
        int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            char any4[24];
            snprintf(any4, sizeof(any4), "0.0.0.0:%d", port);
            tk_addr_parse(any4, &addr);
            dual = 0;
        } else {
            close(fd);
        }
    } else {
        int n = tk_addr_resolve(spec, AF_UNSPEC, 1, &addr, 1);
        if (n < 0) {
            snprintf(err, errcap, "cannot resolve listen address '%s'", spec);
            return n;
        }
    }
    int rc = bind_everywhere(s, &addr, dual, err, errcap);
    if (rc == 0)
        s->bound[s->nbound++] = addr;
    return rc;
}

static int open_access(tk_server *s, const tk_server_config *cfg, char *err, size_t errcap)
{
    if (cfg->udp) {
        snprintf(err, errcap, "access rules and per-address limits are for TCP servers only");
        return -EINVAL;
    }
    if (tk_access_config_check(cfg->access, err, errcap) < 0)
        return -EINVAL;
    int rc = tk_access_new(cfg->access, &s->access);
    if (rc < 0)
        snprintf(err, errcap, "cannot set up access rules: %s", strerror(-rc));
    return rc;
}

int tk_server_open(tk_workers *w, const tk_server_config *cfg, const tk_service_ops *ops, void *svc,
                   tk_server **out, char *err, size_t errcap)
{
    if (cfg->nlisten == 0 || cfg->nlisten > TK_SERVER_MAX_LISTEN) {
        snprintf(err, errcap, "between 1 and %d listen addresses are needed", TK_SERVER_MAX_LISTEN);
        return -EINVAL;
    }
    tk_server *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->w = w;
    s->ops = ops;
    s->svc = svc;
    s->cfg = *cfg;
    s->cfg.access = NULL; /* copied into s->access below */
    s->nloops = tk_workers_count(w);
    if (cfg->loops && cfg->loops < s->nloops)
        s->nloops = cfg->loops;
    s->loops = calloc(s->nloops, sizeof(srv_loop));
    if (!s->loops) {
        free(s);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < s->nloops; i++) {
        s->loops[i].s = s;
        s->loops[i].index = i;
        tk_timer_init(&s->loops[i].access_log, on_access_log);
    }
    int rc = cfg->access ? open_access(s, cfg, err, errcap) : 0;
    if (rc < 0) {
        tk_server_free(s);
        return rc;
    }
    for (size_t i = 0; i < cfg->nlisten; i++) {
        rc = open_one(s, cfg->listen[i], err, errcap);
        if (rc < 0) {
            tk_server_free(s);
            return rc;
        }
    }
    *out = s;
    return 0;
}

tk_tls_ctx *tk_server_tls(const tk_server *s)
{
    return s->cfg.tls;
}

size_t tk_server_bound_count(const tk_server *s)
{
    return s->nbound;
}

const tk_addr *tk_server_bound(const tk_server *s, size_t i)
{
    return &s->bound[i];
}

void tk_server_release(tk_server *s, unsigned loop_index, const tk_addr *peer)
{
    atomic_fetch_sub(&s->active, 1);
    if (s->access && peer)
        tk_access_release(s->access, peer, tk_loop_now(tk_workers_loop(s->w, loop_index)));
}

tk_access *tk_server_access(const tk_server *s)
{
    return s->access;
}

unsigned tk_server_active(const tk_server *s)
{
    return atomic_load(&((tk_server *)s)->active);
}

static void finish(tk_server *s)
{
    if (s->finished)
        return;
    s->finished = 1;
    tk_timer_stop(s->main_loop, &s->deadline);
    if (s->done)
        s->done(s->done_arg);
}

static void loop_done_on_main(tk_loop *loop, void *arg)
{
    (void)loop;
    srv_loop *sl = arg;
    tk_server *s = sl->s;
    if (sl->done)
        return;
    sl->done = 1;
    if (++s->ndone == s->nloops)
        finish(s);
}

void tk_server_loop_done(tk_server *s, unsigned loop_index)
{
    if (s->main_loop)
        tk_loop_post(s->main_loop, loop_done_on_main, &s->loops[loop_index]);
}

static void close_listeners(srv_loop *sl)
{
    for (size_t i = 0; i < sl->nlisteners; i++)
        tk_listener_close(sl->listeners[i]);
    sl->nlisteners = 0;
}

static void shutdown_on_loop(tk_loop *loop, void *arg)
{
    (void)loop;
    srv_loop *sl = arg;
    close_listeners(sl);
    sl->s->ops->shutdown(sl->s->svc, sl->index);
}

static void abort_on_loop(tk_loop *loop, void *arg)
{
    (void)loop;
    srv_loop *sl = arg;
    sl->s->ops->abort(sl->s->svc, sl->index);
}

static void on_deadline(tk_loop *loop, tk_timer *t)
{
    tk_server *s = (tk_server *)((char *)t - offsetof(tk_server, deadline));
    if (s->aborted) {
        tk_warn("shutdown: %u of %u loops did not finish; exiting anyway", s->nloops - s->ndone,
                s->nloops);
        finish(s);
        return;
    }
    s->aborted = 1;
    tk_warn("shutdown timeout: closing the remaining connections");
    for (unsigned i = 0; i < s->nloops; i++)
        if (!s->loops[i].done)
            tk_loop_post(tk_workers_loop(s->w, i), abort_on_loop, &s->loops[i]);
    (void)tk_timer_start(loop, &s->deadline, TK_ABORT_GRACE_MS);
}

void tk_server_shutdown(tk_server *s, tk_loop *main_loop, unsigned timeout_ms,
                        void (*done)(void *arg), void *arg)
{
    if (s->main_loop)
        return;
    s->main_loop = main_loop;
    s->done = done;
    s->done_arg = arg;
    tk_timer_init(&s->deadline, on_deadline);
    (void)tk_timer_start(main_loop, &s->deadline, timeout_ms);
    for (unsigned i = 0; i < s->nloops; i++)
        tk_loop_post(tk_workers_loop(s->w, i), shutdown_on_loop, &s->loops[i]);
}

void tk_server_free(tk_server *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < s->nloops; i++) {
        close_listeners(&s->loops[i]);
        tk_timer_stop(tk_workers_loop(s->w, i), &s->loops[i].access_log);
        s->ops->abort(s->svc, i);
        tk_loop_run_pending(tk_workers_loop(s->w, i));
    }
    /* After the aborts: closing clients count themselves out of it. */
    tk_access_free(s->access);
    free(s->loops);
    free(s);
}

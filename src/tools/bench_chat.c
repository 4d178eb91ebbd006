/* `tcpkit bench --mode chat`: fan-out through a JSON chat server.
 *
 * Receivers and senders all register a unique name and join one room;
 * receivers then only read, senders send MESSAGE requests whose content
 * starts with the send time ("T<µs> xxx…", the intended time in open loop),
 * so each receiver computes a delivery's latency from the text it gets. One
 * thread drives every connection with poll(): the work per delivery is a
 * line scan and a histogram update, and one thread keeps the clocks of send
 * and arrival the same. Closed loop: each sender has one message in flight
 * and sends the next when the server's response to it arrives. Open loop:
 * message k is due at t0 + k/rate, from sender k mod M.
 *
 * With TLS each connection's handshake is part of its setup; a write that
 * returned -EAGAIN stays at the front of the output buffer, offered again
 * with whatever was appended since. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpkit/loop.h"
#include "tcpkit/pool.h"
#include "tools/bench_chat.h"

#define CHAT_DEFAULT_CONNECT_MS 10000u
/* Room for the JSON around a message's content, and for event lines. */
#define CHAT_LINE_EXTRA 1024u
#define CHAT_READ_CAP   65536u

enum { CHAT_SETUP, CHAT_READY, CHAT_DEAD };

typedef struct {
    int fd;
    int sender;
    int state;
    int waiting; /* closed loop: a MESSAGE not yet answered */
    char *in;    /* a partial line */
    size_t in_len;
    char *out; /* bytes not yet written */
    size_t out_len;
    uint64_t delivered; /* receivers: chat events received */
    tk_tls *tls;        /* TLS: the session (NULL: plain TCP) */
    unsigned char hs;   /* TLS: the handshake is in progress */
    unsigned char rww;  /* TLS: a read waits for the socket to be writable */
    unsigned char wwr;  /* TLS: a write waits for the socket to be readable */
} chat_conn;

typedef struct {
    const tk_bench_config *cfg;
    chat_conn *conns;
    unsigned n;
    size_t line_cap;
    size_t out_cap;
    tk_hdr *hist;
    uint64_t win_start, win_end;
    tk_bench_result *r;
    tk_pool *pool;
    char *msg; /* one request being built, out_cap bytes */
    char room[48];
    unsigned alive_receivers;
} chat_run;

/* Closes a connection (close_notify first when clean and TLS). */
static void chat_close(chat_run *cr, chat_conn *c, int clean)
{
    if (c->tls) {
        if (clean)
            tk_tls_shutdown(c->tls);
        tk_tls_free(c->tls);
        c->tls = NULL;
    }
    tk_pool_put(cr->pool, c->fd, 0);
    c->fd = -1;
}

static void chat_fail(chat_run *cr, chat_conn *c, int err)
{
    if (c->state == CHAT_DEAD)
        return;
    if (!c->sender && c->state == CHAT_READY)
        cr->alive_receivers--;
    c->state = CHAT_DEAD;
    chat_close(cr, c, 0);
    cr->r->errors++;
    cr->r->last_error = err;
}

static void chat_append(chat_run *cr, chat_conn *c, const char *s, size_t len)
{
    if (c->out_len + len > cr->out_cap)
        return; /* callers check the room first */
    memcpy(c->out + c->out_len, s, len);
    c->out_len += len;
}

static void chat_flush(chat_run *cr, chat_conn *c)
{
    if (c->hs)
        return; /* sent once the handshake is done */
    c->wwr = 0;
    while (c->state != CHAT_DEAD && c->out_len > 0) {
        ssize_t n;
        if (c->tls) {
            n = tk_tls_write(c->tls, c->out, c->out_len);
            if (n == -EAGAIN) {
                c->wwr = (tk_tls_want(c->tls) & TK_TLS_WANT_READ) != 0;
                return;
            }
            if (n < 0) {
                chat_fail(cr, c, (int)n);
                return;
            }
        } else if ((n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL)) < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                chat_fail(cr, c, -errno);
            return;
        }
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
}

/* A MESSAGE request of the configured content size, stamped with ts. */
static size_t chat_message(const chat_run *cr, char *buf, size_t cap, uint64_t ts)
{
    int k = snprintf(buf, cap, "{\"type\":\"MESSAGE\",\"id\":3,\"payload\":{\"content\":\"T%llu ",
                     (unsigned long long)ts);
    size_t len = (size_t)k;
    size_t content = len - strlen("{\"type\":\"MESSAGE\",\"id\":3,\"payload\":{\"content\":\"");
    while (content < cr->cfg->size && len + 8 < cap) {
        buf[len++] = 'x';
        content++;
    }
    memcpy(buf + len, "\"}}\n", 4);
    return len + 4;
}

static int starts(const char *line, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(line, prefix, n) == 0;
}

/* One line from the server. */
static void chat_line(chat_run *cr, chat_conn *c, const char *line, size_t len, uint64_t now)
{
    if (starts(line, len, "{\"type\":\"chat\",")) {
        if (c->sender)
            return;
        const char *p = memmem(line, len, "\"content\":\"T", 12);
        if (!p)
            return;
        uint64_t ts = strtoull(p + 12, NULL, 10);
        c->delivered++;
        cr->r->received++;
        if (now >= cr->win_start && now < cr->win_end) {
            tk_hdr_record(cr->hist, now > ts ? now - ts : 0);
            cr->r->requests++;
            if (cr->cfg->per_sec) {
                size_t sec = (size_t)((now - cr->win_start) / 1000000);
                if (sec < cr->cfg->per_sec_cap) {
                    cr->cfg->per_sec[sec]++;
                    if (sec + 1 > cr->r->per_sec_n)
                        cr->r->per_sec_n = sec + 1;
                }
            }
        }
        return;
    }
    if (starts(line, len, "{\"type\":\"JOIN\",\"id\":2,\"payload\":{\"status\":\"ok\"")) {
        if (c->state == CHAT_SETUP) {
            c->state = CHAT_READY;
            if (!c->sender)
                cr->alive_receivers++;
        }
        return;
    }
    if (starts(line, len, "{\"type\":\"MESSAGE\",\"id\":3,")) {
        c->waiting = 0;
        return;
    }
    if (starts(line, len, "{\"type\":\"error\"")) {
        /* A refused request (a flood limit, a taken name): counted, and a
         * sender waiting for its answer goes on. */
        cr->r->errors++;
        cr->r->last_error = -EPROTO;
        c->waiting = 0;
        if (c->state == CHAT_SETUP)
            chat_fail(cr, c, -EPROTO);
    }
}

/* The lines in buf[0..n), the partial one kept for the next read. */
static void chat_lines(chat_run *cr, chat_conn *c, const unsigned char *buf, size_t n)
{
    uint64_t now = tk_clock_us();
    const unsigned char *p = buf, *end = buf + n;
    while (p < end && c->state != CHAT_DEAD) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t seg = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (c->in_len + seg > cr->line_cap) {
            chat_fail(cr, c, -EPROTO); /* a line longer than any we expect */
            return;
        }
        if (nl && c->in_len == 0) {
            chat_line(cr, c, (const char *)p, seg, now);
        } else {
            memcpy(c->in + c->in_len, p, seg);
            c->in_len += seg;
            if (nl) {
                chat_line(cr, c, c->in, c->in_len, now);
                c->in_len = 0;
            }
        }
        p += seg + (nl ? 1 : 0);
    }
}

/* Reads what the server sent. Through TLS, until OpenSSL holds no
 * decrypted bytes (those raise no poll event). */
static void chat_read(chat_run *cr, chat_conn *c, unsigned char *buf)
{
    if (c->tls) {
        c->rww = 0;
        do {
            ssize_t n = tk_tls_read(c->tls, buf, CHAT_READ_CAP);
            if (n == -EAGAIN) {
                c->rww = (tk_tls_want(c->tls) & TK_TLS_WANT_WRITE) != 0;
                return;
            }
            if (n <= 0) {
                chat_fail(cr, c, (int)n);
                return;
            }
            chat_lines(cr, c, buf, (size_t)n);
        } while (c->state != CHAT_DEAD && tk_tls_pending(c->tls));
        return;
    }
    ssize_t n = read(c->fd, buf, CHAT_READ_CAP);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        chat_fail(cr, c, n < 0 ? -errno : 0);
        return;
    }
    chat_lines(cr, c, buf, (size_t)n);
}

/* TLS: a failed handshake is a failed connect, its reason kept once. */
static void chat_tls_failed(chat_run *cr, chat_conn *c, int err, const char *why)
{
    cr->r->tls_failures++;
    cr->r->connect_errors++;
    if (!cr->r->tls_error[0])
        snprintf(cr->r->tls_error, sizeof(cr->r->tls_error), "%s", why);
    chat_fail(cr, c, err);
}

/* TLS: advances the handshake; once done the connection counts as
 * connected and its REGISTER and JOIN go out. */
static void chat_handshake(chat_run *cr, chat_conn *c)
{
    int r = tk_tls_handshake(c->tls);
    if (r == -EAGAIN)
        return;
    if (r < 0) {
        chat_tls_failed(cr, c, r, tk_tls_error(c->tls));
        return;
    }
    c->hs = 0;
    cr->r->connected++;
    if (!cr->r->tls_version[0])
        snprintf(cr->r->tls_version, sizeof(cr->r->tls_version), "%s", tk_tls_version(c->tls));
    chat_flush(cr, c);
}

/* Polls every live connection for up to wait_ms and serves what is ready. */
static int chat_poll(chat_run *cr, struct pollfd *pfd, unsigned char *buf, int wait_ms)
{
    for (unsigned i = 0; i < cr->n; i++) {
        chat_conn *c = &cr->conns[i];
        pfd[i].fd = c->state == CHAT_DEAD ? -1 : c->fd;
        if (c->hs)
            pfd[i].events = (tk_tls_want(c->tls) & TK_TLS_WANT_WRITE) ? POLLOUT : POLLIN;
        else
            pfd[i].events = (short)(POLLIN | (c->out_len || c->rww ? POLLOUT : 0));
        pfd[i].revents = 0;
    }
    int n = poll(pfd, cr->n, wait_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (unsigned i = 0; n > 0 && i < cr->n; i++) {
        chat_conn *c = &cr->conns[i];
        if (c->state == CHAT_DEAD || !pfd[i].revents)
            continue;
        if (c->hs) {
            chat_handshake(cr, c);
            continue;
        }
        /* TLS may need the other direction for either operation. */
        short readable = POLLIN | POLLHUP | POLLERR;
        if (pfd[i].revents & (c->wwr ? readable : POLLOUT))
            chat_flush(cr, c);
        if (c->state != CHAT_DEAD && (pfd[i].revents & (c->rww ? POLLOUT : readable)))
            chat_read(cr, c, buf);
    }
    return 0;
}

static int ms_until(uint64_t now, uint64_t t)
{
    if (t <= now)
        return 0;
    uint64_t ms = (t - now + 999) / 1000;
    return ms > 1000 ? 1000 : (int)ms;
}

/* Connects, names and seats everyone; returns the connections that made it. */
static unsigned chat_setup(chat_run *cr, struct pollfd *pfd, unsigned char *buf)
{
    const tk_bench_config *cfg = cr->cfg;
    uint32_t timeout = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : CHAT_DEFAULT_CONNECT_MS;
    uint32_t hs_timeout = cfg->tls ? tk_tls_ctx_handshake_timeout(cfg->tls) : 0;
    char line[256];

    for (unsigned i = 0; i < cr->n; i++) {
        chat_conn *c = &cr->conns[i];
        c->sender = i >= cfg->receivers;
        c->fd = tk_pool_get(cr->pool, timeout);
        if (c->fd < 0) {
            int err = c->fd;
            c->state = CHAT_DEAD;
            cr->r->errors++;
            cr->r->connect_errors++;
            cr->r->last_error = err;
            continue;
        }
        int k = snprintf(line, sizeof(line),
                         "{\"type\":\"REGISTER\",\"id\":1,\"payload\":{\"name\":\"%s%c%u\"}}\n"
                         "{\"type\":\"JOIN\",\"id\":2,\"payload\":{\"room\":\"%s\"}}\n",
                         cr->room, c->sender ? 's' : 'r', i, cr->room);
        chat_append(cr, c, line, (size_t)k);
        if (cfg->tls) {
            int err = tk_tls_new(cfg->tls, c->fd, cfg->tls_name, &c->tls);
            if (err < 0) {
                c->tls = NULL;
                chat_tls_failed(cr, c, err, strerror(-err));
                continue;
            }
            c->hs = 1;
            chat_handshake(cr, c);
            continue;
        }
        cr->r->connected++;
        chat_flush(cr, c);
    }
    uint64_t deadline = tk_clock_us() + ((uint64_t)timeout + hs_timeout) * 1000;
    for (;;) {
        unsigned pending = 0, ready = 0;
        for (unsigned i = 0; i < cr->n; i++) {
            pending += cr->conns[i].state == CHAT_SETUP;
            ready += cr->conns[i].state == CHAT_READY;
        }
        uint64_t now = tk_clock_us();
        if (pending == 0 || now >= deadline) {
            for (unsigned i = 0; i < cr->n; i++) {
                if (cr->conns[i].state != CHAT_SETUP)
                    continue;
                if (cr->conns[i].hs)
                    chat_tls_failed(cr, &cr->conns[i], -ETIMEDOUT, "handshake timed out");
                else
                    chat_fail(cr, &cr->conns[i], -ETIMEDOUT);
            }
            return ready;
        }
        if (chat_poll(cr, pfd, buf, ms_until(now, deadline)) < 0)
            return 0;
    }
}

/* Queues the messages due now (open loop) or the next message of every
 * sender whose last one was answered (closed loop), within the budget. */
static void chat_send_due(chat_run *cr, uint64_t t0, uint64_t now, uint64_t *k_next)
{
    const tk_bench_config *cfg = cr->cfg;
    char *msg = cr->msg;
    if (cfg->rate > 0.0) {
        for (;;) {
            uint64_t due = t0 + (uint64_t)((double)*k_next * 1e6 / cfg->rate);
            if (due > now || (cfg->requests && cr->r->sent >= cfg->requests))
                break;
            chat_conn *c = &cr->conns[cfg->receivers + (unsigned)(*k_next % cfg->senders)];
            (*k_next)++;
            if (c->state != CHAT_READY)
                continue;
            size_t len = chat_message(cr, msg, cr->out_cap, due);
            if (c->out_len + len > cr->out_cap) {
                (*k_next)--; /* the socket is full: the message waits, late */
                break;
            }
            chat_append(cr, c, msg, len);
            cr->r->sent++;
            if (due >= cr->win_start && due < cr->win_end)
                cr->r->sent_measured++;
        }
    } else {
        for (unsigned s = 0; s < cfg->senders; s++) {
            chat_conn *c = &cr->conns[cfg->receivers + s];
            if (c->state != CHAT_READY || c->waiting || c->out_len > 0)
                continue;
            if (cfg->requests && cr->r->sent >= cfg->requests)
                break;
            chat_append(cr, c, msg, chat_message(cr, msg, cr->out_cap, now));
            c->waiting = 1;
            cr->r->sent++;
            if (now >= cr->win_start && now < cr->win_end)
                cr->r->sent_measured++;
        }
    }
    for (unsigned s = 0; s < cfg->senders; s++)
        chat_flush(cr, &cr->conns[cfg->receivers + s]);
}

static int chat_all_delivered(const chat_run *cr)
{
    if (cr->cfg->requests == 0 || cr->r->sent < cr->cfg->requests)
        return 0;
    for (unsigned i = 0; i < cr->cfg->receivers; i++) {
        const chat_conn *c = &cr->conns[i];
        if (c->state == CHAT_READY && c->delivered < cr->cfg->requests)
            return 0;
    }
    return 1;
}

static void chat_loop(chat_run *cr, struct pollfd *pfd, unsigned char *buf)
{
    const tk_bench_config *cfg = cr->cfg;
    uint64_t t0 = tk_clock_us(), k_next = 0, next_progress;
    uint32_t warmup = cfg->warmup_ms;
    if (warmup == UINT32_MAX)
        warmup = cfg->duration_ms / 5 < 1000 ? cfg->duration_ms / 5 : 1000;
    cr->win_start = t0 + (uint64_t)warmup * 1000;
    cr->win_end = cr->win_start + (uint64_t)cfg->duration_ms * 1000;
    next_progress = cr->win_start + 1000000;

    for (;;) {
        uint64_t now = tk_clock_us();
        if (now >= cr->win_end || cr->alive_receivers == 0 || chat_all_delivered(cr))
            break;
        chat_send_due(cr, t0, now, &k_next);
        if (cfg->progress && now >= next_progress) {
            cfg->progress(cfg->progress_arg, cr->r->requests, (double)(now - cr->win_start) / 1e6);
            next_progress += 1000000;
        }
        uint64_t wake = cr->win_end;
        if (cfg->rate > 0.0) {
            uint64_t due = t0 + (uint64_t)((double)k_next * 1e6 / cfg->rate);
            if (due < wake)
                wake = due;
        }
        if (chat_poll(cr, pfd, buf, ms_until(now, wake)) < 0)
            break;
    }
    uint64_t end = tk_clock_us();
    if (end > cr->win_end)
        end = cr->win_end;
    cr->r->elapsed_s = end > cr->win_start ? (double)(end - cr->win_start) / 1e6 : 0.0;
}

static void chat_results(chat_run *cr)
{
    tk_bench_result *r = cr->r;
    const tk_bench_config *cfg = cr->cfg;
    r->rps = r->elapsed_s > 0 ? (double)r->requests / r->elapsed_s : 0.0;
    r->p50_us = tk_hdr_quantile(cr->hist, 0.50);
    r->p90_us = tk_hdr_quantile(cr->hist, 0.90);
    r->p99_us = tk_hdr_quantile(cr->hist, 0.99);
    r->p999_us = tk_hdr_quantile(cr->hist, 0.999);
    r->max_us = cr->hist->max;
    r->min_us = cr->hist->total ? cr->hist->min : 0;
    r->mean_us = tk_hdr_mean(cr->hist);
    r->per_receiver_min = UINT64_MAX;
    for (unsigned i = 0; i < cfg->receivers; i++) {
        uint64_t d = cr->conns[i].delivered;
        if (d < r->per_receiver_min)
            r->per_receiver_min = d;
        if (d > r->per_receiver_max)
            r->per_receiver_max = d;
        /* With a message count, every message missing at a receiver still
         * connected is an error. */
        if (cfg->requests && cr->conns[i].state == CHAT_READY && d < r->sent) {
            r->timeouts += r->sent - d;
            r->errors += r->sent - d;
            r->last_error = -ETIMEDOUT;
        }
    }
}

int bench_chat_run(const tk_bench_config *cfg, tk_bench_result *out)
{
    chat_run cr;
    tk_pool *pool = NULL;
    tk_pool_config pc;
    int err;

    memset(&cr, 0, sizeof(cr));
    memset(out, 0, sizeof(*out));
    cr.cfg = cfg;
    cr.r = out;
    cr.n = cfg->receivers + cfg->senders;
    cr.line_cap = cfg->size + CHAT_LINE_EXTRA;
    cr.out_cap = 2 * (cfg->size + CHAT_LINE_EXTRA);
    snprintf(cr.room, sizeof(cr.room), "bench%ld", (long)getpid());
    tk_pool_config_init(&pc);
    pc.addrs = cfg->addrs;
    pc.naddrs = cfg->naddrs;
    pc.max_size = cr.n;
    pc.connect_timeout_ms =
        cfg->connect_timeout_ms ? cfg->connect_timeout_ms : CHAT_DEFAULT_CONNECT_MS;
    if ((err = tk_pool_new(&pc, &pool)) < 0)
        return err;
    cr.pool = pool;

    cr.conns = calloc(cr.n, sizeof(*cr.conns));
    struct pollfd *pfd = calloc(cr.n, sizeof(*pfd));
    unsigned char *buf = malloc(CHAT_READ_CAP);
    cr.msg = malloc(cr.out_cap);
    cr.hist = cfg->hist_out ? cfg->hist_out : malloc(sizeof(*cr.hist));
    err = cr.conns && pfd && buf && cr.msg && cr.hist ? 0 : -ENOMEM;
    for (unsigned i = 0; err == 0 && i < cr.n; i++) {
        cr.conns[i].fd = -1;
        cr.conns[i].in = malloc(cr.line_cap);
        cr.conns[i].out = malloc(cr.out_cap);
        if (!cr.conns[i].in || !cr.conns[i].out)
            err = -ENOMEM;
    }
    if (err == 0) {
        tk_hdr_reset(cr.hist);
        if (cfg->per_sec)
            memset(cfg->per_sec, 0, cfg->per_sec_cap * sizeof(*cfg->per_sec));
        unsigned ready = chat_setup(&cr, pfd, buf);
        if (ready == cr.n)
            chat_loop(&cr, pfd, buf);
        chat_results(&cr);
    }
    for (unsigned i = 0; cr.conns && i < cr.n; i++) {
        if (cr.conns[i].fd >= 0)
            chat_close(&cr, &cr.conns[i], 1);
        free(cr.conns[i].in);
        free(cr.conns[i].out);
    }
    tk_pool_free(pool);
    if (cr.hist != cfg->hist_out)
        free(cr.hist);
    free(cr.conns);
    free(pfd);
    free(buf);
    free(cr.msg);
    return err;
}

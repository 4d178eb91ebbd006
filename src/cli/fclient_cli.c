/* Common plumbing of the file clients: options, connecting, a progress
 * display on a terminal (one line per running transfer, redrawn five times
 * a second), error reporting and the exit status. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/fclient_cli.h"
#include "cli/opts.h"
#include "tcpkit/log.h"

enum { EXIT_REFUSED = 3, EXIT_TIMEOUT = 4, EXIT_DROPPED = 5 };

#define MAX_ADDRS 16
#define REDRAW_MS 200
#define MAX_BARS  8

typedef struct item {
    struct item *next;
    tk_fxfer *x;
    char label[64];
    uint64_t done;
    uint64_t total;
    uint64_t start_us;
} item;

struct fcli {
    fcli_options *o;
    tk_loop *loop;
    tk_fclient *client;
    int tty;            /* progress bars on stderr */
    int status;         /* the worst outcome so far */
    int finished;       /* the loop may stop */
    char conn_err[512]; /* why the connection failed, already printed */
    item *items;
    unsigned drawn; /* bar lines on the screen */
    tk_timer redraw;
    void (*entry_cb)(tk_fxfer *, const tk_entry *, void *);
    void *entry_arg;
    void (*info_cb)(tk_fxfer *, int, uint64_t, int64_t, const unsigned char *, void *);
    void *info_arg;
    int (*done_cb)(tk_fxfer *, int, void *);
    void *done_arg;
};

void fcli_options_init(fcli_options *o, const char *cmd)
{
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    tk_fclient_config_init(&o->cfg);
    tls_opts_init(&o->tls);
}

int fcli_option(fcli_options *o, int ch, const char *arg)
{
    unsigned long v;
    uint32_t ms;
    switch (ch) {
    case FC_PROTOCOL:
        if (tk_parse_uint(arg, 1, 2, &v) < 0)
            return opt_usage_error(o->cmd, "bad --protocol '%s' (1 or 2)", arg);
        o->cfg.protocol = (int)v;
        return 0;
    case FC_AUTH_KEY: o->key_path = arg; return 0;
    case FC_CONNECT_TIMEOUT:
    case FC_HEARTBEAT:
        if (tk_parse_duration_ms(arg, &ms) < 0)
            return opt_usage_error(o->cmd, "bad duration '%s' (seconds)", arg);
        if (ch == FC_HEARTBEAT)
            o->cfg.heartbeat_ms = ms;
        else
            o->cfg.connect_timeout_ms = ms;
        return 0;
    case FC_PARALLEL:
        if (tk_parse_uint(arg, 1, 1024, &v) < 0)
            return opt_usage_error(o->cmd, "bad --parallel '%s' (1 to 1024)", arg);
        o->cfg.max_parallel = (unsigned)v;
        return 0;
    case FC_NO_SYNC: o->cfg.sync = 0; return 0;
    case FC_QUIET: o->quiet = 1; return 0;
    case FC_COMPRESS: o->compress = 1; return 0;
    default: return tls_option(&o->tls, o->cmd, ch, arg);
    }
}

const char *fcli_human(uint64_t bytes, char *buf, size_t cap)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    unsigned u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

/* ---- the display ---- */

static void erase_bars(fcli *f)
{
    if (f->drawn) {
        fprintf(stderr, "\r\x1b[%uA\x1b[J", f->drawn);
        f->drawn = 0;
    }
}

static void draw_bars(fcli *f)
{
    uint64_t now = tk_clock_us();
    unsigned n = 0;
    for (item *it = f->items; it && n < MAX_BARS; it = it->next, n++) {
        char done[16], total[16], rate[16], eta[32] = "--:--";
        double secs = (double)(now - it->start_us) / 1e6;
        uint64_t moved = it->done - tk_fxfer_resumed_from(it->x);
        double bps = secs > 0.2 ? (double)moved / secs : 0;
        fcli_human(it->done, done, sizeof(done));
        fcli_human(it->total, total, sizeof(total));
        fcli_human((uint64_t)bps, rate, sizeof(rate));
        if (bps > 0 && it->total >= it->done) {
            unsigned long s = (unsigned long)((double)(it->total - it->done) / bps);
            snprintf(eta, sizeof(eta), "%lu:%02lu", s / 60, s % 60);
        }
        unsigned pct = it->total ? (unsigned)(it->done * 100 / it->total) : 0;
        char bar[21];
        unsigned fill = pct / 5;
        for (unsigned i = 0; i < 20; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[20] = '\0';
        fprintf(stderr, "%-24.24s [%s] %3u%% %10s / %-10s %10s/s ETA %s\x1b[K\n", it->label, bar,
                pct, done, total, rate, eta);
    }
    f->drawn = n;
    fflush(stderr);
}

static void on_redraw(tk_loop *loop, tk_timer *t)
{
    fcli *f = (fcli *)((char *)t - offsetof(fcli, redraw));
    erase_bars(f);
    draw_bars(f);
    if (f->items)
        (void)tk_timer_start(loop, &f->redraw, REDRAW_MS);
}

/* Prints a line above the bars. */
static void say(fcli *f, FILE *out, const char *line)
{
    if (f->tty)
        erase_bars(f);
    fputs(line, out);
    if (f->tty)
        draw_bars(f);
}

void fcli_track(fcli *f, tk_fxfer *x, const char *label)
{
    tk_fxfer_set_data(x, NULL);
    if (!f->tty)
        return;
    item *it = calloc(1, sizeof(*it));
    if (!it)
        return;
    it->x = x;
    snprintf(it->label, sizeof(it->label), "%s", label);
    it->start_us = tk_clock_us();
    item **pp = &f->items;
    while (*pp)
        pp = &(*pp)->next;
    *pp = it;
    tk_fxfer_set_data(x, it);
    if (!tk_timer_active(&f->redraw))
        (void)tk_timer_start(f->loop, &f->redraw, REDRAW_MS);
}

static void untrack(fcli *f, item *it)
{
    for (item **pp = &f->items; *pp; pp = &(*pp)->next) {
        if (*pp == it) {
            *pp = it->next;
            free(it);
            return;
        }
    }
}

/* ---- engine callbacks ---- */

static int status_for(int err)
{
    switch (err) {
    case -ECONNREFUSED: return EXIT_REFUSED;
    case -ETIMEDOUT: return EXIT_TIMEOUT;
    case -ECONNRESET:
    case -EPIPE: return EXIT_DROPPED;
    default: return 1;
    }
}

static void worse(fcli *f, int status)
{
    if (f->status == 0 || (f->status == 1 && status > 1))
        f->status = status;
}

static const char *err_name(int err)
{
    return err > 0 ? tk_file_err_name((unsigned)err) : strerror(-err);
}

static void on_ready(tk_fclient *c, int err, const char *msg, void *arg)
{
    (void)c;
    fcli *f = arg;
    if (err == 0)
        return;
    char line[600];
    snprintf(f->conn_err, sizeof(f->conn_err), "%s", msg && msg[0] ? msg : err_name(err));
    snprintf(line, sizeof(line), "tcpkit %s: %s\n", f->o->cmd, f->conn_err);
    say(f, stderr, line);
    worse(f, err < 0 ? status_for(err) : 1);
}

static void on_progress(tk_fxfer *x, uint64_t done, uint64_t total, void *arg)
{
    (void)arg;
    item *it = tk_fxfer_data(x);
    if (it) {
        it->done = done;
        it->total = total;
    }
}

static void on_entry(tk_fxfer *x, const tk_entry *e, void *arg)
{
    fcli *f = arg;
    if (f->entry_cb)
        f->entry_cb(x, e, f->entry_arg);
}

static void on_info(tk_fxfer *x, int kind, uint64_t size, int64_t mtime,
                    const unsigned char *digest, void *arg)
{
    fcli *f = arg;
    if (f->info_cb)
        f->info_cb(x, kind, size, mtime, digest, f->info_arg);
}

static void on_done(tk_fxfer *x, int err, const char *msg, void *arg)
{
    fcli *f = arg;
    item *it = tk_fxfer_data(x);
    int handled = f->done_cb && f->done_cb(x, err, f->done_arg);
    char line[800];
    if (err && !handled && f->conn_err[0] && msg && strcmp(msg, f->conn_err) == 0) {
        worse(f, err < 0 ? status_for(err) : 1); /* said once already, by on_ready */
    } else if (err && !handled) {
        /* Lost connections are reported once, by on_ready or here. */
        snprintf(line, sizeof(line), "tcpkit %s: %s: %s%s%s\n", f->o->cmd, tk_fxfer_remote(x),
                 err_name(err), msg && msg[0] ? ": " : "", msg ? msg : "");
        say(f, stderr, line);
        worse(f, err < 0 ? status_for(err) : 1);
    } else if (it && !f->o->quiet) {
        char size[16], rate[16];
        double secs = (double)(tk_clock_us() - it->start_us) / 1e6;
        fcli_human(it->total, size, sizeof(size));
        fcli_human(secs > 0 ? (uint64_t)((double)(it->done - tk_fxfer_resumed_from(x)) / secs) : 0,
                   rate, sizeof(rate));
        const unsigned char *d = tk_fxfer_digest(x);
        char hex[40] = "";
        if (d)
            snprintf(hex, sizeof(hex), ", sha256 %02x%02x%02x%02x%02x%02x…", d[0], d[1], d[2], d[3],
                     d[4], d[5]);
        snprintf(line, sizeof(line), "%s: %s in %.2f s (%s/s)%s\n", it->label, size, secs, rate,
                 hex);
        say(f, stderr, line);
    }
    if (it)
        untrack(f, it);
    if (tk_fclient_pending(f->client) == 0) { /* x is no longer counted */
        f->finished = 1;
        tk_loop_stop(f->loop);
    }
}

static const tk_fclient_handlers handlers = {
    .ready = on_ready,
    .progress = on_progress,
    .entry = on_entry,
    .info = on_info,
    .done = on_done,
};

void fcli_on_entry(fcli *f, void (*cb)(tk_fxfer *x, const tk_entry *e, void *arg), void *arg)
{
    f->entry_cb = cb;
    f->entry_arg = arg;
}

void fcli_on_info(fcli *f,
                  void (*cb)(tk_fxfer *x, int kind, uint64_t size, int64_t mtime,
                             const unsigned char *digest, void *arg),
                  void *arg)
{
    f->info_cb = cb;
    f->info_arg = arg;
}

void fcli_on_done(fcli *f, int (*cb)(tk_fxfer *x, int err, void *arg), void *arg)
{
    f->done_cb = cb;
    f->done_arg = arg;
}

tk_fclient *fcli_client(fcli *f)
{
    return f->client;
}

static void on_signal(tk_loop *loop, int signo, void *arg)
{
    fcli *f = arg;
    (void)signo;
    f->status = 130;
    f->finished = 1;
    tk_loop_stop(loop);
}

fcli *fcli_start(fcli_options *o, const char *target, int *status)
{
    tk_log_configure(TK_LOG_WARN, TK_LOG_TEXT, 2);
    tk_addr addrs[MAX_ADDRS];
    int n = tk_addr_resolve(target, AF_UNSPEC, 0, addrs, MAX_ADDRS);
    if (n == -EINVAL) {
        *status =
            opt_usage_error(o->cmd, "bad address '%s' (want HOST:PORT or [IPv6]:PORT)", target);
        return NULL;
    }
    if (n < 0) {
        fprintf(stderr, "tcpkit %s: cannot resolve '%s'\n", o->cmd, target);
        *status = 1;
        return NULL;
    }
    if (o->key_path) {
        size_t len;
        if (keyfile_read(o->cmd, o->key_path, o->key, &len)) {
            *status = 1;
            return NULL;
        }
        o->cfg.auth_key = o->key;
        o->cfg.auth_key_len = len;
    }
    int rc = tls_build(&o->tls, o->cmd, 0, &o->cfg.tls);
    if (rc) {
        memset(o->key, 0, sizeof(o->key));
        *status = rc;
        return NULL;
    }
    o->cfg.tls_name = tls_peer_name(&o->tls, target, o->tls_name);
    signal(SIGPIPE, SIG_IGN);
    fcli *f = calloc(1, sizeof(*f));
    if (!f || tk_loop_new(&f->loop) < 0) {
        free(f);
        tk_tls_ctx_free(o->cfg.tls);
        *status = 1;
        return NULL;
    }
    f->o = o;
    /* Downloads are read a megabyte at a time: a sixteenth of the system
     * calls of the default 64 KiB. */
    (void)tk_loop_set_scratch_size(f->loop, 1024 * 1024);
    f->tty = !o->quiet && isatty(2);
    tk_timer_init(&f->redraw, on_redraw);
    static const int sigs[] = {SIGINT, SIGTERM};
    (void)tk_loop_watch_signals(f->loop, sigs, 2, on_signal, f);
    rc = tk_fclient_new(f->loop, addrs, (size_t)n, &o->cfg, &handlers, f, &f->client);
    memset(o->key, 0, sizeof(o->key));
    if (rc < 0) {
        fprintf(stderr, "tcpkit %s: %s\n", o->cmd, strerror(-rc));
        tk_loop_free(f->loop);
        tk_tls_ctx_free(o->cfg.tls);
        free(f);
        *status = 1;
        return NULL;
    }
    return f;
}

int fcli_run(fcli *f)
{
    if (tk_fclient_pending(f->client) > 0 && !f->finished)
        tk_loop_run(f->loop);
    if (f->status == 130 && f->tty)
        erase_bars(f);
    tk_fclient_free(f->client); /* ends what is left (interrupted) */
    tk_timer_stop(f->loop, &f->redraw);
    tk_loop_run_pending(f->loop);
    if (f->tty)
        erase_bars(f);
    while (f->items)
        untrack(f, f->items);
    tk_loop_free(f->loop);
    tk_tls_ctx_free(f->o->cfg.tls);
    int status = f->status;
    free(f);
    return status;
}

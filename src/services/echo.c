/* The echo service: per-loop client lists, the line and length framings,
 * response-time accounting and graceful shutdown. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "echo_internal.h"
#include "tcpkit/log.h"
#include "tcpkit/text.h"

void tk_echo_config_init(tk_echo_config *c)
{
    memset(c, 0, sizeof(*c));
    c->framing = TK_ECHO_FRAMING_LINE;
    c->max_line = 64 * 1024;
    c->max_frame = 1024 * 1024;
    c->idle_timeout_ms = 300 * 1000;
    c->stall_timeout_ms = 30 * 1000;
    c->out_high = 256 * 1024;
    c->out_max = 4 * 1024 * 1024;
    tk_sockopts_init(&c->sockopts);
    c->sockopts.nodelay = 1;
}

void echo_owe(echo_client *cl, uint64_t n)
{
    if (n == 0)
        return;
    if (cl->owed == 0)
        cl->owed_since_us = tk_conn_read_time_us(cl->conn);
    cl->owed += n;
    tk_metrics_messages(cl->el->metrics, n);
}

/* Replies reached the kernel: record how long their requests waited. */
static void settle(echo_client *cl)
{
    if (cl->owed == 0)
        return;
    uint64_t now = tk_clock_us();
    uint64_t waited = now > cl->owed_since_us ? now - cl->owed_since_us : 0;
    tk_metrics_response(cl->el->metrics, cl->owed, waited);
    cl->owed = 0;
}

static void on_sent(tk_conn *c)
{
    settle(tk_conn_data(c));
}

static void line_request(echo_client *cl, const unsigned char *line, size_t n)
{
    echo_req req;
    echo_parse(line, n, &req);
    size_t bound = echo_reply_bound(&req);
    unsigned char *out = tk_conn_write_reserve(cl->conn, bound);
    if (!out)
        return;
    int quit;
    size_t len = echo_reply(cl->el->e, &req, out, bound, &quit);
    tk_conn_write_commit(cl->conn, len);
    if (quit)
        tk_conn_close_after_flush(cl->conn, TK_CLOSE_LOCAL);
}

static void line_too_long(echo_client *cl)
{
    char msg[80];
    int n = snprintf(msg, sizeof(msg), "ERROR: line too long (limit %zu bytes)\n",
                     cl->el->e->cfg.max_line);
    (void)tk_conn_write(cl->conn, msg, (size_t)n);
}

/* Answers every complete line in data, for the line and JSON framings. */
static size_t line_data(tk_conn *c, const unsigned char *data, size_t len)
{
    echo_client *cl = tk_conn_data(c);
    int json = cl->el->e->cfg.framing == TK_ECHO_FRAMING_JSON;
    size_t off = 0;
    uint64_t answered = 0;
    while (off < len && !tk_conn_closing(c)) {
        const unsigned char *line;
        size_t n, used;
        tk_codec_status st = tk_line_next(&cl->dec, data + off, len - off, &line, &n, &used);
        off += used;
        if (st == TK_CODEC_NEED)
            break;
        if (st == TK_CODEC_TOO_LONG) {
            if (json)
                echo_json_too_long(cl);
            else
                line_too_long(cl);
            answered++;
        } else if (json) {
            answered += (uint64_t)echo_json_line(cl, line, n);
        } else {
            line_request(cl, line, n);
            answered++;
        }
    }
    echo_owe(cl, answered);
    return off;
}

/* The peer finished: an unterminated last line is still a request. */
static void line_eof(tk_conn *c, const unsigned char *rest, size_t len)
{
    echo_client *cl = tk_conn_data(c);
    /* rest is shorter than max_line: longer input was answered with an error.
     * Like a terminated line, it loses a trailing '\r'. */
    if (len && rest[len - 1] == '\r')
        len--;
    if (len && !cl->dec.discarding) {
        uint64_t answered = 1;
        if (cl->el->e->cfg.framing == TK_ECHO_FRAMING_JSON)
            answered = (uint64_t)echo_json_line(cl, rest, len);
        else
            line_request(cl, rest, len);
        echo_owe(cl, answered);
    }
    tk_conn_close_after_flush(c, TK_CLOSE_PEER);
}

static void length_reply(tk_conn *c, const char *prefix, const unsigned char *p, size_t n)
{
    size_t plen = strlen(prefix);
    unsigned char *out = tk_conn_write_reserve(c, TK_LEN_HEADER + plen + n);
    if (!out)
        return;
    tk_len_header(out, (uint32_t)(plen + n));
    memcpy(out + TK_LEN_HEADER, prefix, plen);
    if (n)
        memcpy(out + TK_LEN_HEADER + plen, p, n);
    tk_conn_write_commit(c, TK_LEN_HEADER + plen + n);
}

static size_t length_data(tk_conn *c, const unsigned char *data, size_t len)
{
    echo_client *cl = tk_conn_data(c);
    size_t max = cl->el->e->cfg.max_frame;
    size_t off = 0;
    uint64_t answered = 0;
    while (off < len && !tk_conn_closing(c)) {
        const unsigned char *payload;
        size_t n, used;
        tk_codec_status st = tk_len_next(data + off, len - off, max, &payload, &n, &used);
        if (st == TK_CODEC_NEED)
            break;
        if (st == TK_CODEC_TOO_LONG) {
            /* The stream cannot be resynchronised: say why, then close. */
            char msg[96];
            int m = snprintf(msg, sizeof(msg), "ERROR: frame too large (%zu > %zu bytes)", n, max);
            length_reply(c, "", (const unsigned char *)msg, (size_t)m);
            tk_conn_close_after_flush(c, TK_CLOSE_LIMIT);
            off = len;
            break;
        }
        off += used;
        answered++;
        length_reply(c, "Got: ", payload, n);
    }
    echo_owe(cl, answered);
    return off;
}

static void unlink_client(echo_client *cl)
{
    echo_loop *el = cl->el;
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        el->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    el->nclients--;
}

static void on_close(tk_conn *c, tk_close_reason why, int err)
{
    echo_client *cl = tk_conn_data(c);
    echo_loop *el = cl->el;
    /* Drops for a limit are worth an operator's attention; ordinary ends are not. */
    tk_log_level lv = why == TK_CLOSE_LIMIT || why == TK_CLOSE_STALL ? TK_LOG_INFO : TK_LOG_DEBUG;
    if (tk_log_enabled(lv)) {
        char who[TK_ADDR_STRLEN];
        tk_log(lv, "echo: closed %s (%s%s%s)", tk_addr_format(tk_conn_peer(c), who, sizeof(who)),
               tk_close_reason_name(why), err ? ": " : "", err ? strerror(-err) : "");
    }
    settle(cl);
    tk_metrics_conn_close(el->metrics, why);
    unlink_client(cl);
    free(cl);
    if (el->e->server)
        tk_server_release(el->e->server, el->index, tk_conn_peer(c));
    if (el->shutting_down && el->nclients == 0 && el->e->server)
        tk_server_loop_done(el->e->server, el->index);
}

static const tk_conn_handler line_handler = {
    .on_data = line_data, .on_eof = line_eof, .on_sent = on_sent, .on_close = on_close};
static const tk_conn_handler length_handler = {
    .on_data = length_data, .on_sent = on_sent, .on_close = on_close};
static const tk_conn_handler json_handler = {
    .on_data = line_data, .on_eof = line_eof, .on_sent = on_sent, .on_close = on_close};

static void write_banner(echo_client *cl)
{
    const char *banner = cl->el->e->cfg.banner;
    if (!banner)
        return;
    if (cl->el->e->cfg.framing == TK_ECHO_FRAMING_JSON) {
        echo_json_notice(cl->conn, "banner", banner);
    } else if (cl->el->e->cfg.framing == TK_ECHO_FRAMING_LENGTH) {
        length_reply(cl->conn, "", (const unsigned char *)banner, strlen(banner));
    } else {
        (void)tk_conn_write(cl->conn, banner, strlen(banner));
        (void)tk_conn_write(cl->conn, "\n", 1);
    }
}

static void echo_accept(void *svc, unsigned index, int fd, const tk_addr *peer)
{
    tk_echo *e = svc;
    echo_loop *el = &e->loops[index];
    if (!peer) {
        int err = echo_udp_start(el, fd);
        if (err < 0) {
            tk_error("echo: cannot serve UDP: %s", strerror(-err));
            close(fd);
        }
        return;
    }
    (void)tk_sock_apply(fd, &e->cfg.sockopts);
    echo_client *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        close(fd);
        if (e->server)
            tk_server_release(e->server, index, peer);
        return;
    }
    const tk_conn_handler *h = e->cfg.framing == TK_ECHO_FRAMING_LENGTH ? &length_handler
                               : e->cfg.framing == TK_ECHO_FRAMING_JSON ? &json_handler
                                                                        : &line_handler;
    int err = tk_conn_new(el->loop, fd, h, &e->limits, cl, &cl->conn);
    if (err < 0) {
        tk_warn("echo: cannot take a client: %s", strerror(-err));
        free(cl);
        if (e->server)
            tk_server_release(e->server, index, peer);
        return;
    }
    tk_conn_set_peer(cl->conn, peer);
    cl->el = el;
    tk_line_init(&cl->dec, e->cfg.max_line);
    tk_conn_set_metrics(cl->conn, el->metrics);
    cl->next = el->clients;
    if (el->clients)
        el->clients->prev = cl;
    el->clients = cl;
    el->nclients++;
    tk_metrics_conn_open(el->metrics);
    if (e->server && tk_conn_start_tls(cl->conn, tk_server_tls(e->server), NULL) < 0)
        return; /* closed: on_close does the rest */
    write_banner(cl);
}

/* Tells one client the server is going away, after answering what it has
 * already sent. */
static void say_goodbye(echo_client *cl)
{
    tk_conn *c = cl->conn;
    tk_conn_drain_input(c);
    if (tk_conn_closing(c))
        return;
    switch (cl->el->e->cfg.framing) {
    case TK_ECHO_FRAMING_JSON: echo_json_notice(c, "shutdown", ECHO_SHUTDOWN_TEXT); break;
    case TK_ECHO_FRAMING_LENGTH:
        length_reply(c, "", (const unsigned char *)ECHO_SHUTDOWN_TEXT, strlen(ECHO_SHUTDOWN_TEXT));
        break;
    case TK_ECHO_FRAMING_LINE:
        (void)tk_conn_write(c, ECHO_SHUTDOWN_TEXT "\n", strlen(ECHO_SHUTDOWN_TEXT) + 1);
        break;
    }
    tk_conn_close_after_flush(c, TK_CLOSE_SHUTDOWN);
}

static void echo_shutdown(void *svc, unsigned index)
{
    tk_echo *e = svc;
    echo_loop *el = &e->loops[index];
    el->shutting_down = 1;
    echo_udp_stop(el);
    for (echo_client *cl = el->clients; cl; cl = cl->next)
        say_goodbye(cl);
    if (el->nclients == 0 && e->server)
        tk_server_loop_done(e->server, index);
}

static void echo_abort(void *svc, unsigned index)
{
    tk_echo *e = svc;
    echo_loop *el = &e->loops[index];
    el->shutting_down = 1;
    echo_udp_stop(el);
    for (echo_client *cl = el->clients; cl; cl = cl->next)
        tk_conn_close(cl->conn, TK_CLOSE_SHUTDOWN, 0);
}

static void echo_rejected(void *svc, unsigned index)
{
    tk_echo *e = svc;
    tk_metrics_conn_rejected(e->loops[index].metrics);
}

static const tk_service_ops echo_ops = {.accept = echo_accept,
                                        .shutdown = echo_shutdown,
                                        .abort = echo_abort,
                                        .rejected = echo_rejected};

/* "server busy" in the words of each framing. */
static void build_busy(tk_echo *e)
{
    static const char text[] = "ERROR: server busy";
    size_t n = sizeof(text) - 1;
    switch (e->cfg.framing) {
    case TK_ECHO_FRAMING_LENGTH:
        tk_len_header(e->busy, (uint32_t)n);
        memcpy(e->busy + TK_LEN_HEADER, text, n);
        e->busy_len = TK_LEN_HEADER + n;
        break;
    case TK_ECHO_FRAMING_JSON:
        e->busy_len = (size_t)snprintf((char *)e->busy, sizeof(e->busy),
                                       "{\"type\":\"error\",\"payload\":{\"status\":\"error\","
                                       "\"code\":\"busy\",\"message\":\"server busy\"}}\n");
        break;
    case TK_ECHO_FRAMING_LINE:
        memcpy(e->busy, text, n);
        e->busy[n] = '\n';
        e->busy_len = n + 1;
        break;
    }
}

const void *tk_echo_busy_message(const tk_echo *e, size_t *len)
{
    *len = e->busy_len;
    return e->busy;
}

const tk_service_ops *tk_echo_ops(void)
{
    return &echo_ops;
}

int tk_echo_new(const tk_echo_config *c, tk_workers *w, tk_echo **out)
{
    unsigned nloops = tk_workers_count(w);
    if (c->max_line == 0 || c->max_frame == 0 || c->max_frame > UINT32_MAX)
        return -EINVAL;
    tk_echo *e = calloc(1, sizeof(*e));
    if (!e)
        return -ENOMEM;
    e->cfg = *c;
    e->nloops = nloops;
    e->loops = calloc(nloops, sizeof(echo_loop));
    int err = e->loops ? tk_metrics_new(nloops, &e->metrics) : -ENOMEM;
    if (err < 0) {
        free(e->loops);
        free(e);
        return err;
    }
    build_busy(e);
    tk_conn_limits_init(&e->limits);
    /* Input kept between reads is at most one unfinished request. */
    e->limits.max_input =
        c->framing == TK_ECHO_FRAMING_LENGTH ? c->max_frame + TK_LEN_HEADER : c->max_line + 1;
    e->limits.high_water = c->out_high;
    e->limits.low_water = c->out_high / 4;
    /* The hard limit must leave room for the largest single reply. */
    size_t largest =
        c->framing == TK_ECHO_FRAMING_LENGTH ? c->max_frame + 64 : 4 * c->max_line + 1024;
    e->limits.max_output = c->out_max > c->out_high + largest ? c->out_max : c->out_high + largest;
    e->limits.idle_timeout_ms = c->idle_timeout_ms;
    e->limits.stall_timeout_ms = c->stall_timeout_ms;
    for (unsigned i = 0; i < nloops; i++) {
        e->loops[i].e = e;
        e->loops[i].index = i;
        e->loops[i].loop = tk_workers_loop(w, i);
        e->loops[i].udp_fd = -1;
        e->loops[i].metrics = tk_metrics_slot_of(e->metrics, i);
    }
    *out = e;
    return 0;
}

void tk_echo_set_server(tk_echo *e, tk_server *s)
{
    e->server = s;
}

tk_metrics *tk_echo_metrics(tk_echo *e)
{
    return e->metrics;
}

void tk_echo_free(tk_echo *e)
{
    if (!e)
        return;
    for (unsigned i = 0; i < e->nloops; i++)
        echo_udp_stop(&e->loops[i]);
    tk_metrics_free(e->metrics);
    free(e->loops);
    free(e);
}

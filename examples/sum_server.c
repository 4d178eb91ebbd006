/* A complete protocol server on libtcpkit in one file: each request line
 * holds integers and the reply is their sum. It shows what a service needs:
 * a codec (lines with a limit), a connection handler, the server runner with
 * its worker loops, and a graceful shutdown on SIGINT/SIGTERM.
 *
 *   cc sum_server.c $(pkg-config --cflags --libs --static tcpkit)
 *   ./a.out 127.0.0.1:9100 &
 *   printf '1 2 3\n40 2\n' | nc -N 127.0.0.1 9100      prints 6 and 42
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tcpkit/tcpkit.h>

#define LOOPS    2
#define MAX_LINE 200

typedef struct client client;

/* The service: shared by all loops; each loop touches only its own list. */
typedef struct {
    tk_workers *workers;
    tk_server *server;
    client *clients[LOOPS];
    int stopping[LOOPS];
} service;

struct client {
    client *prev, *next;
    service *svc;
    unsigned loop;
    tk_conn *conn;
    tk_line_decoder dec;
};

static void answer(tk_conn *c, const unsigned char *line, size_t n)
{
    char text[MAX_LINE + 1], out[32];
    long long sum = 0;
    memcpy(text, line, n);
    text[n] = '\0';
    for (char *p = text, *end; *p; p = end) {
        long long v = strtoll(p, &end, 10);
        if (end == p) { /* not a number: skip one character */
            end = p + 1;
            continue;
        }
        sum += v;
    }
    int m = snprintf(out, sizeof(out), "%lld\n", sum);
    tk_conn_write(c, out, (size_t)m);
}

/* Receives every unconsumed byte; returns how many it used. */
static size_t on_data(tk_conn *c, const unsigned char *data, size_t len)
{
    client *cl = tk_conn_data(c);
    size_t off = 0;
    while (off < len && !tk_conn_closing(c)) {
        const unsigned char *line;
        size_t n, used;
        tk_codec_status st = tk_line_next(&cl->dec, data + off, len - off, &line, &n, &used);
        off += used;
        if (st == TK_CODEC_NEED)
            break;
        if (st == TK_CODEC_TOO_LONG)
            tk_conn_write(c, "ERROR: line too long\n", 21);
        else
            answer(c, line, n);
    }
    return off;
}

/* Runs from the loop once the connection is gone. */
static void on_close(tk_conn *c, tk_close_reason why, int err)
{
    client *cl = tk_conn_data(c);
    service *s = cl->svc;
    (void)why;
    (void)err;
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        s->clients[cl->loop] = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    tk_server_release(s->server, cl->loop, tk_conn_peer(c));
    if (s->stopping[cl->loop] && !s->clients[cl->loop])
        tk_server_loop_done(s->server, cl->loop);
    free(cl);
}

static const tk_conn_handler handler = {.on_data = on_data, .on_close = on_close};

static void on_accept(void *arg, unsigned loop, int fd, const tk_addr *peer)
{
    service *s = arg;
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    lim.idle_timeout_ms = 60 * 1000;
    client *cl = calloc(1, sizeof(*cl));
    if (!cl ||
        tk_conn_new(tk_workers_loop(s->workers, loop), fd, &handler, &lim, cl, &cl->conn) < 0) {
        free(cl);
        tk_server_release(s->server, loop, peer);
        return;
    }
    tk_conn_set_peer(cl->conn, peer);
    cl->svc = s;
    cl->loop = loop;
    tk_line_init(&cl->dec, MAX_LINE);
    cl->next = s->clients[loop];
    if (cl->next)
        cl->next->prev = cl;
    s->clients[loop] = cl;
}

/* Graceful: say goodbye after the replies already queued, then close. */
static void on_shutdown(void *arg, unsigned loop)
{
    service *s = arg;
    s->stopping[loop] = 1;
    for (client *cl = s->clients[loop]; cl; cl = cl->next) {
        tk_conn_write(cl->conn, "bye\n", 4);
        tk_conn_close_after_flush(cl->conn, TK_CLOSE_SHUTDOWN);
    }
    if (!s->clients[loop])
        tk_server_loop_done(s->server, loop);
}

/* The shutdown deadline passed: close what is left now. */
static void on_abort(void *arg, unsigned loop)
{
    service *s = arg;
    for (client *cl = s->clients[loop]; cl; cl = cl->next)
        tk_conn_close(cl->conn, TK_CLOSE_SHUTDOWN, 0);
}

static void stop_loop(void *loop)
{
    tk_loop_stop(loop);
}

static void on_signal(tk_loop *main_loop, int signo, void *arg)
{
    (void)signo;
    tk_server_shutdown(arg, main_loop, 5000, stop_loop, main_loop);
}

int main(int argc, char **argv)
{
    static const tk_service_ops ops = {
        .accept = on_accept, .shutdown = on_shutdown, .abort = on_abort};
    static const int signals[] = {SIGINT, SIGTERM};
    static service svc;
    tk_server_config cfg = {.listen = {argc > 1 ? argv[1] : "127.0.0.1:9100"}, .nlisten = 1};
    tk_loop *main_loop;
    char err[256], addr[TK_ADDR_STRLEN];

    if (tk_workers_new(LOOPS, &svc.workers) < 0 || tk_loop_new(&main_loop) < 0)
        return 1;
    if (tk_server_open(svc.workers, &cfg, &ops, &svc, &svc.server, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* Signals are blocked before the worker threads start, so only the main
     * loop receives them. */
    if (tk_loop_watch_signals(main_loop, signals, 2, on_signal, svc.server) < 0)
        return 1;
    printf("listening on %s\n", tk_addr_format(tk_server_bound(svc.server, 0), addr, sizeof(addr)));
    fflush(stdout);
    if (tk_workers_start(svc.workers) < 0)
        return 1;
    tk_loop_run(main_loop);
    tk_workers_stop(svc.workers);
    tk_server_free(svc.server);
    tk_workers_free(svc.workers);
    tk_loop_free(main_loop);
    return 0;
}

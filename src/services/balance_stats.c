/* The balancer's live state, as a text table or JSON, and the small
 * listener that serves it: one request line in, the state out, close. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "balance_internal.h"
#include "tcpkit/conn.h"
#include "tcpkit/log.h"

/* A consistent-enough view of one backend (counters are read one by one). */
typedef struct {
    const bal_entry *e;
    int up;
    unsigned active, queued;
    uint64_t total, sent, received, failures, check_ago_ms;
    bal_check_result check;
} backend_view;

static void view_of(const bal_entry *e, uint64_t now_ms, backend_view *v)
{
    const bal_backend *b = e->b;
    v->e = e;
    v->up = atomic_load_explicit(&b->up, memory_order_relaxed);
    v->active = atomic_load_explicit(&b->active, memory_order_relaxed);
    v->total = atomic_load_explicit(&b->total, memory_order_relaxed);
    v->sent = atomic_load_explicit(&b->bytes_sent, memory_order_relaxed);
    v->received = atomic_load_explicit(&b->bytes_received, memory_order_relaxed);
    v->failures = atomic_load_explicit(&b->failures, memory_order_relaxed);
    v->check = (bal_check_result)atomic_load_explicit(&b->last_check, memory_order_relaxed);
    uint64_t at = atomic_load_explicit(&b->last_check_ms, memory_order_relaxed);
    v->check_ago_ms = v->check != BAL_CHECK_NONE && now_ms > at ? now_ms - at : 0;
}

static char *stats_json(tk_balance *bal, const bal_table *t, uint64_t now_ms)
{
    json_t *root = json_object();
    json_t *clients = json_object();
    json_t *list = json_array();
    if (!root || !clients || !list) {
        json_decref(root);
        json_decref(clients);
        json_decref(list);
        return NULL;
    }
    json_object_set_new(root, "algo", json_string(tk_balance_algo_name(t->set.algo)));
    json_object_set_new(root, "uptime_ms",
                        json_integer((json_int_t)((tk_clock_us() - bal->started_us) / 1000)));
    json_object_set_new(clients, "active",
                        json_integer((json_int_t)atomic_load(&bal->clients_active)));
    json_object_set_new(clients, "total",
                        json_integer((json_int_t)atomic_load(&bal->clients_total)));
    json_object_set_new(clients, "queued", json_integer((json_int_t)atomic_load(&bal->queued)));
    json_object_set_new(clients, "refused", json_integer((json_int_t)atomic_load(&bal->refused)));
    json_object_set_new(root, "clients", clients);
    if (t->tls) {
        json_t *tls = json_object();
        if (tls) {
            json_object_set_new(tls, "handshakes",
                                json_integer((json_int_t)atomic_load(&bal->tls_done)));
            json_object_set_new(tls, "failed",
                                json_integer((json_int_t)atomic_load(&bal->tls_failed)));
            json_object_set_new(root, "tls", tls);
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        backend_view v;
        view_of(&t->e[i], now_ms, &v);
        json_t *o = json_object();
        json_t *check = json_object();
        if (!o || !check) {
            json_decref(o);
            json_decref(check);
            continue;
        }
        char last[96];
        if (v.check == BAL_CHECK_OK || v.check == BAL_CHECK_NONE)
            snprintf(last, sizeof(last), "%s", bal_check_result_name(v.check));
        else
            snprintf(last, sizeof(last), "failed: %s", bal_check_result_name(v.check));
        json_object_set_new(check, "last", json_string(last));
        json_object_set_new(check, "ago_ms", json_integer((json_int_t)v.check_ago_ms));
        json_object_set_new(o, "addr", json_string(v.e->b->addr));
        json_object_set_new(o, "state", json_string(v.up ? "up" : "down"));
        json_object_set_new(o, "backup", json_boolean(v.e->backup));
        json_object_set_new(o, "weight", json_integer(v.e->weight));
        json_object_set_new(o, "maxconn", json_integer(v.e->maxconn));
        json_object_set_new(o, "active", json_integer(v.active));
        json_object_set_new(o, "total", json_integer((json_int_t)v.total));
        json_object_set_new(o, "bytes_sent", json_integer((json_int_t)v.sent));
        json_object_set_new(o, "bytes_received", json_integer((json_int_t)v.received));
        json_object_set_new(o, "failures", json_integer((json_int_t)v.failures));
        json_object_set_new(o, "check", check);
        json_array_append_new(list, o);
    }
    json_object_set_new(root, "backends", list);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s)
        return NULL;
    /* One line: the caller owns a malloc'd string ending in "\n". */
    size_t n = strlen(s);
    char *out = malloc(n + 2);
    if (out) {
        memcpy(out, s, n);
        out[n] = '\n';
        out[n + 1] = 0;
    }
    free(s);
    return out;
}

static char *stats_text(tk_balance *bal, const bal_table *t, uint64_t now_ms)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    fprintf(f, "algo %s  uptime %llus  clients active %llu total %llu queued %u refused %llu",
            tk_balance_algo_name(t->set.algo),
            (unsigned long long)((tk_clock_us() - bal->started_us) / 1000000),
            (unsigned long long)atomic_load(&bal->clients_active),
            (unsigned long long)atomic_load(&bal->clients_total), atomic_load(&bal->queued),
            (unsigned long long)atomic_load(&bal->refused));
    if (t->tls)
        fprintf(f, "  tls handshakes %llu failed %llu",
                (unsigned long long)atomic_load(&bal->tls_done),
                (unsigned long long)atomic_load(&bal->tls_failed));
    fputc('\n', f);
    fprintf(f, "%-24s %-5s %6s %7s %8s %10s %14s %14s %8s  %s\n", "backend", "state", "weight",
            "maxconn", "active", "total", "bytes_sent", "bytes_received", "failures", "last check");
    for (size_t i = 0; i < t->n; i++) {
        backend_view v;
        view_of(&t->e[i], now_ms, &v);
        char state[16];
        snprintf(state, sizeof(state), "%s%s", v.up ? "up" : "down", v.e->backup ? "*" : "");
        fprintf(f, "%-24s %-5s %6u %7u %8u %10llu %14llu %14llu %8llu  %s%s", v.e->b->addr, state,
                v.e->weight, v.e->maxconn, v.active, (unsigned long long)v.total,
                (unsigned long long)v.sent, (unsigned long long)v.received,
                (unsigned long long)v.failures,
                v.check == BAL_CHECK_OK || v.check == BAL_CHECK_NONE ? "" : "failed: ",
                bal_check_result_name(v.check));
        if (v.check != BAL_CHECK_NONE)
            fprintf(f, " (%llu ms ago)", (unsigned long long)v.check_ago_ms);
        fputc('\n', f);
    }
    fprintf(f, "(* backup)\n");
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

char *tk_balance_stats(tk_balance *bal, int json)
{
    pthread_mutex_lock(&bal->lock);
    bal_table *t = bal_table_ref(bal->published);
    pthread_mutex_unlock(&bal->lock);
    uint64_t now_ms = tk_clock_us() / 1000;
    char *s = json ? stats_json(bal, t, now_ms) : stats_text(bal, t, now_ms);
    bal_table_unref(t);
    return s;
}

/* ---- the stats listener ---- */

#define STATS_MAX_REQUEST 4096
#define STATS_TIMEOUT_MS  5000

/* A stats client, listed so an abort can close it (loop 0 only). */
typedef struct stats_client {
    tk_balance *bal;
    unsigned index;
    tk_conn *conn;
    struct stats_client *prev, *next;
} stats_client;

static void answer(tk_conn *c, const unsigned char *line, size_t n)
{
    stats_client *sc = tk_conn_data(c);
    int http = n >= 4 && memcmp(line, "GET ", 4) == 0;
    int json;
    if (http) {
        /* The path is the second word. */
        const unsigned char *p = line + 4, *end = memchr(p, ' ', n - 4);
        size_t plen = end ? (size_t)(end - p) : n - 4;
        json = memmem(p, plen, "json", 4) != NULL;
    } else {
        while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' '))
            n--;
        json = n == 4 && memcmp(line, "json", 4) == 0;
    }
    char *body = tk_balance_stats(sc->bal, json);
    if (!body) {
        tk_conn_close(c, TK_CLOSE_ERROR, -ENOMEM);
        return;
    }
    size_t blen = strlen(body);
    if (http) {
        char head[160];
        int hn = snprintf(head, sizeof(head),
                          "HTTP/1.0 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n",
                          json ? "application/json" : "text/plain; charset=utf-8", blen);
        (void)tk_conn_write(c, head, (size_t)hn);
    }
    (void)tk_conn_write(c, body, blen);
    free(body);
    tk_conn_close_after_flush(c, TK_CLOSE_LOCAL);
}

static size_t stats_data(tk_conn *c, const unsigned char *data, size_t len)
{
    if (tk_conn_closing(c))
        return len;
    const unsigned char *nl = memchr(data, '\n', len);
    if (nl) {
        answer(c, data, (size_t)(nl - data));
        return len;
    }
    if (len >= STATS_MAX_REQUEST)
        tk_conn_close(c, TK_CLOSE_LIMIT, 0);
    return 0;
}

static void stats_eof(tk_conn *c, const unsigned char *rest, size_t len)
{
    /* A request without its newline still gets its answer. */
    answer(c, rest, len);
}

static void stats_closed(tk_conn *c, tk_close_reason why, int err)
{
    (void)why;
    (void)err;
    stats_client *sc = tk_conn_data(c);
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        sc->bal->stats_clients = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    if (sc->bal->stats_server)
        tk_server_release(sc->bal->stats_server, sc->index, tk_conn_peer(c));
    free(sc);
}

static const tk_conn_handler stats_handler = {
    .on_data = stats_data,
    .on_eof = stats_eof,
    .on_close = stats_closed,
};

static void stats_accept(void *svc, unsigned index, int fd, const tk_addr *peer)
{
    tk_balance *bal = svc;
    stats_client *sc = malloc(sizeof(*sc));
    if (!sc) {
        close(fd);
        tk_server_release(bal->stats_server, index, peer);
        return;
    }
    sc->bal = bal;
    sc->index = index;
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    lim.max_input = STATS_MAX_REQUEST;
    lim.idle_timeout_ms = STATS_TIMEOUT_MS;
    lim.max_output = 16 * 1024 * 1024;
    if (tk_conn_new(tk_workers_loop(bal->w, index), fd, &stats_handler, &lim, sc, &sc->conn) < 0) {
        free(sc);
        tk_server_release(bal->stats_server, index, peer);
        return;
    }
    tk_conn_set_peer(sc->conn, peer);
    sc->prev = NULL;
    sc->next = bal->stats_clients;
    if (sc->next)
        sc->next->prev = sc;
    bal->stats_clients = sc;
}

static void stats_shutdown(void *svc, unsigned index)
{
    /* Stats answers are short: nothing to wait for. */
    tk_balance *bal = svc;
    tk_server_loop_done(bal->stats_server, index);
}

static void stats_abort(void *svc, unsigned index)
{
    (void)index;
    tk_balance *bal = svc;
    /* Answered clients may still be lingering for their peer's FIN: end
     * those too. */
    for (stats_client *sc = bal->stats_clients; sc; sc = sc->next)
        tk_conn_close(sc->conn, TK_CLOSE_SHUTDOWN, 0);
}

const tk_service_ops *tk_balance_stats_ops(void)
{
    static const tk_service_ops ops = {
        .accept = stats_accept,
        .shutdown = stats_shutdown,
        .abort = stats_abort,
    };
    return &ops;
}

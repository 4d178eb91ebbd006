/* The load balancer's clients: from accept through the TLS handshake (with
 * a certificate), choosing a backend, waiting for a slot, connecting (with
 * retries on other backends), the first exchange (kept for a replay while
 * the backend has not answered), to the relay and the one log line that
 * ends each. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "balance_internal.h"
#include "tcpkit/log.h"

#define MAX_TRIED 32

/* A client whose TLS handshake failed gets this long to read our FIN and
 * close, its bytes read and dropped meanwhile. */
#define TLS_LINGER_MS 2000

typedef enum {
    S_HANDSHAKE, /* TLS handshake with the client */
    S_TLS_CLOSE, /* the handshake failed: waiting for the client to close */
    S_ROUTING,
    S_QUEUED,
    S_DIALING,
    S_FIRST,
    S_RELAY,
} sess_state;

struct bal_session {
    bal_loop *lp;
    bal_session *prev, *next;   /* the loop's clients */
    bal_session *qprev, *qnext; /* the loop's queue */
    sess_state state;
    int queued;
    tk_io cio, bio;   /* client and backend, before the relay takes them */
    tk_timer timer;   /* handshake, queue or first-byte deadline */
    tk_defer release; /* frees the session after the loop's batch */
    tk_dial *dial;
    tk_relay *relay;
    tk_addr peer;
    tk_addr local;        /* the address the client reached (for PROXY) */
    bal_backend *backend; /* holds a slot and a reference while set */
    int proxy;
    bal_backend *tried[MAX_TRIED]; /* references */
    size_t ntried;
    unsigned attempts;
    uint64_t start_ms, deadline_ms;
    unsigned char hdr[TK_PROXY_V1_MAX + 1]; /* PROXY header (v1 is the longer) */
    size_t hdr_len, hdr_sent;
    unsigned char *rbuf; /* the client's first bytes, kept for a replay */
    size_t rcap, rlen, rsent;
    uint32_t first_byte_ms; /* the settings this client's first exchange started with */
    int client_eof, fin_sent, timer_armed;
    bal_check_result last_failure;
    uint64_t up, down; /* client bytes relayed each way */
    size_t relay_head; /* client bytes handed to the relay as its head */
    tk_tls *tls;       /* the client's TLS session until the relay takes it */
    int tls_failed;    /* the handshake failed: tk_tls_error(tls) says why */
    const char *why;   /* TLS failure text for the close line, if not that */
};

static void session_route(bal_session *s);
static void start_relay(bal_session *s);

/* ---- ending ---- */

static void log_close(bal_session *s, const char *reason)
{
    if (!tk_log_enabled(TK_LOG_INFO))
        return;
    char client[TK_ADDR_STRLEN];
    tk_addr_format(&s->peer, client, sizeof(client));
    const char *backend = s->ntried ? s->tried[s->ntried - 1]->addr : "-";
    uint64_t ms = tk_loop_now(s->lp->loop) - s->start_ms;
    const char *why = s->why ? s->why : s->tls_failed ? tk_tls_error(s->tls) : NULL;
    tk_info("close client=%s backend=%s reason=%s ms=%llu up=%llu down=%llu%s%s%s", client, backend,
            reason, (unsigned long long)ms, (unsigned long long)s->up, (unsigned long long)s->down,
            why ? " tls=\"" : "", why ? why : "", why ? "\"" : "");
}

static void dequeue(bal_session *s)
{
    bal_loop *lp = s->lp;
    if (!s->queued)
        return;
    if (s->qprev)
        s->qprev->qnext = s->qnext;
    else
        lp->queue_head = s->qnext;
    if (s->qnext)
        s->qnext->qprev = s->qprev;
    else
        lp->queue_tail = s->qprev;
    s->qprev = s->qnext = NULL;
    s->queued = 0;
    atomic_fetch_sub_explicit(&lp->nqueued, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&lp->bal->queued, 1, memory_order_relaxed);
}

/* Gives back the slot and reference of the backend being tried, if any. */
static void drop_backend(bal_session *s)
{
    if (!s->backend)
        return;
    bal_backend *b = s->backend;
    s->backend = NULL;
    bal_release(s->lp->bal, b);
    bal_backend_unref(b);
}

/* Stops everything of the attempt in progress: dial, watchers, timer and
 * the backend socket. */
static void stop_attempt(bal_session *s)
{
    tk_loop *loop = s->lp->loop;
    if (s->dial) {
        tk_dial_cancel(s->dial);
        s->dial = NULL;
    }
    tk_timer_stop(loop, &s->timer);
    s->timer_armed = 0;
    tk_io_stop(loop, &s->bio);
    if (s->bio.fd >= 0) {
        close(s->bio.fd);
        s->bio.fd = -1;
    }
}

static void session_end(bal_session *s, const char *reason)
{
    bal_loop *lp = s->lp;
    tk_balance *bal = lp->bal;
    if (s->relay) { /* cut short (drain): count what it moved */
        uint64_t a2b = tk_relay_bytes_a2b(s->relay);
        s->up += a2b > s->relay_head ? a2b - s->relay_head : 0;
        s->down += tk_relay_bytes_b2a(s->relay);
    }
    log_close(s, reason);
    if (s->relay) {
        tk_relay_close(s->relay);
        s->relay = NULL;
        s->cio.fd = -1;
    }
    stop_attempt(s);
    dequeue(s);
    tk_io_stop(lp->loop, &s->cio);
    tk_tls_free(s->tls);
    s->tls = NULL;
    if (s->cio.fd >= 0)
        close(s->cio.fd);
    drop_backend(s);
    for (size_t i = 0; i < s->ntried; i++)
        bal_backend_unref(s->tried[i]);
    free(s->rbuf);
    if (s->prev)
        s->prev->next = s->next;
    else
        lp->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    lp->nsessions--;
    atomic_fetch_sub_explicit(&bal->clients_active, 1, memory_order_relaxed);
    /* The loop may still hold events of this batch for its watchers. */
    tk_defer_queue(lp->loop, &s->release);
    if (bal->server)
        tk_server_release(bal->server, lp->index, &s->peer);
    if (lp->draining && lp->nsessions == 0 && bal->server)
        tk_server_loop_done(bal->server, lp->index);
}

static void on_release(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    free((char *)d - offsetof(bal_session, release));
}

/* ---- the first exchange ---- */

/* Sends what the current backend has not had yet: the PROXY header, then
 * the client's kept bytes, then a FIN if the client sent one. Returns 0,
 * or a negative errno when the backend failed. */
static int first_send(bal_session *s)
{
    while (s->hdr_sent < s->hdr_len || s->rsent < s->rlen) {
        struct iovec iov[2];
        int n = 0;
        if (s->hdr_sent < s->hdr_len)
            iov[n++] = (struct iovec){s->hdr + s->hdr_sent, s->hdr_len - s->hdr_sent};
        if (s->rsent < s->rlen)
            iov[n++] = (struct iovec){s->rbuf + s->rsent, s->rlen - s->rsent};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(s->bio.fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            return -errno;
        }
        size_t k = (size_t)w;
        size_t h = s->hdr_len - s->hdr_sent < k ? s->hdr_len - s->hdr_sent : k;
        s->hdr_sent += h;
        s->rsent += k - h;
        /* Per backend: the client bytes it was sent (a replay counts again
         * for the next backend; the PROXY header never). */
        atomic_fetch_add_explicit(&s->backend->bytes_sent, k - h, memory_order_relaxed);
    }
    int pending = s->hdr_sent < s->hdr_len || s->rsent < s->rlen;
    if (!pending && s->client_eof && !s->fin_sent) {
        s->fin_sent = 1;
        if (shutdown(s->bio.fd, SHUT_WR) < 0 && errno != ENOTCONN)
            return -errno;
    }
    /* The backend owes an answer from the moment it has client bytes. */
    if (s->rsent > 0 && !s->timer_armed) {
        s->timer_armed = 1;
        (void)tk_timer_start(s->lp->loop, &s->timer, s->first_byte_ms);
    }
    unsigned ev = TK_READ | (pending ? TK_WRITE : 0);
    return tk_io_set(s->lp->loop, &s->bio, ev);
}

/* The current attempt failed before the backend answered: note it against
 * the backend and try another one, within the retries and the budget. */
static void attempt_failed(bal_session *s, bal_check_result why, int err)
{
    bal_backend *b = s->backend;
    if (tk_log_enabled(TK_LOG_WARN)) {
        char client[TK_ADDR_STRLEN];
        tk_addr_format(&s->peer, client, sizeof(client));
        tk_warn("backend %s failed: %s%s%s (client %s)", b->addr, bal_check_result_name(why),
                err ? ": " : "", err ? strerror(-err) : "", client);
    }
    atomic_fetch_add_explicit(&b->failures, 1, memory_order_relaxed);
    bal_backend_failed(s->lp, b, why);
    stop_attempt(s);
    drop_backend(s);
    s->last_failure = why;
    s->hdr_sent = s->rsent = 0;
    s->fin_sent = 0;
    session_route(s);
}

static void on_first_timer(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    bal_session *s = (bal_session *)((char *)t - offsetof(bal_session, timer));
    if (s->state == S_HANDSHAKE) {
        atomic_fetch_add_explicit(&s->lp->bal->tls_failed, 1, memory_order_relaxed);
        s->why = "handshake timed out";
        session_end(s, "tls-handshake");
        return;
    }
    if (s->state == S_TLS_CLOSE) {
        session_end(s, "tls-handshake");
        return;
    }
    if (s->state == S_QUEUED) {
        session_end(s, "queue-timeout");
        return;
    }
    s->timer_armed = 0;
    attempt_failed(s, BAL_CHECK_FIRST_BYTE, 0);
}

static void on_backend_io(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    bal_session *s = (bal_session *)((char *)io - offsetof(bal_session, bio));
    if (events & (TK_READ | TK_HUP)) {
        /* Look without taking: bytes or a FIN are the answer and go through
         * the relay; a reset before any answer is a failed backend. */
        unsigned char c;
        ssize_t n = recv(io->fd, &c, 1, MSG_PEEK);
        if (n >= 0) {
            start_relay(s);
            return;
        }
        if (errno != EAGAIN && errno != EINTR) {
            attempt_failed(s, BAL_CHECK_RESET, -errno);
            return;
        }
    }
    if (events & TK_WRITE) {
        int err = first_send(s);
        if (err < 0)
            attempt_failed(s, BAL_CHECK_RESET, err);
    }
}

/* Reads the client, through TLS when it speaks it: bytes, 0 at its end,
 * -EAGAIN, or another negative errno. */
static ssize_t client_read(bal_session *s, void *buf, size_t n)
{
    if (s->tls)
        return tk_tls_read(s->tls, buf, n);
    ssize_t r = recv(s->cio.fd, buf, n, 0);
    return r >= 0 ? r : errno == EINTR ? -EAGAIN : -errno;
}

/* The first exchange: reads what the client sends into the replay copy
 * and passes it on. A TLS session may hold decrypted bytes no event will
 * announce, so they are read while there is room. */
static void client_input(bal_session *s)
{
    tk_loop *loop = s->lp->loop;
    size_t cap = s->rcap;
    if (!s->rbuf && !(s->rbuf = malloc(cap))) {
        session_end(s, "error");
        return;
    }
    ssize_t n;
    do {
        n = client_read(s, s->rbuf + s->rlen, cap - s->rlen);
        if (n > 0) {
            s->rlen += (size_t)n;
            s->up += (size_t)n;
        }
    } while (n > 0 && s->rlen < cap && s->tls && tk_tls_pending(s->tls));
    if (n == -EAGAIN) {
        /* A TLS read may wait for the socket to be writable. */
        unsigned ev = s->tls && (tk_tls_want(s->tls) & TK_TLS_WANT_WRITE) ? TK_WRITE : TK_READ;
        if (tk_io_set(loop, &s->cio, ev) < 0) {
            session_end(s, "error");
            return;
        }
    } else if (n < 0) {
        if (s->tls && n == -EPROTO) {
            s->why = tk_tls_error(s->tls);
            session_end(s, "tls");
        } else {
            session_end(s, "client-reset");
        }
        return;
    } else if (n == 0) {
        s->client_eof = 1;
        tk_io_stop(loop, &s->cio);
    } else if (s->tls) {
        (void)tk_io_set(loop, &s->cio, TK_READ);
    }
    if (s->rlen == cap) {
        /* More than a replay can hold: no retry from here on. */
        start_relay(s);
        return;
    }
    int err = first_send(s);
    if (err < 0)
        attempt_failed(s, BAL_CHECK_RESET, err);
}

static void tls_step(bal_session *s);

/* Drops what a refused client still sends, until it closes. */
static void tls_drain(bal_session *s)
{
    unsigned char *buf = tk_loop_scratch(s->lp->loop);
    size_t cap = tk_loop_scratch_size(s->lp->loop);
    for (int i = 0; i < 4; i++) {
        ssize_t n = recv(s->cio.fd, buf, cap, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            session_end(s, "tls-handshake");
            return;
        }
    }
}

static void on_client_io(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)events;
    bal_session *s = (bal_session *)((char *)io - offsetof(bal_session, cio));
    if (s->state == S_HANDSHAKE) {
        tls_step(s);
        return;
    }
    if (s->state == S_TLS_CLOSE) {
        tls_drain(s);
        return;
    }
    if (s->state == S_QUEUED) {
        /* Waiting: only to notice a client that leaves. */
        unsigned char c;
        ssize_t n = recv(io->fd, &c, 1, MSG_PEEK);
        if (n == 0)
            session_end(s, "client");
        else if (n < 0 && errno != EAGAIN && errno != EINTR)
            session_end(s, "client-reset");
        else if (n > 0)
            tk_io_stop(loop, io); /* it spoke; its bytes wait in the kernel */
        return;
    }
    client_input(s);
}

/* ---- relaying ---- */

static const char *relay_reason(tk_relay *r, tk_relay_end end, int err)
{
    if (end == TK_RELAY_ERROR_A && err == -EPROTO && *tk_relay_tls_error(r))
        return "tls";
    switch (end) {
    case TK_RELAY_DONE_A: return "client";
    case TK_RELAY_DONE_B: return "backend";
    case TK_RELAY_ERROR_A: return err == -ECONNRESET || err == -EPIPE ? "client-reset" : "error";
    case TK_RELAY_ERROR_B: return err == -ECONNRESET || err == -EPIPE ? "backend-reset" : "error";
    case TK_RELAY_IDLE_A: return "client-timeout";
    case TK_RELAY_IDLE_B: return "backend-timeout";
    }
    return "error";
}

static void on_relay_end(tk_relay *r, tk_relay_end end, int err, void *arg)
{
    bal_session *s = arg;
    /* The head's client bytes were counted when they were read. */
    uint64_t a2b = tk_relay_bytes_a2b(r);
    s->up += a2b > s->relay_head ? a2b - s->relay_head : 0;
    s->down += tk_relay_bytes_b2a(r);
    s->relay = NULL;
    s->cio.fd = -1;
    s->bio.fd = -1;
    const char *reason = relay_reason(r, end, err);
    if (strcmp(reason, "tls") == 0)
        s->why = tk_relay_tls_error(r); /* valid until the log line below */
    session_end(s, reason);
}

static void start_relay(bal_session *s)
{
    tk_loop *loop = s->lp->loop;
    const bal_settings *set = &s->lp->table->set;
    tk_timer_stop(loop, &s->timer);
    s->timer_armed = 0;
    tk_io_stop(loop, &s->cio);
    tk_io_stop(loop, &s->bio);
    /* What the backend has not had yet goes first: the rest of the PROXY
     * header (not counted as client bytes), then the client's kept bytes. */
    tk_relay_opts o = {
        .pipe_size = set->pipe_size,
        .idle_ms = {set->client_timeout_ms, set->backend_timeout_ms},
        .a_eof = s->client_eof,
        .preamble = s->hdr + s->hdr_sent,
        .preamble_len = s->hdr_len - s->hdr_sent,
        .head = s->rbuf ? s->rbuf + s->rsent : NULL,
        .head_len = s->rlen - s->rsent,
        .count_a2b = &s->backend->bytes_sent,
        .count_b2a = &s->backend->bytes_received,
        .tls_a = s->tls,
    };
    s->tls = NULL; /* the relay's now, freed with it */
    s->relay_head = o.head_len;
    int cfd = s->cio.fd, bfd = s->bio.fd;
    s->cio.fd = s->bio.fd = -1;
    s->state = S_RELAY;
    int err = tk_relay_start(loop, cfd, bfd, &o, on_relay_end, s, &s->relay);
    free(s->rbuf);
    s->rbuf = NULL;
    s->rlen = s->rsent = 0;
    if (err < 0) {
        tk_error("cannot relay: %s", strerror(-err));
        session_end(s, "error");
    }
}

/* ---- connecting ---- */

static void build_proxy_header(bal_session *s)
{
    s->hdr_len = s->hdr_sent = 0;
    if (!s->proxy)
        return;
    tk_proxy_hdr h = {.version = s->proxy};
    h.src.ss = s->peer.ss;
    h.src.len = s->peer.len;
    h.dst.ss = s->local.ss;
    h.dst.len = s->local.len;
    int n = tk_proxy_encode(&h, s->hdr, sizeof(s->hdr));
    if (n < 0) { /* not an IP client (cannot happen for TCP): say so */
        h.local = 1;
        n = tk_proxy_encode(&h, s->hdr, sizeof(s->hdr));
    }
    s->hdr_len = n > 0 ? (size_t)n : 0;
}

static void on_dialed(tk_loop *loop, int fd, int err, void *arg)
{
    bal_session *s = arg;
    const bal_settings *set = &s->lp->table->set;
    s->dial = NULL;
    if (fd < 0) {
        attempt_failed(s,
                       err == -ETIMEDOUT      ? BAL_CHECK_TIMEOUT
                       : err == -ECONNREFUSED ? BAL_CHECK_REFUSED
                                              : BAL_CHECK_ERROR,
                       err == -ETIMEDOUT || err == -ECONNREFUSED ? 0 : err);
        return;
    }
    (void)tk_sock_apply(fd, &set->sock);
    atomic_fetch_add_explicit(&s->backend->total, 1, memory_order_relaxed);
    tk_io_init(&s->bio, fd, on_backend_io);
    build_proxy_header(s);
    if (!s->rcap && (set->first_byte_timeout_ms == 0 || set->replay_max == 0)) {
        start_relay(s);
        return;
    }
    /* Keep the first exchange in hand until the backend answers. A retry
     * keeps the sizes it started with, whatever a reload changed since. */
    if (!s->rcap) {
        s->rcap = set->replay_max;
        s->first_byte_ms = set->first_byte_timeout_ms;
    }
    s->state = S_FIRST;
    if (!s->client_eof && s->rlen < s->rcap) {
        int rc = tk_io_set(loop, &s->cio, TK_READ);
        if (rc < 0) {
            session_end(s, "error");
            return;
        }
    }
    err = first_send(s);
    if (err < 0) {
        attempt_failed(s, BAL_CHECK_RESET, err);
        return;
    }
    /* Decrypted bytes already in the session raise no event. */
    if (s->tls && !s->client_eof && s->rlen < s->rcap && tk_tls_pending(s->tls))
        client_input(s);
}

static void session_dial(bal_session *s, const bal_entry *e)
{
    const bal_settings *set = &s->lp->table->set;
    uint64_t now = tk_loop_now(s->lp->loop);
    s->backend = bal_backend_ref(e->b); /* bal_pick reserved the slot */
    s->proxy = e->proxy;
    if (s->ntried < MAX_TRIED)
        s->tried[s->ntried++] = bal_backend_ref(e->b);
    s->attempts++;
    s->state = S_DIALING;
    uint32_t timeout = set->connect_timeout_ms;
    if (s->deadline_ms > now && s->deadline_ms - now < timeout)
        timeout = (uint32_t)(s->deadline_ms - now);
    int err =
        tk_dial_start(s->lp->loop, e->b->addrs, e->b->naddrs, timeout, on_dialed, s, &s->dial);
    if (err < 0) {
        s->dial = NULL;
        attempt_failed(s, BAL_CHECK_ERROR, err);
    }
}

static void enqueue(bal_session *s)
{
    bal_loop *lp = s->lp;
    tk_balance *bal = lp->bal;
    const bal_settings *set = &lp->table->set;
    unsigned q = atomic_fetch_add_explicit(&bal->queued, 1, memory_order_relaxed);
    if (q >= set->queue_max) {
        atomic_fetch_sub_explicit(&bal->queued, 1, memory_order_relaxed);
        session_end(s, "queue-full");
        return;
    }
    atomic_fetch_add_explicit(&lp->nqueued, 1, memory_order_relaxed);
    s->queued = 1;
    s->state = S_QUEUED;
    s->qprev = lp->queue_tail;
    s->qnext = NULL;
    if (lp->queue_tail)
        lp->queue_tail->qnext = s;
    else
        lp->queue_head = s;
    lp->queue_tail = s;
    (void)tk_timer_start(lp->loop, &s->timer, set->queue_timeout_ms);
    (void)tk_io_set(lp->loop, &s->cio, TK_READ);
}

/* Finds the client a backend, queues it, or ends it. */
static void session_route(bal_session *s)
{
    bal_loop *lp = s->lp;
    const bal_settings *set = &lp->table->set;
    uint64_t now = tk_loop_now(lp->loop);
    if (s->attempts > 0) {
        if (s->attempts > set->retries || now >= s->deadline_ms) {
            session_end(s, s->last_failure == BAL_CHECK_FIRST_BYTE ? "first-byte-timeout"
                                                                   : "connect-failed");
            return;
        }
    }
    const bal_entry *e;
    s->state = S_ROUTING;
    switch (bal_pick(lp, &s->peer, s->tried, s->ntried, &e)) {
    case BAL_PICKED: session_dial(s, e); return;
    case BAL_FULL:
        if (s->attempts > 0) /* a retry does not queue again */
            session_end(s, "connect-failed");
        else
            enqueue(s);
        return;
    case BAL_NONE:
        session_end(s, s->attempts == 0                          ? "no-backend"
                       : s->last_failure == BAL_CHECK_FIRST_BYTE ? "first-byte-timeout"
                                                                 : "connect-failed");
        return;
    }
}

/* ---- the queue ---- */

static void serve_queue(bal_loop *lp)
{
    while (lp->queue_head) {
        bal_session *s = lp->queue_head;
        const bal_entry *e;
        bal_pick_status st = bal_pick(lp, &s->peer, NULL, 0, &e);
        if (st == BAL_FULL)
            return;
        dequeue(s);
        tk_timer_stop(lp->loop, &s->timer);
        tk_io_stop(lp->loop, &s->cio);
        if (st == BAL_NONE) {
            session_end(s, "no-backend");
            continue;
        }
        /* The budget starts when the wait ends. */
        s->deadline_ms = tk_loop_now(lp->loop) + lp->table->set.connect_budget_ms;
        session_dial(s, e);
    }
}

void bal_kick_post(tk_loop *loop, void *arg)
{
    (void)loop;
    bal_loop *lp = arg;
    atomic_store_explicit(&lp->kick_posted, 0, memory_order_release);
    serve_queue(lp);
}

static void on_kick(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    serve_queue((bal_loop *)((char *)d - offsetof(bal_loop, kick)));
}

/* ---- TLS towards the client ---- */

/* The handshake failed: our FIN goes out at once and the client's bytes are
 * read and dropped until it closes (or TLS_LINGER_MS pass), so that a
 * plain-text client sees an orderly end rather than a reset for the bytes
 * it sent. */
static void tls_refuse(bal_session *s)
{
    tk_loop *loop = s->lp->loop;
    atomic_fetch_add_explicit(&s->lp->bal->tls_failed, 1, memory_order_relaxed);
    s->tls_failed = 1;
    s->state = S_TLS_CLOSE;
    if (shutdown(s->cio.fd, SHUT_WR) < 0 || tk_io_set(loop, &s->cio, TK_READ) < 0) {
        session_end(s, "tls-handshake");
        return;
    }
    (void)tk_timer_start(loop, &s->timer, TLS_LINGER_MS);
    tls_drain(s);
}

/* Advances the handshake; once done, the client is routed to a backend
 * (so a flood of handshakes never reaches the backends). */
static void tls_step(bal_session *s)
{
    tk_loop *loop = s->lp->loop;
    int r = tk_tls_handshake(s->tls);
    if (r == -EAGAIN) {
        unsigned ev = (tk_tls_want(s->tls) & TK_TLS_WANT_WRITE) ? TK_WRITE : TK_READ;
        if (tk_io_set(loop, &s->cio, ev) < 0)
            session_end(s, "error");
        return;
    }
    if (r < 0) {
        tls_refuse(s);
        return;
    }
    atomic_fetch_add_explicit(&s->lp->bal->tls_done, 1, memory_order_relaxed);
    tk_timer_stop(loop, &s->timer);
    tk_io_stop(loop, &s->cio);
    /* The connect budget starts now. */
    s->deadline_ms = tk_loop_now(loop) + s->lp->table->set.connect_budget_ms;
    session_route(s);
}

static void tls_start(bal_session *s)
{
    tk_tls_ctx *ctx = s->lp->table->tls;
    if (tk_tls_new(ctx, s->cio.fd, NULL, &s->tls) < 0) {
        s->tls = NULL;
        session_end(s, "error");
        return;
    }
    s->state = S_HANDSHAKE;
    (void)tk_timer_start(s->lp->loop, &s->timer, tk_tls_ctx_handshake_timeout(ctx));
    tls_step(s);
}

/* ---- the service ---- */

static void bal_accept(void *svc, unsigned index, int fd, const tk_addr *peer)
{
    tk_balance *bal = svc;
    bal_loop *lp = &bal->loops[index];
    bal_session *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        tk_server_release(bal->server, index, peer);
        return;
    }
    s->lp = lp;
    s->peer = *peer;
    if (tk_addr_of_socket(fd, 0, &s->local) < 0)
        s->local = *peer;
    tk_io_init(&s->cio, fd, on_client_io);
    tk_io_init(&s->bio, -1, on_backend_io);
    tk_timer_init(&s->timer, on_first_timer);
    tk_defer_init(&s->release, on_release);
    (void)tk_sock_apply(fd, &lp->table->set.sock);
    s->start_ms = tk_loop_now(lp->loop);
    s->deadline_ms = s->start_ms + lp->table->set.connect_budget_ms;
    s->next = lp->sessions;
    if (lp->sessions)
        lp->sessions->prev = s;
    lp->sessions = s;
    lp->nsessions++;
    atomic_fetch_add_explicit(&bal->clients_active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&bal->clients_total, 1, memory_order_relaxed);
    if (lp->table->tls)
        tls_start(s);
    else
        session_route(s);
}

static void bal_shutdown(void *svc, unsigned index)
{
    tk_balance *bal = svc;
    bal_loop *lp = &bal->loops[index];
    lp->draining = 1;
    if (lp->nsessions == 0)
        tk_server_loop_done(bal->server, index);
}

static void bal_abort(void *svc, unsigned index)
{
    tk_balance *bal = svc;
    bal_loop *lp = &bal->loops[index];
    lp->draining = 1;
    while (lp->sessions)
        session_end(lp->sessions, "drain");
}

static void bal_rejected(void *svc, unsigned index)
{
    (void)index;
    tk_balance *bal = svc;
    atomic_fetch_add_explicit(&bal->refused, 1, memory_order_relaxed);
}

const tk_service_ops *tk_balance_ops(void)
{
    static const tk_service_ops ops = {
        .accept = bal_accept,
        .shutdown = bal_shutdown,
        .abort = bal_abort,
        .rejected = bal_rejected,
    };
    return &ops;
}

void tk_balance_set_server(tk_balance *b, tk_server *s)
{
    b->server = s;
}

void tk_balance_set_stats_server(tk_balance *b, tk_server *s)
{
    b->stats_server = s;
}

int tk_balance_new(tk_workers *w, const tk_balance_config *c, tk_balance **out, char *err,
                   size_t errcap)
{
    int rc = tk_balance_config_check(c, err, errcap);
    if (rc < 0)
        return rc;
    tk_balance *bal = calloc(1, sizeof(*bal));
    if (!bal)
        goto nomem;
    bal->w = w;
    bal->nloops = tk_workers_count(w);
    bal->cfg = *c;
    bal->started_us = tk_clock_us();
    pthread_mutex_init(&bal->lock, NULL);
    bal->loops = calloc(bal->nloops, sizeof(*bal->loops));
    if (!bal->loops)
        goto nomem;
    rc = bal_table_build(bal, c, NULL, &bal->table, err, errcap);
    if (rc < 0) {
        tk_balance_free(bal);
        return rc;
    }
    bal->published = bal_table_ref(bal->table);
    for (unsigned i = 0; i < bal->nloops; i++) {
        bal_loop *lp = &bal->loops[i];
        lp->bal = bal;
        lp->loop = tk_workers_loop(w, i);
        lp->index = i;
        lp->table = bal_table_ref(bal->table);
        lp->rng = (bal->started_us ^ ((uint64_t)i + 1) * 0x9e3779b97f4a7c15ULL) | 1;
        tk_defer_init(&lp->kick, on_kick);
    }
    /* The loops are not running yet, so loop 0's checks can be set up here. */
    bal_health_adopt(&bal->loops[0], NULL, bal->table);
    *out = bal;
    return 0;
nomem:
    snprintf(err, errcap, "out of memory");
    tk_balance_free(bal);
    return -ENOMEM;
}

/* One reload on its way to the loops: the last loop to switch publishes
 * the table to stats readers and logs the change, so once the line is out
 * every new client is routed by the new table. */
typedef struct {
    tk_balance *bal;
    bal_table *t;
    _Atomic unsigned pending;
    size_t added, removed, kept;
} reload_job;

typedef struct {
    bal_loop *lp;
    reload_job *job;
} table_swap;

static void reload_step_done(reload_job *job)
{
    if (atomic_fetch_sub_explicit(&job->pending, 1, memory_order_acq_rel) != 1)
        return;
    tk_balance *b = job->bal;
    pthread_mutex_lock(&b->lock);
    bal_table *old = b->published;
    b->published = job->t; /* the job's reference moves here */
    pthread_mutex_unlock(&b->lock);
    bal_table_unref(old);
    tk_info("reload: %zu backends (%zu added, %zu removed, %zu kept)%s", job->t->n, job->added,
            job->removed, job->kept, job->t->tls ? "; TLS certificate and key read again" : "");
    free(job);
}

static void on_table_swap(tk_loop *loop, void *arg)
{
    (void)loop;
    table_swap *sw = arg;
    bal_loop *lp = sw->lp;
    bal_table *old = lp->table;
    lp->table = bal_table_ref(sw->job->t);
    if (lp->index == 0)
        bal_health_adopt(lp, old, lp->table);
    bal_table_unref(old);
    reload_step_done(sw->job);
    free(sw);
    /* New backends or higher limits may let waiting clients through. */
    tk_defer_queue(lp->loop, &lp->kick);
}

static int same_strings(const tk_balance_config *a, const tk_balance_config *b)
{
    if (a->nlisten != b->nlisten || strcmp(a->stats, b->stats) != 0)
        return 0;
    for (size_t i = 0; i < a->nlisten; i++)
        if (strcmp(a->listen[i], b->listen[i]) != 0)
            return 0;
    return 1;
}

int tk_balance_reload(tk_balance *b, const tk_balance_config *c, char *err, size_t errcap)
{
    int rc = tk_balance_config_check(c, err, errcap);
    if (rc < 0)
        return rc;
    if (!b->cfg.tls_cert[0] != !c->tls_cert[0]) {
        snprintf(err, errcap, "turning TLS %s needs a restart", c->tls_cert[0] ? "on" : "off");
        return -EINVAL;
    }
    reload_job *job = calloc(1, sizeof(*job));
    if (!job) {
        snprintf(err, errcap, "out of memory");
        return -ENOMEM;
    }
    rc = bal_table_build(b, c, b->table, &job->t, err, errcap);
    if (rc < 0) {
        free(job);
        return rc;
    }
    if (!same_strings(&b->cfg, c) || b->cfg.threads != c->threads ||
        b->cfg.max_clients != c->max_clients)
        tk_warn("reload: listen, stats, threads and max-clients changes need a restart");
    bal_table *t = job->t;
    for (size_t i = 0; i < t->n; i++)
        for (size_t j = 0; j < b->table->n; j++)
            if (t->e[i].b == b->table->e[j].b)
                job->kept++;
    job->added = t->n - job->kept;
    job->removed = b->table->n - job->kept;
    job->bal = b;
    /* One step per loop, plus this thread's, so the job cannot finish
     * before every post is out. */
    atomic_init(&job->pending, b->nloops + 1);
    bal_table *old = b->table;
    b->table = bal_table_ref(t);
    b->cfg = *c;
    bal_table_unref(old);
    for (unsigned i = 0; i < b->nloops; i++) {
        table_swap *sw = malloc(sizeof(*sw));
        if (sw) {
            sw->lp = &b->loops[i];
            sw->job = job;
            if (tk_loop_post(b->loops[i].loop, on_table_swap, sw) == 0)
                continue;
            free(sw);
        }
        tk_error("reload: loop %u keeps the old backends (out of memory)", i);
        reload_step_done(job);
    }
    reload_step_done(job);
    return 0;
}

void tk_balance_free(tk_balance *b)
{
    if (!b)
        return;
    b->server = NULL; /* freed already: nothing to report to */
    if (b->loops) {
        for (unsigned i = 0; i < b->nloops; i++) {
            bal_loop *lp = &b->loops[i];
            if (!lp->loop)
                continue;
            while (lp->sessions)
                session_end(lp->sessions, "drain");
            if (i == 0 && lp->table)
                bal_health_stop(lp, lp->table);
            tk_defer_cancel(lp->loop, &lp->kick);
            tk_loop_run_pending(lp->loop); /* the deferred frees */
            bal_table_unref(lp->table);
        }
        free(b->loops);
    }
    bal_table_unref(b->table);
    bal_table_unref(b->published);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

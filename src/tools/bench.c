/* The load-generator engine behind `tcpkit bench`.
 *
 * Each client thread owns one loop and a slice of the connections. A
 * connection keeps `pipeline` request lines in flight: every reply line that
 * comes back pops the oldest send time (replies are FIFO on one connection),
 * records the latency and queues one more line. Request bytes are never
 * copied: all lines are identical, so a connection only counts how many bytes
 * it still owes and where it stands inside a line, and writes straight from
 * one shared, read-only pattern of lines laid back to back.
 *
 * In open loop a per-thread timer walks the thread's merged schedule instead:
 * connection i's j-th request is due at t0 + (base + i)/rate + j*C/rate, so
 * the intended send time of any reply is computed, never stored, and a
 * connection only counts requests queued (next_j) and answered (ans_j).
 *
 * The calling thread is the conductor: it waits until every dial has ended,
 * lets the warm-up pass, then flips a shared phase word that the client
 * threads read (relaxed) once per wake-up to decide whether to count. During
 * the window it wakes once a second to read the threads' reply counters for
 * the progress callback and the per-second counts.
 *
 * With a request count, a shared budget hands out sends and a shared
 * `settled` counter (answered, or lost with a dropped connection) tells the
 * conductor when the last reply is in.
 *
 * With TLS a connection has a session and its own I/O callback: the
 * handshake runs once the socket is connected and belongs to the dial, and
 * requests and replies go through tk_tls_write/tk_tls_read. The plain path
 * pays one test of a NULL pointer in conn_flush() for this. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tcpkit/bench.h"
#include "tcpkit/dial.h"
#include "tcpkit/loop.h"
#include "tcpkit/sock.h"
#include "tools/bench_chat.h"
#include "tools/bench_framing.h"

/* Reads per wake-up of one connection, so one busy socket cannot starve the
 * others on its loop; the poller is level-triggered and calls again. */
#define BENCH_READS_PER_WAKE     4
#define BENCH_DEFAULT_CONNECT_MS 10000u
/* TLS: a read returns at most one record, 16 KiB of plaintext at most; a
 * full one suggests more follows, as a full scratch buffer does for a plain
 * read. Up to this many per wake-up: about what four plain reads take. */
#define BENCH_TLS_RECORD         16384
#define BENCH_TLS_READS_PER_WAKE 16
/* How long the conductor waits past the connect timeout for dials to report. */
#define BENCH_DIAL_SLACK_MS 2000u
/* Connect mode: the pause before the next request of a slot whose last one
 * failed. */
#define BENCH_CONNECT_PAUSE_MS 1u
/* How long the end of a run waits for the replies still due on its
 * connections before it closes those instead of pooling them. */
#define BENCH_DRAIN_MS 1000

enum { PHASE_WARMUP, PHASE_MEASURE, PHASE_DONE };
/* CONN_IDLE: connect mode, between two requests' connections.
 * CONN_HANDSHAKE: connected, the TLS handshake in progress (still dialing). */
enum { CONN_DIALING, CONN_OPEN, CONN_DEAD, CONN_IDLE, CONN_HANDSHAKE };

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned dialing; /* dials not yet ended */
    unsigned alive;   /* connections open */
    atomic_int phase;
    atomic_uint_least64_t budget;  /* sends left, with cfg->requests */
    atomic_uint_least64_t settled; /* requests answered or lost, with cfg->requests */
    const tk_bench_config *cfg;
    bench_pattern pat; /* the requests every connection sends, back to back */
    tk_pool *pool;     /* cfg->pool or our own; NULL in connect mode */
    int own_pool;
    uint32_t warmup_ms;    /* the warm-up this run has (the default resolved) */
    uint64_t measure_from; /* with no warm-up: the run's start, measured from there */
} bench_shared;

/* The warm-up a configuration asks for, its default resolved. */
static uint32_t warmup_of(const tk_bench_config *cfg)
{
    if (cfg->warmup_ms != UINT32_MAX)
        return cfg->warmup_ms;
    return cfg->duration_ms / 5 < 1000 ? cfg->duration_ms / 5 : 1000;
}

typedef struct bench_thread bench_thread;

typedef struct {
    tk_io io;
    bench_thread *th;
    tk_dial *dial; /* while dialing */
    int state;
    uint64_t *sent_us;  /* ring of `pipeline` send times */
    unsigned head;      /* index of the oldest request in flight */
    unsigned inflight;  /* requests queued or sent, not yet answered */
    size_t out_pending; /* request bytes owed to the socket */
    size_t out_pos;     /* offset of the next byte to send in the pattern */
    unsigned idx;       /* index in the thread's array (open-loop schedule) */
    uint64_t next_j;    /* open loop: requests queued so far */
    uint64_t ans_j;     /* open loop: requests answered so far */
    bench_parser parser;
    uint64_t t_start;      /* connect mode, closed loop: when the request's dial began */
    tk_timer pause;        /* connect mode: the next request after a failed one */
    tk_tls *tls;           /* TLS: the session (NULL: plain TCP) */
    size_t tls_offered;    /* TLS: length of a write that returned -EAGAIN, to offer again */
    unsigned char tls_rww; /* TLS: a read waits for the socket to be writable */
    unsigned char tls_wwr; /* TLS: a write waits for the socket to be readable */
    tk_timer hs_timer;     /* TLS: the handshake's deadline */
} bench_conn;

struct bench_thread {
    /* Written by this thread only; read by the conductor after the join. */
    uint64_t requests;
    atomic_uint_least64_t live; /* a copy of requests the conductor may read any time */
    uint64_t sent;
    uint64_t received;
    uint64_t sent_measured;
    uint64_t errors;
    uint64_t connect_errors;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t connected;
    uint64_t file_bytes; /* file mode: data bytes of every connection, summed at the end */
    int last_error;
    int run_err;
    uint64_t tls_failures;
    char tls_version[16];
    char tls_error[TK_BENCH_TLS_ERROR_MAX];
    tk_hdr hist;
    /* Open-loop schedule, used by this thread only. */
    tk_timer sched;
    uint64_t t0;     /* schedule start, µs */
    uint64_t k_next; /* next entry of the thread's merged schedule */
    unsigned base;   /* global index of conns[0] */
    /* Set up before the thread starts. */
    bench_shared *sh;
    tk_loop *loop;
    bench_conn *conns;
    unsigned nconns;
    uint64_t *times;
    pthread_t tid;
    int started;
    char pad[64]; /* keeps the next thread's counters off our cache lines */
};

void tk_bench_config_init(tk_bench_config *c)
{
    memset(c, 0, sizeof(*c));
    c->connections = 1;
    c->pipeline = 1;
    c->size = 64;
    c->duration_ms = 5000;
    c->warmup_ms = UINT32_MAX;
    c->threads = 1;
    c->connect_timeout_ms = BENCH_DEFAULT_CONNECT_MS;
    c->receivers = 10;
    c->senders = 1;
}

static int config_valid(const tk_bench_config *c)
{
    return c->addrs && c->naddrs > 0 && c->connections >= 1 &&
           c->connections <= TK_BENCH_MAX_CONNECTIONS && c->pipeline >= 1 &&
           c->pipeline <= TK_BENCH_MAX_PIPELINE && c->mode >= TK_BENCH_LINE &&
           c->mode <= TK_BENCH_FILE &&
           (c->mode != TK_BENCH_CHAT ||
            (c->receivers >= 1 && c->senders >= 1 && c->receivers <= TK_BENCH_MAX_CONNECTIONS &&
             c->senders <= TK_BENCH_MAX_CONNECTIONS)) &&
           (c->size >= 2 || c->mode == TK_BENCH_LENGTH) &&
           (c->size >= TK_BENCH_JSON_MIN_SIZE || c->mode != TK_BENCH_JSON) &&
           c->size <= TK_BENCH_MAX_SIZE && c->duration_ms > 0 && c->threads >= 1 &&
           c->threads <= TK_BENCH_MAX_THREADS && c->rate >= 0.0 && c->rate <= TK_BENCH_MAX_RATE &&
           (c->per_sec || !c->per_sec_cap);
}

/* Conductor bookkeeping, taken a handful of times per connection. */
static void note_dial_end(bench_shared *sh, int connected)
{
    pthread_mutex_lock(&sh->lock);
    sh->dialing--;
    if (connected)
        sh->alive++;
    if (sh->dialing == 0)
        pthread_cond_broadcast(&sh->cond);
    pthread_mutex_unlock(&sh->lock);
}

static void note_conn_lost(bench_shared *sh)
{
    pthread_mutex_lock(&sh->lock);
    if (--sh->alive == 0)
        pthread_cond_broadcast(&sh->cond);
    pthread_mutex_unlock(&sh->lock);
}

/* Takes up to want sends from the request budget; all of them without one. */
static unsigned take_budget(bench_shared *sh, unsigned want)
{
    if (sh->cfg->requests == 0)
        return want;
    uint_least64_t left = atomic_load_explicit(&sh->budget, memory_order_relaxed);
    uint_least64_t got;
    do {
        if (left == 0)
            return 0;
        got = left < want ? left : want;
    } while (!atomic_compare_exchange_weak_explicit(&sh->budget, &left, left - got,
                                                    memory_order_relaxed, memory_order_relaxed));
    return (unsigned)got;
}

/* Counts n requests as over (answered or lost); wakes the conductor when the
 * last of a request count is. */
static void settle(bench_shared *sh, uint64_t n)
{
    if (sh->cfg->requests == 0 || n == 0)
        return;
    uint64_t total = atomic_fetch_add_explicit(&sh->settled, n, memory_order_relaxed) + n;
    if (total >= sh->cfg->requests) {
        pthread_mutex_lock(&sh->lock);
        pthread_cond_broadcast(&sh->cond);
        pthread_mutex_unlock(&sh->lock);
    }
}

static int open_loop(const bench_shared *sh)
{
    return sh->cfg->rate > 0.0;
}

/* Requests queued on c and not answered yet. */
static uint64_t outstanding(const bench_conn *c)
{
    return open_loop(c->th->sh) ? c->next_j - c->ans_j : c->inflight;
}

/* Gives a lasting connection back to the pool. A TLS one is never reused
 * (the pool keeps sockets, not sessions): it sends close_notify if it ended
 * in step, then it is closed. */
static void conn_put(bench_conn *c, int reuse)
{
    if (c->tls) {
        if (reuse)
            tk_tls_shutdown(c->tls);
        tk_tls_free(c->tls);
        c->tls = NULL;
        reuse = 0;
    }
    tk_pool_put(c->th->sh->pool, c->io.fd, reuse);
}

static void conn_drop(bench_conn *c, int err)
{
    bench_thread *th = c->th;
    settle(th->sh, outstanding(c));
    tk_io_stop(th->loop, &c->io);
    conn_put(c, 0);
    c->state = CONN_DEAD;
    /* A connection lost after the window closed is our own teardown racing
     * the server, not a server error. */
    if (atomic_load_explicit(&th->sh->phase, memory_order_relaxed) != PHASE_DONE) {
        th->errors++;
        if (err < 0)
            th->last_error = err;
    }
    note_conn_lost(th->sh);
}

/* Owes n more request lines to the socket, sent at `now` (closed loop). */
static void queue_requests(bench_conn *c, unsigned n, uint64_t now, int phase)
{
    const tk_bench_config *cfg = c->th->sh->cfg;
    c->th->sent += n;
    if (phase == PHASE_MEASURE)
        c->th->sent_measured += n;
    for (unsigned i = 0; i < n; i++) {
        unsigned slot = c->head + c->inflight;
        if (slot >= cfg->pipeline)
            slot -= cfg->pipeline;
        c->sent_us[slot] = now;
        c->inflight++;
    }
    c->out_pending += (size_t)n * c->th->sh->pat.req_len;
}

/* TLS: what the session waits for: readability always (replies), and
 * writability while output waits on it or a read does. */
static unsigned tls_interest(const bench_conn *c)
{
    if (c->tls_rww || (c->out_pending > 0 && !c->tls_wwr))
        return TK_READ | TK_WRITE;
    return TK_READ;
}

/* TLS: conn_flush through the session. After -EAGAIN the same bytes are
 * offered again: out_pos stays where it was and out_pending only grows until
 * they are taken, so the next write starts at the same pattern offset and is
 * never shorter (drain_prepare keeps them too). */
static int tls_flush(bench_conn *c, int measuring)
{
    const bench_pattern *pat = &c->th->sh->pat;

    c->tls_wwr = 0;
    while (c->out_pending > 0) {
        size_t len = pat->len - c->out_pos;
        if (len > c->out_pending)
            len = c->out_pending;
        ssize_t n = tk_tls_write(c->tls, pat->bytes + c->out_pos, len);
        if (n == -EAGAIN) {
            c->tls_offered = len;
            c->tls_wwr = (tk_tls_want(c->tls) & TK_TLS_WANT_READ) != 0;
            break;
        }
        if (n < 0)
            return (int)n;
        c->tls_offered = 0;
        c->out_pending -= (size_t)n;
        c->out_pos = (c->out_pos + (size_t)n) % pat->len;
        if (measuring)
            c->th->bytes_out += (uint64_t)n;
    }
    return tk_io_set(c->th->loop, &c->io, tls_interest(c));
}

/* Writes what the connection owes, usually in one send(); watches for
 * writability only while something is left. Returns 0 or a negative errno. */
static int conn_flush(bench_conn *c, int measuring)
{
    const bench_pattern *pat = &c->th->sh->pat;

    if (c->tls)
        return tls_flush(c, measuring);
    while (c->out_pending > 0) {
        size_t len = pat->len - c->out_pos;
        if (len > c->out_pending)
            len = c->out_pending;
        ssize_t n = send(c->io.fd, pat->bytes + c->out_pos, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -errno;
        }
        c->out_pending -= (size_t)n;
        c->out_pos = (c->out_pos + (size_t)n) % pat->len;
        if (measuring)
            c->th->bytes_out += (uint64_t)n;
    }
    return tk_io_set(c->th->loop, &c->io, c->out_pending ? TK_READ | TK_WRITE : TK_READ);
}

/* The intended send time of request j of the thread's connection i. */
static uint64_t intended_us(const bench_thread *th, unsigned i, uint64_t j)
{
    const tk_bench_config *cfg = th->sh->cfg;
    double slot = (double)(th->base + i) + (double)j * (double)cfg->connections;
    return th->t0 + (uint64_t)(slot * 1e6 / cfg->rate);
}

/* Open loop: matches reply lines with the oldest scheduled requests and
 * records their latency from the intended send time. */
static void conn_answered_open(bench_conn *c, uint64_t lines, int phase)
{
    bench_thread *th = c->th;
    uint64_t now = tk_clock_us();
    uint64_t done = 0;

    while (lines > 0 && c->ans_j < c->next_j) {
        uint64_t due = intended_us(th, c->idx, c->ans_j);
        c->ans_j++;
        lines--;
        done++;
        if (phase == PHASE_MEASURE) {
            tk_hdr_record(&th->hist, now > due ? now - due : 0);
            th->requests++;
        }
    }
    th->received += done;
    atomic_store_explicit(&th->live, th->requests, memory_order_relaxed);
    settle(th->sh, done);
}

/* Matches `lines` reply lines with the oldest requests in flight and, while
 * the run lasts, sends as many new ones (closed loop; open loop records only).
 * Lines with no request to match (a banner, say) are ignored. Inlined into
 * each of its two callers, so the plain one stays what it was before TLS
 * became the other. */
static inline __attribute__((always_inline)) int conn_answered(bench_conn *c, uint64_t lines,
                                                               int phase)
{
    if (open_loop(c->th->sh)) {
        conn_answered_open(c, lines, phase);
        return 0;
    }
    bench_thread *th = c->th;
    unsigned depth = th->sh->cfg->pipeline;
    uint64_t now = tk_clock_us();
    unsigned done = 0;

    while (lines > 0 && c->inflight > 0) {
        uint64_t sent = c->sent_us[c->head];
        if (++c->head == depth)
            c->head = 0;
        c->inflight--;
        lines--;
        done++;
        if (phase == PHASE_MEASURE) {
            tk_hdr_record(&th->hist, now - sent);
            th->requests++;
        }
    }
    th->received += done;
    atomic_store_explicit(&th->live, th->requests, memory_order_relaxed);
    settle(th->sh, done);
    if (phase == PHASE_DONE || done == 0)
        return 0;
    unsigned more = take_budget(th->sh, done);
    if (more == 0)
        return 0;
    queue_requests(c, more, now, phase);
    return conn_flush(c, phase == PHASE_MEASURE);
}

static void on_dialed(tk_loop *loop, int fd, int err, void *arg);
static void on_conn_io(tk_loop *loop, tk_io *io, unsigned events);
static void on_tls_io(tk_loop *loop, tk_io *io, unsigned events);
static void tls_begin(bench_conn *c);
static void tls_handshake_step(bench_conn *c);
static void connect_open(bench_conn *c);
static void conn_replies(bench_conn *c, uint64_t lines, int lost, int err, int phase);

static int connect_mode(const bench_shared *sh)
{
    return sh->cfg->mode == TK_BENCH_CONNECT;
}

static uint32_t connect_timeout(const tk_bench_config *cfg)
{
    return cfg->connect_timeout_ms ? cfg->connect_timeout_ms : BENCH_DEFAULT_CONNECT_MS;
}

/* How a connect-mode request ended. */
enum { END_REPLY, END_DIAL_FAILED, END_LOST };

static void connect_begin(bench_conn *c);

/* Connect mode: starts the slot's next request if there is one: in closed
 * loop if the request budget allows, in open loop if the schedule queued one
 * that is not answered yet. Otherwise the slot waits, idle. */
static void connect_next(bench_conn *c)
{
    bench_thread *th = c->th;
    int phase = atomic_load_explicit(&th->sh->phase, memory_order_relaxed);

    c->state = CONN_IDLE;
    if (phase == PHASE_DONE)
        return;
    if (open_loop(th->sh)) {
        if (c->next_j == c->ans_j)
            return;
    } else {
        if (take_budget(th->sh, 1) == 0)
            return;
        th->sent++;
        if (phase == PHASE_MEASURE)
            th->sent_measured++;
        c->t_start = tk_clock_us();
    }
    connect_begin(c);
}

/* Connect mode: the slot's request is over, answered or not; its connection
 * is closed. After a failure the next request waits for the pause timer, so
 * a server that refuses every connection is not hammered in a tight loop and
 * a dial that fails inside tk_dial_start() does not recurse. */
static void connect_end(bench_conn *c, int how, int err)
{
    bench_thread *th = c->th;
    int phase = atomic_load_explicit(&th->sh->phase, memory_order_relaxed);

    if (c->state == CONN_OPEN || c->state == CONN_HANDSHAKE) {
        tk_io_stop(th->loop, &c->io);
        if (c->tls) {
            tk_tls_shutdown(c->tls); /* nothing once the handshake failed */
            tk_tls_free(c->tls);
            c->tls = NULL;
        }
        close(c->io.fd);
    }
    c->state = CONN_IDLE;
    memset(&c->parser, 0, sizeof(c->parser));
    c->out_pending = 0;
    c->out_pos = 0;
    if (how == END_REPLY) {
        uint64_t now = tk_clock_us();
        uint64_t from = open_loop(th->sh) ? intended_us(th, c->idx, c->ans_j) : c->t_start;
        if (phase == PHASE_MEASURE) {
            tk_hdr_record(&th->hist, now > from ? now - from : 0);
            th->requests++;
        }
        th->received++;
        atomic_store_explicit(&th->live, th->requests, memory_order_relaxed);
    } else if (phase != PHASE_DONE) {
        th->errors++;
        if (how == END_DIAL_FAILED)
            th->connect_errors++;
        if (err < 0)
            th->last_error = err;
    }
    if (open_loop(th->sh))
        c->ans_j++;
    settle(th->sh, 1);
    if (how == END_REPLY)
        connect_next(c);
    else
        (void)tk_timer_start(th->loop, &c->pause, BENCH_CONNECT_PAUSE_MS);
}

static void on_pause(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    connect_next((bench_conn *)((char *)t - offsetof(bench_conn, pause)));
}

/* Connect mode: dials a new connection for the slot's current request. */
static void connect_begin(bench_conn *c)
{
    bench_thread *th = c->th;
    const tk_bench_config *cfg = th->sh->cfg;
    tk_dial *d = NULL;

    c->state = CONN_DIALING;
    int err =
        tk_dial_start(th->loop, cfg->addrs, cfg->naddrs, connect_timeout(cfg), on_dialed, c, &d);
    if (err < 0)
        connect_end(c, END_DIAL_FAILED, err);
    else
        c->dial = d;
}

/* Connect mode: the connection is up (TLS: its handshake done); sends the
 * request line. */
static void connect_open(bench_conn *c)
{
    bench_thread *th = c->th;
    int phase = atomic_load_explicit(&th->sh->phase, memory_order_relaxed);

    c->state = CONN_OPEN;
    th->connected++;
    c->out_pending = th->sh->pat.req_len;
    int werr = conn_flush(c, phase == PHASE_MEASURE);
    if (werr < 0)
        connect_end(c, END_LOST, werr);
}

/* A connected socket joins c: TCP_NODELAY on (without it a pipelined batch
 * could wait for an ACK and the client would measure its own stack), then
 * over TLS the handshake starts and 0 is returned; plain, 1: go on. */
static int conn_take_socket(bench_conn *c, int fd)
{
    tk_sockopts o;
    tk_sockopts_init(&o);
    o.nodelay = 1;
    (void)tk_sock_apply(fd, &o);
    if (c->th->sh->cfg->tls) {
        tk_io_init(&c->io, fd, on_tls_io);
        tls_begin(c);
        return 0;
    }
    tk_io_init(&c->io, fd, on_conn_io);
    return 1;
}

/* Connect mode: the dial ended; a connected socket starts its handshake
 * (TLS) or sends the request line. */
static void connect_dialed(bench_conn *c, int fd, int err)
{
    c->dial = NULL;
    if (fd < 0) {
        connect_end(c, END_DIAL_FAILED, err);
        return;
    }
    if (conn_take_socket(c, fd))
        connect_open(c);
}

/* A connection failed: in connect mode only its request, otherwise for good. */
static void conn_fail(bench_conn *c, int err)
{
    if (connect_mode(c->th->sh))
        connect_end(c, END_LOST, err);
    else
        conn_drop(c, err);
}

/* After a read (plain or TLS): answers the replies counted, or ends a lost
 * connection. Inlined: the plain read path runs it for every wake-up. */
static inline __attribute__((always_inline)) void conn_replies(bench_conn *c, uint64_t lines,
                                                               int lost, int err, int phase)
{
    if (connect_mode(c->th->sh)) {
        if (lines > 0)
            connect_end(c, END_REPLY, 0);
        else if (lost)
            connect_end(c, END_LOST, err);
        return;
    }
    if (lines > 0) {
        int werr = conn_answered(c, lines, phase);
        if (werr < 0) {
            lost = 1;
            err = werr;
        }
    }
    if (lost)
        conn_drop(c, err);
}

static void on_conn_io(tk_loop *loop, tk_io *io, unsigned events)
{
    bench_conn *c = (bench_conn *)((char *)io - offsetof(bench_conn, io));
    bench_thread *th = c->th;
    int phase = atomic_load_explicit(&th->sh->phase, memory_order_relaxed);
    int err;

    if ((events & TK_WRITE) && (err = conn_flush(c, phase == PHASE_MEASURE)) < 0) {
        conn_fail(c, err);
        return;
    }
    if (!(events & (TK_READ | TK_HUP)))
        return;

    unsigned char *buf = tk_loop_scratch(loop);
    size_t cap = tk_loop_scratch_size(loop);
    uint64_t lines = 0;
    int lost = 0;
    err = 0;
    for (int i = 0; i < BENCH_READS_PER_WAKE; i++) {
        ssize_t n = read(io->fd, buf, cap);
        if (n > 0) {
            int perr =
                bench_parse(&c->parser, &th->sh->pat, th->sh->cfg->mode, buf, (size_t)n, &lines);
            if (perr < 0) {
                lost = 1; /* the stream is not what the mode expects */
                err = perr;
                break;
            }
            if (phase == PHASE_MEASURE)
                th->bytes_in += (uint64_t)n;
            if ((size_t)n < cap)
                break; /* most likely drained; level-triggered polling tells if not */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        lost = 1; /* EOF or a reset before the end of the run */
        err = n < 0 ? -errno : 0;
        break;
    }
    conn_replies(c, lines, lost, err, phase);
}

/* TLS: reads and counts replies into *lines; returns 1 when the connection
 * is lost (*err set: 0 for EOF), else 0. Reading stops after a record that
 * was not full (most likely drained; the level-triggered poller tells if
 * not) or BENCH_TLS_READS_PER_WAKE records, but never while OpenSSL holds
 * decrypted bytes, which raise no event: that is at most the rest of the
 * record read last (no read-ahead), so one connection cannot keep the loop. */
static int tls_read_replies(bench_conn *c, int phase, uint64_t *lines, int *err)
{
    bench_thread *th = c->th;
    unsigned char *buf = tk_loop_scratch(th->loop);
    size_t cap = tk_loop_scratch_size(th->loop);

    c->tls_rww = 0;
    for (int reads = 1;; reads++) {
        ssize_t n = tk_tls_read(c->tls, buf, cap);
        if (n == -EAGAIN) {
            c->tls_rww = (tk_tls_want(c->tls) & TK_TLS_WANT_WRITE) != 0;
            return 0;
        }
        if (n <= 0) {
            *err = (int)n;
            return 1;
        }
        int perr = bench_parse(&c->parser, &th->sh->pat, th->sh->cfg->mode, buf, (size_t)n, lines);
        if (perr < 0) {
            *err = perr;
            return 1;
        }
        if (phase == PHASE_MEASURE)
            th->bytes_in += (uint64_t)n;
        if (!tk_tls_pending(c->tls) && (n < BENCH_TLS_RECORD || reads >= BENCH_TLS_READS_PER_WAKE))
            return 0;
    }
}

/* on_conn_io for a TLS connection: the handshake first, then writes and
 * reads, each also woken by the other direction when the session asks. */
static void on_tls_io(tk_loop *loop, tk_io *io, unsigned events)
{
    bench_conn *c = (bench_conn *)((char *)io - offsetof(bench_conn, io));
    int phase = atomic_load_explicit(&c->th->sh->phase, memory_order_relaxed);
    int err = 0;

    if (c->state == CONN_HANDSHAKE) {
        tls_handshake_step(c);
        return;
    }
    unsigned write_ready = c->tls_wwr ? TK_READ | TK_HUP : TK_WRITE;
    if (c->out_pending > 0 && (events & write_ready) &&
        (err = conn_flush(c, phase == PHASE_MEASURE)) < 0) {
        conn_fail(c, err);
        return;
    }
    unsigned read_ready = c->tls_rww ? TK_WRITE : TK_READ | TK_HUP;
    uint64_t lines = 0;
    int lost = (events & read_ready) ? tls_read_replies(c, phase, &lines, &err) : 0;
    conn_replies(c, lines, lost, err, phase);
    /* Still open (connect mode's next request dials anew, never at once):
     * the interest may have changed with the read. */
    if (c->state == CONN_OPEN && (err = tk_io_set(loop, io, tls_interest(c))) < 0)
        conn_fail(c, err);
}

static void on_dialed(tk_loop *loop, int fd, int err, void *arg)
{
    (void)loop;
    connect_dialed(arg, fd, err);
}

static void conn_dial_failed(bench_conn *c, int err);
static void conn_established(bench_conn *c);

/* TLS: the handshake ended, complete (err 0) or failed (why says how); the
 * dial goes on from there as if the connect had just succeeded or failed. */
static void tls_handshake_done(bench_conn *c, int err, const char *why)
{
    bench_thread *th = c->th;

    tk_timer_stop(th->loop, &c->hs_timer);
    if (err == 0) {
        if (!th->tls_version[0])
            snprintf(th->tls_version, sizeof(th->tls_version), "%s", tk_tls_version(c->tls));
        if (connect_mode(th->sh))
            connect_open(c);
        else
            conn_established(c);
        return;
    }
    /* Copied before the session that holds the reason is freed. */
    th->tls_failures++;
    if (!th->tls_error[0])
        snprintf(th->tls_error, sizeof(th->tls_error), "%s", why);
    if (connect_mode(th->sh))
        connect_end(c, END_DIAL_FAILED, err);
    else
        conn_dial_failed(c, err);
}

/* TLS: advances the handshake, or waits for what it needs. */
static void tls_handshake_step(bench_conn *c)
{
    int r = tk_tls_handshake(c->tls);
    if (r == -EAGAIN) {
        unsigned ev = (tk_tls_want(c->tls) & TK_TLS_WANT_WRITE) ? TK_WRITE : TK_READ;
        if ((r = tk_io_set(c->th->loop, &c->io, ev)) == 0)
            return;
        tls_handshake_done(c, r, strerror(-r));
        return;
    }
    tls_handshake_done(c, r, r < 0 ? tk_tls_error(c->tls) : NULL);
}

/* TLS: a connected socket starts its session; the dial lasts until the
 * handshake ends, bounded by the context's handshake timeout. */
static void tls_begin(bench_conn *c)
{
    bench_thread *th = c->th;
    const tk_bench_config *cfg = th->sh->cfg;

    c->state = CONN_HANDSHAKE;
    c->tls_offered = 0;
    c->tls_rww = c->tls_wwr = 0;
    int err = tk_tls_new(cfg->tls, c->io.fd, cfg->tls_name, &c->tls);
    if (err < 0) {
        c->tls = NULL;
        tls_handshake_done(c, err, strerror(-err));
        return;
    }
    tk_loop_update_time(th->loop);
    (void)tk_timer_start(th->loop, &c->hs_timer, tk_tls_ctx_handshake_timeout(cfg->tls));
    tls_handshake_step(c);
}

static void on_hs_timeout(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    tls_handshake_done((bench_conn *)((char *)t - offsetof(bench_conn, hs_timer)), -ETIMEDOUT,
                       "handshake timed out");
}

/* A lasting connection's dial failed (the pool's error, or its TLS
 * handshake: the socket is then closed). */
static void conn_dial_failed(bench_conn *c, int err)
{
    bench_thread *th = c->th;

    if (c->state == CONN_HANDSHAKE) {
        tk_io_stop(th->loop, &c->io);
        conn_put(c, 0);
    }
    c->state = CONN_DEAD;
    settle(th->sh, outstanding(c)); /* open loop queues while dialing */
    th->last_error = err;
    th->errors++;
    th->connect_errors++;
    note_dial_end(th->sh, 0);
}

/* A lasting connection is up (TLS: its handshake done): starts sending. */
static void conn_established(bench_conn *c)
{
    bench_thread *th = c->th;

    c->state = CONN_OPEN;
    th->connected++;
    note_dial_end(th->sh, 1);

    int phase = atomic_load_explicit(&th->sh->phase, memory_order_relaxed);
    if (phase == PHASE_DONE)
        return;
    if (!open_loop(th->sh)) {
        unsigned n = take_budget(th->sh, th->sh->cfg->pipeline);
        if (n > 0)
            queue_requests(c, n, tk_clock_us(), phase);
    }
    int werr = conn_flush(c, phase == PHASE_MEASURE);
    if (werr < 0)
        conn_drop(c, werr);
}

/* A lasting connection from the pool (fd >= 0) or the pool's error (err):
 * starts its handshake (TLS) or sending, or counts a failed connect. */
static void conn_ready(bench_conn *c, int fd, int err)
{
    if (fd < 0) {
        conn_dial_failed(c, err);
        return;
    }
    if (conn_take_socket(c, fd))
        conn_established(c);
}

static void start_dials(bench_thread *th)
{
    const tk_bench_config *cfg = th->sh->cfg;
    uint32_t timeout = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : BENCH_DEFAULT_CONNECT_MS;

    tk_loop_update_time(th->loop);
    if (connect_mode(th->sh)) {
        /* Each request dials its own connection; open loop waits for the
         * schedule to queue the first. */
        for (unsigned i = 0; i < th->nconns; i++) {
            th->conns[i].state = CONN_IDLE;
            if (!open_loop(th->sh))
                connect_next(&th->conns[i]);
        }
        return;
    }
    /* tk_pool_get blocks, so the connections are taken one by one before
     * the loop runs; a run the conductor gave up on takes no more. */
    for (unsigned i = 0; i < th->nconns; i++) {
        bench_conn *c = &th->conns[i];
        if (atomic_load_explicit(&th->sh->phase, memory_order_relaxed) == PHASE_DONE) {
            note_dial_end(th->sh, 0);
            continue;
        }
        int fd = tk_pool_get(th->sh->pool, timeout);
        conn_ready(c, fd, fd < 0 ? fd : 0);
    }
}

/* Open loop: queues every request whose intended time has come, each on its
 * connection (one still dialing sends when it connects; a dead one's are
 * skipped), then sleeps until the next one is due. The timer has millisecond
 * resolution, so a request may leave up to about 1 ms late; that delay is
 * part of its measured latency, as any other client-side queueing. */
static void on_sched(tk_loop *loop, tk_timer *t)
{
    bench_thread *th = (bench_thread *)((char *)t - offsetof(bench_thread, sched));
    int phase = atomic_load_explicit(&th->sh->phase, memory_order_relaxed);
    size_t req_len = th->sh->pat.req_len;
    uint64_t now = tk_clock_us();
    uint64_t due;

    if (phase == PHASE_DONE)
        return;
    for (;;) {
        unsigned i = (unsigned)(th->k_next % th->nconns);
        due = intended_us(th, i, th->k_next / th->nconns);
        if (due > now)
            break;
        th->k_next++;
        bench_conn *c = &th->conns[i];
        if (c->state == CONN_DEAD)
            continue;
        if (take_budget(th->sh, 1) == 0)
            return; /* the request count is used up: the schedule ends */
        c->next_j++;
        th->sent++;
        if (phase == PHASE_MEASURE)
            th->sent_measured++;
        if (connect_mode(th->sh)) {
            /* A slot still busy with an earlier request takes this one when
             * that one ends; its wait counts in its latency. */
            if (c->state == CONN_IDLE && !tk_timer_active(&c->pause))
                connect_begin(c);
            continue;
        }
        c->out_pending += req_len;
        if (c->state == CONN_OPEN) {
            int err = conn_flush(c, phase == PHASE_MEASURE);
            if (err < 0)
                conn_drop(c, err);
        }
    }
    tk_loop_update_time(loop);
    (void)tk_timer_start(loop, t, (due - now + 999) / 1000);
}

/* The replies a connection still owes once nothing more is sent: requests
 * not yet begun are dropped, one partly written is finished. With TLS the
 * bytes of a write that returned -EAGAIN are already taken by the session:
 * the requests they reach into are finished too. */
static uint64_t drain_prepare(bench_conn *c)
{
    size_t req_len = c->th->sh->pat.req_len;
    size_t done = c->out_pos % req_len;
    size_t taken = done + (c->tls ? c->tls_offered : 0);
    size_t partial = (taken + req_len - 1) / req_len * req_len - done;
    uint64_t owed = outstanding(c);

    if (c->out_pending > partial) {
        uint64_t unsent = (c->out_pending - partial) / req_len;
        owed = owed > unsent ? owed - unsent : 0;
        c->out_pending = partial;
    }
    return owed;
}

/* One send or read of the drain, plain or through TLS: bytes, 0 at EOF, or
 * a negative errno (-EAGAIN and -EINTR: try again later). */
static ssize_t drain_io(bench_conn *c, int sending, unsigned char *buf, size_t len)
{
    ssize_t n;
    if (c->tls)
        return sending ? tk_tls_write(c->tls, buf, len) : tk_tls_read(c->tls, buf, len);
    n = sending ? send(c->io.fd, buf, len, MSG_NOSIGNAL) : read(c->io.fd, buf, len);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n;
}

/* Sends what the connection still owes and reads what comes back; returns
 * 0 while it goes on, 1 once every reply is in, -1 on an error or a reply
 * the stream cannot hold. A TLS session may need either direction for
 * either operation and may hold decrypted bytes no poll reports: it tries
 * both on every pass, and reads until it holds nothing. */
static int drain_step(bench_conn *c, uint64_t *owed, short revents, unsigned char *buf, size_t cap)
{
    bench_thread *th = c->th;
    const bench_pattern *pat = &th->sh->pat;

    /* A TLS write takes one record: several per pass, as one send() would. */
    int writes = c->tls ? BENCH_TLS_READS_PER_WAKE : 1;
    while ((c->tls || (revents & POLLOUT)) && c->out_pending > 0 && writes-- > 0) {
        size_t len = pat->len - c->out_pos;
        if (len > c->out_pending)
            len = c->out_pending;
        ssize_t n = drain_io(c, 1, pat->bytes + c->out_pos, len);
        if (n < 0 && n != -EINTR && n != -EAGAIN)
            return -1;
        if (n <= 0) {
            if (n == -EAGAIN && c->tls)
                c->tls_offered = len;
            break;
        }
        c->tls_offered = 0;
        c->out_pending -= (size_t)n;
        c->out_pos = (c->out_pos + (size_t)n) % pat->len;
    }
    if (c->tls || (revents & (POLLIN | POLLHUP | POLLERR))) {
        ssize_t n;
        int reads = 0;
        do {
            n = drain_io(c, 0, buf, cap);
            if (n == 0 || (n < 0 && n != -EINTR && n != -EAGAIN))
                return -1;
            uint64_t lines = 0;
            if (n > 0 &&
                bench_parse(&c->parser, pat, th->sh->cfg->mode, buf, (size_t)n, &lines) < 0)
                return -1;
            if (lines > *owed)
                return -1; /* more replies than requests: out of step */
            *owed -= lines;
            th->received += lines;
        } while (n > 0 && c->tls &&
                 (tk_tls_pending(c->tls) ||
                  (n == BENCH_TLS_RECORD && ++reads < BENCH_TLS_READS_PER_WAKE)));
    }
    if (*owed == 0 && c->out_pending == 0)
        return c->parser.skip == 0 && c->parser.head_len == 0 ? 1 : -1;
    return 0;
}

/* The end of a run: every open connection goes back to the pool, for reuse
 * if it ends in step (every reply read, no request half sent) within
 * BENCH_DRAIN_MS, closed otherwise. The loop no longer runs. */
static void release_conns(bench_thread *th)
{
    struct pollfd *pfd = calloc(th->nconns, sizeof(*pfd));
    uint64_t *owed = calloc(th->nconns, sizeof(*owed));
    unsigned char *buf = tk_loop_scratch(th->loop);
    size_t cap = tk_loop_scratch_size(th->loop);
    uint64_t deadline = tk_clock_us() + (uint64_t)BENCH_DRAIN_MS * 1000;
    unsigned left = 0;

    for (unsigned i = 0; i < th->nconns; i++) {
        bench_conn *c = &th->conns[i];
        if (c->state != CONN_OPEN)
            continue;
        tk_io_stop(th->loop, &c->io);
        if (!pfd || !owed) {
            conn_put(c, 0);
            c->state = CONN_DEAD;
            continue;
        }
        owed[i] = drain_prepare(c);
        if (drain_step(c, &owed[i], 0, buf, cap) == 1) {
            conn_put(c, 1);
            c->state = CONN_DEAD;
            continue;
        }
        left++;
    }
    while (pfd && owed && left > 0) {
        for (unsigned i = 0; i < th->nconns; i++) {
            bench_conn *c = &th->conns[i];
            /* A TLS read may wait for writability (the session says). */
            int out = c->out_pending > 0 || (c->tls && (tk_tls_want(c->tls) & TK_TLS_WANT_WRITE));
            pfd[i].fd = c->state == CONN_OPEN ? c->io.fd : -1;
            pfd[i].events = (short)(POLLIN | (out ? POLLOUT : 0));
            pfd[i].revents = 0;
        }
        uint64_t now = tk_clock_us();
        /* A first pass at no wait settles the connections already in step. */
        int wait_ms = now >= deadline ? 0 : (int)((deadline - now + 999) / 1000);
        int n = poll(pfd, th->nconns, wait_ms);
        if (n < 0 && errno != EINTR)
            break;
        int expired = tk_clock_us() >= deadline;
        for (unsigned i = 0; i < th->nconns; i++) {
            bench_conn *c = &th->conns[i];
            if (c->state != CONN_OPEN)
                continue;
            int r = drain_step(c, &owed[i], n > 0 ? pfd[i].revents : 0, buf, cap);
            if (r == 0 && !expired)
                continue;
            conn_put(c, r == 1);
            c->state = CONN_DEAD;
            left--;
        }
    }
    for (unsigned i = 0; i < th->nconns; i++) {
        if (th->conns[i].state == CONN_OPEN) {
            conn_put(&th->conns[i], 0);
            th->conns[i].state = CONN_DEAD;
        }
    }
    free(pfd);
    free(owed);
}

static void *thread_main(void *arg)
{
    bench_thread *th = arg;
    start_dials(th);
    if (open_loop(th->sh)) {
        th->t0 = tk_clock_us();
        tk_loop_update_time(th->loop);
        (void)tk_timer_start(th->loop, &th->sched, 0);
    }
    th->run_err = tk_loop_run(th->loop);
    if (!connect_mode(th->sh))
        release_conns(th);
    return NULL;
}

/* Releases what the thread held; its loop must not be running. */
static void thread_free(bench_thread *th)
{
    for (unsigned i = 0; th->conns && i < th->nconns; i++) {
        bench_conn *c = &th->conns[i];
        th->file_bytes += c->parser.data_bytes;
        if (th->loop) {
            tk_timer_stop(th->loop, &c->pause);
            tk_timer_stop(th->loop, &c->hs_timer);
        }
        if (c->state == CONN_DIALING && c->dial && connect_mode(th->sh)) {
            tk_dial_cancel(c->dial); /* a request in progress, not a failed dial */
        } else if (c->state == CONN_DIALING && c->dial) {
            tk_dial_cancel(c->dial);
            settle(th->sh, outstanding(c)); /* open loop queues while dialing */
            th->last_error = -ETIMEDOUT;
            th->errors++;
            th->connect_errors++;
        } else if (c->state == CONN_HANDSHAKE && !connect_mode(th->sh)) {
            /* The run gave up on it before its handshake ended. */
            conn_dial_failed(c, -ETIMEDOUT);
        } else if (c->state == CONN_OPEN || c->state == CONN_HANDSHAKE) {
            tk_io_stop(th->loop, &c->io);
            if (th->sh->pool) {
                conn_put(c, 0);
            } else {
                tk_tls_free(c->tls);
                c->tls = NULL;
                close(c->io.fd);
            }
        }
    }
    if (th->loop) {
        tk_timer_stop(th->loop, &th->sched);
        tk_loop_free(th->loop);
    }
    free(th->conns);
    free(th->times);
}

static int thread_init(bench_thread *th, bench_shared *sh, unsigned nconns)
{
    unsigned depth = sh->cfg->pipeline;

    tk_hdr_reset(&th->hist);
    tk_timer_init(&th->sched, on_sched);
    th->sh = sh;
    th->nconns = nconns;
    th->conns = calloc(nconns, sizeof(*th->conns));
    th->times = calloc((size_t)nconns * depth, sizeof(*th->times));
    if (!th->conns || !th->times)
        return -ENOMEM;
    for (unsigned i = 0; i < nconns; i++) {
        th->conns[i].th = th;
        th->conns[i].idx = i;
        th->conns[i].state = CONN_DEAD;
        th->conns[i].sent_us = th->times + (size_t)i * depth;
        tk_timer_init(&th->conns[i].pause, on_pause);
        tk_timer_init(&th->conns[i].hs_timer, on_hs_timeout);
    }
    return tk_loop_new(&th->loop);
}

static struct timespec deadline_after(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Waits until *counter is zero or the deadline passes. */
static void wait_zero(bench_shared *sh, const unsigned *counter, const struct timespec *deadline)
{
    pthread_mutex_lock(&sh->lock);
    while (*counter > 0) {
        if (pthread_cond_timedwait(&sh->cond, &sh->lock, deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&sh->lock);
}

static unsigned alive_now(bench_shared *sh)
{
    pthread_mutex_lock(&sh->lock);
    unsigned n = sh->alive;
    pthread_mutex_unlock(&sh->lock);
    return n;
}

/* True once every request of a request count is answered or lost. */
static int all_settled(bench_shared *sh)
{
    return sh->cfg->requests > 0 &&
           atomic_load_explicit(&sh->settled, memory_order_relaxed) >= sh->cfg->requests;
}

/* Waits until no connection is left, a request count is settled, or the
 * deadline passes. Returns nonzero if the run is over before its time. */
static int wait_window(bench_shared *sh, const struct timespec *deadline)
{
    int over = 0;
    pthread_mutex_lock(&sh->lock);
    while (!(over = sh->alive == 0 || all_settled(sh))) {
        if (pthread_cond_timedwait(&sh->cond, &sh->lock, deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&sh->lock);
    return over;
}

static uint64_t live_replies(bench_thread *ths, unsigned n)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < n; i++)
        sum += atomic_load_explicit(&ths[i].live, memory_order_relaxed);
    return sum;
}

/* The measured window, in one-second slices: after each whole second the
 * replies of that second go to per_sec and the progress callback runs. */
static uint64_t measure(bench_shared *sh, bench_thread *ths, unsigned n, size_t *per_sec_n)
{
    const tk_bench_config *cfg = sh->cfg;
    uint64_t start = sh->measure_from ? sh->measure_from : tk_clock_us();
    uint64_t end = start + (uint64_t)cfg->duration_ms * 1000;
    uint64_t prev = 0;

    atomic_store(&sh->phase, PHASE_MEASURE);
    for (uint64_t sec = 1;; sec++) {
        uint64_t slice_end = start + sec * 1000000;
        if (slice_end > end)
            slice_end = end;
        /* Wait out the whole slice: the deadline is rounded up to the next
         * millisecond, and an early wake-up (a connection ending) waits again,
         * so a slice is never counted short or skipped. */
        uint64_t now = tk_clock_us();
        int over = 0;
        while (!over && now < slice_end) {
            struct timespec deadline = deadline_after((slice_end - now + 999) / 1000);
            over = wait_window(sh, &deadline);
            now = tk_clock_us();
        }
        uint64_t replies = live_replies(ths, n);
        if (now >= start + sec * 1000000 && *per_sec_n < cfg->per_sec_cap)
            cfg->per_sec[(*per_sec_n)++] = replies - prev;
        prev = replies;
        if (over || now >= end)
            break;
        if (cfg->progress)
            cfg->progress(cfg->progress_arg, replies, (double)(now - start) / 1e6);
    }
    atomic_store(&sh->phase, PHASE_DONE);
    return tk_clock_us() - start;
}

/* Dials, warm-up and the measured window; returns the window in µs. */
static uint64_t conduct(bench_shared *sh, bench_thread *ths, unsigned n, size_t *per_sec_n)
{
    const tk_bench_config *cfg = sh->cfg;
    uint32_t connect_ms =
        cfg->connect_timeout_ms ? cfg->connect_timeout_ms : BENCH_DEFAULT_CONNECT_MS;
    if (cfg->tls)
        connect_ms += tk_tls_ctx_handshake_timeout(cfg->tls);
    struct timespec deadline = deadline_after((uint64_t)connect_ms + BENCH_DIAL_SLACK_MS);
    wait_zero(sh, &sh->dialing, &deadline);
    if (alive_now(sh) == 0)
        return 0;

    uint32_t warmup = sh->warmup_ms;
    if (warmup > 0) {
        deadline = deadline_after(warmup);
        wait_zero(sh, &sh->alive, &deadline);
    }
    return measure(sh, ths, n, per_sec_n);
}

static void collect(bench_thread *ths, unsigned n, uint64_t window_us, tk_hdr *all,
                    tk_bench_result *out)
{
    size_t per_sec_n = out->per_sec_n;
    tk_hdr_reset(all);
    memset(out, 0, sizeof(*out));
    out->per_sec_n = per_sec_n;
    for (unsigned i = 0; i < n; i++) {
        out->requests += ths[i].requests;
        out->sent += ths[i].sent;
        out->received += ths[i].received;
        out->sent_measured += ths[i].sent_measured;
        out->errors += ths[i].errors;
        out->connect_errors += ths[i].connect_errors;
        out->connected += ths[i].connected;
        out->file_bytes += ths[i].file_bytes;
        out->bytes_in += ths[i].bytes_in;
        out->bytes_out += ths[i].bytes_out;
        tk_hdr_merge(all, &ths[i].hist);
        if (ths[i].last_error)
            out->last_error = ths[i].last_error;
        out->tls_failures += ths[i].tls_failures;
        if (!out->tls_version[0])
            memcpy(out->tls_version, ths[i].tls_version, sizeof(out->tls_version));
        if (!out->tls_error[0])
            memcpy(out->tls_error, ths[i].tls_error, sizeof(out->tls_error));
    }
    out->elapsed_s = (double)window_us / 1e6;
    out->rps = window_us ? (double)out->requests / out->elapsed_s : 0.0;
    out->p50_us = tk_hdr_quantile(all, 0.50);
    out->p90_us = tk_hdr_quantile(all, 0.90);
    out->p99_us = tk_hdr_quantile(all, 0.99);
    out->p999_us = tk_hdr_quantile(all, 0.999);
    out->max_us = all->max;
    out->min_us = all->total ? all->min : 0;
    out->mean_us = tk_hdr_mean(all);
}

/* With a request count, requests sent but neither answered nor lost when the
 * run ended (a server that never replied, a wrong framing) are errors too. */
static void count_unanswered(bench_shared *sh, tk_bench_result *out)
{
    uint64_t want = sh->cfg->requests;
    if (want == 0)
        return;
    uint64_t taken = want - atomic_load(&sh->budget);
    uint64_t settled = atomic_load(&sh->settled);
    if (taken <= settled)
        return;
    out->timeouts = taken - settled;
    out->errors += out->timeouts;
    if (out->last_error == 0)
        out->last_error = -ETIMEDOUT;
}

static int shared_init(bench_shared *sh, const tk_bench_config *cfg)
{
    pthread_condattr_t attr;
    memset(sh, 0, sizeof(*sh));
    sh->cfg = cfg;
    /* Connect mode has no lasting connections to wait for or to lose. */
    sh->dialing = cfg->mode == TK_BENCH_CONNECT ? 0 : cfg->connections;
    sh->alive = cfg->mode == TK_BENCH_CONNECT ? cfg->connections : 0;
    /* With no warm-up every request is measured, from the run's start: a
     * short --requests run may otherwise be over before the window opens. */
    sh->warmup_ms = warmup_of(cfg);
    sh->measure_from = sh->warmup_ms == 0 ? tk_clock_us() : 0;
    atomic_init(&sh->phase, sh->warmup_ms == 0 ? PHASE_MEASURE : PHASE_WARMUP);
    atomic_init(&sh->budget, cfg->requests);
    atomic_init(&sh->settled, 0);
    int err = cfg->mode == TK_BENCH_FILE ? bench_pattern_make_file(&sh->pat, cfg->file)
                                         : bench_pattern_make(&sh->pat, cfg->mode, cfg->size);
    if (err < 0)
        return err;
    sh->pool = cfg->mode == TK_BENCH_CONNECT ? NULL : cfg->pool;
    if (cfg->mode != TK_BENCH_CONNECT && !sh->pool) {
        tk_pool_config pc;
        tk_pool_config_init(&pc);
        pc.addrs = cfg->addrs;
        pc.naddrs = cfg->naddrs;
        pc.max_size = cfg->connections;
        pc.connect_timeout_ms = connect_timeout(cfg);
        err = tk_pool_new(&pc, &sh->pool);
        if (err < 0) {
            bench_pattern_free(&sh->pat);
            return err;
        }
        sh->own_pool = 1;
    }
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&sh->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&sh->lock, NULL);
    return 0;
}

static void shared_free(bench_shared *sh)
{
    pthread_cond_destroy(&sh->cond);
    pthread_mutex_destroy(&sh->lock);
    bench_pattern_free(&sh->pat);
    if (sh->own_pool)
        tk_pool_free(sh->pool);
}

int tk_bench_run(const tk_bench_config *cfg, tk_bench_result *out)
{
    if (!config_valid(cfg))
        return -EINVAL;
    if (cfg->mode == TK_BENCH_CHAT)
        return bench_chat_run(cfg, out);
    unsigned nthreads = cfg->threads < cfg->connections ? cfg->threads : cfg->connections;

    bench_shared sh;
    int err = shared_init(&sh, cfg);
    if (err < 0)
        return err;
    bench_thread *ths = calloc(nthreads, sizeof(*ths));
    if (!ths) {
        shared_free(&sh);
        return -ENOMEM;
    }
    unsigned base = 0;
    for (unsigned i = 0; i < nthreads && err == 0; i++) {
        unsigned share = cfg->connections / nthreads + (i < cfg->connections % nthreads);
        ths[i].base = base;
        base += share;
        err = thread_init(&ths[i], &sh, share);
    }
    for (unsigned i = 0; i < nthreads && err == 0; i++) {
        err = -pthread_create(&ths[i].tid, NULL, thread_main, &ths[i]);
        ths[i].started = err == 0;
    }

    uint64_t window_us = 0;
    size_t per_sec_n = 0;
    if (err == 0)
        window_us = conduct(&sh, ths, nthreads, &per_sec_n);
    atomic_store(&sh.phase, PHASE_DONE);
    for (unsigned i = 0; i < nthreads; i++) {
        if (ths[i].started)
            tk_loop_stop(ths[i].loop);
    }
    for (unsigned i = 0; i < nthreads; i++) {
        if (ths[i].started)
            pthread_join(ths[i].tid, NULL);
        if (err == 0 && ths[i].run_err < 0)
            err = ths[i].run_err;
    }
    for (unsigned i = 0; i < nthreads; i++)
        thread_free(&ths[i]);
    tk_hdr *all = cfg->hist_out ? cfg->hist_out : malloc(sizeof(*all));
    if (err == 0 && !all)
        err = -ENOMEM;
    if (err == 0) {
        out->per_sec_n = per_sec_n;
        collect(ths, nthreads, window_us, all, out);
        count_unanswered(&sh, out);
    }
    if (all != cfg->hist_out)
        free(all);
    free(ths);
    shared_free(&sh);
    return err;
}

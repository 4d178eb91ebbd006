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
 * The calling thread is the conductor: it waits until every dial has ended,
 * lets the warm-up pass, then flips a shared phase word that the client
 * threads read (relaxed) once per wake-up to decide whether to count. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tcpkit/bench.h"
#include "tcpkit/dial.h"
#include "tcpkit/loop.h"
#include "tcpkit/metrics.h"
#include "tcpkit/sock.h"

/* Reads per wake-up of one connection, so one busy socket cannot starve the
 * others on its loop; the poller is level-triggered and calls again. */
#define BENCH_READS_PER_WAKE 4
/* The shared request pattern holds whole lines and at least this many bytes,
 * so a large batch still goes out in one send(). */
#define BENCH_PATTERN_MIN        (64 * 1024)
#define BENCH_DEFAULT_CONNECT_MS 10000u
/* How long the conductor waits past the connect timeout for dials to report. */
#define BENCH_DIAL_SLACK_MS 2000u

enum { PHASE_WARMUP, PHASE_MEASURE, PHASE_DONE };
enum { CONN_DIALING, CONN_OPEN, CONN_DEAD };

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned dialing; /* dials not yet ended */
    unsigned alive;   /* connections open */
    atomic_int phase;
    const tk_bench_config *cfg;
    const unsigned char *pattern; /* request lines back to back */
    size_t pattern_len;           /* a multiple of cfg->size */
} bench_shared;

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
    size_t out_pos;     /* offset of the next byte to send inside a line */
} bench_conn;

struct bench_thread {
    /* Written by this thread only; read by the conductor after the join. */
    uint64_t requests;
    uint64_t errors;
    uint64_t connect_errors;
    uint64_t bytes_in;
    uint64_t bytes_out;
    unsigned connected;
    int last_error;
    int run_err;
    tk_hist hist;
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
}

static int config_valid(const tk_bench_config *c)
{
    return c->addrs && c->naddrs > 0 && c->connections >= 1 &&
           c->connections <= TK_BENCH_MAX_CONNECTIONS && c->pipeline >= 1 &&
           c->pipeline <= TK_BENCH_MAX_PIPELINE && c->size >= 2 && c->size <= TK_BENCH_MAX_SIZE &&
           c->duration_ms > 0 && c->threads >= 1 && c->threads <= TK_BENCH_MAX_THREADS;
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

static void conn_drop(bench_conn *c, int err)
{
    bench_thread *th = c->th;
    tk_io_stop(th->loop, &c->io);
    close(c->io.fd);
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

/* Owes n more request lines to the socket, sent at `now`. */
static void queue_requests(bench_conn *c, unsigned n, uint64_t now)
{
    const tk_bench_config *cfg = c->th->sh->cfg;
    for (unsigned i = 0; i < n; i++) {
        unsigned slot = c->head + c->inflight;
        if (slot >= cfg->pipeline)
            slot -= cfg->pipeline;
        c->sent_us[slot] = now;
        c->inflight++;
    }
    c->out_pending += (size_t)n * cfg->size;
}

/* Writes what the connection owes, usually in one send(); watches for
 * writability only while something is left. Returns 0 or a negative errno. */
static int conn_flush(bench_conn *c, int measuring)
{
    const bench_shared *sh = c->th->sh;
    size_t size = sh->cfg->size;

    while (c->out_pending > 0) {
        size_t len = sh->pattern_len - c->out_pos;
        if (len > c->out_pending)
            len = c->out_pending;
        ssize_t n = send(c->io.fd, sh->pattern + c->out_pos, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -errno;
        }
        c->out_pending -= (size_t)n;
        c->out_pos = (c->out_pos + (size_t)n) % size;
        if (measuring)
            c->th->bytes_out += (uint64_t)n;
    }
    return tk_io_set(c->th->loop, &c->io, c->out_pending ? TK_READ | TK_WRITE : TK_READ);
}

/* Matches `lines` reply lines with the oldest requests in flight and, while
 * the run lasts, sends as many new ones. Lines with no request to match (a
 * banner, say) are ignored. */
static int conn_answered(bench_conn *c, uint64_t lines, int phase)
{
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
            tk_hist_add(&th->hist, now - sent, 1);
            th->requests++;
        }
    }
    if (phase == PHASE_DONE || done == 0)
        return 0;
    queue_requests(c, done, now);
    return conn_flush(c, phase == PHASE_MEASURE);
}

static uint64_t count_lines(const unsigned char *p, size_t n)
{
    uint64_t lines = 0;
    const unsigned char *end = p + n;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        lines++;
        p++;
    }
    return lines;
}

static void on_conn_io(tk_loop *loop, tk_io *io, unsigned events)
{
    bench_conn *c = (bench_conn *)((char *)io - offsetof(bench_conn, io));
    bench_thread *th = c->th;
    int phase = atomic_load_explicit(&th->sh->phase, memory_order_relaxed);
    int err;

    if ((events & TK_WRITE) && (err = conn_flush(c, phase == PHASE_MEASURE)) < 0) {
        conn_drop(c, err);
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
            lines += count_lines(buf, (size_t)n);
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

static void on_dialed(tk_loop *loop, int fd, int err, void *arg)
{
    (void)loop;
    bench_conn *c = arg;
    bench_thread *th = c->th;

    c->dial = NULL;
    if (fd < 0) {
        c->state = CONN_DEAD;
        th->last_error = err;
        th->errors++;
        th->connect_errors++;
        note_dial_end(th->sh, 0);
        return;
    }
    /* Without TCP_NODELAY a pipelined batch could wait for an ACK (Nagle)
     * and the client would measure its own stack, not the server. */
    tk_sockopts o;
    tk_sockopts_init(&o);
    o.nodelay = 1;
    (void)tk_sock_apply(fd, &o);

    tk_io_init(&c->io, fd, on_conn_io);
    c->state = CONN_OPEN;
    th->connected++;
    note_dial_end(th->sh, 1);

    int phase = atomic_load_explicit(&th->sh->phase, memory_order_relaxed);
    if (phase == PHASE_DONE)
        return;
    queue_requests(c, th->sh->cfg->pipeline, tk_clock_us());
    int werr = conn_flush(c, phase == PHASE_MEASURE);
    if (werr < 0)
        conn_drop(c, werr);
}

static void start_dials(bench_thread *th)
{
    const tk_bench_config *cfg = th->sh->cfg;
    uint32_t timeout = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : BENCH_DEFAULT_CONNECT_MS;

    tk_loop_update_time(th->loop);
    for (unsigned i = 0; i < th->nconns; i++) {
        bench_conn *c = &th->conns[i];
        tk_dial *d = NULL;
        c->state = CONN_DIALING;
        int err = tk_dial_start(th->loop, cfg->addrs, cfg->naddrs, timeout, on_dialed, c, &d);
        if (err < 0) {
            c->state = CONN_DEAD;
            th->last_error = err;
            th->errors++;
            th->connect_errors++;
            note_dial_end(th->sh, 0);
        } else if (c->state == CONN_DIALING) {
            c->dial = d; /* not already ended inside tk_dial_start */
        }
    }
}

static void *thread_main(void *arg)
{
    bench_thread *th = arg;
    start_dials(th);
    th->run_err = tk_loop_run(th->loop);
    return NULL;
}

/* Releases what the thread held; its loop must not be running. */
static void thread_free(bench_thread *th)
{
    for (unsigned i = 0; th->conns && i < th->nconns; i++) {
        bench_conn *c = &th->conns[i];
        if (c->state == CONN_DIALING && c->dial) {
            tk_dial_cancel(c->dial);
            th->last_error = -ETIMEDOUT;
            th->errors++;
            th->connect_errors++;
        } else if (c->state == CONN_OPEN) {
            tk_io_stop(th->loop, &c->io);
            close(c->io.fd);
        }
    }
    if (th->loop)
        tk_loop_free(th->loop);
    free(th->conns);
    free(th->times);
}

static int thread_init(bench_thread *th, bench_shared *sh, unsigned nconns)
{
    unsigned depth = sh->cfg->pipeline;

    tk_hist_reset(&th->hist);
    th->sh = sh;
    th->nconns = nconns;
    th->conns = calloc(nconns, sizeof(*th->conns));
    th->times = calloc((size_t)nconns * depth, sizeof(*th->times));
    if (!th->conns || !th->times)
        return -ENOMEM;
    for (unsigned i = 0; i < nconns; i++) {
        th->conns[i].th = th;
        th->conns[i].state = CONN_DEAD;
        th->conns[i].sent_us = th->times + (size_t)i * depth;
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

/* Dials, warm-up and the measured window; returns the window in µs. */
static uint64_t conduct(bench_shared *sh)
{
    const tk_bench_config *cfg = sh->cfg;
    uint32_t connect_ms =
        cfg->connect_timeout_ms ? cfg->connect_timeout_ms : BENCH_DEFAULT_CONNECT_MS;
    struct timespec deadline = deadline_after((uint64_t)connect_ms + BENCH_DIAL_SLACK_MS);
    wait_zero(sh, &sh->dialing, &deadline);
    if (alive_now(sh) == 0)
        return 0;

    uint32_t warmup = cfg->warmup_ms;
    if (warmup == UINT32_MAX)
        warmup = cfg->duration_ms / 5 < 1000 ? cfg->duration_ms / 5 : 1000;
    deadline = deadline_after(warmup);
    wait_zero(sh, &sh->alive, &deadline);

    uint64_t start = tk_clock_us();
    atomic_store(&sh->phase, PHASE_MEASURE);
    deadline = deadline_after(cfg->duration_ms);
    wait_zero(sh, &sh->alive, &deadline);
    atomic_store(&sh->phase, PHASE_DONE);
    return tk_clock_us() - start;
}

static void collect(bench_thread *ths, unsigned n, uint64_t window_us, tk_bench_result *out)
{
    tk_hist all;
    tk_hist_reset(&all);
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < n; i++) {
        out->requests += ths[i].requests;
        out->errors += ths[i].errors;
        out->connect_errors += ths[i].connect_errors;
        out->connected += ths[i].connected;
        out->bytes_in += ths[i].bytes_in;
        out->bytes_out += ths[i].bytes_out;
        tk_hist_merge(&all, &ths[i].hist);
        if (ths[i].last_error)
            out->last_error = ths[i].last_error;
    }
    out->elapsed_s = (double)window_us / 1e6;
    out->rps = window_us ? (double)out->requests / out->elapsed_s : 0.0;
    out->p50_us = tk_hist_quantile(&all, 0.50);
    out->p99_us = tk_hist_quantile(&all, 0.99);
    out->p999_us = tk_hist_quantile(&all, 0.999);
    out->max_us = all.max;
    out->mean_us = tk_hist_mean(&all);
}

static unsigned char *make_pattern(size_t size, size_t *len)
{
    size_t lines = (BENCH_PATTERN_MIN + size - 1) / size;
    unsigned char *p = malloc(lines * size);
    if (!p)
        return NULL;
    memset(p, 'x', lines * size);
    for (size_t i = 1; i <= lines; i++)
        p[i * size - 1] = '\n';
    *len = lines * size;
    return p;
}

static int shared_init(bench_shared *sh, const tk_bench_config *cfg)
{
    pthread_condattr_t attr;
    memset(sh, 0, sizeof(*sh));
    sh->cfg = cfg;
    sh->dialing = cfg->connections;
    atomic_init(&sh->phase, PHASE_WARMUP);
    sh->pattern = make_pattern(cfg->size, &sh->pattern_len);
    if (!sh->pattern)
        return -ENOMEM;
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
    free((void *)sh->pattern);
}

int tk_bench_run(const tk_bench_config *cfg, tk_bench_result *out)
{
    if (!config_valid(cfg))
        return -EINVAL;
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
    for (unsigned i = 0; i < nthreads && err == 0; i++) {
        unsigned share = cfg->connections / nthreads + (i < cfg->connections % nthreads);
        err = thread_init(&ths[i], &sh, share);
    }
    for (unsigned i = 0; i < nthreads && err == 0; i++) {
        err = -pthread_create(&ths[i].tid, NULL, thread_main, &ths[i]);
        ths[i].started = err == 0;
    }

    uint64_t window_us = 0;
    if (err == 0)
        window_us = conduct(&sh);
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
    if (err == 0)
        collect(ths, nthreads, window_us, out);
    free(ths);
    shared_free(&sh);
    return err;
}

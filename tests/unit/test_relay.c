/* tk_relay between two real loopback TCP connections: the test holds the
 * far end of each (peer A and peer B) as watchers on the same loop, hands
 * the near ends to the relay, and runs the loop until what it waits for has
 * happened, under a deadline. Bytes, FINs, resets, idle limits, flow
 * control, counters and the pipe cache are checked from the peers' side.
 * With TLS on side A, peer A is an OpenSSL client of its own (which treats
 * an end without close_notify as an error) against a throwaway self-signed
 * certificate made here. */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tcpkit/relay.h"
#include "tcpkit/tls.h"

#define MiB (1024u * 1024u)

typedef struct relay_test relay_test;

/* The test's end of one connection. */
typedef struct {
    tk_io io; /* first, so the watcher leads to the peer */
    relay_test *t;
    const unsigned char *out; /* bytes still to send from out_off */
    size_t out_len, out_off;
    int shut_when_sent; /* shutdown(SHUT_WR) once out is sent */
    int shut_on_eof;    /* ... and only after the other side's FIN came */
    int shut;
    int shut_retry; /* close_notify did not fit: try again when writable */
    int reading;    /* 0: leave input unread (flow control) */
    unsigned char *in;
    size_t in_len, in_cap;
    int eof;
    int err;          /* negative errno from recv/send; -EPROTO for a TLS failure */
    SSL *ssl;         /* peer A over TLS, or NULL */
    int close_notify; /* TLS: the end came with the relay's close_notify */
} peer;

struct relay_test {
    tk_loop *loop;
    peer a, b;
    int ra, rb; /* the relay's ends until it takes them */
    tk_relay *r;
    /* What the callback saw. */
    int calls, in_start, called_in_start;
    tk_relay_end end;
    int end_err;
    char end_tls_err[256];
    uint64_t end_a2b, end_b2a, end_count_a2b, end_count_b2a;
    _Atomic uint64_t count_a2b, count_b2a;
    /* Running the loop until a condition holds. */
    int (*until)(relay_test *t);
    tk_timer deadline;
    int timed_out;
    /* Set when peer B has written nothing for quiet_ms (flow control). */
    tk_timer quiet;
    uint64_t quiet_ms;
    int quiet_fired;
};

/* ---- helpers ---- */

static unsigned char *random_bytes(size_t n, uint64_t seed)
{
    unsigned char *p = malloc(n ? n : 1);
    assert_non_null(p);
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (unsigned char)(x >> 24);
    }
    return p;
}

static void set_bufs(int fd, int size)
{
    if (size <= 0)
        return;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)), 0);
}

static int sockopt(int fd, int name)
{
    int v = 0;
    socklen_t len = sizeof(v);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, name, &v, &len), 0);
    return v;
}

/* A connected loopback pair, both ends non-blocking; bufsize > 0 fixes both
 * socket buffers of both ends (which also turns off their autotuning). */
static void tcp_pair(int bufsize, int *client, int *server)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    set_bufs(l, bufsize);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(l, 1), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sin, &len), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    set_bufs(c, bufsize);
    assert_int_equal(connect(c, (struct sockaddr *)&sin, sizeof(sin)), 0);
    int s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    assert_true(s >= 0);
    assert_int_equal(fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK), 0);
    close(l);
    *client = c;
    *server = s;
}

/* Closes fd so that its peer gets a reset rather than a FIN. */
static void close_with_reset(int fd)
{
    static const struct linger hard = {1, 0};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)), 0);
    close(fd);
}

static size_t count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    size_t n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ---- the peers ---- */

static void check(relay_test *t)
{
    if (t->until && t->until(t))
        tk_loop_stop(t->loop);
}

static void peer_update(peer *p)
{
    if (p->io.fd < 0)
        return;
    unsigned ev = 0;
    if (!p->err) {
        if (p->reading && !p->eof)
            ev |= TK_READ;
        if (p->out_off < p->out_len || p->shut_retry)
            ev |= TK_WRITE;
    }
    assert_int_equal(tk_io_set(p->t->loop, &p->io, ev), 0);
}

static void peer_maybe_shut(peer *p)
{
    if (p->shut || p->err || p->out_off < p->out_len)
        return;
    if (p->shut_when_sent || (p->shut_on_eof && p->eof)) {
        if (p->ssl) { /* close_notify first; a full socket takes it on a later turn */
            int r = SSL_shutdown(p->ssl);
            p->shut_retry = r < 0 && SSL_get_error(p->ssl, r) == SSL_ERROR_WANT_WRITE;
            if (p->shut_retry)
                return;
            assert_true(r >= 0);
        }
        p->shut = 1;
        assert_int_equal(shutdown(p->io.fd, SHUT_WR), 0);
    }
}

/* A TLS peer's read: bytes, 0 at close_notify, -EAGAIN, or -ECONNRESET /
 * -EPROTO (an end without close_notify counts as a failure here). */
static ssize_t peer_tls_read(peer *p, void *buf, size_t n)
{
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    int r = SSL_read_ex(p->ssl, buf, n, &got);
    if (r == 1)
        return (ssize_t)got;
    int e = SSL_get_error(p->ssl, r);
    int saved = errno;
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return -EAGAIN;
    if (e == SSL_ERROR_ZERO_RETURN) {
        p->close_notify = 1;
        return 0;
    }
    if (e == SSL_ERROR_SYSCALL && saved)
        return -saved;
    return -EPROTO;
}

static void peer_read(peer *p)
{
    for (;;) {
        if (p->in_cap - p->in_len < 65536) {
            p->in_cap = p->in_cap ? p->in_cap * 2 : 1024 * 1024;
            p->in = realloc(p->in, p->in_cap);
            assert_non_null(p->in);
        }
        ssize_t n;
        if (p->ssl) {
            n = peer_tls_read(p, p->in + p->in_len, p->in_cap - p->in_len);
        } else {
            n = recv(p->io.fd, p->in + p->in_len, p->in_cap - p->in_len, 0);
            if (n < 0)
                n = errno == EINTR ? -EAGAIN : -errno;
        }
        if (n > 0) {
            p->in_len += (size_t)n;
            continue;
        }
        if (n == 0)
            p->eof = 1;
        else if (n != -EAGAIN)
            p->err = (int)n;
        return;
    }
}

static void quiet_restart(relay_test *t)
{
    if (t->quiet_ms)
        assert_int_equal(tk_timer_start(t->loop, &t->quiet, t->quiet_ms), 0);
}

static void peer_write(peer *p)
{
    size_t before = p->out_off;
    while (p->out_off < p->out_len) {
        if (p->ssl) {
            size_t put = 0;
            ERR_clear_error();
            if (SSL_write_ex(p->ssl, p->out + p->out_off, p->out_len - p->out_off, &put) == 1) {
                p->out_off += put;
                continue;
            }
            int e = SSL_get_error(p->ssl, 0);
            ERR_clear_error();
            if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ)
                p->err = -EPROTO;
            break;
        }
        ssize_t n = send(p->io.fd, p->out + p->out_off, p->out_len - p->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            p->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            p->err = -errno;
        break;
    }
    if (p->out_off > before)
        quiet_restart(p->t);
}

static void on_peer(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    peer *p = (peer *)io;
    if ((events & (TK_READ | TK_HUP)) && p->reading && !p->eof && !p->err)
        peer_read(p);
    if ((events & (TK_WRITE | TK_HUP)) && p->out_off < p->out_len && !p->err)
        peer_write(p);
    peer_maybe_shut(p);
    peer_update(p);
    check(p->t);
}

/* Queues bytes for a peer to send (the buffer must outlive the test). */
static void peer_send(peer *p, const void *buf, size_t len, int shut_when_sent)
{
    p->out = buf;
    p->out_len = len;
    p->out_off = 0;
    p->shut_when_sent = shut_when_sent;
    peer_update(p);
}

/* Closes a peer's end abruptly: its far side gets a reset. */
static void peer_reset(peer *p)
{
    tk_io_stop(p->t->loop, &p->io);
    close_with_reset(p->io.fd);
    p->io.fd = -1;
}

/* ---- the relay and the loop ---- */

static void on_end(tk_relay *r, tk_relay_end end, int err, void *arg)
{
    relay_test *t = arg;
    t->calls++;
    if (t->in_start)
        t->called_in_start = 1;
    t->end = end;
    t->end_err = err;
    snprintf(t->end_tls_err, sizeof(t->end_tls_err), "%s", tk_relay_tls_error(r));
    t->end_a2b = tk_relay_bytes_a2b(r);
    t->end_b2a = tk_relay_bytes_b2a(r);
    t->end_count_a2b = atomic_load(&t->count_a2b);
    t->end_count_b2a = atomic_load(&t->count_b2a);
    t->r = NULL;
    check(t);
}

static void on_deadline(tk_loop *loop, tk_timer *timer)
{
    relay_test *t = (relay_test *)((char *)timer - offsetof(relay_test, deadline));
    t->timed_out = 1;
    tk_loop_stop(loop);
}

static void on_quiet(tk_loop *loop, tk_timer *timer)
{
    (void)loop;
    relay_test *t = (relay_test *)((char *)timer - offsetof(relay_test, quiet));
    t->quiet_fired = 1;
    check(t);
}

/* Runs the loop until until(t) holds; fails after ms milliseconds. */
static void run_until(relay_test *t, int (*until)(relay_test *t), uint64_t ms)
{
    t->until = until;
    if (until(t))
        return;
    t->timed_out = 0;
    assert_int_equal(tk_timer_start(t->loop, &t->deadline, ms), 0);
    assert_int_equal(tk_loop_run(t->loop), 0);
    tk_timer_stop(t->loop, &t->deadline);
    t->until = NULL;
    if (t->timed_out)
        fail_msg("timed out: calls=%d a{in=%zu eof=%d err=%d sent=%zu} "
                 "b{in=%zu eof=%d err=%d sent=%zu}",
                 t->calls, t->a.in_len, t->a.eof, t->a.err, t->a.out_off, t->b.in_len, t->b.eof,
                 t->b.err, t->b.out_off);
}

static void peer_init(relay_test *t, peer *p, int fd)
{
    memset(p, 0, sizeof(*p));
    tk_io_init(&p->io, fd, on_peer);
    p->t = t;
    p->reading = 1;
}

/* Two connections: peer A with the relay's A end, the relay's B end with
 * peer B. bufsize as for tcp_pair. */
static void pairs(relay_test *t, int bufsize)
{
    int a, b;
    tcp_pair(bufsize, &a, &t->ra);
    tcp_pair(bufsize, &t->rb, &b);
    peer_init(t, &t->a, a);
    peer_init(t, &t->b, b);
    t->calls = t->called_in_start = 0;
    t->end = (tk_relay_end)-1;
    t->end_err = 1;
    atomic_store(&t->count_a2b, 0);
    atomic_store(&t->count_b2a, 0);
}

static tk_relay_opts default_opts(relay_test *t)
{
    tk_relay_opts o;
    memset(&o, 0, sizeof(o));
    o.count_a2b = &t->count_a2b;
    o.count_b2a = &t->count_b2a;
    return o;
}

/* Starts the relay; the callback must not run inside the call. */
static void start(relay_test *t, const tk_relay_opts *o)
{
    tk_loop_update_time(t->loop); /* deadlines count from the loop's time */
    t->in_start = 1;
    int rc = tk_relay_start(t->loop, t->ra, t->rb, o, on_end, t, &t->r);
    t->in_start = 0;
    assert_int_equal(rc, 0);
    assert_non_null(t->r);
    assert_int_equal(t->calls, 0);
    t->ra = t->rb = -1;
    peer_update(&t->a);
    peer_update(&t->b);
}

static void peer_free(relay_test *t, peer *p)
{
    if (p->io.fd >= 0) {
        tk_io_stop(t->loop, &p->io);
        close(p->io.fd);
        p->io.fd = -1;
    }
    free(p->in);
    p->in = NULL;
    p->in_len = p->in_cap = 0;
    SSL_free(p->ssl);
    p->ssl = NULL;
    p->close_notify = 0;
}

/* Closes whatever a test left open, so the next one starts clean. */
static void finish(relay_test *t)
{
    if (t->r) {
        tk_relay_close(t->r);
        t->r = NULL;
    }
    if (t->ra >= 0)
        close(t->ra);
    if (t->rb >= 0)
        close(t->rb);
    t->ra = t->rb = -1;
    peer_free(t, &t->a);
    peer_free(t, &t->b);
    tk_timer_stop(t->loop, &t->quiet);
    t->quiet_ms = 0;
    t->quiet_fired = 0;
}

static int setup(void **state)
{
    relay_test *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_int_equal(tk_loop_new(&t->loop), 0);
    tk_timer_init(&t->deadline, on_deadline);
    tk_timer_init(&t->quiet, on_quiet);
    t->ra = t->rb = -1;
    t->a.io.fd = t->b.io.fd = -1;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    relay_test *t = *state;
    finish(t);
    tk_loop_run_pending(t->loop);
    tk_loop_free(t->loop);
    free(t);
    return 0;
}

/* ---- conditions ---- */

static int ended(relay_test *t)
{
    return t->calls > 0;
}

static int ended_and_both_eof(relay_test *t)
{
    return t->calls > 0 && t->a.eof && t->b.eof;
}

static int a_eof(relay_test *t)
{
    return t->a.eof || t->a.err;
}

static int b_eof(relay_test *t)
{
    return t->b.eof || t->b.err;
}

/* The peer saw its connection end, or the test closed it. */
static int closed(const peer *p)
{
    return p->io.fd < 0 || p->eof || p->err;
}

static int both_closed(relay_test *t)
{
    return closed(&t->a) && closed(&t->b);
}

static int ended_and_both_closed(relay_test *t)
{
    return t->calls > 0 && both_closed(t);
}

static int a_got_4(relay_test *t)
{
    return t->a.in_len >= 4;
}

static int quiet(relay_test *t)
{
    return t->quiet_fired;
}

/* ---- the tests ---- */

/* 8 MiB each way at once arrive intact; both FINs end the relay, and the
 * optional counters hold the same totals as tk_relay_bytes_*. */
static void bytes_flow_both_ways_intact(void **state)
{
    relay_test *t = *state;
    const size_t n = 8 * MiB;
    unsigned char *pa = random_bytes(n, 1), *pb = random_bytes(n, 2);
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    start(t, &o);
    peer_send(&t->a, pa, n, 1);
    peer_send(&t->b, pb, n, 1);
    run_until(t, ended_and_both_eof, 60000);
    assert_int_equal(t->calls, 1);
    assert_true(t->end == TK_RELAY_DONE_A || t->end == TK_RELAY_DONE_B);
    assert_int_equal(t->end_err, 0);
    assert_int_equal(t->b.in_len, n);
    assert_memory_equal(t->b.in, pa, n);
    assert_int_equal(t->a.in_len, n);
    assert_memory_equal(t->a.in, pb, n);
    assert_int_equal(t->a.err, 0);
    assert_int_equal(t->b.err, 0);
    assert_int_equal(t->end_a2b, n);
    assert_int_equal(t->end_b2a, n);
    assert_int_equal(t->end_count_a2b, t->end_a2b);
    assert_int_equal(t->end_count_b2a, t->end_b2a);
    finish(t);
    free(pa);
    free(pb);
}

/* The head reaches B before anything read from A, even when A's bytes were
 * already waiting and the head is larger than the socket buffers. */
static void head_reaches_b_before_a_bytes(void **state)
{
    relay_test *t = *state;
    const size_t hn = 300 * 1024, an = 1 * MiB;
    unsigned char *head = random_bytes(hn, 3), *pa = random_bytes(an, 4);
    pairs(t, 16384);
    assert_int_equal(send(t->a.io.fd, "early", 5, 0), 5);
    tk_relay_opts o = default_opts(t);
    o.head = head;
    o.head_len = hn;
    start(t, &o);
    memset(head, 0, hn); /* the relay keeps its own copy */
    unsigned char *want_head = random_bytes(hn, 3);
    peer_send(&t->a, pa, an, 1);
    t->b.shut_on_eof = 1;
    run_until(t, ended_and_both_eof, 60000);
    assert_int_equal(t->b.in_len, hn + 5 + an);
    assert_memory_equal(t->b.in, want_head, hn);
    assert_memory_equal(t->b.in + hn, "early", 5);
    assert_memory_equal(t->b.in + hn + 5, pa, an);
    assert_int_equal(t->a.in_len, 0);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->end, TK_RELAY_DONE_A);
    assert_int_equal(t->end_a2b, hn + 5 + an);
    assert_int_equal(t->end_count_a2b, hn + 5 + an);
    assert_int_equal(t->end_b2a, 0);
    finish(t);
    free(head);
    free(want_head);
    free(pa);
}

/* With a_eof, B gets the head and then EOF, without A being read; B can
 * still answer, and its FIN ends the relay as A's. */
static void a_eof_sends_head_then_fin(void **state)
{
    relay_test *t = *state;
    pairs(t, 0);
    assert_int_equal(shutdown(t->a.io.fd, SHUT_WR), 0);
    t->a.shut = 1;
    tk_relay_opts o = default_opts(t);
    o.a_eof = 1;
    o.head = "hello";
    o.head_len = 5;
    start(t, &o);
    run_until(t, b_eof, 10000);
    assert_int_equal(t->b.in_len, 5);
    assert_memory_equal(t->b.in, "hello", 5);
    assert_int_equal(t->b.err, 0);
    assert_int_equal(t->calls, 0);
    peer_send(&t->b, "world", 5, 1);
    run_until(t, ended_and_both_eof, 10000);
    assert_int_equal(t->a.in_len, 5);
    assert_memory_equal(t->a.in, "world", 5);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->end, TK_RELAY_DONE_A);
    assert_int_equal(t->end_err, 0);
    assert_int_equal(t->end_a2b, 5);
    assert_int_equal(t->end_b2a, 5);
    finish(t);
}

/* Peer A has all that B queued to send, or its connection ended. */
static int a_got_all(relay_test *t)
{
    return t->a.in_len >= t->b.out_len || t->a.err || t->a.eof;
}

/* A's FIN reaches B as EOF while B to A keeps flowing; B's FIN then ends
 * the relay as done by A, with one callback. */
static void half_close_from_a_then_fin_from_b(void **state)
{
    relay_test *t = *state;
    const size_t n = 2 * MiB;
    unsigned char *pb = random_bytes(n, 5);
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    start(t, &o);
    assert_int_equal(shutdown(t->a.io.fd, SHUT_WR), 0);
    t->a.shut = 1;
    run_until(t, b_eof, 10000);
    assert_int_equal(t->b.err, 0);
    assert_int_equal(t->b.in_len, 0);
    assert_int_equal(t->calls, 0);
    /* B to A still flows after A's FIN. */
    peer_send(&t->b, pb, n, 0);
    run_until(t, a_got_all, 30000);
    assert_int_equal(t->a.eof, 0);
    assert_int_equal(t->a.err, 0);
    assert_int_equal(t->calls, 0);
    assert_int_equal(tk_relay_bytes_b2a(t->r), n);
    assert_int_equal(tk_relay_bytes_a2b(t->r), 0);
    assert_int_equal(atomic_load(&t->count_b2a), n);
    /* B's FIN ends it. */
    assert_int_equal(shutdown(t->b.io.fd, SHUT_WR), 0);
    t->b.shut = 1;
    run_until(t, ended_and_both_eof, 10000);
    assert_int_equal(t->a.in_len, n);
    assert_memory_equal(t->a.in, pb, n);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->end, TK_RELAY_DONE_A);
    assert_int_equal(t->end_err, 0);
    assert_int_equal(t->end_b2a, n);
    assert_int_equal(t->end_count_b2a, n);
    assert_int_equal(t->a.err, 0);
    assert_int_equal(t->b.err, 0);
    finish(t);
    free(pb);
}

/* B closing first: A sees EOF, A to B still flows, and the relay ends as
 * done by B. */
static void fin_from_b_first_is_done_b(void **state)
{
    relay_test *t = *state;
    const size_t n = 1 * MiB;
    unsigned char *pa = random_bytes(n, 6);
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    start(t, &o);
    assert_int_equal(shutdown(t->b.io.fd, SHUT_WR), 0);
    t->b.shut = 1;
    run_until(t, a_eof, 10000);
    assert_int_equal(t->a.err, 0);
    assert_int_equal(t->calls, 0);
    peer_send(&t->a, pa, n, 1);
    run_until(t, ended_and_both_eof, 30000);
    assert_int_equal(t->b.in_len, n);
    assert_memory_equal(t->b.in, pa, n);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->end, TK_RELAY_DONE_B);
    assert_int_equal(t->end_err, 0);
    finish(t);
    free(pa);
}

/* A reset from one peer ends the relay with that side's error and resets
 * the other peer: it sees ECONNRESET, not a clean EOF. */
static void reset_case(relay_test *t, int reset_a)
{
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    start(t, &o);
    /* One exchange first, so both connections are known to carry bytes. */
    peer_send(&t->b, "ping", 4, 0);
    run_until(t, a_got_4, 10000);
    peer *gone = reset_a ? &t->a : &t->b, *other = reset_a ? &t->b : &t->a;
    peer_reset(gone);
    run_until(t, ended_and_both_closed, 10000);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->end, reset_a ? TK_RELAY_ERROR_A : TK_RELAY_ERROR_B);
    assert_int_equal(t->end_err, -ECONNRESET);
    assert_int_equal(other->eof, 0);
    assert_int_equal(other->err, -ECONNRESET);
    finish(t);
}

static void reset_on_a_is_error_a_and_resets_b(void **state)
{
    reset_case(*state, 1);
}

static void reset_on_b_is_error_b_and_resets_a(void **state)
{
    reset_case(*state, 0);
}

/* An idle limit ends a silent relay with that side's reason, no sooner
 * than the limit, and both peers are reset. */
static void idle_case(relay_test *t, uint32_t idle_a, uint32_t idle_b, tk_relay_end want,
                      uint32_t limit)
{
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    o.idle_ms[0] = idle_a;
    o.idle_ms[1] = idle_b;
    uint64_t t0 = tk_clock_us();
    start(t, &o);
    run_until(t, ended_and_both_closed, 10000);
    uint64_t took_ms = (tk_clock_us() - t0) / 1000;
    assert_true(took_ms + 1 >= limit);
    assert_int_equal(t->calls, 1);
    assert_int_equal(t->end, want);
    assert_int_equal(t->end_err, 0);
    assert_int_equal(t->a.err, -ECONNRESET);
    assert_int_equal(t->b.err, -ECONNRESET);
    finish(t);
}

static void idle_a_ends_with_idle_a(void **state)
{
    idle_case(*state, 40, 0, TK_RELAY_IDLE_A, 40);
}

static void idle_b_ends_with_idle_b(void **state)
{
    idle_case(*state, 0, 40, TK_RELAY_IDLE_B, 40);
}

static void shorter_idle_limit_wins(void **state)
{
    idle_case(*state, 5000, 40, TK_RELAY_IDLE_B, 40);
}

/* Bytes keep a relay from idling: A sends a byte every 20 ms for longer
 * than the 150 ms limit, and the relay ends only once A falls silent. */
static int ticks_left;

static relay_test *ticking;
static tk_timer tick;

static void on_tick(tk_loop *loop, tk_timer *timer)
{
    relay_test *t = ticking;
    if (t->a.io.fd >= 0 && !t->calls)
        assert_int_equal(send(t->a.io.fd, "t", 1, 0), 1);
    if (--ticks_left > 0)
        assert_int_equal(tk_timer_start(loop, timer, 20), 0);
}

static void traffic_keeps_relay_from_idling(void **state)
{
    relay_test *t = *state;
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    o.idle_ms[0] = o.idle_ms[1] = 150;
    start(t, &o);
    ticking = t;
    ticks_left = 15; /* 300 ms of traffic */
    tk_timer_init(&tick, on_tick);
    assert_int_equal(tk_timer_start(t->loop, &tick, 20), 0);
    uint64_t t0 = tk_clock_us();
    run_until(t, ended_and_both_closed, 10000);
    uint64_t took_ms = (tk_clock_us() - t0) / 1000;
    tk_timer_stop(t->loop, &tick);
    assert_int_equal(ticks_left, 0);
    assert_true(took_ms >= 300 + 150 - 1);
    assert_int_equal(t->b.in_len, 15);
    assert_int_equal(t->end, TK_RELAY_IDLE_A);
    finish(t);
}

/* Flow control: while peer A reads nothing, the relay stops reading B once
 * its pipe is full, so B's writes block with what is in flight bounded by
 * the pipe and the socket buffers; when A reads again everything arrives. */
static void backpressure_with(void **state, size_t n, size_t pipe_size, int sockbuf)
{
    relay_test *t = *state;
    unsigned char *pb = random_bytes(n, 7);
    pairs(t, sockbuf);
    /* Room between the relay and peer A, and between peer B and the relay. */
    uint64_t room_a =
        (uint64_t)sockopt(t->ra, SO_SNDBUF) + (uint64_t)sockopt(t->a.io.fd, SO_RCVBUF);
    uint64_t room_b =
        (uint64_t)sockopt(t->b.io.fd, SO_SNDBUF) + (uint64_t)sockopt(t->rb, SO_RCVBUF);
    t->a.reading = 0;
    tk_relay_opts o = default_opts(t);
    o.pipe_size = pipe_size;
    start(t, &o);
    t->quiet_ms = 200;
    quiet_restart(t);
    peer_send(&t->b, pb, n, 0);
    run_until(t, quiet, 30000);
    /* Twice: the numbers stay bounded while B stays blocked. */
    for (int round = 0; round < 2; round++) {
        uint64_t written = t->b.out_off, b2a = tk_relay_bytes_b2a(t->r);
        print_message("round %d: B wrote %llu, relay delivered %llu (room_a %llu room_b %llu)\n",
                      round, (unsigned long long)written, (unsigned long long)b2a,
                      (unsigned long long)room_a, (unsigned long long)room_b);
        assert_true(written < n);
        assert_true(b2a <= room_a + pipe_size);
        assert_true(written - b2a <= room_b + pipe_size);
        assert_int_equal(atomic_load(&t->count_b2a), b2a);
        assert_int_equal(t->a.in_len, 0);
        assert_int_equal(t->calls, 0);
        t->quiet_fired = 0;
        quiet_restart(t);
        run_until(t, quiet, 30000);
    }
    /* A reads: the rest flows. */
    t->quiet_ms = 0;
    tk_timer_stop(t->loop, &t->quiet);
    t->a.reading = 1;
    t->a.shut_on_eof = 1;
    peer_update(&t->a);
    t->b.shut_when_sent = 1;
    peer_update(&t->b);
    run_until(t, ended_and_both_eof, 60000);
    assert_int_equal(t->a.in_len, n);
    assert_memory_equal(t->a.in, pb, n);
    assert_int_equal(t->end, TK_RELAY_DONE_B);
    assert_int_equal(t->end_b2a, n);
    assert_int_equal(t->end_count_b2a, n);
    finish(t);
    free(pb);
}

static void backpressure_stops_reading_b_until_a_reads(void **state)
{
    backpressure_with(state, 8 * MiB, 65536, 16384);
}

/* Small socket buffers keep every read under the splice threshold, so the
 * copy path runs throughout: sends that A's full socket refuses must park
 * the rest in the pipe, in order, and nothing more is read meanwhile. */
static void backpressure_on_the_copy_path(void **state)
{
    backpressure_with(state, 2 * MiB, 16384, 4096);
}

/* The counters are added to, not set: two relays in turn on the same pair
 * of counters leave the sum of their totals. */
static void counters_add_across_relays(void **state)
{
    relay_test *t = *state;
    static char x[3000], y[1000];
    uint64_t sum_a2b = 0, sum_b2a = 0;
    for (int k = 0; k < 2; k++) {
        uint64_t ca = atomic_load(&t->count_a2b), cb = atomic_load(&t->count_b2a);
        pairs(t, 0);
        atomic_store(&t->count_a2b, ca);
        atomic_store(&t->count_b2a, cb);
        tk_relay_opts o = default_opts(t);
        o.head = "hd";
        o.head_len = 2;
        start(t, &o);
        peer_send(&t->a, x, k ? sizeof(x) : 100, 1);
        peer_send(&t->b, y, k ? sizeof(y) : 10, 1);
        run_until(t, ended_and_both_eof, 10000);
        sum_a2b += t->end_a2b;
        sum_b2a += t->end_b2a;
        assert_int_equal(t->end_a2b, 2 + (k ? sizeof(x) : 100));
        assert_int_equal(t->end_b2a, k ? sizeof(y) : 10);
        finish(t);
    }
    assert_int_equal(atomic_load(&t->count_a2b), sum_a2b);
    assert_int_equal(atomic_load(&t->count_b2a), sum_b2a);
}

/* tk_relay_close drops everything at once: no callback, and both peers see
 * a reset, even with bytes in flight. */
static void close_frees_without_callback_and_resets_both(void **state)
{
    relay_test *t = *state;
    const size_t n = 4 * MiB;
    unsigned char *pa = random_bytes(n, 8);
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    start(t, &o);
    peer_send(&t->b, "ping", 4, 0);
    run_until(t, a_got_4, 10000);
    t->b.reading = 0; /* leave A's bytes in flight */
    peer_update(&t->b);
    peer_send(&t->a, pa, n, 0);
    tk_relay_close(t->r);
    t->r = NULL;
    t->b.reading = 1;
    peer_update(&t->b);
    run_until(t, both_closed, 10000);
    assert_int_equal(t->calls, 0);
    assert_int_equal(t->a.eof, 0);
    assert_int_equal(t->b.eof, 0);
    assert_int_equal(t->a.err, -ECONNRESET);
    assert_int_equal(t->b.err, -ECONNRESET);
    finish(t);
    free(pa);
}

/* Even when a side has already failed, the callback comes from the loop,
 * never from inside tk_relay_start (start() checks calls right after). */
static void callback_never_runs_inside_start(void **state)
{
    relay_test *t = *state;
    /* A reset before the start. */
    pairs(t, 0);
    tk_io_stop(t->loop, &t->a.io);
    close_with_reset(t->a.io.fd);
    t->a.io.fd = -1;
    tk_relay_opts o = default_opts(t);
    start(t, &o);
    run_until(t, ended, 10000);
    assert_int_equal(t->called_in_start, 0);
    assert_int_equal(t->end, TK_RELAY_ERROR_A);
    run_until(t, b_eof, 10000);
    assert_int_equal(t->b.err, -ECONNRESET);
    finish(t);
    /* B reset before the start, with a head and a_eof to deliver at once. */
    pairs(t, 0);
    tk_io_stop(t->loop, &t->b.io);
    close_with_reset(t->b.io.fd);
    t->b.io.fd = -1;
    o.head = "head";
    o.head_len = 4;
    o.a_eof = 1;
    start(t, &o);
    run_until(t, ended, 10000);
    assert_int_equal(t->called_in_start, 0);
    assert_int_equal(t->end, TK_RELAY_ERROR_B);
    finish(t);
}

/* Runs one small relay to its end, both ways. */
static void small_relay(relay_test *t, size_t pipe_size)
{
    static char x[70000], y[5000];
    memset(x, 'x', sizeof(x));
    memset(y, 'y', sizeof(y));
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    o.pipe_size = pipe_size;
    start(t, &o);
    peer_send(&t->a, x, sizeof(x), 1);
    peer_send(&t->b, y, sizeof(y), 1);
    run_until(t, ended_and_both_eof, 10000);
    assert_int_equal(t->b.in_len, sizeof(x));
    assert_memory_equal(t->b.in, x, sizeof(x));
    assert_int_equal(t->a.in_len, sizeof(y));
    assert_memory_equal(t->a.in, y, sizeof(y));
    assert_true(t->end == TK_RELAY_DONE_A || t->end == TK_RELAY_DONE_B);
    finish(t);
}

/* With no pipe cache relays still work and keep no descriptors; with one,
 * a finished relay's two pipes are kept and reused by the next. */
static void pipe_cache_zero_still_relays(void **state)
{
    relay_test *t = *state;
    tk_relay_set_pipe_cache(0);
    size_t base = count_fds();
    small_relay(t, 0);
    assert_int_equal(count_fds(), base);
    small_relay(t, 4096);
    assert_int_equal(count_fds(), base);
    tk_relay_set_pipe_cache(64);
    small_relay(t, 0);
    assert_int_equal(count_fds(), base + 4);
    small_relay(t, 0);
    assert_int_equal(count_fds(), base + 4);
    tk_relay_set_pipe_cache(0);
    assert_int_equal(count_fds(), base);
    small_relay(t, 0);
    assert_int_equal(count_fds(), base);
    tk_relay_set_pipe_cache(64);
}

/* Pipes the process held before the relays of a test (stdio may be pipes). */
static unsigned char old_pipe[4096];

/* Calls fn for each pipe descriptor the process holds. */
static void each_pipe(void (*fn)(int fd, void *arg), void *arg)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        struct stat st;
        if (e->d_name[0] == '.' || fd == dirfd(d) || fd >= (int)sizeof(old_pipe))
            continue;
        if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode))
            fn(fd, arg);
    }
    closedir(d);
}

static void note_old_pipe(int fd, void *arg)
{
    (void)arg;
    old_pipe[fd] = 1;
}

typedef struct {
    int sizes[8];
    size_t n;
} pipe_list;

static void note_new_pipe(int fd, void *arg)
{
    pipe_list *l = arg;
    if (!old_pipe[fd] && l->n < 8)
        l->sizes[l->n++] = fcntl(fd, F_GETPIPE_SZ);
}

/* The sizes of the pipes made since note_old_pipe ran; returns how many. */
static size_t pipe_sizes(int *sizes)
{
    pipe_list l = {{0}, 0};
    each_pipe(note_new_pipe, &l);
    memcpy(sizes, l.sizes, sizeof(l.sizes));
    return l.n;
}

/* pipe_size is what each direction's pipe gets, and 0 means the kernel's
 * default, also when the pipes come from the cache: a pipe another relay
 * enlarged must not be handed out at its old size. */
static void pipe_size_holds_for_cached_pipes(void **state)
{
    relay_test *t = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int deflt = fcntl(fds[0], F_GETPIPE_SZ);
    close(fds[0]);
    close(fds[1]);
    int sizes[8];
    tk_relay_set_pipe_cache(0); /* empties the cache */
    tk_relay_set_pipe_cache(64);
    memset(old_pipe, 0, sizeof(old_pipe));
    each_pipe(note_old_pipe, NULL);
    /* Fresh pipes at a set size. */
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    o.pipe_size = 256 * 1024;
    start(t, &o);
    assert_int_equal(pipe_sizes(sizes), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sizes[i], 256 * 1024);
    peer_send(&t->a, "x", 1, 1);
    peer_send(&t->b, "y", 1, 1);
    run_until(t, ended_and_both_eof, 10000);
    finish(t);
    /* Those two pipes are now cached; a relay asking for the default gets
     * them back, and must get them at the default size. */
    assert_int_equal(pipe_sizes(sizes), 4);
    pairs(t, 0);
    o.pipe_size = 0;
    start(t, &o);
    assert_int_equal(pipe_sizes(sizes), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sizes[i], deflt);
    finish(t);
    tk_relay_set_pipe_cache(0);
    tk_relay_set_pipe_cache(64);
}

/* With no descriptor left for a pipe, tk_relay_start fails with -EMFILE,
 * closes both sockets and never calls back. */
static void no_pipe_is_emfile_and_closes_both(void **state)
{
    relay_test *t = *state;
    tk_relay_set_pipe_cache(0); /* so the relay must make pipes */
    tk_relay_set_pipe_cache(64);
    pairs(t, 0);
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int lowest_free = dup(0);
    assert_true(lowest_free >= 0);
    close(lowest_free);
    low = old;
    low.rlim_cur = (rlim_t)lowest_free;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    tk_relay_opts o = default_opts(t);
    tk_relay *r = (tk_relay *)&o; /* must be overwritten */
    int rc = tk_relay_start(t->loop, t->ra, t->rb, &o, on_end, t, &r);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    t->ra = t->rb = -1;
    assert_int_equal(rc, -EMFILE);
    assert_null(r);
    peer_update(&t->a);
    peer_update(&t->b);
    run_until(t, both_closed, 10000);
    assert_int_equal(t->calls, 0);
    finish(t);
}

/* A reset on a side that has already sent its FIN is still an error on
 * that side: the relay notices it while waiting on the other side, ends
 * with TK_RELAY_ERROR_A and resets B, rather than holding B open until B
 * speaks and then reporting a clean end. */
static void reset_after_fin_is_error_a(void **state)
{
    relay_test *t = *state;
    pairs(t, 0);
    tk_relay_opts o = default_opts(t);
    start(t, &o);
    assert_int_equal(shutdown(t->a.io.fd, SHUT_WR), 0);
    t->a.shut = 1;
    run_until(t, b_eof, 10000);
    assert_int_equal(t->calls, 0);
    peer_reset(&t->a);
    t->b.eof = 0; /* wait for what comes after the FIN */
    peer_update(&t->b);
    run_until(t, ended, 2000);
    assert_int_equal(t->end, TK_RELAY_ERROR_A);
    /* B already had its FIN, so its reads end cleanly whatever follows (the
     * kernel keeps the EOF); the reset shows when it writes. */
    struct pollfd pfd = {.fd = t->b.io.fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    assert_true(pfd.revents & POLLHUP);
    assert_int_equal(send(t->b.io.fd, "x", 1, MSG_NOSIGNAL), -1);
    assert_true(errno == EPIPE || errno == ECONNRESET);
    finish(t);
}

/* ---- ending while the loop still holds events for the relay ----
 *
 * The loop collects a batch of ready watchers and then calls each; its
 * contract is that a watcher's memory stays valid until deferred work runs.
 * These run in a child process so that a use after free (AddressSanitizer)
 * fails the test instead of killing the whole program. */

static int child_ended;

static void child_on_end(tk_relay *r, tk_relay_end end, int err, void *arg)
{
    (void)r;
    (void)end;
    (void)err;
    child_ended = 1;
    tk_loop_stop(arg);
}

static tk_relay *child_relay;

static void child_close_relay(tk_loop *loop, void *arg)
{
    (void)arg;
    tk_relay_close(child_relay);
    child_relay = NULL;
    tk_loop_stop(loop);
}

/* In the child: both relay sides become ready in one batch; the first one
 * handled ends the relay (close_from_post 0: A's reset) or a post that
 * runs before them closes it (close_from_post 1). */
static int child_relay_ends_mid_batch(int close_from_post)
{
    tk_loop *loop;
    if (tk_loop_new(&loop) < 0)
        return 2;
    int a, ra, rb, b;
    tcp_pair(0, &a, &ra);
    tcp_pair(0, &rb, &b);
    tk_relay_opts o;
    memset(&o, 0, sizeof(o));
    if (tk_relay_start(loop, ra, rb, &o, child_on_end, loop, &child_relay) < 0)
        return 2;
    if (close_from_post) {
        if (tk_loop_post(loop, child_close_relay, NULL) < 0)
            return 2;
    } else {
        close_with_reset(a);
        a = -1;
    }
    /* Now B's side becomes readable too, behind the first event. */
    if (send(b, "data", 4, 0) != 4)
        return 2;
    alarm(10);
    tk_loop_run(loop);
    alarm(0);
    if (!close_from_post && !child_ended)
        return 3;
    if (a >= 0)
        close(a);
    close(b);
    tk_loop_free(loop);
    return 0;
}

static void in_child(int (*fn)(int), int arg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(arg));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status))
        fail_msg("child killed by signal %d", WTERMSIG(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("child exited %d (1: a sanitizer report above)", WEXITSTATUS(status));
}

/* The relay ends on A's reset while B's readiness is still in the batch. */
static void end_with_other_side_pending_is_safe(void **state)
{
    (void)state;
    in_child(child_relay_ends_mid_batch, 0);
}

/* tk_relay_close from a post (as a balancer's drain does) while the relay
 * has a readiness event later in the same batch. */
static void close_from_post_with_event_pending_is_safe(void **state)
{
    (void)state;
    in_child(child_relay_ends_mid_batch, 1);
}

/* ---- TLS on side A ---- */

/* The throwaway certificate: made once, written to temporary files for
 * tk_tls_ctx_new and removed at once; the client trusts exactly it. */
static tk_tls_ctx *tls_server;
static SSL_CTX *tls_client;

static X509 *self_signed(EVP_PKEY *key)
{
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -60));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, key), 1);
    X509_NAME *name = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"tcpkit relay test", -1, -1,
                                                0),
                     1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    return x;
}

/* Writes one PEM object to a fresh temporary file; returns its name in path. */
static void pem_file(char *path, size_t cap, EVP_PKEY *key, X509 *cert)
{
    snprintf(path, cap, "/tmp/tcpkit-relay-tls-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    if (key)
        assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_X509(f, cert), 1);
    assert_int_equal(fclose(f), 0);
}

static void tls_contexts(void)
{
    if (tls_server)
        return;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *cert = self_signed(key);
    char cert_path[64], key_path[64], err[256];
    pem_file(cert_path, sizeof(cert_path), NULL, cert);
    pem_file(key_path, sizeof(key_path), key, NULL);
    tk_tls_config c;
    tk_tls_config_init(&c);
    c.cert_file = cert_path;
    c.key_file = key_path;
    c.ktls = 0;
    int rc = tk_tls_ctx_new(&c, 1, &tls_server, err, sizeof(err));
    unlink(cert_path);
    unlink(key_path);
    if (rc < 0)
        fail_msg("%s", err);
    tls_client = SSL_CTX_new(TLS_client_method());
    assert_non_null(tls_client);
    assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(tls_client), cert), 1);
    SSL_CTX_set_verify(tls_client, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(tls_client, SSL_MODE_ENABLE_PARTIAL_WRITE);
    X509_free(cert);
    EVP_PKEY_free(key);
}

/* pairs(), then a TLS handshake between peer A (client) and the relay's A
 * end (server), waiting on readiness; returns the server session for the
 * relay. */
static tk_tls *tls_pairs(relay_test *t, int bufsize)
{
    tls_contexts();
    pairs(t, bufsize);
    tk_tls *srv;
    assert_int_equal(tk_tls_new(tls_server, t->ra, NULL, &srv), 0);
    t->a.ssl = SSL_new(tls_client);
    assert_non_null(t->a.ssl);
    assert_int_equal(SSL_set_fd(t->a.ssl, t->a.io.fd), 1);
    SSL_set_connect_state(t->a.ssl);
    int srv_done = 0, cli_done = 0;
    for (int turn = 0; turn < 1000 && !(srv_done && cli_done); turn++) {
        if (!srv_done) {
            int r = tk_tls_handshake(srv);
            if (r < 0 && r != -EAGAIN)
                fail_msg("server handshake: %s", tk_tls_error(srv));
            srv_done = r == 0;
        }
        if (!cli_done) {
            int r = SSL_do_handshake(t->a.ssl);
            int e = r == 1 ? 0 : SSL_get_error(t->a.ssl, r);
            if (r != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                fail_msg("client handshake failed (%d)", e);
            cli_done = r == 1;
        }
        struct pollfd pf[2] = {{t->ra, POLLIN, 0}, {t->a.io.fd, POLLIN, 0}};
        if (!(srv_done && cli_done))
            (void)poll(pf, 2, 100);
    }
    assert_true(srv_done && cli_done);
    return srv;
}

static tk_relay_opts tls_opts(relay_test *t, tk_tls *srv)
{
    tk_relay_opts o = default_opts(t);
    o.tls_a = srv;
    return o;
}

static int a_tls_ended(relay_test *t)
{
    return t->calls > 0 && t->a.eof && t->b.eof;
}

/* 8 MiB each way at once, exact; each side's FIN reaches the other, B's as
 * close_notify then FIN (peer A refuses an end without it). */
static void tls_bytes_flow_both_ways_intact(void **state)
{
    relay_test *t = *state;
    const size_t n = 8 * MiB;
    unsigned char *pa = random_bytes(n, 21), *pb = random_bytes(n, 22);
    tk_relay_opts o = tls_opts(t, tls_pairs(t, 0));
    start(t, &o);
    peer_send(&t->a, pa, n, 1);
    peer_send(&t->b, pb, n, 1);
    run_until(t, a_tls_ended, 60000);
    assert_int_equal(t->a.err, 0);
    assert_int_equal(t->b.err, 0);
    assert_int_equal(t->a.close_notify, 1);
    assert_true(t->end == TK_RELAY_DONE_A || t->end == TK_RELAY_DONE_B);
    assert_int_equal(t->end_err, 0);
    assert_string_equal(t->end_tls_err, "");
    assert_int_equal(t->b.in_len, n);
    assert_memory_equal(t->b.in, pa, n);
    assert_int_equal(t->a.in_len, n);
    assert_memory_equal(t->a.in, pb, n);
    assert_int_equal(t->end_a2b, n);
    assert_int_equal(t->end_b2a, n);
    assert_int_equal(t->end_count_a2b, n);
    assert_int_equal(t->end_count_b2a, n);
    finish(t);
    free(pa);
    free(pb);
}

/* Neither peer reads while both send: what the relay holds stays bounded
 * both ways (a pipe towards B, one read towards A), nobody's writes get
 * through for good, and once both read everything arrives intact. */
static void tls_backpressure_both_ways(void **state)
{
    relay_test *t = *state;
    const size_t n = 4 * MiB, pipe_size = 65536;
    unsigned char *pa = random_bytes(n, 23), *pb = random_bytes(n, 24);
    tk_relay_opts o = tls_opts(t, tls_pairs(t, 16384));
    o.pipe_size = pipe_size;
    uint64_t room_a =
        (uint64_t)sockopt(t->ra, SO_SNDBUF) + (uint64_t)sockopt(t->a.io.fd, SO_RCVBUF);
    uint64_t room_b =
        (uint64_t)sockopt(t->rb, SO_SNDBUF) + (uint64_t)sockopt(t->b.io.fd, SO_RCVBUF);
    t->a.reading = t->b.reading = 0;
    start(t, &o);
    t->quiet_ms = 200;
    quiet_restart(t);
    peer_send(&t->a, pa, n, 0);
    peer_send(&t->b, pb, n, 0);
    run_until(t, quiet, 30000);
    for (int round = 0; round < 2; round++) {
        uint64_t a2b = tk_relay_bytes_a2b(t->r), b2a = tk_relay_bytes_b2a(t->r);
        assert_true(t->a.out_off < n && t->b.out_off < n);
        /* Towards B: the socket buffers and one pipe. Towards A: plaintext
         * counts once the session took it, so the buffers bound it; B's
         * bytes not yet taken are in its buffers or the one held read. */
        assert_true(a2b <= room_b + pipe_size);
        assert_true(b2a <= room_a);
        assert_true(t->b.out_off - b2a <= room_b + pipe_size);
        assert_int_equal(t->calls, 0);
        t->quiet_fired = 0;
        quiet_restart(t);
        run_until(t, quiet, 30000);
    }
    t->quiet_ms = 0;
    tk_timer_stop(t->loop, &t->quiet);
    t->a.reading = t->b.reading = 1;
    t->a.shut_when_sent = t->b.shut_when_sent = 1;
    peer_update(&t->a);
    peer_update(&t->b);
    run_until(t, a_tls_ended, 60000);
    assert_int_equal(t->a.err, 0);
    assert_int_equal(t->a.in_len, n);
    assert_memory_equal(t->a.in, pb, n);
    assert_int_equal(t->b.in_len, n);
    assert_memory_equal(t->b.in, pa, n);
    assert_int_equal(t->end_a2b, n);
    assert_int_equal(t->end_b2a, n);
    finish(t);
    free(pa);
    free(pb);
}

/* A half-closes (close_notify and FIN): B gets the bytes and a FIN while
 * B's bytes still reach A; B's FIN then reaches A as close_notify. */
static void tls_half_close_from_a(void **state)
{
    relay_test *t = *state;
    const size_t n = 1 * MiB;
    unsigned char *pb = random_bytes(n, 25);
    tk_relay_opts o = tls_opts(t, tls_pairs(t, 0));
    start(t, &o);
    peer_send(&t->a, "last words", 10, 1);
    run_until(t, b_eof, 10000);
    assert_int_equal(t->b.err, 0);
    assert_int_equal(t->b.in_len, 10);
    assert_memory_equal(t->b.in, "last words", 10);
    assert_int_equal(t->calls, 0);
    peer_send(&t->b, pb, n, 1);
    run_until(t, a_tls_ended, 30000);
    assert_int_equal(t->a.err, 0);
    assert_int_equal(t->a.close_notify, 1);
    assert_int_equal(t->a.in_len, n);
    assert_memory_equal(t->a.in, pb, n);
    assert_int_equal(t->end, TK_RELAY_DONE_A);
    finish(t);
    free(pb);
}

/* B half-closes first: A gets close_notify and can still send. */
static void tls_half_close_from_b(void **state)
{
    relay_test *t = *state;
    const size_t n = 1 * MiB;
    unsigned char *pa = random_bytes(n, 26);
    tk_relay_opts o = tls_opts(t, tls_pairs(t, 0));
    start(t, &o);
    peer_send(&t->b, "bye", 3, 1);
    run_until(t, a_eof, 10000);
    assert_int_equal(t->a.err, 0);
    assert_int_equal(t->a.close_notify, 1);
    assert_int_equal(t->a.in_len, 3);
    assert_int_equal(t->calls, 0);
    peer_send(&t->a, pa, n, 1);
    run_until(t, a_tls_ended, 30000);
    assert_int_equal(t->b.in_len, n);
    assert_memory_equal(t->b.in, pa, n);
    assert_int_equal(t->end, TK_RELAY_DONE_B);
    assert_int_equal(t->end_err, 0);
    finish(t);
    free(pa);
}

/* A reset under TLS is A's socket error, and B is reset too. */
static void tls_reset_on_a_is_error_a(void **state)
{
    relay_test *t = *state;
    tk_relay_opts o = tls_opts(t, tls_pairs(t, 0));
    start(t, &o);
    peer_send(&t->b, "ping", 4, 0);
    run_until(t, a_got_4, 10000);
    peer_reset(&t->a);
    run_until(t, ended_and_both_closed, 10000);
    assert_int_equal(t->end, TK_RELAY_ERROR_A);
    assert_int_equal(t->end_err, -ECONNRESET);
    assert_int_equal(t->b.err, -ECONNRESET);
    finish(t);
}

/* Bytes that are not a TLS record end the relay as a TLS failure of A,
 * with the reason. */
static void tls_garbage_is_error_a_with_reason(void **state)
{
    relay_test *t = *state;
    tk_relay_opts o = tls_opts(t, tls_pairs(t, 0));
    start(t, &o);
    static const char junk[64] = "this is not a TLS record";
    assert_int_equal(send(t->a.io.fd, junk, sizeof(junk), MSG_NOSIGNAL), (ssize_t)sizeof(junk));
    run_until(t, ended, 10000);
    assert_int_equal(t->end, TK_RELAY_ERROR_A);
    assert_int_equal(t->end_err, -EPROTO);
    assert_true(strlen(t->end_tls_err) > 0);
    print_message("tls error: %s\n", t->end_tls_err);
    run_until(t, b_eof, 10000);
    assert_int_equal(t->b.err, -ECONNRESET);
    finish(t);
}

static int b_got_73728(relay_test *t)
{
    return t->b.in_len >= 73728 || t->b.err || t->calls;
}

/* Records of 8192 and then 4 x 16384 bytes, read 4096 at a time (the pipe
 * size): every read is full, so the relay runs out of rounds (16 reads) in
 * the middle of the last record, whose rest is decrypted in the session
 * where no socket event announces it. It must still arrive, with nothing
 * more sent and no FIN. */
static void tls_pending_decrypted_bytes_are_relayed(void **state)
{
    relay_test *t = *state;
    const size_t n = 8192 + 4 * 16384;
    unsigned char *pa = random_bytes(n, 27);
    tk_relay_opts o = tls_opts(t, tls_pairs(t, 0));
    o.pipe_size = 4096;
    /* Every record goes out at once (no Nagle) and is in the relay's socket
     * before it starts, so its first wake-up sees them all. */
    int one = 1;
    assert_int_equal(setsockopt(t->a.io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
    uint64_t w0 = BIO_number_written(SSL_get_wbio(t->a.ssl));
    for (size_t off = 0; off < n;) {
        size_t want = off == 0 ? 8192 : 16384, put = 0;
        assert_int_equal(SSL_write_ex(t->a.ssl, pa + off, want, &put), 1);
        assert_int_equal(put, want);
        off += put;
    }
    int sent = (int)(BIO_number_written(SSL_get_wbio(t->a.ssl)) - w0), queued = 0;
    for (int i = 0; i < 1000 && queued < sent; i++) {
        struct pollfd pf = {t->ra, POLLIN, 0};
        (void)poll(&pf, 1, 10);
        assert_int_equal(ioctl(t->ra, FIONREAD, &queued), 0);
    }
    assert_int_equal(queued, sent);
    start(t, &o);
    run_until(t, b_got_73728, 10000);
    assert_int_equal(t->calls, 0);
    assert_int_equal(t->b.in_len, n);
    assert_memory_equal(t->b.in, pa, n);
    finish(t);
    free(pa);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(bytes_flow_both_ways_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(head_reaches_b_before_a_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(a_eof_sends_head_then_fin, setup, teardown),
        cmocka_unit_test_setup_teardown(half_close_from_a_then_fin_from_b, setup, teardown),
        cmocka_unit_test_setup_teardown(fin_from_b_first_is_done_b, setup, teardown),
        cmocka_unit_test_setup_teardown(reset_on_a_is_error_a_and_resets_b, setup, teardown),
        cmocka_unit_test_setup_teardown(reset_on_b_is_error_b_and_resets_a, setup, teardown),
        cmocka_unit_test_setup_teardown(idle_a_ends_with_idle_a, setup, teardown),
        cmocka_unit_test_setup_teardown(idle_b_ends_with_idle_b, setup, teardown),
        cmocka_unit_test_setup_teardown(shorter_idle_limit_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(traffic_keeps_relay_from_idling, setup, teardown),
        cmocka_unit_test_setup_teardown(backpressure_stops_reading_b_until_a_reads, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(backpressure_on_the_copy_path, setup, teardown),
        cmocka_unit_test_setup_teardown(counters_add_across_relays, setup, teardown),
        cmocka_unit_test_setup_teardown(close_frees_without_callback_and_resets_both, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(callback_never_runs_inside_start, setup, teardown),
        cmocka_unit_test_setup_teardown(pipe_cache_zero_still_relays, setup, teardown),
        cmocka_unit_test_setup_teardown(pipe_size_holds_for_cached_pipes, setup, teardown),
        cmocka_unit_test_setup_teardown(no_pipe_is_emfile_and_closes_both, setup, teardown),
        cmocka_unit_test_setup_teardown(reset_after_fin_is_error_a, setup, teardown),
        cmocka_unit_test(end_with_other_side_pending_is_safe),
        cmocka_unit_test(close_from_post_with_event_pending_is_safe),
        cmocka_unit_test_setup_teardown(tls_bytes_flow_both_ways_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_backpressure_both_ways, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_half_close_from_a, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_half_close_from_b, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_reset_on_a_is_error_a, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_garbage_is_error_a_with_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(tls_pending_decrypted_bytes_are_relayed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The connect-scan engine: one loop, a fixed table of probe slots, a work
 * cursor over hosts x ports plus a stack of probes to redo, a token bucket
 * for the connect rate, and a back-off when the machine itself runs out of
 * descriptors, ports or buffers. With TLS an open port goes on to a
 * handshake (SLOT_TLS) before its banner, which is then read through the
 * session; whatever the handshake finds, the port stays open. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpkit/loop.h"
#include "tcpkit/scan.h"
#include "tcpkit/sock.h"

#define MAX_CONCURRENCY  65536u
#define BACKOFF_FIRST_MS 10u
#define BACKOFF_MAX_MS   1000u
/* Most probes one turn of the loop starts: on loopback every answer comes
 * back inside connect(), so without a cap one callback would run the whole
 * scan and starve the progress timer and the probes still waiting. */
#define LAUNCH_BATCH 1024u

enum { SLOT_FREE, SLOT_CONNECTING, SLOT_TLS, SLOT_BANNER };

/* How release_slot() ends a probe's socket. */
enum { END_CLOSE, END_RESET, END_KEEP };

typedef struct scanner scanner;

typedef struct {
    scanner *s;
    tk_io io;
    tk_timer timer;
    uint64_t idx; /* host * nports + port index */
    int phase;
    int family;
    tk_tls *tls;    /* SLOT_TLS, and SLOT_BANNER after a handshake */
    size_t tls_rec; /* its record in the result's tls array */
    size_t blen;
    unsigned char buf[TK_SCAN_BANNER_MAX];
} probe;

struct scanner {
    tk_loop *loop;
    const tk_scan_config *c;
    tk_scan_result *r;
    probe *slots;
    unsigned nslots;
    unsigned *free_slots; /* stack of free slot numbers */
    unsigned nfree;
    unsigned limit; /* the cap now; lowered by local errors */
    unsigned in_flight;
    uint64_t total, next, done, open;
    uint64_t *redo; /* probes to start again (filtered retries, local errors) */
    size_t nredo, redo_cap;
    uint8_t *attempts;
    double tokens;
    double burst;
    uint64_t refill_us;
    int waiting; /* the pace timer is armed: launch nothing until it fires */
    unsigned backoff_ms;
    tk_timer pace;
    tk_timer tick;
    tk_defer kick;
    uint64_t start_us;
    int spare4, spare6; /* refused sockets kept for the next probe, or -1 */
    size_t banner_cap;
    size_t tls_cap;
    int err;
};

void tk_scan_config_init(tk_scan_config *c)
{
    memset(c, 0, sizeof(*c));
    c->timeout_ms = 1000;
    c->retries = 1;
    c->banner_timeout_ms = 1000;
    c->progress_ms = 250;
}

void tk_scan_result_free(tk_scan_result *r)
{
    free(r->states);
    free(r->banners);
    free(r->tls);
    memset(r, 0, sizeof(*r));
}

/* Errors that say this machine is short of something (descriptors, local
 * ports, buffers), not anything about the target port. */
static int local_error(int err)
{
    switch (err) {
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
    case EAGAIN:
    case EADDRNOTAVAIL: return 1;
    default: return 0;
    }
}

static int push_redo(scanner *s, uint64_t idx)
{
    if (s->nredo == s->redo_cap) {
        size_t cap = s->redo_cap ? s->redo_cap * 2 : 256;
        uint64_t *r = realloc(s->redo, cap * sizeof(*r));
        if (!r)
            return -ENOMEM;
        s->redo = r;
        s->redo_cap = cap;
    }
    s->redo[s->nredo++] = idx;
    return 0;
}

static void fail(scanner *s, int err)
{
    if (!s->err)
        s->err = err;
    tk_loop_stop(s->loop);
}

/* A socket whose connect() itself reported the refusal has been
 * disconnected by the kernel (back to a bare, unbound socket) and can
 * connect again: keeping one per family saves a socket() and a close() on
 * every closed port. Any other socket is closed. */
static void keep_spare(scanner *s, int fd, int family)
{
    int *spare = family == AF_INET6 ? &s->spare6 : &s->spare4;
    if (*spare < 0)
        *spare = fd;
    else
        close(fd);
}

static void release_slot(scanner *s, probe *p, int end)
{
    /* A session ends with the reset below: a close_notify would add a
     * write and change nothing for a peer about to see the reset. */
    tk_tls_free(p->tls);
    p->tls = NULL;
    if (p->io.fd >= 0) {
        tk_io_stop(s->loop, &p->io);
        if (end == END_KEEP) {
            keep_spare(s, p->io.fd, p->family);
        } else {
            if (end == END_RESET) {
                /* Reset instead of a FIN: no TIME_WAIT left behind per open
                 * port, so a full-range scan never runs short of local ports. */
                struct linger lg = {1, 0};
                (void)setsockopt(p->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            }
            close(p->io.fd);
        }
        p->io.fd = -1;
    }
    tk_timer_stop(s->loop, &p->timer);
    p->phase = SLOT_FREE;
    s->free_slots[s->nfree++] = (unsigned)(p - s->slots);
    s->in_flight--;
    tk_defer_queue(s->loop, &s->kick);
}

/* Records the final state of a probe, or queues it again when a filtered
 * port has retries left. */
static void conclude(scanner *s, uint64_t idx, tk_scan_state st)
{
    if (st == TK_SCAN_FILTERED && s->attempts[idx] <= s->c->retries) {
        if (push_redo(s, idx) < 0)
            fail(s, -ENOMEM);
        return;
    }
    s->r->states[idx] = (uint8_t)st;
    s->done++;
    if (st == TK_SCAN_OPEN)
        s->open++;
    if (s->done == s->total)
        tk_loop_stop(s->loop);
}

/* A local resource error: the probe goes back on the stack, the cap drops
 * below what is in flight now and nothing starts until a timer fires. */
static void back_off(scanner *s, uint64_t idx)
{
    s->r->local_retries++;
    if (s->attempts[idx])
        s->attempts[idx]--;
    if (push_redo(s, idx) < 0) {
        fail(s, -ENOMEM);
        return;
    }
    unsigned lim = s->in_flight * 3 / 4;
    s->limit = lim ? lim : 1;
    if (s->limit < s->r->min_concurrency)
        s->r->min_concurrency = s->limit;
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS)
        s->backoff_ms = BACKOFF_MAX_MS;
    s->waiting = 1;
    tk_timer_start(s->loop, &s->pace, s->backoff_ms);
}

/* After a probe that got an answer, the cap climbs back one step. */
static void recovered(scanner *s)
{
    s->backoff_ms = 0;
    if (s->limit < s->nslots)
        s->limit++;
}

static int self_connected(int fd)
{
    struct sockaddr_storage a, b;
    socklen_t la = sizeof(a), lb = sizeof(b);
    if (getsockname(fd, (struct sockaddr *)&a, &la) < 0 ||
        getpeername(fd, (struct sockaddr *)&b, &lb) < 0)
        return 0;
    return la == lb && memcmp(&a, &b, la) == 0;
}

static void keep_banner(scanner *s, probe *p)
{
    if (p->blen == 0)
        return;
    if (s->r->nbanners == s->banner_cap) {
        size_t cap = s->banner_cap ? s->banner_cap * 2 : 16;
        tk_scan_banner *b = realloc(s->r->banners, cap * sizeof(*b));
        if (!b) {
            fail(s, -ENOMEM);
            return;
        }
        s->r->banners = b;
        s->banner_cap = cap;
    }
    tk_scan_banner *b = &s->r->banners[s->r->nbanners++];
    b->host = (size_t)(p->idx / s->r->nports);
    b->port = (size_t)(p->idx % s->r->nports);
    b->len = p->blen;
    memcpy(b->data, p->buf, p->blen);
}

static void banner_done(scanner *s, probe *p)
{
    keep_banner(s, p);
    uint64_t idx = p->idx;
    release_slot(s, p, END_RESET);
    conclude(s, idx, TK_SCAN_OPEN);
}

/* The probe is over and its port open. */
static void open_done(scanner *s, probe *p)
{
    uint64_t idx = p->idx;
    release_slot(s, p, END_RESET);
    conclude(s, idx, TK_SCAN_OPEN);
}

/* TLS: the handshake, or the banner read after it, failed: why, and the
 * port is still open. */
static void tls_failed(scanner *s, probe *p, const char *why)
{
    snprintf(s->r->tls[p->tls_rec].error, TK_SCAN_TLS_ERROR_MAX, "%s", why);
    open_done(s, p);
}

/* Waits for what the session asked for; 0 or a negative errno. */
static int tls_wait(scanner *s, probe *p)
{
    return tk_io_set(s->loop, &p->io,
                     (tk_tls_want(p->tls) & TK_TLS_WANT_WRITE) ? TK_WRITE : TK_READ);
}

/* TLS: reads the banner through the session until a newline, a full buffer,
 * the end of the stream or an error. Decrypted bytes OpenSSL already holds
 * raise no event, so it reads until told to wait. */
static void tls_banner_read(scanner *s, probe *p)
{
    for (;;) {
        ssize_t n = tk_tls_read(p->tls, p->buf + p->blen, sizeof(p->buf) - p->blen);
        if (n == -EAGAIN && tls_wait(s, p) == 0)
            return;
        if (n > 0) {
            p->blen += (size_t)n;
            if (p->blen < sizeof(p->buf) && !memchr(p->buf, '\n', p->blen))
                continue;
        } else if (n < 0 && n != -EAGAIN) {
            snprintf(s->r->tls[p->tls_rec].error, TK_SCAN_TLS_ERROR_MAX, "%s",
                     tk_tls_error(p->tls));
        }
        banner_done(s, p);
        return;
    }
}

/* TLS: advances the handshake; once it is done, notes what it found and
 * reads the banner, if asked, through the session. */
static void tls_step(scanner *s, probe *p)
{
    int r = tk_tls_handshake(p->tls);
    if (r == -EAGAIN) {
        if ((r = tls_wait(s, p)) == 0)
            return;
        tls_failed(s, p, strerror(-r));
        return;
    }
    if (r < 0) {
        tls_failed(s, p, tk_tls_error(p->tls));
        return;
    }
    tk_scan_tls *rec = &s->r->tls[p->tls_rec];
    const char *verr = tk_tls_verify_error(p->tls);
    snprintf(rec->version, sizeof(rec->version), "%s", tk_tls_version(p->tls));
    snprintf(rec->cipher, sizeof(rec->cipher), "%s", tk_tls_cipher(p->tls));
    snprintf(rec->verify_error, sizeof(rec->verify_error), "%s", verr ? verr : "");
    rec->verified = tk_tls_ctx_verifies(s->c->tls) && !verr;
    if (!s->c->banner) {
        open_done(s, p);
        return;
    }
    p->phase = SLOT_BANNER;
    p->blen = 0;
    tk_timer_start(s->loop, &p->timer, s->c->banner_timeout_ms);
    tls_banner_read(s, p);
}

/* The name the port's certificate must carry: the configured one, the
 * target's name, or its address. */
static const char *tls_peer(const scanner *s, const probe *p, char *buf, size_t cap)
{
    const tk_scan_host *h = &s->c->hosts[p->idx / s->r->nports];
    if (s->c->tls_name)
        return s->c->tls_name;
    if (h->name[0])
        return h->name;
    const void *a = h->addr.ss.ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)&h->addr.ss)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)&h->addr.ss)->sin_addr;
    return inet_ntop(h->addr.ss.ss_family, a, buf, (socklen_t)cap);
}

/* TLS: an open port gets a record and a session, and its handshake starts,
 * bounded by tls_timeout_ms (else the probe timeout). */
static void tls_start(scanner *s, probe *p)
{
    if (s->r->ntls == s->tls_cap) {
        size_t cap = s->tls_cap ? s->tls_cap * 2 : 16;
        tk_scan_tls *t = realloc(s->r->tls, cap * sizeof(*t));
        if (!t) {
            fail(s, -ENOMEM);
            open_done(s, p);
            return;
        }
        s->r->tls = t;
        s->tls_cap = cap;
    }
    p->tls_rec = s->r->ntls++;
    tk_scan_tls *rec = &s->r->tls[p->tls_rec];
    memset(rec, 0, sizeof(*rec));
    rec->host = (size_t)(p->idx / s->r->nports);
    rec->port = (size_t)(p->idx % s->r->nports);

    char name[INET6_ADDRSTRLEN];
    int err = tk_tls_new(s->c->tls, p->io.fd, tls_peer(s, p, name, sizeof(name)), &p->tls);
    if (err < 0) {
        p->tls = NULL;
        tls_failed(s, p, strerror(-err));
        return;
    }
    p->phase = SLOT_TLS;
    tk_timer_start(s->loop, &p->timer,
                   s->c->tls_timeout_ms ? s->c->tls_timeout_ms : s->c->timeout_ms);
    tls_step(s, p);
}

/* The connect succeeded: a port is open unless the socket connected to
 * itself (a loopback port inside the ephemeral range with nothing listening
 * can be picked as its own source port: TCP simultaneous open). */
static void connected(scanner *s, probe *p)
{
    recovered(s);
    uint64_t idx = p->idx;
    if (self_connected(p->io.fd)) {
        release_slot(s, p, END_RESET);
        conclude(s, idx, TK_SCAN_CLOSED);
        return;
    }
    if (s->c->tls) {
        tls_start(s, p);
        return;
    }
    if (!s->c->banner || tk_io_set(s->loop, &p->io, TK_READ) < 0) {
        release_slot(s, p, END_RESET);
        conclude(s, idx, TK_SCAN_OPEN);
        return;
    }
    p->phase = SLOT_BANNER;
    p->blen = 0;
    tk_timer_start(s->loop, &p->timer, s->c->banner_timeout_ms);
}

/* Maps a connect error (positive errno) to a state, or backs off. The
 * socket is kept for another probe when connect() itself reported a
 * refusal (reusable). */
static void connect_failed(scanner *s, probe *p, int err, int reusable)
{
    uint64_t idx = p->idx;
    release_slot(s, p, reusable && err == ECONNREFUSED ? END_KEEP : END_CLOSE);
    if (local_error(err)) {
        back_off(s, idx);
        return;
    }
    recovered(s);
    conclude(s, idx, err == ECONNREFUSED ? TK_SCAN_CLOSED : TK_SCAN_FILTERED);
}

static void on_io(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    (void)events;
    probe *p = (probe *)((char *)io - offsetof(probe, io));
    scanner *s = p->s;
    if (p->phase == SLOT_CONNECTING) {
        int err = tk_sock_error(io->fd);
        if (err == 0)
            connected(s, p);
        else
            connect_failed(s, p, -err, 0);
        return;
    }
    if (p->phase == SLOT_TLS) {
        tls_step(s, p);
        return;
    }
    if (p->tls) {
        tls_banner_read(s, p);
        return;
    }
    ssize_t n = recv(io->fd, p->buf + p->blen, sizeof(p->buf) - p->blen, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        p->blen += (size_t)n;
        if (p->blen < sizeof(p->buf) && !memchr(p->buf, '\n', p->blen))
            return;
    }
    banner_done(s, p);
}

static void on_timeout(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    probe *p = (probe *)((char *)t - offsetof(probe, timer));
    scanner *s = p->s;
    if (p->phase == SLOT_BANNER) {
        banner_done(s, p);
        return;
    }
    if (p->phase == SLOT_TLS) {
        tls_failed(s, p, "handshake timed out");
        return;
    }
    uint64_t idx = p->idx;
    release_slot(s, p, END_CLOSE);
    conclude(s, idx, TK_SCAN_FILTERED);
}

/* A socket for the family: the spare one if a refused probe left it, else
 * a new one; -errno on failure. */
static int take_socket(scanner *s, int family)
{
    int *spare = family == AF_INET6 ? &s->spare6 : &s->spare4;
    if (*spare >= 0) {
        int fd = *spare;
        *spare = -1;
        return fd;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

/* Starts the connect and asks at once how it went: on loopback (and
 * whenever the answer is quick) the kernel has handled the SYN and its reply
 * before the first connect() returns, and a second connect() reports the
 * outcome (0, EALREADY while pending, or the error) in one call, where
 * waiting on epoll would cost two epoll_ctl() calls, a wake-up, a
 * getsockopt() and a timer. Returns 0 (connected), EALREADY (pending), a
 * positive errno, or -1 when a spare socket refuses to connect again (not
 * left reusable after all). */
static int dial(int fd, const tk_addr *a, int spare)
{
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0)
        return 0;
    int err = errno;
    if (spare && (err == EINVAL || err == EISCONN || err == EALREADY || err == EBADFD))
        return -1;
    if (err != EINPROGRESS)
        return err;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0 || errno == EISCONN)
        return 0;
    return errno == EINPROGRESS ? EALREADY : errno;
}

/* Starts one attempt; returns 0 or a positive errno for a local error. */
static int start_probe(scanner *s, uint64_t idx)
{
    const tk_scan_host *h = &s->c->hosts[idx / s->r->nports];
    uint16_t port = s->c->ports[idx % s->r->nports];
    tk_addr a = h->addr;
    tk_addr_set_port(&a, port);
    int family = a.ss.ss_family;
    s->attempts[idx]++;
    s->r->attempts++;
    int fd, err;
    for (;;) {
        int spare = (family == AF_INET6 ? s->spare6 : s->spare4) >= 0;
        fd = take_socket(s, family);
        if (fd < 0) {
            if (local_error(-fd))
                return -fd;
            /* No socket of this family at all (IPv6 disabled): nothing
             * answers. */
            s->attempts[idx] = (uint8_t)(s->c->retries + 1);
            conclude(s, idx, TK_SCAN_FILTERED);
            return 0;
        }
        err = dial(fd, &a, spare);
        if (err >= 0)
            break;
        /* This attempt starts over on a new socket. */
        close(fd);
    }
    probe *p = &s->slots[s->free_slots[--s->nfree]];
    s->in_flight++;
    p->idx = idx;
    p->family = family;
    p->phase = SLOT_CONNECTING;
    tk_io_init(&p->io, fd, on_io);
    if (err == 0) {
        connected(s, p);
        return 0;
    }
    if (err != EALREADY) {
        connect_failed(s, p, err, 1);
        return 0;
    }
    int rc = tk_io_set(s->loop, &p->io, TK_WRITE);
    if (rc < 0) {
        connect_failed(s, p, -rc == ENOMEM ? ENOBUFS : -rc, 0);
        return 0;
    }
    tk_timer_start(s->loop, &p->timer, s->c->timeout_ms);
    return 0;
}

/* Takes a token if the rate allows a connect now; otherwise arms the pace
 * timer for when one will be there. */
static int take_token(scanner *s)
{
    if (!s->c->rate)
        return 1;
    uint64_t now = tk_clock_us();
    s->tokens += (double)(now - s->refill_us) * s->c->rate / 1e6;
    s->refill_us = now;
    if (s->tokens > s->burst)
        s->tokens = s->burst;
    if (s->tokens >= 1.0) {
        s->tokens -= 1.0;
        return 1;
    }
    uint64_t wait_ms = (uint64_t)((1.0 - s->tokens) * 1000.0 / s->c->rate) + 1;
    s->waiting = 1;
    tk_timer_start(s->loop, &s->pace, wait_ms);
    return 0;
}

static void launch(scanner *s)
{
    unsigned started = 0;
    while (!s->err && !s->waiting && s->in_flight < s->limit && s->nfree &&
           (s->nredo || s->next < s->total)) {
        if (started++ == LAUNCH_BATCH) {
            tk_defer_queue(s->loop, &s->kick);
            return;
        }
        if (!take_token(s))
            return;
        uint64_t idx = s->nredo ? s->redo[--s->nredo] : s->next++;
        int err = start_probe(s, idx);
        if (err) {
            back_off(s, idx);
            return;
        }
    }
}

static void on_kick(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    launch((scanner *)((char *)d - offsetof(scanner, kick)));
}

static void on_pace(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    scanner *s = (scanner *)((char *)t - offsetof(scanner, pace));
    s->waiting = 0;
    launch(s);
}

static void report(scanner *s)
{
    tk_scan_progress pr = {.done = s->done,
                           .total = s->total,
                           .open = s->open,
                           .in_flight = s->in_flight,
                           .elapsed_s = (double)(tk_clock_us() - s->start_us) / 1e6};
    s->c->progress(&pr, s->c->progress_arg);
}

static void on_tick(tk_loop *loop, tk_timer *t)
{
    scanner *s = (scanner *)((char *)t - offsetof(scanner, tick));
    report(s);
    tk_timer_start(loop, t, s->c->progress_ms ? s->c->progress_ms : 250);
}

static int setup(scanner *s, const tk_scan_config *c, tk_scan_result *out)
{
    uint64_t total = (uint64_t)c->nhosts * c->nports;
    out->nhosts = c->nhosts;
    out->nports = c->nports;
    out->states = calloc(total, 1);
    s->attempts = calloc(total, 1);
    s->nslots = c->concurrency ? c->concurrency : tk_scan_default_concurrency();
    if (s->nslots > total)
        s->nslots = (unsigned)total;
    s->slots = calloc(s->nslots, sizeof(*s->slots));
    s->free_slots = calloc(s->nslots, sizeof(*s->free_slots));
    if (!out->states || !s->attempts || !s->slots || !s->free_slots)
        return -ENOMEM;
    for (unsigned i = 0; i < s->nslots; i++) {
        probe *p = &s->slots[i];
        p->s = s;
        tk_io_init(&p->io, -1, on_io);
        tk_timer_init(&p->timer, on_timeout);
        s->free_slots[s->nfree++] = s->nslots - 1 - i;
    }
    s->c = c;
    s->r = out;
    s->total = total;
    s->limit = s->nslots;
    out->min_concurrency = s->nslots;
    /* Up to a tenth of a second's worth of connects may leave at once. */
    s->burst = c->rate ? 1.0 + c->rate / 10.0 : 0;
    s->tokens = c->rate ? 1.0 : 0;
    tk_timer_init(&s->pace, on_pace);
    tk_timer_init(&s->tick, on_tick);
    tk_defer_init(&s->kick, on_kick);
    return 0;
}

int tk_scan_run(const tk_scan_config *c, tk_scan_result *out)
{
    memset(out, 0, sizeof(*out));
    if (!c->hosts || !c->ports || c->nhosts == 0 || c->nports == 0 ||
        c->concurrency > MAX_CONCURRENCY || c->timeout_ms == 0 || c->retries > 100)
        return -EINVAL;
    if ((uint64_t)c->nhosts * c->nports > TK_SCAN_MAX_PROBES)
        return -E2BIG;
    scanner s;
    memset(&s, 0, sizeof(s));
    s.spare4 = s.spare6 = -1;
    int err = tk_loop_new(&s.loop);
    if (err < 0)
        return err;
    err = setup(&s, c, out);
    if (err == 0) {
        s.start_us = tk_clock_us();
        s.refill_us = s.start_us;
        if (c->progress)
            tk_timer_start(s.loop, &s.tick, c->progress_ms ? c->progress_ms : 250);
        tk_defer_queue(s.loop, &s.kick);
        err = tk_loop_run(s.loop);
        for (unsigned i = 0; i < s.nslots; i++)
            if (s.slots[i].phase != SLOT_FREE)
                release_slot(&s, &s.slots[i], END_RESET);
        if (!err)
            err = s.err;
        if (c->progress && !err)
            report(&s);
    }
    if (s.spare4 >= 0)
        close(s.spare4);
    if (s.spare6 >= 0)
        close(s.spare6);
    tk_timer_stop(s.loop, &s.pace);
    tk_timer_stop(s.loop, &s.tick);
    tk_defer_cancel(s.loop, &s.kick);
    tk_loop_free(s.loop);
    out->elapsed_s = (double)(tk_clock_us() - s.start_us) / 1e6;
    free(s.slots);
    free(s.free_slots);
    free(s.attempts);
    free(s.redo);
    if (err)
        tk_scan_result_free(out);
    return err;
}

/* Two sockets joined by splice() through a pipe per direction, or with
 * TLS on side A, through OpenSSL and the loop's scratch buffer. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpkit/relay.h"
#include "tcpkit/sock.h"

/* Most rounds of read-then-write one direction makes per wake-up, so one busy
 * stream cannot starve the rest of the loop. */
#define PUMP_ROUNDS 16

typedef struct {
    int rd, wr;  /* the pipe's ends */
    size_t size; /* its capacity */
} relay_pipe;

/* One direction: bytes read from src wait in the pipe until dst takes them. */
typedef struct {
    int src, dst; /* indexes of the sides (0 = A, 1 = B) */
    relay_pipe pipe;
    size_t in_pipe;
    size_t last_read;    /* size of the last read into the pipe */
    unsigned char *head; /* preamble then head: sent before the pipe's bytes */
    size_t head_len, head_off;
    size_t uncounted; /* leading head bytes (the preamble) not counted */
    uint64_t bytes;
    _Atomic uint64_t *counter;
    unsigned char eof;      /* src sent its FIN */
    unsigned char fin_sent; /* dst's write side is shut */
    unsigned char want;     /* TK_READ (src) or TK_WRITE (dst) or 0 */
    unsigned char flip;     /* a TLS call waits for the other readiness of its socket */
    /* To a TLS destination: bytes read but not yet taken by the session,
     * offered again as they are (one read at most; NULL when none wait). */
    unsigned char *hold;
    size_t hold_len, hold_off;
} relay_dir;

typedef struct tk_relay tk_relay;

/* A socket's watcher, and which side of which relay it is. */
typedef struct {
    tk_io io; /* first, so the watcher leads to its side */
    tk_relay *relay;
    int index; /* 0 = A, 1 = B */
} relay_side;

struct tk_relay {
    tk_loop *loop;
    relay_side side[2];
    relay_dir dir[2]; /* 0: A to B, 1: B to A */
    tk_timer idle;
    tk_defer release; /* frees the relay once the loop's batch is over */
    tk_defer reread;  /* A's decrypted bytes wait in the session: read them */
    tk_tls *tls;      /* A's TLS session, or NULL */
    uint64_t last[2]; /* loop time of the last byte to or from each side */
    uint32_t idle_ms[2];
    tk_relay_cb cb;
    void *arg;
    int first_fin; /* the side whose FIN came first, or -1 */
};

/* ---- the per-thread pipe cache ---- */

typedef struct {
    relay_pipe *v;
    size_t n, max;
    size_t default_size; /* a fresh pipe's capacity, once known */
} pipe_cache;

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_destroy(void *p)
{
    pipe_cache *c = p;
    for (size_t i = 0; i < c->n; i++) {
        close(c->v[i].rd);
        close(c->v[i].wr);
    }
    free(c->v);
    free(c);
}

static void cache_key_make(void)
{
    (void)pthread_key_create(&cache_key, cache_destroy);
}

static pipe_cache *cache_get(void)
{
    pthread_once(&cache_once, cache_key_make);
    pipe_cache *c = pthread_getspecific(cache_key);
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return NULL;
        c->max = 64;
        if (pthread_setspecific(cache_key, c) != 0) {
            free(c);
            return NULL;
        }
    }
    return c;
}

void tk_relay_set_pipe_cache(size_t max)
{
    pipe_cache *c = cache_get();
    if (!c)
        return;
    while (c->n > max) {
        c->n--;
        close(c->v[c->n].rd);
        close(c->v[c->n].wr);
    }
    c->max = max;
}

/* A pipe of the wanted size (0: the kernel's default), from the cache if
 * possible; a cached pipe is resized when it differs. */
static int pipe_take(relay_pipe *p, size_t size)
{
    pipe_cache *c = cache_get();
    if (c && c->n > 0) {
        *p = c->v[--c->n];
    } else {
        int fds[2];
        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
            return -errno;
        p->rd = fds[0];
        p->wr = fds[1];
        int got = fcntl(p->wr, F_GETPIPE_SZ);
        p->size = got > 0 ? (size_t)got : 65536;
        if (c && !c->default_size)
            c->default_size = p->size;
    }
    if (size == 0)
        size = c && c->default_size ? c->default_size : 65536;
    if (size != p->size) {
        int got = fcntl(p->wr, F_SETPIPE_SZ, (int)size);
        if (got < 0) /* above pipe-max-size for this user: keep what it has */
            got = fcntl(p->wr, F_GETPIPE_SZ);
        p->size = got > 0 ? (size_t)got : 65536;
    }
    return 0;
}

/* Returns a pipe to the cache if it is empty and there is room, else closes it. */
static void pipe_give(relay_pipe *p, int empty)
{
    if (p->rd < 0)
        return;
    pipe_cache *c = empty ? cache_get() : NULL;
    if (c && c->n < c->max) {
        if (!c->v || c->n == 0 || (c->n & (c->n - 1)) == 0) {
            size_t cap = c->n ? c->n * 2 : 8;
            relay_pipe *v = realloc(c->v, cap * sizeof(*v));
            if (v)
                c->v = v;
            else
                c = NULL;
        }
        if (c) {
            c->v[c->n++] = *p;
            p->rd = p->wr = -1;
            return;
        }
    }
    close(p->rd);
    close(p->wr);
    p->rd = p->wr = -1;
}

/* ---- relaying ---- */

static void relay_free(tk_relay *r, int reset_a, int reset_b)
{
    static const struct linger hard = {1, 0};
    int reset[2] = {reset_a, reset_b};
    tk_timer_stop(r->loop, &r->idle);
    tk_defer_cancel(r->loop, &r->reread);
    tk_tls_free(r->tls);
    r->tls = NULL;
    for (int s = 0; s < 2; s++) {
        tk_io_stop(r->loop, &r->side[s].io);
        if (reset[s])
            (void)setsockopt(r->side[s].io.fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
        close(r->side[s].io.fd);
        relay_dir *d = &r->dir[s];
        pipe_give(&d->pipe, d->in_pipe == 0);
        free(d->head);
        d->head = NULL;
        free(d->hold);
        d->hold = NULL;
    }
    /* The loop may still hold this batch's events for the watchers: the
     * memory goes once the batch is over. */
    tk_defer_queue(r->loop, &r->release);
}

static void on_release(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    free((char *)d - offsetof(tk_relay, release));
}

/* True when d reads the TLS side A. */
static int tls_source(const tk_relay *r, const relay_dir *d)
{
    return r->tls && d->src == 0;
}

/* True when d reads the TLS side and decrypted bytes wait in the session:
 * no socket event will announce them. */
static int tls_more(const tk_relay *r, const relay_dir *d)
{
    return tls_source(r, d) && tk_tls_pending(r->tls);
}

static void relay_end(tk_relay *r, tk_relay_end end, int err)
{
    int reset_a = end == TK_RELAY_ERROR_B || end == TK_RELAY_IDLE_A || end == TK_RELAY_IDLE_B;
    int reset_b = end == TK_RELAY_ERROR_A || end == TK_RELAY_IDLE_A || end == TK_RELAY_IDLE_B;
    r->cb(r, end, err, r->arg);
    relay_free(r, reset_a, reset_b);
}

static void account(tk_relay *r, relay_dir *d, size_t n)
{
    d->bytes += n;
    if (d->counter)
        atomic_fetch_add_explicit(d->counter, n, memory_order_relaxed);
    uint64_t now = tk_loop_now(r->loop);
    r->last[0] = r->last[1] = now;
}

/* Outcome of pumping one direction. */
enum { PUMP_WAIT = 0, PUMP_FAIL_SRC, PUMP_FAIL_DST };

/* Reads below this size are copied (recv into the loop's scratch buffer,
 * send) rather than spliced: for small messages two copies cost less than
 * moving page references through a pipe. A read of at least this size
 * switches the direction to splice until a read comes back smaller. */
#define SPLICE_MIN (16 * 1024)

static size_t copy_cap(tk_relay *r, const relay_dir *d)
{
    size_t cap = tk_loop_scratch_size(r->loop);
    return cap < d->pipe.size ? cap : d->pipe.size;
}

/* Reads d's source: recv, or tk_tls_read on the TLS side (which may need
 * the socket writable: d->flip). Returns bytes, 0 at EOF, -EAGAIN to wait,
 * or another negative errno. */
static ssize_t src_read(tk_relay *r, relay_dir *d, int src, void *buf, size_t cap)
{
    if (tls_source(r, d)) {
        ssize_t n = tk_tls_read(r->tls, buf, cap);
        if (n == -EAGAIN)
            d->flip = (tk_tls_want(r->tls) & TK_TLS_WANT_WRITE) != 0;
        return n;
    }
    ssize_t n = recv(src, buf, cap, 0);
    if (n < 0)
        return errno == EINTR ? -EAGAIN : -errno;
    return n;
}

/* One copied read: recv into the scratch buffer, send what dst takes, and
 * park the rest in the (empty) pipe, which holds it all since the read was
 * no larger than the pipe. *n is the bytes read (0 at EOF, -1 would block). */
static int copy_once(tk_relay *r, relay_dir *d, int src, int dst, ssize_t *n, int *err)
{
    unsigned char *buf = tk_loop_scratch(r->loop);
    size_t cap = copy_cap(r, d);
    *n = src_read(r, d, src, buf, cap);
    if (*n < 0) {
        if (*n == -EAGAIN) {
            *n = -1;
            return PUMP_WAIT;
        }
        *err = (int)*n;
        return PUMP_FAIL_SRC;
    }
    if (*n == 0)
        return PUMP_WAIT;
    size_t got = (size_t)*n;
    d->last_read = got;
    r->last[d->src] = tk_loop_now(r->loop);
    ssize_t w = send(dst, buf, got, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            *err = -errno;
            return PUMP_FAIL_DST;
        }
        w = 0;
    }
    account(r, d, (size_t)w);
    size_t rest = got - (size_t)w;
    if (rest > 0) {
        ssize_t p = write(d->pipe.wr, buf + w, rest);
        if (p != (ssize_t)rest) { /* cannot happen with an empty pipe */
            *err = -ENOBUFS;
            return PUMP_FAIL_SRC;
        }
        d->in_pipe = rest;
    }
    return PUMP_WAIT;
}

/* Moves bytes src -> pipe -> dst until one of them would block (d->want
 * says which), the direction is finished, or PUMP_ROUNDS pass. On failure
 * *err is the socket error. */
static int pump(tk_relay *r, relay_dir *d, int *err)
{
    int src = r->side[d->src].io.fd, dst = r->side[d->dst].io.fd;
    d->want = 0;
    d->flip = 0;
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        if (d->head_off < d->head_len) {
            ssize_t n = send(dst, d->head + d->head_off, d->head_len - d->head_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    d->want = TK_WRITE;
                    return PUMP_WAIT;
                }
                *err = -errno;
                return PUMP_FAIL_DST;
            }
            size_t k = (size_t)n, skip = k < d->uncounted ? k : d->uncounted;
            d->uncounted -= skip;
            d->head_off += k;
            account(r, d, k - skip);
            if (d->head_off == d->head_len) {
                free(d->head);
                d->head = NULL;
                d->head_len = d->head_off = 0;
            }
            continue;
        }
        if (d->in_pipe > 0) {
            ssize_t n =
                splice(d->pipe.rd, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    d->want = TK_WRITE;
                    return PUMP_WAIT;
                }
                *err = -errno;
                return PUMP_FAIL_DST;
            }
            d->in_pipe -= (size_t)n;
            account(r, d, (size_t)n);
            if (d->in_pipe > 0)
                continue;
            if (d->eof)
                continue;
            /* A short read drained the socket: epoll reports it again if more
             * came meanwhile, so save the read that would say EAGAIN. (A TLS
             * read returns one record: the session says if more waits.) */
            if (d->last_read < d->pipe.size && !tls_more(r, d)) {
                d->want = TK_READ;
                return PUMP_WAIT;
            }
            continue;
        }
        if (d->eof) {
            if (!d->fin_sent) {
                d->fin_sent = 1;
                if (r->first_fin < 0)
                    r->first_fin = d->src;
                if (shutdown(dst, SHUT_WR) < 0) {
                    /* ENOTCONN: the destination was reset meanwhile. */
                    int e = tk_sock_error(dst);
                    *err = e ? e : errno == ENOTCONN ? -ECONNRESET : -errno;
                    return PUMP_FAIL_DST;
                }
            }
            return PUMP_WAIT;
        }
        ssize_t n;
        if ((d->last_read >= SPLICE_MIN || d->last_read >= d->pipe.size) && !tls_source(r, d)) {
            n = splice(src, NULL, d->pipe.wr, NULL, d->pipe.size,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe = d->last_read = (size_t)n;
                r->last[d->src] = tk_loop_now(r->loop);
                continue;
            }
        } else {
            int rc = copy_once(r, d, src, dst, &n, err);
            if (rc != PUMP_WAIT)
                return rc;
            if (n < 0) {
                d->want = TK_READ;
                return PUMP_WAIT;
            }
            if (n > 0) {
                if (d->in_pipe > 0)
                    continue; /* the rest waits in the pipe for dst */
                if (d->last_read < copy_cap(r, d) && !tls_more(r, d)) {
                    d->want = TK_READ; /* drained: see the splice branch */
                    return PUMP_WAIT;
                }
                continue;
            }
        }
        if (n == 0) {
            d->eof = 1;
            continue;
        }
        if (errno == EAGAIN || errno == EINTR) {
            d->want = TK_READ;
            return PUMP_WAIT;
        }
        *err = -errno;
        return PUMP_FAIL_SRC;
    }
    /* Out of rounds with work left: wait for whichever side moves next;
     * level-triggered readiness brings us back at once. */
    d->want = (d->head_off < d->head_len || d->in_pipe > 0) ? TK_WRITE : TK_READ;
    return PUMP_WAIT;
}

/* Encrypts p[0..n) towards A until the session took it all (0) or A's
 * socket is full (-EAGAIN, d->flip set if the session waits for input), or
 * fails (a negative errno); *done counts the bytes taken either way. */
static int tls_put(tk_relay *r, relay_dir *d, const unsigned char *p, size_t n, size_t *done)
{
    *done = 0;
    while (*done < n) {
        ssize_t w = tk_tls_write(r->tls, p + *done, n - *done);
        if (w < 0) {
            if (w == -EAGAIN)
                d->flip = (tk_tls_want(r->tls) & TK_TLS_WANT_READ) != 0;
            return (int)w;
        }
        *done += (size_t)w;
        account(r, d, (size_t)w);
    }
    return 0;
}

/* B's FIN, passed on to A: close_notify, then the write shutdown. */
static int tls_fin(tk_relay *r, relay_dir *d, int dst, int *err)
{
    int e = tk_tls_shutdown(r->tls);
    if (e == -EAGAIN) {
        d->flip = (tk_tls_want(r->tls) & TK_TLS_WANT_READ) != 0;
        d->want = TK_WRITE;
        return PUMP_WAIT;
    }
    if (e < 0) {
        *err = e;
        return PUMP_FAIL_DST;
    }
    d->fin_sent = 1;
    if (r->first_fin < 0)
        r->first_fin = d->src;
    if (shutdown(dst, SHUT_WR) < 0) {
        int se = tk_sock_error(dst);
        *err = se ? se : errno == ENOTCONN ? -ECONNRESET : -errno;
        return PUMP_FAIL_DST;
    }
    return PUMP_WAIT;
}

/* Keeps the bytes of a read the session did not take, to offer them again. */
static int tls_hold(relay_dir *d, const unsigned char *p, size_t n, int *err)
{
    d->hold = malloc(n);
    if (!d->hold) {
        *err = -ENOMEM;
        return PUMP_FAIL_DST;
    }
    memcpy(d->hold, p, n);
    d->hold_len = n;
    d->hold_off = 0;
    d->want = TK_WRITE;
    return PUMP_WAIT;
}

/* B to a TLS side A: recv into the scratch buffer and encrypt; what A does
 * not take waits in d->hold and goes first, as the same bytes, next time.
 * The same rounds, drained-read shortcut and results as pump(). */
static int pump_to_tls(tk_relay *r, relay_dir *d, int *err)
{
    int src = r->side[d->src].io.fd, dst = r->side[d->dst].io.fd;
    size_t cap = copy_cap(r, d), done;
    d->want = 0;
    d->flip = 0;
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        if (d->hold) {
            int e = tls_put(r, d, d->hold + d->hold_off, d->hold_len - d->hold_off, &done);
            d->hold_off += done;
            if (e == -EAGAIN) {
                d->want = TK_WRITE;
                return PUMP_WAIT;
            }
            if (e < 0) {
                *err = e;
                return PUMP_FAIL_DST;
            }
            free(d->hold);
            d->hold = NULL;
            d->hold_len = d->hold_off = 0;
            if (!d->eof && d->last_read < cap) {
                d->want = TK_READ;
                return PUMP_WAIT;
            }
            continue;
        }
        if (d->eof)
            return d->fin_sent ? PUMP_WAIT : tls_fin(r, d, dst, err);
        unsigned char *buf = tk_loop_scratch(r->loop);
        ssize_t n = recv(src, buf, cap, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                d->want = TK_READ;
                return PUMP_WAIT;
            }
            *err = -errno;
            return PUMP_FAIL_SRC;
        }
        if (n == 0) {
            d->eof = 1;
            continue;
        }
        d->last_read = (size_t)n;
        r->last[d->src] = tk_loop_now(r->loop);
        int e = tls_put(r, d, buf, (size_t)n, &done);
        if (e == -EAGAIN)
            return tls_hold(d, buf + done, (size_t)n - done, err);
        if (e < 0) {
            *err = e;
            return PUMP_FAIL_DST;
        }
        if ((size_t)n < cap) {
            d->want = TK_READ;
            return PUMP_WAIT;
        }
    }
    d->want = d->hold ? TK_WRITE : TK_READ;
    return PUMP_WAIT;
}

/* Registers what each side now waits for; returns 0 or a negative errno. */
static int update_interest(tk_relay *r)
{
    unsigned ev[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        relay_dir *d = &r->dir[i];
        if (d->want == TK_READ)
            ev[d->src] |= d->flip ? TK_WRITE : TK_READ;
        else if (d->want == TK_WRITE)
            ev[d->dst] |= d->flip ? TK_READ : TK_WRITE;
    }
    for (int s = 0; s < 2; s++) {
        /* A side with nothing to do is still watched for a reset. */
        int err = tk_io_set(r->loop, &r->side[s].io, ev[s] ? ev[s] : TK_HUP);
        if (err < 0)
            return err;
    }
    if (r->dir[0].want == TK_READ && tls_more(r, &r->dir[0]))
        tk_defer_queue(r->loop, &r->reread);
    return 0;
}

/* Pumps direction i; returns 1 if the relay ended (and was freed). */
static int pump_dir(tk_relay *r, int i)
{
    relay_dir *d = &r->dir[i];
    int err = 0;
    int rc = i == 1 && r->tls ? pump_to_tls(r, d, &err) : pump(r, d, &err);
    if (rc == PUMP_WAIT)
        return 0;
    int failed_side = rc == PUMP_FAIL_SRC ? d->src : d->dst;
    relay_end(r, failed_side == 0 ? TK_RELAY_ERROR_A : TK_RELAY_ERROR_B, err);
    return 1;
}

/* After pumping: ends a finished relay or registers interest. */
static void settle(tk_relay *r)
{
    if (r->dir[0].fin_sent && r->dir[1].fin_sent) {
        relay_end(r, r->first_fin == 1 ? TK_RELAY_DONE_B : TK_RELAY_DONE_A, 0);
        return;
    }
    int err = update_interest(r);
    if (err < 0)
        relay_end(r, TK_RELAY_ERROR_A, err);
}

static void on_io(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    relay_side *side = (relay_side *)io;
    tk_relay *r = side->relay;
    /* Reading this side feeds the direction it is the source of; writing it
     * drains the direction it is the destination of. A hang-up may be either. */
    relay_dir *out = &r->dir[side->index];
    relay_dir *in = &r->dir[1 - side->index];
    int pumped = 0;
    /* A TLS call may wait for the other readiness (flip). */
    unsigned rd = out->flip ? TK_WRITE : TK_READ, wr = in->flip ? TK_READ : TK_WRITE;
    if ((events & (rd | TK_HUP)) && out->want == TK_READ) {
        if (pump_dir(r, side->index))
            return;
        pumped = 1;
    }
    if ((events & (wr | TK_HUP)) && in->want == TK_WRITE) {
        if (pump_dir(r, 1 - side->index))
            return;
        pumped = 1;
    }
    if ((events & TK_HUP) && !pumped) {
        /* Nothing to read or write on this side, yet it failed or hung up
         * for good (a reset after its FIN): the relay cannot go on. */
        int err = tk_sock_error(side->io.fd);
        relay_end(r, side->index == 0 ? TK_RELAY_ERROR_A : TK_RELAY_ERROR_B,
                  err ? err : -ECONNRESET);
        return;
    }
    settle(r);
}

/* Decrypted bytes of A were left in the session when the pump stopped. */
static void on_reread(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    tk_relay *r = (tk_relay *)((char *)d - offsetof(tk_relay, reread));
    if (r->dir[0].want == TK_READ && pump_dir(r, 0))
        return;
    settle(r);
}

static uint64_t idle_deadline(const tk_relay *r)
{
    uint64_t at = UINT64_MAX;
    for (int s = 0; s < 2; s++)
        if (r->idle_ms[s] && r->last[s] + r->idle_ms[s] < at)
            at = r->last[s] + r->idle_ms[s];
    return at;
}

static void on_idle(tk_loop *loop, tk_timer *t)
{
    tk_relay *r = (tk_relay *)((char *)t - offsetof(tk_relay, idle));
    uint64_t now = tk_loop_now(loop);
    for (int s = 0; s < 2; s++) {
        if (r->idle_ms[s] && now >= r->last[s] + r->idle_ms[s]) {
            relay_end(r, s == 0 ? TK_RELAY_IDLE_A : TK_RELAY_IDLE_B, 0);
            return;
        }
    }
    uint64_t at = idle_deadline(r);
    (void)tk_timer_start(loop, &r->idle, at - now);
}

int tk_relay_start(tk_loop *loop, int a, int b, const tk_relay_opts *opts, tk_relay_cb cb,
                   void *arg, tk_relay **out)
{
    int err = -ENOMEM;
    tk_relay *r = calloc(1, sizeof(*r));
    if (!r)
        goto fail;
    r->loop = loop;
    r->cb = cb;
    r->arg = arg;
    r->first_fin = -1;
    for (int i = 0; i < 2; i++) {
        tk_io_init(&r->side[i].io, i == 0 ? a : b, on_io);
        r->side[i].relay = r;
        r->side[i].index = i;
    }
    tk_timer_init(&r->idle, on_idle);
    tk_defer_init(&r->release, on_release);
    tk_defer_init(&r->reread, on_reread);
    r->tls = opts->tls_a;
    for (int i = 0; i < 2; i++) {
        relay_dir *d = &r->dir[i];
        d->src = i;
        d->dst = 1 - i;
        d->pipe.rd = d->pipe.wr = -1;
        r->idle_ms[i] = opts->idle_ms[i];
    }
    r->dir[0].counter = opts->count_a2b;
    r->dir[1].counter = opts->count_b2a;
    r->dir[0].eof = opts->a_eof ? 1 : 0;
    size_t total = opts->preamble_len + opts->head_len;
    if (total) {
        unsigned char *h = malloc(total);
        if (!h)
            goto fail_free;
        if (opts->preamble_len)
            memcpy(h, opts->preamble, opts->preamble_len);
        if (opts->head_len)
            memcpy(h + opts->preamble_len, opts->head, opts->head_len);
        r->dir[0].head = h;
        r->dir[0].head_len = total;
        r->dir[0].uncounted = opts->preamble_len;
    }
    /* Towards a TLS A, bytes wait in hold rather than in a pipe. */
    for (int i = 0; i < (r->tls ? 1 : 2); i++) {
        err = pipe_take(&r->dir[i].pipe, opts->pipe_size);
        if (err < 0)
            goto fail_free;
    }
    if (r->tls)
        r->dir[1].pipe.size = r->dir[0].pipe.size;
    r->last[0] = r->last[1] = tk_loop_now(loop);
    uint64_t at = idle_deadline(r);
    if (at != UINT64_MAX && (err = tk_timer_start(loop, &r->idle, at - r->last[0])) < 0)
        goto fail_free;
    /* Each direction starts by reading its source, except that head bytes
     * or an early FIN wait for B to be writable. The first pumps run from
     * the loop, so the callback never runs inside this call. */
    r->dir[0].want = (r->dir[0].head_len || r->dir[0].eof) ? TK_WRITE : TK_READ;
    r->dir[1].want = TK_READ;
    if ((err = update_interest(r)) < 0)
        goto fail_free;
    *out = r;
    return 0;

fail_free:
    tk_timer_stop(loop, &r->idle);
    tk_io_stop(loop, &r->side[0].io);
    tk_io_stop(loop, &r->side[1].io);
    for (int i = 0; i < 2; i++) {
        pipe_give(&r->dir[i].pipe, 1);
        free(r->dir[i].head);
    }
    free(r);
fail:
    tk_tls_free(opts->tls_a);
    close(a);
    close(b);
    *out = NULL;
    return err;
}

void tk_relay_close(tk_relay *r)
{
    relay_free(r, 1, 1);
}

const char *tk_relay_tls_error(const tk_relay *r)
{
    return r->tls ? tk_tls_error(r->tls) : "";
}

uint64_t tk_relay_bytes_a2b(const tk_relay *r)
{
    return r->dir[0].bytes;
}

uint64_t tk_relay_bytes_b2a(const tk_relay *r)
{
    return r->dir[1].bytes;
}

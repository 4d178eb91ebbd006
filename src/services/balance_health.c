/* Health: active checks of every backend, run on loop 0 (connect, or send a
 * string and expect a reply prefix), and the passive failures clients meet,
 * which count like failed checks. rise passes bring a down backend up; fall
 * failures take an up one down. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balance_internal.h"
#include "tcpkit/log.h"

/* With no active checks, how long a passive failure keeps clients away. */
#define SUSPECT_NO_CHECKS_MS 5000

const char *bal_check_result_name(bal_check_result r)
{
    switch (r) {
    case BAL_CHECK_NONE: return "none";
    case BAL_CHECK_OK: return "ok";
    case BAL_CHECK_REFUSED: return "connect refused";
    case BAL_CHECK_TIMEOUT: return "timeout";
    case BAL_CHECK_CLOSED: return "closed before replying";
    case BAL_CHECK_MISMATCH: return "unexpected reply";
    case BAL_CHECK_ERROR: return "error";
    case BAL_CHECK_FIRST_BYTE: return "no reply within the first-byte timeout";
    case BAL_CHECK_RESET: return "reset before replying";
    }
    return "error";
}

static bal_backend *of_timer(tk_timer *t)
{
    return (bal_backend *)((char *)t - offsetof(bal_backend, check.timer));
}

static bal_backend *of_io(tk_io *io)
{
    return (bal_backend *)((char *)io - offsetof(bal_backend, check.io));
}

/* Counts one result, active or passive, and changes state on rise/fall. */
static void count_result(bal_loop *lp0, bal_backend *b, bal_check_result r)
{
    const bal_settings *set = &lp0->table->set;
    bal_check *c = &b->check;
    int up = atomic_load_explicit(&b->up, memory_order_relaxed);
    if (r == BAL_CHECK_OK) {
        c->fails = 0;
        c->oks++;
        atomic_store_explicit(&b->suspect_until, 0, memory_order_relaxed);
        if (!up && c->oks >= set->rise) {
            atomic_store_explicit(&b->up, 1, memory_order_relaxed);
            tk_info("backend %s up", b->addr);
            bal_kick_waiters(lp0->bal); /* a backend came up */
        }
        return;
    }
    c->oks = 0;
    c->fails++;
    if (up && c->fails >= set->fall) {
        atomic_store_explicit(&b->up, 0, memory_order_relaxed);
        tk_warn("backend %s down (%s)", b->addr, bal_check_result_name(r));
    }
}

static void check_schedule(bal_loop *lp0, bal_backend *b, uint64_t ms)
{
    (void)tk_timer_start(lp0->loop, &b->check.timer, ms);
}

/* Ends the running check with result r and schedules the next. */
static void check_done(bal_backend *b, bal_check_result r)
{
    bal_check *c = &b->check;
    bal_loop *lp0 = c->lp0;
    if (c->dial) {
        tk_dial_cancel(c->dial);
        c->dial = NULL;
    }
    tk_io_stop(lp0->loop, &c->io);
    if (c->io.fd >= 0) {
        close(c->io.fd);
        c->io.fd = -1;
    }
    c->running = 0;
    atomic_store_explicit(&b->last_check, (int)r, memory_order_relaxed);
    atomic_store_explicit(&b->last_check_ms, tk_loop_now(lp0->loop), memory_order_relaxed);
    count_result(lp0, b, r);
    check_schedule(lp0, b, lp0->table->set.check_interval_ms);
}

static void on_check_io(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    (void)events;
    bal_backend *b = of_io(io);
    bal_check *c = &b->check;
    const bal_settings *set = &c->lp0->table->set;
    size_t want = set->check_expect_len;
    ssize_t n = recv(io->fd, c->got + c->got_len, want - c->got_len, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            check_done(b, BAL_CHECK_CLOSED);
        return;
    }
    if (n == 0) {
        check_done(b, BAL_CHECK_CLOSED);
        return;
    }
    size_t old = c->got_len;
    c->got_len += (size_t)n;
    if (memcmp(c->got + old, set->check_expect + old, (size_t)n) != 0) {
        check_done(b, BAL_CHECK_MISMATCH);
        return;
    }
    if (c->got_len == want)
        check_done(b, BAL_CHECK_OK);
}

static void on_check_dialed(tk_loop *loop, int fd, int err, void *arg)
{
    bal_backend *b = arg;
    bal_check *c = &b->check;
    const bal_settings *set = &c->lp0->table->set;
    c->dial = NULL;
    if (fd < 0) {
        check_done(b, err == -ECONNREFUSED ? BAL_CHECK_REFUSED
                      : err == -ETIMEDOUT  ? BAL_CHECK_TIMEOUT
                                           : BAL_CHECK_ERROR);
        return;
    }
    tk_io_init(&c->io, fd, on_check_io);
    if (set->check_send_len > 0 && send(fd, set->check_send, set->check_send_len, MSG_NOSIGNAL) !=
                                       (ssize_t)set->check_send_len) {
        /* 256 bytes fit any fresh socket's buffer; anything else is a failure. */
        check_done(b, BAL_CHECK_CLOSED);
        return;
    }
    if (set->check_expect_len == 0) {
        check_done(b, BAL_CHECK_OK);
        return;
    }
    c->got_len = 0;
    if (tk_io_set(loop, &c->io, TK_READ) < 0)
        check_done(b, BAL_CHECK_ERROR);
}

static void on_check_timer(tk_loop *loop, tk_timer *t)
{
    bal_backend *b = of_timer(t);
    bal_check *c = &b->check;
    const bal_settings *set = &c->lp0->table->set;
    if (c->running) {
        check_done(b, BAL_CHECK_TIMEOUT);
        return;
    }
    if (set->check_interval_ms == 0)
        return;
    c->running = 1;
    /* The timer now watches the whole check: connecting and the reply. */
    check_schedule(c->lp0, b, set->check_timeout_ms);
    int err = tk_dial_start(loop, b->addrs, b->naddrs, set->check_timeout_ms, on_check_dialed, b,
                            &c->dial);
    if (err < 0) {
        c->dial = NULL;
        check_done(b, BAL_CHECK_ERROR);
    }
}

static int listed(const bal_table *t, const bal_backend *b)
{
    for (size_t i = 0; t && i < t->n; i++)
        if (t->e[i].b == b)
            return 1;
    return 0;
}

static void check_stop(bal_loop *lp0, bal_backend *b)
{
    bal_check *c = &b->check;
    if (!c->active)
        return;
    if (c->dial) {
        tk_dial_cancel(c->dial);
        c->dial = NULL;
    }
    tk_io_stop(lp0->loop, &c->io);
    if (c->io.fd >= 0) {
        close(c->io.fd);
        c->io.fd = -1;
    }
    tk_timer_stop(lp0->loop, &c->timer);
    c->running = 0;
    c->active = 0;
    /* The last reference may be this one: let the loop's batch end first. */
    tk_defer_queue(lp0->loop, &c->release);
}

static void on_check_release(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    bal_backend_unref((bal_backend *)((char *)d - offsetof(bal_backend, check.release)));
}

void bal_health_adopt(bal_loop *lp0, const bal_table *old, const bal_table *t)
{
    for (size_t i = 0; old && i < old->n; i++)
        if (!listed(t, old->e[i].b))
            check_stop(lp0, old->e[i].b);
    for (size_t i = 0; i < t->n; i++) {
        bal_backend *b = t->e[i].b;
        bal_check *c = &b->check;
        if (c->active) {
            /* Kept: a new interval applies from the next check. */
            if (!c->running && t->set.check_interval_ms > 0 && !tk_timer_active(&c->timer))
                check_schedule(lp0, b, 0);
            continue;
        }
        c->active = 1;
        c->lp0 = lp0;
        bal_backend_ref(b);
        tk_timer_init(&c->timer, on_check_timer);
        tk_defer_init(&c->release, on_check_release);
        tk_io_init(&c->io, -1, on_check_io);
        if (t->set.check_interval_ms > 0)
            check_schedule(lp0, b, 0); /* the first check right away */
    }
}

void bal_health_stop(bal_loop *lp0, const bal_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        check_stop(lp0, t->e[i].b);
}

typedef struct {
    bal_loop *lp0;
    bal_backend *b;
    bal_check_result why;
} passive_note;

static void on_passive(tk_loop *loop, void *arg)
{
    passive_note *p = arg;
    bal_backend *b = p->b;
    bal_check *c = &b->check;
    if (c->active) {
        count_result(p->lp0, b, p->why);
        /* Check it now rather than at the next interval. */
        if (!c->running && p->lp0->table->set.check_interval_ms > 0)
            check_schedule(p->lp0, b, 0);
    }
    (void)loop;
    bal_backend_unref(b);
    free(p);
}

void bal_backend_failed(bal_loop *lp, bal_backend *b, bal_check_result why)
{
    bal_loop *lp0 = &lp->bal->loops[0];
    int checks = lp->table->set.check_interval_ms > 0;
    uint64_t until = checks ? UINT64_MAX : tk_loop_now(lp->loop) + SUSPECT_NO_CHECKS_MS;
    atomic_store_explicit(&b->suspect_until, until, memory_order_relaxed);
    passive_note *p = malloc(sizeof(*p));
    if (!p)
        return;
    p->lp0 = lp0;
    p->b = bal_backend_ref(b);
    p->why = why;
    if (tk_loop_post(lp0->loop, on_passive, p) < 0) {
        bal_backend_unref(b);
        free(p);
    }
}

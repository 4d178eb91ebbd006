/* The event loop: one poll per iteration, then ready descriptors, then
 * expired timers, then deferred work. Posts from other threads arrive through
 * an eventfd. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "loop_backend.h"
#include "timer_heap.h"

#define TK_SCRATCH_SIZE (64 * 1024)
#define TK_SCRATCH_MAX  (16 * 1024 * 1024)
#define TK_READY_CAP    256

typedef struct tk_post {
    struct tk_post *next;
    tk_post_fn fn;
    void *arg;
} tk_post;

struct tk_loop {
    tk_backend *backend;
    uint64_t now_ms;
    uint64_t timer_seq;
    tk_timer_heap timers;
    tk_defer *defer_head;
    tk_defer *defer_tail;
    tk_defer *defer_running; /* the rest of the round being run */
    atomic_int stopping;
    void *data;

    /* Cross-thread posting. */
    pthread_mutex_t post_lock;
    tk_post *post_head;
    tk_post *post_tail;
    tk_io wake_io;

    /* Signals. */
    tk_io sig_io;
    tk_signal_cb sig_cb;
    void *sig_arg;

    tk_ready ready[TK_READY_CAP];
    unsigned char *scratch; /* scratch_inline, or a larger buffer of its own */
    size_t scratch_size;
    unsigned char scratch_inline[TK_SCRATCH_SIZE];
};

uint64_t tk_clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void tk_loop_update_time(tk_loop *loop)
{
    loop->now_ms = tk_clock_us() / 1000u;
}

uint64_t tk_loop_now(const tk_loop *loop)
{
    return loop->now_ms;
}

unsigned char *tk_loop_scratch(tk_loop *loop)
{
    return loop->scratch;
}

size_t tk_loop_scratch_size(const tk_loop *loop)
{
    return loop->scratch_size;
}

int tk_loop_set_scratch_size(tk_loop *loop, size_t size)
{
    if (size < TK_SCRATCH_SIZE || size > TK_SCRATCH_MAX)
        return -EINVAL;
    if (size == loop->scratch_size)
        return 0;
    unsigned char *p = size == TK_SCRATCH_SIZE ? loop->scratch_inline : malloc(size);
    if (!p)
        return -ENOMEM;
    if (loop->scratch != loop->scratch_inline)
        free(loop->scratch);
    loop->scratch = p;
    loop->scratch_size = size;
    return 0;
}

void tk_loop_set_data(tk_loop *loop, void *data)
{
    loop->data = data;
}

void *tk_loop_data(const tk_loop *loop)
{
    return loop->data;
}

static void run_posts(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)events;
    uint64_t v;
    while (read(io->fd, &v, sizeof(v)) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&loop->post_lock);
    tk_post *p = loop->post_head;
    loop->post_head = loop->post_tail = NULL;
    pthread_mutex_unlock(&loop->post_lock);
    while (p) {
        tk_post *next = p->next;
        p->fn(loop, p->arg);
        free(p);
        p = next;
    }
}

int tk_loop_new(tk_loop **out)
{
    tk_loop *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return -ENOMEM;
    loop->scratch = loop->scratch_inline;
    loop->scratch_size = TK_SCRATCH_SIZE;
    int err = tk_backend_new(&loop->backend);
    if (err < 0) {
        free(loop);
        return err;
    }
    pthread_mutex_init(&loop->post_lock, NULL);
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
        err = -errno;
        goto fail;
    }
    tk_io_init(&loop->wake_io, efd, run_posts);
    err = tk_io_set(loop, &loop->wake_io, TK_READ);
    if (err < 0) {
        close(efd);
        goto fail;
    }
    loop->sig_io.fd = -1;
    tk_loop_update_time(loop);
    *out = loop;
    return 0;
fail:
    pthread_mutex_destroy(&loop->post_lock);
    tk_backend_free(loop->backend);
    free(loop);
    return err;
}

static void run_defers(tk_loop *loop);

void tk_loop_run_pending(tk_loop *loop)
{
    while (loop->defer_head)
        run_defers(loop);
}

void tk_loop_free(tk_loop *loop)
{
    if (!loop)
        return;
    tk_loop_run_pending(loop);
    tk_io_stop(loop, &loop->wake_io);
    close(loop->wake_io.fd);
    if (loop->sig_io.fd >= 0) {
        tk_io_stop(loop, &loop->sig_io);
        close(loop->sig_io.fd);
    }
    tk_post *p = loop->post_head;
    while (p) {
        tk_post *next = p->next;
        free(p);
        p = next;
    }
    pthread_mutex_destroy(&loop->post_lock);
    tk_heap_free(&loop->timers);
    tk_backend_free(loop->backend);
    if (loop->scratch != loop->scratch_inline)
        free(loop->scratch);
    free(loop);
}

static void wake(tk_loop *loop)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake anyway. */
    while (write(loop->wake_io.fd, &one, sizeof(one)) < 0 && errno == EINTR) {
    }
}

int tk_loop_post(tk_loop *loop, tk_post_fn fn, void *arg)
{
    tk_post *p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->next = NULL;
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_lock(&loop->post_lock);
    if (loop->post_tail)
        loop->post_tail->next = p;
    else
        loop->post_head = p;
    loop->post_tail = p;
    pthread_mutex_unlock(&loop->post_lock);
    wake(loop);
    return 0;
}

void tk_loop_stop(tk_loop *loop)
{
    atomic_store(&loop->stopping, 1);
    wake(loop);
}

void tk_io_init(tk_io *io, int fd, tk_io_cb cb)
{
    io->fd = fd;
    io->events = 0;
    io->live = 0;
    io->cb = cb;
}

int tk_io_set(tk_loop *loop, tk_io *io, unsigned events)
{
    events &= TK_READ | TK_WRITE | TK_HUP;
    if (events & (TK_READ | TK_WRITE))
        events &= ~(unsigned)TK_HUP; /* implied */
    if (events == io->events && (io->live || events == 0))
        return 0;
    if (events == 0) {
        tk_io_stop(loop, io);
        return 0;
    }
    int err = tk_backend_ctl(loop->backend, io, events);
    if (err < 0)
        return err;
    io->events = events;
    io->live = 1;
    return 0;
}

void tk_io_stop(tk_loop *loop, tk_io *io)
{
    if (io->live)
        (void)tk_backend_ctl(loop->backend, io, 0);
    io->live = 0;
    io->events = 0;
}

void tk_timer_init(tk_timer *t, tk_timer_cb cb)
{
    t->deadline_ms = 0;
    t->seq = 0;
    t->heap_index = SIZE_MAX;
    t->cb = cb;
}

int tk_timer_active(const tk_timer *t)
{
    return t->heap_index != SIZE_MAX;
}

int tk_timer_start(tk_loop *loop, tk_timer *t, uint64_t ms)
{
    if (tk_timer_active(t))
        tk_heap_remove(&loop->timers, t);
    t->deadline_ms = loop->now_ms + ms;
    t->seq = loop->timer_seq++;
    return tk_heap_push(&loop->timers, t);
}

void tk_timer_stop(tk_loop *loop, tk_timer *t)
{
    if (tk_timer_active(t))
        tk_heap_remove(&loop->timers, t);
}

size_t tk_loop_timer_count(const tk_loop *loop)
{
    return loop->timers.len;
}

void tk_defer_init(tk_defer *d, tk_defer_cb cb)
{
    d->next = NULL;
    d->queued = 0;
    d->cb = cb;
}

void tk_defer_queue(tk_loop *loop, tk_defer *d)
{
    if (d->queued)
        return;
    d->queued = 1;
    d->next = NULL;
    if (loop->defer_tail)
        loop->defer_tail->next = d;
    else
        loop->defer_head = d;
    loop->defer_tail = d;
}

/* Unlinks d from the list starting at *head; 1 if it was there. */
static int unlink_defer(tk_defer **head, tk_defer **tail, tk_defer *d)
{
    tk_defer *prev = NULL;
    for (tk_defer *it = *head; it; prev = it, it = it->next) {
        if (it != d)
            continue;
        if (prev)
            prev->next = d->next;
        else
            *head = d->next;
        if (tail && *tail == d)
            *tail = prev;
        return 1;
    }
    return 0;
}

void tk_defer_cancel(tk_loop *loop, tk_defer *d)
{
    if (!d->queued)
        return;
    /* Queued either for the next round or in the round now running. */
    if (!unlink_defer(&loop->defer_head, &loop->defer_tail, d))
        (void)unlink_defer(&loop->defer_running, NULL, d);
    d->queued = 0;
    d->next = NULL;
}

/* Runs the work queued so far; work queued by these callbacks runs next round,
 * so a callback that re-queues itself cannot starve the poller. */
static void run_defers(tk_loop *loop)
{
    /* The round lives in the loop so a callback may cancel work later in it. */
    loop->defer_running = loop->defer_head;
    loop->defer_head = loop->defer_tail = NULL;
    tk_defer *d;
    while ((d = loop->defer_running)) {
        loop->defer_running = d->next;
        d->queued = 0;
        d->next = NULL;
        d->cb(loop, d);
    }
}

/* Fires the timers that were due when this round began; a callback that
 * re-arms for zero milliseconds runs again next round, not in a busy loop. */
static void run_timers(tk_loop *loop)
{
    uint64_t started_before = loop->timer_seq;
    tk_timer *t;
    while ((t = tk_heap_top(&loop->timers)) && t->deadline_ms <= loop->now_ms &&
           t->seq < started_before) {
        tk_heap_remove(&loop->timers, t);
        t->cb(loop, t);
    }
}

static int poll_timeout(tk_loop *loop)
{
    if (loop->defer_head || atomic_load(&loop->stopping))
        return 0;
    tk_timer *t = tk_heap_top(&loop->timers);
    if (!t)
        return -1;
    if (t->deadline_ms <= loop->now_ms)
        return 0;
    uint64_t wait = t->deadline_ms - loop->now_ms;
    return wait > INT32_MAX ? INT32_MAX : (int)wait;
}

int tk_loop_run(tk_loop *loop)
{
    /* A stop requested before the loop started still counts; the flag is
     * cleared on the way out so the loop can be run again. */
    tk_loop_update_time(loop);
    while (!atomic_load(&loop->stopping)) {
        run_defers(loop);
        int n = tk_backend_poll(loop->backend, poll_timeout(loop), loop->ready, TK_READY_CAP);
        if (n < 0)
            return n;
        tk_loop_update_time(loop);
        for (int i = 0; i < n; i++) {
            tk_io *io = loop->ready[i].io;
            /* A callback earlier in this batch may have stopped this watcher;
             * its memory stays valid until deferred work runs. */
            if (!io->live)
                continue;
            io->cb(loop, io, loop->ready[i].events);
        }
        run_timers(loop);
    }
    run_defers(loop);
    atomic_store(&loop->stopping, 0);
    return 0;
}

static void on_signal(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)events;
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        loop->sig_cb(loop, (int)si.ssi_signo, loop->sig_arg);
}

int tk_loop_watch_signals(tk_loop *loop, const int *signals, size_t n, tk_signal_cb cb, void *arg)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < n; i++)
        sigaddset(&set, signals[i]);
    int err = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (err)
        return -err;
    int fd = signalfd(loop->sig_io.fd, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0)
        return -errno;
    loop->sig_cb = cb;
    loop->sig_arg = arg;
    if (loop->sig_io.fd < 0) {
        tk_io_init(&loop->sig_io, fd, on_signal);
        err = tk_io_set(loop, &loop->sig_io, TK_READ);
        if (err < 0) {
            close(fd);
            loop->sig_io.fd = -1;
            return err;
        }
    }
    return 0;
}

/* Non-blocking connect with an overall deadline, address by address. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpkit/dial.h"
#include "tcpkit/sock.h"

struct tk_dial {
    tk_loop *loop;
    tk_io io;
    tk_timer deadline;
    tk_defer kick;    /* starts the first attempt from the loop */
    tk_defer release; /* frees the dial once its turn is over */
    tk_dial_cb cb;
    void *arg;
    size_t next; /* index of the next address to try */
    size_t n;
    int last_err;
    int done;
    tk_addr addrs[];
};

static void finish(tk_dial *d, int fd, int err)
{
    d->done = 1;
    tk_io_stop(d->loop, &d->io);
    tk_timer_stop(d->loop, &d->deadline);
    d->io.fd = -1;
    tk_defer_queue(d->loop, &d->release);
    d->cb(d->loop, fd, err, d->arg);
}

/* Starts connecting to the next address; returns when one is in progress,
 * connected, or none are left. */
static void try_next(tk_dial *d)
{
    while (d->next < d->n) {
        const tk_addr *a = &d->addrs[d->next++];
        int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            d->last_err = -errno;
            continue;
        }
        if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0) {
            finish(d, fd, 0);
            return;
        }
        if (errno == EINPROGRESS) {
            tk_io_init(&d->io, fd, d->io.cb);
            int err = tk_io_set(d->loop, &d->io, TK_WRITE);
            if (err == 0)
                return;
            d->last_err = err;
        } else {
            d->last_err = -errno;
        }
        close(fd);
    }
    finish(d, -1, d->last_err ? d->last_err : -ECONNREFUSED);
}

static void on_writable(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    (void)events;
    tk_dial *d = (tk_dial *)((char *)io - offsetof(tk_dial, io));
    int fd = io->fd;
    int err = tk_sock_error(fd);
    if (err == 0) {
        finish(d, fd, 0);
        return;
    }
    tk_io_stop(d->loop, io);
    close(fd);
    d->io.fd = -1;
    d->last_err = err;
    try_next(d);
}

static void on_deadline(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    tk_dial *d = (tk_dial *)((char *)t - offsetof(tk_dial, deadline));
    if (d->io.fd >= 0) {
        tk_io_stop(d->loop, &d->io);
        close(d->io.fd);
    }
    finish(d, -1, -ETIMEDOUT);
}

static void on_kick(tk_loop *loop, tk_defer *df)
{
    (void)loop;
    tk_dial *d = (tk_dial *)((char *)df - offsetof(tk_dial, kick));
    if (!d->done)
        try_next(d);
}

static void release(tk_loop *loop, tk_defer *df)
{
    (void)loop;
    free((char *)df - offsetof(tk_dial, release));
}

int tk_dial_start(tk_loop *loop, const tk_addr *addrs, size_t n, uint32_t timeout_ms, tk_dial_cb cb,
                  void *arg, tk_dial **out)
{
    if (n == 0)
        return -EINVAL;
    tk_dial *d = calloc(1, sizeof(*d) + n * sizeof(tk_addr));
    if (!d)
        return -ENOMEM;
    d->loop = loop;
    d->cb = cb;
    d->arg = arg;
    d->n = n;
    memcpy(d->addrs, addrs, n * sizeof(tk_addr));
    tk_io_init(&d->io, -1, on_writable);
    tk_timer_init(&d->deadline, on_deadline);
    tk_defer_init(&d->kick, on_kick);
    tk_defer_init(&d->release, release);
    if (timeout_ms && tk_timer_start(loop, &d->deadline, timeout_ms) < 0) {
        free(d);
        return -ENOMEM;
    }
    if (out)
        *out = d;
    /* The first attempt starts from the loop, so the callback never runs
     * inside this call and the handle stays valid until it does. */
    tk_defer_queue(loop, &d->kick);
    return 0;
}

void tk_dial_cancel(tk_dial *d)
{
    if (!d || d->done)
        return;
    d->done = 1;
    if (d->io.fd >= 0) {
        tk_io_stop(d->loop, &d->io);
        close(d->io.fd);
    }
    tk_timer_stop(d->loop, &d->deadline);
    tk_defer_queue(d->loop, &d->release);
}

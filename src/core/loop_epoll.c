/* epoll backend for the event loop. */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "loop_backend.h"

#define TK_EPOLL_BATCH 256

struct tk_backend {
    int epfd;
    struct epoll_event events[TK_EPOLL_BATCH];
};

int tk_backend_new(tk_backend **out)
{
    tk_backend *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->epfd < 0) {
        int err = -errno;
        free(b);
        return err;
    }
    *out = b;
    return 0;
}

void tk_backend_free(tk_backend *b)
{
    if (!b)
        return;
    close(b->epfd);
    free(b);
}

static uint32_t to_epoll(unsigned events)
{
    uint32_t ev = 0;
    if (events & TK_READ)
        ev |= EPOLLIN | EPOLLRDHUP;
    if (events & TK_WRITE)
        ev |= EPOLLOUT;
    return ev;
}

int tk_backend_ctl(tk_backend *b, tk_io *io, unsigned events)
{
    struct epoll_event ev = {.events = to_epoll(events), .data.ptr = io};
    int op;

    if (events == 0)
        op = EPOLL_CTL_DEL;
    else if (!io->live)
        op = EPOLL_CTL_ADD;
    else
        op = EPOLL_CTL_MOD;
    if (epoll_ctl(b->epfd, op, io->fd, &ev) < 0)
        return -errno;
    return 0;
}

int tk_backend_poll(tk_backend *b, int timeout_ms, tk_ready *out, int cap)
{
    if (cap > TK_EPOLL_BATCH)
        cap = TK_EPOLL_BATCH;
    int n = epoll_wait(b->epfd, b->events, cap, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = b->events[i].events;
        unsigned r = 0;
        if (e & (EPOLLIN | EPOLLRDHUP))
            r |= TK_READ;
        if (e & EPOLLOUT)
            r |= TK_WRITE;
        if (e & (EPOLLERR | EPOLLHUP))
            r |= TK_HUP | TK_READ;
        out[i].io = b->events[i].data.ptr;
        out[i].events = r;
    }
    return n;
}

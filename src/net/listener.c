/* Listening sockets and the accept loop. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpkit/listener.h"
#include "tcpkit/log.h"

/* Accepts per wake-up, so one busy listener cannot starve the connections. */
#define TK_ACCEPT_BATCH 64
/* How long accepting pauses when even the reserved descriptor cannot help. */
#define TK_ACCEPT_BACKOFF_MS 100
/* Exhaustion is logged at most this often. */
#define TK_EXHAUST_LOG_MS 1000

struct tk_listener {
    tk_loop *loop;
    tk_io io;
    tk_timer backoff;
    tk_defer release; /* frees the listener once this loop turn is over */
    tk_accept_cb cb;
    void *arg;
    const char *busy_msg;
    int spare_fd; /* kept open to be given up when descriptors run out */
    uint64_t last_exhaust_log;
    unsigned long accepted;
    unsigned long shed;
};

static int set_int(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? -errno : 0;
}

int tk_listen_socket(const tk_addr *addr, const tk_listen_opts *o, int dual_stack)
{
    int family = addr->ss.ss_family;
    int type = (o->udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC;
    int fd = socket(family, type, 0);
    if (fd < 0)
        return -errno;
    int err = set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (!err && o->reuseport)
        err = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
    if (!err && family == AF_INET6)
        err = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? 0 : 1);
    if (!err && bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0)
        err = -errno;
    if (!err && !o->udp && listen(fd, o->backlog > 0 ? o->backlog : 511) < 0)
        err = -errno;
    if (err) {
        close(fd);
        return err;
    }
    return fd;
}

static int open_spare(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void log_exhaustion(tk_listener *l, int err)
{
    uint64_t now = tk_loop_now(l->loop);
    if (l->last_exhaust_log && now - l->last_exhaust_log < TK_EXHAUST_LOG_MS)
        return;
    l->last_exhaust_log = now;
    tk_warn("accept: %s; shedding new clients (%lu so far)", strerror(-err), l->shed);
}

/* Out of descriptors: give up the spare one, take the waiting client, tell it
 * we are busy and close it, so it is not left hanging in the backlog and the
 * listener does not report readiness forever. Returns 0 if it shed a client. */
static int shed_one(tk_listener *l)
{
    if (l->spare_fd < 0)
        return -EMFILE;
    close(l->spare_fd);
    l->spare_fd = -1;
    int fd = accept4(l->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        if (l->busy_msg)
            (void)send(fd, l->busy_msg, strlen(l->busy_msg), MSG_NOSIGNAL | MSG_DONTWAIT);
        close(fd);
        l->shed++;
    }
    l->spare_fd = open_spare();
    return fd >= 0 ? 0 : -EMFILE;
}

static void on_backoff(tk_loop *loop, tk_timer *t)
{
    tk_listener *l = (tk_listener *)((char *)t - offsetof(tk_listener, backoff));
    (void)tk_io_set(loop, &l->io, TK_READ);
}

static void pause_accepting(tk_listener *l)
{
    tk_io_stop(l->loop, &l->io);
    (void)tk_timer_start(l->loop, &l->backoff, TK_ACCEPT_BACKOFF_MS);
}

static void on_acceptable(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    (void)events;
    tk_listener *l = (tk_listener *)((char *)io - offsetof(tk_listener, io));
    for (int i = 0; i < TK_ACCEPT_BATCH; i++) {
        tk_addr peer;
        peer.len = sizeof(peer.ss);
        int fd =
            accept4(io->fd, (struct sockaddr *)&peer.ss, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            l->accepted++;
            l->cb(l, fd, &peer, l->arg);
            continue;
        }
        int err = errno;
        switch (err) {
        case EAGAIN: return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case EPERM: continue;
        case EMFILE:
        case ENFILE:
            log_exhaustion(l, -err);
            if (shed_one(l) == 0)
                continue;
            pause_accepting(l);
            return;
        case ENOBUFS:
        case ENOMEM:
            log_exhaustion(l, -err);
            pause_accepting(l);
            return;
        default:
            tk_error("accept: %s", strerror(err));
            pause_accepting(l);
            return;
        }
    }
}

static void release(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    free((char *)d - offsetof(tk_listener, release));
}

int tk_listener_start(tk_loop *loop, int fd, tk_accept_cb cb, void *arg, const char *busy_msg,
                      tk_listener **out)
{
    tk_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    l->loop = loop;
    l->cb = cb;
    l->arg = arg;
    l->busy_msg = busy_msg;
    l->spare_fd = open_spare();
    tk_io_init(&l->io, fd, on_acceptable);
    tk_timer_init(&l->backoff, on_backoff);
    tk_defer_init(&l->release, release);
    int err = tk_io_set(loop, &l->io, TK_READ);
    if (err < 0) {
        close(fd);
        if (l->spare_fd >= 0)
            close(l->spare_fd);
        free(l);
        return err;
    }
    *out = l;
    return 0;
}

void tk_listener_close(tk_listener *l)
{
    if (!l)
        return;
    tk_io_stop(l->loop, &l->io);
    tk_timer_stop(l->loop, &l->backoff);
    close(l->io.fd);
    if (l->spare_fd >= 0)
        close(l->spare_fd);
    /* Events for this listener may still be queued in the current turn. */
    tk_defer_queue(l->loop, &l->release);
}

int tk_listener_fd(const tk_listener *l)
{
    return l->io.fd;
}

unsigned long tk_listener_accepted(const tk_listener *l)
{
    return l->accepted;
}

unsigned long tk_listener_shed(const tk_listener *l)
{
    return l->shed;
}

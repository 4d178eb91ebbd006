/* Listening sockets and the accept loop, and the process-wide descriptor
 * reserve used to shed clients when descriptors run out. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
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
    const void *busy;
    size_t busy_len;
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

/* Descriptor exhaustion is handled for the whole process at once: one
 * reserved descriptor (a /dev/null handle) and, while any listener has seen
 * EMFILE/ENFILE, every accept goes through one lock. Inside it the reserve is
 * given up, the waiting client accepted, told it is refused, and its
 * descriptor number turned back into the reserve with dup3(), which closes
 * the client and re-takes the number in one step: no other thread can slip
 * into the gap and leave a listener without a reserve. */
static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static int reserve_fd = -1;
static int null_fd = -1;
static atomic_int exhausted;

static void reserve_init(void)
{
    pthread_mutex_lock(&reserve_lock);
    if (null_fd < 0)
        null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (reserve_fd < 0 && null_fd >= 0)
        reserve_fd = fcntl(null_fd, F_DUPFD_CLOEXEC, 0);
    pthread_mutex_unlock(&reserve_lock);
}

static void log_exhaustion(tk_listener *l, int err)
{
    uint64_t now = tk_loop_now(l->loop);
    if (l->last_exhaust_log && now - l->last_exhaust_log < TK_EXHAUST_LOG_MS)
        return;
    l->last_exhaust_log = now;
    tk_warn("accept: %s; shedding new clients (%lu so far on this listener)", strerror(-err),
            l->shed);
}

/* Accepts one client while descriptors are (or were just) exhausted. Returns
 * the client's descriptor, 0 after shedding one, or a negative errno: -EAGAIN
 * (nobody waiting) or -EMFILE (no reserve to shed with). */
static int accept_exhausted(tk_listener *l, tk_addr *peer)
{
    int rc;
    pthread_mutex_lock(&reserve_lock);
    peer->len = sizeof(peer->ss);
    int fd =
        accept4(l->io.fd, (struct sockaddr *)&peer->ss, &peer->len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        /* A descriptor was free after all: back to the lock-free path. */
        atomic_store(&exhausted, 0);
        if (reserve_fd < 0 && null_fd >= 0)
            reserve_fd = fcntl(null_fd, F_DUPFD_CLOEXEC, 0);
        rc = fd;
    } else if (errno != EMFILE && errno != ENFILE) {
        rc = -errno;
    } else if (reserve_fd < 0 &&
               (null_fd < 0 || (reserve_fd = fcntl(null_fd, F_DUPFD_CLOEXEC, 0)) < 0)) {
        rc = -EMFILE;
    } else {
        close(reserve_fd);
        reserve_fd = -1;
        fd = accept4(l->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            if (l->busy_len)
                (void)send(fd, l->busy, l->busy_len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (dup3(null_fd, fd, O_CLOEXEC) >= 0) {
                reserve_fd = fd;
            } else {
                close(fd);
                reserve_fd = fcntl(null_fd, F_DUPFD_CLOEXEC, 0);
            }
            l->shed++;
            rc = 0;
        } else {
            rc = errno == EAGAIN ? -EAGAIN : -EMFILE;
            reserve_fd = fcntl(null_fd, F_DUPFD_CLOEXEC, 0);
        }
    }
    pthread_mutex_unlock(&reserve_lock);
    return rc;
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
        int fd;
        if (atomic_load_explicit(&exhausted, memory_order_relaxed)) {
            fd = accept_exhausted(l, &peer);
            if (fd == 0)
                continue; /* shed one; look for more */
            if (fd == -EAGAIN)
                return;
            if (fd == -EMFILE) {
                pause_accepting(l);
                return;
            }
        } else {
            peer.len = sizeof(peer.ss);
            fd = accept4(io->fd, (struct sockaddr *)&peer.ss, &peer.len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                fd = -errno;
        }
        if (fd >= 0) {
            l->accepted++;
            l->cb(l, fd, &peer, l->arg);
            continue;
        }
        switch (-fd) {
        case EAGAIN: return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case EPERM: continue;
        case EMFILE:
        case ENFILE:
            log_exhaustion(l, fd);
            atomic_store(&exhausted, 1);
            continue; /* the next round sheds under the lock */
        case ENOBUFS:
        case ENOMEM:
            log_exhaustion(l, fd);
            pause_accepting(l);
            return;
        default:
            tk_error("accept: %s", strerror(-fd));
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

int tk_listener_start(tk_loop *loop, int fd, tk_accept_cb cb, void *arg, const void *busy,
                      size_t busy_len, tk_listener **out)
{
    tk_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    l->loop = loop;
    l->cb = cb;
    l->arg = arg;
    l->busy = busy;
    l->busy_len = busy_len;
    reserve_init();
    tk_io_init(&l->io, fd, on_acceptable);
    tk_timer_init(&l->backoff, on_backoff);
    tk_defer_init(&l->release, release);
    int err = tk_io_set(loop, &l->io, TK_READ);
    if (err < 0) {
        close(fd);
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

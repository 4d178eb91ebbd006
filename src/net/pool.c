/* Client connection pool: a LIFO stack of idle sockets and a count of slots,
 * behind one mutex. Connects run outside the lock; a slot is held for them
 * (counted in open and connecting) so max_size is never exceeded. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tcpkit/pool.h"

/* Upper bound on max_size, so a typo cannot allocate gigabytes. */
#define POOL_MAX_SIZE 65536u
#define NO_DEADLINE   UINT64_MAX

typedef struct {
    int fd;
    uint64_t since_ns; /* when it was put back */
} idle_conn;

struct tk_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* slot freed, connection put back, pool closed, last user left */
    unsigned max_size;
    unsigned max_idle;
    uint64_t idle_timeout_ns; /* 0: never */
    uint64_t connect_timeout_ns;
    tk_sockopts sockopts;
    int closed;
    unsigned users;      /* threads inside tk_pool_get; tk_pool_free waits for 0 */
    idle_conn *idle;     /* [0] oldest .. [nidle - 1] newest */
    tk_pool_counters st; /* idle is nidle; open, lent, connecting, waiting live here */
    size_t naddrs;
    tk_addr addrs[];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t add_ms(uint64_t t, uint32_t ms)
{
    return t + (uint64_t)ms * 1000000u;
}

/* Milliseconds left until deadline, rounded up, for poll(); -1 for none. */
static int poll_ms(uint64_t deadline)
{
    if (deadline == NO_DEADLINE)
        return -1;
    uint64_t now = now_ns();
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999999u) / 1000000u;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

void tk_pool_config_init(tk_pool_config *c)
{
    memset(c, 0, sizeof(*c));
    c->max_size = 8;
    c->max_idle = -1;
    c->idle_timeout_ms = 60000;
    c->connect_timeout_ms = 5000;
    tk_sockopts_init(&c->sockopts);
    c->sockopts.nodelay = 1;
}

int tk_pool_new(const tk_pool_config *c, tk_pool **out)
{
    if (!c->addrs || c->naddrs == 0 || c->max_size == 0 || c->max_size > POOL_MAX_SIZE ||
        c->max_idle < -1 || (c->max_idle >= 0 && (unsigned)c->max_idle > c->max_size))
        return -EINVAL;
    tk_pool *p = calloc(1, sizeof(*p) + c->naddrs * sizeof(tk_addr));
    if (!p)
        return -ENOMEM;
    p->idle = calloc(c->max_size, sizeof(*p->idle));
    if (!p->idle) {
        free(p);
        return -ENOMEM;
    }
    pthread_condattr_t ca;
    int err = pthread_condattr_init(&ca);
    if (err == 0) {
        /* Deadlines are monotonic, so a wall-clock jump cannot stretch or cut a wait. */
        err = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (err == 0)
            err = pthread_cond_init(&p->cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (err == 0) {
        err = pthread_mutex_init(&p->mu, NULL);
        if (err != 0)
            pthread_cond_destroy(&p->cv);
    }
    if (err != 0) {
        free(p->idle);
        free(p);
        return -err;
    }
    p->max_size = c->max_size;
    p->max_idle = c->max_idle < 0 ? c->max_size : (unsigned)c->max_idle;
    p->idle_timeout_ns = (uint64_t)c->idle_timeout_ms * 1000000u;
    p->connect_timeout_ns = (uint64_t)c->connect_timeout_ms * 1000000u;
    p->sockopts = c->sockopts;
    p->naddrs = c->naddrs;
    memcpy(p->addrs, c->addrs, c->naddrs * sizeof(tk_addr));
    *out = p;
    return 0;
}

/* Connects to one address by deadline; returns the socket or -errno. */
static int connect_addr(const tk_addr *a, uint64_t deadline)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0)
        return fd;
    int err = -errno;
    if (err == -EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int n;
        do
            n = poll(&pfd, 1, poll_ms(deadline));
        while (n < 0 && errno == EINTR);
        if (n < 0)
            err = -errno;
        else if (n == 0)
            err = -ETIMEDOUT;
        else
            err = tk_sock_error(fd);
        if (err == 0)
            return fd;
    }
    close(fd);
    return err;
}

/* Tries each address in order until one connects or the deadline passes;
 * returns a socket with the pool's options applied, or the last -errno. */
static int connect_new(const tk_pool *p, uint64_t deadline)
{
    int err = -ECONNREFUSED;
    for (size_t i = 0; i < p->naddrs; i++) {
        int fd = connect_addr(&p->addrs[i], deadline);
        if (fd >= 0) {
            err = tk_sock_apply(fd, &p->sockopts);
            if (err == 0)
                return fd;
            close(fd);
            return err;
        }
        err = fd;
        if (err == -ETIMEDOUT)
            break;
    }
    return err;
}

/* An idle socket is fit to lend only if the peer has neither closed nor
 * reset it and it holds no bytes nobody asked for (a late reply would be
 * read as the answer to the next request). */
static int healthy(int fd)
{
    char b;
    ssize_t n;
    do
        n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Pops the newest idle connection that is neither expired nor unhealthy,
 * closing the others; returns it or -1. Called locked. */
static int take_idle(tk_pool *p)
{
    uint64_t now = p->idle_timeout_ns ? now_ns() : 0;
    while (p->st.idle > 0) {
        idle_conn c = p->idle[--p->st.idle];
        if (p->idle_timeout_ns && now - c.since_ns > p->idle_timeout_ns)
            p->st.discarded_idle++;
        else if (!healthy(c.fd))
            p->st.discarded_unhealthy++;
        else
            return c.fd;
        close(c.fd);
        p->st.open--;
    }
    return -1;
}

/* Opens a connection in a free slot, with the lock released during the
 * connect. Called locked; returns locked with the socket or -errno. */
static int open_in_slot(tk_pool *p, uint64_t wait_deadline)
{
    p->st.open++;
    p->st.connecting++;
    pthread_mutex_unlock(&p->mu);
    uint64_t deadline = p->connect_timeout_ns ? now_ns() + p->connect_timeout_ns : NO_DEADLINE;
    if (wait_deadline < deadline)
        deadline = wait_deadline;
    int fd = connect_new(p, deadline);
    pthread_mutex_lock(&p->mu);
    p->st.connecting--;
    if (fd >= 0 && p->closed) {
        close(fd);
        fd = -ESHUTDOWN;
    } else if (fd >= 0) {
        p->st.lent++;
        p->st.created++;
        return fd;
    } else {
        p->st.connect_errors++;
    }
    p->st.open--;
    return fd;
}

int tk_pool_get(tk_pool *p, uint32_t timeout_ms)
{
    uint64_t start = now_ns();
    uint64_t wait_deadline =
        timeout_ms == TK_POOL_FOREVER ? NO_DEADLINE : add_ms(start, timeout_ms);
    /* A get that does not wait still gives a new connect its full time. */
    uint64_t connect_deadline = timeout_ms == 0 ? NO_DEADLINE : wait_deadline;
    int fd;
    pthread_mutex_lock(&p->mu);
    p->users++;
    for (;;) {
        if (p->closed) {
            fd = -ESHUTDOWN;
            break;
        }
        fd = take_idle(p);
        if (fd >= 0) {
            p->st.lent++;
            p->st.reused++;
            break;
        }
        if (p->st.open < p->max_size) {
            fd = open_in_slot(p, connect_deadline);
            break;
        }
        if (wait_deadline != NO_DEADLINE && now_ns() >= wait_deadline) {
            p->st.timeouts++;
            fd = -ETIMEDOUT;
            break;
        }
        p->st.waiting++;
        if (wait_deadline == NO_DEADLINE) {
            pthread_cond_wait(&p->cv, &p->mu);
        } else {
            struct timespec ts = {.tv_sec = (time_t)(wait_deadline / 1000000000u),
                                  .tv_nsec = (long)(wait_deadline % 1000000000u)};
            pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        }
        p->st.waiting--;
    }
    p->users--;
    if (p->closed && p->users == 0) {
        pthread_cond_broadcast(&p->cv); /* tk_pool_free may be waiting for us */
    } else if (p->st.waiting > 0 && (p->st.idle > 0 || p->st.open < p->max_size)) {
        /* Pass on a wake-up this thread may have absorbed (a timed-out wait
         * or a failed connect) so no waiter sleeps next to a free slot. */
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return fd;
}

void tk_pool_put(tk_pool *p, int fd, int reuse)
{
    if (fd < 0)
        return;
    int to_close = fd;
    pthread_mutex_lock(&p->mu);
    if (p->st.lent == 0) { /* not ours: close it, leave the counts alone */
        pthread_mutex_unlock(&p->mu);
        close(fd);
        return;
    }
    p->st.lent--;
    if (reuse && !p->closed) {
        if (p->st.idle < p->max_idle) {
            to_close = -1;
        } else if (p->max_idle > 0) {
            to_close = p->idle[0].fd;
            memmove(p->idle, p->idle + 1, (p->st.idle - 1) * sizeof(*p->idle));
            p->st.idle--;
            p->st.evicted++;
        } else {
            p->st.evicted++;
        }
        if (to_close != fd)
            p->idle[p->st.idle++] = (idle_conn){.fd = fd, .since_ns = now_ns()};
    }
    if (to_close >= 0)
        p->st.open--;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    /* Outside the lock: with SO_LINGER set, close can block. */
    if (to_close >= 0)
        close(to_close);
}

void tk_pool_close(tk_pool *p)
{
    pthread_mutex_lock(&p->mu);
    if (!p->closed) {
        p->closed = 1;
        while (p->st.idle > 0) {
            close(p->idle[--p->st.idle].fd);
            p->st.open--;
        }
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

void tk_pool_free(tk_pool *p)
{
    if (!p)
        return;
    tk_pool_close(p);
    pthread_mutex_lock(&p->mu);
    while (p->users > 0)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->idle);
    free(p);
}

void tk_pool_stats(tk_pool *p, tk_pool_counters *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->st;
    pthread_mutex_unlock(&p->mu);
}

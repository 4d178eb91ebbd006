/* floor_echo: the performance floor for tcpkit's echo benchmarks.
 *
 * The least a competent C server does to answer "ECHO: <line>" for every
 * line: one thread per core, each with its own SO_REUSEPORT listener and a
 * level-triggered epoll set, one read per readiness event, every reply of
 * that read in one write(). No framework, no timers, no limits beyond a
 * 64 KiB line; a connection costs a small struct until it has a partial
 * line or unsent output to keep. It shares no code with tcpkit, so the
 * distance between the two is what tcpkit's layers cost.
 *
 * usage: floor_echo HOST:PORT [THREADS]   (prints "listening on ADDR") */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CAP   (64 * 1024)
#define MAX_LINE   (64 * 1024)
#define PREFIX     "ECHO: "
#define PREFIX_LEN 6
/* Worst case output of one batch: every line empty, 1 input byte -> 7 out. */
#define OUT_CAP     ((READ_CAP + MAX_LINE) * (PREFIX_LEN + 1))
#define MAX_EVENTS  256
#define MAX_THREADS 256

typedef struct {
    int fd;
    char *part; /* an unfinished line carried to the next read, or NULL */
    size_t part_len;
    char *out; /* replies the kernel did not take yet, or NULL */
    size_t out_len;
    size_t out_off;
} conn;

typedef struct {
    int epfd;
    int lfd;
    char *in;  /* carried partial line + one read */
    char *out; /* the replies of one read */
} worker;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void conn_close(worker *w, conn *c)
{
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->part);
    free(c->out);
    free(c);
}

static int watch(worker *w, conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    return epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Sends what is stashed; back to reading once it is all gone. */
static int flush_stash(worker *w, conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        c->out_off += (size_t)n;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    return watch(w, c, EPOLLIN);
}

/* Writes one batch of replies; whatever the kernel refuses is stashed and
 * reading pauses until it drains, so a peer that never reads cannot make us
 * buffer more than one batch. */
static int send_batch(worker *w, conn *c, const char *p, size_t len)
{
    ssize_t n = write(c->fd, p, len);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        n = 0;
    }
    if ((size_t)n == len)
        return 0;
    c->out_len = len - (size_t)n;
    c->out_off = 0;
    c->out = malloc(c->out_len);
    if (!c->out)
        return -1;
    memcpy(c->out, p + n, c->out_len);
    return watch(w, c, EPOLLOUT);
}

static int on_readable(worker *w, conn *c)
{
    size_t have = c->part_len;
    if (have)
        memcpy(w->in, c->part, have);
    ssize_t n = read(c->fd, w->in + have, READ_CAP);
    if (n <= 0)
        return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    have += (size_t)n;

    size_t out = 0, start = 0;
    const char *nl;
    while (start < have && (nl = memchr(w->in + start, '\n', have - start)) != NULL) {
        size_t end = (size_t)(nl - w->in);
        size_t len = end - start;
        if (len > 0 && w->in[end - 1] == '\r')
            len--;
        memcpy(w->out + out, PREFIX, PREFIX_LEN);
        memcpy(w->out + out + PREFIX_LEN, w->in + start, len);
        out += PREFIX_LEN + len;
        w->out[out++] = '\n';
        start = end + 1;
    }

    size_t rest = have - start;
    if (rest > MAX_LINE)
        return -1;
    if (rest != c->part_len) {
        free(c->part);
        c->part = rest ? malloc(rest) : NULL;
        if (rest && !c->part)
            return -1;
    }
    if (rest)
        memcpy(c->part, w->in + start, rest);
    c->part_len = rest;
    return out ? send_batch(w, c, w->out, out) : 0;
}

static void on_accept(worker *w)
{
    for (int i = 0; i < 64; i++) {
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or out of descriptors: try again next wake-up */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
        }
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(w->epfd, evs, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                on_accept(w);
                continue;
            }
            int rc = c->out ? flush_stash(w, c) : on_readable(w, c);
            if (rc < 0)
                conn_close(w, c);
        }
    }
    return NULL;
}

static int listen_on(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, sa, len) < 0)
        die("bind");
    if (listen(fd, SOMAXCONN) < 0)
        die("listen");
    return fd;
}

static void resolve(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof(host)) {
        fprintf(stderr, "floor_echo: expected HOST:PORT, got '%s'\n", spec);
        exit(2);
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    char *h = host;
    if (h[0] == '[') {
        h++;
        h[strlen(h) - 1] = '\0';
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res;
    int err = getaddrinfo(h[0] ? h : NULL, colon + 1, &hints, &res);
    if (err) {
        fprintf(stderr, "floor_echo: %s: %s\n", spec, gai_strerror(err));
        exit(2);
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: floor_echo HOST:PORT [THREADS]\n");
        return 2;
    }
    int nthreads = argc == 3 ? atoi(argv[2]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads < 1 || nthreads > MAX_THREADS) {
        fprintf(stderr, "floor_echo: THREADS must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_storage ss;
    socklen_t len;
    resolve(argv[1], &ss, &len);

    static worker workers[MAX_THREADS];
    for (int i = 0; i < nthreads; i++) {
        worker *w = &workers[i];
        /* Port 0 is chosen by the kernel once; the other listeners join it. */
        w->lfd = listen_on((struct sockaddr *)&ss, len);
        if (i == 0 && getsockname(w->lfd, (struct sockaddr *)&ss, &len) < 0)
            die("getsockname");
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->in = malloc(MAX_LINE + READ_CAP);
        w->out = malloc(OUT_CAP);
        if (w->epfd < 0 || !w->in || !w->out)
            die("setup");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) < 0)
            die("epoll_ctl");
    }

    char host[INET6_ADDRSTRLEN];
    int port;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
        printf("listening on [%s]:%d\n", host, port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
        printf("listening on %s:%d\n", host, port);
    }
    fflush(stdout);

    pthread_t tid;
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&tid, NULL, worker_main, &workers[i]) != 0)
            die("pthread_create");
    }
    worker_main(&workers[0]);
    return 0;
}

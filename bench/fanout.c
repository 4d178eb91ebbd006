/* fanout: chat fan-out load for bench/run.sh. N receivers sit in one room
 * (a Redis channel, a chat room, the Go hub's single room) and only read; M
 * senders publish fixed-size messages into it, each keeping at most W
 * unacknowledged messages in flight. After every receiver is set up the
 * senders start; after a warm-up, the tool counts for S seconds how many
 * messages the receivers get and prints one JSON line:
 *
 *   {"target":..,"receivers":N,"senders":M,"payload":P,"seconds":S,
 *    "deliveries":D,"deliveries_per_sec":R,"published":X,"errors":E}
 *
 * One thread, one level-triggered epoll set, 64 KiB reads, memchr to find
 * line ends: the tool does little per delivered message so the server is
 * what runs out first.
 *
 * Targets:
 *   tcpkit  chat-server in JSON mode. REGISTER as r0..rN-1 / s0..sM-1 and
 *           wait for the ok response; senders send MESSAGE requests, acked by
 *           their MESSAGE response line; receivers count {"type":"chat" lines.
 *   redis   receivers SUBSCRIBE bench; senders PUBLISH bench, acked by the
 *           integer reply; receivers count "message" pushes.
 *   gohub   bench/go_hub: a name line, then message lines. No acks: a sender
 *           counts its own broadcast coming back as the ack. Receivers count
 *           message lines from senders.
 *
 * --nap-us US sleeps that long after every epoll round, so reads come in
 * bigger batches (a diagnostic: does the tool's own CPU use matter?).
 * `fanout --free-port` prints a port that was free on 127.0.0.1 a moment
 * ago, for bench/run.sh to hand to redis-server.
 *
 * Exit status: 0 ok, 1 a connection failed, closed or got an error reply
 * (the JSON line is still printed when the run got that far), 2 usage.
 * A hard deadline (SIGALRM) ends the process whatever happens. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF      (64 * 1024)
#define LINE_KEEP     512 /* bytes of each line kept while setting up */
#define PREFIX_KEEP   32  /* bytes of each line kept while counting */
#define MAX_READS     8   /* reads per readable event before moving on */
#define CONNECT_TMO_S 5

enum target { T_TCPKIT, T_REDIS, T_GOHUB };
enum role { RECEIVER, SENDER };

typedef struct {
    int fd;
    enum role role;
    int idx;
    int ready;    /* set-up done (registered, subscribed, announced) */
    int want_out; /* EPOLLOUT armed */
    int closed;
    char line[LINE_KEEP];
    size_t llen;       /* bytes of the current line kept in line[] */
    int saw_subscribe; /* redis set-up: the "subscribe" line went by */
    uint64_t count;    /* receivers: deliveries; senders: acks */
    uint64_t inflight; /* senders: queued or written, not yet acked */
    uint64_t queued;   /* senders: whole messages not yet written */
    size_t off;        /* senders: bytes of the next message already written */
    char name[16];
    char own[48]; /* gohub sender: prefix of its own broadcast lines */
} conn;

static enum target target;
static const char *target_name;
static int nrecv = 100, nsend = 4, window = 64;
static size_t payload = 64;
static double seconds = 5, warmup = 1, setup_timeout = 60;
static conn *conns;
static int nconns, epfd;
static char rbuf[READ_BUF];
static char *msgbuf; /* many copies of the message a sender sends */
static size_t msg_len, msgbuf_len;
static int sending; /* senders may publish */
static uint64_t errors;
static unsigned nap_us;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fanout: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void warn_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fanout: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    errors++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: fanout --target tcpkit|redis|gohub --addr HOST:PORT [--receivers N]\n"
                    "              [--senders M] [--payload BYTES] [--seconds S] [--warmup S]\n"
                    "              [--window W] [--setup-timeout S] [--nap-us US]\n"
                    "       fanout --free-port    (prints a free TCP port on 127.0.0.1)\n");
    exit(2);
}

static double num_arg(const char *opt, const char *v, double lo, double hi)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < lo || d > hi) {
        fprintf(stderr, "fanout: bad value for %s: %s\n", opt, v);
        exit(2);
    }
    return d;
}

static void raise_nofile(int need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= (rlim_t)need)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)need)
        rl.rlim_max = (rlim_t)need; /* needs privilege; checked below */
    rl.rlim_cur = (rlim_t)need;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("cannot raise the descriptor limit to %d: %s", need, strerror(errno));
}

static int connect_to(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    /* On Linux SO_SNDTIMEO bounds a blocking connect(). */
    struct timeval tv = {.tv_sec = CONNECT_TMO_S};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        die("connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    tv.tv_sec = 0;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        die("fcntl: %s", strerror(errno));
    return fd;
}

static void send_all(conn *c, const char *p, size_t n)
{
    /* Set-up requests are small and go out on an empty socket. */
    while (n > 0) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("%s: write: %s", c->name, w < 0 ? strerror(errno) : "short");
        p += w;
        n -= (size_t)w;
    }
}

static void set_out(conn *c, int on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = on;
}

static void close_conn(conn *c, const char *why)
{
    if (c->closed)
        return;
    warn_err("%s: %s", c->name, why);
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->closed = 1;
}

/* Senders: top the window up and write what the socket takes. */
static void sender_pump(conn *c)
{
    if (c->closed || !c->ready)
        return;
    if (sending && c->inflight < (uint64_t)window) {
        c->queued += (uint64_t)window - c->inflight;
        c->inflight = (uint64_t)window;
    }
    while (c->queued > 0) {
        size_t want = c->queued * msg_len - c->off;
        if (want > msgbuf_len - c->off)
            want = msgbuf_len - c->off;
        ssize_t w = write(c->fd, msgbuf + c->off, want);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                set_out(c, 1);
                return;
            }
            close_conn(c, strerror(errno));
            return;
        }
        c->off += (size_t)w;
        c->queued -= c->off / msg_len;
        c->off %= msg_len;
    }
    set_out(c, 0);
}

static int has(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

static int starts(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && memcmp(s, prefix, k) == 0;
}

static void ack(conn *c)
{
    c->count++;
    if (c->inflight > 0)
        c->inflight--;
}

/* One complete line (its first llen bytes, the '\n' not included). */
static void on_line(conn *c, const char *l, size_t n)
{
    if (!c->ready) {
        switch (target) {
        case T_TCPKIT:
            if (starts(l, n, "{\"type\":\"REGISTER\"")) {
                if (!has(l, n, "\"status\":\"ok\""))
                    die("%s: REGISTER refused: %.*s", c->name, (int)n, l);
                c->ready = 1;
            } else if (starts(l, n, "{\"type\":\"error\"")) {
                die("%s: error during set-up: %.*s", c->name, (int)n, l);
            }
            break;
        case T_REDIS:
            if (starts(l, n, "subscribe\r"))
                c->saw_subscribe = 1;
            else if (c->saw_subscribe && starts(l, n, ":"))
                c->ready = 1;
            else if (starts(l, n, "-"))
                die("%s: %.*s", c->name, (int)n, l);
            break;
        case T_GOHUB: {
            char want[64];
            snprintf(want, sizeof(want), "\"content\":\"%s joined\"", c->name);
            if (has(l, n, want))
                c->ready = 1;
            break;
        }
        }
        return;
    }
    switch (target) {
    case T_TCPKIT:
        if (c->role == RECEIVER) {
            if (starts(l, n, "{\"type\":\"chat\""))
                c->count++;
        } else if (starts(l, n, "{\"type\":\"MESSAGE\"")) {
            ack(c);
        } else if (starts(l, n, "{\"type\":\"error\"")) {
            warn_err("%s: %.*s", c->name, (int)n, l);
            ack(c);
        }
        break;
    case T_GOHUB:
        if (c->role == RECEIVER) {
            if (starts(l, n, "{\"from\":\"s"))
                c->count++;
        } else if (starts(l, n, c->own)) {
            ack(c);
        }
        break;
    case T_REDIS: break; /* counted by bytes, see on_data() */
    }
}

static void on_data(conn *c, const char *p, size_t n)
{
    const char *end = p + n;
    if (target == T_REDIS && c->ready) {
        /* Every push to a receiver is the same "*3 message bench payload"
         * array and the payload is all 'x', so each '*' starts one push;
         * a sender only gets ":N" integer replies (or "-ERR"). */
        char mark = c->role == RECEIVER ? '*' : ':';
        for (const char *q = p; (q = memchr(q, mark, (size_t)(end - q))) != NULL; q++) {
            if (c->role == RECEIVER)
                c->count++;
            else
                ack(c);
        }
        if (c->role == SENDER && memchr(p, '-', n))
            warn_err("%s: error reply: %.*s", c->name, (int)(n > 200 ? 200 : n), p);
        return;
    }
    size_t keep = c->ready ? PREFIX_KEEP : LINE_KEEP;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *seg = nl ? nl : end;
        if (c->llen < keep) {
            size_t k = (size_t)(seg - p);
            if (k > keep - c->llen)
                k = keep - c->llen;
            memcpy(c->line + c->llen, p, k);
            c->llen += k;
        }
        if (!nl)
            break;
        size_t len = c->llen;
        c->llen = 0;
        on_line(c, c->line, len);
        if (target == T_REDIS && c->ready) { /* the rest is counted by bytes */
            on_data(c, nl + 1, (size_t)(end - nl - 1));
            return;
        }
        keep = c->ready ? PREFIX_KEEP : LINE_KEEP;
        p = nl + 1;
    }
}

static void on_readable(conn *c)
{
    for (int i = 0; i < MAX_READS && !c->closed; i++) {
        ssize_t r = read(c->fd, rbuf, sizeof(rbuf));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                close_conn(c, strerror(errno));
            return;
        }
        if (r == 0) {
            close_conn(c, "closed by the server");
            return;
        }
        on_data(c, rbuf, (size_t)r);
        if ((size_t)r < sizeof(rbuf))
            return;
    }
}

static struct epoll_event *events;

/* Reads every sender's acks and refills its window. */
static void service_senders(void)
{
    for (int i = nrecv; i < nconns; i++) {
        on_readable(&conns[i]);
        sender_pump(&conns[i]);
    }
}

/* One epoll round, waiting at most timeout_ms. While the load runs, the
 * senders are also served between every SENDER_EVERY receivers: a sweep over
 * a thousand busy receivers takes milliseconds, and a sender that waited for
 * the end of it to learn of its acks would leave the server idle. */
#define SENDER_EVERY 32
static void pump(int timeout_ms)
{
    int n = epoll_wait(epfd, events, nconns + 1, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return;
        die("epoll_wait: %s", strerror(errno));
    }
    int since = 0;
    for (int i = 0; i < n; i++) {
        conn *c = events[i].data.ptr;
        if (c->closed)
            continue;
        if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(c);
        if (c->role == SENDER)
            sender_pump(c);
        else if (sending && ++since == SENDER_EVERY) {
            since = 0;
            service_senders();
        }
    }
}

static void open_conn(conn *c, const struct addrinfo *ai)
{
    c->fd = connect_to(ai);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    char req[256];
    int n = 0;
    switch (target) {
    case T_TCPKIT:
        n = snprintf(req, sizeof(req), "{\"type\":\"REGISTER\",\"payload\":{\"name\":\"%s\"}}\n",
                     c->name);
        break;
    case T_REDIS:
        if (c->role == RECEIVER)
            n = snprintf(req, sizeof(req), "*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n");
        else
            c->ready = 1; /* a publisher needs no set-up */
        break;
    case T_GOHUB: n = snprintf(req, sizeof(req), "%s\n", c->name); break;
    }
    if (n > 0)
        send_all(c, req, (size_t)n);
}

/* Opens connections [from, to) and waits until all are set up. */
static void open_group(int from, int to, const struct addrinfo *ai, double deadline,
                       const char *what)
{
    for (int i = from; i < to; i++) {
        open_conn(&conns[i], ai);
        /* Keep reading while connecting: with many clients, each arrival
         * is announced to everyone already there. */
        if ((i - from) % 32 == 31)
            pump(0);
        if (now_s() > deadline)
            die("set-up of the %s took longer than %.0f s", what, setup_timeout);
    }
    for (;;) {
        int ready = 0;
        for (int i = from; i < to; i++) {
            if (conns[i].closed)
                die("%s: closed during set-up", conns[i].name);
            ready += conns[i].ready;
        }
        if (ready == to - from)
            return;
        if (now_s() > deadline)
            die("set-up: %d of %d %s ready after %.0f s", ready, to - from, what, setup_timeout);
        pump(50);
    }
}

static void build_message(void)
{
    char *x = malloc(payload);
    if (!x)
        die("out of memory");
    memset(x, 'x', payload);
    char head[128];
    const char *tail;
    int hn;
    switch (target) {
    case T_TCPKIT:
        hn = snprintf(head, sizeof(head), "{\"type\":\"MESSAGE\",\"payload\":{\"content\":\"");
        tail = "\"}}\n";
        break;
    case T_REDIS:
        hn =
            snprintf(head, sizeof(head), "*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%zu\r\n", payload);
        tail = "\r\n";
        break;
    default:
        hn = 0;
        tail = "\n";
        break;
    }
    msg_len = (size_t)hn + payload + strlen(tail);
    size_t copies = (size_t)window;
    if (copies * msg_len < READ_BUF)
        copies = READ_BUF / msg_len + 1;
    msgbuf_len = copies * msg_len;
    msgbuf = malloc(msgbuf_len);
    if (!msgbuf)
        die("out of memory");
    for (size_t i = 0; i < copies; i++) {
        char *m = msgbuf + i * msg_len;
        memcpy(m, head, (size_t)hn);
        memcpy(m + hn, x, payload);
        memcpy(m + hn + payload, tail, strlen(tail));
    }
    free(x);
}

static uint64_t total(enum role r)
{
    uint64_t s = 0;
    for (int i = 0; i < nconns; i++)
        if (conns[i].role == r)
            s += conns[i].count;
    return s;
}

/* For servers that cannot report the port they bound (redis-server): bind
 * 127.0.0.1:0, print the port the kernel chose, close. Another process could
 * take it before the caller does; the caller retries. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        die("free port: %s", strerror(errno));
    printf("%d\n", ntohs(sa.sin_port));
    close(fd);
    return 0;
}

int main(int argc, char **argv)
{
    const char *addr = NULL;
    target_name = NULL;
    if (argc == 2 && !strcmp(argv[1], "--free-port"))
        return free_port();
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help"))
            usage();
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(o, "--target"))
            target_name = v;
        else if (!strcmp(o, "--addr"))
            addr = v;
        else if (!strcmp(o, "--receivers"))
            nrecv = (int)num_arg(o, v, 1, 100000);
        else if (!strcmp(o, "--senders"))
            nsend = (int)num_arg(o, v, 1, 1000);
        else if (!strcmp(o, "--payload"))
            payload = (size_t)num_arg(o, v, 1, 1 << 20);
        else if (!strcmp(o, "--seconds"))
            seconds = num_arg(o, v, 0.1, 3600);
        else if (!strcmp(o, "--warmup"))
            warmup = num_arg(o, v, 0, 3600);
        else if (!strcmp(o, "--window"))
            window = (int)num_arg(o, v, 1, 100000);
        else if (!strcmp(o, "--nap-us"))
            nap_us = (unsigned)num_arg(o, v, 0, 100000);
        else if (!strcmp(o, "--setup-timeout"))
            setup_timeout = num_arg(o, v, 1, 3600);
        else
            usage();
    }
    if (!target_name || !addr)
        usage();
    if (!strcmp(target_name, "tcpkit"))
        target = T_TCPKIT;
    else if (!strcmp(target_name, "redis"))
        target = T_REDIS;
    else if (!strcmp(target_name, "gohub"))
        target = T_GOHUB;
    else
        usage();

    /* The hard deadline: whatever hangs, SIGALRM ends the process. */
    alarm((unsigned)(setup_timeout * 2 + warmup + seconds + 10));
    signal(SIGPIPE, SIG_IGN);

    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host))
        usage();
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai;
    int gai = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gai)
        die("%s: %s", addr, gai_strerror(gai));

    nconns = nrecv + nsend;
    raise_nofile(nconns + 64);
    conns = calloc((size_t)nconns, sizeof(*conns));
    events = calloc((size_t)nconns + 1, sizeof(*events));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !events || epfd < 0)
        die("set-up: %s", strerror(errno));
    for (int i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        c->role = i < nrecv ? RECEIVER : SENDER;
        c->idx = c->role == RECEIVER ? i : i - nrecv;
        snprintf(c->name, sizeof(c->name), "%c%d", c->role == RECEIVER ? 'r' : 's', c->idx);
        snprintf(c->own, sizeof(c->own), "{\"from\":\"%s\"", c->name);
    }
    build_message();

    double deadline = now_s() + setup_timeout;
    open_group(0, nrecv, ai, deadline, "receivers");
    open_group(nrecv, nconns, ai, deadline, "senders");
    freeaddrinfo(ai);

    /* Load: warm up, then count. */
    sending = 1;
    for (int i = nrecv; i < nconns; i++)
        sender_pump(&conns[i]);
    double t = now_s(), t_start = t + warmup, t_end = t_start + seconds;
    uint64_t d0 = 0, p0 = 0;
    int counting = 0;
    while (t < t_end) {
        if (!counting && t >= t_start) {
            d0 = total(RECEIVER);
            p0 = total(SENDER);
            t_start = t;
            t_end = t + seconds;
            counting = 1;
        }
        double left = (counting ? t_end : t_start) - t;
        int ms = (int)(left * 1000) + 1;
        pump(ms > 100 ? 100 : ms);
        if (nap_us)
            usleep(nap_us);
        t = now_s();
    }
    uint64_t d = total(RECEIVER) - d0, pub = total(SENDER) - p0;
    double elapsed = t - t_start;

    printf("{\"target\":\"%s\",\"receivers\":%d,\"senders\":%d,\"payload\":%zu,\"seconds\":%.3f,"
           "\"deliveries\":%llu,\"deliveries_per_sec\":%.0f,\"published\":%llu,\"errors\":%llu}\n",
           target_name, nrecv, nsend, payload, elapsed, (unsigned long long)d,
           elapsed > 0 ? (double)d / elapsed : 0.0, (unsigned long long)pub,
           (unsigned long long)errors);
    fflush(stdout);
    return errors ? 1 : 0;
}

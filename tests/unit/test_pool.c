/* tk_pool: every rule of the client connection pool, against loopback
 * listeners this test opens, with the server side of each connection in
 * reach (an accept thread keeps every accepted socket). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcpkit/pool.h"

#define SERVER_CAP 2048
#define WAIT_MS    5000 /* bound on every wait for a condition */

/* A listener on 127.0.0.1:0 whose thread accepts everything and keeps it. */
typedef struct {
    int lfd;
    tk_addr addr;
    pthread_t th;
    atomic_int stop;
    pthread_mutex_t mu;
    int fds[SERVER_CAP];   /* accepted sockets */
    int ports[SERVER_CAP]; /* the client's port of each */
    size_t n;
} server;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void pause_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *accept_loop(void *arg)
{
    server *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd pfd = {.fd = s->lfd, .events = POLLIN};
        if (poll(&pfd, 1, 10) <= 0)
            continue;
        tk_addr peer;
        peer.len = sizeof(peer.ss);
        int fd = accept4(s->lfd, (struct sockaddr *)&peer.ss, &peer.len, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&s->mu);
        if (s->n < SERVER_CAP) {
            s->fds[s->n] = fd;
            s->ports[s->n] = tk_addr_port(&peer);
            s->n++;
            fd = -1;
        }
        pthread_mutex_unlock(&s->mu);
        if (fd >= 0)
            close(fd);
    }
    return NULL;
}

static void server_start(server *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(tk_addr_parse("127.0.0.1:0", &s->addr), 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&s->addr.ss, s->addr.len), 0);
    assert_int_equal(listen(s->lfd, 512), 0);
    assert_int_equal(tk_addr_of_socket(s->lfd, 0, &s->addr), 0);
    assert_int_equal(pthread_create(&s->th, NULL, accept_loop, s), 0);
}

static void server_stop(server *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    close(s->lfd);
    for (size_t i = 0; i < s->n; i++)
        if (s->fds[i] >= 0)
            close(s->fds[i]);
    pthread_mutex_destroy(&s->mu);
}

static size_t server_count(server *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Waits until the server holds n accepted sockets. */
static void server_wait_count(server *s, size_t n)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (server_count(s) < n && now_ms() < end)
        pause_ms(2);
    assert_int_equal(server_count(s), n);
}

/* The accepted socket on the other end of client fd (waits for the accept). */
static int server_side(server *s, int fd)
{
    tk_addr local;
    assert_int_equal(tk_addr_of_socket(fd, 0, &local), 0);
    int port = tk_addr_port(&local);
    uint64_t end = now_ms() + WAIT_MS;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int found = -1;
        for (size_t i = 0; i < s->n; i++)
            if (s->ports[i] == port && s->fds[i] >= 0)
                found = s->fds[i];
        pthread_mutex_unlock(&s->mu);
        if (found >= 0)
            return found;
        assert_true(now_ms() < end);
        pause_ms(2);
    }
}

/* Closes the server side of client fd (reset: with an RST instead of a FIN). */
static void server_close_side(server *s, int fd, int reset)
{
    int sfd = server_side(s, fd);
    if (reset) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        assert_int_equal(setsockopt(sfd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)), 0);
    }
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++)
        if (s->fds[i] == sfd)
            s->fds[i] = -1;
    pthread_mutex_unlock(&s->mu);
    close(sfd);
}

/* Waits until fd is readable (data, EOF or error) without consuming it. */
static void wait_readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
}

/* True when the peer of the accepted socket sfd has closed (EOF or reset). */
static int peer_closed(int sfd)
{
    wait_readable(sfd);
    char b[64];
    ssize_t n = recv(sfd, b, sizeof(b), MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static int local_port(int fd)
{
    tk_addr a;
    assert_int_equal(tk_addr_of_socket(fd, 0, &a), 0);
    return tk_addr_port(&a);
}

static tk_pool *pool_for(const tk_addr *addrs, size_t n, unsigned max_size, int max_idle,
                         uint32_t idle_timeout_ms)
{
    tk_pool_config c;
    tk_pool_config_init(&c);
    c.addrs = addrs;
    c.naddrs = n;
    c.max_size = max_size;
    c.max_idle = max_idle;
    c.idle_timeout_ms = idle_timeout_ms;
    tk_pool *p = NULL;
    assert_int_equal(tk_pool_new(&c, &p), 0);
    return p;
}

static tk_pool_counters stats_of(tk_pool *p)
{
    tk_pool_counters s;
    tk_pool_stats(p, &s);
    return s;
}

/* Waits until n threads are blocked in tk_pool_get. */
static void wait_waiting(tk_pool *p, unsigned n)
{
    uint64_t end = now_ms() + WAIT_MS;
    while (stats_of(p).waiting < n && now_ms() < end)
        pause_ms(2);
    assert_int_equal(stats_of(p).waiting, n);
}

static void defaults_and_bad_configs(void **state)
{
    (void)state;
    tk_pool_config c;
    tk_pool_config_init(&c);
    assert_int_equal(c.max_size, 8);
    assert_int_equal(c.max_idle, -1);
    assert_int_equal(c.idle_timeout_ms, 60000);
    assert_int_equal(c.connect_timeout_ms, 5000);
    assert_int_equal(c.sockopts.nodelay, 1);
    tk_pool *p = NULL;
    assert_int_equal(tk_pool_new(&c, &p), -EINVAL); /* no address */
    tk_addr a;
    assert_int_equal(tk_addr_parse("127.0.0.1:1", &a), 0);
    c.addrs = &a;
    c.naddrs = 1;
    c.max_size = 0;
    assert_int_equal(tk_pool_new(&c, &p), -EINVAL);
    c.max_size = 2;
    c.max_idle = 3;
    assert_int_equal(tk_pool_new(&c, &p), -EINVAL);
    c.max_idle = -2;
    assert_int_equal(tk_pool_new(&c, &p), -EINVAL);
    c.max_idle = 2;
    assert_int_equal(tk_pool_new(&c, &p), 0);
    tk_pool_free(p);
    tk_pool_free(NULL);
}

/* max_size connections are made; the next get waits its timeout (at least)
 * and fails, and a get with timeout 0 fails without waiting. */
static void creates_up_to_max_size_then_times_out(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 3, -1, 0);
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = tk_pool_get(p, 1000);
        assert_true(fds[i] >= 0);
    }
    uint64_t t0 = now_ms();
    assert_int_equal(tk_pool_get(p, 100), -ETIMEDOUT);
    assert_true(now_ms() - t0 >= 99);
    assert_int_equal(tk_pool_get(p, 0), -ETIMEDOUT);
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.open, 3);
    assert_int_equal(st.lent, 3);
    assert_int_equal(st.created, 3);
    assert_int_equal(st.timeouts, 2);
    server_wait_count(&s, 3);
    for (int i = 0; i < 3; i++)
        tk_pool_put(p, fds[i], 1);
    tk_pool_free(p);
    server_stop(&s);
}

/* The connection put back last is the one handed out next, and it is the
 * same socket (same local port), not a new connection. */
static void put_then_get_reuses_newest(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 4, -1, 0);
    int a = tk_pool_get(p, 1000);
    int b = tk_pool_get(p, 1000);
    assert_true(a >= 0 && b >= 0);
    int pa = local_port(a), pb = local_port(b);
    tk_pool_put(p, a, 1);
    tk_pool_put(p, b, 1);
    int c = tk_pool_get(p, 1000);
    assert_int_equal(c, b);
    assert_int_equal(local_port(c), pb);
    int d = tk_pool_get(p, 1000);
    assert_int_equal(d, a);
    assert_int_equal(local_port(d), pa);
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.created, 2);
    assert_int_equal(st.reused, 2);
    tk_pool_put(p, c, 1);
    tk_pool_put(p, d, 1);
    tk_pool_free(p);
    server_wait_count(&s, 2);
    server_stop(&s);
}

/* An idle connection whose peer closed (FIN, or RST) is closed on get and a
 * fresh one is made in its place. */
static void peer_closed_connection_is_never_lent(void **state)
{
    (void)state;
    for (int reset = 0; reset <= 1; reset++) {
        server s;
        server_start(&s);
        tk_pool *p = pool_for(&s.addr, 1, 2, -1, 0);
        int a = tk_pool_get(p, 1000);
        assert_true(a >= 0);
        int pa = local_port(a);
        tk_pool_put(p, a, 1);
        server_close_side(&s, a, reset);
        wait_readable(a); /* the FIN or RST has arrived */
        int b = tk_pool_get(p, 1000);
        assert_true(b >= 0);
        assert_int_not_equal(local_port(b), pa);
        tk_pool_counters st = stats_of(p);
        assert_int_equal(st.discarded_unhealthy, 1);
        assert_int_equal(st.created, 2);
        assert_int_equal(st.reused, 0);
        assert_int_equal(st.open, 1);
        tk_pool_put(p, b, 1);
        tk_pool_free(p);
        server_stop(&s);
    }
}

/* A connection with bytes nobody asked for is not lent either. */
static void connection_with_unread_bytes_is_discarded(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 2, -1, 0);
    int a = tk_pool_get(p, 1000);
    assert_true(a >= 0);
    int pa = local_port(a);
    int sa = server_side(&s, a);
    tk_pool_put(p, a, 1);
    assert_int_equal(send(sa, "late", 4, MSG_NOSIGNAL), 4);
    wait_readable(a);
    int b = tk_pool_get(p, 1000);
    assert_true(b >= 0);
    assert_int_not_equal(local_port(b), pa);
    assert_true(peer_closed(sa)); /* the pool closed it */
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.discarded_unhealthy, 1);
    assert_int_equal(st.created, 2);
    tk_pool_put(p, b, 1);
    tk_pool_free(p);
    server_stop(&s);
}

/* An idle connection older than idle_timeout_ms is closed on get. */
static void idle_timeout_discards_old_connections(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 2, -1, 30);
    int a = tk_pool_get(p, 1000);
    assert_true(a >= 0);
    int pa = local_port(a);
    int sa = server_side(&s, a);
    tk_pool_put(p, a, 1);
    uint64_t put_at = now_ms();
    while (now_ms() - put_at <= 40) /* until it is certainly older than 30 ms */
        pause_ms(5);
    int b = tk_pool_get(p, 1000);
    assert_true(b >= 0);
    assert_int_not_equal(local_port(b), pa);
    assert_true(peer_closed(sa));
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.discarded_idle, 1);
    assert_int_equal(st.discarded_unhealthy, 0);
    assert_int_equal(st.created, 2);
    tk_pool_put(p, b, 1);
    tk_pool_free(p);
    server_stop(&s);
}

/* With max_idle 2, putting a third connection back closes the oldest. */
static void max_idle_closes_the_oldest(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 4, 2, 0);
    int a = tk_pool_get(p, 1000);
    int b = tk_pool_get(p, 1000);
    int c = tk_pool_get(p, 1000);
    assert_true(a >= 0 && b >= 0 && c >= 0);
    int sa = server_side(&s, a);
    int pb = local_port(b), pc = local_port(c);
    tk_pool_put(p, a, 1);
    tk_pool_put(p, b, 1);
    tk_pool_put(p, c, 1);
    assert_true(peer_closed(sa));
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.evicted, 1);
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.open, 2);
    int x = tk_pool_get(p, 1000);
    int y = tk_pool_get(p, 1000);
    assert_int_equal(local_port(x), pc);
    assert_int_equal(local_port(y), pb);
    tk_pool_put(p, x, 1);
    tk_pool_put(p, y, 1);
    tk_pool_free(p);
    server_stop(&s);
}

/* put with reuse 0 closes the socket and frees its slot. */
static void put_without_reuse_frees_the_slot(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 1, -1, 0);
    int a = tk_pool_get(p, 1000);
    assert_true(a >= 0);
    int sa = server_side(&s, a);
    assert_int_equal(tk_pool_get(p, 0), -ETIMEDOUT);
    tk_pool_put(p, a, 0);
    assert_true(peer_closed(sa));
    assert_int_equal(stats_of(p).open, 0);
    int b = tk_pool_get(p, 0);
    assert_true(b >= 0);
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.created, 2);
    assert_int_equal(st.reused, 0);
    tk_pool_put(p, b, 1);
    tk_pool_free(p);
    server_stop(&s);
}

typedef struct {
    tk_pool *p;
    uint32_t timeout_ms;
    int result;
    uint64_t took_ms;
} getter;

static void *get_in_thread(void *arg)
{
    getter *g = arg;
    uint64_t t0 = now_ms();
    g->result = tk_pool_get(g->p, g->timeout_ms);
    g->took_ms = now_ms() - t0;
    return NULL;
}

/* A getter blocked on a full pool gets the connection another thread puts. */
static void waiter_is_woken_by_put(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 1, -1, 0);
    int a = tk_pool_get(p, 1000);
    assert_true(a >= 0);
    int pa = local_port(a);
    getter g = {p, 10000, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, get_in_thread, &g), 0);
    wait_waiting(p, 1);
    tk_pool_put(p, a, 1);
    pthread_join(th, NULL);
    assert_true(g.result >= 0);
    assert_int_equal(local_port(g.result), pa);
    assert_true(g.took_ms < 9000); /* woken by the put, not by its own deadline */
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.reused, 1);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.timeouts, 0);
    tk_pool_put(p, g.result, 1);
    tk_pool_free(p);
    server_stop(&s);
}

/* close closes the idle connections at once, later gets fail with
 * -ESHUTDOWN, and a connection still lent is closed when it comes back. */
static void close_fails_later_gets_and_closes_on_put(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 2, -1, 0);
    int a = tk_pool_get(p, 1000);
    int b = tk_pool_get(p, 1000);
    assert_true(a >= 0 && b >= 0);
    int sa = server_side(&s, a), sb = server_side(&s, b);
    tk_pool_put(p, b, 1);
    tk_pool_close(p);
    assert_true(peer_closed(sb)); /* idle: closed by tk_pool_close */
    assert_int_equal(tk_pool_get(p, 0), -ESHUTDOWN);
    assert_int_equal(tk_pool_get(p, 1000), -ESHUTDOWN);
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.open, 1);
    assert_int_equal(st.lent, 1);
    tk_pool_put(p, a, 1); /* lent: closed now, reuse or not */
    assert_true(peer_closed(sa));
    st = stats_of(p);
    assert_int_equal(st.open, 0);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.lent, 0);
    assert_int_equal(st.timeouts, 0);
    tk_pool_close(p); /* idempotent */
    tk_pool_free(p);
    server_stop(&s);
}

/* close wakes every blocked getter, timed or not, with -ESHUTDOWN. */
static void close_wakes_every_waiter(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 1, -1, 0);
    int a = tk_pool_get(p, 1000);
    assert_true(a >= 0);
    getter g[2] = {{p, 10000, 0, 0}, {p, TK_POOL_FOREVER, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, get_in_thread, &g[i]), 0);
    wait_waiting(p, 2);
    tk_pool_close(p);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(g[i].result, -ESHUTDOWN);
        assert_true(g[i].took_ms < 9000);
    }
    tk_pool_put(p, a, 1);
    assert_int_equal(stats_of(p).open, 0);
    tk_pool_free(p);
    server_stop(&s);
}

/* A refused connect is reported as such and gives its slot back; a second
 * address that answers is used when the first refuses. */
static void refused_connect_frees_the_slot(void **state)
{
    (void)state;
    int dead = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(dead >= 0);
    tk_addr addrs[2];
    assert_int_equal(tk_addr_parse("127.0.0.1:0", &addrs[0]), 0);
    assert_int_equal(bind(dead, (struct sockaddr *)&addrs[0].ss, addrs[0].len), 0);
    assert_int_equal(tk_addr_of_socket(dead, 0, &addrs[0]), 0); /* bound, not listening */
    tk_pool *p = pool_for(addrs, 1, 1, -1, 0);
    assert_int_equal(tk_pool_get(p, 1000), -ECONNREFUSED);
    assert_int_equal(tk_pool_get(p, 0), -ECONNREFUSED); /* not -ETIMEDOUT: slot free */
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.open, 0);
    assert_int_equal(st.connecting, 0);
    assert_int_equal(st.connect_errors, 2);
    assert_int_equal(st.created, 0);
    tk_pool_free(p);

    server s;
    server_start(&s);
    addrs[1] = s.addr;
    p = pool_for(addrs, 2, 1, -1, 0);
    int fd = tk_pool_get(p, 1000);
    assert_true(fd >= 0);
    tk_addr peer;
    assert_int_equal(tk_addr_of_socket(fd, 1, &peer), 0);
    assert_int_equal(tk_addr_port(&peer), tk_addr_port(&s.addr));
    tk_pool_put(p, fd, 1);
    tk_pool_free(p);
    server_stop(&s);
    close(dead);
}

#define THREADS 8
#define ROUNDS  2000
#define MAXSIZE 4

typedef struct {
    tk_pool *p;
    atomic_int *held;
    atomic_int *peak;
    atomic_int *over; /* times stats showed more than MAXSIZE open */
    int failures;
    unsigned seed;
} worker;

static void *hammer(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < ROUNDS; i++) {
        int fd = tk_pool_get(w->p, 10000);
        if (fd < 0) {
            w->failures++;
            continue;
        }
        int h = atomic_fetch_add(w->held, 1) + 1;
        int pk = atomic_load(w->peak);
        while (h > pk && !atomic_compare_exchange_weak(w->peak, &pk, h))
            ;
        tk_pool_counters st;
        tk_pool_stats(w->p, &st);
        if (st.open > MAXSIZE || st.lent + st.idle + st.connecting != st.open)
            atomic_fetch_add(w->over, 1);
        w->seed = w->seed * 1103515245u + 12345u;
        atomic_fetch_sub(w->held, 1);
        /* One put in 64 says "broken", so slots are also freed by closing. */
        tk_pool_put(w->p, fd, (w->seed >> 16) % 64 != 0);
    }
    return NULL;
}

/* 8 threads x 2000 get/put on a pool of 4: never more than 4 open, every
 * get succeeds, and every socket the server accepted is closed at the end. */
static void concurrent_use_stays_within_max_size(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, MAXSIZE, -1, 0);
    atomic_int held = 0, peak = 0, over = 0;
    worker w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){p, &held, &peak, &over, 0, (unsigned)i * 7919u + 1};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(atomic_load(&over), 0);
    assert_true(atomic_load(&peak) <= MAXSIZE);
    tk_pool_counters st = stats_of(p);
    assert_int_equal(st.lent, 0);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.connecting, 0);
    assert_int_equal(st.open, st.idle);
    assert_true(st.open <= MAXSIZE);
    assert_int_equal(st.created + st.reused, (uint64_t)THREADS * ROUNDS);
    assert_int_equal(st.discarded_unhealthy + st.discarded_idle + st.evicted, 0);
    size_t accepted = st.created;
    server_wait_count(&s, accepted);
    tk_pool_free(p);
    /* Nothing leaked: the server sees every connection it accepted closed. */
    for (size_t i = 0; i < accepted; i++)
        assert_true(peer_closed(s.fds[i]));
    server_stop(&s);
}

/* A scripted sequence with every counter checked exactly after each step. */
static void stats_are_exact(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    tk_pool *p = pool_for(&s.addr, 1, 2, 1, 0);
    tk_pool_counters z;
    memset(&z, 0, sizeof(z));
    tk_pool_counters want = z;
#define CHECK()                                                                                    \
    do {                                                                                           \
        tk_pool_counters got_ = stats_of(p);                                                       \
        assert_int_equal(got_.open, want.open);                                                    \
        assert_int_equal(got_.idle, want.idle);                                                    \
        assert_int_equal(got_.lent, want.lent);                                                    \
        assert_int_equal(got_.connecting, want.connecting);                                        \
        assert_int_equal(got_.waiting, want.waiting);                                              \
        assert_int_equal(got_.created, want.created);                                              \
        assert_int_equal(got_.reused, want.reused);                                                \
        assert_int_equal(got_.discarded_unhealthy, want.discarded_unhealthy);                      \
        assert_int_equal(got_.discarded_idle, want.discarded_idle);                                \
        assert_int_equal(got_.evicted, want.evicted);                                              \
        assert_int_equal(got_.connect_errors, want.connect_errors);                                \
        assert_int_equal(got_.timeouts, want.timeouts);                                            \
    } while (0)
    CHECK();
    int a = tk_pool_get(p, 1000);
    assert_true(a >= 0);
    want.open = 1, want.lent = 1, want.created = 1;
    CHECK();
    int b = tk_pool_get(p, 1000);
    assert_true(b >= 0);
    want.open = 2, want.lent = 2, want.created = 2;
    CHECK();
    assert_int_equal(tk_pool_get(p, 0), -ETIMEDOUT);
    want.timeouts = 1;
    CHECK();
    tk_pool_put(p, a, 1);
    want.idle = 1, want.lent = 1;
    CHECK();
    tk_pool_put(p, b, 1); /* max_idle 1: a is closed */
    want.open = 1, want.lent = 0, want.evicted = 1;
    CHECK();
    int c = tk_pool_get(p, 0);
    assert_int_equal(c, b);
    want.idle = 0, want.lent = 1, want.reused = 1;
    CHECK();
    tk_pool_put(p, c, 1);
    want.idle = 1, want.lent = 0;
    CHECK();
    server_close_side(&s, c, 0);
    wait_readable(c);
    int d = tk_pool_get(p, 1000); /* c is discarded, d is new */
    assert_true(d >= 0);
    want.idle = 0, want.lent = 1, want.discarded_unhealthy = 1, want.created = 3;
    CHECK();
    tk_pool_put(p, d, 0);
    want.open = 0, want.lent = 0;
    CHECK();
    tk_pool_close(p);
    assert_int_equal(tk_pool_get(p, 0), -ESHUTDOWN);
    CHECK(); /* a get on a closed pool is not a timeout */
#undef CHECK
    tk_pool_free(p);
    server_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_bad_configs),
        cmocka_unit_test(creates_up_to_max_size_then_times_out),
        cmocka_unit_test(put_then_get_reuses_newest),
        cmocka_unit_test(peer_closed_connection_is_never_lent),
        cmocka_unit_test(connection_with_unread_bytes_is_discarded),
        cmocka_unit_test(idle_timeout_discards_old_connections),
        cmocka_unit_test(max_idle_closes_the_oldest),
        cmocka_unit_test(put_without_reuse_frees_the_slot),
        cmocka_unit_test(waiter_is_woken_by_put),
        cmocka_unit_test(close_fails_later_gets_and_closes_on_put),
        cmocka_unit_test(close_wakes_every_waiter),
        cmocka_unit_test(refused_connect_frees_the_slot),
        cmocka_unit_test(concurrent_use_stays_within_max_size),
        cmocka_unit_test(stats_are_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

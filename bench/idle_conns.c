/* idle_conns: opens N connections to a line-echo server, sends one line on
 * each and reads its reply (so every connection has used its buffers once),
 * prints "ready OPEN ANSWERED" and then holds them all, idle, until it is
 * killed or HOLD seconds pass. bench/run.sh reads the server's RSS while the
 * connections are held.
 *
 * usage: idle_conns HOST:PORT N [HOLD_SECONDS (300)] */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 10
#define PING         "hello\n"
#define REPLY        "ECHO: hello\n"

static int connect_one(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* On Linux SO_SNDTIMEO also bounds a blocking connect(). */
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads until the reply shows up (after a banner, if the server sends one);
 * 1 if it did. */
static int read_reply(int fd)
{
    char buf[512];
    size_t have = 0;
    while (have < sizeof(buf)) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        if (n <= 0)
            return 0;
        have += (size_t)n;
        if (memmem(buf, have, REPLY, strlen(REPLY)))
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: idle_conns HOST:PORT N [HOLD_SECONDS]\n");
        return 2;
    }
    long n = strtol(argv[2], NULL, 10);
    unsigned hold = argc == 4 ? (unsigned)strtoul(argv[3], NULL, 10) : 300;
    if (n < 1 || n > 1000000) {
        fprintf(stderr, "idle_conns: N must be 1..1000000\n");
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    char host[256];
    const char *colon = strrchr(argv[1], ':');
    if (!colon || (size_t)(colon - argv[1]) >= sizeof(host)) {
        fprintf(stderr, "idle_conns: expected HOST:PORT\n");
        return 2;
    }
    memcpy(host, argv[1], (size_t)(colon - argv[1]));
    host[colon - argv[1]] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai;
    int gerr = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gerr) {
        fprintf(stderr, "idle_conns: %s: %s\n", argv[1], gai_strerror(gerr));
        return 1;
    }

    int *fds = calloc((size_t)n, sizeof(*fds));
    if (!fds)
        return 1;
    long open = 0, answered = 0;
    for (long i = 0; i < n; i++) {
        fds[open] = connect_one(ai);
        if (fds[open] < 0) {
            fprintf(stderr, "idle_conns: connection %ld: %s\n", i, strerror(errno));
            break;
        }
        open++;
    }
    freeaddrinfo(ai);
    /* All pings first, then all replies: the server answers in parallel. */
    for (long i = 0; i < open; i++) {
        if (write(fds[i], PING, strlen(PING)) != (ssize_t)strlen(PING))
            fds[i] = -fds[i] - 1;
    }
    for (long i = 0; i < open; i++)
        answered += fds[i] >= 0 && read_reply(fds[i]);

    printf("ready %ld %ld\n", open, answered);
    fflush(stdout);
    sleep(hold);
    return 0;
}

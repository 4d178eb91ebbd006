/* Socket options, set in one place. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#include "tcpkit/parse.h"
#include "tcpkit/sock.h"

void tk_sockopts_init(tk_sockopts *o)
{
    o->nodelay = -1;
    o->keepalive = -1;
    o->ka_idle_s = 0;
    o->ka_intvl_s = 0;
    o->ka_count = 0;
    o->linger_s = -1;
    o->sndbuf = 0;
    o->rcvbuf = 0;
}

static int set_int(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof(value)) < 0 ? -errno : 0;
}

int tk_sock_apply(int fd, const tk_sockopts *o)
{
    int err = 0;
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ < 0 && err == 0)                                                                   \
            err = rc_;                                                                             \
    } while (0)
    if (o->nodelay >= 0)
        TRY(set_int(fd, IPPROTO_TCP, TCP_NODELAY, o->nodelay));
    if (o->keepalive >= 0)
        TRY(set_int(fd, SOL_SOCKET, SO_KEEPALIVE, o->keepalive));
    if (o->keepalive > 0) {
        if (o->ka_idle_s > 0)
            TRY(set_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, o->ka_idle_s));
        if (o->ka_intvl_s > 0)
            TRY(set_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, o->ka_intvl_s));
        if (o->ka_count > 0)
            TRY(set_int(fd, IPPROTO_TCP, TCP_KEEPCNT, o->ka_count));
    }
    if (o->linger_s >= 0) {
        struct linger l = {.l_onoff = 1, .l_linger = o->linger_s};
        if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) < 0 && err == 0)
            err = -errno;
    }
    if (o->sndbuf > 0)
        TRY(set_int(fd, SOL_SOCKET, SO_SNDBUF, o->sndbuf));
    if (o->rcvbuf > 0)
        TRY(set_int(fd, SOL_SOCKET, SO_RCVBUF, o->rcvbuf));
#undef TRY
    return err;
}

int tk_sock_set_nonblock(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -errno;
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags) < 0 ? -errno : 0;
}

int tk_sock_error(int fd)
{
    int v = 0;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) < 0)
        return -errno;
    return -v;
}

int tk_sock_parse_keepalive(const char *arg, tk_sockopts *s)
{
    unsigned long v[3] = {0, 0, 0};
    char field[64];
    int i = 0;
    if (strlen(arg) >= sizeof(field))
        return -EINVAL;
    /* Split by hand, not with strtok: "60,,5" is a mistake to refuse, not
     * "60,5" (which would set the interval to what was meant as a count). */
    for (const char *p = arg;; i++) {
        size_t n = strcspn(p, ",");
        if (i == 3 || n >= sizeof(field))
            return -EINVAL;
        memcpy(field, p, n);
        field[n] = '\0';
        if (tk_parse_uint(field, 0, 86400, &v[i]) < 0)
            return -EINVAL;
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    s->keepalive = v[0] > 0;
    s->ka_idle_s = (int)v[0];
    if (i > 0)
        s->ka_intvl_s = (int)v[1];
    if (i > 1)
        s->ka_count = (int)v[2];
    return 0;
}

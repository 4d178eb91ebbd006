/* UDP echo: every datagram is one line-protocol request, answered by one
 * datagram to its sender. Datagrams are taken in batches with recvmmsg and
 * answered with sendmmsg. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo_internal.h"
#include "tcpkit/log.h"

#define UDP_BATCH 32

/* Requests up to UDP_SLOT bytes are answered; larger ones are dropped. */
#define UDP_SLOT       2048
#define UDP_REPLY_SLOT (4 * UDP_SLOT + 64)

/* One loop's datagram buffers and message headers, set up once at start. */
struct echo_udp {
    struct mmsghdr in[UDP_BATCH];
    struct mmsghdr out[UDP_BATCH];
    struct iovec in_iov[UDP_BATCH];
    struct iovec out_iov[UDP_BATCH];
    struct sockaddr_storage peers[UDP_BATCH];
    unsigned char inbuf[UDP_BATCH][UDP_SLOT];
    unsigned char outbuf[UDP_BATCH][UDP_REPLY_SLOT];
};

static void on_datagrams(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    (void)events;
    echo_loop *el = (echo_loop *)((char *)io - offsetof(echo_loop, udp_io));
    tk_echo *e = el->e;
    struct echo_udp *b = el->udp;

    /* The kernel overwrites these per message; everything else is fixed. */
    for (int i = 0; i < UDP_BATCH; i++) {
        b->in[i].msg_hdr.msg_namelen = sizeof(b->peers[i]);
        b->in[i].msg_hdr.msg_flags = 0;
    }
    int n = recvmmsg(io->fd, b->in, UDP_BATCH, MSG_DONTWAIT, NULL);
    if (n <= 0)
        return;
    int nout = 0;
    for (int i = 0; i < n; i++) {
        size_t len = b->in[i].msg_len;
        if (b->in[i].msg_hdr.msg_flags & MSG_TRUNC)
            continue; /* larger than a request may be: dropped, as UDP allows */
        const unsigned char *line = b->inbuf[i];
        if (len && line[len - 1] == '\n')
            len--;
        if (len && line[len - 1] == '\r')
            len--;
        unsigned char *out = b->outbuf[nout];
        int quit;
        echo_req req;
        echo_parse(line, len, &req);
        size_t rlen = echo_reply(e, &req, out, UDP_REPLY_SLOT, &quit);
        b->out_iov[nout].iov_base = out;
        b->out_iov[nout].iov_len = rlen;
        memset(&b->out[nout], 0, sizeof(b->out[nout]));
        b->out[nout].msg_hdr.msg_iov = &b->out_iov[nout];
        b->out[nout].msg_hdr.msg_iovlen = 1;
        b->out[nout].msg_hdr.msg_name = &b->peers[i];
        b->out[nout].msg_hdr.msg_namelen = b->in[i].msg_hdr.msg_namelen;
        tk_metrics_bytes(el->metrics, b->in[i].msg_len, rlen);
        nout++;
    }
    if (nout) {
        /* Replies that do not fit the socket buffer are dropped, as UDP allows. */
        (void)sendmmsg(io->fd, b->out, (unsigned)nout, MSG_DONTWAIT);
        /* Counted, but not timed: a datagram has no queue to wait in. */
        tk_metrics_messages(el->metrics, (uint64_t)nout);
    }
}

int echo_udp_start(echo_loop *el, int fd)
{
    struct echo_udp *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    for (int i = 0; i < UDP_BATCH; i++) {
        b->in_iov[i].iov_base = b->inbuf[i];
        b->in_iov[i].iov_len = UDP_SLOT;
        b->in[i].msg_hdr.msg_iov = &b->in_iov[i];
        b->in[i].msg_hdr.msg_iovlen = 1;
        b->in[i].msg_hdr.msg_name = &b->peers[i];
    }
    tk_io_init(&el->udp_io, fd, on_datagrams);
    int err = tk_io_set(el->loop, &el->udp_io, TK_READ);
    if (err < 0) {
        free(b);
        return err;
    }
    el->udp = b;
    el->udp_fd = fd;
    return 0;
}

void echo_udp_stop(echo_loop *el)
{
    if (el->udp_fd < 0)
        return;
    tk_io_stop(el->loop, &el->udp_io);
    close(el->udp_fd);
    el->udp_fd = -1;
    free(el->udp);
    el->udp = NULL;
}

/* Socket option helpers: each setsockopt dance written once. */
#ifndef TCPKIT_SOCK_H
#define TCPKIT_SOCK_H

/* Options applied to a connected socket. A field left at its "unset" value
 * (-1, or 0 for buffer sizes) keeps the kernel's default. */
typedef struct {
    int nodelay;    /* TCP_NODELAY: 1 on, 0 off, -1 unset */
    int keepalive;  /* SO_KEEPALIVE: 1 on, 0 off, -1 unset */
    int ka_idle_s;  /* TCP_KEEPIDLE seconds, 0 unset */
    int ka_intvl_s; /* TCP_KEEPINTVL seconds, 0 unset */
    int ka_count;   /* TCP_KEEPCNT probes, 0 unset */
    int linger_s;   /* SO_LINGER seconds (0 = reset on close), -1 unset */
    int sndbuf;     /* SO_SNDBUF bytes, 0 unset */
    int rcvbuf;     /* SO_RCVBUF bytes, 0 unset */
} tk_sockopts;

/* Every field unset. */
void tk_sockopts_init(tk_sockopts *o);

/* Applies the set fields to fd; returns 0 or the first -errno. */
int tk_sock_apply(int fd, const tk_sockopts *o);

/* Sets O_NONBLOCK on fd; returns 0 or -errno. */
int tk_sock_set_nonblock(int fd, int on);

/* Reads and clears SO_ERROR; returns it as a negative errno, or 0. */
int tk_sock_error(int fd);

/* "IDLE[,INTVL[,COUNT]]" seconds (each 0 to 86400, no field empty) into the
 * keepalive fields of out (IDLE 0 turns keepalive off); 0 or -EINVAL, which
 * leaves out unchanged. */
int tk_sock_parse_keepalive(const char *s, tk_sockopts *out);

#endif

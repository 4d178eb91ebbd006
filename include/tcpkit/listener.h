/* Listening sockets and the accept loop. A listener accepts in bounded
 * batches and survives descriptor exhaustion (EMFILE/ENFILE) without spinning:
 * it sheds each waiting client (busy message, then close) through one
 * descriptor the process keeps in reserve for every listener, and if even
 * that fails it pauses accepting for a short back-off. */
#ifndef TCPKIT_LISTENER_H
#define TCPKIT_LISTENER_H

#include "tcpkit/addr.h"
#include "tcpkit/loop.h"

typedef struct tk_listener tk_listener;

/* A new connection: fd is non-blocking and close-on-exec, and now belongs to
 * the callback. */
typedef void (*tk_accept_cb)(tk_listener *l, int fd, const tk_addr *peer, void *arg);

typedef struct {
    int backlog;   /* listen() backlog; 0 means 511 */
    int reuseport; /* set SO_REUSEPORT so several threads can bind the address */
    int udp;       /* a datagram socket instead of a stream listener */
} tk_listen_opts;

/* Creates, binds and (for TCP) listens on addr. An IPv6 wildcard address is
 * dual-stack only when the caller asked for ":port"; tk_listen_socket binds
 * exactly what it is given, with IPV6_V6ONLY on for explicit IPv6 addresses
 * and off for the wildcard when dual_stack is set. Returns the descriptor or
 * a negative errno. */
int tk_listen_socket(const tk_addr *addr, const tk_listen_opts *o, int dual_stack);

/* Starts accepting on fd (taken over) on loop. busy[0..busy_len), if any, is
 * sent to clients shed while descriptors are exhausted. Returns 0 or -errno. */
int tk_listener_start(tk_loop *loop, int fd, tk_accept_cb cb, void *arg, const void *busy,
                      size_t busy_len, tk_listener **out);

/* Stops accepting and closes the socket; the listener is freed. */
void tk_listener_close(tk_listener *l);

/* The listening descriptor. */
int tk_listener_fd(const tk_listener *l);

/* Clients accepted, and clients shed for lack of descriptors, so far. */
unsigned long tk_listener_accepted(const tk_listener *l);
unsigned long tk_listener_shed(const tk_listener *l);

#endif

/* A TCP (or UDP) service bound to one or more addresses and served by every
 * loop of a worker pool: each loop gets its own SO_REUSEPORT socket on the
 * same address, so the kernel spreads connections across threads. The server
 * enforces the client limit and the access rules (tcpkit/access.h), prints
 * nothing and knows no protocol.
 *
 * Access: with cfg.access set, every accepted client is checked (allow and
 * deny lists, per-address limits) before the service hears of it. A refused
 * client is reset at once (SO_LINGER 0, then close): no bytes, no FIN
 * handshake, no TIME_WAIT on the server, so a flood of refused clients costs
 * one accept and one close each. Refusals are counted (tk_server_access) and
 * summarised in the log once per interval.
 *
 * Shutdown: tk_server_shutdown() closes the listeners and asks the service
 * to wind down each loop; the service calls tk_server_loop_done() when a
 * loop has no connections left. */
#ifndef TCPKIT_SERVER_H
#define TCPKIT_SERVER_H

#include <stddef.h>

#include "tcpkit/access.h"
#include "tcpkit/addr.h"
#include "tcpkit/loop.h"
#include "tcpkit/tls.h"
#include "tcpkit/workers.h"

typedef struct tk_server tk_server;

typedef struct {
    /* Called on loop i's thread for each accepted client (TCP; fd owned by
     * the service). For UDP it is called once per loop from tk_server_open,
     * before the loops run, with that loop's bound datagram socket and a
     * NULL peer. */
    void (*accept)(void *svc, unsigned loop_index, int fd, const tk_addr *peer);
    /* Called on loop i's thread: begin a graceful close of every connection. */
    void (*shutdown)(void *svc, unsigned loop_index);
    /* Called on loop i's thread when the shutdown deadline passes: close now. */
    void (*abort)(void *svc, unsigned loop_index);
    /* Called on loop i's thread when a client is refused by the client limit
     * (optional; for the service's counters). */
    void (*rejected)(void *svc, unsigned loop_index);
} tk_service_ops;

#define TK_SERVER_MAX_LISTEN 16

typedef struct {
    const char *listen[TK_SERVER_MAX_LISTEN]; /* "host:port" strings */
    size_t nlisten;
    int udp;
    int backlog;
    unsigned loops;       /* serve on the first N loops of the pool only; 0: all */
    unsigned max_clients; /* 0: no limit */
    const void *busy_msg; /* sent to a client over the limit, then closed */
    size_t busy_len;
    tk_tls_ctx *tls; /* a server context: every TCP client speaks TLS; NULL: plain */
    /* Allow/deny rules and per-address limits (TCP only); NULL: none. Copied
     * at open; its policy must outlive the server. */
    const tk_access_config *access;
} tk_server_config;

/* Resolves and binds every listen address on every loop of w (port 0 is
 * resolved once, so all loops share the port). Returns 0 or a negative errno
 * with a message in err. Accepting starts with the loops. */
int tk_server_open(tk_workers *w, const tk_server_config *cfg, const tk_service_ops *ops, void *svc,
                   tk_server **out, char *err, size_t errcap);

/* Number of distinct bound addresses, and address i as really bound. */
size_t tk_server_bound_count(const tk_server *s);
const tk_addr *tk_server_bound(const tk_server *s, size_t i);

/* The TLS context clients of s must be given (tk_conn_start_tls), or NULL. */
tk_tls_ctx *tk_server_tls(const tk_server *s);

/* Must be called (on that loop) when a client accepted on loop i is closed,
 * with the peer address accept gave it, so the client limit and the
 * per-address limits count it out. */
void tk_server_release(tk_server *s, unsigned loop_index, const tk_addr *peer);

/* The server's access state (counters: tk_access_get_counters), or NULL when
 * it was opened without cfg.access. */
tk_access *tk_server_access(const tk_server *s);

/* Clients currently counted against the limit (all loops). */
unsigned tk_server_active(const tk_server *s);

/* Starts a graceful shutdown; call it on main_loop's thread. done(arg) runs on main_loop
 * once every loop reported done, or after timeout_ms with the service's abort
 * called on loops still busy. */
void tk_server_shutdown(tk_server *s, tk_loop *main_loop, unsigned timeout_ms,
                        void (*done)(void *arg), void *arg);

/* Called by the service on loop i once it has no connections left. */
void tk_server_loop_done(tk_server *s, unsigned loop_index);

/* Frees the server once its loops have stopped: closes the listeners, calls
 * the service's abort on every loop to close what is left, and runs the
 * loops' pending work so every connection's on_close has run on return. */
void tk_server_free(tk_server *s);

#endif

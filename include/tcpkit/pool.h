/* A thread-safe pool of client connections to one service: get a connected
 * socket, use it, put it back. Any thread may call any function. */
#ifndef TCPKIT_POOL_H
#define TCPKIT_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/addr.h"
#include "tcpkit/sock.h"

/* A tk_pool_get timeout that never expires. */
#define TK_POOL_FOREVER UINT32_MAX

typedef struct {
    const tk_addr *addrs;        /* where to connect, tried in order; copied by tk_pool_new */
    size_t naddrs;               /* at least 1 */
    unsigned max_size;           /* connections open at once: idle, lent, connecting (8) */
    int max_idle;                /* idle connections kept, 0..max_size; -1 (default): max_size */
    uint32_t idle_timeout_ms;    /* an idle connection older than this is closed, not lent
                                    (60000; 0: never) */
    uint32_t connect_timeout_ms; /* per new connection, every address included (5000; 0: none) */
    tk_sockopts sockopts;        /* applied to each new connection (nodelay on, rest unset) */
} tk_pool_config;

/* A snapshot of a pool's state and of its counters since tk_pool_new. */
typedef struct {
    unsigned open;       /* idle + lent + connecting; never above max_size */
    unsigned idle;       /* connected, waiting in the pool */
    unsigned lent;       /* handed out by tk_pool_get and not yet put back */
    unsigned connecting; /* slots held by a connect in progress */
    unsigned waiting;    /* threads blocked in tk_pool_get for a free slot */
    uint64_t created;    /* connects that succeeded */
    uint64_t reused;     /* gets answered with an idle connection */
    /* Idle ones closed on get: the peer closed or reset them, or bytes were waiting. */
    uint64_t discarded_unhealthy;
    uint64_t discarded_idle; /* idle ones closed on get: older than idle_timeout_ms */
    uint64_t evicted;        /* oldest idle ones closed on put to stay within max_idle */
    uint64_t connect_errors; /* connects that failed (refused, timed out, ...) */
    uint64_t timeouts;       /* gets that found no free slot within their timeout */
} tk_pool_counters;

typedef struct tk_pool tk_pool;

/* Fills the documented defaults; addrs and naddrs must still be set. */
void tk_pool_config_init(tk_pool_config *c);

/* Creates a pool (no connection is opened yet) and copies the addresses.
 * Returns 0 or -EINVAL (no address, max_size 0, max_idle out of range),
 * -ENOMEM or another -errno. */
int tk_pool_new(const tk_pool_config *c, tk_pool **out);

/* Returns a connected non-blocking socket that the caller owns until it
 * hands it back with tk_pool_put: the most recently put-back idle connection
 * that is still healthy (unhealthy and expired ones are closed on the way),
 * else a new connection if fewer than max_size are open, else the first one
 * put back or slot freed within timeout_ms (0: do not wait; TK_POOL_FOREVER).
 * A new connection's connect is bounded by connect_timeout_ms and by what is
 * left of timeout_ms (when timeout_ms is 0, by connect_timeout_ms alone).
 * Errors: -ETIMEDOUT (no slot in time, or the connect timed out),
 * -ESHUTDOWN (the pool is closed), or the connect's -errno (-ECONNREFUSED...)
 * from the last address tried; a failed connect gives its slot back. */
int tk_pool_get(tk_pool *p, uint32_t timeout_ms);

/* Gives back fd, which must come from tk_pool_get on this pool: kept as the
 * newest idle connection when reuse != 0 (closing the oldest idle one if
 * max_idle would be exceeded), closed when reuse == 0 (pass 0 after any I/O
 * error or when the protocol state is unknown) or when the pool is closed.
 * Either way one slot is freed and one waiting getter is woken. */
void tk_pool_put(tk_pool *p, int fd, int reuse);

/* Closes every idle connection, wakes every waiting getter (they return
 * -ESHUTDOWN) and makes later gets fail with -ESHUTDOWN; connections still
 * lent stay valid and are closed when put back. Idempotent. */
void tk_pool_close(tk_pool *p);

/* Closes the pool if needed, waits for threads still inside tk_pool_get to
 * leave (a connect in progress may take up to connect_timeout_ms) and frees
 * it. Every lent connection must have been put back first: freeing a pool
 * with connections lent is a bug (their later tk_pool_put would touch freed
 * memory). NULL is allowed. */
void tk_pool_free(tk_pool *p);

/* Copies the pool's current state and counters into *out, taken at one
 * instant under the pool's lock. */
void tk_pool_stats(tk_pool *p, tk_pool_counters *out);

#endif

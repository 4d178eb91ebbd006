/* The load balancer's internals, shared by its files: backends and the
 * tables that list them, per-loop state, client sessions, choosing a
 * backend, health checks and stats. */
#ifndef TK_BALANCE_INTERNAL_H
#define TK_BALANCE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "tcpkit/balance.h"
#include "tcpkit/dial.h"
#include "tcpkit/proxy.h"
#include "tcpkit/relay.h"
#include "tcpkit/tls.h"

#define BAL_MAX_ADDRS 4

/* Why the last health check or passive observation failed (or passed). */
typedef enum {
    BAL_CHECK_NONE = 0, /* not checked yet */
    BAL_CHECK_OK,
    BAL_CHECK_REFUSED,
    BAL_CHECK_TIMEOUT,
    BAL_CHECK_CLOSED,   /* closed before the expected reply */
    BAL_CHECK_MISMATCH, /* replied something else */
    BAL_CHECK_ERROR,
    BAL_CHECK_FIRST_BYTE, /* passive: silent after the client's first bytes */
    BAL_CHECK_RESET,      /* passive: reset before answering */
} bal_check_result;

/* Words for a check result ("ok", "connect refused", ...). */
const char *bal_check_result_name(bal_check_result r);

/* The health check in progress for one backend (loop 0 only). */
typedef struct {
    struct bal_loop *lp0; /* the loop the checks run on */
    tk_timer timer;       /* next check, or the running check's deadline */
    tk_defer release;     /* drops the check's reference after a batch */
    tk_dial *dial;
    tk_io io; /* the connected check socket, fd -1 when none */
    unsigned char got[TK_BALANCE_CHECK_MAX];
    size_t got_len;
    unsigned oks, fails; /* consecutive results */
    int running;
    int active; /* scheduled on loop 0 */
} bal_check;

/* A backend: its identity, live counters and health. Shared by every loop
 * and by the tables that list it; reference-counted. Settings that a reload
 * may change (weight, maxconn, backup, proxy) live in the table entries. */
typedef struct bal_backend {
    _Atomic int refs;
    char addr[TK_BALANCE_ADDR_MAX];
    tk_addr addrs[BAL_MAX_ADDRS];
    size_t naddrs;
    uint64_t hash; /* of addr: its point for consistent hashing */

    _Atomic int up;
    _Atomic uint64_t suspect_until; /* loop-0 ms until which picks avoid it; 0: not */
    _Atomic unsigned active;        /* client connections using or dialing it */
    _Atomic uint64_t total;         /* connections established to it */
    _Atomic uint64_t bytes_sent, bytes_received;
    _Atomic uint64_t failures; /* passive failures */
    _Atomic int last_check;    /* bal_check_result */
    _Atomic uint64_t last_check_ms;

    bal_check check; /* loop 0 only */
    int64_t *rr_cur; /* smooth round robin's current weight, one per loop */
    unsigned nloops;
} bal_backend;

/* One backend as a table lists it. */
typedef struct {
    bal_backend *b;
    unsigned weight, maxconn;
    int backup;
    int proxy; /* 0, 1 or 2 (the global setting already applied) */
} bal_entry;

/* The settings a table carries besides its backends. */
typedef struct {
    tk_balance_algo algo;
    uint32_t connect_timeout_ms, connect_budget_ms, first_byte_timeout_ms, queue_timeout_ms;
    uint32_t client_timeout_ms, backend_timeout_ms;
    uint32_t check_interval_ms, check_timeout_ms;
    unsigned retries, queue_max, rise, fall;
    size_t replay_max, pipe_size;
    tk_sockopts sock;
    unsigned char check_send[TK_BALANCE_CHECK_MAX], check_expect[TK_BALANCE_CHECK_MAX];
    size_t check_send_len, check_expect_len;
} bal_settings;

/* An immutable backend set with its settings; reference-counted. Each loop
 * holds the one it uses; a reload publishes a new one to every loop. The
 * TLS context goes with it, so a reload's new certificate reaches each loop
 * with its new table; sessions made from the old one keep working. */
typedef struct {
    _Atomic int refs;
    bal_settings set;
    tk_tls_ctx *tls; /* for client handshakes; NULL: plain clients */
    size_t n;
    bal_entry e[];
} bal_table;

typedef struct bal_session bal_session;
typedef struct bal_loop bal_loop;

struct bal_loop {
    tk_balance *bal;
    tk_loop *loop;
    unsigned index;
    bal_table *table;
    bal_session *sessions; /* every client of this loop (doubly linked) */
    size_t nsessions;
    bal_session *queue_head, *queue_tail; /* clients waiting for a slot */
    _Atomic unsigned nqueued;
    _Atomic int kick_posted;
    tk_defer kick; /* serves the queue from the loop */
    uint64_t rng;
    int draining;
};

struct tk_balance {
    tk_workers *w;
    unsigned nloops;
    bal_loop *loops;
    tk_server *server, *stats_server;
    tk_balance_config cfg; /* the settings in force (for reload diffs) */
    bal_table *table;      /* the newest table (main thread) */
    pthread_mutex_t lock;  /* guards published */
    bal_table *published;  /* the table every loop uses now (stats) */
    _Atomic unsigned queued;
    _Atomic uint64_t clients_total, clients_active, refused;
    _Atomic uint64_t tls_done, tls_failed; /* client handshakes */
    uint64_t started_us;
    struct stats_client *stats_clients; /* open stats connections (loop 0) */
};

/* ---- tables and backends (balance_table.c) ---- */

/* Builds a table for c, reusing backends of old (may be NULL) that have the
 * same address, with a TLS context loaded from c's files when it names
 * them. Returns 0 or a negative errno with a message in err. */
int bal_table_build(tk_balance *bal, const tk_balance_config *c, const bal_table *old,
                    bal_table **out, char *err, size_t errcap);
bal_table *bal_table_ref(bal_table *t);
void bal_table_unref(bal_table *t);
bal_backend *bal_backend_ref(bal_backend *b);
void bal_backend_unref(bal_backend *b);
/* Settings for a table from a configuration. */
void bal_settings_from(bal_settings *s, const tk_balance_config *c);

/* ---- choosing (balance_pick.c) ---- */

/* What bal_pick found. */
typedef enum {
    BAL_PICKED = 0, /* *out holds a reserved slot on a backend */
    BAL_FULL,       /* backends are up but every usable one is at maxconn */
    BAL_NONE,       /* nothing usable is up (or every one was tried) */
} bal_pick_status;

/* Chooses a backend from lp's table for a client at peer, skipping the
 * nskip backends in skip, and reserves a connection slot on it. */
bal_pick_status bal_pick(bal_loop *lp, const tk_addr *peer, bal_backend *const *skip, size_t nskip,
                         const bal_entry **out);
/* Gives back a slot bal_pick reserved, and lets waiting clients try again. */
void bal_release(tk_balance *bal, bal_backend *b);
/* Asks every loop with waiting clients to serve its queue (any thread). */
void bal_kick_waiters(tk_balance *bal);
/* 64-bit hash of n bytes. */
uint64_t bal_hash(const void *p, size_t n);

/* ---- sessions (balance.c) ---- */

/* Serves the queue of the loop arg points to (a bal_loop), from a post. */
void bal_kick_post(tk_loop *loop, void *arg);

/* ---- health (balance_health.c) ---- */

/* Loop 0 adopts table t: starts checks for its new backends and stops those
 * of backends old listed that t does not. */
void bal_health_adopt(bal_loop *lp0, const bal_table *old, const bal_table *t);
/* Stops every check of t (loop 0, before shutdown). */
void bal_health_stop(bal_loop *lp0, const bal_table *t);
/* A client's attempt on b failed (on loop lp): avoid it and check it soon. */
void bal_backend_failed(bal_loop *lp, bal_backend *b, bal_check_result why);

#endif

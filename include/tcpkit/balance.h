/* tcpkit balance: a TCP load balancer. Clients accepted on the listeners are
 * relayed to one of a set of backends chosen by an algorithm, with active
 * health checks, passive failure detection and retries, per-backend
 * connection limits with a bounded queue, optional PROXY protocol headers,
 * zero-copy relaying (splice through pipes), live reload of the backend set
 * a stats endpoint and TLS termination towards plain backends.
 *
 * Settings have one vocabulary: tk_balance_config_set(c, "name", "value")
 * is what a command line option --name VALUE and a configuration file line
 * "name value" both do. */
#ifndef TCPKIT_BALANCE_H
#define TCPKIT_BALANCE_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/addr.h"
#include "tcpkit/server.h"
#include "tcpkit/sock.h"
#include "tcpkit/workers.h"

#define TK_BALANCE_MAX_BACKENDS 256
#define TK_BALANCE_MAX_WEIGHT   1000
#define TK_BALANCE_CHECK_MAX    256 /* bytes of a health check's send or expect */
#define TK_BALANCE_ADDR_MAX     (TK_HOST_MAX + 8)
#define TK_BALANCE_PATH_MAX     1024 /* bytes of a file name setting, NUL included */

typedef enum {
    TK_ALGO_ROUNDROBIN = 0, /* smooth weighted round robin */
    TK_ALGO_LEASTCONN,      /* fewest active connections per unit of weight */
    TK_ALGO_RANDOM,         /* two random choices, the less loaded wins */
    TK_ALGO_SOURCE,         /* consistent (rendezvous) hashing of the client address */
    TK_ALGO_FIRST,          /* the first backend in order with a free slot */
} tk_balance_algo;

/* The algorithm's name as settings spell it ("roundrobin", ...). */
const char *tk_balance_algo_name(tk_balance_algo a);

typedef struct {
    char addr[TK_BALANCE_ADDR_MAX]; /* "host:port" as written: its identity across reloads */
    unsigned weight;  /* 0..TK_BALANCE_MAX_WEIGHT (default 1); 0 takes no new clients */
    unsigned maxconn; /* connections at once; 0: no limit */
    int backup;       /* used only while no other backend is up */
    int proxy;        /* PROXY header: -1 the global send-proxy, 0 none, 1 or 2 */
} tk_balance_backend_config;

typedef struct {
    /* Where to listen and serve stats: used by the command, not the service. */
    char listen[TK_SERVER_MAX_LISTEN][TK_BALANCE_ADDR_MAX];
    size_t nlisten;
    char stats[TK_BALANCE_ADDR_MAX]; /* "" for none */
    unsigned threads;                /* event loops (1..1024); 0, the default: one per CPU */
    uint32_t drain_timeout_ms;       /* SIGTERM: time connections get to finish (30 s) */
    unsigned max_clients;            /* client connections at once; 0: no limit */

    tk_balance_backend_config backend[TK_BALANCE_MAX_BACKENDS];
    size_t nbackends;
    tk_balance_algo algo; /* roundrobin */
    int send_proxy;       /* PROXY header for every backend: 0 none, 1 or 2 */

    /* Connecting to a backend. */
    uint32_t connect_timeout_ms;    /* one attempt (default 2 s) */
    uint32_t connect_budget_ms;     /* every attempt for one client together (default 6 s) */
    unsigned retries;               /* attempts on other backends after the first (default 3) */
    uint32_t first_byte_timeout_ms; /* backend silent this long after the client's first
                                       bytes: a failure, retried elsewhere; 0 off (default) */
    size_t replay_max;              /* client bytes kept for such a retry (default 16 KiB) */

    /* Waiting for a slot when every backend is at maxconn. */
    unsigned queue_max;        /* clients waiting at once (default 1024; 0: refuse at once) */
    uint32_t queue_timeout_ms; /* longest wait (default 5 s) */

    /* Relaying. */
    uint32_t client_timeout_ms;  /* client silent both ways this long: close; 0 off (default) */
    uint32_t backend_timeout_ms; /* the same for the backend side; 0 off (default) */
    size_t pipe_size;            /* kernel pipe per direction (default 64 KiB) */
    tk_sockopts sock;            /* both sides; keepalive on by default (60 s, 10 s, 6) */

    /* Active health checks. */
    uint32_t check_interval_ms; /* between checks (default 2 s; 0: no active checks) */
    uint32_t check_timeout_ms;  /* one check (default 1 s) */
    unsigned rise;              /* successes that bring a down backend up (default 2) */
    unsigned fall;              /* failures that take an up backend down (default 3) */
    unsigned char check_send[TK_BALANCE_CHECK_MAX]; /* sent after connecting (may be empty) */
    size_t check_send_len;
    unsigned char check_expect[TK_BALANCE_CHECK_MAX]; /* reply must start with this */
    size_t check_expect_len;                          /* 0: connecting is enough */

    /* TLS towards clients: with a certificate and key every client listener
     * speaks TLS; backends stay plain. "" for none. */
    char tls_cert[TK_BALANCE_PATH_MAX];      /* PEM certificate chain */
    char tls_key[TK_BALANCE_PATH_MAX];       /* its PEM private key */
    char tls_client_ca[TK_BALANCE_PATH_MAX]; /* require client certificates from these CAs */
    uint32_t tls_handshake_timeout_ms;       /* default 10 s */
    int tls_min_version;                     /* 0x0303 (TLS 1.2, the default) or 0x0304 */
} tk_balance_config;

/* Every setting at its default; no listener, no backend. */
void tk_balance_config_init(tk_balance_config *c);

/* Applies one setting by name: the command line's --name VALUE and a
 * configuration line "name value" both come here. "backend" and "listen"
 * add an entry (the same address twice is refused); others replace the
 * value; stats "" turns stats off. Returns 0, or -EINVAL with a message in
 * err (unknown name, bad value, too many entries). */
int tk_balance_config_set(tk_balance_config *c, const char *name, const char *value, char *err,
                          size_t errcap);

/* Parses "HOST:PORT[,weight=N][,maxconn=N][,backup][,proxy=v1|v2|none]" into
 * *out. Returns 0 or -EINVAL with a message in err. */
int tk_balance_backend_parse(const char *spec, tk_balance_backend_config *out, char *err,
                             size_t errcap);

/* Applies a configuration file's text (one setting per line: "name value";
 * '#' starts a comment; a value may be double-quoted, with \\ \" \n \r \t and
 * \xHH escapes, decoded once; a backend line may separate its options with
 * blanks). Returns 0, or -EINVAL with "line N: message" in err; c then holds
 * the lines before the bad one, so parse into a fresh copy. */
int tk_balance_config_parse(tk_balance_config *c, const char *text, size_t len, char *err,
                            size_t errcap);

/* Checks the rules between settings (at least one backend, no backend given
 * twice, rise and fall at least 1, a check timeout no longer than the
 * interval, a connect timeout no longer than the budget, a TLS certificate
 * and key together, a client CA only with them). Returns 0 or -EINVAL with
 * a message in err. */
int tk_balance_config_check(const tk_balance_config *c, char *err, size_t errcap);

/* ---- The service ---- */

typedef struct tk_balance tk_balance;

/* Creates the balancer for the loops of w with the settings of c (checked
 * with tk_balance_config_check; backend names are resolved now, TLS files
 * loaded now). Returns 0 or a negative errno with a message in err. */
int tk_balance_new(tk_workers *w, const tk_balance_config *c, tk_balance **out, char *err,
                   size_t errcap);

/* The callbacks to give tk_server_open for the client listeners. */
const tk_service_ops *tk_balance_ops(void);

/* Tells the balancer its client server (for client counting and drain). */
void tk_balance_set_server(tk_balance *b, tk_server *s);

/* Replaces the backend set and settings with those of c while serving;
 * call from the thread that owns w. Backends with the same address keep
 * their counters, health and balancing state; connections in progress are
 * untouched. The TLS certificate, key and CA files are read again, so new
 * clients get the new certificate; turning TLS on or off is refused.
 * Listener, stats and thread settings are not changed (a warning is logged
 * when they differ). Returns 0 or a negative errno with a message in err
 * (the old settings, TLS context included, then stay). */
int tk_balance_reload(tk_balance *b, const tk_balance_config *c, char *err, size_t errcap);

/* The live state as text (json == 0) or JSON, in a malloc'd NUL-terminated
 * string (NULL when out of memory). Callable from any thread. */
char *tk_balance_stats(tk_balance *b, int json);

/* The callbacks for a stats listener (tk_server_open with loops = 1): a
 * client sends one request line and gets the stats back (see docs). */
const tk_service_ops *tk_balance_stats_ops(void);

/* Tells the balancer its stats server. */
void tk_balance_set_stats_server(tk_balance *b, tk_server *s);

/* Frees the balancer after its servers were freed and the loops stopped. */
void tk_balance_free(tk_balance *b);

#endif

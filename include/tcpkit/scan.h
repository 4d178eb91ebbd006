/* A TCP connect scanner: targets (names, addresses, CIDR ranges), port lists,
 * and a non-blocking connect scan on one event loop with a cap on the
 * connects in flight, a connect rate, a per-attempt timeout, retries of
 * filtered ports, an optional TLS handshake and an optional banner read
 * (through TLS after a handshake). The engine parses no command
 * line and prints nothing: results come back in a tk_scan_result, progress
 * through a callback. */
#ifndef TCPKIT_SCAN_H
#define TCPKIT_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/addr.h"
#include "tcpkit/tls.h"

/* Most addresses one scan takes (all targets together); past it parsing a
 * target returns -E2BIG. */
#define TK_SCAN_MAX_HOSTS 65536u
/* Most probes (hosts x ports) one scan takes; past it tk_scan_run returns
 * -E2BIG. */
#define TK_SCAN_MAX_PROBES (64u * 1024 * 1024)
/* Most bytes kept of a banner. */
#define TK_SCAN_BANNER_MAX 128u
/* Most bytes kept of a TLS failure's reason, '\0' included. */
#define TK_SCAN_TLS_ERROR_MAX 128u
/* Number of ports in the default list (tk_scan_top_ports). */
#define TK_SCAN_TOP_PORTS 100u

typedef enum {
    TK_SCAN_UNKNOWN = 0, /* not probed yet (only seen in an unfinished run) */
    TK_SCAN_OPEN,        /* the connect succeeded */
    TK_SCAN_CLOSED,      /* refused (RST) */
    TK_SCAN_FILTERED,    /* no answer in time, or host/net unreachable */
} tk_scan_state;

/* One address to scan. name is the target as given when it was a host name
 * (empty for literals and ranges). The port of addr is ignored. */
typedef struct {
    tk_addr addr;
    char name[TK_HOST_MAX];
} tk_scan_host;

/* A growable list of hosts. Zero-initialise, fill with
 * tk_scan_targets_add, release with tk_scan_targets_free. */
typedef struct {
    tk_scan_host *hosts;
    size_t n;
    size_t cap;
} tk_scan_targets;

/* Adds one target: "example.org" (resolved, first address kept),
 * "192.0.2.7", "2001:db8::1", "192.0.2.0/24" or "2001:db8::/120" (every
 * address of the range, network and broadcast included). Returns 0,
 * -EINVAL (malformed), -ENOENT (name does not resolve), -E2BIG (the list
 * would pass TK_SCAN_MAX_HOSTS) or -ENOMEM. */
int tk_scan_targets_add(tk_scan_targets *t, const char *spec);

/* Frees the list's memory and zeroes it. */
void tk_scan_targets_free(tk_scan_targets *t);

/* Parses "22,80,8000-8100" (also "-" for 1-65535, "N-" and "-N" for open
 * ranges) into a sorted list without duplicates in *out (malloc'd, freed by
 * the caller) of *n ports. Port 0 is refused. Returns 0, -EINVAL or
 * -ENOMEM. */
int tk_scan_parse_ports(const char *spec, uint16_t **out, size_t *n);

/* The default list: TK_SCAN_TOP_PORTS common TCP ports, sorted. */
const uint16_t *tk_scan_top_ports(void);

/* A concurrency that fits the descriptor soft limit: min(1024, limit - 64),
 * at least 1. */
unsigned tk_scan_default_concurrency(void);

typedef struct {
    uint64_t done;      /* probes with a final state */
    uint64_t total;     /* hosts x ports */
    uint64_t open;      /* ports found open so far */
    unsigned in_flight; /* connects outstanding now */
    double elapsed_s;
} tk_scan_progress;

typedef void (*tk_scan_progress_cb)(const tk_scan_progress *p, void *arg);

typedef struct {
    const tk_scan_host *hosts;
    size_t nhosts;
    const uint16_t *ports;
    size_t nports;
    unsigned concurrency;         /* connects in flight at most (0: default) */
    unsigned rate;                /* connects started per second, 0 unlimited */
    uint32_t timeout_ms;          /* per attempt (1000) */
    unsigned retries;             /* extra attempts for filtered ports (1) */
    int banner;                   /* read what open ports send first */
    uint32_t banner_timeout_ms;   /* how long to wait for it (1000) */
    tk_scan_progress_cb progress; /* optional, called every progress_ms */
    void *progress_arg;
    uint32_t progress_ms;    /* 250 */
    tk_tls_ctx *tls;         /* optional client context: a TLS handshake on every open port,
                                and the banner (if asked) read through it (NULL) */
    const char *tls_name;    /* the name every port's certificate is checked against and
                                sent as SNI; NULL: the target's name, else its address */
    uint32_t tls_timeout_ms; /* how long a handshake may take (0: timeout_ms) */
} tk_scan_config;

/* A banner read from an open port: raw bytes, not terminated. */
typedef struct {
    size_t host;
    size_t port; /* index into the config's ports */
    size_t len;
    unsigned char data[TK_SCAN_BANNER_MAX];
} tk_scan_banner;

/* What the TLS handshake on an open port found. */
typedef struct {
    size_t host;
    size_t port;      /* index into the config's ports */
    char version[16]; /* the protocol negotiated ("TLSv1.3"); "" if the handshake failed */
    char cipher[48];  /* the cipher suite, with a version */
    int verified;     /* the certificate and name checked out (0 when not checked) */
    char verify_error[TK_SCAN_TLS_ERROR_MAX]; /* with a version: why they did not, if checked */
    char error[TK_SCAN_TLS_ERROR_MAX];        /* why the handshake, or the banner read after
                                                 it, failed ("" if neither did) */
} tk_scan_tls;

typedef struct {
    uint8_t *states; /* tk_scan_state of host h, port index p at [h * nports + p] */
    size_t nhosts;
    size_t nports;
    tk_scan_banner *banners; /* one per open port that said something */
    size_t nbanners;
    tk_scan_tls *tls; /* with a TLS context: one per open port, in the order they ended */
    size_t ntls;
    uint64_t attempts;        /* connects started, retries included */
    uint64_t local_retries;   /* attempts redone after a local resource error */
    unsigned min_concurrency; /* lowest cap the back-off reached */
    double elapsed_s;
} tk_scan_result;

/* Fills the documented defaults; hosts and ports must still be set. */
void tk_scan_config_init(tk_scan_config *c);

/* Scans every host x port and blocks until each has a final state. Returns
 * 0 with *out filled (free with tk_scan_result_free), or -EINVAL (no hosts
 * or ports), -E2BIG (over TK_SCAN_MAX_PROBES), -ENOMEM, or the error of
 * creating the loop. */
int tk_scan_run(const tk_scan_config *c, tk_scan_result *out);

void tk_scan_result_free(tk_scan_result *r);

/* "open", "closed", "filtered" or "unknown". */
const char *tk_scan_state_name(tk_scan_state s);

#endif

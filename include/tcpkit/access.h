/* Who may connect to a server, and how much: address ranges to allow and to
 * deny, and limits per client address (connections at once, new connections
 * per second), checked when a client is accepted, before any service sees it.
 *
 * Ranges (CIDR). "10.0.0.0/8", "192.168.1.7" (= /32), "fd00::/8", "::1"
 * (= /128). Host bits set beyond the prefix ("10.0.0.1/8") are refused, as a
 * likely typo, with the network it would have meant in the message. IPv4 and
 * IPv6 are separate families: an IPv4-mapped peer (::ffff:a.b.c.d, what a
 * dual-stack listener reports for an IPv4 client) is treated as the IPv4
 * address a.b.c.d, so IPv4 rules match it and "::/0" does not; a rule written
 * as ::ffff:a.b.c.d/N (N >= 96) is the IPv4 rule a.b.c.d/(N-96).
 *
 * Policy. A peer matching any deny rule is refused. Otherwise, if there is
 * at least one allow rule, a peer matching none of them is refused. Otherwise
 * it is admitted. (Deny wins over allow, whatever the order or the prefix
 * lengths.) Rules are checked one by one: meant for tens or hundreds of them.
 *
 * Limits. An admitted peer then passes the per-address limits, kept in one
 * table per tk_access shared by every loop (thread) of a server:
 *   - max_conns_per_ip: connections open at once from one address;
 *   - rate_per_ip / rate_burst: a token bucket per address, rate tokens a
 *     second up to burst; each admitted connection takes one. Refused
 *     attempts take none.
 * IPv6 peers are keyed per address by default, or per /ipv6_prefix network
 * (a host often owns a whole /64). The table holds at most table_max
 * addresses, in 16 shards of table_max/16 (one shard below 4096). An entry
 * leaves the table when it has no connection open and its bucket would be
 * full again, so forgetting it changes nothing. When a new address finds its
 * shard full, the least recently used entry without open connections is
 * dropped (that address gets a full bucket again); when every entry has open
 * connections, the new address is refused ("full") - like nginx's limit_conn
 * zone, the limits fail closed rather than stop counting.
 *
 * Refusals are counted per reason and summarised in the log once per
 * log_interval_ms (see tcpkit/lograte.h):
 *   refused 812 connections in the last 10 s (deny 800, per-ip 12, rate 0,
 *   full 0); last: 127.0.0.2 (deny)
 *
 * Functions that can fail return 0 or a negative errno. Every tk_access
 * call is thread-safe; a policy is read-only once built and may be shared by
 * any number of servers and threads. */
#ifndef TCPKIT_ACCESS_H
#define TCPKIT_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/addr.h"

/* Longest formatted range: an IPv6 address, "/128" and NUL. */
#define TK_CIDR_STRLEN 52

typedef struct {
    unsigned char family;   /* AF_INET or AF_INET6 */
    unsigned char prefix;   /* 0..32 or 0..128 */
    unsigned char addr[16]; /* network byte order; IPv4 uses the first 4 */
} tk_cidr;

/* Parses one range (see above) into *out. Returns 0, or -EINVAL with the
 * reason in err (which may be NULL). */
int tk_cidr_parse(const char *s, tk_cidr *out, char *err, size_t errcap);

/* Writes c as "10.0.0.0/8" or "fd00::/8" (always with the prefix) into buf of
 * cap bytes (TK_CIDR_STRLEN is enough); returns buf. */
char *tk_cidr_format(const tk_cidr *c, char *buf, size_t cap);

/* 1 if peer (IPv4, IPv6 or IPv4-mapped IPv6) is inside c, else 0. */
int tk_cidr_match(const tk_cidr *c, const tk_addr *peer);

/* The peer's address as a one-address range (/32 or /128), an IPv4-mapped
 * IPv6 address turned into IPv4. 0, or -EAFNOSUPPORT for other families. */
int tk_cidr_of_addr(const tk_addr *peer, tk_cidr *out);

typedef enum { TK_ACCESS_ALLOW = 0, TK_ACCESS_DENY = 1 } tk_access_list;

typedef struct tk_access_policy tk_access_policy;

/* An empty policy (admits everyone). 0 or -ENOMEM. */
int tk_access_policy_new(tk_access_policy **out);

/* Frees p; NULL is harmless. */
void tk_access_policy_free(tk_access_policy *p);

/* Adds the ranges of a comma-separated list ("10.0.0.0/8, ::1"; blanks
 * around entries are ignored) to the allow or deny list: all of them, or on
 * a bad entry none, with -EINVAL and the reason in err. -ENOMEM, or -E2BIG
 * past 65536 rules in one list. */
int tk_access_policy_add(tk_access_policy *p, tk_access_list which, const char *list, char *err,
                         size_t errcap);

/* Number of rules in one list. */
size_t tk_access_policy_count(const tk_access_policy *p, tk_access_list which);

/* Rule i of one list (i < count). */
const tk_cidr *tk_access_policy_rule(const tk_access_policy *p, tk_access_list which, size_t i);

/* 1 if the policy admits peer (not denied; allowed or no allow list), else 0. */
int tk_access_policy_permits(const tk_access_policy *p, const tk_addr *peer);

/* Why a peer was refused. */
typedef enum {
    TK_REFUSE_DENY = 0, /* a deny rule, or no allow rule, matched */
    TK_REFUSE_PER_IP,   /* max_conns_per_ip connections already open */
    TK_REFUSE_RATE,     /* the address's token bucket was empty */
    TK_REFUSE_FULL,     /* a new address, and the table is full of busy ones */
    TK_REFUSE_COUNT
} tk_refuse_reason;

/* "deny", "per-ip", "rate" or "full". */
const char *tk_refuse_reason_name(tk_refuse_reason r);

#define TK_ACCESS_TABLE_DEFAULT 65536
#define TK_ACCESS_TABLE_MAX     (1u << 24)

typedef struct {
    const tk_access_policy *policy; /* NULL: no allow or deny rules; must outlive the tk_access */
    unsigned max_conns_per_ip;      /* 0 (default): no limit */
    double rate_per_ip;             /* new connections per second; 0 (default): no limit */
    double rate_burst;              /* bucket size; 0 (default): rate_per_ip, at least 1 */
    unsigned table_max;             /* addresses tracked (default 65536; 1..2^24) */
    unsigned ipv6_prefix;           /* IPv6 peers share limits per /N (default 128; 32..128) */
    uint32_t log_interval_ms;       /* refusal summaries (default 10 s; 0: every refusal) */
} tk_access_config;

/* The defaults above: no rules, no limits. */
void tk_access_config_init(tk_access_config *c);

/* Checks value ranges; 0 or -EINVAL with the reason in err. */
int tk_access_config_check(const tk_access_config *c, char *err, size_t errcap);

typedef struct {
    unsigned long admitted;
    unsigned long refused[TK_REFUSE_COUNT];
    unsigned long evicted; /* idle entries dropped early to make room */
    unsigned long tracked; /* addresses in the table now */
} tk_access_counters;

typedef struct tk_access tk_access;

/* The access state of one server: the policy (by reference) and a fresh
 * table. Returns 0, -EINVAL (bad config; see tk_access_config_check) or
 * -ENOMEM. */
int tk_access_new(const tk_access_config *c, tk_access **out);

/* Writes the pending refusal summary and frees a; NULL is harmless. */
void tk_access_free(tk_access *a);

/* Decides on a new connection from peer at now_ms (monotonic; loops may pass
 * their slightly different cached times). 0: admitted, and the caller must
 * call tk_access_release() with the same peer when it closes. -EACCES:
 * refused, counted and noted for the log, with the reason in *why (may be
 * NULL). */
int tk_access_admit(tk_access *a, const tk_addr *peer, uint64_t now_ms, tk_refuse_reason *why);

/* Counts out a connection admitted from peer. */
void tk_access_release(tk_access *a, const tk_addr *peer, uint64_t now_ms);

/* True when admit/release keep per-address state (a limit is on). */
int tk_access_limits_on(const tk_access *a);

/* A snapshot of the counters. */
void tk_access_get_counters(tk_access *a, tk_access_counters *out);

/* Writes the refusal summary if its interval is over (or, with force,
 * whenever refusals are pending). Returns the milliseconds until the next one
 * is due, 0 if nothing is pending: a server arms a timer with it. */
uint32_t tk_access_log_flush(tk_access *a, uint64_t now_ms, int force);

#endif

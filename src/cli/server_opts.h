/* Options every server command shares (echo-server, chat-server,
 * file-server, serve, balance): who may connect (--allow, --deny), limits
 * per client address, the refusal log's interval, and the user to run as
 * once every socket is bound. A command adds SERVER_OPTS_LONGOPTS to its
 * option table, hands each option to server_option() before its own, calls
 * server_opts_finish() after parsing, points its tk_server_config.access at
 * server_opts_access(), and calls server_opts_drop_privileges() after
 * opening its servers and before serving. New server-wide options (TLS...)
 * belong here. */
#ifndef TK_CLI_SERVER_OPTS_H
#define TK_CLI_SERVER_OPTS_H

#include <getopt.h>
#include <sys/types.h>

#include "tcpkit/access.h"

enum {
    SO_ALLOW = 3000,
    SO_DENY,
    SO_MAX_CONNS_PER_IP,
    SO_RATE_PER_IP,
    SO_RATE_BURST,
    SO_PER_IP_TABLE,
    SO_PER_IP_V6_PREFIX,
    SO_REFUSAL_LOG_INTERVAL,
    SO_USER,
};

#define SERVER_OPTS_LONGOPTS                                                                       \
    {"allow", required_argument, NULL, SO_ALLOW}, {"deny", required_argument, NULL, SO_DENY},      \
        {"max-conns-per-ip", required_argument, NULL, SO_MAX_CONNS_PER_IP},                        \
        {"rate-per-ip", required_argument, NULL, SO_RATE_PER_IP},                                  \
        {"rate-burst", required_argument, NULL, SO_RATE_BURST},                                    \
        {"per-ip-table", required_argument, NULL, SO_PER_IP_TABLE},                                \
        {"per-ip-v6-prefix", required_argument, NULL, SO_PER_IP_V6_PREFIX},                        \
        {"refusal-log-interval", required_argument, NULL, SO_REFUSAL_LOG_INTERVAL},                \
    {                                                                                              \
        "user", required_argument, NULL, SO_USER                                                   \
    }

/* The --help lines for these options, to paste into a command's usage. */
#define SERVER_OPTS_HELP                                                                           \
    "  Access and limits (see docs/access.md):\n"                                                  \
    "      --allow CIDR,...      admit only clients in these ranges (repeatable)\n"                \
    "      --deny CIDR,...       refuse clients in these ranges; deny wins (repeatable)\n"         \
    "      --max-conns-per-ip N  connections at once from one address (default 0: no limit)\n"     \
    "      --rate-per-ip RATE    new connections per address: N, N/s or N/m (default: no\n"        \
    "                            limit)\n"                                                         \
    "      --rate-burst N        connections one address may open at once before the rate\n"       \
    "                            applies (default: one second's worth, at least 1)\n"              \
    "      --per-ip-table N      client addresses tracked for the limits (default 65536)\n"        \
    "      --per-ip-v6-prefix N  IPv6 clients share limits per /N network (default 128)\n"         \
    "      --refusal-log-interval SECS  one summary line of refusals per interval\n"               \
    "                            (default 10; 0: a line per refusal)\n"                            \
    "      --user NAME           run as NAME once every socket is bound (needs root)\n"

typedef struct {
    const char *cmd; /* for messages */
    tk_access_config access;
    tk_access_policy *policy; /* built from --allow and --deny */
    int access_used;          /* an access option was given */
    int burst_given;
    const char *user;
    int drop; /* 1 once --user names another user and we are root */
    uid_t uid;
    gid_t gid;
    char user_name[256];
} server_opts;

/* Defaults: no rules, no limits, no user change. */
void server_opts_init(server_opts *o, const char *cmd);

/* Applies one parsed option; 0, 2 after printing a usage error, or -1 when
 * ch is not one of these options. */
int server_option(server_opts *o, int ch, const char *arg);

/* Checks the options together and looks up --user. 0, 2 after a usage
 * error, or 1 after printing why the user cannot be used. */
int server_opts_finish(server_opts *o);

/* The access settings for tk_server_config.access, or NULL when no access
 * option was given. Valid until server_opts_free(). */
const tk_access_config *server_opts_access(const server_opts *o);

/* Switches to --user (supplementary groups, group, user) and checks that
 * root cannot be regained. 0 (also without --user), or 1 after logging. */
int server_opts_drop_privileges(const server_opts *o);

/* Frees the policy; call after the servers using it are freed. */
void server_opts_free(server_opts *o);

#endif

/* What `tcpkit get`, `put` and `ls` share: their common options, the
 * connection, the progress display and the exit status. */
#ifndef TK_CLI_FCLIENT_CLI_H
#define TK_CLI_FCLIENT_CLI_H

#include <getopt.h>
#include <stdint.h>

#include "cli/keyfile.h"
#include "cli/tls_opts.h"
#include "tcpkit/fclient.h"

enum {
    FC_PROTOCOL = 1300,
    FC_AUTH_KEY,
    FC_CONNECT_TIMEOUT,
    FC_HEARTBEAT,
    FC_NO_SYNC,
    FC_PARALLEL,
    FC_QUIET = 'q',
    FC_COMPRESS = 'z',
};

#define FCLIENT_LONGOPTS                                                                           \
    {"protocol", required_argument, NULL, FC_PROTOCOL},                                            \
        {"auth-key", required_argument, NULL, FC_AUTH_KEY},                                        \
        {"connect-timeout", required_argument, NULL, FC_CONNECT_TIMEOUT},                          \
        {"heartbeat", required_argument, NULL, FC_HEARTBEAT},                                      \
        {"parallel", required_argument, NULL, FC_PARALLEL},                                        \
        {"quiet", no_argument, NULL, FC_QUIET}, TLS_CLIENT_LONGOPTS,                               \
    {                                                                                              \
        "compress", no_argument, NULL, FC_COMPRESS                                                 \
    }

#define FCLIENT_USAGE                                                                              \
    "      --protocol N          1 (the seed's; downloads only, no digest) or 2 (default)\n"       \
    "      --auth-key FILE       authenticate every frame with this pre-shared key\n"              \
    "      --connect-timeout SECS  give up connecting after this long (default 10)\n"              \
    "      --heartbeat SECS      PING a silent server after this long (default 15, 0: off)\n"      \
    "      --parallel N          transfers at once over the connection (default 16)\n"             \
    "  -z, --compress            zstd-compress the data (version 2)\n"                             \
    "  -q, --quiet               print nothing but errors\n" TLS_CLIENT_HELP                       \
    "  -h, --help                this help\n"                                                      \
    "\n"                                                                                           \
    "exit status: 0 done, 1 a transfer failed, 2 usage, 3 refused, 4 timed out,\n"                 \
    "5 connection lost, 130 interrupted (partial downloads stay for --continue)\n"

typedef struct fcli fcli;

typedef struct {
    const char *cmd;
    tk_fclient_config cfg;
    int quiet;
    int compress;
    const char *key_path;
    unsigned char key[KEYFILE_MAX];
    tls_opts tls;
    char tls_name[TK_HOST_MAX];
} fcli_options;

/* Defaults. */
void fcli_options_init(fcli_options *o, const char *cmd);

/* Applies one common option: 0, 2 after a usage error, or -1 if ch is not
 * one of them. */
int fcli_option(fcli_options *o, int ch, const char *arg);

/* Resolves HOST:PORT, reads the key, connects and sets up the display.
 * Returns the client context or NULL after printing why (*status set). */
fcli *fcli_start(fcli_options *o, const char *target, int *status);

/* The engine client, to add transfers to. */
tk_fclient *fcli_client(fcli *f);

/* Callbacks for LIST and STAT answers (optional). */
void fcli_on_entry(fcli *f, void (*cb)(tk_fxfer *x, const tk_entry *e, void *arg), void *arg);
void fcli_on_info(fcli *f,
                  void (*cb)(tk_fxfer *x, int kind, uint64_t size, int64_t mtime,
                             const unsigned char *digest, void *arg),
                  void *arg);
/* Called when a transfer ends, before the default reporting (optional);
 * returning non-zero means the failure was handled and is not reported. */
void fcli_on_done(fcli *f, int (*cb)(tk_fxfer *x, int err, void *arg), void *arg);

/* Registers a transfer for progress display under a label. */
void fcli_track(fcli *f, tk_fxfer *x, const char *label);

/* Runs until every transfer ended (or SIGINT/SIGTERM), frees everything and
 * returns the exit status. */
int fcli_run(fcli *f);

/* "1.5 MiB" into buf. */
const char *fcli_human(uint64_t bytes, char *buf, size_t cap);

#endif

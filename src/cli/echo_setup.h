/* Echo options shared by `echo-server` and `serve`, and the code that turns
 * them into a running service. */
#ifndef TK_CLI_ECHO_SETUP_H
#define TK_CLI_ECHO_SETUP_H

#include <getopt.h>
#include <stdint.h>

#include "cli/tls_opts.h"
#include "cli/server_opts.h"
#include "tcpkit/echo.h"
#include "tcpkit/server.h"
#include "tcpkit/workers.h"

enum {
    OPT_FRAMING = 1000,
    OPT_UDP,
    OPT_STRICT,
    OPT_BANNER,
    OPT_MAX_LINE,
    OPT_MAX_FRAME,
    OPT_MAX_CLIENTS,
    OPT_IDLE,
    OPT_STALL,
    OPT_SHUTDOWN,
    OPT_OUT_HIGH,
    OPT_OUT_MAX,
    OPT_NO_NODELAY,
    OPT_KEEPALIVE,
    OPT_LINGER,
    OPT_SNDBUF,
    OPT_RCVBUF,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_THREADS = 't',
};

#define ECHO_LONGOPTS                                                                              \
    {"framing", required_argument, NULL, OPT_FRAMING}, {"udp", no_argument, NULL, OPT_UDP},        \
        {"strict", no_argument, NULL, OPT_STRICT},                                                 \
        {"banner", required_argument, NULL, OPT_BANNER},                                           \
        {"max-line", required_argument, NULL, OPT_MAX_LINE},                                       \
        {"max-frame", required_argument, NULL, OPT_MAX_FRAME},                                     \
        {"max-clients", required_argument, NULL, OPT_MAX_CLIENTS},                                 \
        {"idle-timeout", required_argument, NULL, OPT_IDLE},                                       \
        {"stall-timeout", required_argument, NULL, OPT_STALL},                                     \
        {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN},                               \
        {"out-high", required_argument, NULL, OPT_OUT_HIGH},                                       \
        {"out-max", required_argument, NULL, OPT_OUT_MAX},                                         \
        {"no-nodelay", no_argument, NULL, OPT_NO_NODELAY},                                         \
        {"keepalive", required_argument, NULL, OPT_KEEPALIVE},                                     \
        {"linger", required_argument, NULL, OPT_LINGER},                                           \
        {"sndbuf", required_argument, NULL, OPT_SNDBUF},                                           \
        {"rcvbuf", required_argument, NULL, OPT_RCVBUF},                                           \
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},                                     \
        {"log-format", required_argument, NULL, OPT_LOG_FORMAT}, TLS_SERVER_LONGOPTS,              \
    {                                                                                              \
        "threads", required_argument, NULL, OPT_THREADS                                            \
    }

typedef struct {
    const char *cmd; /* for messages: "echo-server" or "serve" */
    tk_echo_config echo;
    tk_server_config server;
    unsigned threads;
    uint32_t shutdown_ms;
    const char *log_level;
    const char *log_format;
    tls_opts tls; /* TLS for every TCP listener (serve: for all its services) */
} echo_options;

/* Defaults for every option. */
void echo_options_init(echo_options *o, const char *cmd);

/* Applies one parsed option; 0, or 2 after printing a usage error, or -1 if
 * ch is not an echo option. */
int echo_option(echo_options *o, int ch, const char *arg);

/* Creates the echo service on w and its server. 0, or 1 after logging the
 * error (nothing is left to free then). */
int echo_build(echo_options *o, tk_workers *w, tk_echo **echo, tk_server **server);

/* Builds the workers, service and server, drops privileges as so says, and
 * runs them until a signal. Returns the exit status. */
int echo_run(echo_options *o, const server_opts *so);

#endif

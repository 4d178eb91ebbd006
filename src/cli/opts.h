/* Option value parsing and the logging options shared by every command. */
#ifndef TK_CLI_OPTS_H
#define TK_CLI_OPTS_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/parse.h"
#include "tcpkit/server.h"
#include "tcpkit/sock.h"

/* Adds a listen address given with flag (checked to be HOST:PORT,
 * [IPv6]:PORT or :PORT) to cfg; 0, or 2 after a usage error. */
int opt_listen(const char *cmd, tk_server_config *cfg, const char *flag, const char *arg);

/* Prints "tcpkit CMD: message" to stderr and returns 2 (usage error). */
int opt_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Applies --log-level / --log-format values; returns 0 or 2 after printing. */
int opt_logging(const char *cmd, const char *level, const char *format);

#endif

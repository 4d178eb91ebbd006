/* Option value parsing and the logging options shared by every command. */
#ifndef TK_CLI_OPTS_H
#define TK_CLI_OPTS_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/server.h"
#include "tcpkit/sock.h"

/* "65536", "64K", "1M", "2G" (binary multiples) into *out; 0 or -EINVAL. */
int opt_size(const char *s, size_t *out);

/* Seconds with an optional fraction ("0.5", "300") or a suffix ("500ms",
 * "30s", "5m") into milliseconds; 0 or -EINVAL. */
int opt_duration_ms(const char *s, uint32_t *out);

/* A decimal integer in [min, max]; 0 or -EINVAL. */
int opt_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out);

/* "IDLE[,INTVL[,COUNT]]" seconds into keepalive settings (IDLE 0 turns
 * keepalive off); 0 or -EINVAL. */
int opt_keepalive(const char *s, tk_sockopts *out);

/* Adds a listen address given with flag (checked to be HOST:PORT,
 * [IPv6]:PORT or :PORT) to cfg; 0, or 2 after a usage error. */
int opt_listen(const char *cmd, tk_server_config *cfg, const char *flag, const char *arg);

/* Prints "tcpkit CMD: message" to stderr and returns 2 (usage error). */
int opt_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Applies --log-level / --log-format values; returns 0 or 2 after printing. */
int opt_logging(const char *cmd, const char *level, const char *format);

#endif

/* Parsing of option values; every failure is reported by the caller as a
 * usage error (exit 2). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/opts.h"
#include "tcpkit/addr.h"
#include "tcpkit/log.h"

int opt_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "tcpkit %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'tcpkit %s --help'.\n", cmd);
    return 2;
}

int opt_logging(const char *cmd, const char *level, const char *format)
{
    tk_log_level lv = TK_LOG_INFO;
    tk_log_format fmt = TK_LOG_TEXT;
    if (level && tk_log_parse_level(level, &lv) < 0)
        return opt_usage_error(cmd, "bad --log-level '%s' (debug, info, warn, error, off)", level);
    if (format) {
        if (strcmp(format, "json") == 0)
            fmt = TK_LOG_JSON;
        else if (strcmp(format, "text") != 0)
            return opt_usage_error(cmd, "bad --log-format '%s' (text or json)", format);
    }
    tk_log_configure(lv, fmt, 2);
    return 0;
}

int opt_listen(const char *cmd, tk_server_config *cfg, const char *flag, const char *arg)
{
    char host[TK_HOST_MAX];
    int port;
    if (tk_addr_split(arg, host, &port) < 0)
        return opt_usage_error(cmd, "bad %s '%s' (HOST:PORT, [IPv6]:PORT or :PORT)", flag, arg);
    if (cfg->nlisten == TK_SERVER_MAX_LISTEN)
        return opt_usage_error(cmd, "at most %d %s addresses", TK_SERVER_MAX_LISTEN, flag);
    cfg->listen[cfg->nlisten++] = arg;
    return 0;
}

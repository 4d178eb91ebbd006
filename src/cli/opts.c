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

int opt_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int opt_size(const char *s, size_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    if (*end) {
        switch (*end) {
        case 'k':
        case 'K': shift = 10; break;
        case 'm':
        case 'M': shift = 20; break;
        case 'g':
        case 'G': shift = 30; break;
        default: return -EINVAL;
        }
        end++;
        /* K, KB or KiB: all binary multiples. */
        if (strcmp(end, "") != 0 && strcmp(end, "B") != 0 && strcmp(end, "iB") != 0)
            return -EINVAL;
    }
    if (v > (SIZE_MAX >> shift))
        return -EINVAL;
    *out = (size_t)(v << shift);
    return 0;
}

int opt_duration_ms(const char *s, uint32_t *out)
{
    if (!s || ((*s < '0' || *s > '9') && *s != '.'))
        return -EINVAL;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || v < 0)
        return -EINVAL;
    double scale = 1000.0;
    if (strcmp(end, "ms") == 0)
        scale = 1.0;
    else if (strcmp(end, "m") == 0)
        scale = 60000.0;
    else if (*end && strcmp(end, "s") != 0)
        return -EINVAL;
    double ms = v * scale;
    if (ms > (double)UINT32_MAX)
        return -EINVAL;
    *out = (uint32_t)(ms + 0.5);
    if (*out == 0 && v > 0)
        *out = 1;
    return 0;
}

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

int opt_keepalive(const char *arg, tk_sockopts *s)
{
    unsigned long v[3] = {0, 0, 0};
    char copy[64];
    if (strlen(arg) >= sizeof(copy))
        return -EINVAL;
    strcpy(copy, arg);
    char *save = NULL;
    int i = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (i == 3 || opt_uint(tok, 0, 86400, &v[i]) < 0)
            return -EINVAL;
        i++;
    }
    if (i == 0)
        return -EINVAL;
    s->keepalive = v[0] > 0;
    s->ka_idle_s = (int)v[0];
    if (i > 1)
        s->ka_intvl_s = (int)v[1];
    if (i > 2)
        s->ka_count = (int)v[2];
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

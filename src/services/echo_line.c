/* The echo line protocol: one request per line, answered by one line. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "echo_internal.h"
#include "tcpkit/text.h"

#define STATS_MAX 512

size_t echo_format_time(char *buf, size_t cap)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, cap - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    return n;
}

void echo_parse(const unsigned char *line, size_t n, echo_req *req)
{
    req->line = line;
    req->len = n;
    req->cmd = tk_echo_parse(line, n, &req->arg, &req->arg_len);
}

size_t echo_reply_bound(const echo_req *req)
{
    switch (req->cmd) {
    case TK_ECHO_CMD_UPPER:
    case TK_ECHO_CMD_LOWER:
        /* One byte may become up to four; room for the error text too. */
        return 4 * req->arg_len + 64;
    case TK_ECHO_CMD_STATS: return STATS_MAX;
    default:
        /* "ECHO: " + line + "\n", and every fixed reply fits in 64. */
        return req->len + 64;
    }
}

static size_t put(unsigned char *out, const char *prefix, const unsigned char *s, size_t n)
{
    size_t p = strlen(prefix);
    memcpy(out, prefix, p);
    if (n)
        memcpy(out + p, s, n);
    out[p + n] = '\n';
    return p + n + 1;
}

static size_t stats_line(tk_echo *e, unsigned char *out, size_t cap)
{
    tk_metrics_snapshot s;
    tk_metrics_read(e->metrics, &s);
    int n =
        snprintf((char *)out, cap,
                 "STATS conns_total=%" PRIu64 " conns_active=%" PRIu64 " conns_rejected=%" PRIu64
                 " bytes_in=%" PRIu64 " bytes_out=%" PRIu64 " messages=%" PRIu64
                 " resp_avg_us=%.1f resp_p50_us=%" PRIu64 " resp_p99_us=%" PRIu64
                 " closed_idle=%" PRIu64 " closed_stall=%" PRIu64 " closed_limit=%" PRIu64 "\n",
                 s.conns_total, s.conns_active, s.conns_rejected, s.bytes_in, s.bytes_out,
                 s.messages, s.resp_avg_us, s.resp_p50_us, s.resp_p99_us, s.closes[TK_CLOSE_IDLE],
                 s.closes[TK_CLOSE_STALL], s.closes[TK_CLOSE_LIMIT]);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t echo_reply(tk_echo *e, const echo_req *req, unsigned char *out, size_t cap, int *quit)
{
    ssize_t r;
    *quit = 0;
    switch (req->cmd) {
    case TK_ECHO_CMD_ECHO: return put(out, "ECHO: ", req->arg, req->arg_len);
    case TK_ECHO_CMD_UPPER:
    case TK_ECHO_CMD_LOWER:
        r = req->cmd == TK_ECHO_CMD_UPPER ? tk_utf8_upper(req->arg, req->arg_len, out, cap - 1)
                                          : tk_utf8_lower(req->arg, req->arg_len, out, cap - 1);
        if (r < 0)
            return put(out, "ERROR: reply too large", NULL, 0);
        out[r] = '\n';
        return (size_t)r + 1;
    case TK_ECHO_CMD_REVERSE:
        r = tk_utf8_reverse(req->arg, req->arg_len, out);
        out[r] = '\n';
        return (size_t)r + 1;
    case TK_ECHO_CMD_TIME: {
        size_t t = echo_format_time((char *)out, cap);
        out[t] = '\n';
        return t + 1;
    }
    case TK_ECHO_CMD_STATS: return stats_line(e, out, cap);
    case TK_ECHO_CMD_QUIT: *quit = 1; return put(out, ECHO_GOODBYE_TEXT, NULL, 0);
    case TK_ECHO_CMD_PLAIN:
    case TK_ECHO_CMD_UNKNOWN: break;
    }
    if (e->cfg.strict)
        return put(out, "ERROR: Unknown command", NULL, 0);
    return put(out, "ECHO: ", req->line, req->len);
}

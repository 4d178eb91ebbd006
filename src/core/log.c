/* Log records: "2026-11-25T10:00:00.123Z INFO message" or one JSON object. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tcpkit/log.h"

#define TK_LOG_LINE_MAX 2048

static tk_log_level g_level = TK_LOG_INFO;
static tk_log_format g_format = TK_LOG_TEXT;
static int g_fd = 2;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

void tk_log_configure(tk_log_level level, tk_log_format format, int fd)
{
    g_level = level;
    g_format = format;
    g_fd = fd;
}

int tk_log_parse_level(const char *s, tk_log_level *out)
{
    for (int i = TK_LOG_DEBUG; i <= TK_LOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (tk_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = TK_LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

int tk_log_enabled(tk_log_level level)
{
    return level >= g_level && g_level != TK_LOG_OFF;
}

static size_t format_time(char *buf, size_t cap)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, cap - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
    return n;
}

/* Appends s to out as the body of a JSON string, escaping what JSON requires. */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    return n;
}

void tk_logv(tk_log_level level, const char *fmt, va_list ap)
{
    if (!tk_log_enabled(level))
        return;
    char msg[TK_LOG_LINE_MAX / 2];
    char line[TK_LOG_LINE_MAX];
    char ts[40];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    format_time(ts, sizeof(ts));
    size_t n;
    if (g_format == TK_LOG_JSON) {
        n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                             level_names[level]);
        n += json_escape(line + n, sizeof(line) - n - 3, msg);
        line[n++] = '"';
        line[n++] = '}';
    } else {
        n = (size_t)snprintf(line, sizeof(line) - 1, "%s %s %s", ts, level_names[level], msg);
        if (n > sizeof(line) - 2)
            n = sizeof(line) - 2;
    }
    line[n++] = '\n';
    /* One write per record keeps records whole when threads log at once. */
    while (write(g_fd, line, n) < 0 && errno == EINTR) {
    }
}

void tk_log(tk_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tk_logv(level, fmt, ap);
    va_end(ap);
}

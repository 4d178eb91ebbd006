/* Leveled logging to stderr (or any descriptor) as text or JSON lines, one
 * write() per record so lines from several threads never interleave. */
#ifndef TCPKIT_LOG_H
#define TCPKIT_LOG_H

#include <stdarg.h>

typedef enum {
    TK_LOG_DEBUG = 0,
    TK_LOG_INFO = 1,
    TK_LOG_WARN = 2,
    TK_LOG_ERROR = 3,
    TK_LOG_OFF = 4,
} tk_log_level;

typedef enum {
    TK_LOG_TEXT = 0,
    TK_LOG_JSON = 1,
} tk_log_format;

/* Sets the minimum level, the output format and the descriptor (default:
 * info, text, 2). Call before starting threads. */
void tk_log_configure(tk_log_level level, tk_log_format format, int fd);

/* Parses "debug", "info", "warn", "error" or "off"; returns 0 or -EINVAL. */
int tk_log_parse_level(const char *s, tk_log_level *out);

/* True when records at this level are written (lets callers skip formatting). */
int tk_log_enabled(tk_log_level level);

/* Writes one record with a timestamp, level and printf-style message. */
void tk_log(tk_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* va_list form of tk_log(). */
void tk_logv(tk_log_level level, const char *fmt, va_list ap);

#define tk_debug(...)                                                                              \
    do {                                                                                           \
        if (tk_log_enabled(TK_LOG_DEBUG))                                                          \
            tk_log(TK_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define tk_info(...)  tk_log(TK_LOG_INFO, __VA_ARGS__)
#define tk_warn(...)  tk_log(TK_LOG_WARN, __VA_ARGS__)
#define tk_error(...) tk_log(TK_LOG_ERROR, __VA_ARGS__)

#endif

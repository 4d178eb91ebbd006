/* Settings of the load balancer: one vocabulary for the command line
 * (tk_balance_config_set) and configuration files (tk_balance_config_parse),
 * and the rules between settings (tk_balance_config_check).
 *
 * Nothing is allocated: every list and string lives in the fixed arrays of
 * tk_balance_config, and a value that does not fit is an error, never
 * truncated. Unused bytes of those arrays are kept zero, so two configurations
 * built from the same settings compare equal byte for byte. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tcpkit/balance.h"
#include "tcpkit/parse.h"

#define LINE_MAX_BYTES 4096 /* longest configuration line, without its line end */
#define SHOW           64   /* at most this much of a bad value is quoted in a message */

/* Formats a message into err when the caller gave room for one; returns
 * -EINVAL so that error paths read "return fail(...)". */
static int fail(char *err, size_t errcap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errcap, const char *fmt, ...)
{
    if (err && errcap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errcap, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* p[0..n) is exactly word. */
static int is_word(const char *p, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(p, word, n) == 0;
}

static const char *const algo_names[] = {"roundrobin", "leastconn", "random", "source", "first"};

const char *tk_balance_algo_name(tk_balance_algo a)
{
    if ((unsigned)a < sizeof(algo_names) / sizeof(algo_names[0]))
        return algo_names[a];
    return "unknown";
}

/* "v1", "v2" or "none" as a PROXY protocol version (1, 2, 0); -1 otherwise. */
static int proxy_version(const char *p, size_t n)
{
    if (is_word(p, n, "v1"))
        return 1;
    if (is_word(p, n, "v2"))
        return 2;
    if (is_word(p, n, "none"))
        return 0;
    return -1;
}

/* Characters an address may hold: host names, IPv4 and bracketed IPv6
 * literals with a scope. Refusing the rest keeps quotes, spaces and control
 * characters out of the log lines and the JSON stats that print addresses. */
static int is_addr_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           strchr(".-_:[]%", ch) != NULL;
}

/* Checks that s is "HOST:PORT", "[IPv6]:PORT" or ":PORT" that fits the
 * configuration's address arrays, with a port of at least min_port. what
 * names the setting in the message. */
static int check_addr(const char *what, const char *s, int min_port, char *err, size_t errcap)
{
    size_t n = strlen(s);
    if (n == 0)
        return fail(err, errcap, "%s: missing address (want HOST:PORT)", what);
    if (n >= TK_BALANCE_ADDR_MAX)
        return fail(err, errcap, "%s: address longer than %d bytes", what, TK_BALANCE_ADDR_MAX - 1);
    for (size_t i = 0; i < n; i++) {
        if (!is_addr_char(s[i]))
            return fail(err, errcap, "%s: '%.*s': an address cannot hold the byte 0x%02x", what,
                        SHOW, s, (unsigned char)s[i]);
    }
    char host[TK_HOST_MAX];
    int port;
    if (tk_addr_split(s, host, &port) < 0)
        return fail(err, errcap, "%s: '%.*s' is not HOST:PORT, [IPv6]:PORT or :PORT", what, SHOW,
                    s);
    if (port < min_port)
        return fail(err, errcap, "%s: '%.*s': the port must be 1 to 65535", what, SHOW, s);
    return 0;
}

/* Copies s (already checked to fit) into an address array, zeroing the rest. */
static void put_addr(char dst[TK_BALANCE_ADDR_MAX], const char *s)
{
    memset(dst, 0, TK_BALANCE_ADDR_MAX);
    memcpy(dst, s, strlen(s));
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int bad_escape(const char *what, unsigned char ch, char *err, size_t errcap)
{
    if (ch > 0x20 && ch < 0x7f)
        return fail(err, errcap,
                    "%s: unknown escape '\\%c' (use \\\\ \\\" \\r \\n \\t \\0 or \\xHH)", what, ch);
    return fail(err, errcap, "%s: unknown escape: byte 0x%02x after '\\'", what, ch);
}

/* Decodes the escapes \\ \" \r \n \t \0 (a NUL byte, never octal) and \xHH
 * (exactly two hex digits) of s[0..n) into dst, copying other bytes as they
 * are. This one decoder serves both a quoted configuration value and the
 * check-send/check-expect strings, so an escape means the same everywhere.
 * Stores the decoded length in *out; a bad escape or more than cap bytes is
 * an error naming the setting what. */
static int unescape(const char *what, const char *s, size_t n, unsigned char *dst, size_t cap,
                    size_t *out, char *err, size_t errcap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        if (b == '\\') {
            if (++i == n)
                return fail(err, errcap, "%s: the value ends with a lone '\\' (write \\\\)", what);
            switch (s[i]) {
            case '\\': b = '\\'; break;
            case '"': b = '"'; break;
            case 'r': b = '\r'; break;
            case 'n': b = '\n'; break;
            case 't': b = '\t'; break;
            case '0': b = 0; break;
            case 'x': {
                int hi = n - i > 2 ? hex_digit(s[i + 1]) : -1;
                int lo = n - i > 2 ? hex_digit(s[i + 2]) : -1;
                if (hi < 0 || lo < 0)
                    return fail(err, errcap, "%s: \\x needs two hex digits", what);
                b = (unsigned char)(hi * 16 + lo);
                i += 2;
                break;
            }
            default: return bad_escape(what, (unsigned char)s[i], err, errcap);
            }
        }
        if (o == cap)
            return fail(err, errcap, "%s: longer than %zu bytes", what, cap);
        dst[o++] = b;
    }
    *out = o;
    return 0;
}

/* How a setting's value is read and where it is stored. */
typedef enum {
    S_UINT,  /* unsigned: a decimal integer in [min, max] */
    S_SIZE,  /* size_t: a byte size ("64K") in [min, max] */
    S_MS,    /* uint32_t: a duration in milliseconds, at least min (0 or 1) */
    S_BYTES, /* unsigned char[TK_BALANCE_CHECK_MAX] and its size_t length: C escapes */
    S_PATH,  /* char[TK_BALANCE_PATH_MAX]: a file name as given ("" for none) */
    S_FUNC,  /* its own function */
} setting_kind;

typedef struct setting setting;

typedef int (*setting_fn)(tk_balance_config *c, const char *v, char *err, size_t errcap);

struct setting {
    const char *name;
    setting_kind kind;
    size_t off;     /* of the field in tk_balance_config */
    size_t len_off; /* S_BYTES: of the length field */
    unsigned long min, max;
    setting_fn fn;
};

static int set_listen(tk_balance_config *c, const char *v, char *err, size_t errcap)
{
    int rc = check_addr("listen", v, 0, err, errcap);
    if (rc < 0)
        return rc;
    if (c->nlisten >= TK_SERVER_MAX_LISTEN)
        return fail(err, errcap, "listen: more than %d addresses", TK_SERVER_MAX_LISTEN);
    for (size_t i = 0; i < c->nlisten; i++) {
        if (strcmp(c->listen[i], v) == 0)
            return fail(err, errcap, "listen: '%s' given twice", v);
    }
    put_addr(c->listen[c->nlisten++], v);
    return 0;
}

static int set_backend(tk_balance_config *c, const char *v, char *err, size_t errcap)
{
    tk_balance_backend_config b;
    int rc = tk_balance_backend_parse(v, &b, err, errcap);
    if (rc < 0)
        return rc;
    if (c->nbackends >= TK_BALANCE_MAX_BACKENDS)
        return fail(err, errcap, "backend: more than %d backends", TK_BALANCE_MAX_BACKENDS);
    for (size_t i = 0; i < c->nbackends; i++) {
        if (strcmp(c->backend[i].addr, b.addr) == 0)
            return fail(err, errcap, "backend: '%s' given twice", b.addr);
    }
    memcpy(&c->backend[c->nbackends++], &b, sizeof(b));
    return 0;
}

static int set_algo(tk_balance_config *c, const char *v, char *err, size_t errcap)
{
    for (size_t i = 0; i < sizeof(algo_names) / sizeof(algo_names[0]); i++) {
        if (strcmp(v, algo_names[i]) == 0) {
            c->algo = (tk_balance_algo)i;
            return 0;
        }
    }
    return fail(err, errcap, "algo: '%.*s' is not roundrobin, leastconn, random, source or first",
                SHOW, v);
}

/* An empty value turns the stats endpoint off again. */
static int set_stats(tk_balance_config *c, const char *v, char *err, size_t errcap)
{
    if (*v) {
        int rc = check_addr("stats", v, 0, err, errcap);
        if (rc < 0)
            return rc;
    }
    put_addr(c->stats, v);
    return 0;
}

static int set_send_proxy(tk_balance_config *c, const char *v, char *err, size_t errcap)
{
    int version = proxy_version(v, strlen(v));
    if (version < 0)
        return fail(err, errcap, "send-proxy: '%.*s' is not v1, v2 or none", SHOW, v);
    c->send_proxy = version;
    return 0;
}

/* tk_sock_parse_keepalive skips empty fields ("60,,6" would read as 60,6), so
 * they are refused here first. */
static int set_keepalive(tk_balance_config *c, const char *v, char *err, size_t errcap)
{
    size_t n = strlen(v);
    if (n == 0 || v[0] == ',' || v[n - 1] == ',' || strstr(v, ",,") ||
        tk_sock_parse_keepalive(v, &c->sock) < 0)
        return fail(err, errcap,
                    "keepalive: '%.*s' is not IDLE[,INTVL[,COUNT]] (seconds 0 to 86400; IDLE 0 "
                    "turns it off)",
                    SHOW, v);
    return 0;
}

/* "1.2" or "1.3": the oldest TLS version clients may use. */
static int set_tls_min_version(tk_balance_config *c, const char *v, char *err, size_t errcap)
{
    if (strcmp(v, "1.2") == 0)
        c->tls_min_version = 0x0303;
    else if (strcmp(v, "1.3") == 0)
        c->tls_min_version = 0x0304;
    else
        return fail(err, errcap, "tls-min-version: '%.*s' is not 1.2 or 1.3", SHOW, v);
    return 0;
}

#define FIELD(f) offsetof(tk_balance_config, f)
#define SET_UINT(n, f, lo, hi)                                                                     \
    {                                                                                              \
        .name = n, .kind = S_UINT, .off = FIELD(f), .min = lo, .max = hi                           \
    }
#define SET_SIZE(n, f, lo, hi)                                                                     \
    {                                                                                              \
        .name = n, .kind = S_SIZE, .off = FIELD(f), .min = lo, .max = hi                           \
    }
#define SET_MS(n, f, lo)                                                                           \
    {                                                                                              \
        .name = n, .kind = S_MS, .off = FIELD(f), .min = lo, .max = UINT32_MAX                     \
    }
#define SET_BYTES(n, f, len)                                                                       \
    {                                                                                              \
        .name = n, .kind = S_BYTES, .off = FIELD(f), .len_off = FIELD(len),                        \
        .max = TK_BALANCE_CHECK_MAX                                                                \
    }
#define SET_PATH(n, f)                                                                             \
    {                                                                                              \
        .name = n, .kind = S_PATH, .off = FIELD(f), .max = TK_BALANCE_PATH_MAX                     \
    }
#define SET_FUNC(n, f)                                                                             \
    {                                                                                              \
        .name = n, .kind = S_FUNC, .fn = f                                                         \
    }

/* Every setting, in the order of `tcpkit balance --help`. "config",
 * "log-level", "log-format" and "help" belong to the command line alone. */
static const setting settings[] = {
    SET_FUNC("listen", set_listen),
    SET_FUNC("backend", set_backend),
    SET_FUNC("algo", set_algo),
    SET_FUNC("stats", set_stats),
    SET_FUNC("send-proxy", set_send_proxy),
    SET_MS("connect-timeout", connect_timeout_ms, 1),
    SET_MS("connect-budget", connect_budget_ms, 1),
    SET_UINT("retries", retries, 0, 100),
    SET_MS("first-byte-timeout", first_byte_timeout_ms, 0),
    SET_SIZE("replay-buffer", replay_max, 0, 1 << 20),
    SET_UINT("queue", queue_max, 0, 1000000),
    SET_MS("queue-timeout", queue_timeout_ms, 1),
    SET_MS("client-timeout", client_timeout_ms, 0),
    SET_MS("backend-timeout", backend_timeout_ms, 0),
    SET_SIZE("pipe-size", pipe_size, 4 << 10, 1 << 20),
    SET_FUNC("keepalive", set_keepalive),
    SET_MS("check-interval", check_interval_ms, 0),
    SET_MS("check-timeout", check_timeout_ms, 1),
    SET_BYTES("check-send", check_send, check_send_len),
    SET_BYTES("check-expect", check_expect, check_expect_len),
    SET_UINT("rise", rise, 1, 100),
    SET_UINT("fall", fall, 1, 100),
    SET_PATH("tls-cert", tls_cert),
    SET_PATH("tls-key", tls_key),
    SET_PATH("tls-client-ca", tls_client_ca),
    SET_MS("tls-handshake-timeout", tls_handshake_timeout_ms, 1),
    SET_FUNC("tls-min-version", set_tls_min_version),
    SET_UINT("max-clients", max_clients, 0, 10000000),
    SET_UINT("threads", threads, 1, 1024),
    SET_MS("drain-timeout", drain_timeout_ms, 0),
};

static const setting *find_setting(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        if (is_word(name, n, settings[i].name))
            return &settings[i];
    }
    return NULL;
}

/* A byte count as the usage text writes it: "4K", "1M" or plain bytes. */
static const char *size_text(unsigned long v, char *buf, size_t cap)
{
    if (v >= (1ul << 20) && v % (1ul << 20) == 0)
        snprintf(buf, cap, "%luM", v >> 20);
    else if (v >= (1ul << 10) && v % (1ul << 10) == 0)
        snprintf(buf, cap, "%luK", v >> 10);
    else
        snprintf(buf, cap, "%lu", v);
    return buf;
}

/* Stores decoded check bytes (already known to fit), zeroing the rest. */
static void put_bytes(tk_balance_config *c, const setting *s, const unsigned char *p, size_t n)
{
    unsigned char *dst = (unsigned char *)c + s->off;
    memset(dst, 0, TK_BALANCE_CHECK_MAX);
    if (n)
        memcpy(dst, p, n);
    *(size_t *)((char *)c + s->len_off) = n;
}

/* Applies the text value v to setting s; c is unchanged on error. */
static int apply(tk_balance_config *c, const setting *s, const char *v, char *err, size_t errcap)
{
    void *field = (char *)c + s->off;
    switch (s->kind) {
    case S_UINT: {
        unsigned long n;
        if (tk_parse_uint(v, s->min, s->max, &n) < 0)
            return fail(err, errcap, "%s: '%.*s' is not a whole number from %lu to %lu", s->name,
                        SHOW, v, s->min, s->max);
        *(unsigned *)field = (unsigned)n;
        return 0;
    }
    case S_SIZE: {
        size_t n;
        if (tk_parse_size(v, &n) < 0 || n < s->min || n > s->max) {
            char lo[24], hi[24];
            return fail(err, errcap, "%s: '%.*s' is not a size from %s to %s (bytes, K or M)",
                        s->name, SHOW, v, size_text(s->min, lo, sizeof(lo)),
                        size_text(s->max, hi, sizeof(hi)));
        }
        *(size_t *)field = n;
        return 0;
    }
    case S_MS: {
        uint32_t ms;
        if (tk_parse_duration_ms(v, &ms) < 0)
            return fail(err, errcap, "%s: '%.*s' is not a duration (500ms, 2s, 1m)", s->name, SHOW,
                        v);
        if (ms < s->min)
            return fail(err, errcap, "%s: must be more than 0", s->name);
        *(uint32_t *)field = ms;
        return 0;
    }
    case S_BYTES: {
        unsigned char buf[TK_BALANCE_CHECK_MAX];
        size_t n;
        int rc = unescape(s->name, v, strlen(v), buf, sizeof(buf), &n, err, errcap);
        if (rc < 0)
            return rc;
        put_bytes(c, s, buf, n);
        return 0;
    }
    case S_PATH: {
        size_t n = strlen(v);
        if (n >= TK_BALANCE_PATH_MAX)
            return fail(err, errcap, "%s: a file name longer than %d bytes", s->name,
                        TK_BALANCE_PATH_MAX - 1);
        memset(field, 0, TK_BALANCE_PATH_MAX);
        memcpy(field, v, n);
        return 0;
    }
    case S_FUNC: return s->fn(c, v, err, errcap);
    }
    return fail(err, errcap, "%s: cannot be set", s->name);
}

void tk_balance_config_init(tk_balance_config *c)
{
    memset(c, 0, sizeof(*c));
    c->threads = 0;
    c->drain_timeout_ms = 30000;
    c->algo = TK_ALGO_ROUNDROBIN;
    c->send_proxy = 0;
    c->connect_timeout_ms = 2000;
    c->connect_budget_ms = 6000;
    c->retries = 3;
    c->first_byte_timeout_ms = 0;
    c->replay_max = 16 << 10;
    c->queue_max = 1024;
    c->queue_timeout_ms = 5000;
    c->pipe_size = 64 << 10;
    tk_sockopts_init(&c->sock);
    c->sock.nodelay = 1;
    c->sock.keepalive = 1;
    c->sock.ka_idle_s = 60;
    c->sock.ka_intvl_s = 10;
    c->sock.ka_count = 6;
    c->check_interval_ms = 2000;
    c->check_timeout_ms = 1000;
    c->rise = 2;
    c->fall = 3;
    c->tls_handshake_timeout_ms = 10000;
    c->tls_min_version = 0x0303;
}

int tk_balance_config_set(tk_balance_config *c, const char *name, const char *value, char *err,
                          size_t errcap)
{
    const setting *s = name ? find_setting(name, strlen(name)) : NULL;
    if (!s)
        return fail(err, errcap, "unknown setting '%.*s'", SHOW, name ? name : "");
    if (!value)
        return fail(err, errcap, "%s: missing value", s->name);
    return apply(c, s, value, err, errcap);
}

/* tk_parse_uint over p[0..n), which need not be NUL-terminated. */
static int parse_uint_n(const char *p, size_t n, unsigned long max, unsigned long *out)
{
    char digits[16];
    if (n >= sizeof(digits))
        return -EINVAL;
    memcpy(digits, p, n);
    digits[n] = '\0';
    return tk_parse_uint(digits, 0, max, out);
}

/* One option of a backend spec, p[0..n): "weight=N", "maxconn=N", "backup"
 * or "proxy=V". seen collects the options given so far, each allowed once. */
static int backend_option(tk_balance_backend_config *b, const char *p, size_t n, unsigned *seen,
                          char *err, size_t errcap)
{
    static const char *const keys[] = {"weight", "maxconn", "backup", "proxy"};
    const char *eq = memchr(p, '=', n);
    size_t klen = eq ? (size_t)(eq - p) : n;
    unsigned k = 0;
    while (k < 4 && !is_word(p, klen, keys[k]))
        k++;
    if (n == 0 || k == 4 || (k == 2) != (eq == NULL))
        return fail(err, errcap,
                    "backend: bad option '%.*s' (want weight=N, maxconn=N, backup or proxy=V)",
                    (int)(n < SHOW ? n : SHOW), p);
    if (*seen & (1u << k))
        return fail(err, errcap, "backend: %s given twice", keys[k]);
    *seen |= 1u << k;
    if (k == 2) {
        b->backup = 1;
        return 0;
    }
    const char *v = eq + 1;
    size_t vlen = n - klen - 1;
    if (k == 3) {
        b->proxy = proxy_version(v, vlen);
        if (b->proxy < 0)
            return fail(err, errcap, "backend: proxy=%.*s is not v1, v2 or none",
                        (int)(vlen < SHOW ? vlen : SHOW), v);
        return 0;
    }
    unsigned long max = k == 0 ? TK_BALANCE_MAX_WEIGHT : 1000000, num;
    if (parse_uint_n(v, vlen, max, &num) < 0)
        return fail(err, errcap, "backend: %s=%.*s is not a whole number from 0 to %lu", keys[k],
                    (int)(vlen < SHOW ? vlen : SHOW), v, max);
    if (k == 0)
        b->weight = (unsigned)num;
    else
        b->maxconn = (unsigned)num;
    return 0;
}

int tk_balance_backend_parse(const char *spec, tk_balance_backend_config *out, char *err,
                             size_t errcap)
{
    tk_balance_backend_config b;
    memset(&b, 0, sizeof(b));
    b.weight = 1;
    b.proxy = -1;
    if (!spec)
        return fail(err, errcap, "backend: missing value");
    const char *comma = strchr(spec, ',');
    size_t alen = comma ? (size_t)(comma - spec) : strlen(spec);
    if (alen >= TK_BALANCE_ADDR_MAX)
        return fail(err, errcap, "backend: address longer than %d bytes", TK_BALANCE_ADDR_MAX - 1);
    memcpy(b.addr, spec, alen);
    int rc = check_addr("backend", b.addr, 1, err, errcap);
    if (rc < 0)
        return rc;
    unsigned seen = 0;
    while (comma) {
        const char *opt = comma + 1;
        comma = strchr(opt, ',');
        size_t n = comma ? (size_t)(comma - opt) : strlen(opt);
        rc = backend_option(&b, opt, n, &seen, err, errcap);
        if (rc < 0)
            return rc;
    }
    memcpy(out, &b, sizeof(b));
    return 0;
}

/* In a configuration file a backend's options may be separated by spaces as
 * well as commas ("a:80 weight=3 backup", "a:80, weight=3"). Rewrites v in
 * place to the command line's comma form: a run of blanks next to a comma or
 * at either end disappears, any other run becomes one comma. */
static void backend_commas(char *v)
{
    char *o = v;
    for (const char *p = v; *p;) {
        if (!is_space(*p)) {
            *o++ = *p++;
            continue;
        }
        while (is_space(*p))
            p++;
        if (o > v && o[-1] != ',' && *p != ',' && *p != '\0')
            *o++ = ',';
    }
    *o = '\0';
}

/* A line's bytes must be text: no NUL, no control character but the tab, and
 * at most LINE_MAX_BYTES of them. */
static int check_line(const char *p, size_t n, char *err, size_t errcap)
{
    if (n > LINE_MAX_BYTES)
        return fail(err, errcap, "line longer than %d bytes", LINE_MAX_BYTES);
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)p[i];
        if (b == 0)
            return fail(err, errcap, "a NUL byte in the text");
        if ((b < 0x20 && b != '\t') || b == 0x7f)
            return fail(err, errcap, "control character 0x%02x (write it as an escape in quotes)",
                        b);
    }
    return 0;
}

/* Applies one configuration line p[0..n) (line end removed): blank, a
 * comment, or "name value" with an optional comment after the value.
 *
 * Values and escapes. An unquoted value runs to '#' or the line's end, minus
 * trailing blanks, and is handed over as written, exactly like a command line
 * argument; it may not contain '"' unless a backslash comes before it (a
 * backslash keeps the next byte from ending or quoting the value, and leaves
 * the escape to the setting). A quoted value ("...", where '#' is
 * ordinary) has its escapes decoded here, once, by the same decoder that
 * check-send and check-expect use. So that nothing is decoded twice, a quoted
 * check-send/check-expect value is stored as decoded (it may hold NUL bytes),
 * while an unquoted one is decoded by the setting itself, as on the command
 * line: `check-send "a\r\n"` and `check-send a\r\n` send the same bytes, and
 * `"\\x41"` sends the four bytes \x41. Any other quoted value must not decode
 * to a NUL byte. */
static int parse_line(tk_balance_config *c, const char *p, size_t n, char *err, size_t errcap)
{
    size_t i = 0;
    while (i < n && is_space(p[i]))
        i++;
    if (i == n || p[i] == '#')
        return 0;
    size_t name_at = i;
    while (i < n && !is_space(p[i]) && p[i] != '#')
        i++;
    size_t name_len = i - name_at;
    const setting *s = find_setting(p + name_at, name_len);
    if (!s)
        return fail(err, errcap, "unknown setting '%.*s'", (int)(name_len < SHOW ? name_len : SHOW),
                    p + name_at);
    while (i < n && is_space(p[i]))
        i++;
    if (i == n || p[i] == '#')
        return fail(err, errcap, "%s: missing value", s->name);

    char v[LINE_MAX_BYTES + 1];
    size_t len;
    if (p[i] == '"') {
        size_t start = ++i;
        while (i < n && p[i] != '"')
            i += p[i] == '\\' && i + 1 < n ? 2 : 1;
        if (i >= n)
            return fail(err, errcap, "%s: no closing quote", s->name);
        size_t end = i++;
        while (i < n && is_space(p[i]))
            i++;
        if (i < n && p[i] != '#')
            return fail(err, errcap, "%s: text after the closing quote", s->name);
        int rc = unescape(s->name, p + start, end - start, (unsigned char *)v, LINE_MAX_BYTES, &len,
                          err, errcap);
        if (rc < 0)
            return rc;
        if (s->kind == S_BYTES) {
            if (len > TK_BALANCE_CHECK_MAX)
                return fail(err, errcap, "%s: longer than %d bytes", s->name, TK_BALANCE_CHECK_MAX);
            put_bytes(c, s, (const unsigned char *)v, len);
            return 0;
        }
        if (memchr(v, '\0', len))
            return fail(err, errcap, "%s: a NUL byte in the value", s->name);
    } else {
        size_t start = i;
        while (i < n && p[i] != '#') {
            if (p[i] == '"')
                return fail(err, errcap, "%s: a '\"' inside an unquoted value (quote it all)",
                            s->name);
            i += p[i] == '\\' && i + 1 < n ? 2 : 1;
        }
        while (i > start && is_space(p[i - 1]))
            i--;
        len = i - start;
        memcpy(v, p + start, len);
    }
    v[len] = '\0';
    if (strcmp(s->name, "backend") == 0)
        backend_commas(v);
    return apply(c, s, v, err, errcap);
}

int tk_balance_config_parse(tk_balance_config *c, const char *text, size_t len, char *err,
                            size_t errcap)
{
    if (!text && len)
        return fail(err, errcap, "no text");
    size_t pos = 0, lineno = 0;
    /* A UTF-8 byte order mark, as some editors write, is not part of line 1. */
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    while (pos < len) {
        const char *p = text + pos;
        const char *nl = memchr(p, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - p) : len - pos;
        pos += n + (nl != NULL);
        lineno++;
        if (n && p[n - 1] == '\r')
            n--;
        char msg[384];
        int rc = check_line(p, n, msg, sizeof(msg));
        if (rc == 0)
            rc = parse_line(c, p, n, msg, sizeof(msg));
        if (rc < 0)
            return fail(err, errcap, "line %zu: %s", lineno, msg);
    }
    return 0;
}

/* An address array holds a NUL-terminated string (a configuration filled in
 * by code rather than by these parsers is checked too). */
static int terminated(const char *s)
{
    return memchr(s, '\0', TK_BALANCE_ADDR_MAX) != NULL;
}

/* The TLS settings go together: a certificate with its key, a client CA
 * only with them, a known minimum version and a handshake timeout. */
static int check_tls(const tk_balance_config *c, char *err, size_t errcap)
{
    if (!memchr(c->tls_cert, '\0', TK_BALANCE_PATH_MAX) ||
        !memchr(c->tls_key, '\0', TK_BALANCE_PATH_MAX) ||
        !memchr(c->tls_client_ca, '\0', TK_BALANCE_PATH_MAX))
        return fail(err, errcap, "a TLS file name is not terminated");
    if (!c->tls_cert[0] != !c->tls_key[0])
        return fail(err, errcap, "tls-cert and tls-key go together");
    if (c->tls_client_ca[0] && !c->tls_cert[0])
        return fail(err, errcap, "tls-client-ca needs tls-cert and tls-key");
    if (c->tls_min_version != 0x0303 && c->tls_min_version != 0x0304)
        return fail(err, errcap, "tls-min-version must be TLS 1.2 or 1.3");
    if (c->tls_handshake_timeout_ms == 0)
        return fail(err, errcap, "tls-handshake-timeout must be more than 0");
    return 0;
}

int tk_balance_config_check(const tk_balance_config *c, char *err, size_t errcap)
{
    if (c->nlisten > TK_SERVER_MAX_LISTEN)
        return fail(err, errcap, "more than %d listen addresses", TK_SERVER_MAX_LISTEN);
    for (size_t i = 0; i < c->nlisten; i++) {
        if (!terminated(c->listen[i]))
            return fail(err, errcap, "listen address %zu is not terminated", i + 1);
    }
    if (!terminated(c->stats))
        return fail(err, errcap, "the stats address is not terminated");
    if (c->nbackends == 0)
        return fail(err, errcap, "no backend (at least one is needed)");
    if (c->nbackends > TK_BALANCE_MAX_BACKENDS)
        return fail(err, errcap, "more than %d backends", TK_BALANCE_MAX_BACKENDS);
    for (size_t i = 0; i < c->nbackends; i++) {
        const tk_balance_backend_config *b = &c->backend[i];
        if (!terminated(b->addr))
            return fail(err, errcap, "backend %zu: address not terminated", i + 1);
        if (b->weight > TK_BALANCE_MAX_WEIGHT || b->proxy < -1 || b->proxy > 2)
            return fail(err, errcap, "backend %s: weight or proxy out of range", b->addr);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->backend[j].addr, b->addr) == 0)
                return fail(err, errcap, "backend %s given twice", b->addr);
        }
    }
    if ((unsigned)c->algo > TK_ALGO_FIRST || c->send_proxy < 0 || c->send_proxy > 2)
        return fail(err, errcap, "algo or send-proxy out of range");
    if (c->rise < 1 || c->fall < 1)
        return fail(err, errcap, "rise and fall must be at least 1");
    if (c->check_interval_ms > 0 && c->check_timeout_ms > c->check_interval_ms)
        return fail(err, errcap, "check-timeout (%u ms) is longer than check-interval (%u ms)",
                    (unsigned)c->check_timeout_ms, (unsigned)c->check_interval_ms);
    if (c->connect_timeout_ms > c->connect_budget_ms)
        return fail(err, errcap, "connect-timeout (%u ms) is longer than connect-budget (%u ms)",
                    (unsigned)c->connect_timeout_ms, (unsigned)c->connect_budget_ms);
    if (c->check_send_len > TK_BALANCE_CHECK_MAX || c->check_expect_len > TK_BALANCE_CHECK_MAX)
        return fail(err, errcap, "check-send or check-expect longer than %d bytes",
                    TK_BALANCE_CHECK_MAX);
    return check_tls(c, err, errcap);
}

/* Fuzzes the load balancer's settings: tk_balance_config_parse on the input as
 * a configuration file, and tk_balance_backend_parse and the check-send
 * setting on it as one command line value. Properties:
 * - nothing crashes, and every message is a NUL-terminated "line N: ..." for
 *   a file;
 * - whether parsing succeeded or stopped at an error, every count is within
 *   its array, every string is NUL-terminated with the rest of its array
 *   zero, every value is within its setting's range, and every address
 *   splits as HOST:PORT;
 * - parsing the same text from a fresh init twice gives identical structs
 *   and messages (memcmp), and tk_balance_config_check agrees with itself;
 * - a text that parses also parses when split in two at a line end and
 *   applied in two calls, giving the same struct;
 * - every backend read, written back as a spec, parses to the same entry. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/balance.h"

/* The configurations are large: static, not on the stack. */
static tk_balance_config c1, c2, c3;

/* s[0..cap) holds a NUL and only zero bytes after it. */
static void check_string(const char *s, size_t cap)
{
    const char *nul = memchr(s, '\0', cap);
    if (!nul)
        abort();
    for (const char *p = nul; p < s + cap; p++) {
        if (*p)
            abort();
    }
}

static void check_addr(const char *s, int min_port)
{
    char host[TK_HOST_MAX];
    int port;
    check_string(s, TK_BALANCE_ADDR_MAX);
    if (tk_addr_split(s, host, &port) < 0 || port < min_port)
        abort();
}

static void check_bytes(const unsigned char *p, size_t len)
{
    if (len > TK_BALANCE_CHECK_MAX)
        abort();
    for (size_t i = len; i < TK_BALANCE_CHECK_MAX; i++) {
        if (p[i])
            abort();
    }
}

static void check_backend(const tk_balance_backend_config *b)
{
    check_addr(b->addr, 1);
    if (b->weight > TK_BALANCE_MAX_WEIGHT || b->maxconn > 1000000 ||
        (b->backup != 0 && b->backup != 1) || b->proxy < -1 || b->proxy > 2)
        abort();
}

/* Every invariant of a configuration the parsers built. */
static void check_config(const tk_balance_config *c)
{
    if (c->nlisten > TK_SERVER_MAX_LISTEN || c->nbackends > TK_BALANCE_MAX_BACKENDS)
        abort();
    for (size_t i = 0; i < c->nlisten; i++)
        check_addr(c->listen[i], 0);
    for (size_t i = c->nlisten; i < TK_SERVER_MAX_LISTEN; i++)
        check_string(c->listen[i], TK_BALANCE_ADDR_MAX);
    check_string(c->stats, TK_BALANCE_ADDR_MAX);
    if (c->stats[0])
        check_addr(c->stats, 0);
    for (size_t i = 0; i < c->nbackends; i++) {
        check_backend(&c->backend[i]);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->backend[i].addr, c->backend[j].addr) == 0)
                abort();
        }
    }
    check_bytes(c->check_send, c->check_send_len);
    check_bytes(c->check_expect, c->check_expect_len);
    if ((unsigned)c->algo > TK_ALGO_FIRST || c->send_proxy < 0 || c->send_proxy > 2 ||
        c->retries > 100 || c->rise < 1 || c->rise > 100 || c->fall < 1 || c->fall > 100 ||
        c->threads > 1024 || c->queue_max > 1000000 || c->max_clients > 10000000 ||
        c->pipe_size < 4096 || c->pipe_size > (1 << 20) || c->replay_max > (1 << 20) ||
        c->connect_timeout_ms == 0 || c->connect_budget_ms == 0 || c->queue_timeout_ms == 0 ||
        c->check_timeout_ms == 0 || c->sock.nodelay != 1 || c->sock.ka_idle_s < 0 ||
        c->sock.ka_idle_s > 86400 || c->sock.keepalive != (c->sock.ka_idle_s > 0))
        abort();
    /* The algorithm's name is one "algo" takes back. */
    static tk_balance_config t;
    tk_balance_config_init(&t);
    if (tk_balance_config_set(&t, "algo", tk_balance_algo_name(c->algo), NULL, 0) != 0 ||
        t.algo != c->algo)
        abort();
}

/* Writes b back as a command line spec and parses it again. */
static void round_trip_backend(const tk_balance_backend_config *b)
{
    static const char *const proxies[] = {"", ",proxy=none", ",proxy=v1", ",proxy=v2"};
    char spec[TK_BALANCE_ADDR_MAX + 80];
    snprintf(spec, sizeof(spec), "%s,weight=%u,maxconn=%u%s%s", b->addr, b->weight, b->maxconn,
             b->backup ? ",backup" : "", proxies[b->proxy + 1]);
    tk_balance_backend_config again;
    if (tk_balance_backend_parse(spec, &again, NULL, 0) != 0 ||
        memcmp(&again, b, sizeof(again)) != 0)
        abort();
}

/* On failure the message is NUL-terminated within its buffer, and a file's
 * names its line. */
static void check_message(int rc, const char *err, size_t cap, int file)
{
    if (rc != 0 && rc != -EINVAL)
        abort();
    if (rc && !memchr(err, '\0', cap))
        abort();
    if (rc && file && strncmp(err, "line ", 5) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char err1[256], err2[256];
    memset(err1, 'x', sizeof(err1));
    memset(err2, 'y', sizeof(err2));

    tk_balance_config_init(&c1);
    int rc1 = tk_balance_config_parse(&c1, text, size, err1, sizeof(err1));
    check_message(rc1, err1, sizeof(err1), 1);
    check_config(&c1);
    for (size_t i = 0; i < c1.nbackends; i++)
        round_trip_backend(&c1.backend[i]);

    tk_balance_config_init(&c2);
    int rc2 = tk_balance_config_parse(&c2, text, size, err2, sizeof(err2));
    if (rc1 != rc2 || memcmp(&c1, &c2, sizeof(c1)) != 0 || (rc1 && strcmp(err1, err2) != 0))
        abort();
    char cerr[256];
    int crc = tk_balance_config_check(&c1, cerr, sizeof(cerr));
    check_message(crc, cerr, sizeof(cerr), 0);
    if (crc != tk_balance_config_check(&c2, NULL, 0))
        abort();

    /* Split at the line end nearest a point the input picks; a byte order
     * mark is only skipped at the very start, so skip splits before one. */
    if (rc1 == 0 && size > 0) {
        size_t at = (data[0] * 131u + size) % size;
        const char *nl = memchr(text + at, '\n', size - at);
        size_t cut = nl ? (size_t)(nl - text) + 1 : size;
        if (!(size - cut >= 3 && memcmp(text + cut, "\xEF\xBB\xBF", 3) == 0)) {
            tk_balance_config_init(&c3);
            if (tk_balance_config_parse(&c3, text, cut, NULL, 0) != 0 ||
                tk_balance_config_parse(&c3, text + cut, size - cut, NULL, 0) != 0 ||
                memcmp(&c1, &c3, sizeof(c1)) != 0)
                abort();
        }
    }

    /* The input as one command line value (up to its first NUL). */
    char value[1024];
    size_t n = size < sizeof(value) - 1 ? size : sizeof(value) - 1;
    memcpy(value, data, n);
    value[n] = '\0';
    tk_balance_backend_config b;
    memset(&b, 0, sizeof(b));
    int rc = tk_balance_backend_parse(value, &b, err1, sizeof(err1));
    check_message(rc, err1, sizeof(err1), 0);
    if (rc == 0) {
        check_backend(&b);
        check_string(b.addr, sizeof(b.addr));
        round_trip_backend(&b);
    }
    tk_balance_config_init(&c3);
    rc = tk_balance_config_set(&c3, "check-send", value, err1, sizeof(err1));
    check_message(rc, err1, sizeof(err1), 0);
    check_config(&c3);
    if (rc == 0 && c3.check_send_len > strlen(value))
        abort(); /* decoding never grows a value */
    return 0;
}

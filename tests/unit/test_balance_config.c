/* tk_balance_config_*: the load balancer's settings from the command line and
 * from configuration files, and the rules between them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tcpkit/balance.h"

static char err[512];

/* Sets name to value and expects success. */
static void set_ok(tk_balance_config *c, const char *name, const char *value)
{
    err[0] = '\0';
    int rc = tk_balance_config_set(c, name, value, err, sizeof(err));
    if (rc != 0)
        print_error("set %s '%s': %s\n", name, value, err);
    assert_int_equal(rc, 0);
}

/* Sets name to value and expects -EINVAL with a message containing want,
 * leaving the configuration exactly as it was. */
static void set_bad(tk_balance_config *c, const char *name, const char *value, const char *want)
{
    static tk_balance_config before;
    memcpy(&before, c, sizeof(before));
    err[0] = '\0';
    int rc = tk_balance_config_set(c, name, value, err, sizeof(err));
    if (rc != -EINVAL || !strstr(err, want))
        print_error("set %s '%s' = %d '%s', want -EINVAL with '%s'\n", name, value, rc, err, want);
    assert_int_equal(rc, -EINVAL);
    assert_non_null(strstr(err, want));
    assert_memory_equal(&before, c, sizeof(before));
}

/* Parses a configuration text (its strlen) and expects success. */
static void parse_ok(tk_balance_config *c, const char *text)
{
    err[0] = '\0';
    int rc = tk_balance_config_parse(c, text, strlen(text), err, sizeof(err));
    if (rc != 0)
        print_error("parse: %s\n", err);
    assert_int_equal(rc, 0);
}

/* Parses text[0..len) into a fresh configuration and expects -EINVAL with a
 * message containing want. */
static void parse_bad_n(const char *text, size_t len, const char *want)
{
    static tk_balance_config c;
    tk_balance_config_init(&c);
    err[0] = '\0';
    int rc = tk_balance_config_parse(&c, text, len, err, sizeof(err));
    if (rc != -EINVAL || !strstr(err, want))
        print_error("parse = %d '%s', want -EINVAL with '%s'\n", rc, err, want);
    assert_int_equal(rc, -EINVAL);
    assert_non_null(strstr(err, want));
}

static void parse_bad(const char *text, const char *want)
{
    parse_bad_n(text, strlen(text), want);
}

/* The configurations are large: keep them off the stack. */
static tk_balance_config c1, c2;

/* init gives every default the header documents, and no listener or backend. */
static void init_sets_documented_defaults(void **state)
{
    (void)state;
    memset(&c1, 0x5a, sizeof(c1));
    tk_balance_config_init(&c1);
    assert_int_equal(c1.nlisten, 0);
    assert_int_equal(c1.nbackends, 0);
    assert_string_equal(c1.stats, "");
    assert_int_equal(c1.threads, 0);
    assert_int_equal(c1.drain_timeout_ms, 30000);
    assert_int_equal(c1.max_clients, 0);
    assert_int_equal(c1.algo, TK_ALGO_ROUNDROBIN);
    assert_int_equal(c1.send_proxy, 0);
    assert_int_equal(c1.connect_timeout_ms, 2000);
    assert_int_equal(c1.connect_budget_ms, 6000);
    assert_int_equal(c1.retries, 3);
    assert_int_equal(c1.first_byte_timeout_ms, 0);
    assert_int_equal(c1.replay_max, 16384);
    assert_int_equal(c1.queue_max, 1024);
    assert_int_equal(c1.queue_timeout_ms, 5000);
    assert_int_equal(c1.client_timeout_ms, 0);
    assert_int_equal(c1.backend_timeout_ms, 0);
    assert_int_equal(c1.pipe_size, 65536);
    assert_int_equal(c1.sock.nodelay, 1);
    assert_int_equal(c1.sock.keepalive, 1);
    assert_int_equal(c1.sock.ka_idle_s, 60);
    assert_int_equal(c1.sock.ka_intvl_s, 10);
    assert_int_equal(c1.sock.ka_count, 6);
    assert_int_equal(c1.sock.linger_s, -1);
    assert_int_equal(c1.sock.sndbuf, 0);
    assert_int_equal(c1.check_interval_ms, 2000);
    assert_int_equal(c1.check_timeout_ms, 1000);
    assert_int_equal(c1.rise, 2);
    assert_int_equal(c1.fall, 3);
    assert_int_equal(c1.check_send_len, 0);
    assert_int_equal(c1.check_expect_len, 0);
    /* Two inits compare equal byte for byte, whatever was there before. */
    memset(&c2, 0xa5, sizeof(c2));
    tk_balance_config_init(&c2);
    assert_memory_equal(&c1, &c2, sizeof(c1));
}

/* Each algorithm's name is the one the "algo" setting takes. */
static void algo_names_round_trip(void **state)
{
    (void)state;
    tk_balance_algo all[] = {TK_ALGO_ROUNDROBIN, TK_ALGO_LEASTCONN, TK_ALGO_RANDOM, TK_ALGO_SOURCE,
                             TK_ALGO_FIRST};
    const char *names[] = {"roundrobin", "leastconn", "random", "source", "first"};
    tk_balance_config_init(&c1);
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(tk_balance_algo_name(all[i]), names[i]);
        set_ok(&c1, "algo", names[i]);
        assert_int_equal(c1.algo, all[i]);
    }
    assert_string_equal(tk_balance_algo_name((tk_balance_algo)99), "unknown");
    set_bad(&c1, "algo", "RoundRobin", "algo: 'RoundRobin' is not roundrobin");
    set_bad(&c1, "algo", "", "algo:");
    set_bad(&c1, "algo", "round robin", "algo:");
}

/* Command-line-only options and anything else unknown are refused by name. */
static void unknown_settings_refused(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    const char *bad[] = {"config",    "log-level", "log-format", "help", "",        "Retries",
                         "--retries", "retry",     "retries ",   "l",    "listen=", "check_send"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        set_bad(&c1, bad[i], "1", "unknown setting");
    set_bad(&c1, "config", "x.conf", "unknown setting 'config'");
    set_bad(&c1, NULL, "1", "unknown setting");
    set_bad(&c1, "retries", NULL, "retries: missing value");
}

/* Whole-number settings take a decimal in their range, and nothing else. */
static void integer_settings_check_their_range(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    set_ok(&c1, "retries", "0");
    assert_int_equal(c1.retries, 0);
    set_ok(&c1, "retries", "100");
    assert_int_equal(c1.retries, 100);
    set_bad(&c1, "retries", "101", "retries: '101' is not a whole number from 0 to 100");
    set_ok(&c1, "rise", "1");
    set_ok(&c1, "fall", "100");
    assert_int_equal(c1.rise, 1);
    assert_int_equal(c1.fall, 100);
    set_bad(&c1, "rise", "0", "rise:");
    set_bad(&c1, "fall", "101", "fall:");
    set_ok(&c1, "threads", "1");
    set_ok(&c1, "threads", "1024");
    assert_int_equal(c1.threads, 1024);
    set_bad(&c1, "threads", "0", "threads:");
    set_bad(&c1, "threads", "1025", "threads:");
    set_ok(&c1, "queue", "0");
    set_ok(&c1, "queue", "1000000");
    assert_int_equal(c1.queue_max, 1000000);
    set_bad(&c1, "queue", "1000001", "queue:");
    set_ok(&c1, "max-clients", "10000000");
    assert_int_equal(c1.max_clients, 10000000);
    set_bad(&c1, "max-clients", "10000001", "max-clients:");
    const char *junk[] = {
        "", "-1", "+3", " 3", "3 ", "3x", "0x10", "1e2", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        set_bad(&c1, "retries", junk[i], "retries:");
}

/* Byte sizes take K and M suffixes and are range-checked, not rounded. */
static void size_settings_check_their_range(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    set_ok(&c1, "pipe-size", "4K");
    assert_int_equal(c1.pipe_size, 4096);
    set_ok(&c1, "pipe-size", "1M");
    assert_int_equal(c1.pipe_size, 1 << 20);
    set_ok(&c1, "pipe-size", "5000");
    assert_int_equal(c1.pipe_size, 5000);
    set_bad(&c1, "pipe-size", "4095", "pipe-size: '4095' is not a size from 4K to 1M");
    set_bad(&c1, "pipe-size", "1025K", "pipe-size:");
    set_bad(&c1, "pipe-size", "1G", "pipe-size:");
    set_ok(&c1, "replay-buffer", "0");
    assert_int_equal(c1.replay_max, 0);
    set_ok(&c1, "replay-buffer", "32KiB");
    assert_int_equal(c1.replay_max, 32768);
    set_ok(&c1, "replay-buffer", "1M");
    set_bad(&c1, "replay-buffer", "1048577", "replay-buffer: '1048577' is not a size from 0 to 1M");
    set_bad(&c1, "replay-buffer", "16X", "replay-buffer:");
}

/* Durations take ms, s and m; the timeouts that cannot be "off" refuse 0. */
static void duration_settings(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    set_ok(&c1, "connect-timeout", "500ms");
    assert_int_equal(c1.connect_timeout_ms, 500);
    set_ok(&c1, "connect-budget", "1m");
    assert_int_equal(c1.connect_budget_ms, 60000);
    set_ok(&c1, "queue-timeout", "2.5");
    assert_int_equal(c1.queue_timeout_ms, 2500);
    set_ok(&c1, "first-byte-timeout", "3s");
    assert_int_equal(c1.first_byte_timeout_ms, 3000);
    set_ok(&c1, "client-timeout", "0");
    set_ok(&c1, "backend-timeout", "90s");
    assert_int_equal(c1.backend_timeout_ms, 90000);
    set_ok(&c1, "check-interval", "0");
    assert_int_equal(c1.check_interval_ms, 0);
    set_ok(&c1, "check-timeout", "250ms");
    assert_int_equal(c1.check_timeout_ms, 250);
    set_ok(&c1, "drain-timeout", "0");
    assert_int_equal(c1.drain_timeout_ms, 0);
    const char *positive[] = {"connect-timeout", "connect-budget", "queue-timeout",
                              "check-timeout"};
    for (size_t i = 0; i < 4; i++)
        set_bad(&c1, positive[i], "0", "must be more than 0");
    set_bad(&c1, "client-timeout", "5 s", "client-timeout: '5 s' is not a duration");
    set_bad(&c1, "client-timeout", "-1", "client-timeout:");
    set_bad(&c1, "client-timeout", "5h", "client-timeout:");
    set_bad(&c1, "client-timeout", "", "client-timeout:");
}

/* keepalive takes IDLE[,INTVL[,COUNT]]; 0 turns it off; nodelay stays on. */
static void keepalive_setting(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    set_ok(&c1, "keepalive", "30,5,3");
    assert_int_equal(c1.sock.keepalive, 1);
    assert_int_equal(c1.sock.ka_idle_s, 30);
    assert_int_equal(c1.sock.ka_intvl_s, 5);
    assert_int_equal(c1.sock.ka_count, 3);
    set_ok(&c1, "keepalive", "120");
    assert_int_equal(c1.sock.ka_idle_s, 120);
    assert_int_equal(c1.sock.ka_intvl_s, 5);
    set_ok(&c1, "keepalive", "0");
    assert_int_equal(c1.sock.keepalive, 0);
    assert_int_equal(c1.sock.nodelay, 1);
    const char *bad[] = {"", "x", "1,2,3,4", "60,,6", ",60", "60,", "-1", "86401"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        set_bad(&c1, "keepalive", bad[i], "keepalive:");
}

/* send-proxy is v1, v2 or none. */
static void send_proxy_setting(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    set_ok(&c1, "send-proxy", "v2");
    assert_int_equal(c1.send_proxy, 2);
    set_ok(&c1, "send-proxy", "v1");
    assert_int_equal(c1.send_proxy, 1);
    set_ok(&c1, "send-proxy", "none");
    assert_int_equal(c1.send_proxy, 0);
    set_bad(&c1, "send-proxy", "v3", "send-proxy: 'v3' is not v1, v2 or none");
    set_bad(&c1, "send-proxy", "V1", "send-proxy:");
}

/* listen adds an address per call, up to the server's limit, port 0 allowed. */
static void listen_adds_addresses(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    set_ok(&c1, "listen", "127.0.0.1:0");
    set_ok(&c1, "listen", "[::1]:8090");
    set_ok(&c1, "listen", ":8091");
    set_ok(&c1, "listen", "localhost:8092");
    assert_int_equal(c1.nlisten, 4);
    assert_string_equal(c1.listen[0], "127.0.0.1:0");
    assert_string_equal(c1.listen[1], "[::1]:8090");
    set_bad(&c1, "listen", ":8091", "listen: ':8091' given twice");
    set_bad(&c1, "listen", "127.0.0.1", "listen: '127.0.0.1' is not HOST:PORT");
    set_bad(&c1, "listen", "::1:80", "listen:");
    set_bad(&c1, "listen", "h:65536", "listen:");
    set_bad(&c1, "listen", "", "listen: missing address");
    set_bad(&c1, "listen", "a b:80", "an address cannot hold the byte 0x20");
    set_bad(&c1, "listen", "a\"b:80", "listen:");
    char name[TK_BALANCE_ADDR_MAX + 8];
    for (size_t i = 4; i < TK_SERVER_MAX_LISTEN; i++) {
        snprintf(name, sizeof(name), "127.0.0.1:%zu", 9000 + i);
        set_ok(&c1, "listen", name);
    }
    assert_int_equal(c1.nlisten, TK_SERVER_MAX_LISTEN);
    set_bad(&c1, "listen", "127.0.0.1:1", "listen: more than 16 addresses");
}

/* An address that would not fit its array is refused, not truncated. */
static void long_addresses_refused(void **state)
{
    (void)state;
    char addr[TK_BALANCE_ADDR_MAX + 16];
    tk_balance_config_init(&c1);
    /* The longest host tk_addr_split takes fits with its port. */
    memset(addr, 'h', TK_HOST_MAX - 1);
    strcpy(addr + TK_HOST_MAX - 1, ":65535");
    set_ok(&c1, "listen", addr);
    set_ok(&c1, "backend", addr);
    assert_string_equal(c1.backend[0].addr, addr);
    memset(addr, 'h', TK_HOST_MAX);
    strcpy(addr + TK_HOST_MAX, ":1");
    set_bad(&c1, "listen", addr, "listen:");
    memset(addr, 'h', TK_BALANCE_ADDR_MAX);
    strcpy(addr + TK_BALANCE_ADDR_MAX, ":1");
    set_bad(&c1, "listen", addr, "listen: address longer than 263 bytes");
    set_bad(&c1, "backend", addr, "backend: address longer than 263 bytes");
    set_bad(&c1, "stats", addr, "stats: address longer than 263 bytes");
}

/* stats replaces the address; an empty value turns it off. */
static void stats_setting(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    set_ok(&c1, "stats", "127.0.0.1:0");
    assert_string_equal(c1.stats, "127.0.0.1:0");
    set_ok(&c1, "stats", "[::1]:9000");
    assert_string_equal(c1.stats, "[::1]:9000");
    set_bad(&c1, "stats", "nope", "stats:");
    set_ok(&c1, "stats", "");
    assert_string_equal(c1.stats, "");
}

/* Parses spec and expects success. */
static void backend_ok(const char *spec, tk_balance_backend_config *b)
{
    err[0] = '\0';
    int rc = tk_balance_backend_parse(spec, b, err, sizeof(err));
    if (rc != 0)
        print_error("backend '%s': %s\n", spec, err);
    assert_int_equal(rc, 0);
}

/* Every option of a backend spec, in any order. */
static void backend_spec_options(void **state)
{
    (void)state;
    tk_balance_backend_config b;
    backend_ok("10.0.0.1:80", &b);
    assert_string_equal(b.addr, "10.0.0.1:80");
    assert_int_equal(b.weight, 1);
    assert_int_equal(b.maxconn, 0);
    assert_int_equal(b.backup, 0);
    assert_int_equal(b.proxy, -1);
    backend_ok("db.example:5432,weight=3,maxconn=100,backup,proxy=v2", &b);
    assert_string_equal(b.addr, "db.example:5432");
    assert_int_equal(b.weight, 3);
    assert_int_equal(b.maxconn, 100);
    assert_int_equal(b.backup, 1);
    assert_int_equal(b.proxy, 2);
    backend_ok("[::1]:9000,proxy=none,backup,weight=0,maxconn=1000000", &b);
    assert_string_equal(b.addr, "[::1]:9000");
    assert_int_equal(b.weight, 0);
    assert_int_equal(b.maxconn, 1000000);
    assert_int_equal(b.proxy, 0);
    backend_ok(":80,weight=1000,proxy=v1", &b);
    assert_int_equal(b.weight, 1000);
    assert_int_equal(b.proxy, 1);
}

/* A bad spec is refused with the reason, and leaves *out untouched. */
static void backend_spec_errors(void **state)
{
    (void)state;
    struct {
        const char *spec, *want;
    } cases[] = {
        {"10.0.0.1:0", "the port must be 1 to 65535"},
        {"10.0.0.1", "is not HOST:PORT"},
        {"10.0.0.1:80:81", "is not HOST:PORT"},
        {"::1:80", "is not HOST:PORT"},
        {"", "missing address"},
        {",weight=1", "missing address"},
        {"a:80,weight=1001", "weight=1001 is not a whole number from 0 to 1000"},
        {"a:80,weight=-1", "weight=-1"},
        {"a:80,weight=", "weight="},
        {"a:80,weight=99999999999999999999", "weight="},
        {"a:80,maxconn=1000001", "maxconn=1000001"},
        {"a:80,proxy=v3", "proxy=v3 is not v1, v2 or none"},
        {"a:80,proxy", "bad option 'proxy'"},
        {"a:80,backup=1", "bad option 'backup=1'"},
        {"a:80,weigth=2", "bad option 'weigth=2'"},
        {"a:80,", "bad option ''"},
        {"a:80,,backup", "bad option ''"},
        {"a:80,weight=1,weight=2", "weight given twice"},
        {"a:80,backup,backup", "backup given twice"},
        {"a:80, weight=2", "bad option ' weight=2'"},
        {"a:80 ,weight=2", "an address cannot hold"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tk_balance_backend_config b;
        memset(&b, 0x77, sizeof(b));
        err[0] = '\0';
        int rc = tk_balance_backend_parse(cases[i].spec, &b, err, sizeof(err));
        if (rc != -EINVAL || !strstr(err, cases[i].want))
            print_error("backend '%s' = %d '%s', want '%s'\n", cases[i].spec, rc, err,
                        cases[i].want);
        assert_int_equal(rc, -EINVAL);
        assert_non_null(strstr(err, cases[i].want));
        assert_true(strncmp(err, "backend: ", 9) == 0);
        assert_int_equal(b.weight, 0x77777777);
    }
}

/* backend adds an entry per call: the same address twice is refused, and so
 * is one past TK_BALANCE_MAX_BACKENDS. */
static void backend_setting_adds_up_to_the_limit(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    char spec[64];
    for (int i = 0; i < TK_BALANCE_MAX_BACKENDS; i++) {
        snprintf(spec, sizeof(spec), "10.0.%d.%d:80,weight=%d", i / 256, i % 256, i % 7);
        set_ok(&c1, "backend", spec);
    }
    assert_int_equal(c1.nbackends, TK_BALANCE_MAX_BACKENDS);
    assert_string_equal(c1.backend[255].addr, "10.0.0.255:80");
    assert_int_equal(c1.backend[255].weight, 255 % 7);
    set_bad(&c1, "backend", "10.0.1.0:80", "backend: more than 256 backends");
    tk_balance_config_init(&c1);
    set_ok(&c1, "backend", "a:80");
    set_bad(&c1, "backend", "a:80,weight=2", "backend: 'a:80' given twice");
    set_ok(&c1, "backend", "A:80");
    assert_int_equal(c1.nbackends, 2);
}

/* check-send and check-expect decode C escapes, up to TK_BALANCE_CHECK_MAX
 * bytes after decoding. */
static void check_strings_decode_escapes(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    set_ok(&c1, "check-send", "GET / HTTP/1.0\\r\\n\\r\\n");
    assert_int_equal(c1.check_send_len, 18);
    assert_memory_equal(c1.check_send, "GET / HTTP/1.0\r\n\r\n", 18);
    set_ok(&c1, "check-expect", "a\\x00b\\0\\t\\\\\\\"\\xfF");
    assert_int_equal(c1.check_expect_len, 8);
    assert_memory_equal(c1.check_expect, "a\0b\0\t\\\"\xff", 8);
    /* A shorter value clears what a longer one left. */
    set_ok(&c1, "check-send", "PING");
    assert_int_equal(c1.check_send_len, 4);
    assert_int_equal(c1.check_send[4], 0);
    set_ok(&c1, "check-expect", "");
    assert_int_equal(c1.check_expect_len, 0);

    char big[4 * TK_BALANCE_CHECK_MAX + 8];
    memset(big, 'x', TK_BALANCE_CHECK_MAX);
    big[TK_BALANCE_CHECK_MAX] = '\0';
    set_ok(&c1, "check-send", big);
    assert_int_equal(c1.check_send_len, TK_BALANCE_CHECK_MAX);
    strcpy(big + TK_BALANCE_CHECK_MAX, "y");
    set_bad(&c1, "check-send", big, "check-send: longer than 256 bytes");
    /* The limit counts decoded bytes: 256 escapes of four characters fit. */
    for (int i = 0; i < TK_BALANCE_CHECK_MAX; i++)
        memcpy(big + 4 * i, "\\x41", 4);
    big[4 * TK_BALANCE_CHECK_MAX] = '\0';
    set_ok(&c1, "check-expect", big);
    assert_int_equal(c1.check_expect_len, TK_BALANCE_CHECK_MAX);
    assert_int_equal(c1.check_expect[255], 'A');

    set_bad(&c1, "check-send", "a\\q", "check-send: unknown escape '\\q'");
    set_bad(&c1, "check-send", "a\\", "check-send: the value ends with a lone '\\'");
    set_bad(&c1, "check-send", "\\x4", "check-send: \\x needs two hex digits");
    set_bad(&c1, "check-send", "\\x4g", "\\x needs two hex digits");
    set_bad(&c1, "check-expect", "\\\x01", "unknown escape: byte 0x01");
}

/* A configuration file sets the same things as the command line. */
static void file_and_command_line_agree(void **state)
{
    (void)state;
    const char *pairs[][2] = {
        {"listen", "127.0.0.1:8090"},
        {"backend", "10.0.0.1:80,weight=3,backup"},
        {"backend", "10.0.0.2:80"},
        {"algo", "leastconn"},
        {"stats", "127.0.0.1:8091"},
        {"send-proxy", "v1"},
        {"connect-timeout", "1s"},
        {"connect-budget", "3s"},
        {"retries", "2"},
        {"first-byte-timeout", "4s"},
        {"replay-buffer", "8K"},
        {"queue", "10"},
        {"queue-timeout", "1s"},
        {"client-timeout", "1m"},
        {"backend-timeout", "2m"},
        {"pipe-size", "128K"},
        {"keepalive", "30,5,4"},
        {"check-interval", "5s"},
        {"check-timeout", "2s"},
        {"check-send", "PING\\r\\n"},
        {"check-expect", "+PONG\\x0d"},
        {"rise", "4"},
        {"fall", "5"},
        {"max-clients", "1000"},
        {"threads", "4"},
        {"drain-timeout", "10s"},
    };
    char text[4096];
    size_t off = 0;
    tk_balance_config_init(&c1);
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        set_ok(&c1, pairs[i][0], pairs[i][1]);
        off +=
            (size_t)snprintf(text + off, sizeof(text) - off, "%s %s\n", pairs[i][0], pairs[i][1]);
    }
    tk_balance_config_init(&c2);
    parse_ok(&c2, text);
    assert_memory_equal(&c1, &c2, sizeof(c1));
    assert_int_equal(c2.nbackends, 2);
    assert_int_equal(c2.check_send_len, 6);
    assert_int_equal(tk_balance_config_check(&c2, err, sizeof(err)), 0);
}

/* Comments, blank lines, blanks around names and values, CR LF line ends, a
 * last line without its line end and a UTF-8 byte order mark. */
static void file_layout(void **state)
{
    (void)state;
    const char *text = "\xEF\xBB\xBF# tcpkit balance\r\n"
                       "\r\n"
                       "   \t  \n"
                       "  # indented comment\n"
                       "\tretries\t 7   # attempts\r\n"
                       "algo random#no blank needed\n"
                       "backend a:80\n"
                       "check-expect OK # the rest is a comment\n"
                       "rise 5";
    tk_balance_config_init(&c1);
    parse_ok(&c1, text);
    assert_int_equal(c1.retries, 7);
    assert_int_equal(c1.algo, TK_ALGO_RANDOM);
    assert_int_equal(c1.nbackends, 1);
    assert_int_equal(c1.check_expect_len, 2);
    assert_memory_equal(c1.check_expect, "OK", 2);
    assert_int_equal(c1.rise, 5);
    /* An empty text and one of comments only change nothing. */
    tk_balance_config_init(&c1);
    tk_balance_config_init(&c2);
    parse_ok(&c2, "");
    parse_ok(&c2, "# nothing\n\n");
    assert_int_equal(tk_balance_config_parse(&c2, NULL, 0, err, sizeof(err)), 0);
    assert_memory_equal(&c1, &c2, sizeof(c1));
}

/* Only len bytes are read: the text need not be NUL-terminated. */
static void file_respects_length(void **state)
{
    (void)state;
    const char text[] = {'r', 'e', 't', 'r', 'i', 'e', 's', ' ', '9', '9'};
    tk_balance_config_init(&c1);
    assert_int_equal(tk_balance_config_parse(&c1, text, 9, err, sizeof(err)), 0);
    assert_int_equal(c1.retries, 9);
    assert_int_equal(tk_balance_config_parse(&c1, text, sizeof(text), err, sizeof(err)), 0);
    assert_int_equal(c1.retries, 99);
}

/* In the file, a backend's options may be separated by blanks. */
static void file_backend_options_with_blanks(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    parse_ok(&c1, "backend 10.0.0.1:80 weight=3 backup\n"
                  "backend 10.0.0.2:80 ,  maxconn=5,\tproxy=v2\n"
                  "backend 10.0.0.3:80,weight=2 , backup   # spare\n"
                  "backend \" 10.0.0.4:80  weight=4 \"\n");
    assert_int_equal(c1.nbackends, 4);
    assert_string_equal(c1.backend[0].addr, "10.0.0.1:80");
    assert_int_equal(c1.backend[0].weight, 3);
    assert_int_equal(c1.backend[0].backup, 1);
    assert_int_equal(c1.backend[1].maxconn, 5);
    assert_int_equal(c1.backend[1].proxy, 2);
    assert_int_equal(c1.backend[2].weight, 2);
    assert_int_equal(c1.backend[2].backup, 1);
    assert_string_equal(c1.backend[3].addr, "10.0.0.4:80");
    assert_int_equal(c1.backend[3].weight, 4);
    parse_bad("backend a:80 weight=3,,backup\n", "line 1: backend: bad option ''");
}

/* A quoted value's escapes are decoded once: check-send gets the decoded bytes
 * (NULs included), exactly as the same escapes unquoted or on the command
 * line give. */
static void file_quoted_values_decode_once(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    parse_ok(&c1, "check-send \"GET / HTTP/1.0\\r\\n\\r\\n\"\n"
                  "check-expect \"\\\\x41 \\\"q\\\" # \\x00\\0\"  # comment\n");
    assert_int_equal(c1.check_send_len, 18);
    assert_memory_equal(c1.check_send, "GET / HTTP/1.0\r\n\r\n", 18);
    /* "\\x41" is the four bytes \x41, not A; '#' inside quotes is text. */
    assert_int_equal(c1.check_expect_len, 13);
    assert_memory_equal(c1.check_expect, "\\x41 \"q\" # \0\0", 13);

    tk_balance_config_init(&c2);
    set_ok(&c2, "check-send", "GET / HTTP/1.0\\r\\n\\r\\n");
    set_ok(&c2, "check-expect", "\\\\x41 \\\"q\\\" \\x23 \\x00\\0");
    assert_memory_equal(&c1, &c2, sizeof(c1));

    /* Unquoted, the escapes reach the setting as written and it decodes them. */
    tk_balance_config_init(&c2);
    parse_ok(&c2, "check-send GET / HTTP/1.0\\r\\n\\r\\n\n"
                  "check-expect \\\\x41 \\\"q\\\" \\x23 \\x00\\0\n");
    assert_memory_equal(&c1, &c2, sizeof(c1));

    /* Quotes around any other value; "" is an empty value. */
    tk_balance_config_init(&c1);
    parse_ok(&c1, "algo \"first\"\nstats \"\"\nlisten \"\\x31.2.3.4:80\"\ncheck-send \"\"\n");
    assert_int_equal(c1.algo, TK_ALGO_FIRST);
    assert_string_equal(c1.listen[0], "1.2.3.4:80");
    assert_int_equal(c1.check_send_len, 0);

    char text[2 * TK_BALANCE_CHECK_MAX + 32];
    memcpy(text, "check-send \"", 12);
    memset(text + 12, 'x', TK_BALANCE_CHECK_MAX + 1);
    strcpy(text + 12 + TK_BALANCE_CHECK_MAX + 1, "\"\n");
    parse_bad(text, "line 1: check-send: longer than 256 bytes");
}

/* Each kind of bad file is refused with its line number and the setting. */
static void file_errors_name_line_and_setting(void **state)
{
    (void)state;
    parse_bad("retries 2\n\n# c\nretries 200\n", "line 4: retries: '200' is not a whole number");
    parse_bad("rise 2\r\nconfig other.conf\r\n", "line 2: unknown setting 'config'");
    parse_bad("log-level debug\n", "line 1: unknown setting 'log-level'");
    parse_bad("retries\n", "line 1: retries: missing value");
    parse_bad("retries   # none\n", "line 1: retries: missing value");
    parse_bad("retries=3\n", "line 1: unknown setting 'retries=3'");
    parse_bad("algo \"first\n", "line 1: algo: no closing quote");
    parse_bad("algo \"first\\\"\n", "line 1: algo: no closing quote");
    parse_bad("algo \"first\" x\n", "line 1: algo: text after the closing quote");
    parse_bad("algo fi\"rst\"\n", "line 1: algo: a '\"' inside an unquoted value");
    parse_bad("stats \"1.2.3.4:8\\x00\"\n", "line 1: stats: a NUL byte in the value");
    parse_bad("check-send \"\\q\"\n", "line 1: check-send: unknown escape '\\q'");
    parse_bad("algo first\rrise 2\n", "line 1: control character 0x0d");
    parse_bad("\n\nalgo \x1b[31m\n", "line 3: control character 0x1b");
    parse_bad("backend a:80\nbackend a:80\n", "line 2: backend: 'a:80' given twice");
    parse_bad("threads 0\n", "line 1: threads:");
    parse_bad_n("rise 2\nalgo fi\0rst\n", 19, "line 2: a NUL byte");
    parse_bad("\xEF\xBB\xBF\xEF\xBB\xBFrise 2\n", "line 1: unknown setting");
}

/* A line may hold 4096 bytes; one more is an error, CR LF not counted. */
static void file_line_length_limit(void **state)
{
    (void)state;
    static char text[2 * 4096 + 64];
    /* "check-send " + quoted value padded with trailing blanks to 4096 bytes. */
    size_t n = (size_t)sprintf(text, "check-send \"abc\"");
    memset(text + n, ' ', 4096 - n);
    strcpy(text + 4096, "\r\nrise 7");
    tk_balance_config_init(&c1);
    parse_ok(&c1, text);
    assert_int_equal(c1.check_send_len, 3);
    assert_int_equal(c1.rise, 7);
    text[4096] = ' ';
    parse_bad(text, "line 1: line longer than 4096 bytes");
    memset(text, '#', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    parse_bad(text, "line 1: line longer than 4096 bytes");
}

/* The rules between settings. */
static void check_rules(void **state)
{
    (void)state;
    tk_balance_config_init(&c1);
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "no backend"));
    set_ok(&c1, "backend", "a:80");
    /* No listener is fine: the command adds its default. */
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), 0);

    set_ok(&c1, "check-timeout", "3s");
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "check-timeout (3000 ms) is longer than check-interval (2000 ms)"));
    set_ok(&c1, "check-interval", "0");
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), 0);
    set_ok(&c1, "check-interval", "3s");
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), 0);

    set_ok(&c1, "connect-timeout", "7s");
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "connect-timeout (7000 ms) is longer than connect-budget"));
    set_ok(&c1, "connect-budget", "7s");
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), 0);

    /* Rules the setters cannot break, for configurations filled in by code. */
    c1.rise = 0;
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "rise and fall"));
    c1.rise = 1;
    c1.fall = 0;
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), -EINVAL);
    c1.fall = 1;
    memcpy(&c1.backend[1], &c1.backend[0], sizeof(c1.backend[0]));
    c1.nbackends = 2;
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "backend a:80 given twice"));
    c1.nbackends = TK_BALANCE_MAX_BACKENDS + 1;
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), -EINVAL);
    c1.nbackends = 1;
    memset(c1.backend[0].addr, 'x', sizeof(c1.backend[0].addr));
    assert_int_equal(tk_balance_config_check(&c1, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not terminated"));
}

/* Messages are cut to errcap, and a NULL or empty err buffer is allowed. */
static void small_error_buffers(void **state)
{
    (void)state;
    char small[8];
    tk_balance_config_init(&c1);
    assert_int_equal(tk_balance_config_set(&c1, "retries", "x", small, sizeof(small)), -EINVAL);
    assert_string_equal(small, "retries");
    assert_int_equal(tk_balance_config_set(&c1, "retries", "x", NULL, 0), -EINVAL);
    small[0] = 'z';
    assert_int_equal(tk_balance_config_set(&c1, "nope", "x", small, 0), -EINVAL);
    assert_int_equal(small[0], 'z');
    assert_int_equal(tk_balance_config_parse(&c1, "nope 1", 6, NULL, 0), -EINVAL);
    assert_int_equal(tk_balance_backend_parse("x", &c1.backend[0], NULL, 0), -EINVAL);
    assert_int_equal(tk_balance_config_check(&c1, NULL, 0), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_sets_documented_defaults),
        cmocka_unit_test(algo_names_round_trip),
        cmocka_unit_test(unknown_settings_refused),
        cmocka_unit_test(integer_settings_check_their_range),
        cmocka_unit_test(size_settings_check_their_range),
        cmocka_unit_test(duration_settings),
        cmocka_unit_test(keepalive_setting),
        cmocka_unit_test(send_proxy_setting),
        cmocka_unit_test(listen_adds_addresses),
        cmocka_unit_test(long_addresses_refused),
        cmocka_unit_test(stats_setting),
        cmocka_unit_test(backend_spec_options),
        cmocka_unit_test(backend_spec_errors),
        cmocka_unit_test(backend_setting_adds_up_to_the_limit),
        cmocka_unit_test(check_strings_decode_escapes),
        cmocka_unit_test(file_and_command_line_agree),
        cmocka_unit_test(file_layout),
        cmocka_unit_test(file_respects_length),
        cmocka_unit_test(file_backend_options_with_blanks),
        cmocka_unit_test(file_quoted_values_decode_once),
        cmocka_unit_test(file_errors_name_line_and_setting),
        cmocka_unit_test(file_line_length_limit),
        cmocka_unit_test(check_rules),
        cmocka_unit_test(small_error_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

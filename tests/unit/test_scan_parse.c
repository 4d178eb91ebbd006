/* tk_scan_parse_ports and tk_scan_targets_add: port lists, ranges, literals,
 * CIDR ranges and their caps. No DNS: only literals and "localhost". */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/scan.h"

static void expect_ports(const char *spec, const uint16_t *want, size_t nwant)
{
    uint16_t *ports = NULL;
    size_t n = 0;
    int rc = tk_scan_parse_ports(spec, &ports, &n);
    if (rc != 0)
        print_error("tk_scan_parse_ports(\"%s\") = %d\n", spec, rc);
    assert_int_equal(rc, 0);
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ports[i], want[i]);
    free(ports);
}

static void expect_ports_refused(const char *spec)
{
    uint16_t *ports = NULL;
    size_t n = 0;
    int rc = tk_scan_parse_ports(spec, &ports, &n);
    if (rc != -EINVAL)
        print_error("tk_scan_parse_ports(\"%s\") = %d, want -EINVAL\n", spec, rc);
    assert_int_equal(rc, -EINVAL);
    assert_null(ports);
}

/* Lists and ranges come back sorted, without duplicates. */
static void ports_lists_and_ranges(void **state)
{
    (void)state;
    expect_ports("80", (const uint16_t[]){80}, 1);
    expect_ports("22,80,8000-8003", (const uint16_t[]){22, 80, 8000, 8001, 8002, 8003}, 6);
    expect_ports("443,22,22,21-23", (const uint16_t[]){21, 22, 23, 443}, 4);
    expect_ports("65534-", (const uint16_t[]){65534, 65535}, 2);
    expect_ports("-3", (const uint16_t[]){1, 2, 3}, 3);
    expect_ports("5-5", (const uint16_t[]){5}, 1);
}

/* "-" alone is every port. */
static void ports_dash_is_everything(void **state)
{
    (void)state;
    uint16_t *ports = NULL;
    size_t n = 0;
    assert_int_equal(tk_scan_parse_ports("-", &ports, &n), 0);
    assert_int_equal(n, 65535);
    assert_int_equal(ports[0], 1);
    assert_int_equal(ports[65534], 65535);
    free(ports);
}

static void ports_malformed_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "",    "0",    "65536",          "1-0", "80,",  ",80", "80,,81", "a", "80-90-100", "--",
        "8 0", "80-a", "99999999999999", "-0",  "1,0-3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_ports_refused(bad[i]);
}

/* The default list has TK_SCAN_TOP_PORTS distinct ports in order. */
static void top_ports_sorted_and_distinct(void **state)
{
    (void)state;
    const uint16_t *p = tk_scan_top_ports();
    for (size_t i = 1; i < TK_SCAN_TOP_PORTS; i++)
        assert_true(p[i - 1] < p[i]);
    assert_true(p[0] > 0);
}

static const char *ip_of(const tk_scan_host *h, char *buf)
{
    if (h->addr.ss.ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)&h->addr.ss)->sin_addr, buf, 64);
    return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&h->addr.ss)->sin6_addr, buf, 64);
}

static void targets_literals(void **state)
{
    (void)state;
    tk_scan_targets t = {0};
    char ip[64];
    assert_int_equal(tk_scan_targets_add(&t, "192.0.2.7"), 0);
    assert_int_equal(tk_scan_targets_add(&t, "2001:db8::1"), 0);
    assert_int_equal(tk_scan_targets_add(&t, "localhost"), 0);
    assert_int_equal(t.n, 3);
    assert_string_equal(ip_of(&t.hosts[0], ip), "192.0.2.7");
    assert_string_equal(t.hosts[0].name, "");
    assert_string_equal(ip_of(&t.hosts[1], ip), "2001:db8::1");
    assert_string_equal(t.hosts[2].name, "localhost");
    tk_scan_targets_free(&t);
    assert_null(t.hosts);
}

/* A range covers every address, network and broadcast included, starting at
 * the network address even when host bits were given. */
static void targets_cidr_ranges(void **state)
{
    (void)state;
    tk_scan_targets t = {0};
    char ip[64];
    assert_int_equal(tk_scan_targets_add(&t, "10.1.2.77/30"), 0);
    assert_int_equal(t.n, 4);
    assert_string_equal(ip_of(&t.hosts[0], ip), "10.1.2.76");
    assert_string_equal(ip_of(&t.hosts[3], ip), "10.1.2.79");
    tk_scan_targets_free(&t);
    assert_int_equal(tk_scan_targets_add(&t, "10.0.0.0/16"), 0);
    assert_int_equal(t.n, 65536);
    assert_string_equal(ip_of(&t.hosts[65535], ip), "10.0.255.255");
    tk_scan_targets_free(&t);

    assert_int_equal(tk_scan_targets_add(&t, "2001:db8::ff/120"), 0);
    assert_int_equal(t.n, 256);
    assert_string_equal(ip_of(&t.hosts[0], ip), "2001:db8::");
    assert_string_equal(ip_of(&t.hosts[255], ip), "2001:db8::ff");
    assert_int_equal(tk_scan_targets_add(&t, "192.0.2.1/32"), 0);
    assert_int_equal(t.n, 257);
    tk_scan_targets_free(&t);
}

/* Past TK_SCAN_MAX_HOSTS addresses in all, a target is refused whole. */
static void targets_cap(void **state)
{
    (void)state;
    tk_scan_targets t = {0};
    assert_int_equal(tk_scan_targets_add(&t, "10.0.0.0/15"), -E2BIG);
    assert_int_equal(tk_scan_targets_add(&t, "2001:db8::/64"), -E2BIG);
    assert_int_equal(tk_scan_targets_add(&t, "::/0"), -E2BIG);
    assert_int_equal(t.n, 0);
    assert_int_equal(tk_scan_targets_add(&t, "10.0.0.0/16"), 0);
    assert_int_equal(tk_scan_targets_add(&t, "192.0.2.1"), -E2BIG);
    assert_int_equal(tk_scan_targets_add(&t, "192.0.2.0/31"), -E2BIG);
    assert_int_equal(t.n, 65536);
    tk_scan_targets_free(&t);
}

static void targets_malformed_refused(void **state)
{
    (void)state;
    tk_scan_targets t = {0};
    const char *bad[] = {"",           "10.0.0.0/33", "::1/129",     "10.0.0.0/", "/24",
                         "10.0.0.0/x", "300.1.2.3",   "1.2.3",       "::1::2",    "-p",
                         "a b",        "fe80::1/abc", "1.2.3.4/24/1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = tk_scan_targets_add(&t, bad[i]);
        if (rc != -EINVAL)
            print_error("tk_scan_targets_add(\"%s\") = %d, want -EINVAL\n", bad[i], rc);
        assert_int_equal(rc, -EINVAL);
    }
    assert_int_equal(t.n, 0);
    tk_scan_targets_free(&t);
}

static void state_names(void **state)
{
    (void)state;
    assert_string_equal(tk_scan_state_name(TK_SCAN_OPEN), "open");
    assert_string_equal(tk_scan_state_name(TK_SCAN_CLOSED), "closed");
    assert_string_equal(tk_scan_state_name(TK_SCAN_FILTERED), "filtered");
    assert_true(tk_scan_default_concurrency() >= 1);
    assert_true(tk_scan_default_concurrency() <= 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ports_lists_and_ranges),
        cmocka_unit_test(ports_dash_is_everything),
        cmocka_unit_test(ports_malformed_refused),
        cmocka_unit_test(top_ports_sorted_and_distinct),
        cmocka_unit_test(targets_literals),
        cmocka_unit_test(targets_cidr_ranges),
        cmocka_unit_test(targets_cap),
        cmocka_unit_test(targets_malformed_refused),
        cmocka_unit_test(state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

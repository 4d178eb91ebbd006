/* tk_addr_*: splitting, numeric parsing, resolving (numeric and "localhost"
 * only, never DNS) and formatting of socket addresses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcpkit/addr.h"

/* Splits s into a heap buffer of exactly TK_HOST_MAX bytes, so that ASan
 * catches any write past the documented size. */
static int split(const char *s, char **host, int *port)
{
    *host = malloc(TK_HOST_MAX);
    assert_non_null(*host);
    memset(*host, 'Z', TK_HOST_MAX);
    *port = -12345;
    return tk_addr_split(s, *host, port);
}

static void expect_split(const char *s, const char *want_host, int want_port)
{
    char *host;
    int port;
    int rc = split(s, &host, &port);
    if (rc != 0)
        print_error("tk_addr_split(\"%s\") = %d\n", s, rc);
    assert_int_equal(rc, 0);
    assert_string_equal(host, want_host);
    assert_int_equal(port, want_port);
    free(host);
}

static void expect_split_refused(const char *s)
{
    char *host;
    int port;
    int rc = split(s, &host, &port);
    if (rc != -EINVAL)
        print_error("tk_addr_split(\"%s\") = %d, want -EINVAL\n", s, rc);
    assert_int_equal(rc, -EINVAL);
    free(host);
}

/* host:port, [v6]:port, :port and port 0 split as documented. */
static void split_accepts_documented_forms(void **state)
{
    (void)state;
    expect_split("127.0.0.1:80", "127.0.0.1", 80);
    expect_split("[::1]:8080", "::1", 8080);
    expect_split("[fe80::1%lo]:1", "fe80::1%lo", 1);
    expect_split(":9000", "", 9000);
    expect_split("host:0", "host", 0);
    expect_split("example.com:65535", "example.com", 65535);
}

/* Ports outside 0..65535 or not plain decimal are refused. */
static void split_refuses_bad_ports(void **state)
{
    (void)state;
    expect_split_refused("host:-1");
    expect_split_refused("host:65536");
    expect_split_refused("host:");
    expect_split_refused("host:abc");
    expect_split_refused("host:80x");
    expect_split_refused("host:99999999999999999999");
    expect_split_refused("host:4294967376"); /* 2^32 + 80 */
    expect_split_refused("[::1]:");
    expect_split_refused(":");
}

/* A sign or whitespace is not part of a decimal port. */
static void split_refuses_signed_or_spaced_ports(void **state)
{
    (void)state;
    expect_split_refused("host:+80");
    expect_split_refused("host: 80");
    expect_split_refused("host:80 ");
}

/* A bare IPv6 literal is ambiguous and refused; so is a missing port. */
static void split_refuses_ambiguous_or_portless(void **state)
{
    (void)state;
    expect_split_refused("::1:80");
    expect_split_refused("fe80::1");
    expect_split_refused("127.0.0.1");
    expect_split_refused("[::1]");
    expect_split_refused("[::1]80");
    expect_split_refused("[::1:80");
    expect_split_refused("");
}

/* A 253-byte host (the DNS maximum) fits; a host longer than the buffer is
 * refused without overflowing it. */
static void split_host_length_is_bounded(void **state)
{
    (void)state;
    char s[20000];
    memset(s, 'a', 253);
    strcpy(s + 253, ":80");
    char *host;
    int port;
    assert_int_equal(split(s, &host, &port), 0);
    assert_int_equal(strlen(host), 253);
    assert_int_equal(port, 80);
    free(host);
    memset(s, 'a', TK_HOST_MAX);
    strcpy(s + TK_HOST_MAX, ":80");
    expect_split_refused(s);
    memset(s, 'b', sizeof(s) - 10);
    strcpy(s + sizeof(s) - 10, ":80");
    expect_split_refused(s);
    s[0] = '[';
    strcpy(s + sizeof(s) - 10, "]:80");
    expect_split_refused(s);
}

/* Numeric IPv4 and IPv6 addresses parse into the right family, bytes and port. */
static void parse_numeric_addresses(void **state)
{
    (void)state;
    tk_addr a;
    assert_int_equal(tk_addr_parse("127.0.0.1:80", &a), 0);
    assert_int_equal(a.ss.ss_family, AF_INET);
    assert_int_equal(a.len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a.ss;
    assert_int_equal(ntohl(v4->sin_addr.s_addr), 0x7f000001u);
    assert_int_equal(ntohs(v4->sin_port), 80);
    assert_int_equal(tk_addr_port(&a), 80);

    assert_int_equal(tk_addr_parse("[::1]:8080", &a), 0);
    assert_int_equal(a.ss.ss_family, AF_INET6);
    assert_int_equal(a.len, sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&a.ss;
    assert_true(IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr));
    assert_int_equal(tk_addr_port(&a), 8080);
}

/* tk_addr_parse never resolves names and refuses malformed addresses. */
static void parse_refuses_names_and_garbage(void **state)
{
    (void)state;
    tk_addr a;
    assert_int_equal(tk_addr_parse("localhost:80", &a), -EINVAL);
    assert_int_equal(tk_addr_parse("1.2.3:80", &a), -EINVAL);
    assert_int_equal(tk_addr_parse("256.1.1.1:80", &a), -EINVAL);
    assert_int_equal(tk_addr_parse("[1.2.3.4]:80x", &a), -EINVAL);
    assert_int_equal(tk_addr_parse("[::g]:80", &a), -EINVAL);
    assert_int_equal(tk_addr_parse("::1:80", &a), -EINVAL);
    assert_int_equal(tk_addr_parse("127.0.0.1:65536", &a), -EINVAL);
}

/* Addresses format as a.b.c.d:port and [v6]:port. */
static void format_v4_and_v6(void **state)
{
    (void)state;
    char buf[TK_ADDR_STRLEN];
    tk_addr a;
    memset(&a, 0, sizeof(a));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a.ss;
    v4->sin_family = AF_INET;
    v4->sin_port = htons(80);
    v4->sin_addr.s_addr = htonl(0x01020304u);
    a.len = sizeof(*v4);
    assert_ptr_equal(tk_addr_format(&a, buf, sizeof(buf)), buf);
    assert_string_equal(buf, "1.2.3.4:80");

    memset(&a, 0, sizeof(a));
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.ss;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(65535);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &v6->sin6_addr), 1);
    a.len = sizeof(*v6);
    tk_addr_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "[2001:db8::1]:65535");
}

/* A link-local IPv6 address keeps its scope when formatted, as the size of
 * TK_ADDR_STRLEN ("[v6-address%scope]:65535") promises; without it the text
 * could not be used to reach the same address again. */
static void format_keeps_ipv6_scope(void **state)
{
    (void)state;
    unsigned lo = if_nametoindex("lo");
    assert_true(lo > 0);
    tk_addr a;
    memset(&a, 0, sizeof(a));
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.ss;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(80);
    v6->sin6_scope_id = lo;
    assert_int_equal(inet_pton(AF_INET6, "fe80::1", &v6->sin6_addr), 1);
    a.len = sizeof(*v6);
    char buf[TK_ADDR_STRLEN];
    tk_addr_format(&a, buf, sizeof(buf));
    size_t n = strlen(buf);
    assert_true(strncmp(buf, "[fe80::1%", 9) == 0);
    assert_true(n > 13 && strcmp(buf + n - 4, "]:80") == 0);
}

/* parse then format gives back the canonical text; set_port changes only the port. */
static void parse_format_round_trip(void **state)
{
    (void)state;
    const char *in[] = {"0.0.0.0:0", "255.255.255.255:65535", "[::]:1", "[::ffff:1.2.3.4]:443",
                        "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        tk_addr a;
        char buf[TK_ADDR_STRLEN];
        assert_int_equal(tk_addr_parse(in[i], &a), 0);
        assert_string_equal(tk_addr_format(&a, buf, sizeof(buf)), in[i]);
    }
    tk_addr a;
    char buf[TK_ADDR_STRLEN];
    assert_int_equal(tk_addr_parse("[::1]:1", &a), 0);
    tk_addr_set_port(&a, 4321);
    assert_int_equal(tk_addr_port(&a), 4321);
    assert_string_equal(tk_addr_format(&a, buf, sizeof(buf)), "[::1]:4321");
}

/* Numeric strings resolve to themselves without DNS. */
static void resolve_numeric(void **state)
{
    (void)state;
    tk_addr out[4];
    char buf[TK_ADDR_STRLEN];
    assert_int_equal(tk_addr_resolve("127.0.0.1:80", AF_UNSPEC, 0, out, 4), 1);
    assert_string_equal(tk_addr_format(&out[0], buf, sizeof(buf)), "127.0.0.1:80");
    assert_int_equal(tk_addr_resolve("[::1]:8080", AF_UNSPEC, 0, out, 4), 1);
    assert_string_equal(tk_addr_format(&out[0], buf, sizeof(buf)), "[::1]:8080");
    assert_int_equal(tk_addr_resolve("127.0.0.1:80", AF_INET, 1, out, 4), 1);
    /* An IPv4 literal asked for as IPv6 does not resolve. */
    assert_true(tk_addr_resolve("127.0.0.1:80", AF_INET6, 0, out, 4) < 0);
}

/* An empty host means every address when listening and localhost otherwise. */
static void resolve_empty_host(void **state)
{
    (void)state;
    tk_addr out[4];
    char buf[TK_ADDR_STRLEN];
    assert_int_equal(tk_addr_resolve(":9000", AF_INET, 1, out, 4), 1);
    assert_string_equal(tk_addr_format(&out[0], buf, sizeof(buf)), "0.0.0.0:9000");
    assert_int_equal(tk_addr_resolve(":9000", AF_INET6, 1, out, 4), 1);
    assert_string_equal(tk_addr_format(&out[0], buf, sizeof(buf)), "[::]:9000");
    assert_int_equal(tk_addr_resolve(":9000", AF_INET, 0, out, 4), 1);
    assert_string_equal(tk_addr_format(&out[0], buf, sizeof(buf)), "127.0.0.1:9000");
}

/* "localhost" resolves (from /etc/hosts) to a loopback address with the port. */
static void resolve_localhost(void **state)
{
    (void)state;
    tk_addr out[8];
    char buf[TK_ADDR_STRLEN];
    int n = tk_addr_resolve("localhost:7", AF_INET, 0, out, 8);
    assert_true(n >= 1);
    assert_string_equal(tk_addr_format(&out[0], buf, sizeof(buf)), "127.0.0.1:7");
}

/* Malformed strings are -EINVAL, and no more than cap addresses are stored. */
static void resolve_refuses_malformed_and_respects_cap(void **state)
{
    (void)state;
    tk_addr out[2];
    assert_int_equal(tk_addr_resolve("no-port", AF_UNSPEC, 0, out, 2), -EINVAL);
    assert_int_equal(tk_addr_resolve("::1:80", AF_UNSPEC, 0, out, 2), -EINVAL);
    assert_int_equal(tk_addr_resolve("host:65536", AF_UNSPEC, 0, out, 2), -EINVAL);
    tk_addr *one = malloc(sizeof(tk_addr));
    assert_non_null(one);
    int n = tk_addr_resolve(":80", AF_UNSPEC, 1, one, 1);
    assert_int_equal(n, 1);
    free(one);
}

/* The local address of a socket bound to an ephemeral loopback port is read
 * back with that port. */
static void address_of_bound_socket(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    tk_addr a;
    assert_int_equal(tk_addr_parse("127.0.0.1:0", &a), 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a.ss, a.len), 0);
    tk_addr got;
    assert_int_equal(tk_addr_of_socket(fd, 0, &got), 0);
    assert_int_equal(got.ss.ss_family, AF_INET);
    assert_true(tk_addr_port(&got) > 0);
    assert_true(tk_addr_of_socket(fd, 1, &got) < 0); /* not connected */
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(split_accepts_documented_forms),
        cmocka_unit_test(split_refuses_bad_ports),
        cmocka_unit_test(split_refuses_signed_or_spaced_ports),
        cmocka_unit_test(split_refuses_ambiguous_or_portless),
        cmocka_unit_test(split_host_length_is_bounded),
        cmocka_unit_test(parse_numeric_addresses),
        cmocka_unit_test(parse_refuses_names_and_garbage),
        cmocka_unit_test(format_v4_and_v6),
        cmocka_unit_test(format_keeps_ipv6_scope),
        cmocka_unit_test(parse_format_round_trip),
        cmocka_unit_test(resolve_numeric),
        cmocka_unit_test(resolve_empty_host),
        cmocka_unit_test(resolve_localhost),
        cmocka_unit_test(resolve_refuses_malformed_and_respects_cap),
        cmocka_unit_test(address_of_bound_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

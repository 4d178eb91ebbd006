/* tk_cidr_*, tk_access_policy_*, tk_access_* and tk_lograte_*: range
 * parsing (good and bad), matching IPv4, IPv6 and IPv4-mapped peers, the
 * deny-over-allow rule, per-address connection counts, the token bucket
 * under an injected clock, the table's cap and expiry, several threads
 * admitting and releasing at once (also built with -fsanitize=thread), and
 * the rate-limited refusal log. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcpkit/access.h"
#include "tcpkit/lograte.h"

/* A peer address from an IP literal (IPv6 without brackets). */
static tk_addr peer(const char *ip)
{
    char text[80];
    tk_addr a;
    snprintf(text, sizeof(text), strchr(ip, ':') ? "[%s]:4000" : "%s:4000", ip);
    assert_int_equal(tk_addr_parse(text, &a), 0);
    return a;
}

static void expect_range(const char *s, const char *canonical)
{
    tk_cidr c, again;
    char err[200] = "", text[TK_CIDR_STRLEN];
    int rc = tk_cidr_parse(s, &c, err, sizeof(err));
    if (rc != 0)
        print_error("tk_cidr_parse(\"%s\") = %d: %s\n", s, rc, err);
    assert_int_equal(rc, 0);
    assert_string_equal(tk_cidr_format(&c, text, sizeof(text)), canonical);
    /* The canonical form parses back to the same range. */
    assert_int_equal(tk_cidr_parse(text, &again, NULL, 0), 0);
    assert_memory_equal(&c, &again, sizeof(c));
}

static void expect_bad(const char *s, const char *in_message)
{
    tk_cidr c;
    char err[200] = "";
    int rc = tk_cidr_parse(s, &c, err, sizeof(err));
    if (rc != -EINVAL)
        print_error("tk_cidr_parse(\"%s\") = %d, want -EINVAL\n", s, rc);
    assert_int_equal(rc, -EINVAL);
    if (!strstr(err, in_message))
        print_error("message for \"%s\" was \"%s\", want \"%s\" in it\n", s, err, in_message);
    assert_non_null(strstr(err, in_message));
}

/* IPv4 and IPv6, with and without a prefix, IPv4-mapped written as IPv4. */
static void cidr_parses_documented_forms(void **state)
{
    (void)state;
    expect_range("10.0.0.0/8", "10.0.0.0/8");
    expect_range("192.168.1.7", "192.168.1.7/32");
    expect_range("0.0.0.0/0", "0.0.0.0/0");
    expect_range("172.16.0.0/12", "172.16.0.0/12");
    expect_range("::1", "::1/128");
    expect_range("fd00::/8", "fd00::/8");
    expect_range("::/0", "::/0");
    expect_range("2001:DB8::/32", "2001:db8::/32");
    expect_range("::ffff:10.0.0.0/104", "10.0.0.0/8");
    expect_range("::ffff:127.0.0.1", "127.0.0.1/32");
}

/* Junk, out-of-range prefixes and host bits past the prefix are refused,
 * each with a message saying why. */
static void cidr_refuses_junk(void **state)
{
    (void)state;
    expect_bad("", "empty");
    expect_bad("10.0.0.1/8", "host bits set beyond the prefix (the network is 10.0.0.0/8)");
    expect_bad("fd00::1/8", "the network is fd00::/8");
    expect_bad("10.0.0.0/33", "bad prefix length (0 to 32)");
    expect_bad("::1/129", "bad prefix length (0 to 128)");
    expect_bad("1.2.3.4/", "bad prefix");
    expect_bad("1.2.3.4/08", "bad prefix");
    expect_bad("1.2.3.4/+8", "bad prefix");
    expect_bad("1.2.3.4/-1", "bad prefix");
    expect_bad("1.2.3.4/ 8", "bad prefix");
    expect_bad("1.2.3.4/8/8", "bad prefix");
    expect_bad("1.2.3", "not an IPv4 address");
    expect_bad("1.2.3.256", "not an IPv4 address");
    expect_bad(" 1.2.3.4", "not an IPv4 address");
    expect_bad("localhost", "not an IPv4 address");
    expect_bad("[::1]", "not an IPv6 address");
    expect_bad("::1::2", "not an IPv6 address");
    expect_bad("fe80::1%eth0", "zone index");
    expect_bad("1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa/64", "too long");
}

/* IPv4 rules match IPv4 and IPv4-mapped peers; IPv6 rules only IPv6 ones. */
static void cidr_matches_by_family(void **state)
{
    (void)state;
    tk_cidr v4, v6, all6, odd;
    assert_int_equal(tk_cidr_parse("10.1.0.0/16", &v4, NULL, 0), 0);
    assert_int_equal(tk_cidr_parse("fd00::/8", &v6, NULL, 0), 0);
    assert_int_equal(tk_cidr_parse("::/0", &all6, NULL, 0), 0);
    assert_int_equal(tk_cidr_parse("192.168.2.0/23", &odd, NULL, 0), 0);
    tk_addr a = peer("10.1.2.3"), b = peer("10.2.0.1"), m = peer("::ffff:10.1.9.9");
    tk_addr u = peer("fd12::5"), g = peer("2001:db8::1");
    assert_true(tk_cidr_match(&v4, &a));
    assert_false(tk_cidr_match(&v4, &b));
    assert_true(tk_cidr_match(&v4, &m));
    assert_false(tk_cidr_match(&v4, &u));
    assert_true(tk_cidr_match(&v6, &u));
    assert_false(tk_cidr_match(&v6, &g));
    assert_false(tk_cidr_match(&v6, &a));
    assert_true(tk_cidr_match(&all6, &g));
    assert_false(tk_cidr_match(&all6, &m)); /* a mapped peer is IPv4 */
    tk_addr in1 = peer("192.168.3.255"), out1 = peer("192.168.4.0"), out2 = peer("192.168.1.255");
    assert_true(tk_cidr_match(&odd, &in1));
    assert_false(tk_cidr_match(&odd, &out1));
    assert_false(tk_cidr_match(&odd, &out2));
}

/* Deny wins; an allow list refuses whoever it does not name; no lists
 * admit everyone. */
static void policy_deny_wins_and_allow_restricts(void **state)
{
    (void)state;
    tk_access_policy *p;
    char err[200];
    assert_int_equal(tk_access_policy_new(&p), 0);
    tk_addr a = peer("10.0.0.1"), b = peer("10.0.0.66"), c = peer("192.0.2.1");
    tk_addr l6 = peer("::1"), m = peer("::ffff:10.0.0.1");
    assert_true(tk_access_policy_permits(p, &c));
    assert_true(tk_access_policy_permits(NULL, &c));
    assert_int_equal(tk_access_policy_add(p, TK_ACCESS_DENY, "10.0.0.64/26", err, sizeof(err)), 0);
    assert_true(tk_access_policy_permits(p, &a));
    assert_false(tk_access_policy_permits(p, &b));
    assert_true(tk_access_policy_permits(p, &c));
    assert_int_equal(
        tk_access_policy_add(p, TK_ACCESS_ALLOW, " 10.0.0.0/8 , ::1", err, sizeof(err)), 0);
    assert_int_equal(tk_access_policy_count(p, TK_ACCESS_ALLOW), 2);
    assert_true(tk_access_policy_permits(p, &a));
    assert_true(tk_access_policy_permits(p, &m));
    assert_true(tk_access_policy_permits(p, &l6));
    assert_false(tk_access_policy_permits(p, &b)); /* allowed by /8, denied by /26 */
    assert_false(tk_access_policy_permits(p, &c)); /* not on the allow list */
    tk_access_policy_free(p);
}

/* A list with one bad entry adds nothing; an empty entry is an error. */
static void policy_lists_are_all_or_nothing(void **state)
{
    (void)state;
    tk_access_policy *p;
    char err[200] = "";
    assert_int_equal(tk_access_policy_new(&p), 0);
    assert_int_equal(
        tk_access_policy_add(p, TK_ACCESS_ALLOW, "10.0.0.0/8,bogus,::1", err, sizeof(err)),
        -EINVAL);
    assert_non_null(strstr(err, "bogus"));
    assert_int_equal(tk_access_policy_count(p, TK_ACCESS_ALLOW), 0);
    assert_int_equal(tk_access_policy_add(p, TK_ACCESS_DENY, "10.0.0.0/8,,::1", err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "empty entry"));
    assert_int_equal(tk_access_policy_add(p, TK_ACCESS_DENY, "", err, sizeof(err)), -EINVAL);
    assert_int_equal(tk_access_policy_count(p, TK_ACCESS_DENY), 0);
    assert_int_equal(tk_access_policy_add(p, TK_ACCESS_DENY, "10.0.0.0/8", err, sizeof(err)), 0);
    char text[TK_CIDR_STRLEN];
    assert_string_equal(
        tk_cidr_format(tk_access_policy_rule(p, TK_ACCESS_DENY, 0), text, sizeof(text)),
        "10.0.0.0/8");
    tk_access_policy_free(p);
}

static tk_access *make(unsigned max_conns, double rate, double burst, unsigned table)
{
    tk_access_config c;
    tk_access_config_init(&c);
    c.max_conns_per_ip = max_conns;
    c.rate_per_ip = rate;
    c.rate_burst = burst;
    if (table)
        c.table_max = table;
    c.log_interval_ms = 3600 * 1000;
    tk_access *a;
    assert_int_equal(tk_access_new(&c, &a), 0);
    return a;
}

static tk_refuse_reason refused_why(tk_access *a, const char *ip, uint64_t now)
{
    tk_addr p = peer(ip);
    tk_refuse_reason why = TK_REFUSE_COUNT;
    assert_int_equal(tk_access_admit(a, &p, now, &why), -EACCES);
    return why;
}

static void admit_ok(tk_access *a, const char *ip, uint64_t now)
{
    tk_addr p = peer(ip);
    int rc = tk_access_admit(a, &p, now, NULL);
    if (rc != 0)
        print_error("admit %s at %llu refused\n", ip, (unsigned long long)now);
    assert_int_equal(rc, 0);
}

static void release(tk_access *a, const char *ip, uint64_t now)
{
    tk_addr p = peer(ip);
    tk_access_release(a, &p, now);
}

/* The third connection from one address is refused, another address still
 * gets in, and a close makes room again; counters say so. */
static void per_ip_counts_open_connections(void **state)
{
    (void)state;
    tk_access *a = make(2, 0, 0, 0);
    assert_true(tk_access_limits_on(a));
    admit_ok(a, "127.0.0.1", 0);
    admit_ok(a, "::ffff:127.0.0.1", 0); /* the same address, mapped */
    assert_int_equal(refused_why(a, "127.0.0.1", 0), TK_REFUSE_PER_IP);
    admit_ok(a, "127.0.0.2", 0);
    release(a, "127.0.0.1", 5);
    admit_ok(a, "127.0.0.1", 6);
    assert_int_equal(refused_why(a, "127.0.0.1", 7), TK_REFUSE_PER_IP);
    tk_access_counters k;
    tk_access_get_counters(a, &k);
    assert_int_equal(k.admitted, 4);
    assert_int_equal(k.refused[TK_REFUSE_PER_IP], 2);
    assert_int_equal(k.refused[TK_REFUSE_DENY], 0);
    assert_int_equal(k.tracked, 2);
    release(a, "127.0.0.1", 8);
    release(a, "127.0.0.1", 8);
    release(a, "127.0.0.2", 8);
    release(a, "127.0.0.9", 8); /* never admitted: ignored */
    tk_access_get_counters(a, &k);
    assert_int_equal(k.tracked, 0); /* no rate: nothing left to remember */
    tk_access_free(a);
}

/* 2 a second with a burst of 3: three at once, then one per 500 ms; a
 * refused attempt costs no token. */
static void token_bucket_follows_the_clock(void **state)
{
    (void)state;
    tk_access *a = make(0, 2, 3, 0);
    admit_ok(a, "10.0.0.1", 1000);
    admit_ok(a, "10.0.0.1", 1000);
    admit_ok(a, "10.0.0.1", 1000);
    assert_int_equal(refused_why(a, "10.0.0.1", 1000), TK_REFUSE_RATE);
    admit_ok(a, "10.0.0.2", 1000); /* its own bucket */
    assert_int_equal(refused_why(a, "10.0.0.1", 1499), TK_REFUSE_RATE);
    admit_ok(a, "10.0.0.1", 1500);
    assert_int_equal(refused_why(a, "10.0.0.1", 1500), TK_REFUSE_RATE);
    /* A loop whose cached time lags another's earns nothing, loses nothing. */
    assert_int_equal(refused_why(a, "10.0.0.1", 1400), TK_REFUSE_RATE);
    admit_ok(a, "10.0.0.1", 2000);
    /* Long quiet: the bucket is full again, never more. */
    admit_ok(a, "10.0.0.1", 60000);
    admit_ok(a, "10.0.0.1", 60000);
    admit_ok(a, "10.0.0.1", 60000);
    assert_int_equal(refused_why(a, "10.0.0.1", 60000), TK_REFUSE_RATE);
    tk_access_counters k;
    tk_access_get_counters(a, &k);
    assert_int_equal(k.refused[TK_REFUSE_RATE], 5);
    tk_access_free(a);
}

/* The default burst is one second's worth, at least 1. */
static void default_burst_is_one_second(void **state)
{
    (void)state;
    tk_access *a = make(0, 0.5, 0, 0);
    admit_ok(a, "10.0.0.1", 0);
    assert_int_equal(refused_why(a, "10.0.0.1", 1999), TK_REFUSE_RATE);
    admit_ok(a, "10.0.0.1", 2000);
    tk_access_free(a);
}

/* Per-address limits with the connection and the rate limit together: a
 * refused per-ip attempt does not use up the bucket. */
static void per_ip_refusal_keeps_tokens(void **state)
{
    (void)state;
    tk_access *a = make(1, 1, 2, 0);
    admit_ok(a, "10.0.0.1", 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(refused_why(a, "10.0.0.1", 0), TK_REFUSE_PER_IP);
    release(a, "10.0.0.1", 0);
    admit_ok(a, "10.0.0.1", 0); /* the second token of the burst */
    release(a, "10.0.0.1", 0);
    assert_int_equal(refused_why(a, "10.0.0.1", 0), TK_REFUSE_RATE);
    tk_access_free(a);
}

/* IPv6 peers are keyed per address, or per /N when asked. */
static void ipv6_keying(void **state)
{
    (void)state;
    tk_access *a = make(1, 0, 0, 0);
    admit_ok(a, "2001:db8::1", 0);
    admit_ok(a, "2001:db8::2", 0);
    tk_access_free(a);

    tk_access_config c;
    tk_access_config_init(&c);
    c.max_conns_per_ip = 1;
    c.ipv6_prefix = 64;
    assert_int_equal(tk_access_new(&c, &a), 0);
    admit_ok(a, "2001:db8::1", 0);
    assert_int_equal(refused_why(a, "2001:db8::2", 0), TK_REFUSE_PER_IP);
    admit_ok(a, "2001:db8:0:1::1", 0);
    admit_ok(a, "10.0.0.1", 0); /* IPv4 keeps all 32 bits */
    admit_ok(a, "10.0.0.2", 0);
    release(a, "2001:db8::ffff", 0); /* same /64 as ::1: counts it out */
    admit_ok(a, "2001:db8::3", 0);
    tk_access_free(a);
}

/* A full table drops its oldest idle entry for a newcomer; when every entry
 * holds connections, a newcomer is refused as "full". */
static void table_cap_evicts_idle_then_refuses(void **state)
{
    (void)state;
    char ip[32];
    tk_access *a = make(0, 1, 1, 4);
    for (int i = 1; i <= 4; i++) {
        snprintf(ip, sizeof(ip), "10.0.0.%d", i);
        admit_ok(a, ip, 0);
    }
    /* Every attempt, refused ones too, makes an entry the newest: an
     * address that keeps knocking is not the one forgotten. */
    assert_int_equal(refused_why(a, "10.0.0.1", 0), TK_REFUSE_RATE);
    admit_ok(a, "10.0.0.5", 10); /* drops 10.0.0.2, now the oldest */
    tk_access_counters k;
    tk_access_get_counters(a, &k);
    assert_int_equal(k.tracked, 4);
    assert_int_equal(k.evicted, 1);
    assert_int_equal(refused_why(a, "10.0.0.1", 20), TK_REFUSE_RATE);
    admit_ok(a, "10.0.0.2", 20); /* forgotten: a full bucket again (drops .3) */
    tk_access_free(a);

    a = make(1, 0, 0, 4);
    for (int i = 1; i <= 4; i++) {
        snprintf(ip, sizeof(ip), "10.0.1.%d", i);
        admit_ok(a, ip, 0);
    }
    assert_int_equal(refused_why(a, "10.0.1.5", 0), TK_REFUSE_FULL);
    release(a, "10.0.1.3", 0);
    admit_ok(a, "10.0.1.5", 0);
    tk_access_get_counters(a, &k);
    assert_int_equal(k.refused[TK_REFUSE_FULL], 1);
    assert_int_equal(k.tracked, 4);
    tk_access_free(a);
}

/* Idle entries leave once their bucket has refilled: a flood of distinct
 * addresses leaves nothing behind after the refill time. */
static void idle_entries_expire(void **state)
{
    (void)state;
    char ip[32];
    tk_access *a = make(0, 10, 5, 64); /* refill time 500 ms */
    for (int i = 0; i < 40; i++) {
        snprintf(ip, sizeof(ip), "10.0.2.%d", i);
        admit_ok(a, ip, 100);
    }
    tk_access_counters k;
    tk_access_get_counters(a, &k);
    assert_int_equal(k.tracked, 40);
    /* Expiry is lazy, a few entries per admission, and only once refilled. */
    admit_ok(a, "10.9.9.9", 599);
    tk_access_get_counters(a, &k);
    assert_int_equal(k.tracked, 41);
    for (int i = 0; i < 10; i++)
        admit_ok(a, "10.9.9.8", 600 + 100 * (uint64_t)i);
    tk_access_get_counters(a, &k);
    assert_true(k.tracked <= 2);
    assert_int_equal(k.evicted, 0);
    tk_access_free(a);
}

/* A table far smaller than a flood of distinct addresses stays at its cap. */
static void flood_of_addresses_stays_bounded(void **state)
{
    (void)state;
    char ip[32];
    tk_access *a = make(0, 1, 1, 5000); /* 16 shards */
    for (int i = 0; i < 60000; i++) {
        snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        admit_ok(a, ip, 0);
    }
    tk_access_counters k;
    tk_access_get_counters(a, &k);
    assert_true(k.tracked <= 5000 + 15);
    assert_true(k.tracked >= 4000);
    assert_int_equal(k.evicted, 60000 - k.tracked);
    tk_access_free(a);
}

/* Bad settings are refused by the check and by tk_access_new. */
static void config_check_refuses_bad_values(void **state)
{
    (void)state;
    tk_access_config c;
    char err[200];
    tk_access *a;
    tk_access_config_init(&c);
    assert_int_equal(tk_access_config_check(&c, err, sizeof(err)), 0);
    c.ipv6_prefix = 16;
    assert_int_equal(tk_access_config_check(&c, err, sizeof(err)), -EINVAL);
    assert_int_equal(tk_access_new(&c, &a), -EINVAL);
    tk_access_config_init(&c);
    c.table_max = 0;
    assert_int_equal(tk_access_config_check(&c, err, sizeof(err)), -EINVAL);
    tk_access_config_init(&c);
    c.rate_per_ip = -1;
    assert_int_equal(tk_access_config_check(&c, err, sizeof(err)), -EINVAL);
    tk_access_config_init(&c);
    c.rate_burst = 0.5;
    assert_int_equal(tk_access_config_check(&c, err, sizeof(err)), -EINVAL);
    /* No limits: no table at all, nothing tracked, release harmless. */
    tk_access_config_init(&c);
    assert_int_equal(tk_access_new(&c, &a), 0);
    assert_false(tk_access_limits_on(a));
    admit_ok(a, "10.0.0.1", 0);
    release(a, "10.0.0.1", 0);
    tk_access_free(a);
}

#define THREADS   4
#define ROUNDS    20000
#define ADDRS     6
#define MAX_CONNS 3

typedef struct {
    tk_access *a;
    atomic_int *open; /* per address, as the test counts it */
    atomic_int *over; /* times an admission exceeded MAX_CONNS */
    unsigned seed;
    unsigned long admitted;
} worker;

static void *hammer(void *arg)
{
    worker *w = arg;
    tk_addr peers[ADDRS];
    for (int i = 0; i < ADDRS; i++) {
        char ip[40];
        snprintf(ip, sizeof(ip), i % 2 ? "10.0.0.%d" : "fd00::%d", i + 1);
        peers[i] = peer(ip);
    }
    int held[ADDRS] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        int i = (int)(rand_r(&w->seed) % ADDRS);
        if (held[i] && rand_r(&w->seed) % 2) {
            atomic_fetch_sub(&w->open[i], 1);
            held[i]--;
            tk_access_release(w->a, &peers[i], (uint64_t)r);
        } else if (tk_access_admit(w->a, &peers[i], (uint64_t)r, NULL) == 0) {
            if (atomic_fetch_add(&w->open[i], 1) >= MAX_CONNS)
                atomic_fetch_add(w->over, 1);
            held[i]++;
            w->admitted++;
        }
    }
    for (int i = 0; i < ADDRS; i++) {
        while (held[i]--) {
            atomic_fetch_sub(&w->open[i], 1);
            tk_access_release(w->a, &peers[i], ROUNDS);
        }
    }
    return NULL;
}

/* Threads admitting and releasing the same few addresses never see more
 * than the limit open, and leave the table empty. */
static void threads_share_the_table(void **state)
{
    (void)state;
    tk_access *a = make(MAX_CONNS, 1e6, 1e6, 0);
    atomic_int open[ADDRS];
    atomic_int over = 0;
    for (int i = 0; i < ADDRS; i++)
        atomic_init(&open[i], 0);
    pthread_t t[THREADS];
    worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.a = a, .open = open, .over = &over, .seed = 7u + (unsigned)i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
    }
    unsigned long admitted = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        admitted += w[i].admitted;
    }
    assert_int_equal(atomic_load(&over), 0);
    tk_access_counters k;
    tk_access_get_counters(a, &k);
    assert_int_equal(k.admitted, admitted);
    assert_true(k.refused[TK_REFUSE_PER_IP] > 0);
    assert_true(k.tracked <= ADDRS); /* idle entries wait for their refill */
    tk_access_free(a);
}

/* Reads what was logged to fd since offset 0 into buf. */
static size_t slurp(int fd, char *buf, size_t cap)
{
    ssize_t n = pread(fd, buf, cap - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    return (size_t)n;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int log_to_tmpfile(void)
{
    char path[] = "/tmp/tk_test_access_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    tk_log_configure(TK_LOG_INFO, TK_LOG_TEXT, fd);
    return fd;
}

/* One line per interval, written when the window closes (by a later event
 * or a flush), with the counts per kind and the last detail. */
static void lograte_summarises_per_window(void **state)
{
    (void)state;
    static const char *const kinds[] = {"deny", "per-ip", "rate"};
    int fd = log_to_tmpfile();
    tk_lograte r;
    char buf[4096];
    assert_int_equal(tk_lograte_init(&r, TK_LOG_WARN, 1000, "refused", "connection", kinds, 3), 0);
    assert_int_equal(tk_lograte_flush(&r, 0, 0), 0);
    assert_int_equal(tk_lograte_note(&r, 0, 100, "10.0.0.1"), 1000);
    for (int i = 0; i < 500; i++)
        assert_int_equal(tk_lograte_note(&r, 0, 600, "10.0.0.1"), 500);
    assert_int_equal(tk_lograte_note(&r, 1, 700, "10.0.0.2"), 400);
    unsigned long counts[3];
    assert_int_equal(tk_lograte_pending(&r, counts), 502);
    assert_int_equal(counts[0], 501);
    assert_int_equal(tk_lograte_flush(&r, 1099, 0), 1);
    assert_int_equal(slurp(fd, buf, sizeof(buf)), 0);
    assert_int_equal(tk_lograte_flush(&r, 1100, 0), 0);
    slurp(fd, buf, sizeof(buf));
    assert_int_equal(count_lines(buf), 1);
    assert_non_null(strstr(buf, " WARN refused 502 connections in the last 1.0 s (deny 501, "
                                "per-ip 1, rate 0); last: 10.0.0.2 (per-ip)\n"));
    /* A later event closes an expired window itself. */
    tk_lograte_note(&r, 2, 5000, "10.0.0.3");
    tk_lograte_note(&r, 2, 20000, "10.0.0.4");
    slurp(fd, buf, sizeof(buf));
    assert_int_equal(count_lines(buf), 2);
    assert_non_null(strstr(buf, "refused 1 connection in the last 15 s (deny 0, per-ip 0, "
                                "rate 1); last: 10.0.0.3 (rate)\n"));
    /* A forced flush reports what is pending at once. */
    assert_int_equal(tk_lograte_flush(&r, 20001, 1), 0);
    slurp(fd, buf, sizeof(buf));
    assert_int_equal(count_lines(buf), 3);
    assert_non_null(strstr(buf, "last: 10.0.0.4 (rate)\n"));
    tk_lograte_destroy(&r);

    /* Interval 0: one line per event. */
    assert_int_equal(tk_lograte_init(&r, TK_LOG_WARN, 0, "refused", "connection", kinds, 3), 0);
    assert_int_equal(tk_lograte_note(&r, 0, 1, "10.0.0.5"), 0);
    slurp(fd, buf, sizeof(buf));
    assert_non_null(strstr(buf, "refused connection: 10.0.0.5 (deny)\n"));
    tk_lograte_destroy(&r);
    tk_log_configure(TK_LOG_INFO, TK_LOG_TEXT, 2);
    close(fd);
}

/* The access refusals reach the summary with their reasons, and freeing
 * the state writes what is pending. */
static void access_refusals_are_logged_once(void **state)
{
    (void)state;
    int fd = log_to_tmpfile();
    tk_access_policy *p;
    assert_int_equal(tk_access_policy_new(&p), 0);
    assert_int_equal(tk_access_policy_add(p, TK_ACCESS_DENY, "127.0.0.2", NULL, 0), 0);
    tk_access_config c;
    tk_access_config_init(&c);
    c.policy = p;
    c.max_conns_per_ip = 1;
    tk_access *a;
    assert_int_equal(tk_access_new(&c, &a), 0);
    for (int i = 0; i < 800; i++)
        refused_why(a, "127.0.0.2", 10);
    admit_ok(a, "127.0.0.1", 10);
    for (int i = 0; i < 12; i++)
        refused_why(a, "127.0.0.1", 11);
    refused_why(a, "127.0.0.2", 12);
    assert_int_equal(tk_access_log_flush(a, 13, 0), 10000 - 3);
    char buf[4096];
    assert_int_equal(slurp(fd, buf, sizeof(buf)), 0);
    assert_int_equal(tk_access_log_flush(a, 10010, 0), 0);
    slurp(fd, buf, sizeof(buf));
    assert_int_equal(count_lines(buf), 1);
    assert_non_null(strstr(buf, "refused 813 connections in the last 10 s (deny 801, per-ip 12, "
                                "rate 0, full 0); last: 127.0.0.2 (deny)\n"));
    assert_int_equal(refused_why(a, "127.0.0.1", 20000), TK_REFUSE_PER_IP);
    tk_access_free(a);
    tk_access_policy_free(p);
    slurp(fd, buf, sizeof(buf));
    assert_int_equal(count_lines(buf), 2);
    assert_non_null(strstr(buf, "refused 1 connection in the last "));
    assert_non_null(strstr(buf, "last: 127.0.0.1 (per-ip)\n"));
    tk_log_configure(TK_LOG_INFO, TK_LOG_TEXT, 2);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cidr_parses_documented_forms),
        cmocka_unit_test(cidr_refuses_junk),
        cmocka_unit_test(cidr_matches_by_family),
        cmocka_unit_test(policy_deny_wins_and_allow_restricts),
        cmocka_unit_test(policy_lists_are_all_or_nothing),
        cmocka_unit_test(per_ip_counts_open_connections),
        cmocka_unit_test(token_bucket_follows_the_clock),
        cmocka_unit_test(default_burst_is_one_second),
        cmocka_unit_test(per_ip_refusal_keeps_tokens),
        cmocka_unit_test(ipv6_keying),
        cmocka_unit_test(table_cap_evicts_idle_then_refuses),
        cmocka_unit_test(idle_entries_expire),
        cmocka_unit_test(flood_of_addresses_stays_bounded),
        cmocka_unit_test(config_check_refuses_bad_values),
        cmocka_unit_test(threads_share_the_table),
        cmocka_unit_test(lograte_summarises_per_window),
        cmocka_unit_test(access_refusals_are_logged_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

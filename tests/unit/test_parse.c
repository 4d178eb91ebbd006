/* The value forms of settings (tk_parse_uint, tk_parse_size,
 * tk_parse_duration_ms) and the keepalive triple (tk_sock_parse_keepalive):
 * what each takes, what each refuses. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "tcpkit/parse.h"
#include "tcpkit/sock.h"

static void expect_ms(const char *s, uint32_t want)
{
    uint32_t ms = 7;
    int rc = tk_parse_duration_ms(s, &ms);
    if (rc != 0 || ms != want)
        print_error("tk_parse_duration_ms(\"%s\") = %d, %u ms; want %u\n", s, rc, ms, want);
    assert_int_equal(rc, 0);
    assert_int_equal(ms, want);
}

static void expect_ms_refused(const char *s)
{
    uint32_t ms = 7;
    int rc = tk_parse_duration_ms(s, &ms);
    if (rc != -EINVAL)
        print_error("tk_parse_duration_ms(\"%s\") = %d (%u ms), want -EINVAL\n", s, rc, ms);
    assert_int_equal(rc, -EINVAL);
    assert_int_equal(ms, 7);
}

/* Seconds by default, with a fraction, or with a unit. */
static void duration_documented_forms(void **state)
{
    (void)state;
    expect_ms("0", 0);
    expect_ms("300", 300000);
    expect_ms("0.5", 500);
    expect_ms(".25", 250);
    expect_ms("1.", 1000);
    expect_ms("500ms", 500);
    expect_ms("30s", 30000);
    expect_ms("5m", 300000);
    expect_ms("0.0001", 1); /* positive never rounds to 0 */
    expect_ms("4294967.295", 4294967295u);
}

/* strtod's other forms are not durations: exponents, hexadecimal, signs,
 * infinities, blanks; and nothing past the unit. */
static void duration_other_number_forms_refused(void **state)
{
    (void)state;
    const char *bad[] = {"1e3",   "1E3s", "0x10", "0x1p3",   "+5",   "-1",   " 5",   "5 ",
                         "inf",   "nan",  ".",    "",        "ms",   "5sec", "5mss", "1.2.3",
                         "5e-1m", "0X1A", "1h",   "4294968", "9e99", "1..2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_ms_refused(bad[i]);
}

/* A tiny positive value underflows strtod; it is still 1 ms, not refused. */
static void duration_tiny_positive_is_one_ms(void **state)
{
    (void)state;
    char s[512] = "0.";
    memset(s + 2, '0', 400);
    s[402] = '1';
    s[403] = '\0';
    expect_ms(s, 1);
    memset(s + 2, '0', 402);
    s[404] = '\0';
    expect_ms(s, 0);
}

static void keepalive_fields(void **state)
{
    (void)state;
    tk_sockopts o;
    tk_sockopts_init(&o);
    assert_int_equal(tk_sock_parse_keepalive("60,10,5", &o), 0);
    assert_int_equal(o.keepalive, 1);
    assert_int_equal(o.ka_idle_s, 60);
    assert_int_equal(o.ka_intvl_s, 10);
    assert_int_equal(o.ka_count, 5);

    tk_sockopts_init(&o);
    assert_int_equal(tk_sock_parse_keepalive("0", &o), 0);
    assert_int_equal(o.keepalive, 0);

    tk_sockopts_init(&o);
    assert_int_equal(tk_sock_parse_keepalive("30,000000000000000000007", &o), 0);
    assert_int_equal(o.ka_intvl_s, 7);
}

/* An empty field is a mistake: "60,,5" must not become interval 5. */
static void keepalive_empty_fields_refused(void **state)
{
    (void)state;
    const char *bad[] = {"",          ",",     "60,", ",60",   "60,,5", "60,10,",
                         "60,10,5,1", "86401", "-1",  "60;10", "1 ,2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tk_sockopts o, before;
        tk_sockopts_init(&o);
        before = o;
        int rc = tk_sock_parse_keepalive(bad[i], &o);
        if (rc != -EINVAL)
            print_error("tk_sock_parse_keepalive(\"%s\") = %d, want -EINVAL\n", bad[i], rc);
        assert_int_equal(rc, -EINVAL);
        assert_memory_equal(&o, &before, sizeof(o));
    }
}

static void sizes_and_integers(void **state)
{
    (void)state;
    size_t z;
    unsigned long u;
    assert_int_equal(tk_parse_size("64K", &z), 0);
    assert_int_equal(z, 65536);
    assert_int_equal(tk_parse_size("1MiB", &z), 0);
    assert_int_equal(z, 1 << 20);
    assert_int_equal(tk_parse_size("2GB", &z), 0);
    assert_int_equal(z, (size_t)2 << 30);
    assert_int_equal(tk_parse_size("1T", &z), -EINVAL);
    assert_int_equal(tk_parse_size("0x10", &z), -EINVAL);
    assert_int_equal(tk_parse_size("1Kb", &z), -EINVAL);
    assert_int_equal(tk_parse_uint("65535", 1, 65535, &u), 0);
    assert_int_equal(u, 65535);
    assert_int_equal(tk_parse_uint("65536", 1, 65535, &u), -EINVAL);
    assert_int_equal(tk_parse_uint("0", 1, 65535, &u), -EINVAL);
    assert_int_equal(tk_parse_uint("1x", 0, 9, &u), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(duration_documented_forms),
        cmocka_unit_test(duration_other_number_forms_refused),
        cmocka_unit_test(duration_tiny_positive_is_one_ms),
        cmocka_unit_test(keepalive_fields),
        cmocka_unit_test(keepalive_empty_fields_refused),
        cmocka_unit_test(sizes_and_integers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

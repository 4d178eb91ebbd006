/* Fuzzes the value forms every setting uses (tcpkit/parse.h): integers,
 * byte sizes and durations, plus the keepalive triple (tk_sock_parse_keepalive)
 * and log level names (tk_log_parse_level). The input, up to its first NUL,
 * is one command line value given to each of them.
 *
 * Each parser is checked against a small reference written here from its
 * documented grammar, so "accepted" and "refused" must agree exactly:
 * - uint: one or more decimal digits and nothing else, in [min, max];
 * - size: digits, then optionally K, M or G (either case) followed by
 *   nothing, "B" or "iB"; the value times its multiple fits a size_t;
 * - duration: digits with at most one '.', at least one digit, then nothing,
 *   "ms", "s" or "m"; the value in milliseconds fits 32 bits, and matches
 *   the reference (computed from the decimal digits) within one
 *   millisecond of rounding; a positive value is never 0 ms;
 * - keepalive: one to three fields separated by single commas, each a
 *   uint in [0, 86400], the whole under 64 bytes;
 * - level: one of the documented names in any case.
 * What is accepted also reads back: a size or a duration printed in its
 * plain form parses to the same value. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tcpkit/log.h"
#include "tcpkit/parse.h"
#include "tcpkit/sock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reference: s is all digits (at least one) and fits in *v. */
static int ref_digits(const char *s, size_t n, unsigned long long max, unsigned long long *v)
{
    if (n == 0)
        return 0;
    unsigned long long acc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return 0;
        unsigned d = (unsigned)(s[i] - '0');
        if (acc > (max - d) / 10)
            return 0;
        acc = acc * 10 + d;
    }
    *v = acc;
    return 1;
}

static void check_uint(const char *s, unsigned long min, unsigned long max)
{
    unsigned long got = 12345;
    int rc = tk_parse_uint(s, min, max, &got);
    unsigned long long want;
    int ok = ref_digits(s, strlen(s), ULONG_MAX, &want) && want >= min && want <= max;
    if (rc != (ok ? 0 : -EINVAL) || (ok && got != want) || (!ok && got != 12345))
        abort();
}

static void check_size(const char *s)
{
    size_t got = 12345;
    int rc = tk_parse_size(s, &got);
    size_t n = strspn(s, "0123456789");
    unsigned long long v;
    int ok = ref_digits(s, n, ULLONG_MAX, &v);
    unsigned shift = 0;
    const char *unit = s + n;
    if (ok && *unit) {
        const char *m = strchr("kKmMgG", *unit);
        shift = m ? 10u * (unsigned)((m - "kKmMgG") / 2 + 1) : 0;
        ok = shift && (!strcmp(unit + 1, "") || !strcmp(unit + 1, "B") || !strcmp(unit + 1, "iB"));
    }
    ok = ok && v <= (SIZE_MAX >> shift);
    if (rc != (ok ? 0 : -EINVAL) || (!ok && got != 12345))
        abort();
    if (!ok)
        return;
    if (got != (size_t)(v << shift))
        abort();
    char back[32];
    size_t again;
    snprintf(back, sizeof(back), "%zu", got);
    if (tk_parse_size(back, &again) != 0 || again != got)
        abort();
    if (got % 1024 == 0) {
        snprintf(back, sizeof(back), "%zuKiB", got / 1024);
        if (tk_parse_size(back, &again) != 0 || again != got)
            abort();
    }
}

/* Reference value of a decimal "I.F" (its first 30 fraction digits) as a
 * long double, the rest of the text in *unit and whether any digit is
 * non-zero in *positive; -1 when the text does not start with a number. */
static long double ref_duration(const char *s, const char **unit, int *positive)
{
    size_t ni = strspn(s, "0123456789");
    size_t nf = 0;
    const char *p = s + ni;
    if (*p == '.') {
        nf = strspn(p + 1, "0123456789");
        p += 1 + nf;
    }
    if (ni + nf == 0)
        return -1;
    *unit = p;
    *positive = strcspn(s, "123456789") < (size_t)(p - s);
    long double v = 0;
    for (size_t i = 0; i < ni; i++)
        v = v * 10 + (s[i] - '0');
    long double f = 0, scale = 1;
    for (size_t i = 0; i < nf && i < 30; i++) {
        scale /= 10;
        f += scale * (s[ni + 1 + i] - '0');
    }
    return v + f;
}

static void check_duration(const char *s)
{
    uint32_t got = 12345;
    int rc = tk_parse_duration_ms(s, &got);
    const char *unit = NULL;
    int positive = 0;
    long double v = ref_duration(s, &unit, &positive);
    long double mult = 0;
    if (v >= 0) {
        if (!strcmp(unit, "") || !strcmp(unit, "s"))
            mult = 1000;
        else if (!strcmp(unit, "ms"))
            mult = 1;
        else if (!strcmp(unit, "m"))
            mult = 60000;
    }
    long double ms = v * mult;
    /* Near the top of the range rounding may go either way. */
    if (mult > 0 && ms > (long double)UINT32_MAX - 1 && ms < (long double)UINT32_MAX + 1)
        return;
    int ok = mult > 0 && ms <= (long double)UINT32_MAX;
    if (rc != (ok ? 0 : -EINVAL) || (!ok && got != 12345))
        abort();
    if (!ok)
        return;
    long double want = ms + 0.5L;
    if (want < 1 && positive)
        want = 1;
    if ((long double)got < want - 1.5L || (long double)got > want + 0.5L)
        abort(); /* more than rounding apart */
    if (positive != (got > 0))
        abort(); /* only zero is 0 ms: a positive value never rounds to 0 */
    char back[32];
    uint32_t again;
    snprintf(back, sizeof(back), "%" PRIu32 "ms", got);
    if (tk_parse_duration_ms(back, &again) != 0 || again != got)
        abort();
}

static void check_keepalive(const char *s)
{
    tk_sockopts o;
    tk_sockopts_init(&o);
    tk_sockopts before = o;
    int rc = tk_sock_parse_keepalive(s, &o);

    unsigned long long v[3] = {0, 0, 0};
    size_t nfields = 0;
    int ok = strlen(s) < 64;
    for (const char *p = s; ok;) {
        size_t n = strcspn(p, ",");
        ok = nfields < 3 && ref_digits(p, n, ULONG_MAX, &v[nfields]) && v[nfields] <= 86400;
        nfields++;
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    if (rc != (ok ? 0 : -EINVAL))
        abort();
    if (!ok) {
        if (memcmp(&o, &before, sizeof(o)) != 0)
            abort(); /* a refused value changes nothing */
        return;
    }
    if (o.keepalive != (v[0] > 0) || o.ka_idle_s != (int)v[0] ||
        o.ka_intvl_s != (nfields > 1 ? (int)v[1] : before.ka_intvl_s) ||
        o.ka_count != (nfields > 2 ? (int)v[2] : before.ka_count))
        abort();
}

static void check_level(const char *s)
{
    static const char *const names[] = {"debug", "info", "warn", "warning", "error", "off"};
    int want = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        want |= strcasecmp(s, names[i]) == 0;
    tk_log_level l;
    if ((tk_log_parse_level(s, &l) == 0) != want)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private, exactly sized copy so reads past the end are caught. */
    size_t n = strnlen((const char *)data, size);
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, data, n);
    s[n] = '\0';

    check_uint(s, 0, ULONG_MAX);
    check_uint(s, 1, 65535);
    check_size(s);
    check_duration(s);
    check_keepalive(s);
    check_level(s);
    free(s);
    return 0;
}

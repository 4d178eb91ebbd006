/* Integers, byte sizes and durations as settings spell them. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/parse.h"

int tk_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int tk_parse_size(const char *s, size_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    if (*end) {
        switch (*end) {
        case 'k':
        case 'K': shift = 10; break;
        case 'm':
        case 'M': shift = 20; break;
        case 'g':
        case 'G': shift = 30; break;
        default: return -EINVAL;
        }
        end++;
        /* K, KB or KiB: all binary multiples. */
        if (strcmp(end, "") != 0 && strcmp(end, "B") != 0 && strcmp(end, "iB") != 0)
            return -EINVAL;
    }
    if (v > (SIZE_MAX >> shift))
        return -EINVAL;
    *out = (size_t)(v << shift);
    return 0;
}

int tk_parse_duration_ms(const char *s, uint32_t *out)
{
    if (!s)
        return -EINVAL;
    /* Only the documented form: digits with at most one '.', then a unit.
     * strtod alone would also take exponents ("1e3") and hexadecimal
     * ("0x10"), which no one means as a duration. */
    size_t ni = strspn(s, "0123456789"), nf = 0;
    const char *unit = s + ni;
    if (*unit == '.') {
        nf = strspn(unit + 1, "0123456789");
        unit += 1 + nf;
    }
    if (ni + nf == 0)
        return -EINVAL;
    double scale = 1000.0;
    if (strcmp(unit, "ms") == 0)
        scale = 1.0;
    else if (strcmp(unit, "m") == 0)
        scale = 60000.0;
    else if (*unit && strcmp(unit, "s") != 0)
        return -EINVAL;
    /* Whether the value is positive comes from its digits: a tiny one
     * underflows strtod to 0 (with ERANGE, ignored: a huge one is refused
     * below as over the range). */
    int positive = strcspn(s, "123456789") < (size_t)(unit - s);
    double v = strtod(s, NULL);
    double ms = v * scale;
    if (!(ms <= (double)UINT32_MAX))
        return -EINVAL;
    *out = (uint32_t)(ms + 0.5);
    if (*out == 0 && positive)
        *out = 1;
    return 0;
}

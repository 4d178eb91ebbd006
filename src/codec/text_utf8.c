/* Unicode-aware text transforms over UTF-8. Case mapping uses ICU's simple
 * (one code point to one) mappings from UnicodeData, the same data Go's
 * strings.ToUpper applies, so "straße" upper-cases to "STRAßE" as in Go. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/utf8.h>

#include "tcpkit/text.h"

static ssize_t map_case(const unsigned char *in, size_t n, unsigned char *out, size_t cap,
                        UChar32 (*map)(UChar32))
{
    size_t o = 0;
    int32_t len = (int32_t)n;
    if (n > INT32_MAX)
        return -ENOBUFS;
    for (int32_t i = 0; i < len;) {
        int32_t start = i;
        UChar32 cp;
        U8_NEXT(in, i, len, cp);
        if (cp < 0) {
            /* Not UTF-8: copy the bytes ICU skipped, unchanged. */
            size_t k = (size_t)(i - start);
            if (o + k > cap)
                return -ENOBUFS;
            memcpy(out + o, in + start, k);
            o += k;
            continue;
        }
        UChar32 m = map(cp);
        if (o + (size_t)U8_LENGTH(m) > cap)
            return -ENOBUFS;
        U8_APPEND_UNSAFE(out, o, m);
    }
    return (ssize_t)o;
}

ssize_t tk_utf8_upper(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    return map_case(in, n, out, cap, u_toupper);
}

ssize_t tk_utf8_lower(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    return map_case(in, n, out, cap, u_tolower);
}

ssize_t tk_utf8_reverse(const unsigned char *in, size_t n, unsigned char *out)
{
    size_t o = n;
    int32_t len = n > INT32_MAX ? INT32_MAX : (int32_t)n;
    for (int32_t i = 0; i < len;) {
        int32_t start = i;
        UChar32 cp;
        U8_NEXT(in, i, len, cp);
        /* An invalid sequence counts as single bytes, each kept as it is. */
        size_t k = cp < 0 ? 1 : (size_t)(i - start);
        i = start + (int32_t)k;
        o -= k;
        memcpy(out + o, in + start, k);
    }
    return (ssize_t)n;
}

int tk_utf8_valid(const unsigned char *s, size_t n)
{
    int32_t len = n > INT32_MAX ? INT32_MAX : (int32_t)n;
    for (int32_t i = 0; i < len;) {
        UChar32 cp;
        U8_NEXT(s, i, len, cp);
        if (cp < 0)
            return 0;
    }
    return 1;
}

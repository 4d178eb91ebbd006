/* Unicode-aware text transforms over UTF-8, using utf8proc's simple
 * (one-to-one) case mappings, which is what Go's strings.ToUpper applies. */
#include <errno.h>
#include <string.h>
#include <utf8proc.h>

#include "tcpkit/text.h"

/* Length of the UTF-8 sequence starting at s (1 for an invalid byte). */
static size_t char_len(const unsigned char *s, size_t n, utf8proc_int32_t *cp)
{
    utf8proc_ssize_t r = utf8proc_iterate(s, (utf8proc_ssize_t)n, cp);
    if (r <= 0) {
        *cp = -1;
        return 1;
    }
    return (size_t)r;
}

static ssize_t map_case(const unsigned char *in, size_t n, unsigned char *out, size_t cap,
                        utf8proc_int32_t (*map)(utf8proc_int32_t))
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        size_t k = char_len(in + i, n - i, &cp);
        if (cp < 0) {
            if (o + 1 > cap)
                return -ENOBUFS;
            out[o++] = in[i];
        } else {
            unsigned char enc[4];
            utf8proc_ssize_t m = utf8proc_encode_char(map(cp), enc);
            if (o + (size_t)m > cap)
                return -ENOBUFS;
            memcpy(out + o, enc, (size_t)m);
            o += (size_t)m;
        }
        i += k;
    }
    return (ssize_t)o;
}

ssize_t tk_utf8_upper(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    return map_case(in, n, out, cap, utf8proc_toupper);
}

ssize_t tk_utf8_lower(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    return map_case(in, n, out, cap, utf8proc_tolower);
}

ssize_t tk_utf8_reverse(const unsigned char *in, size_t n, unsigned char *out)
{
    size_t o = n;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        size_t k = char_len(in + i, n - i, &cp);
        o -= k;
        memcpy(out + o, in + i, k);
        i += k;
    }
    return (ssize_t)n;
}

int tk_utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        i += char_len(s + i, n - i, &cp);
        if (cp < 0)
            return 0;
    }
    return 1;
}

/* Chat names and message content: what is allowed, and the case-folded key
 * under which a name is unique. Pure functions over bytes. */
#include <errno.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>

#include "tcpkit/chat.h"

/* Characters that would let one name pose as another or break a line:
 * whitespace, control (Cc) and format (Cf: bidi overrides, zero-width). */
static int bad_name_char(UChar32 cp)
{
    /* Default-ignorable code points (U+034F, variation selectors, ...) are
     * invisible and vanish from the NFKC case-folded key: a name made of
     * them alone would have an empty key. */
    int8_t t = u_charType(cp);
    return u_isUWhiteSpace(cp) || t == U_CONTROL_CHAR || t == U_FORMAT_CHAR || t == U_UNASSIGNED ||
           t == U_SURROGATE || t == U_PRIVATE_USE_CHAR ||
           u_hasBinaryProperty(cp, UCHAR_DEFAULT_IGNORABLE_CODE_POINT);
}

int tk_chat_name_check(const unsigned char *s, size_t n, unsigned max_chars)
{
    if (n == 0)
        return TK_CHAT_NAME_EMPTY;
    if (n > (size_t)max_chars * 4)
        return TK_CHAT_NAME_LONG;
    if (s[0] == '/' || s[0] == '{' || s[0] == '#')
        return TK_CHAT_NAME_START;
    unsigned chars = 0;
    for (int32_t i = 0, len = (int32_t)n; i < len;) {
        UChar32 cp;
        U8_NEXT(s, i, len, cp);
        if (cp < 0)
            return TK_CHAT_NAME_UTF8;
        if (bad_name_char(cp))
            return TK_CHAT_NAME_CHAR;
        if (++chars > max_chars)
            return TK_CHAT_NAME_LONG;
    }
    char key[16];
    int k = tk_chat_name_key(s, n, key, sizeof(key));
    if (k > 0 && (strcmp(key, "system") == 0 || strcmp(key, "server") == 0))
        return TK_CHAT_NAME_RESERVED;
    return 0;
}

int tk_chat_name_key(const unsigned char *s, size_t n, char *key, size_t cap)
{
    /* NFKC case folding: one key for every spelling that looks the same
     * modulo case and compatibility forms ("José" composed or not,
     * fullwidth letters, "Straße" and "STRASSE"). Names are short (checked
     * by the caller); anything longer is not a name. */
    UChar in[512], folded[2048];
    UErrorCode st = U_ZERO_ERROR;
    int32_t ulen = 0;
    if (cap == 0 || n > 512)
        return -ENOBUFS;
    u_strFromUTF8(in, 512, &ulen, (const char *)s, (int32_t)n, &st);
    if (st == U_STRING_NOT_TERMINATED_WARNING)
        st = U_ZERO_ERROR;
    if (U_FAILURE(st))
        return st == U_BUFFER_OVERFLOW_ERROR ? -ENOBUFS : -EINVAL;
    const UNormalizer2 *nfkc_cf = unorm2_getNFKCCasefoldInstance(&st);
    if (U_FAILURE(st))
        return -EINVAL;
    int32_t flen = unorm2_normalize(nfkc_cf, in, ulen, folded, 2048, &st);
    if (st == U_STRING_NOT_TERMINATED_WARNING)
        st = U_ZERO_ERROR;
    if (U_FAILURE(st))
        return -ENOBUFS;
    int32_t klen = 0;
    u_strToUTF8(key, (int32_t)(cap > INT32_MAX ? INT32_MAX : cap), &klen, folded, flen, &st);
    if (U_FAILURE(st) || (size_t)klen >= cap)
        return -ENOBUFS;
    key[klen] = '\0';
    return klen;
}

int tk_chat_content_ok(const unsigned char *s, size_t n)
{
    for (int32_t i = 0, len = (int32_t)n; i < len;) {
        UChar32 cp;
        U8_NEXT(s, i, len, cp);
        if (cp < 0)
            return 0;
        if (cp != '\t' && u_charType(cp) == U_CONTROL_CHAR)
            return 0;
    }
    return n <= INT32_MAX;
}

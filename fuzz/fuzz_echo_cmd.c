/* Fuzzes the echo service's line handling: tk_echo_parse and the UTF-8
 * transforms it applies. Case mapping never needs more than 4*n bytes, keeps
 * valid text valid and reports -ENOBUFS for one byte less than it needs;
 * reversal keeps the bytes and, on valid text, undoes itself. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/echo.h"
#include "tcpkit/text.h"

static void check_parse(const unsigned char *in, size_t n)
{
    const unsigned char *arg = NULL;
    size_t arg_len = 0;
    tk_echo_cmd cmd = tk_echo_parse(in, n, &arg, &arg_len);
    if (cmd == TK_ECHO_CMD_PLAIN) {
        if (arg != in || arg_len != n)
            abort(); /* plain text is echoed whole */
        return;
    }
    if (cmd == TK_ECHO_CMD_UNKNOWN || arg < in || arg > in + n || arg_len != (size_t)(in + n - arg))
        abort();
    /* The command word is everything before the first space, and looking it
     * up by name gives the same command ("quit" aside, which is lower case). */
    const unsigned char *sp = memchr(in, ' ', n);
    size_t word = sp ? (size_t)(sp - in) : n;
    if (arg != in + (sp ? word + 1 : word))
        abort();
    if (!(word == 4 && memcmp(in, "quit", 4) == 0) &&
        tk_echo_cmd_by_name((const char *)in, word) != cmd)
        abort();
}

typedef ssize_t (*case_fn)(const unsigned char *, size_t, unsigned char *, size_t);

static void check_case(case_fn fn, const unsigned char *in, size_t n, int valid)
{
    size_t cap = 4 * n;
    unsigned char *out = malloc(cap ? cap : 1);
    if (!out)
        abort();
    ssize_t r = fn(in, n, out, cap);
    if (r < 0 || (size_t)r > cap)
        abort();
    if (valid && !tk_utf8_valid(out, (size_t)r))
        abort();
    /* The exact size is enough and gives the same bytes; one less is not. */
    unsigned char *exact = malloc(r ? (size_t)r : 1);
    if (!exact)
        abort();
    if (fn(in, n, exact, (size_t)r) != r || (r && memcmp(exact, out, (size_t)r) != 0))
        abort();
    if (r > 0 && fn(in, n, exact, (size_t)r - 1) != -ENOBUFS)
        abort();
    free(exact);
    free(out);
}

static void check_reverse(const unsigned char *in, size_t n, int valid)
{
    unsigned char *once = malloc(n ? n : 1), *twice = malloc(n ? n : 1);
    if (!once || !twice)
        abort();
    if (tk_utf8_reverse(in, n, once) != (ssize_t)n)
        abort();
    size_t count[256] = {0};
    for (size_t i = 0; i < n; i++) {
        count[in[i]]++;
        count[once[i]]--;
    }
    for (int b = 0; b < 256; b++)
        if (count[b])
            abort(); /* the same bytes, only moved */
    /* Only on valid text is reversal its own inverse: reversing invalid bytes
     * can join them into a valid sequence (0xA9 0xC3 becomes "é"). */
    if (valid) {
        if (!tk_utf8_valid(once, n) || tk_utf8_reverse(once, n, twice) != (ssize_t)n ||
            (n && memcmp(twice, in, n) != 0))
            abort();
    }
    free(once);
    free(twice);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_parse(data, size);
    int valid = tk_utf8_valid(data, size);
    check_case(tk_utf8_upper, data, size, valid);
    check_case(tk_utf8_lower, data, size, valid);
    check_reverse(data, size, valid);
    return 0;
}

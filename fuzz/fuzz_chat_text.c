/* Fuzzes the chat server's text-mode parser and its name and content checks:
 * tk_chat_text_parse, tk_chat_name_check, tk_chat_name_key and
 * tk_chat_content_ok (docs/PROTOCOL.md, "Chat").
 *
 * Invariants:
 * - text parse: never a JSON-only command; every returned slice lies inside
 *   the input; limit is -1 unless the command is /history; lines not starting
 *   with '/' are messages (or ignored), "//x" is the message "/x"; commands
 *   that need an argument carry it; the result is deterministic and does
 *   not depend on the case of the command word.
 * - name check: a documented code; an accepted name is valid UTF-8 of 1 to
 *   max code points, starts with none of '/', '{', '#', holds no whitespace,
 *   control or format character and is not "system"/"server" in any case;
 *   acceptance is monotonic in max.
 * - name key: never writes past cap (guard bytes), returns -ENOBUFS,
 *   -EINVAL exactly for bytes that are not UTF-8, or a NUL-terminated key
 *   shorter than cap; a bigger cap gives the same key; a
 *   name accepted with the default limit (32) always has a key when cap is
 *   4n+16; keys ignore ASCII case and folding a key again changes nothing.
 * - content: accepted content is valid UTF-8 without control characters
 *   (C0, DEL, C1) other than TAB; printable ASCII is always accepted. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/chat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GUARD      32
#define GUARD_BYTE 0xA5

/* Strict UTF-8 decode of s[*i..n): returns the code point or -1. */
static long next_cp(const unsigned char *s, size_t n, size_t *i)
{
    unsigned char c = s[*i];
    long cp;
    size_t len;
    if (c < 0x80) {
        (*i)++;
        return c;
    } else if (c >= 0xC2 && c <= 0xDF) {
        cp = c & 0x1F;
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        cp = c & 0x0F;
        len = 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
        cp = c & 0x07;
        len = 4;
    } else {
        return -1;
    }
    if (*i + len > n)
        return -1;
    for (size_t k = 1; k < len; k++) {
        unsigned char cc = s[*i + k];
        if ((cc & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    *i += len;
    return cp;
}

/* Number of code points, or -1 if s is not valid UTF-8. */
static long utf8_count(const unsigned char *s, size_t n)
{
    long count = 0;
    size_t i = 0;
    while (i < n) {
        if (next_cp(s, n, &i) < 0)
            return -1;
        count++;
    }
    return count;
}

static int is_cc(long cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

/* Whitespace (White_Space) and format characters (Cf) that a name must not
 * hold; a reference subset, enough to catch a checker that forgets them. */
static int is_space_or_format(long cp)
{
    static const long ranges[][2] = {
        {0x09, 0x0D},       {0x20, 0x20},       {0x85, 0x85},       {0xA0, 0xA0},
        {0xAD, 0xAD},       {0x600, 0x605},     {0x61C, 0x61C},     {0x6DD, 0x6DD},
        {0x70F, 0x70F},     {0x1680, 0x1680},   {0x180E, 0x180E},   {0x2000, 0x200F},
        {0x2028, 0x202F},   {0x205F, 0x2064},   {0x2066, 0x206F},   {0x3000, 0x3000},
        {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD}, {0x1D173, 0x1D17A},
        {0xE0001, 0xE0001}, {0xE0020, 0xE007F},
    };
    for (size_t k = 0; k < sizeof(ranges) / sizeof(ranges[0]); k++)
        if (cp >= ranges[k][0] && cp <= ranges[k][1])
            return 1;
    return 0;
}

static int inside(const unsigned char *p, size_t len, const unsigned char *base, size_t n)
{
    if (!p)
        return len == 0;
    return p >= base && p <= base + n && len <= (size_t)(base + n - p);
}

static int ascii_ieq(const unsigned char *s, size_t n, const char *word)
{
    size_t wl = strlen(word);
    if (n != wl)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)word[i])
            return 0;
    }
    return 1;
}

/* Calls tk_chat_name_key with guard bytes after cap; returns its result and
 * leaves the key in *out (malloc'd, cap bytes) or NULL. */
static int key_guarded(const unsigned char *s, size_t n, size_t cap, char **out)
{
    unsigned char *buf = malloc(cap + GUARD);
    if (!buf)
        abort();
    memset(buf, GUARD_BYTE, cap + GUARD);
    int rc = tk_chat_name_key(s, n, (char *)buf, cap);
    for (size_t k = cap; k < cap + GUARD; k++)
        if (buf[k] != GUARD_BYTE)
            abort(); /* wrote past cap */
    int utf8 = utf8_count(s, n) >= 0;
    if (!utf8 && rc >= 0)
        abort(); /* a key for bytes that are not UTF-8 */
    if (rc == -ENOBUFS || (rc == -EINVAL && !utf8)) {
        /* no room, or not UTF-8 */
        free(buf);
        *out = NULL;
        return rc;
    }
    if (rc < 0 || (size_t)rc >= cap || buf[rc] != '\0')
        abort();
    *out = (char *)buf;
    return rc;
}

static void check_text_parse(const unsigned char *s, size_t n)
{
    tk_chat_req r, again;
    memset(&r, 0x5A, sizeof(r));
    tk_chat_text_parse(s, n, &r);
    if ((int)r.cmd < TK_CHAT_CMD_NONE || (int)r.cmd > TK_CHAT_CMD_BAD)
        abort();
    if (r.cmd == TK_CHAT_CMD_AUTH || r.cmd == TK_CHAT_CMD_ECHO || r.cmd == TK_CHAT_CMD_PING ||
        r.cmd == TK_CHAT_CMD_PONG)
        abort(); /* JSON-only commands */
    if (!inside(r.name, r.name ? r.name_len : 0, s, n) ||
        !inside(r.text, r.text ? r.text_len : 0, s, n) ||
        !inside(r.password, r.password ? r.password_len : 0, s, n))
        abort();
    if (r.json_root || r.json_id)
        abort();
    if (r.cmd == TK_CHAT_CMD_HISTORY) {
        if (r.limit < -1)
            abort();
    } else if (r.limit != -1) {
        abort();
    }
    if (n == 0 && r.cmd != TK_CHAT_CMD_NONE)
        abort(); /* empty lines are ignored */
    if (n > 0 && s[0] != '/') {
        /* a message to the room: the whole line */
        if (r.cmd != TK_CHAT_CMD_SAY && r.cmd != TK_CHAT_CMD_NONE)
            abort();
        if (r.cmd == TK_CHAT_CMD_SAY && (r.text != s || r.text_len != n))
            abort();
    } else if (n >= 2 && s[0] == '/' && s[1] == '/') {
        /* "//x" sends the message "/x" */
        if (r.cmd != TK_CHAT_CMD_SAY || r.text != s + 1 || r.text_len != n - 1)
            abort();
    } else if (n > 0 && r.cmd == TK_CHAT_CMD_SAY) {
        abort(); /* "/word" is a command, never a message */
    }
    if (r.cmd == TK_CHAT_CMD_SAY && (!r.text || r.text_len == 0))
        abort();
    if ((r.cmd == TK_CHAT_CMD_JOIN || r.cmd == TK_CHAT_CMD_NICK) && (!r.name || r.name_len == 0))
        abort();
    if (r.cmd == TK_CHAT_CMD_MSG && (!r.name || r.name_len == 0 || !r.text || r.text_len == 0))
        abort();
    if (r.cmd == TK_CHAT_CMD_REGISTER && !(r.text && r.text_len) && !(r.password && r.password_len))
        abort();

    memset(&again, 0, sizeof(again));
    tk_chat_text_parse(s, n, &again);
    if (again.cmd != r.cmd || again.name != r.name || again.name_len != r.name_len ||
        again.text != r.text || again.text_len != r.text_len || again.limit != r.limit)
        abort();

    /* commands are case-insensitive: "/JOIN dev" is "/join dev" */
    if (n > 1 && s[0] == '/' && s[1] != '/') {
        unsigned char *up = malloc(n);
        if (!up)
            abort();
        memcpy(up, s, n);
        for (size_t i = 1; i < n && up[i] != ' '; i++)
            if (up[i] >= 'a' && up[i] <= 'z')
                up[i] = (unsigned char)(up[i] - 'a' + 'A');
        tk_chat_req u;
        memset(&u, 0, sizeof(u));
        tk_chat_text_parse(up, n, &u);
        if (u.cmd != r.cmd || u.name_len != r.name_len || u.text_len != r.text_len ||
            u.limit != r.limit || (u.name && (size_t)(u.name - up) != (size_t)(r.name - s)) ||
            (u.text && (size_t)(u.text - up) != (size_t)(r.text - s)))
            abort();
        free(up);
    }
}

static void check_name(const unsigned char *s, size_t n, unsigned max)
{
    int rc = tk_chat_name_check(s, n, max);
    if (rc != 0 && rc != TK_CHAT_NAME_EMPTY && rc != TK_CHAT_NAME_LONG && rc != TK_CHAT_NAME_UTF8 &&
        rc != TK_CHAT_NAME_CHAR && rc != TK_CHAT_NAME_START && rc != TK_CHAT_NAME_RESERVED)
        abort();
    if (n == 0 && rc == 0)
        abort();
    if (rc != 0)
        return;
    long count = utf8_count(s, n);
    if (count < 1 || (unsigned long)count > max)
        abort();
    if (s[0] == '/' || s[0] == '{' || s[0] == '#')
        abort();
    size_t i = 0;
    while (i < n) {
        long cp = next_cp(s, n, &i);
        if (cp < 0 || is_cc(cp) || is_space_or_format(cp))
            abort();
    }
    if (ascii_ieq(s, n, "system") || ascii_ieq(s, n, "server"))
        abort();
    if (max < 0xFFFF && tk_chat_name_check(s, n, max + 1) != 0)
        abort(); /* a longer limit accepts what a shorter one did */
}

static void check_key(const unsigned char *s, size_t n)
{
    static const size_t caps[] = {1, 2, 5, 16, 64};
    char *big = NULL;
    size_t bigcap = 4 * n + 16;
    int bigrc = key_guarded(s, n, bigcap, &big);
    int valid = tk_chat_name_check(s, n, 32) == 0;
    if (valid && bigrc < 0)
        abort(); /* an accepted name always has a key given room for it */
    for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
        char *small = NULL;
        int rc = key_guarded(s, n, caps[k], &small);
        if (rc >= 0) {
            /* fits a small buffer: the same key as with a big one */
            if (bigrc != rc || memcmp(small, big, (size_t)rc + 1) != 0)
                abort();
        } else if (bigrc >= 0 && (size_t)bigrc + 1 <= caps[k]) {
            abort(); /* refused although the key fits */
        }
        free(small);
    }
    if (valid && bigrc >= 0) {
        if (bigrc == 0 || strlen(big) != (size_t)bigrc)
            abort();
        /* ASCII case does not matter */
        unsigned char *flip = malloc(n ? n : 1);
        if (!flip)
            abort();
        for (size_t i = 0; i < n; i++) {
            unsigned char c = s[i];
            if (c >= 'a' && c <= 'z')
                c = (unsigned char)(c - 'a' + 'A');
            else if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c - 'A' + 'a');
            flip[i] = c;
        }
        char *k2 = NULL;
        int rc2 = key_guarded(flip, n, bigcap, &k2);
        if (rc2 != bigrc || memcmp(k2, big, (size_t)bigrc) != 0)
            abort();
        free(k2);
        free(flip);
        /* folding is idempotent */
        char *k3 = NULL;
        int rc3 =
            key_guarded((const unsigned char *)big, (size_t)bigrc, 4 * (size_t)bigrc + 16, &k3);
        if (rc3 != bigrc || memcmp(k3, big, (size_t)bigrc) != 0)
            abort();
        free(k3);
    }
    free(big);
}

static void check_content(const unsigned char *s, size_t n)
{
    int ok = tk_chat_content_ok(s, n);
    if (ok) {
        size_t i = 0;
        while (i < n) {
            long cp = next_cp(s, n, &i);
            if (cp < 0)
                abort(); /* invalid UTF-8 accepted */
            if (is_cc(cp) && cp != '\t')
                abort(); /* a control character accepted */
        }
    } else if (n > 0) {
        for (size_t i = 0; i < n; i++)
            if (!((s[i] >= 0x20 && s[i] < 0x7F) || s[i] == '\t'))
                return;
        abort(); /* printable ASCII refused */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy so reads past the end are caught by ASan. */
    unsigned char *s = malloc(size ? size : 1);
    if (!s)
        return 0;
    if (size)
        memcpy(s, data, size);

    check_text_parse(s, size);
    check_name(s, size, 32);
    check_name(s, size, 1);
    if (size > 0)
        check_name(s + 1, size - 1, 1u + s[0] % 40u);
    check_key(s, size);
    check_content(s, size);

    /* The same checks on each line of a multi-line input, as the server sees
     * them after framing. */
    size_t start = 0;
    for (size_t i = 0; i < size; i++) {
        if (s[i] == '\n') {
            size_t len = i - start;
            if (len > 0 && s[start + len - 1] == '\r')
                len--;
            unsigned char *line = malloc(len ? len : 1);
            if (!line)
                abort();
            memcpy(line, s + start, len);
            check_text_parse(line, len);
            check_name(line, len, 32);
            check_content(line, len);
            free(line);
            start = i + 1;
        }
    }
    free(s);
    return 0;
}

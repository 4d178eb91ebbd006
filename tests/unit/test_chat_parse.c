/* Chat parsers: tk_chat_name_check / tk_chat_name_key (names), tk_chat_content_ok
 * (message content), tk_chat_text_parse (text front end) and tk_chat_json_parse
 * (JSON front end). The rules are those of the "## Chat" section of
 * docs/PROTOCOL.md. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/chat.h"
#include "tcpkit/text.h"

/* ---- helpers ---- */

/* tk_chat_name_check of a NUL-terminated name with the default 32 limit. */
static int name_check(const char *s)
{
    return tk_chat_name_check((const unsigned char *)s, strlen(s), 32);
}

static void expect_name(const char *s, int want)
{
    int got = name_check(s);
    if (got != want)
        print_error("tk_chat_name_check(\"%s\") = %d, want %d\n", s, got, want);
    assert_int_equal(got, want);
}

/* The key of s, which must succeed; returned in a static buffer slot. */
static const char *key_of(const char *s, char *buf, size_t cap)
{
    memset(buf, 'X', cap);
    int n = tk_chat_name_key((const unsigned char *)s, strlen(s), buf, cap);
    if (n < 0)
        print_error("tk_chat_name_key(\"%s\") = %d\n", s, n);
    assert_true(n >= 0);
    assert_int_equal((size_t)n, strlen(buf));
    return buf;
}

static void expect_key(const char *s, const char *want)
{
    char buf[256];
    assert_string_equal(key_of(s, buf, sizeof(buf)), want);
}

static int content_ok(const char *s)
{
    return tk_chat_content_ok((const unsigned char *)s, strlen(s));
}

/* s repeated n times into buf. */
static const char *repeat(char *buf, size_t cap, const char *s, unsigned n)
{
    size_t len = strlen(s), off = 0;
    assert_true(len * n < cap);
    for (unsigned i = 0; i < n; i++, off += len)
        memcpy(buf + off, s, len);
    buf[off] = '\0';
    return buf;
}

/* The slice p[0..n) equals want; NULL want means the slice is absent. */
static void expect_slice(const unsigned char *p, size_t n, const char *want)
{
    if (!want) {
        assert_null(p);
        assert_int_equal(n, 0);
        return;
    }
    assert_non_null(p);
    if (n != strlen(want) || memcmp(p, want, n) != 0)
        print_error("got \"%.*s\" (%zu bytes), want \"%s\"\n", (int)n, (const char *)p, n, want);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}

/* Parses a text line; strings in r must point into line. */
static void text_parse(const char *line, tk_chat_req *r)
{
    memset(r, 0xa5, sizeof(*r)); /* the parser must set every field */
    size_t n = strlen(line);
    tk_chat_text_parse((const unsigned char *)line, n, r);
    const unsigned char *lo = (const unsigned char *)line, *hi = lo + n;
    if (r->name)
        assert_true(r->name >= lo && r->name + r->name_len <= hi);
    if (r->text)
        assert_true(r->text >= lo && r->text + r->text_len <= hi);
    if (r->password)
        assert_true(r->password >= lo && r->password + r->password_len <= hi);
    assert_null(r->json_root);
    assert_null(r->json_id);
}

/* A text line parsed to cmd with the given name, text and password. */
static void expect_text(const char *line, tk_chat_cmd cmd, const char *name, const char *text,
                        const char *password)
{
    tk_chat_req r;
    text_parse(line, &r);
    if (r.cmd != cmd)
        print_error("tk_chat_text_parse(\"%s\").cmd = %d, want %d\n", line, (int)r.cmd, (int)cmd);
    assert_int_equal(r.cmd, cmd);
    if (cmd == TK_CHAT_CMD_BAD || cmd == TK_CHAT_CMD_UNKNOWN)
        return; /* what else is filled in is unspecified */
    expect_slice(r.name, r.name_len, name);
    expect_slice(r.text, r.text_len, text);
    expect_slice(r.password, r.password_len, password);
    if (cmd != TK_CHAT_CMD_HISTORY)
        assert_int_equal(r.limit, -1);
}

static void expect_history(const char *line, long limit)
{
    tk_chat_req r;
    text_parse(line, &r);
    if (limit == 0) {
        if (r.cmd != TK_CHAT_CMD_BAD)
            print_error("\"%s\" should be refused, got cmd %d limit %ld\n", line, (int)r.cmd,
                        r.limit);
        assert_int_equal(r.cmd, TK_CHAT_CMD_BAD);
        return;
    }
    assert_int_equal(r.cmd, TK_CHAT_CMD_HISTORY);
    assert_int_equal(r.limit, limit);
    assert_null(r.name);
}

/* The root of the request being looked at, so that a failed assertion does
 * not also leak it: the per-test teardown releases it. */
static void *live_root;

static int release_live(void **state)
{
    (void)state;
    if (live_root)
        json_decref((json_t *)live_root);
    live_root = NULL;
    return 0;
}

/* tk_chat_json_free, forgetting the live root. */
static void jfree(tk_chat_req *r)
{
    tk_chat_json_free(r);
    assert_null(r->json_root);
    assert_null(r->json_id);
    live_root = NULL;
}

/* A JSON parse; msg receives the message. */
static int json_parse(const char *line, tk_chat_req *r, const char **code, char *msg, size_t cap)
{
    assert_null(live_root); /* the previous request was freed */
    memset(r, 0xa5, sizeof(*r));
    *code = NULL;
    msg[0] = '\0';
    int rc = tk_chat_json_parse((const unsigned char *)line, strlen(line), r, code, msg, cap);
    live_root = r->json_root;
    return rc;
}

/* A line that parses: returns the request, to be freed by the caller. */
static void json_ok(const char *line, tk_chat_req *r, tk_chat_cmd cmd)
{
    const char *code;
    char msg[256];
    int rc = json_parse(line, r, &code, msg, sizeof(msg));
    if (rc != 0)
        print_error("tk_chat_json_parse(%s) = %d (%s: %s)\n", line, rc, code ? code : "?", msg);
    assert_int_equal(rc, 0);
    assert_non_null(r->json_root);
    assert_int_equal(r->cmd, cmd);
}

/* A line that is refused with code and a message containing want_msg (if not
 * NULL); the request is freed. */
static void json_err(const char *line, const char *want_code, const char *want_msg)
{
    tk_chat_req r;
    const char *code;
    char msg[256];
    int rc = json_parse(line, &r, &code, msg, sizeof(msg));
    if (rc == 0 || !code || strcmp(code, want_code) != 0 || (want_msg && !strstr(msg, want_msg)))
        print_error("tk_chat_json_parse(%s) = %d (%s: %s), want %s: %s\n", line, rc,
                    code ? code : "(null)", msg, want_code, want_msg ? want_msg : "");
    jfree(&r);
    assert_true(rc < 0);
    assert_non_null(code);
    assert_string_equal(code, want_code);
    assert_true(msg[0] != '\0');
    if (want_msg)
        assert_non_null(strstr(msg, want_msg));
}

/* ---- names ---- */

/* Ordinary names in several scripts are accepted. */
static void names_plain_ok(void **state)
{
    (void)state;
    expect_name("alice", 0);
    expect_name("a", 0);
    expect_name("Bob_42", 0);
    expect_name("bob-the.builder", 0);
    expect_name("Jos\xc3\xa9", 0);                      /* José */
    expect_name("\xe6\x97\xa5\xe6\x9c\xac", 0);         /* 日本 */
    expect_name("\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd", 0); /* Иван */
    expect_name("\xf0\x9f\x98\x80", 0);                 /* an emoji */
    expect_name("Stra\xc3\x9f"
                "e",
                0);
    /* The refused first characters are fine later on. */
    expect_name("a/b", 0);
    expect_name("a{b", 0);
    expect_name("a#b", 0);
    expect_name("0", 0);
}

/* An empty name is TK_CHAT_NAME_EMPTY. */
static void names_empty(void **state)
{
    (void)state;
    expect_name("", TK_CHAT_NAME_EMPTY);
    assert_int_equal(tk_chat_name_check((const unsigned char *)"x", 0, 32), TK_CHAT_NAME_EMPTY);
}

/* Names may not start with '/', '{' or '#'. */
static void names_bad_start(void **state)
{
    (void)state;
    expect_name("/", TK_CHAT_NAME_START);
    expect_name("/alice", TK_CHAT_NAME_START);
    expect_name("{alice", TK_CHAT_NAME_START);
    expect_name("{", TK_CHAT_NAME_START);
    expect_name("#dev", TK_CHAT_NAME_START);
    expect_name("##", TK_CHAT_NAME_START);
}

/* "system" and "server" are reserved in every case spelling. */
static void names_reserved(void **state)
{
    (void)state;
    expect_name("system", TK_CHAT_NAME_RESERVED);
    expect_name("server", TK_CHAT_NAME_RESERVED);
    expect_name("System", TK_CHAT_NAME_RESERVED);
    expect_name("SERVER", TK_CHAT_NAME_RESERVED);
    expect_name("sYsTeM", TK_CHAT_NAME_RESERVED);
    /* U+017F LATIN SMALL LETTER LONG S case-folds to "s". */
    expect_name("\xc5\xbfystem", TK_CHAT_NAME_RESERVED);
    /* Only the exact words. */
    expect_name("systems", 0);
    expect_name("servers", 0);
    expect_name("sys", 0);
    expect_name("my_server", 0);
    expect_name("serve", 0);
}

/* Whitespace anywhere, ASCII or not, is TK_CHAT_NAME_CHAR. */
static void names_whitespace(void **state)
{
    (void)state;
    expect_name("a b", TK_CHAT_NAME_CHAR);
    expect_name(" alice", TK_CHAT_NAME_CHAR);
    expect_name("alice ", TK_CHAT_NAME_CHAR);
    expect_name("a\tb", TK_CHAT_NAME_CHAR);
    expect_name("a\nb", TK_CHAT_NAME_CHAR);
    expect_name("a\rb", TK_CHAT_NAME_CHAR);
    expect_name("a\vb", TK_CHAT_NAME_CHAR);
    expect_name("a\fb", TK_CHAT_NAME_CHAR);
    expect_name("a\xc2\xa0"
                "b",
                TK_CHAT_NAME_CHAR);                   /* U+00A0 NO-BREAK SPACE */
    expect_name("a\xe3\x80\x80", TK_CHAT_NAME_CHAR);  /* U+3000 IDEOGRAPHIC SPACE */
    expect_name("\xe3\x80\x80", TK_CHAT_NAME_CHAR);   /* alone */
    expect_name("a\xe2\x80\x83z", TK_CHAT_NAME_CHAR); /* U+2003 EM SPACE */
    expect_name("a\xe2\x80\xa8z", TK_CHAT_NAME_CHAR); /* U+2028 LINE SEPARATOR */
    expect_name("a\xe1\x9a\x80z", TK_CHAT_NAME_CHAR); /* U+1680 OGHAM SPACE MARK */
    expect_name("a\xe2\x80\xafz", TK_CHAT_NAME_CHAR); /* U+202F NARROW NO-BREAK SPACE */
}

/* Control characters (C0, DEL, C1, NUL) are TK_CHAT_NAME_CHAR. */
static void names_control(void **state)
{
    (void)state;
    expect_name("a\x01"
                "b",
                TK_CHAT_NAME_CHAR);
    expect_name("\x1b[31mred", TK_CHAT_NAME_CHAR);
    expect_name("a\x7f", TK_CHAT_NAME_CHAR);     /* DEL */
    expect_name("a\xc2\x85", TK_CHAT_NAME_CHAR); /* U+0085 NEXT LINE */
    expect_name("a\xc2\x9b"
                "b",
                TK_CHAT_NAME_CHAR); /* U+009B CSI */
    assert_int_equal(tk_chat_name_check((const unsigned char *)"a\0b", 3, 32), TK_CHAT_NAME_CHAR);
}

/* Format characters (Cf: bidi controls, zero-width) are TK_CHAT_NAME_CHAR, as
 * are private-use and unassigned code points. */
static void names_format_and_invisible(void **state)
{
    (void)state;
    expect_name("alice\xe2\x80\xae", TK_CHAT_NAME_CHAR); /* U+202E RIGHT-TO-LEFT OVERRIDE */
    expect_name("\xe2\x80\xae"
                "ecila",
                TK_CHAT_NAME_CHAR);
    expect_name("al\xe2\x80\x8bice", TK_CHAT_NAME_CHAR); /* U+200B ZERO WIDTH SPACE */
    /* Default-ignorable, not a format character: invisible, and gone from
     * the key, so alone it would make an empty key (found by fuzz_chat_text). */
    expect_name("\xcd\x8f", TK_CHAT_NAME_CHAR);          /* U+034F COMBINING GRAPHEME JOINER */
    expect_name("bob\xef\xb8\x8f", TK_CHAT_NAME_CHAR);   /* U+FE0F VARIATION SELECTOR-16 */
    expect_name("al\xe2\x80\x8dice", TK_CHAT_NAME_CHAR); /* U+200D ZERO WIDTH JOINER */
    expect_name("\xef\xbb\xbf"
                "alice",
                TK_CHAT_NAME_CHAR);                   /* U+FEFF BOM */
    expect_name("a\xe2\x81\xa6z", TK_CHAT_NAME_CHAR); /* U+2066 LEFT-TO-RIGHT ISOLATE */
    expect_name("a\xe2\x80\x8ez", TK_CHAT_NAME_CHAR); /* U+200E LEFT-TO-RIGHT MARK */
    expect_name("ali\xc2\xad"
                "ce",
                TK_CHAT_NAME_CHAR);                  /* U+00AD SOFT HYPHEN */
    expect_name("a\xee\x80\x80", TK_CHAT_NAME_CHAR); /* U+E000 private use */
    expect_name("a\xcd\xb8", TK_CHAT_NAME_CHAR);     /* U+0378 unassigned */
    /* Combining marks are letters' parts, not format characters. */
    expect_name("e\xcc\x81", 0);
}

/* Bytes that are not UTF-8 are TK_CHAT_NAME_UTF8. */
static void names_invalid_utf8(void **state)
{
    (void)state;
    expect_name("\xff", TK_CHAT_NAME_UTF8);
    expect_name("a\xfe"
                "b",
                TK_CHAT_NAME_UTF8);
    expect_name("\x80"
                "abc",
                TK_CHAT_NAME_UTF8);              /* lone continuation byte */
    expect_name("abc\xc3", TK_CHAT_NAME_UTF8);   /* truncated at the end */
    expect_name("a\xe2\x82", TK_CHAT_NAME_UTF8); /* truncated three-byte sequence */
    expect_name("\xc3("
                "x",
                TK_CHAT_NAME_UTF8);                     /* lead without continuation */
    expect_name("\xc0\xaf", TK_CHAT_NAME_UTF8);         /* overlong '/' */
    expect_name("\xe0\x80\xaf", TK_CHAT_NAME_UTF8);     /* overlong, three bytes */
    expect_name("\xed\xa0\x80", TK_CHAT_NAME_UTF8);     /* UTF-16 surrogate D800 */
    expect_name("\xf4\x90\x80\x80", TK_CHAT_NAME_UTF8); /* above U+10FFFF */
    expect_name("\xf8\x88\x80\x80\x80", TK_CHAT_NAME_UTF8);
}

/* The limit counts code points, not bytes: 32 of anything fit, 33 do not. */
static void names_length_in_code_points(void **state)
{
    (void)state;
    char buf[512];
    expect_name(repeat(buf, sizeof(buf), "a", 32), 0);
    expect_name(repeat(buf, sizeof(buf), "a", 33), TK_CHAT_NAME_LONG);
    expect_name(repeat(buf, sizeof(buf), "\xc3\xa9", 32), 0); /* é, 64 bytes */
    expect_name(repeat(buf, sizeof(buf), "\xc3\xa9", 33), TK_CHAT_NAME_LONG);
    expect_name(repeat(buf, sizeof(buf), "\xe6\x97\xa5", 32), 0); /* 日, 96 bytes */
    expect_name(repeat(buf, sizeof(buf), "\xe6\x97\xa5", 33), TK_CHAT_NAME_LONG);
    expect_name(repeat(buf, sizeof(buf), "\xf0\x9f\x98\x80", 32), 0); /* 128 bytes */
    expect_name(repeat(buf, sizeof(buf), "\xf0\x9f\x98\x80", 33), TK_CHAT_NAME_LONG);
    /* e + COMBINING ACUTE is two code points: 16 fit, 17 do not. */
    expect_name(repeat(buf, sizeof(buf), "e\xcc\x81", 16), 0);
    expect_name(repeat(buf, sizeof(buf), "e\xcc\x81", 17), TK_CHAT_NAME_LONG);
    /* Far too many bytes. */
    expect_name(repeat(buf, sizeof(buf), "a", 500), TK_CHAT_NAME_LONG);
    /* max_chars is honoured. */
    assert_int_equal(tk_chat_name_check((const unsigned char *)"abcd", 4, 4), 0);
    assert_int_equal(tk_chat_name_check((const unsigned char *)"abcd", 4, 3), TK_CHAT_NAME_LONG);
    assert_int_equal(tk_chat_name_check((const unsigned char *)"\xc3\xa9\xc3\xa9", 4, 2), 0);
    assert_int_equal(tk_chat_name_check((const unsigned char *)"\xc3\xa9\xc3\xa9\xc3\xa9", 6, 2),
                     TK_CHAT_NAME_LONG);
}

/* Only n bytes are read. */
static void names_length_bounds_input(void **state)
{
    (void)state;
    assert_int_equal(tk_chat_name_check((const unsigned char *)"bob carol", 3, 32), 0);
    assert_int_equal(tk_chat_name_check((const unsigned char *)"system!", 6, 32),
                     TK_CHAT_NAME_RESERVED);
}

/* Case folding makes Alice, ALICE and alice one name; Straße is STRASSE. */
static void name_keys_fold_case(void **state)
{
    (void)state;
    char a[64], b[64], c[64];
    assert_string_equal(key_of("Alice", a, sizeof(a)), "alice");
    assert_string_equal(key_of("ALICE", b, sizeof(b)), "alice");
    assert_string_equal(key_of("alice", c, sizeof(c)), "alice");
    assert_string_equal(a, b);
    assert_string_equal(b, c);
    expect_key("Stra\xc3\x9f"
               "e",
               "strasse");
    expect_key("STRASSE", "strasse");
    expect_key("stra\xe1\xba\x9e"
               "e",
               "strasse"); /* U+1E9E CAPITAL SHARP S */
    expect_key("Bob_42", "bob_42");
    expect_key("JOS\xc3\x89", "jos\xc3\xa9");
    /* Greek: capital and final sigma both fold to σ. */
    expect_key("\xce\xa3\xce\x91\xce\xa3", "\xcf\x83\xce\xb1\xcf\x83");
    expect_key("\xcf\x83\xce\xb1\xcf\x82", "\xcf\x83\xce\xb1\xcf\x83");
    /* KELVIN SIGN folds to k. */
    expect_key("\xe2\x84\xaa"
               "en",
               "ken");
    /* Different names keep different keys. */
    char d[64], e[64];
    assert_string_not_equal(key_of("alice", d, sizeof(d)), key_of("alicia", e, sizeof(e)));
    assert_string_not_equal(key_of("strasse", d, sizeof(d)), key_of("strase", e, sizeof(e)));
}

/* The key must fit with its NUL; folding may make it longer than the name. */
/* Spellings that look the same are one name: composed and decomposed
 * accents, fullwidth letters (so "ｓｙｓｔｅｍ" is reserved like "system"). */
static void name_keys_normalise(void **state)
{
    (void)state;
    char a[64], b[64];
    assert_int_equal(tk_chat_name_key((const unsigned char *)"Jos\xc3\xa9", 5, a, sizeof(a)), 5);
    assert_int_equal(tk_chat_name_key((const unsigned char *)"Jose\xcc\x81", 6, b, sizeof(b)), 5);
    assert_string_equal(a, b);
    assert_string_equal(a, "jos\xc3\xa9");
    const char *fullwidth =
        "\xef\xbd\x93\xef\xbd\x99\xef\xbd\x93\xef\xbd\x94\xef\xbd\x85\xef\xbd\x8d";
    assert_int_equal(
        tk_chat_name_key((const unsigned char *)fullwidth, strlen(fullwidth), a, sizeof(a)), 6);
    assert_string_equal(a, "system");
    assert_int_equal(tk_chat_name_check((const unsigned char *)fullwidth, strlen(fullwidth), 32),
                     TK_CHAT_NAME_RESERVED);
}

static void name_key_buffer(void **state)
{
    (void)state;
    char buf[16];
    assert_int_equal(tk_chat_name_key((const unsigned char *)"Alice", 5, buf, 6), 5);
    assert_string_equal(buf, "alice");
    assert_int_equal(tk_chat_name_key((const unsigned char *)"Alice", 5, buf, 5), -ENOBUFS);
    assert_int_equal(tk_chat_name_key((const unsigned char *)"Alice", 5, buf, 0), -ENOBUFS);
    /* NFKC case folding composes: U+1FB7 (3 bytes) becomes U+1FB6 U+03B9,
     * 5 bytes, which needs a 6-byte buffer with its NUL. */
    assert_int_equal(tk_chat_name_key((const unsigned char *)"\xe1\xbe\xb7", 3, buf, sizeof(buf)),
                     5);
    assert_string_equal(buf, "\xe1\xbe\xb6\xce\xb9");
    assert_int_equal(tk_chat_name_key((const unsigned char *)"\xe1\xbe\xb7", 3, buf, 5), -ENOBUFS);
    /* Only n bytes are read. */
    assert_int_equal(tk_chat_name_key((const unsigned char *)"ABCDEF", 3, buf, sizeof(buf)), 3);
    assert_string_equal(buf, "abc");
    /* The worst case for a 32-character name still fits a CHAT_KEY_MAX key. */
    char name[128], big[512];
    repeat(name, sizeof(name), "\xe1\xbe\xb7", 32);
    assert_int_equal(name_check(name), 0);
    assert_int_equal(tk_chat_name_key((const unsigned char *)name, strlen(name), big, sizeof(big)),
                     160);
    char want[256];
    assert_string_equal(big, repeat(want, sizeof(want), "\xe1\xbe\xb6\xce\xb9", 32));
    /* Invalid UTF-8 gets no key. */
    assert_true(tk_chat_name_key((const unsigned char *)"a\xff", 2, buf, sizeof(buf)) < 0);
}

/* ---- content ---- */

/* UTF-8 text with TAB is fine; so is any printable or format character. */
static void content_accepted(void **state)
{
    (void)state;
    assert_true(content_ok("hello, world"));
    assert_true(content_ok("a\tb\t"));
    assert_true(content_ok("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80"));
    assert_true(content_ok("  leading and trailing spaces  "));
    assert_true(content_ok("a\xc2\xa0"
                           "b")); /* U+00A0 */
    /* Only control characters (Cc) are refused: format characters and line
     * separators are content (PROTOCOL.md forbids only controls). */
    assert_true(content_ok("\xe2\x80\xae"
                           "abc")); /* U+202E */
    assert_true(content_ok("a\xe2\x80\x8b"
                           "b")); /* U+200B */
    assert_true(content_ok("a\xe2\x80\xa8"
                           "b")); /* U+2028 */
    /* Length is not this function's business: empty passes here (the service
     * refuses empty messages itself), as does a long one. */
    assert_true(tk_chat_content_ok((const unsigned char *)"", 0));
    char big[8193];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_true(content_ok(big));
    /* Only n bytes are read. */
    assert_true(tk_chat_content_ok((const unsigned char *)"ok\x01", 2));
}

/* Every other control character, including DEL and the C1 range, is refused,
 * as is anything that is not UTF-8. */
static void content_refused(void **state)
{
    (void)state;
    assert_false(content_ok("a\nb"));
    assert_false(content_ok("a\rb"));
    assert_false(content_ok("\x1b[2J"));
    assert_false(content_ok("bell\x07"));
    assert_false(content_ok("a\x0b"
                            "b"));
    assert_false(content_ok("a\x1f"));
    assert_false(tk_chat_content_ok((const unsigned char *)"a\0b", 3));
    assert_false(content_ok("del\x7f"));     /* DEL 0x7f is Cc: refused */
    assert_false(content_ok("nel\xc2\x85")); /* U+0085 (C1) is Cc: refused */
    assert_false(content_ok("csi\xc2\x9b"
                            "2J"));       /* U+009B CSI */
    assert_false(content_ok("\xc2\x80")); /* U+0080 */
    assert_false(content_ok("\xc2\x9f")); /* U+009F */
    /* Invalid UTF-8. */
    assert_false(content_ok("\xff"));
    assert_false(content_ok("abc\xc3"));
    assert_false(content_ok("\xc0\xaf"));
    assert_false(content_ok("\xed\xa0\x80"));
    assert_false(content_ok("\xf4\x90\x80\x80"));
    assert_false(content_ok("\x80"));
}

/* ---- text front end ---- */

/* Empty and blank lines are ignored. */
static void text_blank_lines(void **state)
{
    (void)state;
    expect_text("", TK_CHAT_CMD_NONE, NULL, NULL, NULL);
    expect_text(" ", TK_CHAT_CMD_NONE, NULL, NULL, NULL);
    expect_text("     ", TK_CHAT_CMD_NONE, NULL, NULL, NULL);
    expect_text("\t \t", TK_CHAT_CMD_NONE, NULL, NULL, NULL);
}

/* Lines not starting with '/' are messages, kept as they are; "//x" says "/x". */
static void text_messages(void **state)
{
    (void)state;
    expect_text("hello everyone", TK_CHAT_CMD_SAY, NULL, "hello everyone", NULL);
    expect_text("x", TK_CHAT_CMD_SAY, NULL, "x", NULL);
    expect_text("  indented  ", TK_CHAT_CMD_SAY, NULL, "  indented  ", NULL);
    expect_text(" /join dev", TK_CHAT_CMD_SAY, NULL, " /join dev", NULL);
    expect_text("say /join dev", TK_CHAT_CMD_SAY, NULL, "say /join dev", NULL);
    expect_text("{\"type\":\"PING\"}", TK_CHAT_CMD_SAY, NULL, "{\"type\":\"PING\"}", NULL);
    expect_text("//join dev", TK_CHAT_CMD_SAY, NULL, "/join dev", NULL);
    expect_text("//", TK_CHAT_CMD_SAY, NULL, "/", NULL);
    expect_text("///", TK_CHAT_CMD_SAY, NULL, "//", NULL);
    expect_text("// spaced", TK_CHAT_CMD_SAY, NULL, "/ spaced", NULL);
}

/* /join and /nick take exactly one word. */
static void text_join_and_nick(void **state)
{
    (void)state;
    expect_text("/join dev", TK_CHAT_CMD_JOIN, "dev", NULL, NULL);
    expect_text("/join   dev   ", TK_CHAT_CMD_JOIN, "dev", NULL, NULL);
    expect_text("/join caf\xc3\xa9", TK_CHAT_CMD_JOIN, "caf\xc3\xa9", NULL, NULL);
    expect_text("/join", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/join ", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/join    ", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/join a b", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/nick bob", TK_CHAT_CMD_NICK, "bob", NULL, NULL);
    expect_text("/nick  Bob2 ", TK_CHAT_CMD_NICK, "Bob2", NULL, NULL);
    expect_text("/nick", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/nick bob smith", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
}

/* Command words are matched without regard to case. */
static void text_command_case(void **state)
{
    (void)state;
    expect_text("/JOIN dev", TK_CHAT_CMD_JOIN, "dev", NULL, NULL);
    expect_text("/Join Dev", TK_CHAT_CMD_JOIN, "Dev", NULL, NULL);
    expect_text("/NiCk x", TK_CHAT_CMD_NICK, "x", NULL, NULL);
    expect_text("/HELP", TK_CHAT_CMD_HELP, NULL, NULL, NULL);
    expect_text("/Quit", TK_CHAT_CMD_QUIT, NULL, NULL, NULL);
    expect_text("/MSG bob hi", TK_CHAT_CMD_MSG, "bob", "hi", NULL);
    expect_text("/HISTORY 5", TK_CHAT_CMD_HISTORY, NULL, NULL, NULL);
    expect_text("/Register Secret Pw", TK_CHAT_CMD_REGISTER, NULL, NULL, "Secret Pw");
    expect_text("/USERS", TK_CHAT_CMD_USERS, NULL, NULL, NULL);
    expect_text("/RoOmS", TK_CHAT_CMD_ROOMS, NULL, NULL, NULL);
    expect_text("/LEAVE", TK_CHAT_CMD_LEAVE, NULL, NULL, NULL);
    expect_text("/TIME", TK_CHAT_CMD_TIME, NULL, NULL, NULL);
    expect_text("/Stats", TK_CHAT_CMD_STATS, NULL, NULL, NULL);
}

/* Commands without arguments ignore anything after them. */
static void text_bare_commands(void **state)
{
    (void)state;
    expect_text("/leave", TK_CHAT_CMD_LEAVE, NULL, NULL, NULL);
    expect_text("/rooms", TK_CHAT_CMD_ROOMS, NULL, NULL, NULL);
    expect_text("/time", TK_CHAT_CMD_TIME, NULL, NULL, NULL);
    expect_text("/stats", TK_CHAT_CMD_STATS, NULL, NULL, NULL);
    expect_text("/help", TK_CHAT_CMD_HELP, NULL, NULL, NULL);
    expect_text("/quit", TK_CHAT_CMD_QUIT, NULL, NULL, NULL);
    expect_text("/quit bye all", TK_CHAT_CMD_QUIT, NULL, NULL, NULL);
    expect_text("/help me", TK_CHAT_CMD_HELP, NULL, NULL, NULL);
    expect_text("/leave now", TK_CHAT_CMD_LEAVE, NULL, NULL, NULL);
    expect_text("/rooms  ", TK_CHAT_CMD_ROOMS, NULL, NULL, NULL);
    expect_text("/time x", TK_CHAT_CMD_TIME, NULL, NULL, NULL);
    expect_text("/stats x", TK_CHAT_CMD_STATS, NULL, NULL, NULL);
}

/* /users takes an optional room. */
static void text_users(void **state)
{
    (void)state;
    expect_text("/users", TK_CHAT_CMD_USERS, NULL, NULL, NULL);
    expect_text("/users  ", TK_CHAT_CMD_USERS, NULL, NULL, NULL);
    expect_text("/users dev", TK_CHAT_CMD_USERS, "dev", NULL, NULL);
    expect_text("/users  dev ", TK_CHAT_CMD_USERS, "dev", NULL, NULL);
    expect_text("/users dev ops", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
}

/* /msg NAME TEXT: the text is the rest of the line; both are required. */
static void text_msg(void **state)
{
    (void)state;
    expect_text("/msg bob hi", TK_CHAT_CMD_MSG, "bob", "hi", NULL);
    expect_text("/msg bob hello  there ", TK_CHAT_CMD_MSG, "bob", "hello  there ", NULL);
    expect_text("/msg   bob   hi", TK_CHAT_CMD_MSG, "bob", "hi", NULL);
    expect_text("/msg bob /join x", TK_CHAT_CMD_MSG, "bob", "/join x", NULL);
    expect_text("/msg bob", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/msg bob ", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/msg bob    ", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/msg", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/msg ", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
}

/* /history [N] with N a count from 1 to 1000000. */
static void text_history(void **state)
{
    (void)state;
    expect_text("/history", TK_CHAT_CMD_HISTORY, NULL, NULL, NULL);
    tk_chat_req r;
    text_parse("/history", &r);
    assert_int_equal(r.limit, -1);
    text_parse("/history  ", &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_HISTORY);
    assert_int_equal(r.limit, -1);
    expect_history("/history 1", 1);
    expect_history("/history 50", 50);
    expect_history("/history  50  ", 50);
    expect_history("/history 200", 200);
    expect_history("/history 1000000", 1000000);
    /* Refused: zero, negative, too big, not a number, two numbers. */
    expect_history("/history 0", 0);
    expect_history("/history -1", 0);
    expect_history("/history 1000001", 0);
    expect_history("/history 99999999", 0);
    expect_history("/history 99999999999999999999", 0);
    expect_history("/history abc", 0);
    expect_history("/history 5x", 0);
    expect_history("/history +5", 0);
    expect_history("/history 1.5", 0);
    expect_history("/history 10 20", 0);
}

/* /register PASSWORD: the password is the rest of the line, inner and
 * trailing spaces included. */
static void text_register(void **state)
{
    (void)state;
    expect_text("/register hunter22", TK_CHAT_CMD_REGISTER, NULL, NULL, "hunter22");
    expect_text("/register my secret  pass ", TK_CHAT_CMD_REGISTER, NULL, NULL, "my secret  pass ");
    expect_text("/register  x y", TK_CHAT_CMD_REGISTER, NULL, NULL, "x y");
    expect_text("/register \t tab", TK_CHAT_CMD_REGISTER, NULL, NULL, "\t tab");
    expect_text("/register", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/register ", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
    expect_text("/register    ", TK_CHAT_CMD_BAD, NULL, NULL, NULL);
}

/* Unknown /words, including the JSON-only commands, are TK_CHAT_CMD_UNKNOWN
 * with the word in name. */
static void text_unknown(void **state)
{
    (void)state;
    tk_chat_req r;
    text_parse("/foo bar", &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_UNKNOWN);
    expect_slice(r.name, r.name_len, "foo");
    text_parse("/Dance", &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_UNKNOWN);
    expect_slice(r.name, r.name_len, "Dance");
    text_parse("/joinx dev", &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_UNKNOWN);
    expect_slice(r.name, r.name_len, "joinx");
    text_parse("/jo", &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_UNKNOWN);
    text_parse("/", &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_UNKNOWN);
    assert_int_equal(r.name_len, 0);
    text_parse("/ join", &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_UNKNOWN);
    assert_int_equal(r.name_len, 0);
    const char *json_only[] = {"/auth alice pw", "/echo hi",    "/ping",
                               "/pong",          "/message hi", "/private bob hi"};
    for (size_t i = 0; i < sizeof(json_only) / sizeof(json_only[0]); i++) {
        text_parse(json_only[i], &r);
        assert_int_equal(r.cmd, TK_CHAT_CMD_UNKNOWN);
    }
}

/* Only n bytes are read. */
static void text_length_bounds_input(void **state)
{
    (void)state;
    tk_chat_req r;
    tk_chat_text_parse((const unsigned char *)"/join devXYZ", 9, &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_JOIN);
    expect_slice(r.name, r.name_len, "dev");
    tk_chat_text_parse((const unsigned char *)"/history 12", 10, &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_HISTORY);
    assert_int_equal(r.limit, 1);
    tk_chat_text_parse((const unsigned char *)"   x", 3, &r);
    assert_int_equal(r.cmd, TK_CHAT_CMD_NONE);
}

/* ---- JSON front end ---- */

static void expect_int_id(const tk_chat_req *r, json_int_t id)
{
    assert_non_null(r->json_id);
    assert_true(json_is_integer((json_t *)r->json_id));
    assert_int_equal(json_integer_value((json_t *)r->json_id), id);
}

/* Each request type and the fields it fills. */
static void json_each_type(void **state)
{
    (void)state;
    tk_chat_req r;

    json_ok("{\"type\":\"REGISTER\",\"payload\":{\"name\":\"Alice\"},\"id\":1}", &r,
            TK_CHAT_CMD_REGISTER);
    expect_slice(r.name, r.name_len, "Alice");
    expect_slice(r.text, r.text_len, NULL);
    expect_slice(r.password, r.password_len, NULL);
    assert_int_equal(r.limit, -1);
    expect_int_id(&r, 1);
    jfree(&r);

    json_ok("{\"type\":\"REGISTER\",\"payload\":{\"name\":\"Alice\",\"password\":\"pass word!\"}}",
            &r, TK_CHAT_CMD_REGISTER);
    expect_slice(r.name, r.name_len, "Alice");
    expect_slice(r.password, r.password_len, "pass word!");
    assert_null(r.json_id);
    jfree(&r);

    json_ok("{\"type\":\"AUTH\",\"payload\":{\"name\":\"bob\",\"password\":\"hunter22\"},\"id\":2}",
            &r, TK_CHAT_CMD_AUTH);
    expect_slice(r.name, r.name_len, "bob");
    expect_slice(r.password, r.password_len, "hunter22");
    expect_slice(r.text, r.text_len, NULL);
    expect_int_id(&r, 2);
    jfree(&r);

    json_ok("{\"type\":\"MESSAGE\",\"payload\":{\"content\":\"hi all\"}}", &r, TK_CHAT_CMD_SAY);
    expect_slice(r.text, r.text_len, "hi all");
    expect_slice(r.name, r.name_len, NULL);
    jfree(&r);

    json_ok("{\"type\":\"PRIVATE\",\"payload\":{\"to\":\"carol\",\"content\":\"psst\"}}", &r,
            TK_CHAT_CMD_MSG);
    expect_slice(r.name, r.name_len, "carol");
    expect_slice(r.text, r.text_len, "psst");
    jfree(&r);

    json_ok("{\"type\":\"JOIN\",\"payload\":{\"room\":\"dev\"}}", &r, TK_CHAT_CMD_JOIN);
    expect_slice(r.name, r.name_len, "dev");
    jfree(&r);

    json_ok("{\"type\":\"LEAVE\"}", &r, TK_CHAT_CMD_LEAVE);
    expect_slice(r.name, r.name_len, NULL);
    jfree(&r);

    json_ok("{\"type\":\"NICK\",\"payload\":{\"name\":\"Bobby\"}}", &r, TK_CHAT_CMD_NICK);
    expect_slice(r.name, r.name_len, "Bobby");
    jfree(&r);

    json_ok("{\"type\":\"LIST_USERS\"}", &r, TK_CHAT_CMD_USERS);
    expect_slice(r.name, r.name_len, NULL);
    jfree(&r);
    json_ok("{\"type\":\"LIST_USERS\",\"payload\":{\"room\":\"dev\"}}", &r, TK_CHAT_CMD_USERS);
    expect_slice(r.name, r.name_len, "dev");
    jfree(&r);

    json_ok("{\"type\":\"LIST_ROOMS\",\"payload\":{}}", &r, TK_CHAT_CMD_ROOMS);
    jfree(&r);

    json_ok("{\"type\":\"LIST_MESSAGES\"}", &r, TK_CHAT_CMD_HISTORY);
    assert_int_equal(r.limit, -1);
    expect_slice(r.name, r.name_len, NULL);
    jfree(&r);
    json_ok("{\"type\":\"LIST_MESSAGES\",\"payload\":{\"room\":\"dev\",\"limit\":50}}", &r,
            TK_CHAT_CMD_HISTORY);
    assert_int_equal(r.limit, 50);
    expect_slice(r.name, r.name_len, "dev");
    jfree(&r);

    json_ok("{\"type\":\"ECHO\",\"payload\":{\"data\":\"ping me\"}}", &r, TK_CHAT_CMD_ECHO);
    expect_slice(r.text, r.text_len, "ping me");
    jfree(&r);

    const struct {
        const char *type;
        tk_chat_cmd cmd;
    } bare[] = {
        {"TIME", TK_CHAT_CMD_TIME}, {"STATS", TK_CHAT_CMD_STATS}, {"PING", TK_CHAT_CMD_PING},
        {"PONG", TK_CHAT_CMD_PONG}, {"QUIT", TK_CHAT_CMD_QUIT},
    };
    for (size_t i = 0; i < sizeof(bare) / sizeof(bare[0]); i++) {
        char line[96];
        snprintf(line, sizeof(line), "{\"type\":\"%s\",\"id\":%zu}", bare[i].type, i + 10);
        json_ok(line, &r, bare[i].cmd);
        expect_int_id(&r, (json_int_t)(i + 10));
        expect_slice(r.name, r.name_len, NULL);
        expect_slice(r.text, r.text_len, NULL);
        jfree(&r);
        /* An extra payload is ignored. */
        snprintf(line, sizeof(line), "{\"type\":\"%s\",\"payload\":{\"x\":1}}", bare[i].type);
        json_ok(line, &r, bare[i].cmd);
        jfree(&r);
    }
}

/* Strings are decoded: escapes, non-ASCII, embedded NULs (length counts). */
static void json_strings_decoded(void **state)
{
    (void)state;
    tk_chat_req r;
    json_ok("{\"type\":\"MESSAGE\",\"payload\":{\"content\":\"caf\\u00e9 \\\"q\\\" \\\\\"}}", &r,
            TK_CHAT_CMD_SAY);
    expect_slice(r.text, r.text_len, "caf\xc3\xa9 \"q\" \\");
    jfree(&r);
    json_ok("{\"type\":\"JOIN\",\"payload\":{\"room\":\"a\\u0000b\"}}", &r, TK_CHAT_CMD_JOIN);
    assert_int_equal(r.name_len, 3);
    assert_memory_equal(r.name, "a\0b", 3);
    /* ... which the name rules then refuse. */
    assert_int_equal(tk_chat_name_check(r.name, r.name_len, 32), TK_CHAT_NAME_CHAR);
    jfree(&r);
    json_ok("{\"type\":\"MESSAGE\",\"payload\":{\"content\":\"\\u001b[2J\"}}", &r, TK_CHAT_CMD_SAY);
    assert_false(tk_chat_content_ok(r.text, r.text_len));
    jfree(&r);
    /* An empty string is present, not absent. */
    json_ok("{\"type\":\"MESSAGE\",\"payload\":{\"content\":\"\"}}", &r, TK_CHAT_CMD_SAY);
    assert_non_null(r.text);
    assert_int_equal(r.text_len, 0);
    jfree(&r);
}

/* A required field that is missing is bad_request, naming the field. */
static void json_missing_fields(void **state)
{
    (void)state;
    json_err("{\"type\":\"REGISTER\"}", "bad_request", "payload.name is required");
    json_err("{\"type\":\"REGISTER\",\"payload\":{}}", "bad_request", "payload.name is required");
    json_err("{\"type\":\"REGISTER\",\"payload\":{\"password\":\"abcdefgh\"}}", "bad_request",
             "payload.name is required");
    json_err("{\"type\":\"AUTH\",\"payload\":{\"name\":\"a\"}}", "bad_request",
             "payload.password is required");
    json_err("{\"type\":\"AUTH\",\"payload\":{\"password\":\"abcdefgh\"}}", "bad_request",
             "payload.name is required");
    json_err("{\"type\":\"AUTH\"}", "bad_request", "payload.name is required");
    json_err("{\"type\":\"MESSAGE\",\"payload\":{}}", "bad_request", "payload.content is required");
    json_err("{\"type\":\"MESSAGE\",\"payload\":{\"text\":\"hi\"}}", "bad_request",
             "payload.content is required");
    json_err("{\"type\":\"PRIVATE\",\"payload\":{\"content\":\"hi\"}}", "bad_request",
             "payload.to is required");
    json_err("{\"type\":\"PRIVATE\",\"payload\":{\"to\":\"bob\"}}", "bad_request",
             "payload.content is required");
    json_err("{\"type\":\"JOIN\"}", "bad_request", "payload.room is required");
    json_err("{\"type\":\"JOIN\",\"payload\":{\"name\":\"dev\"}}", "bad_request",
             "payload.room is required");
    json_err("{\"type\":\"NICK\",\"payload\":{}}", "bad_request", "payload.name is required");
    json_err("{\"type\":\"ECHO\",\"payload\":{}}", "bad_request", "payload.data is required");
    json_err("{\"type\":\"ECHO\"}", "bad_request", "payload.data is required");
}

/* A field of the wrong type is bad_request, naming the field. */
static void json_wrong_field_types(void **state)
{
    (void)state;
    json_err("{\"type\":\"REGISTER\",\"payload\":{\"name\":5}}", "bad_request",
             "payload.name must be a string");
    json_err("{\"type\":\"REGISTER\",\"payload\":{\"name\":\"a\",\"password\":12345678}}",
             "bad_request", "payload.password must be a string");
    json_err("{\"type\":\"AUTH\",\"payload\":{\"name\":\"a\",\"password\":null}}", "bad_request",
             "payload.password must be a string");
    json_err("{\"type\":\"MESSAGE\",\"payload\":{\"content\":null}}", "bad_request",
             "payload.content must be a string");
    json_err("{\"type\":\"MESSAGE\",\"payload\":{\"content\":[\"hi\"]}}", "bad_request",
             "payload.content must be a string");
    json_err("{\"type\":\"PRIVATE\",\"payload\":{\"to\":{},\"content\":\"x\"}}", "bad_request",
             "payload.to must be a string");
    json_err("{\"type\":\"PRIVATE\",\"payload\":{\"to\":\"b\",\"content\":true}}", "bad_request",
             "payload.content must be a string");
    json_err("{\"type\":\"JOIN\",\"payload\":{\"room\":[\"dev\"]}}", "bad_request",
             "payload.room must be a string");
    json_err("{\"type\":\"NICK\",\"payload\":{\"name\":false}}", "bad_request",
             "payload.name must be a string");
    json_err("{\"type\":\"LIST_USERS\",\"payload\":{\"room\":1}}", "bad_request",
             "payload.room must be a string");
    json_err("{\"type\":\"LIST_MESSAGES\",\"payload\":{\"room\":true}}", "bad_request",
             "payload.room must be a string");
    json_err("{\"type\":\"ECHO\",\"payload\":{\"data\":42}}", "bad_request",
             "payload.data must be a string");
}

/* LIST_MESSAGES limit: an integer from 1 to 1000000. */
static void json_limit(void **state)
{
    (void)state;
    tk_chat_req r;
    const struct {
        const char *v;
        long want;
    } good[] = {{"1", 1}, {"20", 20}, {"1000000", 1000000}};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "{\"type\":\"LIST_MESSAGES\",\"payload\":{\"limit\":%s}}",
                 good[i].v);
        json_ok(line, &r, TK_CHAT_CMD_HISTORY);
        assert_int_equal(r.limit, good[i].want);
        jfree(&r);
    }
    const char *bad[] = {"0",     "-1",  "1000001", "9223372036854775807",
                         "\"5\"", "5.5", "null",    "true",
                         "[5]",   "{}",  "-0.5",    "1e100"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line),
                 "{\"type\":\"LIST_MESSAGES\",\"payload\":{\"limit\":%s},\"id\":3}", bad[i]);
        json_err(line, "bad_request", "payload.limit must be an integer from 1 to 1000000");
    }
}

/* The id comes back with field errors, unknown types and limit errors. */
static void json_id_kept_on_errors(void **state)
{
    (void)state;
    const char *lines[] = {
        "{\"type\":\"JOIN\",\"payload\":{},\"id\":77}",
        "{\"type\":\"JOIN\",\"payload\":{\"room\":1},\"id\":77}",
        "{\"id\":77,\"type\":\"AUTH\",\"payload\":{\"name\":\"a\"}}",
        "{\"type\":\"NOPE\",\"id\":77}",
        "{\"type\":\"LIST_MESSAGES\",\"payload\":{\"limit\":0},\"id\":77}",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        tk_chat_req r;
        const char *code;
        char msg[128];
        assert_true(json_parse(lines[i], &r, &code, msg, sizeof(msg)) < 0);
        expect_int_id(&r, 77);
        jfree(&r);
        assert_null(r.json_root);
        assert_null(r.json_id);
    }
    /* Any JSON value may be the id. */
    tk_chat_req r;
    const char *code;
    char msg[128];
    assert_true(json_parse("{\"type\":\"JOIN\",\"id\":\"req-1\"}", &r, &code, msg, sizeof(msg)) <
                0);
    assert_non_null(r.json_id);
    assert_string_equal(json_string_value((json_t *)r.json_id), "req-1");
    jfree(&r);
    json_ok("{\"type\":\"PING\",\"id\":{\"n\":[1,2]}}", &r, TK_CHAT_CMD_PING);
    assert_true(json_is_object((json_t *)r.json_id));
    jfree(&r);
    json_ok("{\"type\":\"PING\",\"id\":null}", &r, TK_CHAT_CMD_PING);
    assert_non_null(r.json_id);
    assert_true(json_is_null((json_t *)r.json_id));
    jfree(&r);
}

/* Types are matched exactly; anything else is unknown_type. */
static void json_unknown_type(void **state)
{
    (void)state;
    json_err("{\"type\":\"DANCE\"}", "unknown_type", "DANCE");
    json_err("{\"type\":\"join\",\"payload\":{\"room\":\"dev\"}}", "unknown_type", "join");
    json_err("{\"type\":\"Ping\"}", "unknown_type", "Ping");
    json_err("{\"type\":\"PING \"}", "unknown_type", NULL);
    json_err("{\"type\":\"\"}", "unknown_type", NULL);
    json_err("{\"type\":\"LIST\"}", "unknown_type", NULL);
    json_err("{\"type\":\"LIST_ROOMSX\"}", "unknown_type", NULL);
    /* A long type is cut in the message. */
    char line[400], type[300];
    memset(type, 'Z', sizeof(type) - 1);
    type[sizeof(type) - 1] = '\0';
    snprintf(line, sizeof(line), "{\"type\":\"%s\"}", type);
    tk_chat_req r;
    const char *code;
    char msg[16];
    assert_true(json_parse(line, &r, &code, msg, sizeof(msg)) < 0);
    assert_string_equal(code, "unknown_type");
    assert_true(strlen(msg) < sizeof(msg));
    jfree(&r);
}

/* The message is sent to the client inside a JSON string, so it must stay
 * valid UTF-8 even when a long type is cut. */
static void json_unknown_type_message_is_utf8(void **state)
{
    (void)state;
    for (int pad = 60; pad < 68; pad++) {
        char type[128], line[256];
        memset(type, 'a', (size_t)pad);
        strcpy(type + pad, "\xc3\xa9\xc3\xa9\xe6\x97\xa5\xe6\x97\xa5");
        snprintf(line, sizeof(line), "{\"type\":\"%s\",\"id\":9}", type);
        tk_chat_req r;
        const char *code;
        char msg[160]; /* what the service passes */
        assert_true(json_parse(line, &r, &code, msg, sizeof(msg)) < 0);
        assert_string_equal(code, "unknown_type");
        jfree(&r);
        size_t len = strlen(msg);
        if (!tk_utf8_valid((const unsigned char *)msg, len))
            print_error("type of %d ASCII + multi-byte: message is not UTF-8 (ends in "
                        "0x%02x 0x%02x)\n",
                        pad, len > 1 ? (unsigned char)msg[len - 2] : 0,
                        len ? (unsigned char)msg[len - 1] : 0);
        assert_true(tk_utf8_valid((const unsigned char *)msg, len));
    }
}

/* "type is matched exactly": a NUL inside the type does not end it. */
static void json_type_with_nul_is_unknown(void **state)
{
    (void)state;
    json_err("{\"type\":\"PING\\u0000junk\"}", "unknown_type", NULL);
    json_err("{\"type\":\"QUIT\\u0000\"}", "unknown_type", NULL);
}

/* Text that is not JSON is bad_json; JSON that is not a request is
 * bad_request. No root is left to free, but freeing is harmless. */
static void json_bad_json_and_shape(void **state)
{
    (void)state;
    const char *bad_json[] = {
        "",
        "{",
        "hello",
        "{\"type\":\"PING\"",
        "{\"type\":\"PING\"} {}",
        "{type:\"PING\"}",
        "{\"type\":\"\xff\"}",
        "{\"type\":\"PING\",\"type\":\"PING\"}", /* duplicate key */
    };
    for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
        tk_chat_req r;
        const char *code;
        char msg[128];
        assert_true(json_parse(bad_json[i], &r, &code, msg, sizeof(msg)) < 0);
        assert_non_null(code);
        assert_string_equal(code, "bad_json");
        assert_true(msg[0] != '\0');
        assert_null(r.json_root);
        assert_null(r.json_id);
        jfree(&r);
    }
    json_err("[1,2]", "bad_request", NULL);
    json_err("\"PING\"", "bad_request", NULL);
    json_err("{}", "bad_request", NULL);
    json_err("{\"type\":5}", "bad_request", NULL);
    json_err("{\"type\":\"JOIN\",\"payload\":\"dev\"}", "bad_request", NULL);
    json_err("{\"type\":\"JOIN\",\"payload\":[\"dev\"]}", "bad_request", NULL);
    /* As in the echo JSON framing, a request of the wrong shape has no id. */
    tk_chat_req r;
    const char *code;
    char msg[128];
    assert_true(json_parse("{\"type\":\"JOIN\",\"payload\":\"dev\",\"id\":5}", &r, &code, msg,
                           sizeof(msg)) < 0);
    assert_string_equal(code, "bad_request");
    assert_null(r.json_id);
    jfree(&r);
}

/* The seed's {"type":T,"data":"..."} stands for the command's main field. */
static void json_data_alias(void **state)
{
    (void)state;
    tk_chat_req r;
    json_ok("{\"type\":\"REGISTER\",\"data\":\"Alice\",\"id\":4}", &r, TK_CHAT_CMD_REGISTER);
    expect_slice(r.name, r.name_len, "Alice");
    expect_slice(r.password, r.password_len, NULL);
    expect_int_id(&r, 4);
    jfree(&r);
    json_ok("{\"type\":\"MESSAGE\",\"data\":\"hello there\"}", &r, TK_CHAT_CMD_SAY);
    expect_slice(r.text, r.text_len, "hello there");
    jfree(&r);
    json_ok("{\"type\":\"ECHO\",\"data\":\"abc\"}", &r, TK_CHAT_CMD_ECHO);
    expect_slice(r.text, r.text_len, "abc");
    jfree(&r);
    json_ok("{\"type\":\"JOIN\",\"data\":\"dev\"}", &r, TK_CHAT_CMD_JOIN);
    expect_slice(r.name, r.name_len, "dev");
    jfree(&r);
    json_ok("{\"type\":\"NICK\",\"data\":\"Bob\"}", &r, TK_CHAT_CMD_NICK);
    expect_slice(r.name, r.name_len, "Bob");
    jfree(&r);
    json_ok("{\"data\":\"\",\"type\":\"MESSAGE\"}", &r, TK_CHAT_CMD_SAY);
    assert_non_null(r.text);
    assert_int_equal(r.text_len, 0);
    jfree(&r);

    /* A payload wins over data. */
    json_ok("{\"type\":\"JOIN\",\"payload\":{\"room\":\"a\"},\"data\":\"b\"}", &r,
            TK_CHAT_CMD_JOIN);
    expect_slice(r.name, r.name_len, "a");
    jfree(&r);
    json_err("{\"type\":\"JOIN\",\"payload\":{},\"data\":\"b\"}", "bad_request",
             "payload.room is required");
    /* data must be a string. */
    json_err("{\"type\":\"JOIN\",\"data\":5}", "bad_request", "payload.room is required");
    json_err("{\"type\":\"MESSAGE\",\"data\":{\"content\":\"x\"}}", "bad_request",
             "payload.content is required");
    /* Types without a main field take no alias. */
    json_err("{\"type\":\"PRIVATE\",\"data\":\"bob\"}", "bad_request", "payload.to is required");
    json_err("{\"type\":\"AUTH\",\"data\":\"bob\"}", "bad_request", NULL);
    json_ok("{\"type\":\"LIST_USERS\",\"data\":\"dev\"}", &r, TK_CHAT_CMD_USERS);
    expect_slice(r.name, r.name_len, NULL);
    jfree(&r);
}

/* Only n bytes are read; freeing twice is harmless. */
static void json_length_and_free(void **state)
{
    (void)state;
    const char *s = "{\"type\":\"PING\"}garbage";
    tk_chat_req r;
    const char *code = NULL;
    char msg[64];
    assert_int_equal(tk_chat_json_parse((const unsigned char *)s, 15, &r, &code, msg, sizeof(msg)),
                     0);
    assert_int_equal(r.cmd, TK_CHAT_CMD_PING);
    tk_chat_json_free(&r);
    assert_null(r.json_root);
    tk_chat_json_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_plain_ok),
        cmocka_unit_test(names_empty),
        cmocka_unit_test(names_bad_start),
        cmocka_unit_test(names_reserved),
        cmocka_unit_test(names_whitespace),
        cmocka_unit_test(names_control),
        cmocka_unit_test(names_format_and_invisible),
        cmocka_unit_test(names_invalid_utf8),
        cmocka_unit_test(names_length_in_code_points),
        cmocka_unit_test(names_length_bounds_input),
        cmocka_unit_test(name_keys_fold_case),
        cmocka_unit_test(name_key_buffer),
        cmocka_unit_test(name_keys_normalise),
        cmocka_unit_test(content_accepted),
        cmocka_unit_test(content_refused),
        cmocka_unit_test(text_blank_lines),
        cmocka_unit_test(text_messages),
        cmocka_unit_test(text_join_and_nick),
        cmocka_unit_test(text_command_case),
        cmocka_unit_test(text_bare_commands),
        cmocka_unit_test(text_users),
        cmocka_unit_test(text_msg),
        cmocka_unit_test(text_history),
        cmocka_unit_test(text_register),
        cmocka_unit_test(text_unknown),
        cmocka_unit_test(text_length_bounds_input),
        cmocka_unit_test_teardown(json_each_type, release_live),
        cmocka_unit_test_teardown(json_strings_decoded, release_live),
        cmocka_unit_test_teardown(json_missing_fields, release_live),
        cmocka_unit_test_teardown(json_wrong_field_types, release_live),
        cmocka_unit_test_teardown(json_limit, release_live),
        cmocka_unit_test_teardown(json_id_kept_on_errors, release_live),
        cmocka_unit_test_teardown(json_unknown_type, release_live),
        cmocka_unit_test_teardown(json_unknown_type_message_is_utf8, release_live),
        cmocka_unit_test_teardown(json_type_with_nul_is_unknown, release_live),
        cmocka_unit_test_teardown(json_bad_json_and_shape, release_live),
        cmocka_unit_test_teardown(json_data_alias, release_live),
        cmocka_unit_test_teardown(json_length_and_free, release_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

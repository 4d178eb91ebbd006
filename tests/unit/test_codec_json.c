/* tk_json_decode_request / tk_json_encode_line: the JSON-lines codec. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/codec.h"

/* Decodes a NUL-terminated line; on failure checks a reason was written. */
static int decode(const char *s, tk_json_request *r)
{
    char err[128] = "";
    memset(r, 0, sizeof(*r));
    int rc = tk_json_decode_request((const unsigned char *)s, strlen(s), r, err, sizeof(err));
    if (rc != 0)
        assert_true(err[0] != '\0');
    return rc;
}

/* A full request exposes its type, payload object and id. */
static void request_with_payload_and_id(void **state)
{
    (void)state;
    tk_json_request r;
    assert_int_equal(decode("{\"type\":\"echo\",\"payload\":{\"text\":\"hi\"},\"id\":7}", &r), 0);
    assert_non_null(r.root);
    assert_string_equal(r.type, "echo");
    assert_non_null(r.payload);
    assert_true(json_is_object(r.payload));
    assert_string_equal(json_string_value(json_object_get(r.payload, "text")), "hi");
    assert_non_null(r.id);
    assert_true(json_is_integer(r.id));
    assert_int_equal(json_integer_value(r.id), 7);
    tk_json_request_free(&r);
}

/* payload and id are optional; the id may be any JSON value. */
static void optional_fields(void **state)
{
    (void)state;
    tk_json_request r;
    assert_int_equal(decode("{\"type\":\"ping\"}", &r), 0);
    assert_string_equal(r.type, "ping");
    assert_null(r.payload);
    assert_null(r.id);
    tk_json_request_free(&r);
    assert_int_equal(decode(" {\"id\":[1,\"x\"],\"type\":\"\"} ", &r), 0);
    assert_string_equal(r.type, "");
    assert_null(r.payload);
    assert_true(json_is_array(r.id));
    tk_json_request_free(&r);
}

/* Only len bytes are read: the line need not be NUL-terminated. */
static void length_bounds_the_input(void **state)
{
    (void)state;
    const char *s = "{\"type\":\"a\"}garbage";
    tk_json_request r;
    char err[64];
    assert_int_equal(tk_json_decode_request((const unsigned char *)s, 12, &r, err, sizeof(err)), 0);
    assert_string_equal(r.type, "a");
    tk_json_request_free(&r);
}

/* A missing "type" or a non-string one is TK_JSON_BAD_TYPE. */
static void bad_type_refused(void **state)
{
    (void)state;
    tk_json_request r;
    assert_int_equal(decode("{}", &r), TK_JSON_BAD_TYPE);
    assert_int_equal(decode("{\"payload\":{}}", &r), TK_JSON_BAD_TYPE);
    assert_int_equal(decode("{\"type\":5}", &r), TK_JSON_BAD_TYPE);
    assert_int_equal(decode("{\"type\":null}", &r), TK_JSON_BAD_TYPE);
    assert_int_equal(decode("{\"type\":[\"echo\"]}", &r), TK_JSON_BAD_TYPE);
    assert_int_equal(decode("{\"TYPE\":\"echo\"}", &r), TK_JSON_BAD_TYPE);
}

/* A "payload" that is present but not an object is TK_JSON_BAD_PAYLOAD. */
static void bad_payload_refused(void **state)
{
    (void)state;
    tk_json_request r;
    assert_int_equal(decode("{\"type\":\"x\",\"payload\":[1]}", &r), TK_JSON_BAD_PAYLOAD);
    assert_int_equal(decode("{\"type\":\"x\",\"payload\":\"text\"}", &r), TK_JSON_BAD_PAYLOAD);
    assert_int_equal(decode("{\"type\":\"x\",\"payload\":3}", &r), TK_JSON_BAD_PAYLOAD);
}

/* Valid JSON that is not an object is TK_JSON_NOT_OBJECT. */
static void non_object_refused(void **state)
{
    (void)state;
    tk_json_request r;
    assert_int_equal(decode("[1,2]", &r), TK_JSON_NOT_OBJECT);
    assert_int_equal(decode("[]", &r), TK_JSON_NOT_OBJECT);
    assert_int_equal(decode("\"type\"", &r), TK_JSON_NOT_OBJECT);
    assert_int_equal(decode("42", &r), TK_JSON_NOT_OBJECT);
    assert_int_equal(decode("null", &r), TK_JSON_NOT_OBJECT);
}

/* Text that is not JSON, or is followed by more text, is TK_JSON_BAD_JSON. */
static void invalid_json_refused(void **state)
{
    (void)state;
    tk_json_request r;
    assert_int_equal(decode("", &r), TK_JSON_BAD_JSON);
    assert_int_equal(decode("{\"type\":", &r), TK_JSON_BAD_JSON);
    assert_int_equal(decode("{type:\"x\"}", &r), TK_JSON_BAD_JSON);
    assert_int_equal(decode("{\"type\":\"x\",}", &r), TK_JSON_BAD_JSON);
    assert_int_equal(decode("{\"type\":\"x\"} {}", &r), TK_JSON_BAD_JSON);
    assert_int_equal(decode("{\"type\":'x'}", &r), TK_JSON_BAD_JSON);
}

/* Bytes that are not UTF-8 make the line TK_JSON_BAD_JSON. */
static void invalid_utf8_refused(void **state)
{
    (void)state;
    tk_json_request r;
    assert_int_equal(decode("{\"type\":\"\xff\"}", &r), TK_JSON_BAD_JSON);
    assert_int_equal(decode("{\"type\":\"\xc0\xaf\"}", &r), TK_JSON_BAD_JSON);
    assert_int_equal(decode("{\"type\":\"\xed\xa0\x80\"}", &r), TK_JSON_BAD_JSON);
    assert_int_equal(decode("{\"type\":\"x\",\"payload\":{\"\xe2\x82\":1}}", &r), TK_JSON_BAD_JSON);
    /* Valid multi-byte UTF-8 is fine. */
    assert_int_equal(decode("{\"type\":\"caf\xc3\xa9\"}", &r), 0);
    assert_string_equal(r.type, "caf\xc3\xa9");
    tk_json_request_free(&r);
}

/* Returns a malloc'd request whose payload nests objects so that the whole
 * document is `depth` containers deep (the root object counts as one). */
static char *nested_request(int depth)
{
    size_t cap = (size_t)depth * 6 + 64;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t n = (size_t)sprintf(s, "{\"type\":\"x\",\"payload\":");
    for (int i = 1; i < depth; i++)
        n += (size_t)sprintf(s + n, "%s", i + 1 < depth ? "{\"a\":" : "{");
    for (int i = 1; i < depth; i++)
        s[n++] = '}';
    s[n++] = '}';
    s[n] = '\0';
    return s;
}

/* 64 levels of nesting are accepted, 65 refused. */
static void nesting_limit_is_64(void **state)
{
    (void)state;
    tk_json_request r;
    char *ok = nested_request(64);
    assert_int_equal(decode(ok, &r), 0);
    tk_json_request_free(&r);
    free(ok);
    char *deep = nested_request(65);
    assert_int_not_equal(decode(deep, &r), 0);
    free(deep);
}

/* Very deep arrays are refused without exhausting the stack. */
static void huge_nesting_refused(void **state)
{
    (void)state;
    size_t depth = 200000;
    char *s = malloc(depth * 2 + 64);
    assert_non_null(s);
    size_t prefix = (size_t)sprintf(s, "{\"type\":\"x\",\"id\":");
    size_t n = prefix;
    memset(s + n, '[', depth);
    n += depth;
    memset(s + n, ']', depth);
    n += depth;
    strcpy(s + n, "}");
    tk_json_request r;
    assert_int_not_equal(decode(s, &r), 0);
    /* Unbalanced openers only are refused as well. */
    s[prefix + depth] = '\0';
    assert_int_not_equal(decode(s, &r), 0);
    free(s);
}

/* Brackets inside strings are text, not nesting. */
static void brackets_in_strings_are_not_nesting(void **state)
{
    (void)state;
    char s[512];
    size_t n = (size_t)sprintf(s, "{\"type\":\"");
    memset(s + n, '[', 100);
    n += 100;
    memset(s + n, '{', 100);
    n += 100;
    strcpy(s + n, "\\\"\"}");
    tk_json_request r;
    assert_int_equal(decode(s, &r), 0);
    assert_int_equal(strlen(r.type), 201);
    tk_json_request_free(&r);
}

/* A tiny error buffer is filled without overflow and stays a C string. */
static void small_error_buffer_is_respected(void **state)
{
    (void)state;
    char *err = malloc(4);
    assert_non_null(err);
    tk_json_request r;
    assert_int_equal(tk_json_decode_request((const unsigned char *)"[", 1, &r, err, 4),
                     TK_JSON_BAD_JSON);
    assert_true(strlen(err) < 4);
    assert_int_equal(tk_json_decode_request((const unsigned char *)"{}", 2, &r, err, 4),
                     TK_JSON_BAD_TYPE);
    assert_true(strlen(err) < 4);
    free(err);
}

/* Encoding gives one compact line ending in its only '\n' (newlines inside
 * strings are escaped), and decoding it gives back an equal object. */
static void encode_line_round_trips(void **state)
{
    (void)state;
    json_t *obj = json_pack("{s:s, s:{s:s, s:[i,b,n], s:f}, s:i}", "type", "echo", "payload",
                            "text", "two\nlines\r\xc3\xa9", "list", 1, 1, "half", 0.5, "id", 42);
    assert_non_null(obj);
    char *out = NULL;
    size_t out_len = 0;
    assert_int_equal(tk_json_encode_line(obj, &out, &out_len), 0);
    assert_non_null(out);
    assert_true(out_len > 1);
    assert_int_equal(out[out_len - 1], '\n');
    assert_null(memchr(out, '\n', out_len - 1));
    assert_null(memchr(out, ' ', out_len));
    tk_json_request r;
    char err[128];
    assert_int_equal(
        tk_json_decode_request((const unsigned char *)out, out_len - 1, &r, err, sizeof(err)), 0);
    assert_true(json_equal(r.root, obj));
    assert_string_equal(r.type, "echo");
    tk_json_request_free(&r);
    free(out);
    json_decref(obj);
}

/* A decoded request re-encodes to the same compact text. */
static void decode_then_encode_is_stable(void **state)
{
    (void)state;
    const char *line = "{\"type\":\"t\",\"payload\":{\"k\":\"v\"},\"id\":\"abc\"}";
    tk_json_request r;
    assert_int_equal(decode(line, &r), 0);
    char *out = NULL;
    size_t out_len = 0;
    assert_int_equal(tk_json_encode_line(r.root, &out, &out_len), 0);
    tk_json_request r2;
    char err[64];
    assert_int_equal(
        tk_json_decode_request((const unsigned char *)out, out_len, &r2, err, sizeof(err)), 0);
    assert_true(json_equal(r.root, r2.root));
    tk_json_request_free(&r2);
    tk_json_request_free(&r);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_with_payload_and_id),
        cmocka_unit_test(optional_fields),
        cmocka_unit_test(length_bounds_the_input),
        cmocka_unit_test(bad_type_refused),
        cmocka_unit_test(bad_payload_refused),
        cmocka_unit_test(non_object_refused),
        cmocka_unit_test(invalid_json_refused),
        cmocka_unit_test(invalid_utf8_refused),
        cmocka_unit_test(nesting_limit_is_64),
        cmocka_unit_test(huge_nesting_refused),
        cmocka_unit_test(brackets_in_strings_are_not_nesting),
        cmocka_unit_test(small_error_buffer_is_respected),
        cmocka_unit_test(encode_line_round_trips),
        cmocka_unit_test(decode_then_encode_is_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

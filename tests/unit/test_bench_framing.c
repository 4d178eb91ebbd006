/* bench_pattern_make and bench_parse: the request layouts of every bench mode,
 * and reply counting fed whole and one byte at a time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tcpkit/codec.h"
#include "tools/bench_framing.h"

/* Counts replies in data fed whole, then one byte at a time; both must agree. */
static int parse_both(tk_bench_mode mode, const bench_pattern *pat, const unsigned char *data,
                      size_t n, uint64_t *replies)
{
    bench_parser a, b;
    uint64_t ra = 0, rb = 0;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    int ea = bench_parse(&a, pat, mode, data, n, &ra);
    int eb = 0;
    for (size_t i = 0; i < n && eb == 0; i++)
        eb = bench_parse(&b, pat, mode, data + i, 1, &rb);
    assert_int_equal(ea, eb);
    assert_int_equal(ra, rb);
    *replies = ra;
    return ea;
}

static void test_line_pattern_is_whole_lines(void **state)
{
    (void)state;
    bench_pattern p;
    assert_int_equal(bench_pattern_make(&p, TK_BENCH_LINE, 10), 0);
    assert_int_equal(p.req_len, 10);
    assert_true(p.len >= BENCH_PATTERN_MIN);
    assert_int_equal(p.len % 10, 0);
    assert_int_equal(p.bytes[9], '\n');
    assert_int_equal(p.bytes[p.len - 1], '\n');
    assert_ptr_equal(memchr(p.bytes, '\n', 9), NULL);
    bench_pattern_free(&p);
    assert_int_equal(bench_pattern_make(&p, TK_BENCH_LINE, 1), -EINVAL);
}

static void test_length_pattern_and_replies(void **state)
{
    (void)state;
    bench_pattern p;
    assert_int_equal(bench_pattern_make(&p, TK_BENCH_LENGTH, 3), 0);
    assert_int_equal(p.req_len, 7);
    assert_memory_equal(p.bytes, "\0\0\0\3xxx\0\0\0\3xxx", 14);
    /* Three replies, the last one empty, then half a header. */
    const unsigned char in[] = "\0\0\0\10Got: xxx\0\0\0\10Got: xxx\0\0\0\0\0\0";
    uint64_t r;
    assert_int_equal(parse_both(TK_BENCH_LENGTH, &p, in, sizeof(in) - 1, &r), 0);
    assert_int_equal(r, 3);
    /* "ECHO" read as a header is far over any reply: a protocol error. */
    assert_int_equal(parse_both(TK_BENCH_LENGTH, &p, (const unsigned char *)"ECHO: x\n", 8, &r),
                     -EPROTO);
    bench_pattern_free(&p);
    assert_int_equal(bench_pattern_make(&p, TK_BENCH_LENGTH, 0), 0);
    assert_int_equal(p.req_len, 4);
    bench_pattern_free(&p);
}

static void test_json_pattern_has_fixed_size_and_ids(void **state)
{
    (void)state;
    bench_pattern p;
    assert_int_equal(bench_pattern_make(&p, TK_BENCH_JSON, 60), 0);
    assert_int_equal(p.req_len, 60);
    char want[64];
    for (unsigned i = 0; i < p.nreq; i += p.nreq / 7 + 1) {
        const unsigned char *r = p.bytes + (size_t)i * 60;
        int n = snprintf(want, sizeof(want), "{\"type\":\"ECHO\",\"id\":%u,", i);
        assert_memory_equal(r, want, (size_t)n);
        assert_int_equal(r[59], '\n');
        assert_memory_equal(r + 55, "x\"}}\n", 5);
    }
    bench_pattern_free(&p);
    assert_int_equal(bench_pattern_make(&p, TK_BENCH_JSON, TK_BENCH_JSON_MIN_SIZE - 1), -EINVAL);
    assert_int_equal(bench_pattern_make(&p, TK_BENCH_JSON, TK_BENCH_JSON_MIN_SIZE), 0);
    bench_pattern_free(&p);
}

static void test_json_replies_check_ids(void **state)
{
    (void)state;
    bench_pattern p;
    uint64_t r;
    assert_int_equal(bench_pattern_make(&p, TK_BENCH_JSON, 64), 0);
    const char *ok =
        "{\"type\":\"banner\",\"payload\":{\"message\":\"hi\"}}\n"
        "{\"type\":\"ECHO\",\"id\":0,\"payload\":{\"status\":\"ok\",\"data\":\"xx\"}}\n"
        "{\"type\":\"ECHO\",\"id\":1,\"payload\":{\"status\":\"ok\",\"data\":\"xx\"}}\n";
    assert_int_equal(parse_both(TK_BENCH_JSON, &p, (const unsigned char *)ok, strlen(ok), &r), 0);
    assert_int_equal(r, 2);
    const char *skip = "{\"type\":\"ECHO\",\"id\":1,\"payload\":{}}\n";
    assert_int_equal(parse_both(TK_BENCH_JSON, &p, (const unsigned char *)skip, strlen(skip), &r),
                     -EPROTO);
    const char *err = "{\"type\":\"error\",\"payload\":{\"status\":\"error\"}}\n";
    assert_int_equal(parse_both(TK_BENCH_JSON, &p, (const unsigned char *)err, strlen(err), &r),
                     -EPROTO);
    const char *line = "ECHO: {\"type\":\"ECHO\"}\n";
    assert_int_equal(parse_both(TK_BENCH_JSON, &p, (const unsigned char *)line, strlen(line), &r),
                     -EPROTO);
    bench_pattern_free(&p);
}

static void test_file_pattern_is_v1_requests(void **state)
{
    (void)state;
    bench_pattern p;
    assert_int_equal(bench_pattern_make_file(&p, "a.txt"), 0);
    assert_int_equal(p.req_len, 11);
    assert_memory_equal(p.bytes, "\1\1\0\0\0\5a.txt\1\1\0\0\0\5a.txt", 22);
    assert_int_equal(p.len % 11, 0);
    bench_pattern_free(&p);
    assert_int_equal(bench_pattern_make_file(&p, ""), -EINVAL);
    assert_int_equal(bench_pattern_make_file(&p, NULL), -EINVAL);
}

/* Fed whole and one byte at a time, as parse_both, also checking the file
 * bytes counted. */
static int parse_file_both(const bench_pattern *pat, const unsigned char *data, size_t n,
                           uint64_t *replies, uint64_t *bytes)
{
    bench_parser a, b;
    uint64_t ra = 0, rb = 0;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    int ea = bench_parse(&a, pat, TK_BENCH_FILE, data, n, &ra);
    int eb = 0;
    for (size_t i = 0; i < n && eb == 0; i++)
        eb = bench_parse(&b, pat, TK_BENCH_FILE, data + i, 1, &rb);
    assert_int_equal(ea, eb);
    assert_int_equal(ra, rb);
    assert_int_equal(a.data_bytes, b.data_bytes);
    *replies = ra;
    *bytes = a.data_bytes;
    return ea;
}

static void test_file_replies_end_at_the_end_frame(void **state)
{
    (void)state;
    bench_pattern p;
    uint64_t r, bytes;
    assert_int_equal(bench_pattern_make_file(&p, "a.txt"), 0);
    /* A 5-byte file in two data frames, an empty file, then half a header. */
    const unsigned char in[] = "\1\2\0\0\0\7a.txt:5\1\3\0\0\0\3abc\1\3\0\0\0\2de\1\4\0\0\0\0"
                               "\1\2\0\0\0\7a.txt:0\1\4\0\0\0\0\1\2\0";
    assert_int_equal(parse_file_both(&p, in, sizeof(in) - 1, &r, &bytes), 0);
    assert_int_equal(r, 2);
    assert_int_equal(bytes, 5);
    /* An error frame: the file cannot be had. */
    const unsigned char err[] = "\1\5\0\0\0\16File not found";
    assert_int_equal(parse_file_both(&p, err, sizeof(err) - 1, &r, &bytes), -EPROTO);
    /* Not version 1. */
    assert_int_equal(parse_file_both(&p, (const unsigned char *)"ECHO: x\n", 8, &r, &bytes),
                     -EPROTO);
    bench_pattern_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_pattern_is_whole_lines),
        cmocka_unit_test(test_length_pattern_and_replies),
        cmocka_unit_test(test_json_pattern_has_fixed_size_and_ids),
        cmocka_unit_test(test_json_replies_check_ids),
        cmocka_unit_test(test_file_pattern_is_v1_requests),
        cmocka_unit_test(test_file_replies_end_at_the_end_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

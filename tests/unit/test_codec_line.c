/* tk_line_next: the line codec. Every input is decoded whole, split at every
 * byte position, split in three, in fixed-size chunks and one byte at a time,
 * and every way must give the same transcript of lines and errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tcpkit/codec.h"

/* A caller that keeps unconsumed bytes in its own buffer, as a server does,
 * and writes what the decoder reports into a transcript: each line followed
 * by '|', each over-long line as '#'. Control and non-ASCII bytes in lines are
 * written as \xNN so transcripts compare as plain strings. */
typedef struct {
    tk_line_decoder d;
    unsigned char held[4096];
    size_t held_len;
    size_t max_held; /* most bytes ever kept between feeds */
    char out[4096];
    size_t out_len;
} feeder;

static void out_put(feeder *f, const char *s)
{
    size_t n = strlen(s);
    assert_true(f->out_len + n < sizeof(f->out));
    memcpy(f->out + f->out_len, s, n + 1);
    f->out_len += n;
}

static void out_line(feeder *f, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char tmp[8];
        if (p[i] < 0x20 || p[i] >= 0x7f)
            snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
        else
            snprintf(tmp, sizeof(tmp), "%c", p[i]);
        out_put(f, tmp);
    }
    out_put(f, "|");
}

static void feeder_init(feeder *f, size_t max_line)
{
    memset(f, 0, sizeof(*f));
    tk_line_init(&f->d, max_line);
}

/* Appends bytes to the held buffer and decodes until the codec needs more. */
static void feed(feeder *f, const unsigned char *p, size_t n)
{
    assert_true(f->held_len + n <= sizeof(f->held));
    if (n)
        memcpy(f->held + f->held_len, p, n);
    f->held_len += n;
    int idle_rounds = 0;
    for (;;) {
        const unsigned char *line = NULL;
        size_t line_len = 0, consumed = 0;
        tk_codec_status st = tk_line_next(&f->d, f->held, f->held_len, &line, &line_len, &consumed);
        assert_true(consumed <= f->held_len);
        if (st == TK_CODEC_OK) {
            assert_true(line_len <= f->d.max_line);
            assert_true(line >= f->held && line + line_len <= f->held + f->held_len);
            assert_true(consumed > line_len);
            out_line(f, line, line_len);
        } else if (st == TK_CODEC_TOO_LONG) {
            out_put(f, "#");
        } else {
            assert_int_equal(st, TK_CODEC_NEED);
        }
        memmove(f->held, f->held + consumed, f->held_len - consumed);
        f->held_len -= consumed;
        if (st == TK_CODEC_NEED)
            break;
        /* A result without progress may happen once (an error reported before
         * its bytes are skipped), never twice in a row. */
        idle_rounds = consumed ? 0 : idle_rounds + 1;
        assert_true(idle_rounds < 2);
    }
    if (f->held_len > f->max_held)
        f->max_held = f->held_len;
}

typedef struct {
    const char *in;
    size_t len; /* 0: strlen(in) */
    const char *want;
} line_case;

#define MAXL 8

static const line_case cases[] = {
    {"hello\nworld\n", 0, "hello|world|"},
    {"a\r\nb\r\n\r\n\n", 0, "a|b|||"},
    {"partial", 0, ""},
    {"one\npartial", 0, "one|"},
    {"\n\n\n", 0, "|||"},
    {"\r\n", 0, "|"},
    {"\r", 0, ""},
    {"short\n0123456789abcdef\nafter\n", 0, "short|#after|"},
    {"01234567\n", 0, "01234567|"},
    {"0123456\r\n", 0, "0123456|"},
    {"01234567\r\nnext\n", 0, "#next|"},
    {"012345678\nz\n", 0, "#z|"},
    {"\r\r\n", 0, "\\x0d|"},
    {"aaaaaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\nc\n", 0, "##c|"},
    {"ok\nxxxxxxxxxxxxxxxxxx", 0, "ok|#"},
    {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n01234567\n", 0, "#01234567|"},
    {"0123456789\r\nok\r\n", 0, "#ok|"},
    {"a\0b\n", 4, "a\\x00b|"},
    {"caf\xc3\xa9\n\xff\n", 0, "caf\\xc3\\xa9|\\xff|"},
};

static size_t case_len(const line_case *c)
{
    return c->len ? c->len : strlen(c->in);
}

static void check_transcript(const line_case *c, const feeder *f, const char *how, size_t a,
                             size_t b)
{
    if (strcmp(f->out, c->want) != 0)
        print_error("input \"%s\" fed %s (%zu, %zu): got \"%s\" want \"%s\"\n", c->in, how, a, b,
                    f->out, c->want);
    assert_string_equal(f->out, c->want);
}

/* Decoding each input whole gives the expected lines and errors. */
static void whole_input_gives_expected_lines(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        feeder f;
        feeder_init(&f, MAXL);
        feed(&f, (const unsigned char *)cases[i].in, case_len(&cases[i]));
        check_transcript(&cases[i], &f, "whole", 0, 0);
    }
}

/* Splitting each input in two at every byte position changes nothing. */
static void split_at_every_position_gives_same_lines(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const unsigned char *in = (const unsigned char *)cases[i].in;
        size_t n = case_len(&cases[i]);
        for (size_t cut = 0; cut <= n; cut++) {
            feeder f;
            feeder_init(&f, MAXL);
            feed(&f, in, cut);
            feed(&f, in + cut, n - cut);
            check_transcript(&cases[i], &f, "split at", cut, 0);
        }
    }
}

/* Splitting each input in three at every pair of positions changes nothing. */
static void split_in_three_everywhere_gives_same_lines(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const unsigned char *in = (const unsigned char *)cases[i].in;
        size_t n = case_len(&cases[i]);
        for (size_t a = 0; a <= n; a++) {
            for (size_t b = a; b <= n; b++) {
                feeder f;
                feeder_init(&f, MAXL);
                feed(&f, in, a);
                feed(&f, in + a, b - a);
                feed(&f, in + b, n - b);
                check_transcript(&cases[i], &f, "split in three at", a, b);
            }
        }
    }
}

/* Feeding in chunks of every fixed size, one byte included, changes nothing;
 * one byte at a time the caller never keeps more than max_line bytes. */
static void fixed_size_chunks_give_same_lines(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const unsigned char *in = (const unsigned char *)cases[i].in;
        size_t n = case_len(&cases[i]);
        for (size_t step = 1; step <= n; step++) {
            feeder f;
            feeder_init(&f, MAXL);
            for (size_t off = 0; off < n; off += step)
                feed(&f, in + off, off + step <= n ? step : n - off);
            check_transcript(&cases[i], &f, "in chunks of", step, 0);
            if (step == 1)
                assert_true(f.max_held <= MAXL);
        }
    }
}

/* A single complete line is returned without its newline and fully consumed. */
static void single_line_is_returned(void **state)
{
    (void)state;
    tk_line_decoder d;
    tk_line_init(&d, 100);
    const unsigned char in[] = "hello\n";
    const unsigned char *line;
    size_t line_len, consumed;
    assert_int_equal(tk_line_next(&d, in, 6, &line, &line_len, &consumed), TK_CODEC_OK);
    assert_ptr_equal(line, in);
    assert_int_equal(line_len, 5);
    assert_int_equal(consumed, 6);
}

/* Several lines in one buffer come out one per call, each call given the
 * bytes after what the previous one consumed. */
static void many_lines_in_one_buffer(void **state)
{
    (void)state;
    tk_line_decoder d;
    tk_line_init(&d, 100);
    const char *in = "one\r\ntwo\n\nthree\r\n";
    const char *want[] = {"one", "two", "", "three"};
    size_t len = strlen(in), off = 0;
    for (int i = 0; i < 4; i++) {
        const unsigned char *line;
        size_t line_len, consumed;
        assert_int_equal(tk_line_next(&d, (const unsigned char *)in + off, len - off, &line,
                                      &line_len, &consumed),
                         TK_CODEC_OK);
        assert_int_equal(line_len, strlen(want[i]));
        assert_memory_equal(line, want[i], line_len);
        off += consumed;
    }
    assert_int_equal(off, len);
    const unsigned char *line;
    size_t line_len, consumed = 99;
    assert_int_equal(
        tk_line_next(&d, (const unsigned char *)in + off, 0, &line, &line_len, &consumed),
        TK_CODEC_NEED);
    assert_int_equal(consumed, 0);
}

/* An incomplete line asks for more and consumes nothing, however often the
 * caller asks again with more of it. */
static void partial_line_consumes_nothing(void **state)
{
    (void)state;
    tk_line_decoder d;
    tk_line_init(&d, 100);
    const unsigned char in[] = "partial line\n";
    const unsigned char *line;
    size_t line_len, consumed;
    for (size_t n = 0; n < 12; n++) {
        consumed = 99;
        assert_int_equal(tk_line_next(&d, in, n, &line, &line_len, &consumed), TK_CODEC_NEED);
        assert_int_equal(consumed, 0);
    }
    assert_int_equal(tk_line_next(&d, in, 13, &line, &line_len, &consumed), TK_CODEC_OK);
    assert_int_equal(line_len, 12);
    assert_int_equal(consumed, 13);
}

/* A line of exactly max_line bytes is accepted; one more byte is refused once
 * and decoding resumes at the following line. */
static void limit_is_exact_and_stream_resumes(void **state)
{
    (void)state;
    char in[64];
    memset(in, 'a', 16);
    in[16] = '\n';
    memset(in + 17, 'b', 17);
    memcpy(in + 34, "\nnext\n", 6);
    feeder f;
    feeder_init(&f, 16);
    feed(&f, (const unsigned char *)in, 40);
    assert_string_equal(f.out, "aaaaaaaaaaaaaaaa|#next|");
}

/* A huge over-long line fed one byte at a time is reported exactly once and
 * never makes the caller keep more than max_line bytes between reads. */
static void huge_line_reported_once_with_bounded_memory(void **state)
{
    (void)state;
    feeder f;
    feeder_init(&f, MAXL);
    for (int i = 0; i < 100000; i++)
        feed(&f, (const unsigned char *)"x", 1);
    feed(&f, (const unsigned char *)"\nok\n", 4);
    assert_string_equal(f.out, "#ok|");
    assert_true(f.max_held <= MAXL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_line_is_returned),
        cmocka_unit_test(many_lines_in_one_buffer),
        cmocka_unit_test(partial_line_consumes_nothing),
        cmocka_unit_test(limit_is_exact_and_stream_resumes),
        cmocka_unit_test(huge_line_reported_once_with_bounded_memory),
        cmocka_unit_test(whole_input_gives_expected_lines),
        cmocka_unit_test(split_at_every_position_gives_same_lines),
        cmocka_unit_test(split_in_three_everywhere_gives_same_lines),
        cmocka_unit_test(fixed_size_chunks_give_same_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

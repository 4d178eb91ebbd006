/* tk_len_next / tk_len_header: 4-byte big-endian length-prefixed frames. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tcpkit/codec.h"

/* Builds header + payload into out and returns the frame length. */
static size_t make_frame(unsigned char *out, const char *payload, size_t n)
{
    tk_len_header(out, (uint32_t)n);
    memcpy(out + TK_LEN_HEADER, payload, n);
    return TK_LEN_HEADER + n;
}

/* The header is the payload length as 4 big-endian bytes. */
static void header_is_big_endian(void **state)
{
    (void)state;
    unsigned char h[TK_LEN_HEADER];
    tk_len_header(h, 0x01020304u);
    assert_memory_equal(h, "\x01\x02\x03\x04", 4);
    tk_len_header(h, 0);
    assert_memory_equal(h, "\x00\x00\x00\x00", 4);
    tk_len_header(h, 0xFFFFFFFFu);
    assert_memory_equal(h, "\xff\xff\xff\xff", 4);
}

/* A complete frame yields its payload and consumes header plus payload. */
static void whole_frame_is_decoded(void **state)
{
    (void)state;
    unsigned char buf[64];
    size_t n = make_frame(buf, "hello", 5);
    const unsigned char *p;
    size_t plen, consumed;
    assert_int_equal(tk_len_next(buf, n, 1024, &p, &plen, &consumed), TK_CODEC_OK);
    assert_ptr_equal(p, buf + TK_LEN_HEADER);
    assert_int_equal(plen, 5);
    assert_memory_equal(p, "hello", 5);
    assert_int_equal(consumed, 9);
}

/* Every strict prefix of a frame, empty included, asks for more and consumes
 * nothing; the full frame then decodes. */
static void every_prefix_needs_more(void **state)
{
    (void)state;
    unsigned char buf[64];
    size_t n = make_frame(buf, "split me", 8);
    const unsigned char *p;
    size_t plen, consumed;
    for (size_t k = 0; k < n; k++) {
        consumed = 99;
        assert_int_equal(tk_len_next(buf, k, 1024, &p, &plen, &consumed), TK_CODEC_NEED);
        assert_int_equal(consumed, 0);
    }
    assert_int_equal(tk_len_next(buf, n, 1024, &p, &plen, &consumed), TK_CODEC_OK);
    assert_int_equal(plen, 8);
    assert_int_equal(consumed, n);
}

/* Decodes stream[0..n) fed as two pieces cut at `cut` through a caller-held
 * buffer; writes each payload followed by '|' into out. */
static void decode_split(const unsigned char *stream, size_t n, size_t cut, char *out,
                         size_t outcap)
{
    unsigned char held[256];
    size_t held_len = 0, out_len = 0;
    size_t pieces[2][2] = {{0, cut}, {cut, n}};
    out[0] = '\0';
    for (int k = 0; k < 2; k++) {
        size_t m = pieces[k][1] - pieces[k][0];
        memcpy(held + held_len, stream + pieces[k][0], m);
        held_len += m;
        for (;;) {
            const unsigned char *p;
            size_t plen, consumed;
            tk_codec_status st = tk_len_next(held, held_len, 64, &p, &plen, &consumed);
            if (st == TK_CODEC_NEED) {
                assert_int_equal(consumed, 0);
                break;
            }
            assert_int_equal(st, TK_CODEC_OK);
            assert_int_equal(consumed, TK_LEN_HEADER + plen);
            assert_true(out_len + plen + 2 <= outcap);
            memcpy(out + out_len, p, plen);
            out_len += plen;
            out[out_len++] = '|';
            out[out_len] = '\0';
            memmove(held, held + consumed, held_len - consumed);
            held_len -= consumed;
        }
    }
    assert_int_equal(held_len, 0);
}

/* Several frames, a zero-length one among them, decode the same whether the
 * stream arrives whole or split at any byte. */
static void split_at_every_position_gives_same_frames(void **state)
{
    (void)state;
    unsigned char stream[128];
    size_t n = 0;
    n += make_frame(stream + n, "first", 5);
    n += make_frame(stream + n, "", 0);
    n += make_frame(stream + n, "x", 1);
    n += make_frame(stream + n, "a|b", 3);
    for (size_t cut = 0; cut <= n; cut++) {
        char out[128];
        decode_split(stream, n, cut, out, sizeof(out));
        assert_string_equal(out, "first||x|a|b|");
    }
}

/* Several frames in one buffer come out one per call. */
static void several_frames_in_one_buffer(void **state)
{
    (void)state;
    unsigned char stream[64];
    size_t n = 0;
    n += make_frame(stream + n, "ab", 2);
    n += make_frame(stream + n, "cde", 3);
    const unsigned char *p;
    size_t plen, consumed;
    assert_int_equal(tk_len_next(stream, n, 64, &p, &plen, &consumed), TK_CODEC_OK);
    assert_int_equal(plen, 2);
    assert_memory_equal(p, "ab", 2);
    assert_int_equal(consumed, 6);
    assert_int_equal(tk_len_next(stream + 6, n - 6, 64, &p, &plen, &consumed), TK_CODEC_OK);
    assert_int_equal(plen, 3);
    assert_memory_equal(p, "cde", 3);
    assert_int_equal(consumed, 7);
}

/* A zero-length frame is a valid empty message of four bytes. */
static void zero_length_frame(void **state)
{
    (void)state;
    unsigned char buf[4];
    tk_len_header(buf, 0);
    const unsigned char *p;
    size_t plen = 99, consumed;
    assert_int_equal(tk_len_next(buf, 4, 64, &p, &plen, &consumed), TK_CODEC_OK);
    assert_int_equal(plen, 0);
    assert_int_equal(consumed, 4);
}

/* A 0xFFFFFFFF length is refused from the header alone: nothing consumed and
 * the declared length reported. */
static void max_u32_length_is_too_long(void **state)
{
    (void)state;
    unsigned char buf[8] = {0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c', 'd'};
    const unsigned char *p;
    size_t plen, consumed = 99;
    assert_int_equal(tk_len_next(buf, 4, 1 << 20, &p, &plen, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(consumed, 0);
    assert_int_equal(plen, 0xFFFFFFFFu);
    consumed = 99;
    assert_int_equal(tk_len_next(buf, 8, 1 << 20, &p, &plen, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(consumed, 0);
    /* Even a limit of SIZE_MAX cannot make the length overflow. */
    assert_int_equal(tk_len_next(buf, 4, SIZE_MAX, &p, &plen, &consumed), TK_CODEC_NEED);
    assert_int_equal(consumed, 0);
}

/* A payload of exactly max_frame bytes is accepted; one more is refused as
 * soon as the header is in, before the payload arrives. */
static void limit_is_exact(void **state)
{
    (void)state;
    unsigned char buf[64];
    size_t n = make_frame(buf, "0123456789abcdef", 16);
    const unsigned char *p;
    size_t plen, consumed;
    assert_int_equal(tk_len_next(buf, n, 16, &p, &plen, &consumed), TK_CODEC_OK);
    assert_int_equal(plen, 16);
    assert_int_equal(consumed, 20);
    tk_len_header(buf, 17);
    consumed = 99;
    assert_int_equal(tk_len_next(buf, 4, 16, &p, &plen, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(plen, 17);
    assert_int_equal(consumed, 0);
}

/* max_frame 0 admits only empty frames. */
static void zero_limit_admits_only_empty_frames(void **state)
{
    (void)state;
    unsigned char buf[8];
    const unsigned char *p;
    size_t plen, consumed;
    tk_len_header(buf, 0);
    assert_int_equal(tk_len_next(buf, 4, 0, &p, &plen, &consumed), TK_CODEC_OK);
    tk_len_header(buf, 1);
    buf[4] = 'z';
    assert_int_equal(tk_len_next(buf, 5, 0, &p, &plen, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(consumed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_is_big_endian),
        cmocka_unit_test(whole_frame_is_decoded),
        cmocka_unit_test(every_prefix_needs_more),
        cmocka_unit_test(split_at_every_position_gives_same_frames),
        cmocka_unit_test(several_frames_in_one_buffer),
        cmocka_unit_test(zero_length_frame),
        cmocka_unit_test(max_u32_length_is_too_long),
        cmocka_unit_test(limit_is_exact),
        cmocka_unit_test(zero_limit_admits_only_empty_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

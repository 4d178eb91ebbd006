/* The file-transfer frame codec: the 6-byte header, tk_frame_next, the
 * version 1 response, every version 2 body (encode, split, decode), HELLO,
 * directory records and error names. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/frame.h"

#define BIG_MAX (1u << 20)

/* A digest whose bytes are all different, so a shifted view shows. */
static void fill_digest(unsigned char d[TK_FRAME_DIGEST], unsigned char seed)
{
    for (size_t i = 0; i < TK_FRAME_DIGEST; i++)
        d[i] = (unsigned char)(seed + 7 * i);
}

/* Splits the frame an encoder wrote into buf[0..n) and checks its header:
 * version 2, the type, a length of n - 6 and the whole frame consumed.
 * Returns the payload. */
static const unsigned char *split_v2(const unsigned char *buf, size_t n, uint8_t type)
{
    tk_frame_hdr h;
    const unsigned char *payload = NULL;
    size_t consumed = 99;
    assert_int_equal(tk_frame_next(buf, n, BIG_MAX, &h, &payload, &consumed), TK_CODEC_OK);
    assert_int_equal(h.version, TK_FRAME_V2);
    assert_int_equal(h.type, type);
    assert_int_equal(h.length, n - TK_FRAME_HEADER);
    assert_int_equal(consumed, n);
    assert_ptr_equal(payload, buf + TK_FRAME_HEADER);
    return payload;
}

/* Encodes, splits and decodes a frame body of the given type. */
static void decode_v2(const unsigned char *buf, size_t n, uint8_t type, tk_v2_msg *m)
{
    const unsigned char *p = split_v2(buf, n, type);
    assert_int_equal(tk_v2_decode(type, p, n - TK_FRAME_HEADER, m), 0);
}

/* ---- Header ---- */

/* The header is version, type, then the length as 4 big-endian bytes. */
static void header_encode_is_big_endian(void **state)
{
    (void)state;
    unsigned char h[TK_FRAME_HEADER];
    tk_frame_hdr_encode(h, 2, 9, 0x01020304u);
    assert_memory_equal(h, "\x02\x09\x01\x02\x03\x04", 6);
    tk_frame_hdr_encode(h, 1, 5, 0);
    assert_memory_equal(h, "\x01\x05\x00\x00\x00\x00", 6);
    tk_frame_hdr_encode(h, 0xff, 0xfe, 0xFFFFFFFFu);
    assert_memory_equal(h, "\xff\xfe\xff\xff\xff\xff", 6);
}

/* Decoding needs all six bytes and then reads the length big-endian, for
 * any version and type. */
static void header_decode_needs_six_bytes_and_reads_big_endian(void **state)
{
    (void)state;
    const unsigned char b[] = {0x07, 0x80, 0xff, 0xff, 0xff, 0xff, 0xaa};
    tk_frame_hdr h;
    for (size_t k = 0; k < TK_FRAME_HEADER; k++)
        assert_int_equal(tk_frame_hdr_decode(b, k, &h), 0);
    assert_int_equal(tk_frame_hdr_decode(b, 6, &h), 1);
    assert_int_equal(h.version, 7);
    assert_int_equal(h.type, 0x80);
    assert_int_equal(h.length, 0xFFFFFFFFu);
    const unsigned char c[] = {1, 2, 0x00, 0x01, 0x02, 0x03};
    assert_int_equal(tk_frame_hdr_decode(c, sizeof(c), &h), 1);
    assert_int_equal(h.length, 0x00010203u);
}

/* The u16/u32/u64 helpers write and read big-endian. */
static void integer_helpers_are_big_endian(void **state)
{
    (void)state;
    unsigned char b[8];
    tk_put_u16(b, 0xa1b2);
    assert_memory_equal(b, "\xa1\xb2", 2);
    assert_int_equal(tk_get_u16(b), 0xa1b2);
    tk_put_u32(b, 0xdeadbeefu);
    assert_memory_equal(b, "\xde\xad\xbe\xef", 4);
    assert_int_equal(tk_get_u32(b), 0xdeadbeefu);
    tk_put_u64(b, 0x0102030405060708ull);
    assert_memory_equal(b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    assert_int_equal(tk_get_u64(b), 0x0102030405060708ull);
    tk_put_u64(b, UINT64_MAX);
    assert_int_equal(tk_get_u64(b), UINT64_MAX);
}

/* A version 1 request and response header on the wire, byte for byte. */
static void v1_header_bytes_are_pinned(void **state)
{
    (void)state;
    unsigned char h[TK_FRAME_HEADER];
    tk_frame_hdr_encode(h, TK_FRAME_V1, TK_V1_REQUEST, 9); /* "hello.txt" */
    assert_memory_equal(h, "\x01\x01\x00\x00\x00\x09", 6);
    tk_frame_hdr_encode(h, TK_FRAME_V1, TK_V1_RESPONSE, 14); /* "hello.txt:1234" */
    assert_memory_equal(h, "\x01\x02\x00\x00\x00\x0e", 6);
    tk_frame_hdr_encode(h, TK_FRAME_V1, TK_V1_DATA, 0x00100000u);
    assert_memory_equal(h, "\x01\x03\x00\x10\x00\x00", 6);
}

/* A GET on the wire, byte for byte, without and with room for a tag. */
static void v2_get_bytes_are_pinned(void **state)
{
    (void)state;
    unsigned char out[64];
    static const unsigned char want[] = {
        0x02, 0x01, 0x00, 0x00, 0x00, 0x12,             /* v2 GET, length 18 */
        0x00, 0x00, 0x00, 0x07,                         /* stream 7 */
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* offset */
        0x01,                                           /* flags: zstd */
        'a',  '.',  't',  'x',  't',                    /* name */
    };
    size_t n = tk_v2_encode_get(out, 0, 7, 0x0102030405060708ull, TK_XFER_ZSTD, "a.txt", 5);
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    n = tk_v2_encode_get(out, TK_FRAME_TAG, 7, 0x0102030405060708ull, TK_XFER_ZSTD, "a.txt", 5);
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, "\x02\x01\x00\x00\x00\x32", 6);
    assert_memory_equal(out + 6, want + 6, sizeof(want) - 6);
}

/* ---- tk_frame_next ---- */

/* A complete frame is split off with its header and payload. */
static void whole_frame_is_split_off(void **state)
{
    (void)state;
    unsigned char buf[32];
    tk_frame_hdr_encode(buf, TK_FRAME_V1, TK_V1_REQUEST, 5);
    memcpy(buf + 6, "a.txt", 5);
    buf[11] = 0xee; /* the next frame's first byte */
    tk_frame_hdr h;
    const unsigned char *p;
    size_t consumed;
    assert_int_equal(tk_frame_next(buf, 12, 4096, &h, &p, &consumed), TK_CODEC_OK);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.type, 1);
    assert_int_equal(h.length, 5);
    assert_ptr_equal(p, buf + 6);
    assert_memory_equal(p, "a.txt", 5);
    assert_int_equal(consumed, 11);
}

/* Every strict prefix asks for more and consumes nothing; once the six
 * header bytes are there the header is reported too. */
static void partial_header_or_payload_needs_more(void **state)
{
    (void)state;
    unsigned char buf[32];
    tk_frame_hdr_encode(buf, TK_FRAME_V2, TK_V2_DATA, 10);
    memcpy(buf + 6, "0123456789", 10);
    for (size_t k = 0; k < 16; k++) {
        tk_frame_hdr h = {0, 0, 0};
        const unsigned char *p = buf;
        size_t consumed = 99;
        assert_int_equal(tk_frame_next(buf, k, 4096, &h, &p, &consumed), TK_CODEC_NEED);
        assert_int_equal(consumed, 0);
        if (k >= TK_FRAME_HEADER) {
            assert_int_equal(h.version, 2);
            assert_int_equal(h.type, TK_V2_DATA);
            assert_int_equal(h.length, 10);
        }
    }
}

/* An empty payload is a whole frame of six bytes. */
static void empty_payload_is_six_bytes(void **state)
{
    (void)state;
    unsigned char buf[6];
    tk_frame_hdr_encode(buf, TK_FRAME_V1, TK_V1_END, 0);
    tk_frame_hdr h;
    const unsigned char *p;
    size_t consumed;
    assert_int_equal(tk_frame_next(buf, 6, 0, &h, &p, &consumed), TK_CODEC_OK);
    assert_int_equal(h.length, 0);
    assert_int_equal(consumed, 6);
}

/* One split-off frame or final status, for comparing two decodings. */
typedef struct {
    tk_codec_status st;
    uint8_t version, type;
    uint32_t length;
    size_t at; /* stream offset of the frame */
} frame_seen;

/* Decodes stream[0..n) fed `step` bytes at a time (0: whole) through a
 * caller-held buffer, recording each frame and the status that stopped it.
 * Returns the number of records. */
static size_t decode_fed(const unsigned char *stream, size_t n, size_t step, uint32_t max,
                         frame_seen *seen, size_t cap)
{
    unsigned char held[512];
    size_t held_len = 0, fed = 0, done = 0, count = 0;
    assert_true(n <= sizeof(held));
    while (fed < n) {
        size_t m = step == 0 || n - fed < step ? n - fed : step;
        memcpy(held + held_len, stream + fed, m);
        held_len += m;
        fed += m;
        for (;;) {
            tk_frame_hdr h;
            const unsigned char *p;
            size_t consumed = 99;
            tk_codec_status st = tk_frame_next(held, held_len, max, &h, &p, &consumed);
            if (st == TK_CODEC_NEED) {
                assert_int_equal(consumed, 0);
                break;
            }
            assert_true(count < cap);
            seen[count++] = (frame_seen){st, h.version, h.type, h.length, done};
            if (st == TK_CODEC_TOO_LONG) {
                assert_int_equal(consumed, 0);
                return count;
            }
            assert_int_equal(consumed, TK_FRAME_HEADER + h.length);
            assert_memory_equal(p, stream + done + TK_FRAME_HEADER, h.length);
            done += consumed;
            memmove(held, held + consumed, held_len - consumed);
            held_len -= consumed;
        }
    }
    assert_true(count < cap);
    seen[count++] = (frame_seen){TK_CODEC_NEED, 0, 0, (uint32_t)held_len, done};
    return count;
}

/* Two decodings saw the same frames and stopped the same way. */
static void assert_same_frames(const frame_seen *a, const frame_seen *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].st, b[i].st);
        assert_int_equal(a[i].version, b[i].version);
        assert_int_equal(a[i].type, b[i].type);
        assert_int_equal(a[i].length, b[i].length);
        assert_int_equal(a[i].at, b[i].at);
    }
}

/* A stream of mixed frames (v1 and v2, empty ones) gives the same frames
 * whether it arrives whole, one byte at a time or in odd pieces. */
static void byte_at_a_time_gives_same_frames_as_whole(void **state)
{
    (void)state;
    unsigned char stream[256];
    unsigned char digest[TK_FRAME_DIGEST];
    fill_digest(digest, 3);
    size_t n = 0;
    tk_frame_hdr_encode(stream + n, TK_FRAME_V1, TK_V1_REQUEST, 3);
    memcpy(stream + n + 6, "abc", 3);
    n += 9;
    tk_frame_hdr_encode(stream + n, TK_FRAME_V1, TK_V1_END, 0);
    n += 6;
    n += tk_v2_encode_get(stream + n, 0, 1, 0, 0, "dir/file", 8);
    n += tk_v2_encode_end(stream + n, 0, 1, 12345, digest);
    n += tk_v2_encode_cancel(stream + n, 0, 9);
    n += tk_v2_encode_ping(stream + n, 0, TK_V2_PING, 42);
    stream[n++] = 0x02; /* and half a header */
    stream[n++] = 0x03;

    frame_seen whole[16], piece[16];
    size_t nw = decode_fed(stream, n, 0, 4096, whole, 16);
    assert_int_equal(nw, 7);
    assert_int_equal(whole[6].st, TK_CODEC_NEED);
    assert_int_equal(whole[6].length, 2);
    for (size_t step = 1; step <= 7; step++) {
        size_t np = decode_fed(stream, n, step, 4096, piece, 16);
        assert_int_equal(np, nw);
        assert_same_frames(piece, whole, nw);
    }
}

/* The same holds when the stream stops at an over-long header: every
 * feeding stops there, with the frames before it decoded. */
static void byte_at_a_time_stops_at_same_too_long_header(void **state)
{
    (void)state;
    unsigned char stream[64];
    size_t n = tk_v2_encode_ready(stream, 0, 3, 77);
    tk_frame_hdr_encode(stream + n, TK_FRAME_V2, TK_V2_DATA, 101);
    n += 6;
    memset(stream + n, 'x', 10);
    n += 10;
    frame_seen whole[8], piece[8];
    size_t nw = decode_fed(stream, n, 0, 100, whole, 8);
    assert_int_equal(nw, 2);
    assert_int_equal(whole[0].st, TK_CODEC_OK);
    assert_int_equal(whole[1].st, TK_CODEC_TOO_LONG);
    assert_int_equal(whole[1].length, 101);
    for (size_t step = 1; step <= 5; step++) {
        assert_int_equal(decode_fed(stream, n, step, 100, piece, 8), nw);
        assert_same_frames(piece, whole, nw);
    }
}

/* A length over max is refused from the header alone, header reported and
 * nothing consumed, whether or not payload bytes follow. */
static void length_over_max_is_too_long_and_consumes_nothing(void **state)
{
    (void)state;
    unsigned char buf[16];
    memset(buf, 'p', sizeof(buf));
    tk_frame_hdr_encode(buf, TK_FRAME_V1, TK_V1_REQUEST, 4097);
    tk_frame_hdr h;
    const unsigned char *p = buf;
    size_t consumed = 99;
    assert_int_equal(tk_frame_next(buf, 6, 4096, &h, &p, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(consumed, 0);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.type, 1);
    assert_int_equal(h.length, 4097);
    consumed = 99;
    assert_int_equal(tk_frame_next(buf, sizeof(buf), 4096, &h, &p, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(consumed, 0);
    /* max 0 admits only empty payloads. */
    tk_frame_hdr_encode(buf, TK_FRAME_V2, TK_V2_DATA, 1);
    assert_int_equal(tk_frame_next(buf, 7, 0, &h, &p, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(consumed, 0);
}

/* A length of 0xFFFFFFFF is too long for any max below it, and with max
 * UINT32_MAX it only asks for more (no overflow in the length check). */
static void max_u32_length_is_too_long(void **state)
{
    (void)state;
    unsigned char buf[10];
    tk_frame_hdr_encode(buf, TK_FRAME_V2, TK_V2_DATA, 0xFFFFFFFFu);
    memcpy(buf + 6, "abcd", 4);
    tk_frame_hdr h;
    const unsigned char *p;
    size_t consumed = 99;
    assert_int_equal(tk_frame_next(buf, 10, 4096, &h, &p, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(consumed, 0);
    assert_int_equal(h.length, 0xFFFFFFFFu);
    consumed = 99;
    assert_int_equal(tk_frame_next(buf, 6, UINT32_MAX - 1, &h, &p, &consumed), TK_CODEC_TOO_LONG);
    assert_int_equal(consumed, 0);
    consumed = 99;
    assert_int_equal(tk_frame_next(buf, 10, UINT32_MAX, &h, &p, &consumed), TK_CODEC_NEED);
    assert_int_equal(consumed, 0);
}

/* A payload of exactly max bytes is accepted. */
static void payload_of_exactly_max_is_ok(void **state)
{
    (void)state;
    unsigned char buf[6 + 4096];
    tk_frame_hdr_encode(buf, TK_FRAME_V1, TK_V1_REQUEST, 4096);
    memset(buf + 6, 'n', 4096);
    tk_frame_hdr h;
    const unsigned char *p;
    size_t consumed;
    assert_int_equal(tk_frame_next(buf, sizeof(buf), 4096, &h, &p, &consumed), TK_CODEC_OK);
    assert_int_equal(h.length, 4096);
    assert_int_equal(consumed, sizeof(buf));
    assert_int_equal(tk_frame_next(buf, sizeof(buf) - 1, 4096, &h, &p, &consumed), TK_CODEC_NEED);
    assert_int_equal(consumed, 0);
}

/* ---- Version 1 response ---- */

static int parse_v1(const char *s, uint64_t *size)
{
    return tk_v1_parse_response((const unsigned char *)s, strlen(s), size);
}

/* The size is the decimal after the last colon, so names may hold colons. */
static void v1_response_size_follows_last_colon(void **state)
{
    (void)state;
    uint64_t size = 99;
    assert_int_equal(parse_v1("hello.txt:1234", &size), 0);
    assert_int_equal(size, 1234);
    assert_int_equal(parse_v1("a:b:123", &size), 0);
    assert_int_equal(size, 123);
    assert_int_equal(parse_v1("empty:0", &size), 0);
    assert_int_equal(size, 0);
    assert_int_equal(parse_v1("big:18446744073709551615", &size), 0);
    assert_int_equal(size, UINT64_MAX);
}

/* Without a colon, with nothing after it or with a non-digit in the size,
 * the response is refused and *size left alone. */
static void v1_response_without_decimal_size_is_einval(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",      "nocolon", "name:", "a:b:",  "a:12x", "a:x12", "a: 12",
        "a:12 ", "a:-1",    "a:+1",  "a:1.5", "a:0x1", "12:",   ":",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t size = 99;
        assert_int_equal(parse_v1(bad[i], &size), -EINVAL);
        assert_int_equal(size, 99);
    }
}

/* A size beyond u64 is refused rather than wrapped. */
static void v1_response_size_beyond_u64_is_einval(void **state)
{
    (void)state;
    uint64_t size = 99;
    assert_int_equal(parse_v1("f:18446744073709551616", &size), -EINVAL);
    assert_int_equal(parse_v1("f:99999999999999999999", &size), -EINVAL);
    assert_int_equal(parse_v1("f:184467440737095516150", &size), -EINVAL);
    assert_int_equal(parse_v1("f:1000000000000000000000000000", &size), -EINVAL);
    assert_int_equal(size, 99);
}

/* ---- HELLO ---- */

static tk_hello sample_hello(void)
{
    tk_hello h;
    h.flags = TK_HELLO_AUTH;
    h.features = 0xa001;
    h.max_frame = 0x00010000u;
    for (size_t i = 0; i < TK_FRAME_NONCE; i++)
        h.nonce[i] = (unsigned char)(0xf0 + i);
    return h;
}

/* A HELLO body is flags, a zero byte, features, max_frame and the nonce,
 * and decodes back to the same fields. */
static void hello_round_trips(void **state)
{
    (void)state;
    tk_hello h = sample_hello(), back;
    unsigned char b[TK_HELLO_LEN];
    memset(b, 0xcc, sizeof(b));
    tk_hello_encode(b, &h);
    assert_memory_equal(b, "\x01\x00\xa0\x01\x00\x01\x00\x00", 8);
    assert_memory_equal(b + 8, h.nonce, TK_FRAME_NONCE);
    memset(&back, 0, sizeof(back));
    assert_int_equal(tk_hello_decode(b, sizeof(b), &back), 0);
    assert_int_equal(back.flags, h.flags);
    assert_int_equal(back.features, h.features);
    assert_int_equal(back.max_frame, h.max_frame);
    assert_memory_equal(back.nonce, h.nonce, TK_FRAME_NONCE);
}

/* A HELLO body of any length but 24 is refused. */
static void hello_of_wrong_length_is_einval(void **state)
{
    (void)state;
    unsigned char b[TK_HELLO_LEN + 8];
    memset(b, 0, sizeof(b));
    tk_hello h;
    for (size_t n = 0; n < sizeof(b); n++)
        if (n != TK_HELLO_LEN)
            assert_int_equal(tk_hello_decode(b, n, &h), -EINVAL);
}

/* A HELLO frame is v2 type 16 without a stream id; tk_v2_decode leaves it
 * to tk_hello_decode. */
static void hello_frame_round_trips_and_is_not_a_v2_body(void **state)
{
    (void)state;
    tk_hello h = sample_hello(), back;
    unsigned char out[TK_FRAME_HEADER + TK_HELLO_LEN];
    size_t n = tk_v2_encode_hello(out, 0, &h);
    assert_int_equal(n, sizeof(out));
    assert_memory_equal(out, "\x02\x10\x00\x00\x00\x18", 6);
    const unsigned char *p = split_v2(out, n, TK_V2_HELLO);
    assert_int_equal(tk_hello_decode(p, n - TK_FRAME_HEADER, &back), 0);
    assert_int_equal(back.flags, h.flags);
    assert_int_equal(back.features, h.features);
    assert_int_equal(back.max_frame, h.max_frame);
    assert_memory_equal(back.nonce, h.nonce, TK_FRAME_NONCE);
    tk_v2_msg m;
    assert_int_equal(tk_v2_decode(TK_V2_HELLO, p, TK_HELLO_LEN, &m), -ENOTSUP);
}

/* ---- Version 2 bodies: encode, split, decode ---- */

/* GET: stream, offset, flags and a name viewed in the buffer. */
static void get_round_trips(void **state)
{
    (void)state;
    unsigned char out[64];
    tk_v2_msg m;
    size_t n = tk_v2_encode_get(out, 0, 0xfffffffeu, UINT64_MAX, TK_XFER_ZSTD, "dir/f.bin", 9);
    assert_int_equal(n, TK_FRAME_HEADER + 13 + 9);
    decode_v2(out, n, TK_V2_GET, &m);
    assert_int_equal(m.stream, 0xfffffffeu);
    assert_int_equal(m.a, UINT64_MAX);
    assert_int_equal(m.flags, TK_XFER_ZSTD);
    assert_int_equal(m.name_len, 9);
    assert_ptr_equal(m.name, out + TK_FRAME_HEADER + 13);
    assert_memory_equal(m.name, "dir/f.bin", 9);
    assert_null(m.data);
    assert_int_equal(m.has_digest, 0);
    /* An empty name is a valid (if unanswerable) GET. */
    n = tk_v2_encode_get(out, 0, 1, 0, 0, NULL, 0);
    assert_int_equal(n, TK_FRAME_HEADER + 13);
    decode_v2(out, n, TK_V2_GET, &m);
    assert_int_equal(m.name_len, 0);
}

/* OPEN: size, offset, a negative mtime and flags. */
static void open_round_trips(void **state)
{
    (void)state;
    unsigned char out[64];
    tk_v2_msg m;
    size_t n = tk_v2_encode_open(out, 0, 5, 1000000, 4096, -1234567890123LL, TK_XFER_ZSTD);
    assert_int_equal(n, TK_FRAME_HEADER + 29);
    decode_v2(out, n, TK_V2_OPEN, &m);
    assert_int_equal(m.stream, 5);
    assert_int_equal(m.b, 1000000);
    assert_int_equal(m.a, 4096);
    assert_true(m.mtime == -1234567890123LL);
    assert_int_equal(m.flags, TK_XFER_ZSTD);
    assert_null(m.name);
    n = tk_v2_encode_open(out, 0, 5, UINT64_MAX, 0, INT64_MIN, 0);
    decode_v2(out, n, TK_V2_OPEN, &m);
    assert_int_equal(m.b, UINT64_MAX);
    assert_true(m.mtime == INT64_MIN);
}

/* DATA: the encoder writes the head, the caller appends the bytes. */
static void data_head_round_trips(void **state)
{
    (void)state;
    unsigned char out[64];
    tk_v2_msg m;
    size_t n = tk_v2_encode_data_head(out, 0, 17, 11);
    assert_int_equal(n, TK_FRAME_HEADER + 4);
    memcpy(out + n, "file bytes!", 11);
    decode_v2(out, n + 11, TK_V2_DATA, &m);
    assert_int_equal(m.stream, 17);
    assert_int_equal(m.data_len, 11);
    assert_ptr_equal(m.data, out + n);
    assert_null(m.name);
    /* An empty DATA is legal. */
    n = tk_v2_encode_data_head(out, 0, 17, 0);
    decode_v2(out, n, TK_V2_DATA, &m);
    assert_int_equal(m.data_len, 0);
}

/* END with a digest (GET, PUT) and without (LIST). */
static void end_round_trips_with_and_without_digest(void **state)
{
    (void)state;
    unsigned char out[64], digest[TK_FRAME_DIGEST];
    fill_digest(digest, 1);
    tk_v2_msg m;
    size_t n = tk_v2_encode_end(out, 0, 2, 987654321, digest);
    assert_int_equal(n, TK_FRAME_HEADER + 12 + TK_FRAME_DIGEST);
    decode_v2(out, n, TK_V2_END, &m);
    assert_int_equal(m.stream, 2);
    assert_int_equal(m.a, 987654321);
    assert_true(m.has_digest);
    assert_ptr_equal(m.digest, out + TK_FRAME_HEADER + 12);
    assert_memory_equal(m.digest, digest, TK_FRAME_DIGEST);
    n = tk_v2_encode_end(out, 0, 3, 4, NULL);
    assert_int_equal(n, TK_FRAME_HEADER + 12);
    decode_v2(out, n, TK_V2_END, &m);
    assert_int_equal(m.stream, 3);
    assert_int_equal(m.a, 4);
    assert_false(m.has_digest);
    assert_null(m.digest);
}

/* ERROR: code and message, the message possibly empty. */
static void error_round_trips(void **state)
{
    (void)state;
    unsigned char out[64];
    tk_v2_msg m;
    size_t n = tk_v2_encode_error(out, 0, 0, TK_FERR_PROTOCOL, "out of place", 12);
    assert_int_equal(n, TK_FRAME_HEADER + 6 + 12);
    decode_v2(out, n, TK_V2_ERROR, &m);
    assert_int_equal(m.stream, 0);
    assert_int_equal(m.code, TK_FERR_PROTOCOL);
    assert_int_equal(m.data_len, 12);
    assert_memory_equal(m.data, "out of place", 12);
    n = tk_v2_encode_error(out, 0, 9, 0xffff, NULL, 0);
    decode_v2(out, n, TK_V2_ERROR, &m);
    assert_int_equal(m.stream, 9);
    assert_int_equal(m.code, 0xffff);
    assert_int_equal(m.data_len, 0);
}

/* LIST: a directory name, empty for the root. */
static void list_round_trips(void **state)
{
    (void)state;
    unsigned char out[64];
    tk_v2_msg m;
    size_t n = tk_v2_encode_list(out, 0, 4, "sub/dir", 7);
    assert_int_equal(n, TK_FRAME_HEADER + 4 + 7);
    decode_v2(out, n, TK_V2_LIST, &m);
    assert_int_equal(m.stream, 4);
    assert_int_equal(m.name_len, 7);
    assert_memory_equal(m.name, "sub/dir", 7);
    n = tk_v2_encode_list(out, 0, 4, NULL, 0);
    decode_v2(out, n, TK_V2_LIST, &m);
    assert_int_equal(m.name_len, 0);
}

/* ENTRIES: the head, then records that walk back to what was encoded. */
static void entries_head_and_records_round_trip(void **state)
{
    (void)state;
    static const tk_entry in[] = {
        {TK_KIND_FILE, 123456789, 1700000000123456789LL, (const unsigned char *)"a.txt", 5},
        {TK_KIND_DIR, 0, -5, (const unsigned char *)"sub", 3},
        {TK_KIND_LINK, UINT64_MAX, INT64_MIN, (const unsigned char *)"", 0},
        {TK_KIND_OTHER, 1, 0, (const unsigned char *)"fifo:x", 6},
    };
    const size_t count = sizeof(in) / sizeof(in[0]);
    unsigned char out[256];
    size_t recs = 0;
    for (size_t i = 0; i < count; i++)
        recs += TK_ENTRY_FIXED + in[i].name_len;
    size_t n = tk_v2_encode_entries_head(out, 0, 6, recs);
    assert_int_equal(n, TK_FRAME_HEADER + 4);
    for (size_t i = 0; i < count; i++)
        n += tk_entry_encode(out + n, &in[i]);
    tk_v2_msg m;
    decode_v2(out, n, TK_V2_ENTRIES, &m);
    assert_int_equal(m.stream, 6);
    assert_int_equal(m.data_len, recs);
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        tk_entry e;
        size_t len = tk_entry_decode(m.data + off, m.data_len - off, &e);
        assert_int_equal(len, TK_ENTRY_FIXED + in[i].name_len);
        assert_int_equal(e.kind, in[i].kind);
        assert_int_equal(e.size, in[i].size);
        assert_true(e.mtime == in[i].mtime);
        assert_int_equal(e.name_len, in[i].name_len);
        assert_memory_equal(e.name, in[i].name, e.name_len);
        off += len;
    }
    assert_int_equal(off, m.data_len);
}

/* STAT: flags and a name. */
static void stat_round_trips(void **state)
{
    (void)state;
    unsigned char out[64];
    tk_v2_msg m;
    size_t n = tk_v2_encode_stat(out, 0, 8, TK_STAT_DIGEST, "x/y", 3);
    assert_int_equal(n, TK_FRAME_HEADER + 5 + 3);
    decode_v2(out, n, TK_V2_STAT, &m);
    assert_int_equal(m.stream, 8);
    assert_int_equal(m.flags, TK_STAT_DIGEST);
    assert_int_equal(m.name_len, 3);
    assert_memory_equal(m.name, "x/y", 3);
}

/* INFO with and without the digest. */
static void info_round_trips_with_and_without_digest(void **state)
{
    (void)state;
    unsigned char out[64], digest[TK_FRAME_DIGEST];
    fill_digest(digest, 9);
    tk_v2_msg m;
    size_t n = tk_v2_encode_info(out, 0, 10, TK_KIND_FILE, 42, 1700000000000000000LL, digest);
    assert_int_equal(n, TK_FRAME_HEADER + 21 + TK_FRAME_DIGEST);
    decode_v2(out, n, TK_V2_INFO, &m);
    assert_int_equal(m.stream, 10);
    assert_int_equal(m.kind, TK_KIND_FILE);
    assert_int_equal(m.a, 42);
    assert_true(m.mtime == 1700000000000000000LL);
    assert_true(m.has_digest);
    assert_ptr_equal(m.digest, out + TK_FRAME_HEADER + 21);
    assert_memory_equal(m.digest, digest, TK_FRAME_DIGEST);
    n = tk_v2_encode_info(out, 0, 11, TK_KIND_DIR, 0, -1, NULL);
    assert_int_equal(n, TK_FRAME_HEADER + 21);
    decode_v2(out, n, TK_V2_INFO, &m);
    assert_int_equal(m.stream, 11);
    assert_int_equal(m.kind, TK_KIND_DIR);
    assert_int_equal(m.a, 0);
    assert_true(m.mtime == -1);
    assert_false(m.has_digest);
    assert_null(m.digest);
}

/* PUT: size, flags and a name. */
static void put_round_trips(void **state)
{
    (void)state;
    unsigned char out[64];
    tk_v2_msg m;
    uint8_t flags = TK_XFER_ZSTD | TK_PUT_RESUME | TK_PUT_OVERWRITE;
    size_t n = tk_v2_encode_put(out, 0, 12, 1ull << 40, flags, "up.bin", 6);
    assert_int_equal(n, TK_FRAME_HEADER + 13 + 6);
    decode_v2(out, n, TK_V2_PUT, &m);
    assert_int_equal(m.stream, 12);
    assert_int_equal(m.a, 1ull << 40);
    assert_int_equal(m.flags, flags);
    assert_int_equal(m.name_len, 6);
    assert_memory_equal(m.name, "up.bin", 6);
}

/* READY: the offset the upload starts at. */
static void ready_round_trips(void **state)
{
    (void)state;
    unsigned char out[32];
    tk_v2_msg m;
    size_t n = tk_v2_encode_ready(out, 0, 13, 65536);
    assert_int_equal(n, TK_FRAME_HEADER + 12);
    decode_v2(out, n, TK_V2_READY, &m);
    assert_int_equal(m.stream, 13);
    assert_int_equal(m.a, 65536);
}

/* DONE: size and the digest, always present. */
static void done_round_trips(void **state)
{
    (void)state;
    unsigned char out[64], digest[TK_FRAME_DIGEST];
    fill_digest(digest, 200);
    tk_v2_msg m;
    size_t n = tk_v2_encode_done(out, 0, 14, 555, digest);
    assert_int_equal(n, TK_FRAME_HEADER + 44);
    decode_v2(out, n, TK_V2_DONE, &m);
    assert_int_equal(m.stream, 14);
    assert_int_equal(m.a, 555);
    assert_true(m.has_digest);
    assert_memory_equal(m.digest, digest, TK_FRAME_DIGEST);
}

/* CANCEL: only the stream id. */
static void cancel_round_trips(void **state)
{
    (void)state;
    unsigned char out[32];
    tk_v2_msg m;
    size_t n = tk_v2_encode_cancel(out, 0, 0x01020304u);
    assert_int_equal(n, TK_FRAME_HEADER + 4);
    assert_memory_equal(out, "\x02\x0d\x00\x00\x00\x04\x01\x02\x03\x04", 10);
    decode_v2(out, n, TK_V2_CANCEL, &m);
    assert_int_equal(m.stream, 0x01020304u);
}

/* PING and PONG: a token on stream 0. */
static void ping_and_pong_round_trip_on_stream_zero(void **state)
{
    (void)state;
    unsigned char out[32];
    tk_v2_msg m;
    size_t n = tk_v2_encode_ping(out, 0, TK_V2_PING, 0xfeedfacecafebeefull);
    assert_int_equal(n, TK_FRAME_HEADER + 12);
    decode_v2(out, n, TK_V2_PING, &m);
    assert_int_equal(m.stream, 0);
    assert_int_equal(m.a, 0xfeedfacecafebeefull);
    n = tk_v2_encode_ping(out, 0, TK_V2_PONG, 7);
    decode_v2(out, n, TK_V2_PONG, &m);
    assert_int_equal(m.stream, 0);
    assert_int_equal(m.a, 7);
}

/* Encodes one frame of each type 1..16 with the given tag room; returns its
 * length. DATA and ENTRIES get their variable part appended. */
static size_t encode_any(unsigned char *out, uint8_t type, size_t tag_len)
{
    unsigned char digest[TK_FRAME_DIGEST];
    fill_digest(digest, 5);
    tk_hello h = sample_hello();
    tk_entry e = {TK_KIND_FILE, 3, 4, (const unsigned char *)"e", 1};
    size_t n;
    switch (type) {
    case TK_V2_GET: return tk_v2_encode_get(out, tag_len, 1, 2, 0, "name", 4);
    case TK_V2_OPEN: return tk_v2_encode_open(out, tag_len, 1, 2, 3, 4, 0);
    case TK_V2_DATA:
        n = tk_v2_encode_data_head(out, tag_len, 1, 3);
        memcpy(out + n, "abc", 3);
        return n + 3;
    case TK_V2_END: return tk_v2_encode_end(out, tag_len, 1, 2, digest);
    case TK_V2_ERROR: return tk_v2_encode_error(out, tag_len, 1, 2, "msg", 3);
    case TK_V2_LIST: return tk_v2_encode_list(out, tag_len, 1, "d", 1);
    case TK_V2_ENTRIES:
        n = tk_v2_encode_entries_head(out, tag_len, 1, TK_ENTRY_FIXED + 1);
        return n + tk_entry_encode(out + n, &e);
    case TK_V2_STAT: return tk_v2_encode_stat(out, tag_len, 1, 0, "s", 1);
    case TK_V2_INFO: return tk_v2_encode_info(out, tag_len, 1, 1, 2, 3, digest);
    case TK_V2_PUT: return tk_v2_encode_put(out, tag_len, 1, 2, 0, "p", 1);
    case TK_V2_READY: return tk_v2_encode_ready(out, tag_len, 1, 2);
    case TK_V2_DONE: return tk_v2_encode_done(out, tag_len, 1, 2, digest);
    case TK_V2_CANCEL: return tk_v2_encode_cancel(out, tag_len, 1);
    case TK_V2_PING:
    case TK_V2_PONG: return tk_v2_encode_ping(out, tag_len, type, 2);
    case TK_V2_HELLO: return tk_v2_encode_hello(out, tag_len, &h);
    default: fail(); return 0;
    }
}

/* A tag length makes the header's length larger by exactly that much and
 * changes nothing else; the tagged frame splits whole and its body decodes
 * once the tag is taken off. */
static void tag_len_only_adds_to_header_length(void **state)
{
    (void)state;
    for (uint8_t type = TK_V2_GET; type <= TK_V2_HELLO; type++) {
        unsigned char plain[128], tagged[128 + TK_FRAME_TAG];
        size_t n = encode_any(plain, type, 0);
        memset(tagged, 0, sizeof(tagged));
        size_t t = encode_any(tagged, type, TK_FRAME_TAG);
        assert_int_equal(t, n);
        assert_int_equal(tk_get_u32(plain + 2), n - TK_FRAME_HEADER);
        assert_int_equal(tk_get_u32(tagged + 2), n - TK_FRAME_HEADER + TK_FRAME_TAG);
        assert_memory_equal(tagged, plain, 2);
        assert_memory_equal(tagged + 6, plain + 6, n - 6);

        memset(tagged + n, 0x5a, TK_FRAME_TAG);
        tk_frame_hdr h;
        const unsigned char *p;
        size_t consumed;
        assert_int_equal(tk_frame_next(tagged, n + TK_FRAME_TAG - 1, BIG_MAX, &h, &p, &consumed),
                         TK_CODEC_NEED);
        assert_int_equal(tk_frame_next(tagged, n + TK_FRAME_TAG, BIG_MAX, &h, &p, &consumed),
                         TK_CODEC_OK);
        assert_int_equal(consumed, n + TK_FRAME_TAG);
        size_t body = h.length - TK_FRAME_TAG;
        if (type == TK_V2_HELLO) {
            tk_hello back;
            assert_int_equal(tk_hello_decode(p, body, &back), 0);
        } else {
            tk_v2_msg m;
            assert_int_equal(tk_v2_decode(type, p, body, &m), 0);
            assert_int_equal(m.stream, type == TK_V2_PING || type == TK_V2_PONG ? 0 : 1);
        }
    }
}

/* ---- Malformed bodies ---- */

/* tk_v2_fixed_len gives the sizes the header documents. */
static void fixed_lengths_match_the_contract(void **state)
{
    (void)state;
    static const size_t want[] = {0, 13, 29, 4, 12, 6, 4, 4, 5, 21, 13, 12, 44, 4, 12, 12};
    for (uint8_t t = 0; t < sizeof(want) / sizeof(want[0]); t++)
        assert_int_equal(tk_v2_fixed_len(t), want[t]);
    assert_int_equal(tk_v2_fixed_len(17), 0);
    assert_int_equal(tk_v2_fixed_len(255), 0);
}

/* A body shorter than its type's fixed part is refused for every type. */
static void body_shorter_than_fixed_part_is_einval(void **state)
{
    (void)state;
    unsigned char b[64];
    memset(b, 0x11, sizeof(b));
    for (uint8_t type = TK_V2_GET; type <= TK_V2_PONG; type++) {
        size_t fixed = tk_v2_fixed_len(type);
        for (size_t n = 0; n < fixed; n++) {
            tk_v2_msg m;
            assert_int_equal(tk_v2_decode(type, b, n, &m), -EINVAL);
        }
    }
}

/* Fixed-size bodies must be exactly their size (END and INFO: with or
 * without the 32-byte digest); anything else is refused. */
static void fixed_size_body_of_wrong_length_is_einval(void **state)
{
    (void)state;
    static const struct {
        uint8_t type;
        size_t ok1, ok2; /* accepted lengths (ok2 = ok1 when there is one) */
    } fixed[] = {
        {TK_V2_OPEN, 29, 29}, {TK_V2_END, 12, 44},  {TK_V2_INFO, 21, 53}, {TK_V2_READY, 12, 12},
        {TK_V2_DONE, 44, 44}, {TK_V2_CANCEL, 4, 4}, {TK_V2_PING, 12, 12}, {TK_V2_PONG, 12, 12},
    };
    unsigned char b[128];
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        memset(b, 0x22, sizeof(b));
        if (fixed[i].type == TK_V2_PING || fixed[i].type == TK_V2_PONG)
            memset(b, 0, TK_FRAME_STREAM); /* heartbeats belong to stream 0 */
        for (size_t n = 0; n < sizeof(b); n++) {
            tk_v2_msg m;
            int want = n == fixed[i].ok1 || n == fixed[i].ok2 ? 0 : -EINVAL;
            assert_int_equal(tk_v2_decode(fixed[i].type, b, n, &m), want);
        }
    }
}

/* PING and PONG on a stream other than 0 are malformed. */
static void heartbeat_off_stream_zero_is_einval(void **state)
{
    (void)state;
    unsigned char f[TK_FRAME_HEADER + 12];
    tk_v2_msg m;
    tk_v2_encode_ping(f, 0, TK_V2_PING, 7);
    assert_int_equal(tk_v2_decode(TK_V2_PING, f + TK_FRAME_HEADER, 12, &m), 0);
    f[TK_FRAME_HEADER + 3] = 1; /* stream 1 */
    assert_int_equal(tk_v2_decode(TK_V2_PING, f + TK_FRAME_HEADER, 12, &m), -EINVAL);
    assert_int_equal(tk_v2_decode(TK_V2_PONG, f + TK_FRAME_HEADER, 12, &m), -EINVAL);
}

/* A HELLO whose reserved byte is not 0 is malformed. */
static void hello_reserved_byte_must_be_zero(void **state)
{
    (void)state;
    tk_hello h = {.flags = 0, .features = 1, .max_frame = 65536};
    unsigned char b[TK_HELLO_LEN];
    tk_hello_encode(b, &h);
    tk_hello out;
    assert_int_equal(tk_hello_decode(b, sizeof(b), &out), 0);
    b[1] = 1;
    assert_int_equal(tk_hello_decode(b, sizeof(b), &out), -EINVAL);
}

/* An entry without a name encodes to its fixed part alone. */
static void entry_without_name_is_fixed_part_only(void **state)
{
    (void)state;
    unsigned char b[TK_ENTRY_FIXED];
    tk_entry e = {TK_KIND_FILE, 2, 3, NULL, 0}, d;
    assert_int_equal(tk_entry_encode(b, &e), TK_ENTRY_FIXED);
    assert_int_equal(tk_entry_decode(b, sizeof(b), &d), TK_ENTRY_FIXED);
    assert_int_equal(d.name_len, 0);
    assert_int_equal(d.size, 2);
}

/* Variable bodies take any tail after their fixed part. */
static void variable_body_takes_any_tail(void **state)
{
    (void)state;
    static const uint8_t types[] = {TK_V2_GET,     TK_V2_DATA, TK_V2_ERROR, TK_V2_LIST,
                                    TK_V2_ENTRIES, TK_V2_STAT, TK_V2_PUT};
    unsigned char b[64];
    memset(b, 0x33, sizeof(b));
    for (size_t i = 0; i < sizeof(types); i++) {
        size_t fixed = tk_v2_fixed_len(types[i]);
        for (size_t n = fixed; n < sizeof(b); n++) {
            tk_v2_msg m;
            assert_int_equal(tk_v2_decode(types[i], b, n, &m), 0);
            assert_int_equal(m.name_len + m.data_len, n - fixed);
        }
    }
}

/* Unknown types and HELLO are not tk_v2_decode's to judge. */
static void unknown_type_and_hello_are_enotsup(void **state)
{
    (void)state;
    unsigned char b[64];
    memset(b, 0, sizeof(b));
    static const uint8_t types[] = {0, TK_V2_HELLO, 17, 100, 255};
    for (size_t i = 0; i < sizeof(types); i++) {
        tk_v2_msg m;
        assert_int_equal(tk_v2_decode(types[i], b, sizeof(b), &m), -ENOTSUP);
        assert_int_equal(tk_v2_decode(types[i], b, TK_HELLO_LEN, &m), -ENOTSUP);
        assert_int_equal(tk_v2_decode(types[i], b, 0, &m), -ENOTSUP);
    }
}

/* ---- Directory records ---- */

/* A record is kind, size, mtime, name length and name, big-endian. */
static void entry_round_trips(void **state)
{
    (void)state;
    tk_entry e = {TK_KIND_DIR, 0x0102030405060708ull, -2, (const unsigned char *)"docs", 4};
    tk_entry back;
    unsigned char b[64];
    size_t n = tk_entry_encode(b, &e);
    assert_int_equal(n, TK_ENTRY_FIXED + 4);
    assert_memory_equal(b,
                        "\x02"
                        "\x01\x02\x03\x04\x05\x06\x07\x08"
                        "\xff\xff\xff\xff\xff\xff\xff\xfe"
                        "\x00\x04"
                        "docs",
                        n);
    assert_int_equal(tk_entry_decode(b, n, &back), n);
    assert_int_equal(back.kind, TK_KIND_DIR);
    assert_int_equal(back.size, e.size);
    assert_true(back.mtime == -2);
    assert_ptr_equal(back.name, b + TK_ENTRY_FIXED);
    assert_int_equal(back.name_len, 4);
    /* Trailing bytes belong to the next record. */
    assert_int_equal(tk_entry_decode(b, n + 10, &back), n);
}

/* The longest name (65535 bytes) survives the u16 length. */
static void entry_with_longest_name_round_trips(void **state)
{
    (void)state;
    size_t len = 65535;
    unsigned char *name = malloc(len);
    unsigned char *b = malloc(TK_ENTRY_FIXED + len);
    assert_non_null(name);
    assert_non_null(b);
    memset(name, 'n', len);
    tk_entry e = {TK_KIND_FILE, 1, 2, name, len}, back;
    assert_int_equal(tk_entry_encode(b, &e), TK_ENTRY_FIXED + len);
    assert_int_equal(tk_entry_decode(b, TK_ENTRY_FIXED + len, &back), TK_ENTRY_FIXED + len);
    assert_int_equal(back.name_len, len);
    assert_memory_equal(back.name, name, len);
    free(b);
    free(name);
}

/* A record cut anywhere, or whose name length runs past the bytes given,
 * decodes to 0. */
static void truncated_entry_is_zero(void **state)
{
    (void)state;
    tk_entry e = {TK_KIND_FILE, 9, 9, (const unsigned char *)"name.txt", 8}, back;
    unsigned char b[64];
    size_t n = tk_entry_encode(b, &e);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(tk_entry_decode(b, k, &back), 0);
    tk_put_u16(b + 17, 0xffff);
    assert_int_equal(tk_entry_decode(b, n, &back), 0);
    tk_put_u16(b + 17, 9);
    assert_int_equal(tk_entry_decode(b, n, &back), 0);
}

/* ---- Error names ---- */

/* Every code has the name docs/PROTOCOL.md gives it; 0 and codes past the
 * last are "unknown". */
static void err_names_match_protocol_table(void **state)
{
    (void)state;
    static const char *const names[] = {
        NULL,
        "not_found",
        "not_regular",
        "forbidden",
        "bad_request",
        "too_large",
        "exists",
        "busy",
        "no_space",
        "read_only",
        "digest_mismatch",
        "io_error",
        "unsupported",
        "auth",
        "shutting_down",
        "changed",
        "cancelled",
        "not_a_directory",
        "bad_offset",
        "protocol",
        "timeout",
    };
    assert_int_equal(sizeof(names) / sizeof(names[0]), TK_FERR_MAX);
    for (unsigned c = 1; c < TK_FERR_MAX; c++)
        assert_string_equal(tk_file_err_name(c), names[c]);
    assert_string_equal(tk_file_err_name(0), "unknown");
    assert_string_equal(tk_file_err_name(TK_FERR_MAX), "unknown");
    assert_string_equal(tk_file_err_name(1000), "unknown");
    assert_string_equal(tk_file_err_name(0xFFFFFFFFu), "unknown");
}

/* Version-1 error messages and codes map both ways; unknown text is io. */
static void v1_error_messages_round_trip(void **state)
{
    (void)state;
    static const unsigned codes[] = {TK_FERR_NOT_FOUND,   TK_FERR_FORBIDDEN, TK_FERR_TOO_LARGE,
                                     TK_FERR_BAD_REQUEST, TK_FERR_BUSY,      TK_FERR_CHANGED,
                                     TK_FERR_SHUTDOWN,    TK_FERR_AUTH,      TK_FERR_NOT_REGULAR};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *m = tk_v1_error_message(codes[i], 0);
        assert_int_equal(tk_v1_error_code((const unsigned char *)m, strlen(m)), codes[i]);
    }
    assert_string_equal(tk_v1_error_message(TK_FERR_NOT_FOUND, 0), "File not found");
    assert_string_equal(tk_v1_error_message(TK_FERR_NOT_REGULAR, 1), "Is a directory");
    assert_string_equal(tk_v1_error_message(TK_FERR_NOT_REGULAR, 0), "Not a regular file");
    assert_string_equal(tk_v1_error_message(TK_FERR_IO, 0), "Read error");
    assert_int_equal(tk_v1_error_code((const unsigned char *)"Is a directory", 14),
                     TK_FERR_NOT_REGULAR);
    assert_int_equal(tk_v1_error_code((const unsigned char *)"File not", 8), TK_FERR_IO);
}

/* A silent peer is pinged after one interval and given up after three;
 * data of ours that moves keeps it alive, our own PINGs do not. */
static void heartbeat_pings_then_gives_up_unless_data_moves(void **state)
{
    (void)state;
    tk_heartbeat h;
    tk_heartbeat_init(&h, 1000);
    assert_int_equal(tk_heartbeat_tick(&h, 1500, 0, 1000), TK_HB_QUIET);
    assert_int_equal(tk_heartbeat_tick(&h, 2000, 0, 1000), TK_HB_PING);
    tk_heartbeat_pinged(&h, 18);
    assert_int_equal(tk_heartbeat_tick(&h, 3000, 18, 1000), TK_HB_PING);
    tk_heartbeat_pinged(&h, 18);
    assert_int_equal(tk_heartbeat_tick(&h, 4000, 36, 1000), TK_HB_DEAD);

    /* A download to a peer that only reads: data moves, the peer lives. */
    tk_heartbeat_init(&h, 1000);
    uint64_t out = 0;
    for (uint64_t t = 2000; t <= 10000; t += 1000) {
        out += 1u << 20;
        assert_int_not_equal(tk_heartbeat_tick(&h, t, out, 1000), TK_HB_DEAD);
    }
    /* Hearing from it resets the clock. */
    h.heard_ms = 10000;
    assert_int_equal(tk_heartbeat_tick(&h, 10500, out, 1000), TK_HB_QUIET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(header_encode_is_big_endian),
        cmocka_unit_test(header_decode_needs_six_bytes_and_reads_big_endian),
        cmocka_unit_test(integer_helpers_are_big_endian),
        cmocka_unit_test(v1_header_bytes_are_pinned),
        cmocka_unit_test(v2_get_bytes_are_pinned),
        cmocka_unit_test(whole_frame_is_split_off),
        cmocka_unit_test(partial_header_or_payload_needs_more),
        cmocka_unit_test(empty_payload_is_six_bytes),
        cmocka_unit_test(byte_at_a_time_gives_same_frames_as_whole),
        cmocka_unit_test(byte_at_a_time_stops_at_same_too_long_header),
        cmocka_unit_test(length_over_max_is_too_long_and_consumes_nothing),
        cmocka_unit_test(max_u32_length_is_too_long),
        cmocka_unit_test(payload_of_exactly_max_is_ok),
        cmocka_unit_test(v1_response_size_follows_last_colon),
        cmocka_unit_test(v1_response_without_decimal_size_is_einval),
        cmocka_unit_test(v1_response_size_beyond_u64_is_einval),
        cmocka_unit_test(hello_round_trips),
        cmocka_unit_test(hello_of_wrong_length_is_einval),
        cmocka_unit_test(hello_frame_round_trips_and_is_not_a_v2_body),
        cmocka_unit_test(get_round_trips),
        cmocka_unit_test(open_round_trips),
        cmocka_unit_test(data_head_round_trips),
        cmocka_unit_test(end_round_trips_with_and_without_digest),
        cmocka_unit_test(error_round_trips),
        cmocka_unit_test(list_round_trips),
        cmocka_unit_test(entries_head_and_records_round_trip),
        cmocka_unit_test(stat_round_trips),
        cmocka_unit_test(info_round_trips_with_and_without_digest),
        cmocka_unit_test(put_round_trips),
        cmocka_unit_test(ready_round_trips),
        cmocka_unit_test(done_round_trips),
        cmocka_unit_test(cancel_round_trips),
        cmocka_unit_test(ping_and_pong_round_trip_on_stream_zero),
        cmocka_unit_test(tag_len_only_adds_to_header_length),
        cmocka_unit_test(fixed_lengths_match_the_contract),
        cmocka_unit_test(body_shorter_than_fixed_part_is_einval),
        cmocka_unit_test(fixed_size_body_of_wrong_length_is_einval),
        cmocka_unit_test(heartbeat_off_stream_zero_is_einval),
        cmocka_unit_test(hello_reserved_byte_must_be_zero),
        cmocka_unit_test(entry_without_name_is_fixed_part_only),
        cmocka_unit_test(variable_body_takes_any_tail),
        cmocka_unit_test(unknown_type_and_hello_are_enotsup),
        cmocka_unit_test(entry_round_trips),
        cmocka_unit_test(entry_with_longest_name_round_trips),
        cmocka_unit_test(truncated_entry_is_zero),
        cmocka_unit_test(err_names_match_protocol_table),
        cmocka_unit_test(v1_error_messages_round_trip),
        cmocka_unit_test(heartbeat_pings_then_gives_up_unless_data_moves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

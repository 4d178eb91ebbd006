/* The PROXY protocol codec: both versions encoded byte for byte, decoded
 * whole and one byte at a time, every malformed form refused at its first
 * wrong byte, the size limits and the skipped TLVs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "tcpkit/proxy.h"

/* A byte string that may hold NULs: S("a\0b") keeps all three bytes. */
typedef struct {
    const char *s;
    size_t n;
} bytes;
#define S(lit)                                                                                     \
    {                                                                                              \
        lit, sizeof(lit) - 1                                                                       \
    }

#define SIG "\r\n\r\n\0\r\nQUIT\n"

static tk_proxy_addr ip(const char *text, int port)
{
    tk_proxy_addr a;
    memset(&a, 0, sizeof(a));
    if (strchr(text, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a.ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
        a.len = sizeof(*in6);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&a.ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET, text, &in->sin_addr), 1);
        a.len = sizeof(*in);
    }
    return a;
}

static tk_proxy_hdr hdr(int version, const char *src, int sport, const char *dst, int dport)
{
    tk_proxy_hdr h;
    memset(&h, 0, sizeof(h));
    h.version = version;
    h.src = ip(src, sport);
    h.dst = ip(dst, dport);
    return h;
}

/* Checks that a is family fam at address text and port, with the length of
 * its sockaddr. */
static void assert_addr(const tk_proxy_addr *a, int fam, const char *text, int port)
{
    char got[INET6_ADDRSTRLEN];
    assert_int_equal(a->ss.ss_family, fam);
    if (fam == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        assert_int_equal(a->len, sizeof(*in));
        assert_non_null(inet_ntop(AF_INET, &in->sin_addr, got, sizeof(got)));
        assert_int_equal(ntohs(in->sin_port), port);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        assert_int_equal(a->len, sizeof(*in6));
        assert_non_null(inet_ntop(AF_INET6, &in6->sin6_addr, got, sizeof(got)));
        assert_int_equal(ntohs(in6->sin6_port), port);
    }
    assert_string_equal(got, text);
}

/* Decodes b[0..n) fed one byte more at a time, each prefix in a buffer of
 * exactly its size (so a read past it shows under ASan), and stops at the
 * first answer other than "need more". */
static int decode_bytewise(const unsigned char *b, size_t n, tk_proxy_hdr *out)
{
    for (size_t k = 1; k <= n; k++) {
        unsigned char *p = malloc(k);
        assert_non_null(p);
        memcpy(p, b, k);
        int rc = tk_proxy_decode(p, k, out);
        free(p);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Decodes b[0..n) whole and one byte at a time; both must answer want, with
 * the same header. Returns the header. */
static tk_proxy_hdr check(const void *b, size_t n, int want)
{
    tk_proxy_hdr whole, each;
    memset(&whole, 0x5a, sizeof(whole));
    memset(&each, 0x5a, sizeof(each));
    assert_int_equal(tk_proxy_decode(b, n, &whole), want);
    assert_int_equal(decode_bytewise(b, n, &each), want);
    assert_memory_equal(&whole, &each, sizeof(whole));
    return whole;
}

static tk_proxy_hdr check_str(const char *s, int want)
{
    return check(s, strlen(s), want);
}

/* Checks that b is refused at its last byte: one byte shorter it is still a
 * valid prefix. */
static void assert_fails_at_last_byte(bytes b, int err)
{
    tk_proxy_hdr h;
    assert_int_equal(tk_proxy_decode((const unsigned char *)b.s, b.n - 1, &h), 0);
    check(b.s, b.n, err);
}

/* Encodes h and checks the bytes are exactly want. */
static void assert_encodes(const tk_proxy_hdr *h, const void *want, size_t n)
{
    unsigned char out[TK_PROXY_MAX];
    assert_int_equal(tk_proxy_encode(h, out, sizeof(out)), (int)n);
    assert_memory_equal(out, want, n);
}

/* ---- Encoding, byte for byte ---- */

static void v1_tcp4_encode_is_pinned(void **state)
{
    (void)state;
    tk_proxy_hdr h = hdr(1, "192.0.2.1", 56324, "198.51.100.7", 443);
    static const char want[] = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    assert_encodes(&h, want, sizeof(want) - 1);
    h = hdr(1, "0.0.0.0", 0, "255.255.255.255", 65535);
    static const char edge[] = "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n";
    assert_encodes(&h, edge, sizeof(edge) - 1);
}

static void v1_tcp6_encode_is_pinned(void **state)
{
    (void)state;
    tk_proxy_hdr h = hdr(1, "2001:db8::1", 56324, "2001:db8:0:1::ff", 443);
    static const char want[] = "PROXY TCP6 2001:db8::1 2001:db8:0:1::ff 56324 443\r\n";
    assert_encodes(&h, want, sizeof(want) - 1);
}

/* An IPv4-mapped address is written as IPv4 beside an IPv4 or another mapped
 * address, and as IPv6 beside a real IPv6 one. */
static void v1_mapped_encodes_as_tcp4(void **state)
{
    (void)state;
    static const char v4[] = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    tk_proxy_hdr h = hdr(1, "::ffff:192.0.2.1", 56324, "198.51.100.7", 443);
    assert_encodes(&h, v4, sizeof(v4) - 1);
    h = hdr(1, "192.0.2.1", 56324, "::ffff:198.51.100.7", 443);
    assert_encodes(&h, v4, sizeof(v4) - 1);
    h = hdr(1, "::ffff:192.0.2.1", 56324, "::ffff:198.51.100.7", 443);
    assert_encodes(&h, v4, sizeof(v4) - 1);
    h = hdr(1, "::ffff:192.0.2.1", 56324, "2001:db8::1", 443);
    static const char v6[] = "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 56324 443\r\n";
    assert_encodes(&h, v6, sizeof(v6) - 1);
}

/* A local header carries no addresses, whatever src and dst hold. */
static void local_encodes_without_addresses(void **state)
{
    (void)state;
    tk_proxy_hdr h;
    memset(&h, 0xee, sizeof(h));
    h.version = 1;
    h.local = 1;
    assert_encodes(&h, "PROXY UNKNOWN\r\n", 15);
    h.version = 2;
    assert_encodes(&h, SIG "\x20\x00\x00\x00", 16);
}

static void v2_tcp4_encode_is_pinned(void **state)
{
    (void)state;
    tk_proxy_hdr h = hdr(2, "192.0.2.1", 56324, "198.51.100.7", 443);
    static const unsigned char want[] = {
        '\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n', /* signature */
        0x21, 0x11, 0x00, 0x0c, /* v2 PROXY, TCP over IPv4, 12 bytes */
        192,  0,    2,    1,    /* src */
        198,  51,   100,  7,    /* dst */
        0xdc, 0x04, 0x01, 0xbb, /* 56324, 443 */
    };
    assert_encodes(&h, want, sizeof(want));
    /* Mapped on either side, or both, is the same header. */
    h = hdr(2, "::ffff:192.0.2.1", 56324, "::ffff:198.51.100.7", 443);
    assert_encodes(&h, want, sizeof(want));
    h = hdr(2, "192.0.2.1", 56324, "::ffff:198.51.100.7", 443);
    assert_encodes(&h, want, sizeof(want));
}

static void v2_tcp6_encode_is_pinned(void **state)
{
    (void)state;
    tk_proxy_hdr h = hdr(2, "2001:db8::1", 56324, "2001:db8:0:1::ff", 443);
    static const unsigned char want[] = {
        '\r', '\n', '\r', '\n', 0,    '\r', '\n', 'Q',
        'U',  'I',  'T',  '\n', 0x21, 0x21, 0x00, 0x24, /* v2 PROXY, TCP over IPv6, 36 bytes */
        0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,
        0,    0,    0,    0,    0,    0,    0,    1, /* src */
        0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    1,
        0,    0,    0,    0,    0,    0,    0,    0xff, /* dst */
        0xdc, 0x04, 0x01, 0xbb,                         /* 56324, 443 */
    };
    assert_encodes(&h, want, sizeof(want));
}

/* A version other than 1 or 2, an IPv4 address beside a real IPv6 one, and
 * a family that is neither IPv4 nor IPv6 are refused. */
static void encode_bad_version_or_family_is_einval(void **state)
{
    (void)state;
    unsigned char out[TK_PROXY_MAX];
    tk_proxy_hdr h = hdr(0, "192.0.2.1", 1, "198.51.100.7", 2);
    assert_int_equal(tk_proxy_encode(&h, out, sizeof(out)), -EINVAL);
    h.version = 3;
    assert_int_equal(tk_proxy_encode(&h, out, sizeof(out)), -EINVAL);
    h.local = 1;
    assert_int_equal(tk_proxy_encode(&h, out, sizeof(out)), -EINVAL);
    for (int v = 1; v <= 2; v++) {
        h = hdr(v, "192.0.2.1", 1, "2001:db8::1", 2);
        assert_int_equal(tk_proxy_encode(&h, out, sizeof(out)), -EINVAL);
        h = hdr(v, "2001:db8::1", 1, "::ffff:192.0.2.1", 2);
        assert_int_equal(tk_proxy_encode(&h, out, sizeof(out)) > 0, 1); /* both IPv6 */
        h = hdr(v, "2001:db8::1", 1, "192.0.2.1", 2);
        assert_int_equal(tk_proxy_encode(&h, out, sizeof(out)), -EINVAL);
        memset(&h.src, 0, sizeof(h.src)); /* AF_UNSPEC */
        assert_int_equal(tk_proxy_encode(&h, out, sizeof(out)), -EINVAL);
        h = hdr(v, "192.0.2.1", 1, "198.51.100.7", 2);
        struct sockaddr_un *un = (struct sockaddr_un *)&h.dst.ss;
        un->sun_family = AF_UNIX;
        assert_int_equal(tk_proxy_encode(&h, out, sizeof(out)), -EINVAL);
    }
}

/* Every capacity below the header's length is -ENOSPC and leaves the buffer
 * as it was; the exact length is enough. */
static void encode_short_buffer_is_enospc_and_untouched(void **state)
{
    (void)state;
    tk_proxy_hdr hs[] = {
        hdr(1, "192.0.2.1", 56324, "198.51.100.7", 443),
        hdr(1, "2001:db8::1", 1, "2001:db8::2", 2),
        hdr(2, "192.0.2.1", 56324, "198.51.100.7", 443),
        hdr(2, "2001:db8::1", 1, "2001:db8::2", 2),
    };
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
        unsigned char full[TK_PROXY_MAX];
        int n = tk_proxy_encode(&hs[i], full, sizeof(full));
        assert_true(n > 0);
        assert_int_equal(tk_proxy_encode(&hs[i], NULL, 0), -ENOSPC);
        for (int cap = 0; cap <= n; cap++) {
            unsigned char out[TK_PROXY_MAX];
            memset(out, 0xa5, sizeof(out));
            int rc = tk_proxy_encode(&hs[i], out, (size_t)cap);
            size_t clean = 0;
            if (cap < n) {
                assert_int_equal(rc, -ENOSPC);
            } else {
                assert_int_equal(rc, n);
                assert_memory_equal(out, full, (size_t)n);
                clean = (size_t)n;
            }
            for (size_t j = clean; j < sizeof(out); j++)
                assert_int_equal(out[j], 0xa5);
        }
    }
}

/* ---- Decoding valid headers ---- */

/* Whatever encode writes, decode reads back, whole and byte by byte, and
 * stops at the header's end. */
static void decode_round_trips(void **state)
{
    (void)state;
    static const struct {
        const char *src, *dst, *want_src, *want_dst;
        int sport, dport, fam;
    } cases[] = {
        {"192.0.2.1", "198.51.100.7", "192.0.2.1", "198.51.100.7", 56324, 443, AF_INET},
        {"0.0.0.0", "255.255.255.255", "0.0.0.0", "255.255.255.255", 0, 65535, AF_INET},
        {"2001:db8::1", "::", "2001:db8::1", "::", 65535, 0, AF_INET6},
        {"::ffff:10.0.0.1", "::ffff:10.0.0.2", "10.0.0.1", "10.0.0.2", 1, 2, AF_INET},
        {"::ffff:10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2", 1, 2, AF_INET},
        {"::ffff:10.0.0.1", "::1", "::ffff:10.0.0.1", "::1", 1, 2, AF_INET6},
        {"fe80::1:2:3:4", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1:2:3:4",
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 80, 8080, AF_INET6},
    };
    for (int v = 1; v <= 2; v++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            tk_proxy_hdr h = hdr(v, cases[i].src, cases[i].sport, cases[i].dst, cases[i].dport);
            unsigned char out[TK_PROXY_MAX + 8];
            int n = tk_proxy_encode(&h, out, TK_PROXY_MAX);
            assert_true(n > 0);
            memcpy(out + n, "GET / ", 6); /* the relayed stream goes on */
            tk_proxy_hdr d = check(out, (size_t)n + 6, n);
            assert_int_equal(d.version, v);
            assert_int_equal(d.local, 0);
            assert_addr(&d.src, cases[i].fam, cases[i].want_src, cases[i].sport);
            assert_addr(&d.dst, cases[i].fam, cases[i].want_dst, cases[i].dport);
        }
        tk_proxy_hdr l;
        memset(&l, 0, sizeof(l));
        l.version = v;
        l.local = 1;
        unsigned char out[TK_PROXY_MAX];
        int n = tk_proxy_encode(&l, out, sizeof(out));
        tk_proxy_hdr d = check(out, (size_t)n, n);
        assert_int_equal(d.version, v);
        assert_int_equal(d.local, 1);
        assert_int_equal(d.src.len, 0);
        assert_int_equal(d.dst.len, 0);
    }
}

/* Hand-written lines a sender may produce, including the edges of the
 * grammar, are accepted. */
static void v1_valid_lines_decode(void **state)
{
    (void)state;
    tk_proxy_hdr h = check_str("PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n", 36);
    assert_addr(&h.src, AF_INET, "1.2.3.4", 0);
    assert_addr(&h.dst, AF_INET, "5.6.7.8", 65535);
    h = check_str("PROXY TCP6 :: 2001:DB8::A 1 2\r\n", 31);
    assert_addr(&h.src, AF_INET6, "::", 1);
    assert_addr(&h.dst, AF_INET6, "2001:db8::a", 2);
    h = check_str("PROXY TCP6 1:2:3:4:5:6:7:: ::1:2:3:4:5:6:7 1 2\r\n", 48);
    assert_addr(&h.src, AF_INET6, "1:2:3:4:5:6:7:0", 1);
    assert_addr(&h.dst, AF_INET6, "0:1:2:3:4:5:6:7", 2);
    h = check_str("PROXY TCP6 ::ffff:1.2.3.4 1:2:3:4:5:6:1.2.3.4 1 2\r\n", 51);
    assert_addr(&h.src, AF_INET6, "::ffff:1.2.3.4", 1);
    assert_addr(&h.dst, AF_INET6, "1:2:3:4:5:6:102:304", 2);
    h = check_str("PROXY TCP6 ::1.2.3.4 1::2:3.4.5.6 1 2\r\n", 39);
    assert_int_equal(h.local, 0);
}

/* UNKNOWN is local, whatever follows it on the line. */
static void v1_unknown_is_local(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "PROXY UNKNOWN\r\n",
        "PROXY UNKNOWN \r\n",
        "PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UNKNOWN ffff:f::1 whatever \x01\xff\t at all\r\n",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        tk_proxy_hdr h = check_str(lines[i], (int)strlen(lines[i]));
        assert_int_equal(h.version, 1);
        assert_int_equal(h.local, 1);
        assert_int_equal(h.src.len, 0);
        assert_int_equal(h.dst.len, 0);
    }
}

/* A line may be 107 bytes with its CRLF and no longer: refused as soon as
 * the CRLF could no longer fit. */
static void v1_line_of_107_bytes_is_the_limit(void **state)
{
    (void)state;
    char line[TK_PROXY_V1_MAX + 8];
    memcpy(line, "PROXY UNKNOWN ", 14);
    memset(line + 14, 'x', TK_PROXY_V1_MAX - 16);
    memcpy(line + TK_PROXY_V1_MAX - 2, "\r\n", 3);
    assert_int_equal(strlen(line), TK_PROXY_V1_MAX);
    check_str(line, TK_PROXY_V1_MAX);
    line[TK_PROXY_V1_MAX - 2] = 'x'; /* 106 bytes of text: no room for CRLF */
    assert_fails_at_last_byte((bytes){line, TK_PROXY_V1_MAX - 1}, -EINVAL);

    /* The longest plain TCP6 line is 104 bytes. */
    static const char max6[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                               "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(sizeof(max6) - 1, 104);
    check_str(max6, 104);

    /* Dotted tails make addresses of up to 45 characters: 107 bytes fit... */
    static const char tail[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
                               "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.25 1 1\r\n";
    assert_int_equal(sizeof(tail) - 1, TK_PROXY_V1_MAX);
    tk_proxy_hdr h = check_str(tail, TK_PROXY_V1_MAX);
    assert_addr(&h.dst, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff19", 1);
    /* ...and one more digit leaves no room for " 0 0\r\n": refused there. */
    static const char over[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
                               "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    assert_fails_at_last_byte((bytes)S(over), -EINVAL);
    static const char port[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
                               "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.25 11";
    assert_fails_at_last_byte((bytes)S(port), -EINVAL);
}

/* ---- Decoding malformed version 1 lines ---- */

/* Each of these is refused whole and byte by byte. */
static void v1_malformed_is_einval(void **state)
{
    (void)state;
    static const bytes bad[] = {
        S("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\n"), /* LF without CR */
        S("PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"),
        S("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), /* two spaces */
        S("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), /* trailing space */
        S("PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"),
        S(" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        S("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        S("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"),
        S("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"),
        S("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        S("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n"),
        S("PROXY\r\n"),
        S("PROXY \r\n"),
        S("PROXY TCP4\r\n"),
        S("PROXY TCP4 \r\n"),
        S("PROXY TCP4 1.2.3.4\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
        /* IPv4 */
        S("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2.03.4 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2..4 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 .1.2.3 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2.3.0x4 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 16909060 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 ::1 ::1 1 2\r\n"),
        S("PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n"),
        S("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n"),
        /* IPv6 */
        S("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"),
        S("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n"),
        S("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"),
        S("PROXY TCP6 1::2::3 ::1 1 2\r\n"),
        S("PROXY TCP6 :1 ::1 1 2\r\n"),
        S("PROXY TCP6 1: ::1 1 2\r\n"),
        S("PROXY TCP6 ::: ::1 1 2\r\n"),
        S("PROXY TCP6 12345:: ::1 1 2\r\n"),
        S("PROXY TCP6 g:: ::1 1 2\r\n"),
        S("PROXY TCP6 1:2:3:4:5:6:7::8 ::1 1 2\r\n"),
        S("PROXY TCP6 ::1.2.3 ::1 1 2\r\n"),
        S("PROXY TCP6 ::1.2.3.4.5 ::1 1 2\r\n"),
        S("PROXY TCP6 1:2:3:4:5:1.2.3.4 ::1 1 2\r\n"),
        S("PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n"),
        S("PROXY TCP6 ::1.2.3.4:1 ::1 1 2\r\n"),
        S("PROXY TCP6 ::a.2.3.4 ::1 1 2\r\n"),
        S("PROXY TCP6 [::1] ::1 1 2\r\n"),
        S("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"),
        /* ports */
        S("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n"),
        /* UNKNOWN */
        S("PROXY UNKNOWN\n"),
        S("PROXY UNKNOWNx\r\n"),
        S("PROXY UNKNOWN a\rb\r\n"),
        S("PROXY UNKNOWN a\nb\r\n"),
        S("PROXY UNKNOW\r\n"),
        S("PROXY UNKNOWN\r\r\n"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        print_message("case %zu\n", i);
        check(bad[i].s, bad[i].n, -EINVAL);
    }
}

/* A stream that cannot be a PROXY header is refused at the first byte that
 * shows it, without waiting for a line's end. */
static void v1_refused_at_first_wrong_byte(void **state)
{
    (void)state;
    static const bytes bad[] = {
        S("G"),
        S("\n"),
        S("\0"),
        S("p"),
        S("PROXI"),
        S("PROXY\r"),
        S("PROXY X"),
        S("PROXY TCP8"),
        S("PROXY TCP4\r"),
        S("PROXY UNKNOWNX"),
        S("PROXY UNKNOWN x\n"),
        S("PROXY TCP4 256"),
        S("PROXY TCP4 01"),
        S("PROXY TCP4 1.2.3.4."),
        S("PROXY TCP4 1.2.3.4\r"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 65536"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 0 00"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 0 1 "),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 0 1\n"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 0 1\rX"),
        S("PROXY TCP6 1."),
        S("PROXY TCP6 :1"),
        S("PROXY TCP6 12345"),
        S("PROXY TCP6 1:2:3:4:5:6:7:8:"),
        S("PROXY TCP6 1::2::"),
        S("PROXY TCP6 1:2:3:4:5:6:7::1"),
        S("PROXY TCP6 1:2:3:4:5:1."),
        S("PROXY TCP6 ::1.2.3.4."),
        S("PROXY TCP6 ::01."),
        S("PROXY TCP6 ::256."),
        S("PROXY TCP6 ::1.2.3.4:"),
        S("PROXY TCP6 1:2:3:4:5:6:7 "),
        S("PROXY TCP6 1:2:3:4:5:6:7: "),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        print_message("case %zu\n", i);
        assert_fails_at_last_byte(bad[i], -EINVAL);
    }
}

/* A true prefix of a valid line asks for more, and so does every shorter
 * prefix. */
static void v1_valid_prefix_needs_more(void **state)
{
    (void)state;
    static const char *const prefixes[] = {
        "P",
        "PROXY",
        "PROXY T",
        "PROXY UNKNOWN",
        "PROXY UNKNOWN anything at all",
        "PROXY UNKNOWN\r",
        "PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r",
        "PROXY TCP4 255.255.255.25",
        "PROXY TCP6 1:2:3:4:5:6:7:",
        "PROXY TCP6 1:2:3:4:5:6:7:8",
        "PROXY TCP6 ::ffff:1.2.3",
        "PROXY TCP6 1:2:3:4:5:6:7::",
        "PROXY TCP6 1:2:3:4:5:6:255.",
        "PROXY TCP6 ::1 ::1 65535 6553",
    };
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        check_str(prefixes[i], 0);
    tk_proxy_hdr h;
    assert_int_equal(tk_proxy_decode((const unsigned char *)"", 0, &h), 0);
}

/* *out is written only when a whole header was decoded. */
static void decode_leaves_out_alone_unless_done(void **state)
{
    (void)state;
    static const bytes in[] = {
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"),
        S("PROXY TCP4 1.2.3.4 5.6.7.8 1 x"),
        S(SIG "\x21\x11\x00\x0c\x01\x02\x03\x04"),
        S(SIG "\x21\x11\x00\x0b"),
    };
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        tk_proxy_hdr h, before;
        memset(&h, 0x77, sizeof(h));
        memcpy(&before, &h, sizeof(h));
        assert_true(tk_proxy_decode((const unsigned char *)in[i].s, in[i].n, &h) <= 0);
        assert_memory_equal(&h, &before, sizeof(h));
    }
}

/* ---- Decoding version 2 ---- */

/* LOCAL ignores whatever address block it carries (any length). */
static void v2_local_ignores_addresses(void **state)
{
    (void)state;
    static const char with[] = SIG "\x20\x11\x00\x0c"
                                   "\x01\x02\x03\x04\x05\x06\x07\x08\x00\x01\x00\x02";
    tk_proxy_hdr h = check(with, sizeof(with) - 1, 28);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.local, 1);
    assert_int_equal(h.src.len, 0);
    h = check(SIG "\x20\x21\x00\x00", 16, 16); /* TCP6 but no addresses */
    assert_int_equal(h.local, 1);
    h = check(SIG "\x20\x00\x00\x03xyz", 19, 19);
    assert_int_equal(h.local, 1);
}

/* PROXY with UNSPEC, and with the families a TCP relay does not carry (UDP,
 * UNIX), is treated as UNSPEC: local, addresses skipped. */
static void v2_unspec_and_unrelayed_families_are_local(void **state)
{
    (void)state;
    tk_proxy_hdr h = check(SIG "\x21\x00\x00\x00", 16, 16);
    assert_int_equal(h.local, 1);
    h = check(SIG "\x21\x00\x00\x02zz", 18, 18);
    assert_int_equal(h.local, 1);
    unsigned char b[16 + 216];
    memset(b, 0x41, sizeof(b));
    memcpy(b, SIG "\x21\x12\x00\x0c", 16); /* UDP4 */
    h = check(b, 28, 28);
    assert_int_equal(h.local, 1);
    memcpy(b, SIG "\x21\x22\x00\x24", 16); /* UDP6 */
    h = check(b, 52, 52);
    assert_int_equal(h.local, 1);
    memcpy(b, SIG "\x21\x31\x00\xd8", 16); /* UNIX stream, 216 bytes */
    h = check(b, sizeof(b), (int)sizeof(b));
    assert_int_equal(h.local, 1);
}

/* A mapped address in a TCP6 header is decoded as it was sent. */
static void v2_tcp6_keeps_mapped_addresses(void **state)
{
    (void)state;
    unsigned char b[52] = SIG "\x21\x21\x00\x24";
    memcpy(b + 16, "\0\0\0\0\0\0\0\0\0\0\xff\xff\x0a\x00\x00\x01", 16);
    memcpy(b + 32, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    memcpy(b + 48, "\x00\x50\xff\xff", 4);
    tk_proxy_hdr h = check(b, sizeof(b), 52);
    assert_addr(&h.src, AF_INET6, "::ffff:10.0.0.1", 80);
    assert_addr(&h.dst, AF_INET6, "::1", 65535);
}

/* TLVs after the addresses are skipped: the length covers them, the relayed
 * bytes after them are not consumed. */
static void v2_tlvs_are_skipped(void **state)
{
    (void)state;
    static const char b[] = SIG "\x21\x11\x00\x15"    /* 12 + 5 + 4 bytes */
                                "\xc0\x00\x02\x01"    /* src */
                                "\xc6\x33\x64\x07"    /* dst */
                                "\xdc\x04\x01\xbb"    /* ports */
                                "\x01\x00\x02h2"      /* PP2_TYPE_ALPN "h2" */
                                "\x04\x00\x01\x00"    /* PP2_TYPE_NOOP */
                                "GET / HTTP/1.1\r\n"; /* the stream */
    tk_proxy_hdr h = check(b, sizeof(b) - 1, 37);
    assert_int_equal(h.local, 0);
    assert_addr(&h.src, AF_INET, "192.0.2.1", 56324);
    assert_addr(&h.dst, AF_INET, "198.51.100.7", 443);
    check(b, 36, 0); /* one TLV byte short */

    /* TCP6 with a TLV, too. */
    unsigned char b6[16 + 36 + 7];
    memset(b6, 0, sizeof(b6));
    memcpy(b6, SIG "\x21\x21\x00\x2b", 16);
    b6[16 + 15] = 1;
    b6[16 + 31] = 2;
    memcpy(b6 + 48, "\x00\x01\x00\x02", 4);
    memcpy(b6 + 52, "\x05\x00\x04uid1", 7); /* PP2_TYPE_UNIQUE_ID */
    h = check(b6, sizeof(b6), (int)sizeof(b6));
    assert_addr(&h.src, AF_INET6, "::1", 1);
    assert_addr(&h.dst, AF_INET6, "::2", 2);
}

/* A v2 header of TK_PROXY_V2_MAX bytes is accepted; one byte more is
 * -EMSGSIZE as soon as the length field shows it: at its high byte when that
 * alone is too much, else at its low byte. */
static void v2_over_max_is_emsgsize(void **state)
{
    (void)state;
    unsigned char b[TK_PROXY_V2_MAX + 1];
    memset(b, 0, sizeof(b));
    memcpy(b, SIG "\x21\x11", 14);
    b[14] = (TK_PROXY_V2_MAX - 16) >> 8;
    b[15] = (TK_PROXY_V2_MAX - 16) & 0xff;
    check(b, TK_PROXY_V2_MAX, TK_PROXY_V2_MAX);
    check(b, TK_PROXY_V2_MAX - 1, 0);
    b[15]++;
    assert_fails_at_last_byte((bytes){(const char *)b, 16}, -EMSGSIZE);
    check(b, sizeof(b), -EMSGSIZE);
    check(b, 15, 0); /* a high byte of 3 may still be fine */
    assert_fails_at_last_byte((bytes)S(SIG "\x21\x11\x04"), -EMSGSIZE);
    assert_fails_at_last_byte((bytes)S(SIG "\x20\x00\xff"), -EMSGSIZE);
    check(SIG "\x20\x00\xff\xff", 16, -EMSGSIZE);
}

/* A wrong signature byte, version, command or family, or an address block
 * too short for the family, is refused at that byte. */
static void v2_malformed_is_refused_at_first_wrong_byte(void **state)
{
    (void)state;
    static const bytes bad[] = {
        S("\r\r"),
        S("\r\n\r\n\0\r\nQUIX"),
        S("\r\n\r\n\0\r\nQUIT\r"),
        S("\r\n\r\n\x01"),
        S(SIG "\x11"), /* version 1 */
        S(SIG "\x31"), /* version 3 */
        S(SIG "\x22"), /* command 2 */
        S(SIG "\x2f"),
        S(SIG "\x21\x13"), /* undefined protocol */
        S(SIG "\x21\x41"), /* undefined family */
        S(SIG "\x21\x01"),
        S(SIG "\x21\x10"),
        S(SIG "\x20\x03"), /* even for LOCAL */
        S(SIG "\x21\x11\x00\x0b"),
        S(SIG "\x21\x11\x00\x00"),
        S(SIG "\x21\x21\x00\x23"),
        S(SIG "\x21\x21\x00\x0c"),
        S(SIG "\x21\x12\x00\x0b"),
        S(SIG "\x21\x31\x00\xd7"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        print_message("case %zu\n", i);
        assert_fails_at_last_byte(bad[i], -EINVAL);
    }
    /* The v2 signature's prefixes, and a head waiting for its addresses,
     * need more. */
    for (size_t k = 1; k <= 12; k++)
        check(SIG, k, 0);
    check(SIG "\x21\x11\x00\x0c\xc0\x00\x02\x01", 20, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_tcp4_encode_is_pinned),
        cmocka_unit_test(v1_tcp6_encode_is_pinned),
        cmocka_unit_test(v1_mapped_encodes_as_tcp4),
        cmocka_unit_test(local_encodes_without_addresses),
        cmocka_unit_test(v2_tcp4_encode_is_pinned),
        cmocka_unit_test(v2_tcp6_encode_is_pinned),
        cmocka_unit_test(encode_bad_version_or_family_is_einval),
        cmocka_unit_test(encode_short_buffer_is_enospc_and_untouched),
        cmocka_unit_test(decode_round_trips),
        cmocka_unit_test(v1_valid_lines_decode),
        cmocka_unit_test(v1_unknown_is_local),
        cmocka_unit_test(v1_line_of_107_bytes_is_the_limit),
        cmocka_unit_test(v1_malformed_is_einval),
        cmocka_unit_test(v1_refused_at_first_wrong_byte),
        cmocka_unit_test(v1_valid_prefix_needs_more),
        cmocka_unit_test(decode_leaves_out_alone_unless_done),
        cmocka_unit_test(v2_local_ignores_addresses),
        cmocka_unit_test(v2_unspec_and_unrelayed_families_are_local),
        cmocka_unit_test(v2_tcp6_keeps_mapped_addresses),
        cmocka_unit_test(v2_tlvs_are_skipped),
        cmocka_unit_test(v2_over_max_is_emsgsize),
        cmocka_unit_test(v2_malformed_is_refused_at_first_wrong_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

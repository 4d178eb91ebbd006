/* Fuzzes the PROXY protocol codec (tcpkit/proxy.h) with two readings of the
 * input.
 *
 * As a stream: decoding it whole and one byte at a time (each prefix in a
 * buffer of exactly its size) gives the same answer and header; a decoded
 * header does not depend on the bytes after it; it re-encodes in the same
 * version, and that decodes to the same addresses (an IPv4-mapped pair may
 * come back as IPv4). A version 2 header without TLVs, and a version 1 TCP4
 * line, whose text has one spelling, re-encode to the very same bytes.
 *
 * As an encoding request: the first bytes choose a version, a local flag and
 * two addresses (IPv4, IPv4-mapped, any IPv6, or another family); encode must
 * answer what the contract says, never write past its capacity nor at all
 * when that is too small, and what it writes must decode back. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An address reduced to what the protocol carries: 4 or 6, the IPv6 form of
 * the address (IPv4 as mapped), the port in host order. */
typedef struct {
    int fam;
    unsigned char ip[16];
    unsigned port;
} norm;

static norm normalize(const tk_proxy_addr *a)
{
    norm n;
    memset(&n, 0, sizeof(n));
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        if (a->len != sizeof(*in))
            abort();
        n.fam = 4;
        n.ip[10] = n.ip[11] = 0xff;
        memcpy(n.ip + 12, &in->sin_addr, 4);
        n.port = ntohs(in->sin_port);
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        if (a->len != sizeof(*in6))
            abort();
        memcpy(n.ip, &in6->sin6_addr, 16);
        n.fam = IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) ? 4 : 6;
        n.port = ntohs(in6->sin6_port);
    } else {
        abort();
    }
    return n;
}

static int same_norm(const norm *a, const norm *b)
{
    return a->fam == b->fam && a->port == b->port && memcmp(a->ip, b->ip, 16) == 0;
}

/* Decodes a copy of p[0..n) held in a buffer of exactly n bytes. */
static int decode_exact(const unsigned char *p, size_t n, tk_proxy_hdr *out)
{
    unsigned char *b = malloc(n ? n : 1);
    if (!b)
        abort();
    memcpy(b, p, n);
    int rc = tk_proxy_decode(b, n, out);
    free(b);
    return rc;
}

/* Encodes h with every capacity from 0 to its length: below it, -ENOSPC and
 * nothing written; at it, the same bytes as with room to spare. Returns the
 * length (or the error encode gives with room to spare) and the bytes. */
static int encode_checked(const tk_proxy_hdr *h, unsigned char out[TK_PROXY_MAX])
{
    int n = tk_proxy_encode(h, out, TK_PROXY_MAX);
    if (n <= 0) {
        if (n != -EINVAL)
            abort();
        return n;
    }
    if (n > (h->version == 1 ? TK_PROXY_V1_MAX : 52))
        abort();
    for (int cap = 0; cap <= n; cap++) {
        unsigned char *b = malloc((size_t)cap + 8);
        if (!b)
            abort();
        memset(b, 0xa5, (size_t)cap + 8);
        int rc = tk_proxy_encode(h, b, (size_t)cap);
        size_t clean = 0;
        if (cap < n) {
            if (rc != -ENOSPC)
                abort();
        } else {
            if (rc != n || memcmp(b, out, (size_t)n) != 0)
                abort();
            clean = (size_t)n;
        }
        for (size_t i = clean; i < (size_t)cap + 8; i++) {
            if (b[i] != 0xa5)
                abort();
        }
        free(b);
    }
    return n;
}

/* The decoded header is well formed for the bytes it came from. */
static void check_header(const unsigned char *data, int rc, const tk_proxy_hdr *h)
{
    if (h->version != (data[0] == 'P' ? 1 : 2))
        abort();
    if (h->version == 1 && (rc > TK_PROXY_V1_MAX || memcmp(data + rc - 2, "\r\n", 2) != 0))
        abort();
    if (h->version == 2 &&
        (rc < 16 || rc > TK_PROXY_V2_MAX || (size_t)rc != 16u + (data[14] << 8 | data[15])))
        abort();
    if (h->local) {
        if (h->local != 1 || h->src.len != 0 || h->dst.len != 0)
            abort();
        return;
    }
    if (h->src.ss.ss_family != h->dst.ss.ss_family)
        abort();
    normalize(&h->src);
    normalize(&h->dst);
}

/* Re-encodes a decoded header and decodes it again. */
static void check_reencode(const unsigned char *data, int rc, const tk_proxy_hdr *h)
{
    unsigned char enc[TK_PROXY_MAX];
    int n = encode_checked(h, enc);
    if (n <= 0)
        abort();
    tk_proxy_hdr again;
    if (decode_exact(enc, (size_t)n, &again) != n || again.version != h->version ||
        again.local != h->local)
        abort();
    if (h->local)
        return;
    norm a = normalize(&h->src), b = normalize(&again.src);
    norm c = normalize(&h->dst), d = normalize(&again.dst);
    if (!same_norm(&a, &b) || !same_norm(&c, &d))
        abort();
    int v1_tcp4 = h->version == 1 && memcmp(data, "PROXY TCP4 ", 11) == 0;
    int v2_plain = h->version == 2 && n == rc;
    if ((v1_tcp4 || v2_plain) && (n != rc || memcmp(enc, data, (size_t)n) != 0))
        abort();
}

/* Whether p[0..n) can be completed into a header. Every valid prefix has a
 * shortest completion among these candidates, so a "need more" for which
 * none works is a malformed prefix decode failed to refuse at once. */
static int completable(const unsigned char *p, size_t n)
{
    unsigned char b[TK_PROXY_MAX + 64];
    tk_proxy_hdr h;
    if (p[0] == '\r') {
        /* Version 2: finish the head with LOCAL UNSPEC (or a length that
         * fits any family), then pad to the declared length. */
        static const unsigned char head[16] = {'\r', '\n', '\r', '\n', 0,    '\r', '\n', 'Q',
                                               'U',  'I',  'T',  '\n', 0x20, 0x00, 0x00, 0x00};
        if (n > TK_PROXY_V2_MAX)
            return 0;
        memcpy(b, p, n);
        size_t m = n;
        if (m < 14) {
            memcpy(b + m, head + m, 14 - m);
            m = 14;
        }
        if (m == 14)
            b[m++] = 0x00;
        if (m == 15)
            b[m++] = b[14] == 0 ? 0xff : 0x00;
        size_t total = 16u + ((size_t)b[14] << 8 | b[15]);
        if (total > TK_PROXY_V2_MAX || total < m)
            return 0;
        memset(b + m, 0, total - m);
        return tk_proxy_decode(b, total, &h) == (int)total;
    }
    /* Version 1: the rest of a head, or the shortest end of the address or
     * port being read followed by the shortest rest of the line. */
    static const char *const heads[] = {"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
                                        "PROXY TCP6 :: :: 0 0\r\n", "PROXY UNKNOWN\r\n"};
    static const char *const ends[] = {"",       "0",     ":",    "::",  "0.0.0.0",
                                       ".0.0.0", "0.0.0", ".0.0", "0.0", ".0"};
    static const char *const rests[] = {" 0.0.0.0 0 0\r\n", " :: 0 0\r\n", " 0 0\r\n",
                                        " 0\r\n",           "\r\n",        "\n"};
    if (n >= TK_PROXY_V1_MAX)
        return 0;
    for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
        size_t len = strlen(heads[i]);
        if (n < len && memcmp(p, heads[i], n) == 0)
            return 1;
    }
    memcpy(b, p, n);
    for (size_t e = 0; e < sizeof(ends) / sizeof(ends[0]); e++) {
        for (size_t r = 0; r < sizeof(rests) / sizeof(rests[0]); r++) {
            size_t m = n, le = strlen(ends[e]), lr = strlen(rests[r]);
            memcpy(b + m, ends[e], le);
            memcpy(b + m + le, rests[r], lr);
            m += le + lr;
            int rc = tk_proxy_decode(b, m, &h);
            if (rc > 0 && (size_t)rc == m)
                return 1;
        }
    }
    return 0;
}

/* Decodes data whole, one byte at a time and on its own, and checks them. */
static void check_stream(const uint8_t *data, size_t size)
{
    tk_proxy_hdr whole, each;
    memset(&whole, 0x5a, sizeof(whole));
    memset(&each, 0x5a, sizeof(each));
    int rc = decode_exact(data, size, &whole);
    if (rc != 0 && rc != -EINVAL && rc != -EMSGSIZE && (rc < 0 || (size_t)rc > size))
        abort();
    if (rc == -EMSGSIZE && data[0] != '\r')
        abort();

    int first = 0;
    size_t k = 0;
    while (k < size && first == 0)
        first = decode_exact(data, ++k, &each);
    if (first != rc || memcmp(&whole, &each, sizeof(whole)) != 0)
        abort();
    /* "Need more" only for a prefix that can still become a header: the
     * whole input when it asks for more, the bytes before the refused one. */
    size_t valid = rc == 0 ? size : k - 1;
    if (valid > 0 && !completable(data, valid))
        abort();
    if (rc <= 0)
        return;

    check_header(data, rc, &whole);
    tk_proxy_hdr alone;
    if (decode_exact(data, (size_t)rc, &alone) != rc || memcmp(&alone, &whole, sizeof(alone)) != 0)
        abort();
    check_reencode(data, rc, &whole);
}

/* Fills a from a family choice and 18 bytes (address, then port). */
static void make_addr(tk_proxy_addr *a, unsigned choice, const unsigned char *b)
{
    memset(a, 0, sizeof(*a));
    if (choice == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, b, 4);
        memcpy(&in->sin_port, b + 16, 2);
        a->len = sizeof(*in);
    } else if (choice <= 2) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, b, 16);
        if (choice == 1) { /* IPv4-mapped */
            memset(&in6->sin6_addr, 0, 10);
            memset((unsigned char *)&in6->sin6_addr + 10, 0xff, 2);
        }
        memcpy(&in6->sin6_port, b + 16, 2);
        in6->sin6_scope_id = b[0];
        a->len = sizeof(*in6);
    } else {
        a->ss.ss_family = b[0] & 1 ? AF_UNIX : AF_UNSPEC;
        a->len = sizeof(a->ss);
    }
}

/* What encode must answer for h: -EINVAL, or the family (4 or 6) written. */
static int expected_family(const tk_proxy_hdr *h)
{
    if (h->version != 1 && h->version != 2)
        return -EINVAL;
    if (h->local)
        return 0;
    int sf = h->src.ss.ss_family, df = h->dst.ss.ss_family;
    if ((sf != AF_INET && sf != AF_INET6) || (df != AF_INET && df != AF_INET6))
        return -EINVAL;
    norm s = normalize(&h->src), d = normalize(&h->dst);
    if (sf == AF_INET6 && df == AF_INET6 && !(s.fam == 4 && d.fam == 4))
        return 6;
    return s.fam == 4 && d.fam == 4 ? 4 : -EINVAL;
}

static void check_encode_request(const uint8_t *data, size_t size)
{
    unsigned char b[1 + 36];
    memset(b, 0, sizeof(b));
    memcpy(b, data, size < sizeof(b) ? size : sizeof(b));
    tk_proxy_hdr h;
    memset(&h, 0, sizeof(h));
    h.version = b[0] & 3;
    h.local = b[0] >> 2 & 1;
    make_addr(&h.src, b[0] >> 3 & 3, b + 1);
    make_addr(&h.dst, b[0] >> 5 & 3, b + 19);

    int want = expected_family(&h);
    unsigned char enc[TK_PROXY_MAX];
    int n = encode_checked(&h, enc);
    if (want < 0) {
        if (n != want)
            abort();
        return;
    }
    tk_proxy_hdr d;
    if (n <= 0 || decode_exact(enc, (size_t)n, &d) != n || d.version != h.version ||
        d.local != h.local)
        abort();
    if (h.local)
        return;
    int fam = want == 4 ? AF_INET : AF_INET6;
    if (d.src.ss.ss_family != fam || d.dst.ss.ss_family != fam)
        abort();
    norm a = normalize(&h.src), a2 = normalize(&d.src);
    norm c = normalize(&h.dst), c2 = normalize(&d.dst);
    if (!same_norm(&a, &a2) || !same_norm(&c, &c2))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_stream(data, size);
    check_encode_request(data, size);
    return 0;
}

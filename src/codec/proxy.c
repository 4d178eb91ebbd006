/* The PROXY protocol header, versions 1 (a text line) and 2 (binary).
 *
 * Decoding is a pure function of the bytes so far. Version 1 is checked one
 * byte at a time by a small scanner that knows, at every byte, whether the
 * line can still be completed within TK_PROXY_V1_MAX bytes; so "need more"
 * is answered only for a true prefix of a valid line, and a stream that is
 * not a PROXY header is refused at its first wrong byte. Version 2 is a fixed
 * 16-byte head whose fields are checked as soon as they arrive. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tcpkit/proxy.h"

/* ---- Version 1: "PROXY TCP4 src dst sport dport\r\n" ---- */

/* What each field of a TCP4/TCP6 line is. */
enum { F_SRC, F_DST, F_SPORT, F_DPORT, F_COUNT };

/* Where the scanner of a version 1 line stands. */
enum {
    L_HEAD,        /* in "PROXY TCP4 ", "PROXY TCP6 " or "PROXY UNKNOWN" */
    L_UNKNOWN_SEP, /* just after "UNKNOWN": a space or the CR */
    L_UNKNOWN,     /* ignored text after "UNKNOWN " */
    L_FIELD,       /* in an address or a port */
    L_LF,          /* after the final CR */
};

/* Where an address scanner stands. IPv4 text uses only A_OCTET. */
enum {
    A_START,      /* IPv6: nothing yet */
    A_LEAD_COLON, /* IPv6: a leading ':', which must be "::" */
    A_COLON,      /* IPv6: a ':' after a group */
    A_DCOLON,     /* IPv6: just after "::" */
    A_HEX,        /* IPv6: inside a group of hex digits */
    A_OCTET,      /* a dotted quad (all of IPv4, or the tail of IPv6) */
};

/* The incremental state of one address field. It accepts exactly the text
 * glibc's inet_pton accepts, and knows the fewest bytes that complete it. */
typedef struct {
    int v6;
    int state;
    int groups; /* IPv6: 16-bit groups finished so far */
    int dbl;    /* IPv6: "::" seen */
    int ndig;   /* digits in the current group or octet */
    int value;  /* decimal value of the current group or octet */
    int dec;    /* the current group has only decimal digits */
    int lead0;  /* the current group starts with '0' */
    int octet;  /* dotted quad: which octet (1..4) is being read */
} addr_scan;

/* The state of a version 1 line, rebuilt from its first byte on each call. */
typedef struct {
    int state;
    unsigned heads; /* L_HEAD: bit i set while heads[i] still matches */
    int family;     /* AF_INET, AF_INET6, or AF_UNSPEC for UNKNOWN */
    int field;      /* L_FIELD: which of F_* */
    addr_scan addr;
    int port_ndig;
    long port;
    unsigned ports[2];
    size_t start[F_COUNT], end[F_COUNT]; /* byte range of each field */
} v1_scan;

static const char *const v1_heads[] = {"PROXY TCP4 ", "PROXY TCP6 ", "PROXY UNKNOWN"};
static const int v1_head_family[] = {AF_INET, AF_INET6, AF_UNSPEC};
#define V1_NHEADS 3

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void addr_start(addr_scan *a, int v6)
{
    memset(a, 0, sizeof(*a));
    a->v6 = v6;
    a->state = v6 ? A_START : A_OCTET;
    a->octet = 1;
}

/* Explicit 16-bit groups an IPv6 address may still hold: 8, or 7 once "::"
 * stands for at least one zero group. */
static int addr_group_limit(const addr_scan *a)
{
    return a->dbl ? 7 : 8;
}

/* One byte of a dotted quad: octets of 1..3 digits, 0..255, no leading zero. */
static int octet_feed(addr_scan *a, unsigned char c)
{
    if (c >= '0' && c <= '9') {
        if (a->ndig > 0 && a->value == 0)
            return -1;
        a->value = a->value * 10 + (c - '0');
        a->ndig++;
        return a->value <= 255 ? 0 : -1;
    }
    if (c == '.' && a->ndig > 0 && a->octet < 4) {
        a->octet++;
        a->ndig = 0;
        a->value = 0;
        return 0;
    }
    return -1;
}

/* Starts a new IPv6 group with hex digit value d, if one more group fits. */
static int group_start(addr_scan *a, int d, unsigned char c)
{
    if (a->groups + 1 > addr_group_limit(a))
        return -1;
    a->state = A_HEX;
    a->ndig = 1;
    a->dec = c >= '0' && c <= '9';
    a->value = a->dec ? d : 0;
    a->lead0 = c == '0';
    return 0;
}

/* A '.' inside an IPv6 group: the group becomes the first octet of an IPv4
 * tail, which takes the last two groups' place. */
static int v4_tail_start(addr_scan *a)
{
    if (!a->dec || a->ndig > 3 || (a->lead0 && a->ndig > 1) || a->value > 255)
        return -1;
    if (a->dbl ? a->groups + 2 > 7 : a->groups + 2 != 8)
        return -1;
    a->state = A_OCTET;
    a->octet = 2;
    a->ndig = 0;
    a->value = 0;
    return 0;
}

/* Feeds one byte of an address (never its terminating space). Returns 0
 * while the text can still become an address, -1 as soon as it cannot. */
static int addr_feed(addr_scan *a, unsigned char c)
{
    int d = hex_value(c);
    switch (a->state) {
    case A_START:
        if (c == ':') {
            a->state = A_LEAD_COLON;
            return 0;
        }
        return d >= 0 ? group_start(a, d, c) : -1;
    case A_LEAD_COLON:
        if (c != ':')
            return -1;
        a->dbl = 1;
        a->state = A_DCOLON;
        return 0;
    case A_COLON:
        if (c == ':') {
            if (a->dbl)
                return -1;
            a->dbl = 1;
            a->state = A_DCOLON;
            return 0;
        }
        return d >= 0 ? group_start(a, d, c) : -1;
    case A_DCOLON: return d >= 0 ? group_start(a, d, c) : -1;
    case A_HEX:
        if (d >= 0) {
            if (a->ndig == 4)
                return -1;
            a->ndig++;
            a->dec = a->dec && c >= '0' && c <= '9';
            a->value = a->dec ? a->value * 10 + d : 0;
            return 0;
        }
        if (c == ':') {
            /* A separator needs room for one more group; so does "::",
             * which needs no "::" before it (so a limit of 8). */
            a->groups++;
            if (a->groups + 1 > addr_group_limit(a))
                return -1;
            a->state = A_COLON;
            return 0;
        }
        return c == '.' ? v4_tail_start(a) : -1;
    case A_OCTET: return octet_feed(a, c);
    }
    return -1;
}

/* Whether the address text so far is a whole address. */
static int addr_done(const addr_scan *a)
{
    switch (a->state) {
    case A_DCOLON: return 1;
    case A_HEX: return a->dbl || a->groups + 1 == 8;
    case A_OCTET: return a->octet == 4 && a->ndig > 0;
    default: return 0;
    }
}

/* The fewest bytes that turn the text so far into a whole address. */
static int addr_min_rest(const addr_scan *a)
{
    switch (a->state) {
    case A_START: return 2;                  /* "::" */
    case A_LEAD_COLON: return 1;             /* ":" */
    case A_COLON: return 1;                  /* ":" or one digit */
    case A_HEX: return addr_done(a) ? 0 : 2; /* "::" */
    case A_OCTET: return (a->ndig == 0) + 2 * (4 - a->octet);
    default: return 0;
    }
}

/* Feeds one digit of a port: decimal 0..65535, no leading zero. */
static int port_feed(v1_scan *s, unsigned char c)
{
    if (c < '0' || c > '9' || (s->port_ndig > 0 && s->port == 0))
        return -1;
    s->port = s->port * 10 + (c - '0');
    s->port_ndig++;
    return s->port <= 65535 ? 0 : -1;
}

static int field_done(const v1_scan *s)
{
    return s->field <= F_DST ? addr_done(&s->addr) : s->port_ndig > 0;
}

/* The fewest bytes that complete the line from where the scanner stands. */
static int v1_min_rest(const v1_scan *s)
{
    switch (s->state) {
    case L_UNKNOWN_SEP:
    case L_UNKNOWN: return 2; /* "\r\n" */
    case L_LF: return 1;
    case L_FIELD: break;
    default: return 0; /* the head is far from the limit */
    }
    /* After each field: " dst 0 0\r\n", " 0 0\r\n", " 0\r\n", "\r\n". */
    int after[F_COUNT] = {1 + (s->family == AF_INET ? 7 : 2) + 6, 6, 4, 2};
    int here = s->field <= F_DST ? addr_min_rest(&s->addr) : s->port_ndig == 0;
    return here + after[s->field];
}

static void field_begin(v1_scan *s, int field, size_t at)
{
    s->field = field;
    s->start[field] = at;
    if (field <= F_DST)
        addr_start(&s->addr, s->family == AF_INET6);
    s->port_ndig = 0;
    s->port = 0;
}

static void field_end(v1_scan *s, size_t at)
{
    s->end[s->field] = at;
    if (s->field >= F_SPORT)
        s->ports[s->field - F_SPORT] = (unsigned)s->port;
}

/* Feeds byte i of the header matching. */
static int head_feed(v1_scan *s, unsigned char c, size_t i)
{
    for (int h = 0; h < V1_NHEADS; h++) {
        if ((s->heads & (1u << h)) && (unsigned char)v1_heads[h][i] != c)
            s->heads &= ~(1u << h);
    }
    if (s->heads == 0)
        return -1;
    for (int h = 0; h < V1_NHEADS; h++) {
        if ((s->heads & (1u << h)) && v1_heads[h][i + 1] == '\0') {
            s->family = v1_head_family[h];
            if (s->family == AF_UNSPEC) {
                s->state = L_UNKNOWN_SEP;
            } else {
                s->state = L_FIELD;
                field_begin(s, F_SRC, i + 1);
            }
        }
    }
    return 0;
}

/* Feeds byte i of a field, or the space or CR that ends it. */
static int field_feed(v1_scan *s, unsigned char c, size_t i)
{
    if (c == ' ' || c == '\r') {
        int want = s->field == F_DPORT ? '\r' : ' ';
        if (c != want || !field_done(s))
            return -1;
        field_end(s, i);
        if (c == '\r')
            s->state = L_LF;
        else
            field_begin(s, s->field + 1, i + 1);
        return 0;
    }
    if (s->field <= F_DST)
        return addr_feed(&s->addr, c);
    return port_feed(s, c);
}

/* Feeds byte i (= data[i]) of a version 1 line. Returns 0 to go on, 1 when
 * the byte was the final LF, -1 when the bytes cannot begin a valid line. */
static int v1_feed(v1_scan *s, unsigned char c, size_t i)
{
    int rc = -1;
    switch (s->state) {
    case L_HEAD: rc = head_feed(s, c, i); break;
    case L_UNKNOWN_SEP:
        if (c == ' ' || c == '\r') {
            s->state = c == ' ' ? L_UNKNOWN : L_LF;
            rc = 0;
        }
        break;
    case L_UNKNOWN:
        /* Ignored text, but a bare CR or LF is not a line's end. */
        if (c == '\r')
            s->state = L_LF;
        rc = c == '\n' ? -1 : 0;
        break;
    case L_FIELD: rc = field_feed(s, c, i); break;
    case L_LF: return c == '\n' ? 1 : -1;
    }
    if (rc == 0 && i + 1 + (size_t)v1_min_rest(s) > TK_PROXY_V1_MAX)
        return -1;
    return rc;
}

/* Converts field f of the line into a with port. */
static int v1_addr(const unsigned char *data, const v1_scan *s, int f, unsigned port,
                   tk_proxy_addr *a)
{
    char text[INET6_ADDRSTRLEN];
    size_t n = s->end[f] - s->start[f];
    if (n >= sizeof(text))
        return -1;
    memcpy(text, data + s->start[f], n);
    text[n] = '\0';
    memset(a, 0, sizeof(*a));
    if (s->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        a->len = sizeof(*in);
        return inet_pton(AF_INET, text, &in->sin_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    a->len = sizeof(*in6);
    return inet_pton(AF_INET6, text, &in6->sin6_addr) == 1 ? 0 : -1;
}

static int decode_v1(const unsigned char *data, size_t len, tk_proxy_hdr *out)
{
    v1_scan s;
    memset(&s, 0, sizeof(s));
    s.state = L_HEAD;
    s.heads = (1u << V1_NHEADS) - 1;
    /* v1_feed refuses any byte that leaves no room for the line to end
     * within TK_PROXY_V1_MAX, so the loop decides before it runs out. */
    for (size_t i = 0; i < len && i < TK_PROXY_V1_MAX; i++) {
        int rc = v1_feed(&s, data[i], i);
        if (rc < 0)
            return -EINVAL;
        if (rc == 0)
            continue;
        tk_proxy_hdr h;
        memset(&h, 0, sizeof(h));
        h.version = 1;
        h.local = s.family == AF_UNSPEC;
        if (!h.local && (v1_addr(data, &s, F_SRC, s.ports[0], &h.src) < 0 ||
                         v1_addr(data, &s, F_DST, s.ports[1], &h.dst) < 0))
            return -EINVAL;
        *out = h;
        return (int)(i + 1);
    }
    return len < TK_PROXY_V1_MAX ? 0 : -EINVAL;
}

/* ---- Version 2: signature, ver/cmd, fam/proto, length, addresses, TLVs ---- */

#define V2_HEAD 16

static const unsigned char v2_sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                         '\n', 'Q',  'U',  'I',  'T',  '\n'};

/* The address block's length for a fam/proto byte, or -1 for a value the
 * specification does not define. */
static int v2_addr_len(unsigned char fam)
{
    switch (fam) {
    case 0x00: return 0; /* UNSPEC */
    case 0x11:
    case 0x12: return 12; /* TCP4, UDP4 */
    case 0x21:
    case 0x22: return 36; /* TCP6, UDP6 */
    case 0x31:
    case 0x32: return 216; /* UNIX stream, UNIX datagram */
    default: return -1;
    }
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void set_in(tk_proxy_addr *a, const unsigned char *ip, const unsigned char *port)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
    memset(a, 0, sizeof(*a));
    in->sin_family = AF_INET;
    memcpy(&in->sin_addr, ip, 4);
    memcpy(&in->sin_port, port, 2); /* both in network order */
    a->len = sizeof(*in);
}

static void set_in6(tk_proxy_addr *a, const unsigned char *ip, const unsigned char *port)
{
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
    memset(a, 0, sizeof(*a));
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, ip, 16);
    memcpy(&in6->sin6_port, port, 2);
    a->len = sizeof(*in6);
}

static int decode_v2(const unsigned char *data, size_t len, tk_proxy_hdr *out)
{
    if (memcmp(data, v2_sig, len < sizeof(v2_sig) ? len : sizeof(v2_sig)) != 0)
        return -EINVAL;
    if (len <= 12)
        return 0;
    unsigned ver = data[12] >> 4, cmd = data[12] & 0x0f;
    if (ver != 2 || cmd > 1)
        return -EINVAL;
    if (len <= 13)
        return 0;
    int need = v2_addr_len(data[13]);
    if (need < 0)
        return -EINVAL;
    /* The length's high byte alone can already show the header too long. */
    if (len > 14 && V2_HEAD + ((size_t)data[14] << 8) > TK_PROXY_V2_MAX)
        return -EMSGSIZE;
    if (len < V2_HEAD)
        return 0;
    size_t total = V2_HEAD + (size_t)get_u16(data + 14);
    if (total > TK_PROXY_V2_MAX)
        return -EMSGSIZE;
    /* A LOCAL header's addresses are ignored, so their length does not matter. */
    if (cmd == 1 && total - V2_HEAD < (size_t)need)
        return -EINVAL;
    if (len < total)
        return 0;

    tk_proxy_hdr h;
    memset(&h, 0, sizeof(h));
    h.version = 2;
    const unsigned char *a = data + V2_HEAD;
    if (cmd == 1 && data[13] == 0x11) {
        set_in(&h.src, a, a + 8);
        set_in(&h.dst, a + 4, a + 10);
    } else if (cmd == 1 && data[13] == 0x21) {
        set_in6(&h.src, a, a + 32);
        set_in6(&h.dst, a + 16, a + 34);
    } else {
        /* LOCAL, UNSPEC, and the families a TCP proxy does not relay (UDP,
         * UNIX), for which the specification says to act as for UNSPEC. */
        h.local = 1;
    }
    *out = h;
    return (int)total;
}

int tk_proxy_decode(const unsigned char *data, size_t len, tk_proxy_hdr *out)
{
    if (len == 0)
        return 0;
    if (data[0] == 'P')
        return decode_v1(data, len, out);
    if (data[0] == '\r')
        return decode_v2(data, len, out);
    return -EINVAL;
}

/* ---- Encoding ---- */

/* The two ends of a relayed connection, reduced to one family: 4-byte
 * addresses for IPv4, 16-byte ones for IPv6, ports in network order. */
typedef struct {
    int family;
    unsigned char src[16], dst[16];
    unsigned char sport[2], dport[2];
} ends;

/* Reads a's address and port; *mapped says whether it is an IPv4-mapped
 * IPv6 address (whose IPv4 part is ip[12..16)). */
static int end_of(const tk_proxy_addr *a, unsigned char ip[16], unsigned char port[2], int *mapped)
{
    *mapped = 0;
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        memset(ip, 0, 16);
        memcpy(ip + 12, &in->sin_addr, 4);
        memcpy(port, &in->sin_port, 2);
        return AF_INET;
    }
    if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        memcpy(ip, &in6->sin6_addr, 16);
        memcpy(port, &in6->sin6_port, 2);
        *mapped = IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr);
        return AF_INET6;
    }
    return -1;
}

/* Picks the family both ends are written in: IPv4 when each is IPv4 or
 * IPv4-mapped and at least one is IPv4 or both mapped; IPv6 when both are
 * IPv6. Returns 0 or -EINVAL. */
static int ends_of(const tk_proxy_addr *src, const tk_proxy_addr *dst, ends *e)
{
    unsigned char s[16], d[16];
    int smap, dmap;
    int sf = end_of(src, s, e->sport, &smap);
    int df = end_of(dst, d, e->dport, &dmap);
    if (sf < 0 || df < 0)
        return -EINVAL;
    if (sf == AF_INET6 && df == AF_INET6 && !(smap && dmap)) {
        e->family = AF_INET6;
        memcpy(e->src, s, 16);
        memcpy(e->dst, d, 16);
        return 0;
    }
    if ((sf == AF_INET6 && !smap) || (df == AF_INET6 && !dmap))
        return -EINVAL;
    e->family = AF_INET;
    memcpy(e->src, s + 12, 4);
    memcpy(e->dst, d + 12, 4);
    return 0;
}

/* Writes a version 1 line into buf (TK_PROXY_V1_MAX + 1 bytes). */
static int encode_v1(const ends *e, int local, char *buf)
{
    if (local) {
        memcpy(buf, "PROXY UNKNOWN\r\n", 15);
        return 15;
    }
    char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
    if (!inet_ntop(e->family, e->src, s, sizeof(s)) || !inet_ntop(e->family, e->dst, d, sizeof(d)))
        return -EINVAL;
    int n = snprintf(buf, TK_PROXY_V1_MAX + 1, "PROXY TCP%c %s %s %u %u\r\n",
                     e->family == AF_INET ? '4' : '6', s, d, get_u16(e->sport), get_u16(e->dport));
    /* inet_ntop writes at most 39 characters for IPv6 (a dotted tail only
     * for short, zero-led addresses), so the line fits: at most 104 bytes. */
    return n > 0 && n <= TK_PROXY_V1_MAX ? n : -EINVAL;
}

/* Writes a version 2 header into buf (at least 52 bytes). */
static int encode_v2(const ends *e, int local, unsigned char *buf)
{
    memcpy(buf, v2_sig, sizeof(v2_sig));
    buf[12] = local ? 0x20 : 0x21;
    if (local) {
        buf[13] = 0x00;
        put_u16(buf + 14, 0);
        return V2_HEAD;
    }
    size_t alen = e->family == AF_INET ? 4 : 16;
    unsigned char *p = buf + V2_HEAD;
    buf[13] = e->family == AF_INET ? 0x11 : 0x21;
    put_u16(buf + 14, (uint16_t)(2 * alen + 4)); /* 12 or 36 */
    memcpy(p, e->src, alen);
    memcpy(p + alen, e->dst, alen);
    memcpy(p + 2 * alen, e->sport, 2);
    memcpy(p + 2 * alen + 2, e->dport, 2);
    return (int)(V2_HEAD + 2 * alen + 4);
}

int tk_proxy_encode(const tk_proxy_hdr *h, unsigned char *out, size_t cap)
{
    if (h->version != 1 && h->version != 2)
        return -EINVAL;
    ends e;
    memset(&e, 0, sizeof(e));
    if (!h->local) {
        int rc = ends_of(&h->src, &h->dst, &e);
        if (rc < 0)
            return rc;
    }
    /* Built aside first, so a short buffer is left untouched. */
    unsigned char buf[TK_PROXY_V1_MAX + 1];
    int n = h->version == 1 ? encode_v1(&e, h->local, (char *)buf) : encode_v2(&e, h->local, buf);
    if (n < 0)
        return n;
    if ((size_t)n > cap)
        return -ENOSPC;
    memcpy(out, buf, (size_t)n);
    return n;
}

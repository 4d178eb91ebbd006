/* Address ranges (CIDR) and the allow/deny policy built from them. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/access.h"

/* Longest range text accepted: an IPv6 address with an embedded IPv4 tail
 * ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") and "/128". */
#define CIDR_TEXT_MAX   (INET6_ADDRSTRLEN + 4)
#define POLICY_MAX_RULE 65536

struct tk_access_policy {
    tk_cidr *rules[2];
    size_t n[2], cap[2];
};

static int fail(char *err, size_t errcap, const char *fmt, const char *a, const char *b)
{
    if (err && errcap)
        snprintf(err, errcap, fmt, a, b);
    return -EINVAL;
}

/* "0" or a decimal without a leading zero, at most max. */
static int parse_prefix(const char *s, unsigned max, unsigned *out)
{
    unsigned v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 3 || (s[0] == '0' && n > 1))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Clears every bit of addr past prefix; returns 1 if one was set. */
static int clear_host_bits(unsigned char *addr, unsigned bytes, unsigned prefix)
{
    int had = 0;
    for (unsigned i = 0; i < bytes; i++) {
        unsigned lo = i * 8;
        unsigned char keep = prefix >= lo + 8 ? 0xff
                             : prefix <= lo   ? 0
                                              : (unsigned char)(0xff << (8 - (prefix - lo)));
        if (addr[i] & (unsigned char)~keep)
            had = 1;
        addr[i] &= keep;
    }
    return had;
}

static const unsigned char v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int tk_cidr_parse(const char *s, tk_cidr *out, char *err, size_t errcap)
{
    char text[CIDR_TEXT_MAX + 1];
    size_t len = strnlen(s, sizeof(text));
    if (len == 0)
        return fail(err, errcap, "empty address range%s%s", "", "");
    if (len >= sizeof(text))
        return fail(err, errcap, "'%.60s...': too long for an address range%s", s, "");
    memcpy(text, s, len + 1);
    char *slash = strchr(text, '/');
    if (slash)
        *slash = '\0';
    tk_cidr c;
    memset(&c, 0, sizeof(c));
    unsigned max;
    if (strchr(text, ':')) {
        if (strchr(text, '%'))
            return fail(err, errcap, "'%s': a zone index (%%) is not allowed in a range%s", s, "");
        if (inet_pton(AF_INET6, text, c.addr) != 1)
            return fail(err, errcap, "'%s': not an IPv6 address%s", s, "");
        c.family = AF_INET6;
        max = 128;
    } else {
        if (inet_pton(AF_INET, text, c.addr) != 1)
            return fail(err, errcap, "'%s': not an IPv4 address (want a.b.c.d[/N] or IPv6[/N])%s",
                        s, "");
        c.family = AF_INET;
        max = 32;
    }
    unsigned prefix = max;
    if (slash && parse_prefix(slash + 1, max, &prefix) < 0)
        return fail(err, errcap, "'%s': bad prefix length (0 to %s)", s, max == 32 ? "32" : "128");
    c.prefix = (unsigned char)prefix;
    tk_cidr net = c;
    if (clear_host_bits(net.addr, max / 8, prefix)) {
        char want[TK_CIDR_STRLEN];
        return fail(err, errcap, "'%s': host bits set beyond the prefix (the network is %s)", s,
                    tk_cidr_format(&net, want, sizeof(want)));
    }
    /* ::ffff:a.b.c.d/N is the IPv4 range a.b.c.d/(N-96). */
    if (c.family == AF_INET6 && prefix >= 96 && memcmp(c.addr, v4mapped_prefix, 12) == 0) {
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, 12);
        c.family = AF_INET;
        c.prefix = (unsigned char)(prefix - 96);
    }
    *out = c;
    return 0;
}

char *tk_cidr_format(const tk_cidr *c, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    int fam = c->family == AF_INET ? AF_INET : AF_INET6;
    if (!inet_ntop(fam, c->addr, ip, sizeof(ip)))
        snprintf(ip, sizeof(ip), "?");
    snprintf(buf, cap, "%s/%u", ip, (unsigned)c->prefix);
    return buf;
}

int tk_cidr_of_addr(const tk_addr *peer, tk_cidr *out)
{
    memset(out, 0, sizeof(*out));
    if (peer->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&peer->ss;
        memcpy(out->addr, &in->sin_addr, 4);
        out->family = AF_INET;
        out->prefix = 32;
        return 0;
    }
    if (peer->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&peer->ss;
        const unsigned char *b = in6->sin6_addr.s6_addr;
        if (memcmp(b, v4mapped_prefix, 12) == 0) {
            memcpy(out->addr, b + 12, 4);
            out->family = AF_INET;
            out->prefix = 32;
        } else {
            memcpy(out->addr, b, 16);
            out->family = AF_INET6;
            out->prefix = 128;
        }
        return 0;
    }
    return -EAFNOSUPPORT;
}

/* 1 if the first prefix bits of a and b agree. */
static int same_prefix(const unsigned char *a, const unsigned char *b, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    if (!rest)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

static int match_ip(const tk_cidr *rule, const tk_cidr *ip)
{
    return rule->family == ip->family && same_prefix(rule->addr, ip->addr, rule->prefix);
}

int tk_cidr_match(const tk_cidr *c, const tk_addr *peer)
{
    tk_cidr ip;
    return tk_cidr_of_addr(peer, &ip) == 0 && match_ip(c, &ip);
}

int tk_access_policy_new(tk_access_policy **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : -ENOMEM;
}

void tk_access_policy_free(tk_access_policy *p)
{
    if (!p)
        return;
    free(p->rules[0]);
    free(p->rules[1]);
    free(p);
}

static int grow(tk_access_policy *p, int w, size_t need)
{
    if (need <= p->cap[w])
        return 0;
    if (need > POLICY_MAX_RULE)
        return -E2BIG;
    size_t cap = p->cap[w] ? p->cap[w] : 8;
    while (cap < need)
        cap *= 2;
    tk_cidr *r = realloc(p->rules[w], cap * sizeof(*r));
    if (!r)
        return -ENOMEM;
    p->rules[w] = r;
    p->cap[w] = cap;
    return 0;
}

int tk_access_policy_add(tk_access_policy *p, tk_access_list which, const char *list, char *err,
                         size_t errcap)
{
    int w = which == TK_ACCESS_DENY;
    size_t start = p->n[w];
    const char *s = list;
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        size_t len = strcspn(s, ",");
        size_t end = len;
        while (end && (s[end - 1] == ' ' || s[end - 1] == '\t'))
            end--;
        char item[CIDR_TEXT_MAX + 2];
        tk_cidr c;
        int rc;
        if (end == 0)
            rc = fail(err, errcap, "empty entry in the list '%.80s'%s", list, "");
        else if (end >= sizeof(item))
            rc = fail(err, errcap, "'%.60s...': too long for an address range%s", s, "");
        else {
            memcpy(item, s, end);
            item[end] = '\0';
            rc = tk_cidr_parse(item, &c, err, errcap);
        }
        if (rc == 0 && (rc = grow(p, w, p->n[w] + 1)) == 0)
            p->rules[w][p->n[w]++] = c;
        if (rc < 0) {
            if (rc == -E2BIG && err && errcap)
                snprintf(err, errcap, "more than %d rules in one list", POLICY_MAX_RULE);
            p->n[w] = start;
            return rc;
        }
        if (s[len] != ',')
            return 0;
        s += len + 1;
    }
}

size_t tk_access_policy_count(const tk_access_policy *p, tk_access_list which)
{
    return p->n[which == TK_ACCESS_DENY];
}

const tk_cidr *tk_access_policy_rule(const tk_access_policy *p, tk_access_list which, size_t i)
{
    return &p->rules[which == TK_ACCESS_DENY][i];
}

static int any_match(const tk_access_policy *p, int w, const tk_cidr *ip)
{
    for (size_t i = 0; i < p->n[w]; i++)
        if (match_ip(&p->rules[w][i], ip))
            return 1;
    return 0;
}

int tk_access_policy_permits(const tk_access_policy *p, const tk_addr *peer)
{
    if (!p)
        return 1;
    tk_cidr ip;
    if (tk_cidr_of_addr(peer, &ip) < 0)
        return p->n[0] == 0; /* no address to match: only an allow list refuses it */
    if (any_match(p, 1, &ip))
        return 0;
    return p->n[0] == 0 || any_match(p, 0, &ip);
}

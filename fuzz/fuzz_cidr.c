/* Fuzzes the address ranges and allow/deny lists of tcpkit/access.h.
 *
 * The input is a list as --allow and --deny take it. Each entry that parses
 * must have a prefix within its family and no host bits, must format within
 * TK_CIDR_STRLEN into text that parses back to the very same range, and must
 * contain its own network address (IPv4 also as IPv4-mapped IPv6). Adding
 * the whole list is all or nothing: either every entry joins the list, or
 * none does and the error says why. A policy with the list as its deny list
 * then refuses the network address of every rule, and with it as its allow
 * list admits them. Error messages go to a small buffer too, to prove they
 * are cut, never overflowed. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/access.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 4096

static tk_addr addr_of(const tk_cidr *c, int mapped)
{
    tk_addr a;
    memset(&a, 0, sizeof(a));
    if (c->family == AF_INET && !mapped) {
        struct sockaddr_in *in = (struct sockaddr_in *)&a.ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, c->addr, 4);
        a.len = sizeof(*in);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a.ss;
        in6->sin6_family = AF_INET6;
        if (c->family == AF_INET) {
            in6->sin6_addr.s6_addr[10] = in6->sin6_addr.s6_addr[11] = 0xff;
            memcpy(in6->sin6_addr.s6_addr + 12, c->addr, 4);
        } else {
            memcpy(&in6->sin6_addr, c->addr, 16);
        }
        a.len = sizeof(*in6);
    }
    return a;
}

/* Properties of one range that parsed. */
static void check_range(const tk_cidr *c)
{
    unsigned max = c->family == AF_INET ? 32 : 128;
    if ((c->family != AF_INET && c->family != AF_INET6) || c->prefix > max)
        abort();
    for (unsigned bit = c->prefix; bit < 128; bit++)
        if (c->addr[bit / 8] & (0x80 >> (bit % 8)))
            abort(); /* host bits, or bytes past an IPv4 address */
    char text[TK_CIDR_STRLEN];
    tk_cidr_format(c, text, sizeof(text));
    if (strlen(text) >= sizeof(text) - 1)
        abort(); /* cut short: TK_CIDR_STRLEN too small */
    tk_cidr again;
    if (tk_cidr_parse(text, &again, NULL, 0) != 0 || memcmp(&again, c, sizeof(*c)) != 0)
        abort();
    tk_addr a = addr_of(c, 0);
    if (!tk_cidr_match(c, &a))
        abort();
    if (c->family == AF_INET) {
        a = addr_of(c, 1);
        if (!tk_cidr_match(c, &a))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    char small_err[12];
    tk_cidr one;
    if (tk_cidr_parse(s, &one, small_err, sizeof(small_err)) == 0)
        check_range(&one);
    else if (strlen(small_err) >= sizeof(small_err))
        abort();

    tk_access_policy *p;
    if (tk_access_policy_new(&p) < 0) {
        free(s);
        return 0;
    }
    char err[256] = "";
    int rc = tk_access_policy_add(p, TK_ACCESS_DENY, s, err, sizeof(err));
    size_t n = tk_access_policy_count(p, TK_ACCESS_DENY);
    size_t entries = 1;
    for (const char *q = s; *q; q++)
        entries += *q == ',';
    if (rc == 0 ? n != entries : n != 0 || err[0] == '\0')
        abort();
    if (rc == 0) {
        /* The same list as an allow list, built from the canonical forms. */
        tk_access_policy *allow;
        if (tk_access_policy_new(&allow) == 0) {
            for (size_t i = 0; i < n; i++) {
                const tk_cidr *c = tk_access_policy_rule(p, TK_ACCESS_DENY, i);
                char text[TK_CIDR_STRLEN];
                check_range(c);
                if (tk_access_policy_add(allow, TK_ACCESS_ALLOW,
                                         tk_cidr_format(c, text, sizeof(text)), NULL, 0) != 0)
                    abort();
                tk_addr a = addr_of(c, 0);
                if (tk_access_policy_permits(p, &a) || !tk_access_policy_permits(allow, &a))
                    abort();
            }
            tk_access_policy_free(allow);
        }
    }
    tk_access_policy_free(p);
    free(s);
    return 0;
}

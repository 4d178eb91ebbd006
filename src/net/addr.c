/* Address parsing, resolution and formatting. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/addr.h"

static int parse_port(const char *s, int *port)
{
    if (*s == '\0' || strlen(s) > 5)
        return -EINVAL;
    int v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        return -EINVAL;
    *port = v;
    return 0;
}

int tk_addr_split(const char *s, char *host, int *port)
{
    const char *colon;
    size_t hlen;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -EINVAL;
        hlen = (size_t)(close - s - 1);
        if (hlen == 0 || hlen >= TK_HOST_MAX)
            return -EINVAL;
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        return parse_port(close + 2, port);
    }
    colon = strrchr(s, ':');
    if (!colon)
        return -EINVAL;
    hlen = (size_t)(colon - s);
    /* A second colon means an unbracketed IPv6 literal: "::1:80" is ambiguous. */
    if (memchr(s, ':', hlen))
        return -EINVAL;
    if (hlen >= TK_HOST_MAX)
        return -EINVAL;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    return parse_port(colon + 1, port);
}

int tk_addr_parse(const char *s, tk_addr *out)
{
    char host[TK_HOST_MAX];
    int port;
    if (tk_addr_split(s, host, &port) < 0)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
    if (!strchr(host, '%') && inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*in4);
        return 0;
    }
    /* A link-local IPv6 address may carry its interface: "fe80::1%eth0". */
    char *scope = strchr(host, '%');
    if (scope)
        *scope++ = '\0';
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        if (scope) {
            unsigned long idx = if_nametoindex(scope);
            char *end;
            if (idx == 0) {
                idx = strtoul(scope, &end, 10);
                if (*scope == '\0' || *end != '\0' || idx == 0 || idx > UINT32_MAX)
                    return -EINVAL;
            }
            in6->sin6_scope_id = (uint32_t)idx;
        }
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*in6);
        return 0;
    }
    return -EINVAL;
}

int tk_addr_resolve(const char *s, int family, int passive, tk_addr *out, size_t cap)
{
    char host[TK_HOST_MAX];
    char port_str[8];
    int port;
    if (cap == 0 || tk_addr_split(s, host, &port) < 0)
        return -EINVAL;
    snprintf(port_str, sizeof(port_str), "%d", port);

    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    if (!passive)
        hints.ai_flags |= AI_ADDRCONFIG;
    const char *node = host[0] ? host : (passive ? NULL : "localhost");
    int rc = getaddrinfo(node, port_str, &hints, &res);
    if (rc != 0)
        return rc == EAI_MEMORY ? -ENOMEM : -ENOENT;
    size_t n = 0;
    for (struct addrinfo *ai = res; ai && n < cap; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(out[n].ss))
            continue;
        memset(&out[n], 0, sizeof(out[n]));
        memcpy(&out[n].ss, ai->ai_addr, ai->ai_addrlen);
        out[n].len = ai->ai_addrlen;
        n++;
    }
    freeaddrinfo(res);
    return n ? (int)n : -ENOENT;
}

char *tk_addr_format(const tk_addr *a, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &in4->sin_addr, ip, sizeof(ip));
        snprintf(buf, cap, "%s:%d", ip, ntohs(in4->sin_port));
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        if (in6->sin6_scope_id) {
            /* Keep the interface, or the text cannot reach the address again. */
            char ifname[IF_NAMESIZE];
            if (if_indextoname(in6->sin6_scope_id, ifname))
                snprintf(buf, cap, "[%s%%%s]:%d", ip, ifname, ntohs(in6->sin6_port));
            else
                snprintf(buf, cap, "[%s%%%u]:%d", ip, in6->sin6_scope_id, ntohs(in6->sin6_port));
        } else {
            snprintf(buf, cap, "[%s]:%d", ip, ntohs(in6->sin6_port));
        }
    } else {
        snprintf(buf, cap, "(unknown)");
    }
    return buf;
}

int tk_addr_port(const tk_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return -1;
}

void tk_addr_set_port(tk_addr *a, int port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)port);
    else if (a->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)port);
}

int tk_addr_of_socket(int fd, int peer, tk_addr *a)
{
    memset(a, 0, sizeof(*a));
    a->len = sizeof(a->ss);
    int rc = peer ? getpeername(fd, (struct sockaddr *)&a->ss, &a->len)
                  : getsockname(fd, (struct sockaddr *)&a->ss, &a->len);
    return rc < 0 ? -errno : 0;
}

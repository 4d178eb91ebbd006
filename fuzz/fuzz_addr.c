/* Fuzzes the host:port parser of tcpkit/addr.h (tk_addr_split and
 * tk_addr_parse; never tk_addr_resolve, which may ask DNS).
 *
 * Split writes into a heap buffer of exactly TK_HOST_MAX bytes, so ASan
 * catches a write past the documented size; what it returns (host shorter
 * than TK_HOST_MAX, port 0..65535) written back as "host:port" or
 * "[host]:port" splits to the same pair. Parse succeeds only where split
 * does, and an address it returns formats (within TK_ADDR_STRLEN) into text
 * that parses back to the same family, address, port and scope. */
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_INPUT 1024

static void same_addr(const tk_addr *a, const tk_addr *b)
{
    if (a->ss.ss_family != b->ss.ss_family || a->len != b->len)
        abort();
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        if (x->sin_port != y->sin_port || x->sin_addr.s_addr != y->sin_addr.s_addr)
            abort();
    } else if (a->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        if (x->sin6_port != y->sin6_port || x->sin6_scope_id != y->sin6_scope_id ||
            memcmp(&x->sin6_addr, &y->sin6_addr, 16) != 0)
            abort();
    } else {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    char *s = malloc(size + 1);
    char *host = malloc(TK_HOST_MAX);
    if (!s || !host) {
        free(s);
        free(host);
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';

    int port = -1;
    int split = tk_addr_split(s, host, &port);
    if (split == 0) {
        if (strnlen(host, TK_HOST_MAX) >= TK_HOST_MAX || port < 0 || port > 65535)
            abort();
        char text[TK_HOST_MAX + 16];
        char *host2 = malloc(TK_HOST_MAX);
        int port2 = -1;
        if (host2) {
            snprintf(text, sizeof(text), s[0] == '[' ? "[%s]:%d" : "%s:%d", host, port);
            if (tk_addr_split(text, host2, &port2) != 0 || strcmp(host, host2) != 0 ||
                port != port2)
                abort();
            free(host2);
        }
    }

    tk_addr a;
    if (tk_addr_parse(s, &a) == 0) {
        if (split != 0 || tk_addr_port(&a) != port)
            abort();
        char text[TK_ADDR_STRLEN];
        tk_addr_format(&a, text, sizeof(text));
        if (strlen(text) >= sizeof(text) - 1)
            abort();
        tk_addr b;
        if (tk_addr_parse(text, &b) != 0)
            abort();
        same_addr(&a, &b);
    }
    free(host);
    free(s);
    return 0;
}

/* Socket addresses: parsing "host:port", "[v6]:port", ":port", resolving and
 * formatting. */
#ifndef TCPKIT_ADDR_H
#define TCPKIT_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest formatted address, "[v6-address%scope]:65535" plus NUL. */
#define TK_ADDR_STRLEN 80
/* Longest host part accepted by tk_addr_split (a DNS name is at most 253). */
#define TK_HOST_MAX 256

typedef struct {
    struct sockaddr_storage ss;
    socklen_t len;
} tk_addr;

/* Splits s into host and port: "h:p", "[v6]:p", ":p" (empty host) and a bare
 * IPv6 literal is refused as ambiguous. The port must be decimal 0..65535.
 * Returns 0 or -EINVAL. host must hold TK_HOST_MAX bytes. */
int tk_addr_split(const char *s, char *host, int *port);

/* Parses a numeric address (no DNS): "1.2.3.4:80", "[::1]:80". Returns 0 or
 * -EINVAL. */
int tk_addr_parse(const char *s, tk_addr *out);

/* Resolves s (may query DNS) into at most cap addresses, in resolver order.
 * family is AF_UNSPEC, AF_INET or AF_INET6. For listening (passive != 0) an
 * empty host means every local address; for connecting it means localhost.
 * Returns the number stored (at least 1) or a negative errno
 * (-EINVAL for a malformed string, -ENOENT when the name does not resolve). */
int tk_addr_resolve(const char *s, int family, int passive, tk_addr *out, size_t cap);

/* Formats a as "1.2.3.4:80" or "[::1]:80" into buf (TK_ADDR_STRLEN bytes) and
 * returns buf. */
char *tk_addr_format(const tk_addr *a, char *buf, size_t cap);

/* The port of a, in host order. */
int tk_addr_port(const tk_addr *a);

/* Sets the port of a. */
void tk_addr_set_port(tk_addr *a, int port);

/* Fills a with the local (peer != 0: remote) address of fd. Returns 0 or -errno. */
int tk_addr_of_socket(int fd, int peer, tk_addr *a);

#endif

/* Scan targets and port lists: the pure parsing half of the scanner. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tcpkit/parse.h"
#include "tcpkit/scan.h"

/* The most common TCP services, after nmap's frequency data; sorted. */
static const uint16_t top_ports[TK_SCAN_TOP_PORTS] = {
    7,    9,    13,    21,    22,    23,    25,    26,    37,    53,   79,   80,   81,   88,   106,
    110,  111,  113,   119,   135,   139,   143,   144,   179,   199,  389,  427,  443,  444,  445,
    465,  513,  514,   515,   543,   544,   548,   554,   587,   631,  646,  873,  990,  993,  995,
    1025, 1026, 1027,  1028,  1029,  1110,  1433,  1720,  1723,  1755, 1900, 2000, 2001, 2049, 2121,
    2717, 3000, 3128,  3306,  3389,  3986,  4899,  5000,  5009,  5051, 5060, 5101, 5190, 5357, 5432,
    5631, 5666, 5800,  5900,  6000,  6001,  6646,  7070,  8000,  8008, 8009, 8080, 8081, 8443, 8888,
    9100, 9999, 10000, 32768, 49152, 49153, 49154, 49155, 49156, 49157};

const uint16_t *tk_scan_top_ports(void)
{
    return top_ports;
}

unsigned tk_scan_default_concurrency(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 1024;
    if (rl.rlim_cur <= 64 + 1)
        return 1;
    rlim_t n = rl.rlim_cur - 64;
    return n < 1024 ? (unsigned)n : 1024;
}

const char *tk_scan_state_name(tk_scan_state s)
{
    switch (s) {
    case TK_SCAN_OPEN: return "open";
    case TK_SCAN_CLOSED: return "closed";
    case TK_SCAN_FILTERED: return "filtered";
    default: return "unknown";
    }
}

static int reserve(tk_scan_targets *t, size_t more)
{
    if (more > TK_SCAN_MAX_HOSTS || t->n + more > TK_SCAN_MAX_HOSTS)
        return -E2BIG;
    if (t->n + more <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap : 16;
    while (cap < t->n + more)
        cap *= 2;
    tk_scan_host *h = realloc(t->hosts, cap * sizeof(*h));
    if (!h)
        return -ENOMEM;
    t->hosts = h;
    t->cap = cap;
    return 0;
}

static tk_scan_host *append(tk_scan_targets *t)
{
    tk_scan_host *h = &t->hosts[t->n++];
    memset(h, 0, sizeof(*h));
    return h;
}

/* Adds every address of addr/prefix (addr is in network order). */
static int add_range(tk_scan_targets *t, int family, const unsigned char *addr, unsigned prefix)
{
    unsigned bits = family == AF_INET ? 32 : 128;
    if (prefix > bits)
        return -EINVAL;
    unsigned host_bits = bits - prefix;
    if (host_bits > 16 || (1ul << host_bits) > TK_SCAN_MAX_HOSTS)
        return -E2BIG;
    size_t count = (size_t)1 << host_bits;
    int err = reserve(t, count);
    if (err)
        return err;
    unsigned char base[16];
    size_t len = bits / 8;
    memcpy(base, addr, len);
    /* Clear the host bits: the range starts at its network address. */
    for (unsigned b = prefix; b < bits; b++)
        base[b / 8] &= (unsigned char)~(0x80u >> (b % 8));
    for (size_t i = 0; i < count; i++) {
        unsigned char a[16];
        memcpy(a, base, len);
        /* host_bits <= 16: the offset fits in the last two bytes. */
        unsigned lo = a[len - 1] | (unsigned)a[len - 2] << 8;
        lo |= (unsigned)i;
        a[len - 1] = (unsigned char)lo;
        a[len - 2] = (unsigned char)(lo >> 8);
        tk_scan_host *h = append(t);
        if (family == AF_INET) {
            struct sockaddr_in *in4 = (struct sockaddr_in *)&h->addr.ss;
            in4->sin_family = AF_INET;
            memcpy(&in4->sin_addr, a, 4);
            h->addr.len = sizeof(*in4);
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h->addr.ss;
            in6->sin6_family = AF_INET6;
            memcpy(&in6->sin6_addr, a, 16);
            h->addr.len = sizeof(*in6);
        }
    }
    return 0;
}

static int add_cidr(tk_scan_targets *t, const char *spec, const char *slash)
{
    char ip[INET6_ADDRSTRLEN];
    size_t iplen = (size_t)(slash - spec);
    if (iplen == 0 || iplen >= sizeof(ip))
        return -EINVAL;
    memcpy(ip, spec, iplen);
    ip[iplen] = '\0';
    unsigned long prefix;
    if (tk_parse_uint(slash + 1, 0, 128, &prefix) < 0)
        return -EINVAL;
    unsigned char a[16];
    if (inet_pton(AF_INET, ip, a) == 1)
        return add_range(t, AF_INET, a, (unsigned)prefix);
    if (inet_pton(AF_INET6, ip, a) == 1)
        return add_range(t, AF_INET6, a, (unsigned)prefix);
    return -EINVAL;
}

/* A literal or a host name: getaddrinfo's first answer. */
static int add_host(tk_scan_targets *t, const char *spec)
{
    size_t len = strlen(spec);
    if (len == 0 || len >= TK_HOST_MAX || spec[0] == '-' || strchr(spec, ' '))
        return -EINVAL;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    int numeric = 1;
    unsigned char raw[16];
    /* getaddrinfo also takes the old short forms ("1.2.3"): only the
     * standard ones count as literals. */
    int rc = -1;
    if (inet_pton(AF_INET, spec, raw) == 1 || inet_pton(AF_INET6, spec, raw) == 1 ||
        (strchr(spec, ':') && strchr(spec, '%')))
        rc = getaddrinfo(spec, NULL, &hints, &res);
    if (rc != 0) {
        numeric = 0;
        /* Something that looks like an address but did not parse is a typo,
         * not a name to send to DNS. */
        if (strchr(spec, ':') || strspn(spec, "0123456789.") == len)
            return -EINVAL;
        hints.ai_flags = AI_ADDRCONFIG;
        rc = getaddrinfo(spec, NULL, &hints, &res);
        if (rc != 0)
            return rc == EAI_MEMORY ? -ENOMEM : -ENOENT;
    }
    int err = reserve(t, 1);
    if (err == 0 && res->ai_addrlen > sizeof(struct sockaddr_storage))
        err = -EINVAL;
    if (err == 0) {
        tk_scan_host *h = append(t);
        memcpy(&h->addr.ss, res->ai_addr, res->ai_addrlen);
        h->addr.len = res->ai_addrlen;
        if (!numeric)
            memcpy(h->name, spec, len + 1);
    }
    freeaddrinfo(res);
    return err;
}

int tk_scan_targets_add(tk_scan_targets *t, const char *spec)
{
    const char *slash = strchr(spec, '/');
    return slash ? add_cidr(t, spec, slash) : add_host(t, spec);
}

void tk_scan_targets_free(tk_scan_targets *t)
{
    free(t->hosts);
    memset(t, 0, sizeof(*t));
}

/* Reads a port number at *s, advancing it; 0 or -EINVAL. */
static int read_port(const char **s, unsigned *out)
{
    unsigned v = 0;
    const char *p = *s;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (unsigned)(*p - '0');
        if (v > 65535)
            return -EINVAL;
        p++;
    }
    if (v == 0)
        return -EINVAL;
    *s = p;
    *out = v;
    return 0;
}

int tk_scan_parse_ports(const char *spec, uint16_t **out, size_t *n)
{
    if (!spec || !*spec)
        return -EINVAL;
    unsigned char *seen = calloc(65536, 1);
    if (!seen)
        return -ENOMEM;
    const char *p = spec;
    int err = 0;
    for (;;) {
        unsigned lo = 1, hi = 65535;
        if (*p != '-' && (err = read_port(&p, &lo)) < 0)
            break;
        if (*p == '-') {
            p++;
            hi = 65535;
            if (*p != ',' && *p != '\0' && (err = read_port(&p, &hi)) < 0)
                break;
        } else {
            hi = lo;
        }
        if (lo > hi) {
            err = -EINVAL;
            break;
        }
        memset(seen + lo, 1, hi - lo + 1);
        if (*p == '\0')
            break;
        if (*p != ',' || p[1] == '\0') {
            err = -EINVAL;
            break;
        }
        p++;
    }
    if (err) {
        free(seen);
        return err;
    }
    size_t count = 0;
    for (unsigned i = 1; i < 65536; i++)
        count += seen[i];
    uint16_t *ports = malloc(count * sizeof(*ports));
    if (!ports) {
        free(seen);
        return -ENOMEM;
    }
    size_t k = 0;
    for (unsigned i = 1; i < 65536; i++)
        if (seen[i])
            ports[k++] = (uint16_t)i;
    free(seen);
    *out = ports;
    *n = count;
    return 0;
}

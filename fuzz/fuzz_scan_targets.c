/* Fuzzes the scanner's pure parsers (tcpkit/scan.h): tk_scan_parse_ports
 * and tk_scan_targets_add, with the input up to its first NUL as the value.
 *
 * Ports: the answer agrees with a reference written here from the documented
 * grammar (comma-separated items, each "N", "N-M", "N-", "-M" or "-", ports
 * 1 to 65535, N <= M); an accepted list is strictly increasing, holds exactly
 * the ports the items name, and printed back as ranges parses to the same
 * list.
 *
 * Targets: only inputs that cannot reach the resolver are tried (host names
 * would be DNS queries): CIDR ranges and what looks like an address. An
 * accepted literal is one host whose address inet_pton gives for the same
 * text; an accepted range has exactly 2^(bits - prefix) hosts, the first its
 * network address, each the one before plus one, all inside the prefix, and
 * no names. Adding to a list that is nearly full refuses with -E2BIG and
 * leaves it as it was. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads a port (1..65535) at *p; 0 when there is none or it is out of range. */
static unsigned ref_port(const char **p)
{
    unsigned long v = 0;
    size_t n = strspn(*p, "0123456789");
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n && v <= 65535; i++)
        v = v * 10 + (unsigned long)((*p)[i] - '0'); /* leading zeros allowed */
    *p += n;
    return v <= 65535 ? (unsigned)v : 0;
}

/* Reference parse into seen[]; 1 when the spec is well formed. */
static int ref_ports(const char *s, unsigned char *seen)
{
    if (!*s)
        return 0;
    for (;;) {
        unsigned lo = 1, hi;
        if (*s != '-' && (lo = ref_port(&s)) == 0)
            return 0;
        if (*s == '-') {
            s++;
            hi = 65535;
            if (*s != ',' && *s && (hi = ref_port(&s)) == 0)
                return 0;
        } else {
            hi = lo;
        }
        if (lo > hi)
            return 0;
        memset(seen + lo, 1, hi - lo + 1);
        if (!*s)
            return 1;
        if (*s != ',' || !s[1])
            return 0;
        s++;
    }
}

static void check_ports(const char *s)
{
    uint16_t *ports = NULL;
    size_t n = 0;
    int rc = tk_scan_parse_ports(s, &ports, &n);
    unsigned char *seen = calloc(65536, 1);
    if (!seen)
        abort();
    int ok = ref_ports(s, seen);
    if (rc != (ok ? 0 : -EINVAL) || (!ok && ports))
        abort();
    if (!ok) {
        free(seen);
        return;
    }
    size_t want = 0;
    for (unsigned i = 1; i < 65536; i++)
        want += seen[i];
    if (n != want || n == 0)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (!seen[ports[i]] || (i && ports[i] <= ports[i - 1]))
            abort();
    }
    /* Printed back as ranges, the list parses to itself. */
    char *text = malloc(n * 12 + 1);
    if (!text)
        abort();
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && ports[j + 1] == ports[j] + 1)
            j++;
        o += (size_t)sprintf(text + o, i ? ",%u" : "%u", ports[i]);
        if (j > i)
            o += (size_t)sprintf(text + o, "-%u", ports[j]);
        i = j + 1;
    }
    uint16_t *again = NULL;
    size_t n2 = 0;
    if (tk_scan_parse_ports(text, &again, &n2) != 0 || n2 != n ||
        memcmp(again, ports, n * sizeof(*ports)) != 0)
        abort();
    free(again);
    free(text);
    free(ports);
    free(seen);
}

/* The address bytes of a host and their length (4 or 16). */
static size_t host_bytes(const tk_scan_host *h, unsigned char *out)
{
    if (h->addr.ss.ss_family == AF_INET) {
        if (h->addr.len != sizeof(struct sockaddr_in))
            abort();
        memcpy(out, &((const struct sockaddr_in *)&h->addr.ss)->sin_addr, 4);
        return 4;
    }
    if (h->addr.ss.ss_family != AF_INET6 || h->addr.len != sizeof(struct sockaddr_in6))
        abort();
    memcpy(out, &((const struct sockaddr_in6 *)&h->addr.ss)->sin6_addr, 16);
    return 16;
}

/* The same first `bits` bits. */
static int same_prefix(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    for (unsigned i = 0; i < bits; i++) {
        unsigned m = 0x80u >> (i % 8);
        if ((a[i / 8] & m) != (b[i / 8] & m))
            return 0;
    }
    return 1;
}

static void check_range(const char *s, const tk_scan_targets *t)
{
    const char *slash = strchr(s, '/');
    char ip[INET6_ADDRSTRLEN];
    size_t iplen = (size_t)(slash - s);
    if (iplen >= sizeof(ip))
        abort();
    memcpy(ip, s, iplen);
    ip[iplen] = '\0';
    unsigned char want[16];
    size_t len = inet_pton(AF_INET, ip, want) == 1 ? 4 : 16;
    if (len == 16 && inet_pton(AF_INET6, ip, want) != 1)
        abort(); /* accepted, so one of the two */
    unsigned bits = (unsigned)len * 8;
    unsigned long prefix = strtoul(slash + 1, NULL, 10);
    if (prefix > bits || bits - prefix > 16 || t->n != (size_t)1 << (bits - prefix))
        abort();
    unsigned char prev[16];
    for (size_t i = 0; i < t->n; i++) {
        unsigned char a[16];
        if (host_bytes(&t->hosts[i], a) != len || t->hosts[i].name[0] ||
            !same_prefix(a, want, (unsigned)prefix))
            abort();
        if (i == 0) {
            /* The network address: every host bit clear. */
            for (unsigned b = (unsigned)prefix; b < bits; b++) {
                if (a[b / 8] & (0x80u >> (b % 8)))
                    abort();
            }
        } else {
            /* One more than the previous address. */
            unsigned char next[16];
            memcpy(next, prev, len);
            for (size_t k = len; k-- > 0;) {
                if (++next[k] != 0)
                    break;
            }
            if (memcmp(next, a, len) != 0)
                abort();
        }
        memcpy(prev, a, len);
    }
}

static void check_literal(const char *s, const tk_scan_targets *t)
{
    unsigned char a[16], want[16];
    if (t->n != 1 || t->hosts[0].name[0])
        abort();
    size_t len = host_bytes(&t->hosts[0], a);
    int fam = len == 4 ? AF_INET : AF_INET6;
    /* A scoped IPv6 literal ("fe80::1%lo") names its interface after '%'. */
    char plain[TK_HOST_MAX];
    snprintf(plain, sizeof(plain), "%s", s);
    plain[strcspn(plain, "%")] = '\0';
    if (inet_pton(fam, plain, want) != 1 || memcmp(a, want, len) != 0)
        abort();
}

static void check_targets(const char *s)
{
    size_t n = strlen(s);
    int range = strchr(s, '/') != NULL;
    /* A host name would be resolved: skip what is neither a range nor
     * shaped like an address (as scan_targets.c tells them apart). */
    if (!range && !strchr(s, ':') && strspn(s, "0123456789.") != n)
        return;
    tk_scan_targets t;
    memset(&t, 0, sizeof(t));
    int rc = tk_scan_targets_add(&t, s);
    if (rc != 0 && rc != -EINVAL && rc != -E2BIG && rc != -ENOMEM)
        abort();
    if (rc != 0) {
        if (t.n != 0)
            abort();
        tk_scan_targets_free(&t);
        return;
    }
    if (range)
        check_range(s, &t);
    else
        check_literal(s, &t);

    /* A list one short of full takes one host, but no range of more. Its
     * memory is allocated once: the add never reallocates it (there is room
     * for one more, and a range is refused before anything grows). */
    static tk_scan_host *full;
    if (!full && !(full = calloc(TK_SCAN_MAX_HOSTS, sizeof(*full))))
        abort();
    size_t got = t.n;
    tk_scan_targets_free(&t);
    t.hosts = full;
    t.n = TK_SCAN_MAX_HOSTS - 1;
    t.cap = TK_SCAN_MAX_HOSTS;
    rc = tk_scan_targets_add(&t, s);
    if (t.hosts != full || t.cap != TK_SCAN_MAX_HOSTS)
        abort();
    if (got > 1 ? rc != -E2BIG || t.n != TK_SCAN_MAX_HOSTS - 1
                : rc != 0 || t.n != TK_SCAN_MAX_HOSTS)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = strnlen((const char *)data, size);
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, data, n);
    s[n] = '\0';
    check_ports(s);
    check_targets(s);
    free(s);
    return 0;
}

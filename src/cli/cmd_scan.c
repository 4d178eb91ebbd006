/* tcpkit scan: a TCP connect scanner. Parses the options, builds the target
 * and port lists, runs the engine (src/tools/scan.c) and prints its result
 * as a table, one JSON document or one grepable line per host. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/commands.h"
#include "cli/opts.h"
#include "cli/tls_opts.h"
#include "tcpkit/scan.h"

#define SCAN_MAX_TIMEOUT_MS (60u * 1000)
#define SCAN_MAX_RATE       10000000ul
#define SCAN_MAX_RETRIES    10ul

enum { OUT_TABLE, OUT_JSON, OUT_GREP };

typedef struct {
    tk_scan_config cfg;
    tk_scan_targets targets;
    uint16_t *ports;
    int format;
    int all;
    tls_opts tls;
    int tls_timeout_set; /* --tls-handshake-timeout given: it bounds the handshake */
} scan_opts;

static const char usage_text[] =
    "usage: tcpkit scan TARGET... [OPTIONS]\n"
    "\n"
    "Connect-scans TCP ports. A TARGET is a host name, an IPv4 or IPv6 address, or\n"
    "a CIDR range (192.0.2.0/24, 2001:db8::/120; at most 65536 addresses in all).\n"
    "Each port is open (connected), closed (refused) or filtered (no answer in\n"
    "time, or host or network unreachable).\n"
    "\n"
    "  -p, --ports LIST          22,80,8000-8100; '-' for 1-65535 (default: 100 common ports)\n"
    "  -c, --concurrency N       connects in flight at most (default: min(1024, fd limit - 64))\n"
    "      --rate N              connects started per second (default 0: unlimited)\n"
    "      --timeout T           per attempt: 1, 0.5, 300ms (default 1s)\n"
    "      --retries N           extra attempts for filtered ports (default 1)\n"
    "      --banner              read what open ports send first (1s, 128 bytes)\n"
    "      --banner-timeout T    how long to wait for a banner (default 1s)\n"
    "      --all                 also list closed and filtered ports\n"
    "      --json                one JSON document with every host and port\n"
    "      --grepable            one line per host: Host: ADDR Ports: 22/open/ssh, ...\n"
    "  -h, --help                this help\n"
    "\n"
    "TLS (--tls, or any option below): a handshake on every open port within\n"
    "--timeout (or --tls-handshake-timeout if given), reported with the version or\n"
    "the reason it failed; with --banner the banner is then read through TLS. The\n"
    "certificate is checked, and a failed check is reported, but the banner is\n"
    "still read (a scan sends nothing).\n" TLS_CLIENT_HELP "\n"
    "On a terminal a progress line with an ETA is shown on stderr.\n"
    "Exit status: 0 the scan ran, 1 error, 2 usage error.\n";

static int bad_value(const char *opt, const char *val)
{
    return opt_usage_error("scan", "invalid value '%s' for %s", val, opt);
}

static int parse_ms(const char *s, uint32_t *ms)
{
    return tk_parse_duration_ms(s, ms) == 0 && *ms > 0 && *ms <= SCAN_MAX_TIMEOUT_MS ? 0 : -1;
}

/* Returns 0, 2 after printing a usage error, or -1 for --help. */
static int parse_args(int argc, char **argv, scan_opts *o)
{
    enum {
        OPT_RATE = 256,
        OPT_TIMEOUT,
        OPT_RETRIES,
        OPT_BANNER,
        OPT_BANNER_TIMEOUT,
        OPT_ALL,
        OPT_JSON,
        OPT_GREP
    };
    static const struct option longopts[] = {
        {"ports", required_argument, NULL, 'p'},
        {"concurrency", required_argument, NULL, 'c'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"retries", required_argument, NULL, OPT_RETRIES},
        {"banner", no_argument, NULL, OPT_BANNER},
        {"banner-timeout", required_argument, NULL, OPT_BANNER_TIMEOUT},
        {"all", no_argument, NULL, OPT_ALL},
        {"json", no_argument, NULL, OPT_JSON},
        {"grepable", no_argument, NULL, OPT_GREP},
        TLS_CLIENT_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *ports = NULL;
    unsigned long v;
    int ch;

    tk_scan_config_init(&o->cfg);
    tls_opts_init(&o->tls);
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":p:c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p': ports = optarg; break;
        case 'c':
            if (tk_parse_uint(optarg, 1, 65536, &v) < 0)
                return bad_value("--concurrency", optarg);
            o->cfg.concurrency = (unsigned)v;
            break;
        case OPT_RATE:
            if (tk_parse_uint(optarg, 0, SCAN_MAX_RATE, &v) < 0)
                return bad_value("--rate", optarg);
            o->cfg.rate = (unsigned)v;
            break;
        case OPT_TIMEOUT:
            if (parse_ms(optarg, &o->cfg.timeout_ms) < 0)
                return bad_value("--timeout", optarg);
            break;
        case OPT_RETRIES:
            if (tk_parse_uint(optarg, 0, SCAN_MAX_RETRIES, &v) < 0)
                return bad_value("--retries", optarg);
            o->cfg.retries = (unsigned)v;
            break;
        case OPT_BANNER: o->cfg.banner = 1; break;
        case OPT_BANNER_TIMEOUT:
            if (parse_ms(optarg, &o->cfg.banner_timeout_ms) < 0)
                return bad_value("--banner-timeout", optarg);
            break;
        case OPT_ALL: o->all = 1; break;
        case OPT_JSON:
        case OPT_GREP: {
            int f = ch == OPT_JSON ? OUT_JSON : OUT_GREP;
            if (o->format != OUT_TABLE && o->format != f)
                return opt_usage_error("scan", "--json and --grepable exclude each other");
            o->format = f;
            break;
        }
        case 'h': return -1;
        case ':':
            if (optopt > 0 && optopt < 128)
                return opt_usage_error("scan", "-%c needs a value", optopt);
            return opt_usage_error("scan", "%s needs a value", argv[optind - 1]);
        default: {
            int rc = tls_option(&o->tls, "scan", ch, optarg);
            if (rc >= 0) {
                if (rc)
                    return rc;
                o->tls_timeout_set |= ch == OPT_TLS_HANDSHAKE_TIMEOUT;
                break;
            }
            if (optopt > 0 && optopt < 128)
                return opt_usage_error("scan", "unknown option '-%c'", optopt);
            return opt_usage_error("scan", "unknown option '%s'", argv[optind - 1]);
        }
        }
    }
    if (optind >= argc)
        return opt_usage_error("scan", "missing TARGET");
    if (ports) {
        size_t n;
        int err = tk_scan_parse_ports(ports, &o->ports, &n);
        if (err == -ENOMEM)
            return opt_usage_error("scan", "out of memory");
        if (err < 0)
            return bad_value("--ports", ports);
        o->cfg.ports = o->ports;
        o->cfg.nports = n;
    } else {
        o->cfg.ports = tk_scan_top_ports();
        o->cfg.nports = TK_SCAN_TOP_PORTS;
    }
    for (int i = optind; i < argc; i++) {
        int err = tk_scan_targets_add(&o->targets, argv[i]);
        if (err == -E2BIG)
            return opt_usage_error("scan", "too many addresses at '%s' (at most %u in all)",
                                   argv[i], TK_SCAN_MAX_HOSTS);
        if (err == -ENOENT)
            return opt_usage_error("scan", "cannot resolve '%s'", argv[i]);
        if (err < 0)
            return opt_usage_error("scan", "invalid target '%s'", argv[i]);
    }
    if ((uint64_t)o->targets.n * o->cfg.nports > TK_SCAN_MAX_PROBES)
        return opt_usage_error("scan", "too many probes (hosts x ports over %u)",
                               TK_SCAN_MAX_PROBES);
    o->cfg.hosts = o->targets.hosts;
    o->cfg.nhosts = o->targets.n;
    return 0;
}

static const char *host_ip(const tk_scan_host *h, char *buf, size_t cap)
{
    if (h->addr.ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)&h->addr.ss)->sin_addr, buf,
                  (socklen_t)cap);
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&h->addr.ss)->sin6_addr, buf,
                  (socklen_t)cap);
    return buf;
}

/* Service names from the system's services database, one per port index
 * (NULL when it knows none). The database is read once, front to back:
 * getservbyport() per port would read it again for every port. */
static char **service_names(const uint16_t *ports, size_t n)
{
    char **names = calloc(n, sizeof(*names));
    char **all = calloc(65536, sizeof(*all));
    if (!names || !all) {
        free(names);
        free(all);
        return NULL;
    }
    setservent(0);
    struct servent *se;
    while ((se = getservent()) != NULL) {
        unsigned port = ntohs((uint16_t)se->s_port);
        if (strcmp(se->s_proto, "tcp") == 0 && !all[port])
            all[port] = strdup(se->s_name);
    }
    endservent();
    for (size_t i = 0; i < n; i++) {
        names[i] = all[ports[i]];
        all[ports[i]] = NULL;
    }
    for (unsigned i = 0; i < 65536; i++)
        free(all[i]);
    free(all);
    return names;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

/* Printable ASCII stays, \r \n \t and backslash become escapes, anything
 * else \xHH. out holds 4 * TK_SCAN_BANNER_MAX + 1 bytes. */
static void escape_banner(const tk_scan_banner *b, char *out)
{
    char *o = out;
    for (size_t i = 0; i < b->len; i++) {
        unsigned char ch = b->data[i];
        if (ch == '\\')
            o += sprintf(o, "\\\\");
        else if (ch == '\n')
            o += sprintf(o, "\\n");
        else if (ch == '\r')
            o += sprintf(o, "\\r");
        else if (ch == '\t')
            o += sprintf(o, "\\t");
        else if (ch >= 0x20 && ch < 0x7f)
            *o++ = (char)ch;
        else
            o += sprintf(o, "\\x%02x", ch);
    }
    *o = '\0';
}

static const tk_scan_banner *find_banner(const tk_scan_result *r, size_t h, size_t p)
{
    for (size_t i = 0; i < r->nbanners; i++)
        if (r->banners[i].host == h && r->banners[i].port == p)
            return &r->banners[i];
    return NULL;
}

static const tk_scan_tls *find_tls(const tk_scan_result *r, size_t h, size_t p)
{
    for (size_t i = 0; i < r->ntls; i++)
        if (r->tls[i].host == h && r->tls[i].port == p)
            return &r->tls[i];
    return NULL;
}

/* The table's note under a port whose TLS failed or did not verify; NULL
 * when there is nothing to say. */
static const char *tls_note(const tk_scan_tls *t, char *buf, size_t cap)
{
    if (!t)
        return NULL;
    if (t->error[0])
        snprintf(buf, cap, "tls: %s", t->error);
    else if (t->verify_error[0])
        snprintf(buf, cap, "tls: not verified: %s", t->verify_error);
    else
        return NULL;
    return buf;
}

static int shown(const scan_opts *o, uint8_t st)
{
    return o->all || st == TK_SCAN_OPEN;
}

static void print_table(const scan_opts *o, const tk_scan_result *r, char **svc)
{
    uint64_t count[4] = {0};
    size_t reported = 0;
    for (size_t h = 0; h < r->nhosts; h++) {
        const uint8_t *st = &r->states[h * r->nports];
        uint64_t c[4] = {0};
        for (size_t p = 0; p < r->nports; p++)
            c[st[p] & 3]++;
        for (int k = 0; k < 4; k++)
            count[k] += c[k];
        /* In a range, hosts where nothing answered are left out. */
        if (r->nhosts > 1 && c[TK_SCAN_FILTERED] == r->nports && !o->all)
            continue;
        const tk_scan_host *host = &o->cfg.hosts[h];
        char ip[INET6_ADDRSTRLEN];
        host_ip(host, ip, sizeof(ip));
        if (reported++)
            printf("\n");
        if (host->name[0])
            printf("Scan report for %s (%s)\n", host->name, ip);
        else
            printf("Scan report for %s\n", ip);
        if (c[TK_SCAN_OPEN] == 0 && !o->all) {
            printf("No open ports among %zu scanned (%llu closed, %llu filtered)\n", r->nports,
                   (unsigned long long)c[TK_SCAN_CLOSED], (unsigned long long)c[TK_SCAN_FILTERED]);
            continue;
        }
        if (o->cfg.tls && o->cfg.banner)
            printf("%-11s %-9s %-16s %-8s BANNER\n", "PORT", "STATE", "SERVICE", "TLS");
        else if (o->cfg.tls)
            printf("%-11s %-9s %-16s TLS\n", "PORT", "STATE", "SERVICE");
        else if (o->cfg.banner)
            printf("%-11s %-9s %-16s BANNER\n", "PORT", "STATE", "SERVICE");
        else
            printf("%-11s %-9s %s\n", "PORT", "STATE", "SERVICE");
        for (size_t p = 0; p < r->nports; p++) {
            if (!shown(o, st[p]))
                continue;
            char port[16];
            snprintf(port, sizeof(port), "%u/tcp", (unsigned)o->cfg.ports[p]);
            const tk_scan_banner *b = st[p] == TK_SCAN_OPEN ? find_banner(r, h, p) : NULL;
            char esc[4 * TK_SCAN_BANNER_MAX + 1] = "";
            if (b)
                escape_banner(b, esc);
            const char *name = svc[p] ? svc[p] : "unknown";
            if (o->cfg.tls) {
                const tk_scan_tls *t = st[p] == TK_SCAN_OPEN ? find_tls(r, h, p) : NULL;
                char note[TK_SCAN_TLS_ERROR_MAX + 32];
                const char *ver = t && t->version[0] ? t->version : "-";
                if (o->cfg.banner)
                    printf("%-11s %-9s %-16s %-8s %s\n", port, tk_scan_state_name(st[p]), name, ver,
                           esc);
                else
                    printf("%-11s %-9s %-16s %s\n", port, tk_scan_state_name(st[p]), name, ver);
                if (tls_note(t, note, sizeof(note)))
                    printf("%-11s %s\n", "", note);
            } else if (o->cfg.banner) {
                printf("%-11s %-9s %-16s %s\n", port, tk_scan_state_name(st[p]), name, esc);
            } else {
                printf("%-11s %-9s %s\n", port, tk_scan_state_name(st[p]), name);
            }
        }
        if (!o->all)
            printf("Not shown: %llu closed, %llu filtered\n", (unsigned long long)c[TK_SCAN_CLOSED],
                   (unsigned long long)c[TK_SCAN_FILTERED]);
    }
    printf("%sScanned %zu host%s x %zu port%s in %.2f s: %llu open, %llu closed, %llu filtered\n",
           reported ? "\n" : "", r->nhosts, r->nhosts == 1 ? "" : "s", r->nports,
           r->nports == 1 ? "" : "s", r->elapsed_s, (unsigned long long)count[TK_SCAN_OPEN],
           (unsigned long long)count[TK_SCAN_CLOSED], (unsigned long long)count[TK_SCAN_FILTERED]);
}

static void print_grepable(const scan_opts *o, const tk_scan_result *r, char **svc)
{
    for (size_t h = 0; h < r->nhosts; h++) {
        char ip[INET6_ADDRSTRLEN];
        printf("Host: %s", host_ip(&o->cfg.hosts[h], ip, sizeof(ip)));
        if (o->cfg.hosts[h].name[0])
            printf(" (%s)", o->cfg.hosts[h].name);
        printf(" Ports:");
        const uint8_t *st = &r->states[h * r->nports];
        int first = 1;
        for (size_t p = 0; p < r->nports; p++) {
            if (!shown(o, st[p]))
                continue;
            printf("%s %u/%s/%s", first ? "" : ",", (unsigned)o->cfg.ports[p],
                   tk_scan_state_name(st[p]), svc[p] ? svc[p] : "");
            if (o->cfg.tls) {
                /* A fourth field: the version, marked when the certificate
                 * did not verify; "none" when no TLS was negotiated. */
                const tk_scan_tls *t = st[p] == TK_SCAN_OPEN ? find_tls(r, h, p) : NULL;
                if (t && t->version[0])
                    printf("/%s%s", t->version, t->verify_error[0] ? "-unverified" : "");
                else
                    printf("/%s", t ? "none" : "");
            }
            first = 0;
        }
        printf("\n");
    }
}

/* {"version","cipher","verified"[,"verify_error"][,"error"]}; version and
 * cipher are null when the handshake failed. */
static json_t *tls_json(const tk_scan_tls *t)
{
    json_t *j = json_object();
    json_object_set_new(j, "version", t->version[0] ? json_string(t->version) : json_null());
    json_object_set_new(j, "cipher", t->cipher[0] ? json_string(t->cipher) : json_null());
    json_object_set_new(j, "verified", json_boolean(t->verified));
    if (t->verify_error[0])
        json_object_set_new(j, "verify_error", json_string(t->verify_error));
    if (t->error[0])
        json_object_set_new(j, "error", json_string(t->error));
    return j;
}

static int print_json(const scan_opts *o, const tk_scan_result *r, char **svc)
{
    json_t *hosts = json_array();
    json_t *doc = json_pack("{s:o,s:I,s:f,s:I,s:I}", "hosts", hosts, "ports_per_host",
                            (json_int_t)r->nports, "elapsed_s", r->elapsed_s, "attempts",
                            (json_int_t)r->attempts, "local_retries", (json_int_t)r->local_retries);
    if (!doc)
        return 1;
    for (size_t h = 0; h < r->nhosts; h++) {
        char ip[INET6_ADDRSTRLEN];
        const tk_scan_host *host = &o->cfg.hosts[h];
        json_t *ports = json_array();
        json_t *jh =
            json_pack("{s:s,s:o}", "address", host_ip(host, ip, sizeof(ip)), "ports", ports);
        if (host->name[0])
            json_object_set_new(jh, "name", json_string(host->name));
        json_array_append_new(hosts, jh);
        const uint8_t *st = &r->states[h * r->nports];
        for (size_t p = 0; p < r->nports; p++) {
            json_t *jp = json_pack("{s:i,s:s}", "port", (int)o->cfg.ports[p], "state",
                                   tk_scan_state_name(st[p]));
            json_object_set_new(jp, "service", svc[p] ? json_string(svc[p]) : json_null());
            const tk_scan_banner *b = st[p] == TK_SCAN_OPEN ? find_banner(r, h, p) : NULL;
            if (b) {
                char esc[4 * TK_SCAN_BANNER_MAX + 1];
                escape_banner(b, esc);
                json_object_set_new(jp, "banner", json_string(esc));
            }
            const tk_scan_tls *t = st[p] == TK_SCAN_OPEN ? find_tls(r, h, p) : NULL;
            if (t)
                json_object_set_new(jp, "tls", tls_json(t));
            json_array_append_new(ports, jp);
        }
    }
    int rc = json_dumpf(doc, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6)) == 0 ? 0 : 1;
    printf("\n");
    json_decref(doc);
    return rc;
}

static void on_progress(const tk_scan_progress *p, void *arg)
{
    (void)arg;
    double pct = p->total ? 100.0 * (double)p->done / (double)p->total : 100.0;
    if (p->done == p->total) {
        fputs("\r\033[K", stderr);
        return;
    }
    char eta[32] = "?";
    if (p->done && p->elapsed_s > 0.2) {
        double left = p->elapsed_s * (double)(p->total - p->done) / (double)p->done;
        snprintf(eta, sizeof(eta), "%.0fs", left);
    }
    fprintf(stderr, "\rscan: %llu/%llu probes (%.1f%%), %llu open, %u in flight, ETA %s\033[K",
            (unsigned long long)p->done, (unsigned long long)p->total, pct,
            (unsigned long long)p->open, p->in_flight, eta);
}

int cmd_scan(int argc, char **argv)
{
    scan_opts o;
    memset(&o, 0, sizeof(o));
    int rc = parse_args(argc, argv, &o);
    if (rc == -1) {
        fputs(usage_text, stdout);
        rc = 0;
        goto out;
    }
    if (rc)
        goto out;
    if (isatty(2))
        o.cfg.progress = on_progress;
    /* A scanner sends nothing the peer could misuse: a certificate that does
     * not verify is reported, and the banner is still read. */
    o.tls.cfg.verify_soft = 1;
    if ((rc = tls_build(&o.tls, "scan", 0, &o.cfg.tls)) != 0)
        goto out;
    if (o.cfg.tls) {
        o.cfg.tls_name = o.tls.server_name;
        if (o.tls_timeout_set)
            o.cfg.tls_timeout_ms = o.tls.cfg.handshake_timeout_ms;
        signal(SIGPIPE, SIG_IGN); /* OpenSSL writes with write(), not MSG_NOSIGNAL */
    }
    tk_scan_result r;
    int err = tk_scan_run(&o.cfg, &r);
    if (err < 0) {
        fprintf(stderr, "tcpkit scan: %s\n", strerror(-err));
        rc = 1;
        goto out;
    }
    char **svc = service_names(o.cfg.ports, o.cfg.nports);
    if (!svc) {
        fprintf(stderr, "tcpkit scan: out of memory\n");
        rc = 1;
    } else if (o.format == OUT_JSON) {
        rc = print_json(&o, &r, svc);
    } else if (o.format == OUT_GREP) {
        print_grepable(&o, &r, svc);
    } else {
        print_table(&o, &r, svc);
    }
    if (r.local_retries && o.format == OUT_TABLE)
        fprintf(stderr,
                "tcpkit scan: %llu attempts redone after local resource errors "
                "(concurrency lowered to %u at worst)\n",
                (unsigned long long)r.local_retries, r.min_concurrency);
    free_names(svc, o.cfg.nports);
    tk_scan_result_free(&r);
    if (fflush(stdout) != 0)
        rc = 1;
out:
    tk_tls_ctx_free(o.cfg.tls);
    free(o.ports);
    tk_scan_targets_free(&o.targets);
    return rc;
}

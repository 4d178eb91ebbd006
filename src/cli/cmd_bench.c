/* tcpkit bench: closed-loop load against a line-echo server, reported as
 * throughput and latency percentiles, in text or as one JSON line. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cli/commands.h"
#include "cli/opts.h"
#include "tcpkit/addr.h"
#include "tcpkit/bench.h"
#include "tcpkit/workers.h"

#define BENCH_MAX_ADDRS 16
/* Longest run -d accepts: one day. */
#define BENCH_MAX_MS (86400u * 1000u)

typedef struct {
    const char *target;
    tk_bench_config cfg;
    int json;
} bench_opts;

static const char usage_text[] =
    "usage: tcpkit bench HOST:PORT [OPTIONS]\n"
    "\n"
    "Closed-loop load for a line-echo server: each connection keeps DEPTH request\n"
    "lines of BYTES bytes in flight and sends one more for every reply line. Reports\n"
    "requests per second and latency percentiles measured after a warm-up of\n"
    "min(1 s, SECS/5) that starts once every connection is up.\n"
    "\n"
    "  -c, --connections N       connections to open (default 50)\n"
    "  -p, --pipeline DEPTH      requests in flight per connection (default 1)\n"
    "  -s, --size BYTES          bytes per request line, newline included (default 64)\n"
    "  -d, --duration SECS       measured time, fractions allowed (default 5)\n"
    "  -t, --threads N           client threads, one event loop each (default: CPU count)\n"
    "      --connect-timeout SECS  per connection, every address tried (default 10)\n"
    "      --json                print one JSON object on one line\n"
    "  -h, --help                this help\n"
    "\n"
    "Exit status: 0 done, 1 no connection made or no request completed, 2 usage error.\n";

static int bad_value(const char *opt, const char *val)
{
    return opt_usage_error("bench", "invalid value '%s' for %s", val, opt);
}

/* A positive duration ("2", "0.5", "500ms") of at most a day. */
static int parse_ms(const char *s, uint32_t *ms)
{
    return tk_parse_duration_ms(s, ms) == 0 && *ms > 0 && *ms <= BENCH_MAX_MS ? 0 : -1;
}

/* Returns 0, the exit status (2) after printing why, or -1 for --help. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    enum { OPT_CONNECT_TIMEOUT = 256, OPT_JSON };
    static const struct option longopts[] = {
        {"connections", required_argument, NULL, 'c'},
        {"pipeline", required_argument, NULL, 'p'},
        {"size", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 't'},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long v;
    int ch;

    tk_bench_config_init(&o->cfg);
    o->cfg.connections = 50;
    o->cfg.threads = tk_cpu_count();
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":c:p:s:d:t:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            if (tk_parse_uint(optarg, 1, TK_BENCH_MAX_CONNECTIONS, &v) < 0)
                return bad_value("-c", optarg);
            o->cfg.connections = (unsigned)v;
            break;
        case 'p':
            if (tk_parse_uint(optarg, 1, TK_BENCH_MAX_PIPELINE, &v) < 0)
                return bad_value("-p", optarg);
            o->cfg.pipeline = (unsigned)v;
            break;
        case 's':
            if (tk_parse_size(optarg, &o->cfg.size) < 0 || o->cfg.size < 2 ||
                o->cfg.size > TK_BENCH_MAX_SIZE)
                return bad_value("-s", optarg);
            break;
        case 'd':
            if (parse_ms(optarg, &o->cfg.duration_ms) < 0)
                return bad_value("-d", optarg);
            break;
        case 't':
            if (tk_parse_uint(optarg, 1, TK_BENCH_MAX_THREADS, &v) < 0)
                return bad_value("-t", optarg);
            o->cfg.threads = (unsigned)v;
            break;
        case OPT_CONNECT_TIMEOUT:
            if (parse_ms(optarg, &o->cfg.connect_timeout_ms) < 0)
                return bad_value("--connect-timeout", optarg);
            break;
        case OPT_JSON: o->json = 1; break;
        case 'h': return -1;
        case ':':
            if (optopt > 0 && optopt < 128)
                return opt_usage_error("bench", "-%c needs a value", optopt);
            return opt_usage_error("bench", "%s needs a value", argv[optind - 1]);
        default:
            if (optopt > 0 && optopt < 128)
                return opt_usage_error("bench", "unknown option '-%c'", optopt);
            return opt_usage_error("bench", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return opt_usage_error("bench", "missing HOST:PORT");
    if (optind < argc - 1)
        return opt_usage_error("bench", "unexpected argument '%s'", argv[optind + 1]);
    o->target = argv[optind];
    return 0;
}

/* Writes s as a JSON string body; addresses are plain ASCII, but a name
 * given on the command line may hold anything. */
static void json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static void print_json(const bench_opts *o, unsigned threads, const tk_bench_result *r)
{
    const tk_bench_config *c = &o->cfg;
    printf("{\"target\":");
    json_string(stdout, o->target);
    printf(",\"connections\":%u,\"pipeline\":%u,\"size\":%zu,\"duration_s\":%.3f,"
           "\"threads\":%u,\"requests\":%llu,\"errors\":%llu,\"rps\":%.1f,\"p50_us\":%llu,"
           "\"p99_us\":%llu,\"p999_us\":%llu,\"max_us\":%llu,\"elapsed_s\":%.3f,"
           "\"bytes_in\":%llu,\"bytes_out\":%llu}\n",
           c->connections, c->pipeline, c->size, c->duration_ms / 1000.0, threads,
           (unsigned long long)r->requests, (unsigned long long)r->errors, r->rps,
           (unsigned long long)r->p50_us, (unsigned long long)r->p99_us,
           (unsigned long long)r->p999_us, (unsigned long long)r->max_us, r->elapsed_s,
           (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out);
}

static void print_text(const bench_opts *o, unsigned threads, const tk_bench_result *r)
{
    const tk_bench_config *c = &o->cfg;
    double mb_out = r->elapsed_s > 0 ? (double)r->bytes_out / r->elapsed_s / 1e6 : 0.0;
    printf("target %s  connections %u  pipeline %u  size %zu B  duration %.1f s  threads %u\n",
           o->target, c->connections, c->pipeline, c->size, c->duration_ms / 1000.0, threads);
    printf("requests %llu  errors %llu", (unsigned long long)r->requests,
           (unsigned long long)r->errors);
    if (r->errors > 0 && r->last_error < 0)
        printf(" (last: %s)", strerror(-r->last_error));
    printf("\n");
    printf("throughput %.0f req/s  (%.1f MB/s out)\n", r->rps, mb_out);
    printf("latency p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n", r->p50_us / 1000.0,
           r->p99_us / 1000.0, r->p999_us / 1000.0, r->max_us / 1000.0);
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o;
    memset(&o, 0, sizeof(o));
    int rc = parse_args(argc, argv, &o);
    if (rc < 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc > 0)
        return rc;

    tk_addr addrs[BENCH_MAX_ADDRS];
    int n = tk_addr_resolve(o.target, AF_UNSPEC, 0, addrs, BENCH_MAX_ADDRS);
    if (n == -EINVAL)
        return opt_usage_error("bench", "bad address '%s' (expected HOST:PORT)", o.target);
    if (n < 0) {
        fprintf(stderr, "tcpkit bench: cannot resolve '%s': %s\n", o.target,
                n == -ENOENT ? "unknown host" : strerror(-n));
        return 1;
    }
    o.cfg.addrs = addrs;
    o.cfg.naddrs = (size_t)n;

    tk_bench_result r;
    int err = tk_bench_run(&o.cfg, &r);
    if (err < 0) {
        fprintf(stderr, "tcpkit bench: %s\n", strerror(-err));
        return 1;
    }
    unsigned threads = o.cfg.threads < o.cfg.connections ? o.cfg.threads : o.cfg.connections;
    if (o.json)
        print_json(&o, threads, &r);
    else
        print_text(&o, threads, &r);
    fflush(stdout);

    if (r.connected == 0) {
        fprintf(stderr, "tcpkit bench: no connection to %s could be made%s%s\n", o.target,
                r.last_error < 0 ? ": " : "", r.last_error < 0 ? strerror(-r.last_error) : "");
        return 1;
    }
    if (r.requests == 0) {
        fprintf(stderr, "tcpkit bench: no request completed\n");
        return 1;
    }
    return 0;
}

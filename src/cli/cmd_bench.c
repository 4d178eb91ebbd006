/* tcpkit bench: closed- or open-loop load against an echo server (line,
 * length-prefixed or JSON requests, or a new connection per request), reported
 * as throughput and latency percentiles, in text or as one JSON line; a search
 * for the highest rate under a p99 target; a progress line on a terminal; an
 * SVG plot of the latency distribution and of throughput over time. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/opts.h"
#include "cli/tls_opts.h"
#include "tcpkit/addr.h"
#include "tcpkit/bench.h"
#include "tcpkit/hist.h"
#include "tcpkit/pool.h"
#include "tcpkit/workers.h"

#define BENCH_MAX_ADDRS 16
/* Longest run -d accepts: one day. */
#define BENCH_MAX_MS (86400u * 1000u)

typedef struct {
    const char *target;
    tk_bench_config cfg;
    int json;
    int duration_set;
    int warmup_set;
    int find_max;
    uint32_t p99_target_ms;
    const char *plot;
    tls_opts tls;
} bench_opts;

/* --find-max-rate: probes of this length, at most this many of them. */
#define FIND_PROBE_MS      2000u
#define FIND_MAX_PROBES    16
#define FIND_START_RATE    1000.0
#define FIND_PRECISION     0.05 /* bisection stops when hi/lo is within 5 % */
#define PLOT_MAX_SECONDS   3600
#define BENCH_MAX_REQUESTS 1000000000000ul

static const char usage_text[] =
    "usage: tcpkit bench HOST:PORT [OPTIONS]\n"
    "\n"
    "Load for an echo server. Closed loop (default): each connection keeps DEPTH\n"
    "requests in flight and sends one more for every reply.\n"
    "Open loop (--rate): requests leave on a fixed schedule and latency counts from\n"
    "the intended send time, so server queueing is not hidden. Reports requests per\n"
    "second and latency percentiles measured after a warm-up of min(1 s, SECS/5)\n"
    "(none with --requests) that starts once every connection is up.\n"
    "\n"
    "  -m, --mode MODE           line (default): request lines of BYTES bytes;\n"
    "                            length: frames [u32 big-endian length][BYTES bytes];\n"
    "                            json: {\"type\":\"ECHO\",\"id\":N,...} lines of BYTES bytes\n"
    "                            (>= 48), reply ids checked;\n"
    "                            connect: a new connection per request line (connect,\n"
    "                            send, read the reply, close); -c at a time;\n"
    "                            chat: fan-out through chat-server --mode json, a\n"
    "                            request is a message of BYTES content bytes, a reply\n"
    "                            its delivery to one receiver\n"
    "      --receivers N         chat: connections in the room that only read (10)\n"
    "      --senders M           chat: connections that send (1); closed loop: one\n"
    "                            message in flight each; -n: N messages in all\n"
    "                            file: a download of --file NAME from file-server\n"
    "                            (protocol version 1) per request\n"
    "      --file NAME           file mode: the file to download\n"
    "  -c, --connections N       connections to open (default 50)\n"
    "  -p, --pipeline DEPTH      requests in flight per connection (default 1)\n"
    "  -s, --size BYTES          bytes per request line, newline included; length mode:\n"
    "                            payload bytes per frame (default 64)\n"
    "  -d, --duration SECS       measured time, fractions allowed (default 5)\n"
    "  -t, --threads N           client threads, one event loop each (default: CPU count)\n"
    "      --connect-timeout SECS  per connection, every address tried (default 10)\n"
    "  -r, --rate R              open loop: R requests per second in total\n"
    "  -n, --requests N          send N requests in all (warm-up included), stop when\n"
    "                            all are answered; -d is then only an upper bound\n"
    "      --warmup SECS         unmeasured time first (0 allowed)\n"
    "      --find-max-rate       search the highest --rate whose p99 stays under --p99\n"
    "      --p99 DURATION        the p99 target for --find-max-rate (e.g. 5ms)\n"
    "      --plot FILE.svg       draw the latency distribution and throughput per second\n"
    "      --json                print one JSON object on one line\n"
    "  -h, --help                this help\n"
    "\n"
    "TLS: every connection does a handshake once connected (connect mode: one per\n"
    "request, so it measures handshakes per second), then requests go through it.\n" TLS_CLIENT_HELP
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

static const char *const mode_names[] = {
    [TK_BENCH_LINE] = "line",       [TK_BENCH_LENGTH] = "length", [TK_BENCH_JSON] = "json",
    [TK_BENCH_CONNECT] = "connect", [TK_BENCH_CHAT] = "chat",     [TK_BENCH_FILE] = "file",
};

static int parse_mode(const char *s, tk_bench_mode *mode)
{
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++) {
        if (strcmp(s, mode_names[i]) == 0) {
            *mode = (tk_bench_mode)i;
            return 0;
        }
    }
    return -1;
}

/* Returns 0, the exit status (2) after printing why, or -1 for --help. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    enum {
        OPT_CONNECT_TIMEOUT = 256,
        OPT_JSON,
        OPT_WARMUP,
        OPT_FIND,
        OPT_P99,
        OPT_PLOT,
        OPT_RECEIVERS,
        OPT_SENDERS,
        OPT_FILE
    };
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"connections", required_argument, NULL, 'c'},
        {"pipeline", required_argument, NULL, 'p'},
        {"size", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'},
        {"threads", required_argument, NULL, 't'},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"json", no_argument, NULL, OPT_JSON},
        {"rate", required_argument, NULL, 'r'},
        {"requests", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"find-max-rate", no_argument, NULL, OPT_FIND},
        {"p99", required_argument, NULL, OPT_P99},
        {"plot", required_argument, NULL, OPT_PLOT},
        {"receivers", required_argument, NULL, OPT_RECEIVERS},
        {"senders", required_argument, NULL, OPT_SENDERS},
        {"file", required_argument, NULL, OPT_FILE},
        TLS_CLIENT_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    unsigned long v;
    int ch;

    tk_bench_config_init(&o->cfg);
    tls_opts_init(&o->tls);
    o->cfg.connections = 50;
    o->cfg.threads = tk_cpu_count();
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":m:c:p:s:d:t:r:n:h", longopts, NULL)) != -1) {
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
        case 'm':
            if (parse_mode(optarg, &o->cfg.mode) < 0)
                return bad_value("--mode", optarg);
            break;
        case 's':
            if (tk_parse_size(optarg, &o->cfg.size) < 0 || o->cfg.size > TK_BENCH_MAX_SIZE)
                return bad_value("-s", optarg);
            break;
        case 'd':
            if (parse_ms(optarg, &o->cfg.duration_ms) < 0)
                return bad_value("-d", optarg);
            o->duration_set = 1;
            break;
        case 'r': {
            char *end;
            errno = 0;
            double r = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(r > 0.0) || r > TK_BENCH_MAX_RATE)
                return bad_value("--rate", optarg);
            o->cfg.rate = r;
            break;
        }
        case 'n': {
            unsigned long n;
            if (tk_parse_uint(optarg, 1, BENCH_MAX_REQUESTS, &n) < 0)
                return bad_value("--requests", optarg);
            o->cfg.requests = n;
            break;
        }
        case OPT_WARMUP:
            if (tk_parse_duration_ms(optarg, &o->cfg.warmup_ms) < 0 ||
                o->cfg.warmup_ms > BENCH_MAX_MS)
                return bad_value("--warmup", optarg);
            o->warmup_set = 1;
            break;
        case OPT_FIND: o->find_max = 1; break;
        case OPT_P99:
            if (parse_ms(optarg, &o->p99_target_ms) < 0)
                return bad_value("--p99", optarg);
            break;
        case OPT_PLOT: o->plot = optarg; break;
        case OPT_FILE:
            if (!*optarg || strlen(optarg) > TK_BENCH_MAX_FILE_NAME)
                return bad_value("--file", optarg);
            o->cfg.file = optarg;
            break;
        case OPT_RECEIVERS:
            if (tk_parse_uint(optarg, 1, TK_BENCH_MAX_CONNECTIONS, &v) < 0)
                return bad_value("--receivers", optarg);
            o->cfg.receivers = (unsigned)v;
            break;
        case OPT_SENDERS:
            if (tk_parse_uint(optarg, 1, TK_BENCH_MAX_CONNECTIONS, &v) < 0)
                return bad_value("--senders", optarg);
            o->cfg.senders = (unsigned)v;
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
        default: {
            int rc = tls_option(&o->tls, "bench", ch, optarg);
            if (rc >= 0) {
                if (rc)
                    return rc;
                break;
            }
            if (optopt > 0 && optopt < 128)
                return opt_usage_error("bench", "unknown option '-%c'", optopt);
            return opt_usage_error("bench", "unknown option '%s'", argv[optind - 1]);
        }
        }
    }
    if (optind >= argc)
        return opt_usage_error("bench", "missing HOST:PORT");
    if (optind < argc - 1)
        return opt_usage_error("bench", "unexpected argument '%s'", argv[optind + 1]);
    o->target = argv[optind];
    if (o->cfg.mode == TK_BENCH_JSON && o->cfg.size < TK_BENCH_JSON_MIN_SIZE)
        return opt_usage_error("bench", "--mode json needs -s %u or more", TK_BENCH_JSON_MIN_SIZE);
    if (o->cfg.mode != TK_BENCH_LENGTH && o->cfg.size < 2)
        return opt_usage_error("bench", "-s must be 2 or more (a byte and the newline)");
    if ((o->cfg.mode == TK_BENCH_FILE) != (o->cfg.file != NULL))
        return opt_usage_error("bench", "--mode file and --file NAME go together");
    if (o->find_max && o->p99_target_ms == 0)
        return opt_usage_error("bench", "--find-max-rate needs --p99 DURATION");
    if (!o->find_max && o->p99_target_ms)
        return opt_usage_error("bench", "--p99 only goes with --find-max-rate");
    if (o->find_max && (o->cfg.rate > 0 || o->cfg.requests))
        return opt_usage_error("bench", "--find-max-rate chooses the rate; drop --rate/--requests");
    if (o->cfg.requests && !o->duration_set)
        o->cfg.duration_ms = BENCH_MAX_MS;
    if (o->cfg.requests && !o->warmup_set)
        o->cfg.warmup_ms = 0;
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

/* Microseconds as milliseconds with three decimals: microsecond precision. */
static void print_ms(FILE *out, const char *name, uint64_t us)
{
    if (us >= TK_HDR_CEILING && us != UINT64_MAX)
        fprintf(out, "  %s >=%llu.%03llu ms", name, (unsigned long long)(us / 1000),
                (unsigned long long)(us % 1000));
    else
        fprintf(out, "  %s %llu.%03llu ms", name, (unsigned long long)(us / 1000),
                (unsigned long long)(us % 1000));
}

static void print_json(const bench_opts *o, unsigned threads, const tk_bench_result *r)
{
    const tk_bench_config *c = &o->cfg;
    printf("{\"target\":");
    json_string(stdout, o->target);
    printf(",\"request_mode\":\"%s\",\"connected\":%llu,\"timeouts\":%llu", mode_names[c->mode],
           (unsigned long long)r->connected, (unsigned long long)r->timeouts);
    printf(",\"mode\":\"%s\",\"rate\":%.1f,\"connections\":%u,\"pipeline\":%u,\"size\":%zu,"
           "\"duration_s\":%.3f,\"threads\":%u,\"requests\":%llu,\"sent\":%llu,"
           "\"received\":%llu,\"sent_measured\":%llu,\"errors\":%llu,\"rps\":%.1f,"
           "\"min_us\":%llu,\"mean_us\":%.1f,\"p50_us\":%llu,\"p90_us\":%llu,\"p99_us\":%llu,"
           "\"p999_us\":%llu,\"max_us\":%llu,\"elapsed_s\":%.3f,\"bytes_in\":%llu,"
           "\"bytes_out\":%llu",
           c->rate > 0 ? "open" : "closed", c->rate, c->connections, c->pipeline, c->size,
           c->duration_ms / 1000.0, threads, (unsigned long long)r->requests,
           (unsigned long long)r->sent, (unsigned long long)r->received,
           (unsigned long long)r->sent_measured, (unsigned long long)r->errors, r->rps,
           (unsigned long long)r->min_us, r->mean_us, (unsigned long long)r->p50_us,
           (unsigned long long)r->p90_us, (unsigned long long)r->p99_us,
           (unsigned long long)r->p999_us, (unsigned long long)r->max_us, r->elapsed_s,
           (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out);
    if (c->mode == TK_BENCH_FILE) {
        printf(",\"file\":");
        json_string(stdout, c->file);
        printf(",\"file_bytes\":%llu,\"mb_in_per_s\":%.3f", (unsigned long long)r->file_bytes,
               r->elapsed_s > 0 ? (double)r->bytes_in / r->elapsed_s / 1e6 : 0.0);
    }
    if (c->tls) {
        printf(",\"tls_version\":");
        if (r->tls_version[0])
            json_string(stdout, r->tls_version);
        else
            printf("null");
        printf(",\"tls_failures\":%llu,\"tls_error\":", (unsigned long long)r->tls_failures);
        if (r->tls_error[0])
            json_string(stdout, r->tls_error);
        else
            printf("null");
    }
    if (c->mode == TK_BENCH_CHAT)
        printf(",\"receivers\":%u,\"senders\":%u,\"deliveries\":%llu,"
               "\"per_receiver_min\":%llu,\"per_receiver_max\":%llu",
               c->receivers, c->senders, (unsigned long long)r->received,
               (unsigned long long)r->per_receiver_min, (unsigned long long)r->per_receiver_max);
    printf("}\n");
}

static void print_text(const bench_opts *o, unsigned threads, const tk_bench_result *r)
{
    const tk_bench_config *c = &o->cfg;
    double mb_out = r->elapsed_s > 0 ? (double)r->bytes_out / r->elapsed_s / 1e6 : 0.0;
    printf("target %s  mode %s  connections %u  pipeline %u  size %zu B  duration %.1f s  "
           "threads %u\n",
           o->target, mode_names[c->mode], c->connections, c->pipeline, c->size,
           c->duration_ms / 1000.0, threads);
    if (c->rate > 0)
        printf("open loop at %.1f req/s (latency from the intended send time)\n", c->rate);
    if (c->tls) {
        printf("tls %s", r->tls_version[0] ? r->tls_version : "(no handshake completed)");
        if (r->tls_failures > 0)
            printf("  handshakes failed %llu", (unsigned long long)r->tls_failures);
        printf("\n");
    }
    printf("requests %llu  errors %llu", (unsigned long long)r->requests,
           (unsigned long long)r->errors);
    if (r->errors > 0 && r->last_error < 0)
        printf(" (last: %s)", strerror(-r->last_error));
    printf("  (whole run: sent %llu, received %llu", (unsigned long long)r->sent,
           (unsigned long long)r->received);
    if (r->timeouts > 0)
        printf(", unanswered at the end %llu", (unsigned long long)r->timeouts);
    printf(")\n");
    if (c->mode == TK_BENCH_CHAT)
        printf("chat: %u receivers, %u senders  messages sent %llu  deliveries %llu "
               "(per receiver %llu to %llu)\n",
               c->receivers, c->senders, (unsigned long long)r->sent,
               (unsigned long long)r->received, (unsigned long long)r->per_receiver_min,
               (unsigned long long)r->per_receiver_max);
    if (c->mode == TK_BENCH_CONNECT)
        printf("connections %llu (whole run)  %.0f connections/s with a request each\n",
               (unsigned long long)r->connected, r->rps);
    if (c->mode == TK_BENCH_FILE)
        printf("throughput %.0f downloads/s  (%.1f MB/s in; file bytes %llu, whole run)\n", r->rps,
               r->elapsed_s > 0 ? (double)r->bytes_in / r->elapsed_s / 1e6 : 0.0,
               (unsigned long long)r->file_bytes);
    else
        printf("throughput %.0f req/s  (%.1f MB/s out)\n", r->rps, mb_out);
    printf("latency");
    print_ms(stdout, "p50", r->p50_us);
    print_ms(stdout, "p90", r->p90_us);
    print_ms(stdout, "p99", r->p99_us);
    print_ms(stdout, "p99.9", r->p999_us);
    print_ms(stdout, "max", r->max_us);
    printf("\n");
    printf("       ");
    print_ms(stdout, "min", r->min_us);
    printf("  mean %.3f ms\n", r->mean_us / 1000.0);
}

/* The progress line: rewritten in place on a terminal, once a second. */
typedef struct {
    const tk_bench_config *cfg;
    int shown;
} progress_state;

static void on_progress(void *arg, uint64_t replies, double elapsed_s)
{
    progress_state *p = arg;
    double rps = elapsed_s > 0 ? (double)replies / elapsed_s : 0.0;
    if (p->cfg->requests)
        fprintf(stderr, "\r\033[K%.0f req/s  %llu replies  elapsed %.0f s", rps,
                (unsigned long long)replies, elapsed_s);
    else
        fprintf(stderr, "\r\033[K%.0f req/s  %llu replies  elapsed %.0f s  remaining %.0f s", rps,
                (unsigned long long)replies, elapsed_s, p->cfg->duration_ms / 1000.0 - elapsed_s);
    fflush(stderr);
    p->shown = 1;
}

/* One run with the options' config; a progress line if stderr is a terminal. */
static int run_once(bench_opts *o, tk_bench_result *r, int progress)
{
    progress_state ps = {&o->cfg, 0};
    if (progress && isatty(STDERR_FILENO)) {
        o->cfg.progress = on_progress;
        o->cfg.progress_arg = &ps;
    }
    int err = tk_bench_run(&o->cfg, r);
    o->cfg.progress = NULL;
    if (ps.shown)
        fputs("\r\033[K", stderr);
    return err;
}

/* Searches the highest open-loop rate whose p99 stays under the target:
 * doubling from FIND_START_RATE until a probe fails, then bisection until the
 * bounds are within FIND_PRECISION; at most FIND_MAX_PROBES probes of
 * FIND_PROBE_MS each (plus warm-up), so the search ends in bounded time. */
static int find_max_rate_probes(bench_opts *o)
{
    double lo = 0.0, hi = 0.0, rate = FIND_START_RATE;
    uint64_t target_us = (uint64_t)o->p99_target_ms * 1000;
    tk_bench_result r, best;
    memset(&best, 0, sizeof(best));
    int have_best = 0;

    if (!o->duration_set)
        o->cfg.duration_ms = FIND_PROBE_MS;
    if (!o->warmup_set)
        o->cfg.warmup_ms = 500;
    for (int probe = 1; probe <= FIND_MAX_PROBES; probe++) {
        o->cfg.rate = rate;
        int err = run_once(o, &r, 0);
        if (err < 0) {
            fprintf(stderr, "tcpkit bench: %s\n", strerror(-err));
            return 1;
        }
        if (r.connected == 0) {
            fprintf(stderr, "tcpkit bench: no connection to %s could be made%s%s\n", o->target,
                    r.tls_error[0] ? ": tls: " : "", r.tls_error);
            return 1;
        }
        /* A rate passes if its p99 is under target, it lost nothing and the
         * server kept up with the schedule (replies >= 95 % of requests due). */
        int ok = r.requests > 0 && r.p99_us <= target_us && r.errors == 0 &&
                 (double)r.requests >= 0.95 * (double)r.sent_measured;
        printf("probe %d: rate %.0f req/s  achieved %.0f req/s  p99 %.3f ms  %s\n", probe, rate,
               r.rps, r.p99_us / 1000.0, ok ? "ok" : "over");
        fflush(stdout);
        if (ok) {
            lo = rate;
            best = r;
            have_best = 1;
        } else {
            hi = rate;
        }
        if (hi == 0.0)
            rate = rate * 2 > TK_BENCH_MAX_RATE ? TK_BENCH_MAX_RATE : rate * 2;
        else if (lo == 0.0)
            rate = hi / 2; /* even the start rate failed: go down */
        else
            rate = (lo + hi) / 2;
        if (hi > 0.0 && lo > 0.0 && hi / lo <= 1.0 + FIND_PRECISION)
            break;
        if (hi > 0.0 && hi < 1.0)
            break;
        if (lo >= TK_BENCH_MAX_RATE)
            break;
    }
    if (!have_best) {
        printf("max rate: none found (p99 over %.3f ms even at %.0f req/s)\n",
               o->p99_target_ms / 1.0, hi);
        return 1;
    }
    if (o->json)
        printf("{\"max_rate\":%.0f,\"p99_target_us\":%llu,\"p99_us\":%llu,\"rps\":%.1f}\n", lo,
               (unsigned long long)target_us, (unsigned long long)best.p99_us, best.rps);
    else
        printf("max rate: %.0f req/s with p99 %.3f ms (target %.3f ms)\n", lo, best.p99_us / 1000.0,
               target_us / 1000.0);
    return 0;
}

/* --find-max-rate: the probes share one pool of connections, so the server
 * sees -c connections in all, not a new set per probe. */
static int find_max_rate(bench_opts *o)
{
    tk_pool *pool = NULL;
    if (o->cfg.mode != TK_BENCH_CONNECT && o->cfg.mode != TK_BENCH_CHAT) {
        tk_pool_config pc;
        tk_pool_config_init(&pc);
        pc.addrs = o->cfg.addrs;
        pc.naddrs = o->cfg.naddrs;
        pc.max_size = o->cfg.connections;
        pc.connect_timeout_ms = o->cfg.connect_timeout_ms;
        int err = tk_pool_new(&pc, &pool);
        if (err < 0) {
            fprintf(stderr, "tcpkit bench: %s\n", strerror(-err));
            return 1;
        }
    }
    o->cfg.pool = pool;
    int rc = find_max_rate_probes(o);
    o->cfg.pool = NULL;
    tk_pool_free(pool);
    return rc;
}

/* The SVG plot: on the left, latency against percentile on a log axis
 * (x = 1/(1 - q): 0 %, 90 %, 99 %, 99.9 %...), as HdrHistogram plots do; on the
 * right, replies in each second of the window. Hand-written, no library. */
#define PLOT_W  480
#define PLOT_H  300
#define PLOT_M  50 /* margin around each chart */
#define PLOT_NQ 60 /* points on the percentile curve */

static void svg_axes(FILE *f, int x0, const char *title, const char *xlabel, const char *ylabel)
{
    fprintf(f, "<g class=\"chart\" transform=\"translate(%d,0)\">\n", x0);
    fprintf(f, "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n",
            PLOT_M + PLOT_W / 2, title);
    fprintf(f,
            "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n"
            "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n",
            PLOT_M, PLOT_M + PLOT_H, PLOT_M + PLOT_W, PLOT_M + PLOT_H, PLOT_M, PLOT_M, PLOT_M,
            PLOT_M + PLOT_H);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n",
            PLOT_M + PLOT_W / 2, PLOT_M + PLOT_H + 40, xlabel);
    fprintf(f,
            "<text x=\"12\" y=\"%d\" text-anchor=\"middle\" font-size=\"12\" "
            "transform=\"rotate(-90 12 %d)\">%s</text>\n",
            PLOT_M + PLOT_H / 2, PLOT_M + PLOT_H / 2, ylabel);
}

static void svg_latency(FILE *f, const tk_hdr *h)
{
    /* x = log10(1/(1-q)) from 0 to the last decade the sample count supports. */
    double decades = 1.0;
    while (decades < 6.0 && (double)h->total >= 10.0 * __builtin_pow(10.0, decades))
        decades += 1.0;
    double ymax_ms = (double)(h->max ? h->max : 1) / 1000.0 * 1.05;

    svg_axes(f, 0, "Latency by percentile", "percentile", "latency (ms)");
    for (int d = 0; d <= (int)decades; d++) {
        double x = PLOT_M + PLOT_W * d / decades;
        static const char *labels[] = {"0%",     "90%",     "99%",     "99.9%",
                                       "99.99%", "99.999%", "99.9999%"};
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"10\">%s</text>\n",
                x, PLOT_M + PLOT_H + 15, labels[d]);
    }
    for (int t = 0; t <= 4; t++) {
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"10\">%.3f</text>\n",
                PLOT_M - 4, PLOT_M + PLOT_H - PLOT_H * t / 4.0 + 3, ymax_ms * t / 4);
    }
    fprintf(f, "<polyline class=\"percentiles\" fill=\"none\" stroke=\"#1f77b4\" "
               "stroke-width=\"2\" points=\"");
    for (int i = 0; i <= PLOT_NQ; i++) {
        double xd = decades * i / PLOT_NQ;
        double q = 1.0 - __builtin_pow(10.0, -xd);
        double v = (double)tk_hdr_quantile(h, i == PLOT_NQ ? 1.0 : q) / 1000.0;
        fprintf(f, "%.1f,%.1f ", PLOT_M + PLOT_W * xd / decades,
                PLOT_M + PLOT_H - PLOT_H * v / ymax_ms);
    }
    fprintf(f, "\"/>\n</g>\n");
}

static void svg_throughput(FILE *f, const uint64_t *per_sec, size_t n)
{
    uint64_t ymax = 1;
    for (size_t i = 0; i < n; i++)
        if (per_sec[i] > ymax)
            ymax = per_sec[i];
    svg_axes(f, PLOT_W + 2 * PLOT_M, "Throughput", "second of the measured window",
             "replies per second");
    for (int t = 0; t <= 4; t++)
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" font-size=\"10\">%.0f</text>\n",
                PLOT_M - 4, PLOT_M + PLOT_H - PLOT_H * t / 4.0 + 3, (double)ymax * t / 4);
    double bw = n ? (double)PLOT_W / (double)n : PLOT_W;
    for (size_t i = 0; i < n; i++) {
        double hgt = PLOT_H * (double)per_sec[i] / (double)ymax;
        fprintf(f,
                "<rect class=\"second\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                "fill=\"#ff7f0e\"><title>second %zu: %llu</title></rect>\n",
                PLOT_M + bw * (double)i + 1, PLOT_M + PLOT_H - hgt, bw > 2 ? bw - 2 : bw, hgt,
                i + 1, (unsigned long long)per_sec[i]);
    }
    fprintf(f, "</g>\n");
}

/* Returns 0, or -1 with errno set. */
static int write_plot(const char *path, const bench_opts *o, const tk_hdr *h,
                      const uint64_t *per_sec, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\">\n<title>tcpkit bench ",
            2 * (PLOT_W + 2 * PLOT_M), PLOT_H + 2 * PLOT_M + 20);
    for (const char *p = o->target; *p; p++) {
        if (*p == '<')
            fputs("&lt;", f);
        else if (*p == '&')
            fputs("&amp;", f);
        else
            fputc(*p, f);
    }
    fprintf(f, "</title>\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    svg_latency(f, h);
    svg_throughput(f, per_sec, n);
    fprintf(f, "</svg>\n");
    if (ferror(f)) {
        int e = errno ? errno : EIO;
        fclose(f);
        errno = e;
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* After a run: the first failed handshake's reason, once. */
static void report_tls(const bench_opts *o, const tk_bench_result *r)
{
    if (r->connected == 0) {
        fprintf(stderr, "tcpkit bench: no connection to %s could be made", o->target);
        if (r->tls_error[0])
            fprintf(stderr, ": tls: %s\n", r->tls_error);
        else if (r->last_error < 0)
            fprintf(stderr, ": %s\n", strerror(-r->last_error));
        else
            fprintf(stderr, "\n");
    } else if (r->tls_error[0]) {
        fprintf(stderr, "tcpkit bench: tls: %s (%llu handshake%s failed)\n", r->tls_error,
                (unsigned long long)r->tls_failures, r->tls_failures == 1 ? "" : "s");
    }
}

/* Resolves the target and runs the benchmark (or the rate search). */
static int bench_main(bench_opts *o)
{
    tk_addr addrs[BENCH_MAX_ADDRS];
    int n = tk_addr_resolve(o->target, AF_UNSPEC, 0, addrs, BENCH_MAX_ADDRS);
    if (n == -EINVAL)
        return opt_usage_error("bench", "bad address '%s' (expected HOST:PORT)", o->target);
    if (n < 0) {
        fprintf(stderr, "tcpkit bench: cannot resolve '%s': %s\n", o->target,
                n == -ENOENT ? "unknown host" : strerror(-n));
        return 1;
    }
    o->cfg.addrs = addrs;
    o->cfg.naddrs = (size_t)n;
    if (o->find_max)
        return find_max_rate(o);

    tk_hdr *hist = NULL;
    uint64_t *per_sec = NULL;
    if (o->plot) {
        hist = malloc(sizeof(*hist));
        per_sec = calloc(PLOT_MAX_SECONDS, sizeof(*per_sec));
        if (!hist || !per_sec) {
            free(hist);
            free(per_sec);
            fprintf(stderr, "tcpkit bench: %s\n", strerror(ENOMEM));
            return 1;
        }
        o->cfg.hist_out = hist;
        o->cfg.per_sec = per_sec;
        o->cfg.per_sec_cap = PLOT_MAX_SECONDS;
    }

    tk_bench_result r;
    int err = run_once(o, &r, 1);
    if (err < 0) {
        fprintf(stderr, "tcpkit bench: %s\n", strerror(-err));
        free(hist);
        free(per_sec);
        return 1;
    }
    unsigned threads = o->cfg.threads < o->cfg.connections ? o->cfg.threads : o->cfg.connections;
    if (o->cfg.mode == TK_BENCH_CHAT) {
        threads = 1; /* one thread drives every chat connection */
        o->cfg.connections = o->cfg.receivers + o->cfg.senders;
    }
    if (o->json)
        print_json(o, threads, &r);
    else
        print_text(o, threads, &r);
    fflush(stdout);
    int rc = 0;
    if (o->plot && write_plot(o->plot, o, hist, per_sec, r.per_sec_n) < 0) {
        fprintf(stderr, "tcpkit bench: cannot write %s: %s\n", o->plot, strerror(errno));
        rc = 1;
    }
    free(hist);
    free(per_sec);

    report_tls(o, &r);
    if (r.connected == 0)
        return 1;
    if (r.requests == 0) {
        if (r.sent > 0 && r.received == 0)
            fprintf(stderr,
                    "tcpkit bench: no request completed (%llu sent, no reply: does the server "
                    "speak --mode %s?)\n",
                    (unsigned long long)r.sent, mode_names[o->cfg.mode]);
        else
            fprintf(stderr, "tcpkit bench: no request completed\n");
        return 1;
    }
    return rc;
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
    char name[TK_HOST_MAX];
    if ((rc = tls_build(&o.tls, "bench", 0, &o.cfg.tls)) != 0)
        return rc;
    if (o.cfg.tls) {
        o.cfg.tls_name = tls_peer_name(&o.tls, o.target, name);
        signal(SIGPIPE, SIG_IGN); /* OpenSSL writes with write(), not MSG_NOSIGNAL */
    }
    rc = bench_main(&o);
    tk_tls_ctx_free(o.cfg.tls);
    return rc;
}

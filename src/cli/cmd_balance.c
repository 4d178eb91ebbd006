/* tcpkit balance: the load balancer in the foreground, with its settings
 * from the command line and an optional configuration file, re-read on
 * SIGHUP. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/opts.h"
#include "cli/run.h"
#include "cli/server_opts.h"
#include "tcpkit/balance.h"
#include "tcpkit/log.h"

#define CMD             "balance"
#define MAX_CONFIG_SIZE (1024 * 1024)

static const char usage_text[] =
    "usage: tcpkit balance [OPTIONS]\n"
    "\n"
    "Relays TCP clients to a set of backends: weighted algorithms, active health\n"
    "checks, retries on other backends, per-backend limits with a queue, PROXY\n"
    "protocol, zero-copy relaying, TLS termination, SIGHUP reload, SIGTERM drain,\n"
    "live stats.\n"
    "\n"
    "  -l, --listen ADDR          address to accept clients on, repeatable\n"
    "                             (default 127.0.0.1:8090)\n"
    "  -b, --backend SPEC         HOST:PORT[,weight=N][,maxconn=N][,backup][,proxy=V]\n"
    "                             repeatable; weight 0..1000 (default 1, 0: no new\n"
    "                             clients); maxconn 0: no limit; V is v1, v2 or none\n"
    "  -a, --algo ALGO            roundrobin (default, smooth weighted), leastconn,\n"
    "                             random (two choices), source (consistent hashing of\n"
    "                             the client address), first\n"
    "  -c, --config FILE          read settings from FILE (\"name value\" per line, the\n"
    "                             same names as these options); SIGHUP re-reads it\n"
    "      --stats ADDR           serve live state as text or JSON on ADDR\n"
    "      --send-proxy V         PROXY protocol header to every backend: v1, v2, none\n"
    "      --connect-timeout T    one connection attempt (default 2s)\n"
    "      --connect-budget T     all attempts for one client together (default 6s)\n"
    "      --retries N            attempts on other backends after the first (default 3)\n"
    "      --first-byte-timeout T backend silent this long after the client's first\n"
    "                             bytes counts as failed; the client is retried on\n"
    "                             another backend (default 0: off)\n"
    "      --replay-buffer BYTES  client bytes kept for such a retry (default 16K)\n"
    "      --queue N              clients that may wait for a slot when every backend\n"
    "                             is at maxconn (default 1024; 0: refuse at once)\n"
    "      --queue-timeout T      longest wait in the queue (default 5s)\n"
    "      --client-timeout T     close when the client side is silent both ways this\n"
    "                             long (default 0: never)\n"
    "      --backend-timeout T    the same for the backend side (default 0: never)\n"
    "      --pipe-size BYTES      kernel pipe per direction (default 64K)\n"
    "      --keepalive IDLE[,INTVL[,COUNT]]  TCP keepalive on both sides\n"
    "                             (default 60,10,6; 0: off)\n"
    "      --check-interval T     time between health checks (default 2s; 0: none)\n"
    "      --check-timeout T      one health check (default 1s)\n"
    "      --check-send STRING    send this after connecting (C escapes: \\r \\n \\xHH)\n"
    "      --check-expect STRING  the reply must start with this (default: connecting\n"
    "                             is enough)\n"
    "      --rise N               passed checks that bring a backend up (default 2)\n"
    "      --fall N               failures that take a backend down (default 3)\n"
    "      --tls-cert FILE        clients speak TLS: this PEM certificate chain (with\n"
    "                             --tls-key); backends stay plain; SIGHUP reads the\n"
    "                             files again (new clients get the new certificate)\n"
    "      --tls-key FILE         the certificate's PEM private key\n"
    "      --tls-client-ca FILE   require client certificates signed by these CAs\n"
    "      --tls-handshake-timeout T  close clients whose handshake takes longer\n"
    "                             (default 10s)\n"
    "      --tls-min-version V    1.2 (default) or 1.3\n"
    "      --max-clients N        client connections at once (default 0: no limit)\n"
    "  -t, --threads N            event loops, one per thread (default: CPU count)\n"
    "      --drain-timeout T      on SIGTERM, time connections get to finish (default 30s)\n"
    "      --log-level LEVEL      debug, info (default), warn, error, off\n"
    "      --log-format FORMAT    text (default) or json\n"
    "  -h, --help                 this help\n"
    "\n" SERVER_OPTS_HELP
    "  (These apply to the client listeners and the stats listener alike; they are\n"
    "  command-line options only, not configuration-file settings, and a SIGHUP\n"
    "  reload keeps them.)\n"
    "\n"
    "Durations take a unit: 500ms, 2s, 1m (a bare number is seconds).\n";

enum { OPT_CONFIG = 1000, OPT_LOG_LEVEL, OPT_LOG_FORMAT, OPT_SETTING };

/* Every setting is passed to tk_balance_config_set under its long name. */
static const struct option longopts[] = {
    {"listen", required_argument, NULL, 'l'},
    {"backend", required_argument, NULL, 'b'},
    {"algo", required_argument, NULL, 'a'},
    {"threads", required_argument, NULL, 't'},
    {"config", required_argument, NULL, 'c'},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"help", no_argument, NULL, 'h'},
    SERVER_OPTS_LONGOPTS,
    {"stats", required_argument, NULL, OPT_SETTING},
    {"send-proxy", required_argument, NULL, OPT_SETTING},
    {"connect-timeout", required_argument, NULL, OPT_SETTING},
    {"connect-budget", required_argument, NULL, OPT_SETTING},
    {"retries", required_argument, NULL, OPT_SETTING},
    {"first-byte-timeout", required_argument, NULL, OPT_SETTING},
    {"replay-buffer", required_argument, NULL, OPT_SETTING},
    {"queue", required_argument, NULL, OPT_SETTING},
    {"queue-timeout", required_argument, NULL, OPT_SETTING},
    {"client-timeout", required_argument, NULL, OPT_SETTING},
    {"backend-timeout", required_argument, NULL, OPT_SETTING},
    {"pipe-size", required_argument, NULL, OPT_SETTING},
    {"keepalive", required_argument, NULL, OPT_SETTING},
    {"check-interval", required_argument, NULL, OPT_SETTING},
    {"check-timeout", required_argument, NULL, OPT_SETTING},
    {"check-send", required_argument, NULL, OPT_SETTING},
    {"check-expect", required_argument, NULL, OPT_SETTING},
    {"rise", required_argument, NULL, OPT_SETTING},
    {"fall", required_argument, NULL, OPT_SETTING},
    {"tls-cert", required_argument, NULL, OPT_SETTING},
    {"tls-key", required_argument, NULL, OPT_SETTING},
    {"tls-client-ca", required_argument, NULL, OPT_SETTING},
    {"tls-handshake-timeout", required_argument, NULL, OPT_SETTING},
    {"tls-min-version", required_argument, NULL, OPT_SETTING},
    {"max-clients", required_argument, NULL, OPT_SETTING},
    {"drain-timeout", required_argument, NULL, OPT_SETTING},
    {NULL, 0, NULL, 0},
};

/* What the command line said, kept to build the settings again on SIGHUP. */
typedef struct {
    int argc;
    char **argv;
    const char *config;
    const char *log_level, *log_format;
    server_opts so; /* access, limits, --user: command line only */
    tk_balance *bal;
} balance_cli;

/* Reads the configuration file into a NUL-terminated string. */
static char *read_config(const char *path, size_t *len, char *err, size_t errcap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *text = NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errcap, "%s: not a regular file", path);
    } else if (st.st_size > MAX_CONFIG_SIZE) {
        snprintf(err, errcap, "%s: larger than %d bytes", path, MAX_CONFIG_SIZE);
    } else if ((text = malloc((size_t)st.st_size + 1))) {
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t n = read(fd, text + got, (size_t)st.st_size - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        if (got < (size_t)st.st_size) {
            /* Never apply half a file: it shrank or failed while being read. */
            snprintf(err, errcap, "%s: %s", path,
                     got ? "changed while being read" : strerror(errno ? errno : EIO));
            free(text);
            text = NULL;
        } else {
            text[got] = 0;
            *len = got;
        }
    } else {
        snprintf(err, errcap, "out of memory");
    }
    close(fd);
    return text;
}

/* Builds the settings: defaults, then the file, then the command line in
 * order. Returns 0, or 2 for a usage error and 1 for a file error (with the
 * message in err). */
static int build_config(balance_cli *cli, tk_balance_config *c, char *err, size_t errcap)
{
    tk_balance_config_init(c);
    if (cli->config) {
        size_t len = 0;
        char *text = read_config(cli->config, &len, err, errcap);
        if (!text)
            return 1;
        char msg[512];
        int rc = tk_balance_config_parse(c, text, len, msg, sizeof(msg));
        free(text);
        if (rc < 0) {
            snprintf(err, errcap, "%s: %s", cli->config, msg);
            return 1;
        }
    }
    int ch, index;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(cli->argc, cli->argv, "l:b:a:t:c:h", longopts, &index)) != -1) {
        const char *name;
        switch (ch) {
        case 'l': name = "listen"; break;
        case 'b': name = "backend"; break;
        case 'a': name = "algo"; break;
        case 't': name = "threads"; break;
        case OPT_SETTING: name = longopts[index].name; break;
        default: continue; /* checked once already by main */
        }
        if (tk_balance_config_set(c, name, optarg, err, errcap) < 0)
            return 2;
    }
    if (c->nlisten == 0 && tk_balance_config_set(c, "listen", "127.0.0.1:8090", err, errcap) < 0)
        return 2;
    if (tk_balance_config_check(c, err, errcap) < 0)
        return cli->config ? 1 : 2;
    return 0;
}

static void on_hup(void *arg)
{
    balance_cli *cli = arg;
    char err[600];
    tk_balance_config *c = malloc(sizeof(*c));
    if (!c) {
        tk_error("reload failed: out of memory (keeping the current settings)");
        return;
    }
    if (build_config(cli, c, err, sizeof(err)) != 0 ||
        tk_balance_reload(cli->bal, c, err, sizeof(err)) < 0)
        tk_error("reload failed: %s (keeping the current settings)", err);
    free(c);
}

/* The first pass: help, unknown options, the file and logging. */
static int scan_args(balance_cli *cli)
{
    int ch;
    optind = 1;
    opterr = 1;
    while ((ch = getopt_long(cli->argc, cli->argv, "l:b:a:t:c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(usage_text, stdout); return 0;
        case 'c': cli->config = optarg; break;
        case OPT_LOG_LEVEL: cli->log_level = optarg; break;
        case OPT_LOG_FORMAT: cli->log_format = optarg; break;
        case '?': fprintf(stderr, "Try 'tcpkit %s --help'.\n", CMD); return 2;
        default:
            if (server_option(&cli->so, ch, optarg) > 0)
                return 2;
            break;
        }
    }
    if (optind < cli->argc)
        return opt_usage_error(CMD, "unexpected argument '%s'", cli->argv[optind]);
    int rc = server_opts_finish(&cli->so);
    return rc ? rc : -1;
}

/* Each relayed client holds six descriptors (two sockets, two pipes), so
 * the soft limit is raised to the hard one, as other proxies do. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Opens the client listeners and, if asked, the stats listener. */
static int open_servers(tk_workers *w, const tk_balance_config *c, tk_balance *bal,
                        const tk_access_config *access, run_entry *entries, size_t *n)
{
    char err[512];
    tk_server_config sc = {0};
    for (size_t i = 0; i < c->nlisten; i++)
        sc.listen[sc.nlisten++] = c->listen[i];
    sc.max_clients = c->max_clients;
    sc.access = access;
    tk_server *s = NULL;
    if (tk_server_open(w, &sc, tk_balance_ops(), bal, &s, err, sizeof(err)) < 0) {
        tk_error("%s", err);
        return -1;
    }
    tk_balance_set_server(bal, s);
    entries[(*n)++] = (run_entry){s, "balance"};
    if (c->stats[0]) {
        tk_server_config st = {0};
        st.listen[st.nlisten++] = c->stats;
        st.loops = 1;
        st.max_clients = 64;
        st.access = access;
        if (tk_server_open(w, &st, tk_balance_stats_ops(), bal, &s, err, sizeof(err)) < 0) {
            tk_error("stats: %s", err);
            return -1;
        }
        tk_balance_set_stats_server(bal, s);
        entries[(*n)++] = (run_entry){s, "stats"};
    }
    return 0;
}

static int balance(balance_cli *cli);

int cmd_balance(int argc, char **argv)
{
    balance_cli cli = {.argc = argc, .argv = argv};
    server_opts_init(&cli.so, CMD);
    int rc = balance(&cli);
    server_opts_free(&cli.so);
    return rc;
}

/* Parses, builds and serves; the policy in cli->so outlives the servers. */
static int balance(balance_cli *cli)
{
    int rc = scan_args(cli);
    if (rc >= 0)
        return rc;
    rc = opt_logging(CMD, cli->log_level, cli->log_format);
    if (rc)
        return rc;
    char err[600];
    tk_balance_config *c = malloc(sizeof(*c));
    if (!c) {
        fprintf(stderr, "tcpkit %s: out of memory\n", CMD);
        return 1;
    }
    rc = build_config(cli, c, err, sizeof(err));
    if (rc == 2) {
        free(c);
        return opt_usage_error(CMD, "%s", err);
    }
    if (rc) {
        fprintf(stderr, "tcpkit %s: %s\n", CMD, err);
        free(c);
        return 1;
    }
    raise_fd_limit();
    unsigned threads = c->threads ? c->threads : tk_cpu_count();
    tk_workers *w = NULL;
    int status = 1;
    if ((rc = tk_workers_new(threads, &w)) < 0) {
        tk_error("cannot create %u event loops: %s", threads, strerror(-rc));
        free(c);
        return 1;
    }
    run_entry entries[2];
    size_t n = 0;
    if (tk_balance_new(w, c, &cli->bal, err, sizeof(err)) < 0) {
        fprintf(stderr, "tcpkit %s: %s\n", CMD, err);
    } else if (open_servers(w, c, cli->bal, server_opts_access(&cli->so), entries, &n) == 0 &&
               server_opts_drop_privileges(&cli->so) == 0) {
        uint32_t drain = c->drain_timeout_ms;
        free(c);
        c = NULL;
        status = run_servers_reloadable(w, entries, n, drain, on_hup, cli);
        n = 0;
    }
    for (size_t i = 0; i < n; i++)
        tk_server_free(entries[i].server);
    tk_balance_free(cli->bal);
    tk_workers_free(w);
    free(c);
    return status;
}

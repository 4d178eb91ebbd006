/* tcpkit chat-server options, the default database location, and building
 * the chat service on a worker pool. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/chat_setup.h"
#include "cli/commands.h"
#include "cli/opts.h"
#include "cli/run.h"
#include "cli/tls_opts.h"
#include "cli/server_opts.h"
#include "tcpkit/addr.h"
#include "tcpkit/log.h"

void chat_options_init(chat_options *o, const char *cmd)
{
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    tk_chat_config_init(&o->chat);
    o->shutdown_ms = 10 * 1000;
    o->server.loops = 1; /* chat state lives on one loop */
    o->chat.sockopts.keepalive = 1;
    o->chat.sockopts.ka_idle_s = 60;
    o->chat.sockopts.ka_intvl_s = 10;
    o->chat.sockopts.ka_count = 6;
}

/* mkdir -p with mode 0700 for the directories of path. */
static int make_parents(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = mkdir(path, 0700);
        *p = '/';
        if (rc < 0 && errno != EEXIST)
            return -errno;
    }
    return 0;
}

int chat_options_finish(chat_options *o)
{
    if (o->ephemeral) {
        o->chat.db_path = ":memory:";
        return 0;
    }
    if (o->chat.db_path)
        return 0;
    const char *state = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (state && state[0] == '/')
        n = snprintf(o->db_default, sizeof(o->db_default), "%s/tcpkit/chat.db", state);
    else if (home && home[0] == '/')
        n = snprintf(o->db_default, sizeof(o->db_default), "%s/.local/state/tcpkit/chat.db", home);
    else
        n = snprintf(o->db_default, sizeof(o->db_default), "tcpkit-chat.db");
    if (n < 0 || (size_t)n >= sizeof(o->db_default)) {
        fprintf(stderr, "tcpkit %s: the default database path is too long; use --db\n", o->cmd);
        return 1;
    }
    int rc = make_parents(o->db_default);
    if (rc < 0) {
        fprintf(stderr, "tcpkit %s: cannot create the directory of %s: %s\n", o->cmd, o->db_default,
                strerror(-rc));
        return 1;
    }
    o->chat.db_path = o->db_default;
    return 0;
}

int chat_build(chat_options *o, tk_workers *w, tk_chat **chat, tk_server **server)
{
    char err[512] = "";
    int rc = tk_chat_new(&o->chat, tk_workers_loop(w, 0), chat, err, sizeof(err));
    if (rc < 0) {
        tk_error("cannot create the chat service: %s", err[0] ? err : strerror(-rc));
        *chat = NULL;
        return 1;
    }
    o->server.busy_msg = tk_chat_busy_message(*chat, &o->server.busy_len);
    rc = tk_server_open(w, &o->server, tk_chat_ops(), *chat, server, err, sizeof(err));
    if (rc < 0) {
        tk_error("%s", err);
        tk_chat_free(*chat);
        *chat = NULL;
        return 1;
    }
    tk_chat_set_server(*chat, *server);
    tk_info("chat: history in %s",
            strcmp(o->chat.db_path, ":memory:") == 0 ? "memory (--ephemeral)" : o->chat.db_path);
    return 0;
}

static const char usage_text[] =
    "usage: tcpkit chat-server [OPTIONS]\n"
    "\n"
    "Multi-user chat: unique names, rooms, private messages, history in SQLite,\n"
    "password accounts. People use a text mode (nc, telnet), programs a JSON-lines\n"
    "mode; the first byte a client sends picks the mode ('{' is JSON).\n"
    "\n"
    "  -l, --listen ADDR         address to serve, repeatable (default 127.0.0.1:8081)\n"
    "      --mode MODE           auto (default), text or json\n"
    "      --detect-timeout SECS auto mode: silence before text mode is assumed (default 0.3)\n"
    "      --db PATH             history and accounts database (default\n"
    "                            $XDG_STATE_HOME/tcpkit/chat.db or ~/.local/state/tcpkit/chat.db)\n"
    "      --ephemeral           keep history and accounts in memory only\n"
    "      --db-sync MODE        normal (default: WAL, survives a crash of the process)\n"
    "                            or full (also survives a power loss; slower)\n"
    "      --history-keep N      messages kept per room (default 10000, 0: all)\n"
    "      --history-max-age SECS  delete older messages (default 0: keep)\n"
    "      --history-page N      most messages one request returns (default 200)\n"
    "      --banner TEXT         text-mode greeting line\n"
    "      --max-clients N       clients at once; more get 'ERROR: server busy' (default: no "
    "limit)\n"
    "      --max-rooms N         rooms at once (default 1000)\n"
    "      --max-name N          name and room length in characters (default 32; 5 to 32)\n"
    "      --max-message BYTES   message length (default 4096)\n"
    "      --max-line BYTES      request line length (default 16K)\n"
    "      --max-queue BYTES     unsent output that drops a client (default 1M)\n"
    "      --flood-rate N        requests per second per client (default 10, 0: no limit)\n"
    "      --flood-burst N       requests allowed in a burst (default 20)\n"
    "      --idle-timeout SECS   JSON clients: ping after half, close after all (default 300, 0: "
    "off)\n"
    "      --text-idle-timeout SECS  close silent text clients (default 0: never)\n"
    "      --stall-timeout SECS  drop clients whose output stops moving (default 30)\n"
    "      --shutdown-timeout SECS  time given to finish on SIGTERM (default 10)\n"
    "      --kdf-cost N          scrypt cost 2^N for new passwords (default 15, 10..20)\n"
    "      --keepalive IDLE[,INTVL[,COUNT]]  TCP keepalive (default 60,10,6; 0: off)\n"
    "      --log-level LEVEL     debug, info (default), warn, error, off\n"
    "      --log-format FORMAT   text (default) or json\n" TLS_SERVER_HELP
    "  -h, --help                this help\n"
    "\n" SERVER_OPTS_HELP;

enum {
    O_MODE = 1100,
    O_DETECT,
    O_DB,
    O_EPHEMERAL,
    O_DB_SYNC,
    O_KEEP,
    O_MAX_AGE,
    O_PAGE,
    O_BANNER,
    O_MAX_CLIENTS,
    O_MAX_ROOMS,
    O_MAX_NAME,
    O_MAX_MESSAGE,
    O_MAX_LINE,
    O_MAX_QUEUE,
    O_FLOOD_RATE,
    O_FLOOD_BURST,
    O_IDLE,
    O_TEXT_IDLE,
    O_STALL,
    O_SHUTDOWN,
    O_KDF,
    O_KEEPALIVE,
    O_LOG_LEVEL,
    O_LOG_FORMAT,
};

/* A non-negative decimal number, possibly with a fraction. */
static int opt_rate(const char *s, double lo, double hi, double *out)
{
    if (!s || ((*s < '0' || *s > '9') && *s != '.'))
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

static int chat_option(chat_options *o, int ch, const char *arg)
{
    tk_chat_config *c = &o->chat;
    unsigned long v;
    size_t sz;
    uint32_t ms;
    const char *cmd = o->cmd;
    switch (ch) {
    case 'l': return opt_listen(cmd, &o->server, "--listen", arg);
    case O_MODE:
        if (strcmp(arg, "auto") == 0)
            c->mode = TK_CHAT_MODE_AUTO;
        else if (strcmp(arg, "text") == 0)
            c->mode = TK_CHAT_MODE_TEXT;
        else if (strcmp(arg, "json") == 0)
            c->mode = TK_CHAT_MODE_JSON;
        else
            return opt_usage_error(cmd, "bad --mode '%s' (auto, text or json)", arg);
        return 0;
    case O_DETECT:
        if (tk_parse_duration_ms(arg, &ms) < 0 || ms > 60000)
            return opt_usage_error(cmd, "bad --detect-timeout '%s' (0 to 60 seconds)", arg);
        c->detect_ms = ms;
        return 0;
    case O_DB:
        if (!arg[0])
            return opt_usage_error(cmd, "--db needs a path");
        c->db_path = arg;
        return 0;
    case O_EPHEMERAL: o->ephemeral = 1; return 0;
    case O_DB_SYNC:
        if (strcmp(arg, "normal") != 0 && strcmp(arg, "full") != 0)
            return opt_usage_error(cmd, "bad --db-sync '%s' (normal or full)", arg);
        c->db_sync_full = strcmp(arg, "full") == 0;
        return 0;
    case O_KEEP:
        if (tk_parse_uint(arg, 0, 100000000, &v) < 0)
            return opt_usage_error(cmd, "bad --history-keep '%s'", arg);
        c->history_keep = (uint32_t)v;
        return 0;
    case O_MAX_AGE:
        if (tk_parse_duration_ms(arg, &ms) < 0)
            return opt_usage_error(cmd, "bad --history-max-age '%s' (seconds)", arg);
        c->history_max_age_s = ms / 1000;
        return 0;
    case O_PAGE:
        if (tk_parse_uint(arg, 1, 100000, &v) < 0)
            return opt_usage_error(cmd, "bad --history-page '%s' (1 to 100000)", arg);
        c->history_page = (uint32_t)v;
        return 0;
    case O_BANNER: c->banner = arg; return 0;
    case O_MAX_CLIENTS:
        if (tk_parse_uint(arg, 0, 10000000, &v) < 0)
            return opt_usage_error(cmd, "bad --max-clients '%s'", arg);
        o->server.max_clients = (unsigned)v;
        return 0;
    case O_MAX_ROOMS:
        if (tk_parse_uint(arg, 1, 10000000, &v) < 0)
            return opt_usage_error(cmd, "bad --max-rooms '%s'", arg);
        c->max_rooms = (unsigned)v;
        return 0;
    case O_MAX_NAME:
        if (tk_parse_uint(arg, 5, 32, &v) < 0)
            return opt_usage_error(cmd, "bad --max-name '%s' (5 to 32)", arg);
        c->max_name = (unsigned)v;
        return 0;
    case O_MAX_MESSAGE:
        if (tk_parse_size(arg, &sz) < 0 || sz == 0 || sz > (1u << 20))
            return opt_usage_error(cmd, "bad --max-message '%s' (1 byte to 1M)", arg);
        c->max_message = sz;
        return 0;
    case O_MAX_LINE:
        if (tk_parse_size(arg, &sz) < 0 || sz < 64 || sz > (8u << 20))
            return opt_usage_error(cmd, "bad --max-line '%s' (64 bytes to 8M)", arg);
        c->max_line = sz;
        return 0;
    case O_MAX_QUEUE:
        if (tk_parse_size(arg, &sz) < 0 || sz < 4096 || sz > (1u << 30))
            return opt_usage_error(cmd, "bad --max-queue '%s' (4K to 1G)", arg);
        c->max_queue = sz;
        return 0;
    case O_FLOOD_RATE:
        if (opt_rate(arg, 0, 1e9, &c->flood_rate) < 0)
            return opt_usage_error(cmd, "bad --flood-rate '%s'", arg);
        return 0;
    case O_FLOOD_BURST:
        if (opt_rate(arg, 1, 1e9, &c->flood_burst) < 0)
            return opt_usage_error(cmd, "bad --flood-burst '%s' (at least 1)", arg);
        return 0;
    case O_IDLE:
    case O_TEXT_IDLE:
    case O_STALL:
    case O_SHUTDOWN:
        if (tk_parse_duration_ms(arg, &ms) < 0)
            return opt_usage_error(cmd, "bad duration '%s' (seconds)", arg);
        if (ch == O_IDLE)
            c->idle_timeout_ms = ms;
        else if (ch == O_TEXT_IDLE)
            c->text_idle_timeout_ms = ms;
        else if (ch == O_STALL)
            c->stall_timeout_ms = ms;
        else
            o->shutdown_ms = ms;
        return 0;
    case O_KDF:
        if (tk_parse_uint(arg, 10, 20, &v) < 0)
            return opt_usage_error(cmd, "bad --kdf-cost '%s' (10 to 20)", arg);
        c->kdf_log2_n = (unsigned)v;
        return 0;
    case O_KEEPALIVE:
        if (tk_sock_parse_keepalive(arg, &c->sockopts) < 0)
            return opt_usage_error(cmd, "bad --keepalive '%s' (IDLE[,INTVL[,COUNT]])", arg);
        return 0;
    case O_LOG_LEVEL: o->log_level = arg; return 0;
    case O_LOG_FORMAT: o->log_format = arg; return 0;
    default: fprintf(stderr, "Try 'tcpkit %s --help'.\n", cmd); return 2;
    }
}

static int chat_server(int argc, char **argv, server_opts *so);

int chat_server_main(int argc, char **argv)
{
    server_opts so;
    server_opts_init(&so, "chat-server");
    int rc = chat_server(argc, argv, &so);
    server_opts_free(&so);
    return rc;
}

/* Parses the options and serves; the policy in so outlives the server. */
static int chat_server(int argc, char **argv, server_opts *so)
{
    static const struct option longopts[] = {
        SERVER_OPTS_LONGOPTS,
        {"listen", required_argument, NULL, 'l'},
        {"mode", required_argument, NULL, O_MODE},
        {"detect-timeout", required_argument, NULL, O_DETECT},
        {"db", required_argument, NULL, O_DB},
        {"ephemeral", no_argument, NULL, O_EPHEMERAL},
        {"db-sync", required_argument, NULL, O_DB_SYNC},
        {"history-keep", required_argument, NULL, O_KEEP},
        {"history-max-age", required_argument, NULL, O_MAX_AGE},
        {"history-page", required_argument, NULL, O_PAGE},
        {"banner", required_argument, NULL, O_BANNER},
        {"max-clients", required_argument, NULL, O_MAX_CLIENTS},
        {"max-rooms", required_argument, NULL, O_MAX_ROOMS},
        {"max-name", required_argument, NULL, O_MAX_NAME},
        {"max-message", required_argument, NULL, O_MAX_MESSAGE},
        {"max-line", required_argument, NULL, O_MAX_LINE},
        {"max-queue", required_argument, NULL, O_MAX_QUEUE},
        {"flood-rate", required_argument, NULL, O_FLOOD_RATE},
        {"flood-burst", required_argument, NULL, O_FLOOD_BURST},
        {"idle-timeout", required_argument, NULL, O_IDLE},
        {"text-idle-timeout", required_argument, NULL, O_TEXT_IDLE},
        {"stall-timeout", required_argument, NULL, O_STALL},
        {"shutdown-timeout", required_argument, NULL, O_SHUTDOWN},
        {"kdf-cost", required_argument, NULL, O_KDF},
        {"keepalive", required_argument, NULL, O_KEEPALIVE},
        {"log-level", required_argument, NULL, O_LOG_LEVEL},
        {"log-format", required_argument, NULL, O_LOG_FORMAT},
        TLS_SERVER_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    tls_opts tls_o;
    tls_opts_init(&tls_o);
    chat_options o;
    chat_options_init(&o, "chat-server");
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "l:h", longopts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(usage_text, stdout);
            return 0;
        }
        int rc = tls_option(&tls_o, o.cmd, ch, optarg);
        if (rc < 0)
            rc = server_option(so, ch, optarg);
        if (rc < 0)
            rc = chat_option(&o, ch, optarg);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return opt_usage_error(o.cmd, "unexpected argument '%s'", argv[optind]);
    if (o.ephemeral && o.chat.db_path)
        return opt_usage_error(o.cmd, "--db and --ephemeral exclude each other");
    if (o.server.nlisten == 0)
        o.server.listen[o.server.nlisten++] = "127.0.0.1:8081";
    int rc = server_opts_finish(so);
    if (rc)
        return rc;
    rc = opt_logging(o.cmd, o.log_level, o.log_format);
    if (rc)
        return rc;
    if (chat_options_finish(&o))
        return 1;
    tk_tls_ctx *tls = NULL;
    if ((rc = tls_build(&tls_o, o.cmd, 1, &tls)) != 0)
        return rc;
    o.server.tls = tls;
    o.server.access = server_opts_access(so);
    tk_workers *w = NULL;
    rc = tk_workers_new(1, &w);
    if (rc < 0) {
        tk_error("cannot create the event loop: %s", strerror(-rc));
        tk_tls_ctx_free(tls);
        return 1;
    }
    tk_chat *chat = NULL;
    tk_server *server = NULL;
    int status = 1;
    if (chat_build(&o, w, &chat, &server) == 0) {
        run_entry entry = {server, "chat"};
        if (server_opts_drop_privileges(so) == 0)
            status = run_servers(w, &entry, 1, o.shutdown_ms);
        else
            tk_server_free(server);
    }
    tk_chat_free(chat);
    tk_workers_free(w);
    tk_tls_ctx_free(tls);
    return status;
}

int cmd_chat_server(int argc, char **argv)
{
    return chat_server_main(argc, argv);
}

/* tcpkit serve: the main job, every service with its default settings in one
 * process: echo on 127.0.0.1:8080, chat on 127.0.0.1:8081 and files on
 * 127.0.0.1:8082. Echo and files use every loop of the pool; chat keeps its
 * state on loop 0. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/chat_setup.h"
#include "cli/commands.h"
#include "cli/echo_setup.h"
#include "cli/files_setup.h"
#include "cli/opts.h"
#include "cli/run.h"
#include "cli/server_opts.h"
#include "tcpkit/addr.h"
#include "tcpkit/log.h"

enum { OPT_ECHO_LISTEN = 2000, OPT_CHAT_LISTEN, OPT_CHAT_DB, OPT_CHAT_EPHEMERAL, OPT_FILES_LISTEN };

static const char usage_text[] =
    "usage: tcpkit serve [OPTIONS]\n"
    "\n"
    "Runs tcpkit's services in one process with sensible defaults:\n"
    "  echo   127.0.0.1:8080   line protocol with commands (see 'tcpkit echo-server')\n"
    "  chat   127.0.0.1:8081   rooms, private messages, history (see 'tcpkit chat-server')\n"
    "  files  127.0.0.1:8082   the current directory, read-only (see 'tcpkit file-server')\n"
    "\n"
    "      --echo-listen ADDR    where the echo service listens (repeatable)\n"
    "      --chat-listen ADDR    where the chat service listens (repeatable)\n"
    "      --chat-db PATH        chat history and accounts (default\n"
    "                            $XDG_STATE_HOME/tcpkit/chat.db or ~/.local/state/tcpkit/chat.db)\n"
    "      --chat-ephemeral      keep chat history and accounts in memory only\n"
    "      --files-listen ADDR   where the file service listens (repeatable)\n"
    "      --files-root DIR      the directory the file service serves (default: .)\n"
    "      --files-OPTION        the file service's own file-server options with a\n"
    "                            files- prefix: --files-allow-upload, --files-auth-key FILE,\n"
    "                            --files-max-upload, --files-sendfile... (the process-wide\n"
    "                            ones, clients, timeouts, keepalive, logging, are serve's)\n"
    "  -t, --threads N           event loops, one per thread (default: CPU count)\n"
    "      --max-clients N       echo clients served at once (default: no limit)\n"
    "      --idle-timeout SECS   close echo clients silent this long (default 300, 0: never)\n"
    "      --shutdown-timeout SECS  time given to finish on SIGTERM (default 10)\n"
    "      --log-level LEVEL     debug, info (default), warn, error, off\n"
    "      --log-format FORMAT   text (default) or json\n" TLS_SERVER_HELP
    "  -h, --help                this help\n"
    "\n"
    "Every echo-server option is accepted too and applies to the echo service;\n"
    "the chat service runs with chat-server's defaults. The access options below\n"
    "apply to every service, each counting its own clients per address.\n"
    "\n" SERVER_OPTS_HELP;

static int serve(int argc, char **argv, server_opts *so);

int cmd_serve(int argc, char **argv)
{
    server_opts so;
    server_opts_init(&so, "serve");
    int rc = serve(argc, argv, &so);
    server_opts_free(&so);
    return rc;
}

/* Parses the options and serves; the policy in so outlives the servers. */
static int serve(int argc, char **argv, server_opts *so)
{
    echo_options o;
    chat_options co;
    files_options fo;
    echo_options_init(&o, "serve");
    chat_options_init(&co, "serve");
    files_options_init(&fo, "serve");
    static const struct option longopts[] = {
        ECHO_LONGOPTS,
        SERVER_OPTS_LONGOPTS,
        {"echo-listen", required_argument, NULL, OPT_ECHO_LISTEN},
        {"chat-listen", required_argument, NULL, OPT_CHAT_LISTEN},
        {"chat-db", required_argument, NULL, OPT_CHAT_DB},
        {"chat-ephemeral", no_argument, NULL, OPT_CHAT_EPHEMERAL},
        {"files-listen", required_argument, NULL, OPT_FILES_LISTEN},
        FILES_LONGOPTS("files-"),
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch, rc;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "t:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(usage_text, stdout); return 0;
        case OPT_ECHO_LISTEN: rc = opt_listen(o.cmd, &o.server, "--echo-listen", optarg); break;
        case OPT_CHAT_LISTEN: rc = opt_listen(o.cmd, &co.server, "--chat-listen", optarg); break;
        case OPT_CHAT_DB:
            co.chat.db_path = optarg;
            rc = 0;
            break;
        case OPT_CHAT_EPHEMERAL:
            co.ephemeral = 1;
            rc = 0;
            break;
        case OPT_FILES_LISTEN: rc = opt_listen(o.cmd, &fo.server, "--files-listen", optarg); break;
        default:
            rc = server_option(so, ch, optarg);
            if (rc < 0)
                rc = files_option(&fo, ch, optarg);
            if (rc < 0)
                rc = echo_option(&o, ch, optarg);
            break;
        }
        if (rc)
            return rc;
    }
    if (optind < argc)
        return opt_usage_error(o.cmd, "unexpected argument '%s'", argv[optind]);
    if (o.server.udp)
        return opt_usage_error(o.cmd, "--udp is for 'tcpkit echo-server'");
    if (co.ephemeral && co.chat.db_path)
        return opt_usage_error(o.cmd, "--chat-db and --chat-ephemeral exclude each other");
    if (o.server.nlisten == 0)
        o.server.listen[o.server.nlisten++] = "127.0.0.1:8080";
    if (co.server.nlisten == 0)
        co.server.listen[co.server.nlisten++] = "127.0.0.1:8081";
    if (fo.server.nlisten == 0)
        fo.server.listen[fo.server.nlisten++] = "127.0.0.1:8082";
    if (fo.files.allow_overwrite && !fo.files.allow_upload)
        return opt_usage_error(o.cmd, "--files-allow-overwrite needs --files-allow-upload");
    rc = server_opts_finish(so);
    if (rc)
        return rc;
    rc = opt_logging(o.cmd, o.log_level, o.log_format);
    if (rc)
        return rc;
    if (chat_options_finish(&co) || files_options_finish(&fo))
        return 1;
    o.server.access = co.server.access = fo.server.access = server_opts_access(so);
    co.shutdown_ms = o.shutdown_ms;
    tk_tls_ctx *tls = NULL;
    if ((rc = tls_build(&o.tls, o.cmd, 1, &tls)) != 0)
        return rc;
    o.server.tls = co.server.tls = fo.server.tls = tls;

    tk_workers *w = NULL;
    rc = tk_workers_new(o.threads, &w);
    if (rc < 0) {
        tk_error("cannot create %u event loops: %s", o.threads, strerror(-rc));
        tk_tls_ctx_free(tls);
        return 1;
    }
    tk_echo *echo = NULL;
    tk_chat *chat = NULL;
    tk_files *files = NULL;
    run_entry entries[3];
    int status = 1;
    if (echo_build(&o, w, &echo, &entries[0].server) == 0 &&
        chat_build(&co, w, &chat, &entries[1].server) == 0 &&
        files_build(&fo, w, &files, &entries[2].server) == 0) {
        entries[0].label = "echo";
        entries[1].label = "chat";
        entries[2].label = "files";
        if (server_opts_drop_privileges(so) == 0) {
            status = run_servers(w, entries, 3, o.shutdown_ms);
        } else {
            for (size_t i = 0; i < 3; i++)
                tk_server_free(entries[i].server);
        }
    } else {
        if (echo)
            tk_server_free(entries[0].server);
        if (chat)
            tk_server_free(entries[1].server);
    }
    tk_files_free(files);
    tk_chat_free(chat);
    tk_echo_free(echo);
    tk_workers_free(w);
    tk_tls_ctx_free(tls);
    return status;
}

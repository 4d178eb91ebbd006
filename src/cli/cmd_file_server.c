/* tcpkit file-server: the file service in the foreground. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/files_setup.h"
#include "cli/opts.h"
#include "cli/tls_opts.h"
#include "cli/run.h"
#include "cli/server_opts.h"
#include "tcpkit/addr.h"
#include "tcpkit/log.h"

#define MAX_THREADS 1024

static const char usage_text[] =
    "usage: tcpkit file-server [OPTIONS]\n"
    "\n"
    "Serves a directory over the tcpkit frame protocol: version 1 (the seed's,\n"
    "downloads) and version 2 (concurrent streams, listing, resumable downloads and\n"
    "uploads, SHA-256 digests, heartbeats, zstd, HMAC authentication).\n"
    "\n"
    "  -l, --listen ADDR         address to serve, repeatable (default 127.0.0.1:8082)\n"
    "  -r, --root DIR            the directory to serve (default: the current one)\n"
    "      --allow-upload        accept uploads (default: read-only)\n"
    "      --allow-overwrite     uploads may replace existing files (with --allow-upload)\n"
    "      --show-hidden         serve and list names starting with '.'\n"
    "      --max-upload BYTES    largest upload (default 16G)\n"
    "      --min-free BYTES      free space an upload must leave (default 64M)\n"
    "      --chunk-size BYTES    file bytes per data frame (default 1M; 4K to 8M)\n"
    "      --sendfile MODE       plain downloads with sendfile(): on, off, or auto\n"
    "                            (default: on except for clients on loopback, where\n"
    "                            reading and writing measured faster)\n"
    "      --max-frame BYTES     largest version-2 frame accepted (default chunk + 64K)\n"
    "      --max-streams N       open transfers per connection (default 32)\n"
    "      --max-transfers N     open transfers in the whole server (default 1024)\n"
    "      --max-clients N       connections at once (default 0: no limit)\n"
    "      --idle-timeout SECS   close connections silent both ways (default 300, 0: never)\n"
    "      --stall-timeout SECS  drop clients that stop reading (default 60, 0: never)\n"
    "      --heartbeat SECS      version 2: PING after this much silence, drop after 3x\n"
    "                            (default 15, 0: off)\n"
    "      --zstd-level N        compression level for zstd transfers (default 3; 1 to 19)\n"
    "      --auth-key FILE       require HMAC-SHA256 with this pre-shared key (mode 600)\n"
    "      --partial-ttl SECS    remove interrupted uploads nobody resumed for this long\n"
    "                            (default 86400, 0: keep them)\n"
    "      --hash-threads N      threads computing digests (default: half the CPUs)\n"
    "  -t, --threads N           event loops, one per thread (default: CPU count)\n"
    "      --shutdown-timeout SECS  time transfers get to finish on SIGTERM (default 10)\n"
    "      --keepalive IDLE[,INTVL[,COUNT]]  TCP keepalive (default 60,10,6; 0: off)\n"
    "      --log-level LEVEL     debug, info (default), warn, error, off\n"
    "      --log-format FORMAT   text (default) or json\n" TLS_SERVER_HELP
    "  -h, --help                this help\n"
    "\n" SERVER_OPTS_HELP;

static int file_server(int argc, char **argv, files_options *o, server_opts *so);

int cmd_file_server(int argc, char **argv)
{
    files_options o;
    server_opts so;
    files_options_init(&o, "file-server");
    server_opts_init(&so, "file-server");
    int rc = file_server(argc, argv, &o, &so);
    server_opts_free(&so);
    return rc;
}

/* Parses the options and serves; the policy in so outlives the server. */
static int file_server(int argc, char **argv, files_options *o, server_opts *so)
{
    static const struct option longopts[] = {
        FILES_LONGOPTS(""),
        SERVER_OPTS_LONGOPTS,
        {"listen", required_argument, NULL, 'l'},
        {"max-clients", required_argument, NULL, FO_MAX_CLIENTS},
        {"idle-timeout", required_argument, NULL, FO_IDLE},
        {"stall-timeout", required_argument, NULL, FO_STALL},
        {"shutdown-timeout", required_argument, NULL, FO_SHUTDOWN},
        {"keepalive", required_argument, NULL, FO_KEEPALIVE},
        {"log-level", required_argument, NULL, FO_LOG_LEVEL},
        {"log-format", required_argument, NULL, FO_LOG_FORMAT},
        {"threads", required_argument, NULL, 't'},
        TLS_SERVER_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    unsigned long v;
    tls_opts tls_o;
    tls_opts_init(&tls_o);
    optind = 1;
    while ((ch = getopt_long(argc, argv, "l:r:t:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(usage_text, stdout); return 0;
        case 'l': {
            int rc = opt_listen(o->cmd, &o->server, "--listen", optarg);
            if (rc)
                return rc;
            continue;
        }
        case 'r': ch = FO_ROOT; break;
        case 't':
            if (tk_parse_uint(optarg, 1, MAX_THREADS, &v) < 0)
                return opt_usage_error(o->cmd, "bad --threads '%s' (1 to %d)", optarg, MAX_THREADS);
            o->threads = (unsigned)v;
            continue;
        case '?': fprintf(stderr, "Try 'tcpkit %s --help'.\n", o->cmd); return 2;
        default: break;
        }
        int rc = tls_option(&tls_o, o->cmd, ch, optarg);
        if (rc < 0)
            rc = server_option(so, ch, optarg);
        if (rc < 0)
            rc = files_option(o, ch, optarg);
        if (rc)
            return rc < 0 ? 2 : rc;
    }
    if (optind < argc)
        return opt_usage_error(o->cmd, "unexpected argument '%s'", argv[optind]);
    if (o->files.allow_overwrite && !o->files.allow_upload)
        return opt_usage_error(o->cmd, "--allow-overwrite needs --allow-upload");
    if (o->server.nlisten == 0)
        o->server.listen[o->server.nlisten++] = "127.0.0.1:8082";
    int rc = server_opts_finish(so);
    if (rc)
        return rc;
    rc = opt_logging(o->cmd, o->log_level, o->log_format);
    if (rc)
        return rc;
    if (files_options_finish(o))
        return 1;
    tk_tls_ctx *tls = NULL;
    if ((rc = tls_build(&tls_o, o->cmd, 1, &tls)) != 0)
        return rc;
    o->server.tls = tls;
    o->server.access = server_opts_access(so);
    tk_workers *w = NULL;
    rc = tk_workers_new(o->threads, &w);
    if (rc < 0) {
        tk_error("cannot create %u event loops: %s", o->threads, strerror(-rc));
        tk_tls_ctx_free(tls);
        return 1;
    }
    tk_files *files = NULL;
    tk_server *server = NULL;
    int status = 1;
    if (files_build(o, w, &files, &server) == 0) {
        run_entry entry = {server, "files"};
        if (server_opts_drop_privileges(so) == 0)
            status = run_servers(w, &entry, 1, o->shutdown_ms);
        else
            tk_server_free(server);
    }
    tk_files_free(files);
    tk_workers_free(w);
    tk_tls_ctx_free(tls);
    return status;
}

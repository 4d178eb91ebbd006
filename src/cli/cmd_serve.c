/* tcpkit serve: the main job, every service with its default settings. For
 * now that is the echo service on 127.0.0.1:8080. */
#include <getopt.h>
#include <stdio.h>

#include "cli/commands.h"
#include "cli/echo_setup.h"
#include "cli/opts.h"
#include "tcpkit/addr.h"

enum { OPT_ECHO_LISTEN = 2000 };

static const char usage_text[] =
    "usage: tcpkit serve [OPTIONS]\n"
    "\n"
    "Runs tcpkit's services in one process with sensible defaults:\n"
    "  echo   127.0.0.1:8080   line protocol with commands (see 'tcpkit echo-server')\n"
    "\n"
    "      --echo-listen ADDR    where the echo service listens (repeatable)\n"
    "  -t, --threads N           event loops, one per thread (default: CPU count)\n"
    "      --max-clients N       clients served at once per service (default: no limit)\n"
    "      --idle-timeout SECS   close clients silent this long (default 300, 0: never)\n"
    "      --shutdown-timeout SECS  time given to finish on SIGTERM (default 10)\n"
    "      --log-level LEVEL     debug, info (default), warn, error, off\n"
    "      --log-format FORMAT   text (default) or json\n"
    "  -h, --help                this help\n"
    "\n"
    "Every echo-server option is accepted too and applies to the echo service.\n";

int cmd_serve(int argc, char **argv)
{
    echo_options o;
    echo_options_init(&o, "serve");
    static const struct option longopts[] = {
        ECHO_LONGOPTS,
        {"echo-listen", required_argument, NULL, OPT_ECHO_LISTEN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "t:h", longopts, NULL)) != -1) {
        if (ch == 'h') {
            fputs(usage_text, stdout);
            return 0;
        }
        if (ch == OPT_ECHO_LISTEN) {
            char host[TK_HOST_MAX];
            int port;
            if (tk_addr_split(optarg, host, &port) < 0)
                return opt_usage_error(
                    o.cmd, "bad --echo-listen '%s' (HOST:PORT, [IPv6]:PORT or :PORT)", optarg);
            if (o.server.nlisten == TK_SERVER_MAX_LISTEN)
                return opt_usage_error(o.cmd, "too many --echo-listen addresses");
            o.server.listen[o.server.nlisten++] = optarg;
            continue;
        }
        int rc = echo_option(&o, ch, optarg);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return opt_usage_error(o.cmd, "unexpected argument '%s'", argv[optind]);
    if (o.server.nlisten == 0)
        o.server.listen[o.server.nlisten++] = "127.0.0.1:8080";
    return echo_run(&o);
}

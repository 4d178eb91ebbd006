/* tcpkit echo-server: the echo service in the foreground. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/echo_setup.h"
#include "cli/opts.h"
#include "cli/tls_opts.h"
#include "cli/server_opts.h"
#include "tcpkit/addr.h"
#include "tcpkit/log.h"

static const char usage_text[] =
    "usage: tcpkit echo-server [OPTIONS]\n"
    "\n"
    "Echo server: a line protocol with commands (ECHO, UPPER, LOWER, REVERSE, TIME,\n"
    "STATS, QUIT), a length-prefixed or JSON-lines framing, or UDP datagrams.\n"
    "\n"
    "  -l, --listen ADDR         address to serve, repeatable (default 127.0.0.1:8080);\n"
    "                            HOST:PORT, [IPv6]:PORT, or :PORT for every interface\n"
    "      --framing MODE        line (default), length or json\n"
    "      --udp                 echo UDP datagrams instead of TCP\n"
    "      --strict              answer lines that are not commands with an error\n"
    "      --banner TEXT         send TEXT to each client when it connects\n"
    "      --max-line BYTES      longest line or JSON request (default 64K)\n"
    "      --max-frame BYTES     largest length-prefixed frame (default 1M)\n"
    "      --max-clients N       clients served at once; more get 'ERROR: server busy'\n"
    "                            (default 0: no limit but the descriptor limit)\n"
    "      --idle-timeout SECS   close clients silent this long (default 300, 0: never)\n"
    "      --stall-timeout SECS  drop clients that stop reading replies (default 30, 0: never)\n"
    "      --shutdown-timeout SECS  time given to finish on SIGTERM (default 10)\n"
    "      --out-high BYTES      queued output that pauses a client's input (default 256K)\n"
    "      --out-max BYTES       queued output that drops a client (default 4M, raised to\n"
    "                            fit the largest single reply)\n"
    "  -t, --threads N           event loops, one per thread (default: CPU count)\n"
    "      --no-nodelay          leave Nagle's algorithm on\n"
    "      --keepalive IDLE[,INTVL[,COUNT]]  TCP keepalive (default 60,10,6; 0: off)\n"
    "      --linger SECS         SO_LINGER on client sockets (default: unset)\n"
    "      --sndbuf BYTES, --rcvbuf BYTES  socket buffer sizes\n"
    "      --log-level LEVEL     debug, info (default), warn, error, off\n"
    "      --log-format FORMAT   text (default) or json\n" TLS_SERVER_HELP
    "  -h, --help                this help\n"
    "\n" SERVER_OPTS_HELP;

int cmd_echo_server(int argc, char **argv)
{
    echo_options o;
    server_opts so;
    echo_options_init(&o, "echo-server");
    server_opts_init(&so, "echo-server");
    static const struct option longopts[] = {
        ECHO_LONGOPTS,
        SERVER_OPTS_LONGOPTS,
        {"listen", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "l:t:h", longopts, NULL)) != -1) {
        int rc;
        if (ch == 'h') {
            fputs(usage_text, stdout);
            rc = 0;
        } else if (ch == 'l') {
            rc = opt_listen(o.cmd, &o.server, "--listen", optarg);
        } else if ((rc = server_option(&so, ch, optarg)) < 0) {
            rc = echo_option(&o, ch, optarg);
        }
        if (rc || ch == 'h') {
            server_opts_free(&so);
            return rc;
        }
    }
    int rc = optind < argc ? opt_usage_error(o.cmd, "unexpected argument '%s'", argv[optind])
                           : server_opts_finish(&so);
    if (rc == 0 && o.server.udp && server_opts_access(&so))
        rc = opt_usage_error(o.cmd, "--allow, --deny and the per-address limits are for TCP");
    if (rc == 0) {
        if (o.server.nlisten == 0)
            o.server.listen[o.server.nlisten++] = "127.0.0.1:8080";
        o.server.access = server_opts_access(&so);
        rc = echo_run(&o, &so);
    }
    server_opts_free(&so);
    return rc;
}

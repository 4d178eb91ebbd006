/* From echo options to a running echo service. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/echo_setup.h"
#include "cli/opts.h"
#include "cli/run.h"
#include "tcpkit/log.h"

#define MAX_THREADS 1024

void echo_options_init(echo_options *o, const char *cmd)
{
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    tk_echo_config_init(&o->echo);
    o->threads = tk_cpu_count();
    o->shutdown_ms = 10 * 1000;
    /* Clients are probed after a minute of silence so dead peers go away
     * even with the idle timeout off. */
    o->echo.sockopts.keepalive = 1;
    o->echo.sockopts.ka_idle_s = 60;
    o->echo.sockopts.ka_intvl_s = 10;
    o->echo.sockopts.ka_count = 6;
    tls_opts_init(&o->tls);
}

int echo_option(echo_options *o, int ch, const char *arg)
{
    tk_echo_config *e = &o->echo;
    unsigned long v;
    size_t sz;
    uint32_t ms;
    switch (ch) {
    case OPT_FRAMING:
        if (strcmp(arg, "line") == 0)
            e->framing = TK_ECHO_FRAMING_LINE;
        else if (strcmp(arg, "length") == 0)
            e->framing = TK_ECHO_FRAMING_LENGTH;
        else if (strcmp(arg, "json") == 0)
            e->framing = TK_ECHO_FRAMING_JSON;
        else
            return opt_usage_error(o->cmd, "bad --framing '%s' (line, length or json)", arg);
        return 0;
    case OPT_UDP: o->server.udp = 1; return 0;
    case OPT_STRICT: e->strict = 1; return 0;
    case OPT_BANNER: e->banner = arg; return 0;
    case OPT_MAX_LINE:
        if (tk_parse_size(arg, &sz) < 0 || sz == 0 || sz > 64u << 20)
            return opt_usage_error(o->cmd, "bad --max-line '%s' (1 byte to 64M)", arg);
        e->max_line = sz;
        return 0;
    case OPT_MAX_FRAME:
        if (tk_parse_size(arg, &sz) < 0 || sz == 0 || sz > 256u << 20)
            return opt_usage_error(o->cmd, "bad --max-frame '%s' (1 byte to 256M)", arg);
        e->max_frame = sz;
        return 0;
    case OPT_MAX_CLIENTS:
        if (tk_parse_uint(arg, 0, 10000000, &v) < 0)
            return opt_usage_error(o->cmd, "bad --max-clients '%s'", arg);
        o->server.max_clients = (unsigned)v;
        return 0;
    case OPT_IDLE:
        if (tk_parse_duration_ms(arg, &ms) < 0)
            return opt_usage_error(o->cmd, "bad --idle-timeout '%s' (seconds)", arg);
        e->idle_timeout_ms = ms;
        return 0;
    case OPT_STALL:
        if (tk_parse_duration_ms(arg, &ms) < 0)
            return opt_usage_error(o->cmd, "bad --stall-timeout '%s' (seconds)", arg);
        e->stall_timeout_ms = ms;
        return 0;
    case OPT_SHUTDOWN:
        if (tk_parse_duration_ms(arg, &ms) < 0)
            return opt_usage_error(o->cmd, "bad --shutdown-timeout '%s' (seconds)", arg);
        o->shutdown_ms = ms;
        return 0;
    case OPT_OUT_HIGH:
        if (tk_parse_size(arg, &sz) < 0 || sz < 1024)
            return opt_usage_error(o->cmd, "bad --out-high '%s' (at least 1K)", arg);
        e->out_high = sz;
        return 0;
    case OPT_OUT_MAX:
        if (tk_parse_size(arg, &sz) < 0 || sz < 1024)
            return opt_usage_error(o->cmd, "bad --out-max '%s' (at least 1K)", arg);
        e->out_max = sz;
        return 0;
    case OPT_NO_NODELAY: e->sockopts.nodelay = 0; return 0;
    case OPT_KEEPALIVE:
        if (tk_sock_parse_keepalive(arg, &o->echo.sockopts) < 0)
            return opt_usage_error(o->cmd, "bad --keepalive '%s' (IDLE[,INTVL[,COUNT]])", arg);
        return 0;
    case OPT_LINGER:
        if (tk_parse_uint(arg, 0, 3600, &v) < 0)
            return opt_usage_error(o->cmd, "bad --linger '%s' (seconds)", arg);
        e->sockopts.linger_s = (int)v;
        return 0;
    case OPT_SNDBUF:
    case OPT_RCVBUF:
        if (tk_parse_size(arg, &sz) < 0 || sz == 0 || sz > (64u << 20))
            return opt_usage_error(o->cmd, "bad buffer size '%s' (1 byte to 64M)", arg);
        if (ch == OPT_SNDBUF)
            e->sockopts.sndbuf = (int)sz;
        else
            e->sockopts.rcvbuf = (int)sz;
        return 0;
    case OPT_LOG_LEVEL: o->log_level = arg; return 0;
    case OPT_LOG_FORMAT: o->log_format = arg; return 0;
    case OPT_THREADS:
        if (tk_parse_uint(arg, 1, MAX_THREADS, &v) < 0)
            return opt_usage_error(o->cmd, "bad --threads '%s' (1 to %d)", arg, MAX_THREADS);
        o->threads = (unsigned)v;
        return 0;
    default: {
        int rc = tls_option(&o->tls, o->cmd, ch, arg);
        if (rc >= 0)
            return rc;
    }
        /* getopt_long already named the bad option. */
        fprintf(stderr, "Try 'tcpkit %s --help'.\n", o->cmd);
        return 2;
    }
}

int echo_build(echo_options *o, tk_workers *w, tk_echo **echo, tk_server **server)
{
    char err[256] = "";
    int rc = tk_echo_new(&o->echo, w, echo);
    if (rc < 0) {
        tk_error("cannot create the echo service: %s", strerror(-rc));
        *echo = NULL;
        return 1;
    }
    o->server.busy_msg = tk_echo_busy_message(*echo, &o->server.busy_len);
    rc = tk_server_open(w, &o->server, tk_echo_ops(), *echo, server, err, sizeof(err));
    if (rc < 0) {
        tk_error("%s", err);
        tk_echo_free(*echo);
        *echo = NULL;
        return 1;
    }
    tk_echo_set_server(*echo, *server);
    return 0;
}

int echo_run(echo_options *o, const server_opts *so)
{
    int rc = opt_logging(o->cmd, o->log_level, o->log_format);
    if (rc)
        return rc;
    tk_workers *w = NULL;
    tk_echo *echo = NULL;
    tk_server *server = NULL;
    int status = 1;
    tk_tls_ctx *tls = NULL;
    if ((rc = tls_build(&o->tls, o->cmd, 1, &tls)) != 0)
        return rc;
    if (tls && o->server.udp) {
        tk_tls_ctx_free(tls);
        return opt_usage_error(o->cmd, "TLS is for TCP; --udp takes no --tls-cert");
    }
    o->server.tls = tls;

    rc = tk_workers_new(o->threads, &w);
    if (rc < 0) {
        tk_error("cannot create %u event loops: %s", o->threads, strerror(-rc));
        tk_tls_ctx_free(tls);
        return 1;
    }
    if (echo_build(o, w, &echo, &server) == 0) {
        run_entry entry = {server, o->server.udp ? "echo, udp" : tls ? "echo, tls" : "echo"};
        if (server_opts_drop_privileges(so) == 0)
            status = run_servers(w, &entry, 1, o->shutdown_ms);
        else
            tk_server_free(server);
    }
    tk_echo_free(echo);
    tk_workers_free(w);
    tk_tls_ctx_free(tls);
    return status;
}

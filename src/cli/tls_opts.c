/* TLS options shared by server and client commands. */
#include <stdio.h>
#include <string.h>

#include "cli/opts.h"
#include "cli/tls_opts.h"
#include "tcpkit/log.h"

void tls_opts_init(tls_opts *o)
{
    memset(o, 0, sizeof(*o));
    tk_tls_config_init(&o->cfg);
}

int tls_option(tls_opts *o, const char *cmd, int ch, const char *arg)
{
    uint32_t ms;
    switch (ch) {
    case OPT_TLS: o->enabled = 1; return 0;
    case OPT_TLS_CERT: o->cfg.cert_file = arg; break;
    case OPT_TLS_KEY: o->cfg.key_file = arg; break;
    case OPT_TLS_CLIENT_CA:
    case OPT_TLS_CA: o->cfg.ca_file = arg; break;
    case OPT_TLS_INSECURE: o->cfg.insecure = 1; break;
    case OPT_TLS_SERVER_NAME:
        if (!*arg)
            return opt_usage_error(cmd, "bad --tls-server-name: empty");
        o->server_name = arg;
        break;
    case OPT_TLS_HANDSHAKE_TIMEOUT:
        if (tk_parse_duration_ms(arg, &ms) < 0 || ms == 0)
            return opt_usage_error(cmd, "bad --tls-handshake-timeout '%s' (seconds, not 0)", arg);
        o->cfg.handshake_timeout_ms = ms;
        return 0;
    case OPT_TLS_MIN_VERSION:
        if (strcmp(arg, "1.2") == 0)
            o->cfg.min_version = 0x0303;
        else if (strcmp(arg, "1.3") == 0)
            o->cfg.min_version = 0x0304;
        else
            return opt_usage_error(cmd, "bad --tls-min-version '%s' (1.2 or 1.3)", arg);
        return 0;
    default: return -1;
    }
    /* Any file, name or verification choice implies TLS for a client; for a
     * server, the certificate is what turns it on (checked in tls_build). */
    o->enabled = 1;
    return 0;
}

int tls_build(tls_opts *o, const char *cmd, int is_server, tk_tls_ctx **out)
{
    *out = NULL;
    if (is_server) {
        if (!o->cfg.cert_file && !o->cfg.key_file) {
            if (o->cfg.ca_file) {
                fprintf(stderr, "tcpkit %s: --tls-client-ca needs --tls-cert and --tls-key\n", cmd);
                return 2;
            }
            return 0;
        }
        if (!o->cfg.cert_file || !o->cfg.key_file) {
            fprintf(stderr, "tcpkit %s: --tls-cert and --tls-key go together\n", cmd);
            return 2;
        }
    } else if (!o->enabled) {
        return 0;
    } else if (!o->cfg.cert_file != !o->cfg.key_file) {
        fprintf(stderr, "tcpkit %s: %s\n", cmd,
                o->cfg.cert_file ? "--tls-cert needs --tls-key" : "--tls-key needs --tls-cert");
        return 2;
    }
    char err[512];
    if (tk_tls_ctx_new(&o->cfg, is_server, out, err, sizeof(err)) < 0) {
        fprintf(stderr, "tcpkit %s: %s\n", cmd, err);
        return 1;
    }
    if (is_server && o->cfg.ktls && tk_tls_kernel_available() == 0)
        tk_info("tls: this kernel has no kernel TLS ('tls' module): records are encrypted in "
                "user space, and file downloads take one copy more than plain ones");
    return 0;
}

const char *tls_peer_name(const tls_opts *o, const char *target, char *buf)
{
    int port;
    if (o->server_name)
        return o->server_name;
    if (tk_addr_split(target, buf, &port) < 0 || !*buf)
        snprintf(buf, TK_HOST_MAX, "localhost");
    return buf;
}

/* The TLS options every server command and every client command takes, and
 * the code that turns them into a TLS context. */
#ifndef TK_CLI_TLS_OPTS_H
#define TK_CLI_TLS_OPTS_H

#include <getopt.h>

#include "tcpkit/addr.h"
#include "tcpkit/tls.h"

enum {
    OPT_TLS_CERT = 3200,
    OPT_TLS_KEY,
    OPT_TLS_CLIENT_CA,
    OPT_TLS_HANDSHAKE_TIMEOUT,
    OPT_TLS_MIN_VERSION,
    OPT_TLS = 3300,
    OPT_TLS_CA,
    OPT_TLS_INSECURE,
    OPT_TLS_SERVER_NAME,
};

/* Server commands: a certificate and key turn TLS on for every TCP listener. */
#define TLS_SERVER_LONGOPTS                                                                        \
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},                                           \
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},                                         \
        {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},                             \
        {"tls-handshake-timeout", required_argument, NULL, OPT_TLS_HANDSHAKE_TIMEOUT},             \
    {                                                                                              \
        "tls-min-version", required_argument, NULL, OPT_TLS_MIN_VERSION                            \
    }

/* Client commands: --tls, or any option that only makes sense with it. */
#define TLS_CLIENT_LONGOPTS                                                                        \
    {"tls", no_argument, NULL, OPT_TLS}, {"tls-ca", required_argument, NULL, OPT_TLS_CA},          \
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},                                       \
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},                                         \
        {"tls-insecure", no_argument, NULL, OPT_TLS_INSECURE},                                     \
        {"tls-server-name", required_argument, NULL, OPT_TLS_SERVER_NAME},                         \
        {"tls-handshake-timeout", required_argument, NULL, OPT_TLS_HANDSHAKE_TIMEOUT},             \
    {                                                                                              \
        "tls-min-version", required_argument, NULL, OPT_TLS_MIN_VERSION                            \
    }

/* Help text for the two sets. */
#define TLS_SERVER_HELP                                                                            \
    "      --tls-cert FILE       serve TLS with this PEM certificate chain (needs --tls-key)\n"    \
    "      --tls-key FILE        the certificate's PEM private key\n"                              \
    "      --tls-client-ca FILE  require client certificates signed by these CAs (mutual TLS)\n"   \
    "      --tls-handshake-timeout S  close clients whose handshake takes longer (default 10)\n"   \
    "      --tls-min-version V   1.2 (default) or 1.3\n"

#define TLS_CLIENT_HELP                                                                            \
    "      --tls                 speak TLS; the server is verified against the system CAs\n"       \
    "      --tls-ca FILE         trust these PEM CAs instead of the system store\n"                \
    "      --tls-cert FILE       present this client certificate (with --tls-key)\n"               \
    "      --tls-key FILE        the client certificate's private key\n"                           \
    "      --tls-server-name N   the name to send (SNI) and verify (default: the host given)\n"    \
    "      --tls-insecure        do not verify the server at all (testing only)\n"                 \
    "      --tls-handshake-timeout S  give up on a handshake after S seconds (default 10)\n"       \
    "      --tls-min-version V   1.2 (default) or 1.3\n"

typedef struct {
    int enabled; /* client: --tls or an option implying it; server: a certificate given */
    tk_tls_config cfg;
    const char *server_name; /* client: overrides the host for SNI and verification */
} tls_opts;

/* Defaults: TLS off, the library's policy. */
void tls_opts_init(tls_opts *o);

/* Applies one parsed option: 0, 2 after printing a usage error, or -1 if ch
 * is not a TLS option. */
int tls_option(tls_opts *o, const char *cmd, int ch, const char *arg);

/* Builds the context when TLS is on (*out NULL when off): 0, or 1 after
 * printing why (a file that cannot be read, a key that does not match). */
int tls_build(tls_opts *o, const char *cmd, int is_server, tk_tls_ctx **out);

/* The name a client connecting to target ("HOST:PORT", "[v6]:PORT" or
 * ":PORT") verifies and sends: --tls-server-name if given, else the host
 * ("localhost" when empty). buf holds TK_HOST_MAX bytes. */
const char *tls_peer_name(const tls_opts *o, const char *target, char *buf);

#endif

/* The echo service: a line protocol with commands, a length-prefixed framing
 * and a JSON-lines framing over TCP, and datagram echo over UDP. It plugs into
 * tk_server; it parses no command line and never exits the process. */
#ifndef TCPKIT_ECHO_H
#define TCPKIT_ECHO_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/metrics.h"
#include "tcpkit/server.h"
#include "tcpkit/sock.h"
#include "tcpkit/workers.h"

typedef enum {
    TK_ECHO_FRAMING_LINE = 0,
    TK_ECHO_FRAMING_LENGTH = 1,
    TK_ECHO_FRAMING_JSON = 2,
} tk_echo_framing;

typedef struct {
    tk_echo_framing framing;
    int strict;                /* unknown command words get an error */
    const char *banner;        /* sent on connect (line/JSON), or NULL */
    size_t max_line;           /* line and JSON limit, bytes (64 KiB) */
    size_t max_frame;          /* length-framing limit, bytes (1 MiB) */
    uint32_t idle_timeout_ms;  /* 300 s */
    uint32_t stall_timeout_ms; /* 30 s */
    size_t out_high;           /* output watermark, bytes (256 KiB) */
    size_t out_max;            /* output hard limit, bytes (4 MiB) */
    tk_sockopts sockopts;      /* applied to each client socket */
} tk_echo_config;

typedef struct tk_echo tk_echo;

/* Fills the documented defaults. */
void tk_echo_config_init(tk_echo_config *c);

/* Creates the service for the loops of w; 0 or a negative errno. The banner
 * string must outlive the service. */
int tk_echo_new(const tk_echo_config *c, tk_workers *w, tk_echo **out);

/* The callbacks to pass to tk_server_open() with the service as svc. */
const tk_service_ops *tk_echo_ops(void);

/* Tells the service which server feeds it (for the client limit and shutdown
 * accounting); call before the loops start. */
void tk_echo_set_server(tk_echo *e, tk_server *s);

/* The refusal sent to a client over the client limit, framed for the
 * service's framing; pass it as tk_server_config's busy_msg. */
const void *tk_echo_busy_message(const tk_echo *e, size_t *len);

/* The service's counters. */
tk_metrics *tk_echo_metrics(tk_echo *e);

/* Frees the service; its loops must have stopped. */
void tk_echo_free(tk_echo *e);

/* What a line asks for (exposed for tests and fuzzing). */
typedef enum {
    TK_ECHO_CMD_PLAIN = 0, /* not a command: echo it */
    TK_ECHO_CMD_ECHO,
    TK_ECHO_CMD_UPPER,
    TK_ECHO_CMD_LOWER,
    TK_ECHO_CMD_REVERSE,
    TK_ECHO_CMD_TIME,
    TK_ECHO_CMD_STATS,
    TK_ECHO_CMD_QUIT,
    TK_ECHO_CMD_UNKNOWN, /* only from tk_echo_cmd_by_name */
} tk_echo_cmd;

/* Classifies a line: a command when its first word is exactly a command name
 * (upper case; "quit" is also QUIT), with the argument after one space;
 * otherwise TK_ECHO_CMD_PLAIN with the whole line as argument. */
tk_echo_cmd tk_echo_parse(const unsigned char *line, size_t len, const unsigned char **arg,
                          size_t *arg_len);

/* Looks up a command by its exact name (upper case, plus "quit" for QUIT);
 * TK_ECHO_CMD_UNKNOWN if none. */
tk_echo_cmd tk_echo_cmd_by_name(const char *name, size_t len);

#endif

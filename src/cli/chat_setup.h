/* Chat options shared by `chat-server` and `serve`, and the code that builds
 * the chat service on a worker pool. */
#ifndef TK_CLI_CHAT_SETUP_H
#define TK_CLI_CHAT_SETUP_H

#include <getopt.h>
#include <stdint.h>

#include "tcpkit/chat.h"
#include "tcpkit/server.h"
#include "tcpkit/workers.h"

typedef struct {
    const char *cmd; /* for messages */
    tk_chat_config chat;
    tk_server_config server;
    uint32_t shutdown_ms;
    int ephemeral;
    const char *log_level;
    const char *log_format;
    char db_default[4096]; /* the default database path, when one is used */
} chat_options;

/* Defaults for every option. */
void chat_options_init(chat_options *o, const char *cmd);

/* Fills the database path: --db, --ephemeral, or the default under
 * $XDG_STATE_HOME (creating the directory). 0, or 1 after printing why not. */
int chat_options_finish(chat_options *o);

/* Creates the chat service on loop 0 of w and its server. 0, or 1 after
 * logging the error (nothing is left to free then). */
int chat_build(chat_options *o, tk_workers *w, tk_chat **chat, tk_server **server);

/* tcpkit chat-server. */
int chat_server_main(int argc, char **argv);

#endif

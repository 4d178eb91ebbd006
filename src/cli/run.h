/* Running servers in the foreground until a signal, for every server command. */
#ifndef TK_CLI_RUN_H
#define TK_CLI_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/server.h"

typedef struct {
    tk_server *server;
    const char *label; /* printed after each address: "echo", "echo, udp" */
} run_entry;

/* Prints "listening on ADDR (label)" for every bound address, starts the
 * worker threads and serves until SIGINT or SIGTERM; then shuts every server
 * down gracefully within shutdown_ms. A second signal exits at once with
 * status 1. Frees the servers. Returns the exit status (0 after a clean
 * shutdown). Must be called before any thread is started. */
int run_servers(tk_workers *w, run_entry *servers, size_t n, uint32_t shutdown_ms);

/* run_servers, and on SIGHUP calls on_hup(hup_arg) on the main thread (not
 * once a shutdown has begun). */
int run_servers_reloadable(tk_workers *w, run_entry *servers, size_t n, uint32_t shutdown_ms,
                           void (*on_hup)(void *arg), void *hup_arg);

#endif

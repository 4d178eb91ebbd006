/* The foreground life of a server process: announce, serve, drain, exit. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/run.h"
#include "tcpkit/log.h"

typedef struct {
    tk_loop *main;
    run_entry *servers;
    size_t n;
    size_t done;
    uint32_t shutdown_ms;
    int signalled;
    void (*on_hup)(void *arg);
    void *hup_arg;
} run_state;

static void one_done(void *arg)
{
    run_state *st = arg;
    if (++st->done == st->n)
        tk_loop_stop(st->main);
}

static void on_signal(tk_loop *loop, int signo, void *arg)
{
    run_state *st = arg;
    if (signo == SIGHUP) {
        if (st->on_hup && !st->signalled)
            st->on_hup(st->hup_arg);
        return;
    }
    if (st->signalled) {
        static const char msg[] = "second signal: exiting now\n";
        (void)!write(2, msg, sizeof(msg) - 1);
        _exit(1);
    }
    st->signalled = 1;
    tk_info("%s: shutting down (up to %u ms)", strsignal(signo), st->shutdown_ms);
    for (size_t i = 0; i < st->n; i++)
        tk_server_shutdown(st->servers[i].server, loop, st->shutdown_ms, one_done, st);
}

int run_servers(tk_workers *w, run_entry *servers, size_t n, uint32_t shutdown_ms)
{
    return run_servers_reloadable(w, servers, n, shutdown_ms, NULL, NULL);
}

int run_servers_reloadable(tk_workers *w, run_entry *servers, size_t n, uint32_t shutdown_ms,
                           void (*on_hup)(void *arg), void *hup_arg)
{
    static const int signals[] = {SIGINT, SIGTERM, SIGHUP};
    run_state st = {.servers = servers,
                    .n = n,
                    .shutdown_ms = shutdown_ms,
                    .on_hup = on_hup,
                    .hup_arg = hup_arg};
    int status = 1;

    signal(SIGPIPE, SIG_IGN);
    if (tk_loop_new(&st.main) < 0) {
        tk_error("cannot create the main loop");
        goto out;
    }
    /* Blocked here, before the workers start, so every thread inherits the
     * mask and the signals arrive only through the main loop's signalfd. */
    if (tk_loop_watch_signals(st.main, signals, on_hup ? 3 : 2, on_signal, &st) < 0) {
        tk_error("cannot watch signals");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < tk_server_bound_count(servers[i].server); j++) {
            char addr[TK_ADDR_STRLEN];
            tk_addr_format(tk_server_bound(servers[i].server, j), addr, sizeof(addr));
            printf("listening on %s (%s)\n", addr, servers[i].label);
        }
    }
    fflush(stdout);
    if (tk_workers_start(w) < 0) {
        tk_error("cannot start worker threads");
        goto out;
    }
    status = tk_loop_run(st.main) < 0 ? 1 : 0;
    tk_workers_stop(w);
    if (status == 0)
        tk_info("shutdown complete");
out:
    for (size_t i = 0; i < n; i++)
        tk_server_free(servers[i].server);
    tk_loop_free(st.main);
    return status;
}

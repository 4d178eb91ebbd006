/* A fixed pool of loops, each run by its own thread. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "tcpkit/workers.h"

typedef struct {
    tk_loop *loop;
    pthread_t thread;
    int started;
} worker;

struct tk_workers {
    unsigned n;
    worker *w;
};

unsigned tk_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int tk_workers_new(unsigned n, tk_workers **out)
{
    if (n == 0)
        return -EINVAL;
    tk_workers *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return -ENOMEM;
    ws->w = calloc(n, sizeof(worker));
    if (!ws->w) {
        free(ws);
        return -ENOMEM;
    }
    ws->n = n;
    for (unsigned i = 0; i < n; i++) {
        int err = tk_loop_new(&ws->w[i].loop);
        if (err < 0) {
            tk_workers_free(ws);
            return err;
        }
    }
    *out = ws;
    return 0;
}

unsigned tk_workers_count(const tk_workers *w)
{
    return w->n;
}

tk_loop *tk_workers_loop(tk_workers *w, unsigned i)
{
    return w->w[i].loop;
}

static void *run(void *arg)
{
    tk_loop_run(arg);
    return NULL;
}

int tk_workers_start(tk_workers *ws)
{
    for (unsigned i = 0; i < ws->n; i++) {
        int err = pthread_create(&ws->w[i].thread, NULL, run, ws->w[i].loop);
        if (err) {
            tk_workers_stop(ws);
            return -err;
        }
        ws->w[i].started = 1;
    }
    return 0;
}

void tk_workers_stop(tk_workers *ws)
{
    for (unsigned i = 0; i < ws->n; i++)
        if (ws->w[i].started)
            tk_loop_stop(ws->w[i].loop);
    for (unsigned i = 0; i < ws->n; i++) {
        if (ws->w[i].started) {
            pthread_join(ws->w[i].thread, NULL);
            ws->w[i].started = 0;
        }
    }
}

void tk_workers_free(tk_workers *ws)
{
    if (!ws)
        return;
    for (unsigned i = 0; i < ws->n; i++)
        tk_loop_free(ws->w[i].loop);
    free(ws->w);
    free(ws);
}

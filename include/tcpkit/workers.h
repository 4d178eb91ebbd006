/* A pool of event loops, one per thread. Services attach listeners and
 * connections to these loops; the thread that owns the pool keeps its own
 * loop for signals and orchestration. */
#ifndef TCPKIT_WORKERS_H
#define TCPKIT_WORKERS_H

#include "tcpkit/loop.h"

typedef struct tk_workers tk_workers;

/* Creates n loops (threads are not started yet); 0 or a negative errno. */
int tk_workers_new(unsigned n, tk_workers **out);

/* Number of loops. */
unsigned tk_workers_count(const tk_workers *w);

/* Loop i (0 <= i < count). */
tk_loop *tk_workers_loop(tk_workers *w, unsigned i);

/* Starts one thread per loop; 0 or a negative errno (threads already started
 * are stopped and joined). */
int tk_workers_start(tk_workers *w);

/* Stops every loop and joins the threads. */
void tk_workers_stop(tk_workers *w);

/* Frees the loops; call after tk_workers_stop(). */
void tk_workers_free(tk_workers *w);

/* The number of online CPUs, at least 1. */
unsigned tk_cpu_count(void);

#endif

/* The poller interface every OS backend implements (epoll today; kqueue can be
 * added as one more file without touching the loop). */
#ifndef TK_LOOP_BACKEND_H
#define TK_LOOP_BACKEND_H

#include "tcpkit/loop.h"

typedef struct tk_backend tk_backend;

/* One ready descriptor as reported by the backend. */
typedef struct {
    tk_io *io;
    unsigned events;
} tk_ready;

/* Creates the backend; returns 0 or a negative errno. */
int tk_backend_new(tk_backend **out);

/* Releases the backend and its descriptor. */
void tk_backend_free(tk_backend *b);

/* Changes io's registered interest from io->events to events (0 removes). */
int tk_backend_ctl(tk_backend *b, tk_io *io, unsigned events);

/* Waits up to timeout_ms (-1: forever) and fills at most cap entries of out.
 * Returns the count, or a negative errno (-EINTR is reported as 0). */
int tk_backend_poll(tk_backend *b, int timeout_ms, tk_ready *out, int cap);

#endif

/* tcpkit event loop: descriptor watchers, timers, signals, deferred work and
 * cross-thread posting. One loop runs on one thread; only tk_loop_post() and
 * tk_loop_stop() may be called from other threads.
 *
 * Handles (tk_io, tk_timer, tk_defer) are embedded in caller-owned structs so
 * the hot path allocates nothing. Their fields are private to the library. */
#ifndef TCPKIT_LOOP_H
#define TCPKIT_LOOP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tk_loop tk_loop;

/* Readiness bits passed to and reported by descriptor watchers. */
enum {
    TK_READ = 1u << 0,
    TK_WRITE = 1u << 1,
    TK_HUP = 1u << 2, /* peer hung up or the socket failed; as the only
                         interest: watch for that alone */
};

typedef struct tk_io tk_io;
typedef void (*tk_io_cb)(tk_loop *loop, tk_io *io, unsigned events);

/* A descriptor watcher. Private fields. */
struct tk_io {
    int fd;
    unsigned events;    /* interest currently registered with the backend */
    unsigned char live; /* registered with the backend */
    tk_io_cb cb;
};

typedef struct tk_timer tk_timer;
typedef void (*tk_timer_cb)(tk_loop *loop, tk_timer *t);

/* A one-shot timer kept in the loop's min-heap. Private fields. */
struct tk_timer {
    uint64_t deadline_ms;
    uint64_t seq;      /* breaks ties so equal deadlines fire in start order */
    size_t heap_index; /* SIZE_MAX while stopped */
    tk_timer_cb cb;
};

typedef struct tk_defer tk_defer;
typedef void (*tk_defer_cb)(tk_loop *loop, tk_defer *d);

/* Work queued to run once, after the current batch of events and before the
 * loop next waits. Private fields. */
struct tk_defer {
    tk_defer *next;
    unsigned char queued;
    tk_defer_cb cb;
};

typedef void (*tk_post_fn)(tk_loop *loop, void *arg);
typedef void (*tk_signal_cb)(tk_loop *loop, int signo, void *arg);

/* Creates a loop; returns 0 and stores it in *out, or a negative errno. */
int tk_loop_new(tk_loop **out);

/* Frees the loop: runs deferred work still queued, drops pending posts.
 * Watchers must have been stopped. */
void tk_loop_free(tk_loop *loop);

/* Runs until tk_loop_stop() is called; returns 0 or a negative errno. */
int tk_loop_run(tk_loop *loop);

/* Runs the deferred work queued so far, now; for a loop that is not running
 * (cleanup after tk_loop_run() returned). */
void tk_loop_run_pending(tk_loop *loop);

/* Makes tk_loop_run() return after the current iteration; thread-safe. */
void tk_loop_stop(tk_loop *loop);

/* Monotonic milliseconds, cached once per loop iteration. */
uint64_t tk_loop_now(const tk_loop *loop);

/* Refreshes the cached time (for callbacks that ran a long time). */
void tk_loop_update_time(tk_loop *loop);

/* Monotonic clock in microseconds, read now (not cached). */
uint64_t tk_clock_us(void);

/* A per-loop scratch buffer of tk_loop_scratch_size(loop) bytes, valid only until
 * the calling callback returns. tk_conn reads into it: code running inside a
 * connection's on_data must not use it. */
unsigned char *tk_loop_scratch(tk_loop *loop);
size_t tk_loop_scratch_size(const tk_loop *loop);

/* Sets the scratch buffer's size (64 KiB by default, up to 16 MiB): the most
 * a connection reads with one recv(). A bulk receiver reads fewer, larger
 * pieces with a larger one. Call before the loop has connections. Returns
 * 0, -EINVAL or -ENOMEM (the old buffer stays). */
int tk_loop_set_scratch_size(tk_loop *loop, size_t size);

/* An opaque pointer the embedding application may attach to the loop. */
void tk_loop_set_data(tk_loop *loop, void *data);
void *tk_loop_data(const tk_loop *loop);

/* Prepares a watcher for fd; it is not yet registered. */
void tk_io_init(tk_io *io, int fd, tk_io_cb cb);

/* Sets the interest set (TK_READ|TK_WRITE, or TK_HUP alone to hear only of
 * errors and hang-ups, which every registered watcher hears); 0
 * unregisters. Returns 0 or -errno. */
int tk_io_set(tk_loop *loop, tk_io *io, unsigned events);

/* Unregisters the watcher; events already collected for it this turn are
 * discarded. Does not close the descriptor. */
void tk_io_stop(tk_loop *loop, tk_io *io);

/* Prepares a stopped timer. */
void tk_timer_init(tk_timer *t, tk_timer_cb cb);

/* (Re)arms the timer to fire once, ms milliseconds from the cached now.
 * Returns 0, or -ENOMEM if a stopped timer could not be added. Re-arming an
 * armed timer never fails. */
int tk_timer_start(tk_loop *loop, tk_timer *t, uint64_t ms);

/* Disarms the timer; harmless if it is not armed. */
void tk_timer_stop(tk_loop *loop, tk_timer *t);

/* True while the timer is armed. */
int tk_timer_active(const tk_timer *t);

/* Number of armed timers (for tests and stats). */
size_t tk_loop_timer_count(const tk_loop *loop);

/* Prepares a deferred-work handle. */
void tk_defer_init(tk_defer *d, tk_defer_cb cb);

/* Queues d to run before the loop next waits; queuing twice runs it once. */
void tk_defer_queue(tk_loop *loop, tk_defer *d);

/* Removes d from the queue if it is queued. */
void tk_defer_cancel(tk_loop *loop, tk_defer *d);

/* Runs fn(loop, arg) on the loop's thread; callable from any thread. Returns 0
 * or -ENOMEM. */
int tk_loop_post(tk_loop *loop, tk_post_fn fn, void *arg);

/* Blocks the given signals in the calling thread (call before starting other
 * threads so they inherit the mask) and delivers them to cb on this loop
 * through a signalfd. Returns 0 or a negative errno. */
int tk_loop_watch_signals(tk_loop *loop, const int *signals, size_t n, tk_signal_cb cb, void *arg);

#endif

/* tk_loop timers, deferred work and cross-thread posting. Every test that runs
 * the loop arms a watchdog timer that stops it and marks the test failed, so a
 * lost wake-up fails in seconds instead of hanging. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/loop.h"

#define WATCHDOG_MS 5000
#define MAX_LOG     64

typedef struct {
    tk_loop *loop;
    tk_timer watchdog;
    int watchdog_fired;
    int log[MAX_LOG]; /* ids in the order their callbacks ran */
    int nlog;
    int stop_after; /* stop the loop once this many entries are logged */
    void *user;     /* per-test extra state */
} ctx;

/* A timer that knows its test context and an id; the tk_timer comes first so
 * a callback can cast back to it. */
typedef struct {
    tk_timer t;
    ctx *c;
    int id;
    int fired;
} labeled_timer;

static void on_watchdog(tk_loop *loop, tk_timer *t)
{
    (void)t;
    ctx *c = tk_loop_data(loop);
    c->watchdog_fired = 1;
    tk_loop_stop(loop);
}

static void ctx_open(ctx *c)
{
    memset(c, 0, sizeof(*c));
    assert_int_equal(tk_loop_new(&c->loop), 0);
    tk_loop_set_data(c->loop, c);
    tk_timer_init(&c->watchdog, on_watchdog);
    assert_int_equal(tk_timer_start(c->loop, &c->watchdog, WATCHDOG_MS), 0);
}

/* Runs the loop, then disarms the watchdog and checks it did not fire. */
static void ctx_run(ctx *c)
{
    assert_int_equal(tk_loop_run(c->loop), 0);
    tk_timer_stop(c->loop, &c->watchdog);
    assert_false(c->watchdog_fired);
}

static void ctx_close(ctx *c)
{
    tk_timer_stop(c->loop, &c->watchdog);
    tk_loop_free(c->loop);
}

static void log_id(ctx *c, int id)
{
    assert_true(c->nlog < MAX_LOG);
    c->log[c->nlog++] = id;
    if (c->nlog == c->stop_after)
        tk_loop_stop(c->loop);
}

static void on_labeled(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    labeled_timer *lt = (labeled_timer *)t;
    assert_false(tk_timer_active(t)); /* a firing timer is already disarmed */
    lt->fired++;
    log_id(lt->c, lt->id);
}

static void arm(ctx *c, labeled_timer *lt, int id, uint64_t ms)
{
    lt->c = c;
    lt->id = id;
    lt->fired = 0;
    tk_timer_init(&lt->t, on_labeled);
    assert_int_equal(tk_timer_start(c->loop, &lt->t, ms), 0);
    assert_true(tk_timer_active(&lt->t));
}

/* Timers fire by deadline, and timers with the same deadline in the order they
 * were started. */
static void timers_fire_by_deadline_then_start_order(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    labeled_timer t[6];
    const uint64_t ms[6] = {30, 10, 20, 0, 10, 10};
    for (int i = 0; i < 6; i++)
        arm(&c, &t[i], i, ms[i]);
    assert_int_equal(tk_loop_timer_count(c.loop), 7); /* six plus the watchdog */
    c.stop_after = 6;
    ctx_run(&c);
    const int want[6] = {3, 1, 4, 5, 2, 0};
    assert_memory_equal(c.log, want, sizeof(want));
    for (int i = 0; i < 6; i++)
        assert_int_equal(t[i].fired, 1);
    assert_int_equal(tk_loop_timer_count(c.loop), 0);
    ctx_close(&c);
}

/* Re-arming a timer gives it a new start order: it now fires after timers
 * started earlier for the same deadline. */
static void rearm_moves_timer_behind_equal_deadlines(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    labeled_timer t[3];
    for (int i = 0; i < 3; i++)
        arm(&c, &t[i], i, 5);
    assert_int_equal(tk_timer_start(c.loop, &t[0].t, 5), 0);
    c.stop_after = 3;
    ctx_run(&c);
    const int want[3] = {1, 2, 0};
    assert_memory_equal(c.log, want, sizeof(want));
    ctx_close(&c);
}

/* A stopped timer does not fire and leaves the count; restarted, it fires. */
static void stop_then_restart(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    labeled_timer a, b;
    arm(&c, &a, 1, 0);
    arm(&c, &b, 2, 0);
    tk_timer_stop(c.loop, &a.t);
    assert_false(tk_timer_active(&a.t));
    tk_timer_stop(c.loop, &a.t); /* harmless when already stopped */
    assert_int_equal(tk_loop_timer_count(c.loop), 2);
    c.stop_after = 1;
    ctx_run(&c);
    assert_int_equal(c.log[0], 2);
    assert_int_equal(a.fired, 0);

    assert_int_equal(tk_timer_start(c.loop, &c.watchdog, WATCHDOG_MS), 0);
    assert_int_equal(tk_timer_start(c.loop, &a.t, 0), 0);
    c.stop_after = 2;
    ctx_run(&c);
    assert_int_equal(c.nlog, 2);
    assert_int_equal(c.log[1], 1);
    assert_int_equal(a.fired, 1);
    ctx_close(&c);
}

/* Re-arming an armed timer replaces its deadline: it stays one timer and
 * fires once, at the new time. */
static void rearm_armed_timer_replaces_deadline(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    labeled_timer a;
    arm(&c, &a, 7, 60 * 60 * 1000);
    assert_int_equal(tk_loop_timer_count(c.loop), 2);
    assert_int_equal(tk_timer_start(c.loop, &a.t, 0), 0);
    assert_int_equal(tk_timer_start(c.loop, &a.t, 1), 0);
    assert_int_equal(tk_loop_timer_count(c.loop), 2);
    c.stop_after = 1;
    ctx_run(&c);
    assert_int_equal(a.fired, 1);
    assert_false(tk_timer_active(&a.t));
    assert_int_equal(tk_loop_timer_count(c.loop), 0);
    ctx_close(&c);
}

/* Many timers for the big test: they record firing order in a shared array. */
typedef struct {
    tk_timer t;
    uint32_t index;
    uint32_t ms;
} many_timer;

typedef struct {
    uint32_t *order;
    size_t fired;
    size_t expect;
} many_log;

static void on_many(tk_loop *loop, tk_timer *t)
{
    ctx *c = tk_loop_data(loop);
    many_log *ml = c->user;
    ml->order[ml->fired++] = ((many_timer *)t)->index;
    if (ml->fired == ml->expect)
        tk_loop_stop(loop);
}

/* 100,000 timers can be armed and stopped in any order, leaving none; half of
 * them stopped, the other half fire in deadline then start order. */
static void hundred_thousand_timers(void **state)
{
    (void)state;
    enum { N = 100000 };
    ctx c;
    ctx_open(&c);
    many_timer *t = calloc(N, sizeof(*t));
    uint32_t *order = calloc(N, sizeof(*order));
    assert_non_null(t);
    assert_non_null(order);
    for (uint32_t i = 0; i < N; i++) {
        t[i].index = i;
        t[i].ms = 3600 * 1000 + (i * 7919u) % 1000;
        tk_timer_init(&t[i].t, on_many);
        assert_int_equal(tk_timer_start(c.loop, &t[i].t, t[i].ms), 0);
    }
    assert_int_equal(tk_loop_timer_count(c.loop), N + 1);
    /* Stop them in a scrambled order (7919 is prime, so this visits all). */
    for (uint32_t k = 0; k < N; k++)
        tk_timer_stop(c.loop, &t[(k * 7919u) % N].t);
    assert_int_equal(tk_loop_timer_count(c.loop), 1);

    for (uint32_t i = 0; i < N; i++) {
        t[i].ms = (i * 7919u) % 40;
        assert_int_equal(tk_timer_start(c.loop, &t[i].t, t[i].ms), 0);
    }
    for (uint32_t i = 1; i < N; i += 2)
        tk_timer_stop(c.loop, &t[i].t);
    assert_int_equal(tk_loop_timer_count(c.loop), N / 2 + 1);

    many_log ml = {order, 0, N / 2};
    c.user = &ml;
    ctx_run(&c);
    assert_int_equal(ml.fired, N / 2);
    for (size_t k = 0; k < N / 2; k++) {
        assert_int_equal(order[k] % 2, 0);
        if (k == 0)
            continue;
        const many_timer *prev = &t[order[k - 1]], *cur = &t[order[k]];
        assert_true(prev->ms < cur->ms || (prev->ms == cur->ms && prev->index < cur->index));
    }
    assert_int_equal(tk_loop_timer_count(c.loop), 0);
    ctx_close(&c);
    free(order);
    free(t);
}

/* The starvation test: one timer re-arms itself for 0 ms on every firing and
 * queues a defer; a second timer stops the loop. */
typedef struct {
    tk_timer spinner;
    tk_timer stopper;
    tk_defer marker;
    int spins;
    int streak; /* spinner firings since the marker last ran */
    int starved;
    int stopped;
} spin_ctx;

static spin_ctx spin;

static void on_marker(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    (void)d;
    spin.streak = 0;
}

static void on_spinner(tk_loop *loop, tk_timer *t)
{
    spin.spins++;
    if (++spin.streak > 1000) {
        /* Fired a thousand times without the loop getting back to its
         * deferred work: the loop is stuck in this timer. */
        spin.starved = 1;
        tk_loop_stop(loop);
        return;
    }
    tk_defer_queue(loop, &spin.marker);
    assert_int_equal(tk_timer_start(loop, t, 0), 0);
}

static void on_stopper(tk_loop *loop, tk_timer *t)
{
    (void)t;
    spin.stopped = 1;
    tk_timer_stop(loop, &spin.spinner);
    tk_loop_stop(loop);
}

/* A timer that re-arms itself for 0 ms from its own callback runs once per
 * loop turn and does not keep a later timer from firing. */
static void zero_ms_rearm_does_not_starve_loop(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    memset(&spin, 0, sizeof(spin));
    tk_timer_init(&spin.spinner, on_spinner);
    tk_timer_init(&spin.stopper, on_stopper);
    tk_defer_init(&spin.marker, on_marker);
    assert_int_equal(tk_timer_start(c.loop, &spin.spinner, 0), 0);
    assert_int_equal(tk_timer_start(c.loop, &spin.stopper, 3), 0);
    ctx_run(&c);
    assert_false(spin.starved);
    assert_true(spin.stopped);
    assert_true(spin.spins > 1);
    assert_int_equal(tk_loop_timer_count(c.loop), 0);
    ctx_close(&c);
}

/* Deferred work for the defer tests. */
typedef struct labeled_defer_s {
    tk_defer d;
    ctx *c;
    int id;
    int runs;
    int requeue;                    /* queue itself again this many times */
    struct labeled_defer_s *cancel; /* cancel this one when run */
} labeled_defer;

static void on_defer(tk_loop *loop, tk_defer *d)
{
    labeled_defer *ld = (labeled_defer *)d;
    ld->runs++;
    log_id(ld->c, ld->id);
    if (ld->requeue > 0) {
        ld->requeue--;
        tk_defer_queue(loop, d);
    }
    if (ld->cancel)
        tk_defer_cancel(loop, &ld->cancel->d);
}

static void init_defer(ctx *c, labeled_defer *ld, int id)
{
    memset(ld, 0, sizeof(*ld));
    ld->c = c;
    ld->id = id;
    tk_defer_init(&ld->d, on_defer);
}

/* Queuing the same work twice runs it once. */
static void defer_queued_twice_runs_once(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    labeled_defer a;
    init_defer(&c, &a, 1);
    tk_defer_queue(c.loop, &a.d);
    tk_defer_queue(c.loop, &a.d);
    labeled_timer stop;
    arm(&c, &stop, 99, 0);
    c.stop_after = 2;
    ctx_run(&c);
    assert_int_equal(a.runs, 1);
    const int want[2] = {1, 99};
    assert_memory_equal(c.log, want, sizeof(want));
    ctx_close(&c);
}

/* Work that queues itself again runs again on a later turn, once per queue. */
static void defer_requeued_from_callback_runs_again(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    labeled_defer a;
    init_defer(&c, &a, 1);
    a.requeue = 2;
    tk_defer_queue(c.loop, &a.d);
    c.stop_after = 3;
    ctx_run(&c);
    assert_int_equal(a.runs, 3);
    ctx_close(&c);
}

/* Cancelled work does not run; the rest of the queue keeps its order, and
 * work queued after cancelling the tail still runs. */
static void defer_cancel_keeps_rest_of_queue(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    labeled_defer d[4];
    for (int i = 0; i < 4; i++)
        init_defer(&c, &d[i], i);
    tk_defer_queue(c.loop, &d[0].d);
    tk_defer_queue(c.loop, &d[1].d);
    tk_defer_queue(c.loop, &d[2].d);
    tk_defer_cancel(c.loop, &d[1].d);
    tk_defer_cancel(c.loop, &d[2].d);
    tk_defer_cancel(c.loop, &d[2].d); /* harmless when not queued */
    tk_defer_queue(c.loop, &d[3].d);
    c.stop_after = 2;
    ctx_run(&c);
    const int want[2] = {0, 3};
    assert_memory_equal(c.log, want, sizeof(want));
    assert_int_equal(d[1].runs, 0);
    assert_int_equal(d[2].runs, 0);
    ctx_close(&c);
}

/* Work cancelled by other work of the same round does not run, and the work
 * after it still does (cancelling used to cut the running round short, and
 * the work behind it stayed marked queued and never ran again). */
static void defer_cancel_from_callback_keeps_round(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    labeled_defer d[4];
    for (int i = 0; i < 4; i++)
        init_defer(&c, &d[i], i);
    d[0].cancel = &d[1];
    for (int i = 0; i < 3; i++)
        tk_defer_queue(c.loop, &d[i].d);
    c.stop_after = 2;
    ctx_run(&c);
    const int want[2] = {0, 2};
    assert_memory_equal(c.log, want, sizeof(want));
    assert_int_equal(d[1].runs, 0);
    /* The cancelled work can be queued again and runs. */
    tk_defer_queue(c.loop, &d[1].d);
    tk_defer_queue(c.loop, &d[3].d);
    c.stop_after = 4;
    ctx_run(&c);
    const int want2[4] = {0, 2, 1, 3};
    assert_memory_equal(c.log, want2, sizeof(want2));
    ctx_close(&c);
}

/* Cross-thread tests: a timer on the loop starts a thread, so the loop is
 * surely running when the thread acts on it. */
typedef struct {
    ctx *c;
    tk_timer starter;
    pthread_t thread;
    int started;
    pthread_t loop_thread;
    pthread_t ran_on;
    int posts_done; /* number of posted calls that ran */
    int posts_wanted;
    int threads;
    pthread_t workers[4];
} xthread;

static xthread xt;

static void on_posted(tk_loop *loop, void *arg)
{
    (void)arg;
    xt.ran_on = pthread_self();
    if (++xt.posts_done == xt.posts_wanted)
        tk_loop_stop(loop);
}

static void *post_once(void *arg)
{
    (void)arg;
    int rc = tk_loop_post(xt.c->loop, on_posted, NULL);
    return rc == 0 ? NULL : (void *)1;
}

static void *post_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        if (tk_loop_post(xt.c->loop, on_posted, NULL) != 0)
            return (void *)1;
    return NULL;
}

static void *stop_from_thread(void *arg)
{
    (void)arg;
    tk_loop_stop(xt.c->loop);
    return NULL;
}

static void *(*xt_body)(void *);

static void on_starter(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    (void)t;
    for (int i = 0; i < xt.threads; i++)
        if (pthread_create(&xt.workers[i], NULL, xt_body, NULL) == 0)
            xt.started++;
}

static void xthread_run(ctx *c, void *(*body)(void *), int threads, int posts_wanted)
{
    memset(&xt, 0, sizeof(xt));
    xt.c = c;
    xt.loop_thread = pthread_self();
    xt.threads = threads;
    xt.posts_wanted = posts_wanted;
    xt_body = body;
    tk_timer_init(&xt.starter, on_starter);
    assert_int_equal(tk_timer_start(c->loop, &xt.starter, 0), 0);
    ctx_run(c);
    assert_int_equal(xt.started, threads);
    for (int i = 0; i < xt.started; i++) {
        void *ret;
        assert_int_equal(pthread_join(xt.workers[i], &ret), 0);
        assert_null(ret);
    }
}

/* A call posted from another thread runs on the loop's thread. */
static void post_from_thread_runs_on_loop(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    xthread_run(&c, post_once, 1, 1);
    assert_int_equal(xt.posts_done, 1);
    assert_true(pthread_equal(xt.ran_on, xt.loop_thread));
    ctx_close(&c);
}

/* Thousands of posts from several threads at once all run, none lost. */
static void posts_from_many_threads_all_run(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    xthread_run(&c, post_many, 4, 4000);
    assert_int_equal(xt.posts_done, 4000);
    ctx_close(&c);
}

/* tk_loop_stop from another thread wakes a loop blocked waiting and ends
 * tk_loop_run (long before the watchdog). */
static void stop_from_thread_ends_run(void **state)
{
    (void)state;
    ctx c;
    ctx_open(&c);
    xthread_run(&c, stop_from_thread, 1, -1);
    ctx_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timers_fire_by_deadline_then_start_order),
        cmocka_unit_test(rearm_moves_timer_behind_equal_deadlines),
        cmocka_unit_test(stop_then_restart),
        cmocka_unit_test(rearm_armed_timer_replaces_deadline),
        cmocka_unit_test(hundred_thousand_timers),
        cmocka_unit_test(zero_ms_rearm_does_not_starve_loop),
        cmocka_unit_test(defer_queued_twice_runs_once),
        cmocka_unit_test(defer_requeued_from_callback_runs_again),
        cmocka_unit_test(defer_cancel_keeps_rest_of_queue),
        cmocka_unit_test(defer_cancel_from_callback_keeps_round),
        cmocka_unit_test(post_from_thread_runs_on_loop),
        cmocka_unit_test(posts_from_many_threads_all_run),
        cmocka_unit_test(stop_from_thread_ends_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

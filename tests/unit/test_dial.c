/* tk_dial: outcomes of non-blocking connects, on sockets this test owns. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcpkit/dial.h"

typedef struct {
    int called;
    int fd;
    int err;
} outcome;

static void on_dial(tk_loop *loop, int fd, int err, void *arg)
{
    outcome *o = arg;
    o->called++;
    o->fd = fd;
    o->err = err;
    tk_loop_stop(loop);
}

/* A loopback socket bound to an ephemeral port; listening if asked. */
static int own_socket(int listening, tk_addr *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(tk_addr_parse("127.0.0.1:0", addr), 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr->ss, addr->len), 0);
    if (listening)
        assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(tk_addr_of_socket(fd, 0, addr), 0);
    return fd;
}

/* A failure known at once is still reported from the loop, never from inside
 * tk_dial_start, so the returned handle is valid when the call returns. */
static void immediate_failure_is_reported_later(void **state)
{
    (void)state;
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    tk_addr bogus;
    memset(&bogus, 0, sizeof(bogus));
    bogus.ss.ss_family = AF_UNSPEC; /* socket() refuses this family at once */
    bogus.len = sizeof(bogus.ss);
    outcome o = {0, -1, 0};
    tk_dial *d = NULL;
    assert_int_equal(tk_dial_start(loop, &bogus, 1, 1000, on_dial, &o, &d), 0);
    assert_int_equal(o.called, 0);
    assert_non_null(d);
    tk_loop_run(loop);
    assert_int_equal(o.called, 1);
    assert_int_equal(o.fd, -1);
    assert_true(o.err < 0);
    tk_loop_free(loop);
}

/* Cancelling right after the start means the callback never runs. */
static void cancel_before_the_loop_runs(void **state)
{
    (void)state;
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    tk_addr addr;
    int lfd = own_socket(1, &addr);
    outcome o = {0, -1, 0};
    tk_dial *d;
    assert_int_equal(tk_dial_start(loop, &addr, 1, 1000, on_dial, &o, &d), 0);
    tk_dial_cancel(d);
    tk_loop_run_pending(loop);
    assert_int_equal(o.called, 0);
    tk_loop_free(loop);
    close(lfd);
}

/* A listener we own answers: the callback gets a connected descriptor. */
static void connects_to_own_listener(void **state)
{
    (void)state;
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    tk_addr addr;
    int lfd = own_socket(1, &addr);
    outcome o = {0, -1, 0};
    assert_int_equal(tk_dial_start(loop, &addr, 1, 5000, on_dial, &o, NULL), 0);
    tk_loop_run(loop);
    assert_int_equal(o.called, 1);
    assert_true(o.fd >= 0);
    assert_int_equal(o.err, 0);
    close(o.fd);
    close(lfd);
    tk_loop_free(loop);
}

/* A port we hold bound but not listening refuses the connection. */
static void bound_but_not_listening_is_refused(void **state)
{
    (void)state;
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    tk_addr addr;
    int fd = own_socket(0, &addr);
    outcome o = {0, -1, 0};
    assert_int_equal(tk_dial_start(loop, &addr, 1, 5000, on_dial, &o, NULL), 0);
    tk_loop_run(loop);
    assert_int_equal(o.called, 1);
    assert_int_equal(o.fd, -1);
    assert_int_equal(o.err, -ECONNREFUSED);
    close(fd);
    tk_loop_free(loop);
}

/* With a refused address first, the next address in the list is tried. */
static void falls_through_to_the_next_address(void **state)
{
    (void)state;
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    tk_addr addrs[2];
    int dead = own_socket(0, &addrs[0]);
    int live = own_socket(1, &addrs[1]);
    outcome o = {0, -1, 0};
    assert_int_equal(tk_dial_start(loop, addrs, 2, 5000, on_dial, &o, NULL), 0);
    tk_loop_run(loop);
    assert_int_equal(o.called, 1);
    assert_true(o.fd >= 0);
    close(o.fd);
    close(dead);
    close(live);
    tk_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(immediate_failure_is_reported_later),
        cmocka_unit_test(cancel_before_the_loop_runs),
        cmocka_unit_test(connects_to_own_listener),
        cmocka_unit_test(bound_but_not_listening_is_refused),
        cmocka_unit_test(falls_through_to_the_next_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* tk_conn output queue over a socketpair this test owns. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcpkit/conn.h"
#include "tcpkit/sock.h"

static size_t ignore_input(tk_conn *c, const unsigned char *data, size_t len)
{
    (void)c;
    (void)data;
    return len;
}

static const tk_conn_handler handler = {.on_data = ignore_input};

static tk_conn *pair_conn(tk_loop *loop, int *peer)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    tk_conn *c;
    assert_int_equal(tk_conn_new(loop, sv[0], &handler, &lim, NULL, &c), 0);
    *peer = sv[1];
    return c;
}

/* Space reserved and then not used leaves no trace: the bytes written before
 * and after it arrive, and flushing finishes (it used to spin forever on the
 * empty chunk, so an alarm turns a hang into a failure). */
static void unused_reservation_is_harmless(void **state)
{
    (void)state;
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    int peer;
    tk_conn *c = pair_conn(loop, &peer);
    assert_int_equal(tk_conn_write(c, "ab", 2), 0);
    assert_non_null(tk_conn_write_reserve(c, 8192)); /* needs a chunk of its own */
    tk_conn_write_commit(c, 0);
    alarm(10);
    tk_loop_run_pending(loop);
    alarm(0);
    assert_int_equal(tk_conn_pending(c), 0);
    assert_int_equal(tk_conn_write(c, "cd", 2), 0);
    tk_loop_run_pending(loop);
    char buf[8];
    assert_int_equal(read(peer, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "abcd", 4);
    tk_conn_close(c, TK_CLOSE_LOCAL, 0);
    tk_loop_run_pending(loop);
    close(peer);
    tk_loop_free(loop);
}

/* Writing past max_output drops the connection instead of growing. */
static void output_limit_drops_instead_of_growing(void **state)
{
    (void)state;
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    int peer;
    tk_conn *c = pair_conn(loop, &peer);
    static unsigned char big[2 * 1024 * 1024];
    assert_int_equal(tk_conn_write(c, big, sizeof(big)), -ENOBUFS);
    assert_true(tk_conn_closing(c));
    tk_loop_run_pending(loop);
    close(peer);
    tk_loop_free(loop);
}

/* A temporary file holding n bytes, 'a' + i % 26 at offset i. */
static int temp_file(size_t n)
{
    char path[] = "/tmp/tk_test_conn_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    for (size_t i = 0; i < n; i++) {
        char ch = (char)('a' + i % 26);
        assert_int_equal(write(fd, &ch, 1), 1);
    }
    return fd;
}

/* Reads exactly n bytes from a blocking peer. */
static void read_exact(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
}

/* File ranges go out in queue order between memory writes, and hold no
 * memory: ranges far over max_output neither drop the connection nor pause
 * its input; they count in tk_conn_pending until sent. */
static void file_ranges_keep_order_and_skip_memory_limits(void **state)
{
    (void)state;
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    int peer;
    tk_conn *c = pair_conn(loop, &peer);
    int fd = temp_file(100);
    tk_file *f = tk_file_new(fd);
    assert_non_null(f);
    assert_int_equal(tk_conn_write(c, "<", 1), 0);
    assert_int_equal(tk_conn_write_file(c, f, 10, 20), 0);
    assert_int_equal(tk_conn_write(c, "|", 1), 0);
    assert_int_equal(tk_conn_write_file(c, f, 0, 3), 0);
    assert_int_equal(tk_conn_write(c, ">", 1), 0);
    tk_file_unref(f); /* the queue holds its own references */
    assert_int_equal(tk_conn_pending(c), 26);
    tk_loop_run_pending(loop);
    char buf[32];
    read_exact(peer, buf, 26);
    assert_memory_equal(buf, "<klmnopqrstuvwxyzabcd|abc>", 26);
    assert_int_equal(tk_conn_pending(c), 0);
    assert_false(tk_conn_closing(c));
    tk_conn_close(c, TK_CLOSE_LOCAL, 0);
    tk_loop_run_pending(loop);
    close(peer);
    tk_loop_free(loop);
}

static tk_close_reason closed_why;
static int closed_err;

static void note_close(tk_conn *c, tk_close_reason why, int err)
{
    closed_why = why;
    closed_err = err;
    tk_loop_stop(tk_conn_loop(c));
}

/* A file that is shorter than the range queued from it ends the
 * connection with an error instead of sending too little or spinning. */
static void file_shorter_than_range_closes_with_enodata(void **state)
{
    (void)state;
    static const tk_conn_handler h = {.on_data = ignore_input, .on_close = note_close};
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    tk_conn *c;
    assert_int_equal(tk_conn_new(loop, sv[0], &h, &lim, NULL, &c), 0);
    tk_file *f = tk_file_new(temp_file(10));
    assert_int_equal(tk_conn_write_file(c, f, 5, 50), 0);
    tk_file_unref(f);
    closed_why = TK_CLOSE_PEER;
    alarm(10); /* a spin or a hang fails the test instead of stalling it */
    tk_loop_run(loop);
    alarm(0);
    assert_int_equal(closed_why, TK_CLOSE_ERROR);
    assert_int_equal(closed_err, -ENODATA);
    close(sv[1]);
    tk_loop_free(loop);
}

/* A service whose on_sent queues the rest of its answer and asks for a
 * close, as a file download's last frames do. */
static int refills;

static void refill_then_close(tk_conn *c)
{
    if (refills++ < 3) {
        static char more[100000];
        memset(more, 'm', sizeof(more));
        assert_int_equal(tk_conn_write(c, more, sizeof(more)), 0);
        if (refills == 3)
            tk_conn_close_after_flush(c, TK_CLOSE_LOCAL);
    }
}

static void stop_on_close(tk_conn *c, tk_close_reason why, int err)
{
    closed_why = why;
    closed_err = err;
    tk_loop_stop(tk_conn_loop(c));
}

/* Output queued from on_sent, followed by a close after flush, is all sent
 * before the FIN: the FIN used to go out as soon as on_sent returned, and the
 * rest then failed with EPIPE. */
static void output_queued_from_on_sent_goes_out_before_fin(void **state)
{
    (void)state;
    static const tk_conn_handler h = {
        .on_data = ignore_input, .on_sent = refill_then_close, .on_close = stop_on_close};
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(tk_sock_set_nonblock(sv[0], 1), 0);
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    lim.linger_ms = 10000;
    tk_conn *c;
    assert_int_equal(tk_conn_new(loop, sv[0], &h, &lim, NULL, &c), 0);
    refills = 0;
    assert_int_equal(tk_conn_write(c, "start", 5), 0);
    /* The peer reads everything, then closes: the loop ends on on_close. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        char buf[65536];
        size_t total = 0;
        ssize_t r;
        while ((r = read(sv[1], buf, sizeof(buf))) > 0)
            total += (size_t)r;
        _exit(r == 0 && total == 5 + 3 * 100000 ? 0 : 1);
    }
    close(sv[1]); /* the child's copy is the peer now */
    closed_why = TK_CLOSE_ERROR;
    alarm(10);
    tk_loop_run(loop);
    alarm(0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0); /* every byte, then EOF */
    assert_int_equal(closed_why, TK_CLOSE_LOCAL);
    assert_int_equal(closed_err, 0);
    tk_loop_free(loop);
}

/* A service that handles one line, then pauses until told to go on. */
static char seen[64];
static size_t seen_len;

static size_t one_line_then_pause(tk_conn *c, const unsigned char *data, size_t len)
{
    size_t used = 0;
    while (used < len) {
        const unsigned char *nl = memchr(data + used, '\n', len - used);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (data + used)) + 1;
        memcpy(seen + seen_len, data + used, n);
        seen_len += n;
        used += n;
        if (memcmp(data + used - n, "a\n", 2) == 0) {
            tk_conn_pause_read(c);
            break;
        }
    }
    return used;
}

/* Input that arrived before a pause is handed over again on resume, without
 * the peer sending anything more (a chat login pauses its client while the
 * password is checked, with later requests already read). */
static void resume_redelivers_held_input(void **state)
{
    (void)state;
    static const tk_conn_handler h = {.on_data = one_line_then_pause};
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    tk_conn *c;
    assert_int_equal(tk_conn_new(loop, sv[0], &h, &lim, NULL, &c), 0);
    seen_len = 0;
    assert_int_equal(write(sv[1], "a\nb\nc\n", 6), 6);
    tk_conn_drain_input(c);
    assert_int_equal(seen_len, 2);
    tk_conn_resume_read(c);
    tk_loop_run_pending(loop);
    assert_int_equal(seen_len, 6);
    assert_memory_equal(seen, "a\nb\nc\n", 6);
    tk_conn_close(c, TK_CLOSE_LOCAL, 0);
    tk_loop_run_pending(loop);
    close(sv[1]);
    tk_loop_free(loop);
}

static size_t eof_rest_len = 99;

static void note_eof(tk_conn *c, const unsigned char *rest, size_t len)
{
    (void)rest;
    eof_rest_len = len;
    tk_conn_close_after_flush(c, TK_CLOSE_PEER);
}

/* Input held during a pause is handed over before anything read after the
 * resume, the peer's FIN included: a read that found the FIN first used to
 * pass the held requests to on_eof as an unfinished rest. */
static void held_input_comes_before_a_later_eof(void **state)
{
    (void)state;
    static const tk_conn_handler h = {.on_data = one_line_then_pause, .on_eof = note_eof};
    tk_loop *loop;
    assert_int_equal(tk_loop_new(&loop), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    tk_conn *c;
    assert_int_equal(tk_conn_new(loop, sv[0], &h, &lim, NULL, &c), 0);
    seen_len = 0;
    eof_rest_len = 99;
    assert_int_equal(write(sv[1], "a\nb\nc\n", 6), 6);
    assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
    tk_conn_drain_input(c);
    assert_int_equal(seen_len, 2);
    tk_conn_resume_read(c);
    tk_conn_drain_input(c); /* the readiness event that comes before the deferred phase */
    assert_int_equal(seen_len, 6);
    assert_memory_equal(seen, "a\nb\nc\n", 6);
    assert_int_equal(eof_rest_len, 0);
    tk_loop_run_pending(loop);
    close(sv[1]);
    tk_loop_run_pending(loop);
    tk_loop_free(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unused_reservation_is_harmless),
        cmocka_unit_test(output_limit_drops_instead_of_growing),
        cmocka_unit_test(resume_redelivers_held_input),
        cmocka_unit_test(file_ranges_keep_order_and_skip_memory_limits),
        cmocka_unit_test(file_shorter_than_range_closes_with_enodata),
        cmocka_unit_test(output_queued_from_on_sent_goes_out_before_fin),
        cmocka_unit_test(held_input_comes_before_a_later_eof),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* chat_kdf: scrypt hashing on a helper thread, results delivered on the loop.
 * Every test is guarded by alarm(): a result that never comes kills the
 * program instead of hanging it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "services/chat_kdf.h"
#include "tcpkit/loop.h"

#define COST    10 /* scrypt N = 2^10: fast */
#define GUARD_S 30

/* What the done callbacks saw. */
typedef struct {
    tk_loop *loop;
    int calls;
    int ok[8];
    int kind[8];
    char name[8][160];
    chat_account account[8];
    int stop_after; /* stop the loop after this many calls */
} seen;

static void on_done(chat_kdf_job *job, int ok, void *owner)
{
    seen *s = owner;
    assert_true(s->calls < 8);
    s->ok[s->calls] = ok;
    s->kind[s->calls] = job->kind;
    snprintf(s->name[s->calls], sizeof(s->name[0]), "%s", job->name);
    s->account[s->calls] = job->account;
    /* The password copy is wiped once hashed. */
    for (size_t i = 0; i < sizeof(job->password); i++)
        assert_int_equal(job->password[i], 0);
    s->calls++;
    if (s->calls >= s->stop_after)
        tk_loop_stop(s->loop);
}

typedef struct {
    tk_loop *loop;
    chat_kdf *kdf;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f || tk_loop_new(&f->loop) < 0 || chat_kdf_start(f->loop, COST, 4, &f->kdf) < 0)
        return -1;
    alarm(GUARD_S);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    alarm(0);
    chat_kdf_stop(f->kdf);
    tk_loop_free(f->loop);
    free(f);
    return 0;
}

static chat_kdf_job *new_job(fixture *f, const char *pw, seen *s, int create, int kind)
{
    chat_kdf_job *j = chat_kdf_job_new(f->kdf, (const unsigned char *)pw, strlen(pw), s, on_done);
    assert_non_null(j);
    j->create = create;
    j->kind = kind;
    snprintf(j->name, sizeof(j->name), "user%d", kind);
    return j;
}

/* Runs the loop until s->stop_after results have come. */
static void run_until(fixture *f, seen *s, int calls)
{
    s->loop = f->loop;
    s->stop_after = calls;
    assert_int_equal(tk_loop_run(f->loop), 0);
    assert_int_equal(s->calls, calls);
}

/* Checks pw against account; returns the done callback's ok. */
static int check(fixture *f, const chat_account *acct, const char *pw)
{
    seen s = {0};
    chat_kdf_job *j = new_job(f, pw, &s, 0, 7);
    j->account = *acct;
    assert_int_equal(chat_kdf_submit(f->kdf, j), 0);
    run_until(f, &s, 1);
    assert_int_equal(s.kind[0], 7);
    return s.ok[0];
}

/* A create job makes a salted scrypt hash that a check job then accepts for
 * the right password only. */
static void create_then_check(void **state)
{
    fixture *f = *state;
    seen s = {0};
    chat_kdf_job *j = new_job(f, "correct horse", &s, 1, 3);
    assert_int_equal(chat_kdf_submit(f->kdf, j), 0);
    run_until(f, &s, 1);
    assert_int_equal(s.ok[0], 1);
    assert_int_equal(s.kind[0], 3);
    assert_string_equal(s.name[0], "user3");
    chat_account acct = s.account[0];
    assert_string_equal(acct.kdf, "scrypt$10$8$1");
    assert_int_equal(acct.salt_len, 16);
    assert_int_equal(acct.hash_len, 32);
    static const unsigned char zero[32];
    assert_memory_not_equal(acct.hash, zero, 32);
    assert_memory_not_equal(acct.salt, zero, 16);

    assert_int_equal(check(f, &acct, "correct horse"), 1);
    assert_int_equal(check(f, &acct, "correct hors"), 0);
    assert_int_equal(check(f, &acct, "correct horse "), 0);
    assert_int_equal(check(f, &acct, "Correct horse"), 0);
    assert_int_equal(check(f, &acct, ""), 0);

    /* The same password gets a new salt and so a new hash. */
    seen s2 = {0};
    assert_int_equal(chat_kdf_submit(f->kdf, new_job(f, "correct horse", &s2, 1, 3)), 0);
    run_until(f, &s2, 1);
    assert_int_equal(s2.ok[0], 1);
    assert_memory_not_equal(s2.account[0].salt, acct.salt, 16);
    assert_memory_not_equal(s2.account[0].hash, acct.hash, 32);
    assert_int_equal(check(f, &s2.account[0], "correct horse"), 1);
    assert_int_equal(check(f, &acct, "correct horse"), 1);
}

/* The cost is stored with each hash: a hash made at another cost still
 * checks after the configured cost changes. */
static void stored_cost_is_used(void **state)
{
    fixture *f = *state;
    chat_kdf *k11;
    assert_int_equal(chat_kdf_start(f->loop, 11, 4, &k11), 0);
    seen s = {0};
    chat_kdf_job *j = chat_kdf_job_new(k11, (const unsigned char *)"old password", 12, &s, on_done);
    assert_non_null(j);
    j->create = 1;
    assert_int_equal(chat_kdf_submit(k11, j), 0);
    run_until(f, &s, 1);
    chat_kdf_stop(k11);
    assert_int_equal(s.ok[0], 1);
    assert_string_equal(s.account[0].kdf, "scrypt$11$8$1");
    /* Checked by the cost-10 thread. */
    assert_int_equal(check(f, &s.account[0], "old password"), 1);
    assert_int_equal(check(f, &s.account[0], "old passwort"), 0);
}

/* Stored parameters out of bounds, or a damaged hash, never match. */
static void tampered_accounts_refused(void **state)
{
    fixture *f = *state;
    seen s = {0};
    assert_int_equal(chat_kdf_submit(f->kdf, new_job(f, "password1", &s, 1, 0)), 0);
    run_until(f, &s, 1);
    assert_int_equal(s.ok[0], 1);
    chat_account good = s.account[0];
    assert_int_equal(check(f, &good, "password1"), 1);

    chat_account bad = good;
    bad.hash[31] ^= 1;
    assert_int_equal(check(f, &bad, "password1"), 0);
    bad = good;
    bad.salt[0] ^= 0x80;
    assert_int_equal(check(f, &bad, "password1"), 0);
    const char *params[] = {"scrypt$30$8$1",
                            "scrypt$9$8$1",
                            "scrypt$10$0$1",
                            "scrypt$10$99$1",
                            "scrypt$10$8$9",
                            "bcrypt$10$8$1",
                            "",
                            "scrypt$11$8$1"};
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        bad = good;
        snprintf(bad.kdf, sizeof(bad.kdf), "%s", params[i]);
        if (check(f, &bad, "password1") != 0)
            print_error("kdf \"%s\" matched\n", params[i]);
        assert_int_equal(check(f, &bad, "password1"), 0);
    }
}

/* Several jobs come back in submission order; a cancelled one never calls
 * back. */
static void order_and_cancel(void **state)
{
    fixture *f = *state;
    seen s = {0};
    chat_kdf_job *a = new_job(f, "password-a", &s, 1, 1);
    chat_kdf_job *b = new_job(f, "password-b", &s, 1, 2);
    chat_kdf_job *c = new_job(f, "password-c", &s, 1, 3);
    assert_int_equal(chat_kdf_submit(f->kdf, a), 0);
    assert_int_equal(chat_kdf_submit(f->kdf, b), 0);
    assert_int_equal(chat_kdf_submit(f->kdf, c), 0);
    chat_kdf_cancel(b);
    run_until(f, &s, 2);
    assert_int_equal(s.kind[0], 1);
    assert_int_equal(s.kind[1], 3);
    assert_string_equal(s.name[1], "user3");
    /* b was delivered before c (FIFO), so it is gone for good. */
    tk_loop_run_pending(f->loop);
    assert_int_equal(s.calls, 2);
}

/* At most max_pending jobs wait; the next is refused (and freed). */
static void too_many_pending_is_busy(void **state)
{
    fixture *f = *state; /* max_pending 4 */
    seen s = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(chat_kdf_submit(f->kdf, new_job(f, "password", &s, 1, i)), 0);
    assert_int_equal(chat_kdf_submit(f->kdf, new_job(f, "password", &s, 1, 9)), -EBUSY);
    run_until(f, &s, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.kind[i], i);
    /* Delivered jobs free their places. */
    assert_int_equal(chat_kdf_submit(f->kdf, new_job(f, "password", &s, 1, 5)), 0);
    run_until(f, &s, 5);
    assert_int_equal(s.kind[4], 5);
}

/* Passwords up to 256 bytes are taken; longer ones are not. */
static void password_length_limit(void **state)
{
    fixture *f = *state;
    char pw[258];
    memset(pw, 'p', sizeof(pw));
    assert_null(chat_kdf_job_new(f->kdf, (const unsigned char *)pw, 257, NULL, on_done));
    seen s = {0};
    chat_kdf_job *j = chat_kdf_job_new(f->kdf, (const unsigned char *)pw, 256, &s, on_done);
    assert_non_null(j);
    assert_int_equal(j->password_len, 256);
    j->create = 1;
    assert_int_equal(chat_kdf_submit(f->kdf, j), 0);
    run_until(f, &s, 1);
    assert_int_equal(s.ok[0], 1);
    chat_account acct = s.account[0];
    pw[256] = '\0';
    assert_int_equal(check(f, &acct, pw), 1);
    pw[255] = '\0';
    assert_int_equal(check(f, &acct, pw), 0);
}

/* Stopping with jobs queued, being hashed or posted to the loop frees them
 * all without calling back (ASan reports any leak). */
static void stop_frees_pending_jobs(void **state)
{
    (void)state;
    alarm(GUARD_S);
    seen s = {0};
    tk_loop *loop;
    chat_kdf *k;
    assert_int_equal(tk_loop_new(&loop), 0);
    assert_int_equal(chat_kdf_start(loop, COST, 8, &k), 0);
    for (int i = 0; i < 6; i++) {
        chat_kdf_job *j = chat_kdf_job_new(k, (const unsigned char *)"password", 8, &s, on_done);
        assert_non_null(j);
        j->create = 1;
        assert_int_equal(chat_kdf_submit(k, j), 0);
    }
    usleep(20000); /* let the thread finish some and post them to the loop */
    chat_kdf_stop(k);
    tk_loop_free(loop);
    assert_int_equal(s.calls, 0);

    /* Stopping an idle thread, and stopping NULL, are fine. */
    assert_int_equal(tk_loop_new(&loop), 0);
    assert_int_equal(chat_kdf_start(loop, COST, 8, &k), 0);
    chat_kdf_stop(k);
    tk_loop_free(loop);
    chat_kdf_stop(NULL);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(create_then_check, setup, teardown),
        cmocka_unit_test_setup_teardown(stored_cost_is_used, setup, teardown),
        cmocka_unit_test_setup_teardown(tampered_accounts_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(order_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(too_many_pending_is_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(password_length_limit, setup, teardown),
        cmocka_unit_test(stop_frees_pending_jobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

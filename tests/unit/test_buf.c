/* tk_buf (bounded byte buffer) and tk_shared (refcounted chunk). Leaks and
 * use-after-free are caught by the AddressSanitizer build these run under. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "tcpkit/buf.h"

/* Bytes appended come back out in order, across several appends and consumes. */
static void append_then_consume_keeps_order(void **state)
{
    (void)state;
    tk_buf b;
    tk_buf_init(&b, 1024);
    assert_int_equal(tk_buf_len(&b), 0);
    assert_int_equal(tk_buf_append(&b, "hello ", 6), 0);
    assert_int_equal(tk_buf_append(&b, "world", 5), 0);
    assert_int_equal(tk_buf_len(&b), 11);
    assert_memory_equal(tk_buf_head(&b), "hello world", 11);
    tk_buf_consume(&b, 6);
    assert_int_equal(tk_buf_len(&b), 5);
    assert_memory_equal(tk_buf_head(&b), "world", 5);
    assert_int_equal(tk_buf_append(&b, "!", 1), 0);
    assert_memory_equal(tk_buf_head(&b), "world!", 6);
    tk_buf_free(&b);
}

/* An append that would pass the limit fails with -ENOBUFS and leaves the
 * buffer exactly as it was. */
static void append_over_limit_changes_nothing(void **state)
{
    (void)state;
    tk_buf b;
    tk_buf_init(&b, 10);
    assert_int_equal(tk_buf_append(&b, "12345678", 8), 0);
    tk_buf before = b;
    assert_int_equal(tk_buf_append(&b, "abc", 3), -ENOBUFS);
    assert_ptr_equal(b.data, before.data);
    assert_int_equal(b.start, before.start);
    assert_int_equal(b.end, before.end);
    assert_int_equal(b.cap, before.cap);
    assert_int_equal(b.limit, 10);
    assert_memory_equal(tk_buf_head(&b), "12345678", 8);
    /* Exactly up to the limit still fits. */
    assert_int_equal(tk_buf_append(&b, "ab", 2), 0);
    assert_int_equal(tk_buf_len(&b), 10);
    assert_int_equal(tk_buf_append(&b, "x", 1), -ENOBUFS);
    tk_buf_free(&b);
}

/* Over-limit requests on an empty buffer are refused before any allocation. */
static void over_limit_on_empty_buffer_allocates_nothing(void **state)
{
    (void)state;
    tk_buf b;
    tk_buf_init(&b, 16);
    char big[17] = {0};
    assert_int_equal(tk_buf_append(&b, big, sizeof(big)), -ENOBUFS);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    int err = 0;
    assert_null(tk_buf_reserve(&b, 17, &err));
    assert_int_equal(err, -ENOBUFS);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    /* A size that would overflow any length arithmetic is refused too. */
    err = 0;
    assert_null(tk_buf_reserve(&b, SIZE_MAX, &err));
    assert_int_equal(err, -ENOBUFS);
    assert_null(b.data);
    tk_buf_free(&b);
}

/* Consuming the last byte releases the memory, so an idle buffer costs nothing. */
static void consuming_everything_frees_memory(void **state)
{
    (void)state;
    tk_buf b;
    tk_buf_init(&b, 4096);
    assert_null(b.data);
    assert_int_equal(tk_buf_append(&b, "abcdef", 6), 0);
    assert_non_null(b.data);
    tk_buf_consume(&b, 2);
    assert_non_null(b.data);
    tk_buf_consume(&b, 4);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    assert_int_equal(tk_buf_len(&b), 0);
    /* The emptied buffer works again. */
    assert_int_equal(tk_buf_append(&b, "xy", 2), 0);
    assert_memory_equal(tk_buf_head(&b), "xy", 2);
    tk_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(tk_buf_len(&b), 0);
}

/* Bytes written into reserved space appear only once committed, and only as
 * many as were committed. */
static void reserve_then_commit_appends(void **state)
{
    (void)state;
    tk_buf b;
    tk_buf_init(&b, 64);
    assert_int_equal(tk_buf_append(&b, "ab", 2), 0);
    int err = 0;
    unsigned char *p = tk_buf_reserve(&b, 10, &err);
    assert_non_null(p);
    assert_int_equal(tk_buf_len(&b), 2);
    memcpy(p, "cdefghijkl", 10);
    tk_buf_commit(&b, 4);
    assert_int_equal(tk_buf_len(&b), 6);
    assert_memory_equal(tk_buf_head(&b), "abcdef", 6);
    tk_buf_free(&b);
}

/* A read that returns nothing (reserve, commit 0) leaves an idle buffer
 * holding no memory, as the header promises for idle connections. */
static void empty_commit_keeps_no_memory(void **state)
{
    (void)state;
    tk_buf b;
    tk_buf_init(&b, 4096);
    int err = 0;
    assert_non_null(tk_buf_reserve(&b, 4096, &err));
    tk_buf_commit(&b, 0);
    size_t len = tk_buf_len(&b);
    unsigned char *held = b.data;
    tk_buf_free(&b);
    assert_int_equal(len, 0);
    assert_null(held);
}

/* Space freed at the front by consume is reused, so a buffer at its limit that
 * drains part of its data can take that much again. */
static void consumed_front_space_is_reused(void **state)
{
    (void)state;
    tk_buf b;
    tk_buf_init(&b, 16);
    assert_int_equal(tk_buf_append(&b, "0123456789abcdef", 16), 0);
    tk_buf_consume(&b, 10);
    assert_int_equal(tk_buf_append(&b, "ghijklmnop", 10), 0);
    assert_int_equal(tk_buf_len(&b), 16);
    assert_memory_equal(tk_buf_head(&b), "abcdefghijklmnop", 16);
    int err = 0;
    assert_null(tk_buf_reserve(&b, 1, &err));
    assert_int_equal(err, -ENOBUFS);
    tk_buf_free(&b);
}

/* Many append/consume rounds keep the content right and never pass the limit. */
static void long_stream_through_small_buffer(void **state)
{
    (void)state;
    tk_buf b;
    tk_buf_init(&b, 100);
    unsigned char next_in = 0, next_out = 0;
    for (int round = 0; round < 5000; round++) {
        size_t n = (size_t)(round * 7 % 37) + 1;
        unsigned char chunk[40];
        for (size_t i = 0; i < n; i++)
            chunk[i] = (unsigned char)(next_in + i);
        if (tk_buf_len(&b) + n > 100) {
            assert_int_equal(tk_buf_append(&b, chunk, n), -ENOBUFS);
        } else {
            assert_int_equal(tk_buf_append(&b, chunk, n), 0);
            next_in = (unsigned char)(next_in + n);
        }
        assert_true(tk_buf_len(&b) <= 100);
        size_t take = (size_t)(round * 5 % 29);
        if (take > tk_buf_len(&b))
            take = tk_buf_len(&b);
        for (size_t i = 0; i < take; i++)
            assert_int_equal(tk_buf_head(&b)[i], (unsigned char)(next_out + i));
        tk_buf_consume(&b, take);
        next_out = (unsigned char)(next_out + take);
    }
    tk_buf_free(&b);
}

/* A shared chunk copies its bytes, and stays alive until the last reference
 * is dropped (ASan reports a use-after-free or leak otherwise). */
static void shared_chunk_lives_until_last_unref(void **state)
{
    (void)state;
    char src[] = "broadcast";
    tk_shared *s = tk_shared_new(src, 9);
    assert_non_null(s);
    src[0] = 'X';
    assert_int_equal(tk_shared_len(s), 9);
    assert_memory_equal(tk_shared_data(s), "broadcast", 9);
    assert_ptr_equal(tk_shared_ref(s), s);
    assert_ptr_equal(tk_shared_ref(s), s);
    tk_shared_unref(s);
    tk_shared_unref(s);
    assert_memory_equal(tk_shared_data(s), "broadcast", 9);
    tk_shared_unref(s);
}

/* Many independent chunks with many references each are all released. */
static void shared_chunks_are_independent(void **state)
{
    (void)state;
    tk_shared *s[8];
    for (int i = 0; i < 8; i++) {
        char c = (char)('a' + i);
        s[i] = tk_shared_new(&c, 1);
        assert_non_null(s[i]);
        for (int r = 0; r < i; r++)
            tk_shared_ref(s[i]);
    }
    for (int i = 0; i < 8; i++) {
        assert_int_equal(tk_shared_data(s[i])[0], 'a' + i);
        for (int r = 0; r <= i; r++)
            tk_shared_unref(s[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(append_then_consume_keeps_order),
        cmocka_unit_test(append_over_limit_changes_nothing),
        cmocka_unit_test(over_limit_on_empty_buffer_allocates_nothing),
        cmocka_unit_test(consuming_everything_frees_memory),
        cmocka_unit_test(reserve_then_commit_appends),
        cmocka_unit_test(empty_commit_keeps_no_memory),
        cmocka_unit_test(consumed_front_space_is_reused),
        cmocka_unit_test(long_stream_through_small_buffer),
        cmocka_unit_test(shared_chunk_lives_until_last_unref),
        cmocka_unit_test(shared_chunks_are_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

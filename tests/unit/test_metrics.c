/* tk_hist (log-linear histogram) and tk_metrics (per-thread slots summed by
 * the reader). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>

#include "tcpkit/metrics.h"

static double absd(double x)
{
    return x < 0 ? -x : x;
}

/* Checks got is within 7% of want. */
static void assert_near(uint64_t got, uint64_t want)
{
    double err = absd((double)got - (double)want) / (double)want;
    if (err > 0.07)
        print_error("got %llu, want %llu (error %.1f%%)\n", (unsigned long long)got,
                    (unsigned long long)want, err * 100);
    assert_true(err <= 0.07);
}

/* On a uniform distribution every quantile is within 7% of the exact one. */
static void quantiles_of_uniform_distribution(void **state)
{
    (void)state;
    tk_hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    tk_hist_reset(h);
    for (uint64_t v = 1; v <= 100000; v++)
        tk_hist_add(h, v, 1);
    assert_int_equal(h->total, 100000);
    const double qs[] = {0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++)
        assert_near(tk_hist_quantile(h, qs[i]), (uint64_t)(qs[i] * 100000));
    assert_near(tk_hist_quantile(h, 1.0), 100000);
    assert_int_equal(tk_hist_quantile(h, 0.0), 1);
    free(h);
}

/* A bimodal distribution puts each quantile in the right mode. */
static void quantiles_of_bimodal_distribution(void **state)
{
    (void)state;
    tk_hist h;
    tk_hist_reset(&h);
    tk_hist_add(&h, 120, 980);
    tk_hist_add(&h, 2000000, 20);
    assert_near(tk_hist_quantile(&h, 0.5), 120);
    assert_near(tk_hist_quantile(&h, 0.97), 120);
    assert_near(tk_hist_quantile(&h, 0.99), 2000000);
    assert_int_equal(h.max, 2000000);
}

/* Every value, small ones exactly and large ones within 7%, is its own
 * quantile in a histogram that holds only it. */
static void single_values_come_back(void **state)
{
    (void)state;
    for (uint64_t v = 0; v < 16; v++) {
        tk_hist h;
        tk_hist_reset(&h);
        tk_hist_add(&h, v, 3);
        assert_int_equal(tk_hist_quantile(&h, 0.5), v);
    }
    for (uint64_t v = 17; v < (1ull << 36); v = v * 3 + 1) {
        tk_hist h;
        tk_hist_reset(&h);
        tk_hist_add(&h, v, 1);
        tk_hist_add(&h, v * 2 < (1ull << 36) ? v * 2 : v, 1); /* max above v */
        assert_near(tk_hist_quantile(&h, 0.25), v);
    }
}

/* Values past the last bucket are kept without overflowing the array. */
static void huge_values_are_kept(void **state)
{
    (void)state;
    tk_hist h;
    tk_hist_reset(&h);
    tk_hist_add(&h, 1ull << 40, 1);
    tk_hist_add(&h, 1ull << 50, 1);
    assert_int_equal(h.total, 2);
    assert_int_equal(h.max, 1ull << 50);
    assert_true(tk_hist_quantile(&h, 0.5) >= (1ull << 35));
}

/* An empty histogram answers 0 for quantile and mean. */
static void empty_histogram(void **state)
{
    (void)state;
    tk_hist h;
    tk_hist_reset(&h);
    assert_int_equal(tk_hist_quantile(&h, 0.5), 0);
    assert_true(tk_hist_mean(&h) == 0.0);
}

/* The mean is exact (sum over count), not an approximation from buckets. */
static void mean_is_exact(void **state)
{
    (void)state;
    tk_hist h;
    tk_hist_reset(&h);
    tk_hist_add(&h, 10, 1);
    tk_hist_add(&h, 20, 1);
    tk_hist_add(&h, 1000003, 2);
    assert_true(absd(tk_hist_mean(&h) - (10.0 + 20.0 + 2 * 1000003.0) / 4) < 1e-9);
}

/* Merging two histograms equals recording every sample into one. */
static void merge_equals_recording_everything(void **state)
{
    (void)state;
    tk_hist *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *all = malloc(sizeof(*all));
    assert_true(a && b && all);
    tk_hist_reset(a);
    tk_hist_reset(b);
    tk_hist_reset(all);
    for (uint64_t v = 1; v <= 5000; v++) {
        tk_hist *half = v % 3 ? a : b;
        tk_hist_add(half, v * 37, 2);
        tk_hist_add(all, v * 37, 2);
    }
    tk_hist_merge(a, b);
    assert_memory_equal(a, all, sizeof(*all));
    assert_near(tk_hist_quantile(a, 0.5), 2500 * 37);
    free(a);
    free(b);
    free(all);
}

/* The reader sums every slot: counters, close reasons, average and quantiles. */
static void read_sums_all_slots(void **state)
{
    (void)state;
    tk_metrics *m;
    assert_int_equal(tk_metrics_new(3, &m), 0);
    tk_metrics_slot *s0 = tk_metrics_slot_of(m, 0);
    tk_metrics_slot *s1 = tk_metrics_slot_of(m, 1);
    tk_metrics_slot *s2 = tk_metrics_slot_of(m, 2);
    tk_metrics_conn_open(s0);
    tk_metrics_conn_open(s0);
    tk_metrics_conn_close(s0, 1);
    tk_metrics_conn_open(s1);
    tk_metrics_conn_rejected(s1);
    tk_metrics_conn_close(s2, 3);
    tk_metrics_bytes(s1, 100, 200);
    tk_metrics_bytes(s2, 1, 2);
    tk_metrics_messages(s1, 60);
    tk_metrics_response(s1, 60, 100);
    tk_metrics_messages(s2, 40);
    tk_metrics_response(s2, 40, 1000);
    tk_metrics_snapshot snap;
    tk_metrics_read(m, &snap);
    assert_int_equal(snap.conns_total, 3);
    assert_int_equal(snap.conns_active, 1);
    assert_int_equal(snap.conns_rejected, 1);
    assert_int_equal(snap.bytes_in, 101);
    assert_int_equal(snap.bytes_out, 202);
    assert_int_equal(snap.messages, 100);
    assert_int_equal(snap.closes[1], 1);
    assert_int_equal(snap.closes[3], 1);
    assert_int_equal(snap.closes[0], 0);
    assert_true(absd(snap.resp_avg_us - 460.0) < 1e-9);
    assert_near(snap.resp_p50_us, 100);
    assert_near(snap.resp_p99_us, 1000);
    tk_metrics_free(m);
}

typedef struct {
    tk_metrics_slot *slot;
} writer_arg;

static void *writer(void *p)
{
    writer_arg *w = p;
    for (int i = 0; i < 100000; i++) {
        tk_metrics_bytes(w->slot, 1, 2);
        tk_metrics_messages(w->slot, 1);
        tk_metrics_response(w->slot, 1, 50);
    }
    return NULL;
}

/* Writers on four threads, one slot each, lose no update while a reader reads. */
static void concurrent_writers_lose_nothing(void **state)
{
    (void)state;
    tk_metrics *m;
    assert_int_equal(tk_metrics_new(4, &m), 0);
    pthread_t th[4];
    writer_arg args[4];
    for (unsigned i = 0; i < 4; i++) {
        args[i].slot = tk_metrics_slot_of(m, i);
        assert_int_equal(pthread_create(&th[i], NULL, writer, &args[i]), 0);
    }
    tk_metrics_snapshot snap;
    for (int i = 0; i < 100; i++) {
        tk_metrics_read(m, &snap);
        assert_true(snap.bytes_in <= 400000);
    }
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    tk_metrics_read(m, &snap);
    assert_int_equal(snap.bytes_in, 400000);
    assert_int_equal(snap.bytes_out, 800000);
    assert_int_equal(snap.messages, 400000);
    assert_near(snap.resp_p50_us, 50);
    tk_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quantiles_of_uniform_distribution),
        cmocka_unit_test(quantiles_of_bimodal_distribution),
        cmocka_unit_test(single_values_come_back),
        cmocka_unit_test(huge_values_are_kept),
        cmocka_unit_test(empty_histogram),
        cmocka_unit_test(mean_is_exact),
        cmocka_unit_test(merge_equals_recording_everything),
        cmocka_unit_test(read_sums_all_slots),
        cmocka_unit_test(concurrent_writers_lose_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

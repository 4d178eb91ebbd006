/* bal_pick: which backends may take a client (up, weighted, not skipped,
 * fresh before suspect, primaries before backups, under maxconn) and the
 * order each algorithm hands them out, on a table built by hand. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "services/balance_internal.h"

#define MAXB 8

/* One loop's view of a balancer: the balancer, its only loop and a table
 * whose entries point at backends this test owns. */
typedef struct {
    tk_loop *loop;
    tk_balance *bal;
    bal_loop lp;
    bal_table *table;
    bal_backend *b[MAXB];
    size_t nb;
} fixture;

static bal_backend *backend_new(const char *addr)
{
    bal_backend *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->rr_cur = calloc(1, sizeof(*b->rr_cur));
    assert_non_null(b->rr_cur);
    b->nloops = 1;
    snprintf(b->addr, sizeof(b->addr), "%s", addr);
    b->hash = bal_hash(addr, strlen(addr));
    atomic_init(&b->refs, 1);
    atomic_init(&b->up, 1);
    atomic_init(&b->suspect_until, 0);
    atomic_init(&b->active, 0);
    atomic_init(&b->total, 0);
    atomic_init(&b->bytes_sent, 0);
    atomic_init(&b->bytes_received, 0);
    atomic_init(&b->failures, 0);
    atomic_init(&b->last_check, BAL_CHECK_NONE);
    atomic_init(&b->last_check_ms, 0);
    return b;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(tk_loop_new(&f->loop), 0);
    f->bal = calloc(1, sizeof(*f->bal));
    assert_non_null(f->bal);
    f->bal->nloops = 1;
    f->bal->loops = &f->lp;
    atomic_init(&f->bal->queued, 0);
    f->lp.bal = f->bal;
    f->lp.loop = f->loop;
    f->lp.index = 0;
    f->lp.rng = 0x9e3779b97f4a7c15ULL;
    atomic_init(&f->lp.nqueued, 0);
    atomic_init(&f->lp.kick_posted, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    free(f->table);
    for (size_t i = 0; i < f->nb; i++) {
        free(f->b[i]->rr_cur);
        free(f->b[i]);
    }
    free(f->bal);
    tk_loop_free(f->loop);
    free(f);
    return 0;
}

/* Makes sure backends 0..n-1 exist (named 10.0.0.<i+1>:80). */
static void backends(fixture *f, size_t n)
{
    assert_true(n <= MAXB);
    while (f->nb < n) {
        char addr[32];
        snprintf(addr, sizeof(addr), "10.0.0.%zu:80", f->nb + 1);
        f->b[f->nb] = backend_new(addr);
        f->nb++;
    }
}

/* Replaces the table with one listing backends 0..n-1 in order, with the
 * given weights, no maxconn and no backups. */
static bal_table *table(fixture *f, tk_balance_algo algo, size_t n, const unsigned *weights)
{
    backends(f, n);
    free(f->table);
    bal_table *t = calloc(1, sizeof(*t) + n * sizeof(t->e[0]));
    assert_non_null(t);
    atomic_init(&t->refs, 1);
    t->set.algo = algo;
    t->n = n;
    for (size_t i = 0; i < n; i++) {
        t->e[i].b = f->b[i];
        t->e[i].weight = weights ? weights[i] : 1;
    }
    f->table = t;
    f->lp.table = t;
    return t;
}

/* The index of the backend an entry points at. */
static size_t index_of(const fixture *f, const bal_entry *e)
{
    for (size_t i = 0; i < f->nb; i++)
        if (f->b[i] == e->b)
            return i;
    fail_msg("picked a backend the test does not know");
    return 0;
}

/* Picks (it must succeed), gives the slot back, and returns the index. */
static size_t pick_skip(fixture *f, const tk_addr *peer, bal_backend *const *skip, size_t nskip)
{
    const bal_entry *e = NULL;
    assert_int_equal(bal_pick(&f->lp, peer, skip, nskip, &e), BAL_PICKED);
    assert_non_null(e);
    size_t i = index_of(f, e);
    bal_release(f->bal, e->b);
    return i;
}

static size_t pick(fixture *f)
{
    return pick_skip(f, NULL, NULL, 0);
}

static unsigned active(const bal_backend *b)
{
    return atomic_load(&b->active);
}

static tk_addr ipv4(uint32_t host_order)
{
    tk_addr a;
    memset(&a, 0, sizeof(a));
    struct sockaddr_in *in = (struct sockaddr_in *)&a.ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(40000);
    in->sin_addr.s_addr = htonl(host_order);
    a.len = sizeof(*in);
    return a;
}

static const tk_balance_algo all_algos[] = {TK_ALGO_ROUNDROBIN, TK_ALGO_LEASTCONN, TK_ALGO_RANDOM,
                                            TK_ALGO_SOURCE, TK_ALGO_FIRST};
#define NALGOS (sizeof(all_algos) / sizeof(all_algos[0]))

/* nginx's smooth weighted round robin: weights 5,1,1 interleave as
 * a a b a c a a, and the cycle repeats exactly. */
static void roundrobin_5_1_1_is_smooth(void **state)
{
    fixture *f = *state;
    static const unsigned w[] = {5, 1, 1};
    table(f, TK_ALGO_ROUNDROBIN, 3, w);
    static const char want[] = "aabacaaaabacaaaabacaa";
    char got[sizeof(want)];
    for (size_t i = 0; i < sizeof(want) - 1; i++)
        got[i] = (char)('a' + pick(f));
    got[sizeof(want) - 1] = '\0';
    assert_string_equal(got, want);
}

/* Weights 3 and 1 give exactly three picks to one for every four. */
static void roundrobin_3_1_counts_are_exact(void **state)
{
    fixture *f = *state;
    static const unsigned w[] = {3, 1};
    table(f, TK_ALGO_ROUNDROBIN, 2, w);
    size_t count[2] = {0, 0};
    for (int block = 0; block < 250; block++) {
        size_t in_block[2] = {0, 0};
        for (int k = 0; k < 4; k++)
            in_block[pick(f)]++;
        assert_int_equal(in_block[0], 3);
        assert_int_equal(in_block[1], 1);
        count[0] += in_block[0];
        count[1] += in_block[1];
    }
    assert_int_equal(count[0], 750);
    assert_int_equal(count[1], 250);
}

/* Backends the client already tried are left out; when all were tried
 * there is nothing left. */
static void skip_list_excludes_tried_backends(void **state)
{
    fixture *f = *state;
    for (size_t a = 0; a < NALGOS; a++) {
        table(f, all_algos[a], 3, NULL);
        bal_backend *skip[3] = {f->b[0], f->b[2], f->b[1]};
        tk_addr peer = ipv4(0x0a010203);
        for (int k = 0; k < 50; k++)
            assert_int_equal(pick_skip(f, &peer, skip, 2), 1);
        for (int k = 0; k < 50; k++) {
            size_t i = pick_skip(f, &peer, skip, 1);
            assert_true(i == 1 || i == 2);
        }
        const bal_entry *e = NULL;
        assert_int_equal(bal_pick(&f->lp, &peer, skip, 3, &e), BAL_NONE);
        for (size_t i = 0; i < 3; i++)
            assert_int_equal(active(f->b[i]), 0);
    }
}

/* A backend suspected until later is passed over while a fresh one is
 * there; once only suspects remain they are used. A suspicion that ran out
 * (suspect_until now or earlier) counts as fresh. */
static void suspects_only_when_nothing_fresh(void **state)
{
    fixture *f = *state;
    uint64_t now = tk_loop_now(f->loop);
    assert_true(now > 0);
    for (size_t a = 0; a < NALGOS; a++) {
        table(f, all_algos[a], 3, NULL);
        atomic_store(&f->b[0]->suspect_until, now + 60000);
        atomic_store(&f->b[1]->suspect_until, now);
        atomic_store(&f->b[2]->suspect_until, now - 1);
        for (uint32_t k = 0; k < 100; k++) {
            tk_addr peer = ipv4(0x0a000000 + k);
            assert_int_not_equal(pick_skip(f, &peer, NULL, 0), 0);
        }
        atomic_store(&f->b[1]->suspect_until, now + 60000);
        atomic_store(&f->b[2]->suspect_until, now + 60000);
        size_t seen[3] = {0, 0, 0};
        for (uint32_t k = 0; k < 300; k++) {
            tk_addr peer = ipv4(0x0a000000 + k);
            seen[pick_skip(f, &peer, NULL, 0)]++;
        }
        assert_int_equal(seen[0] + seen[1] + seen[2], 300);
        /* A fresh one again takes everything. */
        atomic_store(&f->b[1]->suspect_until, 0);
        for (uint32_t k = 0; k < 100; k++) {
            tk_addr peer = ipv4(0x0a000000 + k);
            assert_int_equal(pick_skip(f, &peer, NULL, 0), 1);
        }
        for (size_t i = 0; i < 3; i++)
            atomic_store(&f->b[i]->suspect_until, 0);
    }
}

/* A down backend is never chosen, whatever the algorithm; with all down
 * there is nothing to pick. */
static void down_backends_never_chosen(void **state)
{
    fixture *f = *state;
    for (size_t a = 0; a < NALGOS; a++) {
        table(f, all_algos[a], 3, NULL);
        atomic_store(&f->b[0]->up, 0);
        for (uint32_t k = 0; k < 200; k++) {
            tk_addr peer = ipv4(0xc0a80000 + k);
            assert_int_not_equal(pick_skip(f, &peer, NULL, 0), 0);
        }
        atomic_store(&f->b[1]->up, 0);
        atomic_store(&f->b[2]->up, 0);
        const bal_entry *e = NULL;
        tk_addr peer = ipv4(0xc0a80001);
        assert_int_equal(bal_pick(&f->lp, &peer, NULL, 0, &e), BAL_NONE);
        for (size_t i = 0; i < 3; i++) {
            atomic_store(&f->b[i]->up, 1);
            assert_int_equal(active(f->b[i]), 0);
        }
    }
}

/* Weight 0 takes no clients; a table of only weight 0 has none to give. */
static void weight_zero_never_chosen(void **state)
{
    fixture *f = *state;
    static const unsigned w[] = {1, 0, 3};
    static const unsigned zero[] = {0, 0, 0};
    for (size_t a = 0; a < NALGOS; a++) {
        table(f, all_algos[a], 3, w);
        for (uint32_t k = 0; k < 200; k++) {
            tk_addr peer = ipv4(0xac100000 + k);
            assert_int_not_equal(pick_skip(f, &peer, NULL, 0), 1);
        }
        table(f, all_algos[a], 3, zero);
        const bal_entry *e = NULL;
        tk_addr peer = ipv4(0xac100001);
        assert_int_equal(bal_pick(&f->lp, &peer, NULL, 0, &e), BAL_NONE);
    }
}

/* Backups wait until no primary is up, or every primary that is up was
 * already tried by this client. */
static void backups_only_without_primaries(void **state)
{
    fixture *f = *state;
    for (size_t a = 0; a < NALGOS; a++) {
        bal_table *t = table(f, all_algos[a], 4, NULL);
        t->e[2].backup = 1;
        t->e[3].backup = 1;
        for (uint32_t k = 0; k < 100; k++) {
            tk_addr peer = ipv4(0x0b000000 + k);
            assert_true(pick_skip(f, &peer, NULL, 0) < 2);
        }
        /* Every primary tried. */
        bal_backend *skip[2] = {f->b[0], f->b[1]};
        for (uint32_t k = 0; k < 100; k++) {
            tk_addr peer = ipv4(0x0b000000 + k);
            assert_true(pick_skip(f, &peer, skip, 2) >= 2);
        }
        /* One primary down, the other tried. */
        atomic_store(&f->b[0]->up, 0);
        for (uint32_t k = 0; k < 100; k++) {
            tk_addr peer = ipv4(0x0b000000 + k);
            assert_int_equal(pick_skip(f, &peer, NULL, 0), 1);
            assert_true(pick_skip(f, &peer, skip + 1, 1) >= 2);
        }
        /* Both down. */
        atomic_store(&f->b[1]->up, 0);
        for (uint32_t k = 0; k < 100; k++) {
            tk_addr peer = ipv4(0x0b000000 + k);
            assert_true(pick_skip(f, &peer, NULL, 0) >= 2);
        }
        atomic_store(&f->b[0]->up, 1);
        atomic_store(&f->b[1]->up, 1);
    }
}

/* A pick reserves a slot (active goes up); with every usable backend at
 * maxconn the answer is BAL_FULL, and bal_release frees a slot again. */
static void maxconn_reserves_fills_and_releases(void **state)
{
    fixture *f = *state;
    for (size_t a = 0; a < NALGOS; a++) {
        bal_table *t = table(f, all_algos[a], 3, NULL);
        t->e[0].maxconn = 1;
        t->e[1].maxconn = 2;
        atomic_store(&f->b[2]->up, 0);
        tk_addr peer = ipv4(0x0c000001);
        const bal_entry *got[3];
        for (int k = 0; k < 3; k++) {
            assert_int_equal(bal_pick(&f->lp, &peer, NULL, 0, &got[k]), BAL_PICKED);
            assert_true(got[k] == &t->e[0] || got[k] == &t->e[1]);
        }
        assert_int_equal(active(f->b[0]), 1);
        assert_int_equal(active(f->b[1]), 2);
        const bal_entry *e = NULL;
        assert_int_equal(bal_pick(&f->lp, &peer, NULL, 0, &e), BAL_FULL);
        assert_int_equal(active(f->b[0]), 1);
        assert_int_equal(active(f->b[1]), 2);
        /* Only a skipped or down one has room: that is nothing, not full. */
        bal_backend *skip[2] = {f->b[0], f->b[1]};
        assert_int_equal(bal_pick(&f->lp, &peer, skip, 2, &e), BAL_NONE);
        bal_release(f->bal, f->b[0]);
        assert_int_equal(active(f->b[0]), 0);
        assert_int_equal(bal_pick(&f->lp, &peer, NULL, 0, &e), BAL_PICKED);
        assert_ptr_equal(e, &t->e[0]);
        assert_int_equal(active(f->b[0]), 1);
        /* maxconn 0 has no limit. */
        atomic_store(&f->b[2]->up, 1);
        for (int k = 0; k < 50; k++) {
            assert_int_equal(bal_pick(&f->lp, &peer, NULL, 0, &e), BAL_PICKED);
            assert_ptr_equal(e, &t->e[2]);
        }
        assert_int_equal(active(f->b[2]), 50);
        for (int k = 0; k < 50; k++)
            bal_release(f->bal, f->b[2]);
        bal_release(f->bal, f->b[0]);
        bal_release(f->bal, f->b[1]);
        bal_release(f->bal, f->b[1]);
        for (size_t i = 0; i < 3; i++)
            assert_int_equal(active(f->b[i]), 0);
    }
}

/* leastconn takes the backend with the fewest active connections per unit
 * of weight, and ties go to each of the tied backends in turn of chance. */
static void leastconn_picks_lowest_active_per_weight(void **state)
{
    fixture *f = *state;
    static const unsigned w[] = {1, 2, 1};
    table(f, TK_ALGO_LEASTCONN, 3, w);
    /* 3/1, 4/2, 1/1: the third. */
    atomic_store(&f->b[0]->active, 3);
    atomic_store(&f->b[1]->active, 4);
    atomic_store(&f->b[2]->active, 1);
    for (int k = 0; k < 50; k++)
        assert_int_equal(pick(f), 2);
    /* 3/1, 3/2, 2/1: the second (1.5 per unit). */
    atomic_store(&f->b[1]->active, 3);
    atomic_store(&f->b[2]->active, 2);
    for (int k = 0; k < 50; k++)
        assert_int_equal(pick(f), 1);
    /* Kept slots shift the choice: from 0,0,0 the picks fill evenly by weight. */
    for (size_t i = 0; i < 3; i++)
        atomic_store(&f->b[i]->active, 0);
    const bal_entry *e;
    for (int k = 0; k < 40; k++)
        assert_int_equal(bal_pick(&f->lp, NULL, NULL, 0, &e), BAL_PICKED);
    assert_int_equal(active(f->b[0]), 10);
    assert_int_equal(active(f->b[1]), 20);
    assert_int_equal(active(f->b[2]), 10);
    /* Ties are not all given to the first. */
    for (size_t i = 0; i < 3; i++)
        atomic_store(&f->b[i]->active, 0);
    static const unsigned even[] = {1, 1, 1};
    table(f, TK_ALGO_LEASTCONN, 3, even);
    size_t seen[3] = {0, 0, 0};
    for (int k = 0; k < 300; k++)
        seen[pick(f)]++;
    for (size_t i = 0; i < 3; i++)
        assert_true(seen[i] > 30);
}

/* first fills backends in table order up to their maxconn. */
static void first_fills_in_table_order(void **state)
{
    fixture *f = *state;
    bal_table *t = table(f, TK_ALGO_FIRST, 3, NULL);
    t->e[0].maxconn = 2;
    t->e[1].maxconn = 1;
    t->e[2].maxconn = 1;
    const bal_entry *e;
    static const size_t want[] = {0, 0, 1, 2};
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(bal_pick(&f->lp, NULL, NULL, 0, &e), BAL_PICKED);
        assert_int_equal(index_of(f, e), want[k]);
    }
    assert_int_equal(bal_pick(&f->lp, NULL, NULL, 0, &e), BAL_FULL);
    bal_release(f->bal, f->b[1]);
    assert_int_equal(bal_pick(&f->lp, NULL, NULL, 0, &e), BAL_PICKED);
    assert_int_equal(index_of(f, e), 1);
    bal_release(f->bal, f->b[0]);
    bal_release(f->bal, f->b[0]);
    bal_release(f->bal, f->b[1]);
    bal_release(f->bal, f->b[2]);
    /* Without limits, always the first that is up. */
    t->e[0].maxconn = t->e[1].maxconn = t->e[2].maxconn = 0;
    for (int k = 0; k < 20; k++)
        assert_int_equal(pick(f), 0);
    atomic_store(&f->b[0]->up, 0);
    for (int k = 0; k < 20; k++)
        assert_int_equal(pick(f), 1);
}

/* source: one address always lands on one backend (its port does not
 * matter, nor does writing it as IPv4-mapped IPv6), and many addresses
 * spread over all backends. */
static void source_is_sticky_and_spreads(void **state)
{
    fixture *f = *state;
    table(f, TK_ALGO_SOURCE, 3, NULL);
    size_t seen[3] = {0, 0, 0};
    for (uint32_t k = 0; k < 1000; k++) {
        tk_addr peer = ipv4(0xc6336400 + k * 7919);
        size_t first = pick_skip(f, &peer, NULL, 0);
        seen[first]++;
        ((struct sockaddr_in *)&peer.ss)->sin_port = htons(1234);
        assert_int_equal(pick_skip(f, &peer, NULL, 0), first);
        tk_addr mapped;
        memset(&mapped, 0, sizeof(mapped));
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&mapped.ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr.s6_addr[10] = 0xff;
        in6->sin6_addr.s6_addr[11] = 0xff;
        memcpy(&in6->sin6_addr.s6_addr[12], &((struct sockaddr_in *)&peer.ss)->sin_addr, 4);
        mapped.len = sizeof(*in6);
        assert_int_equal(pick_skip(f, &mapped, NULL, 0), first);
    }
    for (size_t i = 0; i < 3; i++)
        assert_in_range(seen[i], 250, 420);
}

/* Adding a fourth backend to three moves about a quarter of the clients,
 * and every client that moves goes to the new one. */
static void source_new_backend_moves_only_its_share(void **state)
{
    fixture *f = *state;
    size_t before[1000];
    table(f, TK_ALGO_SOURCE, 3, NULL);
    for (uint32_t k = 0; k < 1000; k++) {
        tk_addr peer = ipv4(0x64400000 + k * 104729);
        before[k] = pick_skip(f, &peer, NULL, 0);
    }
    table(f, TK_ALGO_SOURCE, 4, NULL);
    size_t moved = 0;
    for (uint32_t k = 0; k < 1000; k++) {
        tk_addr peer = ipv4(0x64400000 + k * 104729);
        size_t now = pick_skip(f, &peer, NULL, 0);
        if (now != before[k]) {
            moved++;
            assert_int_equal(now, 3);
        }
    }
    assert_in_range(moved, 150, 350);
}

/* source honours weights: a backend of weight 3 beside one of weight 1
 * gets about three clients in four. */
static void source_spreads_by_weight(void **state)
{
    fixture *f = *state;
    static const unsigned w[] = {1, 3};
    table(f, TK_ALGO_SOURCE, 2, w);
    size_t seen[2] = {0, 0};
    for (uint32_t k = 0; k < 2000; k++) {
        tk_addr peer = ipv4(0x0d000000 + k * 65537);
        seen[pick_skip(f, &peer, NULL, 0)]++;
    }
    assert_in_range(seen[0], 380, 620);
    assert_in_range(seen[1], 1380, 1620);
}

/* random never hands out a down or full backend, and over many draws it
 * uses each of the others. */
static void random_avoids_down_and_full(void **state)
{
    fixture *f = *state;
    bal_table *t = table(f, TK_ALGO_RANDOM, 4, NULL);
    atomic_store(&f->b[0]->up, 0);
    t->e[1].maxconn = 1;
    atomic_store(&f->b[1]->active, 1);
    size_t seen[4] = {0, 0, 0, 0};
    for (int k = 0; k < 1000; k++)
        seen[pick(f)]++;
    assert_int_equal(seen[0], 0);
    assert_int_equal(seen[1], 0);
    assert_true(seen[2] > 100);
    assert_true(seen[3] > 100);
    assert_int_equal(active(f->b[1]), 1);
    assert_int_equal(active(f->b[2]), 0);
    assert_int_equal(active(f->b[3]), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(roundrobin_5_1_1_is_smooth, setup, teardown),
        cmocka_unit_test_setup_teardown(roundrobin_3_1_counts_are_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(skip_list_excludes_tried_backends, setup, teardown),
        cmocka_unit_test_setup_teardown(suspects_only_when_nothing_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(down_backends_never_chosen, setup, teardown),
        cmocka_unit_test_setup_teardown(weight_zero_never_chosen, setup, teardown),
        cmocka_unit_test_setup_teardown(backups_only_without_primaries, setup, teardown),
        cmocka_unit_test_setup_teardown(maxconn_reserves_fills_and_releases, setup, teardown),
        cmocka_unit_test_setup_teardown(leastconn_picks_lowest_active_per_weight, setup, teardown),
        cmocka_unit_test_setup_teardown(first_fills_in_table_order, setup, teardown),
        cmocka_unit_test_setup_teardown(source_is_sticky_and_spreads, setup, teardown),
        cmocka_unit_test_setup_teardown(source_new_backend_moves_only_its_share, setup, teardown),
        cmocka_unit_test_setup_teardown(source_spreads_by_weight, setup, teardown),
        cmocka_unit_test_setup_teardown(random_avoids_down_and_full, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

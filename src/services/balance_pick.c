/* Choosing a backend: which ones may take a client, then the algorithm. */
#include <math.h>
#include <netinet/in.h>
#include <string.h>

#include "balance_internal.h"

static uint64_t rng_next(bal_loop *lp)
{
    /* xorshift64*: plenty for spreading load, cheap, per loop. */
    uint64_t x = lp->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    lp->rng = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static int has_slot(const bal_entry *e)
{
    return e->maxconn == 0 ||
           atomic_load_explicit(&e->b->active, memory_order_relaxed) < e->maxconn;
}

/* Takes a slot on e's backend; 0 if it filled up meanwhile (another loop). */
static int reserve(const bal_entry *e)
{
    _Atomic unsigned *a = &e->b->active;
    if (e->maxconn == 0) {
        atomic_fetch_add_explicit(a, 1, memory_order_relaxed);
        return 1;
    }
    unsigned cur = atomic_load_explicit(a, memory_order_relaxed);
    while (cur < e->maxconn)
        if (atomic_compare_exchange_weak_explicit(a, &cur, cur + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return 1;
    return 0;
}

/* a is less loaded than b, per unit of weight. */
static int lighter(const bal_entry *a, const bal_entry *b)
{
    uint64_t la = atomic_load_explicit(&a->b->active, memory_order_relaxed);
    uint64_t lb = atomic_load_explicit(&b->b->active, memory_order_relaxed);
    return la * b->weight < lb * a->weight;
}

static size_t pick_roundrobin(bal_loop *lp, const bal_entry **v, size_t n)
{
    /* Smooth weighted round robin: every candidate gains its weight, the
     * richest is chosen and pays the total; weights 5,1,1 give
     * a a b a c a a rather than a a a a a b c. */
    int64_t total = 0;
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t *cur = &v[i]->b->rr_cur[lp->index];
        *cur += v[i]->weight;
        total += v[i]->weight;
        if (*cur > v[best]->b->rr_cur[lp->index])
            best = i;
    }
    v[best]->b->rr_cur[lp->index] -= total;
    return best;
}

static size_t pick_leastconn(bal_loop *lp, const bal_entry **v, size_t n)
{
    /* Start at a random place so ties do not all go to the first. */
    size_t start = (size_t)(rng_next(lp) % n), best = start;
    for (size_t k = 1; k < n; k++) {
        size_t i = (start + k) % n;
        if (lighter(v[i], v[best]))
            best = i;
    }
    return best;
}

static size_t weighted_random(bal_loop *lp, const bal_entry **v, size_t n)
{
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i]->weight;
    uint64_t x = rng_next(lp) % total;
    for (size_t i = 0; i < n; i++) {
        if (x < v[i]->weight)
            return i;
        x -= v[i]->weight;
    }
    return n - 1;
}

static size_t pick_random(bal_loop *lp, const bal_entry **v, size_t n)
{
    /* Two choices: the less loaded of two weighted random draws. */
    size_t a = weighted_random(lp, v, n), b = weighted_random(lp, v, n);
    return lighter(v[b], v[a]) ? b : a;
}

/* The client address bytes that identify it (an IPv4-mapped IPv6 address
 * hashes like the IPv4 one). */
static uint64_t client_hash(const tk_addr *peer)
{
    if (peer->ss.ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)&peer->ss;
        return bal_hash(&s->sin_addr, 4);
    }
    if (peer->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&peer->ss;
        if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr))
            return bal_hash(&s->sin6_addr.s6_addr[12], 4);
        return bal_hash(&s->sin6_addr, 16);
    }
    return 0;
}

static size_t pick_source(const tk_addr *peer, const bal_entry **v, size_t n)
{
    /* Weighted rendezvous hashing: each backend scores the client, the top
     * score wins. A new backend takes only the clients it now outscores
     * (about weight/total of them); the rest stay where they were. */
    uint64_t ch = client_hash(peer);
    size_t best = 0;
    double best_score = -1.0;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = bal_hash((uint64_t[]){ch ^ v[i]->b->hash}, sizeof(uint64_t));
        double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
        double score = (double)v[i]->weight / -log(u);
        if (score > best_score) {
            best_score = score;
            best = i;
        }
    }
    return best;
}

static size_t choose(bal_loop *lp, tk_balance_algo algo, const tk_addr *peer, const bal_entry **v,
                     size_t n)
{
    switch (algo) {
    case TK_ALGO_LEASTCONN: return pick_leastconn(lp, v, n);
    case TK_ALGO_RANDOM: return pick_random(lp, v, n);
    case TK_ALGO_SOURCE: return pick_source(peer, v, n);
    case TK_ALGO_FIRST: return 0; /* candidates are in table order */
    case TK_ALGO_ROUNDROBIN:
    default: return pick_roundrobin(lp, v, n);
    }
}

static int skipped(const bal_backend *b, bal_backend *const *skip, size_t nskip)
{
    for (size_t i = 0; i < nskip; i++)
        if (skip[i] == b)
            return 1;
    return 0;
}

/* Collects the usable entries of one class (backup or not) into v, fresh
 * ones (not suspect) first-class: suspects are used only if no fresh one is
 * there. Returns the count. */
static size_t usable(const bal_table *t, int backup, uint64_t now, bal_backend *const *skip,
                     size_t nskip, const bal_entry **v)
{
    size_t n = 0, nsuspect = 0;
    const bal_entry *suspects[TK_BALANCE_MAX_BACKENDS];
    for (size_t i = 0; i < t->n; i++) {
        const bal_entry *e = &t->e[i];
        if (e->backup != backup || e->weight == 0 || skipped(e->b, skip, nskip) ||
            !atomic_load_explicit(&e->b->up, memory_order_relaxed))
            continue;
        if (atomic_load_explicit(&e->b->suspect_until, memory_order_relaxed) > now)
            suspects[nsuspect++] = e;
        else
            v[n++] = e;
    }
    if (n == 0) {
        memcpy(v, suspects, nsuspect * sizeof(*v));
        n = nsuspect;
    }
    return n;
}

bal_pick_status bal_pick(bal_loop *lp, const tk_addr *peer, bal_backend *const *skip, size_t nskip,
                         const bal_entry **out)
{
    const bal_table *t = lp->table;
    const bal_entry *v[TK_BALANCE_MAX_BACKENDS];
    uint64_t now = tk_loop_now(lp->loop);
    /* Backups only when no other backend is up (or every one that is was
     * already tried by this client). */
    size_t n = usable(t, 0, now, skip, nskip, v);
    if (n == 0)
        n = usable(t, 1, now, skip, nskip, v);
    if (n == 0)
        return BAL_NONE;
    /* Only those with a free slot; another loop may take the last one
     * between the look and the reservation, so try again without it. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (has_slot(v[i]))
            v[m++] = v[i];
    while (m > 0) {
        size_t i = choose(lp, t->set.algo, peer, v, m);
        if (reserve(v[i])) {
            *out = v[i];
            return BAL_PICKED;
        }
        memmove(&v[i], &v[i + 1], (m - i - 1) * sizeof(*v));
        m--;
    }
    return BAL_FULL;
}

void bal_kick_waiters(tk_balance *bal)
{
    /* One post per loop with waiters; a flag keeps it to one outstanding. */
    for (unsigned i = 0; i < bal->nloops; i++) {
        bal_loop *lp = &bal->loops[i];
        if (atomic_load_explicit(&lp->nqueued, memory_order_relaxed) == 0)
            continue;
        if (atomic_exchange_explicit(&lp->kick_posted, 1, memory_order_acq_rel))
            continue;
        if (tk_loop_post(lp->loop, bal_kick_post, lp) < 0)
            atomic_store_explicit(&lp->kick_posted, 0, memory_order_relaxed);
    }
}

void bal_release(tk_balance *bal, bal_backend *b)
{
    atomic_fetch_sub_explicit(&b->active, 1, memory_order_relaxed);
    if (atomic_load_explicit(&bal->queued, memory_order_relaxed) > 0)
        bal_kick_waiters(bal);
}

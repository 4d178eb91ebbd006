/* Per-address limits shared by the loops of a server: a bounded hash table
 * of addresses, each with its open connections and a token bucket, split in
 * shards under their own mutex so loops rarely wait for each other. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "tcpkit/access.h"
#include "tcpkit/lograte.h"
#include "tcpkit/loop.h"

#define NONE           UINT32_MAX
#define MANY_SHARDS    16
#define MANY_THRESHOLD 4096

/* One tracked address. Entries with no open connection sit on their shard's
 * idle list, oldest first; those are the ones that may be dropped. */
typedef struct {
    unsigned char key[16];
    uint32_t chain;        /* next entry in the hash bucket */
    uint32_t older, newer; /* idle list links */
    uint32_t conns;
    double tokens;
    uint64_t last_ms; /* last admission attempt (refill and idle age) */
} entry;

typedef struct {
    pthread_mutex_t lock;
    entry *e;
    uint32_t *bucket;
    uint32_t cap, mask, used, free_head;
    uint32_t idle_old, idle_new;
} shard;

struct tk_access {
    tk_access_config cfg;
    double burst;
    uint64_t refill_ms; /* an empty bucket is full again after this long */
    int limits;
    unsigned nshards;
    shard *shards;
    uint64_t seed[2];
    atomic_ulong admitted, evicted;
    atomic_ulong refused[TK_REFUSE_COUNT];
    tk_lograte log;
};

static const char *const reason_names[TK_REFUSE_COUNT] = {"deny", "per-ip", "rate", "full"};

const char *tk_refuse_reason_name(tk_refuse_reason r)
{
    return (unsigned)r < TK_REFUSE_COUNT ? reason_names[r] : "?";
}

void tk_access_config_init(tk_access_config *c)
{
    memset(c, 0, sizeof(*c));
    c->table_max = TK_ACCESS_TABLE_DEFAULT;
    c->ipv6_prefix = 128;
    c->log_interval_ms = 10 * 1000;
}

int tk_access_config_check(const tk_access_config *c, char *err, size_t errcap)
{
    const char *why = NULL;
    if (!(c->rate_per_ip >= 0 && c->rate_per_ip <= 1e9))
        why = "the rate per address must be between 0 and 1e9 a second";
    else if (!(c->rate_burst >= 0 && c->rate_burst <= 1e9))
        why = "the burst must be between 0 and 1e9";
    else if (c->rate_burst > 0 && c->rate_burst < 1)
        why = "the burst must be at least 1";
    else if (c->table_max < 1 || c->table_max > TK_ACCESS_TABLE_MAX)
        why = "the address table must hold 1 to 16777216 entries";
    else if (c->ipv6_prefix < 32 || c->ipv6_prefix > 128)
        why = "the IPv6 key prefix must be 32 to 128";
    if (why && err && errcap)
        snprintf(err, errcap, "%s", why);
    return why ? -EINVAL : 0;
}

/* ---- keyed hashing (SipHash-2-4 over the 16-byte key) ---- */

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static void sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl(v[1], 13) ^ v[0];
    v[0] = rotl(v[0], 32);
    v[2] += v[3];
    v[3] = rotl(v[3], 16) ^ v[2];
    v[0] += v[3];
    v[3] = rotl(v[3], 21) ^ v[0];
    v[2] += v[1];
    v[1] = rotl(v[1], 17) ^ v[2];
    v[2] = rotl(v[2], 32);
}

static uint64_t load64(const unsigned char *p)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

/* An attacker choosing addresses cannot aim them at one bucket without the
 * random seed. */
static uint64_t key_hash(const tk_access *a, const unsigned char key[16])
{
    uint64_t v[4] = {a->seed[0] ^ 0x736f6d6570736575ull, a->seed[1] ^ 0x646f72616e646f6dull,
                     a->seed[0] ^ 0x6c7967656e657261ull, a->seed[1] ^ 0x7465646279746573ull};
    for (int i = 0; i < 2; i++) {
        uint64_t m = load64(key + 8 * i);
        v[3] ^= m;
        sipround(v);
        sipround(v);
        v[0] ^= m;
    }
    uint64_t b = (uint64_t)16 << 56;
    v[3] ^= b;
    sipround(v);
    sipround(v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++)
        sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---- the table ---- */

static int shard_init(shard *s, uint32_t cap)
{
    uint32_t nb = 1;
    while (nb < cap)
        nb <<= 1;
    s->e = calloc(cap, sizeof(entry));
    s->bucket = malloc(nb * sizeof(uint32_t));
    if (!s->e || !s->bucket)
        return -ENOMEM;
    int rc = pthread_mutex_init(&s->lock, NULL);
    if (rc)
        return -rc;
    for (uint32_t i = 0; i < nb; i++)
        s->bucket[i] = NONE;
    for (uint32_t i = 0; i < cap; i++)
        s->e[i].chain = i + 1 < cap ? i + 1 : NONE;
    s->cap = cap;
    s->mask = nb - 1;
    s->free_head = 0;
    s->idle_old = s->idle_new = NONE;
    return 0;
}

static void idle_unlink(shard *s, uint32_t i)
{
    entry *e = &s->e[i];
    if (e->older != NONE)
        s->e[e->older].newer = e->newer;
    else
        s->idle_old = e->newer;
    if (e->newer != NONE)
        s->e[e->newer].older = e->older;
    else
        s->idle_new = e->older;
}

static void idle_push(shard *s, uint32_t i)
{
    entry *e = &s->e[i];
    e->newer = NONE;
    e->older = s->idle_new;
    if (s->idle_new != NONE)
        s->e[s->idle_new].newer = i;
    else
        s->idle_old = i;
    s->idle_new = i;
}

static uint32_t *find_slot(shard *s, uint64_t h, const unsigned char key[16])
{
    uint32_t *p = &s->bucket[(h >> 8) & s->mask];
    while (*p != NONE && memcmp(s->e[*p].key, key, 16) != 0)
        p = &s->e[*p].chain;
    return p;
}

/* Unlinks idle entry i from its bucket and the idle list, and frees it. */
static void drop(tk_access *a, shard *s, uint32_t i)
{
    uint32_t *p = find_slot(s, key_hash(a, s->e[i].key), s->e[i].key);
    *p = s->e[i].chain;
    idle_unlink(s, i);
    s->e[i].chain = s->free_head;
    s->free_head = i;
    s->used--;
}

/* Drops the oldest idle entries whose bucket has refilled. */
static void expire(tk_access *a, shard *s, uint64_t now)
{
    for (int n = 0; n < 8 && s->idle_old != NONE; n++) {
        entry *e = &s->e[s->idle_old];
        if (now < e->last_ms || now - e->last_ms < a->refill_ms)
            return;
        drop(a, s, s->idle_old);
    }
}

static void key_of(const tk_access *a, const tk_cidr *ip, unsigned char key[16])
{
    memset(key, 0, 16);
    if (ip->family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, ip->addr, 4);
        return;
    }
    memcpy(key, ip->addr, 16);
    unsigned p = a->cfg.ipv6_prefix;
    for (unsigned i = 0; i < 16; i++) {
        unsigned lo = i * 8;
        if (p <= lo)
            key[i] = 0;
        else if (p < lo + 8)
            key[i] &= (unsigned char)(0xff << (8 - (p - lo)));
    }
}

/* The entry for key, created if needed (making room as documented). Returns
 * its index, or NONE when the shard is full of busy entries. */
static uint32_t lookup(tk_access *a, shard *s, const unsigned char key[16], uint64_t now)
{
    uint64_t h = key_hash(a, key);
    uint32_t *p = find_slot(s, h, key);
    if (*p != NONE)
        return *p;
    if (s->free_head == NONE) {
        if (s->idle_old == NONE)
            return NONE;
        drop(a, s, s->idle_old);
        atomic_fetch_add_explicit(&a->evicted, 1, memory_order_relaxed);
        p = find_slot(s, h, key); /* the drop may have changed the chain */
    }
    uint32_t i = s->free_head;
    entry *e = &s->e[i];
    s->free_head = e->chain;
    memcpy(e->key, key, 16);
    e->chain = NONE;
    e->conns = 0;
    e->tokens = a->burst;
    e->last_ms = now;
    *p = i;
    s->used++;
    idle_push(s, i);
    return i;
}

static shard *shard_of(tk_access *a, const unsigned char key[16])
{
    return &a->shards[key_hash(a, key) & (a->nshards - 1)];
}

/* Adds the tokens earned since the last attempt. Loops pass their own cached
 * times, so now may be a little behind last_ms: then nothing is earned. */
static void refill(const tk_access *a, entry *e, uint64_t now)
{
    if (now <= e->last_ms)
        return;
    if (a->cfg.rate_per_ip > 0)
        e->tokens =
            fmin(a->burst, e->tokens + (double)(now - e->last_ms) * a->cfg.rate_per_ip / 1e3);
    e->last_ms = now;
}

/* The limits for one admitted-by-policy peer; lock taken here. */
static int check_limits(tk_access *a, const tk_cidr *ip, uint64_t now, tk_refuse_reason *why)
{
    unsigned char key[16];
    key_of(a, ip, key);
    shard *s = shard_of(a, key);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    expire(a, s, now);
    uint32_t i = lookup(a, s, key, now);
    if (i == NONE) {
        *why = TK_REFUSE_FULL;
        rc = -EACCES;
    } else {
        entry *e = &s->e[i];
        refill(a, e, now);
        if (a->cfg.max_conns_per_ip && e->conns >= a->cfg.max_conns_per_ip) {
            *why = TK_REFUSE_PER_IP;
            rc = -EACCES;
        } else if (a->cfg.rate_per_ip > 0 && e->tokens < 1.0) {
            *why = TK_REFUSE_RATE;
            rc = -EACCES;
        } else {
            if (a->cfg.rate_per_ip > 0)
                e->tokens -= 1.0;
            if (a->cfg.max_conns_per_ip && e->conns++ == 0)
                idle_unlink(s, i);
        }
        if (e->conns == 0) {
            /* Touched: now the newest idle entry, or gone if it has nothing to remember. */
            idle_unlink(s, i);
            idle_push(s, i);
            if (a->cfg.rate_per_ip <= 0)
                drop(a, s, i);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int tk_access_admit(tk_access *a, const tk_addr *peer, uint64_t now_ms, tk_refuse_reason *why)
{
    tk_refuse_reason r = TK_REFUSE_DENY;
    tk_cidr ip;
    int have_ip = tk_cidr_of_addr(peer, &ip) == 0;
    int rc = 0;
    if (!tk_access_policy_permits(a->cfg.policy, peer))
        rc = -EACCES;
    else if (a->limits && have_ip)
        rc = check_limits(a, &ip, now_ms, &r);
    if (rc == 0) {
        atomic_fetch_add_explicit(&a->admitted, 1, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&a->refused[r], 1, memory_order_relaxed);
    char who[INET6_ADDRSTRLEN] = "-";
    if (have_ip)
        inet_ntop(ip.family, ip.addr, who, sizeof(who));
    (void)tk_lograte_note(&a->log, r, now_ms, who);
    if (why)
        *why = r;
    return rc;
}

void tk_access_release(tk_access *a, const tk_addr *peer, uint64_t now_ms)
{
    tk_cidr ip;
    if (!a->cfg.max_conns_per_ip || tk_cidr_of_addr(peer, &ip) < 0)
        return;
    unsigned char key[16];
    key_of(a, &ip, key);
    shard *s = shard_of(a, key);
    pthread_mutex_lock(&s->lock);
    uint32_t i = *find_slot(s, key_hash(a, key), key);
    if (i != NONE && s->e[i].conns > 0 && --s->e[i].conns == 0) {
        refill(a, &s->e[i], now_ms);
        idle_push(s, i);
        if (a->cfg.rate_per_ip <= 0)
            drop(a, s, i); /* nothing left to remember */
    }
    pthread_mutex_unlock(&s->lock);
}

int tk_access_limits_on(const tk_access *a)
{
    return a->limits;
}

static void seed_hash(tk_access *a)
{
    if (getrandom(a->seed, sizeof(a->seed), GRND_NONBLOCK) == (ssize_t)sizeof(a->seed))
        return;
    /* No entropy yet (early boot): still different per process and table. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    a->seed[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)a;
    a->seed[1] = (uint64_t)ts.tv_sec * 0xc2b2ae3d27d4eb4full ^ (uint64_t)getpid();
}

int tk_access_new(const tk_access_config *c, tk_access **out)
{
    if (tk_access_config_check(c, NULL, 0) < 0)
        return -EINVAL;
    tk_access *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->cfg = *c;
    a->limits = c->max_conns_per_ip > 0 || c->rate_per_ip > 0;
    a->burst = c->rate_burst > 0 ? c->rate_burst : fmax(1.0, ceil(c->rate_per_ip));
    a->refill_ms = c->rate_per_ip > 0 ? (uint64_t)ceil(a->burst * 1e3 / c->rate_per_ip) : 0;
    seed_hash(a);
    int rc = tk_lograte_init(&a->log, TK_LOG_WARN, c->log_interval_ms, "refused", "connection",
                             reason_names, TK_REFUSE_COUNT);
    if (rc < 0) {
        free(a);
        return rc;
    }
    if (a->limits) {
        a->nshards = c->table_max >= MANY_THRESHOLD ? MANY_SHARDS : 1;
        a->shards = calloc(a->nshards, sizeof(shard));
        rc = a->shards ? 0 : -ENOMEM;
        uint32_t per = (uint32_t)((c->table_max + a->nshards - 1) / a->nshards);
        for (unsigned i = 0; rc == 0 && i < a->nshards; i++) {
            rc = shard_init(&a->shards[i], per);
            if (rc < 0) {
                free(a->shards[i].e);
                free(a->shards[i].bucket);
                a->nshards = i;
            }
        }
        if (rc < 0) {
            tk_access_free(a);
            return rc;
        }
    }
    *out = a;
    return 0;
}

void tk_access_free(tk_access *a)
{
    if (!a)
        return;
    (void)tk_lograte_flush(&a->log, tk_clock_us() / 1000u, 1);
    tk_lograte_destroy(&a->log);
    for (unsigned i = 0; i < a->nshards; i++) {
        pthread_mutex_destroy(&a->shards[i].lock);
        free(a->shards[i].e);
        free(a->shards[i].bucket);
    }
    free(a->shards);
    free(a);
}

void tk_access_get_counters(tk_access *a, tk_access_counters *out)
{
    memset(out, 0, sizeof(*out));
    out->admitted = atomic_load_explicit(&a->admitted, memory_order_relaxed);
    out->evicted = atomic_load_explicit(&a->evicted, memory_order_relaxed);
    for (int i = 0; i < TK_REFUSE_COUNT; i++)
        out->refused[i] = atomic_load_explicit(&a->refused[i], memory_order_relaxed);
    for (unsigned i = 0; i < a->nshards; i++) {
        pthread_mutex_lock(&a->shards[i].lock);
        out->tracked += a->shards[i].used;
        pthread_mutex_unlock(&a->shards[i].lock);
    }
}

uint32_t tk_access_log_flush(tk_access *a, uint64_t now_ms, int force)
{
    return tk_lograte_flush(&a->log, now_ms, force);
}

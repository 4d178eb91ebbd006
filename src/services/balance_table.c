/* Backends and the immutable tables that list them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "balance_internal.h"

uint64_t bal_hash(const void *p, size_t n)
{
    /* FNV-1a, then a 64-bit finalizer so nearby inputs spread apart. */
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

void bal_settings_from(bal_settings *s, const tk_balance_config *c)
{
    memset(s, 0, sizeof(*s));
    s->algo = c->algo;
    s->connect_timeout_ms = c->connect_timeout_ms;
    s->connect_budget_ms = c->connect_budget_ms;
    s->first_byte_timeout_ms = c->first_byte_timeout_ms;
    s->queue_timeout_ms = c->queue_timeout_ms;
    s->client_timeout_ms = c->client_timeout_ms;
    s->backend_timeout_ms = c->backend_timeout_ms;
    s->check_interval_ms = c->check_interval_ms;
    s->check_timeout_ms = c->check_timeout_ms;
    s->retries = c->retries;
    s->queue_max = c->queue_max;
    s->rise = c->rise;
    s->fall = c->fall;
    s->replay_max = c->replay_max;
    s->pipe_size = c->pipe_size;
    s->sock = c->sock;
    memcpy(s->check_send, c->check_send, c->check_send_len);
    s->check_send_len = c->check_send_len;
    memcpy(s->check_expect, c->check_expect, c->check_expect_len);
    s->check_expect_len = c->check_expect_len;
}

bal_backend *bal_backend_ref(bal_backend *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
    return b;
}

void bal_backend_unref(bal_backend *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(b->rr_cur);
    free(b);
}

bal_table *bal_table_ref(bal_table *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void bal_table_unref(bal_table *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < t->n; i++)
        bal_backend_unref(t->e[i].b);
    tk_tls_ctx_free(t->tls);
    free(t);
}

/* The server context for c's TLS files, or NULL when c names none. */
static int tls_build(const tk_balance_config *c, tk_tls_ctx **out, char *err, size_t errcap)
{
    *out = NULL;
    if (!c->tls_cert[0])
        return 0;
    tk_tls_config tc;
    tk_tls_config_init(&tc);
    tc.cert_file = c->tls_cert;
    tc.key_file = c->tls_key;
    tc.ca_file = c->tls_client_ca[0] ? c->tls_client_ca : NULL;
    tc.min_version = c->tls_min_version;
    tc.handshake_timeout_ms = c->tls_handshake_timeout_ms;
    /* The relay encrypts through OpenSSL either way: kernel TLS would only
     * add its set-up cost. */
    tc.ktls = 0;
    return tk_tls_ctx_new(&tc, 1, out, err, errcap);
}

/* A new backend for an address, resolved now. */
static int backend_new(tk_balance *bal, const char *addr, bal_backend **out, char *err,
                       size_t errcap)
{
    bal_backend *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->rr_cur = calloc(bal->nloops, sizeof(*b->rr_cur));
    if (!b->rr_cur) {
        free(b);
        return -ENOMEM;
    }
    int n = tk_addr_resolve(addr, AF_UNSPEC, 0, b->addrs, BAL_MAX_ADDRS);
    if (n < 0) {
        snprintf(err, errcap, "backend %s: %s", addr,
                 n == -ENOENT ? "the name does not resolve" : strerror(-n));
        free(b->rr_cur);
        free(b);
        return n;
    }
    b->naddrs = (size_t)n;
    snprintf(b->addr, sizeof(b->addr), "%s", addr);
    b->hash = bal_hash(addr, strlen(addr));
    b->nloops = bal->nloops;
    b->check.io.fd = -1;
    atomic_init(&b->refs, 1);
    atomic_init(&b->up, 1);
    *out = b;
    return 0;
}

int bal_table_build(tk_balance *bal, const tk_balance_config *c, const bal_table *old,
                    bal_table **out, char *err, size_t errcap)
{
    bal_table *t = calloc(1, sizeof(*t) + c->nbackends * sizeof(bal_entry));
    if (!t) {
        snprintf(err, errcap, "out of memory");
        return -ENOMEM;
    }
    atomic_init(&t->refs, 1);
    bal_settings_from(&t->set, c);
    int rc = tls_build(c, &t->tls, err, errcap);
    if (rc < 0) {
        bal_table_unref(t);
        return rc;
    }
    for (size_t i = 0; i < c->nbackends; i++) {
        const tk_balance_backend_config *bc = &c->backend[i];
        bal_backend *b = NULL;
        for (size_t j = 0; old && j < old->n && !b; j++)
            if (strcmp(old->e[j].b->addr, bc->addr) == 0)
                b = bal_backend_ref(old->e[j].b);
        if (!b) {
            rc = backend_new(bal, bc->addr, &b, err, errcap);
            if (rc < 0) {
                bal_table_unref(t);
                return rc;
            }
        }
        bal_entry *e = &t->e[t->n++];
        e->b = b;
        e->weight = bc->weight;
        e->maxconn = bc->maxconn;
        e->backup = bc->backup;
        e->proxy = bc->proxy < 0 ? c->send_proxy : bc->proxy;
    }
    *out = t;
    return 0;
}

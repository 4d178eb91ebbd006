/* The download hash thread: a ring of slots filled by the loop thread and
 * emptied into EVP digests by the hash thread. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fclient_hash.h"

#define SLOTS      8
#define SLOT_BYTES (512 * 1024)

typedef struct {
    EVP_MD_CTX *md;
    size_t len;
    unsigned char data[SLOT_BYTES];
} slot;

struct fc_hasher {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t filled;   /* a slot was published, or stopping */
    pthread_cond_t emptied;  /* a slot was hashed */
    unsigned long long head; /* slots published (the next one being filled is head) */
    unsigned long long tail; /* slots hashed */
    int open;                /* slot head is being filled */
    int stopping;
    slot *ring;
};

static void *run(void *arg)
{
    fc_hasher *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (h->tail == h->head && !h->stopping)
            pthread_cond_wait(&h->filled, &h->mu);
        if (h->tail == h->head)
            break; /* stopping, and everything is hashed */
        slot *s = &h->ring[h->tail % SLOTS];
        pthread_mutex_unlock(&h->mu);
        EVP_DigestUpdate(s->md, s->data, s->len);
        pthread_mutex_lock(&h->mu);
        h->tail++;
        pthread_cond_signal(&h->emptied);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

int fc_hasher_new(fc_hasher **out)
{
    fc_hasher *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->ring = malloc(SLOTS * sizeof(slot));
    if (!h->ring) {
        free(h);
        return -ENOMEM;
    }
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->filled, NULL);
    pthread_cond_init(&h->emptied, NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the loop */
    int err = pthread_create(&h->thread, NULL, run, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->filled);
        pthread_cond_destroy(&h->emptied);
        free(h->ring);
        free(h);
        return -err;
    }
    *out = h;
    return 0;
}

/* Publishes the slot being filled (called with the lock held). */
static void publish(fc_hasher *h)
{
    if (!h->open)
        return;
    h->open = 0;
    h->head++;
    pthread_cond_signal(&h->filled);
}

void fc_hasher_add(fc_hasher *h, EVP_MD_CTX *md, const unsigned char *p, size_t n)
{
    pthread_mutex_lock(&h->mu);
    while (n) {
        slot *s = &h->ring[h->head % SLOTS];
        if (h->open && (s->md != md || s->len == SLOT_BYTES)) {
            publish(h);
            continue;
        }
        if (!h->open) {
            while (h->head - h->tail == SLOTS)
                pthread_cond_wait(&h->emptied, &h->mu);
            s = &h->ring[h->head % SLOTS];
            s->md = md;
            s->len = 0;
            h->open = 1;
        }
        /* The slot being filled is the producer's alone: copy unlocked. */
        size_t k = SLOT_BYTES - s->len < n ? SLOT_BYTES - s->len : n;
        pthread_mutex_unlock(&h->mu);
        memcpy(s->data + s->len, p, k);
        pthread_mutex_lock(&h->mu);
        s->len += k;
        p += k;
        n -= k;
        if (s->len == SLOT_BYTES)
            publish(h);
    }
    pthread_mutex_unlock(&h->mu);
}

void fc_hasher_drain(fc_hasher *h)
{
    pthread_mutex_lock(&h->mu);
    publish(h);
    while (h->tail != h->head)
        pthread_cond_wait(&h->emptied, &h->mu);
    pthread_mutex_unlock(&h->mu);
}

void fc_hasher_free(fc_hasher *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    publish(h);
    h->stopping = 1;
    pthread_cond_signal(&h->filled);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->filled);
    pthread_cond_destroy(&h->emptied);
    free(h->ring);
    free(h);
}

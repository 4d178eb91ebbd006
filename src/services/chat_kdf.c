/* scrypt password hashing on one helper thread. Parameters are stored with
 * each hash ("scrypt$15$8$1") so the cost can change without breaking
 * existing accounts; stored parameters are bounded before use, so a
 * tampered database cannot make the thread allocate without limit. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_kdf.h"
#include "tcpkit/log.h"

#define SALT_LEN 16
#define HASH_LEN 32

typedef struct job_box job_box;

struct chat_kdf {
    tk_loop *loop;
    unsigned log2_n;
    unsigned max_pending;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    chat_kdf_job *queue_head; /* waiting for the thread */
    chat_kdf_job *queue_tail;
    job_box *all; /* every job not yet delivered */
    unsigned pending;
    int stopping;
};

/* A job and its links on the list of every undelivered job (queued, being
 * hashed, or posted to the loop), from which chat_kdf_stop() frees them. */
struct job_box {
    chat_kdf_job job;
    job_box *all_next;
    job_box *all_prev;
};

static void unlink_all(chat_kdf *k, job_box *b)
{
    if (b->all_prev)
        b->all_prev->all_next = b->all_next;
    else
        k->all = b->all_next;
    if (b->all_next)
        b->all_next->all_prev = b->all_prev;
}

static void free_job(job_box *b)
{
    OPENSSL_cleanse(b->job.password, sizeof(b->job.password));
    free(b);
}

static int parse_params(const char *s, uint64_t *n, uint64_t *r, uint64_t *p)
{
    unsigned ln, rr, pp;
    if (sscanf(s, "scrypt$%u$%u$%u", &ln, &rr, &pp) != 3)
        return -EINVAL;
    if (ln < 10 || ln > 20 || rr < 1 || rr > 16 || pp < 1 || pp > 4)
        return -EINVAL;
    *n = 1ull << ln;
    *r = rr;
    *p = pp;
    return 0;
}

static int derive(const chat_kdf_job *j, const char *params, const unsigned char *salt,
                  size_t salt_len, unsigned char *out, size_t out_len)
{
    uint64_t n, r, p;
    if (parse_params(params, &n, &r, &p) < 0)
        return -EINVAL;
    /* scrypt needs 128 * r * N bytes (plus a little); allow twice that. */
    uint64_t maxmem = 256 * r * n + (1u << 20);
    return EVP_PBE_scrypt(j->password, j->password_len, salt, salt_len, n, r, p, maxmem, out,
                          out_len) == 1
               ? 0
               : -EIO;
}

static void run_job(chat_kdf *k, chat_kdf_job *j)
{
    chat_account *a = &j->account;
    if (j->create) {
        snprintf(a->kdf, sizeof(a->kdf), "scrypt$%u$8$1", k->log2_n);
        a->salt_len = SALT_LEN;
        a->hash_len = HASH_LEN;
        j->ok = RAND_bytes(a->salt, SALT_LEN) == 1 &&
                derive(j, a->kdf, a->salt, SALT_LEN, a->hash, HASH_LEN) == 0;
    } else {
        unsigned char got[sizeof(a->hash)];
        j->ok = derive(j, a->kdf, a->salt, a->salt_len, got, a->hash_len) == 0 &&
                CRYPTO_memcmp(got, a->hash, a->hash_len) == 0;
        OPENSSL_cleanse(got, sizeof(got));
    }
    OPENSSL_cleanse(j->password, sizeof(j->password));
}

static void deliver(tk_loop *loop, void *arg)
{
    (void)loop;
    job_box *b = arg;
    chat_kdf *k = b->job.kdf;
    pthread_mutex_lock(&k->mu);
    unlink_all(k, b);
    k->pending--;
    pthread_mutex_unlock(&k->mu);
    if (b->job.owner)
        b->job.done(&b->job, b->job.ok, b->job.owner);
    free_job(b);
}

static void *worker(void *arg)
{
    chat_kdf *k = arg;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        while (!k->queue_head && !k->stopping)
            pthread_cond_wait(&k->cv, &k->mu);
        if (k->stopping)
            break;
        chat_kdf_job *j = k->queue_head;
        k->queue_head = j->next;
        if (!k->queue_head)
            k->queue_tail = NULL;
        pthread_mutex_unlock(&k->mu);
        run_job(k, j);
        if (tk_loop_post(k->loop, deliver, j) < 0)
            tk_error("chat: cannot hand a password check back to the loop (out of memory)");
        pthread_mutex_lock(&k->mu);
    }
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

int chat_kdf_start(tk_loop *loop, unsigned log2_n, unsigned max_pending, chat_kdf **out)
{
    chat_kdf *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->loop = loop;
    k->log2_n = log2_n;
    k->max_pending = max_pending;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    /* The thread is born with every signal blocked: signals belong to the
     * application's loop, whenever the thread is started. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&k->thread, NULL, worker, k);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
        free(k);
        return -err;
    }
    *out = k;
    return 0;
}

chat_kdf_job *chat_kdf_job_new(chat_kdf *k, const unsigned char *pw, size_t len, void *owner,
                               chat_kdf_done done)
{
    if (len >= sizeof(((chat_kdf_job *)0)->password))
        return NULL;
    job_box *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->job.kdf = k;
    b->job.owner = owner;
    b->job.done = done;
    memcpy(b->job.password, pw, len);
    b->job.password_len = len;
    return &b->job;
}

int chat_kdf_submit(chat_kdf *k, chat_kdf_job *job)
{
    job_box *b = (job_box *)job;
    pthread_mutex_lock(&k->mu);
    if (k->pending >= k->max_pending || k->stopping) {
        pthread_mutex_unlock(&k->mu);
        free_job(b);
        return -EBUSY;
    }
    k->pending++;
    b->all_prev = NULL;
    b->all_next = k->all;
    if (b->all_next)
        b->all_next->all_prev = b;
    k->all = b;
    job->next = NULL;
    if (k->queue_tail)
        k->queue_tail->next = job;
    else
        k->queue_head = job;
    k->queue_tail = job;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    return 0;
}

void chat_kdf_cancel(chat_kdf_job *job)
{
    /* Only the loop thread reads or writes owner after submission. */
    job->owner = NULL;
}

void chat_kdf_stop(chat_kdf *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&k->mu);
    k->stopping = 1;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    pthread_join(k->thread, NULL);
    /* Jobs still queued, or posted to a loop that no longer runs. */
    job_box *b = k->all;
    while (b) {
        job_box *next = b->all_next;
        free_job(b);
        b = next;
    }
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k);
}

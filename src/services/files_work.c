/* Worker threads for digests and upload completion, and the digest cache. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "files_path.h"
#include "files_work.h"
#include "tcpkit/log.h"

/* Digests remembered: files served again are not read again. */
#define CACHE_SLOTS 1024
/* Bytes read per pread while hashing. */
#define HASH_BLOCK (1024 * 1024)

typedef struct {
    struct stat st; /* the file the digest is of */
    int used;
    unsigned char digest[TK_FRAME_DIGEST];
} cache_slot;

struct files_work {
    pthread_t *threads;
    unsigned nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    files_job *queue_head;
    files_job *queue_tail;
    files_job *all; /* every job not yet delivered */
    int stopping;
    pthread_mutex_t cache_mu;
    cache_slot cache[CACHE_SLOTS];
};

int files_stat_same(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static unsigned slot_of(const struct stat *st)
{
    uint64_t h = (uint64_t)st->st_ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)st->st_dev;
    return (unsigned)(h >> 32) % CACHE_SLOTS;
}

int files_digest_cached(files_work *w, const struct stat *st, unsigned char *digest)
{
    pthread_mutex_lock(&w->cache_mu);
    cache_slot *c = &w->cache[slot_of(st)];
    int hit = c->used && files_stat_same(&c->st, st);
    if (hit)
        memcpy(digest, c->digest, TK_FRAME_DIGEST);
    pthread_mutex_unlock(&w->cache_mu);
    return hit;
}

static void cache_put(files_work *w, const struct stat *st, const unsigned char *digest)
{
    pthread_mutex_lock(&w->cache_mu);
    cache_slot *c = &w->cache[slot_of(st)];
    c->st = *st;
    c->used = 1;
    memcpy(c->digest, digest, TK_FRAME_DIGEST);
    pthread_mutex_unlock(&w->cache_mu);
}

int files_sha256_fd(int fd, atomic_int *cancelled, unsigned char digest[TK_FRAME_DIGEST])
{
    unsigned char *buf = malloc(HASH_BLOCK);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = 0;
    if (!buf || !md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        rc = -ENOMEM;
        goto out;
    }
    off_t off = 0;
    for (;;) {
        if (cancelled && atomic_load(cancelled)) {
            rc = -ECANCELED;
            goto out;
        }
        ssize_t r = pread(fd, buf, HASH_BLOCK, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        if (EVP_DigestUpdate(md, buf, (size_t)r) != 1) {
            rc = -EIO;
            goto out;
        }
        off += r;
    }
    unsigned len = 0;
    if (EVP_DigestFinal_ex(md, digest, &len) != 1 || len != TK_FRAME_DIGEST)
        rc = -EIO;
out:
    EVP_MD_CTX_free(md);
    free(buf);
    return rc;
}

static void run_digest(files_work *w, files_job *j)
{
    struct stat before, after;
    if (fstat(j->fd, &before) < 0) {
        j->err = TK_FERR_IO;
        return;
    }
    if (files_digest_cached(w, &before, j->digest))
        return;
    int rc = files_sha256_fd(j->fd, &j->cancelled, j->digest);
    if (rc == -ECANCELED)
        return;
    if (rc < 0) {
        j->err = TK_FERR_IO;
        return;
    }
    /* Only a file that did not change while it was read gets cached. */
    if (fstat(j->fd, &after) == 0 && files_stat_same(&before, &after))
        cache_put(w, &after, j->digest);
    else
        j->err = TK_FERR_CHANGED;
}

static void run_finish(files_work *w, files_job *j)
{
    int rc = files_sha256_fd(j->fd, NULL, j->digest);
    if (rc < 0) {
        j->err = TK_FERR_IO;
        return;
    }
    if (memcmp(j->digest, j->want, TK_FRAME_DIGEST) != 0) {
        (void)unlinkat(j->dirfd, j->part, 0);
        j->err = TK_FERR_DIGEST;
        return;
    }
    if (fdatasync(j->fd) < 0) {
        j->err = TK_FERR_IO;
        return;
    }
    if (renameat2(j->dirfd, j->part, j->dirfd, j->final, j->overwrite ? 0 : RENAME_NOREPLACE) < 0) {
        j->err = errno == EEXIST ? TK_FERR_EXISTS : TK_FERR_IO;
        if (errno == EEXIST)
            (void)unlinkat(j->dirfd, j->part, 0);
        return;
    }
    (void)fsync(j->dirfd); /* the new name itself must survive a crash */
    /* The partial was private while it grew; the file gets the usual mode. */
    (void)fchmod(j->fd, j->mode);
    struct stat st;
    if (fstat(j->fd, &st) == 0)
        cache_put(w, &st, j->digest);
}

/* The sweep's state for nftw's callback, which takes no argument. */
static __thread time_t sweep_cutoff;
static __thread unsigned sweep_removed;
static __thread files_work *sweep_work;

static int sweep_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    const char *name = path + ftw->base;
    if (type == FTW_F && S_ISREG(st->st_mode) &&
        strncmp(name, FILES_PARTIAL_PREFIX, sizeof(FILES_PARTIAL_PREFIX) - 1) == 0 &&
        st->st_mtime < sweep_cutoff) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        /* A partial an upload holds is locked: leave it. */
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 && unlink(path) == 0)
            sweep_removed++;
        if (fd >= 0)
            close(fd);
    }
    pthread_mutex_lock(&sweep_work->mu);
    int stop = sweep_work->stopping;
    pthread_mutex_unlock(&sweep_work->mu);
    return stop; /* non-zero ends the walk */
}

static void run_sweep(files_work *w, files_job *j)
{
    sweep_cutoff = time(NULL) - (time_t)j->ttl_s;
    sweep_removed = 0;
    sweep_work = w;
    (void)nftw(j->root, sweep_one, 32, FTW_PHYS | FTW_MOUNT);
    j->removed = sweep_removed;
}

static void unlink_all(files_work *w, files_job *j)
{
    if (j->all_prev)
        j->all_prev->all_next = j->all_next;
    else
        w->all = j->all_next;
    if (j->all_next)
        j->all_next->all_prev = j->all_prev;
}

static void free_job(files_job *j)
{
    free(j->root);
    if (j->fd >= 0)
        close(j->fd);
    if (j->dirfd >= 0)
        close(j->dirfd);
    free(j);
}

/* On the job's loop: report, then free. */
static void deliver(tk_loop *loop, void *arg)
{
    (void)loop;
    files_job *j = arg;
    files_work *w = j->work;
    pthread_mutex_lock(&w->mu);
    unlink_all(w, j);
    pthread_mutex_unlock(&w->mu);
    if (j->owner)
        j->done(j, j->owner);
    free_job(j);
}

static void *worker(void *arg)
{
    files_work *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->queue_head && !w->stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stopping)
            break;
        files_job *j = w->queue_head;
        w->queue_head = j->next;
        if (!w->queue_head)
            w->queue_tail = NULL;
        pthread_mutex_unlock(&w->mu);
        if (j->kind == JOB_DIGEST)
            run_digest(w, j);
        else if (j->kind == JOB_FINISH)
            run_finish(w, j);
        else
            run_sweep(w, j);
        if (tk_loop_post(j->loop, deliver, j) < 0)
            tk_error("files: cannot report a finished job to its loop (out of memory)");
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int files_work_start(unsigned n, files_work **out)
{
    files_work *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->threads = calloc(n, sizeof(*w->threads));
    if (!w->threads) {
        free(w);
        return -ENOMEM;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->cache_mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    /* Threads are born with every signal blocked: signals belong to the
     * application's main loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = 0;
    for (unsigned i = 0; i < n && !err; i++) {
        err = pthread_create(&w->threads[i], NULL, worker, w);
        if (!err)
            w->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        files_work_stop(w);
        return -err;
    }
    *out = w;
    return 0;
}

void files_work_stop(files_work *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (unsigned i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    /* Jobs still queued, or posted to loops that no longer run. */
    files_job *j = w->all;
    while (j) {
        files_job *next = j->all_next;
        free_job(j);
        j = next;
    }
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->cache_mu);
    pthread_cond_destroy(&w->cv);
    free(w->threads);
    free(w);
}

static files_job *job_new(files_work *w, tk_loop *loop, files_job_kind kind, int fd,
                          files_job_done done, void *owner)
{
    files_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    j->dirfd = -1;
    if (j->fd < 0) {
        free(j);
        return NULL;
    }
    j->work = w;
    j->loop = loop;
    j->kind = kind;
    j->done = done;
    j->owner = owner;
    atomic_init(&j->cancelled, 0);
    return j;
}

static void submit(files_work *w, files_job *j)
{
    pthread_mutex_lock(&w->mu);
    j->all_prev = NULL;
    j->all_next = w->all;
    if (w->all)
        w->all->all_prev = j;
    w->all = j;
    j->next = NULL;
    if (w->queue_tail)
        w->queue_tail->next = j;
    else
        w->queue_head = j;
    w->queue_tail = j;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

files_job *files_digest_start(files_work *w, tk_loop *loop, int fd, files_job_done done,
                              void *owner)
{
    files_job *j = job_new(w, loop, JOB_DIGEST, fd, done, owner);
    if (j)
        submit(w, j);
    return j;
}

files_job *files_finish_start(files_work *w, tk_loop *loop, int fd, int dirfd, const char *part,
                              const char *final, int overwrite, mode_t mode,
                              const unsigned char want[TK_FRAME_DIGEST], files_job_done done,
                              void *owner)
{
    files_job *j = job_new(w, loop, JOB_FINISH, fd, done, owner);
    if (!j)
        return NULL;
    j->dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (j->dirfd < 0) {
        free_job(j);
        return NULL;
    }
    snprintf(j->part, sizeof(j->part), "%s", part);
    snprintf(j->final, sizeof(j->final), "%s", final);
    j->overwrite = overwrite;
    j->mode = mode;
    memcpy(j->want, want, TK_FRAME_DIGEST);
    submit(w, j);
    return j;
}

files_job *files_sweep_start(files_work *w, tk_loop *loop, const char *root, uint64_t ttl_s,
                             files_job_done done, void *owner)
{
    files_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->fd = j->dirfd = -1;
    j->root = strdup(root);
    if (!j->root) {
        free(j);
        return NULL;
    }
    j->work = w;
    j->loop = loop;
    j->kind = JOB_SWEEP;
    j->done = done;
    j->owner = owner;
    j->ttl_s = ttl_s;
    atomic_init(&j->cancelled, 0);
    submit(w, j);
    return j;
}

void files_job_cancel(files_job *j)
{
    j->owner = NULL;
    atomic_store(&j->cancelled, 1);
}

/* Blocking file work off the event loops: SHA-256 digests of served files
 * (with a cache keyed by the file's identity) and the last steps of an
 * upload (digest check, fdatasync, rename, directory sync). Jobs run on a
 * few worker threads and report back on the loop that started them. */
#ifndef TK_FILES_WORK_H
#define TK_FILES_WORK_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>

#include "tcpkit/frame.h"
#include "tcpkit/loop.h"

typedef struct files_work files_work;
typedef struct files_job files_job;

/* Runs on the job's loop when the job is over, unless it was cancelled. */
typedef void (*files_job_done)(files_job *j, void *owner);

typedef enum { JOB_DIGEST = 1, JOB_FINISH, JOB_SWEEP } files_job_kind;

struct files_job {
    files_job *next; /* the queue */
    files_job *all_next;
    files_job *all_prev;
    files_work *work;
    tk_loop *loop;
    files_job_kind kind;
    files_job_done done;
    void *owner;          /* NULL once cancelled; only the loop thread touches it */
    atomic_int cancelled; /* the worker may skip what is left */
    int fd;               /* owned by the job */
    int dirfd;            /* JOB_FINISH: owned by the job */
    int err;              /* 0, or a TK_FERR_* code */
    unsigned char digest[TK_FRAME_DIGEST];
    /* JOB_FINISH */
    unsigned char want[TK_FRAME_DIGEST];
    int overwrite;
    mode_t mode; /* of the stored file */
    char part[64];
    char final[256];
    /* JOB_SWEEP */
    char *root;
    uint64_t ttl_s;
    unsigned removed;
};

/* Starts n worker threads; 0 or a negative errno. */
int files_work_start(unsigned n, files_work **out);

/* Stops the threads and frees every job not delivered yet. */
void files_work_stop(files_work *w);

/* Is b the same, unchanged file as a (device, inode, size, mtime, ctime)? */
int files_stat_same(const struct stat *a, const struct stat *b);

/* Looks the file up in the digest cache: 1 with digest filled, or 0. */
int files_digest_cached(files_work *w, const struct stat *st, unsigned char *digest);

/* Queues a digest of the whole file behind fd (dup'ed; the caller keeps
 * its own). done(job, owner) runs on loop with job->err and job->digest.
 * Returns the job (to cancel) or NULL when out of memory or descriptors. */
files_job *files_digest_start(files_work *w, tk_loop *loop, int fd, files_job_done done,
                              void *owner);

/* Queues the end of an upload: hash the partial file behind fd and compare
 * with want; on a match fdatasync it, rename part to final in dirfd (not
 * replacing an existing file unless overwrite), sync the directory and give
 * the file mode (the partial is 0600 while it grows); on
 * a mismatch remove the partial. fd and dirfd are dup'ed. job->err is 0,
 * TK_FERR_DIGEST, TK_FERR_EXISTS or TK_FERR_IO. The job always runs to its
 * end once started, even if cancelled: only the report is skipped. */
files_job *files_finish_start(files_work *w, tk_loop *loop, int fd, int dirfd, const char *part,
                              const char *final, int overwrite, mode_t mode,
                              const unsigned char want[TK_FRAME_DIGEST], files_job_done done,
                              void *owner);

/* Queues a walk of the tree under root (not following links, not leaving
 * its file system) that removes upload partials untouched for ttl_s seconds
 * and not locked by an upload in progress. job->removed counts them. */
files_job *files_sweep_start(files_work *w, tk_loop *loop, const char *root, uint64_t ttl_s,
                             files_job_done done, void *owner);

/* Drops the report of a job (on its loop's thread); the pool frees it. */
void files_job_cancel(files_job *j);

/* The SHA-256 of everything fd holds, read with pread from offset 0 (stops
 * early and returns -ECANCELED if *cancelled becomes non-zero). */
int files_sha256_fd(int fd, atomic_int *cancelled, unsigned char digest[TK_FRAME_DIGEST]);

#endif

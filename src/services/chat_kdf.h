/* Password hashing for chat accounts: scrypt (OpenSSL) on a helper thread,
 * so a login never stalls the chat loop. Results come back on the loop. */
#ifndef TK_CHAT_KDF_H
#define TK_CHAT_KDF_H

#include <stddef.h>

#include "chat_store.h"
#include "tcpkit/loop.h"

typedef struct chat_kdf chat_kdf;
typedef struct chat_kdf_job chat_kdf_job;

/* Called on the loop when a job is finished (ok: the password matched, or
 * for a new account the hash is in job->account). Not called for jobs that
 * were cancelled. The job is freed after it returns. */
typedef void (*chat_kdf_done)(chat_kdf_job *job, int ok, void *owner);

struct chat_kdf_job {
    chat_kdf_job *next;
    chat_kdf *kdf;
    void *owner; /* NULL once cancelled */
    chat_kdf_done done;
    int create;         /* hash a new password instead of checking one */
    char password[257]; /* NUL-terminated copy, wiped after use */
    size_t password_len;
    chat_account account; /* the stored account (check) or the new one (create) */
    int ok;
    int kind; /* what the owner asked for (the owner's own code) */
    char name[160];
};

/* Starts the hashing thread for loop; new hashes use scrypt with N = 2^log2_n.
 * At most max_pending jobs may wait. 0 or a negative errno. */
int chat_kdf_start(tk_loop *loop, unsigned log2_n, unsigned max_pending, chat_kdf **out);

/* A new job with the password copied in (len <= 256); NULL when out of memory. */
chat_kdf_job *chat_kdf_job_new(chat_kdf *k, const unsigned char *pw, size_t len, void *owner,
                               chat_kdf_done done);

/* Queues the job: 0, or -EBUSY when too many are waiting (job freed). */
int chat_kdf_submit(chat_kdf *k, chat_kdf_job *job);

/* The owner has gone: the job's result is dropped. */
void chat_kdf_cancel(chat_kdf_job *job);

/* Stops and joins the thread and frees every job not yet delivered. */
void chat_kdf_stop(chat_kdf *k);

#endif

/* A thread that computes the SHA-256 of downloads while the loop thread
 * receives and writes them: the bytes are copied into a ring of slots and
 * hashed on the other CPU. The loop thread waits only when the ring is full
 * and when it needs a digest. */
#ifndef TK_FCLIENT_HASH_H
#define TK_FCLIENT_HASH_H

#include <openssl/evp.h>
#include <stddef.h>

typedef struct fc_hasher fc_hasher;

/* Starts the thread; 0 or a negative errno. */
int fc_hasher_new(fc_hasher **out);

/* Hashes what was added, then stops the thread and frees it (NULL is
 * ignored). */
void fc_hasher_free(fc_hasher *h);

/* Queues p[0..n) for md (which the thread alone touches until the next
 * fc_hasher_drain). Blocks while the ring is full. */
void fc_hasher_add(fc_hasher *h, EVP_MD_CTX *md, const unsigned char *p, size_t n);

/* Returns once every byte added so far has gone into its digest. */
void fc_hasher_drain(fc_hasher *h);

#endif

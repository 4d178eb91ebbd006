/* Chat history and accounts in SQLite (WAL mode). Used from the chat loop
 * only; writes are grouped into one transaction per loop turn. */
#ifndef TK_CHAT_STORE_H
#define TK_CHAT_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct chat_store chat_store;

/* Opens (creating) the database at path; NULL or ":memory:" keeps it in
 * memory. Returns 0 or a negative errno with a message in err. */
int chat_store_open(const char *path, int sync_full, chat_store **out, char *err, size_t cap);

/* Closes the database after committing what is pending. */
void chat_store_close(chat_store *s);

/* Appends one room message to the open transaction (begun on demand). */
int chat_store_add(chat_store *s, const char *room_key, const char *room_name, const char *from,
                   const unsigned char *content, size_t len, int64_t ts_ms);

/* True while a transaction holds uncommitted writes. */
int chat_store_dirty(const chat_store *s);

/* Commits the open transaction; 0 or -EIO. */
int chat_store_commit(chat_store *s);

/* One stored message, as handed to a history callback. */
typedef struct {
    const char *room_name;
    const char *from;
    const unsigned char *content;
    size_t len;
    int64_t ts_ms;
} chat_stored;

/* Calls fn for the last `limit` messages of a room, oldest first. Returns
 * the number of messages or -EIO. */
int chat_store_history(chat_store *s, const char *room_key, unsigned limit,
                       void (*fn)(const chat_stored *m, void *arg), void *arg);

/* Keeps only the newest `keep` messages of a room; 0 or -EIO. */
int chat_store_prune_room(chat_store *s, const char *room_key, unsigned keep);

/* Deletes messages older than before_ms in every room; 0 or -EIO. */
int chat_store_prune_age(chat_store *s, int64_t before_ms);

/* A password account. */
typedef struct {
    char name[160]; /* the name as spelled when the account was made */
    char kdf[64];
    unsigned char salt[32];
    size_t salt_len;
    unsigned char hash[64];
    size_t hash_len;
} chat_account;

/* Looks up the account of a name key: 0, -ENOENT or -EIO. */
int chat_store_account_get(chat_store *s, const char *key, chat_account *out);

/* Creates an account and commits at once: 0, -EEXIST or -EIO. */
int chat_store_account_add(chat_store *s, const char *key, const char *name, const chat_account *a,
                           int64_t now_ms);

#endif

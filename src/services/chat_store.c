/* SQLite history and accounts for the chat service. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_store.h"
#include "tcpkit/log.h"

struct chat_store {
    sqlite3 *db;
    int in_tx;
    sqlite3_stmt *insert;
    sqlite3_stmt *history;
    sqlite3_stmt *prune_room;
    sqlite3_stmt *prune_age;
    sqlite3_stmt *account_get;
    sqlite3_stmt *account_add;
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS messages ("
                             "  id INTEGER PRIMARY KEY,"
                             "  room TEXT NOT NULL,"      /* the case-folded room key */
                             "  room_name TEXT NOT NULL," /* as shown */
                             "  sender TEXT NOT NULL,"
                             "  content TEXT NOT NULL,"
                             "  ts_ms INTEGER NOT NULL);"
                             "CREATE INDEX IF NOT EXISTS messages_by_room ON messages(room, id);"
                             /* Age pruning runs once a minute and may scan; every insert would pay
                              * for an index on the time. */
                             "DROP INDEX IF EXISTS messages_by_time;"
                             "CREATE TABLE IF NOT EXISTS accounts ("
                             "  key TEXT PRIMARY KEY,"
                             "  name TEXT NOT NULL,"
                             "  kdf TEXT NOT NULL,"
                             "  salt BLOB NOT NULL,"
                             "  hash BLOB NOT NULL,"
                             "  created_ms INTEGER NOT NULL);";

static int fail(chat_store *s, const char *what)
{
    tk_error("chat history: %s: %s", what, sqlite3_errmsg(s->db));
    return -EIO;
}

static int prepare(chat_store *s, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK
               ? 0
               : -EIO;
}

int chat_store_open(const char *path, int sync_full, chat_store **out, char *err, size_t cap)
{
    chat_store *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (!path)
        path = ":memory:";
    if (strcmp(path, ":memory:") != 0) {
        /* The file holds password hashes: a new one is private to its owner
         * (SQLite gives its -wal and -shm files the same mode). */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            int e = errno;
            snprintf(err, cap, "cannot open chat database '%s': %s", path, strerror(e));
            free(s);
            return -e;
        }
        close(fd);
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, cap, "cannot open chat database '%s': %s", path,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sqlite3_close(s->db);
        free(s);
        return -EIO;
    }
    char pragmas[160];
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA busy_timeout=2000;"
             " PRAGMA foreign_keys=ON;",
             sync_full ? "FULL" : "NORMAL");
    char *msg = NULL;
    if (sqlite3_exec(s->db, pragmas, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, cap, "cannot prepare chat database '%s': %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        sqlite3_close(s->db);
        free(s);
        return -EIO;
    }
    int rc = 0;
    rc |= prepare(s,
                  "INSERT INTO messages(room, room_name, sender, content, ts_ms)"
                  " VALUES(?1, ?2, ?3, ?4, ?5)",
                  &s->insert);
    rc |= prepare(s,
                  "SELECT room_name, sender, content, ts_ms FROM"
                  " (SELECT id, room_name, sender, content, ts_ms FROM messages"
                  "  WHERE room = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
                  &s->history);
    rc |= prepare(s,
                  "DELETE FROM messages WHERE room = ?1 AND id <="
                  " (SELECT id FROM messages WHERE room = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                  &s->prune_room);
    rc |= prepare(s, "DELETE FROM messages WHERE ts_ms < ?1", &s->prune_age);
    rc |= prepare(s, "SELECT kdf, salt, hash, name FROM accounts WHERE key = ?1", &s->account_get);
    rc |= prepare(s,
                  "INSERT INTO accounts(key, name, kdf, salt, hash, created_ms)"
                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                  &s->account_add);
    if (rc) {
        snprintf(err, cap, "cannot prepare chat database statements: %s", sqlite3_errmsg(s->db));
        chat_store_close(s);
        return -EIO;
    }
    *out = s;
    return 0;
}

void chat_store_close(chat_store *s)
{
    if (!s)
        return;
    if (s->in_tx)
        (void)chat_store_commit(s);
    sqlite3_finalize(s->insert);
    sqlite3_finalize(s->history);
    sqlite3_finalize(s->prune_room);
    sqlite3_finalize(s->prune_age);
    sqlite3_finalize(s->account_get);
    sqlite3_finalize(s->account_add);
    sqlite3_close(s->db);
    free(s);
}

static int begin(chat_store *s)
{
    if (s->in_tx)
        return 0;
    if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return fail(s, "begin");
    s->in_tx = 1;
    return 0;
}

int chat_store_add(chat_store *s, const char *room_key, const char *room_name, const char *from,
                   const unsigned char *content, size_t len, int64_t ts_ms)
{
    if (begin(s) < 0)
        return -EIO;
    sqlite3_stmt *st = s->insert;
    sqlite3_bind_text(st, 1, room_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, room_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, from, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, (const char *)content, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, ts_ms);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : fail(s, "insert");
}

int chat_store_dirty(const chat_store *s)
{
    return s->in_tx;
}

int chat_store_commit(chat_store *s)
{
    if (!s->in_tx)
        return 0;
    s->in_tx = 0;
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        int rc = fail(s, "commit");
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return 0;
}

int chat_store_history(chat_store *s, const char *room_key, unsigned limit,
                       void (*fn)(const chat_stored *m, void *arg), void *arg)
{
    sqlite3_stmt *st = s->history;
    sqlite3_bind_text(st, 1, room_key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, limit);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        chat_stored m = {
            .room_name = (const char *)sqlite3_column_text(st, 0),
            .from = (const char *)sqlite3_column_text(st, 1),
            .content = sqlite3_column_text(st, 2),
            .len = (size_t)sqlite3_column_bytes(st, 2),
            .ts_ms = sqlite3_column_int64(st, 3),
        };
        if (m.room_name && m.from && m.content) {
            fn(&m, arg);
            n++;
        }
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? n : fail(s, "history");
}

static int run_delete(chat_store *s, sqlite3_stmt *st)
{
    if (begin(s) < 0)
        return -EIO;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : fail(s, "prune");
}

int chat_store_prune_room(chat_store *s, const char *room_key, unsigned keep)
{
    sqlite3_bind_text(s->prune_room, 1, room_key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->prune_room, 2, keep);
    return run_delete(s, s->prune_room);
}

int chat_store_prune_age(chat_store *s, int64_t before_ms)
{
    sqlite3_bind_int64(s->prune_age, 1, before_ms);
    return run_delete(s, s->prune_age);
}

int chat_store_account_get(chat_store *s, const char *key, chat_account *out)
{
    sqlite3_stmt *st = s->account_get;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), ret = -ENOENT;
    if (rc == SQLITE_ROW) {
        const char *kdf = (const char *)sqlite3_column_text(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 3);
        int sl = sqlite3_column_bytes(st, 1), hl = sqlite3_column_bytes(st, 2);
        if (kdf && strlen(kdf) < sizeof(out->kdf) && name && strlen(name) < sizeof(out->name) &&
            sl > 0 && (size_t)sl <= sizeof(out->salt) && hl > 0 &&
            (size_t)hl <= sizeof(out->hash)) {
            snprintf(out->kdf, sizeof(out->kdf), "%s", kdf);
            snprintf(out->name, sizeof(out->name), "%s", name);
            memcpy(out->salt, sqlite3_column_blob(st, 1), (size_t)sl);
            out->salt_len = (size_t)sl;
            memcpy(out->hash, sqlite3_column_blob(st, 2), (size_t)hl);
            out->hash_len = (size_t)hl;
            ret = 0;
        } else {
            tk_error("chat accounts: malformed record for '%s'", key);
            ret = -EIO;
        }
    } else if (rc != SQLITE_DONE) {
        ret = fail(s, "account lookup");
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ret;
}

int chat_store_account_add(chat_store *s, const char *key, const char *name, const chat_account *a,
                           int64_t now_ms)
{
    /* Accounts are committed at once, together with any pending history. */
    if (begin(s) < 0)
        return -EIO;
    sqlite3_stmt *st = s->account_add;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, a->kdf, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, a->salt, (int)a->salt_len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, a->hash, (int)a->hash_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now_ms);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_CONSTRAINT)
        return chat_store_commit(s) < 0 ? -EIO : -EEXIST;
    if (rc != SQLITE_DONE)
        return fail(s, "account insert");
    return chat_store_commit(s);
}

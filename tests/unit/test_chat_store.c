/* chat_store: SQLite history per room, pruning, persistence and accounts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "services/chat_store.h"

/* ---- helpers ---- */

#define MAX_ROWS 64

/* What a history callback saw. */
typedef struct {
    int n;
    char room_name[MAX_ROWS][32];
    char from[MAX_ROWS][32];
    char content[MAX_ROWS][64];
    size_t len[MAX_ROWS];
    int64_t ts[MAX_ROWS];
} rows;

static void collect(const chat_stored *m, void *arg)
{
    rows *r = arg;
    assert_true(r->n < MAX_ROWS);
    assert_true(m->len < sizeof(r->content[0]));
    snprintf(r->room_name[r->n], sizeof(r->room_name[0]), "%s", m->room_name);
    snprintf(r->from[r->n], sizeof(r->from[0]), "%s", m->from);
    memcpy(r->content[r->n], m->content, m->len);
    r->content[r->n][m->len] = '\0';
    r->len[r->n] = m->len;
    r->ts[r->n] = m->ts_ms;
    r->n++;
}

static int history(chat_store *s, const char *room, unsigned limit, rows *out)
{
    memset(out, 0, sizeof(*out));
    int n = chat_store_history(s, room, limit, collect, out);
    if (n >= 0)
        assert_int_equal(n, out->n);
    return n;
}

static chat_store *open_store(const char *path)
{
    chat_store *s = NULL;
    char err[256] = "";
    int rc = chat_store_open(path, 0, &s, err, sizeof(err));
    if (rc != 0)
        print_error("chat_store_open(%s): %d %s\n", path ? path : "NULL", rc, err);
    assert_int_equal(rc, 0);
    assert_non_null(s);
    return s;
}

/* Adds message "<prefix><i>" with timestamp ts0 + i for i in [from, to). */
static void add_range(chat_store *s, const char *key, const char *name, const char *prefix,
                      int from, int to, int64_t ts0)
{
    for (int i = from; i < to; i++) {
        char text[32];
        int len = snprintf(text, sizeof(text), "%s%d", prefix, i);
        assert_int_equal(chat_store_add(s, key, name, "alice", (const unsigned char *)text,
                                        (size_t)len, ts0 + i),
                         0);
    }
}

/* Rows are "<prefix><first>", "<prefix><first+1>", ... in order. */
static void expect_seq(const rows *r, const char *prefix, int first, int count)
{
    assert_int_equal(r->n, count);
    for (int i = 0; i < count; i++) {
        char want[32];
        snprintf(want, sizeof(want), "%s%d", prefix, first + i);
        if (strcmp(r->content[i], want) != 0)
            print_error("row %d: \"%s\", want \"%s\"\n", i, r->content[i], want);
        assert_string_equal(r->content[i], want);
    }
}

/* A private temporary directory and a database path inside it. */
typedef struct {
    char dir[64];
    char path[128];
} tmpdb;

/* One per test at most; the teardown removes it even after a failure. */
static tmpdb the_tmp;

static tmpdb *tmpdb_make(void)
{
    tmpdb *t = &the_tmp;
    assert_true(t->dir[0] == '\0');
    snprintf(t->dir, sizeof(t->dir), "/tmp/tk_chat_store_XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof(t->path), "%.63s/chat.db", t->dir);
    return t;
}

/* Removes the directory and its database files; 0 or -1. */
static int tmpdb_remove(void **state)
{
    (void)state;
    tmpdb *t = &the_tmp;
    if (t->dir[0] == '\0')
        return 0;
    const char *suffix[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        char p[160];
        snprintf(p, sizeof(p), "%s%s", t->path, suffix[i]);
        (void)unlink(p);
    }
    int rc = rmdir(t->dir);
    memset(t, 0, sizeof(*t));
    return rc;
}

static chat_account make_account(const char *kdf, unsigned char seed, size_t salt_len,
                                 size_t hash_len)
{
    chat_account a;
    memset(&a, 0, sizeof(a));
    snprintf(a.kdf, sizeof(a.kdf), "%s", kdf);
    for (size_t i = 0; i < salt_len; i++)
        a.salt[i] = (unsigned char)(seed + i);
    a.salt_len = salt_len;
    for (size_t i = 0; i < hash_len; i++)
        a.hash[i] = (unsigned char)(seed * 3 + i * 7);
    a.hash_len = hash_len;
    return a;
}

/* ---- tests ---- */

/* NULL and ":memory:" open an empty in-memory database. */
static void open_in_memory(void **state)
{
    (void)state;
    chat_store *s = open_store(":memory:");
    rows r;
    assert_int_equal(history(s, "lobby", 20, &r), 0);
    assert_false(chat_store_dirty(s));
    chat_store_close(s);
    s = open_store(NULL);
    assert_int_equal(history(s, "lobby", 20, &r), 0);
    chat_store_close(s);
    chat_store_close(NULL);
}

/* A path that cannot be created fails with a message. */
static void open_bad_path(void **state)
{
    (void)state;
    chat_store *s = NULL;
    char err[256] = "";
    int rc = chat_store_open("/nonexistent-dir-tk/sub/chat.db", 0, &s, err, sizeof(err));
    assert_true(rc < 0);
    assert_null(s);
    assert_non_null(strstr(err, "/nonexistent-dir-tk/sub/chat.db"));
}

/* Messages keep their fields; history is per room, the last N, oldest first. */
static void history_per_room_last_n_oldest_first(void **state)
{
    (void)state;
    chat_store *s = open_store(":memory:");
    assert_false(chat_store_dirty(s));
    /* Interleave two rooms. */
    for (int i = 0; i < 10; i++) {
        char text[16];
        int len = snprintf(text, sizeof(text), "l%d", i);
        assert_int_equal(chat_store_add(s, "lobby", "Lobby", "alice", (const unsigned char *)text,
                                        (size_t)len, 1000 + i),
                         0);
        len = snprintf(text, sizeof(text), "d%d", i);
        assert_int_equal(chat_store_add(s, "dev", "Dev", i % 2 ? "bob" : "carol",
                                        (const unsigned char *)text, (size_t)len, 5000 + i),
                         0);
    }
    assert_true(chat_store_dirty(s));
    rows r;
    /* Readable inside the open transaction. */
    assert_int_equal(history(s, "lobby", 3, &r), 3);
    expect_seq(&r, "l", 7, 3);
    assert_string_equal(r.room_name[0], "Lobby");
    assert_string_equal(r.from[2], "alice");
    assert_int_equal(r.ts[0], 1007);
    assert_int_equal(r.ts[2], 1009);
    assert_int_equal(r.len[0], 2);
    assert_int_equal(history(s, "dev", 4, &r), 4);
    expect_seq(&r, "d", 6, 4);
    assert_string_equal(r.room_name[3], "Dev");
    assert_string_equal(r.from[0], "carol"); /* d6 */
    assert_string_equal(r.from[1], "bob");   /* d7 */
    assert_int_equal(r.ts[3], 5009);
    /* A limit above the count returns everything; 0 returns nothing. */
    assert_int_equal(history(s, "lobby", 100, &r), 10);
    expect_seq(&r, "l", 0, 10);
    assert_int_equal(history(s, "dev", 0, &r), 0);
    assert_int_equal(history(s, "nowhere", 10, &r), 0);
    /* Keys are matched exactly: the store does no folding itself. */
    assert_int_equal(history(s, "Lobby", 10, &r), 0);
    assert_int_equal(chat_store_commit(s), 0);
    assert_false(chat_store_dirty(s));
    assert_int_equal(chat_store_commit(s), 0); /* nothing pending: fine */
    assert_int_equal(history(s, "dev", 100, &r), 10);
    expect_seq(&r, "d", 0, 10);
    chat_store_close(s);
}

/* Content is stored byte for byte, with its length. */
static void content_round_trips(void **state)
{
    (void)state;
    chat_store *s = open_store(NULL);
    const char *text = "caf\xc3\xa9 \xf0\x9f\x98\x80\ttab 'quote' \"dq\"; DROP TABLE messages;--";
    assert_int_equal(chat_store_add(s, "r\xc3\xa9", "R\xc3\xa9", "\xc3\x9f",
                                    (const unsigned char *)text, strlen(text), -5),
                     0);
    /* Only len bytes are stored. */
    assert_int_equal(
        chat_store_add(s, "r\xc3\xa9", "R\xc3\xa9", "x", (const unsigned char *)"abcdef", 3, 7), 0);
    rows r;
    assert_int_equal(history(s, "r\xc3\xa9", 10, &r), 2);
    assert_string_equal(r.content[0], text);
    assert_int_equal(r.len[0], strlen(text));
    assert_string_equal(r.from[0], "\xc3\x9f");
    assert_string_equal(r.room_name[0], "R\xc3\xa9");
    assert_int_equal(r.ts[0], -5);
    assert_string_equal(r.content[1], "abc");
    assert_int_equal(r.len[1], 3);
    chat_store_close(s);
}

/* prune_room keeps exactly the newest N of that room and no other. */
static void prune_room_keeps_newest(void **state)
{
    (void)state;
    chat_store *s = open_store(NULL);
    add_range(s, "lobby", "lobby", "l", 0, 20, 0);
    add_range(s, "dev", "dev", "d", 0, 5, 0);
    rows r;
    assert_int_equal(chat_store_prune_room(s, "lobby", 7), 0);
    assert_int_equal(history(s, "lobby", 100, &r), 7);
    expect_seq(&r, "l", 13, 7);
    assert_int_equal(history(s, "dev", 100, &r), 5);
    expect_seq(&r, "d", 0, 5);
    /* Keeping more than there are changes nothing. */
    assert_int_equal(chat_store_prune_room(s, "lobby", 7), 0);
    assert_int_equal(chat_store_prune_room(s, "lobby", 100), 0);
    assert_int_equal(history(s, "lobby", 100, &r), 7);
    expect_seq(&r, "l", 13, 7);
    /* After more messages, the newest N again (across a commit). */
    assert_int_equal(chat_store_commit(s), 0);
    add_range(s, "lobby", "lobby", "l", 20, 23, 0);
    assert_int_equal(chat_store_prune_room(s, "lobby", 4), 0);
    assert_true(chat_store_dirty(s));
    assert_int_equal(chat_store_commit(s), 0);
    assert_int_equal(history(s, "lobby", 100, &r), 4);
    expect_seq(&r, "l", 19, 4);
    /* keep 1 leaves the newest one; an unknown room is fine. */
    assert_int_equal(chat_store_prune_room(s, "dev", 1), 0);
    assert_int_equal(history(s, "dev", 100, &r), 1);
    expect_seq(&r, "d", 4, 1);
    assert_int_equal(chat_store_prune_room(s, "nowhere", 1), 0);
    /* keep 0 keeps none. */
    assert_int_equal(chat_store_prune_room(s, "dev", 0), 0);
    assert_int_equal(history(s, "dev", 100, &r), 0);
    assert_int_equal(history(s, "lobby", 100, &r), 4);
    chat_store_close(s);
}

/* prune_age deletes messages strictly older than the cutoff, in every room. */
static void prune_age_by_timestamp(void **state)
{
    (void)state;
    chat_store *s = open_store(NULL);
    add_range(s, "a", "a", "a", 0, 10, 1000); /* ts 1000..1009 */
    add_range(s, "b", "b", "b", 0, 10, 1005); /* ts 1005..1014 */
    assert_int_equal(chat_store_commit(s), 0);
    assert_int_equal(chat_store_prune_age(s, 1007), 0);
    assert_true(chat_store_dirty(s));
    rows r;
    assert_int_equal(history(s, "a", 100, &r), 3);
    expect_seq(&r, "a", 7, 3);
    assert_int_equal(r.ts[0], 1007); /* the cutoff itself is kept */
    assert_int_equal(history(s, "b", 100, &r), 8);
    expect_seq(&r, "b", 2, 8);
    assert_int_equal(chat_store_prune_age(s, 0), 0);
    assert_int_equal(history(s, "b", 100, &r), 8);
    assert_int_equal(chat_store_prune_age(s, 1015), 0);
    assert_int_equal(history(s, "a", 100, &r), 0);
    assert_int_equal(history(s, "b", 100, &r), 0);
    chat_store_close(s);
}

/* Committed rows are found after reopening the file; so are rows pending at
 * close (close commits). */
static void file_persists_across_reopen(void **state)
{
    (void)state;
    tmpdb *t = tmpdb_make();
    chat_store *s = open_store(t->path);
    add_range(s, "lobby", "lobby", "m", 0, 5, 100);
    add_range(s, "dev", "Dev", "d", 0, 2, 200);
    assert_int_equal(chat_store_commit(s), 0);
    add_range(s, "lobby", "lobby", "m", 5, 8, 100);
    assert_true(chat_store_dirty(s));
    chat_store_close(s);
    assert_int_equal(access(t->path, F_OK), 0);

    s = open_store(t->path);
    assert_false(chat_store_dirty(s));
    rows r;
    assert_int_equal(history(s, "lobby", 100, &r), 8);
    expect_seq(&r, "m", 0, 8);
    assert_int_equal(r.ts[7], 107);
    assert_int_equal(history(s, "dev", 1, &r), 1);
    expect_seq(&r, "d", 1, 1);
    assert_string_equal(r.room_name[0], "Dev");
    /* Pruning persists too, and new ids continue after the old ones. */
    assert_int_equal(chat_store_prune_room(s, "lobby", 2), 0);
    add_range(s, "lobby", "lobby", "m", 8, 9, 100);
    assert_int_equal(chat_store_commit(s), 0);
    chat_store_close(s);

    s = open_store(t->path);
    assert_int_equal(history(s, "lobby", 100, &r), 3);
    expect_seq(&r, "m", 6, 3);
    chat_store_close(s);

    /* With sync_full as well. */
    char err[128];
    s = NULL;
    assert_int_equal(chat_store_open(t->path, 1, &s, err, sizeof(err)), 0);
    assert_int_equal(history(s, "dev", 100, &r), 2);
    chat_store_close(s);
    assert_int_equal(tmpdb_remove(NULL), 0);
}

/* A second connection sees committed rows only. */
static void uncommitted_rows_are_private(void **state)
{
    (void)state;
    tmpdb *t = tmpdb_make();
    chat_store *a = open_store(t->path);
    chat_store *b = open_store(t->path);
    add_range(a, "lobby", "lobby", "m", 0, 3, 0);
    rows r;
    assert_int_equal(history(b, "lobby", 100, &r), 0);
    assert_int_equal(chat_store_commit(a), 0);
    assert_int_equal(history(b, "lobby", 100, &r), 3);
    expect_seq(&r, "m", 0, 3);
    chat_store_close(b);
    chat_store_close(a);
    assert_int_equal(tmpdb_remove(NULL), 0);
}

/* Accounts: add then get returns the same record; duplicates are -EEXIST,
 * unknown keys -ENOENT. */
static void accounts_round_trip(void **state)
{
    (void)state;
    chat_store *s = open_store(NULL);
    chat_account got;
    assert_int_equal(chat_store_account_get(s, "alice", &got), -ENOENT);

    chat_account a = make_account("scrypt$15$8$1", 1, 16, 32);
    assert_int_equal(chat_store_account_add(s, "alice", "Alice", &a, 12345), 0);
    assert_false(chat_store_dirty(s)); /* committed at once */
    memset(&got, 0xee, sizeof(got));
    assert_int_equal(chat_store_account_get(s, "alice", &got), 0);
    assert_string_equal(got.kdf, "scrypt$15$8$1");
    assert_int_equal(got.salt_len, 16);
    assert_memory_equal(got.salt, a.salt, 16);
    assert_int_equal(got.hash_len, 32);
    assert_memory_equal(got.hash, a.hash, 32);

    /* Full-size salt and hash, and bytes including zeros. */
    chat_account b = make_account("scrypt$10$8$1", 0, sizeof(b.salt), sizeof(b.hash));
    assert_int_equal(b.salt[0], 0);
    assert_int_equal(chat_store_account_add(s,
                                            "stra\xc3\x9f"
                                            "e",
                                            "Stra\xc3\x9f"
                                            "e",
                                            &b, 1),
                     0);
    assert_int_equal(chat_store_account_get(s,
                                            "stra\xc3\x9f"
                                            "e",
                                            &got),
                     0);
    assert_string_equal(got.kdf, "scrypt$10$8$1");
    assert_int_equal(got.salt_len, sizeof(b.salt));
    assert_memory_equal(got.salt, b.salt, sizeof(b.salt));
    assert_int_equal(got.hash_len, sizeof(b.hash));
    assert_memory_equal(got.hash, b.hash, sizeof(b.hash));

    /* The first account is unchanged by the second. */
    assert_int_equal(chat_store_account_get(s, "alice", &got), 0);
    assert_memory_equal(got.hash, a.hash, 32);

    /* Duplicates. */
    chat_account c = make_account("scrypt$15$8$1", 9, 16, 32);
    assert_int_equal(chat_store_account_add(s, "alice", "ALICE", &c, 99), -EEXIST);
    assert_false(chat_store_dirty(s));
    assert_int_equal(chat_store_account_get(s, "alice", &got), 0);
    assert_memory_equal(got.salt, a.salt, 16); /* the original survives */
    assert_memory_equal(got.hash, a.hash, 32);

    /* Keys are exact: the store does no folding itself. */
    assert_int_equal(chat_store_account_get(s, "Alice", &got), -ENOENT);
    assert_int_equal(chat_store_account_get(s, "bob", &got), -ENOENT);
    assert_int_equal(chat_store_account_get(s, "", &got), -ENOENT);
    chat_store_close(s);
}

/* Adding an account commits pending history with it; accounts persist. */
static void accounts_persist_and_commit_history(void **state)
{
    (void)state;
    tmpdb *t = tmpdb_make();
    chat_store *s = open_store(t->path);
    chat_store *peek = open_store(t->path);
    add_range(s, "lobby", "lobby", "m", 0, 2, 0);
    assert_true(chat_store_dirty(s));
    chat_account a = make_account("scrypt$15$8$1", 5, 16, 32);
    assert_int_equal(chat_store_account_add(s, "bob", "Bob", &a, 1), 0);
    assert_false(chat_store_dirty(s));
    rows r;
    assert_int_equal(history(peek, "lobby", 10, &r), 2); /* committed: visible elsewhere */
    chat_account got;
    assert_int_equal(chat_store_account_get(peek, "bob", &got), 0);
    /* A refused duplicate still commits what was pending. */
    add_range(s, "lobby", "lobby", "m", 2, 3, 0);
    assert_int_equal(chat_store_account_add(s, "bob", "Bob", &a, 2), -EEXIST);
    assert_false(chat_store_dirty(s));
    assert_int_equal(history(peek, "lobby", 10, &r), 3);
    chat_store_close(peek);
    chat_store_close(s);

    s = open_store(t->path);
    memset(&got, 0, sizeof(got));
    assert_int_equal(chat_store_account_get(s, "bob", &got), 0);
    assert_string_equal(got.kdf, a.kdf);
    assert_int_equal(got.salt_len, 16);
    assert_memory_equal(got.salt, a.salt, 16);
    assert_int_equal(got.hash_len, 32);
    assert_memory_equal(got.hash, a.hash, 32);
    assert_int_equal(chat_store_account_add(s, "bob", "Bob", &a, 3), -EEXIST);
    assert_int_equal(chat_store_account_get(s, "nobody", &got), -ENOENT);
    chat_store_close(s);
    assert_int_equal(tmpdb_remove(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(open_in_memory, tmpdb_remove),
        cmocka_unit_test_teardown(open_bad_path, tmpdb_remove),
        cmocka_unit_test_teardown(history_per_room_last_n_oldest_first, tmpdb_remove),
        cmocka_unit_test_teardown(content_round_trips, tmpdb_remove),
        cmocka_unit_test_teardown(prune_room_keeps_newest, tmpdb_remove),
        cmocka_unit_test_teardown(prune_age_by_timestamp, tmpdb_remove),
        cmocka_unit_test_teardown(file_persists_across_reopen, tmpdb_remove),
        cmocka_unit_test_teardown(uncommitted_rows_are_private, tmpdb_remove),
        cmocka_unit_test_teardown(accounts_round_trip, tmpdb_remove),
        cmocka_unit_test_teardown(accounts_persist_and_commit_history, tmpdb_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

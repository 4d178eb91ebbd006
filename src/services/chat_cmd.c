/* Chat commands, shared by both front ends: each request is executed once
 * and answered in the client's mode (a JSON response object, or text). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"
#include "tcpkit/log.h"

#define MAX_BAD_PASSWORDS 3
#define MIN_PASSWORD      8
#define MAX_PASSWORD      256
#define DEFAULT_HISTORY   20

enum { JOB_LOGIN = 1, JOB_CREATE, JOB_UPGRADE };

static int is_json(const chat_client *cl)
{
    return cl->mode == MODE_JSON;
}

/* Answers an error in the client's mode; a text client still naming itself
 * is asked again. */
static void fail(chat_client *cl, void *id, const char *code, const char *message)
{
    if (is_json(cl)) {
        chat_json_error(cl, id, code, message);
        return;
    }
    chat_text_error(cl, message);
    if (cl->state == ST_NAMING)
        chat_prompt_name(cl);
}

static void ok(chat_client *cl, const char *type, void *id, json_t *fields)
{
    json_t *p = json_pack("{s:s}", "status", "ok");
    if (fields) {
        json_object_update(p, fields);
        json_decref(fields);
    }
    chat_json_reply(cl, type, id, p);
}

static const char *name_problem(int rc)
{
    switch (rc) {
    case TK_CHAT_NAME_EMPTY: return "name must not be empty";
    case TK_CHAT_NAME_LONG: return "name is too long";
    case TK_CHAT_NAME_UTF8: return "name is not valid UTF-8";
    case TK_CHAT_NAME_CHAR: return "name contains a space, control or format character";
    case TK_CHAT_NAME_START: return "name must not start with '/', '{' or '#'";
    case TK_CHAT_NAME_RESERVED: return "that name is reserved";
    default: return "invalid name";
    }
}

/* Validates a name or room name into a C string and its key; 0 or -1 after
 * answering with the error. */
static int valid_name(chat_client *cl, void *id, const unsigned char *s, size_t n, char *name,
                      char *key, const char *code)
{
    int rc = tk_chat_name_check(s, n, cl->chat->cfg.max_name);
    if (rc == 0 && (n >= CHAT_NAME_MAX || tk_chat_name_key(s, n, key, CHAT_KEY_MAX) < 0))
        rc = TK_CHAT_NAME_LONG;
    if (rc < 0) {
        char msg[128];
        const char *what = name_problem(rc);
        if (strcmp(code, "invalid_room") == 0)
            snprintf(msg, sizeof(msg), "room %s", what);
        else
            snprintf(msg, sizeof(msg), "%s", what);
        fail(cl, id, code, msg);
        return -1;
    }
    memcpy(name, s, n);
    name[n] = '\0';
    return 0;
}

static int content_ok(chat_client *cl, void *id, const unsigned char *s, size_t n)
{
    char msg[96];
    if (n == 0) {
        fail(cl, id, "bad_content", "message must not be empty");
        return 0;
    }
    if (n > cl->chat->cfg.max_message) {
        snprintf(msg, sizeof(msg), "message too long (limit %zu bytes)", cl->chat->cfg.max_message);
        fail(cl, id, "message_too_long", msg);
        return 0;
    }
    if (!tk_chat_content_ok(s, n)) {
        fail(cl, id, "bad_content", "message must be UTF-8 without control characters");
        return 0;
    }
    return 1;
}

/* ---- naming and passwords ---- */

static void welcome(chat_client *cl, const char *type, void *id)
{
    chat_room *r = cl->room;
    if (is_json(cl)) {
        char msg[CHAT_NAME_MAX + 64];
        if (strcmp(type, "AUTH") == 0)
            snprintf(msg, sizeof(msg), "Login successful. Welcome back, %s!", cl->name);
        else
            snprintf(msg, sizeof(msg), "Registration successful. Welcome, %s!", cl->name);
        ok(cl, type, id,
           json_pack("{s:s, s:s, s:b, s:s}", "name", cl->name, "room", r->name, "registered",
                     cl->registered, "message", msg));
        return;
    }
    chat_bytes users = {0};
    chat_room_users_text(r, &users);
    chat_text_notice(cl, "welcome %s, you are in %s with %zu users: %.*s", cl->name, r->name,
                     r->nmembers, (int)users.len, users.p ? (const char *)users.p : "");
    free(users.p);
}

static void kdf_done(chat_kdf_job *job, int good, void *owner);

/* Starts a password job; the client's input waits until it is done. */
static void start_job(chat_client *cl, void *id, int kind, const char *name,
                      const unsigned char *pw, size_t pwlen, const chat_account *acct)
{
    tk_chat *chat = cl->chat;
    chat_kdf_job *job = chat_kdf_job_new(chat->kdf, pw, pwlen, cl, kdf_done);
    if (!job) {
        fail(cl, id, "busy", "out of memory");
        return;
    }
    job->kind = kind;
    job->create = kind != JOB_LOGIN;
    /* A login takes the name as spelled when the account was made. */
    snprintf(job->name, sizeof(job->name), "%s", acct && acct->name[0] ? acct->name : name);
    if (acct)
        job->account = *acct;
    if (chat_kdf_submit(chat->kdf, job) < 0) {
        fail(cl, id, "busy", "too many logins in progress, try again");
        return;
    }
    cl->job = job;
    cl->job_id = id ? json_incref((json_t *)id) : NULL;
    cl->state = ST_HASHING;
    tk_conn_pause_read(cl->conn);
}

static void login_failed(chat_client *cl, void *id)
{
    cl->state = ST_NAMING;
    if (++cl->bad_passwords >= MAX_BAD_PASSWORDS) {
        if (is_json(cl))
            chat_json_error(cl, id, "bad_password", "wrong password; too many attempts");
        else
            chat_text_error(cl, "wrong password; too many attempts, disconnected");
        tk_conn_close_after_flush(cl->conn, TK_CLOSE_LOCAL);
        return;
    }
    fail(cl, id, "bad_password", "wrong password");
}

static void kdf_done(chat_kdf_job *job, int good, void *owner)
{
    chat_client *cl = owner;
    tk_chat *chat = cl->chat;
    void *id = cl->job_id;
    cl->job = NULL;
    cl->job_id = NULL;
    tk_conn_resume_read(cl->conn);
    char key[CHAT_KEY_MAX];
    const char *type = job->kind == JOB_LOGIN ? "AUTH" : "REGISTER";
    if (tk_chat_name_key((const unsigned char *)job->name, strlen(job->name), key, sizeof(key)) < 0)
        good = 0;
    if (job->kind == JOB_UPGRADE) {
        cl->state = ST_ACTIVE;
        int rc =
            good ? chat_store_account_add(chat->store, key, cl->name, &job->account, chat_now_ms())
                 : -EIO;
        if (rc == -EEXIST)
            fail(cl, id, "name_registered", "that name is already registered");
        else if (rc < 0)
            fail(cl, id, "busy", "could not store the account");
        else if (is_json(cl)) {
            cl->registered = 1;
            ok(cl, "REGISTER", id,
               json_pack("{s:s, s:s, s:b}", "name", cl->name, "room", cl->room->name, "registered",
                         1));
        } else {
            cl->registered = 1;
            chat_text_notice(cl, "%s is now registered", cl->name);
        }
        goto out;
    }
    if (job->kind == JOB_LOGIN && !good) {
        login_failed(cl, id);
        goto out;
    }
    cl->state = ST_NAMING;
    if (chat_map_get(&chat->users, key)) {
        fail(cl, id, "name_taken", "that name is in use");
        goto out;
    }
    if (job->kind == JOB_CREATE) {
        int rc =
            good ? chat_store_account_add(chat->store, key, job->name, &job->account, chat_now_ms())
                 : -EIO;
        if (rc == -EEXIST) {
            fail(cl, id, "name_registered", "that name is registered: log in with AUTH");
            goto out;
        }
        if (rc < 0) {
            fail(cl, id, "busy", "could not store the account");
            goto out;
        }
    }
    chat_enter(cl, job->name, 1);
    if (cl->state == ST_ACTIVE)
        welcome(cl, type, id);
out:
    if (id)
        json_decref((json_t *)id);
}

/* REGISTER (JSON, or the name line in text mode) and AUTH. */
static void take_name(chat_client *cl, tk_chat_req *req)
{
    tk_chat *chat = cl->chat;
    void *id = req->json_id;
    int auth = req->cmd == TK_CHAT_CMD_AUTH;
    char name[CHAT_NAME_MAX], key[CHAT_KEY_MAX];
    if (cl->state == ST_PASSWORD) {
        /* Text mode: the answer to "Password: ". */
        snprintf(name, sizeof(name), "%s", cl->pending);
        chat_account acct;
        tk_chat_name_key((const unsigned char *)name, strlen(name), key, sizeof(key));
        cl->state = ST_NAMING;
        if (req->password_len > MAX_PASSWORD ||
            chat_store_account_get(chat->store, key, &acct) < 0) {
            login_failed(cl, id);
            return;
        }
        start_job(cl, id, JOB_LOGIN, name, req->password, req->password_len, &acct);
        return;
    }
    if (valid_name(cl, id, req->name, req->name_len, name, key, "invalid_name") < 0)
        return;
    if (chat_map_get(&chat->users, key)) {
        char msg[CHAT_NAME_MAX + 32];
        snprintf(msg, sizeof(msg), "name \"%s\" is taken", name);
        fail(cl, id, "name_taken", msg);
        return;
    }
    chat_account acct;
    int found = chat_store_account_get(chat->store, key, &acct);
    if (found < 0 && found != -ENOENT) {
        fail(cl, id, "busy", "accounts are unavailable");
        return;
    }
    if (!is_json(cl)) {
        if (found == 0) {
            snprintf(cl->pending, sizeof(cl->pending), "%s", name);
            cl->state = ST_PASSWORD;
            static const char prompt[] = "Password: ";
            chat_send(cl, prompt, sizeof(prompt) - 1);
            return;
        }
        chat_enter(cl, name, 0);
        if (cl->state == ST_ACTIVE)
            welcome(cl, "REGISTER", id);
        return;
    }
    if (auth) {
        if (found != 0) {
            fail(cl, id, "unknown_account", "no account has that name");
            return;
        }
        if (req->password_len > MAX_PASSWORD) {
            login_failed(cl, id);
            return;
        }
        start_job(cl, id, JOB_LOGIN, name, req->password, req->password_len, &acct);
        return;
    }
    if (found == 0) {
        fail(cl, id, "name_registered", "that name is registered: log in with AUTH");
        return;
    }
    if (req->password) {
        if (req->password_len < MIN_PASSWORD || req->password_len > MAX_PASSWORD) {
            fail(cl, id, "weak_password", "a password must be 8 to 256 bytes");
            return;
        }
        start_job(cl, id, JOB_CREATE, name, req->password, req->password_len, NULL);
        return;
    }
    chat_enter(cl, name, 0);
    if (cl->state == ST_ACTIVE)
        welcome(cl, "REGISTER", id);
}

/* A named guest registers its own name (text /register, JSON REGISTER). */
static void upgrade(chat_client *cl, tk_chat_req *req)
{
    void *id = req->json_id;
    if (cl->registered) {
        fail(cl, id, "already_registered", "you are already registered");
        return;
    }
    if (req->password_len < MIN_PASSWORD || req->password_len > MAX_PASSWORD) {
        fail(cl, id, "weak_password", "a password must be 8 to 256 bytes");
        return;
    }
    start_job(cl, id, JOB_UPGRADE, cl->name, req->password, req->password_len, NULL);
}

static void do_register(chat_client *cl, tk_chat_req *req)
{
    if (cl->state != ST_ACTIVE) {
        take_name(cl, req);
        return;
    }
    if (!is_json(cl) && !req->name) {
        upgrade(cl, req);
        return;
    }
    char key[CHAT_KEY_MAX];
    if (req->name && req->password &&
        tk_chat_name_key(req->name, req->name_len, key, sizeof(key)) >= 0 &&
        strcmp(key, cl->key) == 0) {
        upgrade(cl, req);
        return;
    }
    fail(cl, req->json_id, "already_registered", "you already have a name (use NICK to change it)");
}

/* ---- rooms and messages ---- */

static void room_reply(chat_client *cl, const char *type, void *id)
{
    chat_room *r = cl->room;
    if (is_json(cl)) {
        ok(cl, type, id,
           json_pack("{s:s, s:o}", "room", r->name, "users", chat_room_users_json(r)));
        return;
    }
    chat_bytes users = {0};
    chat_room_users_text(r, &users);
    chat_text_notice(cl, "you are in %s with %zu users: %.*s", r->name, r->nmembers, (int)users.len,
                     users.p ? (const char *)users.p : "");
    free(users.p);
}

static void do_join(chat_client *cl, tk_chat_req *req)
{
    void *id = req->json_id;
    char name[CHAT_NAME_MAX], key[CHAT_KEY_MAX], why[CHAT_NAME_MAX + 16];
    if (valid_name(cl, id, req->name, req->name_len, name, key, "invalid_room") < 0)
        return;
    chat_room *existing = chat_room_find(cl->chat, key);
    snprintf(why, sizeof(why), "joined %s", existing ? existing->name : name);
    int rc = chat_move(cl, name, key, why);
    if (rc == -ENOSPC) {
        char msg[64];
        snprintf(msg, sizeof(msg), "too many rooms (limit %u)", cl->chat->cfg.max_rooms);
        fail(cl, id, "too_many_rooms", msg);
        return;
    }
    if (rc == 0)
        room_reply(cl, "JOIN", id);
}

static void do_leave(chat_client *cl, tk_chat_req *req)
{
    if (cl->room == cl->chat->lobby) {
        fail(cl, req->json_id, "invalid_room", "you are in lobby already");
        return;
    }
    if (chat_move(cl, "lobby", "lobby", NULL) == 0)
        room_reply(cl, "LEAVE", req->json_id);
}

/* The room a request names, or the client's own; NULL after answering. */
static chat_room *named_room(chat_client *cl, tk_chat_req *req, char *key)
{
    if (!req->name) {
        snprintf(key, CHAT_KEY_MAX, "%s", cl->room->key);
        return cl->room;
    }
    char name[CHAT_NAME_MAX];
    if (valid_name(cl, req->json_id, req->name, req->name_len, name, key, "invalid_room") < 0)
        return NULL;
    return chat_room_find(cl->chat, key);
}

static void do_users(chat_client *cl, tk_chat_req *req)
{
    char key[CHAT_KEY_MAX];
    if (req->name && tk_chat_name_check(req->name, req->name_len, cl->chat->cfg.max_name) < 0) {
        fail(cl, req->json_id, "invalid_room", "invalid room name");
        return;
    }
    chat_room *r = named_room(cl, req, key);
    if (!r) {
        fail(cl, req->json_id, "invalid_room", "no such room");
        return;
    }
    if (is_json(cl)) {
        ok(cl, "LIST_USERS", req->json_id,
           json_pack("{s:s, s:o}", "room", r->name, "users", chat_room_users_json(r)));
        return;
    }
    chat_bytes users = {0};
    chat_room_users_text(r, &users);
    chat_text_notice(cl, "users in %s (%zu): %.*s", r->name, r->nmembers, (int)users.len,
                     users.p ? (const char *)users.p : "");
    free(users.p);
}

typedef struct {
    chat_room **rooms;
    size_t n;
} room_list;

static void collect_room(const char *key, void *value, void *arg)
{
    (void)key;
    room_list *l = arg;
    chat_room *r = value;
    if (r->nmembers || r == r->chat->lobby)
        l->rooms[l->n++] = r;
}

static int by_room_key(const void *a, const void *b)
{
    return strcmp((*(chat_room *const *)a)->key, (*(chat_room *const *)b)->key);
}

static void do_rooms(chat_client *cl, tk_chat_req *req)
{
    tk_chat *chat = cl->chat;
    room_list l = {calloc(chat->rooms.count + 1, sizeof(chat_room *)), 0};
    if (!l.rooms)
        return;
    chat_map_each(&chat->rooms, collect_room, &l);
    qsort(l.rooms, l.n, sizeof(*l.rooms), by_room_key);
    if (is_json(cl)) {
        json_t *arr = json_array();
        for (size_t i = 0; i < l.n; i++)
            json_array_append_new(arr, json_pack("{s:s, s:I}", "name", l.rooms[i]->name, "users",
                                                 (json_int_t)l.rooms[i]->nmembers));
        ok(cl, "LIST_ROOMS", req->json_id, json_pack("{s:o}", "rooms", arr));
    } else {
        chat_bytes b = {0};
        for (size_t i = 0; i < l.n; i++) {
            char item[CHAT_NAME_MAX + 32];
            snprintf(item, sizeof(item), "%s%s (%zu)", i ? ", " : "", l.rooms[i]->name,
                     l.rooms[i]->nmembers);
            chat_bytes_str(&b, item);
        }
        chat_text_notice(cl, "rooms (%zu): %.*s", l.n, (int)b.len, b.p ? (const char *)b.p : "");
        free(b.p);
    }
    free(l.rooms);
}

typedef struct {
    chat_client *cl;
    json_t *arr;     /* JSON mode */
    chat_bytes text; /* text mode */
    size_t *sizes;   /* bytes each message adds, to trim to the budget */
    size_t n;
} history_acc;

/* Bytes s takes in a JSON string (UTF-8 stays raw; stored content has no
 * control characters but TAB). */
static size_t json_size(const unsigned char *s, size_t n)
{
    size_t size = n + 2;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"' || s[i] == '\\' || s[i] < 0x20)
            size += s[i] < 0x20 && s[i] != '\t' ? 5 : 1;
    return size;
}

static void add_history(const chat_stored *m, void *arg)
{
    history_acc *h = arg;
    char ts[32];
    if (h->arr) {
        chat_fmt_rfc3339(m->ts_ms, ts);
        json_t *ev =
            json_pack("{s:s, s:s, s:s%, s:s, s:s}", "type", "chat", "from", m->from, "content",
                      (const char *)m->content, m->len, "room", m->room_name, "timestamp", ts);
        if (!ev)
            return;
        json_array_append_new(h->arr, ev);
        h->sizes[h->n++] = json_size(m->content, m->len) +
                           json_size((const unsigned char *)m->from, strlen(m->from)) +
                           strlen(m->room_name) + 96;
    } else {
        size_t before = h->text.len;
        chat_fmt_datetime(m->ts_ms, ts);
        chat_bytes_str(&h->text, "[");
        chat_bytes_str(&h->text, ts);
        chat_bytes_str(&h->text, "] ");
        chat_bytes_str(&h->text, m->from);
        chat_bytes_str(&h->text, ": ");
        chat_bytes_add(&h->text, m->content, m->len);
        chat_bytes_add(&h->text, "\n", 1);
        h->sizes[h->n++] = h->text.len - before;
    }
}

static void do_history(chat_client *cl, tk_chat_req *req)
{
    tk_chat *chat = cl->chat;
    char key[CHAT_KEY_MAX];
    chat_room *r = named_room(cl, req, key);
    if (!r && req->name && tk_chat_name_check(req->name, req->name_len, chat->cfg.max_name) < 0)
        return; /* answered */
    const char *room_name = r ? r->name : "";
    char given[CHAT_NAME_MAX];
    if (!r) {
        snprintf(given, sizeof(given), "%.*s", (int)req->name_len, (const char *)req->name);
        room_name = given;
    }
    long limit = req->limit > 0 ? req->limit : DEFAULT_HISTORY;
    if ((unsigned long)limit > chat->cfg.history_page)
        limit = (long)chat->cfg.history_page;
    /* Pruning runs every keep/8 messages; readers never see past keep. */
    if (chat->cfg.history_keep && (unsigned long)limit > chat->cfg.history_keep)
        limit = (long)chat->cfg.history_keep;
    history_acc h = {.cl = cl, .arr = is_json(cl) ? json_array() : NULL};
    h.sizes = calloc((size_t)limit, sizeof(size_t));
    if (!h.sizes) {
        json_decref(h.arr);
        return;
    }
    int n = chat_store_history(chat->store, key, (unsigned)limit, add_history, &h);
    if (n < 0) {
        fail(cl, req->json_id, "busy", "history is unavailable");
        json_decref(h.arr);
        free(h.text.p);
        free(h.sizes);
        return;
    }
    /* The reply must fit the client's queue: drop the oldest beyond half of it. */
    size_t budget = chat->cfg.max_queue / 2, total = 0, first = h.n;
    while (first > 0 && total + h.sizes[first - 1] <= budget)
        total += h.sizes[--first];
    if (h.arr) {
        for (size_t i = 0; i < first; i++)
            json_array_remove(h.arr, 0);
        ok(cl, "LIST_MESSAGES", req->json_id,
           json_pack("{s:s, s:o, s:b}", "room", room_name, "messages", h.arr, "truncated",
                     first > 0));
    } else {
        size_t skip = 0;
        for (size_t i = 0; i < first; i++)
            skip += h.sizes[i];
        chat_text_notice(cl, "last %zu messages in %s:", h.n - first, room_name);
        if (h.text.len > skip)
            chat_send(cl, h.text.p + skip, h.text.len - skip);
        chat_text_notice(cl, "end of history");
        free(h.text.p);
    }
    free(h.sizes);
}

static void do_nick(chat_client *cl, tk_chat_req *req)
{
    tk_chat *chat = cl->chat;
    void *id = req->json_id;
    char name[CHAT_NAME_MAX], key[CHAT_KEY_MAX];
    if (valid_name(cl, id, req->name, req->name_len, name, key, "invalid_name") < 0)
        return;
    chat_client *owner = chat_map_get(&chat->users, key);
    if (owner && owner != cl) {
        fail(cl, id, "name_taken", "that name is in use");
        return;
    }
    chat_account acct;
    if (owner != cl && chat_store_account_get(chat->store, key, &acct) == 0) {
        fail(cl, id, "name_registered", "that name is registered: log in with its password");
        return;
    }
    if (owner == cl && strcmp(name, cl->name) == 0) {
        /* Already so named: nothing to tell the room. */
    } else {
        int registered = owner == cl && cl->registered;
        chat_rename(cl, name, key);
        cl->registered = registered;
    }
    if (is_json(cl))
        ok(cl, "NICK", id, json_pack("{s:s}", "name", cl->name));
    else
        chat_text_notice(cl, "you are now %s", cl->name);
}

static void do_say(chat_client *cl, tk_chat_req *req)
{
    if (!content_ok(cl, req->json_id, req->text, req->text_len))
        return;
    if (chat_say(cl, req->text, req->text_len) < 0) {
        fail(cl, req->json_id, "busy", "history is unavailable; message not sent");
        return;
    }
    if (!is_json(cl))
        return;
    /* The hot path of a busy room: the reply without building a JSON tree. */
    static const char head[] = "{\"type\":\"MESSAGE\",";
    static const char tail[] =
        "\"payload\":{\"status\":\"ok\",\"message\":\"Message broadcasted\"}}\n";
    if (!req->json_id) {
        char line[sizeof(head) + sizeof(tail)];
        memcpy(line, head, sizeof(head) - 1);
        memcpy(line + sizeof(head) - 1, tail, sizeof(tail) - 1);
        chat_send(cl, line, sizeof(head) + sizeof(tail) - 2);
        return;
    }
    ok(cl, "MESSAGE", req->json_id, json_pack("{s:s}", "message", "Message broadcasted"));
}

static void do_private(chat_client *cl, tk_chat_req *req)
{
    tk_chat *chat = cl->chat;
    void *id = req->json_id;
    char key[CHAT_KEY_MAX];
    chat_client *to = NULL;
    if (tk_chat_name_key(req->name, req->name_len, key, sizeof(key)) >= 0)
        to = chat_map_get(&chat->users, key);
    if (!to || to->state == ST_GONE) {
        char msg[96];
        snprintf(msg, sizeof(msg), "no user named \"%.*s\" is online",
                 (int)(req->name_len < 40 ? req->name_len : 40), (const char *)req->name);
        fail(cl, id, "no_such_user", msg);
        return;
    }
    if (!content_ok(cl, id, req->text, req->text_len))
        return;
    if (chat_private(cl, to, req->text, req->text_len) < 0) {
        fail(cl, id, "no_such_user", "that user just left");
        return;
    }
    if (is_json(cl)) {
        ok(cl, "PRIVATE", id, json_pack("{s:s}", "to", to->name));
        return;
    }
    char hms[16];
    chat_bytes b = {0};
    chat_fmt_hms(chat_now_ms(), hms);
    chat_bytes_str(&b, "[");
    chat_bytes_str(&b, hms);
    chat_bytes_str(&b, "] you -> ");
    chat_bytes_str(&b, to->name);
    chat_bytes_str(&b, ": ");
    chat_bytes_add(&b, req->text, req->text_len);
    chat_bytes_add(&b, "\n", 1);
    if (b.p)
        chat_send(cl, b.p, b.len);
    free(b.p);
}

static void do_stats(chat_client *cl, tk_chat_req *req)
{
    tk_chat *chat = cl->chat;
    if (is_json(cl)) {
        ok(cl, "STATS", req->json_id,
           json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "users",
                     (json_int_t)chat->users.count, "rooms", (json_int_t)chat->rooms.count,
                     "messages", (json_int_t)chat->n_messages, "private",
                     (json_int_t)chat->n_private, "deliveries", (json_int_t)chat->n_deliveries,
                     "drops", (json_int_t)chat->n_drops, "flood_rejected",
                     (json_int_t)chat->n_flood, "conns_total", (json_int_t)chat->n_conns,
                     "conns_active", (json_int_t)chat->nclients));
        return;
    }
    chat_text_notice(cl,
                     "stats users=%zu rooms=%zu messages=%llu private=%llu deliveries=%llu "
                     "drops=%llu flood_rejected=%llu conns_total=%llu conns_active=%zu",
                     chat->users.count, chat->rooms.count, (unsigned long long)chat->n_messages,
                     (unsigned long long)chat->n_private, (unsigned long long)chat->n_deliveries,
                     (unsigned long long)chat->n_drops, (unsigned long long)chat->n_flood,
                     (unsigned long long)chat->n_conns, chat->nclients);
}

static const char *const help_lines[] = {
    "commands:",
    "  /join ROOM        enter ROOM (created if new)",
    "  /leave            back to lobby",
    "  /rooms            rooms and how many are in each",
    "  /users [ROOM]     who is in a room",
    "  /msg NAME TEXT    private message",
    "  /history [N]      the last N messages of this room",
    "  /nick NAME        change your name",
    "  /register PASS    protect your name with a password",
    "  /time  /stats  /help  /quit",
    "anything else is a message to your room (//text sends /text)",
};

static void do_quit(chat_client *cl, tk_chat_req *req)
{
    if (is_json(cl))
        ok(cl, "QUIT", req->json_id, json_pack("{s:s}", "message", "Goodbye!"));
    else
        chat_text_notice(cl, "goodbye");
    chat_detach(cl, "quit");
    tk_conn_close_after_flush(cl->conn, TK_CLOSE_LOCAL);
}

void chat_execute(chat_client *cl, tk_chat_req *req)
{
    void *id = req->json_id;
    char ts[32];
    switch (req->cmd) {
    case TK_CHAT_CMD_NONE:
    case TK_CHAT_CMD_PONG: return;
    case TK_CHAT_CMD_PING: ok(cl, "PING", id, NULL); return;
    case TK_CHAT_CMD_ECHO:
        ok(cl, "ECHO", id, json_pack("{s:s%}", "data", (const char *)req->text, req->text_len));
        return;
    case TK_CHAT_CMD_TIME:
        chat_fmt_rfc3339(chat_now_ms(), ts);
        if (is_json(cl))
            ok(cl, "TIME", id, json_pack("{s:s}", "time", ts));
        else
            chat_text_notice(cl, "%s", ts);
        return;
    case TK_CHAT_CMD_STATS: do_stats(cl, req); return;
    case TK_CHAT_CMD_QUIT: do_quit(cl, req); return;
    case TK_CHAT_CMD_HELP:
        for (size_t i = 0; i < sizeof(help_lines) / sizeof(help_lines[0]); i++)
            chat_text_notice(cl, "%s", help_lines[i]);
        return;
    case TK_CHAT_CMD_UNKNOWN: chat_text_error(cl, "unknown command (try /help)"); return;
    case TK_CHAT_CMD_BAD: chat_text_error(cl, "missing or bad arguments (try /help)"); return;
    case TK_CHAT_CMD_REGISTER: do_register(cl, req); return;
    case TK_CHAT_CMD_AUTH:
        if (cl->state == ST_ACTIVE)
            fail(cl, id, "already_registered", "you already have a name");
        else
            take_name(cl, req);
        return;
    default: break;
    }
    if (cl->state != ST_ACTIVE) {
        fail(cl, id, "not_registered", "register a name first");
        return;
    }
    switch (req->cmd) {
    case TK_CHAT_CMD_SAY: do_say(cl, req); break;
    case TK_CHAT_CMD_MSG: do_private(cl, req); break;
    case TK_CHAT_CMD_JOIN: do_join(cl, req); break;
    case TK_CHAT_CMD_LEAVE: do_leave(cl, req); break;
    case TK_CHAT_CMD_USERS: do_users(cl, req); break;
    case TK_CHAT_CMD_ROOMS: do_rooms(cl, req); break;
    case TK_CHAT_CMD_HISTORY: do_history(cl, req); break;
    case TK_CHAT_CMD_NICK: do_nick(cl, req); break;
    default: break;
    }
}

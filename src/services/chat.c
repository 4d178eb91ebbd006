/* The chat service core: clients and their front-end mode, rooms with
 * batched broadcast, slow-receiver drops, flood control, idle pings and
 * graceful shutdown. Everything runs on one loop. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_internal.h"
#include "tcpkit/log.h"

/* A room's batch is sent early once it holds this much. */
#define BATCH_FLUSH_BYTES (64 * 1024)
/* Batch memory a room keeps between turns: enough for a busy room's usual
 * turn without holding 2 x 64 KiB in each of --max-rooms quiet rooms. */
#define BATCH_KEEP_BYTES (16 * 1024)
/* Output allowed past --max-queue for the last notice and one reply. */
#define QUEUE_HEADROOM (64 * 1024)
#define DEFAULT_BANNER "Welcome to tcpkit chat. Type /help for commands."

void tk_chat_config_init(tk_chat_config *c)
{
    memset(c, 0, sizeof(*c));
    c->mode = TK_CHAT_MODE_AUTO;
    c->detect_ms = 300;
    c->history_keep = 10000;
    c->history_page = 200;
    c->max_rooms = 1000;
    c->max_name = 32;
    c->max_message = 4096;
    c->max_line = 16384;
    c->max_queue = 1024 * 1024;
    c->flood_rate = 10;
    c->flood_burst = 20;
    c->idle_timeout_ms = 300 * 1000;
    c->stall_timeout_ms = 30 * 1000;
    c->kdf_log2_n = 15;
    tk_sockopts_init(&c->sockopts);
    c->sockopts.nodelay = 1;
}

/* ---- output ---- */

static void drop_slow(chat_client *cl);

static int over_queue(chat_client *cl, size_t n)
{
    return tk_conn_pending(cl->conn) + n > cl->chat->cfg.max_queue;
}

void chat_send(chat_client *cl, const void *p, size_t n)
{
    if (cl->mode == MODE_TEXT && cl->room && cl->room->batch_events)
        chat_room_flush(cl->room);
    if (tk_conn_closing(cl->conn))
        return;
    if (over_queue(cl, n)) {
        drop_slow(cl);
        return;
    }
    (void)tk_conn_write(cl->conn, p, n);
}

void chat_json_reply(chat_client *cl, const char *type, void *id, void *payload)
{
    json_t *obj = json_object();
    json_object_set_new(obj, "type", json_string(type));
    if (id)
        json_object_set(obj, "id", (json_t *)id);
    json_object_set_new(obj, "payload", (json_t *)payload);
    char *text;
    size_t len;
    if (tk_json_encode_line(obj, &text, &len) == 0) {
        chat_send(cl, text, len);
        free(text);
    }
    json_decref(obj);
}

void chat_json_error(chat_client *cl, void *id, const char *code, const char *message)
{
    chat_json_reply(
        cl, "error", id,
        json_pack("{s:s, s:s, s:s}", "status", "error", "code", code, "message", message));
}

void chat_text_error(chat_client *cl, const char *message)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "ERROR: %s\n", message);
    chat_send(cl, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void chat_text_notice(chat_client *cl, const char *fmt, ...)
{
    chat_bytes b = {0};
    char small[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    chat_bytes_str(&b, "*** ");
    if ((size_t)n < sizeof(small)) {
        chat_bytes_add(&b, small, (size_t)n);
    } else {
        char *big = malloc((size_t)n + 1);
        if (big) {
            va_start(ap, fmt);
            vsnprintf(big, (size_t)n + 1, fmt, ap);
            va_end(ap);
            chat_bytes_add(&b, big, (size_t)n);
            free(big);
        }
    }
    chat_bytes_add(&b, "\n", 1);
    if (b.p)
        chat_send(cl, b.p, b.len);
    free(b.p);
}

/* One event as a JSON line, appended whole or not at all: 0 or -ENOMEM. */
static int encode_json_event(chat_bytes *b, const char *type, const char *from, const char *to,
                             const unsigned char *content, size_t clen, const char *room,
                             const char *ts)
{
    size_t start = b->len;
    int rc = chat_bytes_str(b, "{\"type\":\"");
    rc |= chat_bytes_str(b, type);
    rc |= chat_bytes_str(b, "\",\"from\":");
    rc |= chat_bytes_json(b, (const unsigned char *)from, strlen(from));
    if (to) {
        rc |= chat_bytes_str(b, ",\"to\":");
        rc |= chat_bytes_json(b, (const unsigned char *)to, strlen(to));
    }
    rc |= chat_bytes_str(b, ",\"content\":");
    rc |= chat_bytes_json(b, content, clen);
    rc |= chat_bytes_str(b, ",\"room\":");
    rc |= chat_bytes_json(b, (const unsigned char *)room, strlen(room));
    rc |= chat_bytes_str(b, ",\"timestamp\":\"");
    rc |= chat_bytes_str(b, ts);
    rc |= chat_bytes_str(b, "\"}\n");
    if (rc) {
        b->len = start; /* never half an event on the wire */
        return -ENOMEM;
    }
    return 0;
}

/* One event as a text line ("[10:30:15] alice: hi", "* bob joined lobby"),
 * appended whole or not at all: 0 or -ENOMEM. */
static int encode_text_event(chat_bytes *b, const char *type, const char *from,
                             const unsigned char *content, size_t clen, int64_t ts)
{
    size_t start = b->len;
    char hms[16];
    chat_fmt_hms(ts, hms);
    int rc = chat_bytes_add(b, "[", 1);
    rc |= chat_bytes_str(b, hms);
    if (strcmp(type, "chat") == 0) {
        rc |= chat_bytes_str(b, "] ");
        rc |= chat_bytes_str(b, from);
        rc |= chat_bytes_str(b, ": ");
    } else if (strcmp(type, "system") == 0) {
        rc |= chat_bytes_str(b, "] *** ");
    } else {
        rc |= chat_bytes_str(b, "] * ");
    }
    rc |= chat_bytes_add(b, content, clen);
    rc |= chat_bytes_add(b, "\n", 1);
    if (rc) {
        b->len = start;
        return -ENOMEM;
    }
    return 0;
}

void chat_system(chat_client *cl, const char *text)
{
    int64_t now = chat_now_ms();
    chat_bytes b = {0};
    int rc;
    if (cl->mode == MODE_JSON) {
        char ts[32];
        chat_fmt_rfc3339(now, ts);
        rc = encode_json_event(&b, "system", "server", NULL, (const unsigned char *)text,
                               strlen(text), "", ts);
    } else {
        rc = encode_text_event(&b, "system", "server", (const unsigned char *)text, strlen(text),
                               now);
    }
    if (rc == 0)
        chat_send(cl, b.p, b.len);
    free(b.p);
}

/* ---- rooms ---- */

chat_room *chat_room_find(tk_chat *chat, const char *key)
{
    return chat_map_get(&chat->rooms, key);
}

static void on_room_flush(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    chat_room_flush((chat_room *)((char *)d - offsetof(chat_room, flush)));
}

static chat_room *room_new(tk_chat *chat, const char *name, const char *key)
{
    chat_room *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->chat = chat;
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->key, sizeof(r->key), "%s", key);
    tk_defer_init(&r->flush, on_room_flush);
    if (chat_map_put(&chat->rooms, r->key, r) < 0) {
        free(r);
        return NULL;
    }
    return r;
}

static void room_free(tk_chat *chat, chat_room *r)
{
    tk_defer_cancel(chat->loop, &r->flush);
    chat_map_del(&chat->rooms, r->key);
    free(r->batch_json.p);
    free(r->batch_text.p);
    free(r->members);
    free(r);
}

/* Takes a client into a room (after the room's earlier events went out). */
static int room_add(chat_room *r, chat_client *cl)
{
    chat_room_flush(r);
    if (r->nmembers == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 8;
        chat_client **m = realloc(r->members, cap * sizeof(*m));
        if (!m)
            return -ENOMEM;
        r->members = m;
        r->cap = cap;
    }
    cl->room = r;
    cl->room_index = r->nmembers;
    r->members[r->nmembers++] = cl;
    if (cl->mode == MODE_TEXT)
        r->ntext++;
    return 0;
}

/* Takes a client out of its room once the room's pending events reached it. */
static void room_remove(chat_client *cl)
{
    chat_room *r = cl->room;
    chat_room_flush(r);
    if (cl->room != r)
        return; /* the flush dropped it */
    size_t i = cl->room_index;
    chat_client *last = r->members[--r->nmembers];
    r->members[i] = last;
    last->room_index = i;
    if (cl->mode == MODE_TEXT)
        r->ntext--;
    cl->room = NULL;
}

void chat_room_event(chat_room *r, const char *type, const char *from, const unsigned char *content,
                     size_t clen, int64_t ts)
{
    if (r->nmembers == 0)
        return;
    size_t json_start = r->batch_json.len;
    if (r->nmembers > r->ntext) {
        char stamp[32];
        chat_fmt_rfc3339(ts, stamp);
        if (encode_json_event(&r->batch_json, type, from, NULL, content, clen, r->name, stamp) < 0)
            goto nomem;
    }
    if (r->ntext && encode_text_event(&r->batch_text, type, from, content, clen, ts) < 0) {
        r->batch_json.len = json_start; /* both modes get the event, or neither */
        goto nomem;
    }
    r->batch_events++;
    if (r->batch_json.len >= r->chat->batch_limit || r->batch_text.len >= r->chat->batch_limit)
        chat_room_flush(r);
    else
        tk_defer_queue(r->chat->loop, &r->flush);
    return;
nomem:
    tk_error("chat: out of memory: a %s event in %s was not sent", type, r->name);
}

/* Hands a shared batch to one member, or drops the member if its queue is
 * full. Returns 1 when delivered. */
static int deliver_shared(chat_client *cl, tk_shared *s)
{
    if (tk_conn_closing(cl->conn))
        return 0;
    if (over_queue(cl, tk_shared_len(s))) {
        drop_slow(cl);
        return 0;
    }
    return tk_conn_write_shared(cl->conn, s) == 0;
}

void chat_room_flush(chat_room *r)
{
    if (r->batch_events == 0)
        return;
    tk_chat *chat = r->chat;
    /* A message reaches nobody before it is committed to the history. */
    if (chat->store && chat_store_dirty(chat->store))
        (void)chat_store_commit(chat->store);
    tk_defer_cancel(chat->loop, &r->flush);
    tk_shared *json = r->batch_json.len ? tk_shared_new(r->batch_json.p, r->batch_json.len) : NULL;
    tk_shared *text = r->batch_text.len ? tk_shared_new(r->batch_text.p, r->batch_text.len) : NULL;
    uint64_t events = r->batch_events;
    /* Events raised while delivering (a drop's leave notice) start a new batch. */
    chat_bytes_reset(&r->batch_json, BATCH_KEEP_BYTES);
    chat_bytes_reset(&r->batch_text, BATCH_KEEP_BYTES);
    r->batch_events = 0;
    uint64_t delivered = 0;
    /* Backwards: a dropped member is swapped with the last, already served. */
    for (size_t i = r->nmembers; i-- > 0;) {
        if (i >= r->nmembers)
            continue;
        chat_client *cl = r->members[i];
        tk_shared *s = cl->mode == MODE_TEXT ? text : json;
        if (s)
            delivered += (uint64_t)deliver_shared(cl, s);
    }
    chat->n_deliveries += delivered * events;
    tk_shared_unref(json);
    tk_shared_unref(text);
}

/* Empty rooms are freed after the current callbacks, never while a flush
 * or a move may still be looking at them. */
static void free_room_if_empty(tk_chat *chat, chat_room *r)
{
    if (r->nmembers == 0 && r != chat->lobby)
        tk_defer_queue(chat->loop, &chat->gc);
}

static void gc_room(const char *key, void *value, void *arg)
{
    (void)key;
    chat_room **list = arg;
    chat_room *r = value;
    if (r->nmembers == 0 && r != r->chat->lobby) {
        r->gc_next = *list;
        *list = r;
    }
}

static void on_gc(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    tk_chat *chat = (tk_chat *)((char *)d - offsetof(tk_chat, gc));
    chat_room *list = NULL;
    chat_map_each(&chat->rooms, gc_room, &list);
    while (list) {
        chat_room *next = list->gc_next;
        room_free(chat, list);
        list = next;
    }
}

/* ---- membership ---- */

static void join_event(chat_client *cl, chat_room *r, const char *verb, const char *why)
{
    char text[CHAT_NAME_MAX * 3 + 128];
    int n = snprintf(text, sizeof(text), "%s %s %s%s%s%s", cl->name, verb, r->name, why ? " (" : "",
                     why ? why : "", why ? ")" : "");
    chat_room_event(r, verb[0] == 'j' ? "join" : "leave", cl->name, (const unsigned char *)text,
                    (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1, chat_now_ms());
}

void chat_enter(chat_client *cl, const char *name, int registered)
{
    tk_chat *chat = cl->chat;
    snprintf(cl->name, sizeof(cl->name), "%s", name);
    if (tk_chat_name_key((const unsigned char *)name, strlen(name), cl->key, sizeof(cl->key)) < 0 ||
        chat_map_put(&chat->users, cl->key, cl) < 0 || room_add(chat->lobby, cl) < 0) {
        chat_map_del(&chat->users, cl->key);
        tk_conn_close(cl->conn, TK_CLOSE_ERROR, -ENOMEM);
        cl->state = ST_GONE;
        return;
    }
    cl->registered = registered;
    cl->state = ST_ACTIVE;
    join_event(cl, chat->lobby, "joined", NULL);
    tk_debug("chat: %s entered", cl->name);
}

int chat_move(chat_client *cl, const char *name, const char *key, const char *why)
{
    tk_chat *chat = cl->chat;
    chat_room *to = chat_room_find(chat, key);
    if (!to) {
        if (chat->rooms.count >= chat->cfg.max_rooms)
            return -ENOSPC;
        to = room_new(chat, name, key);
        if (!to)
            return -ENOMEM;
    }
    chat_room *from = cl->room;
    if (from == to)
        return 0;
    /* The leave notice is queued while the mover is still a member, so it
     * reaches the mover too; removing flushes it out. */
    join_event(cl, from, "left", why);
    room_remove(cl);
    if (cl->state != ST_ACTIVE) {
        free_room_if_empty(chat, to);
        return -EPIPE;
    }
    free_room_if_empty(chat, from);
    if (room_add(to, cl) < 0) {
        free_room_if_empty(chat, to);
        chat_detach(cl, "out of memory");
        tk_conn_close(cl->conn, TK_CLOSE_ERROR, -ENOMEM);
        return -ENOMEM;
    }
    join_event(cl, to, "joined", NULL);
    return 0;
}

void chat_detach(chat_client *cl, const char *why)
{
    tk_chat *chat = cl->chat;
    if (cl->state == ST_GONE)
        return;
    cl->state = ST_GONE;
    if (cl->job) {
        chat_kdf_cancel(cl->job);
        cl->job = NULL;
    }
    if (cl->room) {
        chat_room *r = cl->room;
        room_remove(cl);
        /* At shutdown everyone is leaving: no one needs to hear it N times. */
        if (!chat->shutting_down)
            join_event(cl, r, "left", why);
        free_room_if_empty(chat, r);
    }
    if (cl->key[0] && chat_map_get(&chat->users, cl->key) == cl)
        chat_map_del(&chat->users, cl->key);
}

void chat_rename(chat_client *cl, const char *name, const char *key)
{
    tk_chat *chat = cl->chat;
    char old[CHAT_NAME_MAX];
    snprintf(old, sizeof(old), "%s", cl->name);
    chat_map_del(&chat->users, cl->key);
    snprintf(cl->name, sizeof(cl->name), "%s", name);
    snprintf(cl->key, sizeof(cl->key), "%s", key);
    if (chat_map_put(&chat->users, cl->key, cl) < 0) {
        chat_detach(cl, "out of memory");
        tk_conn_close(cl->conn, TK_CLOSE_ERROR, -ENOMEM);
        return;
    }
    cl->registered = 0;
    char text[CHAT_NAME_MAX * 2 + 32];
    int n = snprintf(text, sizeof(text), "%s is now known as %s", old, name);
    chat_room_event(cl->room, "system", "server", (const unsigned char *)text, (size_t)n,
                    chat_now_ms());
}

int chat_say(chat_client *cl, const unsigned char *text, size_t n)
{
    tk_chat *chat = cl->chat;
    chat_room *r = cl->room;
    int64_t now = chat_now_ms();
    if (chat->store) {
        if (chat_store_add(chat->store, r->key, r->name, cl->name, text, n, now) < 0)
            return -EIO;
        tk_defer_queue(chat->loop, &chat->commit);
        uint32_t keep = chat->cfg.history_keep;
        if (keep && ++r->stored_since_prune > keep / 8) {
            r->stored_since_prune = 0;
            (void)chat_store_prune_room(chat->store, r->key, keep);
        }
    }
    chat->n_messages++;
    chat_room_event(r, "chat", cl->name, text, n, now);
    return 0;
}

int chat_private(chat_client *cl, chat_client *to, const unsigned char *text, size_t n)
{
    int64_t now = chat_now_ms();
    chat_bytes b = {0};
    /* The sender's earlier room events reach the target first. */
    if (to->room && to->room->batch_events)
        chat_room_flush(to->room);
    if (to->state == ST_GONE)
        return -ENOENT;
    int rc;
    if (to->mode == MODE_JSON) {
        char ts[32];
        chat_fmt_rfc3339(now, ts);
        rc = encode_json_event(&b, "private", cl->name, to->name, text, n, "", ts);
    } else {
        char hms[16];
        chat_fmt_hms(now, hms);
        rc = chat_bytes_add(&b, "[", 1);
        rc |= chat_bytes_str(&b, hms);
        rc |= chat_bytes_str(&b, "] ");
        rc |= chat_bytes_str(&b, cl->name);
        rc |= chat_bytes_str(&b, " -> you: ");
        rc |= chat_bytes_add(&b, text, n);
        rc |= chat_bytes_add(&b, "\n", 1);
    }
    if (rc == 0)
        chat_send(to, b.p, b.len);
    free(b.p);
    if (rc)
        return -ENOMEM;
    cl->chat->n_private++;
    cl->chat->n_deliveries++;
    return 0;
}

static void collect_name(chat_client **out, size_t *n, chat_room *r)
{
    for (size_t i = 0; i < r->nmembers; i++)
        out[(*n)++] = r->members[i];
}

static int by_key(const void *a, const void *b)
{
    return strcmp((*(chat_client *const *)a)->key, (*(chat_client *const *)b)->key);
}

/* The members sorted by name key; the caller frees the array. */
static chat_client **sorted_members(chat_room *r)
{
    chat_client **m = malloc((r->nmembers ? r->nmembers : 1) * sizeof(*m));
    if (!m)
        return NULL;
    size_t n = 0;
    collect_name(m, &n, r);
    qsort(m, n, sizeof(*m), by_key);
    return m;
}

void *chat_room_users_json(chat_room *r)
{
    json_t *arr = json_array();
    chat_client **m = sorted_members(r);
    for (size_t i = 0; m && i < r->nmembers; i++)
        json_array_append_new(arr, json_string(m[i]->name));
    free(m);
    return arr;
}

void chat_room_users_text(chat_room *r, chat_bytes *out)
{
    chat_client **m = sorted_members(r);
    for (size_t i = 0; m && i < r->nmembers; i++) {
        if (i)
            chat_bytes_str(out, ", ");
        chat_bytes_str(out, m[i]->name);
    }
    free(m);
}

/* ---- slow receivers ---- */

static void drop_slow(chat_client *cl)
{
    tk_chat *chat = cl->chat;
    if (cl->state == ST_GONE || tk_conn_closing(cl->conn))
        return;
    chat->n_drops++;
    char who[TK_ADDR_STRLEN];
    tk_info("chat: dropping %s (%s): more than %zu bytes unsent",
            cl->name[0] ? cl->name : "unnamed client",
            tk_addr_format(tk_conn_peer(cl->conn), who, sizeof(who)), chat->cfg.max_queue);
    /* The notice goes past the limit, into the headroom kept for it. */
    if (cl->mode == MODE_JSON) {
        char ts[32];
        chat_bytes b = {0};
        static const char text[] = "too slow: disconnected (output queue full)";
        chat_fmt_rfc3339(chat_now_ms(), ts);
        if (encode_json_event(&b, "system", "server", NULL, (const unsigned char *)text,
                              sizeof(text) - 1, "", ts) == 0)
            (void)tk_conn_write(cl->conn, b.p, b.len);
        free(b.p);
    } else {
        static const char text[] = "ERROR: too slow, disconnected\n";
        (void)tk_conn_write(cl->conn, text, sizeof(text) - 1);
    }
    chat_detach(cl, "dropped: not reading");
    tk_conn_close_after_flush(cl->conn, TK_CLOSE_LIMIT);
}

/* ---- clients ---- */

static void arm_client_timer(chat_client *cl);

static void send_banner(chat_client *cl)
{
    const char *banner = cl->chat->cfg.banner ? cl->chat->cfg.banner : DEFAULT_BANNER;
    chat_send(cl, banner, strlen(banner));
    chat_send(cl, "\n", 1);
}

void chat_prompt_name(chat_client *cl)
{
    static const char prompt[] = "Your name: ";
    chat_send(cl, prompt, sizeof(prompt) - 1);
}

/* The mode is known: greet a text client. */
static void set_mode(chat_client *cl, chat_client_mode mode)
{
    cl->mode = mode;
    cl->state = ST_NAMING;
    if (mode == MODE_TEXT) {
        send_banner(cl);
        chat_prompt_name(cl);
    }
}

/* Token bucket: 1 when the line may run. */
static int take_token(chat_client *cl)
{
    const tk_chat_config *cfg = &cl->chat->cfg;
    if (cfg->flood_rate <= 0)
        return 1;
    uint64_t now = tk_loop_now(cl->chat->loop);
    cl->tokens += (double)(now - cl->tokens_ms) * cfg->flood_rate / 1000.0;
    if (cl->tokens > cfg->flood_burst)
        cl->tokens = cfg->flood_burst;
    cl->tokens_ms = now;
    if (cl->tokens < 1.0)
        return 0;
    cl->tokens -= 1.0;
    return 1;
}

static void flood_error(chat_client *cl, void *id)
{
    char msg[96];
    cl->chat->n_flood++;
    snprintf(msg, sizeof(msg), "slow down: at most %g requests per second",
             cl->chat->cfg.flood_rate);
    if (cl->mode == MODE_JSON)
        chat_json_error(cl, id, "flood", msg);
    else
        chat_text_error(cl, msg);
}

static void json_line(chat_client *cl, const unsigned char *line, size_t n)
{
    tk_chat_req req;
    const char *code = NULL;
    char msg[160];
    int rc = tk_chat_json_parse(line, n, &req, &code, msg, sizeof(msg));
    if (!take_token(cl))
        flood_error(cl, req.json_id);
    else if (rc < 0)
        chat_json_error(cl, req.json_id, code, msg);
    else
        chat_execute(cl, &req);
    tk_chat_json_free(&req);
}

static void text_line(chat_client *cl, const unsigned char *line, size_t n)
{
    if (cl->state == ST_NAMING && n && line[0] == '{' && cl->chat->cfg.mode == TK_CHAT_MODE_AUTO) {
        /* A program that waited for a greeting before speaking JSON. */
        cl->mode = MODE_JSON;
        arm_client_timer(cl); /* JSON clients are pinged */
        json_line(cl, line, n);
        return;
    }
    tk_chat_req req;
    if (cl->state == ST_NAMING || cl->state == ST_PASSWORD) {
        memset(&req, 0, sizeof(req));
        req.limit = -1;
        if (cl->state == ST_NAMING) {
            if (n == 0) {
                chat_prompt_name(cl); /* an empty answer costs nothing */
                return;
            }
            req.cmd = TK_CHAT_CMD_REGISTER;
            req.name = line;
            req.name_len = n;
        } else {
            req.cmd = TK_CHAT_CMD_AUTH;
            req.password = line;
            req.password_len = n;
        }
    } else {
        tk_chat_text_parse(line, n, &req);
        if (req.cmd == TK_CHAT_CMD_NONE)
            return; /* blank lines are ignored, as in JSON mode */
    }
    if (!take_token(cl)) {
        flood_error(cl, NULL);
        return;
    }
    chat_execute(cl, &req);
}

static void handle_line(chat_client *cl, const unsigned char *line, size_t n)
{
    if (cl->mode == MODE_JSON) {
        if (n == 0)
            return; /* blank lines are ignored in JSON mode */
        json_line(cl, line, n);
    } else {
        text_line(cl, line, n);
    }
}

static void too_long(chat_client *cl)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "line too long (limit %zu bytes)", cl->chat->cfg.max_line);
    if (cl->mode == MODE_JSON)
        chat_json_error(cl, NULL, "too_long", msg);
    else
        chat_text_error(cl, msg);
}

/* Input may be handled only while no password check is running. */
static int can_read(chat_client *cl)
{
    return cl->state != ST_HASHING && cl->state != ST_GONE && !tk_conn_closing(cl->conn);
}

static size_t on_data(tk_conn *c, const unsigned char *data, size_t len)
{
    chat_client *cl = tk_conn_data(c);
    cl->last_in_ms = tk_loop_now(cl->chat->loop);
    cl->pinged = 0;
    if (cl->state == ST_NEW)
        set_mode(cl, data[0] == '{' ? MODE_JSON : MODE_TEXT);
    size_t off = 0;
    while (off < len && can_read(cl)) {
        const unsigned char *line;
        size_t n, used;
        tk_codec_status st = tk_line_next(&cl->dec, data + off, len - off, &line, &n, &used);
        off += used;
        if (st == TK_CODEC_NEED)
            break;
        if (st == TK_CODEC_TOO_LONG)
            too_long(cl);
        else
            handle_line(cl, line, n);
    }
    /* One commit per read: the replies to these requests are sent when this
     * returns, and they must not confirm messages that are not stored yet. */
    if (cl->chat->store && chat_store_dirty(cl->chat->store))
        (void)chat_store_commit(cl->chat->store);
    return off;
}

static void on_eof(tk_conn *c, const unsigned char *rest, size_t len)
{
    chat_client *cl = tk_conn_data(c);
    if (len && rest[len - 1] == '\r')
        len--;
    if (len && !cl->dec.discarding && can_read(cl)) {
        if (cl->state == ST_NEW)
            set_mode(cl, rest[0] == '{' ? MODE_JSON : MODE_TEXT);
        handle_line(cl, rest, len);
    }
    tk_conn_close_after_flush(c, TK_CLOSE_PEER);
}

static const char *leave_reason(tk_close_reason why)
{
    switch (why) {
    case TK_CLOSE_LOCAL: return "quit";
    case TK_CLOSE_IDLE: return "idle";
    case TK_CLOSE_STALL:
    case TK_CLOSE_LIMIT: return "dropped: not reading";
    case TK_CLOSE_SHUTDOWN: return "server shutting down";
    default: return "disconnected";
    }
}

static void on_close(tk_conn *c, tk_close_reason why, int err)
{
    chat_client *cl = tk_conn_data(c);
    tk_chat *chat = cl->chat;
    tk_log_level lv = why == TK_CLOSE_LIMIT || why == TK_CLOSE_STALL ? TK_LOG_INFO : TK_LOG_DEBUG;
    if (tk_log_enabled(lv)) {
        char who[TK_ADDR_STRLEN];
        tk_log(lv, "chat: closed %s%s%s (%s%s%s)", cl->name[0] ? cl->name : "",
               cl->name[0] ? " at " : "", tk_addr_format(tk_conn_peer(c), who, sizeof(who)),
               tk_close_reason_name(why), err ? ": " : "", err ? strerror(-err) : "");
    }
    chat_detach(cl, leave_reason(why));
    if (cl->job_id)
        json_decref((json_t *)cl->job_id);
    tk_timer_stop(chat->loop, &cl->timer);
    tk_metrics_conn_close(chat->slot, why);
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        chat->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    chat->nclients--;
    if (chat->server && cl->counted)
        tk_server_release(chat->server, 0, tk_conn_peer(c));
    free(cl);
    if (chat->shutting_down && chat->nclients == 0 && chat->server)
        tk_server_loop_done(chat->server, 0);
}

static const tk_conn_handler handler = {.on_data = on_data, .on_eof = on_eof, .on_close = on_close};

static void send_ping(chat_client *cl)
{
    char line[80], ts[32];
    chat_fmt_rfc3339(chat_now_ms(), ts);
    int n = snprintf(line, sizeof(line), "{\"type\":\"ping\",\"timestamp\":\"%s\"}\n", ts);
    chat_send(cl, line, (size_t)n);
}

/* The client's next deadline: detection, ping, or idle close. */
static uint64_t client_deadline(chat_client *cl)
{
    const tk_chat_config *cfg = &cl->chat->cfg;
    if (cl->state == ST_NEW)
        return cl->last_in_ms + cfg->detect_ms;
    if (cl->mode == MODE_JSON && cfg->idle_timeout_ms)
        return cl->last_in_ms + (cl->pinged ? cfg->idle_timeout_ms : cfg->idle_timeout_ms / 2);
    if (cl->mode == MODE_TEXT && cfg->text_idle_timeout_ms)
        return cl->last_in_ms + cfg->text_idle_timeout_ms;
    return UINT64_MAX;
}

static void on_client_timer(tk_loop *loop, tk_timer *t)
{
    chat_client *cl = (chat_client *)((char *)t - offsetof(chat_client, timer));
    if (tk_conn_closing(cl->conn))
        return;
    uint64_t now = tk_loop_now(loop);
    if (now >= client_deadline(cl)) {
        if (cl->state == ST_NEW) {
            set_mode(cl, MODE_TEXT);
        } else if (cl->mode == MODE_JSON && !cl->pinged) {
            cl->pinged = 1;
            send_ping(cl);
        } else {
            chat_system(cl, "idle timeout: disconnected");
            chat_detach(cl, "idle");
            tk_conn_close_after_flush(cl->conn, TK_CLOSE_IDLE);
            return;
        }
    }
    arm_client_timer(cl);
}

/* Reads never touch the timer: it fires at the old deadline and re-arms
 * from the latest input time. */
static void arm_client_timer(chat_client *cl)
{
    uint64_t deadline = client_deadline(cl);
    if (deadline == UINT64_MAX) {
        tk_timer_stop(cl->chat->loop, &cl->timer);
        return;
    }
    uint64_t now = tk_loop_now(cl->chat->loop);
    (void)tk_timer_start(cl->chat->loop, &cl->timer, deadline > now ? deadline - now : 0);
}

static void chat_accept(void *svc, unsigned index, int fd, const tk_addr *peer)
{
    tk_chat *chat = svc;
    (void)tk_sock_apply(fd, &chat->cfg.sockopts);
    chat_client *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        close(fd);
        if (chat->server)
            tk_server_release(chat->server, index, peer);
        return;
    }
    int err = tk_conn_new(chat->loop, fd, &handler, &chat->limits, cl, &cl->conn);
    if (err < 0) {
        tk_warn("chat: cannot take a client: %s", strerror(-err));
        free(cl);
        if (chat->server)
            tk_server_release(chat->server, index, peer);
        return;
    }
    tk_conn_set_peer(cl->conn, peer);
    cl->chat = chat;
    cl->counted = 1;
    tk_line_init(&cl->dec, chat->cfg.max_line);
    tk_conn_set_metrics(cl->conn, chat->slot);
    cl->next = chat->clients;
    if (chat->clients)
        chat->clients->prev = cl;
    chat->clients = cl;
    chat->nclients++;
    chat->n_conns++;
    tk_metrics_conn_open(chat->slot);
    cl->last_in_ms = cl->tokens_ms = tk_loop_now(chat->loop);
    cl->tokens = chat->cfg.flood_burst;
    tk_timer_init(&cl->timer, on_client_timer);
    if (chat->cfg.mode == TK_CHAT_MODE_TEXT)
        set_mode(cl, MODE_TEXT);
    else if (chat->cfg.mode == TK_CHAT_MODE_JSON)
        set_mode(cl, MODE_JSON);
    arm_client_timer(cl);
    if (chat->server)
        (void)tk_conn_start_tls(cl->conn, tk_server_tls(chat->server), NULL);
}

/* ---- service ---- */

static void flush_room_cb(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    chat_room_flush(value);
}

static void on_commit(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    tk_chat *chat = (tk_chat *)((char *)d - offsetof(tk_chat, commit));
    if (chat->store)
        (void)chat_store_commit(chat->store);
}

static void on_prune(tk_loop *loop, tk_timer *t)
{
    tk_chat *chat = (tk_chat *)((char *)t - offsetof(tk_chat, prune));
    if (chat->store && chat->cfg.history_max_age_s) {
        int64_t before = chat_now_ms() - (int64_t)chat->cfg.history_max_age_s * 1000;
        (void)chat_store_prune_age(chat->store, before);
        (void)chat_store_commit(chat->store);
    }
    (void)tk_timer_start(loop, t, 60 * 1000);
}

static void chat_shutdown(void *svc, unsigned index)
{
    tk_chat *chat = svc;
    (void)index;
    chat->shutting_down = 1;
    tk_timer_stop(chat->loop, &chat->prune);
    /* Requests already received are answered first. */
    for (chat_client *cl = chat->clients; cl; cl = cl->next)
        if (can_read(cl))
            tk_conn_drain_input(cl->conn);
    chat_map_each(&chat->rooms, flush_room_cb, NULL);
    for (chat_client *cl = chat->clients; cl; cl = cl->next) {
        if (tk_conn_closing(cl->conn))
            continue;
        if (cl->mode != MODE_UNDECIDED)
            chat_system(cl, "server shutting down");
        chat_detach(cl, "server shutting down");
        tk_conn_close_after_flush(cl->conn, TK_CLOSE_SHUTDOWN);
    }
    chat_map_each(&chat->rooms, flush_room_cb, NULL);
    if (chat->store)
        (void)chat_store_commit(chat->store);
    if (chat->nclients == 0 && chat->server)
        tk_server_loop_done(chat->server, 0);
}

static void chat_abort(void *svc, unsigned index)
{
    tk_chat *chat = svc;
    (void)index;
    chat->shutting_down = 1;
    for (chat_client *cl = chat->clients; cl; cl = cl->next)
        tk_conn_close(cl->conn, TK_CLOSE_SHUTDOWN, 0);
}

static void chat_rejected(void *svc, unsigned index)
{
    tk_chat *chat = svc;
    (void)index;
    tk_metrics_conn_rejected(chat->slot);
}

static const tk_service_ops chat_ops = {.accept = chat_accept,
                                        .shutdown = chat_shutdown,
                                        .abort = chat_abort,
                                        .rejected = chat_rejected};

const tk_service_ops *tk_chat_ops(void)
{
    return &chat_ops;
}

const void *tk_chat_busy_message(const tk_chat *chat, size_t *len)
{
    *len = chat->busy_len;
    return chat->busy;
}

void tk_chat_set_server(tk_chat *chat, tk_server *s)
{
    chat->server = s;
}

tk_metrics *tk_chat_metrics(tk_chat *chat)
{
    return chat->metrics;
}

int tk_chat_new(const tk_chat_config *c, tk_loop *loop, tk_chat **out, char *err, size_t errcap)
{
    if (c->max_line < 16 || c->max_message == 0 || c->max_name < 5 || c->max_name > 32 ||
        c->history_page == 0 || c->kdf_log2_n < 10 || c->kdf_log2_n > 20) {
        snprintf(err, errcap, "invalid chat settings");
        return -EINVAL;
    }
    /* A receiver's queue must hold a few of the largest events (content is
     * at most doubled by JSON escaping), or a reader keeping up would be
     * dropped. */
    size_t largest = 2 * c->max_message + 1024;
    if (c->max_queue < 4 * largest) {
        snprintf(err, errcap,
                 "the output queue limit (%zu bytes) must be at least 4 times the "
                 "largest event (%zu bytes with this message limit)",
                 c->max_queue, largest);
        return -EINVAL;
    }
    err[0] = '\0';
    tk_chat *chat = calloc(1, sizeof(*chat));
    if (!chat)
        return -ENOMEM;
    chat->cfg = *c;
    chat->loop = loop;
    chat->batch_limit = c->max_queue / 4 < BATCH_FLUSH_BYTES ? c->max_queue / 4 : BATCH_FLUSH_BYTES;
    chat_map_init(&chat->users);
    chat_map_init(&chat->rooms);
    tk_defer_init(&chat->commit, on_commit);
    tk_defer_init(&chat->gc, on_gc);
    tk_timer_init(&chat->prune, on_prune);
    int rc = tk_metrics_new(1, &chat->metrics);
    if (rc < 0)
        goto fail;
    chat->slot = tk_metrics_slot_of(chat->metrics, 0);
    rc = chat_store_open(c->db_path, c->db_sync_full, &chat->store, err, errcap);
    if (rc < 0)
        goto fail;
    rc = chat_kdf_start(loop, c->kdf_log2_n, 32, &chat->kdf);
    if (rc < 0) {
        snprintf(err, errcap, "cannot start the password thread: %s", strerror(-rc));
        goto fail;
    }
    chat->lobby = room_new(chat, "lobby", "lobby");
    if (!chat->lobby) {
        rc = -ENOMEM;
        goto fail;
    }
    if (c->history_max_age_s)
        (void)tk_timer_start(loop, &chat->prune, 0);
    tk_conn_limits_init(&chat->limits);
    chat->limits.max_input = c->max_line + 1;
    chat->limits.high_water = c->max_queue;
    chat->limits.low_water = c->max_queue / 4;
    chat->limits.max_output = c->max_queue + QUEUE_HEADROOM + 4 * c->max_line;
    chat->limits.idle_timeout_ms = 0; /* the service keeps its own, with pings */
    chat->limits.stall_timeout_ms = c->stall_timeout_ms;
    if (c->mode == TK_CHAT_MODE_JSON)
        chat->busy_len = (size_t)snprintf((char *)chat->busy, sizeof(chat->busy),
                                          "{\"type\":\"error\",\"payload\":{\"status\":\"error\","
                                          "\"code\":\"busy\",\"message\":\"server busy\"}}\n");
    else
        chat->busy_len =
            (size_t)snprintf((char *)chat->busy, sizeof(chat->busy), "ERROR: server busy\n");
    *out = chat;
    return 0;
fail:
    if (rc == -ENOMEM && !err[0])
        snprintf(err, errcap, "out of memory");
    tk_chat_free(chat);
    return rc;
}

static void free_room_cb(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    chat_room *r = value;
    tk_defer_cancel(r->chat->loop, &r->flush);
    free(r->batch_json.p);
    free(r->batch_text.p);
    free(r->members);
    free(r);
}

void tk_chat_free(tk_chat *chat)
{
    if (!chat)
        return;
    /* Nothing of ours may run on the loop after this. */
    tk_defer_cancel(chat->loop, &chat->commit);
    tk_defer_cancel(chat->loop, &chat->gc);
    tk_timer_stop(chat->loop, &chat->prune);
    chat_kdf_stop(chat->kdf);
    chat_store_close(chat->store);
    chat_map_each(&chat->rooms, free_room_cb, NULL);
    chat_map_free(&chat->rooms);
    chat_map_free(&chat->users);
    tk_metrics_free(chat->metrics);
    free(chat);
}

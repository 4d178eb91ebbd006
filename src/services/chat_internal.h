/* Shared between the chat service's files; not part of the public API. */
#ifndef TK_CHAT_INTERNAL_H
#define TK_CHAT_INTERNAL_H

#include <stdint.h>

#include "chat_kdf.h"
#include "chat_store.h"
#include "tcpkit/chat.h"
#include "tcpkit/codec.h"
#include "tcpkit/conn.h"

#define CHAT_KEY_MAX  512 /* a folded name, NUL included */
#define CHAT_NAME_MAX 160 /* a name as typed, NUL included (32 chars x 4 + slack) */

/* A growable byte string. */
typedef struct {
    unsigned char *p;
    size_t len;
    size_t cap;
} chat_bytes;

/* Appends n bytes; 0 or -ENOMEM. */
int chat_bytes_add(chat_bytes *b, const void *p, size_t n);
/* Appends a NUL-terminated string. */
int chat_bytes_str(chat_bytes *b, const char *s);
/* Appends s[0..n) as a quoted JSON string. */
int chat_bytes_json(chat_bytes *b, const unsigned char *s, size_t n);
/* Empties the string, keeping at most keep bytes of capacity. */
void chat_bytes_reset(chat_bytes *b, size_t keep);

/* Wall-clock milliseconds since the epoch. */
int64_t chat_now_ms(void);
/* "2026-11-25T10:30:15.123Z" (25 bytes + NUL). */
void chat_fmt_rfc3339(int64_t ms, char out[32]);
/* "10:30:15". */
void chat_fmt_hms(int64_t ms, char out[16]);
/* "2026-11-25 10:30:15". */
void chat_fmt_datetime(int64_t ms, char out[32]);

typedef enum { MODE_UNDECIDED = 0, MODE_TEXT, MODE_JSON } chat_client_mode;

typedef enum {
    ST_NEW = 0,  /* auto mode: waiting for the first byte */
    ST_NAMING,   /* no name yet */
    ST_PASSWORD, /* text mode: a registered name was given, its password is next */
    ST_HASHING,  /* a password is being checked or hashed; input paused */
    ST_ACTIVE,   /* named and in a room */
    ST_GONE,     /* detached from rooms and names; the connection is ending */
} chat_client_state;

typedef struct chat_room chat_room;
typedef struct chat_client chat_client;

struct chat_client {
    chat_client *prev; /* every client, for shutdown */
    chat_client *next;
    tk_chat *chat;
    tk_conn *conn;
    chat_client_mode mode;
    chat_client_state state;
    tk_line_decoder dec;
    char name[CHAT_NAME_MAX];
    char key[CHAT_KEY_MAX];
    char pending[CHAT_NAME_MAX]; /* text mode: the name awaiting its password */
    int registered;
    chat_room *room;
    size_t room_index; /* position in room->members */
    double tokens;     /* flood bucket */
    uint64_t tokens_ms;
    uint64_t last_in_ms;
    int pinged;
    tk_timer timer; /* mode detection, idle and ping */
    chat_kdf_job *job;
    void *job_id; /* JSON: the id of the request waiting on the job */
    int bad_passwords;
    int counted; /* counted in the server's client limit */
};

struct chat_room {
    tk_chat *chat;
    char key[CHAT_KEY_MAX];
    char name[CHAT_NAME_MAX];
    chat_client **members;
    size_t nmembers;
    size_t cap;
    size_t ntext;          /* members in text mode (the rest are JSON) */
    chat_bytes batch_json; /* events of this turn, encoded once per mode */
    chat_bytes batch_text;
    uint64_t batch_events;
    uint32_t stored_since_prune; /* messages stored since the last prune */
    tk_defer flush;
    chat_room *gc_next;
};

/* A string-keyed hash table of pointers (names and rooms). */
typedef struct chat_map_entry chat_map_entry;
typedef struct {
    chat_map_entry **slots;
    size_t nslots;
    size_t count;
} chat_map;

void chat_map_init(chat_map *m);
void chat_map_free(chat_map *m);
/* The value under key, or NULL. */
void *chat_map_get(const chat_map *m, const char *key);
/* Adds key (copied); 0, -EEXIST or -ENOMEM. */
int chat_map_put(chat_map *m, const char *key, void *value);
/* Removes key if present. */
void chat_map_del(chat_map *m, const char *key);
/* Calls fn for every entry (the table must not change meanwhile). */
void chat_map_each(const chat_map *m, void (*fn)(const char *key, void *value, void *arg),
                   void *arg);

struct tk_chat {
    tk_chat_config cfg;
    tk_loop *loop;
    tk_server *server;
    tk_metrics *metrics;
    tk_metrics_slot *slot;
    tk_conn_limits limits;
    size_t batch_limit; /* a room batch is sent early at this size */
    chat_store *store;
    chat_kdf *kdf;
    chat_map users; /* name key -> chat_client */
    chat_map rooms; /* room key -> chat_room */
    chat_room *lobby;
    chat_client *clients;
    size_t nclients;
    int shutting_down;
    tk_defer commit;
    tk_defer gc; /* frees empty rooms */
    tk_timer prune;
    unsigned char busy[160];
    size_t busy_len;
    /* STATS */
    uint64_t n_messages;
    uint64_t n_private;
    uint64_t n_deliveries;
    uint64_t n_drops;
    uint64_t n_flood;
    uint64_t n_conns;
};

/* Executes one parsed request for a client (chat_cmd.c). */
void chat_execute(chat_client *cl, tk_chat_req *req);

/* Sends the name prompt (text mode). */
void chat_prompt_name(chat_client *cl);

/* Sends bytes to one client directly (responses, private events), keeping
 * text-mode output in order with its room's batched events; drops the
 * client if its queue is over the limit. */
void chat_send(chat_client *cl, const void *p, size_t n);

/* A JSON response {"type":type,"id":…,"payload":payload} (payload is stolen). */
void chat_json_reply(chat_client *cl, const char *type, void *id, void *payload);
/* A JSON error response. */
void chat_json_error(chat_client *cl, void *id, const char *code, const char *message);
/* Text mode: "ERROR: message\n". */
void chat_text_error(chat_client *cl, const char *message);
/* Text mode: "*** " + formatted line. */
void chat_text_notice(chat_client *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Takes a name (validated and free) and enters the lobby. */
void chat_enter(chat_client *cl, const char *name, int registered);
/* Moves the client to another room (created when new); 0, -ENOSPC. */
int chat_move(chat_client *cl, const char *name, const char *key, const char *why);
/* The room with this key, or NULL. */
chat_room *chat_room_find(tk_chat *chat, const char *key);
/* Broadcasts a room message from cl (stored, then batched). */
int chat_say(chat_client *cl, const unsigned char *text, size_t n);
/* Sends a private message; 0 or -ENOENT. */
int chat_private(chat_client *cl, chat_client *to, const unsigned char *text, size_t n);
/* Renames an active client. */
void chat_rename(chat_client *cl, const char *name, const char *key);
/* Pushes a system event to one client. */
void chat_system(chat_client *cl, const char *text);
/* Queues an event for every member of a room (encoded once per mode). */
void chat_room_event(chat_room *r, const char *type, const char *from, const unsigned char *content,
                     size_t clen, int64_t ts);
/* Sends the pending batch of a room to its members now. */
void chat_room_flush(chat_room *r);
/* Ends a client's session: leaves its room with a reason, frees its name. */
void chat_detach(chat_client *cl, const char *why);
/* Room members' names, sorted by key, into a JSON array or a text list. */
void *chat_room_users_json(chat_room *r);
void chat_room_users_text(chat_room *r, chat_bytes *out);

#endif

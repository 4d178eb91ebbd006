/* The chat service: users with unique names, rooms, private messages, SQLite
 * history and password accounts, with a text front end (people at nc or
 * telnet) and a JSON-lines front end (programs) over one chat core. All chat
 * state lives on one event loop; password hashing runs on a helper thread.
 * It plugs into tk_server; it parses no command line and never exits. */
#ifndef TCPKIT_CHAT_H
#define TCPKIT_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/loop.h"
#include "tcpkit/metrics.h"
#include "tcpkit/server.h"
#include "tcpkit/sock.h"

typedef enum {
    TK_CHAT_MODE_AUTO = 0, /* the first byte picks: '{' JSON, else text */
    TK_CHAT_MODE_TEXT,
    TK_CHAT_MODE_JSON,
} tk_chat_mode;

typedef struct {
    tk_chat_mode mode;
    uint32_t detect_ms;            /* auto mode: wait this long for a first byte (300) */
    const char *db_path;           /* SQLite file; NULL or ":memory:" keeps nothing */
    int db_sync_full;              /* fsync every commit (default: WAL "normal") */
    uint32_t history_keep;         /* messages kept per room (10000; 0 = all) */
    uint32_t history_max_age_s;    /* older messages are deleted (0 = never) */
    uint32_t history_page;         /* most messages one request returns (200) */
    const char *banner;            /* text mode greeting line, or NULL for the default */
    unsigned max_rooms;            /* rooms existing at once (1000) */
    unsigned max_name;             /* name and room length in code points (32) */
    size_t max_message;            /* content bytes (4096) */
    size_t max_line;               /* request line bytes (16384) */
    size_t max_queue;              /* unsent output before a client is dropped (1 MiB) */
    double flood_rate;             /* request lines per second per client (10; 0 = off) */
    double flood_burst;            /* bucket size (20) */
    uint32_t idle_timeout_ms;      /* JSON clients: ping at half, close at full (300 s) */
    uint32_t text_idle_timeout_ms; /* text clients: close after this silence (0 = off) */
    uint32_t stall_timeout_ms;     /* output with no progress: close (30 s) */
    unsigned kdf_log2_n;           /* scrypt cost for new passwords (15) */
    tk_sockopts sockopts;          /* applied to each client socket */
} tk_chat_config;

typedef struct tk_chat tk_chat;

/* Fills the documented defaults. */
void tk_chat_config_init(tk_chat_config *c);

/* Opens the history database and starts the hashing thread; the service runs
 * on loop (which must be loop 0 of the server it is given). Returns 0 or a
 * negative errno with a message in err. Strings in c must outlive the
 * service. */
int tk_chat_new(const tk_chat_config *c, tk_loop *loop, tk_chat **out, char *err, size_t errcap);

/* The callbacks to pass to tk_server_open() (with cfg.loops = 1). */
const tk_service_ops *tk_chat_ops(void);

/* Tells the service which server feeds it; call before the loops start. */
void tk_chat_set_server(tk_chat *chat, tk_server *s);

/* The refusal sent to a client over the client limit. */
const void *tk_chat_busy_message(const tk_chat *chat, size_t *len);

/* Connection and byte counters. */
tk_metrics *tk_chat_metrics(tk_chat *chat);

/* Commits history, stops the hashing thread and frees the service; its loop
 * must have stopped. */
void tk_chat_free(tk_chat *chat);

/* ---- Parsers, exposed for tests and fuzzing (pure, no I/O). ---- */

/* Why a name or room name is refused (0 when it is fine). */
#define TK_CHAT_NAME_EMPTY    (-1)
#define TK_CHAT_NAME_LONG     (-2)
#define TK_CHAT_NAME_UTF8     (-3)
#define TK_CHAT_NAME_CHAR     (-4) /* whitespace, control or format character */
#define TK_CHAT_NAME_START    (-5) /* starts with '/', '{' or '#' */
#define TK_CHAT_NAME_RESERVED (-6)

/* Checks a user or room name; 0 or a TK_CHAT_NAME_* code. */
int tk_chat_name_check(const unsigned char *s, size_t n, unsigned max_chars);

/* The key under which a name is unique (NFKC case folding: case,
 * composed/decomposed accents and fullwidth forms do not make a new name);
 * writes at most cap bytes with a terminating NUL. Returns the key length,
 * -ENOBUFS, or -EINVAL for invalid UTF-8. */
int tk_chat_name_key(const unsigned char *s, size_t n, char *key, size_t cap);

/* True when s[0..n) is acceptable message content: valid UTF-8 and no
 * control character but TAB. */
int tk_chat_content_ok(const unsigned char *s, size_t n);

typedef enum {
    TK_CHAT_CMD_NONE = 0, /* empty line: ignored */
    TK_CHAT_CMD_SAY,      /* a message to the current room */
    TK_CHAT_CMD_JOIN,
    TK_CHAT_CMD_LEAVE,
    TK_CHAT_CMD_ROOMS,
    TK_CHAT_CMD_USERS,
    TK_CHAT_CMD_MSG,
    TK_CHAT_CMD_HISTORY,
    TK_CHAT_CMD_NICK,
    TK_CHAT_CMD_REGISTER,
    TK_CHAT_CMD_TIME,
    TK_CHAT_CMD_STATS,
    TK_CHAT_CMD_HELP,
    TK_CHAT_CMD_QUIT,
    TK_CHAT_CMD_AUTH,    /* JSON only */
    TK_CHAT_CMD_ECHO,    /* JSON only */
    TK_CHAT_CMD_PING,    /* JSON only */
    TK_CHAT_CMD_PONG,    /* JSON only */
    TK_CHAT_CMD_UNKNOWN, /* text: an unknown /word */
    TK_CHAT_CMD_BAD,     /* text: a known command with missing or bad arguments */
} tk_chat_cmd;

/* A parsed request. Strings point into the input line (text) or into the
 * decoded JSON (valid until tk_chat_json_free); absent ones are NULL. */
typedef struct {
    tk_chat_cmd cmd;
    const unsigned char *name; /* ROOM, NAME; the user for /msg and PRIVATE */
    size_t name_len;
    const unsigned char *text; /* message content, ECHO data */
    size_t text_len;
    const unsigned char *password; /* REGISTER/AUTH (text: /register PASS) */
    size_t password_len;
    long limit;      /* /history N, LIST_MESSAGES limit; -1 when absent */
    void *json_root; /* JSON: owns the strings */
    void *json_id;   /* JSON: the request's id, or NULL */
} tk_chat_req;

/* Parses one text-mode line (without its newline). Never fails: unknown
 * commands are TK_CHAT_CMD_UNKNOWN, bad arguments TK_CHAT_CMD_BAD. */
void tk_chat_text_parse(const unsigned char *line, size_t n, tk_chat_req *out);

/* Parses one JSON-mode line. Returns 0, or a negative code with an error
 * code name in *code ("bad_json", "bad_request", "unknown_type") and a human
 * message in msg; *out may then still carry the id. Call tk_chat_json_free
 * in both cases. */
int tk_chat_json_parse(const unsigned char *line, size_t n, tk_chat_req *out, const char **code,
                       char *msg, size_t msgcap);

/* Releases what tk_chat_json_parse() allocated. */
void tk_chat_json_free(tk_chat_req *r);

#endif

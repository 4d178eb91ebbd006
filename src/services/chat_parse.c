/* Chat request parsers for both front ends: slash commands and messages in
 * text mode, {"type","payload","id"} objects in JSON mode. No I/O. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tcpkit/chat.h"
#include "tcpkit/codec.h"

typedef struct {
    const char *word;
    tk_chat_cmd cmd;
} text_word;

static const text_word text_words[] = {
    {"join", TK_CHAT_CMD_JOIN},   {"leave", TK_CHAT_CMD_LEAVE},
    {"rooms", TK_CHAT_CMD_ROOMS}, {"users", TK_CHAT_CMD_USERS},
    {"msg", TK_CHAT_CMD_MSG},     {"history", TK_CHAT_CMD_HISTORY},
    {"nick", TK_CHAT_CMD_NICK},   {"register", TK_CHAT_CMD_REGISTER},
    {"time", TK_CHAT_CMD_TIME},   {"stats", TK_CHAT_CMD_STATS},
    {"help", TK_CHAT_CMD_HELP},   {"quit", TK_CHAT_CMD_QUIT},
};

/* The next space-separated word of s[*pos..n); advances *pos past it and the
 * spaces after it. Returns its length (0 at the end). */
static size_t next_word(const unsigned char *s, size_t n, size_t *pos, const unsigned char **w)
{
    size_t i = *pos;
    while (i < n && s[i] == ' ')
        i++;
    size_t start = i;
    while (i < n && s[i] != ' ')
        i++;
    *w = s + start;
    size_t len = i - start;
    while (i < n && s[i] == ' ')
        i++;
    *pos = i;
    return len;
}

static int all_spaces(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

/* A decimal count in [1, 1000000], or -1. */
static long parse_count(const unsigned char *s, size_t n)
{
    if (n == 0 || n > 7)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= 1000000 ? v : -1;
}

void tk_chat_text_parse(const unsigned char *line, size_t n, tk_chat_req *out)
{
    memset(out, 0, sizeof(*out));
    out->limit = -1;
    if (all_spaces(line, n)) {
        out->cmd = TK_CHAT_CMD_NONE;
        return;
    }
    if (line[0] != '/' || (n > 1 && line[1] == '/')) {
        size_t skip = line[0] == '/' ? 1 : 0; /* "//x" says "/x" */
        out->cmd = TK_CHAT_CMD_SAY;
        out->text = line + skip;
        out->text_len = n - skip;
        return;
    }
    size_t pos = 1;
    const unsigned char *w;
    size_t wlen = 0;
    while (pos + wlen < n && line[pos + wlen] != ' ')
        wlen++;
    w = line + pos;
    pos += wlen;
    while (pos < n && line[pos] == ' ')
        pos++;
    out->cmd = TK_CHAT_CMD_UNKNOWN;
    out->name = w;
    out->name_len = wlen;
    for (size_t i = 0; i < sizeof(text_words) / sizeof(text_words[0]); i++) {
        if (strlen(text_words[i].word) == wlen &&
            strncasecmp(text_words[i].word, (const char *)w, wlen) == 0) {
            out->cmd = text_words[i].cmd;
            break;
        }
    }
    if (out->cmd == TK_CHAT_CMD_UNKNOWN)
        return;
    out->name = NULL;
    out->name_len = 0;
    const unsigned char *arg;
    size_t alen;
    switch (out->cmd) {
    case TK_CHAT_CMD_JOIN:
    case TK_CHAT_CMD_NICK:
        alen = next_word(line, n, &pos, &arg);
        if (alen == 0 || pos != n) {
            out->cmd = TK_CHAT_CMD_BAD;
            return;
        }
        out->name = arg;
        out->name_len = alen;
        return;
    case TK_CHAT_CMD_USERS:
        alen = next_word(line, n, &pos, &arg);
        if (pos != n) {
            out->cmd = TK_CHAT_CMD_BAD;
            return;
        }
        if (alen) {
            out->name = arg;
            out->name_len = alen;
        }
        return;
    case TK_CHAT_CMD_MSG:
        alen = next_word(line, n, &pos, &arg);
        if (alen == 0 || pos == n) {
            out->cmd = TK_CHAT_CMD_BAD;
            return;
        }
        out->name = arg;
        out->name_len = alen;
        out->text = line + pos;
        out->text_len = n - pos;
        return;
    case TK_CHAT_CMD_HISTORY:
        alen = next_word(line, n, &pos, &arg);
        if (pos != n || (alen && (out->limit = parse_count(arg, alen)) < 0))
            out->cmd = TK_CHAT_CMD_BAD;
        return;
    case TK_CHAT_CMD_REGISTER:
        /* The password is the rest of the line, spaces included. */
        if (pos == n) {
            out->cmd = TK_CHAT_CMD_BAD;
            return;
        }
        out->password = line + pos;
        out->password_len = n - pos;
        return;
    default:
        /* Commands without arguments ignore trailing words. */
        return;
    }
}

/* ---- JSON ---- */

typedef enum { F_NONE = 0, F_REQ, F_OPT } need;

typedef struct {
    const char *type;
    tk_chat_cmd cmd;
    const char *name_key; /* payload field that fills name */
    need name;
    const char *text_key; /* payload field that fills text */
    need text;
    need password;
    const char *data_alias; /* what a top-level "data" string stands for */
} json_cmd;

static const json_cmd json_cmds[] = {
    {"REGISTER", TK_CHAT_CMD_REGISTER, "name", F_REQ, NULL, F_NONE, F_OPT, "name"},
    {"AUTH", TK_CHAT_CMD_AUTH, "name", F_REQ, NULL, F_NONE, F_REQ, NULL},
    {"MESSAGE", TK_CHAT_CMD_SAY, NULL, F_NONE, "content", F_REQ, F_NONE, "content"},
    {"PRIVATE", TK_CHAT_CMD_MSG, "to", F_REQ, "content", F_REQ, F_NONE, NULL},
    {"JOIN", TK_CHAT_CMD_JOIN, "room", F_REQ, NULL, F_NONE, F_NONE, "room"},
    {"LEAVE", TK_CHAT_CMD_LEAVE, NULL, F_NONE, NULL, F_NONE, F_NONE, NULL},
    {"NICK", TK_CHAT_CMD_NICK, "name", F_REQ, NULL, F_NONE, F_NONE, "name"},
    {"LIST_USERS", TK_CHAT_CMD_USERS, "room", F_OPT, NULL, F_NONE, F_NONE, NULL},
    {"LIST_ROOMS", TK_CHAT_CMD_ROOMS, NULL, F_NONE, NULL, F_NONE, F_NONE, NULL},
    {"LIST_MESSAGES", TK_CHAT_CMD_HISTORY, "room", F_OPT, NULL, F_NONE, F_NONE, NULL},
    {"ECHO", TK_CHAT_CMD_ECHO, NULL, F_NONE, "data", F_REQ, F_NONE, "data"},
    {"TIME", TK_CHAT_CMD_TIME, NULL, F_NONE, NULL, F_NONE, F_NONE, NULL},
    {"STATS", TK_CHAT_CMD_STATS, NULL, F_NONE, NULL, F_NONE, F_NONE, NULL},
    {"PING", TK_CHAT_CMD_PING, NULL, F_NONE, NULL, F_NONE, F_NONE, NULL},
    {"PONG", TK_CHAT_CMD_PONG, NULL, F_NONE, NULL, F_NONE, F_NONE, NULL},
    {"QUIT", TK_CHAT_CMD_QUIT, NULL, F_NONE, NULL, F_NONE, F_NONE, NULL},
};

/* Reads payload.key as a string into s and n. 0 when fine (or absent and not
 * required), -1 after writing the complaint into msg. */
static int string_field(json_t *payload, const char *key, need nd, const unsigned char **s,
                        size_t *n, char *msg, size_t cap)
{
    json_t *v = payload ? json_object_get(payload, key) : NULL;
    if (!v) {
        if (nd == F_REQ) {
            snprintf(msg, cap, "payload.%s is required", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v)) {
        snprintf(msg, cap, "payload.%s must be a string", key);
        return -1;
    }
    *s = (const unsigned char *)json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

int tk_chat_json_parse(const unsigned char *line, size_t n, tk_chat_req *out, const char **code,
                       char *msg, size_t msgcap)
{
    memset(out, 0, sizeof(*out));
    out->limit = -1;
    tk_json_request jr;
    int rc = tk_json_decode_request(line, n, &jr, msg, msgcap);
    if (rc < 0) {
        *code = rc == TK_JSON_BAD_JSON ? "bad_json" : "bad_request";
        return -EINVAL;
    }
    out->json_root = jr.root;
    out->json_id = jr.id;
    const json_cmd *jc = NULL;
    /* Matched on the whole string: "PING\u0000x" is not PING. */
    size_t tlen = json_string_length(json_object_get(jr.root, "type"));
    for (size_t i = 0; tlen == strlen(jr.type) && i < sizeof(json_cmds) / sizeof(json_cmds[0]);
         i++) {
        if (strcmp(json_cmds[i].type, jr.type) == 0) {
            jc = &json_cmds[i];
            break;
        }
    }
    if (!jc) {
        /* Quote at most 64 bytes, cut at a character boundary. */
        size_t q = strlen(jr.type);
        if (q > 64) {
            q = 64;
            while (q > 0 && ((unsigned char)jr.type[q] & 0xC0) == 0x80)
                q--;
        }
        *code = "unknown_type";
        snprintf(msg, msgcap, "unknown type \"%.*s\"", (int)q, jr.type);
        return -EINVAL;
    }
    out->cmd = jc->cmd;
    json_t *payload = jr.payload;
    json_t *alias = NULL;
    json_t *data = json_object_get(jr.root, "data");
    if (!payload && jc->data_alias && json_is_string(data)) {
        /* The seed's {"type":..., "data":"..."} requests. */
        alias = json_object();
        json_object_set(alias, jc->data_alias, data);
        payload = alias;
    }
    *code = "bad_request";
    int bad = 0;
    if (jc->name != F_NONE)
        bad |=
            string_field(payload, jc->name_key, jc->name, &out->name, &out->name_len, msg, msgcap);
    if (!bad && jc->text != F_NONE)
        bad |=
            string_field(payload, jc->text_key, jc->text, &out->text, &out->text_len, msg, msgcap);
    if (!bad && jc->password != F_NONE)
        bad |= string_field(payload, "password", jc->password, &out->password, &out->password_len,
                            msg, msgcap);
    if (!bad && jc->cmd == TK_CHAT_CMD_HISTORY && payload) {
        json_t *lim = json_object_get(payload, "limit");
        if (lim) {
            json_int_t v = json_is_integer(lim) ? json_integer_value(lim) : 0;
            if (v < 1 || v > 1000000) {
                snprintf(msg, msgcap, "payload.limit must be an integer from 1 to 1000000");
                bad = -1;
            } else {
                out->limit = (long)v;
            }
        }
    }
    if (alias) {
        /* The aliased strings belong to root's "data" value: still valid. */
        json_decref(alias);
    }
    return bad ? -EINVAL : 0;
}

void tk_chat_json_free(tk_chat_req *r)
{
    if (r->json_root)
        json_decref((json_t *)r->json_root);
    r->json_root = NULL;
    r->json_id = NULL;
}

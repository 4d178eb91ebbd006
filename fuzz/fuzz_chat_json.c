/* Fuzzes the chat server's JSON-mode parser: tk_chat_json_parse and
 * tk_chat_json_free on every input (docs/PROTOCOL.md, "Chat", JSON mode).
 *
 * Invariants:
 * - failure: the code is "bad_json", "bad_request" or "unknown_type" and the
 *   message a non-empty C string within msgcap;
 * - success: a real command (not NONE, UNKNOWN or BAD), the root is an object
 *   whose "type" is exactly the documented name of that command; every string
 *   field points into a string value of the decoded JSON; the id is the
 *   root's "id"; commands that need a field carry it;
 * - free releases everything (LeakSanitizer) also after a failure, and the
 *   result is deterministic. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/chat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
    const char *type;
    tk_chat_cmd cmd;
} types[] = {
    {"REGISTER", TK_CHAT_CMD_REGISTER}, {"AUTH", TK_CHAT_CMD_AUTH},
    {"MESSAGE", TK_CHAT_CMD_SAY},       {"PRIVATE", TK_CHAT_CMD_MSG},
    {"JOIN", TK_CHAT_CMD_JOIN},         {"LEAVE", TK_CHAT_CMD_LEAVE},
    {"NICK", TK_CHAT_CMD_NICK},         {"LIST_USERS", TK_CHAT_CMD_USERS},
    {"LIST_ROOMS", TK_CHAT_CMD_ROOMS},  {"LIST_MESSAGES", TK_CHAT_CMD_HISTORY},
    {"ECHO", TK_CHAT_CMD_ECHO},         {"TIME", TK_CHAT_CMD_TIME},
    {"STATS", TK_CHAT_CMD_STATS},       {"PING", TK_CHAT_CMD_PING},
    {"PONG", TK_CHAT_CMD_PONG},         {"QUIT", TK_CHAT_CMD_QUIT},
};

/* True if [p, p+len) lies inside the bytes of some string value in v. */
static int in_json_string(const json_t *v, const unsigned char *p, size_t len)
{
    if (json_is_string(v)) {
        const unsigned char *s = (const unsigned char *)json_string_value(v);
        size_t n = json_string_length(v);
        return p >= s && p <= s + n && len <= (size_t)(s + n - p);
    }
    if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            if (in_json_string(val, p, len))
                return 1;
        }
        return 0;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *val;
        json_array_foreach(v, i, val)
        {
            if (in_json_string(val, p, len))
                return 1;
        }
    }
    return 0;
}

static int field_ok(const json_t *root, const unsigned char *p, size_t len)
{
    return !p || in_json_string(root, p, len);
}

static int parse(const uint8_t *data, size_t size, tk_chat_req *r, const char **code, char *msg,
                 size_t cap)
{
    memset(r, 0x5A, sizeof(*r));
    *code = NULL;
    memset(msg, 'x', cap);
    return tk_chat_json_parse(data, size, r, code, msg, cap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy so reads past the end are caught by ASan. */
    unsigned char *s = malloc(size ? size : 1);
    if (!s)
        return 0;
    if (size)
        memcpy(s, data, size);

    tk_chat_req r;
    const char *code;
    char msg[128];
    int rc = parse(s, size, &r, &code, msg, sizeof(msg));
    if (rc != 0) {
        if (rc > 0 || !code)
            abort();
        if (strcmp(code, "bad_json") != 0 && strcmp(code, "bad_request") != 0 &&
            strcmp(code, "unknown_type") != 0)
            abort();
        if (!memchr(msg, '\0', sizeof(msg)) || msg[0] == '\0')
            abort(); /* a non-empty C string within msgcap */
        if (r.json_id && r.json_root && r.json_id != json_object_get(r.json_root, "id"))
            abort();
        tk_chat_json_free(&r);
    } else {
        json_t *root = r.json_root;
        if (!json_is_object(root))
            abort();
        if (r.cmd == TK_CHAT_CMD_NONE || r.cmd == TK_CHAT_CMD_UNKNOWN || r.cmd == TK_CHAT_CMD_BAD ||
            r.cmd == TK_CHAT_CMD_HELP)
            abort();
        const char *type = json_string_value(json_object_get(root, "type"));
        if (!type)
            abort();
        size_t k;
        for (k = 0; k < sizeof(types) / sizeof(types[0]); k++)
            if (strcmp(types[k].type, type) == 0)
                break;
        if (k == sizeof(types) / sizeof(types[0]) || types[k].cmd != r.cmd)
            abort(); /* only documented types, matched exactly */
        if (!field_ok(root, r.name, r.name_len) || !field_ok(root, r.text, r.text_len) ||
            !field_ok(root, r.password, r.password_len))
            abort();
        if (r.json_id != json_object_get(root, "id"))
            abort();
        switch (r.cmd) {
        case TK_CHAT_CMD_REGISTER:
        case TK_CHAT_CMD_JOIN:
        case TK_CHAT_CMD_NICK:
            if (!r.name)
                abort();
            break;
        case TK_CHAT_CMD_AUTH:
            if (!r.name || !r.password)
                abort();
            break;
        case TK_CHAT_CMD_SAY:
            if (!r.text)
                abort();
            break;
        case TK_CHAT_CMD_MSG:
            if (!r.name || !r.text)
                abort();
            break;
        case TK_CHAT_CMD_ECHO:
            if (!r.text)
                abort();
            break;
        default: break;
        }
        if (r.cmd != TK_CHAT_CMD_HISTORY && r.limit != -1)
            abort();

        /* deterministic */
        tk_chat_req again;
        const char *code2;
        char msg2[128];
        if (parse(s, size, &again, &code2, msg2, sizeof(msg2)) != 0 || again.cmd != r.cmd ||
            again.name_len != r.name_len || again.text_len != r.text_len ||
            again.password_len != r.password_len || again.limit != r.limit ||
            (again.name && memcmp(again.name, r.name, r.name_len) != 0) ||
            (again.text && memcmp(again.text, r.text, r.text_len) != 0))
            abort();
        tk_chat_json_free(&again);
        tk_chat_json_free(&r);
    }

    /* A tiny message buffer must still get a terminated (possibly truncated)
     * message. */
    char tiny[4];
    rc = parse(s, size, &r, &code, tiny, sizeof(tiny));
    if (rc != 0 && !memchr(tiny, '\0', sizeof(tiny)))
        abort();
    tk_chat_json_free(&r);
    free(s);
    return 0;
}

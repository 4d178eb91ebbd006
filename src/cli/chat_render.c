/* The text side of `tcpkit chat`: slash commands to JSON requests, server
 * lines to readable text. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli/chat_render.h"

const char chat_help_text[] =
    "*** commands:\n"
    "***   /join ROOM        enter ROOM (created if new)\n"
    "***   /leave            back to lobby\n"
    "***   /rooms            list the rooms\n"
    "***   /users [ROOM]     who is in ROOM (default: yours)\n"
    "***   /msg NAME TEXT    private message to NAME\n"
    "***   /history [N]      the last N messages of your room (default 20)\n"
    "***   /nick NAME        change your name\n"
    "***   /time             the server's clock\n"
    "***   /stats            the server's counters\n"
    "***   /quit             leave the chat (Ctrl-D too)\n"
    "***   /help             this list\n"
    "*** other lines are messages to your room; start one with // to send a '/'.\n";

/* Writes an error message into err. */
static chat_input fail(char *err, size_t errcap, const char *msg)
{
    snprintf(err, errcap, "%s", msg);
    return CHAT_IN_ERROR;
}

/* Stores req in *out, or reports text that jansson refused (not UTF-8). */
static chat_input built(json_t *req, json_t **out, char *err, size_t errcap)
{
    if (!req)
        return fail(err, errcap, "the line is not valid UTF-8");
    *out = req;
    return CHAT_IN_REQUEST;
}

/* Moves *p past spaces and tabs. */
static void skip_blanks(const char **p, const char *end)
{
    while (*p < end && (**p == ' ' || **p == '\t'))
        (*p)++;
}

/* Takes the next blank-separated word from *p; returns 0 when there is none. */
static int next_word(const char **p, const char *end, const char **w, size_t *wlen)
{
    skip_blanks(p, end);
    *w = *p;
    while (*p < end && **p != ' ' && **p != '\t')
        (*p)++;
    *wlen = (size_t)(*p - *w);
    return *wlen > 0;
}

/* True when the command word w[0..n) is name (case-insensitive). */
static int is_cmd(const char *w, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(w, name, n) == 0;
}

/* A request with no payload. */
static json_t *bare(const char *type)
{
    return json_pack("{s:s}", "type", type);
}

/* Slash command, "//" escape or plain message to a request. */
chat_input chat_parse_input(const char *line, size_t len, json_t **req, char *err, size_t errcap)
{
    *req = NULL;
    if (len == 0)
        return CHAT_IN_NONE;
    if (line[0] != '/' || (len > 1 && line[1] == '/')) {
        size_t skip = line[0] == '/' ? 1 : 0; /* "//x" sends "/x" */
        return built(json_pack("{s:s,s:{s:s%}}", "type", "MESSAGE", "payload", "content",
                               line + skip, len - skip),
                     req, err, errcap);
    }
    const char *p = line + 1, *end = line + len, *cmd, *a, *b;
    size_t clen, alen, blen;
    if (!next_word(&p, end, &cmd, &clen) || cmd != line + 1)
        return fail(err, errcap, "a command name must follow '/' (try /help)");
    int has_a = next_word(&p, end, &a, &alen);
    const char *rest = p;
    int has_b = next_word(&p, end, &b, &blen);

    if (is_cmd(cmd, clen, "msg")) {
        if (!has_a || !has_b)
            return fail(err, errcap, "usage: /msg NAME TEXT");
        skip_blanks(&rest, end);
        return built(json_pack("{s:s,s:{s:s%,s:s%}}", "type", "PRIVATE", "payload", "to", a, alen,
                               "content", rest, (size_t)(end - rest)),
                     req, err, errcap);
    }
    if (has_b)
        return fail(err, errcap, "too many arguments (try /help)");
    if (is_cmd(cmd, clen, "join") || is_cmd(cmd, clen, "nick")) {
        int join = is_cmd(cmd, clen, "join");
        if (!has_a)
            return fail(err, errcap, join ? "usage: /join ROOM" : "usage: /nick NAME");
        return built(json_pack("{s:s,s:{s:s%}}", "type", join ? "JOIN" : "NICK", "payload",
                               join ? "room" : "name", a, alen),
                     req, err, errcap);
    }
    if (is_cmd(cmd, clen, "users")) {
        if (!has_a)
            return built(bare("LIST_USERS"), req, err, errcap);
        return built(json_pack("{s:s,s:{s:s%}}", "type", "LIST_USERS", "payload", "room", a, alen),
                     req, err, errcap);
    }
    if (is_cmd(cmd, clen, "history")) {
        if (!has_a)
            return built(bare("LIST_MESSAGES"), req, err, errcap);
        char num[16];
        char *stop;
        if (alen >= sizeof(num) || a[0] < '0' || a[0] > '9')
            return fail(err, errcap, "usage: /history [N] (N a positive number)");
        memcpy(num, a, alen);
        num[alen] = '\0';
        unsigned long n = strtoul(num, &stop, 10);
        if (*stop || n == 0 || n > 1000000)
            return fail(err, errcap, "usage: /history [N] (N a positive number)");
        return built(
            json_pack("{s:s,s:{s:I}}", "type", "LIST_MESSAGES", "payload", "limit", (json_int_t)n),
            req, err, errcap);
    }
    static const struct {
        const char *cmd, *type;
    } plain[] = {
        {"leave", "LEAVE"}, {"rooms", "LIST_ROOMS"}, {"time", "TIME"},
        {"stats", "STATS"}, {"quit", "QUIT"},        {"help", NULL},
    };
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        if (!is_cmd(cmd, clen, plain[i].cmd))
            continue;
        if (has_a) {
            snprintf(err, errcap, "/%s takes no argument", plain[i].cmd);
            return CHAT_IN_ERROR;
        }
        return plain[i].type ? built(bare(plain[i].type), req, err, errcap) : CHAT_IN_HELP;
    }
    snprintf(err, errcap, "unknown command /%.*s (try /help)", (int)(clen > 32 ? 32 : clen), cmd);
    return CHAT_IN_ERROR;
}

/* The "type" member, or "". */
const char *chat_type(const json_t *obj)
{
    const char *t = json_string_value(json_object_get(obj, "type"));
    return t ? t : "";
}

/* Answers are "error" objects or carry payload.status; events do not. */
int chat_is_reply(const json_t *obj)
{
    if (strcmp(chat_type(obj), "error") == 0)
        return 1;
    json_t *payload = json_object_get(obj, "payload");
    return json_is_object(payload) && json_object_get(payload, "status") != NULL;
}

/* A string member of o, or "" when absent or not a string. */
static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Writes s with control characters (C0, DEL, C1) replaced by '?', so a
 * server cannot send escape sequences to the terminal. */
static void put_clean(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
            fputc('?', out);
        } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            fputc('?', out); /* U+0080..U+009F */
            p++;
        } else {
            fputc(*p, out);
        }
    }
}

/* put_clean into a fixed buffer, whole characters only. */
void chat_clean_copy(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    if (cap == 0)
        return;
    for (const unsigned char *p = (const unsigned char *)src; *p;) {
        /* Bytes of this character: its lead byte's count, but only as far
         * as continuation bytes go. A lead byte followed by anything else
         * (an ESC, say, from a line that is not UTF-8) stands alone, so the
         * next byte is checked as a character of its own. */
        size_t n = 1;
        if ((*p & 0xc0) == 0xc0)
            while (n < 4 && (*p & (0x80u >> n)) && (p[n] & 0xc0) == 0x80)
                n++;
        if (o + n >= cap)
            break; /* never cut a character in half */
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f ||
            (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)) {
            dst[o++] = '?';
        } else {
            memcpy(dst + o, p, n);
            o += n;
        }
        p += n;
    }
    dst[o] = '\0';
}

/* RFC 3339 UTC to local time via timegm and localtime_r. */
void chat_local_time(const char *ts, const char *fmt, char *buf, size_t cap)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int y, mo, d, h, mi, s, used = 0;
    if (sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &used) == 6 && used) {
        tm.tm_year = y - 1900;
        tm.tm_mon = mo - 1;
        tm.tm_mday = d;
        tm.tm_hour = h;
        tm.tm_min = mi;
        tm.tm_sec = s;
        time_t t = timegm(&tm);
        struct tm local;
        if (t != (time_t)-1 && localtime_r(&t, &local) && strftime(buf, cap, fmt, &local) > 0)
            return;
    }
    snprintf(buf, cap, "%s", ts);
}

/* Writes "[HH:MM:SS] " for an event's timestamp (the current time without one). */
static void put_time(FILE *out, const json_t *obj)
{
    char buf[64];
    const char *ts = json_string_value(json_object_get(obj, "timestamp"));
    if (ts) {
        chat_local_time(ts, "%H:%M:%S", buf, sizeof(buf));
    } else {
        time_t now = time(NULL);
        struct tm local;
        if (!localtime_r(&now, &local) || !strftime(buf, sizeof(buf), "%H:%M:%S", &local))
            buf[0] = '\0';
    }
    fputc('[', out);
    put_clean(out, buf);
    fputs("] ", out);
}

/* Writes a JSON value compactly (for fields this client does not know). */
static void put_json(FILE *out, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s) {
        put_clean(out, s);
        free(s);
    }
}

/* Writes a list of names "a, b, c" from an array of strings. */
static void put_names(FILE *out, const json_t *arr)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (i)
            fputs(", ", out);
        if (json_is_string(v))
            put_clean(out, json_string_value(v));
        else if (json_is_object(v))
            put_clean(out, str(v, "name"));
        else
            put_json(out, v);
    }
}

/* "*** you are in ROOM with N users: a, b" (JOIN and LEAVE answers). */
static void render_room(FILE *out, const json_t *p)
{
    json_t *users = json_object_get(p, "users");
    fputs("*** you are in ", out);
    put_clean(out, str(p, "room"));
    if (json_is_array(users)) {
        size_t n = json_array_size(users);
        fprintf(out, " with %zu user%s: ", n, n == 1 ? "" : "s");
        put_names(out, users);
    } else if (json_is_integer(users)) {
        fprintf(out, " with %lld users", (long long)json_integer_value(users));
    }
    fputc('\n', out);
}

/* The LIST_MESSAGES answer: a header, one line per message, a footer. */
static void render_history(FILE *out, const json_t *p)
{
    json_t *msgs = json_object_get(p, "messages");
    size_t n = json_array_size(msgs), i;
    json_t *m;
    if (n == 0) {
        fputs("*** no messages in ", out);
        put_clean(out, str(p, "room"));
        fputc('\n', out);
        return;
    }
    fprintf(out, "*** last %zu message%s in ", n, n == 1 ? "" : "s");
    put_clean(out, str(p, "room"));
    fputs(json_is_true(json_object_get(p, "truncated")) ? " (older ones left out: too long)\n"
                                                        : ":\n",
          out);
    json_array_foreach(msgs, i, m)
    {
        char when[64];
        chat_local_time(str(m, "timestamp"), "%Y-%m-%d %H:%M:%S", when, sizeof(when));
        fputc('[', out);
        put_clean(out, when);
        fputs("] ", out);
        put_clean(out, str(m, "from"));
        fputs(": ", out);
        put_clean(out, str(m, "content"));
        fputc('\n', out);
    }
    fputs("*** end of history\n", out);
}

/* The LIST_ROOMS answer: "*** rooms (N): dev (1), lobby (3)". */
static void render_rooms(FILE *out, const json_t *p)
{
    json_t *rooms = json_object_get(p, "rooms"), *r;
    size_t i;
    fprintf(out, "*** rooms (%zu): ", json_array_size(rooms));
    json_array_foreach(rooms, i, r)
    {
        if (i)
            fputs(", ", out);
        put_clean(out, str(r, "name"));
        json_t *users = json_object_get(r, "users");
        if (json_is_integer(users))
            fprintf(out, " (%lld)", (long long)json_integer_value(users));
    }
    fputc('\n', out);
}

/* The STATS answer: "*** stats key=value ..." in the server's order. */
static void render_stats(FILE *out, const json_t *p)
{
    const char *key;
    json_t *v;
    fputs("*** stats", out);
    json_object_foreach((json_t *)p, key, v)
    {
        if (strcmp(key, "status") == 0)
            continue;
        fputc(' ', out);
        put_clean(out, key);
        fputc('=', out);
        if (json_is_string(v))
            put_clean(out, json_string_value(v));
        else
            put_json(out, v);
    }
    fputc('\n', out);
}

/* Events pushed by the server: chat, join, leave, private, system. */
static void render_event(FILE *out, const json_t *obj)
{
    const char *type = chat_type(obj);
    put_time(out, obj);
    if (strcmp(type, "chat") == 0) {
        put_clean(out, str(obj, "from"));
        fputs(": ", out);
    } else if (strcmp(type, "join") == 0 || strcmp(type, "leave") == 0) {
        fputs("* ", out);
    } else if (strcmp(type, "private") == 0) {
        /* Received (even from oneself); sent ones show with their answer. */
        put_clean(out, str(obj, "from"));
        fputs(" -> you: ", out);
    } else if (strcmp(type, "system") == 0) {
        fputs("*** ", out);
    } else {
        fputs("*** ", out);
        put_clean(out, type);
        fputs(": ", out);
        if (!json_object_get(obj, "content")) {
            put_json(out, obj);
            fputc('\n', out);
            return;
        }
    }
    put_clean(out, str(obj, "content"));
    fputc('\n', out);
}

/* Dispatches on the kind of object: event, error or response type. */
void chat_render(FILE *out, const json_t *obj, const char *sent)
{
    const char *type = chat_type(obj);
    if (!chat_is_reply(obj)) {
        render_event(out, obj);
        return;
    }
    const json_t *p = json_object_get(obj, "payload");
    if (strcmp(type, "error") == 0) {
        const char *msg = str(p, "message");
        fputs("error: ", out);
        put_clean(out, *msg ? msg : str(p, "code"));
        fputc('\n', out);
    } else if (strcmp(type, "MESSAGE") == 0 || strcmp(type, "PONG") == 0) {
        /* the chat event shows the message */
    } else if (strcmp(type, "REGISTER") == 0 || strcmp(type, "AUTH") == 0) {
        fputs("*** you are ", out);
        put_clean(out, str(p, "name"));
        if (json_is_true(json_object_get(p, "registered")))
            fputs(" (registered)", out);
        fputs(", in ", out);
        put_clean(out, str(p, "room"));
        fputs(". Type /help for commands.\n", out);
    } else if (strcmp(type, "JOIN") == 0 || strcmp(type, "LEAVE") == 0) {
        render_room(out, p);
    } else if (strcmp(type, "LIST_USERS") == 0) {
        json_t *users = json_object_get(p, "users");
        fputs("*** users in ", out);
        put_clean(out, str(p, "room"));
        fprintf(out, " (%zu): ", json_array_size(users));
        put_names(out, users);
        fputc('\n', out);
    } else if (strcmp(type, "LIST_ROOMS") == 0) {
        render_rooms(out, p);
    } else if (strcmp(type, "LIST_MESSAGES") == 0) {
        render_history(out, p);
    } else if (strcmp(type, "PRIVATE") == 0) {
        put_time(out, NULL);
        fputs("you -> ", out);
        put_clean(out, str(p, "to"));
        fputs(": ", out);
        put_clean(out, sent ? sent : "");
        fputc('\n', out);
    } else if (strcmp(type, "NICK") == 0) {
        fputs("*** you are now ", out);
        put_clean(out, str(p, "name"));
        fputc('\n', out);
    } else if (strcmp(type, "TIME") == 0) {
        fputs("*** server time ", out);
        put_clean(out, str(p, "time"));
        fputc('\n', out);
    } else if (strcmp(type, "STATS") == 0) {
        render_stats(out, p);
    } else if (strcmp(type, "QUIT") == 0) {
        fputs("*** goodbye\n", out);
    } else if (json_is_string(json_object_get(p, "message"))) {
        fputs("*** ", out);
        put_clean(out, str(p, "message"));
        fputc('\n', out);
    } else {
        fputs("*** ", out);
        put_json(out, obj);
        fputc('\n', out);
    }
}

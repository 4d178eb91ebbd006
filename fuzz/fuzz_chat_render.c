/* Fuzzes the text side of the chat client (src/cli/chat_render.h): what a
 * server may send it and what its user types. It compiles chat_render.c, a
 * pure file of the command line layer (no I/O but the FILE it is given), on
 * its own: the harness lives outside the library, so no layer depends on it.
 *
 * Invariants:
 * - a server line that is a JSON object renders to lines that each end in
 *   '\n' and hold no control character (C0 but TAB, DEL, C1): a server must
 *   not be able to drive the user's terminal;
 * - any bytes, valid UTF-8 or not (the client shows a line that is not JSON
 *   that way), cleaned by chat_clean_copy into buffers of every size from 1
 *   to 64 bytes, come out terminated within the buffer, free of control
 *   bytes, never longer with more room and each shorter result a prefix of
 *   the longer ones; valid UTF-8 comes out valid (no character cut);
 * - a timestamp from the server formats within its buffer;
 * - a typed line is a request (a JSON object with a documented "type"; a
 *   plain line or "//x" is a MESSAGE whose content is the line, without the
 *   first '/'), help, nothing (empty line only) or an error with a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/chat_render.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A byte a terminal could take as (part of) a control sequence. */
static int control_at(const unsigned char *p, size_t left)
{
    if ((p[0] < 0x20 && p[0] != '\t' && p[0] != '\n') || p[0] == 0x7f)
        return 1;
    return p[0] == 0xc2 && left > 1 && p[1] >= 0x80 && p[1] <= 0x9f;
}

/* Length of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const unsigned char *p, size_t left)
{
    if (p[0] < 0x80)
        return 1;
    size_t n = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
    if (n == 0 || p[0] > 0xf4 || n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    }
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
        return 0;
    return n;
}

static int valid_utf8(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(p + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/* Terminal-safe text: no control bytes; '\n' only to end lines, and the
 * text ends with one unless it is empty. */
static void check_terminal_text(const unsigned char *s, size_t n, int lines)
{
    for (size_t i = 0; i < n; i++) {
        if (control_at(s + i, n - i) || (!lines && s[i] == '\n'))
            abort();
    }
    if (lines && n > 0 && s[n - 1] != '\n')
        abort();
}

static void check_clean_copy(const char *src, size_t srclen)
{
    char prev[65];
    size_t prev_len = 0;
    int utf8 = valid_utf8((const unsigned char *)src, srclen);
    for (size_t cap = 1; cap <= 64; cap++) {
        char *dst = malloc(cap);
        if (!dst)
            abort();
        chat_clean_copy(dst, cap, src);
        size_t n = strnlen(dst, cap);
        if (n == cap)
            abort(); /* not terminated within the buffer */
        check_terminal_text((const unsigned char *)dst, n, 0);
        if (n < prev_len || memcmp(dst, prev, prev_len) != 0)
            abort(); /* more room cut earlier, or changed what fitted */
        if (utf8 && !valid_utf8((const unsigned char *)dst, n))
            abort(); /* a character was cut */
        memcpy(prev, dst, n);
        prev_len = n;
        free(dst);
    }
}

/* Every string in v: cleaned, and as a timestamp. */
static void each_string(const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        check_clean_copy(s, strlen(s));
        char when[32];
        memset(when, 'x', sizeof(when));
        chat_local_time(s, "%Y-%m-%d %H:%M:%S", when, sizeof(when));
        if (!memchr(when, '\0', sizeof(when)))
            abort();
    } else if (json_is_object(v)) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            each_string(val);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *val;
        json_array_foreach(v, i, val)
        {
            each_string(val);
        }
    }
}

static void check_server_line(const uint8_t *data, size_t size)
{
    /* As the client reads a server line (no flags: NUL escapes refused). */
    json_t *obj = json_loadb((const char *)data, size, 0, NULL);
    if (json_is_object(obj)) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
            abort();
        const char *sent = json_string_value(json_object_get(obj, "sent"));
        chat_render(f, obj, sent);
        if (fclose(f) != 0)
            abort();
        check_terminal_text((const unsigned char *)text, len, 1);
        free(text);
        (void)chat_is_reply(obj);
        if (!chat_type(obj))
            abort();
        each_string(obj);
    }
    json_decref(obj);

    /* A line that is not JSON is shown cleaned, at most 159 bytes of it. */
    char raw[160];
    size_t n = size < sizeof(raw) - 1 ? size : sizeof(raw) - 1;
    memcpy(raw, data, n);
    raw[n] = '\0';
    check_clean_copy(raw, strlen(raw));
}

static void check_typed_line(const uint8_t *data, size_t size)
{
    static const char *const types[] = {"MESSAGE", "PRIVATE",    "JOIN",          "NICK",
                                        "LEAVE",   "LIST_ROOMS", "LIST_USERS",    "TIME",
                                        "STATS",   "QUIT",       "LIST_MESSAGES", NULL};
    char *line = malloc(size ? size : 1);
    if (!line)
        abort();
    memcpy(line, data, size);
    json_t *req = (json_t *)1;
    char err[64];
    memset(err, 'x', sizeof(err));
    chat_input in = chat_parse_input(line, size, &req, err, sizeof(err));
    switch (in) {
    case CHAT_IN_NONE:
        if (size != 0 || req)
            abort();
        break;
    case CHAT_IN_HELP:
        if (req || size < 5)
            abort();
        break;
    case CHAT_IN_ERROR:
        if (req || !memchr(err, '\0', sizeof(err)) || !err[0])
            abort();
        break;
    case CHAT_IN_REQUEST: {
        const char *type = json_string_value(json_object_get(req, "type"));
        size_t k = 0;
        while (types[k] && (!type || strcmp(types[k], type) != 0))
            k++;
        if (!types[k])
            abort();
        if (line[0] != '/' || (size > 1 && line[1] == '/')) {
            size_t skip = line[0] == '/';
            json_t *c = json_object_get(json_object_get(req, "payload"), "content");
            if (strcmp(type, "MESSAGE") != 0 || !json_is_string(c) ||
                json_string_length(c) != size - skip ||
                memcmp(json_string_value(c), line + skip, size - skip) != 0)
                abort();
        } else if (strcmp(type, "MESSAGE") == 0) {
            abort(); /* a command never becomes a message */
        }
        json_decref(req);
        break;
    }
    default: abort();
    }
    free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_server_line(data, size);
    check_typed_line(data, size);
    return 0;
}

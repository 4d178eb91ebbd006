/* The text side of `tcpkit chat`: what a typed line asks the server for
 * (slash commands to JSON requests) and how a server line reads on a
 * terminal. Pure functions, no I/O beyond the FILE they are given. */
#ifndef TK_CLI_CHAT_RENDER_H
#define TK_CLI_CHAT_RENDER_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* What one input line asks for. */
typedef enum {
    CHAT_IN_NONE,    /* an empty line: nothing to do */
    CHAT_IN_REQUEST, /* *req is a request to send */
    CHAT_IN_HELP,    /* /help: show chat_help_text */
    CHAT_IN_ERROR,   /* a malformed or unknown command: err says why */
} chat_input;

/* The /help text, one command per line. */
extern const char chat_help_text[];

/* Maps line[0..len) (no newline) to a request: a slash command, "//x" for
 * the message "/x", or a plain message. On CHAT_IN_REQUEST the caller owns
 * *req. */
chat_input chat_parse_input(const char *line, size_t len, json_t **req, char *err, size_t errcap);

/* True when obj is an answer to a request (a response or an error) rather
 * than an event pushed by the server. */
int chat_is_reply(const json_t *obj);

/* The "type" string of obj, or "" when it has none. */
const char *chat_type(const json_t *obj);

/* Writes a readable rendering of one server object (event, response or
 * error) to out, one or more lines each ending in '\n' (nothing for answers
 * that need no text, such as MESSAGE). sent is the text of the private
 * message a PRIVATE response answers (or NULL). Control characters from the
 * server are shown as '?'. */
void chat_render(FILE *out, const json_t *obj, const char *sent);

/* Copies src into dst[0..cap) with control characters replaced by '?'
 * (always terminated; cut short when it does not fit). */
void chat_clean_copy(char *dst, size_t cap, const char *src);

/* Formats an RFC 3339 UTC timestamp ("2026-11-25T10:30:15.123Z") in local
 * time with strftime's fmt; copies the text as is when it does not parse. */
void chat_local_time(const char *ts, const char *fmt, char *buf, size_t cap);

#endif

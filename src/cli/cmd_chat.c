/* tcpkit chat: the client of chat-server, always in its JSON mode.
 *
 * On a terminal it is a chat program: a "[room]> " prompt with line editing
 * (libedit), slash commands mapped to requests, and events rendered as text
 * while the user types. As in `connect`, the editor owns the main thread and
 * its character-reading hook runs the event loop until a key is pressed, so
 * a line from the server is printed above the prompt and the prompt redrawn
 * on the same thread.
 *
 * Piped (or --json) it is a tool for scripts: each stdin line is one request
 * (slash commands, plain messages, or raw JSON when it starts with '{') and
 * every server line is printed unchanged. At end of input it waits until
 * every request was answered, sends QUIT and exits 0 on its answer.
 *
 * Logging in comes first in both modes: REGISTER as a guest, or AUTH with a
 * password (from --password-file, falling back to creating the account; or
 * asked on the terminal without echo when the name turns out registered). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <histedit.h>
#include <jansson.h>
#include <locale.h>
#include <wchar.h>

#include "cli/chat_render.h"
#include "cli/commands.h"
#include "cli/opts.h"
#include "cli/tls_opts.h"
#include "cli/term.h"
#include "tcpkit/buf.h"
#include "tcpkit/codec.h"
#include "tcpkit/conn.h"
#include "tcpkit/dial.h"
#include "tcpkit/log.h"
#include "tcpkit/sock.h"

/* Exit statuses beyond the common 0/1/2 (as in connect). */
enum { EXIT_REFUSED = 3, EXIT_TIMEOUT = 4 };

#define MAX_SERVER_LINE (1024 * 1024) /* longer server lines end the session */
#define MAX_INPUT_LINE  (1024 * 1024) /* longer stdin lines are skipped */
#define STDIN_CHUNK     (64 * 1024)
#define STDIN_PAUSE     (256 * 1024) /* queued output above which stdin waits */
#define MAX_ADDRS       16
#define MAX_PASSWORD    1024
#define NAME_CAP        256
#define QUIT_RETRY_MS   500 /* a QUIT refused by flood control is sent again */
#define BAD_PASSWORDS   3   /* the server closes after this many */

/* Which login request is in flight. */
typedef enum {
    LOGIN_GUEST,  /* REGISTER {name} */
    LOGIN_AUTH,   /* AUTH {name, password} */
    LOGIN_CREATE, /* REGISTER {name, password}: the account did not exist */
} login_step;

/* Terminal mode: a request waiting for its answer (answers come in order). */
typedef struct pending {
    struct pending *next;
    char *text; /* a private message's text, shown with its answer; or NULL */
} pending;

typedef struct {
    tk_loop *loop;
    tk_conn *conn;
    tk_line_decoder dec; /* server lines */
    int interactive;     /* terminal mode (else piped) */
    int status;
    int ended;    /* the client closed on purpose; status is final */
    int finished; /* the connection is over (or never started) */

    /* stdin */
    tk_io in_io;
    tk_defer pump;   /* reads a regular-file stdin, which epoll cannot watch */
    int in_pollable; /* stdin works with epoll */
    int in_started;
    int in_eof;
    tk_buf in_buf; /* piped: an unfinished stdin line */
    tk_line_decoder in_dec;
    unsigned long in_lineno;
    int bad_input; /* piped: some line could not be sent */

    /* terminal */
    EditLine *el;
    int key_ready; /* a key is waiting on the terminal */
    int editing;   /* inside the editor: redraw the prompt after output */
    pending *head, *tail;
    char prompt[NAME_CAP + 8];

    /* login */
    char name[NAME_CAP]; /* the name asked for */
    char password[MAX_PASSWORD + 1];
    int have_password;
    int password_from_file;
    login_step step;
    int logged_in;
    int need_password; /* stop the loop: ask for the password */
    int need_name;     /* stop the loop: ask for another name */
    int bad_passwords;
    const char *join_room; /* --room */

    /* session */
    char room[NAME_CAP];
    unsigned long sent, answered; /* requests that get an answer, answers */
    int quit_sent;
    tk_timer quit_timer;
    tk_tls_ctx *tls; /* NULL: plain TCP */
    const char *tls_name;
} client;

static const char usage_text[] =
    "usage: tcpkit chat HOST:PORT --name NAME [OPTIONS]\n"
    "\n"
    "Client for tcpkit chat-server. On a terminal: a '[room]> ' prompt with line\n"
    "editing; messages and events are shown as they arrive, also while you type;\n"
    "lines starting with '/' are commands (/help lists them), others are messages.\n"
    "Piped (or --json): each stdin line is sent (slash commands as on a terminal,\n"
    "a line starting with '{' as a raw JSON request) and every server line is\n"
    "printed as one JSON line; at end of input the client waits for the answers,\n"
    "sends QUIT and exits.\n"
    "\n"
    "      --name NAME             the name to chat as (required)\n"
    "      --password-file FILE    log in to the account NAME with the password on\n"
    "                              FILE's first line (created if it does not exist)\n"
    "      --room ROOM             join ROOM after logging in\n"
    "      --connect-timeout SECS  give up connecting after this long (default 10)\n"
    "      --json                  piped behaviour even on a terminal\n" TLS_CLIENT_HELP
    "  -4, -6                      IPv4 or IPv6 only\n"
    "  -h, --help                  this help\n"
    "\n"
    "Without --password-file a registered NAME asks for its password on the\n"
    "terminal (not echoed); with no terminal that is an error.\n"
    "\n"
    "exit status: 0 done, 1 error, 2 usage, 3 refused, 4 timed out\n";

/* Maps a dial error to the exit status. */
static int status_for(int err)
{
    switch (err) {
    case -ECONNREFUSED: return EXIT_REFUSED;
    case -ETIMEDOUT: return EXIT_TIMEOUT;
    default: return 1;
    }
}

/* Terminal mode: prints whole lines for the user; while the editor is
 * active they go above the prompt, which is then redrawn with what has been
 * typed so far. */
static void show_text(client *cl, const char *s, size_t n)
{
    if (cl->editing)
        fputs("\r\033[K", stdout);
    fwrite(s, 1, n, stdout);
    fflush(stdout);
    if (cl->editing && cl->el)
        el_set(cl->el, EL_REFRESH);
}

/* Terminal mode: renders one server object as text and shows it. */
static void show_object(client *cl, const json_t *obj, const char *sent)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return;
    chat_render(f, obj, sent);
    if (fclose(f) == 0 && n)
        show_text(cl, buf, n);
    free(buf);
}

/* Terminal mode: shows "error: MSG" for a problem found locally. */
static void show_error(client *cl, const char *msg)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "error: %s\n", msg);
    if (n > 0)
        show_text(cl, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Rebuilds the prompt "[room]> " after the room changed. */
static void set_room(client *cl, const char *room)
{
    if (!room || !*room)
        return;
    chat_clean_copy(cl->room, sizeof(cl->room), room);
    snprintf(cl->prompt, sizeof(cl->prompt), "[%s]> ", cl->room);
}

/* Ends the session on purpose with status: closes the connection; the loop
 * stops once its on_close has run. */
static void end_session(client *cl, int status)
{
    if (!cl->ended) {
        cl->ended = 1;
        cl->status = status;
    }
    if (cl->conn && !tk_conn_closing(cl->conn))
        tk_conn_close(cl->conn, TK_CLOSE_LOCAL, 0);
}

/* Stops watching stdin for good. */
static void stop_input(client *cl)
{
    cl->in_eof = 1;
    if (cl->in_io.live)
        tk_io_stop(cl->loop, &cl->in_io);
    if (cl->in_started)
        tk_defer_cancel(cl->loop, &cl->pump);
}

/* Queues one request line; counts it unless it is a PONG (which gets no
 * answer). Terminal mode remembers text to show with the answer. Returns 0
 * or -1 when the connection is gone. */
static int send_line(client *cl, const char *line, size_t len, int answered, const char *text)
{
    if (!cl->conn || tk_conn_closing(cl->conn))
        return -1;
    if (tk_conn_write(cl->conn, line, len) < 0)
        return -1;
    if (!answered)
        return 0;
    cl->sent++;
    if (cl->interactive) {
        pending *p = calloc(1, sizeof(*p));
        if (p && text)
            p->text = strdup(text);
        if (p) {
            if (cl->tail)
                cl->tail->next = p;
            else
                cl->head = p;
            cl->tail = p;
        }
    }
    return 0;
}

/* Encodes req (consumed) as one line and sends it. secret: the line holds a
 * password, wiped from memory once queued. */
static int send_request(client *cl, json_t *req, const char *text, int secret)
{
    char *line;
    size_t len;
    if (!req)
        return -1;
    const char *type = chat_type(req);
    int pong = strcmp(type, "PONG") == 0;
    if (strcmp(type, "QUIT") == 0)
        cl->quit_sent = 1;
    int rc = tk_json_encode_line(req, &line, &len);
    json_decref(req);
    if (rc < 0)
        return -1;
    rc = send_line(cl, line, len, !pong, text);
    if (secret)
        explicit_bzero(line, len);
    free(line);
    return rc;
}

/* Removes the oldest pending request (terminal mode); returns it or NULL. */
static pending *pop_pending(client *cl)
{
    pending *p = cl->head;
    if (p) {
        cl->head = p->next;
        if (!cl->head)
            cl->tail = NULL;
    }
    return p;
}

/* Frees every pending request. */
static void free_pending(client *cl)
{
    pending *p;
    while ((p = pop_pending(cl))) {
        free(p->text);
        free(p);
    }
}

/* Sends QUIT once input is over and every request has its answer. */
static void maybe_quit(client *cl)
{
    if (cl->logged_in && cl->in_eof && !cl->quit_sent && cl->answered >= cl->sent &&
        !tk_timer_active(&cl->quit_timer))
        (void)send_request(cl, json_pack("{s:s}", "type", "QUIT"), NULL, 0);
}

/* The flood-control retry of QUIT. */
static void on_quit_timer(tk_loop *loop, tk_timer *t)
{
    (void)loop;
    client *cl = (client *)((char *)t - offsetof(client, quit_timer));
    maybe_quit(cl);
}

/* Sends the login request for the current step. */
static void send_login(client *cl)
{
    json_t *req;
    if (cl->step == LOGIN_GUEST)
        req = json_pack("{s:s,s:{s:s}}", "type", "REGISTER", "payload", "name", cl->name);
    else
        req = json_pack("{s:s,s:{s:s,s:s}}", "type", cl->step == LOGIN_AUTH ? "AUTH" : "REGISTER",
                        "payload", "name", cl->name, "password", cl->password);
    if (!req) {
        fprintf(stderr, "tcpkit chat: the %s is not valid UTF-8\n",
                cl->step == LOGIN_GUEST ? "name" : "name or password");
        end_session(cl, 1);
        return;
    }
    if (send_request(cl, req, NULL, cl->step != LOGIN_GUEST) < 0)
        end_session(cl, 1);
}

/* Logged in: remembers who and where we are, shows the answer, joins
 * --room, and hands the thread back to start reading input. */
static void login_ok(client *cl, const json_t *obj, const unsigned char *line, size_t len)
{
    const json_t *p = json_object_get(obj, "payload");
    const char *room = json_string_value(json_object_get(p, "room"));
    cl->logged_in = 1;
    set_room(cl, room ? room : "lobby");
    explicit_bzero(cl->password, sizeof(cl->password));
    if (cl->interactive) {
        show_object(cl, obj, NULL);
    } else {
        term_write_all(1, line, len);
        term_write_all(1, "\n", 1);
    }
    if (cl->join_room)
        (void)send_request(
            cl, json_pack("{s:s,s:{s:s}}", "type", "JOIN", "payload", "room", cl->join_room), NULL,
            0);
    tk_loop_stop(cl->loop);
}

/* The answer to a login request: logged in, the next step (create the
 * account, ask for a password or another name), or a fatal error. */
static void login_answer(client *cl, const json_t *obj, const unsigned char *line, size_t len)
{
    if (strcmp(chat_type(obj), "error") != 0) {
        login_ok(cl, obj, line, len);
        return;
    }
    const json_t *p = json_object_get(obj, "payload");
    const char *code = json_string_value(json_object_get(p, "code"));
    const char *msg = json_string_value(json_object_get(p, "message"));
    char text[512];
    code = code ? code : "";
    chat_clean_copy(text, sizeof(text), msg ? msg : code);
    if (cl->step == LOGIN_AUTH && cl->password_from_file && strcmp(code, "unknown_account") == 0) {
        cl->step = LOGIN_CREATE; /* no such account yet: create it */
        send_login(cl);
        return;
    }
    if (isatty(0) && !cl->password_from_file &&
        ((cl->step == LOGIN_GUEST && strcmp(code, "name_registered") == 0) ||
         (cl->step == LOGIN_AUTH && strcmp(code, "bad_password") == 0 &&
          ++cl->bad_passwords < BAD_PASSWORDS))) {
        if (cl->step == LOGIN_AUTH)
            fprintf(stderr, "tcpkit chat: %s\n", text);
        cl->need_password = 1;
        tk_loop_stop(cl->loop);
        return;
    }
    if (cl->interactive && !cl->password_from_file && cl->step == LOGIN_GUEST &&
        (strcmp(code, "name_taken") == 0 || strcmp(code, "invalid_name") == 0)) {
        fprintf(stderr, "tcpkit chat: %s\n", text);
        cl->need_name = 1;
        tk_loop_stop(cl->loop);
        return;
    }
    if (!cl->interactive) {
        term_write_all(1, line, len);
        term_write_all(1, "\n", 1);
    }
    char name[NAME_CAP];
    chat_clean_copy(name, sizeof(name), cl->name);
    fprintf(stderr, "tcpkit chat: cannot log in as %s: %s%s%s%s\n", name, text, *code ? " (" : "",
            code, *code ? ")" : "");
    if (strcmp(code, "name_registered") == 0)
        fprintf(stderr,
                "tcpkit chat: %s is a registered account: give its password with "
                "--password-file FILE, or run on a terminal to be asked for it\n",
                name);
    end_session(cl, 1);
}

/* An answer after login: printed or rendered, and matched with its request
 * (terminal mode), tracking the room; QUIT's answer ends the session. */
static void session_answer(client *cl, const json_t *obj, const unsigned char *line, size_t len)
{
    const char *type = chat_type(obj);
    const json_t *p = json_object_get(obj, "payload");
    int last = cl->answered >= cl->sent; /* the answer to the newest request */
    if (cl->interactive) {
        /* The new room goes into the prompt redrawn after the answer. */
        if (strcmp(type, "JOIN") == 0 || strcmp(type, "LEAVE") == 0)
            set_room(cl, json_string_value(json_object_get(p, "room")));
        pending *pend = pop_pending(cl);
        show_object(cl, obj, pend ? pend->text : NULL);
        if (pend) {
            free(pend->text);
            free(pend);
        }
    } else {
        term_write_all(1, line, len);
        term_write_all(1, "\n", 1);
    }
    if (strcmp(type, "QUIT") == 0) {
        end_session(cl, cl->bad_input ? 1 : 0);
        return;
    }
    if (cl->quit_sent && last && strcmp(type, "error") == 0) {
        /* QUIT itself was refused (flood control): ask again shortly. */
        cl->quit_sent = 0;
        (void)tk_timer_start(cl->loop, &cl->quit_timer, QUIT_RETRY_MS);
        return;
    }
    maybe_quit(cl);
}

/* One line from the server (empty lines are ignored). */
static void server_line(client *cl, const unsigned char *line, size_t len)
{
    if (len == 0)
        return;
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)line, len, 0, &jerr);
    if (!json_is_object(obj)) {
        char text[200];
        char raw[160];
        size_t n = len < sizeof(raw) - 1 ? len : sizeof(raw) - 1;
        memcpy(raw, line, n);
        raw[n] = '\0';
        chat_clean_copy(text, sizeof(text), raw);
        fprintf(stderr, "tcpkit chat: the server does not speak the chat JSON protocol: '%s'\n",
                text);
        json_decref(obj);
        end_session(cl, 1);
        return;
    }
    if (strcmp(chat_type(obj), "ping") == 0) {
        (void)send_request(cl, json_pack("{s:s}", "type", "PONG"), NULL, 0);
    } else if (chat_is_reply(obj)) {
        cl->answered++;
        if (cl->logged_in) {
            session_answer(cl, obj, line, len);
        } else {
            pending *p = pop_pending(cl);
            if (p) {
                free(p->text);
                free(p);
            }
            login_answer(cl, obj, line, len);
        }
    } else if (cl->interactive) {
        show_object(cl, obj, NULL);
    } else {
        term_write_all(1, line, len);
        term_write_all(1, "\n", 1);
    }
    json_decref(obj);
}

/* Splits the server's bytes into lines; a line over the limit ends the
 * session. */
static size_t on_data(tk_conn *c, const unsigned char *data, size_t len)
{
    client *cl = tk_conn_data(c);
    size_t used = 0;
    while (used < len && !tk_conn_closing(c)) {
        const unsigned char *line;
        size_t line_len, consumed;
        tk_codec_status st =
            tk_line_next(&cl->dec, data + used, len - used, &line, &line_len, &consumed);
        used += consumed;
        if (st == TK_CODEC_NEED)
            break;
        if (st == TK_CODEC_TOO_LONG) {
            fprintf(stderr, "tcpkit chat: the server sent a line longer than %d bytes\n",
                    MAX_SERVER_LINE);
            end_session(cl, 1);
            break;
        }
        server_line(cl, line, line_len);
    }
    return tk_conn_closing(c) ? len : used;
}

/* The connection is gone: decides the exit status unless the client ended
 * the session itself, and stops the loop. */
static void on_close(tk_conn *c, tk_close_reason why, int err)
{
    client *cl = tk_conn_data(c);
    cl->conn = NULL;
    if (cl->editing) {
        fputs("\r\033[K", stdout); /* the prompt line, not redrawn */
        fflush(stdout);
    }
    if (!cl->ended) {
        cl->ended = 1;
        cl->status = 1;
        if (why == TK_CLOSE_PEER)
            fprintf(stderr, "tcpkit chat: the server closed the connection\n");
        else if (why == TK_CLOSE_TLS)
            fprintf(stderr, "tcpkit chat: tls: %s\n", tk_conn_tls_error(c));
        else if (why == TK_CLOSE_LIMIT && err == -ENOBUFS)
            fprintf(stderr, "tcpkit chat: connection dropped (a buffer limit was passed)\n");
        else
            fprintf(stderr, "tcpkit chat: connection lost (%s%s%s)\n", tk_close_reason_name(why),
                    err ? ": " : "", err ? strerror(-err) : "");
    }
    stop_input(cl);
    tk_timer_stop(cl->loop, &cl->quit_timer);
    cl->finished = 1;
    tk_loop_stop(cl->loop);
}

static void resume_input(tk_conn *c);

static const tk_conn_handler handler = {
    .on_data = on_data, .on_sent = resume_input, .on_close = on_close};

/* Piped: sends one stdin line (a slash command, a message, or raw JSON). */
static void input_line(client *cl, const char *line, size_t len)
{
    cl->in_lineno++;
    if (cl->quit_sent || len == 0)
        return;
    if (line[0] == '{') {
        json_t *obj = json_loadb(line, len, 0, NULL);
        const char *type = chat_type(obj);
        int pong = strcmp(type, "PONG") == 0;
        if (strcmp(type, "QUIT") == 0) {
            cl->quit_sent = 1;
            stop_input(cl);
        }
        json_decref(obj);
        if (send_line(cl, line, len, !pong, NULL) == 0)
            (void)send_line(cl, "\n", 1, 0, NULL);
        return;
    }
    json_t *req;
    char err[160];
    switch (chat_parse_input(line, len, &req, err, sizeof(err))) {
    case CHAT_IN_NONE: return;
    case CHAT_IN_HELP: fputs(chat_help_text, stderr); return;
    case CHAT_IN_ERROR:
        fprintf(stderr, "tcpkit chat: input line %lu: %s (not sent)\n", cl->in_lineno, err);
        cl->bad_input = 1;
        return;
    case CHAT_IN_REQUEST:
        if (strcmp(chat_type(req), "QUIT") == 0) {
            json_decref(req); /* sent by maybe_quit once everything is answered */
            stop_input(cl);
            maybe_quit(cl);
            return;
        }
        (void)send_request(cl, req, NULL, 0);
        return;
    }
}

/* Piped: takes every complete line out of the stdin buffer. */
static void drain_input(client *cl)
{
    while (!cl->quit_sent && tk_buf_len(&cl->in_buf)) {
        const unsigned char *line;
        size_t line_len, consumed;
        tk_codec_status st = tk_line_next(&cl->in_dec, tk_buf_head(&cl->in_buf),
                                          tk_buf_len(&cl->in_buf), &line, &line_len, &consumed);
        if (st == TK_CODEC_TOO_LONG) {
            cl->in_lineno++;
            fprintf(stderr, "tcpkit chat: input line %lu is longer than %d bytes (not sent)\n",
                    cl->in_lineno, MAX_INPUT_LINE);
            cl->bad_input = 1;
        } else if (st == TK_CODEC_OK) {
            input_line(cl, (const char *)line, line_len);
        }
        tk_buf_consume(&cl->in_buf, consumed);
        if (st == TK_CODEC_NEED)
            break;
    }
}

/* Piped: reads one chunk of stdin and sends its complete lines, pausing
 * while the socket's queue is over its mark. At end of input a last line
 * without '\n' is sent too, then QUIT once everything is answered. */
static void read_stdin(client *cl)
{
    int err = 0;
    unsigned char *room = tk_buf_reserve(&cl->in_buf, STDIN_CHUNK, &err);
    if (!room) {
        fprintf(stderr, "tcpkit chat: out of memory reading input\n");
        end_session(cl, 1);
        return;
    }
    ssize_t n = read(0, room, STDIN_CHUNK);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        if (n < 0)
            fprintf(stderr, "tcpkit chat: reading input: %s\n", strerror(errno));
        size_t rest = tk_buf_len(&cl->in_buf);
        if (rest && !cl->in_dec.discarding && !cl->quit_sent) {
            const unsigned char *h = tk_buf_head(&cl->in_buf);
            input_line(cl, (const char *)h, h[rest - 1] == '\r' ? rest - 1 : rest);
        }
        tk_buf_free(&cl->in_buf);
        stop_input(cl);
        maybe_quit(cl);
        return;
    }
    tk_buf_commit(&cl->in_buf, (size_t)n);
    drain_input(cl);
    if (cl->in_eof || !cl->conn)
        return;
    if (tk_conn_pending(cl->conn) >= STDIN_PAUSE) {
        if (cl->in_io.live)
            tk_io_stop(cl->loop, &cl->in_io);
    } else if (!cl->in_pollable) {
        tk_defer_queue(cl->loop, &cl->pump);
    }
}

/* The socket's queue emptied: piped input may go on. */
static void resume_input(tk_conn *c)
{
    client *cl = tk_conn_data(c);
    if (cl->in_eof || cl->interactive || !cl->in_started)
        return;
    if (cl->in_pollable)
        (void)tk_io_set(cl->loop, &cl->in_io, TK_READ);
    else
        tk_defer_queue(cl->loop, &cl->pump);
}

/* Deferred read of a regular-file stdin. */
static void on_pump(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    client *cl = (client *)((char *)d - offsetof(client, pump));
    if (!cl->in_eof && cl->conn)
        read_stdin(cl);
}

/* stdin is readable: piped, read it; on a terminal, hand the key to the
 * editor by stopping the loop. */
static void on_stdin(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)events;
    client *cl = (client *)((char *)io - offsetof(client, in_io));
    if (cl->interactive) {
        cl->key_ready = 1;
        tk_loop_stop(loop);
    } else if (cl->conn) {
        read_stdin(cl);
    }
}

/* Starts watching stdin (after login). */
static void start_input(client *cl)
{
    cl->in_started = 1;
    tk_defer_init(&cl->pump, on_pump);
    tk_io_init(&cl->in_io, 0, on_stdin);
    if (tk_io_set(cl->loop, &cl->in_io, TK_READ) == 0)
        cl->in_pollable = 1;
    else if (!cl->interactive)
        tk_defer_queue(cl->loop, &cl->pump);
}

/* Connected (or not): wraps the socket and sends the login request. */
static void on_connected(tk_loop *loop, int fd, int err, void *arg)
{
    client *cl = arg;
    if (fd < 0) {
        fprintf(stderr, "tcpkit chat: %s\n",
                err == -ETIMEDOUT ? "connection timed out" : strerror(-err));
        cl->status = status_for(err);
        cl->ended = 1;
        cl->finished = 1;
        tk_loop_stop(loop);
        return;
    }
    tk_sockopts so;
    tk_sockopts_init(&so);
    so.nodelay = 1; /* chat lines are small and someone is waiting for them */
    (void)tk_sock_apply(fd, &so);
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    lim.max_input = MAX_SERVER_LINE + 2; /* one line and its "\r\n" */
    lim.high_water = 4 * 1024 * 1024;    /* the server's output is never paused */
    lim.max_output = 64 * 1024 * 1024;
    lim.stall_timeout_ms = 0;
    lim.linger_ms = 0;
    if (tk_conn_new(loop, fd, &handler, &lim, cl, &cl->conn) < 0 ||
        tk_conn_start_tls(cl->conn, cl->tls, cl->tls_name) < 0) {
        fprintf(stderr, "tcpkit chat: out of memory\n");
        cl->status = 1;
        cl->ended = 1;
        cl->finished = 1;
        tk_loop_stop(loop);
        return;
    }
    send_login(cl);
}

/* Set while the password prompt waits: the signal that interrupted it. */
static volatile sig_atomic_t prompt_signal;

/* Notes a signal during a prompt; the prompt then restores the terminal. */
static void on_prompt_signal(int signo)
{
    prompt_signal = signo;
}

/* Asks question on the terminal (/dev/tty, else stdin/stderr) and reads one
 * line into buf, with echo off when secret. The terminal is restored on every
 * path, including SIGINT/SIGTERM/SIGHUP/SIGQUIT, which end the prompt.
 * Returns the length, -1 at end of input or on error, -2 on a signal. */
static int ask_tty(const char *question, int secret, char *buf, size_t cap)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC), out = fd;
    if (fd < 0) {
        if (!isatty(0))
            return -1;
        fd = 0;
        out = 2;
    }
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&block, sigs[i]);
    sigprocmask(SIG_BLOCK, &block, &old);
    struct sigaction sa, saved_sa[4], ign, saved_tstp;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_prompt_signal; /* no SA_RESTART: the wait is interrupted */
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, &saved_sa[i]);
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN; /* stopped with echo off would leave it off */
    sigaction(SIGTSTP, &ign, &saved_tstp);
    prompt_signal = 0;

    struct termios saved_tio;
    int restore = 0;
    if (secret && tcgetattr(fd, &saved_tio) == 0) {
        struct termios t = saved_tio;
        t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
        restore = tcsetattr(fd, TCSAFLUSH, &t) == 0;
    }
    term_write_all(out, question, strlen(question));

    size_t len = 0;
    int rc = -1, too_long = 0;
    for (;;) {
        if (prompt_signal) {
            rc = -2;
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = ppoll(&pfd, 1, NULL, &old); /* signals are deliverable only here */
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            break; /* end of input: nothing was entered */
        if (c == '\n') {
            rc = too_long ? -1 : (int)len;
            break;
        }
        if (len + 1 < cap)
            buf[len++] = c;
        else
            too_long = 1;
    }
    if (rc >= 0 && len && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    if (rc >= 0)
        rc = (int)len;
    if (restore)
        tcsetattr(fd, TCSAFLUSH, &saved_tio);
    if (secret || rc == -2)
        term_write_all(out, "\n", 1);
    if (too_long)
        fprintf(stderr, "tcpkit chat: that is too long\n");
    sigaction(SIGTSTP, &saved_tstp, NULL);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &saved_sa[i], NULL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (fd != 0)
        close(fd);
    return rc;
}

/* Between login requests: asks the user for a password or another name.
 * Returns 0 to go on, or the exit status. */
static int ask_login(client *cl)
{
    char q[NAME_CAP + 64], name[NAME_CAP];
    int r;
    chat_clean_copy(name, sizeof(name), cl->name);
    if (cl->need_password) {
        cl->need_password = 0;
        snprintf(q, sizeof(q), "Password for %s: ", name);
        r = ask_tty(q, 1, cl->password, sizeof(cl->password));
        if (r > 0) {
            cl->have_password = 1;
            cl->step = LOGIN_AUTH;
            return 0;
        }
    } else {
        cl->need_name = 0;
        r = ask_tty("Another name (empty to quit): ", 0, cl->name, sizeof(cl->name));
        if (r > 0) {
            cl->step = LOGIN_GUEST;
            return 0;
        }
    }
    explicit_bzero(cl->password, sizeof(cl->password));
    return r == -2 ? 128 + (int)prompt_signal : 1;
}

/* libedit's character source: the network is served until a key comes. */
static int editor_getc(EditLine *el, wchar_t *wc)
{
    client *cl;
    el_get(el, EL_CLIENTDATA, (void **)&cl);
    term_keys k = {cl->loop, &cl->key_ready, &cl->finished, &cl->editing};
    return term_read_key(&k, wc);
}

/* The prompt: "[room]> ". */
static char *editor_prompt(EditLine *el)
{
    client *cl;
    el_get(el, EL_CLIENTDATA, (void **)&cl);
    return cl->prompt;
}

/* Terminal mode: handles one edited line (without its newline). Returns 1
 * when the user asked to quit. */
static int typed_line(client *cl, const char *line, size_t len)
{
    json_t *req;
    char err[160];
    switch (chat_parse_input(line, len, &req, err, sizeof(err))) {
    case CHAT_IN_NONE: return 0;
    case CHAT_IN_HELP: show_text(cl, chat_help_text, strlen(chat_help_text)); return 0;
    case CHAT_IN_ERROR: show_error(cl, err); return 0;
    case CHAT_IN_REQUEST: break;
    }
    if (strcmp(chat_type(req), "QUIT") == 0) {
        json_decref(req);
        return 1;
    }
    char *text = NULL;
    if (strcmp(chat_type(req), "PRIVATE") == 0) {
        const char *s =
            json_string_value(json_object_get(json_object_get(req, "payload"), "content"));
        text = s ? strdup(s) : NULL;
    }
    if (send_request(cl, req, text, 0) < 0)
        show_error(cl, "not connected");
    free(text);
    return 0;
}

/* The terminal session: edit lines and send them until end of input, /quit
 * or the server going away; then QUIT and show what the server still
 * sends. */
static void run_terminal(client *cl)
{
    HistEvent ev;
    History *h = history_init();
    history(h, &ev, H_SETSIZE, 1000);
    history(h, &ev, H_SETUNIQUE, 1);
    cl->el = el_init("tcpkit", stdin, stdout, stderr);
    el_set(cl->el, EL_CLIENTDATA, cl);
    el_set(cl->el, EL_EDITOR, "emacs");
    el_set(cl->el, EL_PROMPT, editor_prompt);
    el_set(cl->el, EL_HIST, history, h);
    el_set(cl->el, EL_GETCFN, editor_getc);
    el_set(cl->el, EL_SIGNAL, 1);
    el_source(cl->el, NULL);

    int n, quit = 0;
    const char *line;
    while (!cl->finished && (line = el_gets(cl->el, &n)) && n > 0) {
        size_t len = (size_t)n;
        if (line[len - 1] == '\n')
            len--;
        if (len > 0 && len < 4096) {
            char entry[4096];
            memcpy(entry, line, len);
            entry[len] = '\0';
            history(h, &ev, H_ENTER, entry);
        }
        if ((quit = typed_line(cl, line, len)))
            break;
    }
    el_end(cl->el);
    cl->el = NULL;
    history_end(h);
    if (!cl->finished) {
        if (!quit) {
            fputc('\n', stdout); /* Ctrl-D: leave the prompt line */
            fflush(stdout);
        }
        stop_input(cl);
        maybe_quit(cl);
    }
}

/* Reads the password from the first line of path. Returns 0, or 1 after
 * printing why not. */
static int read_password_file(const char *path, char *out, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        fprintf(stderr, "tcpkit chat: cannot read %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    if (S_ISREG(sb.st_mode) && (sb.st_mode & S_IROTH))
        fprintf(stderr, "tcpkit chat: warning: %s is readable by everyone (chmod 600 it)\n", path);
    size_t len = 0;
    int rc = 1;
    for (;;) {
        ssize_t n = read(fd, out + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "tcpkit chat: cannot read %s: %s\n", path, strerror(errno));
            break;
        }
        len += (size_t)n;
        char *nl = memchr(out, '\n', len);
        if (nl || n == 0 || len == cap - 1) {
            if (nl)
                len = (size_t)(nl - out);
            else if (n != 0) {
                fprintf(stderr, "tcpkit chat: the password in %s is too long\n", path);
                break;
            }
            if (len && out[len - 1] == '\r')
                len--;
            if (len == 0) {
                fprintf(stderr, "tcpkit chat: %s: the first line (the password) is empty\n", path);
                break;
            }
            if (memchr(out, '\0', len)) {
                fprintf(stderr, "tcpkit chat: %s: the password contains a NUL byte\n", path);
                break;
            }
            rc = 0;
            break;
        }
    }
    explicit_bzero(out + len, cap - len);
    if (rc)
        explicit_bzero(out, cap);
    close(fd);
    return rc;
}

/* Checks that s is usable as a JSON string (valid UTF-8, no NUL). */
static int valid_utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

/* tcpkit chat: parses the options, connects, logs in, then runs the
 * terminal or piped session; returns the exit status. */
int cmd_chat(int argc, char **argv)
{
    enum { O_NAME = 1000, O_PWFILE, O_ROOM, O_CT, O_JSON };
    static const struct option longopts[] = {
        {"name", required_argument, NULL, O_NAME},
        {"password-file", required_argument, NULL, O_PWFILE},
        {"room", required_argument, NULL, O_ROOM},
        {"connect-timeout", required_argument, NULL, O_CT},
        {"json", no_argument, NULL, O_JSON},
        TLS_CLIENT_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    client cl;
    memset(&cl, 0, sizeof(cl));
    cl.status = 1;
    uint32_t connect_ms = 10 * 1000;
    int family = AF_UNSPEC, json_mode = 0, ch, rc;
    const char *name = NULL, *pwfile = NULL;
    tls_opts tls_o;
    tls_opts_init(&tls_o);
    optind = 1;
    while ((ch = getopt_long(argc, argv, "46h", longopts, NULL)) != -1) {
        switch (ch) {
        case '4': family = AF_INET; break;
        case '6': family = AF_INET6; break;
        case O_NAME: name = optarg; break;
        case O_PWFILE: pwfile = optarg; break;
        case O_ROOM: cl.join_room = optarg; break;
        case O_CT:
            if (tk_parse_duration_ms(optarg, &connect_ms) < 0)
                return opt_usage_error("chat", "bad --connect-timeout '%s'", optarg);
            break;
        case O_JSON: json_mode = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default:
            if ((rc = tls_option(&tls_o, "chat", ch, optarg)) >= 0) {
                if (rc)
                    return rc;
                break;
            }
            fprintf(stderr, "Try 'tcpkit chat --help'.\n");
            return 2;
        }
    }
    if (argc - optind != 1)
        return opt_usage_error("chat", "expected one HOST:PORT argument");
    if (!name)
        return opt_usage_error("chat", "--name NAME is required");
    if (!*name || strlen(name) >= sizeof(cl.name) || !valid_utf8(name))
        return opt_usage_error("chat", "bad --name '%s' (1 to %zu bytes of UTF-8)", name,
                               sizeof(cl.name) - 1);
    if (cl.join_room && (!*cl.join_room || !valid_utf8(cl.join_room)))
        return opt_usage_error("chat", "bad --room '%s'", cl.join_room);
    if (pwfile && !*pwfile)
        return opt_usage_error("chat", "--password-file needs a file name");
    snprintf(cl.name, sizeof(cl.name), "%s", name);
    tk_log_configure(TK_LOG_WARN, TK_LOG_TEXT, 2);

    tk_addr addrs[MAX_ADDRS];
    int n = tk_addr_resolve(argv[optind], family, 0, addrs, MAX_ADDRS);
    if (n == -EINVAL)
        return opt_usage_error("chat", "bad address '%s' (want HOST:PORT or [IPv6]:PORT)",
                               argv[optind]);
    if (n < 0) {
        fprintf(stderr, "tcpkit chat: cannot resolve '%s'\n", argv[optind]);
        return 1;
    }
    if (pwfile) {
        if (read_password_file(pwfile, cl.password, sizeof(cl.password)))
            return 1;
        if (!valid_utf8(cl.password)) {
            fprintf(stderr, "tcpkit chat: the password in %s is not valid UTF-8\n", pwfile);
            explicit_bzero(cl.password, sizeof(cl.password));
            return 1;
        }
        cl.have_password = 1;
        cl.password_from_file = 1;
        cl.step = LOGIN_AUTH;
    } else {
        cl.step = LOGIN_GUEST;
    }

    char tls_name[TK_HOST_MAX];
    if ((rc = tls_build(&tls_o, "chat", 0, &cl.tls)) != 0) {
        explicit_bzero(cl.password, sizeof(cl.password));
        return rc;
    }
    cl.tls_name = tls_peer_name(&tls_o, argv[optind], tls_name);
    signal(SIGPIPE, SIG_IGN);
    cl.interactive = !json_mode && isatty(0) && isatty(1);
    if (cl.interactive)
        setlocale(LC_CTYPE, "");
    tk_line_init(&cl.dec, MAX_SERVER_LINE);
    tk_line_init(&cl.in_dec, MAX_INPUT_LINE);
    tk_buf_init(&cl.in_buf, MAX_INPUT_LINE + STDIN_CHUNK + 2);
    tk_timer_init(&cl.quit_timer, on_quit_timer);
    snprintf(cl.prompt, sizeof(cl.prompt), "> ");
    if (tk_loop_new(&cl.loop) < 0) {
        explicit_bzero(cl.password, sizeof(cl.password));
        tk_tls_ctx_free(cl.tls);
        return 1;
    }
    if (tk_dial_start(cl.loop, addrs, (size_t)n, connect_ms, on_connected, &cl, NULL) < 0) {
        fprintf(stderr, "tcpkit chat: cannot connect\n");
        tk_loop_free(cl.loop);
        explicit_bzero(cl.password, sizeof(cl.password));
        tk_tls_ctx_free(cl.tls);
        return 1;
    }

    /* Log in, asking on the terminal when the server wants more. */
    while (!cl.finished && !cl.logged_in) {
        tk_loop_run(cl.loop);
        if (!cl.finished && (cl.need_password || cl.need_name)) {
            rc = ask_login(&cl);
            if (rc)
                end_session(&cl, rc);
            else
                send_login(&cl);
        }
    }
    if (!cl.finished && !cl.ended) {
        start_input(&cl);
        if (cl.interactive)
            run_terminal(&cl);
    }
    while (!cl.finished)
        tk_loop_run(cl.loop);

    if (cl.conn)
        tk_conn_close(cl.conn, TK_CLOSE_LOCAL, 0);
    stop_input(&cl);
    tk_timer_stop(cl.loop, &cl.quit_timer);
    tk_loop_free(cl.loop);
    tk_buf_free(&cl.in_buf);
    free_pending(&cl);
    explicit_bzero(cl.password, sizeof(cl.password));
    tk_tls_ctx_free(cl.tls);
    return cl.status;
}

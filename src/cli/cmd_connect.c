/* tcpkit connect: the netcat of the kit. Piped, it relays raw bytes both ways
 * and half-closes on end of input; on a terminal it offers a line editor with
 * history and shows server lines as they arrive, even mid-typing.
 *
 * On a terminal the line editor (libedit) owns the main thread; its
 * character-reading hook runs the event loop until a key is pressed, so
 * network traffic is handled inside the editor's read, on the same thread,
 * and a server line can be printed above the prompt and the line redrawn
 * safely. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <histedit.h>
#include <locale.h>
#include <wchar.h>

#include "cli/commands.h"
#include "cli/opts.h"
#include "cli/tls_opts.h"
#include "cli/term.h"
#include "tcpkit/conn.h"
#include "tcpkit/dial.h"
#include "tcpkit/log.h"
#include "tcpkit/sock.h"

/* Exit statuses beyond the common 0/1/2. */
enum { EXIT_REFUSED = 3, EXIT_TIMEOUT = 4, EXIT_DROPPED = 5 };

#define STDIN_CHUNK (64 * 1024)
#define MAX_ADDRS   16

typedef struct {
    tk_loop *loop;
    tk_conn *conn;
    tk_io in_io;
    int in_pollable; /* stdin works with epoll (not a regular file) */
    int in_eof;
    int interactive;
    int key_ready; /* a key is waiting on the terminal */
    int finished;  /* the connection is over (or never started) */
    EditLine *el;
    int status;
    uint32_t idle_ms;
    tk_sockopts sockopts;
    tk_defer pump;   /* reads a regular-file stdin, which epoll cannot watch */
    tk_tls_ctx *tls; /* NULL: plain TCP */
    const char *tls_name;
    char partial[4096]; /* an unfinished server line, interactive mode */
    size_t partial_len;
} client;

static const char usage_text[] =
    "usage: tcpkit connect HOST:PORT [OPTIONS]\n"
    "\n"
    "On a terminal: a '> ' prompt with line editing and history; server lines are\n"
    "shown as '< ...' as they arrive. Piped: raw bytes both ways; at end of input\n"
    "the sending side is closed and everything the server still sends is printed.\n"
    "\n"
    "      --connect-timeout SECS  give up connecting after this long (default 10)\n"
    "      --idle-timeout SECS     give up when nothing moves this long (default: never)\n"
    "  -4, -6                      IPv4 or IPv6 only\n"
    "      --nodelay               disable Nagle's algorithm\n"
    "      --keepalive             send TCP keepalive probes (after 60 s idle)\n"
    "      --raw                   piped behaviour even on a terminal\n" TLS_CLIENT_HELP
    "  -h, --help                  this help\n"
    "\n"
    "exit status: 0 done, 1 error, 2 usage, 3 refused, 4 timed out, 5 dropped\n";

static int status_for(int err)
{
    switch (err) {
    case 0: return 0;
    case -ECONNREFUSED: return EXIT_REFUSED;
    case -ETIMEDOUT: return EXIT_TIMEOUT;
    case -ECONNRESET:
    case -EPIPE: return EXIT_DROPPED;
    default: return 1;
    }
}

/* Interactive: prints one server line above the prompt, then redraws the
 * prompt with what the user has typed so far. */
static void show_line(client *cl, const char *s, size_t n)
{
    fputs("\r\033[K< ", stdout);
    fwrite(s, 1, n, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (cl->el && !cl->in_eof)
        el_set(cl->el, EL_REFRESH);
}

static size_t on_data(tk_conn *c, const unsigned char *data, size_t len)
{
    client *cl = tk_conn_data(c);
    if (!cl->interactive) {
        term_write_all(1, data, len);
        return len;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = (char)data[i];
        if (ch == '\n' || cl->partial_len == sizeof(cl->partial)) {
            size_t n = cl->partial_len;
            if (n && cl->partial[n - 1] == '\r')
                n--;
            show_line(cl, cl->partial, n);
            cl->partial_len = 0;
            if (ch == '\n')
                continue;
        }
        cl->partial[cl->partial_len++] = ch;
    }
    return len;
}

static void on_close(tk_conn *c, tk_close_reason why, int err)
{
    client *cl = tk_conn_data(c);
    cl->conn = NULL;
    if (cl->interactive && cl->partial_len)
        show_line(cl, cl->partial, cl->partial_len);
    switch (why) {
    case TK_CLOSE_PEER:
    case TK_CLOSE_LOCAL: cl->status = 0; break;
    case TK_CLOSE_IDLE:
        fprintf(stderr, "tcpkit connect: idle timeout\n");
        cl->status = EXIT_TIMEOUT;
        break;
    case TK_CLOSE_TLS:
        fprintf(stderr, "tcpkit connect: tls: %s\n", tk_conn_tls_error(c));
        cl->status = 1;
        break;
    default:
        fprintf(stderr, "tcpkit connect: connection dropped (%s%s%s)\n", tk_close_reason_name(why),
                err ? ": " : "", err ? strerror(-err) : "");
        cl->status = EXIT_DROPPED;
        break;
    }
    if (cl->in_io.live)
        tk_io_stop(cl->loop, &cl->in_io);
    cl->finished = 1;
    tk_loop_stop(cl->loop);
}

static void resume_input(tk_conn *c);

static const tk_conn_handler handler = {
    .on_data = on_data, .on_sent = resume_input, .on_close = on_close};

static void input_finished(client *cl)
{
    cl->in_eof = 1;
    if (cl->in_io.live)
        tk_io_stop(cl->loop, &cl->in_io);
    if (cl->conn)
        tk_conn_shutdown_write(cl->conn);
}

/* Piped: moves one chunk of stdin to the socket, pausing while the socket's
 * queue is over its watermark. */
static void read_stdin(client *cl)
{
    unsigned char buf[STDIN_CHUNK];
    ssize_t n = read(0, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        input_finished(cl);
        return;
    }
    if (tk_conn_write(cl->conn, buf, (size_t)n) < 0)
        return;
    if (tk_conn_pending(cl->conn) >= 256 * 1024 && cl->in_io.live)
        tk_io_stop(cl->loop, &cl->in_io);
    else if (!cl->in_pollable)
        tk_defer_queue(cl->loop, &cl->pump);
}

static void resume_input(tk_conn *c)
{
    client *cl = tk_conn_data(c);
    if (cl->in_eof || cl->interactive)
        return;
    if (cl->in_pollable)
        (void)tk_io_set(cl->loop, &cl->in_io, TK_READ);
    else
        tk_defer_queue(cl->loop, &cl->pump);
}

static void on_pump(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    client *cl = (client *)((char *)d - offsetof(client, pump));
    if (!cl->in_eof && cl->conn)
        read_stdin(cl);
}

static void on_stdin(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)events;
    client *cl = (client *)((char *)io - offsetof(client, in_io));
    if (cl->interactive) {
        /* The editor reads the key; stop serving the network until it asks. */
        cl->key_ready = 1;
        tk_loop_stop(loop);
    } else if (cl->conn) {
        read_stdin(cl);
    }
}

static void on_connected(tk_loop *loop, int fd, int err, void *arg)
{
    client *cl = arg;
    if (fd < 0) {
        fprintf(stderr, "tcpkit connect: %s\n",
                err == -ETIMEDOUT ? "connection timed out" : strerror(-err));
        cl->status = status_for(err);
        cl->finished = 1;
        tk_loop_stop(loop);
        return;
    }
    (void)tk_sock_apply(fd, &cl->sockopts);
    tk_conn_limits lim;
    tk_conn_limits_init(&lim);
    lim.idle_timeout_ms = cl->idle_ms;
    lim.stall_timeout_ms = 0;
    lim.high_water = 4 * 1024 * 1024; /* the server's output is never paused */
    lim.max_output = 64 * 1024 * 1024;
    lim.linger_ms = 0;
    if (tk_conn_new(loop, fd, &handler, &lim, cl, &cl->conn) < 0 ||
        tk_conn_start_tls(cl->conn, cl->tls, cl->tls_name) < 0) {
        cl->status = 1;
        cl->finished = 1;
        tk_loop_stop(loop);
        return;
    }
    if (cl->interactive)
        tk_loop_stop(loop); /* connected: hand the thread to the editor */
    tk_io_init(&cl->in_io, 0, on_stdin);
    if (tk_io_set(loop, &cl->in_io, TK_READ) == 0) {
        cl->in_pollable = 1;
    } else {
        tk_defer_init(&cl->pump, on_pump);
        tk_defer_queue(loop, &cl->pump);
    }
}

/* libedit's character source: the network is served until a key comes. */
static int editor_getc(EditLine *el, wchar_t *wc)
{
    client *cl;
    el_get(el, EL_CLIENTDATA, (void **)&cl);
    term_keys k = {cl->loop, &cl->key_ready, &cl->finished, NULL};
    return term_read_key(&k, wc);
}

static char *editor_prompt(EditLine *el)
{
    (void)el;
    return "> ";
}

/* The terminal session: edit lines, send them, until end of input or the
 * server goes away; then print what the server still sends. */
static void run_terminal(client *cl, const char *hist_file)
{
    HistEvent ev;
    History *h = history_init();
    history(h, &ev, H_SETSIZE, 1000);
    history(h, &ev, H_SETUNIQUE, 1);
    if (hist_file)
        history(h, &ev, H_LOAD, hist_file);
    cl->el = el_init("tcpkit", stdin, stdout, stderr);
    el_set(cl->el, EL_CLIENTDATA, cl);
    el_set(cl->el, EL_EDITOR, "emacs");
    el_set(cl->el, EL_PROMPT, editor_prompt);
    el_set(cl->el, EL_HIST, history, h);
    el_set(cl->el, EL_GETCFN, editor_getc);
    el_set(cl->el, EL_SIGNAL, 1);
    el_source(cl->el, NULL);

    int n;
    const char *line;
    while (!cl->finished && (line = el_gets(cl->el, &n)) && n > 0) {
        size_t len = (size_t)n;
        if (len > 1 && len < 4096) {
            char entry[4096];
            memcpy(entry, line, len - 1); /* without its newline */
            entry[len - 1] = '\0';
            history(h, &ev, H_ENTER, entry);
        }
        if (cl->conn)
            (void)tk_conn_write(cl->conn, line, len);
    }
    /* Leave the prompt line, whether the user ended input or the server did. */
    fputc('\n', stdout);
    if (!cl->finished)
        input_finished(cl);
    el_end(cl->el);
    cl->el = NULL;
    /* Everything the server still sends is printed before exiting. */
    while (!cl->finished)
        tk_loop_run(cl->loop);
    if (hist_file)
        history(h, &ev, H_SAVE, hist_file);
    history_end(h);
}

static int history_path(char *buf, size_t cap)
{
    const char *env = getenv("TCPKIT_HISTFILE");
    if (env)
        return snprintf(buf, cap, "%s", env) < (int)cap && *env;
    const char *home = getenv("HOME");
    return home && snprintf(buf, cap, "%s/.tcpkit_history", home) < (int)cap;
}

int cmd_connect(int argc, char **argv)
{
    enum { O_CT = 1000, O_IDLE, O_NODELAY, O_KEEPALIVE, O_RAW };
    static const struct option longopts[] = {
        {"connect-timeout", required_argument, NULL, O_CT},
        {"idle-timeout", required_argument, NULL, O_IDLE},
        {"nodelay", no_argument, NULL, O_NODELAY},
        {"keepalive", no_argument, NULL, O_KEEPALIVE},
        {"raw", no_argument, NULL, O_RAW},
        TLS_CLIENT_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    client cl = {.status = 1};
    uint32_t connect_ms = 10 * 1000;
    int family = AF_UNSPEC, raw = 0, ch, rc;
    tls_opts tls_o;
    tls_opts_init(&tls_o);
    tk_sockopts_init(&cl.sockopts);
    optind = 1;
    while ((ch = getopt_long(argc, argv, "46h", longopts, NULL)) != -1) {
        switch (ch) {
        case '4': family = AF_INET; break;
        case '6': family = AF_INET6; break;
        case O_CT:
            if (tk_parse_duration_ms(optarg, &connect_ms) < 0)
                return opt_usage_error("connect", "bad --connect-timeout '%s'", optarg);
            break;
        case O_IDLE:
            if (tk_parse_duration_ms(optarg, &cl.idle_ms) < 0)
                return opt_usage_error("connect", "bad --idle-timeout '%s'", optarg);
            break;
        case O_NODELAY: cl.sockopts.nodelay = 1; break;
        case O_KEEPALIVE:
            cl.sockopts.keepalive = 1;
            cl.sockopts.ka_idle_s = 60;
            break;
        case O_RAW: raw = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default:
            if ((rc = tls_option(&tls_o, "connect", ch, optarg)) >= 0) {
                if (rc)
                    return rc;
                break;
            }
            fprintf(stderr, "Try 'tcpkit connect --help'.\n");
            return 2;
        }
    }
    if (argc - optind != 1)
        return opt_usage_error("connect", "expected one HOST:PORT argument");
    tk_log_configure(TK_LOG_WARN, TK_LOG_TEXT, 2);

    tk_addr addrs[MAX_ADDRS];
    int n = tk_addr_resolve(argv[optind], family, 0, addrs, MAX_ADDRS);
    if (n == -EINVAL)
        return opt_usage_error("connect", "bad address '%s' (want HOST:PORT or [IPv6]:PORT)",
                               argv[optind]);
    if (n < 0) {
        fprintf(stderr, "tcpkit connect: cannot resolve '%s'\n", argv[optind]);
        return 1;
    }
    char tls_name[TK_HOST_MAX];
    if ((rc = tls_build(&tls_o, "connect", 0, &cl.tls)) != 0)
        return rc;
    cl.tls_name = tls_peer_name(&tls_o, argv[optind], tls_name);
    signal(SIGPIPE, SIG_IGN);
    cl.interactive = !raw && isatty(0) && isatty(1);
    if (cl.interactive)
        setlocale(LC_CTYPE, "");
    if (tk_loop_new(&cl.loop) < 0) {
        tk_tls_ctx_free(cl.tls);
        return 1;
    }
    if (tk_dial_start(cl.loop, addrs, (size_t)n, connect_ms, on_connected, &cl, NULL) < 0) {
        tk_loop_free(cl.loop);
        tk_tls_ctx_free(cl.tls);
        return 1;
    }
    tk_loop_run(cl.loop);
    if (cl.interactive && !cl.finished) {
        char hist[1024];
        run_terminal(&cl, history_path(hist, sizeof(hist)) ? hist : NULL);
    } else if (!cl.interactive && !cl.finished) {
        tk_loop_run(cl.loop);
    }
    if (cl.conn)
        tk_conn_close(cl.conn, TK_CLOSE_LOCAL, 0);
    if (cl.in_io.live)
        tk_io_stop(cl.loop, &cl.in_io);
    tk_loop_free(cl.loop);
    tk_tls_ctx_free(cl.tls);
    return cl.status;
}

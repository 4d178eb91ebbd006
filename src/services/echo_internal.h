/* Shared between the echo service's files; not part of the public API. */
#ifndef TK_ECHO_INTERNAL_H
#define TK_ECHO_INTERNAL_H

#include "tcpkit/codec.h"
#include "tcpkit/conn.h"
#include "tcpkit/echo.h"

typedef struct echo_loop echo_loop;
typedef struct echo_client echo_client;

struct echo_client {
    echo_client *prev;
    echo_client *next;
    echo_loop *el;
    tk_conn *conn;
    tk_line_decoder dec;
    uint64_t owed;          /* requests answered but not yet sent */
    uint64_t owed_since_us; /* when the oldest of them was read */
};

struct echo_loop {
    tk_echo *e;
    unsigned index;
    tk_loop *loop;
    tk_metrics_slot *metrics;
    echo_client *clients;
    size_t nclients;
    int shutting_down;
    int udp_fd;
    tk_io udp_io;
    struct echo_udp *udp; /* datagram buffers, only on a UDP server */
};

struct tk_echo {
    tk_echo_config cfg;
    tk_server *server;
    tk_metrics *metrics;
    tk_conn_limits limits;
    unsigned nloops;
    echo_loop *loops;
    unsigned char busy[128]; /* the refusal, framed */
    size_t busy_len;
};

/* The reply text notifying clients of a shutdown. */
#define ECHO_SHUTDOWN_TEXT "Server shutting down"
#define ECHO_GOODBYE_TEXT  "Goodbye!"

/* Counts n requests answered on this connection (response time is taken when
 * their replies leave). */
void echo_owe(echo_client *cl, uint64_t n);

/* The RFC 3339 UTC time with milliseconds; buf needs 32 bytes. */
size_t echo_format_time(char *buf, size_t cap);

/* JSON-lines framing: answers one request line; returns 0 for a blank line,
 * which is ignored, and 1 otherwise. */
int echo_json_line(echo_client *cl, const unsigned char *line, size_t n);

/* JSON-lines framing: the error for a line over --max-line. */
void echo_json_too_long(echo_client *cl);

/* JSON-lines framing: one pushed notice {"type":name,"payload":{...message}}. */
void echo_json_notice(tk_conn *c, const char *type, const char *message);

/* UDP: starts serving datagrams on fd on this loop; returns 0 or -errno. */
int echo_udp_start(echo_loop *el, int fd);

/* UDP: stops and closes the socket. */
void echo_udp_stop(echo_loop *el);

/* One parsed line-protocol request. */
typedef struct {
    tk_echo_cmd cmd;
    const unsigned char *line;
    size_t len;
    const unsigned char *arg;
    size_t arg_len;
} echo_req;

/* Parses a line into req. */
void echo_parse(const unsigned char *line, size_t n, echo_req *req);

/* The most bytes echo_reply() can write for req. */
size_t echo_reply_bound(const echo_req *req);

/* Answers req into out (cap >= echo_reply_bound(req)); returns the reply
 * length and sets *quit for QUIT. */
size_t echo_reply(tk_echo *e, const echo_req *req, unsigned char *out, size_t cap, int *quit);

#endif

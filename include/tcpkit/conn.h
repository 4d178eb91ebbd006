/* A connection: socket, input buffer, output queue with watermarks, idle and
 * write-stall timers, half-close and close-after-flush. Services see bytes in
 * and bytes out; they never call read() or write() themselves.
 *
 * Input: on_data() receives every unconsumed byte and returns how many it
 * used; the rest is kept (up to max_input) for the next call. Memory for
 * input and output exists only while bytes are in flight.
 *
 * Output: writes are queued and sent once per loop turn (one sendmsg for all
 * replies produced in that turn). Above high_water the connection stops
 * reading its own input, so a peer that does not read cannot make the server
 * buffer without bound; above max_output it is dropped. Output that makes no
 * progress for stall_timeout_ms also drops it. */
#ifndef TCPKIT_CONN_H
#define TCPKIT_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/addr.h"
#include "tcpkit/buf.h"
#include "tcpkit/loop.h"
#include "tcpkit/metrics.h"
#include "tcpkit/tls.h"

typedef struct tk_conn tk_conn;

/* Why a connection ended; logged and counted by services. */
typedef enum {
    TK_CLOSE_PEER = 0, /* the peer closed (EOF after everything was answered) */
    TK_CLOSE_LOCAL,    /* the service closed it (QUIT, protocol end) */
    TK_CLOSE_IDLE,     /* idle timeout */
    TK_CLOSE_STALL,    /* output made no progress for the stall timeout */
    TK_CLOSE_LIMIT,    /* an input or output limit was exceeded */
    TK_CLOSE_SHUTDOWN, /* server shutdown */
    TK_CLOSE_RESET,    /* the peer reset the connection */
    TK_CLOSE_ERROR,    /* another socket error */
    TK_CLOSE_TLS,      /* TLS failed: handshake refused or timed out, not TLS, bad record */
    TK_CLOSE_REASONS
} tk_close_reason;

/* A short lower-case name for the reason ("peer", "idle", ...). */
const char *tk_close_reason_name(tk_close_reason r);

typedef struct {
    /* Bytes arrived: data[0..len) is all unconsumed input. Returns how many
     * bytes were used (0..len). The connection may be closed inside. */
    size_t (*on_data)(tk_conn *c, const unsigned char *data, size_t len);
    /* The peer finished sending; rest[0..len) is input on_data left unused.
     * NULL: close once the output is flushed. */
    void (*on_eof)(tk_conn *c, const unsigned char *rest, size_t len);
    /* The output queue emptied after a send (optional). */
    void (*on_sent)(tk_conn *c);
    /* The last callback, run from the loop after the current callback
     * returns (never from inside tk_conn_close): the connection is gone
     * once it returns (optional). */
    void (*on_close)(tk_conn *c, tk_close_reason why, int err);
    /* A TLS connection finished its handshake (optional; never called for
     * plain connections). */
    void (*on_ready)(tk_conn *c);
} tk_conn_handler;

typedef struct {
    size_t max_input;          /* unconsumed input kept, bytes */
    size_t high_water;         /* output bytes above which reading pauses */
    size_t low_water;          /* output bytes below which reading resumes */
    size_t max_output;         /* output bytes above which the peer is dropped */
    uint32_t idle_timeout_ms;  /* no bytes either way for this long: close; 0 off */
    uint32_t stall_timeout_ms; /* queued output with no progress: close; 0 off */
    uint32_t linger_ms;        /* how long a graceful close waits for the peer's FIN */
} tk_conn_limits;

/* Defaults: 64 KiB input, 64/16 KiB watermarks, 1 MiB output, no idle
 * timeout, 30 s stall, 2 s linger. */
void tk_conn_limits_init(tk_conn_limits *l);

/* Wraps a connected non-blocking socket (taken over, closed on failure).
 * Returns 0 or a negative errno. */
int tk_conn_new(tk_loop *loop, int fd, const tk_conn_handler *h, const tk_conn_limits *lim,
                void *data, tk_conn **out);

/* Makes c speak TLS with ctx (a server or client context; NULL leaves c
 * plain and returns 0). Call right after tk_conn_new(), before any byte has
 * moved. Output queued before the handshake completes goes out after it;
 * input is delivered only after it. A handshake that fails or passes the
 * context's timeout closes c with TK_CLOSE_TLS, dropping queued output; a
 * server whose client does not open with a TLS record (plain text) shuts
 * the connection down cleanly. peer_name: see tk_tls_new(). Returns 0, or
 * a negative errno with c closed. */
int tk_conn_start_tls(tk_conn *c, tk_tls_ctx *ctx, const char *peer_name);

/* The TLS session, or NULL for a plain connection. */
tk_tls *tk_conn_tls(const tk_conn *c);

/* Why TLS failed on c, for logs and users; "" if it has not failed. Valid
 * until on_close returns. */
const char *tk_conn_tls_error(const tk_conn *c);

/* The service's pointer given to tk_conn_new. */
void *tk_conn_data(const tk_conn *c);
void tk_conn_set_data(tk_conn *c, void *data);

/* The loop and the socket descriptor. */
tk_loop *tk_conn_loop(const tk_conn *c);
int tk_conn_fd(const tk_conn *c);

/* The peer's address (filled at creation). */
const tk_addr *tk_conn_peer(const tk_conn *c);

/* Replaces the peer's address with the one accept() returned: getpeername()
 * at creation fails for a client that already reset, and a server must count
 * it out under the address it was counted in with. */
void tk_conn_set_peer(tk_conn *c, const tk_addr *peer);

/* Monotonic microseconds of the read that delivered the current input. */
uint64_t tk_conn_read_time_us(const tk_conn *c);

/* Queues n bytes for sending. Returns 0; -EPIPE if the connection is closing
 * or half-closed for writing; -ENOBUFS if max_output was passed (the
 * connection is then being dropped). */
int tk_conn_write(tk_conn *c, const void *p, size_t n);

/* Returns room for up to n bytes at the end of the output queue, to encode
 * into directly, or NULL if the connection is closing or n would pass
 * max_output (it is then dropped). Follow with tk_conn_write_commit(). */
unsigned char *tk_conn_write_reserve(tk_conn *c, size_t n);

/* Queues the first used bytes of the space tk_conn_write_reserve() gave. */
void tk_conn_write_commit(tk_conn *c, size_t used);

/* Queues a reference to a shared chunk (no copy); same returns. */
int tk_conn_write_shared(tk_conn *c, tk_shared *s);

/* An open file whose byte ranges can be queued on connections and sent with
 * sendfile(), never copied through user memory. Reference-counted; not
 * thread-safe: one loop uses it. */
typedef struct tk_file tk_file;

/* Wraps fd (taken over) with one reference; NULL (fd closed) when out of
 * memory. */
tk_file *tk_file_new(int fd);

/* Adds a reference and returns f. */
tk_file *tk_file_ref(tk_file *f);

/* Drops a reference; the last one closes the descriptor. NULL is ignored. */
void tk_file_unref(tk_file *f);

/* The descriptor (still owned by f). */
int tk_file_fd(const tk_file *f);

/* Queues len bytes of f starting at offset off, after what is queued
 * already; they are sent with sendfile(). They count in tk_conn_pending()
 * and the stall timer but not against high_water or max_output, since no
 * memory holds them. If the file ends before the range does, the connection
 * is closed (TK_CLOSE_ERROR, -ENODATA). Returns 0, -EPIPE if closing or
 * half-closed, or -ENOMEM (then closed). */
int tk_conn_write_file(tk_conn *c, tk_file *f, uint64_t off, size_t len);

/* Output bytes queued and not yet accepted by the kernel. */
size_t tk_conn_pending(const tk_conn *c);

/* Sends FIN once the queued output is flushed; reading goes on. */
void tk_conn_shutdown_write(tk_conn *c);

/* Flushes the queued output, sends FIN, waits up to linger_ms for the peer to
 * close (discarding its input), then closes. No more input is delivered. */
void tk_conn_close_after_flush(tk_conn *c, tk_close_reason why);

/* Closes at once, dropping queued output. */
void tk_conn_close(tk_conn *c, tk_close_reason why, int err);

/* True once a close (immediate or after flush) has begun. */
int tk_conn_closing(const tk_conn *c);

/* Stops or restarts delivering input (independent of backpressure pauses).
 * On resume, input received but not consumed before the pause is offered to
 * on_data again from the loop, without waiting for more bytes. */
void tk_conn_pause_read(tk_conn *c);
void tk_conn_resume_read(tk_conn *c);

/* Reads and processes input already in the socket right now, without
 * waiting (used before a graceful close so requests already sent are
 * answered). */
void tk_conn_drain_input(tk_conn *c);

/* Counts this connection's bytes into a metrics slot as they move. */
void tk_conn_set_metrics(tk_conn *c, tk_metrics_slot *slot);

/* Bytes received and sent over the connection's life. */
uint64_t tk_conn_bytes_in(const tk_conn *c);
uint64_t tk_conn_bytes_out(const tk_conn *c);

#endif

/* A relay joins two connected sockets, A and B, and moves bytes both ways
 * through a kernel pipe per direction: bulk data with splice(), so it never
 * passes through user memory; small reads (under 16 KiB) are copied through
 * the loop's scratch buffer, which costs less for them. Bytes the
 * destination cannot take yet wait in the pipe, never in user memory, and
 * each direction holds at most one pipe of bytes: when
 * the receiving side stops reading, the relay stops reading the sending
 * side, and TCP flow control pushes back on the sender. A FIN from one side
 * is passed on as a write shutdown of the other (half-close), and the relay
 * ends once both directions have finished, a side fails, or a side is idle
 * too long. Knows no protocol.
 *
 * Side A may speak TLS (a session whose handshake is done): its bytes are
 * decrypted into the loop's scratch buffer and go on to B as in the copy
 * path, with what B cannot take waiting in the pipe; B's bytes are read into
 * the scratch buffer and encrypted towards A, and what A's socket cannot take
 * yet waits in a buffer of at most one read (the pipe size, up to the
 * scratch size), allocated only while bytes wait. B's FIN becomes a
 * close_notify, then a write shutdown, towards A. */
#ifndef TCPKIT_RELAY_H
#define TCPKIT_RELAY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tcpkit/loop.h"
#include "tcpkit/tls.h"

typedef struct tk_relay tk_relay;

/* How a relay ended. */
typedef enum {
    TK_RELAY_DONE_A = 0, /* both directions finished; A sent its FIN first */
    TK_RELAY_DONE_B,     /* both directions finished; B sent its FIN first */
    TK_RELAY_ERROR_A,    /* a socket error on A (reset, ...); B is reset too */
    TK_RELAY_ERROR_B,    /* a socket error on B; A is reset too */
    TK_RELAY_IDLE_A,     /* no bytes to or from A for idle_ms[0] */
    TK_RELAY_IDLE_B,     /* no bytes to or from B for idle_ms[1] */
} tk_relay_end;

/* Called once when the relay ends, with err the socket error (negative
 * errno) for TK_RELAY_ERROR_*, else 0; a TLS failure on A is
 * TK_RELAY_ERROR_A with -EPROTO (tk_relay_tls_error says why). The relay,
 * both sockets and A's TLS session are closed and freed when it returns. */
typedef void (*tk_relay_cb)(tk_relay *r, tk_relay_end end, int err, void *arg);

typedef struct {
    size_t pipe_size;     /* bytes per direction's pipe; 0: the kernel's default */
    uint32_t idle_ms[2];  /* A's and B's idle limits; 0: none */
    int a_eof;            /* A already sent its FIN: B's write side is shut once
                             head is delivered */
    const void *preamble; /* the relay's own bytes for B, sent first and not
                             counted as relayed (a PROXY header) */
    size_t preamble_len;
    const void *head; /* A's bytes read earlier, sent to B next (counted) */
    size_t head_len;
    /* Optional counters the relay adds to as bytes reach B and A
     * (relaxed atomics, so other threads may read them live). */
    _Atomic uint64_t *count_a2b;
    _Atomic uint64_t *count_b2a;
    /* A's TLS session on socket a, handshake done; NULL: A is plain. */
    tk_tls *tls_a;
} tk_relay_opts;

/* Starts relaying between the connected non-blocking sockets a and b, which
 * it takes over with opts->tls_a (all closed and freed on failure too).
 * preamble and head are copied. Returns 0 or a negative errno (-EMFILE or
 * -ENFILE when no pipe could be made). */
int tk_relay_start(tk_loop *loop, int a, int b, const tk_relay_opts *opts, tk_relay_cb cb,
                   void *arg, tk_relay **out);

/* Closes both sockets at once and frees the relay; the callback is not
 * called. Data in flight is dropped and both peers get a reset. */
void tk_relay_close(tk_relay *r);

/* Why TLS failed on A, for the callback's log line; "" for a plain A or
 * when TLS did not fail. */
const char *tk_relay_tls_error(const tk_relay *r);

/* Bytes delivered so far from A to B (head included, preamble not) and from
 * B to A. */
uint64_t tk_relay_bytes_a2b(const tk_relay *r);
uint64_t tk_relay_bytes_b2a(const tk_relay *r);

/* Empty pipes kept per thread for reuse by later relays (default 64; 0
 * keeps none). Applies to the calling thread. */
void tk_relay_set_pipe_cache(size_t max);

#endif

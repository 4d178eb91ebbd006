/* TLS (OpenSSL) as a second transport under connections. A context holds
 * the certificates and the policy and is shared read-only by every loop; a
 * session wraps one non-blocking socket. Nothing here blocks: every call
 * that would wait returns -EAGAIN and tk_tls_want() says for what.
 *
 * Policy: TLS 1.2 at least, 1.3 preferred; a client verifies the server's
 * chain against the system store (or ca_file) and its host name or IP
 * address, and sends SNI for names; a server given ca_file requires a
 * client certificate signed by it. Kernel TLS is used where the OpenSSL
 * build and the kernel both allow it, so file ranges go out with sendfile(). */
#ifndef TCPKIT_TLS_H
#define TCPKIT_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tk_tls_ctx tk_tls_ctx;
typedef struct tk_tls tk_tls;

typedef struct {
    const char *cert_file;         /* PEM chain: the server's, or a client's own (optional) */
    const char *key_file;          /* PEM private key for cert_file */
    const char *ca_file;           /* server: CAs for client certificates (mutual TLS);
                                      client: trusted CAs instead of the system store */
    int insecure;                  /* client only: skip every verification */
    int verify_soft;               /* client only: verify, but let the handshake complete when
                                      verification fails; tk_tls_verify_error() says why (for a
                                      scanner, which sends nothing the peer could misuse) */
    int min_version;               /* 0x0303 (TLS 1.2, the default) or 0x0304 (TLS 1.3) */
    uint32_t handshake_timeout_ms; /* a handshake not done by then fails (10 s) */
    int ktls;                      /* try kernel TLS (1, the default) */
} tk_tls_config;

/* Fills the defaults: no files, verification on, TLS 1.2 minimum, 10 s
 * handshake timeout, kernel TLS tried. */
void tk_tls_config_init(tk_tls_config *c);

/* Builds a server (is_server != 0) or client context: loads and checks the
 * certificate, key and CA files. Returns 0 or a negative errno with a
 * message naming the file and the reason in err. */
int tk_tls_ctx_new(const tk_tls_config *c, int is_server, tk_tls_ctx **out, char *err,
                   size_t errcap);

/* Frees a context; sessions made from it may outlive it. NULL is ignored. */
void tk_tls_ctx_free(tk_tls_ctx *ctx);

/* The context's handshake timeout in milliseconds. */
uint32_t tk_tls_ctx_handshake_timeout(const tk_tls_ctx *ctx);

/* True for a server context. */
int tk_tls_ctx_is_server(const tk_tls_ctx *ctx);

/* True for a client context that checks the server's certificate (not
 * insecure). */
int tk_tls_ctx_verifies(const tk_tls_ctx *ctx);

/* Starts a session on the connected socket fd (not taken over). For a
 * client, peer_name is the host name or address to verify and, when a name,
 * to send as SNI; NULL checks nothing but the chain. Returns 0 or -ENOMEM. */
int tk_tls_new(tk_tls_ctx *ctx, int fd, const char *peer_name, tk_tls **out);

/* What a call that returned -EAGAIN waits for. */
enum { TK_TLS_WANT_READ = 1, TK_TLS_WANT_WRITE = 2 };
unsigned tk_tls_want(const tk_tls *t);

/* Advances the handshake: 0 once it is complete, -EAGAIN to be called again
 * when tk_tls_want() is ready, or another negative errno (-EPROTO for a
 * protocol or verification failure, -ECONNRESET, ...) with the reason in
 * tk_tls_error(). */
int tk_tls_handshake(tk_tls *t);

/* Reads decrypted bytes: n > 0, 0 at the peer's end of stream, -EAGAIN, or
 * another negative errno. */
ssize_t tk_tls_read(tk_tls *t, void *buf, size_t n);

/* Encrypts and sends up to n bytes: how many were taken (> 0), -EAGAIN, or
 * another negative errno. After -EAGAIN the same bytes must be offered
 * again (they may have moved, and more may follow them). */
ssize_t tk_tls_write(tk_tls *t, const void *buf, size_t n);

/* Sends n bytes of file fd from off through kernel TLS: bytes sent, -EAGAIN,
 * -EOPNOTSUPP when kernel TLS is not active (use tk_tls_write), or another
 * negative errno. */
ssize_t tk_tls_sendfile(tk_tls *t, int fd, uint64_t off, size_t n);

/* True when decrypted bytes are buffered and can be read without waiting
 * for the socket. */
int tk_tls_pending(const tk_tls *t);

/* Sends close_notify without waiting for the peer's: 0 once it is out (or
 * when the handshake never finished: nothing to send), -EAGAIN when the
 * socket took only part of it (call again when tk_tls_want() is ready), or
 * another negative errno. Callers that do not care ignore the result. */
int tk_tls_shutdown(tk_tls *t);

/* Why the last call failed, for logs and users ("certificate verify failed:
 * certificate has expired", ...); "" if nothing failed. */
const char *tk_tls_error(const tk_tls *t);

/* After a client's handshake: why the server's certificate or name did not
 * verify ("self-signed certificate", ...), or NULL when it verified or was
 * not checked (--tls-insecure). Only a verify_soft context gets this far
 * with a failure; any other fails the handshake instead. */
const char *tk_tls_verify_error(const tk_tls *t);

/* After the handshake: the protocol ("TLSv1.3") and cipher names, and
 * whether kernel TLS carries sent records. */
const char *tk_tls_version(const tk_tls *t);
const char *tk_tls_cipher(const tk_tls *t);
int tk_tls_ktls_send(const tk_tls *t);

/* Whether this kernel offers kernel TLS (the "tls" upper-layer protocol):
 * 1 yes, 0 no (module absent), or a negative errno if it could not tell.
 * The OpenSSL build must support it too (see tk_tls_ktls_send). */
int tk_tls_kernel_available(void);

/* Frees the session (the socket stays open). NULL is ignored. */
void tk_tls_free(tk_tls *t);

#endif

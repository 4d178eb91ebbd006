/* TLS sessions on non-blocking sockets, over OpenSSL. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tcpkit/tls.h"

/* The first byte of every TLS connection: a handshake record. */
#define TLS_RECORD_HANDSHAKE 0x16

struct tk_tls_ctx {
    SSL_CTX *ssl;
    int is_server;
    int verifies; /* a client that checks the server's certificate */
    uint32_t handshake_timeout_ms;
};

struct tk_tls {
    SSL *ssl;
    int fd;
    unsigned want;
    unsigned char is_server;
    unsigned char verifies;
    unsigned char first_byte_seen; /* server: the client's first byte was a TLS record */
    /* Why the last call failed: static strings from OpenSSL or from here,
     * so a session carries no message buffer. */
    const char *err_what;
    const char *err_detail;
};

void tk_tls_config_init(tk_tls_config *c)
{
    memset(c, 0, sizeof(*c));
    c->min_version = TLS1_2_VERSION;
    c->handshake_timeout_ms = 10 * 1000;
    c->ktls = 1;
}

/* The reason at the head of OpenSSL's error queue, or fallback. */
static const char *openssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : fallback;
}

static int ctx_fail(SSL_CTX *ssl, char *err, size_t cap, const char *what, const char *file)
{
    snprintf(err, cap, "tls: %s%s%s: %s", what, file ? " " : "", file ? file : "",
             openssl_reason("unknown error"));
    ERR_clear_error();
    SSL_CTX_free(ssl);
    return -EINVAL;
}

int tk_tls_ctx_new(const tk_tls_config *c, int is_server, tk_tls_ctx **out, char *err,
                   size_t errcap)
{
    ERR_clear_error();
    if (c->min_version != TLS1_2_VERSION && c->min_version != TLS1_3_VERSION) {
        snprintf(err, errcap, "tls: the minimum version must be TLS 1.2 or 1.3");
        return -EINVAL;
    }
    if (!c->cert_file != !c->key_file) {
        snprintf(err, errcap, "tls: %s %s comes without its %s",
                 c->cert_file ? "the certificate" : "the key",
                 c->cert_file ? c->cert_file : c->key_file, c->cert_file ? "key" : "certificate");
        return -EINVAL;
    }
    if (is_server && !c->cert_file) {
        snprintf(err, errcap, "tls: a server needs a certificate and its key");
        return -EINVAL;
    }
    SSL_CTX *ssl = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
    if (!ssl)
        return ctx_fail(NULL, err, errcap, "cannot create a context", NULL);
    SSL_CTX_set_min_proto_version(ssl, c->min_version);
    /* Writes may be partial and retried from a moved buffer (the output
     * queue), and idle sessions give their record buffers back. */
    SSL_CTX_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* A peer that ends with a plain FIN rather than close_notify ends the
     * stream normally; tcpkit's framed protocols carry their own lengths. */
    uint64_t opts = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF;
    if (is_server)
        opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
#ifdef SSL_OP_ENABLE_KTLS
    if (c->ktls)
        opts |= SSL_OP_ENABLE_KTLS;
#endif
    SSL_CTX_set_options(ssl, opts);
    /* Whole socket buffers at a time rather than a header and then a body
     * per record: half the reads. What is decrypted but not yet taken is
     * found by tk_tls_pending(). */
    SSL_CTX_set_read_ahead(ssl, 1);

    if (c->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(ssl, c->cert_file) != 1)
            return ctx_fail(ssl, err, errcap, "cannot load the certificate", c->cert_file);
        if (SSL_CTX_use_PrivateKey_file(ssl, c->key_file, SSL_FILETYPE_PEM) != 1)
            return ctx_fail(ssl, err, errcap, "cannot load the key", c->key_file);
        if (SSL_CTX_check_private_key(ssl) != 1)
            return ctx_fail(ssl, err, errcap, "the key does not match the certificate",
                            c->key_file);
    }
    if (is_server) {
        static const unsigned char sid_ctx[] = "tcpkit";
        SSL_CTX_set_session_id_context(ssl, sid_ctx, sizeof(sid_ctx) - 1);
        if (c->ca_file) {
            if (SSL_CTX_load_verify_locations(ssl, c->ca_file, NULL) != 1)
                return ctx_fail(ssl, err, errcap, "cannot load the client CA file", c->ca_file);
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca_file);
            if (!names)
                return ctx_fail(ssl, err, errcap, "no CA names in", c->ca_file);
            SSL_CTX_set_client_CA_list(ssl, names);
            SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    } else if (c->insecure) {
        SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    } else {
        if (c->ca_file) {
            if (SSL_CTX_load_verify_locations(ssl, c->ca_file, NULL) != 1)
                return ctx_fail(ssl, err, errcap, "cannot load the CA file", c->ca_file);
        } else if (SSL_CTX_set_default_verify_paths(ssl) != 1) {
            return ctx_fail(ssl, err, errcap, "cannot load the system CA store", NULL);
        }
        /* Soft: OpenSSL still checks the chain and the name and keeps the
         * result, but does not end the handshake over it. */
        SSL_CTX_set_verify(ssl, c->verify_soft ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    }

    tk_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        SSL_CTX_free(ssl);
        snprintf(err, errcap, "tls: out of memory");
        return -ENOMEM;
    }
    ctx->ssl = ssl;
    ctx->is_server = is_server != 0;
    ctx->verifies = !is_server && !c->insecure;
    ctx->handshake_timeout_ms = c->handshake_timeout_ms;
    *out = ctx;
    return 0;
}

void tk_tls_ctx_free(tk_tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl); /* sessions hold their own reference */
    free(ctx);
}

uint32_t tk_tls_ctx_handshake_timeout(const tk_tls_ctx *ctx)
{
    return ctx->handshake_timeout_ms;
}

int tk_tls_ctx_is_server(const tk_tls_ctx *ctx)
{
    return ctx->is_server;
}

int tk_tls_ctx_verifies(const tk_tls_ctx *ctx)
{
    return ctx->verifies;
}

/* True if name is an IPv4 or IPv6 literal. */
static int is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

int tk_tls_new(tk_tls_ctx *ctx, int fd, const char *peer_name, tk_tls **out)
{
    tk_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    ERR_clear_error();
    t->ssl = SSL_new(ctx->ssl);
    if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1)
        goto fail;
    t->fd = fd;
    t->is_server = (unsigned char)ctx->is_server;
    t->verifies = (unsigned char)ctx->verifies;
    if (ctx->is_server) {
        SSL_set_accept_state(t->ssl);
        t->want = TK_TLS_WANT_READ;
    } else {
        SSL_set_connect_state(t->ssl);
        t->want = TK_TLS_WANT_WRITE;
        if (peer_name && *peer_name) {
            if (is_ip_literal(peer_name)) {
                /* Addresses are checked against IP entries; SNI carries names only. */
                if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), peer_name) != 1)
                    goto fail;
            } else if (SSL_set_tlsext_host_name(t->ssl, peer_name) != 1 ||
                       SSL_set1_host(t->ssl, peer_name) != 1) {
                goto fail;
            }
        }
    }
    *out = t;
    return 0;
fail:
    ERR_clear_error();
    SSL_free(t->ssl);
    free(t);
    return -ENOMEM;
}

unsigned tk_tls_want(const tk_tls *t)
{
    return t->want;
}

static void set_error(tk_tls *t, const char *what, const char *detail)
{
    t->err_what = what;
    t->err_detail = detail;
}

/* Turns an OpenSSL failure into -EAGAIN (with want set), 0 for the peer's
 * end of stream, or a negative errno with the reason recorded. */
static int map_error(tk_tls *t, int ret, const char *op)
{
    int e = SSL_get_error(t->ssl, ret);
    int saved = errno;
    switch (e) {
    case SSL_ERROR_WANT_READ: t->want = TK_TLS_WANT_READ; return -EAGAIN;
    case SSL_ERROR_WANT_WRITE: t->want = TK_TLS_WANT_WRITE; return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (saved == 0 || saved == EAGAIN) {
            set_error(t, op, "the peer closed the connection");
            return -ECONNRESET;
        }
        set_error(t, op, strerror(saved));
        return -saved;
    default: {
        long v = SSL_get_verify_result(t->ssl);
        if (v != X509_V_OK && !SSL_is_init_finished(t->ssl))
            set_error(t, "certificate verify failed", X509_verify_cert_error_string(v));
        else
            set_error(t, op, openssl_reason("protocol error"));
        ERR_clear_error();
        return -EPROTO;
    }
    }
}

/* Server side, before OpenSSL reads anything: a client whose first byte is
 * not a TLS handshake record is speaking something else (plain text). */
static int check_first_byte(tk_tls *t)
{
    unsigned char b;
    ssize_t n = recv(t->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 1) {
        if (b != TLS_RECORD_HANDSHAKE) {
            set_error(t, "handshake", "the client does not speak TLS (plain text?)");
            return -EPROTO;
        }
        t->first_byte_seen = 1;
        return 0;
    }
    if (n == 0) {
        set_error(t, "handshake", "the peer closed the connection");
        return -ECONNRESET;
    }
    if (errno == EAGAIN || errno == EINTR) {
        t->want = TK_TLS_WANT_READ;
        return -EAGAIN;
    }
    int err = -errno;
    set_error(t, "handshake", strerror(-err));
    return err;
}

int tk_tls_handshake(tk_tls *t)
{
    if (t->is_server && !t->first_byte_seen) {
        int err = check_first_byte(t);
        if (err < 0)
            return err;
    }
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->want = 0;
        return 0;
    }
    int err = map_error(t, r, "handshake");
    return err == 0 ? (set_error(t, "handshake", "the peer closed the connection"), -ECONNRESET)
                    : err;
}

ssize_t tk_tls_read(tk_tls *t, void *buf, size_t n)
{
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(t->ssl, buf, n, &got) == 1)
        return (ssize_t)got;
    return map_error(t, 0, "read");
}

ssize_t tk_tls_write(tk_tls *t, const void *buf, size_t n)
{
    size_t put = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_write_ex(t->ssl, buf, n, &put) == 1)
        return (ssize_t)put;
    int err = map_error(t, 0, "write");
    return err == 0 ? -EPIPE : err;
}

int tk_tls_ktls_send(const tk_tls *t)
{
#ifndef OPENSSL_NO_KTLS
    return BIO_get_ktls_send(SSL_get_wbio(t->ssl)) ? 1 : 0;
#else
    (void)t;
    return 0;
#endif
}

ssize_t tk_tls_sendfile(tk_tls *t, int fd, uint64_t off, size_t n)
{
#ifndef OPENSSL_NO_KTLS
    if (!tk_tls_ktls_send(t))
        return -EOPNOTSUPP;
    ERR_clear_error();
    errno = 0;
    ossl_ssize_t w = SSL_sendfile(t->ssl, fd, (off_t)off, n, 0);
    if (w > 0)
        return (ssize_t)w;
    if (w == 0) {
        set_error(t, "sendfile", "the file ended early");
        return -ENODATA;
    }
    int err = map_error(t, (int)w, "sendfile");
    return err == 0 ? -EPIPE : err;
#else
    (void)t;
    (void)fd;
    (void)off;
    (void)n;
    return -EOPNOTSUPP;
#endif
}

int tk_tls_pending(const tk_tls *t)
{
    return SSL_pending(t->ssl) > 0 || SSL_has_pending(t->ssl);
}

int tk_tls_shutdown(tk_tls *t)
{
    if (!SSL_is_init_finished(t->ssl))
        return 0;
    ERR_clear_error();
    errno = 0;
    /* 0: our close_notify is out; 1: the peer's had come too. Called again
     * after WANT_WRITE, it flushes what is left of the alert. The reply is
     * never awaited. */
    int r = SSL_shutdown(t->ssl);
    if (r >= 0) {
        ERR_clear_error();
        return 0;
    }
    int err = map_error(t, r, "shutdown");
    return err == 0 ? 0 : err;
}

const char *tk_tls_error(const tk_tls *t)
{
    static __thread char msg[256];
    if (!t || !t->err_what)
        return "";
    snprintf(msg, sizeof(msg), "%s%s%s", t->err_what, t->err_detail ? ": " : "",
             t->err_detail ? t->err_detail : "");
    return msg;
}

const char *tk_tls_verify_error(const tk_tls *t)
{
    if (!t->verifies || !SSL_is_init_finished(t->ssl))
        return NULL;
    long v = SSL_get_verify_result(t->ssl);
    return v == X509_V_OK ? NULL : X509_verify_cert_error_string(v);
}

const char *tk_tls_version(const tk_tls *t)
{
    return SSL_get_version(t->ssl);
}

const char *tk_tls_cipher(const tk_tls *t)
{
    return SSL_get_cipher_name(t->ssl);
}

int tk_tls_kernel_available(void)
{
    /* Asking an unconnected socket for the "tls" protocol fails with ENOENT
     * when the kernel has no such module, and with ENOTCONN when it has. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3);
    int err = r < 0 ? errno : 0;
    close(fd);
    if (err == ENOENT)
        return 0;
    if (err == ENOTCONN || err == 0)
        return 1;
    return -err;
}

void tk_tls_free(tk_tls *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t);
}

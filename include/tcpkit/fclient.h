/* The file-transfer client engine behind `tcpkit get`, `put` and `ls`: one
 * connection to a file server, over which any number of transfers run (at
 * most max_parallel at once in version 2, one after the other in version 1).
 * Downloads go to a hidden temporary file beside the target and are renamed
 * into place only after their SHA-256 matched; uploads send the file's
 * digest for the server to check. Everything runs on one event loop. */
#ifndef TCPKIT_FCLIENT_H
#define TCPKIT_FCLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/addr.h"
#include "tcpkit/frame.h"
#include "tcpkit/loop.h"
#include "tcpkit/tls.h"

typedef struct tk_fclient tk_fclient;
typedef struct tk_fxfer tk_fxfer;

typedef struct {
    int protocol;                  /* 1 (the seed's, downloads only) or 2 (default) */
    const unsigned char *auth_key; /* pre-shared HMAC key, or NULL */
    size_t auth_key_len;
    uint32_t connect_timeout_ms; /* 10 s */
    uint32_t heartbeat_ms;       /* PING after this much silence (15 s; 0 off) */
    uint32_t max_frame;          /* largest frame accepted (1 MiB + 64 KiB) */
    size_t chunk_size;           /* upload bytes per DATA frame (1 MiB) */
    unsigned max_parallel;       /* transfers at once in version 2 (16) */
    int zstd_level;              /* for compressed uploads (3) */
    int sync;                    /* fdatasync downloads before the rename (1) */
    tk_tls_ctx *tls;             /* a client context: speak TLS (NULL: plain) */
    const char *tls_name;        /* the server name to verify and send (see tk_tls_new) */
} tk_fclient_config;

/* Callbacks; arg is the pointer given to tk_fclient_new. */
typedef struct {
    /* The connection is ready (err 0), or could not be made: err is a
     * negative errno (-ECONNREFUSED, -ETIMEDOUT...) or a TK_FERR_* code
     * (auth, unsupported) with msg. Every queued transfer then also ends. */
    void (*ready)(tk_fclient *c, int err, const char *msg, void *arg);
    /* Bytes moved for a transfer (total is 0 until known). */
    void (*progress)(tk_fxfer *x, uint64_t done, uint64_t total, void *arg);
    /* A LIST record. */
    void (*entry)(tk_fxfer *x, const tk_entry *e, void *arg);
    /* A STAT answer (digest NULL unless asked for). */
    void (*info)(tk_fxfer *x, int kind, uint64_t size, int64_t mtime_ns,
                 const unsigned char *digest, void *arg);
    /* The transfer ended: err 0, a TK_FERR_* code (positive), or a negative
     * errno for local failures and a lost connection. msg says why. The
     * transfer is freed after this returns. */
    void (*done)(tk_fxfer *x, int err, const char *msg, void *arg);
} tk_fclient_handlers;

/* Defaults as documented above. */
void tk_fclient_config_init(tk_fclient_config *c);

/* Starts connecting to addrs[0..n) and, in version 2, exchanges HELLO.
 * Transfers may be added at once; they start when the connection is ready.
 * The key is copied. Returns 0 or a negative errno. */
int tk_fclient_new(tk_loop *loop, const tk_addr *addrs, size_t n, const tk_fclient_config *cfg,
                   const tk_fclient_handlers *h, void *arg, tk_fclient **out);

/* Closes the connection and frees the client; transfers still open end
 * with -ECANCELED first (their partial downloads are kept for a resume). */
void tk_fclient_free(tk_fclient *c);

/* Transfers still open (queued or running). */
unsigned tk_fclient_pending(const tk_fclient *c);

/* Download flags. */
#define TK_FGET_RESUME 0x01u /* continue a partial download */
#define TK_FGET_ZSTD   0x02u /* ask for compression */

/* Downloads remote into the file at local (or to fd 1 when local is "-":
 * written in order, not renamed, not resumable). Returns the transfer or
 * NULL (out of memory, or "-" with version... never). */
tk_fxfer *tk_fclient_get(tk_fclient *c, const char *remote, const char *local, unsigned flags);

/* Upload flags. */
#define TK_FPUT_RESUME    0x01u
#define TK_FPUT_ZSTD      0x02u
#define TK_FPUT_OVERWRITE 0x04u

/* Uploads the file at local as remote (version 2). */
tk_fxfer *tk_fclient_put(tk_fclient *c, const char *local, const char *remote, unsigned flags);

/* Lists a directory (version 2); "" is the root. */
tk_fxfer *tk_fclient_list(tk_fclient *c, const char *remote);

/* Asks for a name's kind, size and time, and its SHA-256 if want_digest
 * (version 2). */
tk_fxfer *tk_fclient_stat(tk_fclient *c, const char *remote, int want_digest);

/* The remote name and the local path a transfer was made with. */
const char *tk_fxfer_remote(const tk_fxfer *x);
const char *tk_fxfer_local(const tk_fxfer *x);

/* The transfer's SHA-256 once it is known (after done with err 0 for GET
 * in version 2 and PUT), else NULL. */
const unsigned char *tk_fxfer_digest(const tk_fxfer *x);

/* Bytes that were already there when a resumed transfer started. */
uint64_t tk_fxfer_resumed_from(const tk_fxfer *x);

/* The caller's pointer for a transfer. */
void tk_fxfer_set_data(tk_fxfer *x, void *data);
void *tk_fxfer_data(const tk_fxfer *x);

/* The hidden temporary file a download of local is written to
 * (".NAME.tcpkit-part" beside it) into buf; 0 or -ENAMETOOLONG. */
int tk_fclient_partial_path(const char *local, char *buf, size_t cap);

#endif

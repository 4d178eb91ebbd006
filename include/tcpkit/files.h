/* The file service: serves one directory over the tcpkit frame protocol
 * (version 1, the seed's, and version 2 with streams, listing, resumable
 * uploads, digests, heartbeats, zstd and HMAC). It plugs into tk_server and
 * runs on every loop of the pool; it parses no command line and never exits
 * the process. */
#ifndef TCPKIT_FILES_H
#define TCPKIT_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "tcpkit/metrics.h"
#include "tcpkit/server.h"
#include "tcpkit/sock.h"
#include "tcpkit/workers.h"

/* Plain downloads (no zstd, no HMAC) are sent with sendfile() (zero copy)
 * or by reading into the output queue and writing. Over loopback there is
 * no network card to hand pages to and the copy measured faster. */
typedef enum {
    TK_FILES_SENDFILE_AUTO = 0, /* sendfile unless the client is on loopback */
    TK_FILES_SENDFILE_ON,
    TK_FILES_SENDFILE_OFF,
} tk_files_sendfile;

typedef struct {
    const char *root;              /* the directory served (must exist) */
    int allow_upload;              /* PUT creates files (default off) */
    int allow_overwrite;           /* PUT with the overwrite flag may replace files */
    int show_hidden;               /* serve and list dot files */
    tk_files_sendfile sendfile;    /* how plain downloads are sent (auto) */
    uint64_t max_upload;           /* largest upload, bytes (16 GiB) */
    uint64_t min_free;             /* free space an upload must leave, bytes (64 MiB) */
    size_t chunk_size;             /* file bytes per DATA frame (1 MiB) */
    uint32_t max_frame;            /* largest v2 payload accepted (chunk + 64 KiB) */
    unsigned max_streams;          /* open streams per connection (32) */
    unsigned max_transfers;        /* open streams in the whole server (1024) */
    uint32_t idle_timeout_ms;      /* no bytes either way: close (300 s; 0 off) */
    uint32_t stall_timeout_ms;     /* queued output with no progress: close (60 s) */
    uint32_t heartbeat_ms;         /* v2: PING after this much silence (15 s; 0 off) */
    uint32_t partial_ttl_s;        /* remove upload partials untouched this long (1 day; 0 off) */
    int zstd_level;                /* compression level for zstd streams (3) */
    const unsigned char *auth_key; /* pre-shared HMAC key, or NULL */
    size_t auth_key_len;
    unsigned hash_threads; /* threads computing digests and finishing uploads */
    tk_sockopts sockopts;  /* applied to each client socket */
} tk_files_config;

typedef struct tk_files tk_files;

/* Fills the documented defaults (root NULL). */
void tk_files_config_init(tk_files_config *c);

/* Checks the settings, opens the root and starts the hash threads. Returns 0
 * or a negative errno with a message in err. The key bytes are copied. */
int tk_files_new(const tk_files_config *c, tk_workers *w, tk_files **out, char *err, size_t errcap);

/* The callbacks to pass to tk_server_open() with the service as svc. */
const tk_service_ops *tk_files_ops(void);

/* Tells the service which server feeds it; call before the loops start. */
void tk_files_set_server(tk_files *f, tk_server *s);

/* The refusal for a client over the client limit (a version-1 error frame,
 * which version-2 clients also understand before their HELLO is answered). */
const void *tk_files_busy_message(size_t *len);

/* The service's counters. */
tk_metrics *tk_files_metrics(tk_files *f);

/* Frees the service; its loops must have stopped. */
void tk_files_free(tk_files *f);

#endif

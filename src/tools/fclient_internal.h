/* The file client's private types, shared by its source files. */
#ifndef TK_FCLIENT_INTERNAL_H
#define TK_FCLIENT_INTERNAL_H

#include <openssl/evp.h>
#include <zstd.h>

#include "fclient_hash.h"
#include "tcpkit/conn.h"
#include "tcpkit/dial.h"
#include "tcpkit/fclient.h"

typedef enum { FX_GET = 1, FX_PUT, FX_LIST, FX_STAT } fx_kind;

typedef enum {
    FXS_WAITING = 0, /* not sent yet */
    FXS_SENT,        /* request sent, no answer yet */
    FXS_DATA,        /* receiving (GET) or sending (PUT) data */
    FXS_END,         /* PUT: END sent, waiting for DONE */
} fx_state;

struct tk_fxfer {
    tk_fclient *c;
    tk_fxfer *next; /* every open transfer */
    tk_fxfer *prev;
    tk_fxfer *qnext; /* the waiting queue, or the upload send queue */
    int queued;      /* on the upload send queue */
    fx_kind kind;
    fx_state state;
    uint32_t id;
    unsigned flags;
    char *remote;
    char *local;
    char *tmp; /* GET: the partial file's path; NULL to stdout */
    int fd;    /* GET: the partial (or 1); PUT: the source */
    uint64_t size;
    uint64_t offset; /* where this transfer's data starts */
    uint64_t pos;    /* GET: next byte expected; PUT: next byte to send */
    int zstd;
    int want_digest;
    EVP_MD_CTX *md;
    unsigned char digest[TK_FRAME_DIGEST];
    int have_digest;
    void *data;
};

struct tk_fclient {
    tk_loop *loop;
    tk_fclient_config cfg;
    tk_fclient_handlers h;
    void *arg;
    unsigned char *key;
    tk_dial *dial;
    tk_conn *conn;
    int ready;    /* connected, and HELLO answered in version 2 */
    int failed;   /* the connection is over */
    int starting; /* inside fc_start_waiting */
    tk_frame_mac *mac_in;
    tk_frame_mac *mac_out;
    size_t tag_len;
    unsigned char hello[TK_HELLO_LEN];
    uint16_t features;
    uint32_t peer_max_frame;
    tk_fxfer *all;
    tk_fxfer *wait_head; /* not started yet, in order */
    tk_fxfer *wait_tail;
    unsigned running;
    uint32_t next_id;
    tk_fxfer *v1_head; /* version 1: requests sent, answered in this order */
    tk_fxfer *v1_tail;
    tk_fxfer *sq_head; /* uploads with data to send */
    tk_fxfer *sq_tail;
    tk_fxfer *in_x; /* a DATA payload passed straight to a download */
    uint64_t in_left;
    tk_timer hb;
    tk_heartbeat beat;
    uint64_t ping_token;
    fc_hasher *hasher; /* version 2: download digests on another thread */
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    unsigned char *buf; /* max_frame bytes */
};

/* fclient.c */
unsigned char *fc_frame_reserve(tk_fclient *c, size_t len);
void fc_frame_commit(tk_fclient *c, unsigned char *frame, size_t len);
void fc_xfer_end(tk_fxfer *x, int err, const char *msg);
void fc_start_waiting(tk_fclient *c);
void fc_fail_all(tk_fclient *c, int err, const char *msg);

/* fclient_xfer.c */
int fc_get_open(tk_fxfer *x, uint64_t size, uint64_t offset, int zstd);
void fc_get_data(tk_fxfer *x, const unsigned char *p, size_t n);
void fc_get_frame(tk_fxfer *x, const unsigned char *p, size_t n);
void fc_get_end(tk_fxfer *x, uint64_t count, const unsigned char *digest);
int fc_get_prepare(tk_fxfer *x);
int fc_put_prepare(tk_fxfer *x);
void fc_put_ready(tk_fxfer *x, uint64_t offset);
void fc_put_pump(tk_fclient *c);
void fc_put_done(tk_fxfer *x, uint64_t size, const unsigned char *digest);
void fc_xfer_cleanup(tk_fxfer *x, int err);

#endif

/* The file service's private types, shared by its source files. */
#ifndef TK_FILES_INTERNAL_H
#define TK_FILES_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>
#include <zstd.h>

#include "files_path.h"
#include "files_work.h"
#include "tcpkit/conn.h"
#include "tcpkit/files.h"
#include "tcpkit/frame.h"
#include "tcpkit/log.h"

/* Longest v1 request payload: a name. */
#define FILES_V1_MAX_NAME 4096
/* Bytes of output a connection keeps queued ahead of the kernel while it has
 * streams to serve: two frames, so the socket never runs dry between turns. */
#define FILES_PUMP_FRAMES 2
/* Records per ENTRIES frame are bounded by this many bytes. */
#define FILES_ENTRIES_MAX (64 * 1024)

typedef struct files_loop files_loop;
typedef struct files_conn files_conn;
typedef struct files_stream files_stream;

struct tk_files {
    tk_files_config cfg;
    unsigned char *key; /* copy of the pre-shared key */
    int rootfd;
    mode_t file_mode; /* of stored uploads: 0666 less the umask at start */
    files_work *work;
    tk_server *server;
    tk_metrics *metrics;
    files_loop *loops;
    unsigned nloops;
    atomic_uint transfers; /* open streams across every loop */
    char *root_path;       /* the root's real path, for the partial sweep */
    tk_timer sweep;        /* on loop 0: the hourly sweep of stale partials */
    files_job *sweep_job;
};

struct files_loop {
    tk_files *f;
    tk_loop *loop;
    unsigned index;
    tk_metrics_slot *metrics;
    files_conn *conns;
    unsigned nconns;
    int shutting_down;
    unsigned char *buf; /* max_frame bytes: reads for compressed sends, decompression */
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
};

typedef enum { PROTO_UNKNOWN = 0, PROTO_V1, PROTO_V2 } files_proto;

typedef enum { KIND_GET = 1, KIND_LIST, KIND_STAT, KIND_PUT } files_kind_t;

struct files_stream {
    files_conn *fc;
    files_stream *next; /* the connection's streams */
    files_stream *prev;
    files_stream *snext; /* the connection's send queue */
    int queued;          /* on the send queue */
    uint32_t id;
    files_kind_t kind;
    int zstd;       /* DATA bodies are zstd frames */
    files_job *job; /* digest or upload finish in progress */
    int digest_ready;
    int digest_err;
    unsigned char digest[TK_FRAME_DIGEST];
    /* GET */
    tk_file *file;
    struct stat st;  /* the file when it was opened */
    uint64_t offset; /* where the client asked to start */
    uint64_t pos;    /* next byte to send */
    uint64_t size;
    char *v1_name; /* v1: the name as requested, for the response */
    size_t v1_name_len;
    /* LIST */
    void *dir; /* DIR * */
    uint64_t count;
    /* PUT */
    int fd; /* the partial file, -1 when none */
    int dirfd;
    uint64_t received;
    int locked; /* this upload holds the partial's lock */
    uint8_t put_flags;
    char part[64];
    char final[FILES_COMPONENT_MAX + 1];
    char *path; /* the whole name, for the log */
};

struct files_conn {
    files_loop *fl;
    tk_conn *conn;
    files_conn *prev;
    files_conn *next;
    files_proto proto;
    int sendfile; /* plain downloads use sendfile() on this connection */
    /* v2 */
    int hello_done;
    tk_frame_mac *mac_in;
    tk_frame_mac *mac_out;
    size_t tag_len; /* TK_FRAME_TAG with authentication, else 0 */
    uint16_t features;
    uint32_t peer_max_frame;
    files_stream *streams;
    unsigned nstreams;
    files_stream *sq_head; /* streams with output to produce, served in turn */
    files_stream *sq_tail;
    /* A DATA payload being passed straight to an upload as it arrives. */
    files_stream *in_stream; /* NULL: the rest of the payload is dropped */
    uint64_t in_left;
    /* v1: the transfer being answered; later requests wait. */
    files_stream *v1_current;
    int v1_progress; /* the last files_v1_input call consumed a frame */
    /* heartbeat */
    tk_timer hb;
    tk_heartbeat beat;
    uint64_t ping_token;
    int closing; /* no new requests; close once the streams are done */
};

/* files.c */
void files_conn_fail(files_conn *fc, unsigned code, const char *msg);
void files_conn_maybe_finish(files_conn *fc);

/* files_out.c: framing of replies in the connection's version. */
unsigned char *files_frame_reserve(files_conn *fc, size_t len);
void files_frame_commit(files_conn *fc, unsigned char *frame, size_t len);
void files_send_error(files_conn *fc, uint32_t stream, unsigned code, const char *msg);
void files_v1_error(files_conn *fc, const char *msg);

/* files_stream.c: streams and the send scheduler. */
files_stream *files_stream_new(files_conn *fc, uint32_t id, files_kind_t kind);
files_stream *files_stream_find(files_conn *fc, uint32_t id);
void files_stream_free(files_stream *s);
void files_stream_ready(files_stream *s);
void files_pump(files_conn *fc);
int files_get_start(files_conn *fc, files_stream *s, const char *path, const char **msg);
int files_list_start(files_conn *fc, files_stream *s, const char *path, const char **msg);
int files_stat_start(files_conn *fc, files_stream *s, const char *path, uint8_t flags,
                     const char **msg);

/* files_put.c: uploads. */
int files_put_start(files_conn *fc, files_stream *s, const char *path, uint64_t size, uint8_t flags,
                    const char **msg);
void files_put_data(files_stream *s, const unsigned char *p, size_t n);
void files_put_frame(files_stream *s, const unsigned char *p, size_t n);
void files_put_end(files_stream *s, uint64_t count, const unsigned char *digest);

/* files_v1.c and files_v2.c: request dispatch. Each returns bytes used. */
size_t files_v1_input(files_conn *fc, const unsigned char *data, size_t len);
size_t files_v2_input(files_conn *fc, const unsigned char *data, size_t len);

#endif

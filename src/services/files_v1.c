/* Version 1, the seed's protocol: one request (a file name) at a time,
 * answered with a response, data frames and an end frame, or an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "files_internal.h"

/* The version-1 message for a negative TK_FERR_* code and its reason. */
static const char *v1_message(int code, const char *msg)
{
    return tk_v1_error_message((unsigned)-code, strcmp(msg, "is a directory") == 0);
}

static void v1_request(files_conn *fc, const unsigned char *name, size_t n)
{
    tk_files *f = fc->fl->f;
    if (fc->fl->shutting_down) {
        files_v1_error(fc, tk_v1_error_message(TK_FERR_SHUTDOWN, 0));
        return;
    }
    char path[FILES_NAME_MAX + 1];
    const char *msg = "";
    int rc = files_name_check(name, n, f->cfg.show_hidden, path, &msg);
    if (rc == 0 && strcmp(path, ".") == 0) { /* the root itself, or no name at all */
        rc = n ? -TK_FERR_NOT_REGULAR : -TK_FERR_BAD_REQUEST;
        msg = "is a directory";
    }
    if (rc == 0 && atomic_load(&f->transfers) >= f->cfg.max_transfers)
        rc = -TK_FERR_BUSY;
    if (rc < 0) {
        files_v1_error(fc, v1_message(rc, msg));
        return;
    }
    files_stream *s = files_stream_new(fc, 0, KIND_GET);
    if (s)
        s->v1_name = malloc(n ? n : 1);
    if (!s || !s->v1_name) {
        if (s)
            files_stream_free(s);
        files_v1_error(fc, tk_v1_error_message(TK_FERR_BUSY, 0));
        return;
    }
    memcpy(s->v1_name, name, n);
    s->v1_name_len = n;
    rc = files_get_start(fc, s, path, &msg);
    if (rc < 0) {
        files_stream_free(s);
        files_v1_error(fc, v1_message(rc, msg));
        return;
    }
    fc->v1_current = s;
}

size_t files_v1_input(files_conn *fc, const unsigned char *data, size_t len)
{
    size_t off = 0;
    fc->v1_progress = 0;
    /* Answers go in request order: input stops at the first request that
     * starts a transfer, and the caller goes on once it is queued. */
    while (off < len && !tk_conn_closing(fc->conn) && !fc->v1_current) {
        tk_frame_hdr h;
        if (!tk_frame_hdr_decode(data + off, len - off, &h))
            break;
        if (h.version != TK_FRAME_V1) {
            char msg[64];
            snprintf(msg, sizeof(msg), "Unsupported protocol version %u", h.version);
            files_conn_fail(fc, TK_FERR_UNSUPPORTED, msg);
            return len;
        }
        const unsigned char *payload;
        size_t used;
        tk_codec_status st =
            tk_frame_next(data + off, len - off, FILES_V1_MAX_NAME, &h, &payload, &used);
        if (st == TK_CODEC_NEED)
            break;
        if (st == TK_CODEC_TOO_LONG) {
            char msg[64];
            snprintf(msg, sizeof(msg), "Frame too large (%u bytes)", (unsigned)h.length);
            files_conn_fail(fc, TK_FERR_TOO_LARGE, msg);
            return len;
        }
        off += used;
        fc->v1_progress = 1;
        tk_metrics_messages(fc->fl->metrics, 1);
        if (h.type != TK_V1_REQUEST) {
            char msg[48];
            snprintf(msg, sizeof(msg), "Unknown message type %u", h.type);
            files_v1_error(fc, msg);
            continue;
        }
        v1_request(fc, payload, h.length);
    }
    return off;
}

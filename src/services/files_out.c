/* Replies in the connection's framing: version-1 error frames, and
 * version-2 frames with their HMAC tag when the connection is
 * authenticated. */
#include <errno.h>
#include <string.h>

#include "files_internal.h"

unsigned char *files_frame_reserve(files_conn *fc, size_t len)
{
    return tk_conn_write_reserve(fc->conn, len + fc->tag_len);
}

void files_frame_commit(files_conn *fc, unsigned char *frame, size_t len)
{
    if (fc->tag_len) {
        if (tk_frame_mac_sign(fc->mac_out, frame, frame + TK_FRAME_HEADER, len - TK_FRAME_HEADER,
                              frame + len) < 0) {
            tk_conn_close(fc->conn, TK_CLOSE_ERROR, -EIO);
            return;
        }
    }
    tk_conn_write_commit(fc->conn, len + fc->tag_len);
}

void files_send_error(files_conn *fc, uint32_t stream, unsigned code, const char *msg)
{
    size_t n = strlen(msg);
    unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 6 + n);
    if (!p)
        return;
    files_frame_commit(fc, p, tk_v2_encode_error(p, fc->tag_len, stream, (uint16_t)code, msg, n));
}

void files_v1_error(files_conn *fc, const char *msg)
{
    size_t n = strlen(msg);
    unsigned char *p = tk_conn_write_reserve(fc->conn, TK_FRAME_HEADER + n);
    if (!p)
        return;
    tk_frame_hdr_encode(p, TK_FRAME_V1, TK_V1_ERROR, (uint32_t)n);
    memcpy(p + TK_FRAME_HEADER, msg, n);
    tk_conn_write_commit(fc->conn, TK_FRAME_HEADER + n);
}

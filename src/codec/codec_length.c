/* Frames of [u32 big-endian length][payload]. */
#include "tcpkit/codec.h"

tk_codec_status tk_len_next(const unsigned char *data, size_t len, size_t max_frame,
                            const unsigned char **payload, size_t *payload_len, size_t *consumed)
{
    *consumed = 0;
    if (len < TK_LEN_HEADER)
        return TK_CODEC_NEED;
    uint32_t n = (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
                 (uint32_t)data[3];
    *payload_len = n;
    if (n > max_frame)
        return TK_CODEC_TOO_LONG;
    if (len - TK_LEN_HEADER < n)
        return TK_CODEC_NEED;
    *payload = data + TK_LEN_HEADER;
    *consumed = TK_LEN_HEADER + (size_t)n;
    return TK_CODEC_OK;
}

void tk_len_header(unsigned char out[TK_LEN_HEADER], uint32_t n)
{
    out[0] = (unsigned char)(n >> 24);
    out[1] = (unsigned char)(n >> 16);
    out[2] = (unsigned char)(n >> 8);
    out[3] = (unsigned char)n;
}

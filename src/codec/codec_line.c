/* Newline-delimited lines with a hard length limit. */
#include <string.h>

#include "tcpkit/codec.h"

void tk_line_init(tk_line_decoder *d, size_t max_line)
{
    d->max_line = max_line;
    d->scanned = 0;
    d->discarding = 0;
}

tk_codec_status tk_line_next(tk_line_decoder *d, const unsigned char *data, size_t len,
                             const unsigned char **line, size_t *line_len, size_t *consumed)
{
    *consumed = 0;
    if (d->discarding) {
        const unsigned char *nl = memchr(data, '\n', len);
        if (!nl) {
            *consumed = len;
            return TK_CODEC_NEED;
        }
        d->discarding = 0;
        d->scanned = 0;
        *consumed = (size_t)(nl - data) + 1;
        data += *consumed;
        len -= *consumed;
    }
    /* Bytes before d->scanned were searched by an earlier call: skip them so a
     * line arriving in small pieces costs O(n), not O(n^2). */
    size_t from = d->scanned < len ? d->scanned : len;
    size_t limit = d->max_line + 1; /* a '\n' may sit just after max_line bytes */
    size_t search = len < limit ? len : limit;
    const unsigned char *nl = from < search ? memchr(data + from, '\n', search - from) : NULL;
    if (!nl) {
        if (len > d->max_line) {
            /* Over the limit with no end in sight: report it and skip the
             * rest of this line wherever it ends. */
            const unsigned char *end = memchr(data + search, '\n', len - search);
            d->scanned = 0;
            if (end) {
                *consumed += (size_t)(end - data) + 1;
            } else {
                d->discarding = 1;
                *consumed += len;
            }
            return TK_CODEC_TOO_LONG;
        }
        d->scanned = len;
        return TK_CODEC_NEED;
    }
    size_t n = (size_t)(nl - data);
    d->scanned = 0;
    *consumed += n + 1;
    if (n > 0 && data[n - 1] == '\r')
        n--;
    *line = data;
    *line_len = n;
    return TK_CODEC_OK;
}

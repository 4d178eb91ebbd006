/* Terminal plumbing shared by the interactive clients (connect, chat): the
 * event loop served from inside libedit's key reading, and writes to an
 * output that may be non-blocking. */
#ifndef TK_CLI_TERM_H
#define TK_CLI_TERM_H

#include <stddef.h>
#include <wchar.h>

#include "tcpkit/loop.h"

/* What the key source needs to know of a client: its loop, a flag its stdin
 * watcher sets when a key is waiting, a flag set when the connection is
 * over, and (optional) a flag that is 1 while the loop runs under the
 * editor, so output can redraw the prompt. */
typedef struct {
    tk_loop *loop;
    int *key_ready;
    const int *finished;
    int *editing; /* may be NULL */
} term_keys;

/* Serves the loop until a key is waiting, then reads it from fd 0 and
 * decodes UTF-8 (an invalid byte stands for itself). Returns 1 with *wc set,
 * or 0 at end of input or once the connection is over. */
int term_read_key(const term_keys *k, wchar_t *wc);

/* Writes all n bytes to fd, retrying on EINTR and waiting while a
 * non-blocking fd is full; gives up silently on other errors. */
void term_write_all(int fd, const void *p, size_t n);

#endif

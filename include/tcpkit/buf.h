/* Byte buffers with a hard size limit, and reference-counted shared chunks.
 * A tk_buf holds memory only while it holds data: consuming the last byte
 * frees it, so idle connections cost no buffer memory. */
#ifndef TCPKIT_BUF_H
#define TCPKIT_BUF_H

#include <stddef.h>

typedef struct {
    unsigned char *data;
    size_t start; /* first unread byte */
    size_t end;   /* one past the last byte */
    size_t cap;
    size_t limit; /* the buffer never holds more than this */
} tk_buf;

/* Prepares an empty buffer that will never hold more than limit bytes. */
void tk_buf_init(tk_buf *b, size_t limit);

/* Releases the memory; the buffer is empty afterwards and can be reused. */
void tk_buf_free(tk_buf *b);

/* Bytes held. */
static inline size_t tk_buf_len(const tk_buf *b)
{
    return b->end - b->start;
}

/* The first unread byte (valid while the buffer is not changed). */
static inline unsigned char *tk_buf_head(const tk_buf *b)
{
    return b->data + b->start;
}

/* Makes room for n more bytes and returns where to write them, or NULL with
 * *err = -ENOBUFS (over the limit, nothing allocated) or -ENOMEM. */
unsigned char *tk_buf_reserve(tk_buf *b, size_t n, int *err);

/* Marks n bytes written into the space tk_buf_reserve() returned. */
void tk_buf_commit(tk_buf *b, size_t n);

/* Appends n bytes; returns 0, -ENOBUFS (over the limit) or -ENOMEM. */
int tk_buf_append(tk_buf *b, const void *p, size_t n);

/* Drops the first n bytes (n <= length); frees the memory when empty. */
void tk_buf_consume(tk_buf *b, size_t n);

/* An immutable reference-counted byte chunk, for sending one message to many
 * connections without copying it. Not thread-safe: one loop uses it. */
typedef struct tk_shared tk_shared;

/* Copies n bytes into a new chunk with one reference; NULL when out of memory. */
tk_shared *tk_shared_new(const void *p, size_t n);

/* Adds a reference and returns s. */
tk_shared *tk_shared_ref(tk_shared *s);

/* Drops a reference; the last one frees the chunk. */
void tk_shared_unref(tk_shared *s);

/* The chunk's bytes and length. */
const unsigned char *tk_shared_data(const tk_shared *s);
size_t tk_shared_len(const tk_shared *s);

#endif

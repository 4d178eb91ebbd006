/* Bounded byte buffers and shared chunks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/buf.h"

#define TK_BUF_MIN 512

void tk_buf_init(tk_buf *b, size_t limit)
{
    b->data = NULL;
    b->start = b->end = b->cap = 0;
    b->limit = limit;
}

void tk_buf_free(tk_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->start = b->end = b->cap = 0;
}

unsigned char *tk_buf_reserve(tk_buf *b, size_t n, int *err)
{
    size_t len = tk_buf_len(b);
    if (n > b->limit || len > b->limit - n) {
        *err = -ENOBUFS;
        return NULL;
    }
    if (b->cap - b->end >= n)
        return b->data + b->end;
    /* Slide the unread bytes to the front when that makes enough room. */
    if (b->start > 0 && b->cap - len >= n) {
        memmove(b->data, b->data + b->start, len);
        b->start = 0;
        b->end = len;
        return b->data + b->end;
    }
    size_t cap = b->cap ? b->cap : TK_BUF_MIN;
    while (cap < len + n)
        cap *= 2;
    if (cap > b->limit)
        cap = b->limit;
    unsigned char *data = malloc(cap);
    if (!data) {
        *err = -ENOMEM;
        return NULL;
    }
    if (len)
        memcpy(data, b->data + b->start, len);
    free(b->data);
    b->data = data;
    b->cap = cap;
    b->start = 0;
    b->end = len;
    return b->data + b->end;
}

void tk_buf_commit(tk_buf *b, size_t n)
{
    b->end += n;
    if (b->end == b->start)
        tk_buf_free(b); /* reserved but nothing arrived: hold no memory */
}

int tk_buf_append(tk_buf *b, const void *p, size_t n)
{
    int err = 0;
    if (n == 0)
        return 0;
    unsigned char *dst = tk_buf_reserve(b, n, &err);
    if (!dst)
        return err;
    memcpy(dst, p, n);
    b->end += n;
    return 0;
}

void tk_buf_consume(tk_buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->end)
        tk_buf_free(b);
}

struct tk_shared {
    size_t refs;
    size_t len;
    unsigned char data[];
};

tk_shared *tk_shared_new(const void *p, size_t n)
{
    tk_shared *s = malloc(sizeof(*s) + n);
    if (!s)
        return NULL;
    s->refs = 1;
    s->len = n;
    if (n)
        memcpy(s->data, p, n);
    return s;
}

tk_shared *tk_shared_ref(tk_shared *s)
{
    s->refs++;
    return s;
}

void tk_shared_unref(tk_shared *s)
{
    if (s && --s->refs == 0)
        free(s);
}

const unsigned char *tk_shared_data(const tk_shared *s)
{
    return s->data;
}

size_t tk_shared_len(const tk_shared *s)
{
    return s->len;
}

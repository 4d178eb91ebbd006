/* Min-heap of timers; each timer remembers its slot so removal needs no search. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "timer_heap.h"

static int earlier(const tk_timer *a, const tk_timer *b)
{
    if (a->deadline_ms != b->deadline_ms)
        return a->deadline_ms < b->deadline_ms;
    return a->seq < b->seq;
}

static void place(tk_timer_heap *h, size_t i, tk_timer *t)
{
    h->items[i] = t;
    t->heap_index = i;
}

static void sift_up(tk_timer_heap *h, size_t i)
{
    tk_timer *t = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(t, h->items[parent]))
            break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, t);
}

static void sift_down(tk_timer_heap *h, size_t i)
{
    tk_timer *t = h->items[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->len)
            break;
        if (child + 1 < h->len && earlier(h->items[child + 1], h->items[child]))
            child++;
        if (!earlier(h->items[child], t))
            break;
        place(h, i, h->items[child]);
        i = child;
    }
    place(h, i, t);
}

int tk_heap_push(tk_timer_heap *h, tk_timer *t)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        tk_timer **items = realloc(h->items, cap * sizeof(*items));
        if (!items)
            return -ENOMEM;
        h->items = items;
        h->cap = cap;
    }
    h->items[h->len] = t;
    sift_up(h, h->len++);
    return 0;
}

void tk_heap_remove(tk_timer_heap *h, tk_timer *t)
{
    size_t i = t->heap_index;
    if (i >= h->len || h->items[i] != t)
        return;
    t->heap_index = SIZE_MAX;
    tk_timer *last = h->items[--h->len];
    if (i == h->len)
        return;
    place(h, i, last);
    if (i > 0 && earlier(last, h->items[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

tk_timer *tk_heap_top(const tk_timer_heap *h)
{
    return h->len ? h->items[0] : NULL;
}

void tk_heap_free(tk_timer_heap *h)
{
    free(h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}

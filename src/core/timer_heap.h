/* Binary min-heap of timers ordered by (deadline, start sequence). Insert,
 * remove and re-arm are O(log n); finding the next deadline is O(1), so the
 * loop never scans its timers. */
#ifndef TK_TIMER_HEAP_H
#define TK_TIMER_HEAP_H

#include <stddef.h>

#include "tcpkit/loop.h"

typedef struct {
    tk_timer **items;
    size_t len;
    size_t cap;
} tk_timer_heap;

/* Adds t; returns 0 or -ENOMEM. t must not be in the heap. */
int tk_heap_push(tk_timer_heap *h, tk_timer *t);

/* Removes t if present. */
void tk_heap_remove(tk_timer_heap *h, tk_timer *t);

/* The earliest timer, or NULL when empty. */
tk_timer *tk_heap_top(const tk_timer_heap *h);

/* Releases the heap's array. */
void tk_heap_free(tk_timer_heap *h);

#endif

/* Non-blocking outgoing connections with a deadline, trying each resolved
 * address in turn until one answers. */
#ifndef TCPKIT_DIAL_H
#define TCPKIT_DIAL_H

#include <stdint.h>

#include "tcpkit/addr.h"
#include "tcpkit/loop.h"

typedef struct tk_dial tk_dial;

/* Called once: fd >= 0 is a connected non-blocking socket owned by the
 * callback; otherwise err is -ECONNREFUSED, -ETIMEDOUT or another -errno
 * from the last address tried. The dial object is freed after the call. */
typedef void (*tk_dial_cb)(tk_loop *loop, int fd, int err, void *arg);

/* Starts connecting to addrs[0..n) within timeout_ms in total (0: no limit).
 * Returns 0 (cb will be called, always later from the loop, never inside
 * this call) or a negative errno (it will not). The handle in *out is valid
 * until the callback has run or tk_dial_cancel() was called. */
int tk_dial_start(tk_loop *loop, const tk_addr *addrs, size_t n, uint32_t timeout_ms, tk_dial_cb cb,
                  void *arg, tk_dial **out);

/* Abandons a dial in progress; its callback is not called. */
void tk_dial_cancel(tk_dial *d);

#endif

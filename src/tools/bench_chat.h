/* The chat fan-out mode of `tcpkit bench` (TK_BENCH_CHAT), private to
 * src/tools/: tk_bench_run() hands chat configs here. */
#ifndef TCPKIT_BENCH_CHAT_H
#define TCPKIT_BENCH_CHAT_H

#include "tcpkit/bench.h"

/* Runs one chat fan-out benchmark on the calling thread, as tk_bench_run()
 * promises: 0 with *out filled, or -ENOMEM or the pool's error. */
int bench_chat_run(const tk_bench_config *cfg, tk_bench_result *out);

#endif

/* A rate-limited log summary: events of a few kinds (refused connections,
 * failed handshakes...) are counted, and one line per interval says how many
 * there were, of which kind, and which came last, so a flood of events costs
 * a flood of increments and not a flood of log lines:
 *
 *   refused 812 connections in the last 10 s (deny 800, per-ip 12, rate 0); last: 127.0.0.2 (deny)
 *
 * A window opens with the first event after a quiet spell and closes
 * interval_ms later; its summary is written by whichever call first sees it
 * closed: tk_lograte_note() for a later event, or tk_lograte_flush(), which
 * an owner with a loop calls from a timer (both return when that is due), so
 * the last burst before a quiet spell is reported on time too. With an
 * interval of 0 every event is written at once, on its own line.
 *
 * Every function is safe from any thread (one mutex per tk_lograte; events
 * are the slow path by nature). Times are the caller's monotonic
 * milliseconds (tk_loop_now), so tests can inject a clock.
 *
 * Use, e.g. for TLS handshake failures on loop L with a timer t:
 *
 *   static const char *const kinds[] = {"timeout", "protocol", "certificate"};
 *   tk_lograte_init(&r, TK_LOG_WARN, 10000, "failed", "TLS handshake", kinds, 3);
 *   // each failure:
 *   uint32_t due = tk_lograte_note(&r, 1, tk_loop_now(L), "192.0.2.7");
 *   if (due && !tk_timer_active(&t))
 *       tk_timer_start(L, &t, due);
 *   // t's callback: due = tk_lograte_flush(&r, tk_loop_now(L), 0), re-armed if due
 *   // at the end: tk_lograte_flush(&r, now, 1); tk_lograte_destroy(&r);
 *
 * which writes "failed 3 TLS handshakes in the last 10 s (timeout 0,
 * protocol 3, certificate 0); last: 192.0.2.7 (protocol)". */
#ifndef TCPKIT_LOGRATE_H
#define TCPKIT_LOGRATE_H

#include <pthread.h>
#include <stdint.h>

#include "tcpkit/log.h"

#define TK_LOGRATE_KINDS  8  /* kinds of event one tk_lograte counts */
#define TK_LOGRATE_DETAIL 96 /* bytes kept of the last event's detail */

/* The fields are private; the struct is public so it can be embedded. */
typedef struct {
    pthread_mutex_t lock;
    tk_log_level level;
    uint32_t interval_ms;
    const char *verb; /* "refused" */
    const char *noun; /* "connection": an "s" is added for counts other than 1 */
    const char *kinds[TK_LOGRATE_KINDS];
    unsigned nkinds;
    unsigned long counts[TK_LOGRATE_KINDS];
    unsigned long pending; /* events in the open window; 0: no window open */
    uint64_t window_start;
    unsigned last_kind;
    char last[TK_LOGRATE_DETAIL];
} tk_lograte;

/* Prepares r to count nkinds (at most TK_LOGRATE_KINDS) kinds of event named
 * kinds[i], summarised at level once per interval_ms. The strings must
 * outlive r. Returns 0 or -EINVAL (too many kinds) or -errno from the mutex. */
int tk_lograte_init(tk_lograte *r, tk_log_level level, uint32_t interval_ms, const char *verb,
                    const char *noun, const char *const *kinds, unsigned nkinds);

/* Counts one event of kind (an out-of-range kind counts as the last kind)
 * with detail (may be NULL), writing the summary if the window is over.
 * Returns the milliseconds until the open window closes (call
 * tk_lograte_flush() then), or 0 when nothing is pending. */
uint32_t tk_lograte_note(tk_lograte *r, unsigned kind, uint64_t now_ms, const char *detail);

/* Writes the summary if the window is over, or with force whenever events
 * are pending (at shutdown, so none goes unreported). Returns the
 * milliseconds until the window closes, or 0 when nothing is pending. */
uint32_t tk_lograte_flush(tk_lograte *r, uint64_t now_ms, int force);

/* Events counted and not yet written, per kind (counts holds nkinds). */
unsigned long tk_lograte_pending(tk_lograte *r, unsigned long *counts);

/* Releases the mutex; pending events are dropped (flush with force first). */
void tk_lograte_destroy(tk_lograte *r);

#endif

/* Counted events summarised in one log line per interval. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tcpkit/lograte.h"

int tk_lograte_init(tk_lograte *r, tk_log_level level, uint32_t interval_ms, const char *verb,
                    const char *noun, const char *const *kinds, unsigned nkinds)
{
    if (nkinds == 0 || nkinds > TK_LOGRATE_KINDS)
        return -EINVAL;
    memset(r, 0, sizeof(*r));
    int rc = pthread_mutex_init(&r->lock, NULL);
    if (rc)
        return -rc;
    r->level = level;
    r->interval_ms = interval_ms;
    r->verb = verb;
    r->noun = noun;
    r->nkinds = nkinds;
    for (unsigned i = 0; i < nkinds; i++)
        r->kinds[i] = kinds[i];
    return 0;
}

/* "10 s" from ten seconds on, "2.5 s" below. */
static void format_span(uint64_t ms, char *buf, size_t cap)
{
    if (ms >= 10000)
        snprintf(buf, cap, "%" PRIu64 " s", (ms + 500) / 1000);
    else
        snprintf(buf, cap, "%.1f s", (double)ms / 1000.0);
}

/* Writes the open window's summary and closes it; lock held. */
static void emit(tk_lograte *r, uint64_t now_ms)
{
    char span[32], kinds[TK_LOGRATE_KINDS * 40] = "";
    size_t used = 0;
    for (unsigned i = 0; i < r->nkinds; i++) {
        int n = snprintf(kinds + used, sizeof(kinds) - used, "%s%s %lu", i ? ", " : "", r->kinds[i],
                         r->counts[i]);
        if (n > 0 && (size_t)n < sizeof(kinds) - used)
            used += (size_t)n;
        r->counts[i] = 0;
    }
    format_span(now_ms > r->window_start ? now_ms - r->window_start : 0, span, sizeof(span));
    tk_log(r->level, "%s %lu %s%s in the last %s (%s); last: %s (%s)", r->verb, r->pending, r->noun,
           r->pending == 1 ? "" : "s", span, kinds, r->last[0] ? r->last : "-",
           r->kinds[r->last_kind]);
    r->pending = 0;
}

/* Time left in the open window, at least 1 ms while one is open; lock held. */
static uint32_t due_in(const tk_lograte *r, uint64_t now_ms)
{
    if (!r->pending)
        return 0;
    uint64_t end = r->window_start + r->interval_ms;
    return end > now_ms ? (uint32_t)(end - now_ms) : 1;
}

uint32_t tk_lograte_note(tk_lograte *r, unsigned kind, uint64_t now_ms, const char *detail)
{
    if (kind >= r->nkinds)
        kind = r->nkinds - 1;
    pthread_mutex_lock(&r->lock);
    if (r->interval_ms == 0) {
        tk_log(r->level, "%s %s: %s (%s)", r->verb, r->noun, detail ? detail : "-", r->kinds[kind]);
        pthread_mutex_unlock(&r->lock);
        return 0;
    }
    if (r->pending && now_ms >= r->window_start + r->interval_ms)
        emit(r, now_ms);
    if (!r->pending)
        r->window_start = now_ms;
    r->pending++;
    r->counts[kind]++;
    r->last_kind = kind;
    snprintf(r->last, sizeof(r->last), "%s", detail ? detail : "");
    uint32_t left = due_in(r, now_ms);
    pthread_mutex_unlock(&r->lock);
    return left;
}

uint32_t tk_lograte_flush(tk_lograte *r, uint64_t now_ms, int force)
{
    pthread_mutex_lock(&r->lock);
    if (r->pending && (force || now_ms >= r->window_start + r->interval_ms))
        emit(r, now_ms);
    uint32_t left = due_in(r, now_ms);
    pthread_mutex_unlock(&r->lock);
    return left;
}

unsigned long tk_lograte_pending(tk_lograte *r, unsigned long *counts)
{
    pthread_mutex_lock(&r->lock);
    unsigned long n = r->pending;
    if (counts)
        memcpy(counts, r->counts, r->nkinds * sizeof(counts[0]));
    pthread_mutex_unlock(&r->lock);
    return n;
}

void tk_lograte_destroy(tk_lograte *r)
{
    pthread_mutex_destroy(&r->lock);
}

/* Small helpers of the chat service: growable byte strings with JSON
 * string encoding, wall-clock formatting and a string-keyed hash table. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_internal.h"

/* Makes room for n more bytes; 0 or -ENOMEM. */
static int reserve(chat_bytes *b, size_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    unsigned char *np = realloc(b->p, cap);
    if (!np)
        return -ENOMEM;
    b->p = np;
    b->cap = cap;
    return 0;
}

int chat_bytes_add(chat_bytes *b, const void *p, size_t n)
{
    if (reserve(b, n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

int chat_bytes_str(chat_bytes *b, const char *s)
{
    return chat_bytes_add(b, s, strlen(s));
}

int chat_bytes_json(chat_bytes *b, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case: every byte becomes \u00XX. */
    if (reserve(b, 6 * n + 2) < 0)
        return -ENOMEM;
    unsigned char *o = b->p + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = c;
        } else if (c == '\t') {
            *o++ = '\\';
            *o++ = 't';
        } else if (c == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = (unsigned char)hex[c >> 4];
            o[5] = (unsigned char)hex[c & 15];
            o += 6;
        } else {
            *o++ = c;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->p);
    return 0;
}

void chat_bytes_reset(chat_bytes *b, size_t keep)
{
    b->len = 0;
    if (b->cap > keep) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

int64_t chat_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void split(int64_t ms, struct tm *tm, int *milli)
{
    time_t sec = (time_t)(ms / 1000);
    *milli = (int)(ms % 1000);
    gmtime_r(&sec, tm);
}

void chat_fmt_rfc3339(int64_t ms, char out[32])
{
    /* Events come many per second: format the date and time once a second. */
    static __thread int64_t cached_sec = -1;
    static __thread char cached[24];
    static __thread size_t cached_len;
    int64_t sec = ms / 1000;
    int milli = (int)(ms % 1000);
    if (sec != cached_sec) {
        struct tm tm;
        time_t t = (time_t)sec;
        gmtime_r(&t, &tm);
        cached_len = strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = sec;
    }
    memcpy(out, cached, cached_len);
    size_t n = cached_len;
    out[n++] = '.';
    out[n++] = (char)('0' + milli / 100);
    out[n++] = (char)('0' + milli / 10 % 10);
    out[n++] = (char)('0' + milli % 10);
    out[n++] = 'Z';
    out[n] = '\0';
}

void chat_fmt_hms(int64_t ms, char out[16])
{
    struct tm tm;
    int milli;
    split(ms, &tm, &milli);
    strftime(out, 16, "%H:%M:%S", &tm);
}

void chat_fmt_datetime(int64_t ms, char out[32])
{
    struct tm tm;
    int milli;
    split(ms, &tm, &milli);
    strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
}

/* ---- hash table ---- */

struct chat_map_entry {
    chat_map_entry *next;
    void *value;
    char key[];
};

/* FNV-1a: short keys, no adversarial pressure beyond the name limits. */
static size_t hash_key(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return (size_t)h;
}

void chat_map_init(chat_map *m)
{
    memset(m, 0, sizeof(*m));
}

void chat_map_free(chat_map *m)
{
    for (size_t i = 0; i < m->nslots; i++) {
        chat_map_entry *e = m->slots[i];
        while (e) {
            chat_map_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->slots);
    chat_map_init(m);
}

void *chat_map_get(const chat_map *m, const char *key)
{
    if (!m->nslots)
        return NULL;
    for (chat_map_entry *e = m->slots[hash_key(key) & (m->nslots - 1)]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e->value;
    return NULL;
}

static int grow(chat_map *m)
{
    size_t n = m->nslots ? m->nslots * 2 : 64;
    chat_map_entry **slots = calloc(n, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->nslots; i++) {
        chat_map_entry *e = m->slots[i];
        while (e) {
            chat_map_entry *next = e->next;
            size_t j = hash_key(e->key) & (n - 1);
            e->next = slots[j];
            slots[j] = e;
            e = next;
        }
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = n;
    return 0;
}

int chat_map_put(chat_map *m, const char *key, void *value)
{
    if (chat_map_get(m, key))
        return -EEXIST;
    if (m->count >= m->nslots && grow(m) < 0)
        return -ENOMEM;
    size_t klen = strlen(key);
    chat_map_entry *e = malloc(sizeof(*e) + klen + 1);
    if (!e)
        return -ENOMEM;
    memcpy(e->key, key, klen + 1);
    e->value = value;
    size_t j = hash_key(key) & (m->nslots - 1);
    e->next = m->slots[j];
    m->slots[j] = e;
    m->count++;
    return 0;
}

void chat_map_del(chat_map *m, const char *key)
{
    if (!m->nslots)
        return;
    chat_map_entry **pp = &m->slots[hash_key(key) & (m->nslots - 1)];
    for (; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            chat_map_entry *e = *pp;
            *pp = e->next;
            free(e);
            m->count--;
            return;
        }
    }
}

void chat_map_each(const chat_map *m, void (*fn)(const char *key, void *value, void *arg),
                   void *arg)
{
    for (size_t i = 0; i < m->nslots; i++)
        for (chat_map_entry *e = m->slots[i]; e; e = e->next)
            fn(e->key, e->value, arg);
}

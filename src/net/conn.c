/* Connections: buffered input, a chunked output queue flushed once per loop
 * turn, watermarks, timers and the close state machine. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tcpkit/conn.h"
#include "tcpkit/log.h"
#include "tcpkit/sock.h"
#include "tcpkit/tls.h"

/* Reads per readiness event: enough to keep a fast peer moving, few enough
 * that one busy connection cannot starve the others in the same turn. */
#define TK_READ_BUDGET 4
/* Output chunk size: small replies are packed together into one chunk. */
#define TK_CHUNK_SIZE 4096
/* Buffers handed to one sendmsg() call. */
#define TK_IOV_MAX 64
/* Standard-size chunks kept per thread for reuse, so a steady stream of
 * replies allocates nothing while idle connections hold no chunk at all. */
#define TK_CHUNK_CACHE 16

enum {
    F_CLOSED = 1u << 0,       /* socket closed; memory goes once the turn ends */
    F_CLOSING = 1u << 1,      /* close after flush requested */
    F_SHUT_WANTED = 1u << 2,  /* send FIN once the queue is empty */
    F_SHUT_DONE = 1u << 3,    /* FIN sent */
    F_EOF = 1u << 4,          /* the peer's FIN arrived */
    F_LINGER = 1u << 5,       /* waiting for the peer's FIN before closing */
    F_PAUSE_USER = 1u << 6,   /* the service paused input */
    F_PAUSE_OUTPUT = 1u << 7, /* output above the high watermark */
    F_WANT_WRITE = 1u << 8,   /* the kernel buffer was full: wait for EPOLLOUT */
    F_REDELIVER = 1u << 9,    /* input held while paused is handed over again */
    F_TLS_HS = 1u << 10,      /* TLS handshake in progress: no input delivered, no output sent */
    F_TLS_DEAD = 1u << 11,    /* TLS failed: the socket is only drained, raw, until closed */
    F_TLS_RWW = 1u << 12,     /* a TLS read waits for the socket to be writable */
    F_TLS_WWR = 1u << 13,     /* a TLS write waits for the socket to be readable */
    F_TLS_REREAD = 1u << 14,  /* decrypted input is buffered: read again without an event */
    F_TLS_SERVER = 1u << 15,  /* the server end of a TLS connection */
};

/* Failed handshakes on the server side are logged at most this often, with
 * a count, so a flood of bad clients cannot flood the log. */
#define TK_TLS_FAIL_LOG_MS 10000

/* The most bytes packed into one TLS write: a full record. */
#define TK_TLS_RECORD 16384
/* Plain bytes staged per TLS write of a file range when kernel TLS is off. */
#define TK_TLS_FILE_STAGE (64 * 1024)

/* A reference-counted open file, for ranges queued with tk_conn_write_file. */
struct tk_file {
    int fd;
    unsigned refs;
};

tk_file *tk_file_new(int fd)
{
    tk_file *f = malloc(sizeof(*f));
    if (!f) {
        close(fd);
        return NULL;
    }
    f->fd = fd;
    f->refs = 1;
    return f;
}

tk_file *tk_file_ref(tk_file *f)
{
    f->refs++;
    return f;
}

void tk_file_unref(tk_file *f)
{
    if (f && --f->refs == 0) {
        close(f->fd);
        free(f);
    }
}

int tk_file_fd(const tk_file *f)
{
    return f->fd;
}

/* An output chunk: bytes in data[], a shared chunk, or a range of a file. */
typedef struct tk_chunk {
    struct tk_chunk *next;
    tk_shared *shared; /* bytes live in the shared chunk */
    tk_file *file;     /* bytes are file[foff .. foff + len) */
    uint64_t foff;
    size_t sent; /* bytes of this chunk already written */
    size_t len;  /* bytes in this chunk */
    size_t cap;  /* room in data[] */
    unsigned char data[];
} tk_chunk;

static __thread tk_chunk *chunk_cache[TK_CHUNK_CACHE];
static __thread unsigned chunk_cached;
/* Per-thread staging for TLS writes (small chunks packed into one record,
 * file bytes read for encryption); allocated on first use. */
static __thread unsigned char *tls_stage;
/* Process-wide, shared by every loop thread. */
static _Atomic uint64_t tls_fail_logged_ms;
static atomic_ulong tls_fail_unlogged;

#define TK_CHUNK_DATA (TK_CHUNK_SIZE - sizeof(tk_chunk))

static tk_chunk *chunk_new(size_t cap)
{
    if (cap <= TK_CHUNK_DATA && chunk_cached > 0)
        return chunk_cache[--chunk_cached];
    tk_chunk *ch = malloc(sizeof(*ch) + (cap < TK_CHUNK_DATA ? TK_CHUNK_DATA : cap));
    if (ch)
        ch->cap = cap < TK_CHUNK_DATA ? TK_CHUNK_DATA : cap;
    return ch;
}

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static __thread int cache_registered;

/* Frees a thread's cached chunks when the thread ends. */
static void cache_drop(void *unused)
{
    (void)unused;
    while (chunk_cached > 0)
        free(chunk_cache[--chunk_cached]);
    free(tls_stage);
    tls_stage = NULL;
}

static void cache_key_create(void)
{
    (void)pthread_key_create(&cache_key, cache_drop);
}

/* Makes sure the thread's cached memory is freed when the thread ends. */
static void cache_register(void)
{
    if (!cache_registered) {
        pthread_once(&cache_once, cache_key_create);
        (void)pthread_setspecific(cache_key, &cache_registered);
        cache_registered = 1;
    }
}

static void chunk_free(tk_chunk *ch)
{
    tk_shared_unref(ch->shared);
    tk_file_unref(ch->file);
    if (!ch->shared && !ch->file && ch->cap == TK_CHUNK_DATA && chunk_cached < TK_CHUNK_CACHE) {
        cache_register();
        chunk_cache[chunk_cached++] = ch;
        return;
    }
    free(ch);
}

struct tk_conn {
    tk_loop *loop;
    tk_io io;
    tk_timer timer;
    tk_defer defer; /* flushes output, or frees a closed connection */
    const tk_conn_handler *h;
    tk_conn_limits lim;
    void *data;
    tk_metrics_slot *metrics;
    tk_tls *tls;            /* NULL: plain TCP */
    const char *tls_failed; /* a failure found here rather than by OpenSSL */
    uint64_t tls_hs_until_ms;
    tk_addr peer;
    tk_buf in;
    tk_chunk *out_head;
    tk_chunk *out_tail;
    size_t out_bytes; /* queued bytes, file ranges included */
    size_t out_mem;   /* queued bytes held in memory: what the limits count */
    unsigned flags;
    tk_close_reason reason;
    int close_err;
    uint64_t last_active_ms;
    uint64_t stall_since_ms;
    uint64_t linger_until_ms;
    uint64_t read_us;
    uint64_t bytes_in;
    uint64_t bytes_out;
};

static const char *const reason_names[TK_CLOSE_REASONS] = {
    "peer", "local", "idle", "stall", "limit", "shutdown", "reset", "error", "tls",
};

const char *tk_close_reason_name(tk_close_reason r)
{
    return (unsigned)r < TK_CLOSE_REASONS ? reason_names[r] : "unknown";
}

void tk_conn_limits_init(tk_conn_limits *l)
{
    l->max_input = 64 * 1024;
    l->high_water = 64 * 1024;
    l->low_water = 16 * 1024;
    l->max_output = 1024 * 1024;
    l->idle_timeout_ms = 0;
    l->stall_timeout_ms = 30 * 1000;
    l->linger_ms = 2000;
}

static void on_io(tk_loop *loop, tk_io *io, unsigned events);
static void on_timer(tk_loop *loop, tk_timer *t);
static void log_tls_failure(tk_conn *c);
static void on_defer(tk_loop *loop, tk_defer *d);

int tk_conn_new(tk_loop *loop, int fd, const tk_conn_handler *h, const tk_conn_limits *lim,
                void *data, tk_conn **out)
{
    tk_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->loop = loop;
    c->h = h;
    c->lim = *lim;
    if (c->lim.low_water > c->lim.high_water)
        c->lim.low_water = c->lim.high_water;
    c->data = data;
    c->last_active_ms = tk_loop_now(loop);
    /* The buffer briefly holds a leftover plus one whole read; what stays
     * after the service consumed its messages is checked against max_input. */
    tk_buf_init(&c->in, lim->max_input + tk_loop_scratch_size(loop));
    tk_io_init(&c->io, fd, on_io);
    tk_timer_init(&c->timer, on_timer);
    tk_defer_init(&c->defer, on_defer);
    (void)tk_addr_of_socket(fd, 1, &c->peer);
    int err = tk_io_set(loop, &c->io, TK_READ);
    if (err == 0 && lim->idle_timeout_ms)
        err = tk_timer_start(loop, &c->timer, lim->idle_timeout_ms);
    if (err < 0) {
        tk_io_stop(loop, &c->io);
        close(fd);
        free(c);
        return err;
    }
    *out = c;
    return 0;
}

void *tk_conn_data(const tk_conn *c)
{
    return c->data;
}

void tk_conn_set_data(tk_conn *c, void *data)
{
    c->data = data;
}

tk_loop *tk_conn_loop(const tk_conn *c)
{
    return c->loop;
}

int tk_conn_fd(const tk_conn *c)
{
    return c->io.fd;
}

const tk_addr *tk_conn_peer(const tk_conn *c)
{
    return &c->peer;
}

void tk_conn_set_peer(tk_conn *c, const tk_addr *peer)
{
    c->peer = *peer;
}

uint64_t tk_conn_read_time_us(const tk_conn *c)
{
    return c->read_us;
}

size_t tk_conn_pending(const tk_conn *c)
{
    return c->out_bytes;
}

int tk_conn_closing(const tk_conn *c)
{
    return (c->flags & (F_CLOSED | F_CLOSING)) != 0;
}

uint64_t tk_conn_bytes_in(const tk_conn *c)
{
    return c->bytes_in;
}

uint64_t tk_conn_bytes_out(const tk_conn *c)
{
    return c->bytes_out;
}

void tk_conn_set_metrics(tk_conn *c, tk_metrics_slot *slot)
{
    c->metrics = slot;
}

/* Registers the interest the current state calls for. */
static void update_interest(tk_conn *c)
{
    if (c->flags & F_CLOSED)
        return;
    unsigned want = 0;
    if (c->flags & F_TLS_HS) {
        /* The handshake decides what it waits for. */
        want = (tk_tls_want(c->tls) & TK_TLS_WANT_WRITE) ? TK_WRITE : TK_READ;
        int err = tk_io_set(c->loop, &c->io, want);
        if (err < 0)
            tk_conn_close(c, TK_CLOSE_ERROR, err);
        return;
    }
    int reading = !(c->flags & F_EOF) &&
                  ((c->flags & F_CLOSING) || !(c->flags & (F_PAUSE_USER | F_PAUSE_OUTPUT)));
    if (reading)
        want |= TK_READ;
    if (c->flags & F_WANT_WRITE)
        want |= TK_WRITE;
    /* A TLS read may need to write (and a write to read) before it can go on. */
    if (reading && (c->flags & F_TLS_RWW))
        want |= TK_WRITE;
    if (c->flags & F_TLS_WWR)
        want |= TK_READ;
    int err = tk_io_set(c->loop, &c->io, want);
    if (err < 0) {
        tk_conn_close(c, TK_CLOSE_ERROR, err);
        return;
    }
    /* Decrypted bytes already buffered raise no socket event. */
    if (reading && c->tls && !(c->flags & F_TLS_DEAD) && tk_tls_pending(c->tls) &&
        !(c->flags & F_TLS_REREAD)) {
        c->flags |= F_TLS_REREAD;
        tk_defer_queue(c->loop, &c->defer);
    }
}

/* Re-arms the connection's one timer for its earliest deadline. Only called
 * when a deadline may have moved earlier: idle activity is checked lazily
 * when the timer fires, so reads and writes never touch the heap. */
static void arm_timer(tk_conn *c)
{
    uint64_t deadline = UINT64_MAX;
    if (c->flags & F_LINGER) {
        deadline = c->linger_until_ms;
    } else {
        if (c->lim.idle_timeout_ms)
            deadline = c->last_active_ms + c->lim.idle_timeout_ms;
        /* Output waiting for a handshake is not stalled: nothing can be
         * sent yet, and the handshake has its own deadline. */
        if (c->out_bytes && c->lim.stall_timeout_ms && !(c->flags & F_TLS_HS)) {
            uint64_t stall = c->stall_since_ms + c->lim.stall_timeout_ms;
            if (stall < deadline)
                deadline = stall;
        }
        if ((c->flags & F_TLS_HS) && c->tls_hs_until_ms < deadline)
            deadline = c->tls_hs_until_ms;
    }
    if (deadline == UINT64_MAX) {
        tk_timer_stop(c->loop, &c->timer);
        return;
    }
    if (tk_timer_active(&c->timer) && c->timer.deadline_ms <= deadline)
        return;
    uint64_t now = tk_loop_now(c->loop);
    if (tk_timer_start(c->loop, &c->timer, deadline > now ? deadline - now : 0) < 0)
        tk_conn_close(c, TK_CLOSE_ERROR, -ENOMEM);
}

static void on_timer(tk_loop *loop, tk_timer *t)
{
    tk_conn *c = (tk_conn *)((char *)t - offsetof(tk_conn, timer));
    uint64_t now = tk_loop_now(loop);
    if (c->flags & F_LINGER) {
        if (now >= c->linger_until_ms) {
            tk_conn_close(c, c->reason, 0);
            return;
        }
    } else {
        if ((c->flags & F_TLS_HS) && now >= c->tls_hs_until_ms) {
            c->tls_failed = "handshake timed out";
            log_tls_failure(c);
            tk_conn_close(c, TK_CLOSE_TLS, -ETIMEDOUT);
            return;
        }
        if (c->out_bytes && c->lim.stall_timeout_ms && !(c->flags & F_TLS_HS) &&
            now - c->stall_since_ms >= c->lim.stall_timeout_ms) {
            tk_conn_close(c, TK_CLOSE_STALL, -ETIMEDOUT);
            return;
        }
        if (c->lim.idle_timeout_ms && now - c->last_active_ms >= c->lim.idle_timeout_ms) {
            tk_conn_close(c, TK_CLOSE_IDLE, -ETIMEDOUT);
            return;
        }
    }
    arm_timer(c);
}

static void free_output(tk_conn *c)
{
    tk_chunk *ch = c->out_head;
    while (ch) {
        tk_chunk *next = ch->next;
        chunk_free(ch);
        ch = next;
    }
    c->out_head = c->out_tail = NULL;
    c->out_bytes = 0;
    c->out_mem = 0;
}

void tk_conn_close(tk_conn *c, tk_close_reason why, int err)
{
    if (c->flags & F_CLOSED)
        return;
    c->flags |= F_CLOSED;
    c->reason = why;
    if (err || !(c->flags & F_TLS_DEAD))
        c->close_err = err; /* a TLS failure keeps its error through the linger */
    tk_io_stop(c->loop, &c->io);
    tk_timer_stop(c->loop, &c->timer);
    close(c->io.fd);
    /* Buffers, on_close and the free wait until the current callbacks are
     * over: the service may still be looking at its input. */
    tk_defer_queue(c->loop, &c->defer);
}

/* The queue is empty: send a FIN if one was asked for; then, when closing,
 * either close (the peer already finished) or linger for the peer's FIN. */
static void after_drained(tk_conn *c)
{
    if ((c->flags & F_SHUT_WANTED) && !(c->flags & F_SHUT_DONE)) {
        c->flags |= F_SHUT_DONE;
        if (c->tls && !(c->flags & F_TLS_DEAD))
            (void)tk_tls_shutdown(c->tls);
        if (shutdown(c->io.fd, SHUT_WR) < 0 && (c->flags & F_CLOSING)) {
            tk_conn_close(c, c->reason, -errno);
            return;
        }
    }
    if (!(c->flags & F_CLOSING) || (c->flags & F_LINGER))
        return;
    if (c->flags & F_EOF) {
        tk_conn_close(c, c->reason, 0);
        return;
    }
    c->flags |= F_LINGER;
    c->linger_until_ms = tk_loop_now(c->loop) + c->lim.linger_ms;
    tk_timer_stop(c->loop, &c->timer);
    arm_timer(c);
}

/* Drops n sent bytes from the front of the queue, and with them every chunk
 * that is now fully sent, including empty ones (space reserved and never
 * committed), which would otherwise sit at the head forever. */
static void release_sent(tk_conn *c, size_t n)
{
    c->out_bytes -= n;
    while (c->out_head) {
        tk_chunk *ch = c->out_head;
        size_t left = ch->len - ch->sent;
        if (!ch->file)
            c->out_mem -= n < left ? n : left;
        if (n < left) {
            ch->sent += n;
            return;
        }
        n -= left;
        c->out_head = ch->next;
        if (!c->out_head)
            c->out_tail = NULL;
        chunk_free(ch);
    }
}

static const unsigned char *chunk_bytes(const tk_chunk *ch)
{
    return ch->shared ? tk_shared_data(ch->shared) : ch->data;
}

/* Sends the file range at the head of the queue with sendfile(): the bytes
 * go from the page cache to the socket without passing through this
 * process. Returns what sendfile() returned; a file that ends before the
 * range does is an error (-ENODATA in errno terms). */
static ssize_t send_file_chunk(tk_conn *c, size_t *total)
{
    tk_chunk *ch = c->out_head;
    off_t off = (off_t)(ch->foff + ch->sent);
    size_t want = ch->len - ch->sent;
    if (want > 0x7ffff000)
        want = 0x7ffff000; /* the most one sendfile() call moves */
    *total = want;
    ssize_t w = sendfile(c->io.fd, ch->file->fd, &off, want);
    if (w == 0) {
        errno = ENODATA;
        return -1;
    }
    return w;
}

/* Gathers the memory chunks at the head of the queue (up to the first file
 * range) and sends them in one call; when a file range follows, MSG_MORE
 * keeps a frame header in the same segment as the file bytes after it. */
static ssize_t send_memory_chunks(tk_conn *c, size_t *total)
{
    struct iovec iov[TK_IOV_MAX];
    int n = 0;
    int more = 0;
    *total = 0;
    for (tk_chunk *ch = c->out_head; ch && n < TK_IOV_MAX; ch = ch->next) {
        if (ch->file) {
            more = 1;
            break;
        }
        iov[n].iov_base = (void *)(chunk_bytes(ch) + ch->sent);
        iov[n].iov_len = ch->len - ch->sent;
        *total += iov[n].iov_len;
        n++;
    }
    if (*total == 0)
        return 0;
    int flags = MSG_NOSIGNAL | MSG_DONTWAIT | (more ? MSG_MORE : 0);
    if (n == 1) /* the usual case, one chunk: send() spares the kernel a msghdr */
        return send(c->io.fd, iov[0].iov_base, iov[0].iov_len, flags);
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    return sendmsg(c->io.fd, &msg, flags);
}

/* The thread's TLS staging buffer, or NULL when out of memory. */
static unsigned char *tls_stage_buf(void)
{
    if (!tls_stage) {
        tls_stage = malloc(TK_TLS_FILE_STAGE);
        if (tls_stage)
            cache_register();
    }
    return tls_stage;
}

/* A TLS session's result in send()'s terms: n >= 0, or -1 with errno set;
 * an -EAGAIN that waits for input is noted so the loop watches for it. */
static ssize_t tls_result(tk_conn *c, ssize_t r)
{
    if (r >= 0)
        return r;
    if (r == -EAGAIN && (tk_tls_want(c->tls) & TK_TLS_WANT_READ))
        c->flags |= F_TLS_WWR;
    errno = (int)-r;
    return -1;
}

/* Encrypts the memory chunks at the head of the queue: a large head chunk
 * is written straight from the queue; small ones are packed into one record
 * first. A retry after EAGAIN offers the same leading bytes again, as
 * OpenSSL requires, because nothing is released until it is taken. */
static ssize_t tls_send_memory(tk_conn *c, size_t *total)
{
    tk_chunk *ch = c->out_head;
    const unsigned char *p = chunk_bytes(ch) + ch->sent;
    size_t n = ch->len - ch->sent;
    unsigned char *stage;
    if (n < TK_TLS_RECORD && ch->next && !ch->next->file && (stage = tls_stage_buf()) != NULL) {
        size_t got = 0;
        for (; ch && !ch->file && got < TK_TLS_RECORD; ch = ch->next) {
            size_t take = ch->len - ch->sent;
            if (take > TK_TLS_RECORD - got)
                take = TK_TLS_RECORD - got;
            memcpy(stage + got, chunk_bytes(ch) + ch->sent, take);
            got += take;
        }
        p = stage;
        n = got;
    }
    *total = n;
    if (n == 0)
        return 0;
    return tls_result(c, tk_tls_write(c->tls, p, n));
}

/* Sends the file range at the head over TLS: with sendfile() when kernel
 * TLS carries the records, otherwise read into the staging buffer and
 * encrypted here. */
static ssize_t tls_send_file(tk_conn *c, size_t *total)
{
    tk_chunk *ch = c->out_head;
    uint64_t off = ch->foff + ch->sent;
    size_t want = ch->len - ch->sent;
    if (tk_tls_ktls_send(c->tls)) {
        if (want > 0x7ffff000)
            want = 0x7ffff000;
        *total = want;
        ssize_t w = tk_tls_sendfile(c->tls, ch->file->fd, off, want);
        if (w != -EOPNOTSUPP)
            return tls_result(c, w);
    }
    unsigned char *stage = tls_stage_buf();
    if (!stage) {
        errno = ENOMEM;
        return -1;
    }
    if (want > TK_TLS_FILE_STAGE)
        want = TK_TLS_FILE_STAGE;
    *total = want;
    ssize_t r = pread(ch->file->fd, stage, want, (off_t)off);
    if (r <= 0) {
        if (r == 0)
            errno = ENODATA;
        return -1;
    }
    /* A write takes one record at a time: send every record of what was
     * read before reading again. If the socket fills up part way, what was
     * taken is reported, and the retry reads the untaken bytes again from
     * the file, the same bytes OpenSSL expects. */
    size_t done = 0;
    while (done < (size_t)r) {
        ssize_t w = tk_tls_write(c->tls, stage + done, (size_t)r - done);
        if (w < 0) {
            if (done > 0 && w == -EAGAIN) {
                (void)tls_result(c, w); /* notes what the retry waits for */
                break;
            }
            return tls_result(c, w);
        }
        done += (size_t)w;
    }
    *total = (size_t)r;
    return (ssize_t)done;
}

/* Writes as much queued output as the kernel takes, in as few calls as it can. */
static void flush(tk_conn *c)
{
    if (c->flags & F_TLS_HS)
        return; /* output waits for the handshake */
    int tls = c->tls && !(c->flags & F_TLS_DEAD);
    uint64_t now = tk_loop_now(c->loop);
    while (c->out_head) {
        size_t total;
        ssize_t w;
        if (tls)
            w = c->out_head->file ? tls_send_file(c, &total) : tls_send_memory(c, &total);
        else
            w = c->out_head->file ? send_file_chunk(c, &total) : send_memory_chunks(c, &total);
        if (total == 0) {
            release_sent(c, 0); /* only empty chunks: nothing to send */
            continue;
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!(c->flags & F_WANT_WRITE)) {
                    c->flags |= F_WANT_WRITE;
                    arm_timer(c);
                }
                break;
            }
            int err = -errno;
            tk_conn_close(c,
                          err == -EPIPE || err == -ECONNRESET ? TK_CLOSE_RESET
                          : err == -EPROTO                    ? TK_CLOSE_TLS
                                                              : TK_CLOSE_ERROR,
                          err);
            return;
        }
        c->bytes_out += (uint64_t)w;
        if (c->metrics)
            tk_metrics_bytes(c->metrics, 0, (uint64_t)w);
        c->last_active_ms = now;
        c->stall_since_ms = now;
        release_sent(c, (size_t)w);
        if ((size_t)w < total && !tls) {
            /* A short write means the socket buffer is full (a TLS write
             * returns after each record it got out, so it just goes on). */
            c->flags |= F_WANT_WRITE;
            arm_timer(c);
            break;
        }
    }
    if (!c->out_head) {
        c->flags &= ~F_WANT_WRITE;
        if (c->h->on_sent)
            c->h->on_sent(c);
        if (c->flags & F_CLOSED)
            return;
        /* on_sent may have queued more (the next frames of a transfer): the
         * FIN of a close waits until that is out too. */
        if (!c->out_head)
            after_drained(c);
        if (c->flags & F_CLOSED)
            return;
    }
    if ((c->flags & F_PAUSE_OUTPUT) && c->out_mem <= c->lim.low_water)
        c->flags &= ~F_PAUSE_OUTPUT;
    update_interest(c);
}

/* True when flush() has something to do: bytes to send, or a FIN or a
 * close waiting for the queue to drain. */
static int flush_needed(const tk_conn *c)
{
    if (c->out_head)
        return 1;
    if ((c->flags & F_SHUT_WANTED) && !(c->flags & F_SHUT_DONE))
        return 1;
    return (c->flags & F_CLOSING) && !(c->flags & F_LINGER);
}

static void redeliver(tk_conn *c);
static void do_read(tk_conn *c, int budget);

static void on_defer(tk_loop *loop, tk_defer *d)
{
    (void)loop;
    tk_conn *c = (tk_conn *)((char *)d - offsetof(tk_conn, defer));
    if (c->flags & F_REDELIVER)
        redeliver(c);
    if ((c->flags & (F_TLS_REREAD | F_CLOSED)) == F_TLS_REREAD) {
        c->flags &= ~F_TLS_REREAD;
        do_read(c, TK_READ_BUDGET);
    }
    if (c->flags & F_CLOSED) {
        if (c->h->on_close)
            c->h->on_close(c, c->reason, c->close_err);
        free_output(c);
        tk_buf_free(&c->in);
        tk_tls_free(c->tls);
        free(c);
        return;
    }
    if (flush_needed(c))
        flush(c);
}

unsigned char *tk_conn_write_reserve(tk_conn *c, size_t n)
{
    if (c->flags & (F_CLOSED | F_CLOSING | F_SHUT_WANTED))
        return NULL;
    if (c->out_mem + n > c->lim.max_output) {
        tk_debug("dropping client: output over %zu bytes", c->lim.max_output);
        tk_conn_close(c, TK_CLOSE_LIMIT, -ENOBUFS);
        return NULL;
    }
    tk_chunk *tail = c->out_tail;
    if (tail && !tail->shared && !tail->file && tail->cap - tail->len >= n)
        return tail->data + tail->len;
    tk_chunk *ch = chunk_new(n);
    if (!ch) {
        tk_conn_close(c, TK_CLOSE_ERROR, -ENOMEM);
        return NULL;
    }
    ch->next = NULL;
    ch->shared = NULL;
    ch->file = NULL;
    ch->sent = ch->len = 0;
    if (tail)
        tail->next = ch;
    else
        c->out_head = ch;
    c->out_tail = ch;
    return ch->data;
}

/* Bookkeeping after bytes were queued: schedule the flush, apply
 * backpressure (memory bytes only: a file range holds no memory). */
static void queued(tk_conn *c, size_t n, int in_memory)
{
    if (c->out_bytes == 0)
        c->stall_since_ms = tk_loop_now(c->loop);
    c->out_bytes += n;
    if (in_memory)
        c->out_mem += n;
    tk_defer_queue(c->loop, &c->defer);
    if (c->out_mem >= c->lim.high_water && !(c->flags & F_PAUSE_OUTPUT)) {
        c->flags |= F_PAUSE_OUTPUT;
        update_interest(c);
    }
}

void tk_conn_write_commit(tk_conn *c, size_t used)
{
    if (used == 0 || !c->out_tail)
        return;
    c->out_tail->len += used;
    queued(c, used, 1);
}

int tk_conn_write(tk_conn *c, const void *p, size_t n)
{
    if (n == 0)
        return (c->flags & (F_CLOSED | F_CLOSING | F_SHUT_WANTED)) ? -EPIPE : 0;
    unsigned char *dst = tk_conn_write_reserve(c, n);
    if (!dst)
        return (c->flags & F_CLOSED) && c->reason == TK_CLOSE_LIMIT ? -ENOBUFS : -EPIPE;
    memcpy(dst, p, n);
    tk_conn_write_commit(c, n);
    return 0;
}

/* Appends a chunk that refers to bytes held elsewhere (a shared chunk or a
 * file); the caller sets what it refers to. NULL (connection closed) when
 * out of memory. */
static tk_chunk *append_ref_chunk(tk_conn *c)
{
    tk_chunk *ch = malloc(sizeof(*ch));
    if (!ch) {
        tk_conn_close(c, TK_CLOSE_ERROR, -ENOMEM);
        return NULL;
    }
    ch->cap = 0;
    ch->next = NULL;
    ch->shared = NULL;
    ch->file = NULL;
    ch->foff = 0;
    ch->sent = 0;
    ch->len = 0;
    if (c->out_tail)
        c->out_tail->next = ch;
    else
        c->out_head = ch;
    c->out_tail = ch;
    return ch;
}

int tk_conn_write_shared(tk_conn *c, tk_shared *s)
{
    size_t n = tk_shared_len(s);
    if (c->flags & (F_CLOSED | F_CLOSING | F_SHUT_WANTED))
        return -EPIPE;
    if (c->out_mem + n > c->lim.max_output) {
        tk_conn_close(c, TK_CLOSE_LIMIT, -ENOBUFS);
        return -ENOBUFS;
    }
    tk_chunk *ch = append_ref_chunk(c);
    if (!ch)
        return -ENOMEM;
    ch->shared = tk_shared_ref(s);
    ch->len = n;
    queued(c, n, 1);
    return 0;
}

int tk_conn_write_file(tk_conn *c, tk_file *f, uint64_t off, size_t len)
{
    if (c->flags & (F_CLOSED | F_CLOSING | F_SHUT_WANTED))
        return -EPIPE;
    if (len == 0)
        return 0;
    tk_chunk *ch = append_ref_chunk(c);
    if (!ch)
        return -ENOMEM;
    ch->file = tk_file_ref(f);
    ch->foff = off;
    ch->len = len;
    queued(c, len, 0);
    return 0;
}

void tk_conn_shutdown_write(tk_conn *c)
{
    if (c->flags & (F_CLOSED | F_SHUT_WANTED))
        return;
    c->flags |= F_SHUT_WANTED;
    tk_defer_queue(c->loop, &c->defer);
}

void tk_conn_close_after_flush(tk_conn *c, tk_close_reason why)
{
    if (c->flags & (F_CLOSED | F_CLOSING))
        return;
    c->flags |= F_CLOSING | F_SHUT_WANTED;
    c->reason = why;
    tk_defer_queue(c->loop, &c->defer);
    update_interest(c);
}

void tk_conn_pause_read(tk_conn *c)
{
    c->flags |= F_PAUSE_USER;
    update_interest(c);
}

void tk_conn_resume_read(tk_conn *c)
{
    c->flags &= ~F_PAUSE_USER;
    update_interest(c);
    /* Input that arrived before the pause and was not consumed is handed
     * over again, without waiting for more bytes from the peer. */
    if (tk_buf_len(&c->in) && !(c->flags & (F_CLOSED | F_CLOSING | F_EOF))) {
        c->flags |= F_REDELIVER;
        tk_defer_queue(c->loop, &c->defer);
    }
}

/* Offers the held input to the service again (after tk_conn_resume_read). */
static void redeliver(tk_conn *c)
{
    c->flags &= ~F_REDELIVER;
    if (c->flags & (F_CLOSED | F_CLOSING | F_PAUSE_USER | F_EOF) || !tk_buf_len(&c->in))
        return;
    size_t used = c->h->on_data(c, tk_buf_head(&c->in), tk_buf_len(&c->in));
    if (c->flags & F_CLOSED)
        return;
    if (c->flags & F_CLOSING) {
        tk_buf_free(&c->in);
        return;
    }
    tk_buf_consume(&c->in, used);
}

/* The peer sent FIN: hand the service what is left, then close once flushed. */
static void peer_finished(tk_conn *c)
{
    c->flags |= F_EOF;
    if (c->flags & F_CLOSING) {
        if (c->flags & F_SHUT_DONE)
            tk_conn_close(c, c->reason, 0);
        else
            update_interest(c);
        return;
    }
    if (c->h->on_eof)
        c->h->on_eof(c, tk_buf_head(&c->in), tk_buf_len(&c->in));
    if (c->flags & F_CLOSED)
        return;
    tk_buf_free(&c->in);
    if (!(c->flags & F_CLOSING) && !c->h->on_eof)
        tk_conn_close_after_flush(c, TK_CLOSE_PEER);
    update_interest(c);
}

/* Hands input to the service: straight from the scratch buffer when nothing
 * was left over, otherwise appended to the leftover. The connection keeps
 * only what the service did not consume, so a partial message costs its own
 * size in memory, never a whole read buffer. */
static void deliver(tk_conn *c, const unsigned char *p, size_t n)
{
    size_t used;
    if (tk_buf_len(&c->in) == 0) {
        used = c->h->on_data(c, p, n);
        if (c->flags & (F_CLOSED | F_CLOSING) || used >= n)
            return;
        p += used;
        n -= used;
        int err = n > c->lim.max_input ? -ENOBUFS : tk_buf_append(&c->in, p, n);
        if (err < 0)
            tk_conn_close(c, err == -ENOBUFS ? TK_CLOSE_LIMIT : TK_CLOSE_ERROR, err);
        return;
    }
    int err = tk_buf_append(&c->in, p, n);
    if (err < 0) {
        tk_conn_close(c, err == -ENOBUFS ? TK_CLOSE_LIMIT : TK_CLOSE_ERROR, err);
        return;
    }
    used = c->h->on_data(c, tk_buf_head(&c->in), tk_buf_len(&c->in));
    if (c->flags & F_CLOSED)
        return;
    if (c->flags & F_CLOSING) {
        tk_buf_free(&c->in); /* no more input will be delivered */
        return;
    }
    tk_buf_consume(&c->in, used);
    if (tk_buf_len(&c->in) > c->lim.max_input)
        tk_conn_close(c, TK_CLOSE_LIMIT, -ENOBUFS);
}

static int reading_allowed(const tk_conn *c)
{
    if (c->flags & (F_CLOSED | F_EOF))
        return 0;
    if (c->flags & F_CLOSING)
        return 1;
    return !(c->flags & (F_PAUSE_USER | F_PAUSE_OUTPUT));
}

static void do_read(tk_conn *c, int budget)
{
    /* Input held over a pause goes first: bytes or a FIN read now must not
     * overtake it. */
    if (c->flags & F_REDELIVER) {
        redeliver(c);
        if (c->flags & (F_CLOSED | F_PAUSE_USER))
            return;
    }
    if (c->flags & F_TLS_HS)
        return; /* nothing is delivered before the handshake is done */
    unsigned char *scratch = tk_loop_scratch(c->loop);
    size_t room = tk_loop_scratch_size(c->loop);
    int tls = c->tls && !(c->flags & F_TLS_DEAD);
    while (budget-- > 0 && reading_allowed(c)) {
        ssize_t r;
        if (tls) {
            c->flags &= ~F_TLS_RWW;
            r = tk_tls_read(c->tls, scratch, room);
            if (r < 0) {
                if (r == -EAGAIN && (tk_tls_want(c->tls) & TK_TLS_WANT_WRITE)) {
                    c->flags |= F_TLS_RWW;
                    update_interest(c);
                }
                errno = (int)-r;
                r = -1;
            }
        } else {
            r = recv(c->io.fd, scratch, room, 0);
        }
        if (r > 0) {
            c->bytes_in += (uint64_t)r;
            if (c->metrics)
                tk_metrics_bytes(c->metrics, (uint64_t)r, 0);
            c->last_active_ms = tk_loop_now(c->loop);
            if (c->flags & F_CLOSING)
                continue; /* closing: input is read only to be discarded */
            c->read_us = tk_clock_us();
            deliver(c, scratch, (size_t)r);
            if ((size_t)r < room && !tls)
                return; /* the socket is drained for now */
            continue;
        }
        if (r == 0) {
            peer_finished(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return;
        int err = -errno;
        tk_conn_close(c,
                      (c->flags & F_TLS_DEAD) || err == -EPROTO ? TK_CLOSE_TLS
                      : err == -ECONNRESET                      ? TK_CLOSE_RESET
                                                                : TK_CLOSE_ERROR,
                      err);
        return;
    }
    /* The budget ran out: bytes OpenSSL already decrypted raise no event. */
    if (tls && reading_allowed(c) && tk_tls_pending(c->tls) && !(c->flags & F_TLS_REREAD)) {
        c->flags |= F_TLS_REREAD;
        tk_defer_queue(c->loop, &c->defer);
    }
}

void tk_conn_drain_input(tk_conn *c)
{
    do_read(c, TK_READ_BUDGET);
}

/* Logs a failed server-side handshake: the first at once, then at most one
 * line per interval counting the others. */
static void log_tls_failure(tk_conn *c)
{
    if (!(c->flags & F_TLS_SERVER))
        return;
    uint64_t now = tk_loop_now(c->loop);
    atomic_fetch_add(&tls_fail_unlogged, 1);
    uint64_t last = atomic_load(&tls_fail_logged_ms);
    if (last && now - last < TK_TLS_FAIL_LOG_MS)
        return;
    /* One thread wins the interval and reports what was counted. */
    if (!atomic_compare_exchange_strong(&tls_fail_logged_ms, &last, now))
        return;
    unsigned long n = atomic_exchange(&tls_fail_unlogged, 0);
    char who[TK_ADDR_STRLEN];
    tk_info("tls: %lu handshake(s) failed%s (latest %s: %s)", n,
            last ? " since the last report" : "", tk_addr_format(&c->peer, who, sizeof(who)),
            tk_conn_tls_error(c));
}

/* TLS is over for c: what it queued must never go out in the clear, so
 * the output is dropped; the socket is shut down and drained raw until the
 * peer closes or the linger ends, so the peer sees an orderly FIN rather
 * than a reset for bytes it sent (a plain-text client, say). */
static void tls_fail(tk_conn *c, int err)
{
    c->flags &= ~(F_TLS_HS | F_TLS_RWW | F_TLS_WWR | F_TLS_REREAD | F_WANT_WRITE);
    c->flags |= F_TLS_DEAD | F_CLOSING | F_SHUT_WANTED;
    c->reason = TK_CLOSE_TLS;
    c->close_err = err;
    log_tls_failure(c);
    free_output(c);
    tk_buf_free(&c->in);
    after_drained(c);
    update_interest(c);
}

/* Advances the handshake; once done, sends what was queued meanwhile and
 * reads what came with the last handshake flight. */
static void tls_step(tk_conn *c)
{
    int r = tk_tls_handshake(c->tls);
    if (r == -EAGAIN) {
        update_interest(c);
        return;
    }
    if (r < 0) {
        tls_fail(c, r);
        return;
    }
    c->flags &= ~F_TLS_HS;
    /* Output queued during the handshake starts its stall clock now. */
    c->last_active_ms = c->stall_since_ms = tk_loop_now(c->loop);
    if (c->h->on_ready) {
        c->h->on_ready(c);
        if (c->flags & F_CLOSED)
            return;
    }
    if (flush_needed(c))
        flush(c);
    if (c->flags & F_CLOSED)
        return;
    do_read(c, TK_READ_BUDGET);
    if (c->flags & F_CLOSED)
        return;
    update_interest(c);
}

int tk_conn_start_tls(tk_conn *c, tk_tls_ctx *ctx, const char *peer_name)
{
    if (!ctx)
        return 0;
    if (c->flags & F_CLOSED)
        return -EPIPE;
    int err = tk_tls_new(ctx, c->io.fd, peer_name, &c->tls);
    if (err < 0) {
        tk_conn_close(c, TK_CLOSE_ERROR, err);
        return err;
    }
    c->flags |= F_TLS_HS | (tk_tls_ctx_is_server(ctx) ? F_TLS_SERVER : 0);
    uint32_t ms = tk_tls_ctx_handshake_timeout(ctx);
    c->tls_hs_until_ms = ms ? tk_loop_now(c->loop) + ms : UINT64_MAX;
    arm_timer(c);
    update_interest(c);
    return (c->flags & F_CLOSED) ? -ENOMEM : 0;
}

tk_tls *tk_conn_tls(const tk_conn *c)
{
    return c->tls;
}

const char *tk_conn_tls_error(const tk_conn *c)
{
    if (c->tls_failed)
        return c->tls_failed;
    return c->tls ? tk_tls_error(c->tls) : "";
}

static void on_io(tk_loop *loop, tk_io *io, unsigned events)
{
    (void)loop;
    tk_conn *c = (tk_conn *)((char *)io - offsetof(tk_conn, io));
    if (c->flags & F_TLS_HS) {
        tls_step(c);
        return;
    }
    /* A TLS read that waited for room, or a write that waited for input. */
    if ((events & TK_WRITE) && (c->flags & F_TLS_RWW))
        events |= TK_READ;
    if ((events & TK_READ) && (c->flags & F_TLS_WWR)) {
        c->flags &= ~(F_TLS_WWR | F_WANT_WRITE);
        events |= TK_WRITE;
    }
    if ((events & (TK_WRITE | TK_HUP)) && c->out_head)
        flush(c);
    if ((events & TK_READ) && !(c->flags & F_CLOSED))
        do_read(c, TK_READ_BUDGET);
    if (c->flags & F_CLOSED)
        return;
    /* Replies to what was just read go out now, in one call, while they are
     * hot; the deferred pass still covers writes made from anywhere else. */
    if (c->out_head && !(c->flags & F_WANT_WRITE))
        flush(c);
    if (c->flags & F_CLOSED)
        return;
    /* A hang-up we could not act on (input paused or finished, nothing to
     * send) would be reported again on every turn: end the connection instead
     * of spinning. Without a socket error it is an orderly end: both sides
     * sent their FIN. */
    if ((events & TK_HUP) && !(io->events & TK_READ)) {
        int err = tk_sock_error(io->fd);
        tk_close_reason why = err                      ? TK_CLOSE_RESET
                              : (c->flags & F_CLOSING) ? c->reason
                                                       : TK_CLOSE_PEER;
        tk_conn_close(c, why, err);
    }
}

/* The local side of transfers: downloads into a hidden partial file that
 * is renamed into place only after the digest matched, uploads read from
 * the source file with their digest computed on the way. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fclient_internal.h"

#define PARTIAL_SUFFIX ".tcpkit-part"
#define HASH_BLOCK     (1024 * 1024)

int tk_fclient_partial_path(const char *local, char *buf, size_t cap)
{
    const char *slash = strrchr(local, '/');
    int n = slash ? snprintf(buf, cap, "%.*s/.%s" PARTIAL_SUFFIX, (int)(slash - local), local,
                             slash + 1)
                  : snprintf(buf, cap,
                             "."
                             "%s" PARTIAL_SUFFIX,
                             local);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Feeds fd[0..len) to the digest (a resumed transfer's prefix). */
static int hash_prefix(EVP_MD_CTX *md, int fd, uint64_t len, unsigned char *buf)
{
    uint64_t off = 0;
    while (off < len) {
        size_t want = len - off < HASH_BLOCK ? (size_t)(len - off) : HASH_BLOCK;
        ssize_t r = pread(fd, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EIO;
        EVP_DigestUpdate(md, buf, (size_t)r);
        off += (uint64_t)r;
    }
    return 0;
}

static int digest_init(tk_fxfer *x)
{
    x->md = EVP_MD_CTX_new();
    if (!x->md || EVP_DigestInit_ex(x->md, EVP_sha256(), NULL) != 1)
        return -ENOMEM;
    return 0;
}

static void digest_final(tk_fxfer *x)
{
    unsigned len = 0;
    EVP_DigestFinal_ex(x->md, x->digest, &len);
    x->have_digest = 1;
}

int fc_get_prepare(tk_fxfer *x)
{
    tk_fclient *c = x->c;
    x->zstd = (x->flags & TK_FGET_ZSTD) && c->cfg.protocol == 2 && (c->features & TK_FEATURE_ZSTD);
    if (c->cfg.protocol == 2 && digest_init(x) < 0)
        return -ENOMEM;
    if (strcmp(x->local, "-") == 0) {
        x->fd = 1;
        return 0;
    }
    char tmp[4096];
    int rc = tk_fclient_partial_path(x->local, tmp, sizeof(tmp));
    if (rc < 0)
        return rc;
    x->tmp = strdup(tmp);
    if (!x->tmp)
        return -ENOMEM;
    int resume = (x->flags & TK_FGET_RESUME) && c->cfg.protocol == 2;
    x->fd = open(tmp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (resume ? 0 : O_TRUNC), 0666);
    if (x->fd < 0)
        return -errno;
    struct stat st;
    if (fstat(x->fd, &st) < 0 || !S_ISREG(st.st_mode))
        return -EINVAL;
    if (resume && st.st_size > 0) {
        x->offset = (uint64_t)st.st_size;
        rc = hash_prefix(x->md, x->fd, x->offset, c->buf);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int fc_get_open(tk_fxfer *x, uint64_t size, uint64_t offset, int zstd)
{
    tk_fclient *c = x->c;
    if (offset != x->offset || offset > size) {
        fc_xfer_end(x, TK_FERR_PROTOCOL, "the server started at another offset");
        return -EPROTO;
    }
    x->size = size;
    x->pos = offset;
    x->zstd = zstd;
    x->state = FXS_DATA;
    /* Reserve the blocks without changing the size: a partial's size must
     * stay the number of bytes really received, for --continue. */
    if (x->fd != 1 && size > offset)
        (void)fallocate(x->fd, FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)(size - offset));
    if (c->h.progress)
        c->h.progress(x, x->pos, size, c->arg);
    return 0;
}

static int write_all(int fd, const unsigned char *p, size_t n, uint64_t off, int seq)
{
    while (n) {
        ssize_t w = seq ? write(fd, p, n) : pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            /* A stdout someone made non-blocking: wait, don't lose bytes. */
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            (void)poll(&pfd, 1, -1);
            continue;
        }
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

void fc_get_data(tk_fxfer *x, const unsigned char *p, size_t n)
{
    tk_fclient *c = x->c;
    if (x->state != FXS_DATA || x->pos + n > x->size) {
        fc_xfer_end(x, TK_FERR_PROTOCOL, "the server sent more data than the file holds");
        return;
    }
    int rc = write_all(x->fd, p, n, x->pos, x->fd == 1);
    if (rc < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "cannot write %s: %s", x->tmp ? x->tmp : "stdout",
                 strerror(-rc));
        fc_xfer_end(x, rc, msg);
        return;
    }
    if (x->md)
        fc_hasher_add(c->hasher, x->md, p, n);
    x->pos += n;
    if (c->h.progress)
        c->h.progress(x, x->pos, x->size, c->arg);
}

void fc_get_frame(tk_fxfer *x, const unsigned char *p, size_t n)
{
    tk_fclient *c = x->c;
    if (!x->zstd) {
        fc_get_data(x, p, n);
        return;
    }
    unsigned long long size = ZSTD_getFrameContentSize(p, n);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
        size > c->cfg.max_frame) {
        fc_xfer_end(x, TK_FERR_PROTOCOL, "a compressed frame has no or too large a size");
        return;
    }
    size_t got = ZSTD_decompressDCtx(c->dctx, c->buf, (size_t)size, p, n);
    if (ZSTD_isError(got) || got != size) {
        fc_xfer_end(x, TK_FERR_PROTOCOL, "a compressed frame does not decompress");
        return;
    }
    fc_get_data(x, c->buf, got);
}

/* Syncs the directory that holds path, so a rename into it is durable. */
static void sync_dir_of(const char *path)
{
    char copy[4096];
    snprintf(copy, sizeof(copy), "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

void fc_get_end(tk_fxfer *x, uint64_t count, const unsigned char *digest)
{
    tk_fclient *c = x->c;
    x->state = FXS_END;
    if (x->pos != x->size || count != x->size - x->offset) {
        fc_xfer_end(x, TK_FERR_PROTOCOL, "the transfer ended before the whole file arrived");
        return;
    }
    if (x->md) {
        fc_hasher_drain(c->hasher);
        digest_final(x);
        if (!digest || memcmp(digest, x->digest, TK_FRAME_DIGEST) != 0) {
            if (x->tmp)
                (void)unlink(x->tmp);
            fc_xfer_end(x, TK_FERR_DIGEST, "the SHA-256 of the received data does not match");
            return;
        }
    }
    if (x->fd == 1) {
        fc_xfer_end(x, 0, "");
        return;
    }
    if (c->cfg.sync && fdatasync(x->fd) < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "cannot sync %s: %s", x->tmp, strerror(errno));
        fc_xfer_end(x, -errno, msg);
        return;
    }
    if (rename(x->tmp, x->local) < 0) {
        int err = errno;
        char msg[160];
        snprintf(msg, sizeof(msg), "cannot rename to %s: %s", x->local, strerror(err));
        fc_xfer_end(x, -err, msg);
        return;
    }
    free(x->tmp);
    x->tmp = NULL;
    if (c->cfg.sync)
        sync_dir_of(x->local);
    fc_xfer_end(x, 0, "");
}

int fc_put_prepare(tk_fxfer *x)
{
    tk_fclient *c = x->c;
    x->fd = open(x->local, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (x->fd < 0)
        return -errno;
    struct stat st;
    if (fstat(x->fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
    (void)posix_fadvise(x->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    x->size = (uint64_t)st.st_size;
    x->zstd = (x->flags & TK_FPUT_ZSTD) && (c->features & TK_FEATURE_ZSTD);
    return digest_init(x);
}

static void enqueue_send(tk_fclient *c, tk_fxfer *x)
{
    if (x->queued)
        return;
    x->queued = 1;
    x->qnext = NULL;
    if (c->sq_tail)
        c->sq_tail->qnext = x;
    else
        c->sq_head = x;
    c->sq_tail = x;
}

void fc_put_ready(tk_fxfer *x, uint64_t offset)
{
    tk_fclient *c = x->c;
    if (x->state != FXS_SENT || offset > x->size) {
        fc_xfer_end(x, TK_FERR_PROTOCOL, "the server asked for data from past the end");
        return;
    }
    x->offset = offset;
    x->pos = offset;
    int rc = hash_prefix(x->md, x->fd, offset, c->buf);
    if (rc < 0) {
        fc_xfer_end(x, rc, "cannot read the file to resume it");
        return;
    }
    x->state = FXS_DATA;
    enqueue_send(c, x);
    fc_put_pump(c);
}

/* The END of an upload: its byte count and whole-file digest. */
static void put_finish(tk_fxfer *x)
{
    tk_fclient *c = x->c;
    digest_final(x);
    unsigned char *p = fc_frame_reserve(c, TK_FRAME_HEADER + 12 + TK_FRAME_DIGEST);
    if (p)
        fc_frame_commit(c, p,
                        tk_v2_encode_end(p, c->tag_len, x->id, x->size - x->offset, x->digest));
    x->state = FXS_END;
}

/* One DATA frame of an upload; 1 if there is more to send. */
static int put_chunk(tk_fxfer *x)
{
    tk_fclient *c = x->c;
    size_t hl = TK_FRAME_HEADER + TK_FRAME_STREAM;
    size_t limit = c->peer_max_frame - TK_FRAME_STREAM - c->tag_len;
    if (x->zstd)
        limit -= limit / 128 + 1024;
    size_t n = c->cfg.chunk_size < limit ? c->cfg.chunk_size : limit;
    if (x->size - x->pos < n)
        n = (size_t)(x->size - x->pos);
    if (n == 0) {
        put_finish(x);
        return 0;
    }
    unsigned char *src = c->buf;
    unsigned char *p = NULL;
    if (!x->zstd) {
        p = fc_frame_reserve(c, hl + n);
        if (!p)
            return 0;
        src = p + hl;
    }
    ssize_t r;
    do
        r = pread(x->fd, src, n, (off_t)x->pos);
    while (r < 0 && errno == EINTR);
    if (r != (ssize_t)n) {
        if (p)
            tk_conn_write_commit(c->conn, 0);
        fc_xfer_end(x, r < 0 ? -errno : -EIO, "the file changed or could not be read");
        return 0;
    }
    EVP_DigestUpdate(x->md, src, n);
    if (x->zstd) {
        size_t bound = ZSTD_compressBound(n);
        p = fc_frame_reserve(c, hl + bound);
        if (!p)
            return 0;
        ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only);
        ZSTD_CCtx_setPledgedSrcSize(c->cctx, n);
        size_t z = ZSTD_compress2(c->cctx, p + hl, bound, src, n);
        if (ZSTD_isError(z)) {
            tk_conn_write_commit(c->conn, 0);
            fc_xfer_end(x, -EIO, "compression failed");
            return 0;
        }
        fc_frame_commit(c, p, tk_v2_encode_data_head(p, c->tag_len, x->id, z) + z);
    } else {
        fc_frame_commit(c, p, tk_v2_encode_data_head(p, c->tag_len, x->id, n) + n);
    }
    x->pos += n;
    if (c->h.progress)
        c->h.progress(x, x->pos, x->size, c->arg);
    if (x->pos == x->size) {
        put_finish(x);
        return 0;
    }
    return 1;
}

void fc_put_pump(tk_fclient *c)
{
    size_t target = 2 * c->cfg.chunk_size;
    while (c->sq_head && c->conn && !c->failed && tk_conn_pending(c->conn) < target) {
        tk_fxfer *x = c->sq_head;
        c->sq_head = x->qnext;
        if (!c->sq_head)
            c->sq_tail = NULL;
        x->queued = 0;
        if (put_chunk(x))
            enqueue_send(c, x);
    }
}

void fc_put_done(tk_fxfer *x, uint64_t size, const unsigned char *digest)
{
    if (x->state != FXS_END || size != x->size || memcmp(digest, x->digest, TK_FRAME_DIGEST) != 0) {
        fc_xfer_end(x, TK_FERR_PROTOCOL, "the server confirmed another size or digest");
        return;
    }
    fc_xfer_end(x, 0, "");
}

void fc_xfer_cleanup(tk_fxfer *x, int err)
{
    if (x->kind == FX_GET && x->tmp && err) {
        /* A partial that holds bytes stays for --continue; an empty or
         * wrong one goes. */
        struct stat st;
        int keep = err != TK_FERR_DIGEST && err != TK_FERR_PROTOCOL && x->fd >= 0 &&
                   fstat(x->fd, &st) == 0 && st.st_size > 0;
        if (!keep)
            (void)unlink(x->tmp);
    }
    if (x->fd > 2)
        close(x->fd);
    x->fd = -1;
    if (x->md && x->kind == FX_GET)
        fc_hasher_drain(x->c->hasher); /* the thread may still hold it */
    EVP_MD_CTX_free(x->md);
    x->md = NULL;
}

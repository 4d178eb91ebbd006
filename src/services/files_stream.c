/* Streams and the send scheduler: each connection's open streams take
 * turns producing one frame (DATA, ENTRIES or their END), while the
 * connection keeps about FILES_PUMP_FRAMES frames queued ahead of the
 * kernel. Downloads go through sendfile() when the stream is plain. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "files_internal.h"

files_stream *files_stream_new(files_conn *fc, uint32_t id, files_kind_t kind)
{
    files_stream *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->fc = fc;
    s->id = id;
    s->kind = kind;
    s->fd = -1;
    s->dirfd = -1;
    s->next = fc->streams;
    if (fc->streams)
        fc->streams->prev = s;
    fc->streams = s;
    fc->nstreams++;
    atomic_fetch_add(&fc->fl->f->transfers, 1);
    return s;
}

files_stream *files_stream_find(files_conn *fc, uint32_t id)
{
    for (files_stream *s = fc->streams; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static void unqueue(files_stream *s)
{
    files_conn *fc = s->fc;
    if (!s->queued)
        return;
    files_stream **pp = &fc->sq_head;
    files_stream *prev = NULL;
    while (*pp != s) {
        prev = *pp;
        pp = &(*pp)->snext;
    }
    *pp = s->snext;
    if (fc->sq_tail == s)
        fc->sq_tail = prev;
    s->queued = 0;
}

void files_stream_free(files_stream *s)
{
    files_conn *fc = s->fc;
    if (s->job)
        files_job_cancel(s->job);
    unqueue(s);
    tk_file_unref(s->file);
    if (s->dir)
        closedir(s->dir);
    if (s->kind == KIND_PUT && s->locked && !s->job) {
        /* Unfinished: an empty partial has nothing to resume; a longer one
         * gives back the blocks reserved past what arrived. */
        if (s->received == 0)
            (void)unlinkat(s->dirfd, s->part, 0);
        else if (ftruncate(s->fd, (off_t)s->received) != 0)
            tk_log(TK_LOG_WARN, "files: cannot trim the partial upload %s to %llu bytes: %s",
                   s->part, (unsigned long long)s->received, strerror(errno));
    }
    if (s->fd >= 0)
        close(s->fd);
    free(s->path);
    if (s->dirfd >= 0)
        close(s->dirfd);
    free(s->v1_name);
    if (fc->in_stream == s)
        fc->in_stream = NULL; /* the rest of its DATA is dropped */
    if (s->prev)
        s->prev->next = s->next;
    else
        fc->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    fc->nstreams--;
    atomic_fetch_sub(&fc->fl->f->transfers, 1);
    if (fc->v1_current == s) {
        fc->v1_current = NULL;
        tk_conn_resume_read(fc->conn); /* the next pipelined request */
    }
    free(s);
}

void files_stream_ready(files_stream *s)
{
    files_conn *fc = s->fc;
    if (s->queued)
        return;
    s->queued = 1;
    s->snext = NULL;
    if (fc->sq_tail)
        fc->sq_tail->snext = s;
    else
        fc->sq_head = s;
    fc->sq_tail = s;
}

/* Ends a stream with an error frame (v2) or error message (v1). */
static void stream_error(files_stream *s, unsigned code, const char *msg)
{
    files_conn *fc = s->fc;
    if (fc->proto == PROTO_V2) {
        files_send_error(fc, s->id, code, msg);
        files_stream_free(s);
    } else {
        /* Version 1 cannot end a transfer early: the connection ends. */
        tk_warn("files: %s; closing the version-1 connection", msg);
        files_stream_free(s);
        tk_conn_close(fc->conn, TK_CLOSE_ERROR, -EIO);
    }
}

/* Largest file bytes per DATA frame for this stream: the configured chunk,
 * within the peer's frame limit (leaving room for zstd's worst case). */
static size_t data_chunk(const files_stream *s)
{
    const files_conn *fc = s->fc;
    size_t n = fc->fl->f->cfg.chunk_size;
    if (fc->proto == PROTO_V2) {
        size_t limit = fc->peer_max_frame - TK_FRAME_STREAM - fc->tag_len;
        if (s->zstd)
            limit -= limit / 128 + 1024;
        if (n > limit)
            n = limit;
    }
    return n;
}

/* Reads exactly n bytes at off; 0, or -1 when the file ended early or failed. */
static int read_full(int fd, unsigned char *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* Queues one DATA frame of a download. */
static int queue_data(files_stream *s, size_t n)
{
    files_conn *fc = s->fc;
    files_loop *fl = fc->fl;
    unsigned char head[TK_FRAME_HEADER + TK_FRAME_STREAM];
    int plain = fc->proto == PROTO_V1 || (!s->zstd && !fc->tag_len);
    if (plain && fc->sendfile) {
        /* A header from memory, then the bytes straight from the page
         * cache. */
        size_t h;
        if (fc->proto == PROTO_V1) {
            tk_frame_hdr_encode(head, TK_FRAME_V1, TK_V1_DATA, (uint32_t)n);
            h = TK_FRAME_HEADER;
        } else {
            h = tk_v2_encode_data_head(head, 0, s->id, n);
        }
        if (tk_conn_write(fc->conn, head, h) < 0 ||
            tk_conn_write_file(fc->conn, s->file, s->pos, n) < 0)
            return -1;
        return 0;
    }
    int fd = tk_file_fd(s->file);
    size_t hl = fc->proto == PROTO_V1 ? TK_FRAME_HEADER : TK_FRAME_HEADER + TK_FRAME_STREAM;
    if (!s->zstd) {
        /* Read straight into the output queue, behind the frame header. */
        unsigned char *p = files_frame_reserve(fc, hl + n);
        if (!p)
            return -1;
        if (read_full(fd, p + hl, n, s->pos) < 0) {
            tk_conn_write_commit(fc->conn, 0);
            stream_error(s, TK_FERR_CHANGED, "the file shrank while it was sent");
            return -1;
        }
        if (fc->proto == PROTO_V1)
            tk_frame_hdr_encode(p, TK_FRAME_V1, TK_V1_DATA, (uint32_t)n);
        else
            tk_v2_encode_data_head(p, fc->tag_len, s->id, n);
        files_frame_commit(fc, p, hl + n);
        return 0;
    }
    if (read_full(fd, fl->buf, n, s->pos) < 0) {
        stream_error(s, TK_FERR_CHANGED, "the file shrank while it was sent");
        return -1;
    }
    size_t bound = ZSTD_compressBound(n);
    unsigned char *p = files_frame_reserve(fc, hl + bound);
    if (!p)
        return -1;
    ZSTD_CCtx_reset(fl->cctx, ZSTD_reset_session_only);
    ZSTD_CCtx_setPledgedSrcSize(fl->cctx, n);
    size_t c = ZSTD_compress2(fl->cctx, p + hl, bound, fl->buf, n);
    if (ZSTD_isError(c)) {
        tk_conn_write_commit(fc->conn, 0);
        stream_error(s, TK_FERR_IO, "compression failed");
        return -1;
    }
    tk_v2_encode_data_head(p, fc->tag_len, s->id, c);
    files_frame_commit(fc, p, hl + c);
    return 0;
}

/* The END of a download, once every byte is queued and the digest known. */
static void finish_get(files_stream *s)
{
    files_conn *fc = s->fc;
    if (fc->proto == PROTO_V1) {
        unsigned char end[TK_FRAME_HEADER];
        tk_frame_hdr_encode(end, TK_FRAME_V1, TK_V1_END, 0);
        (void)tk_conn_write(fc->conn, end, sizeof(end));
        files_stream_free(s);
        return;
    }
    if (s->digest_err) {
        stream_error(s, (unsigned)s->digest_err,
                     s->digest_err == TK_FERR_CHANGED ? "the file changed while it was sent"
                                                      : "cannot read the file");
        return;
    }
    struct stat now;
    if (fstat(tk_file_fd(s->file), &now) < 0 || !files_stat_same(&s->st, &now)) {
        stream_error(s, TK_FERR_CHANGED, "the file changed while it was sent");
        return;
    }
    unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 12 + TK_FRAME_DIGEST);
    if (p)
        files_frame_commit(fc, p,
                           tk_v2_encode_end(p, fc->tag_len, s->id, s->size - s->offset, s->digest));
    files_stream_free(s);
}

/* One turn of a download: 1 if it has more to send, 0 if it finished or
 * waits for its digest. */
static int produce_get(files_stream *s)
{
    if (s->pos < s->size) {
        size_t n = data_chunk(s);
        if (s->size - s->pos < n)
            n = (size_t)(s->size - s->pos);
        if (queue_data(s, n) < 0)
            return 0;
        s->pos += n;
        return 1;
    }
    if (s->fc->proto == PROTO_V2 && !s->digest_ready)
        return 0; /* on_digest puts it back on the queue */
    finish_get(s);
    return 0;
}

/* One ENTRIES frame of a listing, or its END. */
static int produce_list(files_stream *s)
{
    files_conn *fc = s->fc;
    tk_files *f = fc->fl->f;
    size_t cap = FILES_ENTRIES_MAX;
    size_t limit = fc->peer_max_frame - TK_FRAME_STREAM - fc->tag_len;
    if (cap > limit)
        cap = limit;
    size_t hl = TK_FRAME_HEADER + TK_FRAME_STREAM;
    unsigned char *p = files_frame_reserve(fc, hl + cap);
    if (!p)
        return 0;
    size_t o = hl;
    int done = 0;
    DIR *dir = s->dir;
    while (o + TK_ENTRY_FIXED + FILES_COMPONENT_MAX <= hl + cap) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            if (errno) {
                tk_conn_write_commit(fc->conn, 0);
                stream_error(s, TK_FERR_IO, "cannot read the directory");
                return 0;
            }
            done = 1;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            files_entry_hidden(de->d_name, f->cfg.show_hidden))
            continue;
        struct stat st;
        if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* removed meanwhile */
        tk_entry e = {
            .kind = (uint8_t)files_kind(&st),
            .size = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0,
            .mtime = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
            .name = (const unsigned char *)de->d_name,
            .name_len = strlen(de->d_name),
        };
        o += tk_entry_encode(p + o, &e);
        s->count++;
    }
    if (o > hl) {
        tk_v2_encode_entries_head(p, fc->tag_len, s->id, o - hl);
        files_frame_commit(fc, p, o);
    } else {
        tk_conn_write_commit(fc->conn, 0);
    }
    if (!done)
        return 1;
    p = files_frame_reserve(fc, TK_FRAME_HEADER + 12);
    if (p)
        files_frame_commit(fc, p, tk_v2_encode_end(p, fc->tag_len, s->id, s->count, NULL));
    files_stream_free(s);
    return 0;
}

void files_pump(files_conn *fc)
{
    size_t target = FILES_PUMP_FRAMES * fc->fl->f->cfg.chunk_size;
    while (fc->sq_head && tk_conn_pending(fc->conn) < target && !tk_conn_closing(fc->conn)) {
        files_stream *s = fc->sq_head;
        fc->sq_head = s->snext;
        if (!fc->sq_head)
            fc->sq_tail = NULL;
        s->queued = 0;
        int more = s->kind == KIND_GET ? produce_get(s) : produce_list(s);
        if (more)
            files_stream_ready(s);
    }
}

/* The digest of a download (or a STAT) arrived from a worker thread. */
static void on_digest(files_job *j, void *owner)
{
    files_stream *s = owner;
    files_conn *fc = s->fc;
    s->job = NULL;
    s->digest_ready = 1;
    s->digest_err = j->err;
    memcpy(s->digest, j->digest, TK_FRAME_DIGEST);
    if (s->kind == KIND_STAT) {
        if (s->digest_err) {
            stream_error(s, (unsigned)s->digest_err, "cannot compute the digest");
        } else {
            unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 21 + TK_FRAME_DIGEST);
            if (p)
                files_frame_commit(fc, p,
                                   tk_v2_encode_info(p, fc->tag_len, s->id, TK_KIND_FILE, s->size,
                                                     (int64_t)s->st.st_mtim.tv_sec * 1000000000 +
                                                         s->st.st_mtim.tv_nsec,
                                                     s->digest));
            files_stream_free(s);
        }
    } else {
        files_stream_ready(s);
    }
    files_pump(fc);
    files_conn_maybe_finish(fc);
}

/* Gets the digest of s->file from the cache or a worker. */
static int want_digest(files_stream *s, const char **msg)
{
    files_conn *fc = s->fc;
    tk_files *f = fc->fl->f;
    if (files_digest_cached(f->work, &s->st, s->digest)) {
        s->digest_ready = 1;
        return 0;
    }
    s->job = files_digest_start(f->work, fc->fl->loop, tk_file_fd(s->file), on_digest, s);
    if (!s->job) {
        *msg = "out of memory or file descriptors";
        return -TK_FERR_BUSY;
    }
    return 0;
}

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

int files_get_start(files_conn *fc, files_stream *s, const char *path, const char **msg)
{
    tk_files *f = fc->fl->f;
    int fd = files_open_regular(f->rootfd, path, &s->st, msg);
    if (fd < 0)
        return fd;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    s->file = tk_file_new(fd);
    if (!s->file) {
        *msg = "out of memory";
        return -TK_FERR_BUSY;
    }
    s->size = (uint64_t)s->st.st_size;
    if (fc->proto == PROTO_V1) {
        char size[24];
        int sn = snprintf(size, sizeof(size), ":%llu", (unsigned long long)s->size);
        size_t len = s->v1_name_len + (size_t)sn;
        unsigned char *p = tk_conn_write_reserve(fc->conn, TK_FRAME_HEADER + len);
        if (!p)
            return 0; /* the connection is being dropped */
        tk_frame_hdr_encode(p, TK_FRAME_V1, TK_V1_RESPONSE, (uint32_t)len);
        memcpy(p + TK_FRAME_HEADER, s->v1_name, s->v1_name_len);
        memcpy(p + TK_FRAME_HEADER + s->v1_name_len, size, (size_t)sn);
        tk_conn_write_commit(fc->conn, TK_FRAME_HEADER + len);
        s->pos = 0;
        files_stream_ready(s);
        return 0;
    }
    if (s->offset > s->size) {
        *msg = "the offset is past the end of the file";
        return -TK_FERR_BAD_OFFSET;
    }
    s->pos = s->offset;
    int rc = want_digest(s, msg);
    if (rc < 0)
        return rc;
    unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 29);
    if (p)
        files_frame_commit(fc, p,
                           tk_v2_encode_open(p, fc->tag_len, s->id, s->size, s->offset,
                                             mtime_ns(&s->st), s->zstd ? TK_XFER_ZSTD : 0));
    files_stream_ready(s);
    return 0;
}

int files_list_start(files_conn *fc, files_stream *s, const char *path, const char **msg)
{
    tk_files *f = fc->fl->f;
    int fd = files_open_beneath(f->rootfd, path, O_PATH, msg);
    if (fd < 0)
        return fd;
    struct stat st;
    int isdir = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
    close(fd);
    if (!isdir) {
        *msg = "not a directory";
        return -TK_FERR_NOT_DIR;
    }
    fd = files_open_beneath(f->rootfd, path, O_RDONLY | O_DIRECTORY, msg);
    if (fd < 0)
        return fd;
    s->dir = fdopendir(fd);
    if (!s->dir) {
        close(fd);
        *msg = "cannot read the directory";
        return -TK_FERR_IO;
    }
    files_stream_ready(s);
    return 0;
}

int files_stat_start(files_conn *fc, files_stream *s, const char *path, uint8_t flags,
                     const char **msg)
{
    tk_files *f = fc->fl->f;
    int fd = files_open_beneath(f->rootfd, path, O_PATH, msg);
    if (fd < 0)
        return fd;
    int rc = fstat(fd, &s->st);
    close(fd);
    if (rc < 0) {
        *msg = "cannot stat";
        return -TK_FERR_IO;
    }
    int kind = files_kind(&s->st);
    s->size = kind == TK_KIND_FILE ? (uint64_t)s->st.st_size : 0;
    if ((flags & TK_STAT_DIGEST) && kind == TK_KIND_FILE) {
        fd = files_open_regular(f->rootfd, path, &s->st, msg);
        if (fd < 0)
            return fd;
        s->file = tk_file_new(fd);
        if (!s->file) {
            *msg = "out of memory";
            return -TK_FERR_BUSY;
        }
        s->size = (uint64_t)s->st.st_size;
        rc = want_digest(s, msg);
        if (rc < 0)
            return rc;
        if (!s->digest_ready)
            return 0; /* on_digest answers */
    }
    unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 21 + TK_FRAME_DIGEST);
    if (p)
        files_frame_commit(fc, p,
                           tk_v2_encode_info(p, fc->tag_len, s->id, (uint8_t)kind, s->size,
                                             mtime_ns(&s->st), s->digest_ready ? s->digest : NULL));
    files_stream_free(s);
    return 0;
}

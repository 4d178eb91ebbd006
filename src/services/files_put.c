/* Uploads: a hidden partial file in the target directory, locked while an
 * upload writes it, kept after an interruption so the upload can resume,
 * and renamed into place by a worker thread only after its SHA-256 matched
 * and it was synced. Nobody ever sees a partial file under its final name. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "files_internal.h"

/* The partial's name: the prefix and 16 hex digits of SHA-256(name, size),
 * so a resumed upload of the same name and size finds it again. */
static void partial_name(const char *base, uint64_t size, char out[64])
{
    char key[FILES_COMPONENT_MAX + 32];
    int n = snprintf(key, sizeof(key), "%s\n%llu", base, (unsigned long long)size);
    unsigned char d[32];
    unsigned dl = 0;
    EVP_Digest(key, (size_t)n, d, &dl, EVP_sha256(), NULL);
    int o = snprintf(out, 64, "%s", FILES_PARTIAL_PREFIX);
    for (int i = 0; i < 8; i++)
        o += snprintf(out + o, (size_t)(64 - o), "%02x", d[i]);
}

static int errno_code(int err, const char **msg)
{
    if (err == ENOSPC || err == EDQUOT) {
        *msg = "no space left on the server's file system";
        return -TK_FERR_NO_SPACE;
    }
    *msg = "cannot write the file";
    return -TK_FERR_IO;
}

/* Opens (creating) and locks the partial; works out where to resume. */
static int open_partial(files_stream *s, uint64_t size, uint8_t flags, uint64_t *offset,
                        const char **msg)
{
    s->fd = openat(s->dirfd, s->part, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (s->fd < 0)
        return errno_code(errno, msg);
    if (flock(s->fd, LOCK_EX | LOCK_NB) < 0) {
        *msg = "an upload of this file is in progress";
        return -TK_FERR_BUSY;
    }
    s->locked = 1;
    struct stat st;
    if (fstat(s->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        *msg = "cannot use the partial file";
        return -TK_FERR_IO;
    }
    *offset = 0;
    if ((flags & TK_PUT_RESUME) && (uint64_t)st.st_size <= size)
        *offset = (uint64_t)st.st_size;
    else if (ftruncate(s->fd, 0) < 0)
        return errno_code(errno, msg);
    return 0;
}

/* Refuses an upload the file system has no room for, and reserves the
 * blocks it will need where the file system can. */
static int reserve_space(files_stream *s, uint64_t need, uint64_t min_free, const char **msg)
{
    struct statvfs vfs;
    if (fstatvfs(s->fd, &vfs) == 0) {
        uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
        if (need > avail || avail - need < min_free) {
            *msg = "not enough free space on the server for this upload";
            return -TK_FERR_NO_SPACE;
        }
    }
    if (need && fallocate(s->fd, FALLOC_FL_KEEP_SIZE, (off_t)s->received, (off_t)need) < 0 &&
        (errno == ENOSPC || errno == EDQUOT))
        return errno_code(errno, msg);
    return 0;
}

int files_put_start(files_conn *fc, files_stream *s, const char *path, uint64_t size, uint8_t flags,
                    const char **msg)
{
    tk_files *f = fc->fl->f;
    if (!f->cfg.allow_upload) {
        *msg = "uploads are not enabled on this server";
        return -TK_FERR_READ_ONLY;
    }
    if (size > f->cfg.max_upload) {
        *msg = "the file is larger than the server accepts";
        return -TK_FERR_TOO_LARGE;
    }
    char parent[FILES_NAME_MAX + 1];
    const char *base = files_split_parent(path, parent);
    s->dirfd = files_open_beneath(f->rootfd, parent, O_RDONLY | O_DIRECTORY, msg);
    if (s->dirfd < 0) {
        int rc = s->dirfd;
        s->dirfd = -1;
        return rc;
    }
    struct stat st;
    if (fstatat(s->dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (!(flags & TK_PUT_OVERWRITE)) {
            *msg = "a file of that name exists";
            return -TK_FERR_EXISTS;
        }
        if (!f->cfg.allow_overwrite) {
            *msg = "a file of that name exists, and replacing files is not enabled";
            return -TK_FERR_FORBIDDEN;
        }
        if (!S_ISREG(st.st_mode)) {
            *msg = "only a regular file can be replaced";
            return -TK_FERR_NOT_REGULAR;
        }
    }
    snprintf(s->final, sizeof(s->final), "%s", base);
    s->path = strdup(path);
    partial_name(base, size, s->part);
    uint64_t offset;
    int rc = open_partial(s, size, flags, &offset, msg);
    if (rc < 0)
        return rc;
    s->size = size;
    s->offset = offset;
    s->received = offset;
    s->put_flags = flags;
    s->zstd = (flags & TK_XFER_ZSTD) != 0;
    rc = reserve_space(s, size - offset, f->cfg.min_free, msg);
    if (rc < 0)
        return rc;
    unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 12);
    if (p)
        files_frame_commit(fc, p, tk_v2_encode_ready(p, fc->tag_len, s->id, offset));
    return 0;
}

/* Ends an upload with an error; the partial stays for a resume unless
 * remove is set. */
static void put_fail(files_stream *s, unsigned code, const char *msg, int remove)
{
    files_conn *fc = s->fc;
    if (remove && s->dirfd >= 0)
        (void)unlinkat(s->dirfd, s->part, 0);
    files_send_error(fc, s->id, code, msg);
    files_stream_free(s);
    files_conn_maybe_finish(fc);
}

void files_put_data(files_stream *s, const unsigned char *p, size_t n)
{
    if (s->job)
        return; /* after END: the upload is being stored */
    if (s->received + n > s->size) {
        put_fail(s, TK_FERR_TOO_LARGE, "more data than the PUT announced", 1);
        return;
    }
    while (n) {
        ssize_t w = pwrite(s->fd, p, n, (off_t)s->received);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            const char *msg;
            int code = errno_code(w < 0 ? errno : EIO, &msg);
            put_fail(s, (unsigned)-code, msg, 0);
            return;
        }
        p += w;
        n -= (size_t)w;
        s->received += (uint64_t)w;
    }
}

void files_put_frame(files_stream *s, const unsigned char *p, size_t n)
{
    if (!s->zstd) {
        files_put_data(s, p, n);
        return;
    }
    files_loop *fl = s->fc->fl;
    unsigned long long size = ZSTD_getFrameContentSize(p, n);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
        size > fl->f->cfg.max_frame) {
        put_fail(s, TK_FERR_BAD_REQUEST, "a DATA frame is not one zstd frame of a known size", 0);
        return;
    }
    size_t got = ZSTD_decompressDCtx(fl->dctx, fl->buf, (size_t)size, p, n);
    if (ZSTD_isError(got) || got != size) {
        put_fail(s, TK_FERR_BAD_REQUEST, "a DATA frame does not decompress", 0);
        return;
    }
    files_put_data(s, fl->buf, got);
}

/* The worker finished checking, syncing and renaming. */
static void on_finished(files_job *j, void *owner)
{
    files_stream *s = owner;
    files_conn *fc = s->fc;
    s->job = NULL;
    if (j->err) {
        const char *msg = j->err == TK_FERR_DIGEST   ? "the SHA-256 does not match the data"
                          : j->err == TK_FERR_EXISTS ? "a file of that name appeared meanwhile"
                                                     : "cannot store the file";
        files_send_error(fc, s->id, (unsigned)j->err, msg);
    } else {
        char who[TK_ADDR_STRLEN];
        tk_info("files: %s stored %s (%llu bytes)",
                tk_addr_format(tk_conn_peer(fc->conn), who, sizeof(who)),
                s->path ? s->path : s->final, (unsigned long long)s->size);
        unsigned char *p = files_frame_reserve(fc, TK_FRAME_HEADER + 44);
        if (p)
            files_frame_commit(fc, p, tk_v2_encode_done(p, fc->tag_len, s->id, s->size, j->digest));
    }
    files_stream_free(s);
    files_pump(fc);
    files_conn_maybe_finish(fc);
}

void files_put_end(files_stream *s, uint64_t count, const unsigned char *digest)
{
    if (s->job)
        return; /* a second END */
    if (!digest) {
        put_fail(s, TK_FERR_BAD_REQUEST, "END of an upload must carry its SHA-256", 0);
        return;
    }
    if (s->received != s->size || count != s->size - s->offset) {
        char msg[96];
        snprintf(msg, sizeof(msg), "END after %llu of %llu bytes", (unsigned long long)s->received,
                 (unsigned long long)s->size);
        put_fail(s, TK_FERR_BAD_REQUEST, msg, 0);
        return;
    }
    tk_files *f = s->fc->fl->f;
    s->job = files_finish_start(f->work, s->fc->fl->loop, s->fd, s->dirfd, s->part, s->final,
                                (s->put_flags & TK_PUT_OVERWRITE) != 0, f->file_mode, digest,
                                on_finished, s);
    if (!s->job)
        put_fail(s, TK_FERR_BUSY, "out of memory or file descriptors", 0);
}

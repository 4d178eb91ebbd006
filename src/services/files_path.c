/* Name checks and confined opens for the file service. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "files_path.h"
#include "tcpkit/frame.h"

int files_entry_hidden(const char *name, int show_hidden)
{
    if (strncmp(name, FILES_PARTIAL_PREFIX, sizeof(FILES_PARTIAL_PREFIX) - 1) == 0)
        return 1;
    return name[0] == '.' && !show_hidden;
}

int files_name_check(const unsigned char *name, size_t len, int show_hidden, char *out,
                     const char **msg)
{
    if (len > FILES_NAME_MAX) {
        *msg = "name too long";
        return -TK_FERR_TOO_LARGE;
    }
    if (memchr(name, '\0', len)) {
        *msg = "name contains a NUL byte";
        return -TK_FERR_BAD_REQUEST;
    }
    if (len && name[0] == '/') {
        *msg = "absolute names are not allowed";
        return -TK_FERR_FORBIDDEN;
    }
    size_t o = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && name[j] != '/')
            j++;
        size_t n = j - i;
        const unsigned char *comp = name + i;
        i = j + 1;
        if (n == 0 || (n == 1 && comp[0] == '.'))
            continue;
        if (n == 2 && comp[0] == '.' && comp[1] == '.') {
            *msg = "'..' is not allowed";
            return -TK_FERR_FORBIDDEN;
        }
        if (n > FILES_COMPONENT_MAX) {
            *msg = "a name component is longer than 255 bytes";
            return -TK_FERR_TOO_LARGE;
        }
        char c0[sizeof(FILES_PARTIAL_PREFIX)];
        size_t k = n < sizeof(c0) - 1 ? n : sizeof(c0) - 1;
        memcpy(c0, comp, k);
        c0[k] = '\0';
        if (comp[0] == '.' && files_entry_hidden(c0, show_hidden)) {
            *msg = "hidden names are not served";
            return -TK_FERR_FORBIDDEN;
        }
        if (o)
            out[o++] = '/';
        memcpy(out + o, comp, n);
        o += n;
    }
    if (o == 0)
        out[o++] = '.';
    out[o] = '\0';
    return 0;
}

/* The client-facing meaning of an openat2 failure. */
static int open_error(int err, const char **msg)
{
    switch (err) {
    case ENOENT:
    case ENOTDIR: *msg = "no such file or directory"; return -TK_FERR_NOT_FOUND;
    case EXDEV: *msg = "the name leads outside the served directory"; return -TK_FERR_FORBIDDEN;
    case ELOOP: *msg = "too many symbolic links (a loop?)"; return -TK_FERR_FORBIDDEN;
    case EACCES:
    case EPERM: *msg = "permission denied"; return -TK_FERR_FORBIDDEN;
    case ENAMETOOLONG: *msg = "name too long"; return -TK_FERR_TOO_LARGE;
    case EISDIR: *msg = "is a directory"; return -TK_FERR_NOT_REGULAR;
    case EMFILE:
    case ENFILE: *msg = "the server is out of file descriptors"; return -TK_FERR_BUSY;
    default: *msg = "cannot open the file"; return -TK_FERR_IO;
    }
}

int files_open_beneath(int rootfd, const char *path, int flags, const char **msg)
{
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = (unsigned long long)(flags | O_CLOEXEC);
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    /* EAGAIN: a rename raced with the confined lookup; retry a few times. */
    long fd;
    int tries = 0;
    do
        fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
    while (fd < 0 && (errno == EINTR || errno == EAGAIN) && ++tries < 16);
    if (fd < 0)
        return open_error(errno, msg);
    return (int)fd;
}

int files_kind(const struct stat *st)
{
    if (S_ISREG(st->st_mode))
        return TK_KIND_FILE;
    if (S_ISDIR(st->st_mode))
        return TK_KIND_DIR;
    if (S_ISLNK(st->st_mode))
        return TK_KIND_LINK;
    return TK_KIND_OTHER;
}

int files_open_regular(int rootfd, const char *path, struct stat *st, const char **msg)
{
    int pfd = files_open_beneath(rootfd, path, O_PATH, msg);
    if (pfd < 0)
        return pfd;
    struct stat pst;
    if (fstat(pfd, &pst) < 0) {
        close(pfd);
        *msg = "cannot stat the file";
        return -TK_FERR_IO;
    }
    close(pfd);
    if (S_ISDIR(pst.st_mode)) {
        *msg = "is a directory";
        return -TK_FERR_NOT_REGULAR;
    }
    if (!S_ISREG(pst.st_mode)) {
        *msg = "not a regular file";
        return -TK_FERR_NOT_REGULAR;
    }
    int fd = files_open_beneath(rootfd, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, msg);
    if (fd < 0)
        return fd;
    if (fstat(fd, st) < 0 || st->st_ino != pst.st_ino || st->st_dev != pst.st_dev ||
        !S_ISREG(st->st_mode)) {
        close(fd);
        *msg = "the file changed while it was opened";
        return -TK_FERR_CHANGED;
    }
    return fd;
}

const char *files_split_parent(const char *path, char *parent)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(parent, ".");
        return path;
    }
    size_t n = (size_t)(slash - path);
    memcpy(parent, path, n);
    parent[n] = '\0';
    return slash + 1;
}

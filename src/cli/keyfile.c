/* Pre-shared key files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/keyfile.h"

int keyfile_read(const char *cmd, const char *path, unsigned char *key, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        fprintf(stderr, "tcpkit %s: cannot open the key file '%s': %s\n", cmd, path,
                strerror(errno));
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "tcpkit %s: the key file '%s' is not a regular file\n", cmd, path);
        close(fd);
        return 1;
    }
    if (st.st_mode & 077) {
        fprintf(stderr,
                "tcpkit %s: the key file '%s' may be read by others (mode %03o); "
                "chmod 600 it\n",
                cmd, path, (unsigned)(st.st_mode & 0777));
        close(fd);
        return 1;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, key + n, KEYFILE_MAX - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "tcpkit %s: cannot read '%s': %s\n", cmd, path, strerror(errno));
            close(fd);
            return 1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == KEYFILE_MAX) {
            fprintf(stderr, "tcpkit %s: the key file '%s' is over %d bytes\n", cmd, path,
                    KEYFILE_MAX - 1);
            close(fd);
            return 1;
        }
    }
    close(fd);
    if (n && key[n - 1] == '\n')
        n--;
    if (n && key[n - 1] == '\r')
        n--;
    if (n < 16) {
        fprintf(stderr, "tcpkit %s: the key in '%s' is shorter than 16 bytes\n", cmd, path);
        return 1;
    }
    *len = n;
    return 0;
}

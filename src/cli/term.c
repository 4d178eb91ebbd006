/* Terminal plumbing shared by the interactive clients. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "cli/term.h"

int term_read_key(const term_keys *k, wchar_t *wc)
{
    mbstate_t st;
    memset(&st, 0, sizeof(st));
    for (;;) {
        if (k->editing)
            *k->editing = 1;
        while (!*k->key_ready && !*k->finished)
            tk_loop_run(k->loop);
        if (k->editing)
            *k->editing = 0;
        if (*k->finished)
            return 0;
        *k->key_ready = 0;
        char c;
        ssize_t n = read(0, &c, 1);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return 0;
        size_t r = mbrtowc(wc, &c, 1, &st);
        if (r == (size_t)-2)
            continue; /* the middle of a multi-byte character */
        if (r == (size_t)-1)
            *wc = (wchar_t)(unsigned char)c;
        return 1;
    }
}

void term_write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                /* An output shared with a non-blocking reader: wait, don't drop. */
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                (void)poll(&pfd, 1, -1);
                continue;
            }
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

/* Fuzzes the file service's check of client-supplied names
 * (src/services/files_path.h): files_name_check, files_split_parent and
 * files_entry_hidden. The first byte picks show_hidden (its low bit), the
 * rest is the name exactly as a client sends it.
 *
 * Invariants:
 * - a refusal is one of the documented codes with a message, and the reason
 *   is right: NUL byte, over 4096 bytes or a component over 255, absolute,
 *   "..", or a hidden or partial-upload component;
 * - an accepted name normalises to "." or to components joined by single
 *   '/', none empty, ".", "..", hidden (unless shown) or a partial, none over
 *   255 bytes; it is exactly the input's components with the empty and "."
 *   ones dropped, it fits the documented buffer, and checking it again gives
 *   itself (a normal form);
 * - a name accepted without hidden names is accepted the same with them;
 * - files_split_parent gives a parent and a last component that join back
 *   to the normal form. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/files_path.h"
#include "tcpkit/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The components of name[0..len) without empty and "." ones, joined by '/';
 * writes the reason it must be refused (a TK_FERR code) or 0. */
static int reference(const unsigned char *name, size_t len, int show_hidden, char *out,
                     size_t *olen)
{
    if (len > FILES_NAME_MAX)
        return TK_FERR_TOO_LARGE;
    if (memchr(name, '\0', len))
        return TK_FERR_BAD_REQUEST;
    if (len && name[0] == '/')
        return TK_FERR_FORBIDDEN;
    size_t o = 0;
    for (size_t i = 0; i <= len;) {
        size_t j = i;
        while (j < len && name[j] != '/')
            j++;
        const unsigned char *c = name + i;
        size_t n = j - i;
        i = j + 1;
        if (n == 0 || (n == 1 && c[0] == '.'))
            continue;
        if (n == 2 && c[0] == '.' && c[1] == '.')
            return TK_FERR_FORBIDDEN;
        if (n > FILES_COMPONENT_MAX)
            return TK_FERR_TOO_LARGE;
        size_t pl = sizeof(FILES_PARTIAL_PREFIX) - 1;
        if (c[0] == '.' && (!show_hidden || (n >= pl && memcmp(c, FILES_PARTIAL_PREFIX, pl) == 0)))
            return TK_FERR_FORBIDDEN;
        if (o)
            out[o++] = '/';
        memcpy(out + o, c, n);
        o += n;
    }
    if (o == 0)
        out[o++] = '.';
    out[o] = '\0';
    *olen = o;
    return 0;
}

static void check_normal(const char *out, int show_hidden)
{
    size_t len = strlen(out);
    if (len == 0 || len > FILES_NAME_MAX)
        abort();
    if (strcmp(out, ".") == 0)
        return;
    for (const char *c = out;;) {
        size_t n = strcspn(c, "/");
        if (n == 0 || n > FILES_COMPONENT_MAX || (n == 1 && c[0] == '.') ||
            (n == 2 && c[0] == '.' && c[1] == '.') || (c[0] == '.' && !show_hidden))
            abort();
        char comp[FILES_COMPONENT_MAX + 1];
        memcpy(comp, c, n);
        comp[n] = '\0';
        if (files_entry_hidden(comp, 1))
            abort(); /* a partial upload is never a valid name */
        if (!c[n])
            break;
        c += n + 1;
    }
}

/* Runs the check on a heap copy of exactly len bytes into a heap buffer of
 * exactly the documented size, so overruns are caught. */
static int run(const unsigned char *name, size_t len, int show_hidden, char *out)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        abort();
    memcpy(copy, name, len);
    const char *msg = NULL;
    int rc = files_name_check(copy, len, show_hidden, out, &msg);
    free(copy);
    if (rc != 0 && (!msg || !*msg))
        abort();
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int show = data[0] & 1;
    const unsigned char *name = data + 1;
    size_t len = size - 1;

    char *out = malloc(FILES_NAME_MAX + 1);
    char *want = malloc(FILES_NAME_MAX + 1);
    char *again = malloc(FILES_NAME_MAX + 1);
    if (!out || !want || !again)
        abort();
    int rc = run(name, len, show, out);
    size_t wlen = 0;
    int wrc = reference(name, len, show, want, &wlen);
    if (rc != -wrc)
        abort();
    if (rc == 0) {
        if (strcmp(out, want) != 0)
            abort();
        check_normal(out, show);
        size_t olen = strlen(out);
        if (run((const unsigned char *)out, olen, show, again) != 0 || strcmp(again, out) != 0)
            abort();
        if (!show && (run(name, len, 1, again) != 0 || strcmp(again, out) != 0))
            abort();

        char *parent = malloc(FILES_NAME_MAX + 1);
        if (!parent)
            abort();
        const char *last = files_split_parent(out, parent);
        size_t pl = strlen(parent), ll = strlen(last);
        if (ll == 0 || strchr(last, '/'))
            abort();
        if (strcmp(parent, ".") == 0 ? strcmp(last, out) != 0
                                     : pl + 1 + ll != olen || memcmp(out, parent, pl) != 0 ||
                                           out[pl] != '/' || strcmp(out + pl + 1, last) != 0)
            abort();
        free(parent);
    }
    free(out);
    free(want);
    free(again);
    return 0;
}

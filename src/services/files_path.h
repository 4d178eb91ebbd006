/* Names in the served tree: checked and normalised as text first, then
 * opened with openat2(RESOLVE_BENEATH) so that nothing, symbolic links
 * included, resolves outside the root. */
#ifndef TK_FILES_PATH_H
#define TK_FILES_PATH_H

#include <stddef.h>
#include <sys/stat.h>

/* Longest name accepted, in bytes (PATH_MAX), and longest component. */
#define FILES_NAME_MAX      4096
#define FILES_COMPONENT_MAX 255

/* Upload partials are hidden files with this prefix; never served or listed. */
#define FILES_PARTIAL_PREFIX ".tcpkit-part-"

/* Checks a client-supplied name and writes its normal form to out (cap
 * FILES_NAME_MAX + 1): components joined by '/', without empty and "."
 * components; "." for the root itself. Returns 0 or a negative TK_FERR_*
 * code: BAD_REQUEST (NUL byte), TOO_LARGE (over 4096 bytes or a component
 * over 255), FORBIDDEN (absolute, "..", or a hidden component when
 * show_hidden is 0; a partial-upload name always). *msg is set to a short
 * reason on failure. */
int files_name_check(const unsigned char *name, size_t len, int show_hidden, char *out,
                     const char **msg);

/* Opens path (a normal form) beneath rootfd with openat2: flags as for
 * open(2), resolution RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS. Returns the
 * descriptor, or a negative TK_FERR_* code with *msg set. */
int files_open_beneath(int rootfd, const char *path, int flags, const char **msg);

/* Opens a regular file for reading without ever opening anything else: the
 * name is resolved to an O_PATH descriptor, checked to be a regular file,
 * and only then opened (O_NONBLOCK, so a FIFO swapped in meanwhile cannot
 * block) and checked again to be the same inode. Returns the descriptor
 * with *st filled, or a negative TK_FERR_* code with *msg set. */
int files_open_regular(int rootfd, const char *path, struct stat *st, const char **msg);

/* Splits a normal form into its parent ("." for none) and last component,
 * in place: returns the last component; path becomes the parent. parent
 * must hold FILES_NAME_MAX + 1 bytes. */
const char *files_split_parent(const char *path, char *parent);

/* The kind of a stat result: TK_KIND_FILE, DIR, LINK or OTHER. */
int files_kind(const struct stat *st);

/* Is this directory entry name hidden from clients (a partial always; a dot
 * name unless show_hidden)? */
int files_entry_hidden(const char *name, int show_hidden);

#endif

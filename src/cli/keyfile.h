/* Reading a pre-shared key file for the file service and its clients. */
#ifndef TK_CLI_KEYFILE_H
#define TK_CLI_KEYFILE_H

#include <stddef.h>

#define KEYFILE_MAX 4096

/* Reads the key in path into key (KEYFILE_MAX bytes): the file's bytes
 * without one trailing newline, at least 16 of them. A file that group or
 * others may read is refused, as ssh refuses such private keys. Returns 0,
 * or 1 after printing "tcpkit CMD: ..." to stderr. */
int keyfile_read(const char *cmd, const char *path, unsigned char *key, size_t *len);

#endif

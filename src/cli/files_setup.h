/* File-server options shared by `file-server` and `serve`, and the code
 * that turns them into a running service. */
#ifndef TK_CLI_FILES_SETUP_H
#define TK_CLI_FILES_SETUP_H

#include <getopt.h>
#include <stdint.h>

#include "cli/keyfile.h"
#include "tcpkit/files.h"
#include "tcpkit/server.h"
#include "tcpkit/workers.h"

enum {
    FO_ROOT = 1200,
    FO_ALLOW_UPLOAD,
    FO_ALLOW_OVERWRITE,
    FO_SHOW_HIDDEN,
    FO_MAX_UPLOAD,
    FO_MIN_FREE,
    FO_CHUNK,
    FO_MAX_FRAME,
    FO_MAX_STREAMS,
    FO_MAX_TRANSFERS,
    FO_MAX_CLIENTS,
    FO_IDLE,
    FO_STALL,
    FO_HEARTBEAT,
    FO_ZSTD_LEVEL,
    FO_AUTH_KEY,
    FO_HASH_THREADS,
    FO_PARTIAL_TTL,
    FO_SENDFILE,
    FO_SHUTDOWN,
    FO_KEEPALIVE,
    FO_LOG_LEVEL,
    FO_LOG_FORMAT,
};

/* The service's own options (without --listen, --threads and the process
 * ones, which each command names its own way). */
#define FILES_LONGOPTS(prefix)                                                                     \
    {prefix "root", required_argument, NULL, FO_ROOT},                                             \
        {prefix "allow-upload", no_argument, NULL, FO_ALLOW_UPLOAD},                               \
        {prefix "allow-overwrite", no_argument, NULL, FO_ALLOW_OVERWRITE},                         \
        {prefix "show-hidden", no_argument, NULL, FO_SHOW_HIDDEN},                                 \
        {prefix "max-upload", required_argument, NULL, FO_MAX_UPLOAD},                             \
        {prefix "min-free", required_argument, NULL, FO_MIN_FREE},                                 \
        {prefix "chunk-size", required_argument, NULL, FO_CHUNK},                                  \
        {prefix "max-frame", required_argument, NULL, FO_MAX_FRAME},                               \
        {prefix "max-streams", required_argument, NULL, FO_MAX_STREAMS},                           \
        {prefix "max-transfers", required_argument, NULL, FO_MAX_TRANSFERS},                       \
        {prefix "heartbeat", required_argument, NULL, FO_HEARTBEAT},                               \
        {prefix "zstd-level", required_argument, NULL, FO_ZSTD_LEVEL},                             \
        {prefix "auth-key", required_argument, NULL, FO_AUTH_KEY},                                 \
        {prefix "partial-ttl", required_argument, NULL, FO_PARTIAL_TTL},                           \
        {prefix "sendfile", required_argument, NULL, FO_SENDFILE},                                 \
    {                                                                                              \
        prefix "hash-threads", required_argument, NULL, FO_HASH_THREADS                            \
    }

typedef struct {
    const char *cmd;
    tk_files_config files;
    tk_server_config server;
    unsigned threads;
    uint32_t shutdown_ms;
    const char *log_level;
    const char *log_format;
    const char *key_path;
    unsigned char key[KEYFILE_MAX];
} files_options;

/* Defaults for every option (root "."). */
void files_options_init(files_options *o, const char *cmd);

/* Applies one parsed option; 0, 2 after printing a usage error, or -1 if ch
 * is not a file-service option. */
int files_option(files_options *o, int ch, const char *arg);

/* Reads the key file, if any; 0 or 1 after printing why. */
int files_options_finish(files_options *o);

/* Creates the file service on w and its server. 0, or 1 after logging the
 * error (nothing is left to free then). */
int files_build(files_options *o, tk_workers *w, tk_files **files, tk_server **server);

#endif

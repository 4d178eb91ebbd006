/* From file-server options to a running file service. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/files_setup.h"
#include "cli/opts.h"
#include "tcpkit/log.h"

void files_options_init(files_options *o, const char *cmd)
{
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    tk_files_config_init(&o->files);
    o->files.root = ".";
    o->threads = tk_cpu_count();
    o->shutdown_ms = 10 * 1000;
    o->files.sockopts.keepalive = 1;
    o->files.sockopts.ka_idle_s = 60;
    o->files.sockopts.ka_intvl_s = 10;
    o->files.sockopts.ka_count = 6;
}

static int size_opt(files_options *o, const char *flag, const char *range, const char *arg,
                    size_t lo, size_t hi, size_t *out)
{
    size_t v;
    if (tk_parse_size(arg, &v) < 0 || v < lo || v > hi)
        return opt_usage_error(o->cmd, "bad %s '%s'%s", flag, arg, range);
    *out = v;
    return 0;
}

int files_option(files_options *o, int ch, const char *arg)
{
    tk_files_config *c = &o->files;
    unsigned long v;
    size_t sz = 0;
    uint32_t ms;
    int rc;
    switch (ch) {
    case FO_ROOT:
        if (!arg[0])
            return opt_usage_error(o->cmd, "--root needs a directory");
        c->root = arg;
        return 0;
    case FO_ALLOW_UPLOAD: c->allow_upload = 1; return 0;
    case FO_ALLOW_OVERWRITE: c->allow_overwrite = 1; return 0;
    case FO_SHOW_HIDDEN: c->show_hidden = 1; return 0;
    case FO_SENDFILE:
        if (strcmp(arg, "auto") == 0)
            c->sendfile = TK_FILES_SENDFILE_AUTO;
        else if (strcmp(arg, "on") == 0)
            c->sendfile = TK_FILES_SENDFILE_ON;
        else if (strcmp(arg, "off") == 0)
            c->sendfile = TK_FILES_SENDFILE_OFF;
        else
            return opt_usage_error(o->cmd, "bad --sendfile '%s' (auto, on or off)", arg);
        return 0;
    case FO_MAX_UPLOAD:
        rc = size_opt(o, "--max-upload", "", arg, 0, SIZE_MAX, &sz);
        c->max_upload = sz;
        return rc;
    case FO_MIN_FREE:
        rc = size_opt(o, "--min-free", "", arg, 0, SIZE_MAX, &sz);
        c->min_free = sz;
        return rc;
    case FO_CHUNK:
        rc = size_opt(o, "--chunk-size", " (4K to 8M)", arg, 4096, 8u << 20, &sz);
        c->chunk_size = sz;
        return rc;
    case FO_MAX_FRAME:
        rc = size_opt(o, "--max-frame", " (64K to 16M)", arg, 64 * 1024, 16u << 20, &sz);
        c->max_frame = (uint32_t)sz;
        return rc;
    case FO_MAX_STREAMS:
        if (tk_parse_uint(arg, 1, 65536, &v) < 0)
            return opt_usage_error(o->cmd, "bad --max-streams '%s' (1 to 65536)", arg);
        c->max_streams = (unsigned)v;
        return 0;
    case FO_MAX_TRANSFERS:
        if (tk_parse_uint(arg, 1, 10000000, &v) < 0)
            return opt_usage_error(o->cmd, "bad --max-transfers '%s'", arg);
        c->max_transfers = (unsigned)v;
        return 0;
    case FO_MAX_CLIENTS:
        if (tk_parse_uint(arg, 0, 10000000, &v) < 0)
            return opt_usage_error(o->cmd, "bad --max-clients '%s'", arg);
        o->server.max_clients = (unsigned)v;
        return 0;
    case FO_IDLE:
    case FO_STALL:
    case FO_HEARTBEAT:
    case FO_SHUTDOWN:
        if (tk_parse_duration_ms(arg, &ms) < 0)
            return opt_usage_error(o->cmd, "bad duration '%s' (seconds)", arg);
        if (ch == FO_IDLE)
            c->idle_timeout_ms = ms;
        else if (ch == FO_STALL)
            c->stall_timeout_ms = ms;
        else if (ch == FO_HEARTBEAT)
            c->heartbeat_ms = ms;
        else
            o->shutdown_ms = ms;
        return 0;
    case FO_ZSTD_LEVEL:
        if (tk_parse_uint(arg, 1, 19, &v) < 0)
            return opt_usage_error(o->cmd, "bad --zstd-level '%s' (1 to 19)", arg);
        c->zstd_level = (int)v;
        return 0;
    case FO_AUTH_KEY: o->key_path = arg; return 0;
    case FO_PARTIAL_TTL:
        if (tk_parse_uint(arg, 0, 100u * 365 * 86400, &v) < 0)
            return opt_usage_error(o->cmd, "bad --partial-ttl '%s' (whole seconds; 0: keep)", arg);
        c->partial_ttl_s = (uint32_t)v;
        return 0;
    case FO_HASH_THREADS:
        if (tk_parse_uint(arg, 1, 64, &v) < 0)
            return opt_usage_error(o->cmd, "bad --hash-threads '%s' (1 to 64)", arg);
        c->hash_threads = (unsigned)v;
        return 0;
    case FO_KEEPALIVE:
        if (tk_sock_parse_keepalive(arg, &c->sockopts) < 0)
            return opt_usage_error(o->cmd, "bad --keepalive '%s' (IDLE[,INTVL[,COUNT]])", arg);
        return 0;
    case FO_LOG_LEVEL: o->log_level = arg; return 0;
    case FO_LOG_FORMAT: o->log_format = arg; return 0;
    default: return -1;
    }
}

int files_options_finish(files_options *o)
{
    if (!o->key_path)
        return 0;
    size_t n;
    if (keyfile_read(o->cmd, o->key_path, o->key, &n))
        return 1;
    o->files.auth_key = o->key;
    o->files.auth_key_len = n;
    return 0;
}

int files_build(files_options *o, tk_workers *w, tk_files **files, tk_server **server)
{
    char err[512] = "";
    int rc = tk_files_new(&o->files, w, files, err, sizeof(err));
    if (rc < 0) {
        tk_error("cannot create the file service: %s", err[0] ? err : strerror(-rc));
        *files = NULL;
        return 1;
    }
    o->server.busy_msg = tk_files_busy_message(&o->server.busy_len);
    rc = tk_server_open(w, &o->server, tk_files_ops(), *files, server, err, sizeof(err));
    if (rc < 0) {
        tk_error("%s", err);
        tk_files_free(*files);
        *files = NULL;
        return 1;
    }
    tk_files_set_server(*files, *server);
    char *real = realpath(o->files.root, NULL);
    tk_info("files: serving %s (%s%s)", real ? real : o->files.root,
            o->files.allow_upload ? "uploads on" : "read-only",
            o->files.auth_key ? ", HMAC authentication required" : "");
    free(real);
    /* The key is no longer needed in this copy: the service holds its own. */
    memset(o->key, 0, sizeof(o->key));
    return 0;
}

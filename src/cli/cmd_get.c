/* tcpkit get: download files from a file server, several at once over one
 * connection, each into a hidden partial file renamed into place after its
 * SHA-256 matched. */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/fclient_cli.h"
#include "cli/opts.h"

enum { O_NO_SYNC = 1400 };

static const char usage_text[] =
    "usage: tcpkit get HOST:PORT NAME... [OPTIONS]\n"
    "\n"
    "Downloads NAMEs (paths on the server) concurrently over one connection. Each\n"
    "goes to a hidden partial file beside its target (.NAME.tcpkit-part) and is\n"
    "renamed into place once its SHA-256 matched (version 2).\n"
    "\n"
    "  -o, --output PATH         a directory to write into (default: the current one);\n"
    "                            with one NAME also a file name, or - for stdout\n"
    "  -c, --continue            resume from partial files left by an earlier run\n"
    "      --no-sync             do not fdatasync each file before renaming it\n" FCLIENT_USAGE;

/* Where NAME is written: DIR/basename, or the -o path itself. */
static int target_for(const char *name, const char *out, int is_dir, char *buf, size_t cap)
{
    char copy[4096];
    snprintf(copy, sizeof(copy), "%s", name);
    const char *base = basename(copy);
    if (!out || is_dir) {
        int n = snprintf(buf, cap, "%s/%s", out ? out : ".", base);
        return n < 0 || (size_t)n >= cap ? -1 : 0;
    }
    snprintf(buf, cap, "%s", out);
    return 0;
}

int cmd_get(int argc, char **argv)
{
    fcli_options o;
    fcli_options_init(&o, "get");
    static const struct option longopts[] = {
        FCLIENT_LONGOPTS,
        {"output", required_argument, NULL, 'o'},
        {"continue", no_argument, NULL, 'c'},
        {"no-sync", no_argument, NULL, O_NO_SYNC},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out = NULL;
    int resume = 0, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "o:cqzh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(usage_text, stdout); return 0;
        case 'o': out = optarg; continue;
        case 'c': resume = 1; continue;
        case O_NO_SYNC: o.cfg.sync = 0; continue;
        case '?': fprintf(stderr, "Try 'tcpkit get --help'.\n"); return 2;
        default: break;
        }
        int rc = fcli_option(&o, ch, optarg);
        if (rc)
            return rc < 0 ? 2 : rc;
    }
    if (argc - optind < 2)
        return opt_usage_error("get", "expected HOST:PORT and at least one NAME");
    const char *target = argv[optind];
    char **names = argv + optind + 1;
    int nnames = argc - optind - 1;
    int to_stdout = out && strcmp(out, "-") == 0;
    struct stat st;
    int is_dir = out && !to_stdout && stat(out, &st) == 0 && S_ISDIR(st.st_mode);
    if (out && !to_stdout && !is_dir && nnames > 1)
        return opt_usage_error("get", "-o must be an existing directory for several NAMEs");
    if (to_stdout && nnames > 1)
        return opt_usage_error("get", "-o - takes one NAME");
    if (to_stdout && resume)
        return opt_usage_error("get", "--continue cannot resume to stdout");
    if (resume && o.cfg.protocol == 1)
        return opt_usage_error("get", "--continue needs protocol version 2");
    if (o.compress && o.cfg.protocol == 1)
        return opt_usage_error("get", "--compress needs protocol version 2");
    /* Two NAMEs with one basename would race for one file. */
    char(*paths)[4096] = calloc((size_t)nnames, sizeof(*paths));
    if (!paths)
        return 1;
    for (int i = 0; i < nnames; i++) {
        if (to_stdout)
            snprintf(paths[i], sizeof(paths[i]), "-");
        else if (target_for(names[i], out, is_dir, paths[i], sizeof(paths[i])) < 0) {
            free(paths);
            return opt_usage_error("get", "output path for '%s' too long", names[i]);
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(paths[i], paths[j]) == 0 && !to_stdout) {
                int rc = opt_usage_error("get", "'%s' and '%s' would both be written to %s",
                                         names[j], names[i], paths[i]);
                free(paths);
                return rc;
            }
        }
    }
    if (to_stdout)
        o.quiet = 1; /* the bytes are the output */
    int status;
    fcli *f = fcli_start(&o, target, &status);
    if (!f) {
        free(paths);
        return status;
    }
    unsigned flags = (resume ? TK_FGET_RESUME : 0) | (o.compress ? TK_FGET_ZSTD : 0);
    for (int i = 0; i < nnames; i++) {
        tk_fxfer *x = tk_fclient_get(fcli_client(f), names[i], paths[i], flags);
        if (x)
            fcli_track(f, x, names[i]);
    }
    free(paths);
    return fcli_run(f);
}

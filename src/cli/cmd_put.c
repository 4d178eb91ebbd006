/* tcpkit put: upload files to a file server (version 2), several at once
 * over one connection; the server keeps each in a hidden partial file and
 * renames it into place once the SHA-256 matched. */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/fclient_cli.h"
#include "cli/opts.h"

static const char usage_text[] =
    "usage: tcpkit put HOST:PORT FILE... [OPTIONS]\n"
    "\n"
    "Uploads FILEs (the server must run with --allow-upload). Each is stored under\n"
    "its base name, in the server's root or in --to DIR.\n"
    "\n"
    "      --to DIR              the directory on the server (default: its root)\n"
    "      --as NAME             the name on the server (one FILE only)\n"
    "  -c, --continue            resume uploads an earlier run left unfinished\n"
    "  -f, --force               replace existing files (needs --allow-overwrite "
    "there)\n" FCLIENT_USAGE;

enum { O_TO = 1500, O_AS };

int cmd_put(int argc, char **argv)
{
    fcli_options o;
    fcli_options_init(&o, "put");
    static const struct option longopts[] = {
        FCLIENT_LONGOPTS,
        {"to", required_argument, NULL, O_TO},
        {"as", required_argument, NULL, O_AS},
        {"continue", no_argument, NULL, 'c'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *to = NULL, *as = NULL;
    unsigned flags = 0;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "cfqzh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(usage_text, stdout); return 0;
        case O_TO: to = optarg; continue;
        case O_AS: as = optarg; continue;
        case 'c': flags |= TK_FPUT_RESUME; continue;
        case 'f': flags |= TK_FPUT_OVERWRITE; continue;
        case '?': fprintf(stderr, "Try 'tcpkit put --help'.\n"); return 2;
        default: break;
        }
        int rc = fcli_option(&o, ch, optarg);
        if (rc)
            return rc < 0 ? 2 : rc;
    }
    if (argc - optind < 2)
        return opt_usage_error("put", "expected HOST:PORT and at least one FILE");
    if (o.cfg.protocol == 1)
        return opt_usage_error("put", "uploads need protocol version 2");
    int nfiles = argc - optind - 1;
    if (as && nfiles > 1)
        return opt_usage_error("put", "--as takes one FILE");
    if (o.compress)
        flags |= TK_FPUT_ZSTD;
    int status;
    fcli *f = fcli_start(&o, argv[optind], &status);
    if (!f)
        return status;
    for (int i = 0; i < nfiles; i++) {
        const char *file = argv[optind + 1 + i];
        char copy[4096], remote[8192];
        snprintf(copy, sizeof(copy), "%s", file);
        const char *base = as ? as : basename(copy);
        if (to)
            snprintf(remote, sizeof(remote), "%s/%s", to, base);
        else
            snprintf(remote, sizeof(remote), "%s", base);
        tk_fxfer *x = tk_fclient_put(fcli_client(f), file, remote, flags);
        if (x)
            fcli_track(f, x, remote);
    }
    return fcli_run(f);
}

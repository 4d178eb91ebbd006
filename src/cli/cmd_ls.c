/* tcpkit ls: list directories on a file server, or show one file, with
 * optional SHA-256 digests and JSON output. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "cli/fclient_cli.h"
#include "cli/opts.h"

static const char usage_text[] =
    "usage: tcpkit ls HOST:PORT [PATH...] [OPTIONS]\n"
    "\n"
    "Lists each PATH on the server (default: the root), sorted by name: kind\n"
    "(d directory, f file, l link, ? other), size, modification time (UTC), name.\n"
    "A PATH that is a file is shown alone.\n"
    "\n"
    "      --json                one JSON object per line\n"
    "      --sha256              add each file's SHA-256 (the server computes it)\n" FCLIENT_USAGE;

enum { O_JSON = 1600, O_SHA };

typedef struct {
    char *name;
    int kind;
    uint64_t size;
    int64_t mtime;
    unsigned char digest[32];
    int has_digest;
} row;

typedef struct {
    fcli *f;
    int json;
    int sha;
    row *rows;
    size_t nrows;
    size_t cap;
    const char *dir; /* the PATH being listed, for names and digest requests */
    int listed_dir;  /* PATH was a directory and its listing arrived */
    int stat_sent;   /* PATH was a file: a STAT replaced the LIST */
    int ok;
} ls_state;

static int cmp_rows(const void *a, const void *b)
{
    return strcmp(((const row *)a)->name, ((const row *)b)->name);
}

static void add_row(ls_state *s, const char *name, size_t len, int kind, uint64_t size,
                    int64_t mtime, const unsigned char *digest)
{
    if (s->nrows == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        row *r = realloc(s->rows, cap * sizeof(*r));
        if (!r)
            return;
        s->rows = r;
        s->cap = cap;
    }
    row *r = &s->rows[s->nrows];
    r->name = strndup(name, len);
    if (!r->name)
        return;
    r->kind = kind;
    r->size = size;
    r->mtime = mtime;
    r->has_digest = digest != NULL;
    if (digest)
        memcpy(r->digest, digest, 32);
    s->nrows++;
}

static void on_entry(tk_fxfer *x, const tk_entry *e, void *arg)
{
    (void)x;
    add_row(arg, (const char *)e->name, e->name_len, e->kind, e->size, e->mtime, NULL);
}

static void on_info(tk_fxfer *x, int kind, uint64_t size, int64_t mtime,
                    const unsigned char *digest, void *arg)
{
    ls_state *s = arg;
    const char *name = tk_fxfer_remote(x);
    /* A digest answer for a listed file fills in its row. */
    for (size_t i = 0; i < s->nrows; i++) {
        row *r = &s->rows[i];
        const char *slash = strrchr(name, '/');
        const char *base = slash ? slash + 1 : name;
        if (digest && r->kind == TK_KIND_FILE && strcmp(r->name, base) == 0 && !r->has_digest) {
            memcpy(r->digest, digest, 32);
            r->has_digest = 1;
            return;
        }
    }
    add_row(s, name, strlen(name), kind, size, mtime, digest);
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case TK_KIND_FILE: return "file";
    case TK_KIND_DIR: return "dir";
    case TK_KIND_LINK: return "link";
    default: return "other";
    }
}

static void print_rows(ls_state *s)
{
    if (s->nrows > 1)
        qsort(s->rows, s->nrows, sizeof(row), cmp_rows);
    for (size_t i = 0; i < s->nrows; i++) {
        row *r = &s->rows[i];
        char when[32], hex[65] = "";
        time_t t = (time_t)(r->mtime / 1000000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        if (r->has_digest)
            for (int k = 0; k < 32; k++)
                snprintf(hex + 2 * k, 3, "%02x", r->digest[k]);
        if (s->json) {
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
            /* The path on the server, so rows of several PATHs stay apart. */
            char path[8192];
            if (s->listed_dir && s->dir[0])
                snprintf(path, sizeof(path), "%s/%s", s->dir, r->name);
            else
                snprintf(path, sizeof(path), "%s", r->name);
            json_t *o =
                json_pack("{s:s, s:s, s:s, s:I, s:s}", "name", r->name, "path", path, "kind",
                          kind_name(r->kind), "size", (json_int_t)r->size, "mtime", when);
            if (o && r->has_digest)
                json_object_set_new(o, "sha256", json_string(hex));
            char *line = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
            if (line)
                printf("%s\n", line);
            free(line);
            json_decref(o);
        } else {
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
            char k = r->kind == TK_KIND_FILE   ? 'f'
                     : r->kind == TK_KIND_DIR  ? 'd'
                     : r->kind == TK_KIND_LINK ? 'l'
                                               : '?';
            if (r->kind == TK_KIND_FILE)
                printf("%c %12llu  %s  %s%s%s%s\n", k, (unsigned long long)r->size, when, r->name,
                       r->kind == TK_KIND_DIR ? "/" : "", hex[0] ? "  " : "", hex);
            else
                printf("%c %12s  %s  %s%s\n", k, "-", when, r->name,
                       r->kind == TK_KIND_DIR ? "/" : "");
        }
        free(r->name);
    }
    s->nrows = 0;
}

static int on_done(tk_fxfer *x, int err, void *arg)
{
    ls_state *s = arg;
    /* LIST of a file: ask for the file itself. */
    if (err == TK_FERR_NOT_DIR) {
        (void)tk_fclient_stat(fcli_client(s->f), tk_fxfer_remote(x), s->sha);
        s->stat_sent = 1;
        return 1;
    }
    if (err == 0 && !s->stat_sent && strcmp(tk_fxfer_remote(x), s->dir) == 0)
        s->listed_dir = 1;
    return 0;
}

int cmd_ls(int argc, char **argv)
{
    fcli_options o;
    fcli_options_init(&o, "ls");
    static const struct option longopts[] = {
        FCLIENT_LONGOPTS,
        {"json", no_argument, NULL, O_JSON},
        {"sha256", no_argument, NULL, O_SHA},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    ls_state s;
    memset(&s, 0, sizeof(s));
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "qzh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': fputs(usage_text, stdout); return 0;
        case O_JSON: s.json = 1; continue;
        case O_SHA: s.sha = 1; continue;
        case '?': fprintf(stderr, "Try 'tcpkit ls --help'.\n"); return 2;
        default: break;
        }
        int rc = fcli_option(&o, ch, optarg);
        if (rc)
            return rc < 0 ? 2 : rc;
    }
    if (argc - optind < 1)
        return opt_usage_error("ls", "expected HOST:PORT");
    if (o.cfg.protocol == 1)
        return opt_usage_error("ls", "listing needs protocol version 2");
    int npaths = argc - optind - 1;
    int status = 0;
    /* One PATH at a time, so each listing is printed whole and sorted. */
    for (int i = 0; i < (npaths ? npaths : 1); i++) {
        const char *path = npaths ? argv[optind + 1 + i] : "";
        int st;
        fcli *f = fcli_start(&o, argv[optind], &st);
        if (!f)
            return st;
        s.f = f;
        s.dir = path;
        s.listed_dir = 0;
        s.stat_sent = 0;
        fcli_on_entry(f, on_entry, &s);
        fcli_on_info(f, on_info, &s);
        fcli_on_done(f, on_done, &s);
        (void)tk_fclient_list(fcli_client(f), path);
        st = fcli_run(f);
        if (s.sha && st == 0 && s.listed_dir && s.nrows) {
            /* Second pass: the digests of the files listed. */
            f = fcli_start(&o, argv[optind], &st);
            if (!f)
                return st;
            s.f = f;
            fcli_on_info(f, on_info, &s);
            for (size_t k = 0; k < s.nrows; k++) {
                if (s.rows[k].kind != TK_KIND_FILE || s.rows[k].has_digest)
                    continue;
                char name[8192];
                snprintf(name, sizeof(name), "%s%s%s", path, path[0] ? "/" : "", s.rows[k].name);
                (void)tk_fclient_stat(fcli_client(f), name, 1);
            }
            st = fcli_run(f);
        }
        if (npaths > 1 && !s.json)
            printf("%s%s:\n", i ? "\n" : "", path);
        print_rows(&s);
        if (st && !status)
            status = st;
    }
    free(s.rows);
    return status;
}

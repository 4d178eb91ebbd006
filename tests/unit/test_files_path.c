/* files_name_check and the confined opens of the file service, over a
 * directory tree this test builds. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "services/files_path.h"
#include "tcpkit/frame.h"

static int check(const char *name, int show_hidden, char *out)
{
    const char *msg = NULL;
    int rc = files_name_check((const unsigned char *)name, strlen(name), show_hidden, out, &msg);
    if (rc < 0)
        assert_non_null(msg);
    return rc;
}

/* Names are normalised: empty and "." components vanish; the root is ".". */
static void names_are_normalised(void **state)
{
    (void)state;
    char out[FILES_NAME_MAX + 1];
    assert_int_equal(check("a/b.txt", 0, out), 0);
    assert_string_equal(out, "a/b.txt");
    assert_int_equal(check("a//./b/", 0, out), 0);
    assert_string_equal(out, "a/b");
    assert_int_equal(check("", 0, out), 0);
    assert_string_equal(out, ".");
    assert_int_equal(check("./.", 0, out), 0);
    assert_string_equal(out, ".");
}

/* Every way out of the root is refused before anything is opened. */
static void escapes_and_bad_names_are_refused(void **state)
{
    (void)state;
    char out[FILES_NAME_MAX + 1];
    assert_int_equal(check("../x", 0, out), -TK_FERR_FORBIDDEN);
    assert_int_equal(check("a/../../x", 0, out), -TK_FERR_FORBIDDEN);
    assert_int_equal(check("a/..", 0, out), -TK_FERR_FORBIDDEN);
    assert_int_equal(check("/etc/passwd", 0, out), -TK_FERR_FORBIDDEN);
    assert_int_equal(
        files_name_check((const unsigned char *)"a\0b", 3, 0, out, &(const char *){NULL}),
        -TK_FERR_BAD_REQUEST);
    char long_name[5001];
    memset(long_name, 'x', 5000);
    long_name[5000] = '\0';
    assert_int_equal(check(long_name, 0, out), -TK_FERR_TOO_LARGE);
    char long_comp[300];
    memset(long_comp, 'y', 256);
    long_comp[256] = '\0';
    assert_int_equal(check(long_comp, 0, out), -TK_FERR_TOO_LARGE);
    long_comp[255] = '\0';
    assert_int_equal(check(long_comp, 0, out), 0);
}

/* Dot names are hidden unless asked for; upload partials always are. */
static void hidden_names(void **state)
{
    (void)state;
    char out[FILES_NAME_MAX + 1];
    assert_int_equal(check(".env", 0, out), -TK_FERR_FORBIDDEN);
    assert_int_equal(check("a/.git/config", 0, out), -TK_FERR_FORBIDDEN);
    assert_int_equal(check(".env", 1, out), 0);
    assert_int_equal(check(".tcpkit-part-0123456789abcdef", 1, out), -TK_FERR_FORBIDDEN);
    assert_true(files_entry_hidden(".tcpkit-part-x", 1));
    assert_true(files_entry_hidden(".x", 0));
    assert_false(files_entry_hidden(".x", 1));
    assert_false(files_entry_hidden("x", 0));
}

/* A tree: root/{f, d/g, in -> f, out -> /etc/hostname, up -> ../, loop1 <-> loop2, fifo}. */
static char base[64];
static int rootfd = -1;

static int tree_setup(void **state)
{
    (void)state;
    snprintf(base, sizeof(base), "/tmp/tk_files_path_XXXXXX");
    assert_non_null(mkdtemp(base));
    char p[128];
    snprintf(p, sizeof(p), "%s/root", base);
    assert_int_equal(mkdir(p, 0700), 0);
    rootfd = open(p, O_RDONLY | O_DIRECTORY);
    assert_true(rootfd >= 0);
    int fd = openat(rootfd, "f", O_WRONLY | O_CREAT, 0600);
    assert_int_equal(write(fd, "hello", 5), 5);
    close(fd);
    assert_int_equal(mkdirat(rootfd, "d", 0700), 0);
    close(openat(rootfd, "d/g", O_WRONLY | O_CREAT, 0600));
    assert_int_equal(symlinkat("f", rootfd, "in"), 0);
    assert_int_equal(symlinkat("/etc/hostname", rootfd, "out"), 0);
    assert_int_equal(symlinkat("..", rootfd, "up"), 0);
    assert_int_equal(symlinkat("loop2", rootfd, "loop1"), 0);
    assert_int_equal(symlinkat("loop1", rootfd, "loop2"), 0);
    assert_int_equal(mkfifoat(rootfd, "fifo", 0600), 0);
    snprintf(p, sizeof(p), "%s/secret", base);
    close(open(p, O_WRONLY | O_CREAT, 0600));
    return 0;
}

static int tree_teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    assert_int_equal(system(cmd), 0);
    close(rootfd);
    return 0;
}

static int open_reg(const char *path)
{
    struct stat st;
    const char *msg = NULL;
    int fd = files_open_regular(rootfd, path, &st, &msg);
    if (fd >= 0)
        close(fd);
    else
        assert_non_null(msg);
    return fd < 0 ? fd : 0;
}

/* Regular files open, through links that stay inside too. */
static void regular_files_open(void **state)
{
    (void)state;
    assert_int_equal(open_reg("f"), 0);
    assert_int_equal(open_reg("d/g"), 0);
    assert_int_equal(open_reg("in"), 0);
}

/* Links leaving the root, loops and missing names fail cleanly. */
static void links_out_and_loops_are_refused(void **state)
{
    (void)state;
    assert_int_equal(open_reg("out"), -TK_FERR_FORBIDDEN);
    assert_int_equal(open_reg("up/secret"), -TK_FERR_FORBIDDEN);
    assert_int_equal(open_reg("loop1"), -TK_FERR_FORBIDDEN);
    assert_int_equal(open_reg("missing"), -TK_FERR_NOT_FOUND);
    assert_int_equal(open_reg("f/x"), -TK_FERR_NOT_FOUND);
}

/* A FIFO or a directory is never opened for reading: no hang. */
static void fifo_and_directory_are_not_regular(void **state)
{
    (void)state;
    alarm(10);
    assert_int_equal(open_reg("fifo"), -TK_FERR_NOT_REGULAR);
    alarm(0);
    assert_int_equal(open_reg("d"), -TK_FERR_NOT_REGULAR);
}

/* Splitting a normal form into its directory and last name. */
static void split_parent(void **state)
{
    (void)state;
    char parent[FILES_NAME_MAX + 1];
    assert_string_equal(files_split_parent("a/b/c", parent), "c");
    assert_string_equal(parent, "a/b");
    assert_string_equal(files_split_parent("c", parent), "c");
    assert_string_equal(parent, ".");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_are_normalised),
        cmocka_unit_test(escapes_and_bad_names_are_refused),
        cmocka_unit_test(hidden_names),
        cmocka_unit_test_setup_teardown(regular_files_open, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(links_out_and_loops_are_refused, tree_setup, tree_teardown),
        cmocka_unit_test_setup_teardown(fifo_and_directory_are_not_regular, tree_setup,
                                        tree_teardown),
        cmocka_unit_test(split_parent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

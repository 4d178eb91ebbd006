/* tk_echo_parse / tk_echo_cmd_by_name: how the echo service reads a line. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tcpkit/echo.h"

/* Parses line and checks the command and its argument (which must point into
 * the line). */
static void expect_parse(const char *line, tk_echo_cmd want, const char *want_arg)
{
    const unsigned char *arg = NULL;
    size_t arg_len = 12345;
    size_t n = strlen(line);
    tk_echo_cmd got = tk_echo_parse((const unsigned char *)line, n, &arg, &arg_len);
    if (got != want)
        print_error("tk_echo_parse(\"%s\") = %d, want %d\n", line, (int)got, (int)want);
    assert_int_equal(got, want);
    assert_int_equal(arg_len, strlen(want_arg));
    if (arg_len) {
        assert_true(arg >= (const unsigned char *)line &&
                    arg + arg_len <= (const unsigned char *)line + n);
        assert_memory_equal(arg, want_arg, arg_len);
    }
}

/* Each command word followed by one space takes the rest as its argument. */
static void commands_with_arguments(void **state)
{
    (void)state;
    expect_parse("ECHO hi", TK_ECHO_CMD_ECHO, "hi");
    expect_parse("UPPER x", TK_ECHO_CMD_UPPER, "x");
    expect_parse("LOWER MiXeD Case", TK_ECHO_CMD_LOWER, "MiXeD Case");
    expect_parse("REVERSE abc", TK_ECHO_CMD_REVERSE, "abc");
    expect_parse("ECHO  two spaces", TK_ECHO_CMD_ECHO, " two spaces");
    expect_parse("ECHO ", TK_ECHO_CMD_ECHO, "");
}

/* Commands without arguments are recognised alone. */
static void bare_commands(void **state)
{
    (void)state;
    expect_parse("TIME", TK_ECHO_CMD_TIME, "");
    expect_parse("STATS", TK_ECHO_CMD_STATS, "");
    expect_parse("QUIT", TK_ECHO_CMD_QUIT, "");
    expect_parse("ECHO", TK_ECHO_CMD_ECHO, "");
    expect_parse("UPPER", TK_ECHO_CMD_UPPER, "");
}

/* "quit" is the one lower-case command; other spellings are plain text. */
static void quit_spellings(void **state)
{
    (void)state;
    expect_parse("quit", TK_ECHO_CMD_QUIT, "");
    expect_parse("Quit", TK_ECHO_CMD_PLAIN, "Quit");
    expect_parse("QUIt", TK_ECHO_CMD_PLAIN, "QUIt");
}

/* A line whose first word is not exactly a command is echoed whole. */
static void non_commands_are_plain(void **state)
{
    (void)state;
    expect_parse("", TK_ECHO_CMD_PLAIN, "");
    expect_parse("ECHOES x", TK_ECHO_CMD_PLAIN, "ECHOES x");
    expect_parse("echo hi", TK_ECHO_CMD_PLAIN, "echo hi");
    expect_parse("ECH", TK_ECHO_CMD_PLAIN, "ECH");
    expect_parse(" ECHO hi", TK_ECHO_CMD_PLAIN, " ECHO hi");
    expect_parse("hello world", TK_ECHO_CMD_PLAIN, "hello world");
    expect_parse("TIMEX", TK_ECHO_CMD_PLAIN, "TIMEX");
}

/* Parsing reads only len bytes: a command word cut by len is still matched. */
static void parse_respects_length(void **state)
{
    (void)state;
    const unsigned char *arg;
    size_t arg_len;
    assert_int_equal(tk_echo_parse((const unsigned char *)"ECHOES", 4, &arg, &arg_len),
                     TK_ECHO_CMD_ECHO);
    assert_int_equal(arg_len, 0);
    assert_int_equal(tk_echo_parse((const unsigned char *)"ECHO hi there", 7, &arg, &arg_len),
                     TK_ECHO_CMD_ECHO);
    assert_int_equal(arg_len, 2);
    assert_memory_equal(arg, "hi", 2);
}

/* Names look up exactly: upper case only, no prefixes or extensions. */
static void cmd_by_name_is_exact(void **state)
{
    (void)state;
    assert_int_equal(tk_echo_cmd_by_name("ECHO", 4), TK_ECHO_CMD_ECHO);
    assert_int_equal(tk_echo_cmd_by_name("UPPER", 5), TK_ECHO_CMD_UPPER);
    assert_int_equal(tk_echo_cmd_by_name("LOWER", 5), TK_ECHO_CMD_LOWER);
    assert_int_equal(tk_echo_cmd_by_name("REVERSE", 7), TK_ECHO_CMD_REVERSE);
    assert_int_equal(tk_echo_cmd_by_name("TIME", 4), TK_ECHO_CMD_TIME);
    assert_int_equal(tk_echo_cmd_by_name("STATS", 5), TK_ECHO_CMD_STATS);
    assert_int_equal(tk_echo_cmd_by_name("QUIT", 4), TK_ECHO_CMD_QUIT);
    assert_int_equal(tk_echo_cmd_by_name("echo", 4), TK_ECHO_CMD_UNKNOWN);
    assert_int_equal(tk_echo_cmd_by_name("ECH", 3), TK_ECHO_CMD_UNKNOWN);
    assert_int_equal(tk_echo_cmd_by_name("ECHOX", 5), TK_ECHO_CMD_UNKNOWN);
    assert_int_equal(tk_echo_cmd_by_name("", 0), TK_ECHO_CMD_UNKNOWN);
    assert_int_equal(tk_echo_cmd_by_name("PLAIN", 5), TK_ECHO_CMD_UNKNOWN);
    /* The name need not be NUL-terminated. */
    assert_int_equal(tk_echo_cmd_by_name("STATSX", 5), TK_ECHO_CMD_STATS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(commands_with_arguments), cmocka_unit_test(bare_commands),
        cmocka_unit_test(quit_spellings),          cmocka_unit_test(non_commands_are_plain),
        cmocka_unit_test(parse_respects_length),   cmocka_unit_test(cmd_by_name_is_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The echo line protocol's command words. */
#include <string.h>

#include "tcpkit/echo.h"

static const struct {
    const char *name;
    tk_echo_cmd cmd;
} commands[] = {
    {"ECHO", TK_ECHO_CMD_ECHO},       {"UPPER", TK_ECHO_CMD_UPPER}, {"LOWER", TK_ECHO_CMD_LOWER},
    {"REVERSE", TK_ECHO_CMD_REVERSE}, {"TIME", TK_ECHO_CMD_TIME},   {"STATS", TK_ECHO_CMD_STATS},
    {"QUIT", TK_ECHO_CMD_QUIT},       {"quit", TK_ECHO_CMD_QUIT},
};

tk_echo_cmd tk_echo_cmd_by_name(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strlen(commands[i].name) == len && memcmp(commands[i].name, name, len) == 0)
            return commands[i].cmd;
    }
    return TK_ECHO_CMD_UNKNOWN;
}

tk_echo_cmd tk_echo_parse(const unsigned char *line, size_t len, const unsigned char **arg,
                          size_t *arg_len)
{
    /* Command words are at most 7 bytes: look no further than that, so a
     * long plain line costs nothing here. */
    size_t word = 0;
    while (word < len && word < 8 && line[word] != ' ')
        word++;
    tk_echo_cmd cmd =
        word < 8 ? tk_echo_cmd_by_name((const char *)line, word) : TK_ECHO_CMD_UNKNOWN;
    if (cmd == TK_ECHO_CMD_UNKNOWN) {
        *arg = line;
        *arg_len = len;
        return TK_ECHO_CMD_PLAIN;
    }
    size_t skip = word < len ? word + 1 : word;
    *arg = line + skip;
    *arg_len = len - skip;
    return cmd;
}

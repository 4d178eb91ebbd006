/* tcpkit: one binary, one subcommand per tool. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"serve", cmd_serve, "run the main services (echo, chat) with default settings"},
    {"echo-server", cmd_echo_server, "line, length-prefixed or JSON echo over TCP; UDP echo"},
    {"chat-server", cmd_chat_server, "multi-user chat: rooms, private messages, history, accounts"},
    {"file-server", cmd_file_server, "serve a directory: downloads, uploads, listing, resume"},
    {"balance", cmd_balance, "TCP load balancer: algorithms, health checks, failover, stats"},
    {"connect", cmd_connect, "interactive or piped client (the netcat of the kit)"},
    {"chat", cmd_chat, "chat client: interactive on a terminal, JSON lines when piped"},
    {"get", cmd_get, "download files from a file server (resumable, SHA-256 checked)"},
    {"put", cmd_put, "upload files to a file server"},
    {"ls", cmd_ls, "list a directory on a file server"},
    {"bench", cmd_bench, "closed-loop load generator with latency percentiles"},
    {"scan", cmd_scan, "TCP connect scan of hosts, addresses and CIDR ranges"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: tcpkit COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'tcpkit COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("tcpkit %s\n", TK_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(name, commands[i].name) != 0)
            continue;
        if (argc == 3 && strcmp(argv[2], "--version") == 0) {
            printf("tcpkit %s\n", TK_VERSION);
            return 0;
        }
        /* getopt names the program in its messages: make it "tcpkit CMD". */
        static char prog[64];
        snprintf(prog, sizeof(prog), "tcpkit %s", name);
        argv[1] = prog;
        return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "tcpkit: unknown command '%s'\n", name);
    usage(stderr);
    return 2;
}

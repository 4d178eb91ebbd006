/* The subcommands of the tcpkit binary. Only src/cli/ parses argv, prints
 * usage or exits; each command returns its exit status:
 * 0 success, 1 runtime error, 2 usage error (connect adds 3..5). */
#ifndef TK_CLI_COMMANDS_H
#define TK_CLI_COMMANDS_H

int cmd_serve(int argc, char **argv);
int cmd_echo_server(int argc, char **argv);
int cmd_chat_server(int argc, char **argv);
int cmd_file_server(int argc, char **argv);
int cmd_balance(int argc, char **argv);
int cmd_connect(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_put(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_scan(int argc, char **argv);

#endif

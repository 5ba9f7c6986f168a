/* Subcommands of the `moetrace` binary. Each takes the arguments after its name and returns the
 * process exit status (0 on success; errors are printed to stderr naming the bad input). */
#ifndef MT_CLI_COMMANDS_H
#define MT_CLI_COMMANDS_H

int cmd_run(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_eplb(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat_template(int argc, char **argv);
int cmd_demo(int argc, char **argv);

#endif

/* PLACEHOLDER until this subcommand lands. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_chat_template(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "moetrace: 'chat_template' is not available in this build yet\n");
    return 2;
}

/* PLACEHOLDER until this subcommand lands. */
#include <stdio.h>

#include "cli/commands.h"

int cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "moetrace: 'tokenize' is not available in this build yet\n");
    return 2;
}

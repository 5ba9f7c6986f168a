#include <stdio.h>

#include "cli/commands.h"

int cmd_run(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "moetrace: 'run' is not available in this build yet\n");
    return 2;
}

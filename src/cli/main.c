/* moetrace: one binary, subcommands (SPEC §3). */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"run", cmd_run, "run a model on a prompt; write logits, routing and tokens"},
    {"serve", cmd_serve, "serve the model over HTTP (SGLang- and OpenAI-compatible, routing return)"},
    {"profile", cmd_profile, "run a JSONL dataset through the batched engine and record expert load"},
    {"eplb", cmd_eplb, "plan an expert-parallel placement from a stat dump"},
    {"report", cmd_report, "draw a stat dump as a heatmap picture (PNG or SVG)"},
    {"tokenize", cmd_tokenize, "print the token ids of a text as a JSON array"},
    {"detokenize", cmd_detokenize, "print the text of token ids"},
    {"chat-template", cmd_chat_template, "render a conversation with the model's chat template"},
    {"demo", cmd_demo, "the embedded model end to end: generation, routing, batching, load, EPLB"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: moetrace <command> [options]   (moetrace <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-14s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "moetrace: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

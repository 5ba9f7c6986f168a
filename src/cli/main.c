/* moetrace: one binary, subcommands (SPEC §3). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
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
    {"report", cmd_report, "heatmap of a stat dump (PNG or SVG), several compared or over time (--over-time); of a "
                           "per_token dump, a request traced (--request), --coactivation, --token-specialisation"},
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

/* The arguments with every "--name=value" split into "--name" "value" (argparse's spelling, which
 * users of SGLang and vLLM type): the subcommands' parsers take flags and values as separate
 * arguments. A value that itself starts with "--" is ambiguous either way (argparse refuses it).
 * The new argv shares the strings of the old and holds at most twice as many. */
static char **split_flag_values(int argc, char **argv, int *out_argc) {
    char **out = malloc(((size_t)argc * 2 + 1) * sizeof *out);
    if (!out) return NULL;
    int n = 0;
    for (int i = 0; i < argc; i++) {
        char *eq = strncmp(argv[i], "--", 2) == 0 ? strchr(argv[i], '=') : NULL;
        bool name_ok = eq && eq > argv[i] + 2;
        for (const char *c = argv[i] + 2; name_ok && c < eq; c++)
            name_ok = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-';
        if (!name_ok) {
            out[n++] = argv[i];
            continue;
        }
        *eq = '\0';   /* argv's strings may be written (C11 5.1.2.2.1) */
        out[n++] = argv[i];
        out[n++] = eq + 1;
    }
    out[n] = NULL;
    *out_argc = n;
    return out;
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
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        if (strcmp(argv[1], COMMANDS[i].name)) continue;
        int n;
        char **args = split_flag_values(argc - 2, argv + 2, &n);
        if (!args) {
            fprintf(stderr, "moetrace: out of memory\n");
            return 1;
        }
        int rc = COMMANDS[i].fn(n, args);
        free(args);
        return rc;
    }
    fprintf(stderr, "moetrace: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

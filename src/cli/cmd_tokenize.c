/* moetrace tokenize: text -> ids with the folder's tokenizer.json, as the tokenizers library's
 * Tokenizer.encode(text) (SPEC §3). Prints a JSON array of ids on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

static const char USAGE[] =
    "usage: moetrace tokenize --model DIR (--text TEXT | < FILE) [--no-special-tokens]\n"
    "\n"
    "Encodes TEXT (or all of stdin when --text is absent) with DIR/tokenizer.json (DIR may also be the\n"
    "tokenizer.json file) exactly as the Hugging Face tokenizers library's Tokenizer.encode(text) does,\n"
    "and prints the ids as a JSON array.\n"
    "\n"
    "  --model DIR            folder holding tokenizer.json (nothing else is needed)\n"
    "  --text TEXT            the text (UTF-8); default: read stdin to its end\n"
    "  --no-special-tokens    add_special_tokens=False: skip the post-processor (e.g. no <s>)\n";

static int flag_value(int argc, char **argv, int *i, const char *flag, const char **out) {
    size_t n = strlen(flag);
    const char *a = argv[*i];
    if (strncmp(a, flag, n) || (a[n] && a[n] != '=')) return 0;
    if (a[n] == '=') {
        *out = a + n + 1;
        return 1;
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, "moetrace tokenize: %s needs a value\n", flag);
        return -1;
    }
    *out = argv[++*i];
    return 1;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL;
    int special = 1;
    for (int i = 0; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--no-special-tokens")) {
            special = 0;
            continue;
        }
        if ((r = flag_value(argc, argv, &i, "--model", &model)) != 0) {
            if (r < 0) return 2;
            continue;
        }
        if ((r = flag_value(argc, argv, &i, "--text", &text)) != 0) {
            if (r < 0) return 2;
            continue;
        }
        fprintf(stderr, "moetrace tokenize: unknown argument '%s' (see --help)\n", argv[i]);
        return 2;
    }
    if (!model) {
        fprintf(stderr, "moetrace tokenize: --model DIR is required (see --help)\n");
        return 2;
    }
    char *buf = NULL;
    size_t len = 0;
    if (text) {
        len = strlen(text);
    } else {
        size_t cap = 0, r;
        char chunk[65536];
        while ((r = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
            if (len + r + 1 > cap) {
                cap = (len + r + 1) * 2;
                char *nb = realloc(buf, cap);
                if (!nb) {
                    free(buf);
                    fprintf(stderr, "moetrace tokenize: out of memory reading stdin\n");
                    return 1;
                }
                buf = nb;
            }
            memcpy(buf + len, chunk, r);
            len += r;
        }
        text = buf ? buf : "";
    }
    mt_err err = {{0}};
    mt_tokenizer *tok;
    if (mt_tokenizer_load(&tok, model, &err)) {
        fprintf(stderr, "moetrace tokenize: %s\n", err.msg);
        free(buf);
        return 1;
    }
    int32_t *ids;
    size_t n;
    int rc = mt_tokenizer_encode(tok, text, len, special, &ids, &n, &err);
    free(buf);
    mt_tokenizer_free(tok);
    if (rc) {
        fprintf(stderr, "moetrace tokenize: %s\n", err.msg);
        return 1;
    }
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    puts("]");
    free(ids);
    return fflush(stdout) ? 1 : 0;
}

/* moetrace detokenize: ids -> text with the folder's tokenizer.json, as the tokenizers library's
 * Tokenizer.decode(ids, skip_special_tokens) (SPEC §3). Prints exactly the text (no newline added). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

static const char USAGE[] =
    "usage: moetrace detokenize --model DIR --ids 1,2,3 [--skip-special-tokens]\n"
    "\n"
    "Decodes the ids with DIR/tokenizer.json (DIR may also be the tokenizer.json file) exactly as the\n"
    "Hugging Face tokenizers library's Tokenizer.decode(ids) does and prints the text as is (no newline\n"
    "is added). An id outside the vocabulary (negative, or not below its size, added tokens included),\n"
    "or one no token has, is an error (exit 2); the library would skip it.\n"
    "\n"
    "  --model DIR              folder holding tokenizer.json (nothing else is needed)\n"
    "  --ids LIST               comma-separated ids; a JSON array such as [1,2,3] works too\n"
    "  --skip-special-tokens    leave special tokens (e.g. <s>, <|im_end|>) out of the text\n";

/* Parses "1,2,3" or "[1, 2, 3]" (any integers: the vocabulary is checked by check_ids); "" and "[]"
 * are no ids (decoding them gives "", as the tokenizers library does). Anything else (an unclosed
 * bracket, a trailing comma, text after the list) is refused. */
static int ids_error(const char *what, const char *s, long long *v) {
    fprintf(stderr, "moetrace detokenize: --ids: %s in '%s' (a list such as 1,2,3 or [1, 2, 3])\n", what, s);
    free(v);
    return -1;
}

static int parse_ids(const char *s, long long **out, size_t *n) {
    const char *given = s;
    size_t cap = 16;
    long long *v = malloc(cap * sizeof *v);
    *n = 0;
    if (!v) return -1;
    while (*s == ' ') s++;
    const bool bracket = *s == '[';
    if (bracket) s++;
    while (*s == ' ') s++;
    bool empty = bracket ? *s == ']' : *s == '\0';
    while (!empty) {
        char *end;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (end == s || errno) return ids_error(*s ? "not an integer" : "an id missing", given, v);
        if (*n == cap) {
            long long *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[(*n)++] = x;
        s = end;
        while (*s == ' ') s++;
        if (*s != ',') break;
        s++;
        while (*s == ' ') s++;
    }
    if (bracket) {
        if (*s != ']') return ids_error("no closing ']'", given, v);
        s++;
    }
    while (*s == ' ') s++;
    if (*s) return ids_error(*s == ']' ? "a ']' without '['" : "unexpected text after the ids", given, v);
    *out = v;
    return 0;
}

/* The ids as int32 into ids[n] when every one is a token of tok; else prints the first that is not,
 * with the vocabulary's size, and returns -1. */
static int check_ids(const mt_tokenizer *tok, const char *model, const long long *v, size_t n, int32_t *ids) {
    size_t size = mt_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0 || (unsigned long long)v[i] >= size) {
            fprintf(stderr, "moetrace detokenize: --ids: id %lld is outside the vocabulary of %s (%zu ids: 0..%zu)\n", v[i],
                    model, size, size - 1);
            return -1;
        }
        ids[i] = (int32_t)v[i];
        if (!mt_tokenizer_id_to_token(tok, ids[i])) {
            fprintf(stderr, "moetrace detokenize: --ids: id %lld is no token of %s (its %zu ids have gaps)\n", v[i],
                    model, size);
            return -1;
        }
    }
    return 0;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL, *ids_s = NULL;
    int skip = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (!strcmp(a, "--skip-special-tokens")) {
            skip = 1;
        } else if (!strncmp(a, "--model=", 8)) {
            model = a + 8;
        } else if (!strncmp(a, "--ids=", 6)) {
            ids_s = a + 6;
        } else if ((!strcmp(a, "--model") || !strcmp(a, "--ids")) && i + 1 < argc) {
            if (!strcmp(a, "--model")) model = argv[++i];
            else ids_s = argv[++i];
        } else if (!strcmp(a, "--model") || !strcmp(a, "--ids")) {
            fprintf(stderr, "moetrace detokenize: %s needs a value\n", a);
            return 2;
        } else {
            fprintf(stderr, "moetrace detokenize: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model || !ids_s) {
        fprintf(stderr, "moetrace detokenize: --model DIR and --ids LIST are required (see --help)\n");
        return 2;
    }
    long long *given;
    size_t n;
    if (parse_ids(ids_s, &given, &n)) return 2;
    mt_err err = {{0}};
    mt_tokenizer *tok;
    if (mt_tokenizer_load(&tok, model, &err)) {
        fprintf(stderr, "moetrace detokenize: %s\n", err.msg);
        free(given);
        return 1;
    }
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids || check_ids(tok, model, given, n, ids)) {
        if (!ids) fprintf(stderr, "moetrace detokenize: out of memory\n");
        free(given);
        free(ids);
        mt_tokenizer_free(tok);
        return ids ? 2 : 1;
    }
    free(given);
    char *text;
    size_t len;
    int rc = mt_tokenizer_decode(tok, ids, n, skip, &text, &len, &err);
    free(ids);
    mt_tokenizer_free(tok);
    if (rc) {
        fprintf(stderr, "moetrace detokenize: %s\n", err.msg);
        return 1;
    }
    fwrite(text, 1, len, stdout);
    free(text);
    return fflush(stdout) ? 1 : 0;
}

/* The JSONL datasets of `moetrace profile`: one request per non-blank line, {"prompt": str} |
 * {"messages": [...], "tools": [...]} | {"input_ids": [...]}, turned into prompt token ids. Text
 * needs the model's tokenizer.json, messages its chat template: both are loaded from the model
 * folder at their first use (or given beforehand). A record may name its request with "rid" (as
 * /generate does) or "id": a non-empty string or an integer; unnamed requests are named by their
 * line number in the file (1-based, blank lines counted, as in error messages). Names need not be
 * unique. */
#ifndef MT_CLI_DATASET_H
#define MT_CLI_DATASET_H

#include <stdint.h>

#include "chat/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

typedef struct mt_dataset {
    int32_t **ids; /* [n] prompts (malloc'd) */
    int *len;      /* [n] their lengths */
    char **names;  /* [n] their names (malloc'd): the record's "rid" or "id", else its line number */
    int n;
} mt_dataset;

/* What text lines need; tok and tpl are loaded from model_dir when NULL (the caller frees them). */
typedef struct mt_text_tools {
    const char *model_dir;
    mt_tokenizer *tok;
    mt_chat_template *tpl;
} mt_text_tools;

/* One line (len bytes) into *ids (malloc'd, *n > 0 ids) and *name: the record's "rid", else its
 * "id" (a string, or an integer's digits; malloc'd), or NULL when it has neither. */
int mt_dataset_line(mt_text_tools *t, const char *line, size_t len, int32_t **ids, int *n, char **name,
                    mt_err *err);
/* Every line of the file at path; errors name the file and the line. At least one request. */
int mt_dataset_load(const char *path, mt_text_tools *t, mt_dataset *d, mt_err *err);
void mt_dataset_free(mt_dataset *d);

#endif

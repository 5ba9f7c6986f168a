/* The JSONL datasets of `moetrace profile`: one request per non-blank line, {"prompt": str} |
 * {"messages": [...], "tools": [...]} | {"input_ids": [...]}, turned into prompt token ids. Text
 * needs the model's tokenizer.json, messages its chat template: both are loaded from the model
 * folder at their first use (or given beforehand). A record may name its request with "rid" (as
 * /generate does) or "id": a non-empty string or an integer; unnamed requests are named by their
 * line number in the file (1-based, blank lines counted, as in error messages). Names need not be
 * unique. A record may also carry a label of its group (its domain, for `profile --domain-field F`):
 * field F, a non-empty string of at most 200 bytes or an integer; records without it have none. */
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
    char **domains; /* [n] their labels (malloc'd), NULL entries for records without one; all NULL
                       when no field was asked for */
    int *lines;    /* [n] each record's line in the file (1-based, blank lines counted), for errors
                      about a request that name its line */
    int n;
} mt_dataset;

/* What text lines need; tok and tpl are loaded from model_dir when NULL (the caller frees them). */
typedef struct mt_text_tools {
    const char *model_dir;
    mt_tokenizer *tok;
    mt_chat_template *tpl;
} mt_text_tools;

/* One record of a dataset; its strings and ids are malloc'd. */
typedef struct mt_dataset_record {
    int32_t *ids;  /* n > 0 prompt ids */
    int n;
    char *name;    /* the record's "rid", else its "id" (a string, or an integer's digits), or NULL */
    char *domain;  /* its domain_field (a string, or an integer's digits), or NULL */
} mt_dataset_record;

/* One line (len bytes) into *r; domain_field may be NULL (no label read). */
int mt_dataset_line(mt_text_tools *t, const char *line, size_t len, const char *domain_field, mt_dataset_record *r,
                    mt_err *err);
/* Every line of the file at path; errors name the file and the line. At least one request.
 * domain_field: the field holding each record's label, or NULL. */
int mt_dataset_load(const char *path, mt_text_tools *t, const char *domain_field, mt_dataset *d, mt_err *err);
void mt_dataset_free(mt_dataset *d);

#endif

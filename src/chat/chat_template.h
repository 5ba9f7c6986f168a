/* Chat templates: render tokenizer_config.json's `chat_template` exactly as transformers'
 * apply_chat_template(messages, tokenize=False, add_generation_prompt=...) does.
 *
 * A Jinja subset interpreter (src/chat/jinja_*.c) with transformers' environment: trim_blocks,
 * lstrip_blocks, loop controls, tojson = json.dumps(ensure_ascii=False), raise_exception(),
 * strftime_now(). Template variables: messages, tools (None when absent), documents (None),
 * add_generation_prompt, bos_token / eos_token / unk_token / pad_token from the config, then every
 * key of extra_kwargs (e.g. enable_thinking), which override the others. Unsupported constructs and
 * template errors (raise_exception, undefined operations) fail with "chat template line N: ...". */
#ifndef MT_CHAT_CHAT_TEMPLATE_H
#define MT_CHAT_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "util/err.h"

typedef struct mt_chat_template mt_chat_template;

/* Reads the template as transformers does: DIR/chat_template.jinja when present, else
 * DIR/tokenizer_config.json's chat_template (a string, or a list of {name, template} from which
 * "default" is taken). bos/eos/unk/pad tokens (a string or {"content": ...}) come from
 * tokenizer_config.json, else special_tokens_map.json. Parses the template. */
int mt_chat_template_load(mt_chat_template **out, const char *model_dir, mt_err *err);

/* Same from a template text; bos/eos may be NULL (then those variables are undefined). */
int mt_chat_template_from_string(mt_chat_template **out, const char *source, const char *bos_token,
                                 const char *eos_token, mt_err *err);

void mt_chat_template_free(mt_chat_template *tpl);

/* Renders messages (a JSON array of message objects). tools: JSON array or NULL; extra_kwargs: JSON
 * object or NULL. On success *out_text is a malloc'd NUL-terminated UTF-8 string (caller frees). */
int mt_chat_render(const mt_chat_template *tpl, const cJSON *messages, const cJSON *tools,
                   int add_generation_prompt, const cJSON *extra_kwargs, char **out_text, mt_err *err);
/* The same, where the output may hold NUL bytes: *out_len (when not NULL) gets its length. With
 * masked_nul, the inputs come from mt_json_parse_*_keep_nul, and every C0 80 pair in their strings
 * is the character U+0000 to the template (as a Python string holding "\x00"). */
int mt_chat_render_bytes(const mt_chat_template *tpl, const cJSON *messages, const cJSON *tools,
                         int add_generation_prompt, const cJSON *extra_kwargs, bool masked_nul, char **out_text,
                         size_t *out_len, mt_err *err);

#endif

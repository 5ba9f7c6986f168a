/* Reading generation requests: prompts (text or ids), sampling parameters in SGLang's and OpenAI's
 * spellings, stop conditions, and the routing-return options (SPEC §2, §5). Every bad value gives
 * a 400 mt_api_error naming the field; nothing here talks to the engine. */
#ifndef MT_SERVER_REQUEST_PARAMS_H
#define MT_SERVER_REQUEST_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "model/config.h"
#include "server/gen_job.h"
#include "server/http.h"
#include "tokenizer/tokenizer.h"

/* What the server can do, for validation. */
typedef struct mt_param_caps {
    const mt_config *cfg;
    bool have_tokenizer;
    bool routing_enabled;   /* --enable-return-routed-experts */
} mt_param_caps;

typedef enum mt_param_style {
    MT_PARAMS_SGLANG,       /* sampling_params of /generate: max_new_tokens, stop_token_ids, ... */
    MT_PARAMS_OPENAI,       /* the OpenAI endpoints: max_tokens or max_completion_tokens, top-level */
} mt_param_style;

/* obj[key], with JSON null read as absent (NULL). */
const cJSON *mt_params_field(const cJSON *obj, const char *key);
/* A boolean field: 1 read, 0 absent or null (out untouched), -1 wrong type (400 in e). */
int mt_params_bool(const cJSON *obj, const char *key, bool *out, mt_api_error *e);

/* An integer field in [lo, hi]: 1 read, 0 absent or null (out untouched), -1 otherwise (400 in e). */
int mt_params_int(const cJSON *obj, const char *key, long lo, long hi, int *out, mt_api_error *e);

/* Sampling and stop fields of obj into p (defaults first: temperature 1, top_p 1, top_k off,
 * repetition_penalty 1, min-p, the other penalties, min_new_tokens and the logit bias off,
 * skip_special_tokens). *max_given tells whether the request named its token limit; *n is the
 * samples asked ("n", default 1). An explicit limit below min_new_tokens is an error here, the
 * default one in mt_params_fit. */
int mt_params_parse_sampling(const cJSON *obj, mt_param_style style, const mt_param_caps *caps, mt_gen_params *p,
                             bool *max_given, int *n, mt_api_error *e);
/* return_routed_experts, routed_experts_start_len, routed_experts_dtype of obj into p. */
int mt_params_parse_routing(const cJSON *obj, const mt_param_caps *caps, mt_gen_params *p, mt_api_error *e);

/* A JSON array of token ids into a malloc'd array; field names the array in errors. */
int mt_params_parse_ids(const cJSON *arr, const char *field, int32_t **ids, int *n, mt_api_error *e);
/* Encodes the len bytes of text, NUL bytes included (add_special_tokens as the tokenizer's
 * post-processor says when add_special). */
int mt_params_encode(mt_tokenizer *tok, const char *text, size_t len, bool add_special, int32_t **ids, int *n,
                     mt_api_error *e);

/* What bounds a request's new tokens besides its own limit. */
typedef struct mt_fit_limits {
    bool max_given;        /* the request set its limit */
    int default_max;       /* the limit when it did not */
    int kv_positions;      /* the KV cache's positions (0: unknown): a default limit fits them too */
    const char *max_key;   /* the limit's name in errors (the request's spelling); NULL: max_new_tokens */
    const char *min_key;   /* min_new_tokens' name in errors (the request's spelling); NULL: min_new_tokens */
} mt_fit_limits;

/* Once the prompt is known: a prompt that does not fit the context is an error; without an explicit
 * limit max_new_tokens becomes min(default_max, what the context and the KV cache leave); an
 * explicit limit that does not fit the context is an error (one the KV cache cannot hold is refused
 * by the engine, naming its blocks); min_new_tokens must not pass the limit (an explicit one is
 * checked by mt_params_parse_sampling); routing_start must not pass the prompt. */
int mt_params_fit(mt_gen_params *p, const mt_fit_limits *lim, int n_prompt, const mt_config *cfg, mt_api_error *e);

#endif

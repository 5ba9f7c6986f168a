/* Generation request bodies, from JSON text to what a job needs, without HTTP or the engine:
 * SGLang's POST /generate and OpenAI's POST /v1/completions and /v1/chat/completions. The
 * endpoints (api_generate.c, api_openai.c) turn the result into a job; the fuzz target
 * fuzz/fuzz_request.c and the tests call it directly. Every bad body gives an mt_api_error
 * (400 naming the field, or 500 when out of memory). */
#ifndef MT_SERVER_REQUEST_BODY_H
#define MT_SERVER_REQUEST_BODY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat/chat_template.h"
#include "model/config.h"
#include "report/domain_usage.h"
#include "server/gen_job.h"
#include "server/http.h"
#include "tokenizer/tokenizer.h"

/* What the server brings to a request. */
typedef struct mt_request_ctx {
    const mt_config *cfg;
    mt_tokenizer *tokenizer;              /* NULL: token ids only */
    const mt_chat_template *chat_template; /* NULL: chat requests are refused */
    pthread_mutex_t *chat_mu;             /* held while rendering the template; NULL: none */
    bool routing_enabled;                 /* --enable-return-routed-experts */
    const char *domain_field;             /* serve --domain-field: the top-level key whose value
                                             labels the request's domain; NULL: none */
    mt_domain_usage *domains;             /* where labels become groups (with domain_field) */
    int kv_positions;                     /* the engine's KV cache in positions (0: unknown) */
} mt_request_ctx;

typedef enum mt_body_kind { MT_BODY_GENERATE, MT_BODY_COMPLETIONS, MT_BODY_CHAT } mt_body_kind;

#define MT_REQUEST_RID_LEN 80
/* Outputs one request may ask for: prompts x samples ("n"). */
#define MT_REQUEST_MAX_OUTPUTS 1024

/* One prompt of a request. */
typedef struct mt_gen_prompt {
    int32_t *ids;               /* malloc'd token ids */
    int n_ids;
    mt_gen_params params;       /* max_new_tokens fitted to this prompt */
    char rid[MT_REQUEST_RID_LEN]; /* /generate: its entry of a "rid" list, "" when none */
} mt_gen_prompt;

/* A validated request: n_prompts prompts (several from /generate's lists of "text" or "input_ids"
 * and the completions' list of prompts), each sampled n times. Output k is sample k % n of prompt
 * k / n, as SGLang and OpenAI order them. */
typedef struct mt_gen_request {
    mt_gen_prompt *prompts;     /* [n_prompts] */
    int n_prompts;
    int n;                      /* samples of each prompt ("n"), >= 1 */
    bool list;                  /* /generate: answered with a list (a list of prompts, or n > 1) */
    bool stream;
    bool include_usage;         /* OpenAI: stream_options.include_usage */
    bool echo;                  /* completions: each choice's text (and log-probabilities) starts with
                                   its prompt's */
    char rid[MT_REQUEST_RID_LEN]; /* /generate: "rid" when a string, "" otherwise */
    bool separate_reasoning;    /* chat: "separate_reasoning" (default true): serve --reasoning-parser
                                   splits the reasoning out of the answer */
    bool stream_reasoning;      /* chat: "stream_reasoning" (default true): streamed reasoning goes out
                                   as it comes (false: in one piece once it ends) */
    bool with_tools;            /* chat: the template got tools (a non-empty "tools", "tool_choice" not
                                   "none"): serve --tool-call-parser parses the answer's calls */
    char **tool_names;          /* with_tools: their functions' names (malloc'd; tools naming none
                                   left out), which a parsed call must have */
    int n_tool_names;
} mt_gen_request;

static inline int mt_gen_request_outputs(const mt_gen_request *r) { return r->n_prompts * r->n; }

/* body: len bytes (need not be NUL-terminated). On failure r holds nothing to free. With a
 * domain field, the body's label (a string or an integer, report/domain_usage.h) becomes every
 * prompt's params.group, once everything else is valid. */
int mt_request_parse(const mt_request_ctx *c, mt_body_kind kind, const char *body, size_t len, mt_gen_request *r,
                     mt_api_error *e);
void mt_gen_request_free(mt_gen_request *r);

/* Output k's parameters (a deep copy of its prompt's): sample 0 keeps the prompt's seed, sample
 * j > 0 draws from a seed derived from it and j, so the samples differ and a seeded request is
 * reproducible. -1 when out of memory. */
int mt_gen_request_output_params(const mt_gen_request *r, int k, mt_gen_params *out);
/* /generate: the name output k's response carries (its meta_info.id), into out (MT_JOB_NAME_LEN
 * bytes): the "rid" of a single request; in a list, rid[i] of prompt i (with "_j" appended for
 * sample j when n > 1), or a string rid with "_k" appended (SGLang's naming); "" when the request
 * named none (the server then makes one). */
void mt_gen_request_output_name(const mt_gen_request *r, int k, char *out);

#endif

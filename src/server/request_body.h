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
} mt_request_ctx;

typedef enum mt_body_kind { MT_BODY_GENERATE, MT_BODY_COMPLETIONS, MT_BODY_CHAT } mt_body_kind;

#define MT_REQUEST_RID_LEN 80

/* A validated request. */
typedef struct mt_gen_request {
    int32_t *prompt;            /* malloc'd token ids */
    int n_prompt;
    mt_gen_params params;       /* max_new_tokens fitted to the context */
    bool stream;
    bool include_usage;         /* OpenAI: stream_options.include_usage */
    char rid[MT_REQUEST_RID_LEN]; /* /generate: "rid", "" when absent */
} mt_gen_request;

/* body: len bytes (need not be NUL-terminated). On failure r holds nothing to free. With a
 * domain field, the body's label (a string or an integer, report/domain_usage.h) becomes
 * params.group, once everything else is valid. */
int mt_request_parse(const mt_request_ctx *c, mt_body_kind kind, const char *body, size_t len, mt_gen_request *r,
                     mt_api_error *e);
void mt_gen_request_free(mt_gen_request *r);

#endif

/* Fuzz target: generation request bodies (server/request_body.c over request_params.c), without
 * HTTP: every input is parsed as a /generate, a /v1/completions and a /v1/chat/completions body,
 * with the qwen3_moe fixture's config and the Qwen3 chat template, under three servers: with the
 * byte-level fixture tokenizer (which always adds a token), with the one without post-processor (an
 * empty text gives no ids) and routing enabled and domains labelled by the key "topic" (serve
 * --domain-field), and without tokenizer. A body that is accepted
 * gives prompts inside the context, at most MT_REQUEST_MAX_OUTPUTS outputs with names that fit a
 * job's name, and params within their documented ranges, and holds U+0000 only where a prompt is
 * read, which needs a tokenizer (every other string is a C string that would end at the NUL); its
 * domain group is 0 or a group of a label the usage knows; its penalties, min-p, min_new_tokens and
 * logit bias are within the engine's ranges (each biased token once); its log-probability fields
 * (logprob_start_len, top alternatives, echo, tokens' text) are within their ranges and asked where
 * they apply. */
#include <math.h>

#include "chat/chat_template.h"
#include "kernels/sample.h"
#include "fuzz_util.h"
#include "model/config.h"
#include "report/domain_usage.h"
#include "server/request_body.h"
#include "util/json_util.h"

static mt_config g_cfg;
static mt_tokenizer *g_tok[2];
static mt_chat_template *g_tpl;
static mt_domain_usage *g_domains;

static void fail_init(const char *what, const mt_err *err) {
    fprintf(stderr, "fuzz_request: %s: %s\n", what, err->msg);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char path[4096];
    mt_err err;
    snprintf(path, sizeof path, "%s/tests/fixtures/models/qwen3_moe", MT_SOURCE_DIR);
    if (mt_config_load(&g_cfg, path, &err)) fail_init("config", &err);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/tests/tokenizer/%s", MT_SOURCE_DIR, i ? "ms" : "bl");
        if (mt_tokenizer_load(&g_tok[i], path, &err)) fail_init("tokenizer", &err);
    }
    snprintf(path, sizeof path, "%s/tests/chat/templates/qwen3.jinja", MT_SOURCE_DIR);
    char *src = mt_read_file(path, NULL, &err);
    if (!src) fail_init("template", &err);
    if (mt_chat_template_from_string(&g_tpl, src, NULL, "<|im_end|>", &err)) fail_init("template", &err);
    free(src);
    mt_recorder_opts ro;
    mt_recorder_opts_default(&ro);
    if (!(g_domains = mt_domain_usage_new(&g_cfg, "fuzz", &ro, "topic", NULL, &err))) fail_init("domains", &err);
    return 0;
}

static void check(const mt_gen_request *r, const mt_request_ctx *c, mt_body_kind kind) {
    FUZZ_CHECK(r->n >= 1 && r->n_prompts >= 1 && mt_gen_request_outputs(r) <= MT_REQUEST_MAX_OUTPUTS);
    FUZZ_CHECK(strlen(r->rid) < sizeof r->rid);
    FUZZ_CHECK(!r->echo || kind == MT_BODY_COMPLETIONS);
    for (int k = 0; k < mt_gen_request_outputs(r); k++) {
        char name[MT_JOB_NAME_LEN];
        mt_gen_params p;
        mt_gen_request_output_name(r, k, name);
        FUZZ_CHECK(strlen(name) < sizeof name);
        FUZZ_CHECK(mt_gen_request_output_params(r, k, &p) == 0);
        FUZZ_CHECK(p.group == r->prompts[k / r->n].params.group);
        mt_gen_params_free(&p);
    }
    for (int q = 0; q < r->n_prompts; q++) {
        const mt_gen_prompt *g = &r->prompts[q];
        const mt_gen_params *p = &g->params;
        FUZZ_CHECK(g->ids && g->n_ids > 0 && g->n_ids <= g_cfg.max_position_embeddings);
        FUZZ_CHECK(p->max_new_tokens >= 0 && g->n_ids + p->max_new_tokens <= g_cfg.max_position_embeddings);
        FUZZ_CHECK(p->routing_start >= 0 && p->routing_start <= g->n_ids);
        FUZZ_CHECK(p->sampling.temperature >= 0 && p->sampling.top_p > 0 && p->sampling.top_p <= 1);
        /* min-p, the penalties, min_new_tokens and the logit bias within the ranges the engine takes */
        const mt_sampling_params *sp = &p->sampling;
        FUZZ_CHECK(sp->min_p >= 0 && sp->min_p <= 1);
        FUZZ_CHECK(sp->repetition_penalty > 0 && sp->repetition_penalty <= 2);
        FUZZ_CHECK(fabsf(sp->frequency_penalty) <= 2 && fabsf(sp->presence_penalty) <= 2);
        FUZZ_CHECK(sp->min_new_tokens >= 0 && sp->min_new_tokens <= p->max_new_tokens);
        for (int i = 0; i < p->n_bias; i++) {
            FUZZ_CHECK(p->bias_ids[i] >= 0 && p->bias_ids[i] < g_cfg.vocab_size);
            FUZZ_CHECK(fabsf(p->bias_values[i]) <= 100);
            for (int j = 0; j < i; j++) FUZZ_CHECK(p->bias_ids[j] != p->bias_ids[i]);
        }
        for (int i = 0; i < g->n_ids; i++) FUZZ_CHECK(g->ids[i] >= 0);
        for (int i = 0; i < p->n_stop_ids; i++) FUZZ_CHECK(p->stop_ids[i] >= 0 && p->stop_ids[i] < g_cfg.vocab_size);
        for (int i = 0; i < p->n_stop_strings; i++) FUZZ_CHECK(p->stop_strings[i] && p->stop_strings[i][0]);
        FUZZ_CHECK(strlen(g->rid) < sizeof g->rid);
        FUZZ_CHECK(p->group >= 0 && p->group <= mt_domain_usage_num_domains(g_domains));
        /* log-probabilities: a start inside the prompt, at most MT_TOP_LOGPROBS_MAX alternatives,
         * tokens' text only with a tokenizer; echo only from the completions */
        FUZZ_CHECK(p->logprob_start >= -1 && (!p->return_logprob || p->logprob_start < g->n_ids));
        FUZZ_CHECK(p->top_logprobs >= 0 && p->top_logprobs <= MT_TOP_LOGPROBS_MAX);
        FUZZ_CHECK(!p->text_in_logprobs || c->tokenizer);
        FUZZ_CHECK(p->n_logprob_ids >= 0 && p->n_logprob_ids <= MT_LOGPROB_IDS_MAX && (!p->n_logprob_ids || p->logprob_ids));
        for (int i = 0; i < p->n_logprob_ids; i++) FUZZ_CHECK(p->logprob_ids[i] >= 0 && p->logprob_ids[i] < g_cfg.vocab_size);
    }
}

/* True when the JSON value at the start of data has a string holding U+0000. */
static bool holds_nul(const uint8_t *data, size_t size) {
    const char *text = (const char *)data, *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, size, &end, 0);
    bool nul = j && mt_json_find_nul(text, (size_t)(end - text)) >= 0;
    cJSON_Delete(j);
    return nul;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const mt_body_kind kinds[] = {MT_BODY_GENERATE, MT_BODY_COMPLETIONS, MT_BODY_CHAT};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        for (int v = 0; v < 3; v++) {
            mt_request_ctx c = {.cfg = &g_cfg, .tokenizer = v < 2 ? g_tok[v] : NULL, .chat_template = v < 2 ? g_tpl : NULL,
                                .routing_enabled = v > 0, .domain_field = v == 1 ? "topic" : NULL,
                                .domains = v == 1 ? g_domains : NULL};
            mt_gen_request r;
            mt_api_error e = {0};
            if (mt_request_parse(&c, kinds[k], (const char *)data, size, &r, &e) == 0) {
                check(&r, &c, kinds[k]);
                if (holds_nul(data, size)) FUZZ_CHECK(c.tokenizer != NULL);
                mt_gen_request_free(&r);
            } else {
                FUZZ_CHECK(e.status >= 400 && e.status < 600 && e.message[0]);
            }
        }
    }
    return 0;
}

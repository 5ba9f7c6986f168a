#include "engine/generate.h"

#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "engine/kv_cache.h"
#include "engine/penalties.h"

int mt_generate(const mt_model *m, const int32_t *prompt, int n_prompt, const mt_generate_opts *o,
                int32_t *out_tokens, int *n_out, mt_err *err) {
    const mt_config *c = &m->cfg;
    *n_out = 0;
    if (n_prompt <= 0) return mt_errf(err, "empty prompt");
    if (o->max_new_tokens < 0) return mt_errf(err, "max_new_tokens must be >= 0");
    int total = n_prompt + o->max_new_tokens;
    if (total > c->max_position_embeddings)
        return mt_errf(err, "prompt of %d tokens + %d new tokens exceeds the model's context of %d", n_prompt,
                       o->max_new_tokens, c->max_position_embeddings);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= c->vocab_size)
            return mt_errf(err, "prompt token %d at index %d is outside the vocabulary [0, %d)", prompt[i], i, c->vocab_size);

    mt_kv_cache kv;
    if (mt_kv_cache_init_model(&kv, m, (total + MT_KV_BLOCK - 1) / MT_KV_BLOCK, err)) return -1;
    mt_kv_seq seq = {0};
    mt_kv_seq *seqs[1] = {&seq};
    mt_sampler sampler;
    mt_penalties pen;
    int rc = -1;
    int n_rows = o->prompt_logits ? n_prompt : 1;
    int32_t *seq_ids = calloc((size_t)n_prompt, sizeof *seq_ids);
    int32_t *pos = malloc((size_t)n_prompt * sizeof *pos);
    int32_t *rows = malloc((size_t)n_rows * sizeof *rows);
    float *logits = malloc((size_t)n_rows * c->vocab_size * sizeof *logits);
    if (mt_sampler_init(&sampler, &o->sampling, c->vocab_size)) {
        mt_errf(err, "out of memory");
        goto done_nosampler;
    }
    /* the penalties' changes to each new token's logits: eos barred before min_new_tokens */
    int32_t eos[MT_MAX_EOS];
    for (int i = 0; i < c->num_eos; i++) eos[i] = c->eos_ids[i];
    if (mt_penalties_init(&pen, &o->sampling, prompt, n_prompt, o->max_new_tokens, NULL, NULL, 0, eos, c->num_eos, err)) {
        mt_sampler_free(&sampler);
        goto done_nosampler;
    }
    /* each generated token may add one more changed logit */
    size_t adj_cap = (size_t)mt_penalties_max_changes(&pen) + (size_t)o->max_new_tokens + 1;
    mt_logit_adjust *adj = malloc(adj_cap * sizeof *adj);
    if (!seq_ids || !pos || !rows || !logits || !adj) {
        mt_errf(err, "out of memory");
        goto done;
    }
    if (mt_kv_seq_reserve(&kv, &seq, total, err)) goto done;
    for (int i = 0; i < n_prompt; i++) pos[i] = i;
    for (int i = 0; i < n_rows; i++) rows[i] = o->prompt_logits ? i : n_prompt - 1;
    /* Each token's row (its draw, when it samples) is taken before the pass that picks it, and the
     * backend picks it, as in the batched engine (kernels/sample.h). With prompt logits asked for,
     * the first token is picked here from the copied logits instead. */
    int32_t next = 0;
    float lp = 0.0f;   /* next's log-probability, when asked for */
    mt_sample_row row;
    mt_batch b = {.n_tokens = n_prompt, .tokens = prompt, .seq_ids = seq_ids, .positions = pos, .seqs = seqs,
                  .num_seqs = 1, .n_logits = n_rows, .logit_rows = rows, .placement = o->placement};
    if (!o->prompt_logits) {
        row = mt_sampler_next(&sampler);
        b.next_tokens = &next;
        b.sample = row.temperature > 0.0f ? &row : NULL;
        b.next_logprobs = o->out_logprobs ? &lp : NULL;
        b.n_adjusts = mt_penalties_row(&pen, 0, 0, adj);
        b.adjusts = b.n_adjusts ? adj : NULL;
    }
    if (mt_forward(m, &kv, &b, logits, o->sink, err)) goto done;
    if (o->prompt_logits) {
        memcpy(o->prompt_logits, logits, (size_t)n_prompt * c->vocab_size * sizeof(float));
        float *last = logits + (size_t)(n_rows - 1) * c->vocab_size;
        int n_adj = mt_penalties_row(&pen, 0, 0, adj);
        for (int i = 0; i < n_adj; i++) last[adj[i].token] = mt_logit_adjusted(last[adj[i].token], &adj[i]);
        next = mt_sample(&sampler, last);
        if (next < 0) {
            mt_errf(err, "out of memory for sampling");
            goto done;
        }
        if (o->out_logprobs) {
            mt_sample_row r0 = {.temperature = o->sampling.temperature};
            lp = mt_token_logprob(&r0, logits + (size_t)(n_rows - 1) * c->vocab_size, c->vocab_size, next);
        }
    }
    for (int g = 0; g < o->max_new_tokens; g++) {
        int32_t tok = next;
        if (o->out_logprobs) o->out_logprobs[*n_out] = lp;
        out_tokens[(*n_out)++] = tok;
        mt_penalties_add_output(&pen, tok);
        if (o->on_token) o->on_token(o->token_ctx, tok);
        if (!o->ignore_eos && mt_config_is_eos(c, tok)) break;
        if (g + 1 == o->max_new_tokens) break;
        int32_t p = n_prompt + g, zero = 0, first = 0;
        row = mt_sampler_next(&sampler);
        mt_batch d = {.n_tokens = 1, .tokens = &tok, .seq_ids = &zero, .positions = &p, .seqs = seqs,
                      .num_seqs = 1, .n_logits = 1, .logit_rows = &first, .next_tokens = &next,
                      .sample = row.temperature > 0.0f ? &row : NULL,
                      .next_logprobs = o->out_logprobs ? &lp : NULL, .placement = o->placement};
        d.n_adjusts = mt_penalties_row(&pen, 0, *n_out, adj);
        d.adjusts = d.n_adjusts ? adj : NULL;
        if (mt_forward(m, &kv, &d, logits, o->sink, err)) goto done;
    }
    rc = 0;
done:
    mt_sampler_free(&sampler);
    mt_penalties_free(&pen);
    free(adj);
done_nosampler:
    free(seq_ids);
    free(pos);
    free(rows);
    free(logits);
    mt_kv_seq_release(&kv, &seq);
    mt_kv_cache_free(&kv);
    return rc;
}

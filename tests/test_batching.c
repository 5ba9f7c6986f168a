/* The flat-batch forward pass: a sequence's logits and routing do not depend on what else is in
 * the batch, nor on how its prompt is split into chunks. Routing must be identical bit for bit;
 * logits equal to float32 rounding. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/forward.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "routing/capture.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"
#define NSEQ 6

/* Routing per (sequence, position), captured from events that mix sequences. */
typedef struct multi_table {
    mt_routing_table t[NSEQ];
} multi_table;

static void multi_on_layer(void *ctx, const mt_routing_event *ev) {
    multi_table *m = ctx;
    for (int i = 0; i < ev->n_tokens; i++) {
        mt_routing_table *t = &m->t[ev->seq_ids[i]];
        int pos = ev->positions[i];
        assert_true(pos < t->capacity);
        if (pos + 1 > t->rows) t->rows = pos + 1;
        memcpy(t->ids + ((size_t)pos * t->num_layers + ev->layer) * t->top_k, ev->topk_ids + (size_t)i * ev->top_k,
               (size_t)ev->top_k * sizeof(int32_t));
    }
}

static int g_len[NSEQ] = {1, 7, 40, 130, 17, 64};

static int32_t token_of(int s, int p) { return (int32_t)((s * 131 + p * 71 + 3) % 509) + 2; }

/* Forwards every sequence's tokens in chunks of `chunk` tokens per sequence per step, all
 * sequences sharing each step (chunk <= 0: everything in one pass). Records logits of each
 * sequence's last token. */
static void run(const mt_model *m, int chunk, bool together, multi_table *mt, float *last_logits) {
    const mt_config *c = &m->cfg;
    mt_kv_cache kv;
    mt_err err;
    assert_int_equal(mt_kv_cache_init(&kv, c->num_hidden_layers, c->num_key_value_heads * c->head_dim, 128, &err), 0);
    mt_kv_seq seqs[NSEQ];
    mt_kv_seq *ptrs[NSEQ];
    memset(seqs, 0, sizeof seqs);
    for (int s = 0; s < NSEQ; s++) {
        ptrs[s] = &seqs[s];
        assert_int_equal(mt_kv_seq_reserve(&kv, &seqs[s], g_len[s], &err), 0);
        assert_int_equal(mt_routing_table_init(&mt->t[s], c->num_hidden_layers, c->top_k, g_len[s]), 0);
    }
    mt_routing_sink sink = {multi_on_layer, NULL, mt};
    int done[NSEQ] = {0};
    int32_t tok[512], sid[512], pos[512], rows[NSEQ], row_seq[NSEQ];
    float *logits = malloc((size_t)NSEQ * c->vocab_size * sizeof *logits);
    for (;;) {
        int n = 0, nl = 0;
        for (int s = 0; s < NSEQ; s++) {
            if (!together && n > 0) break;
            int take = g_len[s] - done[s];
            if (chunk > 0 && take > chunk) take = chunk;
            for (int i = 0; i < take; i++, n++) {
                tok[n] = token_of(s, done[s] + i);
                sid[n] = s;
                pos[n] = done[s] + i;
            }
            done[s] += take;
            if (take > 0 && done[s] == g_len[s]) {
                rows[nl] = n - 1;
                row_seq[nl++] = s;
            }
        }
        if (n == 0) break;
        mt_batch b = {.n_tokens = n, .tokens = tok, .seq_ids = sid, .positions = pos, .seqs = ptrs,
                      .num_seqs = NSEQ, .n_logits = nl, .logit_rows = rows};
        if (mt_forward(m, &kv, &b, logits, &sink, &err)) fail_msg("%s", err.msg);
        for (int i = 0; i < nl; i++)
            memcpy(last_logits + (size_t)row_seq[i] * c->vocab_size, logits + (size_t)i * c->vocab_size,
                   (size_t)c->vocab_size * sizeof(float));
    }
    free(logits);
    for (int s = 0; s < NSEQ; s++) mt_kv_seq_release(&kv, &seqs[s]);
    mt_kv_cache_free(&kv);
}

static void compare(const mt_model *m, multi_table *a, multi_table *b, const float *la, const float *lb,
                    const char *what) {
    const mt_config *c = &m->cfg;
    for (int s = 0; s < NSEQ; s++) {
        assert_int_equal(a->t[s].rows, g_len[s]);
        assert_int_equal(b->t[s].rows, g_len[s]);
        size_t n = (size_t)g_len[s] * c->num_hidden_layers * c->top_k;
        if (memcmp(a->t[s].ids, b->t[s].ids, n * sizeof(int32_t)) != 0) fail_msg("%s: routing of seq %d differs", what, s);
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)NSEQ * c->vocab_size; i++) {
        num += ((double)la[i] - lb[i]) * ((double)la[i] - lb[i]);
        den += (double)lb[i] * lb[i];
    }
    print_message("  %s: routing identical, logits rel diff %.2e\n", what, sqrt(num / den));
    assert_true(sqrt(num / den) < 1e-5);
}

static void free_tables(multi_table *t) {
    for (int s = 0; s < NSEQ; s++) mt_routing_table_free(&t->t[s]);
}

static void test_batch_invariance(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    size_t vs = (size_t)NSEQ * m.cfg.vocab_size;
    float *solo_l = malloc(vs * sizeof(float)), *other_l = malloc(vs * sizeof(float));
    multi_table solo, other;
    run(&m, 0, false, &solo, solo_l);  /* each sequence alone, whole prompt */
    run(&m, 0, true, &other, other_l); /* all sequences in one pass */
    compare(&m, &other, &solo, other_l, solo_l, "one batch of all sequences vs each alone");
    free_tables(&other);
    run(&m, 16, true, &other, other_l); /* chunked prefill, mixed */
    compare(&m, &other, &solo, other_l, solo_l, "chunks of 16, mixed vs alone");
    free_tables(&other);
    run(&m, 1, true, &other, other_l); /* token by token, mixed: decode-shaped steps */
    compare(&m, &other, &solo, other_l, solo_l, "one token per sequence per step vs alone");
    free_tables(&other);
    free_tables(&solo);
    free(solo_l);
    free(other_l);
    mt_model_free(&m);
}

static void test_invalid_batches(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    mt_kv_cache kv;
    assert_int_equal(mt_kv_cache_init(&kv, m.cfg.num_hidden_layers, m.cfg.num_key_value_heads * m.cfg.head_dim, 2, &err), 0);
    mt_kv_seq seq = {0};
    mt_kv_seq *ptrs[1] = {&seq};
    assert_int_equal(mt_kv_seq_reserve(&kv, &seq, 16, &err), 0);
    float logits[512];
    int32_t tok = 600, sid = 0, pos = 0, row = 0;
    mt_batch b = {.n_tokens = 1, .tokens = &tok, .seq_ids = &sid, .positions = &pos, .seqs = ptrs,
                  .num_seqs = 1, .n_logits = 1, .logit_rows = &row};
    assert_int_equal(mt_forward(&m, &kv, &b, logits, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "600"));
    tok = 5;
    pos = 16;
    assert_int_equal(mt_forward(&m, &kv, &b, logits, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "no KV block"));
    pos = 0;
    sid = 3;
    assert_int_equal(mt_forward(&m, &kv, &b, logits, NULL, &err), -1);
    /* the cache refuses more than it has */
    mt_kv_seq big = {0};
    assert_int_equal(mt_kv_seq_reserve(&kv, &big, 40, &err), -1);
    assert_non_null(strstr(err.msg, "KV cache full"));
    mt_kv_seq_release(&kv, &seq);
    mt_kv_seq_release(&kv, &big);
    assert_int_equal(kv.num_free, 2);
    mt_kv_cache_free(&kv);
    mt_model_free(&m);
}

int main(void) {
    mt_kernels_init(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_invalid_batches),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mt_kernels_shutdown();
    return rc;
}

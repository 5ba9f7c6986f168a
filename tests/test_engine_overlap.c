/* Overlapped decode on the CPU (mt_engine_opts.overlap 1): the next pass begins before the one in
 * flight hands its tokens out, its tokens standing for that pass's picks (MT_TOKEN_OF_ROW). The
 * engine must hand out exactly what it does without overlap (tests/overlap_check.h), and the
 * forward pass's two halves must compute what one mt_forward does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/forward.h"
#include "overlap_check.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

static void test_overlap_equals_plain(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    long overlapped = check_overlap_equals_plain(&m);
    printf("  overlapped run: %ld passes begun with the one before in flight\n", overlapped);
    assert_true(overlapped >= 10);
    mt_model_free(&m);
}

/* Two sequences decoding 6 steps: with mt_forward, and overlapped (each step's tokens the picks of
 * the step in flight): the same picks and the same routing. */
static void test_forward_halves(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    int32_t picks[2][2][8] = {{{0}}};
    for (int mode = 0; mode < 2; mode++) {
        mt_kv_cache kv;
        if (mt_kv_cache_init_model(&kv, &m, 16, &err)) fail_msg("%s", err.msg);
        mt_kv_seq seqs[2] = {0}, *sp[2] = {&seqs[0], &seqs[1]};
        for (int s = 0; s < 2; s++)
            if (mt_kv_seq_reserve(&kv, &seqs[s], 32, &err)) fail_msg("%s", err.msg);
        int32_t tokens[2][2] = {{11, 12}}, seq_ids[2] = {0, 1}, rows[2] = {0, 1}, pos[2][2], next[2][2];
        mt_batch b[2];
        for (int i = 0; i < 2; i++)
            b[i] = (mt_batch){.n_tokens = 2, .tokens = tokens[i], .seq_ids = seq_ids, .positions = pos[i], .seqs = sp,
                              .num_seqs = 2, .n_logits = 2, .logit_rows = rows, .next_tokens = next[i]};
        float logits[2 * 512];
        mt_passes q = {0};
        for (int step = 0; step < 7; step++) {
            int at = step % 2;
            pos[at][0] = pos[at][1] = step;
            if (step > 0 && mode == 1) {   /* begun before the previous step ends */
                tokens[at][0] = MT_TOKEN_OF_ROW(0);
                tokens[at][1] = MT_TOKEN_OF_ROW(1);
            }
            if (mt_forward_begin(&m, &kv, &q, &b[at], logits, NULL, &err)) fail_msg("%s", err.msg);
            if (mode == 1 && step == 0) continue;
            if (mt_forward_end(&m, &q, &err)) fail_msg("%s", err.msg);
            const int32_t *done = next[mode == 1 ? 1 - at : at];
            picks[mode][0][step - mode] = done[0];
            picks[mode][1][step - mode] = done[1];
            if (mode == 0) {
                tokens[1 - at][0] = done[0];
                tokens[1 - at][1] = done[1];
            }
        }
        if (mode == 1) {
            if (mt_forward_end(&m, &q, &err)) fail_msg("%s", err.msg);
            picks[1][0][6] = next[0][0];
            picks[1][1][6] = next[0][1];
        }
        assert_int_equal(q.n, 0);
        assert_int_equal(mt_forward_end(&m, &q, &err), -1);   /* none in flight */
        mt_passes_free(&q);
        for (int s = 0; s < 2; s++) mt_kv_seq_release(&kv, &seqs[s]);
        mt_kv_cache_free(&kv);
    }
    assert_memory_equal(picks[0], picks[1], sizeof picks[0][0][0] * 2 * 8);
    mt_model_free(&m);
}

/* What mt_forward_begin refuses: a token standing for a row with no pass in flight, a row past the
 * pass in flight's, a third pass. */
static void test_forward_halves_refuse(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    mt_kv_cache kv;
    if (mt_kv_cache_init_model(&kv, &m, 8, &err)) fail_msg("%s", err.msg);
    mt_kv_seq seq = {0}, *sp[1] = {&seq};
    if (mt_kv_seq_reserve(&kv, &seq, 16, &err)) fail_msg("%s", err.msg);
    int32_t tok = MT_TOKEN_OF_ROW(0), seq_id = 0, pos = 0, row = 0, next = 0;
    mt_batch b = {.n_tokens = 1, .tokens = &tok, .seq_ids = &seq_id, .positions = &pos, .seqs = sp, .num_seqs = 1,
                  .n_logits = 1, .logit_rows = &row, .next_tokens = &next};
    float logits[512];
    mt_passes q = {0};
    assert_int_equal(mt_forward_begin(&m, &kv, &q, &b, logits, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "outside the vocabulary"));
    tok = 5;
    assert_int_equal(mt_forward_begin(&m, &kv, &q, &b, logits, NULL, &err), 0);
    int32_t tok2 = MT_TOKEN_OF_ROW(1), pos2 = 1, next2 = 0;
    mt_batch b2 = b;
    b2.tokens = &tok2;
    b2.positions = &pos2;
    b2.next_tokens = &next2;
    assert_int_equal(mt_forward_begin(&m, &kv, &q, &b2, logits, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "row 1 of the pass in flight"));
    tok2 = MT_TOKEN_OF_ROW(0);
    assert_int_equal(mt_forward_begin(&m, &kv, &q, &b2, logits, NULL, &err), 0);
    assert_int_equal(mt_forward_begin(&m, &kv, &q, &b2, logits, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "two passes"));
    assert_int_equal(mt_forward_end(&m, &q, &err), 0);
    assert_int_equal(mt_forward_end(&m, &q, &err), 0);
    int32_t solo_tok = next, solo_pos = 1, solo_next = -1;
    mt_batch b3 = b;
    b3.tokens = &solo_tok;
    b3.positions = &solo_pos;
    b3.next_tokens = &solo_next;
    assert_int_equal(mt_forward(&m, &kv, &b3, logits, NULL, &err), 0);
    assert_int_equal(solo_next, next2);   /* the overlapped pass's pick is the one of its resolved token */
    mt_passes_free(&q);
    mt_kv_seq_release(&kv, &seq);
    mt_kv_cache_free(&kv);
    mt_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overlap_equals_plain),
        cmocka_unit_test(test_forward_halves),
        cmocka_unit_test(test_forward_halves_refuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

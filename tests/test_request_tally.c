/* The requests of a profile run as summary.json counts them (engine/request_tally.h): a finished
 * request whole, a cancelled one (the run interrupted) only for the prompt tokens it forwarded, and
 * one that forwarded nothing of its own not at all. By hand-made events, then by an engine whose
 * requests are cancelled mid-run, against the tokens its sink saw. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/engine.h"
#include "kernels/kernels.h"
#include "engine/request_tally.h"

#define FIXTURE MT_SOURCE_DIR "/tests/fixtures/models/qwen3_moe"

static mt_engine_event finished(mt_finish_reason reason, int n_prompt, int n_generated, int n_cached, int rows) {
    return (mt_engine_event){.kind = MT_EVENT_FINISHED, .reason = reason, .n_prompt = n_prompt,
                             .n_generated = n_generated, .n_cached = n_cached, .routing_rows = rows};
}

static void test_by_hand(void **state) {
    (void)state;
    mt_request_tally t = {0};
    mt_engine_event tok = {.kind = MT_EVENT_TOKEN, .n_prompt = 9, .n_generated = 1};
    assert_false(mt_request_tally_add(&t, &tok));
    mt_engine_event ev = finished(MT_FINISH_LENGTH, 40, 5, 16, 44); /* whole: 16 of its prompt cached */
    assert_true(mt_request_tally_add(&t, &ev));
    ev = finished(MT_FINISH_CANCELLED, 30, 0, 0, 0); /* still queued */
    assert_false(mt_request_tally_add(&t, &ev));
    ev = finished(MT_FINISH_CANCELLED, 50, 0, 16, 16); /* adopted a cached prefix, forwarded nothing */
    assert_false(mt_request_tally_add(&t, &ev));
    ev = finished(MT_FINISH_CANCELLED, 50, 0, 16, 24); /* 8 of its prompt forwarded after the cached 16 */
    assert_true(mt_request_tally_add(&t, &ev));
    ev = finished(MT_FINISH_CANCELLED, 10, 3, 0, 12); /* in its decode: the whole prompt */
    assert_true(mt_request_tally_add(&t, &ev));
    assert_int_equal(t.requests, 3);
    assert_int_equal(t.prompt_tokens, 40 + 24 + 10);
    assert_int_equal(t.cached, 16 + 16);
    assert_int_equal(t.generated_tokens, 5 + 3);
    assert_int_equal(t.cancelled, 4);
    assert_int_equal(t.cancelled_unforwarded, 2);
}

/* ---- an engine's requests cancelled mid-run ---- */

enum { N = 6, PROMPT = 40 };

typedef struct seen {
    int64_t prompt_rows[N];   /* prompt positions the sink saw forwarded, per request */
    mt_request_tally tally;
    int counted;              /* requests the tally counted */
} seen;

/* Every token of the first MoE layer (layer 0 of the fixture) once. */
static void on_layer(void *ctx, const mt_routing_event *ev) {
    seen *s = ctx;
    if (ev->layer != 0) return;
    for (int i = 0; i < ev->n_tokens; i++)
        if (ev->positions[i] < PROMPT) s->prompt_rows[ev->request_ids[i]]++;
}

static void on_event(void *ctx, const mt_engine_event *ev) {
    seen *s = ctx;
    s->counted += mt_request_tally_add(&s->tally, ev);
}

static void test_cancelled_run(void **state) {
    (void)state;
    mt_model m;
    mt_err err;
    if (mt_model_load(&m, FIXTURE, MT_LOAD_AUTO, &err)) fail_msg("%s", err.msg);
    seen s = {0};
    mt_routing_sink sink = {.on_layer = on_layer, .ctx = &s};
    /* two running, 16 tokens a pass: after 3 passes the first request has forwarded its prompt,
       the second 8 tokens of its own, and four none */
    mt_engine_opts o = {.num_kv_blocks = 64, .max_batch_tokens = 16, .max_running = 2};
    mt_engine *e = mt_engine_new(&m, &o, on_event, &s, &sink, &err);
    assert_non_null(e);
    int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++) prompt[i] = 5 + i;
    for (int i = 0; i < N; i++) {
        mt_request r = {.id = i, .prompt = prompt, .n_prompt = PROMPT, .max_new_tokens = 20, .ignore_eos = true};
        assert_int_equal(mt_engine_submit(e, &r, &err), 0);
    }
    for (int p = 0; p < 3; p++) assert_true(mt_engine_step(e, &err) > 0);
    for (int i = 0; i < N; i++) mt_engine_cancel(e, i);
    while (!mt_engine_idle(e)) assert_true(mt_engine_step(e, &err) >= 0);
    int64_t forwarded = 0, with_rows = 0;
    for (int i = 0; i < N; i++) {
        forwarded += s.prompt_rows[i];
        with_rows += s.prompt_rows[i] > 0;
    }
    assert_int_equal(with_rows, 2);
    assert_int_equal(forwarded, PROMPT + 8);
    assert_int_equal(s.tally.requests, with_rows);
    assert_int_equal(s.counted, with_rows);
    assert_int_equal(s.tally.prompt_tokens, forwarded);
    assert_int_equal(s.tally.cancelled, N);
    assert_int_equal(s.tally.cancelled_unforwarded, N - with_rows);
    mt_engine_free(e);
    mt_model_free(&m);
}

int main(void) {
    mt_kernels_init(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_by_hand),
        cmocka_unit_test(test_cancelled_run),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mt_kernels_shutdown();
    return rc;
}

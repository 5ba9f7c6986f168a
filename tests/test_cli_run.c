/* `moetrace run` end to end: text prompts through the tokenizer and chat template, and every bad
 * input giving a clear error with a non-zero exit. Uses dummy weights (--load-format dummy) over a
 * small config whose vocabulary matches the trained test tokenizer. Also the help texts' promises. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "engine/cuda_backend.h"
#include "test_cli.h"
#include "util/npy.h"

static char g_dir[64];
static const char *g_bin;

static const char CONFIG[] =
    "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 1004, \"hidden_size\": 64, \"num_hidden_layers\": 3,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"max_position_embeddings\": 256,"
    " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"intermediate_size\": 64,"
    " \"mlp_only_layers\": [0], \"eos_token_id\": 2}";

static int setup(void **state) {
    (void)state;
    g_bin = getenv("MOETRACE_BIN");
    if (!g_bin) return 0;
    snprintf(g_dir, sizeof g_dir, "/tmp/moetrace_run_XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/model %s/notok && cp %s/tests/tokenizer/bl/tokenizer.json %s/model/ && "
             "cp %s/tests/chat/templates/qwen3.jinja %s/model/chat_template.jinja",
             g_dir, g_dir, MT_SOURCE_DIR, g_dir, MT_SOURCE_DIR, g_dir);
    if (system(cmd)) return -1;
    const char *dirs[2] = {"model", "notok"};
    for (int i = 0; i < 2; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s/config.json", g_dir, dirs[i]);
        FILE *f = fopen(path, "w");
        if (!f) return -1;
        fputs(CONFIG, f);
        fclose(f);
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    if (!g_bin) return 0;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int64_t routing_rows(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/r.npy", g_dir);
    mt_npy a;
    mt_err err;
    if (mt_npy_read(path, &a, &err)) fail_msg("%s", err.msg);
    assert_int_equal(a.ndim, 3);
    assert_int_equal(a.shape[1], 3);
    assert_int_equal(a.shape[2], 2);
    for (int k = 0; k < 2; k++) assert_int_equal(((int32_t *)a.data)[k], -1); /* layer 0 is dense */
    int64_t rows = a.shape[0];
    mt_npy_free(&a);
    return rows;
}

static void test_prompt_and_chat(void **state) {
    (void)state;
    if (!g_bin) skip();
    char out[8192], args[1024];
    snprintf(args, sizeof args, "tokenize --model %s/model --text 'Hello world, hello moetrace'", g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 0);
    int n_prompt = 1;
    for (char *c = out; *c; c++) n_prompt += *c == ',';

    snprintf(args, sizeof args,
             "run --model %s/model --load-format dummy --prompt 'Hello world, hello moetrace' --max-new-tokens 4 "
             "--ignore-eos --routing-out %s/r.npy", g_dir, g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 0);
    assert_int_equal(routing_rows(), n_prompt + 3);

    snprintf(args, sizeof args,
             "run --model %s/model --load-format dummy --chat --prompt 'Hello world, hello moetrace' "
             "--max-new-tokens 2 --ignore-eos --temperature 0.8 --top-p 0.9 --seed 3 --routing-out %s/r.npy",
             g_dir, g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 0);
    assert_true(routing_rows() > n_prompt + 1); /* the template adds role markers */

    /* --flag=value (argparse's spelling) means --flag value: the same run, the same output */
    char out2[8192];
    snprintf(args, sizeof args,
             "run --model %s/model --load-format dummy --prompt 'a=b, c' --max-new-tokens 3 --ignore-eos --temperature 0.8 "
             "--seed 3", g_dir);
    assert_int_equal(run_moetrace(args, out, sizeof out), 0);
    snprintf(args, sizeof args,
             "run --model=%s/model --load-format=dummy --prompt='a=b, c' --max-new-tokens=3 --ignore-eos "
             "--temperature=0.8 --seed=3", g_dir);
    assert_int_equal(run_moetrace(args, out2, sizeof out2), 0);
    assert_string_equal(out, out2);
}

static mt_npy read_npy(const char *name) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    mt_npy a;
    mt_err err;
    if (mt_npy_read(path, &a, &err)) fail_msg("%s", err.msg);
    return a;
}

/* --logprobs-out: float32 [G]; the first equals log_softmax(logits / T) at the prompt's last position
 * (--logits-out) for the first token, greedy and sampled; all are <= 0. */
static void test_logprobs_out(void **state) {
    (void)state;
    if (!g_bin) skip();
    const char *modes[2] = {"", "--temperature 0.7 --top-k 20 --seed 9"};
    const double temps[2] = {1.0, 0.7};
    for (int mode = 0; mode < 2; mode++) {
        char args[1024], out[8192];
        snprintf(args, sizeof args,
                 "run --model %s/notok --load-format dummy --input-ids 5,17,300,9 --max-new-tokens 5 --ignore-eos %s "
                 "--logits-out %s/l.npy --tokens-out %s/t.npy --logprobs-out %s/p.npy",
                 g_dir, modes[mode], g_dir, g_dir, g_dir);
        if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
        mt_npy l = read_npy("l.npy"), t = read_npy("t.npy"), p = read_npy("p.npy");
        assert_int_equal(p.type, MT_NPY_F32);
        assert_int_equal(p.ndim, 1);
        assert_int_equal(p.shape[0], 5);
        assert_int_equal(t.shape[0], 5);
        const float *lp = p.data, *row = (const float *)l.data + 3 * l.shape[1];
        double sum = 0.0;
        for (int64_t i = 0; i < l.shape[1]; i++) sum += exp(row[i] / temps[mode]);
        double want = row[((int32_t *)t.data)[0]] / temps[mode] - log(sum);
        if (fabs(lp[0] - want) > 1e-5) fail_msg("first log-probability %.9g, from the logits %.9g", lp[0], want);
        for (int i = 0; i < 5; i++) assert_true(lp[i] <= 0.0f);
        mt_npy_free(&l);
        mt_npy_free(&t);
        mt_npy_free(&p);
    }
}

/* The penalties' flags: presence and frequency penalties end the dummy model's repetition; the
 * repetition penalty's first token is the argmax of the last prompt row's logits with the prompt's
 * tokens penalised by hand; min-p 1 at temperature 1 is greedy. */
static void test_penalty_flags(void **state) {
    (void)state;
    if (!g_bin) skip();
    const char *modes[3] = {"", "--presence-penalty 2 --frequency-penalty 2", "--temperature 1 --min-p 1 --seed 4"};
    int32_t got[3][12];
    for (int mode = 0; mode < 3; mode++) {
        char args[1024], out[8192];
        snprintf(args, sizeof args,
                 "run --model %s/notok --load-format dummy --input-ids 5,17,300,9 --max-new-tokens 12 --ignore-eos %s "
                 "--tokens-out %s/t.npy", g_dir, modes[mode], g_dir);
        if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
        mt_npy t = read_npy("t.npy");
        assert_int_equal(t.shape[0], 12);
        memcpy(got[mode], t.data, sizeof got[mode]);
        mt_npy_free(&t);
    }
    int repeats[2] = {0, 0};
    for (int mode = 0; mode < 2; mode++)
        for (int i = 0; i < 12; i++)
            for (int j = 0; j < i; j++) repeats[mode] += got[mode][i] == got[mode][j];
    assert_true(repeats[0] > 0);
    assert_int_equal(repeats[1], 0);
    assert_memory_equal(got[2], got[0], sizeof got[0]);

    char args[1024], out[8192];
    snprintf(args, sizeof args,
             "run --model %s/notok --load-format dummy --input-ids 5,17,300,9 --max-new-tokens 1 --ignore-eos "
             "--repetition-penalty 1.9 --logits-out %s/l.npy --tokens-out %s/t.npy", g_dir, g_dir, g_dir);
    if (run_moetrace(args, out, sizeof out)) fail_msg("%s", out);
    mt_npy l = read_npy("l.npy"), t = read_npy("t.npy");
    const int64_t V = l.shape[1];
    float *row = (float *)l.data + 3 * V;
    const int prompt[4] = {5, 17, 300, 9};
    for (int i = 0; i < 4; i++) row[prompt[i]] = row[prompt[i]] > 0 ? row[prompt[i]] / 1.9f : row[prompt[i]] * 1.9f;
    int best = 0;
    for (int64_t i = 1; i < V; i++)
        if (row[i] > row[best]) best = (int)i;
    assert_int_equal(((int32_t *)t.data)[0], best);
    mt_npy_free(&l);
    mt_npy_free(&t);
}

static void test_bad_inputs(void **state) {
    (void)state;
    if (!g_bin) skip();
    static const struct { const char *args; int status; const char *needle; } cases[] = {
        {"run", 2, "--model"},
        {"run --model %s/model", 2, "--prompt or --input-ids"},
        {"run --model %s/model --input-ids 1,2 --prompt hi", 2, "exactly one"},
        {"run --model %s/notok --load-format dummy --prompt hi", 2, "tokenizer.json"},
        {"run --model %s/notok --load-format dummy --input-ids 1,5000", 1, "5000"},
        {"run --model %s/notok --load-format dummy --input-ids 1,x", 2, "--input-ids"},
        {"run --model %s/notok --load-format dummy --input-ids 1 --max-new-tokens -3", 2, "--max-new-tokens"},
        {"run --model %s/notok --load-format dummy --input-ids 1 --max-new-tokens 300", 1, "context"},
        {"run --model %s/notok --load-format bogus --input-ids 1", 2, "bogus"},
        {"run --model %s/notok --input-ids 1 --device tpu", 2, "tpu"},
        {"run --model %s/notok --input-ids 1 --frobnicate", 2, "--frobnicate"},
        {"run --model %s/notok --input-ids 1", 1, "safetensors"},
        {"run --model %s/nonexistent --input-ids 1", 1, "config.json"},
        /* output paths are checked before the model is loaded (they failed after the run before) */
        {"run --model %s/notok --load-format dummy --input-ids 1 --tokens-out /nonexistent/dir/t.npy", 2,
         "folder '/nonexistent/dir' does not exist"},
        {"run --model %s/notok --load-format dummy --input-ids 1 --routing-out %s", 2, "is a folder"},
        {"run --model %s/notok --load-format dummy --input-ids 1 --logits-out ''", 2, "--logits-out: the path is empty"},
        {"run --model %s/notok --load-format dummy --input-ids 1 --repetition-penalty 0", 2, "--repetition-penalty"},
        {"run --model %s/notok --load-format dummy --input-ids 1 --min-p 1.5", 2, "--min-p"},
        {"run --model %s/notok --load-format dummy --input-ids 1 --presence-penalty -3", 2, "--presence-penalty"},
        {"run --model %s/notok --load-format dummy --input-ids 1 --min-new-tokens x", 2, "--min-new-tokens"},
        {"frobnicate", 2, "unknown command"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[512], out[8192];
        snprintf(args, sizeof args, cases[i].args, g_dir, g_dir);
        int st = run_moetrace(args, out, sizeof out);
        if (st != cases[i].status || !strstr(out, cases[i].needle))
            fail_msg("'%s': exit %d (want %d), output '%s' lacks '%s'", args, st, cases[i].status, out, cases[i].needle);
    }
    char out[8192];
    /* a run refused before its first token prints nothing on stdout (it printed a newline) */
    const char *refused[] = {"--input-ids 1,5000", "--input-ids 1 --max-new-tokens 300"};
    for (size_t i = 0; i < 2; i++) {
        char args[512];
        snprintf(args, sizeof args, "run --model %s/model --load-format dummy %s 2>/dev/null | wc -c", g_dir, refused[i]);
        assert_int_equal(run_moetrace(args, out, sizeof out), 0);
        if (atoi(out) != 0) fail_msg("'%s': %s bytes on stdout", args, out);
    }
    if (mt_cuda_device_count() == 0) {   /* without a GPU, --device cuda is a clear error */
        char args[512];
        snprintf(args, sizeof args, "run --model %s/notok --input-ids 1 --device cuda", g_dir);
        assert_int_equal(run_moetrace(args, out, sizeof out), 1);
        assert_non_null(strstr(out, "cuda"));
    }
    assert_int_equal(run_moetrace("run --help", out, sizeof out), 0);
    assert_non_null(strstr(out, "--routing-out"));
}

/* What the help texts promise: the command list names report's analyses; chat-template names the
 * file it prefers. */
static void test_help_texts(void **state) {
    (void)state;
    if (!g_bin) skip();
    char out[16384];
    assert_int_equal(run_moetrace_stdout("--help", out, sizeof out), 0);
    const char *report = strstr(out, "\n  report ");
    assert_non_null(report);
    const char *end = strchr(report + 1, '\n');
    assert_non_null(end);
    char line[1024];
    snprintf(line, sizeof line, "%.*s", (int)(end - report), report);
    assert_non_null(strstr(line, "--coactivation"));
    assert_non_null(strstr(line, "--token-specialisation"));
    assert_int_equal(run_moetrace_stdout("chat-template --help", out, sizeof out), 0);
    assert_non_null(strstr(out, "chat_template.jinja when present"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_and_chat),
        cmocka_unit_test(test_logprobs_out),
        cmocka_unit_test(test_penalty_flags),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_help_texts),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

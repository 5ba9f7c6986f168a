/* moetrace run: one prompt through the engine; optional logits, routing and token outputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat/chat_template.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/model_open.h"
#include "cli/placement_flags.h"
#include "cli/sampling_flags.h"
#include "engine/generate.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "routing/balancedness.h"
#include "routing/capture.h"
#include "tokenizer/tokenizer.h"
#include "util/npy.h"

static const char RUN_HELP[] =
    "usage: moetrace run --model DIR (--prompt TEXT | --input-ids 1,2,3) [options]\n"
    "\n"
    "  --model DIR            Hugging Face checkpoint folder (config.json + safetensors)\n"
    "  --prompt TEXT          prompt text (needs tokenizer.json in DIR)\n"
    "  --chat                 wrap --prompt as a user message with the model's chat template\n"
    "  --input-ids LIST       prompt as comma-separated token ids\n"
    "  --max-new-tokens N     tokens to generate (default 16)\n"
    "  --ignore-eos           generate exactly --max-new-tokens tokens\n"
    "%s"
    "  --logits-out F.npy     float32 [P, vocab]: logits at every prompt position\n"
    "  --routing-out F.npy    int32 [P+G-1, num_hidden_layers, top_k]: routing of every forwarded token\n"
    "                         (logical expert ids, router order, -1 for dense layers)\n"
    "  --tokens-out F.npy     int32 [G]: the generated ids\n"
    "  --logprobs-out F.npy   float32 [G]: each generated token's log-probability (at the temperature,\n"
    "                         before top-k/top-p; T 1 when greedy)\n"
    "  --device cpu|cuda      compute device (default cpu)\n"
    "  --threads N            CPU threads (default: all online CPUs)\n"
    "  --load-format auto|dummy  dummy: read only config.json, deterministic random weights\n"
    "%s"
    "  --physical-routing-out F.npy  int32 [P+G-1, num_hidden_layers, top_k]: the physical slot each\n"
    "                         choice of --routing-out was dispatched to (needs a placement; -1 dense)\n"
    "\n"
    "The generated text is streamed to stdout when DIR has tokenizer.json; without it the generated\n"
    "ids are printed as a JSON array. Logs go to stderr.\n";

typedef struct run_args {
    const char *model, *prompt, *logits_out, *routing_out, *tokens_out, *logprobs_out, *device, *physical_out;
    mt_placement_flags placement;
    int32_t *ids;
    int n_ids;
    int max_new_tokens, threads;
    bool ignore_eos, chat;
    mt_sampling_params sampling;
    mt_load_format load_format;
} run_args;

static int parse(run_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->max_new_tokens = 16;
    mt_sampling_flags_init(&a->sampling);
    a->device = "cpu";
    mt_placement_flags_init(&a->placement);
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i], *v;
        int pf = mt_placement_flags_parse(&a->placement, argc, argv, &i);
        if (pf == 0) pf = mt_sampling_flags_parse(&a->sampling, argc, argv, &i);
        if (pf < 0) return -1;
        if (pf > 0) continue;
#define VALUE() do { if (!(v = mt_arg_value(argc, argv, &i))) return -1; } while (0)
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf(RUN_HELP, MT_SAMPLING_FLAGS_HELP, MT_PLACEMENT_FLAGS_HELP);
            exit(0);
        } else if (!strcmp(f, "--model")) { VALUE(); a->model = v;
        } else if (!strcmp(f, "--prompt")) { VALUE(); a->prompt = v;
        } else if (!strcmp(f, "--input-ids")) {
            VALUE();
            free(a->ids);
            if (mt_arg_id_list(f, v, &a->ids, &a->n_ids)) return -1;
        } else if (!strcmp(f, "--max-new-tokens")) { VALUE(); if (mt_arg_int(f, v, 0, 1 << 20, &a->max_new_tokens)) return -1;
        } else if (!strcmp(f, "--ignore-eos")) { a->ignore_eos = true;
        } else if (!strcmp(f, "--chat")) { a->chat = true;
        } else if (!strcmp(f, "--logits-out")) { VALUE(); a->logits_out = v;
        } else if (!strcmp(f, "--routing-out")) { VALUE(); a->routing_out = v;
        } else if (!strcmp(f, "--tokens-out")) { VALUE(); a->tokens_out = v;
        } else if (!strcmp(f, "--logprobs-out")) { VALUE(); a->logprobs_out = v;
        } else if (!strcmp(f, "--physical-routing-out")) { VALUE(); a->physical_out = v;
        } else if (!strcmp(f, "--device")) { VALUE(); a->device = v;
        } else if (!strcmp(f, "--threads")) { VALUE(); if (mt_arg_int(f, v, 1, 1024, &a->threads)) return -1;
        } else if (!strcmp(f, "--load-format")) { VALUE(); if (mt_arg_load_format(f, v, &a->load_format)) return -1;
        } else {
            fprintf(stderr, "moetrace: run: unknown option '%s' (see moetrace run --help)\n", f);
            return -1;
        }
#undef VALUE
    }
    if (!a->model) { fprintf(stderr, "moetrace: run: --model DIR is required\n"); return -1; }
    if (!!a->prompt == !!a->ids) { fprintf(stderr, "moetrace: run: give exactly one of --prompt or --input-ids\n"); return -1; }
    if (a->chat && !a->prompt) { fprintf(stderr, "moetrace: run: --chat needs --prompt\n"); return -1; }
    if (a->physical_out && !a->placement.ep_size && !a->placement.location) {
        fprintf(stderr, "moetrace: run: --physical-routing-out needs a placement (--ep-size or --init-expert-location)\n");
        return -1;
    }
    const struct { const char *flag, *path; } outs[] = {
        {"--logits-out", a->logits_out},   {"--routing-out", a->routing_out},
        {"--tokens-out", a->tokens_out},   {"--logprobs-out", a->logprobs_out},
        {"--physical-routing-out", a->physical_out},
    };
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
        if (outs[i].path && mt_arg_out_file(outs[i].flag, outs[i].path)) return -1;
    return mt_cli_check_device(a->device);
}

/* Encodes --prompt, through the chat template with --chat (then without added special tokens,
 * as transformers' apply_chat_template(tokenize=True) does). */
static int encode_prompt(const run_args *a, mt_tokenizer *tok, int32_t **ids, int *n) {
    mt_err err = {{0}};
    char *text = NULL;
    const char *src = a->prompt;
    if (a->chat) {
        mt_chat_template *tpl;
        if (mt_chat_template_load(&tpl, a->model, &err)) {
            fprintf(stderr, "moetrace: --chat: %s\n", err.msg);
            return -1;
        }
        cJSON *msgs = cJSON_CreateArray(), *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", a->prompt);
        cJSON_AddItemToArray(msgs, m);
        int rc = mt_chat_render(tpl, msgs, NULL, 1, NULL, &text, &err);
        cJSON_Delete(msgs);
        mt_chat_template_free(tpl);
        if (rc) {
            fprintf(stderr, "moetrace: --chat: %s\n", err.msg);
            return -1;
        }
        src = text;
    }
    size_t count = 0;
    int rc = mt_tokenizer_encode(tok, src, strlen(src), !a->chat, ids, &count, &err);
    free(text);
    if (rc) {
        fprintf(stderr, "moetrace: --prompt: %s\n", err.msg);
        return -1;
    }
    *n = (int)count;
    if (count == 0) {
        fprintf(stderr, "moetrace: --prompt: the prompt encodes to no tokens\n");
        return -1;
    }
    return 0;
}

/* Streams generated text to stdout as tokens arrive. */
typedef struct text_out {
    mt_detok_stream *stream;
    bool printed; /* some text went to stdout */
} text_out;

static void emit_text(void *ctx, int32_t token) {
    text_out *t = ctx;
    char *text = NULL;
    size_t len = 0;
    mt_err err;
    if (mt_detok_stream_feed(t->stream, &token, 1, &text, &len, &err) == 0) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        t->printed |= len > 0;
    }
    free(text);
}

/* Logs the per-GPU loads of the run under the placement (all MoE layers together) and their
 * balancedness, from the physical slots of every forwarded token. */
static void log_gpu_loads(const mt_placement *p, const mt_routing_table *phys) {
    int M = p->num_gpus, L = phys->num_layers, k = phys->top_k;
    int64_t *load = calloc((size_t)L * M, sizeof *load);
    double *total = calloc((size_t)M, sizeof *total), *row = calloc((size_t)M, sizeof *row);
    if (!load || !total || !row) goto out;
    for (size_t i = 0; i < (size_t)phys->rows * L; i++)
        for (int j = 0; j < k; j++) {
            int32_t s = phys->ids[i * k + j];
            if (s >= 0) load[(i % L) * M + mt_placement_gpu_of(p, s)]++;
        }
    double bal = 0;
    for (int l = 0; l < L; l++) {
        if (p->row_of[l] < 0) continue;
        for (int g = 0; g < M; g++) {
            row[g] = (double)load[(size_t)l * M + g];
            total[g] += row[g];
        }
        bal += mt_balancedness_of(row, M);
    }
    char buf[512];
    int at = 0;
    for (int g = 0; g < M && at < (int)sizeof buf - 32; g++)
        at += snprintf(buf + at, sizeof buf - at, "%s%.0f", g ? " " : "", total[g]);
    if (M > 0 && at >= (int)sizeof buf - 32) snprintf(buf + at, sizeof buf - at, " ...");
    mt_log("per-GPU routed tokens over all MoE layers: [%s]; mean per-layer balancedness %.4f", buf,
           bal / p->num_moe_layers);
out:
    free(load);
    free(total);
    free(row);
}

static void print_ids(const int32_t *ids, int n) {
    putchar('[');
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
    puts("]");
}

int cmd_run(int argc, char **argv) {
    run_args a;
    if (parse(&a, argc, argv)) {
        free(a.ids);
        return 2;
    }
    mt_err err = {{0}};
    char tok_path[4096];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", a.model);
    mt_tokenizer *tok = NULL;
    FILE *probe = fopen(tok_path, "rb");
    if (probe) {
        fclose(probe);
        if (mt_tokenizer_load(&tok, a.model, &err)) {
            fprintf(stderr, "moetrace: %s\n", err.msg);
            free(a.ids);
            return 1;
        }
    } else if (a.prompt) {
        fprintf(stderr, "moetrace: --prompt needs %s; give --input-ids instead\n", tok_path);
        return 2;
    }
    if (a.prompt && encode_prompt(&a, tok, &a.ids, &a.n_ids)) {
        mt_tokenizer_free(tok);
        return 1;
    }
    mt_model model;
    mt_kernels_init(a.threads); /* first: a GPU upload copies the checkpoint on its threads */
    if (mt_cli_open_model(&model, a.model, a.load_format, a.device, &err)) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        mt_kernels_shutdown();
        free(a.ids);
        mt_tokenizer_free(tok);
        return 1;
    }
    const mt_config *c = &model.cfg;
    int rc = 1;
    int32_t *tokens = malloc(((size_t)a.max_new_tokens + 1) * sizeof *tokens);
    float *logits = a.logits_out ? malloc((size_t)a.n_ids * c->vocab_size * sizeof *logits) : NULL;
    float *logprobs = a.logprobs_out ? malloc(((size_t)a.max_new_tokens + 1) * sizeof *logprobs) : NULL;
    mt_routing_table table = {0}, phys = {0};
    mt_routing_fanout fan = {0};
    mt_placement placement = {0};
    int have_plc = mt_placement_flags_load(&a.placement, c, &placement);
    if (have_plc < 0) goto done;
    if (!tokens || (a.logits_out && !logits) || (a.logprobs_out && !logprobs)) {
        fprintf(stderr, "moetrace: out of memory\n");
        goto done;
    }
    if (a.routing_out) {
        if (mt_routing_table_init(&table, c->num_hidden_layers, c->top_k, a.n_ids + a.max_new_tokens)) {
            fprintf(stderr, "moetrace: out of memory\n");
            goto done;
        }
        mt_routing_fanout_add(&fan, mt_routing_table_sink(&table));
    }
    if (have_plc) {
        if (mt_routing_table_init(&phys, c->num_hidden_layers, c->top_k, a.n_ids + a.max_new_tokens)) {
            fprintf(stderr, "moetrace: out of memory\n");
            goto done;
        }
        mt_routing_fanout_add(&fan, mt_routing_table_physical_sink(&phys));
    }
    mt_routing_sink sink = mt_routing_fanout_sink(&fan);
    text_out text = {.stream = tok ? mt_detok_stream_new(tok, 1) : NULL};
    mt_generate_opts opts = {.max_new_tokens = a.max_new_tokens, .ignore_eos = a.ignore_eos, .sampling = a.sampling,
                             .prompt_logits = logits, .out_logprobs = logprobs, .sink = fan.n ? &sink : NULL,
                             .placement = have_plc ? &placement : NULL,
                             .on_token = text.stream ? emit_text : NULL, .token_ctx = &text};
    int n_gen = 0;
    int gen_rc = mt_generate(&model, a.ids, a.n_ids, &opts, tokens, &n_gen, &err);
    if (text.stream) {
        char *rest = NULL;
        size_t len = 0;
        mt_err ferr;
        if (mt_detok_stream_finish(text.stream, &rest, &len, &ferr) == 0) fwrite(rest, 1, len, stdout);
        free(rest);
        /* a request refused before its first token (an id outside the vocabulary, a prompt over the
         * context) prints nothing on stdout */
        if (gen_rc == 0 || text.printed || len > 0) putchar('\n');
        mt_detok_stream_free(text.stream);
    }
    if (gen_rc) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        goto done;
    }
    if (a.logits_out) {
        int64_t shape[2] = {a.n_ids, c->vocab_size};
        if (mt_npy_write(a.logits_out, MT_NPY_F32, logits, 2, shape, &err)) goto write_failed;
    }
    if (a.routing_out) {
        int64_t shape[3] = {table.rows, c->num_hidden_layers, c->top_k};
        if (mt_npy_write(a.routing_out, MT_NPY_I32, table.ids, 3, shape, &err)) goto write_failed;
    }
    if (a.physical_out) {
        int64_t shape[3] = {phys.rows, c->num_hidden_layers, c->top_k};
        if (mt_npy_write(a.physical_out, MT_NPY_I32, phys.ids, 3, shape, &err)) goto write_failed;
    }
    if (have_plc) log_gpu_loads(&placement, &phys);
    if (a.tokens_out) {
        int64_t shape[1] = {n_gen};
        if (mt_npy_write(a.tokens_out, MT_NPY_I32, tokens, 1, shape, &err)) goto write_failed;
    }
    if (a.logprobs_out) {
        int64_t shape[1] = {n_gen};
        if (mt_npy_write(a.logprobs_out, MT_NPY_F32, logprobs, 1, shape, &err)) goto write_failed;
    }
    if (!tok) print_ids(tokens, n_gen);
    rc = 0;
    goto done;
write_failed:
    fprintf(stderr, "moetrace: %s\n", err.msg);
done:
    mt_routing_table_free(&table);
    mt_routing_table_free(&phys);
    mt_placement_free(&placement);
    free(tokens);
    free(logits);
    free(logprobs);
    free(a.ids);
    mt_kernels_shutdown();
    mt_model_free(&model);
    mt_tokenizer_free(tok);
    return rc;
}

/* moetrace serve: the HTTP server (SPEC §5). Parses flags, starts listening (so /health answers
 * 503 while loading), loads the model, tokenizer, chat template and recorder, starts the engine
 * thread, serves until SIGTERM or SIGINT, then drains: no new requests, in-flight ones finish
 * (or are cancelled after --drain-timeout, or at a second signal, and still answered), an active
 * recording is dumped, exit status 0. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "chat/chat_template.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/model_open.h"
#include "cli/placement_flags.h"
#include "engine/cuda_backend.h"
#include "engine/kv_cache.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "routing/recorder.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"

static const char SERVE_HELP[] =
    "usage: moetrace serve --model DIR [options]\n"
    "\n"
    "Serves DIR over HTTP: SGLang's /generate and recorder endpoints, OpenAI's /v1/models,\n"
    "/v1/completions and /v1/chat/completions, /health, /metrics, /dashboard (docs/API.md).\n"
    "\n"
    "  --model DIR                 Hugging Face checkpoint folder (tokenizer.json for text, optional)\n"
    "  --host HOST                 listening address: numeric IPv4/IPv6, or a host name (its first\n"
    "                              address that can be listened on; default 127.0.0.1)\n"
    "  --port N                    listening port (default 30000; 0 = any free port)\n"
    "  --api-key KEY               require 'Authorization: Bearer KEY' on every path but /health\n"
    "  --served-model-name NAME    model name in the API (default: the folder's name; dumps keep the\n"
    "                              folder's name)\n"
    "  --threads N                 CPU threads of the forward pass (default: all online CPUs)\n"
    "  --load-format auto|dummy    dummy: config.json only, deterministic random weights\n"
    "  --max-running-requests N    sequences batched together at most (default 64)\n"
    "  --max-scored-tokens N       scored prompt positions one forward pass takes (logprob_start_len, echo;\n"
    "                              each a row of logits: vocab_size floats; default 4096 on cuda, 256 on cpu)\n"
    "  --max-batch-tokens N        token budget of a forward pass, chunked prefill (default 512 on\n"
    "                              cpu, 8192 on cuda)\n"
    "  --kv-blocks N               KV cache size in blocks of 16 positions (default: room for every\n"
    "                              running request at full context, within --kv-cache-fraction)\n"
    "  --kv-cache-fraction F       share of the memory free once the weights are loaded and a pass's\n"
    "                              scratch is reserved that the KV cache may take: the device's on cuda\n"
    "                              (default 0.9), the host's on cpu (default 0.3)\n"
    "  --disable-radix-cache       no prefix caching\n"
    "  --disable-overlap-schedule  no overlapped decode on a device (each step's tokens are read before the\n"
    "                              next step begins)\n"
    "  --max-connections N         simultaneous HTTP connections (default 1024); the first request of a\n"
    "                              connection accepted beyond them is answered 503\n"
    "  --header-timeout S          seconds a new connection has to send its first request's headers\n"
    "                              (default 10); slower ones are closed\n"
    "  --body-timeout S            seconds a request has to send its whole body once its headers came\n"
    "                              (default 30); slower ones are closed\n"
    "  --max-request-bytes N       request body cap, 1024 or more (default 16777216); larger bodies\n"
    "                              get 413\n"
    "  --drain-timeout S           on SIGTERM, seconds to let requests finish before cancelling (default 30)\n"
    "  --device cpu|cuda           compute device (default cpu)\n"
    "  --reasoning-parser NAME     qwen3 or deepseek-r1: chat completions give the model's reasoning\n"
    "                              (<think>...</think>) as message.reasoning_content (default: none)\n"
    "  --tool-call-parser NAME     qwen25 (also qwen, qwen3) or hermes: chat completions of requests\n"
    "                              with tools give <tool_call> blocks as message.tool_calls (default: none)\n"
    "\n"
    "Expert placement (balancedness is per GPU under a placement; without one, of 8 contiguous blocks\n"
    "of experts, or 1 when 8 does not divide their number):\n"
    "%s"
    "  --enable-eplb               rebalance the placement by itself: EPLB on the recorder's window (it\n"
    "                              records from start-up), as POST /eplb_rebalance does; needs a placement\n"
    "                              (--ep-size and/or --init-expert-location)\n"
    "  --eplb-rebalance-num-iterations N   forward passes between two rebalances (default 1000)\n"
    "  --eplb-min-rebalancing-utilization-threshold F   rebalance only when the mean over the window's\n"
    "                              passes of each pass's per-GPU balancedness (0..1) is at or below F\n"
    "                              (default 1.0: always)\n"
    "\n"
    "Expert distribution recorder (SPEC §4; environment variables in brackets):\n"
    "  --expert-distribution-recorder-mode stat|per_pass|per_token   (default stat) [MOETRACE_EXPERT_RECORDER_MODE]\n"
    "  --expert-distribution-recorder-buffer-size N   forward passes kept (default 1000; -1 = unbounded)\n"
    "  --expert-distribution-recorder-max-tokens N    per_token rows kept (default 65536)\n"
    "  --expert-dump-dir DIR                          [MOETRACE_EXPERT_DUMP_DIR] (default /tmp; the flag's\n"
    "                                                 folder is created when missing)\n"
    "  --expert-dump-visualize                        heatmap PNG beside each dump [MOETRACE_EXPERT_DUMP_VISUALIZE=1]\n"
    "  --enable-return-routed-experts                 let requests ask for their routing\n"
    "  --enable-expert-distribution-metrics           record from start-up; balancedness in /metrics\n"
    "  --domain-field F                               requests label their domain with the body's\n"
    "                                                 top-level key F (a string or an integer); each\n"
    "                                                 recorder dump then also writes the expert use of\n"
    "                                                 every domain into DIR/domain_usage_<ms>/\n";

typedef struct serve_args {
    const char *model, *host, *api_key, *served_name, *dump_dir, *mode, *device, *domain_field;
    int port, threads, max_running, max_batch_tokens, kv_blocks, max_connections, buffer_size, max_scored;
    int header_timeout, body_timeout, eplb_every;
    double eplb_threshold;
    mt_placement_flags placement;
    long max_body, rec_max_tokens;
    float kv_fraction, drain_timeout;
    bool no_prefix_cache, no_overlap, visualize, return_routing, metrics_recording, buffer_given, eplb, eplb_every_given,
        eplb_threshold_given;
    mt_load_format load_format;
    mt_reasoning_parser reasoning_parser;
    mt_tool_parser tool_parser;
} serve_args;

static int parse(serve_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->host = "127.0.0.1";
    a->port = 30000;
    a->max_running = 64;
    a->max_batch_tokens = 0;   /* 0: the device's default */
    a->kv_fraction = 0.0f;     /* 0: the device's default */
    a->max_connections = 1024;
    a->header_timeout = 10;
    a->body_timeout = 30;
    a->max_body = 16L << 20;
    a->drain_timeout = 30;
    a->rec_max_tokens = MT_REC_DEFAULT_MAX_TOKENS;
    a->device = "cpu";
    a->eplb_every = 1000;
    a->eplb_threshold = 1.0;
    mt_placement_flags_init(&a->placement);
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i], *v;
        int n, pf = mt_placement_flags_parse(&a->placement, argc, argv, &i);
        if (pf < 0) return -1;
        if (pf > 0) continue;
#define VALUE() do { if (!(v = mt_arg_value(argc, argv, &i))) return -1; } while (0)
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { printf(SERVE_HELP, MT_PLACEMENT_FLAGS_HELP); exit(0);
        } else if (!strcmp(f, "--model")) { VALUE(); a->model = v;
        } else if (!strcmp(f, "--host")) { VALUE(); a->host = v;
        } else if (!strcmp(f, "--port")) { VALUE(); if (mt_arg_int(f, v, 0, 65535, &a->port)) return -1;
        } else if (!strcmp(f, "--api-key")) { VALUE(); a->api_key = v;
        } else if (!strcmp(f, "--served-model-name")) { VALUE(); a->served_name = v;
        } else if (!strcmp(f, "--threads")) { VALUE(); if (mt_arg_int(f, v, 1, 1024, &a->threads)) return -1;
        } else if (!strcmp(f, "--load-format")) { VALUE(); if (mt_arg_load_format(f, v, &a->load_format)) return -1;
        } else if (!strcmp(f, "--max-running-requests")) { VALUE(); if (mt_arg_int(f, v, 1, 4096, &a->max_running)) return -1;
        } else if (!strcmp(f, "--max-scored-tokens")) { VALUE(); if (mt_arg_int(f, v, 1, 1 << 16, &a->max_scored)) return -1;
        } else if (!strcmp(f, "--max-batch-tokens")) { VALUE(); if (mt_arg_int(f, v, 1, 1 << 20, &a->max_batch_tokens)) return -1;
        } else if (!strcmp(f, "--kv-blocks")) { VALUE(); if (mt_arg_int(f, v, 1, 1 << 28, &a->kv_blocks)) return -1;
        } else if (!strcmp(f, "--kv-cache-fraction")) { VALUE(); if (mt_arg_float(f, v, 0.001, 0.98, &a->kv_fraction)) return -1;
        } else if (!strcmp(f, "--disable-radix-cache")) { a->no_prefix_cache = true;
        } else if (!strcmp(f, "--disable-overlap-schedule")) { a->no_overlap = true;
        } else if (!strcmp(f, "--max-connections")) { VALUE(); if (mt_arg_int(f, v, 1, 1 << 16, &a->max_connections)) return -1;
        } else if (!strcmp(f, "--header-timeout")) { VALUE(); if (mt_arg_int(f, v, 1, 3600, &a->header_timeout)) return -1;
        } else if (!strcmp(f, "--body-timeout")) { VALUE(); if (mt_arg_int(f, v, 1, 3600, &a->body_timeout)) return -1;
        } else if (!strcmp(f, "--max-request-bytes")) { VALUE(); if (mt_arg_int(f, v, 1024, 1 << 30, &n)) return -1; a->max_body = n;
        } else if (!strcmp(f, "--drain-timeout")) { VALUE(); if (mt_arg_float(f, v, 0, 86400, &a->drain_timeout)) return -1;
        } else if (!strcmp(f, "--device")) { VALUE(); a->device = v;
        } else if (!strcmp(f, "--expert-distribution-recorder-mode")) { VALUE(); a->mode = v;
        } else if (!strcmp(f, "--expert-distribution-recorder-buffer-size")) {
            VALUE();
            if (mt_arg_int(f, v, -1, 1 << 30, &a->buffer_size)) return -1;
            if (a->buffer_size == 0) { fprintf(stderr, "moetrace: %s: 0 passes; give N > 0 or -1\n", f); return -1; }
            a->buffer_given = true;
        } else if (!strcmp(f, "--expert-distribution-recorder-max-tokens")) { VALUE(); if (mt_arg_int(f, v, 1, 1 << 30, &n)) return -1; a->rec_max_tokens = n;
        } else if (!strcmp(f, "--expert-dump-dir")) { VALUE(); a->dump_dir = v;
        } else if (!strcmp(f, "--expert-dump-visualize")) { a->visualize = true;
        } else if (!strcmp(f, "--enable-return-routed-experts")) { a->return_routing = true;
        } else if (!strcmp(f, "--enable-expert-distribution-metrics")) { a->metrics_recording = true;
        } else if (!strcmp(f, "--enable-eplb")) { a->eplb = true;
        } else if (!strcmp(f, "--eplb-rebalance-num-iterations")) {
            VALUE();
            if (mt_arg_int(f, v, 1, 1 << 30, &a->eplb_every)) return -1;
            a->eplb_every_given = true;
        } else if (!strcmp(f, "--eplb-min-rebalancing-utilization-threshold")) {
            VALUE();
            if (mt_arg_double(f, v, 0, 1, &a->eplb_threshold)) return -1;
            a->eplb_threshold_given = true;
        } else if (!strcmp(f, "--reasoning-parser")) {
            VALUE();
            if (mt_reasoning_parser_from_name(v, &a->reasoning_parser)) {
                fprintf(stderr, "moetrace: serve: --reasoning-parser: unknown parser '%s' (accepted: %s)\n", v,
                        MT_REASONING_PARSER_NAMES);
                return -1;
            }
        } else if (!strcmp(f, "--tool-call-parser")) {
            VALUE();
            if (mt_tool_parser_from_name(v, &a->tool_parser)) {
                fprintf(stderr, "moetrace: serve: --tool-call-parser: unknown parser '%s' (accepted: %s)\n", v,
                        MT_TOOL_PARSER_NAMES);
                return -1;
            }
        } else if (!strcmp(f, "--domain-field")) {
            VALUE();
            if (!v[0]) { fprintf(stderr, "moetrace: serve: --domain-field: empty\n"); return -1; }
            a->domain_field = v;
        } else {
            fprintf(stderr, "moetrace: serve: unknown option '%s' (see moetrace serve --help)\n", f);
            return -1;
        }
#undef VALUE
    }
    if (!a->model) { fprintf(stderr, "moetrace: serve: --model DIR is required\n"); return -1; }
    if (a->eplb && !a->placement.ep_size && !a->placement.location) {
        fprintf(stderr, "moetrace: serve: --enable-eplb needs an expert placement to rebalance: --ep-size M and/or "
                        "--init-expert-location FILE\n");
        return -1;
    }
    if (!a->eplb && (a->eplb_every_given || a->eplb_threshold_given)) {
        fprintf(stderr, "moetrace: serve: %s is given without --enable-eplb\n",
                a->eplb_every_given ? "--eplb-rebalance-num-iterations" : "--eplb-min-rebalancing-utilization-threshold");
        return -1;
    }
    if (mt_cli_check_device(a->device)) return -1;
    if (!a->max_batch_tokens) a->max_batch_tokens = mt_cli_default_batch_tokens(a->device);
    if (!a->kv_fraction) a->kv_fraction = strcmp(a->device, "cuda") ? 0.3f : 0.9f;
    return 0;
}

/* Environment first, flags over it. */
static int recorder_options(const serve_args *a, mt_recorder_opts *ro) {
    mt_err err;
    mt_recorder_opts_default(ro);
    if (mt_recorder_opts_from_env(ro, &err)) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        return -1;
    }
    if (a->mode && mt_recorder_parse_mode(a->mode, &ro->mode, &err)) {
        fprintf(stderr, "moetrace: --expert-distribution-recorder-mode: %s\n", err.msg);
        return -1;
    }
    if (a->dump_dir) {   /* created when missing, as profile's --out */
        if (mt_arg_out_dir("--expert-dump-dir", a->dump_dir)) return -1;
        ro->dump_dir = a->dump_dir;
    }
    if (a->buffer_given) ro->buffer_size = a->buffer_size;
    ro->max_tokens = a->rec_max_tokens;
    return 0;
}

/* The KV cache the engine made, and where its size came from (stderr). */
static void log_kv_cache(const serve_args *a, const mt_model *m, mt_engine_loop *loop) {
    mt_engine_loop_stats st;
    mt_engine_loop_get_stats(loop, &st);
    const mt_engine_stats *es = &st.engine;
    const char *where = m->device ? "device" : "host";
    double gib = 1073741824.0;
    if (!es->kv_memory_free) {
        mt_log("KV cache: %d blocks of %d positions, %.2f GiB of %s memory (--kv-blocks)", es->kv_blocks_total,
               MT_KV_BLOCK, es->kv_bytes / gib, where);
        return;
    }
    char scratch[96] = "";
    if (m->device) snprintf(scratch, sizeof scratch, " and the pass scratch, %.2f GiB", mt_cuda_scratch_bytes(m) / gib);
    mt_log("KV cache: %d blocks of %d positions, %.2f GiB of %s memory (%g of the %.2f GiB left free by the weights%s)%s",
           es->kv_blocks_total, MT_KV_BLOCK, es->kv_bytes / gib, where, a->kv_fraction, es->kv_memory_free / gib,
           scratch, es->kv_capped ? "; fewer than a full context for every running request "
                                    "(--kv-cache-fraction, --max-running-requests)" : "");
}

/* Text support: tokenizer.json (optional) and the chat template (optional). */
static int load_text_tools(const char *dir, mt_tokenizer **tok, mt_chat_template **tpl) {
    char path[4096];
    mt_err err;
    *tok = NULL;
    *tpl = NULL;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (access(path, R_OK) != 0) {
        mt_log("%s not found: only token ids are accepted (/generate with input_ids)", path);
        return 0;
    }
    if (mt_tokenizer_load(tok, dir, &err)) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        return -1;
    }
    if (mt_chat_template_load(tpl, dir, &err)) {
        mt_log("no chat template (%s): /v1/chat/completions will answer 400", err.msg);
        *tpl = NULL;
    }
    return 0;
}

static double seconds_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* The drain's log line when it stops waiting (why: "drain timeout", "second signal"). */
static void log_cancelling(const char *why, int pending, mt_server *server) {
    mt_log("%s: cancelling %d running request(s); %d answer(s) still being sent, %d request body(ies) still "
           "uploading (refused if they come: the server is draining)", why, pending,
           mt_server_answers_in_flight(server), mt_server_uploads_in_flight(server));
}

/* Waits until every job finished and every answer was sent, up to timeout_s; a second signal ends
 * the wait. A request whose body is still uploading is not waited for: once it came it would only
 * be refused (503), and a client stalled mid-upload would hold the exit for the whole timeout. Nor
 * are jobs while generation is paused (/pause_generation): they cannot finish, so they are cancelled
 * at once (answered as aborted, with what they generated) and those held back are refused.
 * Returns the number of jobs left unfinished (to be cancelled). */
static int drain(mt_server *server, mt_engine_loop *loop, double timeout_s, const sigset_t *signals) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int pending;
    while ((pending = mt_engine_loop_pending(loop)) > 0 || mt_server_answers_in_flight(server) > 0) {
        if (pending > 0 && mt_engine_loop_paused(loop)) {
            log_cancelling("generation paused", pending, server);
            return pending;
        }
        if (seconds_since(&t0) >= timeout_s) {
            log_cancelling("drain timeout", pending, server);
            return pending;
        }
        struct timespec step = {0, 50 * 1000 * 1000};
        if (sigtimedwait(signals, NULL, &step) > 0) {
            log_cancelling("second signal", pending, server);
            return pending;
        }
    }
    return 0;
}

/* Seconds the handlers of cancelled requests get to send their answers before the daemon stops. */
#define ANSWER_GRACE_S 2.0

/* After a cancellation the handlers still answer their requests (finish_reason abort, the tokens
 * so far): waits until no answer is in flight, at most ANSWER_GRACE_S (a client that does not read
 * its answer must not hold the exit), or until a further signal. Stopping the daemon at once would
 * close those connections with no answer. */
static void wait_for_answers(mt_server *server, const sigset_t *signals) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (mt_server_answers_in_flight(server) > 0 && seconds_since(&t0) < ANSWER_GRACE_S) {
        struct timespec step = {0, 10 * 1000 * 1000};
        if (sigtimedwait(signals, NULL, &step) > 0) return;
    }
}

int cmd_serve(int argc, char **argv) {
    serve_args a;
    if (parse(&a, argc, argv)) return 2;
    mt_recorder_opts ro;
    if (recorder_options(&a, &ro)) return 2;
    /* SPEC §4: =1 turns it on; 0 leaves it off; anything else (true, yes, empty) is an error naming
       the variable, as the recorder's variables are, rather than a run without the heatmaps */
    const char *viz_env = getenv("MOETRACE_EXPERT_DUMP_VISUALIZE");
    if (viz_env && strcmp(viz_env, "1") && strcmp(viz_env, "0")) {
        fprintf(stderr, "moetrace: MOETRACE_EXPERT_DUMP_VISUALIZE='%s': expected 1 (a heatmap beside every dump) or 0\n",
                viz_env);
        return 2;
    }
    bool visualize = a.visualize || (viz_env && !strcmp(viz_env, "1"));

    /* Every thread started from here on inherits the blocked signals; the main thread waits for them. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (a.api_key && !*a.api_key) /* as SGLang reads it; said, since an unset $KEY leads here */
        fprintf(stderr, "moetrace: warning: --api-key is empty: no endpoint asks for a key\n");
    mt_err err = {{0}};
    mt_server_opts so = {.host = a.host, .port = a.port, .api_key = a.api_key, .max_connections = a.max_connections,
                         .max_body_bytes = (size_t)a.max_body, .header_timeout_s = a.header_timeout,
                         .body_timeout_s = a.body_timeout};
    mt_server *server = mt_server_start(&so, &err);
    if (!server) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        return 1;
    }
    const char *address = mt_server_address(server);
    if (strcmp(address, a.host))
        mt_log("listening on http://%s:%d (%s; loading %s)", a.host, mt_server_port(server), address, a.model);
    else
        mt_log("listening on http://%s:%d (loading %s)", a.host, mt_server_port(server), a.model);

    int rc = 1;
    mt_model model;
    mt_placement placement = {0};
    bool model_loaded = false, kernels_started = false;
    mt_tokenizer *tok = NULL;
    mt_chat_template *tpl = NULL;
    mt_recorder *recorder = NULL;
    mt_domain_usage *domains = NULL;
    mt_engine_loop *loop = NULL;
    mt_kernels_init(a.threads); /* first: a GPU upload copies the checkpoint on its threads */
    kernels_started = true;
    if (mt_cli_open_model(&model, a.model, a.load_format, a.device, &err)) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        goto done;
    }
    model_loaded = true;
    if (load_text_tools(a.model, &tok, &tpl)) goto done;
    const mt_config *c = &model.cfg;
    int have_placement = mt_placement_flags_load(&a.placement, c, &placement);
    if (have_placement < 0) goto done;
    int ep = have_placement ? placement.num_gpus : (c->num_experts % 8 == 0 ? 8 : 1);
    ro.ep_size = ep;
    ro.placement = have_placement ? &placement : NULL;
    /* the API's name; dumps name the checkpoint folder (SPEC §4), whatever the API calls it */
    const char *name = a.served_name ? a.served_name : model.name;
    if (!(recorder = mt_recorder_new(c, model.name, &ro, &err))) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        goto done;
    }
    if (a.domain_field && !(domains = mt_domain_usage_new(c, model.name, &ro, a.domain_field, NULL, &err))) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        goto done;
    }
    if (domains) mt_recorder_set_group_label(recorder, mt_domain_usage_label, domains);
    if (a.metrics_recording) {
        mt_recorder_start(recorder);
        if (domains) mt_domain_usage_start(domains);
    }
    mt_err no_twin; /* twins for the first take between two passes (out of memory: it makes its own) */
    mt_recorder_prepare_twin(recorder, &no_twin);
    if (domains) mt_domain_usage_ready_take(domains, &no_twin);
    mt_engine_opts eo = {.num_kv_blocks = a.kv_blocks, .kv_memory_fraction = a.kv_fraction,
                         .max_batch_tokens = a.max_batch_tokens,
                         .max_running = a.max_running, .prefix_cache = !a.no_prefix_cache,
                         .overlap = a.no_overlap ? -1 : 0,
                         .placement = ro.placement,
                         /* scored prompts (logprob_start_len, echo): on the device a pass takes up to a
                          * 4,096-token chunk of them by default (4.1x the prefill's time at 256, 1.45x at
                          * 4,096: bench_scoring, docs/PERF.md), its logits 2.5 GB for Qwen3's vocabulary */
                         .max_scored_rows = a.max_scored ? a.max_scored : strcmp(a.device, "cuda") ? 0 : 4096};
    mt_routing_fanout fan = {0};
    mt_routing_fanout_add(&fan, mt_recorder_sink(recorder));
    if (domains) mt_routing_fanout_add(&fan, mt_domain_usage_sink(domains));
    mt_routing_sink sink = mt_routing_fanout_sink(&fan);
    if (!(loop = mt_engine_loop_start(&model, &eo, &sink, mt_server_metrics_of(server), &err))) {
        fprintf(stderr, "moetrace: %s\n", err.msg);
        goto done;
    }
    log_kv_cache(&a, &model, loop);
    mt_server_backend b = {.model = &model, .model_name = name, .tokenizer = tok, .chat_template = tpl,
                           .recorder = recorder, .loop = loop, .enable_return_routing = a.return_routing,
                           .dump_visualize = visualize, .ep_size = ep, .placement = ro.placement,
                           .max_running = a.max_running, .domain_field = a.domain_field, .domains = domains,
                           .eplb_every = a.eplb ? a.eplb_every : 0, .eplb_threshold = a.eplb_threshold,
                           .reasoning_parser = a.reasoning_parser, .tool_parser = a.tool_parser};
    mt_server_set_backend(server, &b);
    const char *rp = mt_reasoning_parser_name(a.reasoning_parser), *tp = mt_tool_parser_name(a.tool_parser);
    mt_log("ready: %s (%d layers, %d experts, top-%d), recorder %s%s, routing return %s%s%s%s%s", name,
           c->num_hidden_layers, c->num_experts, c->top_k, mt_recorder_mode_name(ro.mode),
           a.metrics_recording || a.eplb ? " recording" : "", a.return_routing ? "enabled" : "disabled",
           rp ? ", reasoning parser " : "", rp ? rp : "", tp ? ", tool-call parser " : "", tp ? tp : "");

    int sig = 0;
    while (sigwait(&signals, &sig) != 0) {}
    mt_log("%s: draining (no new requests; %g s for those in flight)", sig == SIGINT ? "SIGINT" : "SIGTERM",
           a.drain_timeout);
    mt_server_set_draining(server);
    int cancelled = drain(server, loop, a.drain_timeout, &signals);
    mt_engine_loop_stop(loop); /* cancels what is left; no forward pass runs after this */
    if (cancelled > 0) wait_for_answers(server, &signals);
    int uploads = mt_server_uploads_in_flight(server);
    if (uploads > 0) mt_log("closing %d connection(s) whose request body had not come", uploads);
    mt_recorder_counts left;
    mt_recorder_get_counts(recorder, &left);
    if (mt_recorder_active(recorder) && (left.num_forward_passes > 0 || left.tokens_recorded > 0)) {
        char path[4096];
        if (mt_server_dump_recorder(server, path, sizeof path, &err)) fprintf(stderr, "moetrace: %s\n", err.msg);
    } else if (mt_recorder_active(recorder)) {
        mt_log("expert distribution recorder: nothing recorded since the last dump or switch, so no dump at exit");
    }
    rc = 0;
done:
    mt_engine_loop_stop(loop);
    mt_server_stop(server);
    mt_engine_loop_free(loop);
    mt_recorder_free(recorder);
    mt_domain_usage_free(domains);
    mt_chat_template_free(tpl);
    mt_tokenizer_free(tok);
    if (kernels_started) mt_kernels_shutdown();
    mt_placement_free(&placement);
    if (model_loaded) mt_model_free(&model);
    if (rc == 0) mt_log("stopped");
    return rc;
}

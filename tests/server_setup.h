/* Group setup and teardown of a server test (include after cmocka.h): g_bin is $MOETRACE_BIN; when it
 * is unset nothing is set up (the tests skip), otherwise libcurl is initialised and the scratch
 * folder g_dir of tmp_dir.h is made, and removed with its content by server_teardown. */
#ifndef MT_TESTS_SERVER_SETUP_H
#define MT_TESTS_SERVER_SETUP_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "support/api_util.h"
#include "support/http_client.h"
#include "support/server_proc.h"
#include "tmp_dir.h"

static const char *g_bin;

/* Called by the test's group setup with the name prefix of its scratch folder; 0 on success. */
static inline int server_setup(const char *tmp_prefix) {
    g_bin = getenv("MOETRACE_BIN");
    if (!g_bin) return 0;
    mt_http_global_init();
    return tmp_dir_make(tmp_prefix);
}

/* A cmocka group teardown. */
static inline int server_teardown(void **state) {
    (void)state;
    return g_bin ? tmp_dir_remove() : 0;
}

/* The small text model of most server tests: 3 layers (the first dense), 8 experts, top-2, context
 * 256, the trained test tokenizer's 1004 ids. */
static const char SERVER_TEXT_CONFIG[] =
    "{\"model_type\": \"qwen3_moe\", \"vocab_size\": 1004, \"hidden_size\": 64, \"num_hidden_layers\": 3,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"max_position_embeddings\": 256,"
    " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32, \"intermediate_size\": 64,"
    " \"mlp_only_layers\": [0], \"eos_token_id\": 2}";

/* Makes g_dir/model: config (config.json text), the trained test tokenizer (tests/tokenizer/bl) and
 * the Qwen3 chat template, for a server with --load-format dummy. 0 on success. */
static inline int server_text_model(const char *config) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/model && cp %s/tests/tokenizer/bl/tokenizer.json %s/model/ && "
             "cp %s/tests/chat/templates/qwen3.jinja %s/model/chat_template.jinja",
             g_dir, MT_SOURCE_DIR, g_dir, MT_SOURCE_DIR, g_dir);
    if (system(cmd)) return -1;
    write_text("model/config.json", config);
    return 0;
}

/* Skips the test when no server was set up. */
#define SKIP_WITHOUT_SERVER()                                                                                         \
    do {                                                                                                              \
        if (!g_bin) skip();                                                                                           \
    } while (0)

/* Calls path on c (GET when body is NULL, else POST) and fails the test unless the answer has status
 * want and is JSON; returns it. */
static inline cJSON *server_call(mt_http_client *c, const char *path, const char *body, long want) {
    long status;
    cJSON *j = mt_api_json(c, path, body, &status);
    if (status != want) {
        char *text = j ? cJSON_PrintUnformatted(j) : NULL;
        fail_msg("%s: status %ld (want %ld): %s", path, status, want, text ? text : "(not JSON)");
    }
    assert_non_null(j);
    return j;
}

/* A group teardown's work for a test that started srv and made client c: both go (SIGTERM, the
 * server must exit 0), then the scratch folder. */
static inline int server_stop_and_teardown(void **state, mt_test_server *srv, mt_http_client *c) {
    if (!g_bin) return 0;
    mt_http_client_free(c);
    int st = srv->pid > 0 ? mt_test_server_stop(srv, SIGTERM, 60) : 0;
    return server_teardown(state) == 0 && st == 0 ? 0 : -1;
}

#endif

/* Fuzz target: config.json (model/config.c mt_config_parse). A config that parses must satisfy
 * everything the model loader and the forward pass take for granted. */
#include <math.h>

#include "fuzz_util.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_cstr(data, size);
    mt_config c;
    mt_err err = {{0}};
    if (mt_config_parse(&c, text, &err) == 0) {
        FUZZ_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_attention_heads > 0 && c.num_key_value_heads > 0);
        FUZZ_CHECK(c.num_hidden_layers > 0 && c.num_hidden_layers <= MT_MAX_LAYERS);
        FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0);
        FUZZ_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0);
        FUZZ_CHECK(c.num_experts > 0 && c.top_k > 0 && c.top_k <= c.num_experts && c.moe_intermediate_size > 0);
        FUZZ_CHECK(c.num_moe_layers >= 0 && c.num_moe_layers <= c.num_hidden_layers);
        FUZZ_CHECK(c.num_moe_layers == c.num_hidden_layers || c.intermediate_size > 0);
        FUZZ_CHECK(c.num_eos >= 0 && c.num_eos <= MT_MAX_EOS);
        FUZZ_CHECK(isfinite(c.rope_theta) && c.rope_theta > 0);
        FUZZ_CHECK(c.max_position_embeddings > 0 && c.sliding_window >= 0);
        FUZZ_CHECK(isfinite(c.rms_norm_eps) && c.rms_norm_eps >= 0);
        int moe = 0;
        for (int l = 0; l < c.num_hidden_layers; l++) moe += c.layer_is_moe[l];
        FUZZ_CHECK(moe == c.num_moe_layers);
    } else {
        FUZZ_CHECK(err.msg[0] != '\0');
    }
    free(text);
    return 0;
}

/* config.json -> mt_config. Each architecture is described by the defaults it implies; the
 * forward pass only reads the resulting fields. */
#include "model/config.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/rope_config.h"
#include "util/json_util.h"

typedef struct arch_desc {
    const char *model_type;
    mt_arch arch;
    mt_qk_norm qk_norm;
    const char *bias_key;     /* the key switching q/k/v biases on (NULL: the family has none) */
    bool bias_default;        /* q/k/v biases unless the config says otherwise */
    bool sparse_step_layout;  /* decoder_sparse_step / mlp_only_layers decide the MoE layers */
    bool always_norm_topk;    /* renormalises top-k weights whatever the config says */
    bool has_sliding_window;  /* `sliding_window` applies without a `use_sliding_window` switch */
    bool refuses_sliding_window; /* transformers hands `sliding_window` to some attention kernels only
                                  * (flash attention; its masks ignore it): refused unless null */
    bool has_clip_qkv;        /* the family reads `clip_qkv` */
    bool bias_on_o;           /* the bias key biases o_proj too, which the forward pass does not apply:
                               * true is refused */
    /* transformers' defaults (its configuration_<family>.py) for keys a config.json may leave out */
    int kv_heads;             /* num_key_value_heads; 0: num_attention_heads */
    int max_positions;        /* max_position_embeddings */
    float eps;                /* rms_norm_eps */
    float theta;              /* rope_theta */
    int moe_inter;            /* moe_intermediate_size; 0: intermediate_size (the experts' size) */
    int shared_inter;         /* shared_expert_intermediate_size; 0: no shared expert */
    int bos, eos;             /* bos_token_id, eos_token_id; -1: none */
} arch_desc;

static const arch_desc ARCHS[] = {
    {"qwen3_moe", MT_ARCH_QWEN3_MOE, MT_QK_NORM_PER_HEAD, "attention_bias", false, true, false, false, false, false,
     true, 4, 32768, 1e-6f, 10000.0f, 768, 0, -1, -1},
    {"qwen2_moe", MT_ARCH_QWEN2_MOE, MT_QK_NORM_NONE, "qkv_bias", true, true, false, false, false, false, false,
     16, 32768, 1e-6f, 10000.0f, 1408, 5632, -1, -1},
    {"mixtral", MT_ARCH_MIXTRAL, MT_QK_NORM_NONE, NULL, false, false, true, true, false, false, false,
     8, 131072, 1e-5f, 1000000.0f, 0, 0, 1, 2},
    {"olmoe", MT_ARCH_OLMOE, MT_QK_NORM_FULL, "attention_bias", false, false, false, false, true, true, true,
     0, 4096, 1e-5f, 10000.0f, 0, 0, -1, 50279},
};

#define GET(kind, key, dst)                                         \
    do {                                                            \
        if (mt_json_##kind(root, key, dst, err) < 0) return -1;     \
    } while (0)

static int require_positive(const char *key, int v, mt_err *err) {
    if (v <= 0) return mt_errf(err, "config.json: '%s' missing or not positive", key);
    return 0;
}

/* Keys of features moetrace does not implement, refused rather than ignored (the weights would load
 * and compute something else than the model). */
static int refuse_unsupported(const cJSON *root, const arch_desc *a, mt_err *err) {
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (q && !cJSON_IsNull(q)) {
        const char *method = NULL;
        if (cJSON_IsObject(q)) mt_json_string(q, "quant_method", &method, NULL);
        return mt_errf(err, "config.json: 'quantization_config' (quant_method '%s') is not supported: moetrace reads "
                       "unquantized F32, F16 and BF16 checkpoints", method ? method : "?");
    }
    if (a->has_clip_qkv) {
        const cJSON *clip = cJSON_GetObjectItemCaseSensitive(root, "clip_qkv");
        if (clip && !cJSON_IsNull(clip)) {
            if (!cJSON_IsNumber(clip)) return mt_errf(err, "config.json: 'clip_qkv' must be a number or null");
            return mt_errf(err, "config.json: 'clip_qkv' %g is not supported (only null: no clipping of q/k/v)",
                           clip->valuedouble);
        }
    }
    if (a->refuses_sliding_window) {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        if (sw && !cJSON_IsNull(sw))
            return mt_errf(err, "config.json: 'sliding_window' is not supported for %s (only null): transformers "
                           "applies it with flash attention only, its masks ignore it", a->model_type);
    }
    const cJSON *types = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
    if (types && !cJSON_IsNull(types)) {
        if (!cJSON_IsArray(types)) return mt_errf(err, "config.json: 'layer_types' must be a list");
        int l = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, types) {
            if (!cJSON_IsString(it) || strcmp(it->valuestring, "full_attention") != 0)
                return mt_errf(err, "config.json: layer_types[%d] is %s; only 'full_attention' is supported", l,
                               cJSON_IsString(it) ? it->valuestring : "not a string");
            l++;
        }
    }
    return 0;
}

static int parse_moe_layout(mt_config *cfg, const cJSON *root, const arch_desc *a, mt_err *err) {
    int step = 1;
    GET(int, "decoder_sparse_step", &step);
    if (step <= 0) return mt_errf(err, "config.json: 'decoder_sparse_step' must be positive");
    bool dense[MT_MAX_LAYERS] = {false};
    const cJSON *only = cJSON_GetObjectItemCaseSensitive(root, "mlp_only_layers");
    if (only && !cJSON_IsNull(only)) {
        if (!cJSON_IsArray(only)) return mt_errf(err, "config.json: 'mlp_only_layers' must be a list");
        const cJSON *it;
        cJSON_ArrayForEach(it, only) {
            if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble))
                return mt_errf(err, "config.json: 'mlp_only_layers' must be a list of integers");
            if (it->valuedouble < 0 || it->valuedouble >= cfg->num_hidden_layers)
                return mt_errf(err, "config.json: 'mlp_only_layers' entry out of range [0, %d)", cfg->num_hidden_layers);
            dense[(int)it->valuedouble] = true;
        }
    }
    cfg->num_moe_layers = 0;
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        bool moe = cfg->num_experts > 0;
        if (a->sparse_step_layout) moe = moe && !dense[l] && (l + 1) % step == 0;
        cfg->layer_is_moe[l] = moe;
        cfg->num_moe_layers += moe;
    }
    return 0;
}

/* Sizes the model computes as products of config fields must fit an int. */
static int check_products(const mt_config *cfg, mt_err *err) {
    long long hd = cfg->head_dim, heads = cfg->num_attention_heads, kv = cfg->num_key_value_heads;
    if ((heads + 2 * kv) * hd > INT_MAX)
        return mt_errf(err, "config.json: (num_attention_heads %lld + 2 x num_key_value_heads %lld) x head_dim %lld "
                       "does not fit in 32 bits", heads, kv, hd);
    if ((long long)cfg->num_hidden_layers * cfg->top_k > INT_MAX)
        return mt_errf(err, "config.json: num_hidden_layers %d x num_experts_per_tok %d does not fit in 32 bits",
                       cfg->num_hidden_layers, cfg->top_k);
    return 0;
}

/* An integer id that fits an int. */
static bool json_id(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2147483647.0)
        return false;
    *out = (int)v->valuedouble;
    return true;
}

/* eos_token_id: an integer or a list of at most MT_MAX_EOS integers; absent or null leaves *count.
 * Returns -1 with a message that the caller prefixes with the file. */
static int parse_eos(int *ids, int *count, const cJSON *item, mt_err *err) {
    if (!item || cJSON_IsNull(item)) return 0;
    if (cJSON_IsNumber(item)) {
        if (!json_id(item, &ids[0])) return mt_errf(err, "'eos_token_id' must be an integer or a list of integers");
        *count = 1;
        return 0;
    }
    if (!cJSON_IsArray(item)) return mt_errf(err, "'eos_token_id' must be an integer or a list of integers");
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, item) {
        if (n == MT_MAX_EOS)
            return mt_errf(err, "'eos_token_id' lists %d ids, more than the %d supported", cJSON_GetArraySize(item),
                           MT_MAX_EOS);
        if (!json_id(it, &ids[n++])) return mt_errf(err, "'eos_token_id' must be an integer or a list of integers");
    }
    *count = n;
    return 0;
}

int mt_config_parse(mt_config *cfg, const char *json_text, mt_err *err) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = mt_json_parse(json_text, strlen(json_text), "config.json", NULL, err);
    if (!root) return -1;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return mt_errf(err, "config.json: not a JSON object");
    }
    int rc = -1;
    const char *model_type = NULL;
    int has_type = mt_json_string(root, "model_type", &model_type, err);
    if (has_type <= 0) {
        if (has_type == 0) mt_errf(err, "config.json: 'model_type' missing");
        goto done;
    }
    const arch_desc *a = NULL;
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++)
        if (!strcmp(ARCHS[i].model_type, model_type)) a = &ARCHS[i];
    if (!a) {
        mt_errf(err, "config.json: model_type '%s' is not supported (supported: qwen3_moe, qwen2_moe, mixtral, olmoe)", model_type);
        goto done;
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", model_type);
    cfg->arch = a->arch;
    cfg->qk_norm = a->qk_norm;
    cfg->rms_norm_eps = a->eps;
    cfg->bos_token_id = a->bos;
    if (a->eos >= 0) cfg->eos_ids[cfg->num_eos++] = a->eos;
    cfg->attention_bias = a->bias_default;
    cfg->max_position_embeddings = a->max_positions;
    if (refuse_unsupported(root, a, err)) goto done;

#undef GET
#define GET(kind, key, dst)                                     \
    do {                                                        \
        if (mt_json_##kind(root, key, dst, err) < 0) goto done; \
    } while (0)
    GET(int, "vocab_size", &cfg->vocab_size);
    GET(int, "hidden_size", &cfg->hidden_size);
    GET(int, "num_hidden_layers", &cfg->num_hidden_layers);
    GET(int, "num_attention_heads", &cfg->num_attention_heads);
    cfg->num_key_value_heads = a->kv_heads ? a->kv_heads : cfg->num_attention_heads;
    GET(int, "num_key_value_heads", &cfg->num_key_value_heads);
    /* null: one key/value head per query head, as transformers fills it in */
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads")))
        cfg->num_key_value_heads = cfg->num_attention_heads;
    GET(int, "max_position_embeddings", &cfg->max_position_embeddings);
    GET(float, "rms_norm_eps", &cfg->rms_norm_eps);
    if (a->bias_key) GET(bool, a->bias_key, &cfg->attention_bias);
    if (cfg->attention_bias && a->bias_on_o) {
        mt_errf(err, "config.json: '%s' true is not supported for %s: it biases o_proj too, which moetrace does not "
                "apply (only false)", a->bias_key, a->model_type);
        goto done;
    }
    GET(bool, "tie_word_embeddings", &cfg->tie_word_embeddings);
    if (!(cfg->rms_norm_eps >= 0.0f) || isinf(cfg->rms_norm_eps)) {
        mt_errf(err, "config.json: rms_norm_eps must be a finite non-negative number");
        goto done;
    }
    if (require_positive("vocab_size", cfg->vocab_size, err) || require_positive("hidden_size", cfg->hidden_size, err) ||
        require_positive("num_hidden_layers", cfg->num_hidden_layers, err) ||
        require_positive("num_attention_heads", cfg->num_attention_heads, err) ||
        require_positive("num_key_value_heads", cfg->num_key_value_heads, err) ||
        require_positive("max_position_embeddings", cfg->max_position_embeddings, err))
        goto done;
    if (cfg->num_hidden_layers > MT_MAX_LAYERS) {
        mt_errf(err, "config.json: num_hidden_layers %d exceeds the supported %d", cfg->num_hidden_layers, MT_MAX_LAYERS);
        goto done;
    }
    if (cfg->num_attention_heads % cfg->num_key_value_heads) {
        mt_errf(err, "config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                cfg->num_attention_heads, cfg->num_key_value_heads);
        goto done;
    }
    cfg->head_dim = cfg->hidden_size / cfg->num_attention_heads;
    GET(int, "head_dim", &cfg->head_dim);
    if (cfg->head_dim <= 0 || cfg->head_dim % 2) {
        mt_errf(err, "config.json: head_dim %d must be positive and even", cfg->head_dim);
        goto done;
    }
    /* q and k are normalised over the whole projection, which transformers sizes by hidden_size */
    if (cfg->qk_norm == MT_QK_NORM_FULL && (long long)cfg->head_dim * cfg->num_attention_heads != cfg->hidden_size) {
        mt_errf(err, "config.json: head_dim %d times num_attention_heads %d is not hidden_size %d, which %s requires "
                "(its q/k norms span hidden_size)", cfg->head_dim, cfg->num_attention_heads, cfg->hidden_size,
                a->model_type);
        goto done;
    }
    const char *act = NULL;
    GET(string, "hidden_act", &act);
    if (act && strcmp(act, "silu") != 0 && strcmp(act, "swish") != 0) { /* transformers' two names of one function */
        mt_errf(err, "config.json: hidden_act '%s' is not supported (only 'silu', also named 'swish')", act);
        goto done;
    }
    bool use_sw = false;
    GET(bool, "use_sliding_window", &use_sw);
    if (use_sw) {
        mt_errf(err, "config.json: use_sliding_window=true is not supported yet");
        goto done;
    }
    if (a->has_sliding_window) {
        int has_sw = mt_json_int(root, "sliding_window", &cfg->sliding_window, err);
        if (has_sw < 0) goto done;
        /* 0 would leave transformers' mask no position to attend to */
        if (has_sw && cfg->sliding_window <= 0) {
            mt_errf(err, "config.json: sliding_window %d must be positive (null: no window)", cfg->sliding_window);
            goto done;
        }
    }
    if (mt_rope_config_parse(cfg, root, a->theta, err)) goto done;

    /* one setting under two names (transformers maps one onto the other): both given must agree */
    int has_named = mt_json_int(root, "num_experts", &cfg->num_experts, err);
    if (has_named < 0) goto done;
    int named = cfg->num_experts;
    int has_local = mt_json_int(root, "num_local_experts", &cfg->num_experts, err);
    if (has_local < 0) goto done;
    if (has_named && has_local && named != cfg->num_experts) {
        mt_errf(err, "config.json: 'num_experts' %d and 'num_local_experts' %d disagree", named, cfg->num_experts);
        goto done;
    }
    GET(int, "num_experts_per_tok", &cfg->top_k);
    GET(int, "intermediate_size", &cfg->intermediate_size);
    cfg->moe_intermediate_size = a->moe_inter ? a->moe_inter : cfg->intermediate_size;
    if (a->moe_inter) GET(int, "moe_intermediate_size", &cfg->moe_intermediate_size);
    GET(bool, "norm_topk_prob", &cfg->norm_topk_prob);
    if (a->always_norm_topk) cfg->norm_topk_prob = true;
    cfg->shared_expert_intermediate_size = a->shared_inter;
    if (a->shared_inter) GET(int, "shared_expert_intermediate_size", &cfg->shared_expert_intermediate_size);
    cfg->shared_expert_gate = cfg->shared_expert_intermediate_size > 0;
    if (require_positive("num_experts", cfg->num_experts, err) ||
        require_positive("num_experts_per_tok", cfg->top_k, err) ||
        require_positive("moe_intermediate_size", cfg->moe_intermediate_size, err))
        goto done;
    if (cfg->top_k > cfg->num_experts) {
        mt_errf(err, "config.json: num_experts_per_tok %d exceeds num_experts %d", cfg->top_k, cfg->num_experts);
        goto done;
    }
    if (check_products(cfg, err) || parse_moe_layout(cfg, root, a, err)) goto done;
    if (cfg->num_moe_layers < cfg->num_hidden_layers && cfg->intermediate_size <= 0) {
        mt_errf(err, "config.json: dense layers need 'intermediate_size'");
        goto done;
    }
    /* an explicit null means none, as in transformers, whatever the family's default */
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "bos_token_id"))) cfg->bos_token_id = -1;
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(root, "eos_token_id"))) cfg->num_eos = 0;
    GET(int, "bos_token_id", &cfg->bos_token_id);
    if (parse_eos(cfg->eos_ids, &cfg->num_eos, cJSON_GetObjectItemCaseSensitive(root, "eos_token_id"), err)) goto done;
    rc = 0;
done:
    /* the field getters' messages name the key, not the file */
    if (rc && strncmp(err->msg, "config.json", 11) != 0) {
        mt_err inner = *err;
        mt_errf(err, "config.json: %s", inner.msg);
    }
    cJSON_Delete(root);
    return rc;
}

int mt_config_load(mt_config *cfg, const char *dir, mt_err *err) {
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
        return mt_errf(err, "%s is not a folder (a model is a Hugging Face checkpoint folder holding config.json)", dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = mt_read_file(path, NULL, err);
    if (!text) return -1;
    int rc = mt_config_parse(cfg, text, err);
    free(text);
    if (rc) {
        mt_err inner = *err;
        return mt_errf(err, "%s: %s", dir, inner.msg);
    }
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    if (stat(path, &st) != 0) return 0;
    cJSON *gen = mt_json_load_file(path, err);
    if (!gen) return -1;
    int eos[MT_MAX_EOS], n = 0;
    mt_err inner;
    if (!cJSON_IsObject(gen)) rc = mt_errf(err, "%s: not a JSON object", path);
    else if (parse_eos(eos, &n, cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id"), &inner))
        rc = mt_errf(err, "%s: %s", path, inner.msg);
    if (rc == 0 && n > 0) {
        memcpy(cfg->eos_ids, eos, sizeof eos);
        cfg->num_eos = n;
    }
    cJSON_Delete(gen);
    return rc;
}

bool mt_config_is_eos(const mt_config *cfg, int id) {
    for (int i = 0; i < cfg->num_eos; i++)
        if (cfg->eos_ids[i] == id) return true;
    return false;
}

const char *mt_config_differs(const mt_config *a, const mt_config *b) {
#define SAME(field, name) \
    if (a->field != b->field) return name
    if (strcmp(a->model_type, b->model_type) || a->arch != b->arch) return "model_type";
    SAME(vocab_size, "vocab_size");
    SAME(hidden_size, "hidden_size");
    SAME(num_hidden_layers, "num_hidden_layers");
    SAME(num_attention_heads, "num_attention_heads");
    SAME(num_key_value_heads, "num_key_value_heads");
    SAME(head_dim, "head_dim");
    SAME(max_position_embeddings, "max_position_embeddings");
    SAME(rms_norm_eps, "rms_norm_eps");
    SAME(rope_theta, "rope_theta");
    SAME(rope_type, "the rope type");
    SAME(rope_factor, "the rope scaling factor");
    SAME(rope_original_max_positions, "original_max_position_embeddings");
    SAME(rope_attention_factor, "the rope attention factor");
    for (int i = 0; i < a->head_dim / 2; i++) SAME(rope_inv_freq[i], "the rope parameters");
    SAME(attention_bias, "attention_bias");
    SAME(qk_norm, "the q/k norm");
    SAME(tie_word_embeddings, "tie_word_embeddings");
    SAME(sliding_window, "sliding_window");
    SAME(num_experts, "num_experts");
    SAME(top_k, "num_experts_per_tok");
    SAME(moe_intermediate_size, "moe_intermediate_size");
    SAME(intermediate_size, "intermediate_size");
    SAME(norm_topk_prob, "norm_topk_prob");
    SAME(shared_expert_intermediate_size, "shared_expert_intermediate_size");
    SAME(shared_expert_gate, "the shared expert's gate");
    SAME(num_moe_layers, "the MoE layers");
    for (int l = 0; l < a->num_hidden_layers; l++) SAME(layer_is_moe[l], "the MoE layers");
#undef SAME
    return NULL;
}

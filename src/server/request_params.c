/* Generation request fields. See request_params.h. */
#include "server/request_params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/json_util.h"

/* ---- typed fields ------------------------------------------------------------------------- */

const cJSON *mt_params_field(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

#define field mt_params_field

/* 1: read, 0: absent or null, -1: error. */
static int get_long(const cJSON *obj, const char *key, long lo, long hi, long *out, mt_api_error *e) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < (double)lo ||
        it->valuedouble > (double)hi)
        return mt_api_fail(e, 400, "'%s' must be an integer in [%ld, %ld]", key, lo, hi);
    *out = (long)it->valuedouble;
    return 1;
}

int mt_params_int(const cJSON *obj, const char *key, long lo, long hi, int *out, mt_api_error *e) {
    long v;
    int rc = get_long(obj, key, lo, hi, &v, e);
    if (rc == 1) *out = (int)v;
    return rc;
}

/* A number in [lo, hi]; open_lo excludes lo. */
static int get_number(const cJSON *obj, const char *key, double lo, double hi, bool open_lo, float *out,
                      mt_api_error *e) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    double v = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!(v >= lo && v <= hi) || (open_lo && v == lo))
        return mt_api_fail(e, 400, "'%s' must be a number in %s%g, %g]", key, open_lo ? "(" : "[", lo, hi);
    *out = (float)v;
    return 1;
}

int mt_params_bool(const cJSON *obj, const char *key, bool *out, mt_api_error *e) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (!cJSON_IsBool(it)) return mt_api_fail(e, 400, "'%s' must be true or false", key);
    *out = cJSON_IsTrue(it);
    return 1;
}

/* A parameter moetrace does not implement: accepted only with its neutral value. */
static int neutral_only(const cJSON *obj, const char *key, double neutral, mt_api_error *e) {
    const cJSON *it = field(obj, key);
    if (!it) return 0;
    if (cJSON_IsNumber(it) && it->valuedouble == neutral) return 0;
    if (cJSON_IsBool(it) && !cJSON_IsTrue(it) && neutral == 0) return 0;
    return mt_api_fail(e, 400, "'%s' is not supported by moetrace (only its default value is accepted)", key);
}

/* The same for parameters whose neutral value is empty: null, "", [] or {}. */
static int empty_only(const cJSON *obj, const char *key, mt_api_error *e) {
    const cJSON *it = field(obj, key);
    if (!it || (cJSON_IsString(it) && !it->valuestring[0]) ||
        ((cJSON_IsArray(it) || cJSON_IsObject(it)) && cJSON_GetArraySize(it) == 0))
        return 0;
    return mt_api_fail(e, 400, "'%s' is not supported by moetrace (only null or empty is accepted)", key);
}

/* "stop": a string or a list of strings. */
static int get_stop_strings(const cJSON *obj, const mt_param_caps *caps, mt_gen_params *p, mt_api_error *e) {
    const cJSON *it = field(obj, "stop");
    if (!it) return 0;
    int n = cJSON_IsString(it) ? 1 : cJSON_IsArray(it) ? cJSON_GetArraySize(it) : -1;
    if (n < 0) return mt_api_fail(e, 400, "'stop' must be a string or a list of strings");
    if (n == 0) return 0;
    if (!caps->have_tokenizer) return mt_api_fail(e, 400, "'stop' strings need the model's tokenizer.json");
    if (!(p->stop_strings = calloc((size_t)n, sizeof *p->stop_strings))) return mt_api_fail(e, 500, "out of memory");
    for (int i = 0; i < n; i++) {
        const cJSON *s = cJSON_IsString(it) ? it : cJSON_GetArrayItem(it, i);
        if (!cJSON_IsString(s) || !s->valuestring[0])
            return mt_api_fail(e, 400, "'stop' entry %d must be a non-empty string", i);
        if (!(p->stop_strings[i] = strdup(s->valuestring))) return mt_api_fail(e, 500, "out of memory");
        p->n_stop_strings = i + 1;
    }
    return 1;
}

static int get_stop_ids(const cJSON *obj, const mt_param_caps *caps, mt_gen_params *p, mt_api_error *e) {
    const cJSON *it = field(obj, "stop_token_ids");
    if (!it) return 0;
    if (!cJSON_IsArray(it)) return mt_api_fail(e, 400, "'stop_token_ids' must be a list of token ids");
    int n = cJSON_GetArraySize(it);
    if (n == 0) return 0;
    if (!(p->stop_ids = malloc((size_t)n * sizeof *p->stop_ids))) return mt_api_fail(e, 500, "out of memory");
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, it) {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble >= caps->cfg->vocab_size)
            return mt_api_fail(e, 400, "'stop_token_ids' entry %d is not a token id in [0, %d)", i, caps->cfg->vocab_size);
        p->stop_ids[i++] = (int32_t)v->valuedouble;
    }
    p->n_stop_ids = n;
    return 1;
}

/* "logit_bias": OpenAI's object of token ids (decimal strings, "42") to what is added to their
 * logits, each a number in [-100, 100] (OpenAI's range); null or {} for none. A token named twice
 * ("5" and "05") is refused. */
static int get_logit_bias(const cJSON *obj, const mt_param_caps *caps, mt_gen_params *p, mt_api_error *e) {
    const cJSON *it = field(obj, "logit_bias");
    if (!it) return 0;
    if (!cJSON_IsObject(it))
        return mt_api_fail(e, 400, "'logit_bias' must be an object mapping token ids (strings such as \"42\") to "
                                   "numbers, or null");
    int n = cJSON_GetArraySize(it), vocab = caps->cfg->vocab_size;
    if (n == 0) return 0;
    uint8_t *seen = calloc((size_t)vocab / 8 + 1, 1);
    p->bias_ids = malloc((size_t)n * sizeof *p->bias_ids);
    p->bias_values = malloc((size_t)n * sizeof *p->bias_values);
    if (!seen || !p->bias_ids || !p->bias_values) {
        free(seen);
        return mt_api_fail(e, 500, "out of memory");
    }
    int rc = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, it) {
        const char *key = v->string;
        size_t len = strlen(key);
        long id = len > 0 && len <= 10 && strspn(key, "0123456789") == len ? strtol(key, NULL, 10) : -1;
        if (id < 0 || id >= vocab) {
            rc = mt_api_fail(e, 400, "'logit_bias' key '%.40s%s' is not a token id in [0, %d)", key, len > 40 ? "..." : "",
                             vocab);
            break;
        }
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= -100 && v->valuedouble <= 100)) {
            rc = mt_api_fail(e, 400, "'logit_bias' value of token '%s' must be a number in [-100, 100]", key);
            break;
        }
        if (seen[id / 8] & (1u << (id % 8))) {
            rc = mt_api_fail(e, 400, "'logit_bias' names token %ld twice (key '%s' and another)", id, key);
            break;
        }
        seen[id / 8] |= (uint8_t)(1u << (id % 8));
        p->bias_ids[p->n_bias] = (int32_t)id;
        p->bias_values[p->n_bias++] = (float)v->valuedouble;
    }
    free(seen);
    return rc ? -1 : 1;
}

/* min_new_tokens (the OpenAI endpoints: min_tokens, vLLM's and SGLang's OpenAI servers' name, or
 * min_new_tokens; both only when they agree) into p; *key: the name the request used. */
static int get_min_new_tokens(const cJSON *obj, mt_param_style style, mt_gen_params *p, const char **key,
                              mt_api_error *e) {
    int sglang = 0, openai = 0, rc_sglang, rc_openai = 0;
    *key = "min_new_tokens";
    if ((rc_sglang = mt_params_int(obj, "min_new_tokens", 0, 1 << 30, &sglang, e)) < 0) return -1;
    if (style == MT_PARAMS_OPENAI && (rc_openai = mt_params_int(obj, "min_tokens", 0, 1 << 30, &openai, e)) < 0)
        return -1;
    if (rc_sglang == 1 && rc_openai == 1 && sglang != openai)
        return mt_api_fail(e, 400, "'min_tokens' %d and 'min_new_tokens' %d disagree (two names of one limit: send "
                                   "one)", openai, sglang);
    if (rc_openai == 1) *key = "min_tokens";
    p->sampling.min_new_tokens = rc_openai == 1 ? openai : sglang;
    return rc_sglang == 1 || rc_openai == 1;
}

static uint64_t fresh_seed(void) {
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (counter++ * 0x9E3779B97F4A7C15ull);
    x ^= x >> 31;
    return x * 0xBF58476D1CE4E5B9ull;
}

/* ---- sampling ----------------------------------------------------------------------------- */

static const char *const SGLANG_KEYS[] = {
    "max_new_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "stop_token_ids", "ignore_eos", "seed",
    "sampling_seed", "skip_special_tokens", "no_stop_trim", "spaces_between_special_tokens", "n",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens", "json_schema", "regex", "ebnf",
    "stop_regex", "structural_tag", "logit_bias", "custom_params", "stream_interval",
};

/* The largest seed magnitude a JSON number holds exactly: 2^53 - 1. */
#define SEED_MAX 9007199254740991L

/* The OpenAI endpoints' sampling extras of SGLang's and vLLM's OpenAI servers that moetrace does not
 * implement: refused unless neutral, as /generate's are (their top level holds other keys too, so
 * unknown keys cannot be refused there). */
static int openai_unsupported(const cJSON *obj, mt_api_error *e) {
    static const char *const EMPTY_ONLY[] = {
        "bad_words", "allowed_token_ids", "prompt_logprobs", "truncate_prompt_tokens", "logits_processors",
        "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs",
    };
    if (neutral_only(obj, "typical_p", 1, e) ||
        neutral_only(obj, "use_beam_search", 0, e) || neutral_only(obj, "length_penalty", 1, e) ||
        neutral_only(obj, "include_stop_str_in_output", 0, e))
        return -1;
    for (size_t k = 0; k < sizeof EMPTY_ONLY / sizeof *EMPTY_ONLY; k++)
        if (empty_only(obj, EMPTY_ONLY[k], e)) return -1;
    return 0;
}

int mt_params_parse_sampling(const cJSON *obj, mt_param_style style, const mt_param_caps *caps, mt_gen_params *p,
                             bool *max_given, int *n, mt_api_error *e) {
    memset(p, 0, sizeof *p);
    *n = 1;
    p->sampling.temperature = 1.0f;
    p->sampling.top_p = 1.0f;
    p->sampling.repetition_penalty = 1.0f;
    p->skip_special_tokens = true;
    *max_given = false;
    if (!obj) return 0;
    if (!cJSON_IsObject(obj)) return mt_api_fail(e, 400, "'sampling_params' must be an object");
    if (style == MT_PARAMS_SGLANG) {
        const cJSON *it;
        cJSON_ArrayForEach(it, obj) {
            size_t k = 0, n_keys = sizeof SGLANG_KEYS / sizeof *SGLANG_KEYS;
            while (k < n_keys && strcmp(it->string, SGLANG_KEYS[k])) k++;
            if (k == n_keys) return mt_api_fail(e, 400, "unknown sampling parameter '%s'", it->string);
        }
    }
    int ctx = caps->cfg->max_position_embeddings, rc;
    const char *max_key = "max_new_tokens", *min_key;
    if (style == MT_PARAMS_SGLANG) {
        if ((rc = mt_params_int(obj, "max_new_tokens", 0, ctx, &p->max_new_tokens, e)) < 0) return -1;
        *max_given = rc == 1;
    } else {
        if ((rc = mt_params_int(obj, "max_tokens", 0, ctx, &p->max_new_tokens, e)) < 0) return -1;
        *max_given = rc == 1;
        max_key = "max_tokens";
        if ((rc = mt_params_int(obj, "max_completion_tokens", 0, ctx, &p->max_new_tokens, e)) < 0) return -1;
        *max_given = *max_given || rc == 1;
        if (rc == 1) max_key = "max_completion_tokens";
    }
    if (get_number(obj, "temperature", 0, 1e4, false, &p->sampling.temperature, e) < 0 ||
        get_number(obj, "top_p", 0, 1, true, &p->sampling.top_p, e) < 0 ||
        mt_params_int(obj, "top_k", -1, 1 << 30, &p->sampling.top_k, e) < 0 ||
        mt_params_bool(obj, "ignore_eos", &p->ignore_eos, e) < 0 ||
        mt_params_bool(obj, "skip_special_tokens", &p->skip_special_tokens, e) < 0 ||
        mt_params_bool(obj, "no_stop_trim", &p->no_stop_trim, e) < 0 ||
        get_stop_strings(obj, caps, p, e) < 0 || get_stop_ids(obj, caps, p, e) < 0)
        return -1;
    bool spaces;
    if (mt_params_bool(obj, "spaces_between_special_tokens", &spaces, e) < 0) return -1;
    if (p->sampling.temperature < 1e-5f) p->sampling.temperature = 0; /* greedy, as SGLang */
    /* JSON integers are read as doubles: beyond 2^53 a seed would not be kept exactly. A negative seed
     * (OpenAI's and vLLM's are any int64) is its two's complement, which no accepted positive one is. */
    long seed;
    int seeded = get_long(obj, "seed", -SEED_MAX, SEED_MAX, &seed, e);
    if (seeded == 0) seeded = get_long(obj, "sampling_seed", -SEED_MAX, SEED_MAX, &seed, e);
    if (seeded < 0) return -1;
    p->sampling.seed = seeded ? (uint64_t)seed : fresh_seed();
    if (mt_params_int(obj, "n", 1, 1 << 20, n, e) < 0) return -1;
    if (style == MT_PARAMS_OPENAI && openai_unsupported(obj, e)) return -1;
    /* min-p, the penalties, min_new_tokens and the logit bias: SGLang's ranges (logit_bias: OpenAI's);
     * the engine applies them to generated tokens (engine/penalties.h) */
    if (get_number(obj, "min_p", 0, 1, false, &p->sampling.min_p, e) < 0 ||
        get_number(obj, "frequency_penalty", -2, 2, false, &p->sampling.frequency_penalty, e) < 0 ||
        get_number(obj, "presence_penalty", -2, 2, false, &p->sampling.presence_penalty, e) < 0 ||
        get_number(obj, "repetition_penalty", 0, 2, true, &p->sampling.repetition_penalty, e) < 0 ||
        get_min_new_tokens(obj, style, p, &min_key, e) < 0 || get_logit_bias(obj, caps, p, e) < 0)
        return -1;
    /* an explicit limit is checked now; the default one once the prompt is known (mt_params_fit) */
    if (*max_given && p->sampling.min_new_tokens > p->max_new_tokens)
        return mt_api_fail(e, 400, "'%s' %d is more than '%s' %d (it must be in [0, %s])", min_key,
                           p->sampling.min_new_tokens, max_key, p->max_new_tokens, max_key);
    if (neutral_only(obj, "json_schema", 0, e) || neutral_only(obj, "regex", 0, e) || neutral_only(obj, "ebnf", 0, e) ||
        empty_only(obj, "stop_regex", e) || empty_only(obj, "structural_tag", e))
        return -1;
    /* SGLang's custom_params only reach a custom logit processor (there is none here), and its
     * stream_interval only groups streamed tokens (each is sent as it comes): any valid value is
     * accepted and has no effect */
    const cJSON *cp = field(obj, "custom_params");
    if (cp && !cJSON_IsObject(cp)) return mt_api_fail(e, 400, "'custom_params' must be an object or null");
    int interval;
    if (mt_params_int(obj, "stream_interval", 1, 1 << 30, &interval, e) < 0) return -1;
    return 0;
}

int mt_params_parse_routing(const cJSON *obj, const mt_param_caps *caps, mt_gen_params *p, mt_api_error *e) {
    if (mt_params_bool(obj, "return_routed_experts", &p->return_routing, e) < 0 ||
        mt_params_int(obj, "routed_experts_start_len", 0, 1 << 30, &p->routing_start, e) < 0)
        return -1;
    const cJSON *dt = field(obj, "routed_experts_dtype");
    p->routing_dtype = MT_ROUTING_INT32;
    if (dt) {
        mt_err err;
        if (!cJSON_IsString(dt)) return mt_api_fail(e, 400, "'routed_experts_dtype' must be a string");
        if (mt_routing_dtype_parse(dt->valuestring, &p->routing_dtype, &err)) return mt_api_fail(e, 400, "%s", err.msg);
        if (!mt_routing_dtype_fits(p->routing_dtype, caps->cfg->num_experts))
            return mt_api_fail(e, 400, "routed_experts_dtype %s cannot hold the ids of %d experts", dt->valuestring,
                               caps->cfg->num_experts);
    }
    if (p->return_routing && !caps->routing_enabled)
        return mt_api_fail(e, 400, "return_routed_experts needs the server started with --enable-return-routed-experts");
    return 0;
}

/* ---- prompts ------------------------------------------------------------------------------ */

int mt_params_parse_ids(const cJSON *arr, const char *name, int32_t **ids, int *n, mt_api_error *e) {
    if (!cJSON_IsArray(arr)) return mt_api_fail(e, 400, "'%s' must be a list of token ids", name);
    int count = cJSON_GetArraySize(arr), i = 0;
    if (count == 0) return mt_api_fail(e, 400, "'%s' is empty", name);
    int32_t *v = malloc((size_t)count * sizeof *v);
    if (!v) return mt_api_fail(e, 500, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < 0) {
            free(v);
            return mt_api_fail(e, 400, "'%s' entry %d is not a non-negative integer token id", name, i);
        }
        if (it->valuedouble > 2147483647.0) {
            free(v);
            int64_t exact;
            char id[64];
            if (mt_json_int64(it, &exact)) snprintf(id, sizeof id, "%lld", (long long)exact); /* as sent */
            else if (isfinite(it->valuedouble)) snprintf(id, sizeof id, "%.0f", it->valuedouble);
            else snprintf(id, sizeof id, "%s", "(past any number)");
            return mt_api_fail(e, 400, "token id %s at index %d of '%s' is outside the vocabulary (token ids are "
                               "below 2^31)", id, i, name);
        }
        v[i++] = (int32_t)it->valuedouble;
    }
    *ids = v;
    *n = count;
    return 0;
}

int mt_params_encode(mt_tokenizer *tok, const char *text, size_t len, bool add_special, int32_t **ids, int *n,
                     mt_api_error *e) {
    if (!tok) return mt_api_fail(e, 400, "text prompts need the model's tokenizer.json; send token ids instead");
    size_t count = 0;
    mt_err err;
    if (mt_tokenizer_encode(tok, text, len, add_special, ids, &count, &err))
        return mt_api_fail(e, 400, "cannot tokenize the prompt: %s", err.msg);
    if (count == 0 || count > 1u << 30) { /* *ids freed and cleared: callers free what they hold */
        free(*ids);
        *ids = NULL;
        return mt_api_fail(e, 400, count ? "the prompt is too long" : "the prompt encodes to no tokens");
    }
    *n = (int)count;
    return 0;
}

int mt_params_fit(mt_gen_params *p, const mt_fit_limits *lim, int n_prompt, const mt_config *cfg, mt_api_error *e) {
    int ctx = cfg->max_position_embeddings;
    const char *key = lim->max_key ? lim->max_key : "max_new_tokens";
    if (n_prompt > ctx)
        return mt_api_fail(e, 400, "the prompt has %d tokens, more than the model's context length of %d tokens",
                           n_prompt, ctx);
    if (!lim->max_given) {
        /* a prompt that fills the context leaves no room for the default's tokens: refused, as SGLang
         * refuses it, rather than answered with nothing (an explicit limit of 0 still scores it) */
        if (n_prompt == ctx && lim->default_max > 0)
            return mt_api_fail(e, 400, "the prompt's %d tokens fill the model's context length of %d tokens: no room for "
                                       "a new token (%s 0 forwards the prompt only)", n_prompt, ctx, key);
        int room = ctx - n_prompt;
        /* the last new token is never forwarded: a context of P + N - 1 positions in the KV cache */
        if (lim->kv_positions > 0 && lim->kv_positions - n_prompt + 1 < room) room = lim->kv_positions - n_prompt + 1;
        p->max_new_tokens = room < lim->default_max ? (room > 0 ? room : 0) : lim->default_max;
    } else if ((long)n_prompt + p->max_new_tokens > ctx) {
        return mt_api_fail(e, 400, "the prompt's %d tokens plus %s %d exceed the model's context length of %d tokens",
                           n_prompt, key, p->max_new_tokens, ctx);
    }
    if (p->sampling.min_new_tokens > p->max_new_tokens) {
        const char *min_key = lim->min_key ? lim->min_key : "min_new_tokens";
        if (lim->max_given)
            return mt_api_fail(e, 400, "'%s' %d is more than '%s' %d (it must be in [0, %s])", min_key,
                               p->sampling.min_new_tokens, key, p->max_new_tokens, key);
        if (p->max_new_tokens < lim->default_max)
            return mt_api_fail(e, 400, "'%s' %d is more than the %d new tokens that the model's context length (%d) and "
                               "the KV cache leave after the prompt's %d tokens (the request sets no %s)", min_key,
                               p->sampling.min_new_tokens, p->max_new_tokens, ctx, n_prompt, key);
        return mt_api_fail(e, 400, "'%s' %d is more than %s %d, its default (the request sets no %s)", min_key,
                           p->sampling.min_new_tokens, key, p->max_new_tokens, key);
    }
    if (p->routing_start > n_prompt)
        return mt_api_fail(e, 400, "routed_experts_start_len %d is beyond the prompt's %d tokens", p->routing_start,
                           n_prompt);
    return 0;
}

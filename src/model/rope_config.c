/* config.json's rotary settings -> mt_config, and the inverse frequency table (see rope_config.h). */
#include "model/rope_config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util/json_util.h"

const char *mt_rope_type_name(mt_rope_type t) {
    switch (t) {
    case MT_ROPE_LINEAR: return "linear";
    case MT_ROPE_YARN: return "yarn";
    default: return "default";
    }
}

/* partial_rotary_factor: the share of each head that rotates. The four families' attention rotates
 * the whole head (transformers' default 1.0; its RoPE init would compute a shorter table and not use
 * it), so only 1 is accepted. `where` names the object holding the key ("" at the top level). */
static int check_partial_rotary(const cJSON *obj, const char *where, mt_err *err) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, "partial_rotary_factor");
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsNumber(f))
        return mt_errf(err, "config.json: '%spartial_rotary_factor' must be a number or null", where);
    if (f->valuedouble != 1.0)
        return mt_errf(err, "config.json: '%spartial_rotary_factor' %g is not supported: moetrace rotates the whole "
                       "head (only 1)", where, f->valuedouble);
    return 0;
}

/* 1 with *v set when obj[key] is a number, 0 when absent or null, -1 otherwise (err names key). */
static int number(const cJSON *obj, const char *key, const char *where, double *v, mt_err *err) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return mt_errf(err, "config.json: '%s%s' must be a finite number or null", where, key);
    *v = it->valuedouble;
    return 1;
}

static int type_of(const cJSON *o, const char *key, mt_rope_type *t, mt_err *err) {
    const char *name = NULL;
    if (mt_json_string(o, "rope_type", &name, err) < 0) return -1;
    if (!name && mt_json_string(o, "type", &name, err) < 0) return -1;
    if (!name || !strcmp(name, "default")) *t = MT_ROPE_DEFAULT;
    else if (!strcmp(name, "linear")) *t = MT_ROPE_LINEAR;
    else if (!strcmp(name, "yarn")) *t = MT_ROPE_YARN;
    else
        return mt_errf(err, "config.json: %s: rope type '%s' is not supported (supported: default, linear, yarn)",
                       key, name);
    return 0;
}

/* The default table, computed as the CPU kernel always has (float, the same bits). */
static float default_inv_freq(float theta, int i, int head_dim) {
    return 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
}

/* yarn's attention factor for a scale and an mscale (transformers' get_mscale). */
static double yarn_mscale(double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

/* The dimension at which num_rotations turns fit in max_positions (YaRN's correction bound). */
static double correction_dim(double num_rotations, int dim, double base, double max_positions) {
    return (double)dim * log(max_positions / (num_rotations * 2.0 * 3.14159265358979323846)) / (2.0 * log(base));
}

static int parse_yarn(mt_config *cfg, const cJSON *o, const char *where, mt_err *err) {
    double factor = 0, original = 0, attention = 0, beta_fast = 0, beta_slow = 0, mscale = 0, mscale_all = 0;
    int has_factor = number(o, "factor", where, &factor, err);
    int has_original = number(o, "original_max_position_embeddings", where, &original, err);
    int has_attention = number(o, "attention_factor", where, &attention, err);
    if (has_factor < 0 || has_original < 0 || has_attention < 0 || number(o, "beta_fast", where, &beta_fast, err) < 0 ||
        number(o, "beta_slow", where, &beta_slow, err) < 0 || number(o, "mscale", where, &mscale, err) < 0 ||
        number(o, "mscale_all_dim", where, &mscale_all, err) < 0)
        return -1;
    bool truncate = true;
    if (mt_json_bool(o, "truncate", &truncate, err) < 0) return -1;
    if (!has_original) original = cfg->max_position_embeddings; /* the pretrained length is the model's */
    if (original < 1 || original != floor(original) || original > INT32_MAX)
        return mt_errf(err, "config.json: '%soriginal_max_position_embeddings' must be a positive integer", where);
    if (!has_factor) factor = (double)cfg->max_position_embeddings / original; /* as transformers derives it */
    if (!(factor > 0))
        return mt_errf(err, "config.json: '%sfactor' must be positive (yarn)", where);
    if (has_attention && !(attention > 0))
        return mt_errf(err, "config.json: '%sattention_factor' must be positive", where);
    if (!has_attention)
        attention = mscale != 0 && mscale_all != 0 ? yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all)
                                                   : yarn_mscale(factor, 1.0);
    if (beta_fast == 0) beta_fast = 32; /* transformers: `or 32`, `or 1` */
    if (beta_slow == 0) beta_slow = 1;
    const int dim = cfg->head_dim, pairs = dim / 2;
    const double base = cfg->rope_theta;
    double low = correction_dim(beta_fast, dim, base, original), high = correction_dim(beta_slow, dim, base, original);
    if (truncate) {
        low = floor(low);
        high = ceil(high);
    }
    if (low < 0) low = 0;
    if (high > dim - 1) high = dim - 1;
    if (low == high) high += 0.001; /* as transformers: no division by zero */
    for (int i = 0; i < pairs; i++) {
        double pos_freq = pow(base, (double)(2 * i) / dim);
        double ramp = ((double)i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double keep = 1.0 - ramp; /* the share of the extrapolated (unscaled) frequency */
        cfg->rope_inv_freq[i] = (float)(1.0 / (factor * pos_freq) * (1.0 - keep) + 1.0 / pos_freq * keep);
    }
    cfg->rope_factor = factor;
    cfg->rope_original_max_positions = (int)original;
    cfg->rope_attention_factor = (float)attention;
    return 0;
}

int mt_rope_config_parse(mt_config *cfg, const cJSON *root, float default_theta, mt_err *err) {
    cfg->rope_theta = default_theta;
    if (mt_json_float(root, "rope_theta", &cfg->rope_theta, err) < 0) return -1;
    if (check_partial_rotary(root, "", err)) return -1;
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const cJSON *scaling = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *objs[2] = {params, scaling};
    for (int i = 0; i < 2; i++) {
        const cJSON *o = objs[i];
        const char *key = i ? "rope_scaling" : "rope_parameters";
        if (!o || cJSON_IsNull(o)) continue;
        if (!cJSON_IsObject(o)) return mt_errf(err, "config.json: '%s' must be an object", key);
        /* transformers 5 nests the parameters per attention type for models that mix types */
        const cJSON *it;
        cJSON_ArrayForEach(it, o) {
            if (cJSON_IsObject(it))
                return mt_errf(err, "config.json: '%s' holds per-layer-type parameters ('%s'), which are not supported",
                               key, it->string);
        }
        float theta;
        if (mt_json_float(o, "rope_theta", &theta, err) < 0) return -1;
        char where[32];
        snprintf(where, sizeof where, "%s.", key);
        if (check_partial_rotary(o, where, err)) return -1;
        mt_rope_type t;
        if (type_of(o, key, &t, err)) return -1;
    }
    /* The rotary parameters are read from one object, as transformers 5 does: rope_scaling when it holds
     * any key, else rope_parameters; its rope_theta overrides the top-level one. (transformers 4 reads
     * neither object's rope_theta, and ignores rope_parameters.) */
    const bool from_scaling = cJSON_IsObject(scaling) && scaling->child;
    const cJSON *used = from_scaling ? scaling : params;
    if (cJSON_IsObject(used) && mt_json_float(used, "rope_theta", &cfg->rope_theta, err) < 0) return -1;
    if (!(cfg->rope_theta > 0.0f) || isinf(cfg->rope_theta))
        return mt_errf(err, "config.json: rope_theta must be a positive finite number");
    if (cfg->head_dim / 2 > MT_MAX_ROPE_PAIRS)
        return mt_errf(err, "config.json: head_dim %d is over the %d moetrace rotates", cfg->head_dim,
                       2 * MT_MAX_ROPE_PAIRS);
    const char *where = from_scaling ? "rope_scaling." : "rope_parameters.";
    cfg->rope_type = MT_ROPE_DEFAULT;
    if (cJSON_IsObject(used) && type_of(used, where, &cfg->rope_type, err)) return -1;
    cfg->rope_factor = 1.0;
    cfg->rope_original_max_positions = 0;
    cfg->rope_attention_factor = 1.0f;
    const int pairs = cfg->head_dim / 2;
    for (int i = 0; i < pairs; i++) cfg->rope_inv_freq[i] = default_inv_freq(cfg->rope_theta, i, cfg->head_dim);
    if (cfg->rope_type == MT_ROPE_LINEAR) {
        double factor = 0;
        int has = number(used, "factor", where, &factor, err);
        if (has < 0) return -1;
        if (!has || !(factor > 0)) return mt_errf(err, "config.json: '%sfactor' must be a positive number (linear)", where);
        cfg->rope_factor = factor;
        for (int i = 0; i < pairs; i++) cfg->rope_inv_freq[i] /= (float)factor; /* in float, as transformers */
    } else if (cfg->rope_type == MT_ROPE_YARN) {
        if (parse_yarn(cfg, used, where, err)) return -1;
    }
    return 0;
}

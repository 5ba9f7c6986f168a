/* Helpers for tests against the transformers fixtures (tests/fixtures/make_fixtures.py): reading
 * the reference arrays, logits relative error, routing-set agreement. Header-only; include after
 * cmocka.h. */
#ifndef MT_TESTS_REFERENCE_COMMON_H
#define MT_TESTS_REFERENCE_COMMON_H

#include <math.h>
#include <stdio.h>

#include "model/config.h"
#include "util/npy.h"

#define FIXTURES MT_SOURCE_DIR "/tests/fixtures/models"

static const char *ARCHS[] = {"qwen3_moe", "qwen2_moe", "mixtral", "olmoe"};
static const char *PROMPTS[] = {"short", "long"};

static void load_npy(const char *dir, const char *what, const char *prompt, mt_npy *out) {
    char path[512];
    mt_err err;
    snprintf(path, sizeof path, "%s/ref_%s_%s.npy", dir, what, prompt);
    if (mt_npy_read(path, out, &err)) fail_msg("%s", err.msg);
}

static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

/* Fraction of (token, layer) pairs of MoE layers whose expert sets agree; also requires -1
 * exactly on dense layers. */
static double routing_agreement(const int32_t *ours, const int32_t *ref, int rows, int layers, int k,
                                const mt_config *c) {
    long same = 0, total = 0;
    for (int t = 0; t < rows; t++) {
        for (int l = 0; l < layers; l++) {
            const int32_t *a = ours + ((size_t)t * layers + l) * k, *b = ref + ((size_t)t * layers + l) * k;
            if (!c->layer_is_moe[l]) {
                for (int j = 0; j < k; j++) assert_int_equal(a[j], -1);
                assert_int_equal(b[0], -1);
                continue;
            }
            int match = 0;
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) match += a[i] == b[j];
            same += match == k;
            total++;
        }
    }
    return (double)same / (double)total;
}

#endif

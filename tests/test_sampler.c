/* Sampling: greedy is argmax; top-k / top-p restrict the support; a seed reproduces a run;
 * frequencies follow the softmax of logits / temperature. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "engine/sampler.h"

static const float LOGITS[6] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f};

static void test_greedy(void **state) {
    (void)state;
    mt_sampler s;
    mt_sampling_params p = {.temperature = 0.0f, .top_p = 1.0f};
    assert_int_equal(mt_sampler_init(&s, &p, 6), 0);
    for (int i = 0; i < 10; i++) assert_int_equal(mt_sample(&s, LOGITS), 1);
    mt_sampler_free(&s);
    float tie[3] = {2.0f, 5.0f, 5.0f};
    assert_int_equal(mt_argmax(tie, 3), 1);
}

static void test_top_k_and_top_p_support(void **state) {
    (void)state;
    mt_sampler s;
    mt_sampling_params p = {.temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .seed = 3};
    assert_int_equal(mt_sampler_init(&s, &p, 6), 0);
    for (int i = 0; i < 500; i++) {
        int t = mt_sample(&s, LOGITS);
        assert_true(t == 1 || t == 5);
    }
    mt_sampler_free(&s);
    /* top_p 0.3: the most likely token alone already carries more than 30% */
    mt_sampling_params q = {.temperature = 1.0f, .top_p = 0.3f, .seed = 3};
    assert_int_equal(mt_sampler_init(&s, &q, 6), 0);
    for (int i = 0; i < 200; i++) assert_int_equal(mt_sample(&s, LOGITS), 1);
    mt_sampler_free(&s);
}

static void test_seed_reproduces(void **state) {
    (void)state;
    mt_sampler a, b, c;
    mt_sampling_params p = {.temperature = 0.8f, .top_p = 0.95f, .top_k = 5, .seed = 42};
    mt_sampling_params q = p;
    q.seed = 43;
    assert_int_equal(mt_sampler_init(&a, &p, 6), 0);
    assert_int_equal(mt_sampler_init(&b, &p, 6), 0);
    assert_int_equal(mt_sampler_init(&c, &q, 6), 0);
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        int x = mt_sample(&a, LOGITS);
        assert_int_equal(x, mt_sample(&b, LOGITS));
        differ += x != mt_sample(&c, LOGITS);
    }
    assert_true(differ > 0);
    mt_sampler_free(&a);
    mt_sampler_free(&b);
    mt_sampler_free(&c);
}

static void test_frequencies(void **state) {
    (void)state;
    const float T = 0.7f;
    mt_sampler s;
    mt_sampling_params p = {.temperature = T, .top_p = 1.0f, .seed = 7};
    assert_int_equal(mt_sampler_init(&s, &p, 6), 0);
    int counts[6] = {0};
    const int N = 200000;
    for (int i = 0; i < N; i++) counts[mt_sample(&s, LOGITS)]++;
    double z = 0, prob[6];
    for (int i = 0; i < 6; i++) z += exp(LOGITS[i] / T);
    for (int i = 0; i < 6; i++) {
        prob[i] = exp(LOGITS[i] / T) / z;
        double f = (double)counts[i] / N, sd = sqrt(prob[i] * (1 - prob[i]) / N);
        assert_true(fabs(f - prob[i]) < 5 * sd + 1e-4);
    }
    mt_sampler_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_top_k_and_top_p_support),
        cmocka_unit_test(test_seed_reproduces),
        cmocka_unit_test(test_frequencies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

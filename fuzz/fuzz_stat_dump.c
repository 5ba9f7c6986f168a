/* Fuzz target: the stat dump reader (routing/stat_dump.c, with the placement it may embed). A dump
 * that loads has ascending MoE layers inside the model, non-negative counts, and physical counts
 * that add up to the logical ones per expert. */
#include "fuzz_util.h"
#include "routing/stat_dump.h"

static void check(const mt_stat_dump *d) {
    FUZZ_CHECK(d->num_hidden_layers > 0 && d->num_experts > 0 && d->model);
    FUZZ_CHECK(d->num_moe_layers > 0 && d->num_moe_layers <= d->num_hidden_layers);
    for (int m = 0; m < d->num_moe_layers; m++) {
        FUZZ_CHECK(d->moe_layers[m] >= 0 && d->moe_layers[m] < d->num_hidden_layers);
        FUZZ_CHECK(m == 0 || d->moe_layers[m] > d->moe_layers[m - 1]);
        for (int e = 0; e < d->num_experts; e++) FUZZ_CHECK(d->moe_count[(size_t)m * d->num_experts + e] >= 0);
    }
    const mt_placement *p = d->placement;
    FUZZ_CHECK(!p == !d->phys_count);
    if (!p) return;
    FUZZ_CHECK(p->num_experts == d->num_experts && p->num_moe_layers == d->num_moe_layers);
    for (int m = 0; m < d->num_moe_layers; m++) {
        for (int e = 0; e < d->num_experts; e++) {
            int64_t sum = 0;
            for (int s = 0; s < p->num_physical; s++)
                if (p->phy2log[(size_t)m * p->num_physical + s] == e) sum += d->phys_count[(size_t)m * p->num_physical + s];
            FUZZ_CHECK(sum == d->moe_count[(size_t)m * d->num_experts + e]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mt_stat_dump d;
    mt_err err = {{0}};
    if (mt_stat_dump_parse((const char *)data, size, "dump.json", &d, &err) == 0) {
        check(&d);
        mt_moe_shape shape;
        if (mt_moe_shape_from_dump(&d, &shape, &err) == 0) FUZZ_CHECK(shape.num_moe_layers == d.num_moe_layers);
        mt_stat_dump_free(&d);
    } else {
        FUZZ_CHECK(strstr(err.msg, "dump.json") != NULL);
    }
    return 0;
}

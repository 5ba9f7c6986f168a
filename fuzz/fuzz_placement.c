/* Fuzz target: loading an expert placement (routing/placement.c mt_placement_load): a
 * moetrace.placement.v1 file, or a stat dump planned with EPLB, for three model shapes (4 hidden
 * layers, 8 experts; MoE layers 1-3, all, or 0, 2, 3) and several --ep-size / redundancy options. A placement
 * that loads dispatches every expert to one of its own replicas, and survives a JSON round trip. */
#include "fuzz_util.h"
#include "routing/placement.h"

static const mt_moe_shape SHAPES[] = {
    {.num_hidden_layers = 4, .num_experts = 8, .num_moe_layers = 3, .moe_layers = {1, 2, 3}},
    {.num_hidden_layers = 4, .num_experts = 8, .num_moe_layers = 4, .moe_layers = {0, 1, 2, 3}},
    {.num_hidden_layers = 4, .num_experts = 8, .num_moe_layers = 3, .moe_layers = {0, 2, 3}},
};
static const mt_placement_opts OPTS[] = {{0, -1}, {4, -1}, {2, 4}};

static void check(const mt_placement *p, const mt_moe_shape *s) {
    FUZZ_CHECK(p->num_physical >= p->num_experts && p->num_physical % p->num_gpus == 0);
    for (int m = 0; m < s->num_moe_layers; m++) {
        int layer = s->moe_layers[m];
        for (int32_t e = 0; e < p->num_experts; e++) {
            for (int32_t tok = 0; tok < 3; tok++) {
                int32_t slot = mt_placement_slot(p, layer, e, tok * 7919, tok);
                FUZZ_CHECK(slot >= 0 && slot < p->num_physical);
                FUZZ_CHECK(p->phy2log[(size_t)m * p->num_physical + slot] == e);
                FUZZ_CHECK(mt_placement_gpu_of(p, slot) < p->num_gpus);
            }
        }
    }
    cJSON *j = mt_placement_to_json(p);
    FUZZ_CHECK(j != NULL);
    mt_placement q;
    mt_err err = {{0}};
    if (mt_placement_from_json(j, "round trip", s, p->num_gpus, &q, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    FUZZ_CHECK(q.num_physical == p->num_physical && q.max_replicas == p->max_replicas);
    FUZZ_CHECK(!memcmp(q.phy2log, p->phy2log, (size_t)s->num_moe_layers * p->num_physical * sizeof *q.phy2log));
    mt_placement_free(&q);
    cJSON_Delete(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    int fd = fuzz_memfd(data, size, path, sizeof path);
    for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++) {
        for (size_t o = 0; o < sizeof OPTS / sizeof *OPTS; o++) {
            mt_placement p;
            mt_err err = {{0}};
            if (mt_placement_load(path, &SHAPES[s], &OPTS[o], &p, &err) == 0) {
                check(&p, &SHAPES[s]);
                mt_placement_free(&p);
            } else {
                FUZZ_CHECK(err.msg[0] != '\0');
            }
        }
    }
    close(fd);
    return 0;
}

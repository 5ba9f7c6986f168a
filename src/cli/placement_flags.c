/* --ep-size, --init-expert-location, --ep-num-redundant-experts (see placement_flags.h). */
#include "cli/placement_flags.h"

#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "util/err.h"

const char MT_PLACEMENT_FLAGS_HELP[] =
    "  --ep-size M            expert parallelism over M GPUs (virtual on the CPU): every routed token is\n"
    "                         dispatched to a replica and per-GPU load is recorded; alone: the trivial\n"
    "                         placement (M contiguous blocks of experts)\n"
    "  --init-expert-location FILE|trivial  the placement to run: a placement JSON from `moetrace eplb`\n"
    "                         (M = its num_gpus) or a stat dump, planned with EPLB at start-up (needs M)\n"
    "  --ep-num-redundant-experts N  redundant experts when planning from a stat dump (default 0)\n";

void mt_placement_flags_init(mt_placement_flags *f) {
    f->ep_size = 0;
    f->location = NULL;
    f->num_redundant = -1;
}

int mt_placement_flags_parse(mt_placement_flags *f, int argc, char **argv, int *i) {
    const char *flag = argv[*i], *v;
    int which = !strcmp(flag, "--ep-size") ? 1 : !strcmp(flag, "--init-expert-location") ? 2
              : !strcmp(flag, "--ep-num-redundant-experts")                             ? 3
                                                                                        : 0;
    if (!which) return 0;
    if (!(v = mt_arg_value(argc, argv, i))) return -1;
    if (which == 1) return mt_arg_int(flag, v, 1, 1 << 16, &f->ep_size) ? -1 : 1;
    if (which == 3) return mt_arg_int(flag, v, 0, 1 << 20, &f->num_redundant) ? -1 : 1;
    if (!*v) {
        fprintf(stderr, "moetrace: --init-expert-location: empty path\n");
        return -1;
    }
    f->location = v;
    return 1;
}

int mt_placement_flags_load(const mt_placement_flags *f, const mt_config *c, mt_placement *p) {
    memset(p, 0, sizeof *p);
    if (!f->ep_size && !f->location) {
        if (f->num_redundant >= 0) {
            fprintf(stderr, "moetrace: --ep-num-redundant-experts needs --init-expert-location\n");
            return -1;
        }
        return 0;
    }
    mt_moe_shape shape;
    mt_moe_shape_from_config(c, &shape);
    mt_placement_opts o = {.ep_size = f->ep_size, .num_redundant = f->num_redundant};
    mt_err err = {{0}};
    if (mt_placement_load(f->location ? f->location : "trivial", &shape, &o, p, &err)) {
        fprintf(stderr, "moetrace: %s: %s\n", f->location ? "--init-expert-location" : "--ep-size", err.msg);
        return -1;
    }
    char replicas[48];
    if (p->max_replicas == 1) snprintf(replicas, sizeof replicas, "one replica each");
    else snprintf(replicas, sizeof replicas, "up to %d replicas", p->max_replicas);
    mt_log("placement (%s): %d experts -> %d physical slots on %d GPUs (%d per GPU), %s", p->source, p->num_experts,
           p->num_physical, p->num_gpus, p->slots_per_gpu, replicas);
    return 1;
}

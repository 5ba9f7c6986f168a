/* The flags that make the engine run an expert placement, shared by `run`, `profile` (and `serve`):
 *
 *   --ep-size M                          expert-parallel size: M GPUs (virtual on the CPU)
 *   --init-expert-location FILE|trivial  placement JSON (moetrace.placement.v1) or stat dump, planned
 *                                        with EPLB at start-up, as SGLang's flag of that name
 *   --ep-num-redundant-experts N         redundant experts when planning from a stat dump (default 0)
 *
 * --ep-size alone runs the trivial placement (expert e in slot e, M contiguous blocks). Parsing and
 * loading only; the placement itself is routing/placement.h. Errors print "moetrace: ..." to stderr. */
#ifndef MT_CLI_PLACEMENT_FLAGS_H
#define MT_CLI_PLACEMENT_FLAGS_H

#include "model/config.h"
#include "routing/placement.h"

typedef struct mt_placement_flags {
    int ep_size;          /* 0: not given */
    const char *location; /* NULL: not given */
    int num_redundant;    /* -1: not given */
} mt_placement_flags;

/* Help lines for the flags, for a command's --help. */
extern const char MT_PLACEMENT_FLAGS_HELP[];

void mt_placement_flags_init(mt_placement_flags *f);
/* When argv[*i] is one of the flags: takes its value (advancing *i) and returns 1, or prints the
 * error and returns -1. Returns 0 for any other argument. */
int mt_placement_flags_parse(mt_placement_flags *f, int argc, char **argv, int *i);
/* Builds the placement the flags ask for, for model config c: returns 1 with p filled (free it with
 * mt_placement_free), 0 when no placement was asked for, -1 after printing the error. */
int mt_placement_flags_load(const mt_placement_flags *f, const mt_config *c, mt_placement *p);

#endif

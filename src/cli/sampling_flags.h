/* The sampling flags shared by `run` and `profile`:
 *
 *   --temperature T  --top-p P  --top-k K  --min-p P  --seed S
 *   --repetition-penalty R  --frequency-penalty F  --presence-penalty P  --min-new-tokens N
 *
 * with the ranges and meanings of the server's sampling parameters (docs/API.md; the penalties:
 * engine/penalties.h). Parsing only. Errors print "moetrace: FLAG: ..." to stderr. */
#ifndef MT_CLI_SAMPLING_FLAGS_H
#define MT_CLI_SAMPLING_FLAGS_H

#include "engine/sampler.h"

/* Help lines for the flags, for a command's --help. */
extern const char MT_SAMPLING_FLAGS_HELP[];

/* Greedy, no filter, no penalty, seed 0. */
void mt_sampling_flags_init(mt_sampling_params *p);
/* When argv[*i] is one of the flags: takes its value (advancing *i) and returns 1, or prints the
 * error and returns -1. Returns 0 for any other argument. */
int mt_sampling_flags_parse(mt_sampling_params *p, int argc, char **argv, int *i);

#endif

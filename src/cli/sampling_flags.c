/* Sampling flags of run and profile. See sampling_flags.h. */
#include "cli/sampling_flags.h"

#include <string.h>

#include "cli/args.h"

const char MT_SAMPLING_FLAGS_HELP[] =
    "  --temperature T        0 = greedy (default 0)\n"
    "  --top-p P              nucleus sampling mass (default 1 = off)\n"
    "  --top-k K              keep the K most likely tokens (default 0 = off)\n"
    "  --min-p P              keep tokens at least P times as likely as the top one (default 0 = off)\n"
    "  --seed S               sampling seed (default 0)\n"
    "  --repetition-penalty R  in (0, 2]: logits of the prompt's and output's tokens divided by R\n"
    "                         (multiplied where negative) (default 1 = off)\n"
    "  --frequency-penalty F  in [-2, 2]: minus F for each time the output holds a token (default 0)\n"
    "  --presence-penalty P   in [-2, 2]: minus P for each token the output holds (default 0)\n"
    "  --min-new-tokens N     eos barred until N tokens are out (default 0)\n";

void mt_sampling_flags_init(mt_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

int mt_sampling_flags_parse(mt_sampling_params *p, int argc, char **argv, int *i) {
    const char *f = argv[*i], *v;
    float *fl = NULL;
    double lo = 0, hi = 0;
    if (!strcmp(f, "--temperature")) fl = &p->temperature, lo = 0, hi = 100;
    else if (!strcmp(f, "--top-p")) fl = &p->top_p, lo = 1e-6, hi = 1;
    else if (!strcmp(f, "--min-p")) fl = &p->min_p, lo = 0, hi = 1;
    else if (!strcmp(f, "--repetition-penalty")) fl = &p->repetition_penalty, lo = 1e-6, hi = 2;
    else if (!strcmp(f, "--frequency-penalty")) fl = &p->frequency_penalty, lo = -2, hi = 2;
    else if (!strcmp(f, "--presence-penalty")) fl = &p->presence_penalty, lo = -2, hi = 2;
    else if (strcmp(f, "--top-k") && strcmp(f, "--seed") && strcmp(f, "--min-new-tokens")) return 0;
    if (!(v = mt_arg_value(argc, argv, i))) return -1;
    if (fl) return mt_arg_float(f, v, lo, hi, fl) ? -1 : 1;
    if (!strcmp(f, "--top-k")) return mt_arg_int(f, v, 0, 1 << 30, &p->top_k) ? -1 : 1;
    if (!strcmp(f, "--min-new-tokens")) return mt_arg_int(f, v, 0, 1 << 20, &p->min_new_tokens) ? -1 : 1;
    return mt_arg_u64(f, v, &p->seed) ? -1 : 1;
}

/* How groups of requests (a dataset's domains) differ in their use of the experts, from per-group
 * logical counts [layers, experts] and the counts of all traffic (the groups and the tokens of no
 * group). Definitions, per MoE layer l (docs/RECORDER.md, "Expert usage per domain"):
 *   share_g(e)  = count_g(l, e) / sum_e count_g(l, e)      (sum = the group's tokens x top_k)
 *   rest        = all traffic's counts less the group's
 *   lift_g(e)   = share_g(e) / share_all(e)                 (1: used as in all traffic; undefined,
 *                                                            so null, where share_all(e) is 0)
 *   divergence  = Jensen-Shannon divergence of share_g and share_rest, in bits (0 same use, 1 disjoint
 *                 experts); null when the group or the rest has no tokens at that layer
 *   distinctive = the experts with the largest share_g(e) - share_rest(e) > 0, at most top_n; none
 *                 when the group or the rest has no tokens at that layer.
 * Dense layers have null entries. */
#ifndef MT_ROUTING_USAGE_COMPARE_H
#define MT_ROUTING_USAGE_COMPARE_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

typedef struct mt_usage_groups {
    int num_groups, num_layers, num_experts;
    const char *const *names;  /* [num_groups] */
    const int64_t *requests;   /* [num_groups] requests of each group, or NULL when not known */
    const int64_t *tokens;     /* [num_groups] tokens forwarded of each group, -1 where not known */
    const int64_t *count;      /* [num_groups, num_layers, num_experts] */
    const int64_t *all;        /* [num_layers, num_experts]: every token's count, groups' or not */
    const bool *layer_is_moe;  /* [num_layers] */
} mt_usage_groups;

/* Jensen-Shannon divergence (bits) of the distributions p and q gives (each normalised by its
 * sum); -1 when either sums to 0. */
double mt_usage_js_divergence(const int64_t *p, const int64_t *q, int n);

/* {"groups": [{"name", "requests" (when known), "tokens" (null when not known), "divergence_mean",
 *   "divergence_per_layer", "distinctive_experts_per_layer": [null | [{"expert", "share",
 *   "share_rest", "lift"}]]}],
 *  "mean_divergence_per_layer": [...]}; NULL when out of memory or a group's counts exceed all's. */
cJSON *mt_usage_compare_json(const mt_usage_groups *u, int top_n);

/* Group g's divergence averaged over the MoE layers that have one (-1 when none has); rest is
 * scratch room for num_experts counts. Layers where g counted more than all traffic are skipped. */
double mt_usage_divergence_mean(const mt_usage_groups *u, int g, int64_t *rest);

/* lift_g(e) at layer l (g's share over all traffic's); -1 where all traffic has no count there
 * or the group has no tokens at that layer. */
double mt_usage_lift(const mt_usage_groups *u, int g, int l, int e);

#endif

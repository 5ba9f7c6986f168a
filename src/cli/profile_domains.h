/* Expert usage per domain for `moetrace profile --domain-field F`: one stat recorder per distinct
 * label of the dataset (the records' field F), fed through a split sink (routing/routing_split.h)
 * with the tokens of that domain's requests, so each domain's counts are exactly its forwarded
 * tokens' and the domains' counts with the unlabelled requests' add up to the whole run's. After
 * the run it writes, under the profile's --out:
 *   domains/<slug>/expert_distribution_<ms>.json   each domain's stat dump (SPEC §4)
 *   domains.json     "moetrace.domain_usage.v1": per domain its dump, requests, tokens, divergence
 *                    from the rest of the traffic per layer and distinctive experts
 *                    (routing/usage_compare.h)
 *   domains.png      each domain's lift heatmap (report/usage_report.h), up to 32 domains
 * Request ids given to the engine must be the dataset's record indices. */
#ifndef MT_CLI_PROFILE_DOMAINS_H
#define MT_CLI_PROFILE_DOMAINS_H

#include <stddef.h>
#include <stdint.h>

#include "cli/dataset.h"
#include "model/config.h"
#include "routing/capture.h"
#include "routing/recorder.h"
#include "util/err.h"

#define MT_PROFILE_MAX_DOMAINS 256

typedef struct mt_profile_domains mt_profile_domains;

/* field: the dataset field that labelled d's records; base: the options of the run's stat
 * recorder (mode, ep size, placement; the dump dir is replaced). Errors when no record has a
 * label, or when there are more than MT_PROFILE_MAX_DOMAINS distinct labels. The labels are
 * copied; field, data_path, cfg, model_name, out_dir and base's placement are not, and must
 * outlive the result. */
mt_profile_domains *mt_profile_domains_new(const mt_dataset *d, const char *field, const char *data_path,
                                           const mt_config *cfg, const char *model_name,
                                           const mt_recorder_opts *base, const char *out_dir, mt_err *err);
mt_routing_sink mt_profile_domains_sink(mt_profile_domains *p);
/* Writes the files above; all_count: the whole run's logical counts [num_hidden_layers, num_experts].
 * The path of domains.json goes to json_path. */
int mt_profile_domains_write(mt_profile_domains *p, const int64_t *all_count, char *json_path, size_t json_path_len,
                             mt_err *err);
void mt_profile_domains_free(mt_profile_domains *p);

#endif

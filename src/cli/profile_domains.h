/* The domains of a dataset for `moetrace profile --domain-field F` (and the demo's step 6): the
 * domain usage report (report/domain_usage.h) with a group for each distinct label of the records'
 * field F, and each record's group for its engine request (mt_request.group; 0: no label). Request
 * ids are not used: the groups travel with the requests. */
#ifndef MT_CLI_PROFILE_DOMAINS_H
#define MT_CLI_PROFILE_DOMAINS_H

#include <stdint.h>

#include "cli/dataset.h"
#include "model/config.h"
#include "report/domain_usage.h"
#include "routing/recorder.h"
#include "util/err.h"

/* groups: [d->n], receives each record's group. Errors when no record has a label, or when there
 * are more than MT_DOMAIN_MAX distinct labels. The result is started (recording). Requests are not
 * counted here: the caller counts each one for domains.json's "requests" when it has run
 * (mt_domain_usage_count_request from its engine events), so a run cut short counts only the
 * requests that forwarded tokens. */
mt_domain_usage *mt_profile_domains_new(const mt_dataset *d, const char *field, const char *data_path,
                                        const mt_config *cfg, const char *model_name, const mt_recorder_opts *base,
                                        int32_t *groups, mt_err *err);

#endif

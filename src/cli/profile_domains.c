/* The domains of a dataset: see profile_domains.h. */
#include "cli/profile_domains.h"

mt_domain_usage *mt_profile_domains_new(const mt_dataset *d, const char *field, const char *data_path,
                                        const mt_config *cfg, const char *model_name, const mt_recorder_opts *base,
                                        int32_t *groups, mt_err *err) {
    mt_domain_usage *u = mt_domain_usage_new(cfg, model_name, base, field, data_path, err);
    if (!u) return NULL;
    int labelled = 0;
    mt_domain_usage_start(u);
    for (int i = 0; i < d->n; i++) {
        groups[i] = 0;
        if (d->domains[i]) {
            mt_err e;
            int g = mt_domain_usage_group(u, d->domains[i], &e);
            if (g < 0 && mt_domain_usage_num_domains(u) == MT_DOMAIN_MAX) {
                mt_errf(err, "--domain-field %s: %s has more than %d distinct values", field, data_path, MT_DOMAIN_MAX);
                goto fail;
            }
            if (g < 0) {
                mt_errf(err, "--domain-field %s: %s line %d: %s", field, data_path, d->lines[i], e.msg);
                goto fail;
            }
            groups[i] = g;
            labelled++;
        }
    }
    if (labelled == 0) {
        mt_errf(err, "--domain-field %s: no line of %s has that field", field, data_path);
        goto fail;
    }
    return u;
fail:
    mt_domain_usage_free(u);
    return NULL;
}

/* Reader of the placement JSON written by `moetrace eplb` (SPEC §6). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "report/report.h"
#include "util/json_util.h"

#define PLACEMENT_FORMAT "moetrace.placement.v1"

void mt_placement_free(mt_placement *p) {
    if (!p) return;
    free(p->phy2log);
    free(p->logcnt);
    memset(p, 0, sizeof *p);
}

int mt_placement_load(const char *path, int num_experts, mt_placement *p, mt_err *err) {
    memset(p, 0, sizeof *p);
    cJSON *root = mt_json_load_file(path, err);
    if (!root) return -1;
    int rc = -1;
    const char *fmt = NULL;
    if (!cJSON_IsObject(root)) {
        mt_errf(err, "%s: not a JSON object", path);
        goto out;
    }
    if (mt_json_string(root, "format", &fmt, err) != 1 || strcmp(fmt, PLACEMENT_FORMAT) != 0) {
        mt_errf(err, "%s: \"format\" must be \"%s\"", path, PLACEMENT_FORMAT);
        goto out;
    }
    if (mt_json_int(root, "num_gpus", &p->num_gpus, err) != 1 || p->num_gpus < 1) {
        mt_errf(err, "%s: \"num_gpus\" must be a positive integer", path);
        goto out;
    }
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "physical_to_logical_map");
    if (!cJSON_IsArray(map) || cJSON_GetArraySize(map) < 1) {
        mt_errf(err, "%s: \"physical_to_logical_map\" must be a non-empty array of rows", path);
        goto out;
    }
    p->num_layers = cJSON_GetArraySize(map);
    p->num_physical = cJSON_GetArraySize(cJSON_GetArrayItem(map, 0));
    p->num_experts = num_experts;
    if (p->num_physical < 1 || p->num_physical % p->num_gpus != 0) {
        mt_errf(err, "%s: physical_to_logical_map rows have %d slots, not a positive multiple of "
                     "num_gpus %d", path, p->num_physical, p->num_gpus);
        goto out;
    }
    p->phy2log = calloc((size_t)p->num_layers * p->num_physical, sizeof *p->phy2log);
    p->logcnt = calloc((size_t)p->num_layers * num_experts, sizeof *p->logcnt);
    if (!p->phy2log || !p->logcnt) {
        mt_errf(err, "%s: out of memory", path);
        goto out;
    }
    int l = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, map) {
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != p->num_physical) {
            mt_errf(err, "%s: physical_to_logical_map[%d] must be an array of %d slots", path, l,
                    p->num_physical);
            goto out;
        }
        int s = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, row) {
            double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (x < 0 || x >= num_experts || x != (int)x) {
                mt_errf(err, "%s: physical_to_logical_map[%d][%d] must be an expert index in [0, %d)",
                        path, l, s, num_experts);
                goto out;
            }
            p->phy2log[(size_t)l * p->num_physical + s] = (int32_t)x;
            p->logcnt[(size_t)l * num_experts + (int)x]++;
            s++;
        }
        for (int e = 0; e < num_experts; e++)
            if (p->logcnt[(size_t)l * num_experts + e] < 1) {
                mt_errf(err, "%s: physical_to_logical_map[%d] has no slot for expert %d", path, l, e);
                goto out;
            }
        l++;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc) mt_placement_free(p);
    return rc;
}

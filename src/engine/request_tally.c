/* The requests of a profile run as summary.json counts them: see request_tally.h. */
#include "engine/request_tally.h"

bool mt_request_tally_add(mt_request_tally *t, const mt_engine_event *ev) {
    if (ev->kind != MT_EVENT_FINISHED) return false;
    int prompt = ev->n_prompt, cached = ev->n_cached;
    if (ev->reason == MT_FINISH_CANCELLED) {
        t->cancelled++;
        if (ev->routing_rows <= cached) { /* nothing forwarded of its own */
            t->cancelled_unforwarded++;
            return false;
        }
        if (ev->routing_rows < prompt) prompt = ev->routing_rows; /* cancelled within its prompt */
    }
    t->requests++;
    t->prompt_tokens += prompt;
    t->cached += cached < prompt ? cached : prompt;
    t->generated_tokens += ev->n_generated;
    return true;
}

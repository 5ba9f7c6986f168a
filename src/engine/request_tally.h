/* What a run's requests forwarded, counted from the engine's FINISHED events (`moetrace profile`'s
 * summary.json and its domains' requests, docs/RECORDER.md): a request that finished counts whole;
 * one cancelled (the run interrupted) counts only for what it forwarded, and one that forwarded
 * nothing of its own (still queued, or holding only prompt tokens adopted from the prefix cache)
 * does not count at all, so the figures cover the tokens the recorder's dumps hold. Plain counting
 * on the caller's thread. */
#ifndef MT_ENGINE_REQUEST_TALLY_H
#define MT_ENGINE_REQUEST_TALLY_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct mt_request_tally {
    int64_t requests;              /* counted: finished, or cancelled after forwarding a token */
    int64_t prompt_tokens;         /* theirs, forwarded or adopted from the prefix cache (a cancelled
                                      request's: those its routing covers) */
    int64_t cached;                /* of prompt_tokens: adopted from the prefix cache */
    int64_t generated_tokens;      /* theirs */
    int64_t cancelled;             /* requests cancelled, counted or not */
    int64_t cancelled_unforwarded; /* of those: forwarded nothing of their own, not counted */
} mt_request_tally;

/* Counts ev into t when it is a FINISHED event (other events are ignored). A cancelled request's
 * share is read from its routing (routing_rows: the positions it forwarded or adopted), so the
 * engine must keep routing (mt_engine_opts.no_routing false). Returns true when the request was
 * counted in t->requests (what domains.json's "requests" count too). */
bool mt_request_tally_add(mt_request_tally *t, const mt_engine_event *ev);

#endif

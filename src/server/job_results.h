/* Engine events written into a job's results, on the engine thread (engine_loop.c finds the job by
 * the event's id): each token with its log-probability and the text decoded so far (a stop token's
 * text left out unless no_stop_trim), cut at the first stop string (matched in the text decoded with
 * special tokens kept, as SGLang matches them; with min_new_tokens only a stop string that ends in
 * the text of a later token) and held back where a stop string could be starting
 * (text_stable never ends inside one, nor inside a UTF-8 character); at the end the finish reason
 * and the routing in the requested wire dtype. Each takes the job's mutex and announces the change
 * (mt_gen_job_changed). */
#ifndef MT_SERVER_JOB_RESULTS_H
#define MT_SERVER_JOB_RESULTS_H

#include <stdbool.h>

#include "engine/engine.h"
#include "model/config.h"
#include "server/gen_job.h"
#include "server/metrics.h"

/* A new token (MT_EVENT_TOKEN) at time now (mt_now_s). *first: it is the job's first token; *since:
 * seconds since the job arrived (first) or since its last token, for the latency metrics. Returns
 * true when the text now holds a stop string: the caller cancels the sequence. */
bool mt_job_take_token(mt_gen_job *j, const mt_engine_event *ev, double now, bool *first, double *since);

/* The end (MT_EVENT_FINISHED): the outputs as the engine has them, the rest of the text, the finish
 * reason, the routing (rows from params.routing_start on), state FINISHED. Returns the label for the
 * metrics; *e2e: seconds since the job arrived. */
mt_finish_label mt_job_take_end(mt_gen_job *j, const mt_engine_event *ev, const mt_config *c, double *e2e);

#endif

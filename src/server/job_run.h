/* Running a generation job for an HTTP handler: submit and wait for the engine to accept it, wait
 * for the end while watching the client, and the routing of a finished job in its wire form. */
#ifndef MT_SERVER_JOB_RUN_H
#define MT_SERVER_JOB_RUN_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "model/config.h"
#include "server/gen_job.h"
#include "server/http.h"

/* Makes a job of prompt and p (both taken over, whatever happens), with a detokenizer when the
 * server has a tokenizer, submits it and waits until the engine accepted it. The job's name (the id
 * its response must carry) is rid when given and not empty (shorter than MT_JOB_NAME_LEN), else
 * id_prefix followed by 32 hex digits unique to the job (mt_server_response_id); it is set before
 * the engine sees the job. On refusal returns NULL with e: 400 with the engine's reason (ids
 * outside the vocabulary, too long for the KV cache), 503 while draining. The caller owns the
 * returned reference. */
mt_gen_job *mt_job_start(mt_server *s, int32_t *prompt, int n_prompt, mt_gen_params *p, const char *rid,
                         const char *id_prefix, mt_api_error *e);

/* Waits until j finished. When the client goes away meanwhile, cancels j (freeing its sequence
 * and KV blocks), waits for the cancellation and returns false. */
bool mt_job_wait(mt_server *s, mt_gen_job *j, int client_fd);

/* Answers with job j: with stream, server-sent events (mt_reply_sse with format; returns 0, the
 * stream counts itself: 200, or 499 when the client left before its end); else waits for the end
 * (cancelling j when the client goes away: then 499) and answers whole(ctx, j) as JSON, or the
 * job's error (500). Takes over j and ctx (freed with free()). */
typedef cJSON *(*mt_job_json)(void *ctx, const mt_gen_job *j);
int mt_reply_job(mt_http_request *rq, mt_gen_job *j, bool stream, mt_sse_format format, mt_job_json whole, void *ctx);

/* A finished job's error (e.g. the engine failed) as e; false when there is none. j locked. */
bool mt_job_failed(const mt_gen_job *j, mt_api_error *e);

/* The routing of a finished job (mutex held or job finished): base64 of the packed ids, and the
 * shape [rows, num_hidden_layers, top_k]. Adds "<prefix>" (base64), "<prefix>_shape" and
 * "<prefix>_dtype" to obj when flat, else an object {"data", "shape", "dtype"} named prefix. */
void mt_job_add_routing(const mt_gen_job *j, const mt_config *cfg, cJSON *obj, const char *prefix, bool flat);

/* Output token i's log-probability as JSON: the number, -FLT_MAX for a probability of 0 (as SGLang
 * clamps it), null for NaN. j has return_logprob; mutex held or job finished. */
cJSON *mt_job_logprob_json(const mt_gen_job *j, int i);

/* The finish reason of a finished job: SGLang's object ({"type": "length", "length": N},
 * {"type": "stop", "matched": id | "string"}, {"type": "abort", "message": ...}) and OpenAI's
 * string ("length", "stop", "abort"). */
cJSON *mt_job_finish_sglang(const mt_gen_job *j);
const char *mt_job_finish_openai(const mt_gen_job *j);

#endif

/* Running a generation job for an HTTP handler: submit and wait for the engine to accept it, wait
 * for the end while watching the client, and the routing of a finished job in its wire form. */
#ifndef MT_SERVER_JOB_RUN_H
#define MT_SERVER_JOB_RUN_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "model/config.h"
#include "server/gen_job.h"
#include "server/http.h"
#include "server/request_body.h"

/* The jobs of one request, one per output, sharing a change signal. */
typedef struct mt_job_set {
    mt_gen_job **jobs;          /* [n]: output k of the request */
    int n;
    char base[MT_JOB_NAME_LEN]; /* id_prefix and 32 hex digits unique to the request (the OpenAI "id") */
    mt_job_signal *signal;
} mt_job_set;

/* Makes a job for every output of r (its prompt's ids and mt_gen_request_output_params), with a
 * detokenizer when the server has a tokenizer, submits them all and waits until the engine accepted
 * them. Job k's name (the id its response carries, and its name in the recorder's per_token
 * index) is names[k] when names is given and names[k] is not empty, else an id of its own with no
 * prefix; without names, base when there is one output, else base_k. On refusal of any job the
 * others are cancelled and it returns -1 with e: 400 with the engine's reason (ids outside the
 * vocabulary, too long for the KV cache), 503 while draining. The client at client_fd (-1: none) is
 * watched meanwhile: jobs held back by a pause or a weight update wait to be taken in, and when it
 * leaves first they are all cancelled (499). Once they all run, the request is counted once in its
 * domain (serve --domain-field). r stays the caller's. */
int mt_jobs_start(mt_server *s, const mt_gen_request *r, char (*names)[MT_JOB_NAME_LEN], const char *id_prefix,
                  int client_fd, mt_job_set *set, mt_api_error *e);
void mt_job_set_free(mt_job_set *set);

/* Waits until every job finished. When the client goes away meanwhile, cancels them all (freeing
 * their sequences and KV blocks), waits for the cancellations and returns false. */
bool mt_jobs_wait(mt_server *s, const mt_job_set *set, int client_fd);

/* Answers with the jobs: with stream, server-sent events (mt_reply_sse with format and end; returns
 * 0, the stream counts itself: 200, or 499 when the client left before its end); else waits for the
 * end (cancelling the jobs when the client goes away: then 499) and answers whole(ctx, jobs, n) as
 * JSON, or the first job's error (500). Takes over set and ctx (freed with free_ctx, or free() when
 * free_ctx is NULL). */
typedef cJSON *(*mt_job_json)(void *ctx, mt_gen_job *const *jobs, int n);
int mt_reply_jobs(mt_http_request *rq, mt_job_set *set, bool stream, mt_sse_format format, mt_sse_end end,
                  mt_job_json whole, void *ctx, void (*free_ctx)(void *));

/* A finished job's error (e.g. the engine failed) as e; false when there is none. j locked. */
bool mt_job_failed(const mt_gen_job *j, mt_api_error *e);

/* The routing of a finished job (mutex held or job finished): base64 of the packed ids, and the
 * shape [rows, num_hidden_layers, top_k]. Adds "<prefix>" (base64), "<prefix>_shape" and
 * "<prefix>_dtype" to obj when flat, else an object {"data", "shape", "dtype"} named prefix. */
void mt_job_add_routing(const mt_gen_job *j, const mt_config *cfg, cJSON *obj, const char *prefix, bool flat);

/* A log-probability as JSON: the number, -FLT_MAX for a probability of 0 (as SGLang clamps it), null
 * for NaN (none). */
cJSON *mt_logprob_json(float lp);
/* Output token i's log-probability as JSON (mt_logprob_json). j has return_logprob; mutex held or
 * job finished. */
cJSON *mt_job_logprob_json(const mt_gen_job *j, int i);
/* A token's text as the log-probability lists show it: the id decoded alone, special tokens shown
 * (a piece of a UTF-8 character reads as U+FFFD, as the tokenizers library gives it). Malloc'd and
 * NUL-terminated ("" when it cannot be decoded, NULL out of memory); *len its bytes. */
char *mt_token_piece(const mt_tokenizer *tok, int32_t id, size_t *len);

/* The finish reason of a finished job: SGLang's object ({"type": "length", "length": N},
 * {"type": "stop", "matched": id | "string"}, {"type": "abort", "message": ...}) and OpenAI's
 * string ("length", "stop", "abort"). */
cJSON *mt_job_finish_sglang(const mt_gen_job *j);
const char *mt_job_finish_openai(const mt_gen_job *j);

#endif

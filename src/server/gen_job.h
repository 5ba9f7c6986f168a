/* A generation job: one request of an HTTP handler to the engine thread, and its results.
 *
 * The handler fills the input part, submits the job to the engine loop (engine_loop.h) and then
 * only reads the result part, under `mu`, waiting on `changed`. The engine thread writes the result
 * part under `mu` and broadcasts `changed` after every new token and at the end. Both sides hold a
 * reference; the last mt_gen_job_unref frees the job. */
#ifndef MT_SERVER_GEN_JOB_H
#define MT_SERVER_GEN_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/sampler.h"
#include "routing/routing_wire.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"
#include "util/strbuf.h"

/* What a request asks of the engine (validated by request_params.c). */
typedef struct mt_gen_params {
    int max_new_tokens;
    bool ignore_eos;
    mt_sampling_params sampling;
    int32_t *stop_ids;       /* extra stop token ids (malloc'd) */
    int n_stop_ids;
    char **stop_strings;     /* text that ends generation (malloc'd); needs a tokenizer */
    int n_stop_strings;
    bool skip_special_tokens;
    bool no_stop_trim;       /* keep a matched stop string at the end of the text */
    bool return_routing;
    int routing_start;       /* rows skipped at the front (routed_experts_start_len) */
    mt_routing_dtype routing_dtype;
    bool return_logprob;     /* each output token's log-probability (SGLang's return_logprob) */
    int logprob_start;       /* with return_logprob: the first prompt token listed with its
                                log-probability (SGLang's logprob_start_len; its own is null, as
                                SGLang gives it); -1: only the last prompt token, as SGLang's default */
    int top_logprobs;        /* with return_logprob: alternatives listed per token (0..20) */
    bool text_in_logprobs;   /* each listed token with its text (needs the tokenizer) */
    int32_t *logprob_ids;    /* with return_logprob: tokens whose log-probabilities every listed position
                                gives (SGLang's token_ids_logprob; malloc'd), or NULL */
    int n_logprob_ids;
    int32_t *bias_ids;       /* logit bias (OpenAI's logit_bias): distinct token ids (malloc'd), and */
    float *bias_values;      /*   what is added to their logits (mt_request.bias_ids); NULL: none */
    int n_bias;
    int32_t group;           /* the request's domain (serve --domain-field; mt_request.group), 0: none */
    bool probe;              /* a probe of the server's own (/health_generate): mt_request.probe,
                                not counted as a request of any domain */
} mt_gen_params;

void mt_gen_params_free(mt_gen_params *p);
/* The first prompt token the engine scores for p (mt_request.score_from): SGLang lists the prompt
 * from logprob_start_len with the first entry's value null, so the tokens after it; 0 (none) without
 * return_logprob, with the default start, or a start at the prompt's last token. */
static inline int mt_gen_params_score_from(const mt_gen_params *p, int n_prompt) {
    return p->return_logprob && p->logprob_start >= 0 && p->logprob_start + 1 < n_prompt ? p->logprob_start + 1 : 0;
}
/* A deep copy of p into out (its stop lists, token lists and logit bias duplicated); -1 when out of
 * memory (out holds nothing). */
int mt_gen_params_copy(mt_gen_params *out, const mt_gen_params *p);

/* A change count shared by the jobs of one HTTP request, so a handler streaming several jobs waits
 * on one condition: the engine thread bumps it after every change of any of them (after the job's
 * own version, with the job's mutex held; never take a job's mutex while holding the signal's).
 * Reference counted: the handler and every job holding it. */
typedef struct mt_job_signal {
    pthread_mutex_t mu;
    pthread_cond_t changed;
    uint64_t count;
    atomic_int refs;
} mt_job_signal;

mt_job_signal *mt_job_signal_new(void);
void mt_job_signal_ref(mt_job_signal *s);
void mt_job_signal_unref(mt_job_signal *s);
uint64_t mt_job_signal_count(mt_job_signal *s);
/* Waits until the count differs from seen, or timeout_ms passes. */
void mt_job_signal_wait(mt_job_signal *s, uint64_t seen, int timeout_ms);

/* Bytes of a weight version (serve's /update_weights_from_disk), the NUL included. */
#define MT_WEIGHT_VERSION_LEN 128

/* Bytes of a job's name, the NUL included. */
#define MT_JOB_NAME_LEN 80

/* out = base "_" k (out: MT_JOB_NAME_LEN bytes), base cut short when the whole would not fit. */
void mt_job_name_numbered(char *out, const char *base, int k);

typedef enum mt_job_state {
    MT_JOB_QUEUED,           /* handed to the engine loop, not yet seen by the engine */
    MT_JOB_RUNNING,          /* accepted by the engine */
    MT_JOB_REJECTED,         /* refused (error holds why); no result */
    MT_JOB_FINISHED,
} mt_job_state;

typedef enum mt_job_finish {
    MT_JOB_LENGTH = 1,       /* max_new_tokens reached */
    MT_JOB_STOP_TOKEN,       /* eos or a stop id: matched_token */
    MT_JOB_STOP_STRING,      /* stop string matched_string (excluded from the text) */
    MT_JOB_ABORTED,          /* cancelled (client gone, shutdown) */
} mt_job_finish;

typedef struct mt_gen_job {
    /* input: written before submission, read-only afterwards */
    int64_t id;                 /* engine request id, unique per server */
    char name[MT_JOB_NAME_LEN]; /* the id its response carries (meta_info.id, the OpenAI "id"); the
                                   engine request's name, so routing sinks (the recorder's per_token
                                   index) name its tokens as the client knows them */
    bool name_from_client;      /* name is the client's rid (or made from it): no other running job may
                                   have it (SGLang refuses a duplicate request id) */
    int32_t *prompt;            /* malloc'd */
    int n_prompt;
    mt_gen_params params;
    mt_detok_stream *detok;     /* NULL when no text is produced; used by the engine thread only */
    mt_detok_stream *stop_detok; /* with stop strings and skip_special_tokens: the output decoded with
                                   special tokens kept, which stop strings are matched against (as
                                   SGLang matches them); NULL otherwise (they are matched in text) */
    double t_arrival;           /* monotonic seconds */

    /* results, under mu */
    pthread_mutex_t mu;
    pthread_cond_t changed;
    uint64_t version;           /* bumped at every change */
    mt_job_state state;
    char error[MT_ERR_LEN];     /* REJECTED: the engine's reason */
    bool rejected_busy;         /* REJECTED because the server is draining or failed (503, not 400) */
    int32_t *output;            /* generated ids [n_output] (capacity max_new_tokens) */
    float *logprobs;            /* with return_logprob: their log-probabilities [n_output], else NULL */
    int n_top;                  /* params.top_logprobs with return_logprob, else 0 */
    int32_t *top_ids;           /* with n_top: each output token's alternatives [n_output, n_top] */
    float *top_logprobs;        /*   and their log-probabilities */
    float *prompt_logprobs;     /* with return_logprob: [n_prompt], each prompt token's log-probability
                                   (NaN where not scored: before logprob_start + 1); set once the prompt
                                   is forwarded (prompt_scored) */
    int32_t *prompt_top_ids;    /* with n_top and a scored prompt (logprob_start before its last token):
                                   [n_prompt, n_top] the alternatives at each scored token, else NULL */
    float *prompt_top_logprobs;
    bool prompt_scored;         /* the prompt's scores are in */
    int n_ids;                  /* params.n_logprob_ids with return_logprob, else 0 */
    float *ids_logprobs;        /* with n_ids: [n_output, n_ids] the listed tokens' at each output token */
    float *prompt_ids_logprobs; /* with n_ids and a scored prompt: [n_prompt, n_ids], else NULL */
    int n_output;
    mt_strbuf text;             /* decoded text (with skip_special_tokens), cut before a stop string; a
                                   stop token's text is left out unless no_stop_trim (SGLang's
                                   trim_matched_stop) */
    mt_strbuf stop_text;        /* with stop_detok: what it decoded (special tokens kept) */
    size_t *text_at;            /* with return_logprob and text: [n_output] the bytes text held when
                                   each output token's text was appended (its start in text) */
    size_t text_stable;         /* leading bytes of text that can be shown now (never the start of a
                                   possible stop string, never half a UTF-8 character) */
    size_t stop_floor;          /* with min_new_tokens: the bytes the text stop strings are matched in
                                   (stop_text with stop_detok, else text) held after the first
                                   min_new_tokens tokens; a stop string counts only where it ends
                                   after them (SGLang checks no stop before min_new_tokens) */
    size_t text_floor;          /*   and the bytes text held then */
    bool stop_matched;
    int matched_string;         /* STOP_STRING: index into params.stop_strings */
    int32_t matched_token;      /* STOP_TOKEN */
    mt_job_finish finish;
    int n_cached;               /* prompt tokens served from the prefix cache */
    char weight_version[MT_WEIGHT_VERSION_LEN]; /* the weights it ran with (set when the engine accepts it) */
    uint8_t *routing;           /* FINISHED with return_routing: [routing_rows, layers, top_k] packed */
    int routing_rows;
    double t_first_token, t_last_token, t_finished;

    mt_job_signal *signal;      /* set before submission (a reference, released with the job); NULL: none */
    atomic_int refs;
} mt_gen_job;

/* A job with one reference, state QUEUED; prompt and params are taken over (freed with the job). */
mt_gen_job *mt_gen_job_new(int64_t id, int32_t *prompt, int n_prompt, mt_gen_params *params);
/* Gives a new job the detokenizers its text is made with (detok, and stop_detok where stop strings
 * are matched in text decoded otherwise than the returned one); -1 when out of memory. */
int mt_gen_job_attach_text(mt_gen_job *j, const mt_tokenizer *tok);
void mt_gen_job_ref(mt_gen_job *j);
void mt_gen_job_unref(mt_gen_job *j);

/* Announces a change of j (mu held by the caller): bumps its version, wakes its waiters and its
 * signal's. */
void mt_gen_job_changed(mt_gen_job *j);

/* Waits (mu held by the caller) until the version differs from seen, or timeout_ms passes.
 * Returns the current version. */
uint64_t mt_gen_job_wait_locked(mt_gen_job *j, uint64_t seen, int timeout_ms);

double mt_now_s(void);

#endif

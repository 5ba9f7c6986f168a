/* The engine thread: owns the batched engine (engine/engine.h, single-threaded) and feeds it from a
 * queue. HTTP handlers never touch the engine: they submit jobs and cancel them through this
 * queue (mutex + condition variable), and read results from the jobs (gen_job.h).
 *
 * Per iteration the thread takes every queued submit and cancel, hands them to the engine, runs one
 * mt_engine_step (one forward pass over every running sequence, so concurrent requests are batched),
 * and then applies the cancels that the step's own events asked for (stop strings). Engine events
 * are turned into job results (job_results.h: tokens, text, stop strings, the routing in the
 * requested wire dtype) and latency metrics. Between steps it also does what handlers ask besides
 * generation (weight updates, prefix-cache flushes, aborts by name, expert placement switches), each
 * waiting for its answer.
 *
 * Data flows one way: the server calls the engine; the engine's callback only writes into jobs. */
#ifndef MT_SERVER_ENGINE_LOOP_H
#define MT_SERVER_ENGINE_LOOP_H

#include <stdbool.h>

#include "engine/engine.h"
#include "server/gen_job.h"
#include "server/metrics.h"

typedef struct mt_engine_loop mt_engine_loop;

/* Creates the engine (sink: e.g. the recorder; may be NULL) and starts its thread. model and
 * metrics must outlive the loop; the loop changes the model's weights only in
 * mt_engine_loop_update_weights. */
mt_engine_loop *mt_engine_loop_start(mt_model *model, const mt_engine_opts *o, const mt_routing_sink *sink,
                                     mt_server_metrics *metrics, mt_err *err);

/* Replaces the model's weights with the checkpoint in dir (engine/weight_swap.h), on the engine
 * thread: jobs submitted meanwhile are held back, the running ones finish (with abort_live they are
 * cancelled and finish as aborted), then the weights change, the prefix cache is emptied (its blocks
 * hold K/V and routing of the old weights) and the held jobs go on with the new weights. While
 * generation is paused (mt_engine_loop_pause) it does not wait: the jobs paused in the engine keep
 * what they forwarded and go on with the new weights once it continues, and the held ones wait for
 * that too. Blocks until done. version (NULL: unchanged) becomes the weight version of jobs accepted
 * afterwards; *held gets the jobs that waited (held back, or paused in the engine). -1 with err when the weights could not change (the served ones stay); when
 * neither the new nor the served weights could be put on the device the loop fails (it refuses
 * every job). */
int mt_engine_loop_update_weights(mt_engine_loop *l, const char *dir, bool abort_live, const char *version, int *held,
                                  mt_err *err);
/* Empties the prefix cache between two steps (running sequences keep their blocks); returns the
 * blocks it held, or -1 with err while stopping or failed. */
int mt_engine_loop_flush_cache(mt_engine_loop *l, mt_err *err);
/* Cancels, between two steps, the jobs named name, and the outputs name_<k> of a request of several
 * that gave name as its rid (every job when name is NULL): running ones finish as MT_JOB_ABORTED
 * with the routing of what they forwarded; ones held back by a weight update are refused. Returns
 * how many, or -1 with err while stopping or failed. */
int mt_engine_loop_abort(mt_engine_loop *l, const char *name, mt_err *err);
/* What /pause_generation does to the jobs in the engine (SGLang's modes). */
typedef enum mt_pause_mode { MT_PAUSE_ABORT, MT_PAUSE_RETRACT, MT_PAUSE_IN_PLACE } mt_pause_mode;

/* Pauses generation between two steps: no forward pass runs until mt_engine_loop_continue, and jobs
 * submitted meanwhile are held back (they stay queued, as during a weight update). MT_PAUSE_ABORT
 * cancels the jobs in the engine, queued or running (they finish as aborted with the routing of what
 * they forwarded, before this returns); MT_PAUSE_RETRACT gives the running ones' KV blocks back and
 * queues them first (mt_engine_retract: they forward again what is no longer cached once generation
 * continues, with the tokens and routing they would have had); MT_PAUSE_IN_PLACE leaves them as they
 * are. A pause while paused applies its mode to what is paused. Jobs cancelled while paused end at
 * once. Returns the jobs it aborted, retracted or left paused, or -1 with err while stopping or
 * failed. */
int mt_engine_loop_pause(mt_engine_loop *l, mt_pause_mode mode, mt_err *err);
/* Ends a pause: the engine steps again and the held jobs go in behind the paused ones (or once a
 * weight update that waits is done). Nothing to do when not paused. 0, or -1 with err while stopping
 * or failed. */
int mt_engine_loop_continue(mt_engine_loop *l, mt_err *err);
/* Work done on the engine thread between two forward passes, with the engine (0, or -1 with err). */
typedef int (*mt_engine_loop_fn)(mt_engine *e, void *ctx, mt_err *err);
/* Runs fn(engine, ctx, err) on the engine thread between two steps, in queue order with the other
 * quick tasks (not behind a weight update that waits), also while paused; no forward pass runs
 * during it, so what it changes (the expert placement and the recorder's window, for
 * /update_expert_location) changes for every running request at one pass boundary. Blocks until
 * done; fn's result, or -1 with err while stopping or failed (fn not called). */
int mt_engine_loop_between_passes(mt_engine_loop *l, mt_engine_loop_fn fn, void *ctx, mt_err *err);
/* Work the engine thread does by itself, between two forward passes, once every n passes it runs
 * (serve --enable-eplb: rebalancing the expert placement). fn's result: 0 when done, or -1 with err
 * (logged), and the count starts again from 0; 1 for "not now", and fn is asked again after the
 * next pass. n 0 (or fn NULL) turns it off. Passes count only while the engine forwards tokens (not
 * while idle or paused). Takes effect at the next pass. */
void mt_engine_loop_every_passes(mt_engine_loop *l, long n, mt_engine_loop_fn fn, void *ctx);
/* Starts the count of passes of mt_engine_loop_every_passes from 0 again. Engine thread only: from a
 * between-passes fn (mt_engine_loop_between_passes, or the periodic fn itself). */
void mt_engine_loop_restart_count(mt_engine_loop *l);
/* Whether the engine thread still runs passes (neither stopping nor failed): when it does not,
 * nothing forwards tokens any more, and work meant for between two passes can be done anywhere. */
bool mt_engine_loop_running(mt_engine_loop *l);
/* Whether generation is paused. */
bool mt_engine_loop_paused(mt_engine_loop *l);

/* The weight version jobs are accepted under now: "default" until an update names one. */
void mt_engine_loop_weight_version(mt_engine_loop *l, char *out, size_t size);

/* Queues a job (the loop takes its own reference). The engine thread moves it to RUNNING, or to
 * REJECTED with the engine's reason (bad ids, too long for the context or the KV cache), or with
 * rejected_busy while the loop is stopping or failed. */
void mt_engine_loop_submit(mt_engine_loop *l, mt_gen_job *j);
/* Asks the engine to cancel the job (it then finishes as MT_JOB_ABORTED with the routing of the
 * tokens forwarded so far). No effect when it already finished. */
void mt_engine_loop_cancel(mt_engine_loop *l, mt_gen_job *j);

typedef struct mt_engine_loop_stats {
    mt_engine_stats engine;  /* as of the end of the last iteration */
    int queued;              /* submitted, not yet handed to the engine */
    int live;                /* jobs in the engine (waiting + running) */
    bool failed;             /* a forward pass failed: the loop refuses new jobs */
    bool paused;             /* generation paused (mt_engine_loop_pause) */
    long weight_updates;     /* weight updates done, and failed */
    long weight_updates_failed;
} mt_engine_loop_stats;
void mt_engine_loop_get_stats(mt_engine_loop *l, mt_engine_loop_stats *s);

/* Jobs submitted and not finished (queued or live). */
int mt_engine_loop_pending(mt_engine_loop *l);

/* Cancels every live job, lets the engine finish them (as MT_JOB_ABORTED), rejects anything still
 * queued and joins the thread. Afterwards submits are rejected at once and cancels do nothing, so
 * handlers may still call in until the HTTP server has stopped. */
void mt_engine_loop_stop(mt_engine_loop *l);
/* Frees the engine and the loop (after mt_engine_loop_stop, once no handler can call in). */
void mt_engine_loop_free(mt_engine_loop *l);

#endif

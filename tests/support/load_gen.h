/* A loopback load generator for `moetrace serve` (bench_server and test_server_load): many
 * /generate requests from a pool of client threads (keep-alive connections), some streamed, some
 * abandoned by their client (the request is aborted: a disconnect), with the routing of every
 * completed request checked for completeness. */
#ifndef MT_TESTS_LOAD_GEN_H
#define MT_TESTS_LOAD_GEN_H

#include <stdint.h>

typedef struct mt_load_opts {
    const char *url;            /* "http://127.0.0.1:PORT" */
    const char *api_key;        /* NULL: none */
    int requests;               /* in total */
    int concurrency;            /* client threads */
    int max_prompt_tokens;      /* prompt lengths uniform in [1, max] */
    int max_new_tokens;         /* uniform in [1, max]; ignore_eos, so exactly that many */
    int vocab_size;             /* prompt ids in [0, vocab_size) */
    int num_experts;            /* routing ids must lie in [0, num_experts) */
    double disconnect_fraction; /* requests whose client goes away early */
    double stream_fraction;     /* requests streamed with server-sent events */
    uint64_t seed;
} mt_load_opts;

typedef struct mt_load_result {
    int completed;              /* answered 200 with everything checked */
    int disconnected;           /* abandoned by the client on purpose */
    int failed;                 /* anything else: wrong status, bad or incomplete routing */
    char first_failure[512];
    long generated_tokens;      /* of completed requests */
    double wall_s;
    double requests_per_s;      /* completed / wall */
    double latency_p50, latency_p90, latency_p99, latency_max; /* completed requests, seconds */
} mt_load_result;

/* Runs the load; returns 0 when every request either completed (checked) or was abandoned. */
int mt_load_run(const mt_load_opts *o, mt_load_result *r);

#endif

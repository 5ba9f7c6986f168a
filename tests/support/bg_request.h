/* A /generate request run in a thread of its own, for server tests that act on the server (pause,
 * switch placements, abort) while requests are in flight. */
#ifndef MT_TESTS_BG_REQUEST_H
#define MT_TESTS_BG_REQUEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <cjson/cJSON.h>

#include "support/http_client.h"

typedef struct mt_bg_request {
    pthread_t thread;
    bool threaded;          /* the thread started (else the request ran in mt_bg_start) */
    mt_http_client *c;
    char body[2048];
    bool stream;
    atomic_int events;      /* stream: events seen so far */
    atomic_bool done;
    long status;            /* once done: the HTTP status (0 when none came) */
    cJSON *answer;          /* once done: the whole answer, or the stream's last event */
} mt_bg_request;

/* POSTs body (copied; at most 2047 bytes) to /generate at url from a new thread. */
void mt_bg_start(mt_bg_request *b, const char *url, const char *body, bool stream);
/* Same, with a client that gives up after timeout_ms (0: never). */
void mt_bg_start_timeout(mt_bg_request *b, const char *url, const char *body, bool stream, long timeout_ms);
/* Waits for its end and closes its client; the answer stays until mt_bg_free. */
void mt_bg_join(mt_bg_request *b);
void mt_bg_free(mt_bg_request *b);

#endif

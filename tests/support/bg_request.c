/* A /generate request run in a thread of its own (bg_request.h). */
#include "support/bg_request.h"

#include <stdio.h>
#include <string.h>

#include "support/api_util.h"

static int on_event(const char *data, size_t len, void *ctx) {
    (void)len;
    mt_bg_request *b = ctx;
    cJSON *ev = cJSON_Parse(data);
    if (ev) {
        cJSON_Delete(b->answer);
        b->answer = ev;
    }
    atomic_fetch_add(&b->events, 1);
    return 0;
}

static void *run(void *arg) {
    mt_bg_request *b = arg;
    mt_http_response r;
    if (b->stream) {
        if (mt_http_stream(b->c, "/generate", b->body, on_event, b, &r) == 0) b->status = r.status;
        mt_http_response_free(&r);
    } else {
        b->answer = mt_api_json(b->c, "/generate", b->body, &b->status);
    }
    atomic_store(&b->done, true);
    return NULL;
}

void mt_bg_start(mt_bg_request *b, const char *url, const char *body, bool stream) {
    mt_bg_start_timeout(b, url, body, stream, 0);
}

void mt_bg_start_timeout(mt_bg_request *b, const char *url, const char *body, bool stream, long timeout_ms) {
    memset(b, 0, sizeof *b);
    b->c = mt_http_client_new(url, NULL);
    mt_http_client_set_timeout_ms(b->c, timeout_ms);
    b->stream = stream;
    snprintf(b->body, sizeof b->body, "%s", body);
    b->threaded = pthread_create(&b->thread, NULL, run, b) == 0;
    if (!b->threaded) run(b); /* no thread to be had: the request runs to its end here */
}

void mt_bg_join(mt_bg_request *b) {
    if (b->threaded) pthread_join(b->thread, NULL);
    mt_http_client_free(b->c);
    b->c = NULL;
}

void mt_bg_free(mt_bg_request *b) {
    cJSON_Delete(b->answer);
    b->answer = NULL;
}

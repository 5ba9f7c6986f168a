/* Replies, API errors, server-sent events and disconnect detection over libmicrohttpd. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "server/http.h"
#include "server/server_internal.h"
#include "util/json_util.h"

const char *mt_http_query(const mt_http_request *rq, const char *key) {
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

int mt_api_fail(mt_api_error *e, int status, const char *fmt, ...) {
    e->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

const char *mt_api_error_type(int status) {
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 405: return "method_not_allowed";
    case 413: return "request_too_large";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

cJSON *mt_api_error_json(int status, const char *message) {
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", message);
    cJSON_AddStringToObject(err, "type", mt_api_error_type(status));
    cJSON_AddNullToObject(err, "param"); /* OpenAI's error object has it; moetrace names no parameter */
    cJSON_AddNumberToObject(err, "code", status);
    return root;
}

int mt_reply(mt_http_request *rq, int status, const char *content_type, const char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return -1;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (rq->close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    if (rq->request_id) MHD_add_response_header(r, "x-request-id", rq->request_id);
    enum MHD_Result ok = MHD_queue_response(rq->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok == MHD_YES ? status : -1;
}

int mt_reply_json(mt_http_request *rq, int status, cJSON *obj) {
    char *text = mt_json_print(obj);
    cJSON_Delete(obj);
    if (!text) return mt_reply(rq, 500, "text/plain", "out of memory\n", 14);
    int rc = mt_reply(rq, status, "application/json", text, strlen(text));
    free(text);
    return rc;
}

int mt_reply_error(mt_http_request *rq, const mt_api_error *e) {
    return mt_reply_json(rq, e->status, mt_api_error_json(e->status, e->message));
}

int mt_reply_refused(mt_http_request *rq, const mt_api_error *e) {
    if (e->status >= 400 && e->status < 500) mt_metrics_rejected(&rq->server->metrics);
    return mt_reply_error(rq, e);
}

int mt_reply_errorf(mt_http_request *rq, int status, const char *fmt, ...) {
    mt_api_error e = {.status = status};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return mt_reply_error(rq, &e);
}

bool mt_http_client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
    if (p.revents & POLLIN) { /* data (a pipelined request) or the end of the stream */
        char c;
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return false;
}

/* ---- server-sent events ------------------------------------------------------------------- */

#define SSE_POLL_MS 100
/* Seconds of silence after which a stream sends an SSE comment (clients skip it): libmicrohttpd closes
 * a connection that sent nothing for its idle timeout (60 s), e.g. a stream held by /pause_generation
 * or waiting in a long queue, and clients' read timeouts would end it too. */
#define SSE_KEEPALIVE_S 15.0

typedef struct sse_stream {
    mt_server *server;
    const char *route;  /* metrics label; NULL: not counted */
    mt_gen_job **jobs;
    int n_jobs;
    mt_job_signal *signal;
    mt_sse_format format;
    mt_sse_end end;
    void *ctx;
    void (*free_ctx)(void *);
    int fd;
    uint64_t *seen;     /* [n_jobs] job version already formatted */
    bool *job_ended;    /* [n_jobs] its last event is formatted */
    int n_ended;
    mt_strbuf pending;  /* formatted, not yet handed to MHD */
    size_t sent;
    double last_sent;   /* when bytes last went to MHD (mt_now_s) */
    bool ended;         /* the last event is in pending */
    bool complete;      /* ... and it was handed to MHD: the end of the stream */
} sse_stream;

void mt_sse_event(mt_strbuf *out, cJSON *obj) {
    char *text = mt_json_print(obj);
    cJSON_Delete(obj);
    mt_strbuf_puts(out, "data: ");
    if (text) mt_strbuf_puts(out, text);
    mt_strbuf_puts(out, "\n\n");
    free(text);
}

static bool job_done(mt_gen_job *j) { return j->state == MT_JOB_FINISHED || j->state == MT_JOB_REJECTED; }

/* Formats what changed in job k since the last look; true when something did. */
static bool sse_poll_job(sse_stream *st, int k) {
    mt_gen_job *j = st->jobs[k];
    pthread_mutex_lock(&j->mu);
    bool changed = j->version != st->seen[k];
    if (changed) {
        st->seen[k] = j->version;
        bool final = job_done(j);
        if (final && j->error[0]) mt_sse_event(&st->pending, mt_api_error_json(500, j->error));
        else st->format(st->ctx, k, j, final, &st->pending);
        if (final) {
            st->job_ended[k] = true;
            st->n_ended++;
        }
    }
    pthread_mutex_unlock(&j->mu);
    return changed;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    sse_stream *st = cls;
    for (;;) {
        if (st->sent < st->pending.len) {
            size_t n = st->pending.len - st->sent < max ? st->pending.len - st->sent : max;
            memcpy(buf, st->pending.data + st->sent, n);
            st->sent += n;
            st->last_sent = mt_now_s();
            if (st->sent == st->pending.len) {
                mt_strbuf_truncate(&st->pending, 0);
                st->sent = 0;
            }
            return (ssize_t)n;
        }
        if (st->ended) {
            st->complete = true;
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        uint64_t signalled = mt_job_signal_count(st->signal);
        bool changed = false;
        for (int k = 0; k < st->n_jobs; k++)
            if (!st->job_ended[k]) changed |= sse_poll_job(st, k);
        if (st->n_ended == st->n_jobs) {
            if (st->end) st->end(st->ctx, st->jobs, st->n_jobs, &st->pending);
            mt_strbuf_puts(&st->pending, "data: [DONE]\n\n");
            st->ended = true;
            continue;
        }
        if (changed) continue;
        if (mt_http_client_gone(st->fd)) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (mt_now_s() - st->last_sent >= SSE_KEEPALIVE_S) {
            mt_strbuf_puts(&st->pending, ": keep-alive\n\n");
            continue;
        }
        mt_job_signal_wait(st->signal, signalled, SSE_POLL_MS);
    }
}

static void sse_free(void *cls) {
    sse_stream *st = cls;
    if (st->route) mt_metrics_http(&st->server->metrics, st->route, st->complete ? 200 : 499);
    for (int k = 0; k < st->n_jobs; k++) {
        mt_gen_job *j = st->jobs[k];
        pthread_mutex_lock(&j->mu);
        bool done = job_done(j);
        pthread_mutex_unlock(&j->mu);
        if (!done) mt_engine_loop_cancel(st->server->b.loop, j); /* the client went away */
        mt_gen_job_unref(j);
    }
    free(st->jobs);
    mt_job_signal_unref(st->signal);
    free(st->seen);
    free(st->job_ended);
    if (st->free_ctx) st->free_ctx(st->ctx);
    mt_strbuf_free(&st->pending);
    free(st);
}

int mt_reply_sse(mt_http_request *rq, mt_gen_job **jobs, int n, mt_job_signal *signal, mt_sse_format format,
                 mt_sse_end end, void *ctx, void (*free_ctx)(void *)) {
    sse_stream *st = calloc(1, sizeof *st);
    uint64_t *seen = calloc((size_t)n, sizeof *seen);
    bool *job_ended = calloc((size_t)n, sizeof *job_ended);
    if (st) *st = (sse_stream){.server = rq->server, .route = rq->route, .jobs = jobs, .n_jobs = n, .signal = signal,
                               .format = format, .end = end, .ctx = ctx, .free_ctx = free_ctx, .fd = rq->client_fd,
                               .seen = seen, .job_ended = job_ended, .last_sent = mt_now_s()};
    if (!st || !seen || !job_ended) {
        if (st) {
            st->route = NULL; /* counted as the 500 below */
            sse_free(st);
        } else {
            free(seen);
            free(job_ended);
            for (int k = 0; k < n; k++) {
                mt_engine_loop_cancel(rq->server->b.loop, jobs[k]);
                mt_gen_job_unref(jobs[k]);
            }
            free(jobs);
            mt_job_signal_unref(signal);
            if (free_ctx) free_ctx(ctx);
        }
        return mt_reply_errorf(rq, 500, "out of memory");
    }
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, st, sse_free);
    if (!r) {
        sse_free(st);
        return -1;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    if (rq->request_id) MHD_add_response_header(r, "x-request-id", rq->request_id);
    enum MHD_Result ok = MHD_queue_response(rq->conn, 200, r);
    if (ok != MHD_YES) st->route = NULL; /* not counted: the connection is closed */
    MHD_destroy_response(r);              /* sse_free runs when MHD is done with the stream */
    return ok == MHD_YES ? 0 : -1;
}

/* The HTTP side shared by the endpoint handlers: the request as a handler sees it, the replies a
 * handler can queue, API errors, and client-disconnect detection. Implemented over libmicrohttpd
 * in http_reply.c; the daemon, routing and authentication are in http_daemon.c. */
#ifndef MT_SERVER_HTTP_H
#define MT_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "server/gen_job.h"
#include "util/err.h"
#include "util/strbuf.h"

struct MHD_Connection;
typedef struct mt_server mt_server;

typedef struct mt_http_request {
    mt_server *server;
    struct MHD_Connection *conn;
    const char *method;          /* "GET", "POST", ... */
    const char *path;            /* without the query string */
    const char *route;           /* the route's path, a literal: the request's label in the metrics */
    const char *body;            /* NUL-terminated; body_len bytes */
    size_t body_len;
    int client_fd;               /* the connection's socket, for disconnect detection */
    bool close;                  /* replies say "Connection: close" (the connection ends after them) */
    const char *request_id;      /* when set, replies carry it as "x-request-id" (the OpenAI endpoints' id) */
} mt_http_request;

/* Value of a query-string argument, or NULL. */
const char *mt_http_query(const mt_http_request *rq, const char *key);

/* An API error: HTTP status and message. The JSON body is
 * {"error": {"message": ..., "type": ..., "param": null, "code": status}} with the type named by the
 * status. */
typedef struct mt_api_error {
    int status;
    char message[MT_ERR_LEN];
} mt_api_error;

/* Fills e and returns -1 (so parsers can `return mt_api_fail(...)`). */
int mt_api_fail(mt_api_error *e, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* "invalid_request_error" (400), "authentication_error" (401), "not_found_error" (404), ... */
const char *mt_api_error_type(int status);
cJSON *mt_api_error_json(int status, const char *message);

/* Replies: each queues the response on the connection and returns the status (for the metrics),
 * or -1 when MHD refused it (the connection is then closed). */
int mt_reply(mt_http_request *rq, int status, const char *content_type, const char *body, size_t len);
/* Prints obj compactly and deletes it. */
int mt_reply_json(mt_http_request *rq, int status, cJSON *obj);
int mt_reply_error(mt_http_request *rq, const mt_api_error *e);
/* The same for a generation request refused for what it asks (a 4xx from its body's checks):
 * counted in moetrace_requests_rejected_total, as the engine's own refusals are. */
int mt_reply_refused(mt_http_request *rq, const mt_api_error *e);
int mt_reply_errorf(mt_http_request *rq, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Server-sent events from jobs[0..n) (the outputs of one request; signal, which every job holds,
 * tells of a change of any of them). format() is called with job k's mutex held after every change
 * of it (final = true for its last call, once it finished); it appends whole events
 * ("data: ...\n\n") to out, possibly none; a job that failed gives an error event instead of its
 * final call. Once every job has ended, end() (may be NULL) appends the request's last events, and
 * the stream ends with "data: [DONE]\n\n". When the client goes away the jobs are cancelled. The
 * stream takes over the array jobs (malloc'd) with one reference to each job and to signal, and
 * ctx (freed with free_ctx). Returns 0 once the stream is queued: the request is counted in the
 * metrics (under rq->route) when the stream ends, with 200 when it ended with its last event, else
 * 499 (the client left first, though the 200 status line had gone out); -1 when MHD refused it. */
typedef void (*mt_sse_format)(void *ctx, int k, mt_gen_job *j, bool final, mt_strbuf *out);
typedef void (*mt_sse_end)(void *ctx, mt_gen_job *const *jobs, int n, mt_strbuf *out);
int mt_reply_sse(mt_http_request *rq, mt_gen_job **jobs, int n, mt_job_signal *signal, mt_sse_format format,
                 mt_sse_end end, void *ctx, void (*free_ctx)(void *));

/* Appends "data: <compact JSON of obj>\n\n" and deletes obj. */
void mt_sse_event(mt_strbuf *out, cJSON *obj);

/* True when the peer closed or reset the connection (a client that only shuts down its sending
 * side counts as gone too; pipelined request bytes do not). */
bool mt_http_client_gone(int fd);

#endif

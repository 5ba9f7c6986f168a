/* A small HTTP client over libcurl for the server tests and bench_server: one client per thread,
 * keeping its connection alive between calls; server-sent-event parsing; client-side aborts (the
 * way a client disconnects). */
#ifndef MT_TESTS_HTTP_CLIENT_H
#define MT_TESTS_HTTP_CLIENT_H

#include <stddef.h>

/* Call once per process before any thread uses a client. */
void mt_http_global_init(void);

typedef struct mt_http_client mt_http_client;

/* base_url: "http://127.0.0.1:PORT"; api_key: sent as "Authorization: Bearer KEY" (NULL: none). */
mt_http_client *mt_http_client_new(const char *base_url, const char *api_key);
void mt_http_client_free(mt_http_client *c);
/* Aborts calls that take longer than ms (0: no limit): the client closes the connection. */
void mt_http_client_set_timeout_ms(mt_http_client *c, long ms);

typedef struct mt_http_response {
    long status;          /* 0 when no answer came (transport error, abort) */
    char *body;           /* NUL-terminated (SSE calls: only a non-event body, e.g. an error) */
    size_t len;
    char content_type[128];
    char error[256];      /* transport error, "" when none */
} mt_http_response;

/* GET or POST (body NULL: none) path; extra_headers: NULL or NULL-terminated "Name: value" lines.
 * Returns 0 when an answer came (any status), -1 on a transport error or abort (r->error says). */
int mt_http_call_headers(mt_http_client *c, const char *method, const char *path, const char *body,
                         const char *const *extra_headers, mt_http_response *r);
int mt_http_call(mt_http_client *c, const char *method, const char *path, const char *body, mt_http_response *r);

/* POSTs body and calls on_event with the payload of every "data:" event as it arrives (NUL-
 * terminated). on_event returning non-zero aborts the transfer (the client disconnects); the
 * call then returns 1. Returns 0 when the stream ended, -1 on a transport error. */
typedef int (*mt_sse_handler)(const char *data, size_t len, void *ctx);
int mt_http_stream(mt_http_client *c, const char *path, const char *body, mt_sse_handler on_event, void *ctx,
                   mt_http_response *r);

void mt_http_response_free(mt_http_response *r);

/* The value of the first sample of metric `name` (exactly that name, any labels) in a Prometheus
 * text body; NAN when absent. */
double mt_prom_value(const char *text, const char *name);

#endif

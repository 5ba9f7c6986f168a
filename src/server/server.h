/* `moetrace serve`: the HTTP server (SPEC §5) over the engine thread (engine_loop.h).
 *
 * Life cycle, driven by cli/cmd_serve.c:
 *   mt_server_start       listen (HTTP up at once; /health answers 503, other paths 503 too)
 *   mt_server_set_backend after the model, tokenizer, recorder and engine loop exist: serving
 *   mt_server_set_draining new generation requests get 503; requests being answered go on
 *                         (wait for mt_server_answers_in_flight to reach 0; a body still
 *                         uploading would only be refused once it came)
 *   mt_server_stop        closes the listening socket and every connection (after the engine
 *                         loop has finished or cancelled every job) and frees the server.
 *
 * HTTP/1.1 with keep-alive on libmicrohttpd, one thread per connection, at most max_connections
 * connections (the bounded worker pool: a handler waits for its job on its own connection thread,
 * so a slow generation never holds up another connection; requests on further connections are
 * answered 503, and a new connection that does not send its headers in time is closed:
 * conn_guard.h).
 * Request bodies above max_body_bytes get 413. With api_key every path but /health needs
 * "Authorization: Bearer KEY" (401 otherwise). Endpoints: docs/API.md. */
#ifndef MT_SERVER_SERVER_H
#define MT_SERVER_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "chat/chat_template.h"
#include "model/model.h"
#include "report/domain_usage.h"
#include "routing/placement.h"
#include "routing/recorder.h"
#include "server/chat_output.h"
#include "server/engine_loop.h"
#include "server/metrics.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

typedef struct mt_server_opts {
    const char *host;            /* numeric IPv4 or IPv6 address, or a host name (resolved with
                                    getaddrinfo, the first address it can listen on); NULL: 127.0.0.1 */
    int port;                    /* 0: any free port (see mt_server_port) */
    const char *api_key;         /* NULL or "": no authentication */
    int max_connections;         /* simultaneous connections (each served by its own thread) */
    size_t max_body_bytes;       /* request body cap */
    int idle_timeout_s;          /* an idle keep-alive connection is closed after this */
    int header_timeout_s;        /* a new connection's first request headers must arrive within this
                                    (server/conn_guard.h; default 10) */
    int body_timeout_s;          /* a request's body must all arrive within this of its headers
                                    (server/conn_guard.h; default 30) */
} mt_server_opts;

/* What the server serves. Everything is owned by the caller and must outlive the server. */
typedef struct mt_server_backend {
    const mt_model *model;
    const char *model_name;            /* the served model name (/v1/models, responses) */
    mt_tokenizer *tokenizer;           /* NULL: only token ids in and out */
    mt_chat_template *chat_template;   /* NULL: /v1/chat/completions answers 400 */
    mt_recorder *recorder;
    mt_engine_loop *loop;
    bool enable_return_routing;        /* --enable-return-routed-experts */
    bool dump_visualize;               /* heatmap PNG beside every stat/per_pass dump */
    int ep_size;                       /* expert-parallel size for balancedness */
    const mt_placement *placement;     /* the placement the engine runs (balancedness per GPU from
                                          the recorder's physical counts), or NULL */
    int max_running;                   /* engine limit, reported by /get_model_info */
    const char *domain_field;          /* --domain-field: the body key labelling a request's domain,
                                          or NULL */
    mt_domain_usage *domains;          /* expert use per domain, recorded with the recorder's
                                          window (started, stopped and dumped with it); NULL
                                          without domain_field */
    long eplb_every;                   /* --enable-eplb: rebalance the placement every this many
                                          forward passes (eplb_auto.c; needs placement); 0 never */
    double eplb_threshold;             /* ... only when the window's balancedness is at or below this
                                          (1.0: always) */
    mt_reasoning_parser reasoning_parser; /* --reasoning-parser: chat completions' reasoning_content
                                          (server/chat_output.h); OFF: none */
    mt_tool_parser tool_parser;        /* --tool-call-parser: chat completions' tool_calls, for requests
                                          with tools; OFF: none */
} mt_server_backend;

typedef struct mt_server mt_server;

mt_server *mt_server_start(const mt_server_opts *o, mt_err *err);
/* The bound port (useful with port 0). */
int mt_server_port(const mt_server *s);
/* The numeric address listened on (what a host name resolved to). */
const char *mt_server_address(const mt_server *s);
/* Counters shared with the engine loop. */
mt_server_metrics *mt_server_metrics_of(mt_server *s);
/* Starts serving b; with b->eplb_every, also the recorder (when stopped) and the rebalance every
 * eplb_every passes. */
void mt_server_set_backend(mt_server *s, const mt_server_backend *b);
void mt_server_set_draining(mt_server *s);
/* HTTP requests being answered (their body came, or their headers were refused) whose answer has
 * not been completely sent, streams included; and requests whose body is still coming. */
int mt_server_answers_in_flight(mt_server *s);
int mt_server_uploads_in_flight(mt_server *s);
/* Writes the recorder's dump into its dump dir (and the heatmap with dump_visualize), as
 * /dump_expert_distribution_record does, and with domains the domain usage report into
 * dump_dir/domain_usage_<ms>/; path_out gets the dump's JSON path. */
int mt_server_dump_recorder(mt_server *s, char *path_out, size_t path_len, mt_err *err);
void mt_server_stop(mt_server *s);

#endif

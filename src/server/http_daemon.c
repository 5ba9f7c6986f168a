/* The libmicrohttpd daemon: connections, request bodies, routing, authentication, life cycle. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "server/server_internal.h"

/* HEAD is answered as GET without the body (libmicrohttpd leaves it out), on the GET routes that
 * change nothing: health checks and probes of load balancers often send it. */
enum { M_GET = 1, M_POST = 2, M_HEAD = 4 };

typedef struct route {
    const char *path;
    unsigned methods;
    mt_handler handler;
    bool needs_backend;   /* 503 while the model loads */
    bool public_path;     /* no API key needed */
    bool key_in_query;    /* the API key may also come as ?api_key= (pages opened in a browser) */
} route;

static const route ROUTES[] = {
    {"/health", M_GET | M_POST | M_HEAD, mt_api_health, false, true, false},
    {"/generate", M_POST, mt_api_generate, true, false, false},
    {"/start_expert_distribution_record", M_GET | M_POST, mt_api_start_record, true, false, false},
    {"/stop_expert_distribution_record", M_GET | M_POST, mt_api_stop_record, true, false, false},
    {"/dump_expert_distribution_record", M_GET | M_POST, mt_api_dump_record, true, false, false},
    {"/v1/models", M_GET | M_HEAD, mt_api_models, true, false, false},
    {"/v1/completions", M_POST, mt_api_completions, true, false, false},
    {"/v1/chat/completions", M_POST, mt_api_chat_completions, true, false, false},
    {"/get_model_info", M_GET | M_HEAD, mt_api_model_info, true, false, false},
    {"/get_server_info", M_GET | M_HEAD, mt_api_server_info, true, false, false},
    {"/update_weights_from_disk", M_POST, mt_api_update_weights, true, false, false},
    {"/flush_cache", M_GET | M_POST, mt_api_flush_cache, true, false, false},
    {"/get_weight_version", M_GET | M_HEAD, mt_api_weight_version, true, false, false},
    {"/abort_request", M_POST, mt_api_abort_request, true, false, false},
    {"/health_generate", M_GET | M_POST, mt_api_health_generate, true, false, false},
    {"/pause_generation", M_POST, mt_api_pause_generation, true, false, false},
    {"/continue_generation", M_POST, mt_api_continue_generation, true, false, false},
    {"/update_expert_location", M_POST, mt_api_update_expert_location, true, false, false},
    {"/eplb_rebalance", M_POST, mt_api_eplb_rebalance, true, false, false},
    {"/metrics", M_GET | M_HEAD, mt_api_metrics, false, false, false},
    {"/dashboard", M_GET | M_HEAD, mt_api_dashboard, false, false, true},
    {"/dashboard/data", M_GET | M_HEAD, mt_api_dashboard_data, true, false, true},
};

/* The part of a request gathered before its handler runs. */
typedef struct pending_request {
    mt_strbuf body;
    bool too_large;
    bool answering;        /* counted in the server's answering */
} pending_request;

/* From the call that answers a request until it completes; the request's body deadline ends there
 * (its body came, or it is answered without it). */
static void mark_answering(mt_server *s, struct MHD_Connection *c, pending_request *pr) {
    if (pr->answering) return;
    pr->answering = true;
    atomic_fetch_add(&s->answering, 1);
    mt_conn_guard_body_done(s->guard, c);
}

static bool same_secret(const char *given, const char *key) {
    size_t n = strlen(key), m = strlen(given);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)key[i] ^ (unsigned char)(i < m ? given[i] : 0);
    return diff == 0;
}

static bool authorized(struct MHD_Connection *c, const char *key, bool key_in_query) {
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (h && !strncmp(h, "Bearer ", 7) && same_secret(h + 7, key)) return true;
    const char *q = key_in_query ? MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "api_key") : NULL;
    return q && same_secret(q, key);
}

static enum MHD_Result reply_now(struct MHD_Connection *c, mt_server *s, const char *label, int status,
                                 const char *fmt, const char *arg) {
    mt_http_request rq = {.server = s, .conn = c, .client_fd = -1};
    int rc = mt_reply_errorf(&rq, status, fmt, arg);
    mt_metrics_http(&s->metrics, label, status);
    return rc < 0 ? MHD_NO : MHD_YES;
}

/* Answers status with the error message msg, then closes the connection ("Connection: close"): for
 * a request whose connection must not carry another one. */
static enum MHD_Result reply_and_close(struct MHD_Connection *c, mt_server *s, const char *label, int status,
                                       const char *msg) {
    mt_http_request rq = {.server = s, .conn = c, .client_fd = -1, .close = true};
    int rc = mt_reply_errorf(&rq, status, "%s", msg);
    mt_metrics_http(&s->metrics, label, status);
    return rc < 0 ? MHD_NO : MHD_YES;
}

static const route *find_route(const char *url) {
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (!strcmp(url, ROUTES[i].path)) return &ROUTES[i];
    return NULL;
}

/* The Content-Length headers of a request, as MHD_get_connection_values walks its headers. */
typedef struct content_lengths {
    int count;
    const char *bad;     /* the first value that is not all digits, or NULL */
    bool transfer_encoding; /* a Transfer-Encoding header came too */
} content_lengths;

static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    content_lengths *cl = cls;
    if (key && !strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) cl->transfer_encoding = true;
    if (!key || strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) return MHD_YES;
    cl->count++;
    if (!cl->bad && (!value || !*value || value[strspn(value, "0123456789")])) cl->bad = value ? value : "";
    return MHD_YES;
}

/* Whether the request's Content-Length headers frame its body unambiguously: none, or one made of
 * digits only, and not beside a Transfer-Encoding. libmicrohttpd reads the first of several and
 * leaves the rest of the body to be read as the next request (RFC 9112 6.3 says to refuse them: a
 * proxy in front may have used another one), and under a Transfer-Encoding it ignores the length,
 * which a proxy may have used instead (RFC 9112 6.1 lets a server refuse both). Returns 0, or -1
 * with why (a message naming what is wrong) filled. */
static int check_content_length(struct MHD_Connection *c, char *why, size_t len) {
    content_lengths cl = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_content_length, &cl);
    if (cl.count > 1)
        snprintf(why, len, "the request has %d Content-Length headers: it may have one at most", cl.count);
    else if (cl.bad)
        snprintf(why, len, "the Content-Length header '%.64s' is not a number of bytes (digits only)", cl.bad);
    else if (cl.count && cl.transfer_encoding)
        snprintf(why, len, "the request has both Content-Length and Transfer-Encoding: it may have one of them");
    else return 0;
    return -1;
}

/* The checks a request passes before its handler runs, in this order: API key (401), path (404),
 * method (405), body size (413), model loaded (503). Returns the route, or NULL after queueing the
 * error reply (its MHD result in *result). */
static const route *admit(struct MHD_Connection *c, mt_server *s, const char *url, const char *method,
                          const pending_request *pr, enum MHD_Result *result) {
    const route *rt = find_route(url);
    const char *label = rt ? rt->path : "other";
    bool public_path = rt && rt->public_path;
    unsigned m = !strcmp(method, "GET") ? M_GET : !strcmp(method, "POST") ? M_POST : !strcmp(method, "HEAD") ? M_HEAD : 0;
    char limit[32];
    snprintf(limit, sizeof limit, "%zu", s->opts.max_body_bytes);
    if (s->opts.api_key && *s->opts.api_key && !public_path && !authorized(c, s->opts.api_key, rt && rt->key_in_query))
        *result = reply_now(c, s, label, 401, "%s", "missing or wrong API key (expected the header 'Authorization: Bearer <key>')");
    else if (!rt) *result = reply_now(c, s, label, 404, "no endpoint %s", url);
    else if (!(rt->methods & m)) *result = reply_now(c, s, label, 405, "method %s is not allowed here", method);
    else if (pr->too_large) *result = reply_now(c, s, label, 413, "the request body exceeds %s bytes", limit);
    else if (rt->needs_backend && !atomic_load(&s->ready))
        *result = reply_now(c, s, label, 503, "%s", "the model is still loading");
    else return rt;
    return NULL;
}

/* libmicrohttpd calls this first with the headers (no body yet), then with each piece of the body,
 * then once more with none to answer. The first call refuses the first request of a connection
 * accepted beyond --max-connections (503) and Content-Length headers that cannot frame the body
 * (400), both closing the connection, then makes every check admit can make on the headers (API
 * key, path, method, a Content-Length above the cap, model loaded), so a refused request is
 * answered before any of its body is read or kept; a body that turns out larger than the cap is
 * dropped as it arrives and answered 413 at the end. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **req_cls) {
    (void)version;
    mt_server *s = cls;
    pending_request *pr = *req_cls;
    enum MHD_Result result = MHD_YES;
    if (!pr) {
        if (!(pr = calloc(1, sizeof *pr))) return MHD_NO;
        *req_cls = pr;
        atomic_fetch_add(&s->in_flight, 1);
        char why[160];
        if (mt_conn_guard_headers(s->guard, c)) { /* in the headroom above the limit: answered, then closed */
            mark_answering(s, c, pr);
            snprintf(why, sizeof why, "the server is at its connection limit (--max-connections %d): retry",
                     s->opts.max_connections);
            return reply_and_close(c, s, "other", 503, why);
        }
        if (check_content_length(c, why, sizeof why)) {
            mark_answering(s, c, pr);
            const route *rt = find_route(url);
            return reply_and_close(c, s, rt ? rt->path : "other", 400, why);
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        pr->too_large = cl && strtoull(cl, NULL, 10) > s->opts.max_body_bytes;
        /* the headers decide: a refused request's body is not read */
        if (!admit(c, s, url, method, pr, &result)) mark_answering(s, c, pr);
        return result;
    }
    if (*upload_size) {
        if (!pr->too_large && pr->body.len + *upload_size > s->opts.max_body_bytes) {
            pr->too_large = true;
            mt_strbuf_free(&pr->body);
        }
        if (!pr->too_large) mt_strbuf_append(&pr->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }

    mark_answering(s, c, pr);
    const route *rt = admit(c, s, url, method, pr, &result);
    if (!rt) return result;
    const char *label = rt->path;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    mt_http_request rq = {.server = s, .conn = c, .method = method, .path = url, .route = label,
                          .body = pr->body.data ? pr->body.data : "", .body_len = pr->body.len,
                          .client_fd = ci ? ci->connect_fd : -1};
    int status = rt->handler(&rq);
    if (status > 0) mt_metrics_http(&s->metrics, label, status); /* 0: a stream, counted when it ends */
    return status < 0 ? MHD_NO : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode why) {
    (void)c;
    (void)why;
    mt_server *s = cls;
    pending_request *pr = *req_cls;
    if (!pr) return;
    atomic_fetch_sub(&s->in_flight, 1);
    if (pr->answering) atomic_fetch_sub(&s->answering, 1);
    mt_strbuf_free(&pr->body);
    free(pr);
    *req_cls = NULL;
}

/* libmicrohttpd's own messages, into the log with its prefix. A stream whose client hung up ends
 * with "application error generating response", which is expected and counted elsewhere: not
 * logged. Others at most one a second, the rest counted into the next one logged. */
static void on_library_message(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    static atomic_llong last_s, skipped;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    if (strstr(msg, "application error generating response")) return;
    long long now = (long long)time(NULL), before = atomic_load(&last_s);
    if (now == before || !atomic_compare_exchange_strong(&last_s, &before, now)) {
        atomic_fetch_add(&skipped, 1);
        return;
    }
    long long more = atomic_exchange(&skipped, 0);
    if (more) mt_log("http: %s (and %lld more messages of the HTTP library since the last)", msg, more);
    else mt_log("http: %s", msg);
}

/* Starts the daemon listening on addr (its port included): NULL when it cannot listen there. */
static struct MHD_Daemon *listen_on(mt_server *s, const struct sockaddr *addr) {
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (addr->sa_family == AF_INET6) flags |= MHD_USE_IPv6;
    return MHD_start_daemon(flags, (uint16_t)s->opts.port, NULL, NULL, on_request, s,
                            MHD_OPTION_EXTERNAL_LOGGER, on_library_message, NULL, /* first, as the library asks */
                            MHD_OPTION_SOCK_ADDR, addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(s->opts.max_connections + MT_CONN_GUARD_HEADROOM),
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->opts.idle_timeout_s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, mt_conn_guard_notify, s->guard, MHD_OPTION_END);
}

/* The numeric form of addr into out. */
static void address_text(const struct sockaddr *addr, char *out, size_t len) {
    const void *a = addr->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)addr)->sin6_addr
                                                : (const void *)&((const struct sockaddr_in *)addr)->sin_addr;
    if (!inet_ntop(addr->sa_family, a, out, (socklen_t)len)) snprintf(out, len, "?");
}

/* Listens on opts.host: a numeric IPv4 or IPv6 address as it is, else a host name resolved with
 * getaddrinfo (TCP, IPv4 and IPv6), trying its addresses in the order given until one can be
 * listened on. 0, or -1 with err naming the host. */
static int listen_host(mt_server *s, mt_err *err) {
    const char *host = s->opts.host;
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)s->opts.port);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)s->opts.port);
    }
    if (addr.ss_family != AF_UNSPEC) {
        snprintf(s->address, sizeof s->address, "%s", host);
        if ((s->daemon = listen_on(s, (struct sockaddr *)&addr))) return 0;
        return mt_errf(err, "cannot listen on %s port %d (in use, or not an address of this machine)", host,
                       s->opts.port);
    }
    char port[16];
    snprintf(port, sizeof port, "%d", s->opts.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *list;
    int rc = getaddrinfo(host, port, &hints, &list);
    if (rc) return mt_errf(err, "--host %s: cannot resolve the host name (%s)", host, gai_strerror(rc));
    char tried[256] = "";
    for (const struct addrinfo *a = list; a && !s->daemon; a = a->ai_next) {
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
        address_text(a->ai_addr, s->address, sizeof s->address);
        s->daemon = listen_on(s, a->ai_addr);
        size_t n = strlen(tried);
        if (!s->daemon) snprintf(tried + n, sizeof tried - n, "%s%s", n ? ", " : "", s->address);
    }
    freeaddrinfo(list);
    if (s->daemon) return 0;
    if (!tried[0]) return mt_errf(err, "--host %s: resolves to no IPv4 or IPv6 address", host);
    return mt_errf(err, "--host %s: cannot listen on port %d of its addresses (%s): in use, or not an address of this "
                   "machine", host, s->opts.port, tried);
}

/* Every connection is a socket: raises the soft limit on open files to what max_connections (with
 * the guard's headroom and some files of the server's own) needs, as far as the hard limit allows,
 * and lowers max_connections to fit when it cannot (logged). */
static void fit_file_limit(mt_server *s) {
    const rlim_t own = 128, need = (rlim_t)s->opts.max_connections + MT_CONN_GUARD_HEADROOM + own;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        int fit = rl.rlim_cur > own + MT_CONN_GUARD_HEADROOM + 1 ? (int)(rl.rlim_cur - own - MT_CONN_GUARD_HEADROOM) : 1;
        mt_log("http: --max-connections %d needs %llu open files, the process may have %llu (ulimit -n): serving %d "
               "connections", s->opts.max_connections, (unsigned long long)need, (unsigned long long)rl.rlim_cur, fit);
        s->opts.max_connections = fit;
    }
}

mt_server *mt_server_start(const mt_server_opts *o, mt_err *err) {
    mt_server *s = calloc(1, sizeof *s);
    if (!s) {
        mt_errf(err, "out of memory");
        return NULL;
    }
    s->opts = *o;
    if (!s->opts.host) s->opts.host = "127.0.0.1";
    if (s->opts.max_connections <= 0) s->opts.max_connections = 1024;
    fit_file_limit(s);
    if (s->opts.max_body_bytes == 0) s->opts.max_body_bytes = 16u << 20;
    if (s->opts.idle_timeout_s <= 0) s->opts.idle_timeout_s = 60;
    if (s->opts.header_timeout_s <= 0) s->opts.header_timeout_s = 10;
    if (s->opts.body_timeout_s <= 0) s->opts.body_timeout_s = 30;
    mt_metrics_init(&s->metrics);
    pthread_mutex_init(&s->chat_mu, NULL);
    pthread_mutex_init(&s->window_mu, NULL);
    pthread_mutex_init(&s->placement_mu, NULL);
    s->started = time(NULL);
    s->id_salt = (uint64_t)s->started * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32;

    if (!(s->guard = mt_conn_guard_new(s->opts.max_connections, s->opts.header_timeout_s, s->opts.body_timeout_s))) {
        mt_errf(err, "out of memory, or no thread for the connection watchdog");
        goto fail;
    }
    if (listen_host(s, err)) goto fail;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->opts.port;
    return s;
fail:
    mt_conn_guard_free(s->guard);
    mt_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->chat_mu);
    pthread_mutex_destroy(&s->window_mu);
    pthread_mutex_destroy(&s->placement_mu);
    free(s);
    return NULL;
}

int mt_server_port(const mt_server *s) { return s->port; }

const char *mt_server_address(const mt_server *s) { return s->address; }

mt_server_metrics *mt_server_metrics_of(mt_server *s) { return &s->metrics; }

void mt_server_set_backend(mt_server *s, const mt_server_backend *b) {
    s->b = *b;
    s->placement_now = b->placement;
    mt_server_start_eplb(s);
    atomic_store(&s->ready, true);
}

void mt_server_set_draining(mt_server *s) { atomic_store(&s->draining, true); }

int mt_server_answers_in_flight(mt_server *s) { return atomic_load(&s->answering); }

int mt_server_uploads_in_flight(mt_server *s) {
    int n = atomic_load(&s->in_flight) - atomic_load(&s->answering);
    return n > 0 ? n : 0;
}

void mt_server_stop(mt_server *s) {
    if (!s) return;
    MHD_stop_daemon(s->daemon);
    mt_dump_writer_free(s->dump_writer); /* the engine thread has stopped: nothing more comes */
    mt_conn_guard_free(s->guard);
    mt_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->chat_mu);
    pthread_mutex_destroy(&s->window_mu);
    pthread_mutex_destroy(&s->placement_mu);
    mt_placement_destroy(s->placement_owned);
    free(s);
}

void mt_server_response_id(const mt_server *s, int64_t job_id, const char *prefix, char *out, size_t len) {
    uint64_t a = s->id_salt, b = (uint64_t)job_id * 0xD1B54A32D192ED03ull ^ s->id_salt >> 17;
    snprintf(out, len, "%s%016llx%016llx", prefix, (unsigned long long)a, (unsigned long long)b);
}

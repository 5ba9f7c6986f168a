/* Open connections: admitted in the order they are accepted, closed past their header or body
 * deadline (conn_guard.h). */
#include "server/conn_guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "util/err.h"

typedef struct conn {
    int fd;            /* -1 when unknown: the watchdog cannot close it */
    double accepted;   /* CLOCK_MONOTONIC seconds */
    double body_since; /* when the headers of the request whose body is being read came */
    bool over;         /* accepted while max_connections admitted ones were open */
    bool headers;      /* a request's headers have arrived */
    bool in_body;      /* a request's body is being read: body_since's deadline applies */
    bool shut;         /* the watchdog has shut its socket down */
    struct conn *prev, *next;
} conn;

/* Connections the watchdog closed for one deadline, and when that was last logged. */
typedef struct closes {
    int64_t total;
    double last_log;
} closes;

struct mt_conn_guard {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_t watchdog;
    bool stop;
    int max_connections, header_timeout_s, body_timeout_s;
    conn *head;
    int open;       /* every connection listed */
    int admitted;   /* those not over the limit */
    closes header_closes, body_closes;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Adds n connections closed for one deadline to cl, and logs the total at most once a minute
 * ("http: closed connections whose <what> within <limit_s> s (N so far)"). */
static void count_closes(closes *cl, int n, double now, const char *what, int limit_s) {
    if (!n) return;
    cl->total += n;
    if (now - cl->last_log < 60.0) return;
    cl->last_log = now;
    mt_log("http: closed connections whose %s within %d s (%lld so far)", what, limit_s, (long long)cl->total);
}

/* Shuts down the sockets of connections past their header or body deadline; g->mu held. */
static void enforce(mt_conn_guard *g, double now) {
    int late_headers = 0, late_bodies = 0;
    for (conn *k = g->head; k; k = k->next) {
        if (k->shut || k->fd < 0) continue;
        bool headers_late = !k->headers && now - k->accepted >= g->header_timeout_s;
        bool body_late = k->in_body && now - k->body_since >= g->body_timeout_s;
        if (!headers_late && !body_late) continue;
        /* The entry is removed (CLOSED) before libmicrohttpd closes the socket, so fd is still this
         * connection's. */
        shutdown(k->fd, SHUT_RDWR);
        k->shut = true;
        late_headers += headers_late;
        late_bodies += body_late;
    }
    count_closes(&g->header_closes, late_headers, now, "request headers did not all arrive", g->header_timeout_s);
    count_closes(&g->body_closes, late_bodies, now, "request body did not all arrive after its headers",
                 g->body_timeout_s);
}

static void *watchdog_main(void *arg) {
    mt_conn_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        int rc = pthread_cond_timedwait(&g->wake, &g->mu, &until);
        if (rc != 0 && rc != ETIMEDOUT) break;
        if (!g->stop) enforce(g, now_s());
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

mt_conn_guard *mt_conn_guard_new(int max_connections, int header_timeout_s, int body_timeout_s) {
    mt_conn_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->max_connections = max_connections > 0 ? max_connections : 1;
    g->header_timeout_s = header_timeout_s > 0 ? header_timeout_s : 1;
    g->body_timeout_s = body_timeout_s > 0 ? body_timeout_s : 1;
    g->header_closes.last_log = g->body_closes.last_log = -1e9;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->wake, NULL);
    if (pthread_create(&g->watchdog, NULL, watchdog_main, g)) {
        pthread_cond_destroy(&g->wake);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void mt_conn_guard_free(mt_conn_guard *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->wake);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->watchdog, NULL);
    while (g->head) {   /* none once the daemon has stopped; kept safe anyway */
        conn *k = g->head;
        g->head = k->next;
        free(k);
    }
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void mt_conn_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    mt_conn_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn *k = calloc(1, sizeof *k);
        *socket_context = k;
        if (!k) return;   /* without an entry its first request is refused (mt_conn_guard_headers) */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : -1;
        k->accepted = now_s();
        pthread_mutex_lock(&g->mu);
        k->next = g->head;
        if (g->head) g->head->prev = k;
        g->head = k;
        g->open++;
        k->over = g->admitted >= g->max_connections;
        if (!k->over) g->admitted++;
        pthread_mutex_unlock(&g->mu);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn *k = *socket_context;
        *socket_context = NULL;
        if (!k) return;
        pthread_mutex_lock(&g->mu);
        if (k->prev) k->prev->next = k->next;
        else g->head = k->next;
        if (k->next) k->next->prev = k->prev;
        g->open--;
        if (!k->over) g->admitted--;
        pthread_mutex_unlock(&g->mu);
        free(k);
    }
}

/* The guard's entry of c, or NULL when it has none. */
static conn *entry_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

bool mt_conn_guard_headers(mt_conn_guard *g, struct MHD_Connection *c) {
    conn *k = entry_of(c);
    if (!k) return true;
    pthread_mutex_lock(&g->mu);
    bool refuse = k->over && !k->headers;
    k->headers = true;
    k->in_body = true;
    k->body_since = now_s();
    pthread_mutex_unlock(&g->mu);
    return refuse;
}

void mt_conn_guard_body_done(mt_conn_guard *g, struct MHD_Connection *c) {
    conn *k = entry_of(c);
    if (!k) return;
    pthread_mutex_lock(&g->mu);
    k->in_body = false;
    pthread_mutex_unlock(&g->mu);
}

int mt_conn_guard_open(mt_conn_guard *g) {
    pthread_mutex_lock(&g->mu);
    int n = g->open;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int64_t mt_conn_guard_header_timeouts(mt_conn_guard *g) {
    pthread_mutex_lock(&g->mu);
    int64_t n = g->header_closes.total;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int64_t mt_conn_guard_body_timeouts(mt_conn_guard *g) {
    pthread_mutex_lock(&g->mu);
    int64_t n = g->body_closes.total;
    pthread_mutex_unlock(&g->mu);
    return n;
}

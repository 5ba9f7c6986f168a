/* Open connections and their first request's header deadline (conn_guard.h). */
#include "server/conn_guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "util/err.h"

typedef struct conn {
    int fd;
    double accepted;   /* CLOCK_MONOTONIC seconds */
    bool headers;      /* a request's headers have arrived */
    bool shut;         /* the watchdog has shut its socket down */
    struct conn *prev, *next;
} conn;

struct mt_conn_guard {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_t watchdog;
    bool stop;
    int header_timeout_s;
    conn *head;
    int open;
    int64_t timeouts;
    double last_log;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Shuts down the sockets of connections past their deadline; g->mu held. */
static void enforce(mt_conn_guard *g, double now) {
    int closed = 0;
    for (conn *k = g->head; k; k = k->next) {
        if (k->headers || k->shut || now - k->accepted < g->header_timeout_s) continue;
        /* The entry is removed (CLOSED) before libmicrohttpd closes the socket, so fd is still this
         * connection's. */
        shutdown(k->fd, SHUT_RDWR);
        k->shut = true;
        closed++;
    }
    if (!closed) return;
    g->timeouts += closed;
    if (now - g->last_log >= 60.0) {
        g->last_log = now;
        mt_log("http: closed connections whose request headers did not all arrive within %d s (%lld so far)",
               g->header_timeout_s, (long long)g->timeouts);
    }
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

mt_conn_guard *mt_conn_guard_new(int header_timeout_s) {
    mt_conn_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->header_timeout_s = header_timeout_s > 0 ? header_timeout_s : 1;
    g->last_log = -1e9;
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
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn *k = calloc(1, sizeof *k);
        *socket_context = k;
        if (!k || !ci) return;   /* without an entry the connection is simply not guarded */
        k->fd = ci->connect_fd;
        k->accepted = now_s();
        pthread_mutex_lock(&g->mu);
        k->next = g->head;
        if (g->head) g->head->prev = k;
        g->head = k;
        g->open++;
        pthread_mutex_unlock(&g->mu);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn *k = *socket_context;
        *socket_context = NULL;
        if (!k) return;
        pthread_mutex_lock(&g->mu);
        if (k->prev || g->head == k) {   /* listed (not when its fd was unknown) */
            if (k->prev) k->prev->next = k->next;
            else g->head = k->next;
            if (k->next) k->next->prev = k->prev;
            g->open--;
        }
        pthread_mutex_unlock(&g->mu);
        free(k);
    }
}

int mt_conn_guard_headers(mt_conn_guard *g, struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn *k = ci ? ci->socket_context : NULL;
    pthread_mutex_lock(&g->mu);
    int open = k && k->headers ? 0 : g->open;
    if (k) k->headers = true;
    pthread_mutex_unlock(&g->mu);
    return open;
}

int mt_conn_guard_open(mt_conn_guard *g) {
    pthread_mutex_lock(&g->mu);
    int n = g->open;
    pthread_mutex_unlock(&g->mu);
    return n;
}

int64_t mt_conn_guard_timeouts(mt_conn_guard *g) {
    pthread_mutex_lock(&g->mu);
    int64_t n = g->timeouts;
    pthread_mutex_unlock(&g->mu);
    return n;
}

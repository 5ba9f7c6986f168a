/* What a thread-per-connection server needs beyond libmicrohttpd's own connection handling:
 *  - it counts open connections, so that a request arriving over the server's limit is answered
 *    503 (a JSON error, then the connection closed) instead of its connection being reset at accept
 *    (libmicrohttpd's own limit is set above the server's, by MT_CONN_GUARD_HEADROOM, so those
 *    connections can still be answered);
 *  - it closes a connection whose first request has not sent all its headers within
 *    header_timeout_s of being accepted. libmicrohttpd's timeout counts idle time only, so a client
 *    sending a header byte now and then (or many clients sending part of their headers) would
 *    hold connection threads, and with them the whole server, for as long as it liked. Later
 *    requests of a keep-alive connection are left to the idle timeout.
 * A watchdog thread checks the deadlines once a second; it closes a connection by shutting its
 * socket down, which its own thread then sees as the client leaving. */
#ifndef MT_SERVER_CONN_GUARD_H
#define MT_SERVER_CONN_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include <microhttpd.h>

#define MT_CONN_GUARD_HEADROOM 64 /* connections accepted past the limit, to be answered 503 */

typedef struct mt_conn_guard mt_conn_guard;

/* NULL when out of memory or the watchdog cannot start. */
mt_conn_guard *mt_conn_guard_new(int header_timeout_s);
/* Stops the watchdog; call after the daemon has stopped (no connection left). */
void mt_conn_guard_free(mt_conn_guard *g);

/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback (cls: the guard). */
void mt_conn_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code);

/* A request's headers have arrived on c: its connection's deadline no longer applies. Returns the
 * number of connections open now when this is the connection's first request, else 0 (a connection
 * admitted once is not refused later because newer ones came). */
int mt_conn_guard_headers(mt_conn_guard *g, struct MHD_Connection *c);

/* Connections closed so far because their headers came too slowly; connections open now. */
int64_t mt_conn_guard_timeouts(mt_conn_guard *g);
int mt_conn_guard_open(mt_conn_guard *g);

#endif

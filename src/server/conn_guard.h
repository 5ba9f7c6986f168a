/* What a thread-per-connection server needs beyond libmicrohttpd's own connection handling:
 *  - it admits connections in the order they are accepted: the first max_connections open ones are
 *    admitted, and a connection accepted while that many admitted ones are open is beyond the limit,
 *    so that its first request is answered 503 (a JSON error, then the connection closed) instead of
 *    its connection being reset at accept (libmicrohttpd's own limit is set above the server's, by
 *    MT_CONN_GUARD_HEADROOM, so those connections can still be answered). The decision is taken at
 *    accept and kept: an admitted connection is served whenever its headers come, and a refused one
 *    still closing does not count against those accepted after it;
 *  - it closes a connection whose first request has not sent all its headers within
 *    header_timeout_s of being accepted. libmicrohttpd's timeout counts idle time only, so a client
 *    sending a header byte now and then (or many clients sending part of their headers) would
 *    hold connection threads, and with them the whole server, for as long as it liked. Later
 *    requests of a keep-alive connection are left to the idle timeout;
 *  - for the same reason it closes a connection whose request body (any request's, keep-alive ones
 *    included) has not all arrived within body_timeout_s of the request's headers.
 * A watchdog thread checks the deadlines once a second; it closes a connection by shutting its
 * socket down, which its own thread then sees as the client leaving. */
#ifndef MT_SERVER_CONN_GUARD_H
#define MT_SERVER_CONN_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include <microhttpd.h>

#define MT_CONN_GUARD_HEADROOM 64 /* connections accepted past the limit, to be answered 503 */

typedef struct mt_conn_guard mt_conn_guard;

/* NULL when out of memory or the watchdog cannot start. Limits below 1 count as 1. */
mt_conn_guard *mt_conn_guard_new(int max_connections, int header_timeout_s, int body_timeout_s);
/* Stops the watchdog; call after the daemon has stopped (no connection left). */
void mt_conn_guard_free(mt_conn_guard *g);

/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback (cls: the guard). libmicrohttpd calls it with
 * STARTED on its accepting thread, in the order connections are accepted: that is where a connection
 * is admitted or found beyond the limit. */
void mt_conn_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code);

/* A request's headers have arrived on c: the connection's header deadline no longer applies, and the
 * request's body deadline (body_timeout_s from now) applies until mt_conn_guard_body_done. Returns
 * true when c was accepted beyond the limit and this is its first request (answer it 503 and close
 * the connection; a connection the guard could not record, out of memory, is refused too), false
 * for every request of an admitted connection. */
bool mt_conn_guard_headers(mt_conn_guard *g, struct MHD_Connection *c);
/* The request on c has its whole body, or is answered without reading it: its body deadline no
 * longer applies. */
void mt_conn_guard_body_done(mt_conn_guard *g, struct MHD_Connection *c);

/* Connections closed so far because their first request's headers, or a request's body, came too
 * slowly; connections open now (admitted or not). */
int64_t mt_conn_guard_header_timeouts(mt_conn_guard *g);
int64_t mt_conn_guard_body_timeouts(mt_conn_guard *g);
int mt_conn_guard_open(mt_conn_guard *g);

#endif

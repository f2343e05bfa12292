/* Connections accepted on the PROXY listeners ([pop3] listen_proxy, listen_tls_proxy): taken only
 * from [pop3] proxy_trusted; their PROXY header (src/net/proxy_protocol.h) is read off the socket
 * without touching a byte after it, then the POP3 session starts with the client address the
 * header names, so that logs, per-IP limits, login delays and bans apply to the real client. */
#ifndef BUZON_POP3_PROXY_ACCEPT_H
#define BUZON_POP3_PROXY_ACCEPT_H

#include <stdbool.h>
#include <sys/socket.h>

struct pop3_worker;

/* How long a proxy has to deliver the whole header (or [pop3] login_timeout if shorter). The
 * spec asks receivers to wait at least 3 s (one TCP retransmission); proxies send the header with
 * the connection, so 10 s runs out only for a stuck proxy or something that is not a proxy, and
 * bounds how long one of the max_connections slots stays taken without a session. */
#define POP3_PROXY_HEADER_TIMEOUT_SECS 10

/* Parses [pop3] proxy_trusted into worker->proxy_trusted (config_load() has checked it, so a
 * failure is fatal). */
void pop3_proxy_start(struct pop3_worker *worker);

/* Takes over fd, accepted on a PROXY listener from peer. Refuses it (log and close, no reply)
 * when peer is not trusted or the worker already holds max_connections; otherwise waits for the
 * header, then hands fd to pop3_session_create_proxied(), over TLS from the first byte after the
 * header when implicit_tls. A malformed, truncated or late header closes the connection with a
 * proxy_header_invalid log line and no POP3 greeting. */
void pop3_proxy_accept(struct pop3_worker *worker, int fd, const struct sockaddr *peer,
		       int peer_len, bool implicit_tls);

/* Closes the connections still waiting for their header and frees what pop3_proxy_start() made.
 */
void pop3_proxy_stop(struct pop3_worker *worker);

#endif

/* Reading the PROXY header of connections from trusted proxies (see proxy_accept.h).
 *
 * The header must come off the socket exactly: the bytes after it belong to the session (POP3
 * commands sent in the same packet, or the TLS ClientHello on listen_tls_proxy). So each read
 * first peeks at no more octets than the parser says the header can still take, and then takes
 * only header octets: all it peeked while the header is incomplete (none of them can be past the
 * header), or exactly up to the header's end once it is complete. A header split over several
 * packets is kept in the connection's own buffer meanwhile (PROXY_HEADER_MAX octets). */
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "net/listener.h"
#include "net/netlist.h"
#include "net/proxy_protocol.h"
#include "pop3/proxy_accept.h"
#include "pop3/session.h"
#include "pop3/worker.h"

/* A connection whose header has not fully arrived, in the worker's list. */
struct pop3_proxy_pending {
	struct pop3_proxy_pending *prev, *next;
	struct pop3_worker *worker;
	int fd;
	bool implicit_tls;
	struct event *event;	  /* readable, or the time is up */
	struct timespec deadline; /* CLOCK_MONOTONIC */
	struct sockaddr_storage proxy;
	socklen_t proxy_len;
	char proxy_ip[64];
	size_t missing;	 /* at most this many more octets belong to the header */
	size_t received; /* header octets already taken off the socket, in header[] */
	unsigned char header[PROXY_HEADER_MAX];
};

void pop3_proxy_start(struct pop3_worker *worker)
{
	const char *trusted = worker->config->proxy_trusted;
	char *error = NULL;

	if (trusted != NULL && net_list_parse(trusted, &worker->proxy_trusted, &error) < 0)
		fatal("[pop3] proxy_trusted: %s", error);
}

/* Unlinks and frees pending; closes its socket unless the session took it over. */
static void pop3_proxy_pending_free(struct pop3_proxy_pending *pending, bool close_fd)
{
	struct pop3_worker *worker = pending->worker;

	if (pending->prev != NULL)
		pending->prev->next = pending->next;
	else
		worker->proxy_pending = pending->next;
	if (pending->next != NULL)
		pending->next->prev = pending->prev;
	worker->proxy_pending_count--;
	event_free(pending->event);
	if (close_fd)
		close(pending->fd);
	free(pending);
}

static void pop3_proxy_fail(struct pop3_proxy_pending *pending, const char *reason)
{
	log_warn("proxy_header_invalid", "proxy=%s reason=%s received=%zu", pending->proxy_ip,
		 log_quote(reason), pending->received);
	pop3_proxy_pending_free(pending, true);
}

/* Waits for more octets until the deadline; fails the connection if it has passed. */
static void pop3_proxy_wait(struct pop3_proxy_pending *pending)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	long long left_ms = (long long)(pending->deadline.tv_sec - now.tv_sec) * 1000 +
			    (pending->deadline.tv_nsec - now.tv_nsec) / 1000000;
	if (left_ms <= 0) {
		pop3_proxy_fail(pending, "timeout");
		return;
	}
	struct timeval left = {.tv_sec = left_ms / 1000, .tv_usec = (left_ms % 1000) * 1000};
	event_add(pending->event, &left);
}

/* The header is in and off the socket: the session takes the connection over. */
static void pop3_proxy_start_session(struct pop3_proxy_pending *pending,
				     const struct proxy_header *header)
{
	struct pop3_worker *worker = pending->worker;
	struct sockaddr_storage client, proxy = pending->proxy;
	socklen_t client_len = pending->proxy_len;
	int fd = pending->fd;
	bool implicit_tls = pending->implicit_tls;

	/* LOCAL, UNKNOWN, UNSPEC, UNIX: the connection's own peer, as the spec asks */
	client = pending->proxy;
	if (header->has_addresses) {
		client = header->source;
		client_len = header->source.ss_family == AF_INET ? sizeof(struct sockaddr_in)
								 : sizeof(struct sockaddr_in6);
	}
	pop3_proxy_pending_free(pending, false);
	(void)pop3_session_create_proxied(worker, fd, (const struct sockaddr *)&client,
					  (int)client_len, (const struct sockaddr *)&proxy,
					  implicit_tls);
}

/* The peer closed or reset the connection before the header was complete. */
static void pop3_proxy_gone(struct pop3_proxy_pending *pending)
{
	if (pending->received > 0) {
		pop3_proxy_fail(pending, "connection closed inside the header");
		return;
	}
	/* a proxy's plain TCP health check connects and closes: not worth a warning */
	log_debug("disconnect", "proxy=%s reason=%s", pending->proxy_ip,
		  log_quote("closed before the PROXY header"));
	pop3_proxy_pending_free(pending, true);
}

static void pop3_proxy_readable(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_proxy_pending *pending = arg;
	unsigned char *end = pending->header + pending->received;

	if (what & EV_TIMEOUT) {
		pop3_proxy_fail(pending, "timeout");
		return;
	}
	if (pending->missing > sizeof(pending->header) - pending->received)
		fatal("PROXY header parser promised more than PROXY_HEADER_MAX octets");
	ssize_t peeked = recv(fd, end, pending->missing, MSG_PEEK);
	if (peeked < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		pop3_proxy_wait(pending);
		return;
	}
	if (peeked == 0 || (peeked < 0 && (errno == ECONNRESET || errno == EPIPE))) {
		pop3_proxy_gone(pending);
		return;
	}
	if (peeked < 0) {
		pop3_proxy_fail(pending, strerror(errno));
		return;
	}

	struct proxy_header header;
	const char *error = NULL;
	size_t missing = 0;
	int ret = proxy_header_parse(pending->header, pending->received + (size_t)peeked, &header,
				     &missing, &error);
	if (ret < 0) {
		pop3_proxy_fail(pending, error);
		return;
	}
	size_t take = ret == 1 ? header.length - pending->received : (size_t)peeked;
	/* the octets were just peeked, so they are queued: recv() hands them over whole */
	if (recv(fd, end, take, 0) != (ssize_t)take) {
		pop3_proxy_fail(pending, "short read of peeked octets");
		return;
	}
	pending->received += take;
	pending->missing = missing;
	if (ret == 1)
		pop3_proxy_start_session(pending, &header);
	else
		pop3_proxy_wait(pending);
}

void pop3_proxy_accept(struct pop3_worker *worker, int fd, const struct sockaddr *peer,
		       int peer_len, bool implicit_tls)
{
	char ip[64];

	listener_format_ip(peer, ip, sizeof(ip));
	if (!net_list_contains(worker->proxy_trusted, peer)) {
		log_warn("connection_refused", "ip=%s reason=proxy_untrusted", ip);
		close(fd);
		return;
	}
	if (worker->session_count + worker->proxy_pending_count >=
	    worker->config->max_connections) {
		log_warn("connection_refused", "ip=%s reason=max_connections", ip);
		close(fd);
		return;
	}

	struct pop3_proxy_pending *pending = xcalloc(1, sizeof(*pending));
	pending->worker = worker;
	pending->fd = fd;
	pending->implicit_tls = implicit_tls;
	memcpy(&pending->proxy, peer, (size_t)peer_len);
	pending->proxy_len = (socklen_t)peer_len;
	memcpy(pending->proxy_ip, ip, sizeof(ip));
	pending->missing = PROXY_HEADER_MAX;
	/* waiting for the header is pre-login time too: never longer than login_timeout */
	unsigned int timeout_secs = worker->config->login_timeout_secs;
	if (timeout_secs > POP3_PROXY_HEADER_TIMEOUT_SECS)
		timeout_secs = POP3_PROXY_HEADER_TIMEOUT_SECS;
	clock_gettime(CLOCK_MONOTONIC, &pending->deadline);
	pending->deadline.tv_sec += (time_t)timeout_secs;
	pending->event = event_new(worker->base, fd, EV_READ, pop3_proxy_readable, pending);
	if (pending->event == NULL) {
		log_error("connection_setup_failed", "ip=%s proxy=yes", ip);
		close(fd);
		free(pending);
		return;
	}
	pending->next = worker->proxy_pending;
	if (worker->proxy_pending != NULL)
		worker->proxy_pending->prev = pending;
	worker->proxy_pending = pending;
	worker->proxy_pending_count++;
	pop3_proxy_wait(pending);
}

void pop3_proxy_stop(struct pop3_worker *worker)
{
	while (worker->proxy_pending != NULL)
		pop3_proxy_pending_free(worker->proxy_pending, true);
	net_list_free(&worker->proxy_trusted);
}

/* Driving a real session on a libevent loop from a fuzz target: the client's end of a socketpair
 * is read by an event of the same loop (so a session that writes a lot never blocks on it), and the
 * loop is run until a predicate says the session has done all it can with the input so far.
 * Shared by the POP3 and LMTP session targets. Header-only, like fuzz_common.h. */
#ifndef BUZON_FUZZ_LOOP_H
#define BUZON_FUZZ_LOOP_H

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "fuzz_common.h"

/* The client side of one connection: what it has read back from the server. */
struct fuzz_client {
	int fd;
	struct event *read_event;
	struct evbuffer *received;
	bool eof;
};

static inline void fuzz_client_readable(evutil_socket_t fd, short what, void *arg)
{
	struct fuzz_client *client = arg;
	char buf[16384];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			evbuffer_add(client->received, buf, (size_t)n);
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			client->eof = true;
			event_del(client->read_event);
		}
		return;
	}
}

/* Makes a socketpair; the server's end goes to *server_fd_r (non-blocking, for a session). */
static inline void fuzz_client_open(struct fuzz_client *client, struct event_base *base,
				    int *server_fd_r)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) < 0) {
		perror("socketpair");
		abort();
	}
	client->fd = pair[1];
	client->eof = false;
	client->received = evbuffer_new();
	client->read_event =
	    event_new(base, client->fd, EV_READ | EV_PERSIST, fuzz_client_readable, client);
	event_add(client->read_event, NULL);
	*server_fd_r = pair[0];
}

static inline void fuzz_client_close(struct fuzz_client *client)
{
	event_free(client->read_event);
	evbuffer_free(client->received);
	close(client->fd);
	client->fd = -1;
}

/* Octets waiting to be read on fd (for a SOCK_SEQPACKET socket: the next datagram's size). */
static inline int fuzz_fd_pending(int fd)
{
	int n = 0;

	return ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
}

static inline void fuzz_loop_wake(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Runs the loop once: what is ready now, or else what becomes ready first. A timer of 50 ms bounds
 * the wait, so that a predicate that misjudges only slows an input down; a session that really
 * stalls is caught by libFuzzer's -timeout. (event_base_loopexit() would leave an allocated event
 * behind whenever something else ends the pass first.) */
static inline void fuzz_loop_step(struct event_base *base)
{
	static struct event *wake;
	static struct event_base *wake_base;
	struct timeval slice = {.tv_usec = 50000};

	if (wake_base != base) {
		if (wake != NULL)
			event_free(wake);
		wake = evtimer_new(base, fuzz_loop_wake, NULL);
		wake_base = base;
	}
	evtimer_add(wake, &slice);
	event_base_loop(base, EVLOOP_ONCE);
	evtimer_del(wake);
}

/* Runs the loop until done(context) holds before and after one pass over whatever is already
 * active (deferred callbacks, timers that are due). */
static inline void fuzz_loop_until(struct event_base *base, bool (*done)(void *context),
				   void *context)
{
	for (;;) {
		if (done(context)) {
			event_base_loop(base, EVLOOP_NONBLOCK);
			if (done(context))
				return;
			continue;
		}
		fuzz_loop_step(base);
	}
}

/* Sends all of data to the server, running the loop whenever the socket buffer is full. */
static inline void fuzz_client_send(struct fuzz_client *client, struct event_base *base,
				    const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = send(client->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			event_base_loop(base, EVLOOP_NONBLOCK);
		} else {
			return; /* the server closed: the rest cannot be delivered */
		}
	}
}

/* True if the input buffer holds a complete line (an LF). */
static inline bool fuzz_evbuffer_has_line(struct evbuffer *in)
{
	struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);

	return lf.pos >= 0;
}

#endif

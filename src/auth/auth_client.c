/* Asynchronous auth requests from a POP3 worker (see auth_client.h). Pending requests live in a
 * small hash table keyed by id; a reply for an unknown or cancelled id is dropped. Requests that
 * cannot be sent at once (socket buffer full) wait in a queue until the socket is writable. */
#include <errno.h>
#include <event2/event.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/auth_client.h"
#include "core/log.h"
#include "core/util.h"

#define AUTH_PENDING_BUCKETS 1024

struct auth_pending {
	struct auth_pending *next;
	uint32_t id;
	auth_verify_callback *callback;
	void *context;
	/* the encoded request while it waits to be sent; wiped and freed once sent */
	unsigned char *datagram;
	size_t datagram_len;
	struct auth_pending *send_next;
};

struct auth_client {
	int fd;
	bool broken; /* the auth process went away: fail everything */
	struct event *read_event;
	struct event *write_event;
	struct event *fail_event; /* runs failure callbacks outside the caller's stack */
	uint32_t next_id;
	struct auth_pending *buckets[AUTH_PENDING_BUCKETS];
	struct auth_pending *send_head, *send_tail;
};

static struct auth_pending **auth_pending_slot(struct auth_client *client, uint32_t id)
{
	struct auth_pending **slot = &client->buckets[id % AUTH_PENDING_BUCKETS];

	while (*slot != NULL && (*slot)->id != id)
		slot = &(*slot)->next;
	return slot;
}

static void auth_pending_wipe(struct auth_pending *pending)
{
	if (pending->datagram != NULL) {
		sodium_memzero(pending->datagram, pending->datagram_len);
		x_free(&pending->datagram);
	}
}

/* Unlinks id from the table and the send queue; returns it (caller frees) or NULL. */
static struct auth_pending *auth_pending_take(struct auth_client *client, uint32_t id)
{
	struct auth_pending **slot = auth_pending_slot(client, id);
	struct auth_pending *pending = *slot;

	if (pending == NULL)
		return NULL;
	*slot = pending->next;
	if (pending->datagram != NULL) {
		struct auth_pending **q = &client->send_head, *prev = NULL;
		while (*q != NULL && *q != pending) {
			prev = *q;
			q = &(*q)->send_next;
		}
		if (*q == pending) {
			*q = pending->send_next;
			if (client->send_tail == pending)
				client->send_tail = prev;
		}
	}
	auth_pending_wipe(pending);
	return pending;
}

/* Fails every pending request: called when the auth process has gone. */
static void auth_client_fail_all(evutil_socket_t fd, short what, void *arg)
{
	struct auth_client *client = arg;

	for (size_t i = 0; i < AUTH_PENDING_BUCKETS; i++) {
		while (client->buckets[i] != NULL) {
			struct auth_pending *pending =
			    auth_pending_take(client, client->buckets[i]->id);
			pending->callback(pending->context, AUTH_RESULT_TEMPFAIL, NULL, NULL);
			free(pending);
		}
	}
}

static void auth_client_break(struct auth_client *client, const char *why)
{
	if (!client->broken)
		log_error("auth_connection_lost", "reason=%s", log_quote(why));
	client->broken = true;
	event_del(client->read_event);
	event_del(client->write_event);
	event_active(client->fail_event, 0, 0);
}

static void auth_client_deliver(struct auth_client *client, const struct auth_verify_reply *reply)
{
	struct auth_pending *pending = auth_pending_take(client, reply->id);
	char *user = NULL, *location = NULL;

	if (pending == NULL)
		return; /* cancelled: the session went away */
	if (reply->result == AUTH_RESULT_OK) {
		user = xstrndup(reply->user, reply->user_len);
		location = xstrndup(reply->location, reply->location_len);
	}
	pending->callback(pending->context, reply->result, user, location);
	free(user);
	free(location);
	free(pending);
}

static void auth_client_readable(evutil_socket_t fd, short what, void *arg)
{
	struct auth_client *client = arg;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE + 1];
	struct auth_verify_reply reply;

	/* bounded: never starve the sessions of this loop */
	for (int i = 0; i < 64; i++) {
		ssize_t len = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (len < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (len <= 0) {
			auth_client_break(client, len == 0 ? "closed" : strerror(errno));
			return;
		}
		if (auth_proto_decode_reply(buf, (size_t)len, &reply) < 0) {
			auth_client_break(client, "malformed reply");
			return;
		}
		auth_client_deliver(client, &reply);
	}
}

static void auth_client_flush(struct auth_client *client)
{
	while (client->send_head != NULL) {
		struct auth_pending *pending = client->send_head;
		if (send(client->fd, pending->datagram, pending->datagram_len,
			 MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				event_add(client->write_event, NULL);
				return;
			}
			auth_client_break(client, strerror(errno));
			return;
		}
		client->send_head = pending->send_next;
		if (client->send_head == NULL)
			client->send_tail = NULL;
		auth_pending_wipe(pending);
	}
}

static void auth_client_writable(evutil_socket_t fd, short what, void *arg)
{
	auth_client_flush(arg);
}

struct auth_client *auth_client_create(struct event_base *base, int fd)
{
	struct auth_client *client = xcalloc(1, sizeof(*client));

	client->fd = fd;
	client->next_id = 1;
	client->read_event =
	    event_new(base, fd, EV_READ | EV_PERSIST, auth_client_readable, client);
	client->write_event = event_new(base, fd, EV_WRITE, auth_client_writable, client);
	client->fail_event = event_new(base, -1, 0, auth_client_fail_all, client);
	if (client->read_event == NULL || client->write_event == NULL || client->fail_event == NULL)
		fatal("event_new failed");
	event_add(client->read_event, NULL);
	return client;
}

void auth_client_destroy(struct auth_client **clientp)
{
	struct auth_client *client = *clientp;

	if (client == NULL)
		return;
	for (size_t i = 0; i < AUTH_PENDING_BUCKETS; i++) {
		while (client->buckets[i] != NULL)
			free(auth_pending_take(client, client->buckets[i]->id));
	}
	event_free(client->read_event);
	event_free(client->write_event);
	event_free(client->fail_event);
	close(client->fd);
	x_free(clientp);
}

uint32_t auth_client_verify(struct auth_client *client, const char *user, const char *password,
			    auth_verify_callback *callback, void *context)
{
	struct auth_pending *pending = xcalloc(1, sizeof(*pending));
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	struct auth_verify_request req = {.user = user,
					  .user_len = strlen(user),
					  .password = password,
					  .password_len = strlen(password)};

	do {
		req.id = client->next_id++;
	} while (req.id == 0 || *auth_pending_slot(client, req.id) != NULL);
	pending->id = req.id;
	pending->callback = callback;
	pending->context = context;
	struct auth_pending **slot = auth_pending_slot(client, req.id);
	*slot = pending;

	size_t len = auth_proto_encode_request(buf, sizeof(buf), &req);
	if (len == 0 || client->broken) {
		/* answered as a failure from the loop, like any other reply */
		if (len == 0) {
			auth_pending_take(client, req.id);
			free(pending);
			return auth_client_verify(client, "", "", callback, context);
		}
		event_active(client->fail_event, 0, 0);
		return req.id;
	}
	pending->datagram = xmalloc(len);
	memcpy(pending->datagram, buf, len);
	pending->datagram_len = len;
	sodium_memzero(buf, len);
	if (client->send_tail != NULL)
		client->send_tail->send_next = pending;
	else
		client->send_head = pending;
	client->send_tail = pending;
	auth_client_flush(client);
	return req.id;
}

void auth_client_cancel(struct auth_client *client, uint32_t id)
{
	free(auth_pending_take(client, id));
}

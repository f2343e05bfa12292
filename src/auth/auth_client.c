/* Asynchronous auth requests from a POP3 worker (see auth_client.h). Open requests live in a small
 * hash table keyed by id; an answer for an unknown or cancelled id is dropped. Datagrams that
 * cannot be sent at once (socket buffer full) wait in a queue until the socket is writable. */
#include <errno.h>
#include <event2/event.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/auth_client.h"
#include "auth/recipient.h"
#include "core/log.h"
#include "core/util.h"

#define AUTH_PENDING_BUCKETS 1024

struct auth_pending {
	struct auth_pending *next;
	uint32_t id;
	enum auth_msg_type type; /* of the request's last message: what its answer must carry */
	auth_reply_callback *callback;
	void *context;
	bool failed; /* to be answered with TEMPFAIL from the loop */
};

/* A datagram waiting for the socket to accept it; wiped once sent. */
struct auth_outgoing {
	struct auth_outgoing *next;
	size_t len;
	unsigned char data[];
};

struct auth_client {
	int fd;
	bool broken; /* the auth process went away: fail everything */
	struct event *read_event;
	struct event *write_event;
	struct event *fail_event; /* runs failure callbacks outside the caller's stack */
	uint32_t next_id;
	uint32_t building_id;
	enum auth_msg_type building_type;
	struct auth_msg_builder builder;
	struct auth_pending *buckets[AUTH_PENDING_BUCKETS];
	struct auth_outgoing *send_head, *send_tail;
	struct event *policy_timer;	   /* auth_client_watch_policy(): asks again */
	uint32_t policy_request;	   /* the POLICY_QUERY in flight, 0 when none */
	bool policy_known;		   /* policy holds an answer */
	struct auth_policy_bounds policy;
};

static struct auth_pending **auth_pending_slot(struct auth_client *client, uint32_t id)
{
	struct auth_pending **slot = &client->buckets[id % AUTH_PENDING_BUCKETS];

	while (*slot != NULL && (*slot)->id != id)
		slot = &(*slot)->next;
	return slot;
}

static struct auth_pending *auth_pending_take(struct auth_client *client, uint32_t id)
{
	struct auth_pending **slot = auth_pending_slot(client, id);
	struct auth_pending *pending = *slot;

	if (pending != NULL)
		*slot = pending->next;
	return pending;
}

static void auth_outgoing_free(struct auth_outgoing **out)
{
	sodium_memzero((*out)->data, (*out)->len);
	x_free(out);
}

/* Answers failed requests (or all of them once the auth process is gone) with TEMPFAIL. */
static void auth_client_fail_pending(evutil_socket_t fd, short what, void *arg)
{
	struct auth_client *client = arg;
	struct auth_reply reply = {.type = AUTH_MSG_RESULT, .result = AUTH_RESULT_TEMPFAIL};

	for (size_t i = 0; i < AUTH_PENDING_BUCKETS; i++) {
		struct auth_pending **slot = &client->buckets[i];
		while (*slot != NULL) {
			struct auth_pending *pending = *slot;
			if (!client->broken && !pending->failed) {
				slot = &pending->next;
				continue;
			}
			*slot = pending->next;
			pending->callback(pending->context, &reply);
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

/* Reads the policy fields of a RESULT into reply. Returns -1 if they are out of range (an auth
 * process that sends them is broken), else 0. */
static int auth_reply_policy(const struct auth_msg *msg, struct auth_reply *reply)
{
	uint32_t expire = auth_msg_u32(msg, AUTH_FIELD_EXPIRE_DAYS, 0);
	uint32_t delay = auth_msg_u32(msg, AUTH_FIELD_LOGIN_DELAY, 0);

	reply->has_policy = msg->fields[AUTH_FIELD_EXPIRE_DAYS].present &&
			    msg->fields[AUTH_FIELD_LOGIN_DELAY].present;
	reply->policy_flags = auth_msg_u32(msg, AUTH_FIELD_POLICY_FLAGS, 0);
	if (!reply->has_policy)
		return msg->fields[AUTH_FIELD_EXPIRE_DAYS].present ||
			       msg->fields[AUTH_FIELD_LOGIN_DELAY].present
			   ? -1
			   : 0;
	if ((expire > RECIPIENT_EXPIRE_DAYS_MAX && expire != AUTH_EXPIRE_NEVER) ||
	    delay > RECIPIENT_LOGIN_DELAY_MAX ||
	    (reply->policy_flags &
	     ~(uint32_t)(AUTH_POLICY_EXPIRE_PER_USER | AUTH_POLICY_LOGIN_DELAY_PER_USER)) != 0)
		return -1;
	reply->expire_days = expire == AUTH_EXPIRE_NEVER ? -1 : (int)expire;
	reply->login_delay_secs = delay;
	return 0;
}

/* Whether an OK answer to a request of this type carries what the request needs. */
static bool auth_reply_ok_complete(enum auth_msg_type request, const char *user,
				   const char *location, const struct auth_reply *reply)
{
	switch (request) {
	case AUTH_MSG_LOOKUP:
		return user != NULL && location != NULL;
	case AUTH_MSG_POLICY_QUERY:
		return user == NULL && location == NULL && reply->has_policy;
	default: /* a login */
		return user != NULL && location != NULL && reply->has_policy;
	}
}

static void auth_client_deliver(struct auth_client *client, const struct auth_msg *msg)
{
	bool final = msg->type == AUTH_MSG_RESULT;
	struct auth_pending *pending =
	    final ? auth_pending_take(client, msg->id) : *auth_pending_slot(client, msg->id);
	struct auth_reply reply = {.type = msg->type};
	char *user = NULL, *location = NULL;

	if (pending == NULL)
		return; /* cancelled: the session went away */
	if (final) {
		reply.result = (enum auth_result)auth_msg_u32(msg, AUTH_FIELD_RESULT, 0);
		reply.delay_ms = auth_msg_u32(msg, AUTH_FIELD_DELAY_MS, 0);
		reply.quota_bytes = auth_msg_u64(msg, AUTH_FIELD_QUOTA_BYTES, 0);
		reply.quota_messages = auth_msg_u64(msg, AUTH_FIELD_QUOTA_MESSAGES, 0);
		user = auth_msg_strdup(msg, AUTH_FIELD_USER);
		location = auth_msg_strdup(msg, AUTH_FIELD_LOCATION);
		/* a broken answer never logs anyone in */
		if (auth_reply_policy(msg, &reply) < 0 ||
		    (reply.result == AUTH_RESULT_OK &&
		     !auth_reply_ok_complete(pending->type, user, location, &reply)))
			reply.result = AUTH_RESULT_TEMPFAIL;
		reply.user = user;
		reply.location = location;
	} else {
		reply.challenge = msg->fields[AUTH_FIELD_CHALLENGE].data;
		reply.challenge_len = msg->fields[AUTH_FIELD_CHALLENGE].len;
	}
	pending->callback(pending->context, &reply);
	free(user);
	free(location);
	if (final)
		free(pending);
}

static void auth_client_readable(evutil_socket_t fd, short what, void *arg)
{
	struct auth_client *client = arg;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE + 1];
	struct auth_msg msg;

	/* bounded: never starve the sessions of this loop */
	for (int i = 0; i < 64; i++) {
		ssize_t len = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (len < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (len <= 0) {
			auth_client_break(client, len == 0 ? "closed" : strerror(errno));
			return;
		}
		if (auth_msg_decode(buf, (size_t)len, &msg) < 0 ||
		    (msg.type != AUTH_MSG_RESULT && msg.type != AUTH_MSG_CHALLENGE)) {
			auth_client_break(client, "malformed reply");
			return;
		}
		auth_client_deliver(client, &msg);
	}
}

static void auth_client_flush(struct auth_client *client)
{
	while (client->send_head != NULL) {
		struct auth_outgoing *out = client->send_head;
		if (send(client->fd, out->data, out->len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				event_add(client->write_event, NULL);
				return;
			}
			auth_client_break(client, strerror(errno));
			return;
		}
		client->send_head = out->next;
		if (client->send_head == NULL)
			client->send_tail = NULL;
		auth_outgoing_free(&out);
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
	client->fail_event = event_new(base, -1, 0, auth_client_fail_pending, client);
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
	while (client->send_head != NULL) {
		struct auth_outgoing *out = client->send_head;
		client->send_head = out->next;
		auth_outgoing_free(&out);
	}
	event_free(client->read_event);
	event_free(client->write_event);
	event_free(client->fail_event);
	if (client->policy_timer != NULL)
		event_free(client->policy_timer);
	close(client->fd);
	auth_msg_wipe(&client->builder);
	x_free(clientp);
}

struct auth_msg_builder *auth_client_begin(struct auth_client *client, enum auth_msg_type type,
					   uint32_t id)
{
	if (id == 0) {
		do {
			id = client->next_id++;
		} while (id == 0 || *auth_pending_slot(client, id) != NULL);
	}
	client->building_id = id;
	client->building_type = type;
	auth_msg_begin(&client->builder, type, id);
	return &client->builder;
}

static void auth_client_queue(struct auth_client *client, const unsigned char *data, size_t len)
{
	struct auth_outgoing *out = xmalloc(sizeof(*out) + len);

	out->next = NULL;
	out->len = len;
	memcpy(out->data, data, len);
	if (client->send_tail != NULL)
		client->send_tail->next = out;
	else
		client->send_head = out;
	client->send_tail = out;
}

uint32_t auth_client_send(struct auth_client *client, auth_reply_callback *callback, void *context)
{
	uint32_t id = client->building_id;
	struct auth_pending **slot = auth_pending_slot(client, id);
	struct auth_pending *pending = *slot;
	size_t len = auth_msg_finish(&client->builder);

	if (pending == NULL) {
		pending = xcalloc(1, sizeof(*pending));
		pending->id = id;
		*slot = pending;
	}
	pending->type = client->building_type;
	pending->callback = callback;
	pending->context = context;
	if (len == 0 || client->broken) {
		/* answered as a failure from the loop, like any other answer */
		pending->failed = true;
		event_active(client->fail_event, 0, 0);
	} else {
		auth_client_queue(client, client->builder.buf, len);
		auth_client_flush(client);
	}
	auth_msg_wipe(&client->builder);
	return id;
}

void auth_client_cancel(struct auth_client *client, uint32_t id)
{
	struct auth_pending *pending = auth_pending_take(client, id);

	if (pending == NULL)
		return;
	free(pending);
	if (client->broken)
		return;
	/* the auth process may hold a SASL conversation for this id: let it go */
	struct auth_msg_builder abort_msg;
	auth_msg_begin(&abort_msg, AUTH_MSG_SASL_ABORT, id);
	auth_client_queue(client, abort_msg.buf, auth_msg_finish(&abort_msg));
	auth_client_flush(client);
}

static void auth_client_policy_answered(void *context, const struct auth_reply *reply)
{
	struct auth_client *client = context;

	/* a challenge is no answer to this: the auth process is broken; let the request go */
	if (reply->type != AUTH_MSG_RESULT)
		auth_client_cancel(client, client->policy_request);
	client->policy_request = 0;
	/* a failure (the auth process gone, the passwd-file unreadable) keeps the last answer */
	if (reply->type != AUTH_MSG_RESULT || reply->result != AUTH_RESULT_OK)
		return;
	client->policy = (struct auth_policy_bounds){
	    .expire_days_min = reply->expire_days,
	    .login_delay_max = reply->login_delay_secs,
	    .expire_per_user = (reply->policy_flags & AUTH_POLICY_EXPIRE_PER_USER) != 0,
	    .login_delay_per_user = (reply->policy_flags & AUTH_POLICY_LOGIN_DELAY_PER_USER) != 0};
	client->policy_known = true;
}

static void auth_client_policy_ask(evutil_socket_t fd, short what, void *arg)
{
	struct auth_client *client = arg;

	if (client->policy_request != 0 || client->broken)
		return;
	(void)auth_client_begin(client, AUTH_MSG_POLICY_QUERY, 0);
	client->policy_request = auth_client_send(client, auth_client_policy_answered, client);
}

void auth_client_watch_policy(struct auth_client *client)
{
	const struct timeval every = {.tv_sec = AUTH_POLICY_REFRESH_SECS};

	if (client->policy_timer != NULL)
		return;
	client->policy_timer =
	    event_new(event_get_base(client->read_event), -1, EV_PERSIST, auth_client_policy_ask,
		      client);
	if (client->policy_timer == NULL)
		fatal("event_new failed");
	event_add(client->policy_timer, &every);
	auth_client_policy_ask(-1, 0, client);
}

const struct auth_policy_bounds *auth_client_policy_bounds(const struct auth_client *client)
{
	return client->policy_known ? &client->policy : NULL;
}

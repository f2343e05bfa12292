/* A POP3 worker's side of its admin channel (the protocol is in admin/admin_proto.h): lists its
 * sessions for `buzon who` and ends those `buzon kick` names. Requests are answered at once and in
 * order, from the worker's own loop, so the answer describes the sessions as they are between two
 * events. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <string.h>
#include <time.h>

#include "admin/admin_proto.h"
#include "core/log.h"
#include "core/util.h"
#include "net/netlist.h"
#include "pop3/session.h"
#include "pop3/worker.h"

/* The Unix time the session connected: its monotonic start moved onto the wall clock. */
static long long pop3_admin_since(const struct pop3_session *session)
{
	return (long long)time(NULL) - (long long)((monotonic_ms() - session->started_ms) / 1000);
}

static void pop3_admin_who(struct pop3_worker *worker, const char *token, struct evbuffer *out)
{
	unsigned int count = 0;

	for (const struct pop3_session *s = worker->sessions; s != NULL; s = s->next) {
		char user[ADMIN_USER_FIELD_MAX + 1];
		evbuffer_add_printf(out, "%s S %s %s %s %lld %llu %llu %s %s\n", token,
				    admin_user_field(s->login_user, user, sizeof(user)), s->ip,
				    s->state == POP3_STATE_TRANSACTION ? "transaction" : "auth",
				    pop3_admin_since(s), (unsigned long long)s->bytes_out,
				    (unsigned long long)s->bytes_in, s->tls ? "yes" : "no", s->id);
		count++;
	}
	evbuffer_add_printf(out, "%s END %u\n", token, count);
}

/* Whether session is one that KICK names: by its logged-in user, or by its client address. */
static bool pop3_admin_matches(const struct pop3_session *session, const char *user,
			       const struct net_addr *addr)
{
	if (user != NULL)
		return session->login_user != NULL && strcmp(session->login_user, user) == 0;
	struct net_addr peer;
	return net_addr_from_text(session->ip, &peer) == 0 &&
	       memcmp(&peer, addr, sizeof(peer)) == 0;
}

/* Ends the matching sessions the way a server stop does: nothing they did is committed. */
static void pop3_admin_kick(struct pop3_worker *worker, const char *token, const char *target,
			    struct evbuffer *out)
{
	const char *user = NULL;
	struct net_addr addr;
	unsigned int count = 0;

	if (strncmp(target, "USER ", 5) == 0 && target[5] != '\0') {
		user = target + 5;
	} else if (strncmp(target, "IP ", 3) != 0 || net_addr_from_text(target + 3, &addr) < 0) {
		evbuffer_add_printf(out, "%s ERR bad KICK target\n", token);
		return;
	}
	struct pop3_session *next;
	for (struct pop3_session *s = worker->sessions; s != NULL; s = next) {
		next = s->next;
		if (pop3_admin_matches(s, user, &addr)) {
			pop3_session_destroy(s, "kicked");
			count++;
		}
	}
	log_info("admin_kick", "target=%s sessions=%u", log_quote(target), count);
	evbuffer_add_printf(out, "%s END %u\n", token, count);
}

static void pop3_admin_request(struct pop3_worker *worker, char *line, struct evbuffer *out)
{
	size_t token_len = strcspn(line, " ");

	if (!admin_token_valid(line, token_len) || line[token_len] != ' ')
		return; /* nobody to answer: the admin process sends nothing like it */
	line[token_len] = '\0';
	const char *token = line, *request = line + token_len + 1;
	if (strcmp(request, "WHO") == 0)
		pop3_admin_who(worker, token, out);
	else if (strncmp(request, "KICK ", 5) == 0)
		pop3_admin_kick(worker, token, request + 5, out);
	else
		evbuffer_add_printf(out, "%s ERR unknown request\n", token);
}

static void pop3_admin_read(struct bufferevent *bev, void *arg)
{
	struct pop3_worker *worker = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);
	char line[ADMIN_WORKER_LINE_MAX + 1];
	ssize_t len;

	/* an over-long line is dropped (the admin process times the request out), as is one with a
	 * NUL byte */
	while ((len = admin_proto_take_line(in, line)) != ADMIN_LINE_PENDING) {
		if (len >= 0 && memchr(line, '\0', (size_t)len) == NULL)
			pop3_admin_request(worker, line, out);
	}
}

static void pop3_admin_event(struct bufferevent *bev, short what, void *arg)
{
	/* the channel is closed on the admin side everywhere (the master holds a copy for the next
	 * admin process until it gives up on the channel): nothing more will come */
	pop3_worker_admin_detach(arg);
}

void pop3_worker_admin_attach(struct pop3_worker *worker, int channel_fd)
{
	if (channel_fd < 0)
		return;
	evutil_make_socket_nonblocking(channel_fd);
	worker->admin = bufferevent_socket_new(worker->base, channel_fd, BEV_OPT_CLOSE_ON_FREE);
	if (worker->admin == NULL)
		fatal("bufferevent_socket_new failed for the admin channel");
	bufferevent_setcb(worker->admin, pop3_admin_read, NULL, pop3_admin_event, worker);
	bufferevent_setwatermark(worker->admin, EV_READ, 0, 4 * ADMIN_WORKER_LINE_MAX);
	bufferevent_enable(worker->admin, EV_READ | EV_WRITE);
}

void pop3_worker_admin_detach(struct pop3_worker *worker)
{
	if (worker->admin != NULL) {
		bufferevent_free(worker->admin);
		worker->admin = NULL;
	}
}

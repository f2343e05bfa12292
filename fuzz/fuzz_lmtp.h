/* The LMTP session harness of the two LMTP targets: a real lmtp_session on a socketpair, real
 * Maildirs on tmpfs, and the target playing the auth process like tests/unit/test_lmtp_session.c:
 * "alice" and "small" (a 100-octet quota) exist, "broken" fails temporarily, other addresses are
 * unknown. An input runs until the session has done all it can with what was sent, then the client
 * half-closes and the loop runs until the session is gone. Header-only, like fuzz_common.h. */
#ifndef BUZON_FUZZ_LMTP_H
#define BUZON_FUZZ_LMTP_H

#include <dirent.h>
#include <signal.h>

#include "auth/auth_client.h"
#include "auth/auth_proto.h"
#include "core/config.h"
#include "core/log.h"
#include "fuzz_loop.h"
#include "lmtp/lmtp_session.h"

/* Messages larger than any input: the size limit itself is reached through MAIL SIZE= and the
 * "small" user's quota. */
#define FUZZ_LMTP_MAX_MESSAGE "1M"

struct fuzz_lmtp {
	char *scratch;
	struct buzon_config *config;
	struct lmtp_server server;
	int auth_peer_fd;   /* this target's end: plays the auth process */
	int auth_client_fd; /* the server's end, owned by its auth_client */
	struct event *auth_event;
	struct fuzz_client client;
	int session_fd;
};

static struct fuzz_lmtp fuzz_lmtp;

static inline void fuzz_lmtp_auth_readable(evutil_socket_t fd, short what, void *arg)
{
	unsigned char in[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg;
	struct auth_msg_builder out;
	char user[LMTP_MAX_PATH + 1];
	ssize_t len = recv(fd, in, sizeof(in), MSG_DONTWAIT);

	if (len <= 0)
		return;
	FUZZ_CHECK(auth_msg_decode(in, (size_t)len, &msg) == 0);
	FUZZ_CHECK(msg.type == AUTH_MSG_LOOKUP);
	const struct auth_field_value *address = &msg.fields[AUTH_FIELD_USER];
	size_t user_len = address->len < sizeof(user) - 1 ? address->len : sizeof(user) - 1;
	memcpy(user, address->data, user_len);
	user[user_len] = '\0';
	char *at = strchr(user, '@');
	if (at != NULL)
		*at = '\0';
	bool known = strcmp(user, "alice") == 0 || strcmp(user, "small") == 0;
	enum auth_result result = known				? AUTH_RESULT_OK
				  : strcmp(user, "broken") == 0 ? AUTH_RESULT_TEMPFAIL
								: AUTH_RESULT_FAIL;
	auth_msg_begin(&out, AUTH_MSG_RESULT, msg.id);
	auth_msg_add_u32(&out, AUTH_FIELD_RESULT, result);
	if (known) {
		char *location = xasprintf("maildir:%s/%s", fuzz_lmtp.scratch, user);
		auth_msg_add_str(&out, AUTH_FIELD_USER, user);
		auth_msg_add_str(&out, AUTH_FIELD_LOCATION, location);
		if (strcmp(user, "small") == 0)
			auth_msg_add_u64(&out, AUTH_FIELD_QUOTA_BYTES, 100);
		free(location);
	}
	size_t n = auth_msg_finish(&out);
	FUZZ_CHECK(n > 0);
	FUZZ_CHECK(send(fd, out.buf, n, MSG_NOSIGNAL) == (ssize_t)n);
}

static inline void fuzz_lmtp_cleanup(void)
{
	fuzz_remove_tree(fuzz_lmtp.scratch);
}

static inline void fuzz_lmtp_init(const char *tag)
{
	struct fuzz_lmtp *f = &fuzz_lmtp;
	int auth_pair[2];

	signal(SIGPIPE, SIG_IGN);
	log_init("fuzz", LOG_LEVEL_ERROR);
	f->scratch = fuzz_scratch_dir(tag);
	atexit(fuzz_lmtp_cleanup);
	/* the idle timeout keeps its default (minutes): a stall shows as a libFuzzer timeout */
	f->config = fuzz_config_load(f->scratch, "[pop3]\n"
						 "listen = 127.0.0.1:1\n"
						 "[auth]\n"
						 "passwd_file = /nonexistent\n"
						 "[mail]\n"
						 "location = maildir:/nonexistent/%u\n"
						 "[lmtp]\n"
						 "max_message_size = " FUZZ_LMTP_MAX_MESSAGE "\n");
	f->server.config = f->config;
	f->server.base = event_base_new();
	snprintf(f->server.hostname, sizeof(f->server.hostname), "mx.example");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, auth_pair) < 0)
		abort();
	f->server.auth = auth_client_create(f->server.base, auth_pair[0]);
	f->auth_client_fd = auth_pair[0];
	f->auth_peer_fd = auth_pair[1];
	f->auth_event = event_new(f->server.base, f->auth_peer_fd, EV_READ | EV_PERSIST,
				  fuzz_lmtp_auth_readable, NULL);
	event_add(f->auth_event, NULL);
}

static inline bool fuzz_lmtp_auth_idle(void)
{
	return fuzz_fd_pending(fuzz_lmtp.auth_peer_fd) == 0 &&
	       fuzz_fd_pending(fuzz_lmtp.auth_client_fd) == 0;
}

/* The session can do nothing more with the input it has. */
static inline bool fuzz_lmtp_settled(void *context)
{
	struct lmtp_session *s = fuzz_lmtp.server.sessions;

	if (s == NULL)
		return fuzz_lmtp_auth_idle();
	struct evbuffer *in = bufferevent_get_input(s->bev);
	return !s->auth_waiting && !s->closing && fuzz_lmtp_auth_idle() &&
	       fuzz_fd_pending(fuzz_lmtp.session_fd) == 0 &&
	       evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
	       (s->input == LMTP_INPUT_COMMANDS ? !fuzz_evbuffer_has_line(in)
						: evbuffer_get_length(in) == 0);
}

static inline bool fuzz_lmtp_gone(void *context)
{
	return fuzz_lmtp.server.sessions == NULL && fuzz_lmtp_auth_idle();
}

/* Runs one connection: sends every part in order (the client's whole side), half-closes, and
 * returns once the session is gone. What the client received stays in fuzz_lmtp.client.received
 * until fuzz_lmtp_end(). */
static inline void fuzz_lmtp_run(const void *const *parts, const size_t *lens, size_t count)
{
	struct fuzz_lmtp *f = &fuzz_lmtp;

	fuzz_client_open(&f->client, f->server.base, &f->session_fd);
	FUZZ_CHECK(lmtp_session_create(&f->server, f->session_fd, NULL, 0) != NULL);
	/* the session takes each part before the next is sent, so that reads end where parts do */
	for (size_t i = 0; i < count; i++) {
		fuzz_client_send(&f->client, f->server.base, parts[i], lens[i]);
		fuzz_loop_until(f->server.base, fuzz_lmtp_settled, NULL);
	}
	shutdown(f->client.fd, SHUT_WR);
	fuzz_loop_until(f->server.base, fuzz_lmtp_gone, NULL);
	fuzz_client_readable(f->client.fd, EV_READ, &f->client);
}

/* Forgets the connection and every delivered message, so that the next input starts afresh. */
static inline void fuzz_lmtp_end(void)
{
	static const char *const users[] = {"alice", "small"};

	fuzz_client_close(&fuzz_lmtp.client);
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		char *dir = xasprintf("%s/%s", fuzz_lmtp.scratch, users[i]);
		fuzz_remove_tree(dir);
		free(dir);
	}
}

/* Calls fn(context, name, text, len) for every message file in user's new/; returns how many. */
static inline size_t fuzz_lmtp_delivered(const char *user,
					 void (*fn)(void *context, const char *name,
						    const char *text, size_t len),
					 void *context)
{
	char *path = xasprintf("%s/%s/new", fuzz_lmtp.scratch, user);
	DIR *dir = opendir(path);
	struct dirent *d;
	size_t count = 0;

	while (dir != NULL && (d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		char *file = xasprintf("%s/%s", path, d->d_name);
		size_t len;
		char *text = fuzz_read_file(file, &len);
		FUZZ_CHECK(text != NULL);
		fn(context, d->d_name, text, len);
		free(text);
		free(file);
		count++;
	}
	if (dir != NULL)
		closedir(dir);
	free(path);
	return count;
}

/* The harness must still get a message delivered: a change elsewhere (a new config option, a
 * refused recipient) would otherwise leave the fuzzer exploring only the greeting. */
static inline void fuzz_lmtp_self_test(void)
{
	static const char script[] = "LHLO x\r\nMAIL FROM:<s@example.org>\r\n"
				     "RCPT TO:<alice@example.org>\r\nDATA\r\nSubject: t\r\n\r\n"
				     "..body\r\n.\r\nQUIT\r\n";
	static const char expected[] = "250 2.0.0 <alice@example.org> delivered\r\n221 ";
	const void *parts[] = {script};
	size_t lens[] = {sizeof(script) - 1};

	fuzz_lmtp_run(parts, lens, 1);
	evbuffer_add(fuzz_lmtp.client.received, "", 1);
	const char *out = (const char *)evbuffer_pullup(fuzz_lmtp.client.received, -1);
	if (strstr(out, expected) == NULL) {
		fprintf(stderr, "fuzz LMTP self-test: no \"%s\" in:\n%s\n", expected, out);
		abort();
	}
	fuzz_lmtp_end();
}

#endif

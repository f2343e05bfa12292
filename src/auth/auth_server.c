/* The auth process (see auth_server.h). One main thread owns everything: it polls the workers'
 * connections, decodes each request strictly, looks the user up, and hands slow password checks to
 * the hashing threads (auth_hasher.c); their verdicts come back to the main thread, which alone
 * answers, so connections and the user database need no locks. A request for an unknown user is
 * checked against a dummy secret of the default scheme, so it costs the same time as a wrong
 * password. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/auth_hasher.h"
#include "auth/auth_proto.h"
#include "auth/auth_server.h"
#include "auth/passwd_file.h"
#include "auth/password.h"
#include "core/log.h"
#include "core/util.h"

/* One worker's connection. Requests in the hashing threads hold references, so that a worker that
 * went away does not leave them pointing at a reused descriptor. */
struct auth_conn {
	int fd;
	unsigned int refs;
	bool closed;
};

/* A login attempt waiting for its password check. */
struct auth_request {
	struct auth_check check; /* first: the hasher hands this back */
	struct auth_conn *conn;
	uint32_t id;
	bool known_user;
	char *user;      /* the canonical name from the passwd-file, or what the client sent */
	char *client_ip; /* for logs */
};

struct auth_server {
	const struct buzon_config *config;
	struct passwd_db db;
	bool db_loaded;
	char *dummy_secret;
	struct auth_hasher *hasher;
	struct auth_conn **conns;
	size_t conn_count;
};

static void auth_conn_unref(struct auth_conn **connp)
{
	struct auth_conn *conn = *connp;

	*connp = NULL;
	if (--conn->refs == 0)
		free(conn);
}

static void auth_request_free(struct auth_request **reqp)
{
	struct auth_request *req = *reqp;

	auth_check_clear(&req->check);
	free(req->user);
	free(req->client_ip);
	if (req->conn != NULL)
		auth_conn_unref(&req->conn);
	x_free(reqp);
}

static void auth_drop_check(struct auth_check *check)
{
	struct auth_request *req = (struct auth_request *)check;

	auth_request_free(&req);
}

static void auth_send(struct auth_conn *conn, struct auth_msg_builder *b)
{
	size_t len = auth_msg_finish(b);

	if (len == 0)
		log_error("auth_reply_encode_failed", "%s", "");
	else if (!conn->closed && send(conn->fd, b->buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_warn("auth_reply_send_failed", "error=%s", log_quote(strerror(errno)));
	auth_msg_wipe(b);
}

static void auth_send_result(struct auth_conn *conn, uint32_t id, enum auth_result result,
			     const char *user, const char *location, unsigned int delay_ms)
{
	struct auth_msg_builder b;

	auth_msg_begin(&b, AUTH_MSG_RESULT, id);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, (uint32_t)result);
	if (user != NULL)
		auth_msg_add_str(&b, AUTH_FIELD_USER, user);
	if (location != NULL)
		auth_msg_add_str(&b, AUTH_FIELD_LOCATION, location);
	if (delay_ms > 0)
		auth_msg_add_u32(&b, AUTH_FIELD_DELAY_MS, delay_ms);
	auth_send(conn, &b);
}

/* Answers a finished login attempt: the one place that decides what the worker hears. */
static void auth_finish(struct auth_server *server, struct auth_conn *conn, uint32_t id,
			const char *user, bool success)
{
	if (!success) {
		auth_send_result(conn, id, AUTH_RESULT_FAIL, NULL, NULL,
				 server->config->auth_failure_delay_ms);
		return;
	}
	char *location = config_expand_location(server->config->mail_location, user);
	if (location == NULL) {
		log_error("mail_location_invalid", "user=%s", log_quote(user));
		auth_send_result(conn, id, AUTH_RESULT_TEMPFAIL, NULL, NULL, 0);
		return;
	}
	auth_send_result(conn, id, AUTH_RESULT_OK, user, location, 0);
	free(location);
}

static void auth_check_finished(struct auth_server *server, struct auth_request *req)
{
	if (req->check.verdict < 0 && req->known_user)
		log_error("auth_secret_invalid", "user=%s error=%s", log_quote(req->user),
			  log_quote(req->check.error != NULL ? req->check.error : "unknown"));
	auth_finish(server, req->conn, req->id, req->user,
		    req->known_user && req->check.verdict == 1);
}

static void auth_report_bad_line(void *context, unsigned int line, const char *message)
{
	const char *path = context;

	log_warn("passwd_line_skipped", "file=%s line=%u reason=%s", log_quote(path), line,
		 log_quote(message));
}

/* Loads the passwd-file the first time and whenever it changes on disk, so that `buzon user add`
 * takes effect without a reload. A file that cannot be read keeps the last good copy. */
static int auth_db_refresh(struct auth_server *server)
{
	const char *path = server->config->passwd_file;
	struct passwd_db fresh;
	char *error = NULL;

	if (server->db_loaded && !passwd_db_changed(&server->db, path))
		return 0;
	if (passwd_db_load(path, &fresh, auth_report_bad_line, (void *)path, &error) < 0) {
		log_error("passwd_load_failed", "error=%s", log_quote(error));
		free(error);
		return server->db_loaded ? 0 : -1;
	}
	size_t plaintext = 0;
	for (size_t i = 0; i < fresh.count; i++)
		plaintext += password_scheme_is_plaintext(fresh.entries[i].secret) ? 1 : 0;
	if (server->db_loaded)
		passwd_db_free(&server->db);
	server->db = fresh;
	server->db_loaded = true;
	log_info("passwd_loaded", "file=%s users=%zu", log_quote(path), fresh.count);
	if (plaintext > 0)
		log_warn("passwd_plaintext", "file=%s users=%zu hint=%s", log_quote(path),
			 plaintext, log_quote("store hashes: buzon user passwd USER"));
	return 0;
}

/* Looks user up; NULL if unknown (or the name is not a valid one). */
static const struct passwd_entry *auth_lookup(struct auth_server *server, const char *user)
{
	return passwd_user_name_valid(user) ? passwd_db_lookup(&server->db, user) : NULL;
}

/* USER/PASS: queue the password check. */
static void auth_handle_verify(struct auth_server *server, struct auth_conn *conn,
			       const struct auth_msg *msg)
{
	struct auth_request *req = xcalloc(1, sizeof(*req));

	req->id = msg->id;
	req->user = auth_msg_strdup(msg, AUTH_FIELD_USER);
	req->client_ip = auth_msg_strdup(msg, AUTH_FIELD_CLIENT_IP);
	req->check.password = auth_msg_strdup(msg, AUTH_FIELD_PASSWORD);
	const struct passwd_entry *entry = auth_lookup(server, req->user);
	req->known_user = entry != NULL;
	req->check.secret = xstrdup(entry != NULL ? entry->secret : server->dummy_secret);
	if (entry != NULL) {
		free(req->user);
		req->user = xstrdup(entry->user);
	}
	conn->refs++;
	req->conn = conn;
	auth_hasher_submit(server->hasher, &req->check);
}

static void auth_handle_message(struct auth_server *server, struct auth_conn *conn,
				const struct auth_msg *msg)
{
	if (auth_db_refresh(server) < 0) {
		auth_send_result(conn, msg->id, AUTH_RESULT_TEMPFAIL, NULL, NULL, 0);
		return;
	}
	switch (msg->type) {
	case AUTH_MSG_VERIFY:
		auth_handle_verify(server, conn, msg);
		break;
	case AUTH_MSG_SASL_ABORT:
		break; /* no conversation is kept for this id */
	default:
		/* a mechanism or command this auth process does not offer */
		auth_send_result(conn, msg->id, AUTH_RESULT_FAIL, NULL, NULL, 0);
		break;
	}
}

static void auth_conn_close(struct auth_server *server, size_t index)
{
	struct auth_conn *conn = server->conns[index];

	conn->closed = true;
	close(conn->fd);
	conn->fd = -1;
	server->conns[index] = server->conns[--server->conn_count];
	auth_conn_unref(&conn);
}

/* Reads one datagram from a worker; a malformed one closes that worker's connection, since only a
 * compromised or broken worker sends it. */
static void auth_conn_readable(struct auth_server *server, size_t index)
{
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE + 1];
	struct auth_conn *conn = server->conns[index];
	struct auth_msg msg;
	ssize_t len = recv(conn->fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (len < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (len <= 0) {
		auth_conn_close(server, index);
		return;
	}
	if (auth_msg_decode(buf, (size_t)len, &msg) < 0 || msg.type > AUTH_MSG_APOP) {
		log_warn("auth_request_malformed", "bytes=%zd", len);
		auth_conn_close(server, index);
	} else {
		auth_handle_message(server, conn, &msg);
	}
	sodium_memzero(buf, (size_t)len);
}

/* A one-byte message that can carry one descriptor as SCM_RIGHTS. */
struct fd_message {
	char byte;
	struct iovec iov;
	_Alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
	struct msghdr msg;
};

static void fd_message_init(struct fd_message *m)
{
	memset(m, 0, sizeof(*m));
	m->byte = 'F';
	m->iov = (struct iovec){.iov_base = &m->byte, .iov_len = 1};
	m->msg = (struct msghdr){.msg_iov = &m->iov,
				 .msg_iovlen = 1,
				 .msg_control = m->control,
				 .msg_controllen = sizeof(m->control)};
}

int auth_server_send_fd(int control_fd, int fd)
{
	struct fd_message m;

	fd_message_init(&m);
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&m.msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	return sendmsg(control_fd, &m.msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

/* Receives a worker connection from the master. Returns 0, or -1 when the master has gone. */
static int auth_control_readable(struct auth_server *server, int control_fd)
{
	struct fd_message m;

	fd_message_init(&m);
	ssize_t len = recvmsg(control_fd, &m.msg, MSG_CMSG_CLOEXEC);
	if (len < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (len <= 0)
		return -1;
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&m.msg);
	if (cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS ||
	    cmsg->cmsg_len != CMSG_LEN(sizeof(int)))
		return 0;
	struct auth_conn *conn = xcalloc(1, sizeof(*conn));
	memcpy(&conn->fd, CMSG_DATA(cmsg), sizeof(int));
	conn->refs = 1;
	server->conns = xrealloc(server->conns, (server->conn_count + 1) * sizeof(*server->conns));
	server->conns[server->conn_count++] = conn;
	return 0;
}

static void auth_take_finished(struct auth_server *server)
{
	struct auth_check *check;

	while ((check = auth_hasher_take_done(server->hasher)) != NULL) {
		struct auth_request *req = (struct auth_request *)check;
		auth_check_finished(server, req);
		auth_request_free(&req);
	}
}

enum { POLL_CONTROL, POLL_SIGNAL, POLL_HASHER, POLL_FIRST_CONN };

static void auth_server_loop(struct auth_server *server, int control_fd, int signal_fd)
{
	struct pollfd *fds = NULL;

	for (;;) {
		size_t nfds = server->conn_count + POLL_FIRST_CONN;
		fds = xrealloc(fds, nfds * sizeof(*fds));
		fds[POLL_CONTROL] = (struct pollfd){.fd = control_fd, .events = POLLIN};
		fds[POLL_SIGNAL] = (struct pollfd){.fd = signal_fd, .events = POLLIN};
		fds[POLL_HASHER] =
			(struct pollfd){.fd = auth_hasher_fd(server->hasher), .events = POLLIN};
		for (size_t i = 0; i < server->conn_count; i++)
			fds[i + POLL_FIRST_CONN] =
				(struct pollfd){.fd = server->conns[i]->fd, .events = POLLIN};
		if (poll(fds, nfds, -1) < 0) {
			if (errno == EINTR)
				continue;
			fatal("poll failed: %s", strerror(errno));
		}
		if (fds[POLL_SIGNAL].revents != 0)
			break;
		if (fds[POLL_CONTROL].revents != 0 && auth_control_readable(server, control_fd) < 0)
			break;
		if (fds[POLL_HASHER].revents != 0)
			auth_take_finished(server);
		/* walk backwards: closing a connection moves the last one into its slot */
		for (size_t i = nfds - POLL_FIRST_CONN; i-- > 0;) {
			if (i < server->conn_count && fds[i + POLL_FIRST_CONN].revents != 0)
				auth_conn_readable(server, i);
		}
	}
	free(fds);
}

static char *auth_make_dummy_secret(const char *scheme)
{
	unsigned char random[16];
	char password[33];
	const char *error = NULL;

	randombytes_buf(random, sizeof(random));
	sodium_bin2hex(password, sizeof(password), random, sizeof(random));
	char *secret = password_hash(scheme, password, &error);
	if (secret == NULL)
		secret = password_hash("YESCRYPT", password, &error);
	if (secret == NULL)
		fatal("cannot make the dummy secret: %s", error != NULL ? error : "unknown");
	sodium_memzero(password, sizeof(password));
	return secret;
}

static void auth_server_free(struct auth_server *server)
{
	auth_hasher_stop(&server->hasher, auth_drop_check);
	while (server->conn_count > 0)
		auth_conn_close(server, server->conn_count - 1);
	free(server->conns);
	if (server->db_loaded)
		passwd_db_free(&server->db);
	free(server->dummy_secret);
}

int auth_server_main(const struct buzon_config *config, int control_fd)
{
	struct auth_server server = {.config = config};
	sigset_t mask;

	if (sodium_init() < 0)
		fatal("sodium_init failed");
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	/* Ctrl-C reaches the whole process group; the master decides when auth stops. */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	int signal_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (signal_fd < 0)
		fatal("signalfd failed: %s", strerror(errno));

	server.dummy_secret = auth_make_dummy_secret(config->default_scheme);
	(void)auth_db_refresh(&server);
	server.hasher = auth_hasher_start(config->auth_threads);
	log_info("auth_started", "threads=%u", auth_hasher_thread_count(server.hasher));

	auth_server_loop(&server, control_fd, signal_fd);

	auth_server_free(&server);
	close(signal_fd);
	log_info("auth_stopped", "%s", "");
	return 0;
}

/* The auth process (see auth_server.h). The main thread polls the worker connections, decodes each
 * request strictly, looks the user up and queues a job; hashing threads verify and reply. A request
 * for an unknown user is verified against a dummy secret of the default scheme so that it costs the
 * same time as a wrong password. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/auth_proto.h"
#include "auth/auth_server.h"
#include "auth/passwd_file.h"
#include "auth/password.h"
#include "core/log.h"
#include "core/util.h"

/* One worker's connection; shared between the poll loop and the hashing threads. */
struct auth_conn {
	int fd;
	pthread_mutex_t lock;
	unsigned int refs;
	bool closed;
};

struct auth_job {
	struct auth_job *next;
	struct auth_conn *conn;
	uint32_t id;
	bool known_user;
	char *user;
	char *password;
	char *secret;
	char *location;
};

struct auth_server {
	const struct buzon_config *config;
	struct passwd_db db;
	bool db_loaded;
	char *dummy_secret;

	struct auth_conn **conns;
	size_t conn_count;

	pthread_mutex_t queue_lock;
	pthread_cond_t queue_cond;
	struct auth_job *queue_head, *queue_tail;
	bool stopping;
	pthread_t *threads;
	unsigned int thread_count;
};

static void auth_conn_unref(struct auth_conn **connp)
{
	struct auth_conn *conn = *connp;
	bool last;

	*connp = NULL;
	pthread_mutex_lock(&conn->lock);
	last = --conn->refs == 0;
	pthread_mutex_unlock(&conn->lock);
	if (last) {
		pthread_mutex_destroy(&conn->lock);
		free(conn);
	}
}

static void auth_job_free(struct auth_job **jobp)
{
	struct auth_job *job = *jobp;

	if (job->password != NULL) {
		sodium_memzero(job->password, strlen(job->password));
		free(job->password);
	}
	free(job->user);
	free(job->secret);
	free(job->location);
	if (job->conn != NULL)
		auth_conn_unref(&job->conn);
	x_free(jobp);
}

static void auth_send_reply(struct auth_conn *conn, const struct auth_verify_reply *reply)
{
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	size_t len = auth_proto_encode_reply(buf, sizeof(buf), reply);

	if (len == 0) {
		log_error("auth_reply_encode_failed", "id=%u", reply->id);
		return;
	}
	pthread_mutex_lock(&conn->lock);
	if (!conn->closed && send(conn->fd, buf, len, MSG_NOSIGNAL) < 0)
		log_warn("auth_reply_send_failed", "error=%s", log_quote(strerror(errno)));
	pthread_mutex_unlock(&conn->lock);
}

static void auth_job_run(struct auth_job *job)
{
	const char *error = NULL;
	int match = password_verify(job->secret, job->password, &error);
	struct auth_verify_reply reply = {.id = job->id, .result = AUTH_RESULT_FAIL};

	if (match < 0 && job->known_user)
		log_error("auth_secret_invalid", "user=%s error=%s", log_quote(job->user),
			  log_quote(error != NULL ? error : "unknown"));
	if (match == 1 && job->known_user) {
		reply.result = AUTH_RESULT_OK;
		reply.user = job->user;
		reply.user_len = strlen(job->user);
		reply.location = job->location;
		reply.location_len = strlen(job->location);
	}
	auth_send_reply(job->conn, &reply);
}

static void *auth_thread_main(void *arg)
{
	struct auth_server *server = arg;

	for (;;) {
		pthread_mutex_lock(&server->queue_lock);
		while (server->queue_head == NULL && !server->stopping)
			pthread_cond_wait(&server->queue_cond, &server->queue_lock);
		struct auth_job *job = server->queue_head;
		if (job == NULL) {
			pthread_mutex_unlock(&server->queue_lock);
			return NULL;
		}
		server->queue_head = job->next;
		if (server->queue_head == NULL)
			server->queue_tail = NULL;
		pthread_mutex_unlock(&server->queue_lock);
		auth_job_run(job);
		auth_job_free(&job);
	}
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

static void auth_queue_push(struct auth_server *server, struct auth_job *job)
{
	pthread_mutex_lock(&server->queue_lock);
	if (server->queue_tail != NULL)
		server->queue_tail->next = job;
	else
		server->queue_head = job;
	server->queue_tail = job;
	pthread_cond_signal(&server->queue_cond);
	pthread_mutex_unlock(&server->queue_lock);
}

static void auth_reply_now(struct auth_conn *conn, uint32_t id, enum auth_result result)
{
	struct auth_verify_reply reply = {.id = id, .result = result};

	auth_send_reply(conn, &reply);
}

/* Turns one decoded request into a job, or answers it at once when it cannot succeed. */
static void auth_handle_request(struct auth_server *server, struct auth_conn *conn,
				const struct auth_verify_request *req)
{
	char *user = xstrndup(req->user, req->user_len);
	const struct passwd_entry *entry = NULL;

	if (auth_db_refresh(server) < 0) {
		free(user);
		auth_reply_now(conn, req->id, AUTH_RESULT_TEMPFAIL);
		return;
	}
	if (passwd_user_name_valid(user))
		entry = passwd_db_lookup(&server->db, user);

	struct auth_job *job = xcalloc(1, sizeof(*job));
	job->id = req->id;
	job->user = user;
	job->password = xstrndup(req->password, req->password_len);
	job->known_user = entry != NULL;
	job->secret = xstrdup(entry != NULL ? entry->secret : server->dummy_secret);
	if (entry != NULL) {
		job->location = config_expand_location(server->config->mail_location, entry->user);
		if (job->location == NULL) {
			log_error("mail_location_invalid", "user=%s", log_quote(user));
			auth_job_free(&job);
			auth_reply_now(conn, req->id, AUTH_RESULT_TEMPFAIL);
			return;
		}
	}
	pthread_mutex_lock(&conn->lock);
	conn->refs++;
	pthread_mutex_unlock(&conn->lock);
	job->conn = conn;
	auth_queue_push(server, job);
}

static void auth_conn_close(struct auth_server *server, size_t index)
{
	struct auth_conn *conn = server->conns[index];

	pthread_mutex_lock(&conn->lock);
	conn->closed = true;
	close(conn->fd);
	conn->fd = -1;
	pthread_mutex_unlock(&conn->lock);
	server->conns[index] = server->conns[--server->conn_count];
	auth_conn_unref(&conn);
}

/* Reads one datagram from a worker; a malformed one closes that worker's connection, since only a
 * compromised or broken worker sends it. */
static void auth_conn_readable(struct auth_server *server, size_t index)
{
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE + 1];
	struct auth_conn *conn = server->conns[index];
	struct auth_verify_request req;
	ssize_t len = recv(conn->fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (len < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (len <= 0) {
		auth_conn_close(server, index);
		return;
	}
	if (auth_proto_decode_request(buf, (size_t)len, &req) < 0) {
		log_warn("auth_request_malformed", "bytes=%zd", len);
		sodium_memzero(buf, sizeof(buf));
		auth_conn_close(server, index);
		return;
	}
	auth_handle_request(server, conn, &req);
	sodium_memzero(buf, sizeof(buf));
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
	pthread_mutex_init(&conn->lock, NULL);
	conn->refs = 1;
	server->conns = xrealloc(server->conns, (server->conn_count + 1) * sizeof(*server->conns));
	server->conns[server->conn_count++] = conn;
	return 0;
}

static void auth_server_loop(struct auth_server *server, int control_fd, int signal_fd)
{
	struct pollfd *fds = NULL;

	for (;;) {
		size_t nfds = server->conn_count + 2;
		fds = xrealloc(fds, nfds * sizeof(*fds));
		fds[0] = (struct pollfd){.fd = control_fd, .events = POLLIN};
		fds[1] = (struct pollfd){.fd = signal_fd, .events = POLLIN};
		for (size_t i = 0; i < server->conn_count; i++)
			fds[i + 2] = (struct pollfd){.fd = server->conns[i]->fd, .events = POLLIN};
		if (poll(fds, nfds, -1) < 0) {
			if (errno == EINTR)
				continue;
			fatal("poll failed: %s", strerror(errno));
		}
		if (fds[1].revents != 0)
			break;
		if (fds[0].revents != 0 && auth_control_readable(server, control_fd) < 0)
			break;
		/* walk backwards: closing a connection moves the last one into its slot */
		for (size_t i = nfds - 2; i-- > 0;) {
			if (i < server->conn_count && fds[i + 2].revents != 0)
				auth_conn_readable(server, i);
		}
	}
	free(fds);
}

static void auth_server_start_threads(struct auth_server *server)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	server->thread_count = server->config->auth_threads != 0
				   ? server->config->auth_threads
				   : (unsigned int)(cores > 0 ? cores : 2);
	server->threads = xcalloc(server->thread_count, sizeof(*server->threads));
	for (unsigned int i = 0; i < server->thread_count; i++) {
		if (pthread_create(&server->threads[i], NULL, auth_thread_main, server) != 0)
			fatal("pthread_create failed");
	}
}

static void auth_server_stop(struct auth_server *server)
{
	pthread_mutex_lock(&server->queue_lock);
	server->stopping = true;
	/* drop queued work: the workers are going away too */
	while (server->queue_head != NULL) {
		struct auth_job *job = server->queue_head;
		server->queue_head = job->next;
		auth_job_free(&job);
	}
	server->queue_tail = NULL;
	pthread_cond_broadcast(&server->queue_cond);
	pthread_mutex_unlock(&server->queue_lock);
	for (unsigned int i = 0; i < server->thread_count; i++)
		pthread_join(server->threads[i], NULL);
	free(server->threads);
	while (server->conn_count > 0)
		auth_conn_close(server, server->conn_count - 1);
	free(server->conns);
	if (server->db_loaded)
		passwd_db_free(&server->db);
	free(server->dummy_secret);
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

	pthread_mutex_init(&server.queue_lock, NULL);
	pthread_cond_init(&server.queue_cond, NULL);
	server.dummy_secret = auth_make_dummy_secret(config->default_scheme);
	(void)auth_db_refresh(&server);
	auth_server_start_threads(&server);
	log_info("auth_started", "threads=%u", server.thread_count);

	auth_server_loop(&server, control_fd, signal_fd);

	auth_server_stop(&server);
	pthread_mutex_destroy(&server.queue_lock);
	pthread_cond_destroy(&server.queue_cond);
	close(signal_fd);
	log_info("auth_stopped", "%s", "");
	return 0;
}

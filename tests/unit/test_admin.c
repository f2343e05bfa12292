/* Unit tests for the admin process: its wire formats (master datagrams, descriptors passed with
 * SCM_RIGHTS, WHO fields), the control socket the master opens, and a real admin_main() in a
 * forked child, sandbox on, with this test playing the master, a POP3 worker and the clients. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "admin/admin.h"
#include "admin/admin_proto.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "net/ban_table.h"

/* How long any one wait of these tests may take before it counts as a hang. */
#define TEST_WAIT_MS 5000

/* ------------------------------------------------------------------------------------------ */
/* Wire formats */

static void test_wire_round_trips(void **state)
{
	unsigned char buf[ADMIN_WIRE_MAX];
	struct admin_wire_message in = {
	    .type = ADMIN_WIRE_WORKER, .index = 3, .generation = 7, .pid = 4242};
	struct admin_wire_message out;

	size_t len = admin_wire_encode(&in, buf);
	assert_int_equal(admin_wire_decode(buf, len, &out), 0);
	assert_int_equal(out.type, ADMIN_WIRE_WORKER);
	assert_int_equal(out.index, 3);
	assert_int_equal(out.generation, 7);
	assert_int_equal(out.pid, 4242);
	/* every length but the right one is refused */
	assert_int_equal(admin_wire_decode(buf, len - 1, &out), -1);
	assert_int_equal(admin_wire_decode(buf, len + 1, &out), -1);
	assert_int_equal(admin_wire_decode(buf, 3, &out), -1);

	in =
	    (struct admin_wire_message){.type = ADMIN_WIRE_REQUEST, .request = ADMIN_MASTER_RELOAD};
	len = admin_wire_encode(&in, buf);
	assert_int_equal(admin_wire_decode(buf, len, &out), 0);
	assert_int_equal(out.request, ADMIN_MASTER_RELOAD);
	buf[len - 4] = 99; /* an unknown request */
	assert_int_equal(admin_wire_decode(buf, len, &out), -1);

	in = (struct admin_wire_message){.type = ADMIN_WIRE_REPLY, .ok = true};
	snprintf(in.text, sizeof(in.text), "line 1\nline 2\x7f");
	len = admin_wire_encode(&in, buf);
	assert_int_equal(admin_wire_decode(buf, len, &out), 0);
	assert_true(out.ok);
	assert_string_equal(out.text, "line 1 line 2 "); /* control characters became spaces */
	buf[10] = '\r';
	assert_int_equal(admin_wire_decode(buf, len, &out), -1);
	buf[10] = 'x';
	buf[8] = 2; /* ok is a boolean */
	assert_int_equal(admin_wire_decode(buf, len, &out), -1);
	buf[8] = 0;
	buf[0] ^= 1; /* magic */
	assert_int_equal(admin_wire_decode(buf, len, &out), -1);
	buf[0] ^= 1;
	buf[4] = 2; /* version */
	assert_int_equal(admin_wire_decode(buf, len, &out), -1);
	buf[4] = 1;
	buf[6] = 9; /* type */
	assert_int_equal(admin_wire_decode(buf, len, &out), -1);

	/* the longest text is cut, not overflowed */
	memset(in.text, 'a', ADMIN_REPLY_TEXT_MAX);
	in.text[ADMIN_REPLY_TEXT_MAX] = '\0';
	len = admin_wire_encode(&in, buf);
	assert_int_equal(len, ADMIN_WIRE_MAX);
	assert_int_equal(admin_wire_decode(buf, len, &out), 0);
	assert_int_equal(strlen(out.text), ADMIN_REPLY_TEXT_MAX);
}

/* Sends a datagram with n copies of fd attached. */
static void send_with_fds(int channel, const void *data, size_t len, int fd, int n)
{
	char control[CMSG_SPACE(4 * sizeof(int))] = {0};
	struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control,
			     .msg_controllen = CMSG_SPACE((size_t)n * sizeof(int))};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
	for (int i = 0; i < n; i++)
		memcpy(CMSG_DATA(c) + (size_t)i * sizeof(int), &fd, sizeof(int));
	assert_int_equal(sendmsg(channel, &msg, 0), (ssize_t)len);
}

/* The worker channel's line reader: whole lines only, over-long ones dropped, NULs kept for the
 * caller to refuse. */
static void test_take_line(void **state)
{
	struct evbuffer *in = evbuffer_new();
	char line[ADMIN_WORKER_LINE_MAX + 1];
	char *long_line = xcalloc(1, ADMIN_WORKER_LINE_MAX + 2);

	assert_int_equal(admin_proto_take_line(in, line), ADMIN_LINE_PENDING);
	evbuffer_add(in, "WHO 1.2\nKI", 10);
	assert_int_equal(admin_proto_take_line(in, line), 7);
	assert_string_equal(line, "WHO 1.2");
	assert_int_equal(admin_proto_take_line(in, line), ADMIN_LINE_PENDING);
	evbuffer_add(in, "CK a\0b\n", 7);
	assert_int_equal(admin_proto_take_line(in, line), 8);
	assert_memory_equal(line, "KICK a\0b", 8);
	/* exactly the limit passes; one more octet is too long, with or without its LF yet */
	memset(long_line, 'x', ADMIN_WORKER_LINE_MAX);
	evbuffer_add(in, long_line, ADMIN_WORKER_LINE_MAX);
	evbuffer_add(in, "\n", 1);
	assert_int_equal(admin_proto_take_line(in, line), ADMIN_WORKER_LINE_MAX);
	long_line[ADMIN_WORKER_LINE_MAX] = 'x';
	evbuffer_add(in, long_line, ADMIN_WORKER_LINE_MAX + 1);
	assert_int_equal(admin_proto_take_line(in, line), ADMIN_LINE_TOO_LONG);
	assert_int_equal(evbuffer_get_length(in), 0);
	evbuffer_add(in, long_line, ADMIN_WORKER_LINE_MAX + 1);
	evbuffer_add(in, "\nEND\n", 5);
	assert_int_equal(admin_proto_take_line(in, line), ADMIN_LINE_TOO_LONG);
	assert_int_equal(admin_proto_take_line(in, line), 3);
	assert_string_equal(line, "END");
	free(long_line);
	evbuffer_free(in);
}

static void test_descriptor_passing(void **state)
{
	int pair[2], pipe_fds[2];
	unsigned char buf[ADMIN_WIRE_MAX + 1];
	struct admin_wire_message msg;
	int fd;

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair), 0);
	assert_int_equal(pipe(pipe_fds), 0);
	assert_int_equal(admin_send_worker_channel(pair[0], 1, 2, 333, pipe_fds[1]), 0);
	ssize_t len = admin_wire_recv(pair[1], buf, &fd, 0);
	assert_true(len > 0);
	assert_true(fd >= 0);
	assert_int_equal(admin_wire_decode(buf, (size_t)len, &msg), 0);
	assert_int_equal(msg.pid, 333);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(write(fd, "x", 1), 1); /* the same pipe */
	assert_int_equal(read(pipe_fds[0], buf, 1), 1);
	close(fd);

	/* two descriptors in one message: refused, and both closed on the receiving side */
	send_with_fds(pair[0], "junk", 4, pipe_fds[1], 2);
	assert_int_equal(admin_wire_recv(pair[1], buf, &fd, 0), -1);
	assert_int_equal(errno, EBADMSG);
	assert_int_equal(fd, -1);

	/* the master takes no descriptor from the admin process, even with a valid request */
	struct admin_wire_message request = {.type = ADMIN_WIRE_REQUEST,
					     .request = ADMIN_MASTER_RELOAD};
	unsigned char wire[ADMIN_WIRE_MAX];
	size_t wire_len = admin_wire_encode(&request, wire);
	enum admin_master_request got;
	send_with_fds(pair[1], wire, wire_len, pipe_fds[1], 1);
	assert_int_equal(admin_master_read_request(pair[0], &got), -1);
	assert_int_equal(send(pair[1], wire, wire_len, 0), (ssize_t)wire_len);
	assert_int_equal(admin_master_read_request(pair[0], &got), 0);
	assert_int_equal(got, ADMIN_MASTER_RELOAD);
	assert_int_equal(send(pair[1], "short", 5, 0), 5);
	assert_int_equal(admin_master_read_request(pair[0], &got), -1);

	/* the reply reaches the admin side intact */
	assert_int_equal(admin_master_reply(pair[0], false, "bad config: line 3"), 0);
	len = admin_wire_recv(pair[1], buf, &fd, 0);
	assert_int_equal(admin_wire_decode(buf, (size_t)len, &msg), 0);
	assert_int_equal(msg.type, ADMIN_WIRE_REPLY);
	assert_false(msg.ok);
	assert_string_equal(msg.text, "bad config: line 3");
	close(pair[1]);
	assert_int_equal(admin_master_read_request(pair[0], &got), -1); /* EOF */
	close(pair[0]);
	close(pipe_fds[0]);
	close(pipe_fds[1]);
}

static void test_user_field_and_tokens(void **state)
{
	char out[ADMIN_USER_FIELD_MAX + 1];
	char long_name[2000];

	assert_string_equal(admin_user_field(NULL, out, sizeof(out)), "-");
	assert_string_equal(admin_user_field("", out, sizeof(out)), "-");
	assert_string_equal(admin_user_field("-", out, sizeof(out)), "%2D");
	assert_string_equal(admin_user_field("demo@example.com", out, sizeof(out)),
			    "demo@example.com");
	assert_string_equal(admin_user_field("a b%c\x01\x7f", out, sizeof(out)), "a%20b%25c%01%7F");
	assert_string_equal(admin_user_field("jos\xc3\xa9", out, sizeof(out)), "jos\xc3\xa9");
	memset(long_name, ' ', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	admin_user_field(long_name, out, sizeof(out));
	assert_true(strlen(out) <= ADMIN_USER_FIELD_MAX);
	assert_string_equal(out + strlen(out) - 3, "...");

	assert_true(admin_token_valid("123.456", 7));
	assert_false(admin_token_valid("", 0));
	assert_false(admin_token_valid("12a", 3));
	assert_false(admin_token_valid("123456789012345678901234567890123", 33));
}

/* ------------------------------------------------------------------------------------------ */
/* The control socket */

static char *make_temp_dir(void)
{
	char *dir = xstrdup("/tmp/buzon-test-admin-XXXXXX");

	assert_non_null(mkdtemp(dir));
	return dir;
}

static void remove_tree(const char *dir)
{
	char *command = xasprintf("rm -rf '%s'", dir);

	assert_int_equal(system(command), 0);
	free(command);
}

static void test_control_socket_open(void **state)
{
	char *dir = make_temp_dir();
	char *path = xasprintf("%s/run/buzon/control.sock", dir);
	char *error = NULL;
	struct stat st;

	int fd = admin_control_socket_open(path, false, 0, 0, &error);
	assert_true(fd >= 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	/* a second server is refused while the first listens */
	assert_int_equal(admin_control_socket_open(path, false, 0, 0, &error), -1);
	assert_non_null(strstr(error, "in use"));
	free(error);
	error = NULL;
	/* a socket file left behind by a server that died is replaced */
	close(fd);
	fd = admin_control_socket_open(path, false, 0, 0, &error);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	/* anything else at the path is not clobbered */
	int file = open(path, O_CREAT | O_WRONLY, 0644);
	assert_true(file >= 0);
	close(file);
	assert_int_equal(admin_control_socket_open(path, false, 0, 0, &error), -1);
	assert_non_null(strstr(error, "not a socket"));
	free(error);
	error = NULL;
	assert_int_equal(admin_control_socket_open("relative.sock", false, 0, 0, &error), -1);
	free(error);
	free(path);
	remove_tree(dir);
	free(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* A real admin process */

struct admin_fixture {
	char *dir;
	char *socket_path;
	struct buzon_config *config;
	struct metrics *metrics;
	struct ban_table *bans;
	int master_fd; /* the master's end */
	int worker_fd; /* a worker's end of its admin channel, -1 when none */
	pid_t pid;
};

static struct buzon_config *load_config(const char *dir, const char *socket_path)
{
	char *path = xasprintf("%s/buzon.conf", dir);
	FILE *f = fopen(path, "w");
	char *error = NULL;

	assert_non_null(f);
	fprintf(f,
		"[server]\nlog_level = error\nsandbox = yes\ncontrol_socket = %s\n"
		"[pop3]\nlisten = 127.0.0.1:1\n"
		"[auth]\npasswd_file = %s/users\nban_time = 10m\n"
		"[mail]\nlocation = maildir:%s/mail/%%u\n",
		socket_path, dir, dir);
	fclose(f);
	struct buzon_config *config = config_load(path, &error);
	if (config == NULL)
		fail_msg("config: %s", error);
	free(path);
	return config;
}

static int fixture_setup(void **state)
{
	struct admin_fixture *fx = xcalloc(1, sizeof(*fx));
	int master_pair[2], worker_pair[2];
	char *error = NULL;

	fx->dir = make_temp_dir();
	fx->socket_path = xasprintf("%s/control.sock", fx->dir);
	fx->config = load_config(fx->dir, fx->socket_path);
	fx->metrics = metrics_create(2);
	fx->bans = ban_table_create();
	int control_fd = admin_control_socket_open(fx->socket_path, false, 0, 0, &error);
	assert_true(control_fd >= 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, master_pair), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, worker_pair), 0);
	fflush(NULL);
	fx->pid = fork();
	assert_true(fx->pid >= 0);
	if (fx->pid == 0) {
		close(master_pair[0]);
		close(worker_pair[0]);
		close(worker_pair[1]);
		struct admin_setup setup = {.master_fd = master_pair[1],
					    .control_fd = control_fd,
					    .metrics = fx->metrics,
					    .bans = fx->bans};
		_exit(admin_main(fx->config, &setup));
	}
	close(control_fd);
	close(master_pair[1]);
	fx->master_fd = master_pair[0];
	/* the master hands over a worker's channel, as it does when it starts one */
	assert_int_equal(admin_send_worker_channel(fx->master_fd, 0, 1, 1234, worker_pair[1]), 0);
	close(worker_pair[1]);
	fx->worker_fd = worker_pair[0];
	*state = fx;
	return 0;
}

/* Waits for the admin process to exit and asserts it did so cleanly (not killed by seccomp). */
static void fixture_wait_exit(struct admin_fixture *fx)
{
	int status = 0;

	for (int waited = 0; waitpid(fx->pid, &status, WNOHANG) == 0; waited += 10) {
		if (waited > TEST_WAIT_MS) {
			kill(fx->pid, SIGKILL);
			fail_msg("the admin process did not exit");
		}
		usleep(10000);
	}
	if (WIFSIGNALED(status))
		fail_msg("the admin process was killed by signal %d", WTERMSIG(status));
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	fx->pid = 0;
}

static int fixture_teardown(void **state)
{
	struct admin_fixture *fx = *state;

	if (fx->worker_fd >= 0)
		close(fx->worker_fd);
	if (fx->pid > 0) {
		kill(fx->pid, SIGTERM);
		fixture_wait_exit(fx);
	}
	if (fx->master_fd >= 0)
		close(fx->master_fd);
	config_free(&fx->config);
	metrics_destroy(&fx->metrics);
	ban_table_destroy(&fx->bans);
	remove_tree(fx->dir);
	free(fx->dir);
	free(fx->socket_path);
	free(fx);
	return 0;
}

static void wait_readable(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	if (poll(&pfd, 1, TEST_WAIT_MS) != 1)
		fail_msg("nothing to read within %d ms", TEST_WAIT_MS);
}

/* Connects to the control socket and sends data (a request, or anything). */
static int client_send(struct admin_fixture *fx, const char *data, size_t len)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", fx->socket_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(write_full(fd, data, len), 0);
	return fd;
}

/* Reads the whole answer until the admin process closes the connection. */
static char *client_read_all(int fd)
{
	size_t len = 0, alloc = 65536;
	char *text = xmalloc(alloc);

	for (;;) {
		wait_readable(fd);
		ssize_t n = read(fd, text + len, alloc - len - 1);
		/* closed with some of what this side sent unread: the kernel reports a reset once
		 * the answer has been read */
		if (n == 0 || (n < 0 && errno == ECONNRESET && len > 0))
			break;
		assert_true(n > 0);
		len += (size_t)n;
		assert_true(len < alloc - 1);
	}
	text[len] = '\0';
	close(fd);
	return text;
}

static char *ask(struct admin_fixture *fx, const char *request)
{
	char *line = xasprintf("%s\n", request);
	int fd = client_send(fx, line, strlen(line));

	free(line);
	return client_read_all(fd);
}

/* Reads one line the admin process sent the worker; returns its token in token_r. */
static void worker_read_request(struct admin_fixture *fx, char *line, size_t size, char *token_r)
{
	size_t len = 0;

	while (len == 0 || line[len - 1] != '\n') {
		wait_readable(fx->worker_fd);
		ssize_t n = read(fx->worker_fd, line + len, 1);
		assert_int_equal(n, 1);
		len++;
		assert_true(len < size);
	}
	line[len - 1] = '\0';
	size_t token_len = strcspn(line, " ");
	assert_true(admin_token_valid(line, token_len));
	memcpy(token_r, line, token_len);
	token_r[token_len] = '\0';
}

static void worker_write(struct admin_fixture *fx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void worker_write(struct admin_fixture *fx, const char *fmt, ...)
{
	char buf[4096];
	va_list args;

	va_start(args, fmt);
	int len = vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	assert_int_equal(write_full(fx->worker_fd, buf, (size_t)len), 0);
}

static void test_who_and_kick(void **state)
{
	struct admin_fixture *fx = *state;
	char line[4096], token[ADMIN_TOKEN_MAX + 1];

	int client = client_send(fx, "WHO\r\n", 5);
	worker_read_request(fx, line, sizeof(line), token);
	assert_string_equal(line + strlen(token), " WHO");
	/* an answer left over from an earlier admin process comes first and is skipped */
	worker_write(fx, "1.1 S stale 10.0.0.1 auth 1 0 0 no 0.1\n1.1 END 1\n");
	worker_write(fx, "%s S demo 127.0.0.1 transaction 1700000000 120 30 yes 0.5\n", token);
	worker_write(fx, "%s S - 127.0.0.2 auth 1700000001 10 0 no 0.6\n%s END 2\n", token, token);
	char *answer = client_read_all(client);
	assert_string_equal(answer, "* demo 127.0.0.1 transaction 1700000000 120 30 yes 0.5\n"
				    "* - 127.0.0.2 auth 1700000001 10 0 no 0.6\n"
				    "OK sessions=2 workers=1 unanswered=0\n");
	free(answer);

	client = client_send(fx, "KICK IP ::ffff:127.0.0.1\n", 25);
	worker_read_request(fx, line, sizeof(line), token);
	/* the address reaches the worker in canonical form */
	assert_string_equal(line + strlen(token), " KICK IP 127.0.0.1");
	worker_write(fx, "%s END 3\n", token);
	answer = client_read_all(client);
	assert_string_equal(answer, "OK kicked=3 workers=1 unanswered=0\n");
	free(answer);

	client = client_send(fx, "kick user jo smith\n", 19);
	worker_read_request(fx, line, sizeof(line), token);
	assert_string_equal(line + strlen(token), " KICK USER jo smith");
	worker_write(fx, "%s ERR something odd\n", token);
	answer = client_read_all(client);
	assert_string_equal(answer, "OK kicked=0 workers=1 unanswered=0\n");
	free(answer);

	answer = ask(fx, "KICK IP not-an-address");
	assert_true(strncmp(answer, "ERR not an IP address", 21) == 0);
	free(answer);
	answer = ask(fx, "KICK HOST x");
	assert_true(strncmp(answer, "ERR usage", 9) == 0);
	free(answer);

	/* the worker exits while a WHO waits for it: the answer comes at once, without it */
	client = client_send(fx, "WHO\n", 4);
	worker_read_request(fx, line, sizeof(line), token);
	close(fx->worker_fd);
	fx->worker_fd = -1;
	answer = client_read_all(client);
	assert_string_equal(answer, "OK sessions=0 workers=1 unanswered=1\n");
	free(answer);
	answer = ask(fx, "WHO");
	assert_string_equal(answer, "OK sessions=0 workers=0 unanswered=0\n");
	free(answer);
}

/* Hands the admin process a new worker channel in place of the fixture's. */
static void fixture_new_worker(struct admin_fixture *fx, pid_t pid)
{
	int pair[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
	assert_int_equal(admin_send_worker_channel(fx->master_fd, 0, 2, pid, pair[1]), 0);
	close(pair[1]);
	if (fx->worker_fd >= 0)
		close(fx->worker_fd);
	fx->worker_fd = pair[0];
}

/* Asserts that the admin process has closed the fixture's worker channel. */
static void assert_worker_dropped(struct admin_fixture *fx)
{
	char buf[16];

	wait_readable(fx->worker_fd);
	assert_int_equal(read(fx->worker_fd, buf, sizeof(buf)), 0);
}

static void test_broken_worker_is_dropped(void **state)
{
	struct admin_fixture *fx = *state;
	char garbage[ADMIN_WORKER_LINE_MAX + 100];
	char line[4096], token[ADMIN_TOKEN_MAX + 1];

	/* a line longer than any answer: the admin process closes that channel */
	memset(garbage, 'x', sizeof(garbage));
	assert_int_equal(write_full(fx->worker_fd, garbage, sizeof(garbage)), 0);
	assert_worker_dropped(fx);
	char *answer = ask(fx, "WHO");
	assert_string_equal(answer, "OK sessions=0 workers=0 unanswered=0\n");
	free(answer);

	/* a terminal escape in an answer (a compromised worker) never reaches the operator */
	fixture_new_worker(fx, 5678);
	int client = client_send(fx, "WHO\n", 4);
	worker_read_request(fx, line, sizeof(line), token);
	worker_write(fx, "%s S \x1b]2;owned\x07 127.0.0.1 auth 1 0 0 no 0.1\n%s END 1\n", token,
		     token);
	answer = client_read_all(client);
	assert_string_equal(answer, "OK sessions=0 workers=1 unanswered=1\n");
	free(answer);
	assert_worker_dropped(fx);

	/* the same worker again (a master that repeats itself): one reader per channel */
	fixture_new_worker(fx, 9012);
	int first = fx->worker_fd;
	fx->worker_fd = -1; /* kept open, so that it is still known when the repeat comes */
	fixture_new_worker(fx, 9012);
	assert_worker_dropped(fx);
	close(first);
}

static void test_reload_through_the_master(void **state)
{
	struct admin_fixture *fx = *state;
	enum admin_master_request request;

	int first = client_send(fx, "RELOAD\n", 7);
	int second = client_send(fx, "RELOAD\n", 7);
	wait_readable(fx->master_fd);
	assert_int_equal(admin_master_read_request(fx->master_fd, &request), 0);
	assert_int_equal(request, ADMIN_MASTER_RELOAD);
	wait_readable(fx->master_fd);
	assert_int_equal(admin_master_read_request(fx->master_fd, &request), 0);
	/* answers go to the requests in order */
	assert_int_equal(admin_master_reply(fx->master_fd, true, "reloaded (generation 2)"), 0);
	assert_int_equal(admin_master_reply(fx->master_fd, false, "buzon.conf:3: bad value"), 0);
	char *answer = client_read_all(first);
	assert_string_equal(answer, "OK reloaded (generation 2)\n");
	free(answer);
	answer = client_read_all(second);
	assert_string_equal(answer, "ERR buzon.conf:3: bad value\n");
	free(answer);
	/* an answer nobody asked for is ignored */
	assert_int_equal(admin_master_reply(fx->master_fd, true, "unasked"), 0);
	answer = ask(fx, "RELOAD now");
	assert_string_equal(answer, "ERR RELOAD takes no argument\n");
	free(answer);

	/* the master goes away: the admin process exits */
	close(fx->master_fd);
	fx->master_fd = -1;
	fixture_wait_exit(fx);
}

static void test_bans_and_stats(void **state)
{
	struct admin_fixture *fx = *state;
	uint64_t now = ban_table_now();

	char *answer = ask(fx, "BAN ADD 192.0.2.44 2h");
	assert_true(strncmp(answer, "OK banned 192.0.2.44 until=", 27) == 0);
	free(answer);
	assert_true(ban_table_is_banned_text(fx->bans, "192.0.2.44", now + 7190));
	assert_false(ban_table_is_banned_text(fx->bans, "192.0.2.44", now + 7210));
	answer = ask(fx, "ban add 2001:db8::7"); /* [auth] ban_time: 10 minutes */
	assert_true(strncmp(answer, "OK banned", 9) == 0);
	free(answer);
	assert_true(ban_table_is_banned_text(fx->bans, "2001:db8::1", now + 590));
	answer = ask(fx, "BAN LIST");
	long long until;
	char first[64], second[64];
	assert_int_equal(sscanf(answer, "* %63s %lld admin\n* %63s", first, &until, second), 3);
	assert_string_equal(first, "192.0.2.44"); /* the longest first */
	assert_string_equal(second, "2001:db8::/64");
	assert_non_null(strstr(answer, "\nOK bans=2\n"));
	free(answer);
	answer = ask(fx, "BAN DEL 192.0.2.44");
	assert_string_equal(answer, "OK lifted 192.0.2.44\n");
	free(answer);
	assert_false(ban_table_is_banned_text(fx->bans, "192.0.2.44", now));
	answer = ask(fx, "BAN DEL 192.0.2.44");
	assert_string_equal(answer, "ERR not banned 192.0.2.44\n");
	free(answer);
	static const char *const refused[] = {
	    "BAN ADD 192.0.2.1 0s", "BAN ADD 192.0.2.1 4000d", "BAN ADD 192.0.2.1 soon",
	    "BAN ADD 10.0.0.0/8",   "BAN DEL nowhere",	       "BAN",
	    "BAN LIST all",	    "BAN ADD a b c d e",       "BAN PURGE"};
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		answer = ask(fx, refused[i]);
		if (strncmp(answer, "ERR ", 4) != 0 ||
		    strchr(answer, '\n') != answer + strlen(answer) - 1)
			fail_msg("%s -> %s", refused[i], answer);
		free(answer);
	}

	answer = ask(fx, "STATS");
	assert_true(strncmp(answer, "* # HELP ", 9) == 0);
	assert_non_null(strstr(answer, "\n* buzon_pop3_sessions{"));
	assert_true(strcmp(answer + strlen(answer) - 3, "OK\n") == 0);
	free(answer);
}

static void test_hostile_requests(void **state)
{
	struct admin_fixture *fx = *state;
	char long_line[ADMIN_REQUEST_LINE_MAX + 10];
	char *answer;

	memset(long_line, 'W', sizeof(long_line));
	/* no line end within the limit */
	answer = client_read_all(client_send(fx, long_line, sizeof(long_line)));
	assert_true(strncmp(answer, "ERR request line too long", 25) == 0);
	free(answer);
	/* a line end just too late */
	long_line[ADMIN_REQUEST_LINE_MAX + 1] = '\n';
	answer = client_read_all(client_send(fx, long_line, ADMIN_REQUEST_LINE_MAX + 2));
	assert_true(strncmp(answer, "ERR request line too long", 25) == 0);
	free(answer);
	answer = client_read_all(client_send(fx, "WHO\0junk\n", 9));
	assert_string_equal(answer, "ERR control characters in the request\n");
	free(answer);
	answer = ask(fx, "\x1b[2JWHO");
	assert_string_equal(answer, "ERR control characters in the request\n");
	free(answer);
	answer = ask(fx, "");
	assert_true(strncmp(answer, "ERR unknown command", 19) == 0);
	free(answer);
	answer = ask(fx, "SHUTDOWN");
	assert_true(strncmp(answer, "ERR unknown command", 19) == 0);
	free(answer);
	answer = ask(fx, "WHO everything");
	assert_string_equal(answer, "ERR WHO takes no argument\n");
	free(answer);
	/* a client that connects and leaves, or pipelines a second request: one answer each */
	close(client_send(fx, "WH", 2));
	answer = client_read_all(client_send(fx, "STATS x\nWHO\n", 12));
	assert_string_equal(answer, "ERR STATS takes no argument\n");
	free(answer);
	/* still serving, and never killed by its sandbox: teardown checks the exit status */
	answer = ask(fx, "BAN LIST");
	assert_string_equal(answer, "OK bans=0\n");
	free(answer);
}

static void test_retiring_finishes_its_requests(void **state)
{
	struct admin_fixture *fx = *state;
	char line[4096], token[ADMIN_TOKEN_MAX + 1];
	enum admin_master_request request;

	int reload = client_send(fx, "RELOAD\n", 7);
	wait_readable(fx->master_fd);
	assert_int_equal(admin_master_read_request(fx->master_fd, &request), 0);
	int who = client_send(fx, "WHO\n", 4);
	worker_read_request(fx, line, sizeof(line), token);
	/* a reload replaced this admin process: it gives up its worker channels at once, answers
	 * what waits on them, stops accepting, and waits for the master's answer */
	kill(fx->pid, SIGUSR1);
	char *answer = client_read_all(who);
	assert_string_equal(answer, "OK sessions=0 workers=1 unanswered=1\n");
	free(answer);
	assert_int_equal(admin_master_reply(fx->master_fd, true, "reloaded"), 0);
	answer = client_read_all(reload);
	assert_string_equal(answer, "OK reloaded\n");
	free(answer);
	fixture_wait_exit(fx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wire_round_trips),
	    cmocka_unit_test(test_take_line),
	    cmocka_unit_test(test_descriptor_passing),
	    cmocka_unit_test(test_user_field_and_tokens),
	    cmocka_unit_test(test_control_socket_open),
	    cmocka_unit_test_setup_teardown(test_who_and_kick, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_broken_worker_is_dropped, fixture_setup,
					    fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_reload_through_the_master, fixture_setup,
					    fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_bans_and_stats, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_requests, fixture_setup, fixture_teardown),
	    cmocka_unit_test_setup_teardown(test_retiring_finishes_its_requests, fixture_setup,
					    fixture_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	log_init("test", LOG_LEVEL_ERROR);
	/* glibc reads /etc/localtime at a process's first time conversion, even gmtime_r() for log
	 * lines; the master has logged before it forks the admin process, and so must this test,
	 * or the sandboxed child's first log line would try to open the file */
	tzset();
	return cmocka_run_group_tests(tests, NULL, NULL);
}

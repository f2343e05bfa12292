/* Session tests in one process: a real pop3_session on a socketpair, a real Maildir in a temp
 * directory, and this test playing the auth process on the other end of the auth socketpair.
 * These cover what a test against the server cannot do quickly: idle timeouts (set to 1 s here,
 * below the 10-minute minimum the config enforces), and exact orderings of close and QUIT. */
#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth_client.h"
#include "auth/auth_proto.h"
#include "core/config.h"
#include "core/util.h"
#include "net/ip_limit.h"
#include "pop3/session.h"
#include "core/offload.h"
#include "pop3/worker.h"

struct harness {
	char dir[64];
	char *maildir;
	char *location;
	struct buzon_config config;
	struct pop3_worker worker;
	struct event *auth_event;
	int auth_peer_fd; /* the test's end: plays the auth process */
	int client_fd;	  /* the test's end of the POP3 connection */
	char buf[1 << 16];
	size_t len;
};

/* Answers every auth request: password "right" is accepted, anything else refused. */
static void fake_auth_readable(evutil_socket_t fd, short what, void *arg)
{
	struct harness *h = arg;
	unsigned char in[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg;
	struct auth_msg_builder out;
	ssize_t len = recv(fd, in, sizeof(in), MSG_DONTWAIT);

	if (len <= 0 || auth_msg_decode(in, (size_t)len, &msg) < 0 || msg.type != AUTH_MSG_VERIFY)
		return;
	const struct auth_field_value *pass = &msg.fields[AUTH_FIELD_PASSWORD];
	bool right = pass->len == 5 && memcmp(pass->data, "right", 5) == 0;
	auth_msg_begin(&out, AUTH_MSG_RESULT, msg.id);
	auth_msg_add_u32(&out, AUTH_FIELD_RESULT, right ? AUTH_RESULT_OK : AUTH_RESULT_FAIL);
	if (right) {
		auth_msg_add_bytes(&out, AUTH_FIELD_USER, msg.fields[AUTH_FIELD_USER].data,
				   msg.fields[AUTH_FIELD_USER].len);
		auth_msg_add_str(&out, AUTH_FIELD_LOCATION, h->location);
		auth_msg_add_u32(&out, AUTH_FIELD_EXPIRE_DAYS, AUTH_EXPIRE_NEVER);
		auth_msg_add_u32(&out, AUTH_FIELD_LOGIN_DELAY, 0);
	}
	size_t n = auth_msg_finish(&out);
	assert_true(n > 0);
	assert_true(send(fd, out.buf, n, 0) == (ssize_t)n);
}

static int setup_with_peer(void **state, uint32_t peer_ip);

static int setup(void **state)
{
	return setup_with_peer(state, 0x7f000001); /* 127.0.0.1 */
}

/* A client from another machine (192.0.2.1, TEST-NET-1): no packet is sent anywhere, the address
 * only tells the session where the connection comes from. */
static int setup_remote(void **state)
{
	return setup_with_peer(state, 0xc0000201);
}

static int setup_with_peer(void **state, uint32_t peer_ip)
{
	struct harness *h = xcalloc(1, sizeof(*h));
	int auth_pair[2], conn_pair[2];

	strcpy(h->dir, "/tmp/buzon-session-XXXXXX");
	assert_non_null(mkdtemp(h->dir));
	h->maildir = xasprintf("%s/mail", h->dir);
	h->location = xasprintf("maildir:%s", h->maildir);
	h->config.idle_timeout_secs = 1;
	h->config.login_timeout_secs = 60;
	h->config.max_bad_commands = 5;
	h->config.max_connections = 10;
	h->config.max_prelogin_per_ip = 10;
	h->config.retr_marks_seen = true;
	h->config.expire = "NEVER";
	h->config.greeting = "ready";
	h->config.auth_cleartext = CONFIG_CLEARTEXT_LOOPBACK;
	h->config.auth_mechanisms = "PLAIN LOGIN SCRAM-SHA-256";
	h->worker.config = &h->config;
	h->worker.base = event_base_new();
	h->worker.ip_limit = ip_limit_create();
	h->worker.offload = offload_pool_new(h->worker.base, 2);
	h->worker.implementation = "buzon test";
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, auth_pair), 0);
	h->worker.auth = auth_client_create(h->worker.base, auth_pair[0]);
	h->auth_peer_fd = auth_pair[1];
	h->auth_event =
	    event_new(h->worker.base, h->auth_peer_fd, EV_READ | EV_PERSIST, fake_auth_readable, h);
	event_add(h->auth_event, NULL);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, conn_pair), 0);
	h->client_fd = conn_pair[1];
	fcntl(h->client_fd, F_SETFL, O_NONBLOCK);
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(peer_ip)};
	evutil_make_socket_nonblocking(conn_pair[0]);
	assert_non_null(pop3_session_create(&h->worker, conn_pair[0], (struct sockaddr *)&peer,
					    sizeof(peer), false));
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;

	while (h->worker.sessions != NULL)
		pop3_session_destroy(h->worker.sessions, "test");
	offload_pool_free(&h->worker.offload);
	auth_client_destroy(&h->worker.auth);
	event_free(h->auth_event);
	close(h->auth_peer_fd);
	close(h->client_fd);
	event_base_free(h->worker.base);
	ip_limit_destroy(&h->worker.ip_limit);
	char *cmd = xasprintf("rm -rf '%s'", h->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(h->maildir);
	free(h->location);
	free(h);
	return 0;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the loop until the client has received a line containing want (or EOF when want is NULL),
 * at most timeout seconds. Returns true if it arrived. */
static bool pump_until(struct harness *h, const char *want, double timeout)
{
	double deadline = now_seconds() + timeout;

	while (now_seconds() < deadline) {
		struct timeval slice = {.tv_usec = 20000};
		event_base_loopexit(h->worker.base, &slice);
		event_base_dispatch(h->worker.base);
		ssize_t n = read(h->client_fd, h->buf + h->len, sizeof(h->buf) - 1 - h->len);
		if (n > 0) {
			h->len += (size_t)n;
			h->buf[h->len] = '\0';
		}
		if (want != NULL && strstr(h->buf, want) != NULL)
			return true;
		if (want == NULL && n == 0)
			return true;
	}
	return false;
}

static void say(struct harness *h, const char *text)
{
	assert_int_equal(write_full(h->client_fd, text, strlen(text)), 0);
}

static void deliver(struct harness *h, const char *name, const char *body)
{
	char *path = xasprintf("%s/new/%s", h->maildir, name);

	assert_int_equal(mkdir_parents(h->maildir, 0700), 0);
	char *sub = xasprintf("%s/new", h->maildir);
	mkdir(sub, 0700);
	free(sub);
	sub = xasprintf("%s/cur", h->maildir);
	mkdir(sub, 0700);
	free(sub);
	sub = xasprintf("%s/tmp", h->maildir);
	mkdir(sub, 0700);
	free(sub);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, body, strlen(body)), 0);
	close(fd);
	free(path);
}

static int count_messages(struct harness *h)
{
	int count = 0;
	const char *subs[] = {"new", "cur"};

	for (size_t i = 0; i < 2; i++) {
		char *cmd = xasprintf("ls '%s/%s' 2>/dev/null | wc -l", h->maildir, subs[i]);
		FILE *p = popen(cmd, "r");
		int n = 0;
		assert_int_equal(fscanf(p, "%d", &n), 1);
		pclose(p);
		free(cmd);
		count += n;
	}
	return count;
}

static void test_greeting_and_login(void **state)
{
	struct harness *h = *state;

	assert_true(pump_until(h, "+OK ready\r\n", 2));
	say(h, "USER demo\r\nPASS right\r\nSTAT\r\n");
	assert_true(pump_until(h, "+OK 0 0\r\n", 2));
}

static void test_idle_timeout_before_login_closes(void **state)
{
	struct harness *h = *state;
	double start = now_seconds();

	assert_true(pump_until(h, "+OK ready", 2));
	assert_true(pump_until(h, "-ERR Idle timeout", 3));
	assert_true(pump_until(h, NULL, 2));
	assert_true(now_seconds() - start >= 0.9);
	assert_null(h->worker.sessions);
}

/* RFC 1939 §3: a timeout ends the session without entering UPDATE: nothing is deleted. */
static void test_idle_timeout_in_transaction_deletes_nothing(void **state)
{
	struct harness *h = *state;

	deliver(h, "1.M1P1.test", "Subject: a\n\nbody\n");
	say(h, "USER demo\r\nPASS right\r\nDELE 1\r\n");
	assert_true(pump_until(h, "deleted", 2));
	assert_true(pump_until(h, "-ERR Idle timeout", 3));
	assert_true(pump_until(h, NULL, 2));
	assert_null(h->worker.sessions);
	assert_int_equal(count_messages(h), 1);
}

/* A client that sends DELE and QUIT and closes at once still gets its deletions. */
static void test_quit_then_close_applies_deletions(void **state)
{
	struct harness *h = *state;

	deliver(h, "1.M1P1.test", "Subject: a\n\nbody\n");
	deliver(h, "2.M1P1.test", "Subject: b\n\nbody\n");
	say(h, "USER demo\r\nPASS right\r\nDELE 1\r\nQUIT\r\n");
	shutdown(h->client_fd, SHUT_WR);
	assert_true(pump_until(h, NULL, 3));
	assert_null(h->worker.sessions);
	assert_int_equal(count_messages(h), 1);
}

/* Closing after DELE without QUIT deletes nothing. */
static void test_close_without_quit_deletes_nothing(void **state)
{
	struct harness *h = *state;

	deliver(h, "1.M1P1.test", "Subject: a\n\nbody\n");
	say(h, "USER demo\r\nPASS right\r\nDELE 1\r\n");
	shutdown(h->client_fd, SHUT_WR);
	assert_true(pump_until(h, NULL, 3));
	assert_null(h->worker.sessions);
	assert_int_equal(count_messages(h), 1);
}

/* Commands pipelined behind a PASS wait for the auth answer and then run in order. */
static void test_pipelined_behind_pass(void **state)
{
	struct harness *h = *state;

	deliver(h, "1.M1P1.test", "Subject: a\n\nbody\n");
	say(h, "USER demo\r\nPASS wrong\r\nUSER demo\r\nPASS right\r\nSTAT\r\nUIDL\r\nQUIT\r\n");
	assert_true(pump_until(h, "Logging out", 3));
	const char *auth_err = strstr(h->buf, "-ERR [AUTH]");
	const char *stat = strstr(h->buf, "+OK 1 ");
	assert_non_null(auth_err);
	assert_non_null(stat);
	assert_true(auth_err < stat);
}

/* The bad-command limit ends the session with a final -ERR. */
static void test_bad_command_limit(void **state)
{
	struct harness *h = *state;

	say(h, "A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\n");
	assert_true(pump_until(h, "Too many bad commands", 2));
	assert_true(pump_until(h, NULL, 2));
	assert_null(h->worker.sessions);
}

/* [auth] cleartext = loopback: a remote client without TLS may not send a password. */
static void test_cleartext_refused_from_remote(void **state)
{
	struct harness *h = *state;

	say(h, "CAPA\r\n");
	assert_true(pump_until(h, "\r\n.\r\n", 2));
	if (strstr(h->buf, "\r\nUSER\r\n") != NULL)
		fail_msg("USER announced to a remote client without TLS: %s", h->buf);
	say(h, "USER demo\r\nPASS right\r\n");
	assert_true(pump_until(h, "Plaintext logins are not allowed", 2));
	const char *first = strstr(h->buf, "-ERR [AUTH] Plaintext");
	assert_non_null(first);
	assert_non_null(strstr(first + 1, "-ERR [AUTH] Plaintext"));
	assert_null(strstr(h->buf, "Logged in"));
}

/* [auth] cleartext = always: the admin allows it everywhere. */
static void test_cleartext_always_allows_remote(void **state)
{
	struct harness *h = *state;

	h->config.auth_cleartext = CONFIG_CLEARTEXT_ALWAYS;
	say(h, "CAPA\r\nUSER demo\r\nPASS right\r\n");
	assert_true(pump_until(h, "Logged in", 2));
	assert_non_null(strstr(h->buf, "\r\nUSER\r\n"));
}

/* [auth] cleartext = never: not even from this machine. */
static void test_cleartext_never_refuses_loopback(void **state)
{
	struct harness *h = *state;

	h->config.auth_cleartext = CONFIG_CLEARTEXT_NEVER;
	say(h, "USER demo\r\n");
	assert_true(pump_until(h, "-ERR [AUTH]", 2));
}

/* Without TLS configured, STLS is neither offered nor accepted. */
static void test_stls_without_tls(void **state)
{
	struct harness *h = *state;

	say(h, "CAPA\r\nSTLS\r\n");
	assert_true(pump_until(h, "STLS is not available", 2));
	assert_null(strstr(h->buf, "\r\nSTLS\r\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_greeting_and_login, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_timeout_before_login_closes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_timeout_in_transaction_deletes_nothing, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_quit_then_close_applies_deletions, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_close_without_quit_deletes_nothing, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_pipelined_behind_pass, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_command_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cleartext_refused_from_remote, setup_remote,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cleartext_always_allows_remote, setup_remote,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cleartext_never_refuses_loopback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stls_without_tls, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the auth process's request handling (src/auth/auth_server.c through
 * auth_server_testing.h): a real server with a passwd-file in a temp dir, fed datagrams as a
 * worker would send them over a socketpair. Secrets are {PLAIN} so that the tests take no time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth_proto.h"
#include "auth/auth_server_testing.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "net/ban_table.h"

struct harness {
	char dir[64];
	struct buzon_config *config;
	struct ban_table *bans;
	struct auth_server *server;
	int worker_fd; /* the worker's end */
	int conn_fd;   /* the auth process's end */
};

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
	struct harness *h = xcalloc(1, sizeof(*h));
	int pair[2];
	char *error = NULL;

	strcpy(h->dir, "/tmp/buzon-auth-server-XXXXXX");
	assert_non_null(mkdtemp(h->dir));
	char *users = xasprintf("%s/users", h->dir), *conf = xasprintf("%s/buzon.conf", h->dir);
	write_text(users, "demo:{PLAIN}right\n"
			  "slow:{PLAIN}right::::::expire=7 userdb_login_delay=15m\n");
	char *text = xasprintf("[pop3]\nlisten = 127.0.0.1:1\n"
			       "[auth]\npasswd_file = %s\nthreads = 1\ncleartext = loopback\n"
			       "default_scheme = PLAIN\nmechanisms = PLAIN LOGIN\n"
			       "[mail]\nlocation = maildir:/srv/mail/%%u\n",
			       users);
	write_text(conf, text);
	h->config = config_load(conf, &error);
	if (h->config == NULL)
		fail_msg("config: %s", error);
	free(text);
	free(users);
	free(conf);
	h->bans = ban_table_create();
	h->server = auth_server_testing_new(h->config, h->bans);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair), 0);
	h->worker_fd = pair[0];
	h->conn_fd = pair[1];
	auth_server_testing_add_conn(h->server, h->conn_fd);
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;
	char *cmd = xasprintf("rm -rf '%s'", h->dir);

	auth_server_testing_free(&h->server); /* closes conn_fd */
	close(h->worker_fd);
	ban_table_destroy(&h->bans);
	config_free(&h->config);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(h);
	return 0;
}

/* Sends the message in b, waits for password checks, and decodes the one answer into buf/msg. */
static void exchange(struct harness *h, struct auth_msg_builder *b, unsigned char *buf, size_t size,
		     struct auth_msg *msg)
{
	size_t len = auth_msg_finish(b);

	assert_true(len > 0);
	assert_true(auth_server_testing_datagram(h->server, h->conn_fd, b->buf, len));
	auth_server_testing_settle(h->server);
	ssize_t got = recv(h->worker_fd, buf, size, MSG_DONTWAIT);
	assert_true(got > 0);
	assert_int_equal(auth_msg_decode(buf, (size_t)got, msg), 0);
	assert_int_equal(msg->type, AUTH_MSG_RESULT);
	assert_int_equal(recv(h->worker_fd, buf, size, MSG_DONTWAIT), -1); /* only one answer */
}

/* USER/PASS of user from ip with flags; fills *msg (pointing into buf) with the answer. */
static void verify_user(struct harness *h, const char *user, const char *password, const char *ip,
			uint32_t flags, unsigned char *buf, size_t size, struct auth_msg *msg)
{
	static struct auth_msg_builder b;

	auth_msg_begin(&b, AUTH_MSG_VERIFY, 7);
	auth_msg_add_str(&b, AUTH_FIELD_USER, user);
	auth_msg_add_str(&b, AUTH_FIELD_PASSWORD, password);
	auth_msg_add_str(&b, AUTH_FIELD_CLIENT_IP, ip);
	auth_msg_add_u32(&b, AUTH_FIELD_FLAGS, flags);
	exchange(h, &b, buf, size, msg);
	assert_int_equal(msg->id, 7);
}

/* USER/PASS from ip with flags; returns the RESULT. */
static uint32_t verify(struct harness *h, const char *password, const char *ip, uint32_t flags)
{
	static struct auth_msg_builder b;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg;

	auth_msg_begin(&b, AUTH_MSG_VERIFY, 7);
	auth_msg_add_str(&b, AUTH_FIELD_USER, "demo");
	auth_msg_add_str(&b, AUTH_FIELD_PASSWORD, password);
	auth_msg_add_str(&b, AUTH_FIELD_CLIENT_IP, ip);
	auth_msg_add_u32(&b, AUTH_FIELD_FLAGS, flags);
	exchange(h, &b, buf, sizeof(buf), &msg);
	assert_int_equal(msg.id, 7);
	return auth_msg_u32(&msg, AUTH_FIELD_RESULT, 0);
}

static void test_verify(void **state)
{
	struct harness *h = *state;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	static struct auth_msg_builder b;
	struct auth_msg msg;

	assert_int_equal(verify(h, "wrong", "127.0.0.1", AUTH_FLAG_LOOPBACK), AUTH_RESULT_FAIL);
	auth_msg_begin(&b, AUTH_MSG_VERIFY, 8);
	auth_msg_add_str(&b, AUTH_FIELD_USER, "demo");
	auth_msg_add_str(&b, AUTH_FIELD_PASSWORD, "right");
	auth_msg_add_str(&b, AUTH_FIELD_CLIENT_IP, "127.0.0.1");
	auth_msg_add_u32(&b, AUTH_FIELD_FLAGS, AUTH_FLAG_LOOPBACK);
	exchange(h, &b, buf, sizeof(buf), &msg);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_RESULT, 0), AUTH_RESULT_OK);
	char *location = auth_msg_strdup(&msg, AUTH_FIELD_LOCATION);
	assert_string_equal(location, "maildir:/srv/mail/demo");
	free(location);
}

/* [auth] cleartext = loopback: a worker that sends USER/PASS from a plain connection off this
 * machine is broken or compromised, and the auth process must refuse it as it refuses PLAIN. */
static void test_verify_cleartext_policy(void **state)
{
	struct harness *h = *state;

	assert_int_equal(verify(h, "right", "203.0.113.5", 0), AUTH_RESULT_FAIL);
	assert_int_equal(verify(h, "right", "203.0.113.5", AUTH_FLAG_TLS), AUTH_RESULT_OK);
	assert_int_equal(verify(h, "right", "127.0.0.1", AUTH_FLAG_LOOPBACK), AUTH_RESULT_OK);
}

static void test_sasl_plain_cleartext_policy(void **state)
{
	struct harness *h = *state;
	static const char response[] = "\0demo\0right";
	static struct auth_msg_builder b;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg;

	for (uint32_t flags = 0; flags <= AUTH_FLAG_TLS; flags++) {
		auth_msg_begin(&b, AUTH_MSG_SASL_START, 9 + flags);
		auth_msg_add_str(&b, AUTH_FIELD_MECH, "PLAIN");
		auth_msg_add_str(&b, AUTH_FIELD_CLIENT_IP, "203.0.113.5");
		auth_msg_add_u32(&b, AUTH_FIELD_FLAGS, flags);
		auth_msg_add_bytes(&b, AUTH_FIELD_RESPONSE, response, sizeof(response) - 1);
		exchange(h, &b, buf, sizeof(buf), &msg);
		assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_RESULT, 0),
				 flags == AUTH_FLAG_TLS ? AUTH_RESULT_OK : AUTH_RESULT_FAIL);
	}
}

/* A login's OK carries the user's own EXPIRE and LOGIN-DELAY (passwd-file extra fields), or the
 * config's (EXPIRE NEVER, no delay) for a user without them; a failure carries neither. */
static void test_login_carries_user_policy(void **state)
{
	struct harness *h = *state;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg;

	verify_user(h, "slow", "right", "127.0.0.1", AUTH_FLAG_LOOPBACK, buf, sizeof(buf), &msg);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_RESULT, 0), AUTH_RESULT_OK);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_EXPIRE_DAYS, 0), 7);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_LOGIN_DELAY, 0), 900);
	assert_false(msg.fields[AUTH_FIELD_POLICY_FLAGS].present);

	verify_user(h, "demo", "right", "127.0.0.1", AUTH_FLAG_LOOPBACK, buf, sizeof(buf), &msg);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_RESULT, 0), AUTH_RESULT_OK);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_EXPIRE_DAYS, 0), AUTH_EXPIRE_NEVER);
	assert_true(msg.fields[AUTH_FIELD_LOGIN_DELAY].present);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_LOGIN_DELAY, 99), 0);

	verify_user(h, "slow", "wrong", "127.0.0.1", AUTH_FLAG_LOOPBACK, buf, sizeof(buf), &msg);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_RESULT, 0), AUTH_RESULT_FAIL);
	assert_false(msg.fields[AUTH_FIELD_EXPIRE_DAYS].present);
	assert_false(msg.fields[AUTH_FIELD_LOGIN_DELAY].present);
}

/* Sends a POLICY_QUERY and checks the bounds it is answered with. */
static void expect_policy_bounds(struct harness *h, uint32_t expire, uint32_t delay,
				 uint32_t flags)
{
	static struct auth_msg_builder b;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg;

	auth_msg_begin(&b, AUTH_MSG_POLICY_QUERY, 21);
	exchange(h, &b, buf, sizeof(buf), &msg);
	assert_int_equal(msg.id, 21);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_RESULT, 0), AUTH_RESULT_OK);
	assert_false(msg.fields[AUTH_FIELD_USER].present);
	assert_false(msg.fields[AUTH_FIELD_LOCATION].present);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_EXPIRE_DAYS, 0), expire);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_LOGIN_DELAY, 0), delay);
	assert_true(msg.fields[AUTH_FIELD_POLICY_FLAGS].present);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_POLICY_FLAGS, 99), flags);
}

/* RFC 2449 §6.5, §6.7: before login, the smallest EXPIRE and the largest LOGIN-DELAY of any user,
 * flagged per-user when users differ; recomputed when the passwd-file changes. */
static void test_policy_query_bounds(void **state)
{
	struct harness *h = *state;
	char *users = xasprintf("%s/users", h->dir);

	expect_policy_bounds(h, 7, 900,
			     AUTH_POLICY_EXPIRE_PER_USER | AUTH_POLICY_LOGIN_DELAY_PER_USER);
	/* everyone alike (a malformed value is ignored: the config's applies) */
	write_text(users, "demo:{PLAIN}right::::::login_delay=1h\n"
			  "slow:{PLAIN}right::::::login_delay=3600 expire=soon\n");
	expect_policy_bounds(h, AUTH_EXPIRE_NEVER, 3600, 0);
	write_text(users, "demo:{PLAIN}right::::::expire=0\nslow:{PLAIN}right\n");
	expect_policy_bounds(h, 0, 0, AUTH_POLICY_EXPIRE_PER_USER);
	free(users);
}

/* A malformed datagram closes the worker's connection. */
static void test_malformed_closes(void **state)
{
	struct harness *h = *state;
	/* a VERIFY whose one field claims 5 bytes and has none */
	static const unsigned char garbage[] = {AUTH_PROTO_VERSION, 0, 1, 0, 0, 0, 0, 0, 1, 5, 0};
	unsigned char byte;

	assert_false(auth_server_testing_datagram(h->server, h->conn_fd, garbage, sizeof(garbage)));
	assert_int_equal(recv(h->worker_fd, &byte, 1, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verify_cleartext_policy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sasl_plain_cleartext_policy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_login_carries_user_policy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_policy_query_bounds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_closes, setup, teardown),
	};

	log_init("test", LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the worker's side of the auth protocol (src/auth/auth_client.c): the policy
 * fields of a login's answer are checked before a session may use them, and the policy bounds
 * for CAPA are asked for and kept. The auth process is played by the test over a socketpair. */
#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth_client.h"
#include "auth/auth_proto.h"
#include "core/log.h"
#include "core/util.h"

struct harness {
	struct event_base *base;
	struct auth_client *client;
	int auth_fd; /* the test's end: plays the auth process */
	bool answered;
	struct auth_reply reply; /* the last answer (its strings are not kept) */
	bool had_user;
};

static int setup(void **state)
{
	struct harness *h = xcalloc(1, sizeof(*h));
	int pair[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
	h->base = event_base_new();
	assert_non_null(h->base);
	h->client = auth_client_create(h->base, pair[0]);
	h->auth_fd = pair[1];
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;

	auth_client_destroy(&h->client);
	close(h->auth_fd);
	event_base_free(h->base);
	free(h);
	return 0;
}

static void on_reply(void *context, const struct auth_reply *reply)
{
	struct harness *h = context;

	h->answered = true;
	h->reply = *reply;
	h->had_user = reply->user != NULL;
	h->reply.user = h->reply.location = NULL;
}

/* Receives the request the client sent and returns its type and id. */
static struct auth_msg receive_request(struct harness *h, unsigned char *buf, size_t size)
{
	struct auth_msg msg;
	ssize_t len = recv(h->auth_fd, buf, size, 0);

	assert_true(len > 0);
	assert_int_equal(auth_msg_decode(buf, (size_t)len, &msg), 0);
	return msg;
}

/* Sends b's message and runs the loop until the client has read it. */
static void answer(struct harness *h, struct auth_msg_builder *b)
{
	size_t len = auth_msg_finish(b);

	assert_true(len > 0);
	assert_int_equal(send(h->auth_fd, b->buf, len, 0), (ssize_t)len);
	for (int i = 0; i < 10 && !h->answered; i++)
		event_base_loop(h->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* A request of type (a login or a lookup) answered OK with user, location and then whatever
 * add_fields adds; returns what the client made of it. */
static const struct auth_reply *ok_answer(struct harness *h, enum auth_msg_type type,
					  void (*add_fields)(struct auth_msg_builder *b))
{
	static struct auth_msg_builder b;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg_builder *request = auth_client_begin(h->client, type, 0);

	auth_msg_add_str(request, AUTH_FIELD_USER, "demo");
	if (type == AUTH_MSG_VERIFY) {
		auth_msg_add_str(request, AUTH_FIELD_PASSWORD, "pw");
		auth_msg_add_str(request, AUTH_FIELD_CLIENT_IP, "127.0.0.1");
		auth_msg_add_u32(request, AUTH_FIELD_FLAGS, 0);
	}
	auth_client_send(h->client, on_reply, h);
	struct auth_msg msg = receive_request(h, buf, sizeof(buf));
	assert_int_equal(msg.type, type);
	auth_msg_begin(&b, AUTH_MSG_RESULT, msg.id);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, AUTH_RESULT_OK);
	auth_msg_add_str(&b, AUTH_FIELD_USER, "demo");
	auth_msg_add_str(&b, AUTH_FIELD_LOCATION, "maildir:/m/demo");
	add_fields(&b);
	h->answered = false;
	answer(h, &b);
	assert_true(h->answered);
	return &h->reply;
}

static void add_nothing(struct auth_msg_builder *b)
{
}

static void add_policy(struct auth_msg_builder *b)
{
	auth_msg_add_u32(b, AUTH_FIELD_EXPIRE_DAYS, 7);
	auth_msg_add_u32(b, AUTH_FIELD_LOGIN_DELAY, 900);
}

static void add_policy_never(struct auth_msg_builder *b)
{
	auth_msg_add_u32(b, AUTH_FIELD_EXPIRE_DAYS, AUTH_EXPIRE_NEVER);
	auth_msg_add_u32(b, AUTH_FIELD_LOGIN_DELAY, 0);
}

static void add_expire_only(struct auth_msg_builder *b)
{
	auth_msg_add_u32(b, AUTH_FIELD_EXPIRE_DAYS, 7);
}

static void add_expire_too_long(struct auth_msg_builder *b)
{
	auth_msg_add_u32(b, AUTH_FIELD_EXPIRE_DAYS, 36501);
	auth_msg_add_u32(b, AUTH_FIELD_LOGIN_DELAY, 0);
}

static void add_delay_too_long(struct auth_msg_builder *b)
{
	auth_msg_add_u32(b, AUTH_FIELD_EXPIRE_DAYS, 1);
	auth_msg_add_u32(b, AUTH_FIELD_LOGIN_DELAY, 30 * 86400 + 1);
}

static void test_login_policy_accepted(void **state)
{
	struct harness *h = *state;
	const struct auth_reply *reply = ok_answer(h, AUTH_MSG_VERIFY, add_policy);

	assert_int_equal(reply->result, AUTH_RESULT_OK);
	assert_true(reply->has_policy);
	assert_int_equal(reply->expire_days, 7);
	assert_int_equal(reply->login_delay_secs, 900);
	reply = ok_answer(h, AUTH_MSG_VERIFY, add_policy_never);
	assert_int_equal(reply->result, AUTH_RESULT_OK);
	assert_int_equal(reply->expire_days, -1);
	assert_int_equal(reply->login_delay_secs, 0);
}

/* A login's OK without the policies, with one of them, or with values out of range is a broken
 * auth process: nobody is logged in on it. */
static void test_login_policy_broken_is_tempfail(void **state)
{
	struct harness *h = *state;
	void (*broken[])(struct auth_msg_builder *) = {add_nothing, add_expire_only,
						       add_expire_too_long, add_delay_too_long};

	for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++)
		assert_int_equal(ok_answer(h, AUTH_MSG_VERIFY, broken[i])->result,
				 AUTH_RESULT_TEMPFAIL);
}

/* An LMTP lookup's OK needs no policies. */
static void test_lookup_needs_no_policy(void **state)
{
	struct harness *h = *state;

	assert_int_equal(ok_answer(h, AUTH_MSG_LOOKUP, add_nothing)->result, AUTH_RESULT_OK);
	assert_true(h->had_user);
}

/* Answers the POLICY_QUERY the client sent with these values. */
static void answer_policy_query(struct harness *h, uint32_t expire, uint32_t delay, uint32_t flags,
				bool with_user)
{
	static struct auth_msg_builder b;
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg = receive_request(h, buf, sizeof(buf));

	assert_int_equal(msg.type, AUTH_MSG_POLICY_QUERY);
	auth_msg_begin(&b, AUTH_MSG_RESULT, msg.id);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, AUTH_RESULT_OK);
	auth_msg_add_u32(&b, AUTH_FIELD_EXPIRE_DAYS, expire);
	auth_msg_add_u32(&b, AUTH_FIELD_LOGIN_DELAY, delay);
	auth_msg_add_u32(&b, AUTH_FIELD_POLICY_FLAGS, flags);
	if (with_user)
		auth_msg_add_str(&b, AUTH_FIELD_USER, "demo");
	size_t len = auth_msg_finish(&b);
	assert_int_equal(send(h->auth_fd, b.buf, len, 0), (ssize_t)len);
	for (int i = 0; i < 10; i++)
		event_base_loop(h->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void test_policy_bounds_watched(void **state)
{
	struct harness *h = *state;
	const struct auth_policy_bounds *bounds;

	assert_null(auth_client_policy_bounds(h->client));
	auth_client_watch_policy(h->client); /* asks at once */
	answer_policy_query(h, 3, 600, AUTH_POLICY_LOGIN_DELAY_PER_USER, false);
	bounds = auth_client_policy_bounds(h->client);
	assert_non_null(bounds);
	assert_int_equal(bounds->expire_days_min, 3);
	assert_int_equal(bounds->login_delay_max, 600);
	assert_false(bounds->expire_per_user);
	assert_true(bounds->login_delay_per_user);
}

/* Broken answers are not taken for bounds: an unknown flag, a user name in the answer. */
static void test_policy_bounds_unknown_flag_ignored(void **state)
{
	struct harness *h = *state;

	auth_client_watch_policy(h->client);
	answer_policy_query(h, 3, 600, 1u << 7, false);
	assert_null(auth_client_policy_bounds(h->client));
}

static void test_policy_bounds_with_user_ignored(void **state)
{
	struct harness *h = *state;

	auth_client_watch_policy(h->client);
	answer_policy_query(h, 3, 600, 0, true);
	assert_null(auth_client_policy_bounds(h->client));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_login_policy_accepted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_login_policy_broken_is_tempfail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lookup_needs_no_policy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_policy_bounds_watched, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_policy_bounds_unknown_flag_ignored, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_policy_bounds_with_user_ignored, setup, teardown),
	};

	log_init("test", LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

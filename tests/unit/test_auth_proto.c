/* Unit tests for the worker <-> auth process wire format: round trips, and every malformed shape
 * the decoder must refuse (a compromised worker sends whatever it likes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/auth_proto.h"

static size_t build_verify(struct auth_msg_builder *b, const char *user, const char *password)
{
	auth_msg_begin(b, AUTH_MSG_VERIFY, 7);
	auth_msg_add_str(b, AUTH_FIELD_USER, user);
	auth_msg_add_str(b, AUTH_FIELD_PASSWORD, password);
	auth_msg_add_str(b, AUTH_FIELD_CLIENT_IP, "192.0.2.1");
	auth_msg_add_u32(b, AUTH_FIELD_FLAGS, AUTH_FLAG_LOOPBACK);
	return auth_msg_finish(b);
}

static void test_round_trip(void **state)
{
	struct auth_msg_builder b;
	struct auth_msg msg;
	size_t len = build_verify(&b, "demo", "p w");

	assert_true(len > 0);
	assert_int_equal(auth_msg_decode(b.buf, len, &msg), 0);
	assert_int_equal(msg.type, AUTH_MSG_VERIFY);
	assert_int_equal(msg.id, 7);
	char *user = auth_msg_strdup(&msg, AUTH_FIELD_USER);
	assert_string_equal(user, "demo");
	free(user);
	assert_memory_equal(msg.fields[AUTH_FIELD_PASSWORD].data, "p w", 3);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_FLAGS, 0), AUTH_FLAG_LOOPBACK);
	assert_null(auth_msg_strdup(&msg, AUTH_FIELD_LOCATION));
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_DELAY_MS, 99), 99);
}

static void test_truncations_and_extra_bytes_refused(void **state)
{
	struct auth_msg_builder b;
	struct auth_msg msg;
	size_t len = build_verify(&b, "demo", "secret");

	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(auth_msg_decode(b.buf, cut, &msg), -1);
	b.buf[len] = 0;
	assert_int_equal(auth_msg_decode(b.buf, len + 1, &msg), -1);
}

static void test_header_checks(void **state)
{
	struct auth_msg_builder b;
	struct auth_msg msg;
	size_t len = build_verify(&b, "demo", "secret");

	b.buf[0] ^= 1; /* version */
	assert_int_equal(auth_msg_decode(b.buf, len, &msg), -1);
	b.buf[0] ^= 1;
	b.buf[2] = 0; /* type 0 */
	assert_int_equal(auth_msg_decode(b.buf, len, &msg), -1);
	b.buf[2] = AUTH_MSG_TYPE_COUNT;
	assert_int_equal(auth_msg_decode(b.buf, len, &msg), -1);
}

static void test_field_rules(void **state)
{
	struct auth_msg_builder b;
	struct auth_msg msg;

	/* a required field missing */
	auth_msg_begin(&b, AUTH_MSG_VERIFY, 1);
	auth_msg_add_str(&b, AUTH_FIELD_USER, "demo");
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), -1);
	/* a field the type does not allow */
	size_t len = build_verify(&b, "demo", "x");
	auth_msg_add_str(&b, AUTH_FIELD_LOCATION, "maildir:/tmp");
	len = auth_msg_finish(&b);
	assert_int_equal(auth_msg_decode(b.buf, len, &msg), -1);
	/* a field twice */
	build_verify(&b, "demo", "x");
	auth_msg_add_str(&b, AUTH_FIELD_USER, "root");
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), -1);
	/* an unknown tag */
	build_verify(&b, "demo", "x");
	auth_msg_add_bytes(&b, (enum auth_field)AUTH_FIELD_COUNT, "z", 1);
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), -1);
	/* a u32 of the wrong size */
	auth_msg_begin(&b, AUTH_MSG_RESULT, 1);
	auth_msg_add_bytes(&b, AUTH_FIELD_RESULT, "\1\0\0", 3);
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), -1);
}

static void test_nul_in_strings_refused_bytes_allowed(void **state)
{
	struct auth_msg_builder b;
	struct auth_msg msg;

	build_verify(&b, "demo", "x");
	b.len = 8; /* keep only the header, rebuild with a NUL inside the user */
	auth_msg_add_bytes(&b, AUTH_FIELD_USER, "de\0mo", 5);
	auth_msg_add_str(&b, AUTH_FIELD_PASSWORD, "x");
	auth_msg_add_str(&b, AUTH_FIELD_CLIENT_IP, "::1");
	auth_msg_add_u32(&b, AUTH_FIELD_FLAGS, 0);
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), -1);

	auth_msg_begin(&b, AUTH_MSG_SASL_CONTINUE, 3);
	auth_msg_add_bytes(&b, AUTH_FIELD_RESPONSE, "\0a\0b", 4);
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), 0);
	assert_int_equal(msg.fields[AUTH_FIELD_RESPONSE].len, 4);
}

static void test_builder_overflow_fails(void **state)
{
	struct auth_msg_builder b;
	static char big[AUTH_PROTO_MAX_MESSAGE];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	auth_msg_begin(&b, AUTH_MSG_SASL_CONTINUE, 1);
	auth_msg_add_str(&b, AUTH_FIELD_RESPONSE, big);
	assert_int_equal(auth_msg_finish(&b), 0);
}

static void test_result_with_location(void **state)
{
	struct auth_msg_builder b;
	struct auth_msg msg;

	auth_msg_begin(&b, AUTH_MSG_RESULT, 9);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, AUTH_RESULT_OK);
	auth_msg_add_str(&b, AUTH_FIELD_USER, "demo");
	auth_msg_add_str(&b, AUTH_FIELD_LOCATION, "maildir:/m/demo");
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), 0);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_RESULT, 0), AUTH_RESULT_OK);
	char *loc = auth_msg_strdup(&msg, AUTH_FIELD_LOCATION);
	assert_string_equal(loc, "maildir:/m/demo");
	free(loc);
}

/* The policy fields: u32 in RESULT only; POLICY_QUERY carries nothing. */
static void test_policy_fields(void **state)
{
	struct auth_msg_builder b;
	struct auth_msg msg;

	auth_msg_begin(&b, AUTH_MSG_RESULT, 4);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, AUTH_RESULT_OK);
	auth_msg_add_u32(&b, AUTH_FIELD_EXPIRE_DAYS, AUTH_EXPIRE_NEVER);
	auth_msg_add_u32(&b, AUTH_FIELD_LOGIN_DELAY, 900);
	auth_msg_add_u32(&b, AUTH_FIELD_POLICY_FLAGS, AUTH_POLICY_LOGIN_DELAY_PER_USER);
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), 0);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_EXPIRE_DAYS, 0), AUTH_EXPIRE_NEVER);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_LOGIN_DELAY, 0), 900);
	assert_int_equal(auth_msg_u32(&msg, AUTH_FIELD_POLICY_FLAGS, 0),
			 AUTH_POLICY_LOGIN_DELAY_PER_USER);
	/* a u32 of the wrong size */
	auth_msg_begin(&b, AUTH_MSG_RESULT, 4);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, AUTH_RESULT_OK);
	auth_msg_add_bytes(&b, AUTH_FIELD_LOGIN_DELAY, "\x84\x03", 2);
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), -1);
	/* a worker may not send them */
	build_verify(&b, "demo", "x");
	auth_msg_add_u32(&b, AUTH_FIELD_LOGIN_DELAY, 0);
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), -1);
	/* POLICY_QUERY: a request without fields */
	auth_msg_begin(&b, AUTH_MSG_POLICY_QUERY, 5);
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), 0);
	assert_int_equal(msg.type, AUTH_MSG_POLICY_QUERY);
	auth_msg_add_str(&b, AUTH_FIELD_USER, "demo");
	assert_int_equal(auth_msg_decode(b.buf, auth_msg_finish(&b), &msg), -1);
	assert_true(auth_msg_type_is_request(AUTH_MSG_POLICY_QUERY));
	assert_true(auth_msg_type_is_request(AUTH_MSG_VERIFY));
	assert_false(auth_msg_type_is_request(AUTH_MSG_RESULT));
	assert_false(auth_msg_type_is_request(AUTH_MSG_CHALLENGE));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_truncations_and_extra_bytes_refused),
	    cmocka_unit_test(test_header_checks),
	    cmocka_unit_test(test_field_rules),
	    cmocka_unit_test(test_nul_in_strings_refused_bytes_allowed),
	    cmocka_unit_test(test_builder_overflow_fails),
	    cmocka_unit_test(test_result_with_location),
	    cmocka_unit_test(test_policy_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the per-user settings read from the passwd-file's extra fields (recipient.h):
 * the RFC 2449 policies (expire=, login_delay=) and the quotas they share a parser with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/recipient.h"
#include "core/config.h"

/* [pop3] expire = 30, login_delay = 60, [mail] quota_bytes = 1000 */
static struct buzon_config config_defaults(void)
{
	return (struct buzon_config){.expire = "30", .login_delay_secs = 60, .quota_bytes = 1000};
}

/* An entry whose line is "user:{PLAIN}x:" followed by extra. */
static struct passwd_entry entry_with(const char *extra)
{
	return (struct passwd_entry){.user = "u", .secret = "{PLAIN}x", .extra = (char *)extra};
}

/* Runs recipient_policies() for extra and checks the values and the return. */
static void expect_policies(const struct buzon_config *config, const char *extra, int ret,
			    int expire_days, unsigned int login_delay)
{
	struct passwd_entry entry = entry_with(extra);
	int days = -2;
	unsigned int delay = 12345;
	const char *error = "unset";

	assert_int_equal(recipient_policies(config, &entry, &days, &delay, &error), ret);
	assert_int_equal(days, expire_days);
	assert_int_equal(delay, login_delay);
	if (ret == 0)
		assert_null(error);
	else
		assert_non_null(error);
}

static void test_policies_default_to_config(void **state)
{
	struct buzon_config config = config_defaults();
	int days;
	unsigned int delay;

	expect_policies(&config, "", 0, 30, 60);
	expect_policies(&config, "1000:1000::/home/u:/bin/false", 0, 30, 60);
	expect_policies(&config, ":::::quota_bytes=5M", 0, 30, 60);
	/* a user the passwd-file no longer has */
	assert_int_equal(recipient_policies(&config, NULL, &days, &delay, NULL), 0);
	assert_int_equal(days, 30);
	assert_int_equal(delay, 60);
	config.expire = "NEVER";
	config.login_delay_secs = 0;
	expect_policies(&config, "", 0, -1, 0);
}

static void test_policies_per_user(void **state)
{
	struct buzon_config config = config_defaults();

	expect_policies(&config, ":::::expire=7", 0, 7, 60);
	expect_policies(&config, ":::::expire=0 login_delay=0", 0, 0, 0);
	expect_policies(&config, ":::::expire=NEVER", 0, -1, 60);
	expect_policies(&config, ":::::expire=never login_delay=900", 0, -1, 900);
	expect_policies(&config, ":::::login_delay=15m", 0, 30, 900);
	expect_policies(&config, ":::::login_delay=1h", 0, 30, 3600);
	expect_policies(&config, ":::::login_delay=30d", 0, 30, RECIPIENT_LOGIN_DELAY_MAX);
	expect_policies(&config, ":::::expire=36500", 0, RECIPIENT_EXPIRE_DAYS_MAX, 60);
	/* Dovecot's userdb_ prefix, other fields around, tabs */
	expect_policies(&config, "1:1:gecos:/h:/s:userdb_quota_rule=*:storage=1G\tuserdb_expire=3 "
				 "userdb_login_delay=2h mail=x",
			0, 3, 7200);
	/* the last one of a kind wins */
	expect_policies(&config, ":::::expire=3 expire=5 login_delay=1 login_delay=2", 0, 5, 2);
}

static void test_policies_malformed_keep_config(void **state)
{
	struct buzon_config config = config_defaults();

	expect_policies(&config, ":::::expire=soon", -1, 30, 60);
	expect_policies(&config, ":::::expire=", -1, 30, 60);
	expect_policies(&config, ":::::expire=-1", -1, 30, 60);
	expect_policies(&config, ":::::expire=36501", -1, 30, 60);
	expect_policies(&config, ":::::login_delay=31d", -1, 30, 60);
	expect_policies(&config, ":::::login_delay=1w", -1, 30, 60);
	expect_policies(&config, ":::::login_delay=-5", -1, 30, 60);
	/* one bad value does not spoil the good one */
	expect_policies(&config, ":::::expire=x login_delay=5", -1, 30, 5);
	/* names that only start like ours are someone else's */
	expect_policies(&config, ":::::expired=1 login_delays=3 xexpire=2", 0, 30, 60);
}

/* The quota fields, read by the same field walker. */
static void test_quota_fields(void **state)
{
	struct buzon_config config = config_defaults();
	struct passwd_entry entry = entry_with("::::");
	uint64_t bytes, messages;

	recipient_quota(&config, &entry, &bytes, &messages);
	assert_int_equal(bytes, 1000);
	assert_int_equal(messages, 0);
	entry = entry_with(":::::quota_bytes=2K quota_messages=9 expire=3");
	recipient_quota(&config, &entry, &bytes, &messages);
	assert_int_equal(bytes, 2048);
	assert_int_equal(messages, 9);
	entry = entry_with(":::::userdb_quota_rule=*:storage=1M:messages=4");
	recipient_quota(&config, &entry, &bytes, &messages);
	assert_int_equal(bytes, 1024 * 1024);
	assert_int_equal(messages, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_policies_default_to_config),
	    cmocka_unit_test(test_policies_per_user),
	    cmocka_unit_test(test_policies_malformed_keep_config),
	    cmocka_unit_test(test_quota_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the Maildir last-login record of RFC 2449 LOGIN-DELAY
 * (src/store/maildir_last_login.c) and the check built on it (src/pop3/policy.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/util.h"
#include "pop3/policy.h"
#include "store/maildir_last_login.h"
#include "store/store.h"

static int setup(void **state)
{
	char *dir = xstrdup("/tmp/buzon-last-login-XXXXXX");

	assert_non_null(mkdtemp(dir));
	*state = dir;
	return 0;
}

static int teardown(void **state)
{
	char *dir = *state;
	char *cmd = xasprintf("rm -rf '%s'", dir);

	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(dir);
	return 0;
}

static void write_record(const char *dir, const char *name, const char *text, size_t len)
{
	char *path = xasprintf("%s/%s", dir, name);
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	free(path);
}

static void test_missing_is_no_record(void **state)
{
	time_t when = 99;
	char *error = NULL;

	assert_int_equal(maildir_last_login_get(*state, &when, &error), 0);
	assert_int_equal(when, 0);
	assert_null(error);
}

static void test_round_trip_and_format(void **state)
{
	const char *dir = *state;
	time_t when = 0;
	char *error = NULL;
	char text[64] = "";

	/* a temp file a crash left behind is overwritten */
	write_record(dir, MAILDIR_LAST_LOGIN_TMP, "garbage that is longer than any record\n", 39);
	assert_int_equal(maildir_last_login_set(dir, 1767225600, &error), 0);
	assert_int_equal(maildir_last_login_get(dir, &when, &error), 0);
	assert_int_equal(when, 1767225600);
	char *path = xasprintf("%s/" MAILDIR_LAST_LOGIN_NAME, dir);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	assert_non_null(fgets(text, sizeof(text), f));
	fclose(f);
	assert_string_equal(text, "1767225600\n");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(path);
	char *tmp = xasprintf("%s/" MAILDIR_LAST_LOGIN_TMP, dir);
	assert_int_equal(access(tmp, F_OK), -1); /* renamed over the record */
	free(tmp);
	assert_int_equal(maildir_last_login_set(dir, 1767225700, &error), 0);
	assert_int_equal(maildir_last_login_get(dir, &when, &error), 0);
	assert_int_equal(when, 1767225700);
}

static void test_malformed_is_an_error_and_no_record(void **state)
{
	static const char *const bad[] = {"", "\n", "123", "12a\n", "-5\n", "0\n", " 1\n",
					  "99999999999999999999999\n", "1\n2\n"};
	const char *dir = *state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		time_t when = 99;
		char *error = NULL;
		write_record(dir, MAILDIR_LAST_LOGIN_NAME, bad[i], strlen(bad[i]));
		assert_int_equal(maildir_last_login_get(dir, &when, &error), -1);
		assert_int_equal(when, 0);
		assert_non_null(error);
		free(error);
	}
}

static void test_set_fails_without_directory(void **state)
{
	char *missing = xasprintf("%s/nope", (const char *)*state);
	char *error = NULL;

	assert_int_equal(maildir_last_login_set(missing, 5, &error), -1);
	assert_non_null(error);
	free(error);
	free(missing);
}

/* The LOGIN-DELAY check over the record: refused within the delay (with the seconds left),
 * allowed at and after it, and never refused on a damaged record or one from the future. */
static void test_login_delay_check(void **state)
{
	const char *dir = *state;
	struct pop3_login_delay delay = {.delay_secs = 600, .now = 1000000};

	assert_false(pop3_login_delay_refuses(&delay, &store_backend_maildir, dir));
	pop3_login_delay_record(&delay, &store_backend_maildir, dir);
	assert_null(delay.warning);

	delay.now = 1000000 + 599;
	assert_true(pop3_login_delay_refuses(&delay, &store_backend_maildir, dir));
	assert_int_equal(delay.wait_secs, 1);
	delay.now = 1000000 + 1;
	assert_true(pop3_login_delay_refuses(&delay, &store_backend_maildir, dir));
	assert_int_equal(delay.wait_secs, 599);
	delay.wait_secs = 0;
	delay.now = 1000000 + 600;
	assert_false(pop3_login_delay_refuses(&delay, &store_backend_maildir, dir));
	delay.now = 1000000 - 5; /* the clock was set back */
	assert_false(pop3_login_delay_refuses(&delay, &store_backend_maildir, dir));
	delay.delay_secs = 0; /* no delay for this user: nothing read or written */
	delay.now = 1000000 + 1;
	assert_false(pop3_login_delay_refuses(&delay, &store_backend_maildir, dir));

	write_record(dir, MAILDIR_LAST_LOGIN_NAME, "x\n", 2);
	delay.delay_secs = 600;
	assert_false(pop3_login_delay_refuses(&delay, &store_backend_maildir, dir));
	assert_non_null(delay.warning);
	pop3_login_delay_clear(&delay);
	assert_null(delay.warning);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_missing_is_no_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_round_trip_and_format, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_is_an_error_and_no_record, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_set_fails_without_directory, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_login_delay_check, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the sandbox's pure parts: the mail root taken from [mail] location, and the
 * [server] sandbox options. Applying the sandbox is tested end to end in
 * tests/integration/test_sandbox.py (it cannot be undone inside a test process). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/sandbox.h"
#include "core/util.h"

static void expect_root(const char *location, const char *root)
{
	char *got = sandbox_mail_root(location);

	if (root == NULL) {
		assert_null(got);
		return;
	}
	assert_non_null(got);
	if (strcmp(got, root) != 0)
		fail_msg("mail root of %s is %s, expected %s", location, got, root);
	free(got);
}

static void test_mail_root_is_the_static_directory(void **state)
{
	expect_root("maildir:/srv/mail/%u", "/srv/mail");
	expect_root("maildir:/var/mail/%d/%n", "/var/mail");
	expect_root("maildir:/srv/mail/user-%u/Maildir", "/srv/mail");
	expect_root("maildir:/home/%n/Maildir", "/home");
	expect_root("maildir:/%u", "/");
	expect_root("maildir:/srv/100%%/%u", "/srv");
	expect_root("maildir:relative/%u", NULL);
	expect_root("mbox:/var/mail/%u", NULL);
	expect_root(NULL, NULL);
}

static struct buzon_config *load(const char *text, char **error_r)
{
	char path[] = "/tmp/buzon-test-sandbox-XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, text, strlen(text)), 0);
	close(fd);
	struct buzon_config *config = config_load(path, error_r);
	unlink(path);
	return config;
}

#define SANDBOX_TEST_BASE                                                                          \
	"[pop3]\nlisten = 127.0.0.1:1110\n[auth]\npasswd_file = /etc/buzon/users\n"                \
	"[mail]\nlocation = maildir:/srv/mail/%u\n"

static void test_sandbox_options(void **state)
{
	char *error = NULL;
	struct buzon_config *config = load(SANDBOX_TEST_BASE, &error);

	assert_non_null(config);
	assert_true(config->sandbox); /* on unless turned off */
	assert_null(config->sandbox_extra_paths);
	config_free(&config);

	config = load(SANDBOX_TEST_BASE "[server]\nsandbox = no\n"
					"sandbox_extra_paths = /mnt/disk2/mail, /srv/archive\n",
		      &error);
	assert_non_null(config);
	assert_false(config->sandbox);
	assert_string_equal(config->sandbox_extra_paths, "/mnt/disk2/mail, /srv/archive");
	config_free(&config);

	config =
	    load(SANDBOX_TEST_BASE "[server]\nsandbox_extra_paths = /ok, relative/dir\n", &error);
	assert_null(config);
	assert_non_null(strstr(error, "'relative/dir' is not an absolute path"));
	free(error);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mail_root_is_the_static_directory),
	    cmocka_unit_test(test_sandbox_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

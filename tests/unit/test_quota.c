/* Unit tests for the quota usage file (quota.h): get/add/set, recomputing a missing or damaged
 * file from new/ and cur/, and never going below zero. */
#include <fcntl.h>
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
#include "store/quota.h"

struct fixture {
	char dir[64];
	char *maildir;
	char *file;
};

static void put_file(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, data, strlen(data)), 0);
	assert_int_equal(close(fd), 0);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->dir, "/tmp/buzon-quota-XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	fx->maildir = xasprintf("%s/Maildir", fx->dir);
	fx->file = xasprintf("%s/%s", fx->maildir, QUOTA_FILE_NAME);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char *cmd = xasprintf("rm -rf '%s'", fx->dir);
	int ret = system(cmd);

	free(cmd);
	free(fx->maildir);
	free(fx->file);
	free(fx);
	return ret == 0 ? 0 : -1;
}

/* A Maildir with 3 messages of 10, 20 and 5 octets plus files that do not count. */
static void make_maildir(const struct fixture *fx)
{
	static const char *const subs[] = {"cur", "new", "tmp"};
	char *path;

	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		path = xasprintf("%s/%s", fx->maildir, subs[i]);
		assert_int_equal(mkdir_parents(path, 0700), 0);
		free(path);
	}
	path = xasprintf("%s/new/1.a.host", fx->maildir);
	put_file(path, "0123456789");
	free(path);
	path = xasprintf("%s/cur/2.b.host:2,S", fx->maildir);
	put_file(path, "01234567890123456789");
	free(path);
	path = xasprintf("%s/cur/3.c.host:2,", fx->maildir);
	put_file(path, "01234");
	free(path);
	path = xasprintf("%s/cur/.hidden", fx->maildir); /* not a message */
	put_file(path, "ignored");
	free(path);
	path = xasprintf("%s/cur/subdir", fx->maildir); /* not a regular file */
	assert_int_equal(mkdir(path, 0700), 0);
	free(path);
	path = xasprintf("%s/tmp/4.d.host", fx->maildir); /* not delivered yet */
	put_file(path, "ignored too");
	free(path);
}

static char *read_text(const char *path)
{
	char buf[128];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
	return xstrdup(buf);
}

static void assert_usage(const struct fixture *fx, uint64_t bytes, uint64_t messages)
{
	uint64_t b = 0, m = 0;
	char *error = NULL;

	if (quota_usage_get(fx->maildir, &b, &m, &error) < 0)
		fail_msg("quota_usage_get: %s", error);
	assert_int_equal(b, bytes);
	assert_int_equal(m, messages);
}

static void test_missing_maildir_is_empty(void **state)
{
	struct fixture *fx = *state;

	assert_usage(fx, 0, 0);
	assert_int_equal(access(fx->maildir, F_OK), -1); /* not created */
}

static void test_recompute_when_missing(void **state)
{
	struct fixture *fx = *state;

	make_maildir(fx);
	assert_usage(fx, 35, 3);
	char *text = read_text(fx->file);
	assert_string_equal(text, "35 3\n");
	free(text);
	struct stat st;
	assert_int_equal(stat(fx->file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_recompute_when_damaged(void **state)
{
	struct fixture *fx = *state;
	static const char *const damaged[] = {
	    "",	      "12",    "12 3",	  "12 3\n4\n",
	    "-1 3\n", "x 3\n", "12  3\n", "99999999999999999999999 1\n"};

	make_maildir(fx);
	for (size_t i = 0; i < ARRAY_SIZE(damaged); i++) {
		put_file(fx->file, damaged[i]);
		assert_usage(fx, 35, 3);
	}
}

static void test_file_is_trusted(void **state)
{
	struct fixture *fx = *state;

	make_maildir(fx);
	put_file(fx->file, "1000 7\n");
	assert_usage(fx, 1000, 7);
}

static void test_set_and_add(void **state)
{
	struct fixture *fx = *state;
	char *error = NULL;

	make_maildir(fx);
	assert_int_equal(quota_usage_set(fx->maildir, 100, 4, &error), 0);
	assert_usage(fx, 100, 4);
	assert_int_equal(quota_usage_add(fx->maildir, 50, 1, &error), 0);
	assert_usage(fx, 150, 5);
	assert_int_equal(quota_usage_add(fx->maildir, -30, -2, &error), 0);
	assert_usage(fx, 120, 3);
	char *text = read_text(fx->file);
	assert_string_equal(text, "120 3\n");
	free(text);
}

/* Every login resets the usage: an unchanged value must not rewrite the file (its inode would be
 * dirtied, a journal write per login), a changed one must. */
static void test_set_unchanged_does_not_write(void **state)
{
	struct fixture *fx = *state;
	char *error = NULL;
	struct stat st;
	struct timespec past[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};

	make_maildir(fx);
	assert_int_equal(quota_usage_set(fx->maildir, 100, 4, &error), 0);
	assert_int_equal(utimensat(AT_FDCWD, fx->file, past, 0), 0);
	assert_int_equal(quota_usage_set(fx->maildir, 100, 4, &error), 0);
	assert_int_equal(stat(fx->file, &st), 0);
	assert_int_equal(st.st_mtim.tv_sec, 1000000000);
	assert_int_equal(quota_usage_set(fx->maildir, 100, 5, &error), 0);
	assert_int_equal(stat(fx->file, &st), 0);
	assert_true(st.st_mtim.tv_sec > 1000000000);
	assert_usage(fx, 100, 5);
	/* a damaged file is rewritten even when it happens to parse to nothing useful */
	put_file(fx->file, "garbage");
	assert_int_equal(quota_usage_set(fx->maildir, 100, 5, &error), 0);
	char *text = read_text(fx->file);
	assert_string_equal(text, "100 5\n");
	free(text);
}

static void test_never_negative(void **state)
{
	struct fixture *fx = *state;
	char *error = NULL;

	make_maildir(fx);
	assert_int_equal(quota_usage_set(fx->maildir, 10, 1, &error), 0);
	assert_int_equal(quota_usage_add(fx->maildir, -100, -5, &error), 0);
	assert_usage(fx, 0, 0);
	assert_int_equal(quota_usage_add(fx->maildir, INT64_MIN, INT64_MIN, &error), 0);
	assert_usage(fx, 0, 0);
	assert_int_equal(quota_usage_set(fx->maildir, UINT64_MAX - 1, 0, &error), 0);
	assert_int_equal(quota_usage_add(fx->maildir, 10, 0, &error), 0);
	assert_usage(fx, UINT64_MAX, 0);
}

static void test_add_after_missing_uses_scan(void **state)
{
	struct fixture *fx = *state;
	char *error = NULL;

	/* The caller adds after the change is on disk, so a rescan already includes it. */
	make_maildir(fx);
	assert_int_equal(quota_usage_add(fx->maildir, 10, 1, &error), 0);
	assert_usage(fx, 35, 3);
}

static void test_add_without_maildir_fails(void **state)
{
	struct fixture *fx = *state;
	char *error = NULL;

	assert_int_equal(quota_usage_add(fx->maildir, 10, 1, &error), -1);
	assert_non_null(error);
	free(error);
	error = NULL;
	assert_int_equal(quota_usage_set(fx->maildir, 10, 1, &error), -1);
	assert_non_null(error);
	free(error);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_missing_maildir_is_empty),
	    T(test_recompute_when_missing),
	    T(test_recompute_when_damaged),
	    T(test_file_is_trusted),
	    T(test_set_and_add),
	    T(test_set_unchanged_does_not_write),
	    T(test_never_negative),
	    T(test_add_after_missing_uses_scan),
	    T(test_add_without_maildir_fails),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the delivery path (delivery.h), each in its own mkdtemp() directory: one and
 * several recipients, names carrying S= and W=, quota refusal and usage, abort, tmp/ cleanup,
 * unwritable mailboxes and a large streamed message. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/util.h"
#include "lmtp/delivery.h"
#include "store/store.h"
#include "store/quota.h"

struct fixture {
	char dir[64];
	char *a; /* two Maildirs on one filesystem */
	char *b;
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->dir, "/tmp/buzon-delivery-XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	fx->a = xasprintf("%s/a/Maildir", fx->dir);
	fx->b = xasprintf("%s/b/Maildir", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char *cmd = xasprintf("chmod -R u+rwx '%s'; rm -rf '%s'", fx->dir, fx->dir);
	int ret = system(cmd);

	free(cmd);
	free(fx->a);
	free(fx->b);
	free(fx);
	return ret == 0 ? 0 : -1;
}

/* ---- helpers ---- */

static struct delivery_recipient rcpt(const char *address, const char *maildir)
{
	struct delivery_recipient r = {.address = address, .user = address, .maildir = maildir};

	return r;
}

/* Returns the only file name in maildir/sub (NULL if empty); fails if there are more. */
static char *only_file(const char *maildir, const char *sub)
{
	char *path = xasprintf("%s/%s", maildir, sub);
	DIR *dir = opendir(path);
	struct dirent *d;
	char *name = NULL;

	assert_non_null(dir);
	while ((d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		if (name != NULL)
			fail_msg("more than one file in %s", path);
		name = xstrdup(d->d_name);
	}
	closedir(dir);
	free(path);
	return name;
}

static size_t count_files(const char *maildir, const char *sub)
{
	char *path = xasprintf("%s/%s", maildir, sub);
	DIR *dir = opendir(path);
	struct dirent *d;
	size_t n = 0;

	if (dir == NULL) {
		free(path);
		return 0;
	}
	while ((d = readdir(dir)) != NULL)
		n += d->d_name[0] != '.';
	closedir(dir);
	free(path);
	return n;
}

static char *read_all(const char *path, size_t *len_r)
{
	struct stat st;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	char *data = xmalloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, data, (size_t)st.st_size), st.st_size);
	data[st.st_size] = '\0';
	close(fd);
	*len_r = (size_t)st.st_size;
	return data;
}

static uint64_t name_size(const char *name, char key)
{
	char pattern[4] = {',', key, '=', '\0'};
	const char *p = strstr(name, pattern);

	assert_non_null(p);
	return strtoull(p + 3, NULL, 10);
}

/* Checks that new/name's S= and W= match the file; returns the file's contents. */
static char *check_new_file(const char *maildir, const char *name, size_t *len_r)
{
	char *path = xasprintf("%s/new/%s", maildir, name);
	char *data = read_all(path, len_r);
	uint64_t bare_lf = 0;

	for (size_t i = 0; i < *len_r; i++)
		bare_lf += data[i] == '\n' && (i == 0 || data[i - 1] != '\r');
	assert_int_equal(name_size(name, 'S'), *len_r);
	assert_int_equal(name_size(name, 'W'), *len_r + bare_lf);
	free(path);
	return data;
}

static struct delivery *begin_ok(struct delivery_recipient *r, size_t count, const char *sender)
{
	enum delivery_result result = DELIVERY_PERMFAIL;
	char *error = NULL;
	struct delivery *d = delivery_begin(r, count, sender, &result, &error);

	if (d == NULL)
		fail_msg("delivery_begin: %s", error);
	assert_int_equal(result, DELIVERY_OK);
	return d;
}

static void deliver_text(struct delivery_recipient *r, size_t count, const char *text,
			 size_t expect_ok)
{
	struct delivery *d = begin_ok(r, count, "sender@example.org");

	assert_int_equal(delivery_write(d, text, strlen(text)), 0);
	assert_int_equal(delivery_finish(&d), expect_ok);
	assert_null(d);
}

static void free_errors(struct delivery_recipient *r, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(r[i].error);
}

static const char message[] = "Subject: hi\n\nline one\nline two with lone \r cr\n";

/* ---- tests ---- */

static void test_single_recipient(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a)};
	size_t len;

	deliver_text(r, 1, message, 1);
	assert_int_equal(r[0].result, DELIVERY_OK);
	assert_null(r[0].error);
	char *name = only_file(fx->a, "new");
	assert_non_null(name);
	char *data = check_new_file(fx->a, name, &len);
	char *expected = xasprintf("Return-Path: <sender@example.org>\n"
				   "Delivered-To: alice@example.org\n%s",
				   message);
	assert_string_equal(data, expected);
	assert_int_equal(count_files(fx->a, "tmp"), 0);
	assert_int_equal(count_files(fx->a, "cur"), 0);
	free(expected);
	free(data);
	free(name);
}

static void test_null_sender(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice\r\nX-Evil: 1", fx->a)};
	struct delivery *d = begin_ok(r, 1, "");
	size_t len;

	assert_int_equal(delivery_write(d, "\n", 1), 0);
	assert_int_equal(delivery_finish(&d), 1);
	char *name = only_file(fx->a, "new");
	char *data = check_new_file(fx->a, name, &len);
	/* Control bytes in an address cannot start a header line of their own. */
	assert_string_equal(data, "Return-Path: <>\nDelivered-To: aliceX-Evil: 1\n\n");
	free(data);
	free(name);
}

static void test_two_recipients(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a),
					 rcpt("bob@example.org", fx->b)};
	struct stat st_a, st_b;
	size_t len_a, len_b;

	deliver_text(r, 2, message, 2);
	assert_int_equal(r[0].result, DELIVERY_OK);
	assert_int_equal(r[1].result, DELIVERY_OK);
	char *name_a = only_file(fx->a, "new"), *name_b = only_file(fx->b, "new");
	assert_string_not_equal(name_a, name_b);
	char *data_a = check_new_file(fx->a, name_a, &len_a);
	char *data_b = check_new_file(fx->b, name_b, &len_b);
	char *expected = xasprintf("Return-Path: <sender@example.org>\n%s", message);
	assert_string_equal(data_a, expected);
	assert_string_equal(data_b, expected);
	assert_null(strstr(data_a, "Delivered-To"));

	char *path_a = xasprintf("%s/new/%s", fx->a, name_a);
	char *path_b = xasprintf("%s/new/%s", fx->b, name_b);
	assert_int_equal(stat(path_a, &st_a), 0);
	assert_int_equal(stat(path_b, &st_b), 0);
	assert_int_equal(st_a.st_ino, st_b.st_ino);
	assert_int_equal(st_a.st_nlink, 2); /* the temp file is gone, the two links remain */
	assert_int_equal(count_files(fx->a, "tmp"), 0);
	assert_int_equal(count_files(fx->b, "tmp"), 0);
	free(path_a);
	free(path_b);
	free(expected);
	free(data_a);
	free(data_b);
	free(name_a);
	free(name_b);
}

static void test_same_maildir_twice(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a),
					 rcpt("alias@example.org", fx->a)};

	deliver_text(r, 2, message, 2);
	assert_int_equal(count_files(fx->a, "new"), 2);
	assert_int_equal(count_files(fx->a, "tmp"), 0);
}

static void test_quota_refuses_one(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a),
					 rcpt("bob@example.org", fx->b)};

	r[1].quota_bytes = 20; /* smaller than the message */
	deliver_text(r, 2, message, 1);
	assert_int_equal(r[0].result, DELIVERY_OK);
	assert_int_equal(r[1].result, DELIVERY_OVER_QUOTA);
	assert_non_null(r[1].error);
	assert_int_equal(count_files(fx->a, "new"), 1);
	assert_int_equal(count_files(fx->b, "new"), 0);
	assert_int_equal(count_files(fx->b, "tmp"), 0);
	free_errors(r, 2);
}

static void test_quota_messages(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a)};
	char *error = NULL;

	r[0].quota_messages = 2;
	deliver_text(r, 1, message, 1);
	deliver_text(r, 1, message, 1);
	assert_int_equal(delivery_quota_check(&r[0], 1, &error), DELIVERY_OVER_QUOTA);
	free(error);
	deliver_text(r, 1, message, 0);
	assert_int_equal(r[0].result, DELIVERY_OVER_QUOTA);
	assert_int_equal(count_files(fx->a, "new"), 2);
	free_errors(r, 1);
}

static void test_quota_check_limits(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r = rcpt("alice@example.org", fx->a);
	char *error = NULL;

	/* No Maildir yet: nothing used, and nothing created by the check. */
	r.quota_bytes = 100;
	assert_int_equal(delivery_quota_check(&r, 100, &error), DELIVERY_OK);
	assert_int_equal(delivery_quota_check(&r, 101, &error), DELIVERY_OVER_QUOTA);
	assert_non_null(error);
	x_free(&error);
	assert_int_equal(access(fx->a, F_OK), -1);
	r.quota_bytes = 0;
	assert_int_equal(delivery_quota_check(&r, UINT64_MAX, &error), DELIVERY_OK);
	assert_null(error);
}

static void test_quota_usage_updated(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a),
					 rcpt("bob@example.org", fx->b)};
	uint64_t bytes, messages;
	char *error = NULL;
	size_t len;

	deliver_text(r, 2, message, 2);
	char *name = only_file(fx->a, "new");
	char *data = check_new_file(fx->a, name, &len);
	assert_int_equal(quota_usage_get(fx->a, &bytes, &messages, &error), 0);
	assert_int_equal(bytes, len);
	assert_int_equal(messages, 1);
	deliver_text(r, 1, message, 1);
	assert_int_equal(quota_usage_get(fx->a, &bytes, &messages, &error), 0);
	assert_int_equal(messages, 2);
	assert_int_equal(bytes, len + len + strlen("Delivered-To: alice@example.org\n"));
	assert_int_equal(quota_usage_get(fx->b, &bytes, &messages, &error), 0);
	assert_int_equal(bytes, len);
	assert_int_equal(messages, 1);
	free(data);
	free(name);
}

static void test_abort_removes_tmp(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a)};
	struct delivery *d = begin_ok(r, 1, "s@example.org");

	assert_int_equal(delivery_write(d, message, strlen(message)), 0);
	assert_int_equal(count_files(fx->a, "tmp"), 1);
	delivery_abort(&d);
	assert_null(d);
	assert_int_equal(count_files(fx->a, "tmp"), 0);
	assert_int_equal(count_files(fx->a, "new"), 0);
	delivery_abort(&d); /* NULL is fine */
}

static void put_tmp_file(const char *maildir, const char *name, time_t age)
{
	char *path = xasprintf("%s/tmp/%s", maildir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	struct timespec times[2];

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, "x", 1), 0);
	close(fd);
	clock_gettime(CLOCK_REALTIME, &times[0]);
	times[0].tv_sec -= age;
	times[1] = times[0];
	assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
	free(path);
}

static void test_cleanup_tmp(void **state)
{
	struct fixture *fx = *state;
	char *tmp = xasprintf("%s/tmp", fx->a);

	assert_int_equal(maildir_cleanup_tmp(fx->a), 0); /* no Maildir: nothing to do */
	assert_int_equal(mkdir_parents(tmp, 0700), 0);
	put_tmp_file(fx->a, "old1", 25 * 3600);
	put_tmp_file(fx->a, "old2", 3 * 24 * 3600);
	put_tmp_file(fx->a, "fresh", 3600);
	assert_int_equal(maildir_cleanup_tmp(fx->a), 2);
	char *left = only_file(fx->a, "tmp");
	assert_string_equal(left, "fresh");
	free(left);
	free(tmp);
}

static void test_unwritable_new_tempfails(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a),
					 rcpt("bob@example.org", fx->b)};
	char *new_dir;

	if (geteuid() == 0) {
		skip(); /* root ignores modes; test_uncreatable_maildir covers the path */
	}
	new_dir = xasprintf("%s/new", fx->b);
	assert_int_equal(mkdir_parents(new_dir, 0700), 0);
	assert_int_equal(chmod(new_dir, 0500), 0);
	deliver_text(r, 2, message, 1);
	assert_int_equal(r[0].result, DELIVERY_OK);
	assert_int_equal(r[1].result, DELIVERY_TEMPFAIL);
	assert_non_null(r[1].error);
	assert_int_equal(count_files(fx->b, "tmp"), 0);
	free_errors(r, 2);
	free(new_dir);
}

static void test_uncreatable_maildir(void **state)
{
	struct fixture *fx = *state;
	char *file = xasprintf("%s/file", fx->dir);
	char *bad = xasprintf("%s/file/Maildir", fx->dir);
	struct delivery_recipient r[] = {rcpt("bad@example.org", bad),
					 rcpt("alice@example.org", fx->a)};
	int fd = open(file, O_WRONLY | O_CREAT, 0600);

	assert_true(fd >= 0);
	close(fd);
	/* The first recipient cannot hold the temp file: the second one's Maildir does. */
	deliver_text(r, 2, message, 1);
	assert_int_equal(r[0].result, DELIVERY_TEMPFAIL);
	assert_non_null(r[0].error);
	assert_int_equal(r[1].result, DELIVERY_OK);
	assert_int_equal(count_files(fx->a, "new"), 1);
	assert_int_equal(count_files(fx->a, "tmp"), 0);
	free_errors(r, 2);

	/* Nobody can take it: begin fails, temporarily. */
	enum delivery_result result = DELIVERY_OK;
	char *error = NULL;
	assert_null(delivery_begin(r, 1, "", &result, &error));
	assert_int_equal(result, DELIVERY_TEMPFAIL);
	assert_non_null(error);
	free(error);
	free(file);
	free(bad);
}

static void test_invalid_path_permfails(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a),
					 rcpt("bad@example.org", "relative/Maildir")};
	enum delivery_result result = DELIVERY_OK;
	char *error = NULL;

	deliver_text(r, 2, message, 1);
	assert_int_equal(r[0].result, DELIVERY_OK);
	assert_int_equal(r[1].result, DELIVERY_PERMFAIL);
	free_errors(r, 2);
	assert_null(delivery_begin(&r[1], 1, "", &result, &error));
	assert_int_equal(result, DELIVERY_PERMFAIL);
	free(error);
}

static void test_big_message_streamed(void **state)
{
	struct fixture *fx = *state;
	struct delivery_recipient r[] = {rcpt("alice@example.org", fx->a)};
	struct delivery *d = begin_ok(r, 1, "s@example.org");
	const size_t total = 10 * 1024 * 1024;
	const size_t chunk = 7001; /* odd, so that chunks straddle the 64 KiB buffer */
	char *buf = xmalloc(chunk);
	size_t header_len =
	    strlen("Return-Path: <s@example.org>\nDelivered-To: alice@example.org\n");
	uint64_t lines = 0;

	for (size_t i = 0; i < chunk; i++)
		buf[i] = (i % 77 == 76) ? '\n' : (char)('a' + i % 26);
	for (size_t i = 0; i < chunk; i++)
		lines += buf[i] == '\n';
	size_t written = 0, chunks = 0;
	while (written + chunk <= total) {
		assert_int_equal(delivery_write(d, buf, chunk), 0);
		written += chunk;
		chunks++;
	}
	assert_int_equal(delivery_finish(&d), 1);
	char *name = only_file(fx->a, "new");
	struct stat st;
	char *path = xasprintf("%s/new/%s", fx->a, name);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((uint64_t)st.st_size, header_len + written);
	assert_int_equal(name_size(name, 'S'), header_len + written);
	assert_int_equal(name_size(name, 'W'), header_len + written + 2 + lines * chunks);
	free(path);
	free(name);
	free(buf);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_single_recipient),	      T(test_null_sender),
	    T(test_two_recipients),	      T(test_same_maildir_twice),
	    T(test_quota_refuses_one),	      T(test_quota_messages),
	    T(test_quota_check_limits),	      T(test_quota_usage_updated),
	    T(test_abort_removes_tmp),	      T(test_cleanup_tmp),
	    T(test_unwritable_new_tempfails), T(test_uncreatable_maildir),
	    T(test_invalid_path_permfails),   T(test_big_message_streamed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

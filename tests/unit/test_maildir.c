/* Unit tests for the Maildir backend, each in its own mkdtemp() directory: creation, new/ to cur/,
 * stable UIDLs, sizes, locking, commit, index recovery, and reading. */
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
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "temp_maildir.h"

#include "core/util.h"
#include "store/quota.h"
#include "store/store.h"
#include "store/uidlist.h"

static const struct store_backend *const backend = &store_backend_maildir;

static int setup(void **state)
{
	return temp_maildir_setup(state, "maildir", false);
}

static int teardown(void **state)
{
	return temp_maildir_teardown(state);
}

/* ---- helpers ---- */

static char *path_in(const struct temp_maildir *fx, const char *sub, const char *name)
{
	return xasprintf("%s/%s/%s", fx->maildir, sub, name);
}

static void write_path(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, data, len), 0);
	assert_int_equal(close(fd), 0);
}

/* Writes a message file into sub (new, cur or tmp) of the maildir. */
static void put_message(const struct temp_maildir *fx, const char *sub, const char *name,
			const char *data)
{
	char *path = path_in(fx, sub, name);

	write_path(path, data, strlen(data));
	free(path);
}

static bool exists_in(const struct temp_maildir *fx, const char *sub, const char *name)
{
	char *path = path_in(fx, sub, name);
	bool ret = access(path, F_OK) == 0;

	free(path);
	return ret;
}

static void create_maildir(const struct temp_maildir *fx)
{
	char *sub;

	assert_int_equal(mkdir(fx->maildir, 0700), 0);
	sub = xasprintf("%s/cur", fx->maildir);
	assert_int_equal(mkdir(sub, 0700), 0);
	free(sub);
	sub = xasprintf("%s/new", fx->maildir);
	assert_int_equal(mkdir(sub, 0700), 0);
	free(sub);
	sub = xasprintf("%s/tmp", fx->maildir);
	assert_int_equal(mkdir(sub, 0700), 0);
	free(sub);
}

static struct store_mailbox *open_ok(const struct temp_maildir *fx)
{
	struct store_mailbox *box = NULL;
	enum store_error kind = STORE_ERROR_NONE;
	char *error = NULL;

	if (backend->open(fx->maildir, &box, &kind, &error) < 0)
		fail_msg("open failed: %s", error);
	assert_non_null(box);
	assert_ptr_equal(box->backend, backend);
	return box;
}

/* Reads message index whole into a NUL-terminated string. */
static char *read_message(struct store_mailbox *box, size_t index, size_t *len_r)
{
	enum store_error kind;
	char *error = NULL;
	struct store_reader *reader = backend->read_open(box, index, &kind, &error);
	size_t len = 0, alloc = 16;
	char *data = malloc(alloc);

	if (reader == NULL)
		fail_msg("read_open failed: %s", error);
	for (;;) {
		if (alloc - len < 4) {
			alloc *= 2;
			data = realloc(data, alloc);
		}
		ssize_t n = backend->read(reader, data + len, 3); /* small reads: several calls */
		assert_true(n >= 0);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	backend->read_close(&reader);
	assert_null(reader);
	data[len] = '\0';
	*len_r = len;
	return data;
}

/* Finds the snapshot index of the message whose content is data, or fails. */
static size_t index_of_content(struct store_mailbox *box, const char *data)
{
	for (size_t i = 0; i < box->count; i++) {
		size_t len;
		char *content = read_message(box, i, &len);
		bool same = strcmp(content, data) == 0;
		free(content);
		if (same)
			return i;
	}
	fail_msg("no message with content %s", data);
	return 0;
}

static int count_entries(const struct temp_maildir *fx, const char *sub)
{
	char *path = xasprintf("%s/%s", fx->maildir, sub);
	DIR *dir = opendir(path);
	struct dirent *d;
	int count = 0;

	assert_non_null(dir);
	while ((d = readdir(dir)) != NULL)
		count += d->d_name[0] != '.';
	closedir(dir);
	free(path);
	return count;
}

/* Returns the one name in cur/ that starts with base (followed by ':'), or NULL. */
static char *cur_name_of(const struct temp_maildir *fx, const char *base)
{
	char *path = xasprintf("%s/cur", fx->maildir);
	DIR *dir = opendir(path);
	struct dirent *d;
	char *found = NULL;
	size_t len = strlen(base);

	assert_non_null(dir);
	while ((d = readdir(dir)) != NULL) {
		if (strncmp(d->d_name, base, len) == 0 && d->d_name[len] == ':') {
			assert_null(found);
			found = xstrdup(d->d_name);
		}
	}
	closedir(dir);
	free(path);
	return found;
}

static void commit_ok(struct store_mailbox *box, const bool *deleted, const bool *retrieved,
		      bool mark_seen)
{
	struct store_changes changes = {
	    .deleted = deleted, .retrieved = retrieved, .mark_seen = mark_seen};
	enum store_error kind;
	char *error = NULL;

	if (backend->commit(box, &changes, &kind, &error) < 0)
		fail_msg("commit failed: %s", error);
}

static char *index_path(const struct temp_maildir *fx)
{
	return xasprintf("%s/%s", fx->maildir, UIDLIST_FILE_NAME);
}

/* ---- tests ---- */

static void test_open_missing_creates(void **state)
{
	struct temp_maildir *fx = *state;
	struct stat st;

	free(fx->maildir);
	fx->maildir = xasprintf("%s/a/b/Maildir", fx->dir);
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 0);
	assert_int_equal(box->total_size, 0);
	static const char *const subs[] = {"", "/cur", "/new", "/tmp"};
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
		char *path = xasprintf("%s%s", fx->maildir, subs[i]);
		assert_int_equal(stat(path, &st), 0);
		assert_true(S_ISDIR(st.st_mode));
		assert_int_equal(st.st_mode & 0777, 0700);
		free(path);
	}
	char *lock = xasprintf("%s/buzon-lock", fx->maildir);
	assert_int_equal(stat(lock, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	free(lock);
	backend->close(&box);
	assert_null(box);
}

static void test_new_moves_to_cur(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "new", "1000.M1P1.host", "A: 1\n\nbody\n");
	put_message(fx, "new", "1001.M1P1.host", "A: 2\n\nbody\n");
	put_message(fx, "new", ".hidden", "not a message\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 2);
	assert_true(exists_in(fx, "cur", "1000.M1P1.host:2,"));
	assert_true(exists_in(fx, "cur", "1001.M1P1.host:2,"));
	assert_false(exists_in(fx, "new", "1000.M1P1.host"));
	assert_true(exists_in(fx, "new", ".hidden"));
	/* New messages get UIDs in name order. */
	assert_int_equal(box->messages[0].uid, 1);
	assert_int_equal(box->messages[1].uid, 2);
	assert_int_equal(index_of_content(box, "A: 1\n\nbody\n"), 0);
	backend->close(&box);
}

static void test_uidl_format(void **state)
{
	struct temp_maildir *fx = *state;
	char expected[STORE_UIDL_LEN + 1];

	create_maildir(fx);
	put_message(fx, "new", "1000.M1P1.host", "x\n");
	struct store_mailbox *box = open_ok(fx);
	char *index = index_path(fx);
	struct uidlist *list;
	bool damaged;
	char *error;
	assert_int_equal(uidlist_load(index, &list, &damaged, &error), 1);
	snprintf(expected, sizeof(expected), "%08x%08x", 1u, (unsigned)list->uidvalidity);
	assert_string_equal(box->messages[0].uidl, expected);
	assert_int_equal(strlen(box->messages[0].uidl), STORE_UIDL_LEN);
	uidlist_free(&list);
	free(index);
	backend->close(&box);
}

static void test_uidls_stable(void **state)
{
	struct temp_maildir *fx = *state;
	char first[3][STORE_UIDL_LEN + 1];

	create_maildir(fx);
	put_message(fx, "new", "1000.M1P1.host", "m1\n");
	put_message(fx, "new", "1001.M1P1.host", "m2\n");
	put_message(fx, "cur", "0999.M1P1.host:2,S", "m0\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 3);
	for (size_t i = 0; i < 3; i++)
		strcpy(first[i], box->messages[i].uidl);
	backend->close(&box);

	/* Reopen: identical. */
	box = open_ok(fx);
	assert_int_equal(box->count, 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_equal(box->messages[i].uidl, first[i]);
	backend->close(&box);

	/* New deliveries, including one whose name sorts first: old UIDLs unchanged, new ones
	 * after them. */
	put_message(fx, "new", "0001.M1P1.host", "early\n");
	put_message(fx, "new", "2000.M1P1.host", "late\n");
	box = open_ok(fx);
	assert_int_equal(box->count, 5);
	for (size_t i = 0; i < 3; i++)
		assert_string_equal(box->messages[i].uidl, first[i]);
	assert_int_equal(box->messages[3].uid, 4);
	assert_int_equal(box->messages[4].uid, 5);
	assert_int_equal(index_of_content(box, "early\n"), 3);
	for (size_t i = 1; i < box->count; i++)
		assert_true(box->messages[i - 1].uid < box->messages[i].uid);
	backend->close(&box);
}

static void test_deleted_uid_not_reused(void **state)
{
	struct temp_maildir *fx = *state;
	bool deleted[2] = {false, true};

	create_maildir(fx);
	put_message(fx, "new", "1000.M1P1.host", "m1\n");
	put_message(fx, "new", "1001.M1P1.host", "m2\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->messages[1].uid, 2);
	commit_ok(box, deleted, NULL, true);
	backend->close(&box);
	assert_int_equal(count_entries(fx, "cur"), 1);

	put_message(fx, "new", "1002.M1P1.host", "m3\n");
	box = open_ok(fx);
	assert_int_equal(box->count, 2);
	assert_int_equal(box->messages[0].uid, 1);
	assert_int_equal(box->messages[1].uid, 3);
	backend->close(&box);

	/* Even when every message is gone. */
	bool all[2] = {true, true};
	box = open_ok(fx);
	commit_ok(box, all, NULL, true);
	backend->close(&box);
	put_message(fx, "new", "1003.M1P1.host", "m4\n");
	box = open_ok(fx);
	assert_int_equal(box->count, 1);
	assert_int_equal(box->messages[0].uid, 4);
	backend->close(&box);
}

static uint64_t size_of_only_message(const struct temp_maildir *fx)
{
	struct store_mailbox *box = open_ok(fx);
	uint64_t size;

	assert_int_equal(box->count, 1);
	size = box->messages[0].size;
	assert_int_equal(box->total_size, size);
	backend->close(&box);
	return size;
}

static void test_sizes(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	/* No S=/W=: counted (4 bare LFs), then cached. */
	put_message(fx, "cur", "1.M1.h:2,", "a\nb\r\nc\n\n\n");
	assert_int_equal(size_of_only_message(fx), 13);
	assert_int_equal(size_of_only_message(fx), 13);
	char *path = path_in(fx, "cur", "1.M1.h:2,");
	assert_int_equal(unlink(path), 0);
	free(path);

	/* S= matching the file and W=: W is used as is. */
	put_message(fx, "cur", "2.M1.h,S=4,W=6:2,", "x\ny\n");
	assert_int_equal(size_of_only_message(fx), 6);
	assert_int_equal(size_of_only_message(fx), 6);
	path = path_in(fx, "cur", "2.M1.h,S=4,W=6:2,");
	assert_int_equal(unlink(path), 0);
	free(path);

	/* A lying W= whose S= disagrees with the file: counted. */
	put_message(fx, "cur", "3.M1.h,S=999,W=5:2,", "x\ny\nz\n");
	assert_int_equal(size_of_only_message(fx), 9);
	assert_int_equal(size_of_only_message(fx), 9);
	path = path_in(fx, "cur", "3.M1.h,S=999,W=5:2,");
	assert_int_equal(unlink(path), 0);
	free(path);

	/* W= without S=: not trusted. */
	put_message(fx, "cur", "4.M1.h,W=1:2,", "ab\n");
	assert_int_equal(size_of_only_message(fx), 4);
	path = path_in(fx, "cur", "4.M1.h,W=1:2,");
	assert_int_equal(unlink(path), 0);
	free(path);

	/* Malformed S=: ignored. */
	put_message(fx, "cur", "5.M1.h,S=3x,W=1:2,", "ab\n");
	assert_int_equal(size_of_only_message(fx), 4);
	path = path_in(fx, "cur", "5.M1.h,S=3x,W=1:2,");
	assert_int_equal(unlink(path), 0);
	free(path);

	/* Only CRLF, and an empty message. */
	put_message(fx, "cur", "6.M1.h:2,", "ab\r\n\r\n");
	assert_int_equal(size_of_only_message(fx), 6);
	path = path_in(fx, "cur", "6.M1.h:2,");
	assert_int_equal(unlink(path), 0);
	free(path);
	put_message(fx, "cur", "7.M1.h:2,", "");
	assert_int_equal(size_of_only_message(fx), 0);
}

static void test_size_cache_per_base_name(void **state)
{
	struct temp_maildir *fx = *state;

	/* Maildir files are immutable: the size cached for a base name is used without a stat()
	 * (a warm open of a big mailbox reads no inode), and a changed message arrives under a new
	 * base name, which is sized afresh. */
	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "a\n");
	assert_int_equal(size_of_only_message(fx), 3);
	put_message(fx, "cur", "1.M1.h:2,", "a\nbb\n");
	assert_int_equal(size_of_only_message(fx), 3);
	char *path = path_in(fx, "cur", "1.M1.h:2,");
	assert_int_equal(unlink(path), 0);
	free(path);
	put_message(fx, "cur", "2.M1.h:2,", "a\nbb\n");
	assert_int_equal(size_of_only_message(fx), 7);
}

static void test_total_size(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "new", "1.M1.h", "a\n");
	put_message(fx, "new", "2.M1.h", "bb\r\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 2);
	assert_int_equal(box->total_size, 7);
	backend->close(&box);
}

static void test_lock(void **state)
{
	struct temp_maildir *fx = *state;
	struct store_mailbox *second = NULL;
	enum store_error kind = STORE_ERROR_NONE;
	char *error = NULL;

	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(backend->open(fx->maildir, &second, &kind, &error), -1);
	assert_int_equal(kind, STORE_ERROR_IN_USE);
	assert_null(second);
	assert_non_null(error);
	free(error);
	backend->close(&box);

	box = open_ok(fx);
	backend->close(&box);
}

static void test_commit_deletes_and_marks_seen(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "one\n");
	put_message(fx, "cur", "2.M1.h:2,RT", "two\n");
	put_message(fx, "cur", "3.M1.h:2,S", "three\n");
	put_message(fx, "cur", "4.M1.h:2,", "four\n");
	put_message(fx, "cur", "5.M1.h", "five, no info\n");
	put_message(fx, "cur", "6.M1.h:2,", "six\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 6);
	bool deleted[6] = {0}, retrieved[6] = {0};
	deleted[index_of_content(box, "one\n")] = true;
	retrieved[index_of_content(box, "one\n")] = true; /* deleted wins over seen */
	retrieved[index_of_content(box, "two\n")] = true;
	retrieved[index_of_content(box, "three\n")] = true;
	retrieved[index_of_content(box, "five, no info\n")] = true;
	deleted[index_of_content(box, "six\n")] = true;
	commit_ok(box, deleted, retrieved, true);
	backend->close(&box);

	assert_false(exists_in(fx, "cur", "1.M1.h:2,"));
	assert_false(exists_in(fx, "cur", "1.M1.h:2,S"));
	assert_true(exists_in(fx, "cur", "2.M1.h:2,RST"));
	assert_true(exists_in(fx, "cur", "3.M1.h:2,S"));
	assert_true(exists_in(fx, "cur", "4.M1.h:2,"));
	assert_true(exists_in(fx, "cur", "5.M1.h:2,S"));
	assert_false(exists_in(fx, "cur", "6.M1.h:2,"));
	assert_int_equal(count_entries(fx, "cur"), 4);

	/* UIDs survive the flag renames. */
	box = open_ok(fx);
	assert_int_equal(box->count, 4);
	assert_int_equal(box->messages[index_of_content(box, "two\n")].uid, 2);
	assert_int_equal(box->messages[index_of_content(box, "five, no info\n")].uid, 5);
	backend->close(&box);
}

static void test_commit_without_mark_seen(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "one\n");
	struct store_mailbox *box = open_ok(fx);
	bool retrieved[1] = {true};
	commit_ok(box, NULL, retrieved, false);
	backend->close(&box);
	assert_true(exists_in(fx, "cur", "1.M1.h:2,"));
}

static void test_close_without_commit_changes_nothing(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "one\n");
	struct store_mailbox *box = open_ok(fx);
	backend->close(&box);
	assert_true(exists_in(fx, "cur", "1.M1.h:2,"));
}

static void test_commit_after_external_rename(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "one\n");
	put_message(fx, "cur", "2.M1.h:2,", "two\n");
	struct store_mailbox *box = open_ok(fx);
	size_t one = index_of_content(box, "one\n"), two = index_of_content(box, "two\n");
	/* Another Maildir client changes flags while the session is open. */
	char *from = path_in(fx, "cur", "1.M1.h:2,"), *to = path_in(fx, "cur", "1.M1.h:2,F");
	assert_int_equal(rename(from, to), 0);
	free(from);
	free(to);
	from = path_in(fx, "cur", "2.M1.h:2,");
	to = path_in(fx, "cur", "2.M1.h:2,R");
	assert_int_equal(rename(from, to), 0);
	free(from);
	free(to);

	bool deleted[2] = {0}, retrieved[2] = {0};
	deleted[one] = true;
	retrieved[two] = true;
	commit_ok(box, deleted, retrieved, true);
	backend->close(&box);
	assert_int_equal(count_entries(fx, "cur"), 1);
	assert_true(exists_in(fx, "cur", "2.M1.h:2,RS"));
}

/* Replaces a message file by a directory of the same name, which unlink() cannot remove even
 * for root, or puts the file back. */
static void swap_file_and_dir(const struct temp_maildir *fx, const char *name, const char *content)
{
	char *path = path_in(fx, "cur", name);

	if (content == NULL) {
		assert_int_equal(unlink(path), 0);
		assert_int_equal(mkdir(path, 0700), 0);
	} else {
		assert_int_equal(rmdir(path), 0);
		write_path(path, content, strlen(content));
	}
	free(path);
}

static void test_commit_failure_reported(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "one\n");
	put_message(fx, "cur", "2.M1.h:2,", "two\n");
	put_message(fx, "cur", "3.M1.h:2,", "three\n");
	struct store_mailbox *box = open_ok(fx);
	swap_file_and_dir(fx, "1.M1.h:2,", NULL);
	swap_file_and_dir(fx, "2.M1.h:2,", NULL);
	bool deleted[3] = {true, true, true};
	struct store_changes changes = {.deleted = deleted, .mark_seen = true};
	enum store_error kind = STORE_ERROR_NONE;
	char *error = NULL;
	assert_int_equal(backend->commit(box, &changes, &kind, &error), -1);
	assert_int_equal(kind, STORE_ERROR_TEMP);
	assert_non_null(strstr(error, "/cur/1.M1.h:2,"));
	assert_non_null(strstr(error, strerror(EISDIR)));
	assert_non_null(strstr(error, "1 more"));
	free(error);
	backend->close(&box);
	/* The other deletion went ahead, and the failed ones keep their UIDs. */
	assert_false(exists_in(fx, "cur", "3.M1.h:2,"));
	swap_file_and_dir(fx, "1.M1.h:2,", "one\n");
	swap_file_and_dir(fx, "2.M1.h:2,", "two\n");
	box = open_ok(fx);
	assert_int_equal(box->count, 2);
	assert_int_equal(box->messages[0].uid, 1);
	assert_int_equal(box->messages[1].uid, 2);
	backend->close(&box);
}

static void test_index_removed_rebuilt(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "new", "1.M1.h", "one\n");
	put_message(fx, "new", "2.M1.h", "two\n");
	struct store_mailbox *box = open_ok(fx);
	char old_uidl[STORE_UIDL_LEN + 1];
	strcpy(old_uidl, box->messages[0].uidl);
	backend->close(&box);
	char *index = index_path(fx);
	assert_int_equal(unlink(index), 0);
	sleep(1); /* a new UIDVALIDITY is the time in seconds */
	box = open_ok(fx);
	assert_int_equal(box->count, 2);
	assert_int_equal(box->messages[0].uid, 1);
	assert_int_equal(box->messages[1].uid, 2);
	/* Same UID but a new UIDVALIDITY: clients see new UIDLs rather than wrong ones. */
	assert_string_not_equal(box->messages[0].uidl, old_uidl);
	assert_int_equal(access(index, F_OK), 0);
	backend->close(&box);
	free(index);
}

static void test_index_damaged_keeps_uids(void **state)
{
	struct temp_maildir *fx = *state;
	struct uidlist *list;
	bool damaged;
	char *error;

	create_maildir(fx);
	put_message(fx, "new", "1.M1.h", "one\n");
	put_message(fx, "new", "2.M1.h", "two\n");
	put_message(fx, "new", "3.M1.h", "three\n");
	struct store_mailbox *box = open_ok(fx);
	char uidls[3][STORE_UIDL_LEN + 1];
	for (size_t i = 0; i < 3; i++)
		strcpy(uidls[i], box->messages[i].uidl);
	backend->close(&box);
	char *index = index_path(fx);
	assert_int_equal(uidlist_load(index, &list, &damaged, &error), 1);
	uint32_t uidvalidity = list->uidvalidity;
	uidlist_free(&list);

	/* Damaged header, line of message 2 garbled, no trailer. */
	char *text = xasprintf("buzon-uidlist 1 %lu garbage\n"
			       "1 5 4 1.M1.h\n"
			       "2 5 4 2.M1\x01h\n"
			       "3 7 6 3.M1.h\n"
			       "end %lu 4 3\n",
			       (unsigned long)uidvalidity, (unsigned long)uidvalidity);
	write_path(index, text, strlen(text));
	free(text);
	box = open_ok(fx);
	assert_int_equal(box->count, 3);
	assert_string_equal(box->messages[0].uidl, uidls[0]);
	assert_string_equal(box->messages[1].uidl, uidls[2]);
	assert_int_equal(box->messages[2].uid, 4); /* message 2 lost its line: a new UID */
	backend->close(&box);

	/* The index was rewritten clean. */
	assert_int_equal(uidlist_load(index, &list, &damaged, &error), 1);
	assert_false(damaged);
	assert_int_equal(list->next_uid, 5);
	uidlist_free(&list);

	/* Truncated in the middle: the surviving lines keep their UIDs. */
	text = xasprintf("buzon-uidlist 1 %lu 5\n1 5 4 1.M1.h\n3 7 6 3.M1",
			 (unsigned long)uidvalidity);
	write_path(index, text, strlen(text));
	free(text);
	box = open_ok(fx);
	assert_int_equal(box->count, 3);
	assert_int_equal(box->messages[0].uid, 1);
	assert_int_equal(box->messages[1].uid, 5);
	assert_int_equal(box->messages[2].uid, 6);
	backend->close(&box);
	free(index);
}

static void test_second_open_does_not_rewrite_index(void **state)
{
	struct temp_maildir *fx = *state;
	struct stat before, after;

	create_maildir(fx);
	put_message(fx, "new", "1.M1.h", "one\n");
	put_message(fx, "new", "2.M1.h,S=4,W=5", "two\n");
	struct store_mailbox *box = open_ok(fx);
	backend->close(&box);
	char *index = index_path(fx);
	assert_int_equal(stat(index, &before), 0);
	box = open_ok(fx);
	backend->close(&box);
	assert_int_equal(stat(index, &after), 0);
	assert_int_equal(before.st_ino, after.st_ino); /* a save renames a new file in */
	free(index);
}

/* A delivery interrupted by a crash leaves a file in tmp/: removed at an open once a day old. */
static void test_stale_tmp_cleaned_at_open(void **state)
{
	struct temp_maildir *fx = *state;
	struct timeval old[2] = {{.tv_sec = time(NULL) - 2 * 86400},
				 {.tv_sec = time(NULL) - 2 * 86400}};

	create_maildir(fx);
	put_message(fx, "tmp", "1.M1.stale", "half a message");
	put_message(fx, "tmp", "2.M2.fresh", "a delivery in progress");
	char *stale = path_in(fx, "tmp", "1.M1.stale");
	assert_int_equal(utimes(stale, old), 0);
	struct store_mailbox *box = open_ok(fx);
	backend->close(&box);
	assert_false(exists_in(fx, "tmp", "1.M1.stale"));
	assert_true(exists_in(fx, "tmp", "2.M2.fresh"));
	free(stale);
}

static void test_tmp_never_listed(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "tmp", "1.M1.h", "half written");
	put_message(fx, "new", "2.M1.h", "two\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 1);
	backend->close(&box);
	assert_true(exists_in(fx, "tmp", "1.M1.h"));
}

static void test_odd_names_ignored(void **state)
{
	struct temp_maildir *fx = *state;
	char *sub;

	create_maildir(fx);
	put_message(fx, "cur", ".dotfile:2,", "x\n");
	put_message(fx, "cur", "has space:2,", "x\n");
	put_message(fx, "cur", ":2,S", "no base name\n");
	put_message(fx, "cur", "ok.M1.h:2,", "ok\n");
	sub = xasprintf("%s/cur/subdir", fx->maildir);
	assert_int_equal(mkdir(sub, 0700), 0);
	free(sub);
	char *target = path_in(fx, "cur", "ok.M1.h:2,"), *link = path_in(fx, "cur", "l.M1.h:2,");
	assert_int_equal(symlink(target, link), 0);
	free(target);
	free(link);
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 1);
	size_t len;
	char *data = read_message(box, 0, &len);
	assert_string_equal(data, "ok\n");
	free(data);
	backend->close(&box);
}

static void test_duplicate_base_names(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "first\n");
	put_message(fx, "cur", "1.M1.h:2,S", "second\n");
	put_message(fx, "new", "1.M1.h", "third\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 1);
	backend->close(&box);
	/* Nothing is deleted or overwritten. */
	assert_true(exists_in(fx, "cur", "1.M1.h:2,"));
	assert_true(exists_in(fx, "cur", "1.M1.h:2,S"));
	assert_true(exists_in(fx, "new", "1.M1.h"));
}

static void test_read_exact_bytes(void **state)
{
	struct temp_maildir *fx = *state;
	static const char content[] = "From: a\n\n.dot\r\nbin\0ary\rlone\n";
	char *path;

	create_maildir(fx);
	path = path_in(fx, "new", "1.M1.h");
	write_path(path, content, sizeof(content) - 1);
	free(path);
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 1);
	assert_int_equal(box->messages[0].size, sizeof(content) - 1 + 3); /* 3 bare LFs */
	size_t len;
	char *data = read_message(box, 0, &len);
	assert_int_equal(len, sizeof(content) - 1);
	assert_memory_equal(data, content, len);
	free(data);
	backend->close(&box);
}

static void test_read_after_external_rename(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "one\n");
	put_message(fx, "cur", "2.M1.h:2,", "two\n");
	struct store_mailbox *box = open_ok(fx);
	char *from = path_in(fx, "cur", "1.M1.h:2,"), *to = path_in(fx, "cur", "1.M1.h:2,FS");
	assert_int_equal(rename(from, to), 0);
	free(from);
	free(to);
	size_t len;
	char *data = read_message(box, 0, &len);
	assert_string_equal(data, "one\n");
	free(data);

	/* Gone for good: a temporary failure, not a crash. */
	char *gone = path_in(fx, "cur", "2.M1.h:2,");
	assert_int_equal(unlink(gone), 0);
	free(gone);
	enum store_error kind = STORE_ERROR_NONE;
	char *error = NULL;
	assert_null(backend->read_open(box, 1, &kind, &error));
	assert_int_equal(kind, STORE_ERROR_TEMP);
	assert_non_null(strstr(error, "2.M1.h"));
	free(error);
	backend->close(&box);
}

static void test_flag_order(void **state)
{
	struct temp_maildir *fx = *state;

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,FT", "one\n");
	put_message(fx, "cur", "2.M1.h:2,a", "two\n");
	put_message(fx, "cur", "3.M1.h:2,DR", "three\n");
	struct store_mailbox *box = open_ok(fx);
	bool retrieved[3] = {true, true, true};
	commit_ok(box, NULL, retrieved, true);
	backend->close(&box);
	char *name = cur_name_of(fx, "1.M1.h");
	assert_string_equal(name, "1.M1.h:2,FST");
	free(name);
	name = cur_name_of(fx, "2.M1.h");
	assert_string_equal(name, "2.M1.h:2,Sa");
	free(name);
	name = cur_name_of(fx, "3.M1.h");
	assert_string_equal(name, "3.M1.h:2,DRS");
	free(name);
}

static void test_many_messages_order(void **state)
{
	struct temp_maildir *fx = *state;
	char name[64];

	create_maildir(fx);
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "%d.M%dP1.h", 1000 + i, i);
		put_message(fx, "new", name, "x\n");
	}
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 500);
	for (size_t i = 0; i < box->count; i++)
		assert_int_equal(box->messages[i].uid, i + 1);
	bool deleted[500] = {0};
	for (size_t i = 0; i < 500; i += 2)
		deleted[i] = true;
	commit_ok(box, deleted, NULL, true);
	backend->close(&box);
	box = open_ok(fx);
	assert_int_equal(box->count, 250);
	for (size_t i = 0; i < box->count; i++)
		assert_int_equal(box->messages[i].uid, 2 * i + 2);
	backend->close(&box);
}

static void assert_quota_usage(const struct temp_maildir *fx, uint64_t bytes, uint64_t messages)
{
	uint64_t b = 0, m = 0;
	char *error = NULL;

	if (quota_usage_get(fx->maildir, &b, &m, &error) < 0)
		fail_msg("quota_usage_get: %s", error);
	assert_int_equal(b, bytes);
	assert_int_equal(m, messages);
}

/* open() resets the quota usage to the snapshot (file octets, not CRLF sizes); commit() takes off
 * what it deleted. */
static void test_quota_usage_open_commit(void **state)
{
	struct temp_maildir *fx = *state;
	char *quota_path = xasprintf("%s/%s", fx->maildir, QUOTA_FILE_NAME);

	create_maildir(fx);
	put_message(fx, "cur", "1.M1.h:2,", "one\n");	      /* 4 octets */
	put_message(fx, "new", "2.M1.h,S=6,W=7", "two!\n\n"); /* 6 octets */
	put_message(fx, "cur", "3.M1.h:2,", "three\r\n");     /* 7 octets */
	write_path(quota_path, "999999 99\n", 10);	      /* stale */
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 3);
	assert_quota_usage(fx, 17, 3);
	bool deleted[3] = {0};
	deleted[index_of_content(box, "two!\n\n")] = true;
	deleted[index_of_content(box, "one\n")] = true;
	commit_ok(box, deleted, NULL, false);
	backend->close(&box);
	assert_quota_usage(fx, 7, 1);

	/* A damaged usage file is rebuilt from the files on disk. */
	write_path(quota_path, "garbage", 7);
	assert_quota_usage(fx, 7, 1);
	free(quota_path);
}

/* A Maildir name of len octets: a plausible unique name padded with 'x'. */
static char *long_name(char tag, size_t len)
{
	char *name = xmalloc(len + 1);

	memset(name, 'x', len);
	memcpy(name, "1700000000.M1P1.", 16);
	name[16] = tag;
	name[len] = '\0';
	return name;
}

/* NAME_MAX is 255: a name of 252 octets takes ":2," but not ":2,S", and one of 253 to 255 takes no
 * info at all. Such messages must still be listed, keep their UIDL, and never make QUIT fail. */
static void test_names_too_long_for_flags(void **state)
{
	struct temp_maildir *fx = *state;
	char *fits_info = long_name('a', 252), *no_info = long_name('b', 253);
	char *longest = long_name('c', 255), *in_cur = long_name('d', 254);
	char *fits_info_cur = xasprintf("%s:2,", fits_info);

	create_maildir(fx);
	put_message(fx, "new", fits_info, "fits info\n");
	put_message(fx, "new", no_info, "no info\n");
	put_message(fx, "new", longest, "longest\n");
	put_message(fx, "cur", in_cur, "in cur\n");
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 4);
	assert_int_equal(count_entries(fx, "new"), 0);
	assert_true(exists_in(fx, "cur", fits_info_cur));
	assert_true(exists_in(fx, "cur", no_info));
	assert_true(exists_in(fx, "cur", longest));
	char uidls[4][STORE_UIDL_LEN + 1];
	for (size_t i = 0; i < 4; i++)
		memcpy(uidls[i], box->messages[i].uidl, sizeof(uidls[i]));
	bool retrieved[4] = {true, true, true, true};
	commit_ok(box, NULL, retrieved, true);
	backend->close(&box);

	/* every name kept, nothing lost or doubled, the same UIDLs; a second QUIT succeeds too */
	for (int round = 0; round < 2; round++) {
		assert_true(exists_in(fx, "cur", fits_info_cur));
		assert_true(exists_in(fx, "cur", no_info));
		assert_true(exists_in(fx, "cur", longest));
		assert_true(exists_in(fx, "cur", in_cur));
		assert_int_equal(count_entries(fx, "cur"), 4);
		box = open_ok(fx);
		assert_int_equal(box->count, 4);
		for (size_t i = 0; i < 4; i++)
			assert_string_equal(box->messages[i].uidl, uidls[i]);
		size_t len;
		char *content = read_message(box, index_of_content(box, "longest\n"), &len);
		assert_string_equal(content, "longest\n");
		free(content);
		commit_ok(box, NULL, retrieved, true);
		backend->close(&box);
	}
	free(fits_info);
	free(no_info);
	free(longest);
	free(in_cur);
	free(fits_info_cur);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_open_missing_creates),
	    T(test_stale_tmp_cleaned_at_open),
	    T(test_new_moves_to_cur),
	    T(test_uidl_format),
	    T(test_uidls_stable),
	    T(test_deleted_uid_not_reused),
	    T(test_sizes),
	    T(test_size_cache_per_base_name),
	    T(test_total_size),
	    T(test_lock),
	    T(test_commit_deletes_and_marks_seen),
	    T(test_commit_without_mark_seen),
	    T(test_close_without_commit_changes_nothing),
	    T(test_commit_after_external_rename),
	    T(test_commit_failure_reported),
	    T(test_index_removed_rebuilt),
	    T(test_index_damaged_keeps_uids),
	    T(test_second_open_does_not_rewrite_index),
	    T(test_tmp_never_listed),
	    T(test_odd_names_ignored),
	    T(test_duplicate_base_names),
	    T(test_read_exact_bytes),
	    T(test_read_after_external_rename),
	    T(test_flag_order),
	    T(test_many_messages_order),
	    T(test_quota_usage_open_commit),
	    T(test_names_too_long_for_flags),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

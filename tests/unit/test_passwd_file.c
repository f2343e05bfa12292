/* Unit tests for the passwd-file database: parsing, lookups, user names and atomic edits. */
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
#include <unistd.h>

#include <cmocka.h>

#include "auth/passwd_file.h"

#define MAX_REPORTS 16

struct reports {
	unsigned int count;
	unsigned int lines[MAX_REPORTS];
	char messages[MAX_REPORTS][128];
};

static void collect_report(void *context, unsigned int line, const char *message)
{
	struct reports *reports = context;

	assert_true(reports->count < MAX_REPORTS);
	reports->lines[reports->count] = line;
	snprintf(reports->messages[reports->count], sizeof(reports->messages[0]), "%s", message);
	reports->count++;
}

static void parse_string(const char *text, struct passwd_db *db, struct reports *reports)
{
	memset(reports, 0, sizeof(*reports));
	assert_int_equal(passwd_db_parse(text, strlen(text), db, collect_report, reports), 0);
}

static void assert_entry(const struct passwd_db *db, const char *user, const char *secret,
			 const char *extra, unsigned int line)
{
	const struct passwd_entry *entry = passwd_db_lookup(db, user);

	if (entry == NULL)
		fail_msg("user %s not found", user);
	assert_string_equal(entry->user, user);
	assert_string_equal(entry->secret, secret);
	assert_string_equal(entry->extra, extra);
	assert_int_equal(entry->line, line);
}

static void test_parse_good(void **state)
{
	static const char text[] = "# users\n"
				   "\n"
				   "   \t\n"
				   "  # indented comment\n"
				   "zoe:{PLAIN}z:1000:1000::/home/zoe:/bin/sh:userdb_quota=1G\r\n"
				   "alice:{SHA512-CRYPT}$6$abc$def\n"
				   "bob@example.com:$y$j9T$x$y:\r\n"
				   "carol:{PLAIN}a b c";
	struct passwd_db db;
	struct reports reports;

	parse_string(text, &db, &reports);
	assert_int_equal(reports.count, 0);
	assert_int_equal(db.count, 4);
	/* Sorted for bsearch. */
	for (size_t i = 1; i < db.count; i++)
		assert_true(strcmp(db.entries[i - 1].user, db.entries[i].user) < 0);
	assert_entry(&db, "zoe", "{PLAIN}z", "1000:1000::/home/zoe:/bin/sh:userdb_quota=1G", 5);
	assert_entry(&db, "alice", "{SHA512-CRYPT}$6$abc$def", "", 6);
	assert_entry(&db, "bob@example.com", "$y$j9T$x$y", "", 7);
	assert_entry(&db, "carol", "{PLAIN}a b c", "", 8);
	passwd_db_free(&db);
	assert_null(db.entries);
	assert_int_equal(db.count, 0);
}

static void test_parse_bad_lines(void **state)
{
	static const char text[] = "nocolon\n"		     /* 1 */
				   ":secret\n"		     /* 2: empty user */
				   "a/b:secret\n"	     /* 3 */
				   "alice:\n"		     /* 4: empty secret */
				   "alice::extra\n"	     /* 5: empty secret */
				   "alice:first\n"	     /* 6: good */
				   "bob:x\n"		     /* 7: good */
				   "alice:second\n"	     /* 8: duplicate */
				   "a b:secret\n"	     /* 9: space */
				   "ctl\x01:secret\n"	     /* 10: control byte */
				   "bob:again:extra\r\n"     /* 11: duplicate */
				   "..:secret\n"	     /* 12 */
				   "\xff\xfe:secret\n"	     /* 13: not UTF-8 */
				   "j\xc3\xbcrgen:secret\n"; /* 14: good, UTF-8 */
	struct passwd_db db;
	struct reports reports;

	parse_string(text, &db, &reports);
	assert_int_equal(db.count, 3);
	assert_entry(&db, "alice", "first", "", 6);
	assert_entry(&db, "bob", "x", "", 7);
	assert_entry(&db, "j\xc3\xbcrgen", "secret", "", 14);

	static const unsigned int bad_lines[] = {1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13};
	assert_int_equal(reports.count, sizeof(bad_lines) / sizeof(bad_lines[0]));
	for (unsigned int i = 0; i < reports.count; i++) {
		/* In line order, whichever pass found them. */
		assert_int_equal(reports.lines[i], bad_lines[i]);
		assert_true(strlen(reports.messages[i]) > 0);
	}
	assert_non_null(strstr(reports.messages[0], "':'"));
	assert_non_null(strstr(reports.messages[1], "user name"));
	assert_non_null(strstr(reports.messages[3], "empty"));
	assert_non_null(strstr(reports.messages[5], "duplicate"));
	assert_non_null(strstr(reports.messages[8], "duplicate"));
	passwd_db_free(&db);
}

static void test_parse_nul_byte(void **state)
{
	static const char text[] = "alice:se\0cret\nbob:x\n";
	struct passwd_db db;
	struct reports reports = {0};

	assert_int_equal(passwd_db_parse(text, sizeof(text) - 1, &db, collect_report, &reports), 0);
	assert_int_equal(db.count, 1);
	assert_non_null(passwd_db_lookup(&db, "bob"));
	assert_int_equal(reports.count, 1);
	assert_int_equal(reports.lines[0], 1);
	passwd_db_free(&db);
}

static void test_parse_empty(void **state)
{
	struct passwd_db db;
	struct reports reports;

	parse_string("", &db, &reports);
	assert_int_equal(db.count, 0);
	assert_null(passwd_db_lookup(&db, "alice"));
	passwd_db_free(&db);
	/* A NULL report function is allowed. */
	assert_int_equal(passwd_db_parse("bad\n", 4, &db, NULL, NULL), 0);
	assert_int_equal(db.count, 0);
	passwd_db_free(&db);
}

static void test_lookup(void **state)
{
	static const char text[] = "m:1\nb:2\nz:3\na:4\nalice:5\nAlice:6\nalic:7\n";
	struct passwd_db db;
	struct reports reports;

	parse_string(text, &db, &reports);
	assert_int_equal(db.count, 7);
	assert_string_equal(passwd_db_lookup(&db, "alice")->secret, "5");
	assert_string_equal(passwd_db_lookup(&db, "Alice")->secret, "6");
	assert_string_equal(passwd_db_lookup(&db, "alic")->secret, "7");
	assert_string_equal(passwd_db_lookup(&db, "a")->secret, "4");
	assert_string_equal(passwd_db_lookup(&db, "z")->secret, "3");
	assert_null(passwd_db_lookup(&db, "ALICE"));
	assert_null(passwd_db_lookup(&db, "alicex"));
	assert_null(passwd_db_lookup(&db, ""));
	assert_null(passwd_db_lookup(&db, "0"));
	passwd_db_free(&db);
}

static void test_user_name_valid(void **state)
{
	static const char *const valid[] = {
	    "a",	  "alice",	   "alice@example.com",
	    "first.last", "j\xc3\xbcrgen", ".hidden",
	    "a..b",	  "...",	   "user+tag@example.com",
	    "x@y",	  "\xe2\x82\xac",  "\xf0\x9f\x93\xab",
	};
	static const char *const invalid[] = {
	    "",
	    ".",
	    "..",
	    "../x",
	    "a/b",
	    "/",
	    "a:b",
	    "a b",
	    "a\tb",
	    "a\nb",
	    "a\rb",
	    "a\x01",
	    "\x7f",
	    "@example.com",
	    "alice@",
	    "@",
	    "a@b@c",
	    "..@example.com",
	    "alice@..",
	    ".@x",
	    "x@.",
	    "\xff",
	    "\xc3",
	    "\xc0\xaf" /* overlong '/' */,
	    "\xed\xa0\x80" /* surrogate */,
	    "\xf4\x90\x80\x80" /* past U+10FFFF */,
	};
	char name[PASSWD_USER_MAX + 2];

	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		if (!passwd_user_name_valid(valid[i]))
			fail_msg("valid name %zu refused", i);
	}
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		if (passwd_user_name_valid(invalid[i]))
			fail_msg("invalid name %zu accepted", i);
	}
	memset(name, 'a', PASSWD_USER_MAX);
	name[PASSWD_USER_MAX] = '\0';
	assert_true(passwd_user_name_valid(name));
	name[PASSWD_USER_MAX] = 'a';
	name[PASSWD_USER_MAX + 1] = '\0';
	assert_int_equal(strlen(name), 256);
	assert_false(passwd_user_name_valid(name));
}

/* A temporary directory per test, removed with whatever the test left in it. */
struct fixture {
	char dir[64];
	char path[128];
};

static int setup_dir(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/buzon-test-passwd.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/passwd", f->dir);
	*state = f;
	return 0;
}

static int teardown_dir(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	int ret = system(cmd);
	free(f);
	return ret == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static void assert_file_is(const char *path, const char *expected)
{
	char buf[4096];
	FILE *fp = fopen(path, "r");

	assert_non_null(fp);
	size_t len = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[len] = '\0';
	assert_int_equal(len, strlen(expected));
	assert_memory_equal(buf, expected, len);
}

static mode_t file_mode(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static void assert_dir_has_only_passwd(const char *dir)
{
	char cmd[200];

	/* No temporary file left behind; the edit lock file stays (it is reused). */
	snprintf(cmd, sizeof(cmd), "test \"$(ls -A '%s' | grep -vx passwd.lock)\" = passwd", dir);
	assert_int_equal(system(cmd), 0);
}

static const char original[] = "# buzon users\r\n"
			       "alice:{PLAIN}old:1000:1000::/home/alice::\r\n"
			       "\n"
			       "  # bob left\n"
			       "bob:$y$j9T$aa$bb\n"
			       "carol:{SHA256}xyz=";

static void test_file_add(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;

	write_file(f->path, original, 0600);
	assert_int_equal(passwd_file_set(f->path, "dave@example.com", "{PLAIN}new", true, &error),
			 0);
	/* The last line gets the file's line end (CRLF, from its first line) before the new one. */
	assert_file_is(f->path, "# buzon users\r\n"
				"alice:{PLAIN}old:1000:1000::/home/alice::\r\n"
				"\n"
				"  # bob left\n"
				"bob:$y$j9T$aa$bb\n"
				"carol:{SHA256}xyz=\r\n"
				"dave@example.com:{PLAIN}new\r\n");
	assert_int_equal(file_mode(f->path), 0600);
	assert_dir_has_only_passwd(f->dir);

	assert_int_equal(passwd_file_set(f->path, "alice", "{PLAIN}x", true, &error), -1);
	assert_non_null(strstr(error, "already exists"));
	free(error);
	error = NULL;
	assert_int_equal(passwd_file_set(f->path, "a/b", "{PLAIN}x", true, &error), -1);
	assert_non_null(error);
	free(error);
	error = NULL;
	assert_int_equal(passwd_file_set(f->path, "erin", "{PLAIN}a:b", true, &error), -1);
	assert_non_null(error);
	free(error);
	error = NULL;
	assert_int_equal(passwd_file_set(f->path, "erin", "{PLAIN}a\nb", true, &error), -1);
	free(error);
	error = NULL;
	assert_int_equal(passwd_file_set(f->path, "erin", "", true, &error), -1);
	free(error);
	/* Failed edits leave the file alone. */
	assert_file_is(f->path, "# buzon users\r\n"
				"alice:{PLAIN}old:1000:1000::/home/alice::\r\n"
				"\n"
				"  # bob left\n"
				"bob:$y$j9T$aa$bb\n"
				"carol:{SHA256}xyz=\r\n"
				"dave@example.com:{PLAIN}new\r\n");
	assert_dir_has_only_passwd(f->dir);
}

static void test_file_add_lf(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;

	write_file(f->path, "alice:x\nbob:y", 0644);
	assert_int_equal(passwd_file_set(f->path, "carol", "z", true, &error), 0);
	assert_file_is(f->path, "alice:x\nbob:y\ncarol:z\n");
	assert_int_equal(file_mode(f->path), 0644);
}

/* A last line that ends in a lone CR in a CRLF file (fuzzer finding): the added line must not
 * turn that CR into part of bob's secret. */
static void test_file_add_after_cr(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;
	struct passwd_db db;

	write_file(f->path, "alice:{PLAIN}a\r\nbob:{PLAIN}b\r", 0600);
	assert_int_equal(passwd_file_set(f->path, "carol", "{PLAIN}c", true, &error), 0);
	assert_file_is(f->path, "alice:{PLAIN}a\r\nbob:{PLAIN}b\r\ncarol:{PLAIN}c\r\n");
	assert_int_equal(passwd_db_load(f->path, &db, NULL, NULL, &error), 0);
	assert_string_equal(passwd_db_lookup(&db, "bob")->secret, "{PLAIN}b");
	passwd_db_free(&db);
}

static void test_file_create(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;
	mode_t old_umask = umask(077);

	assert_int_equal(passwd_file_set(f->path, "alice", "{PLAIN}x", false, &error), -1);
	assert_non_null(strstr(error, "no user"));
	free(error);
	error = NULL;
	assert_int_equal(access(f->path, F_OK), -1);

	assert_int_equal(passwd_file_set(f->path, "alice", "{PLAIN}x", true, &error), 0);
	umask(old_umask);
	assert_file_is(f->path, "alice:{PLAIN}x\n");
	assert_int_equal(file_mode(f->path), 0640);
	assert_dir_has_only_passwd(f->dir);

	char missing_dir[192];
	snprintf(missing_dir, sizeof(missing_dir), "%s/nodir/passwd", f->dir);
	assert_int_equal(passwd_file_set(missing_dir, "alice", "{PLAIN}x", true, &error), -1);
	assert_non_null(error);
	free(error);
}

static void test_file_passwd(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;

	write_file(f->path, original, 0640);
	assert_int_equal(passwd_file_set(f->path, "alice", "{SHA256}new=", false, &error), 0);
	assert_int_equal(passwd_file_set(f->path, "carol", "{PLAIN}c", false, &error), 0);
	assert_file_is(f->path, "# buzon users\r\n"
				"alice:{SHA256}new=:1000:1000::/home/alice::\r\n"
				"\n"
				"  # bob left\n"
				"bob:$y$j9T$aa$bb\n"
				"carol:{PLAIN}c");
	assert_int_equal(file_mode(f->path), 0640);

	assert_int_equal(passwd_file_set(f->path, "dave", "{PLAIN}x", false, &error), -1);
	assert_non_null(strstr(error, "no user"));
	free(error);
	error = NULL;
	/* A comment that mentions a user is not that user's line. */
	assert_int_equal(passwd_file_set(f->path, "  # bob left", "x", false, &error), -1);
	free(error);
	assert_dir_has_only_passwd(f->dir);
}

static void test_file_passwd_first_of_duplicates(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;

	write_file(f->path, "alice:\nalice:one:e\nalice:two\n", 0600);
	assert_int_equal(passwd_file_set(f->path, "alice", "new", false, &error), 0);
	/* The line the parser uses is the one changed; the bad line stays as it was. */
	assert_file_is(f->path, "alice:\nalice:new:e\nalice:two\n");
}

static void test_file_delete(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;

	write_file(f->path, original, 0600);
	assert_int_equal(passwd_file_delete(f->path, "alice", &error), 0);
	assert_file_is(f->path, "# buzon users\r\n"
				"\n"
				"  # bob left\n"
				"bob:$y$j9T$aa$bb\n"
				"carol:{SHA256}xyz=");
	assert_int_equal(passwd_file_delete(f->path, "carol", &error), 0);
	assert_file_is(f->path, "# buzon users\r\n"
				"\n"
				"  # bob left\n"
				"bob:$y$j9T$aa$bb\n");
	assert_int_equal(file_mode(f->path), 0600);

	assert_int_equal(passwd_file_delete(f->path, "alice", &error), -1);
	assert_non_null(strstr(error, "no user"));
	free(error);
	error = NULL;
	assert_file_is(f->path, "# buzon users\r\n"
				"\n"
				"  # bob left\n"
				"bob:$y$j9T$aa$bb\n");
	assert_dir_has_only_passwd(f->dir);

	char missing[192];
	snprintf(missing, sizeof(missing), "%s/missing", f->dir);
	assert_int_equal(passwd_file_delete(missing, "bob", &error), -1);
	assert_non_null(error);
	free(error);
}

static void test_file_delete_duplicates(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;
	struct passwd_db db;

	write_file(f->path, "alice:1\nbob:2\nalice:3\n", 0600);
	assert_int_equal(passwd_file_delete(f->path, "alice", &error), 0);
	/* The duplicate goes too, or it would bring alice back. */
	assert_file_is(f->path, "bob:2\n");
	assert_int_equal(passwd_db_load(f->path, &db, NULL, NULL, &error), 0);
	assert_null(passwd_db_lookup(&db, "alice"));
	passwd_db_free(&db);
}

static void test_file_round_trip(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;
	struct passwd_db db;
	struct reports reports = {0};

	write_file(f->path, original, 0600);
	assert_int_equal(passwd_file_set(f->path, "erin", "{PLAIN}e", true, &error), 0);
	assert_int_equal(passwd_file_set(f->path, "erin", "{PLAIN}e2", false, &error), 0);
	assert_int_equal(passwd_file_delete(f->path, "erin", &error), 0);
	/* Adding and deleting a user gives back the file, but for the last line's new line end. */
	assert_file_is(f->path, "# buzon users\r\n"
				"alice:{PLAIN}old:1000:1000::/home/alice::\r\n"
				"\n"
				"  # bob left\n"
				"bob:$y$j9T$aa$bb\n"
				"carol:{SHA256}xyz=\r\n");
	assert_int_equal(passwd_db_load(f->path, &db, collect_report, &reports, &error), 0);
	assert_int_equal(reports.count, 0);
	assert_int_equal(db.count, 3);
	assert_entry(&db, "alice", "{PLAIN}old", "1000:1000::/home/alice::", 2);
	passwd_db_free(&db);
}

static void test_file_symlink(void **state)
{
	struct fixture *f = *state;
	char target[192], *error = NULL;
	struct stat st;

	snprintf(target, sizeof(target), "%s/real", f->dir);
	write_file(target, "alice:x\n", 0600);
	assert_int_equal(symlink("real", f->path), 0);
	assert_int_equal(passwd_file_set(f->path, "bob", "y", true, &error), 0);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_file_is(target, "alice:x\nbob:y\n");
}

/* The auth process reads the file as its own user: an edit by root must keep owner and group. */
static void test_file_owner_kept(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;
	struct stat st;

	if (geteuid() != 0)
		skip();
	write_file(f->path, "alice:x\n", 0640);
	assert_int_equal(chown(f->path, 4321, 4322), 0);
	assert_int_equal(passwd_file_set(f->path, "bob", "y", true, &error), 0);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_uid, 4321);
	assert_int_equal(st.st_gid, 4322);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(passwd_file_delete(f->path, "alice", &error), 0);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_uid, 4321);
	assert_int_equal(st.st_gid, 4322);
}

static void test_load_and_changed(void **state)
{
	struct fixture *f = *state;
	char *error = NULL;
	struct passwd_db db;
	struct reports reports = {0};

	assert_int_equal(passwd_db_load(f->path, &db, collect_report, &reports, &error), -1);
	assert_non_null(strstr(error, f->path));
	free(error);
	error = NULL;

	write_file(f->path, "alice:x\nbad\n", 0600);
	assert_int_equal(passwd_db_load(f->path, &db, collect_report, &reports, &error), 0);
	assert_int_equal(db.count, 1);
	assert_int_equal(reports.count, 1);
	assert_int_equal(reports.lines[0], 2);
	assert_false(passwd_db_changed(&db, f->path));

	assert_int_equal(passwd_file_set(f->path, "alice", "y", false, &error), 0);
	assert_true(passwd_db_changed(&db, f->path));
	passwd_db_free(&db);

	assert_int_equal(passwd_db_load(f->path, &db, NULL, NULL, &error), 0);
	assert_string_equal(passwd_db_lookup(&db, "alice")->secret, "y");
	assert_false(passwd_db_changed(&db, f->path));
	assert_int_equal(unlink(f->path), 0);
	assert_true(passwd_db_changed(&db, f->path));
	passwd_db_free(&db);

	assert_int_equal(passwd_db_load(f->dir, &db, NULL, NULL, &error), -1);
	assert_non_null(error);
	free(error);
}

#define DIR_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_good),
	    cmocka_unit_test(test_parse_bad_lines),
	    cmocka_unit_test(test_parse_nul_byte),
	    cmocka_unit_test(test_parse_empty),
	    cmocka_unit_test(test_lookup),
	    cmocka_unit_test(test_user_name_valid),
	    DIR_TEST(test_file_add),
	    DIR_TEST(test_file_add_lf),
	    DIR_TEST(test_file_add_after_cr),
	    DIR_TEST(test_file_create),
	    DIR_TEST(test_file_passwd),
	    DIR_TEST(test_file_passwd_first_of_duplicates),
	    DIR_TEST(test_file_delete),
	    DIR_TEST(test_file_delete_duplicates),
	    DIR_TEST(test_file_round_trip),
	    DIR_TEST(test_file_symlink),
	    DIR_TEST(test_file_owner_kept),
	    DIR_TEST(test_load_and_changed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

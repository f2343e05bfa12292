/* Unit tests for the UID index: round trips, tolerance to damage, and the never-reuse rules. */
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
#include "store/uidlist.h"

struct fixture {
	char dir[64];
	char *path;
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	strcpy(fx->dir, "/tmp/buzon-uidlist-XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	fx->path = xasprintf("%s/%s", fx->dir, UIDLIST_FILE_NAME);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char *cmd = xasprintf("rm -rf '%s'", fx->dir);

	if (system(cmd) != 0)
		return -1;
	free(cmd);
	free(fx->path);
	free(fx);
	return 0;
}

static void write_file(const char *path, const char *data)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(data, f);
	assert_int_equal(fclose(f), 0);
}

static uint32_t uid_of(struct uidlist *list, const char *name)
{
	struct uidlist_entry *entry = uidlist_lookup(list, name, strlen(name));

	return entry == NULL ? 0 : entry->uid;
}

static struct uidlist *parse_str(const char *text, bool *damaged_r)
{
	return uidlist_parse(text, strlen(text), damaged_r);
}

static void test_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct uidlist *list = uidlist_new(1234567), *loaded = NULL;
	uint32_t uid;
	bool damaged;
	char *error = NULL;

	assert_int_equal(uidlist_add(list, "1700.M1P1.h,S=10,W=11", 21, 11, 10, &uid), 0);
	assert_int_equal(uid, 1);
	assert_int_equal(
	    uidlist_add(list, "1700.M2P1.h", 11, UIDLIST_SIZE_UNKNOWN, UIDLIST_SIZE_UNKNOWN, &uid),
	    0);
	assert_int_equal(uid, 2);
	assert_int_equal(uidlist_add(list, "a", 1, 0, 0, &uid), 0);
	assert_int_equal(uidlist_save(list, fx->path, &error), 0);
	assert_int_equal(uidlist_load(fx->path, &loaded, &damaged, &error), 1);
	assert_false(damaged);
	assert_int_equal(loaded->uidvalidity, 1234567);
	assert_int_equal(loaded->next_uid, 4);
	assert_int_equal(loaded->count, 3);
	struct uidlist_entry *e = uidlist_lookup(loaded, "1700.M1P1.h,S=10,W=11", 21);
	assert_non_null(e);
	assert_int_equal(e->uid, 1);
	assert_int_equal(e->crlf_size, 11);
	assert_int_equal(e->file_size, 10);
	e = uidlist_lookup(loaded, "1700.M2P1.h", 11);
	assert_non_null(e);
	assert_true(e->crlf_size == UIDLIST_SIZE_UNKNOWN);
	assert_true(e->file_size == UIDLIST_SIZE_UNKNOWN);
	assert_int_equal(uid_of(loaded, "a"), 3);

	/* Format is stable: what was saved formats identically after loading. */
	size_t len1, len2;
	char *text1 = uidlist_format(list, &len1), *text2 = uidlist_format(loaded, &len2);
	assert_string_equal(text1, text2);
	assert_string_equal(text1, "buzon-uidlist 3 1234567 4 - -\n"
				   "1 11 10 1700.M1P1.h,S=10,W=11\n"
				   "2 - - 1700.M2P1.h\n"
				   "3 0 0 a\n"
				   "end 1234567 4 3\n");
	free(text1);
	free(text2);
	uidlist_free(&list);
	uidlist_free(&loaded);
	assert_null(loaded);
}

/* Version 2 keeps each file's info part and the directory stamp (and is written as version 3,
 * line for line the same); version 1 files still load. */
static void test_info_and_stamp_round_trip(void **state)
{
	bool damaged = true;
	const char *v2 = "buzon-uidlist 2 77 3 1700000000.000000123 1699999999.999999999\n"
			 "1 11 10 1.M1.h:2,S\n"
			 "2 5 5 2.M2.h:2,\n"
			 "end 77 3 2\n";
	struct uidlist *list = parse_str(v2, &damaged);

	assert_false(damaged);
	assert_true(list->stamp.valid);
	assert_int_equal(list->stamp.cur_mtime.tv_sec, 1700000000);
	assert_int_equal(list->stamp.cur_mtime.tv_nsec, 123);
	assert_int_equal(list->stamp.new_mtime.tv_nsec, 999999999);
	assert_string_equal(list->entries[0].basename, "1.M1.h");
	assert_string_equal(list->entries[0].info, "2,S");
	assert_string_equal(list->entries[1].info, "2,");
	size_t len;
	char *text = uidlist_format(list, &len);
	assert_string_equal(text, "buzon-uidlist 3 77 3 1700000000.000000123 1699999999.999999999\n"
				  "1 11 10 1.M1.h:2,S\n"
				  "2 5 5 2.M2.h:2,\n"
				  "end 77 3 2\n");
	free(text);
	assert_true(uidlist_entry_set_info(&list->entries[0], "2,ST", 4));
	assert_false(uidlist_entry_set_info(&list->entries[0], "2,ST", 4));
	assert_true(uidlist_entry_set_info(&list->entries[0], NULL, 0));
	assert_null(list->entries[0].info);
	uidlist_free(&list);

	list = parse_str("buzon-uidlist 1 77 3\n1 11 10 1.M1.h\nend 77 3 1\n", &damaged);
	assert_false(damaged);
	assert_false(list->stamp.valid);
	assert_null(list->entries[0].info);
	uidlist_free(&list);

	/* a damaged file's stamp is not believed: the directories must be read */
	list = parse_str("buzon-uidlist 2 77 3 1700000000.0 1700000000.0\n1 11 10 1.M1.h:2,\n",
			 &damaged);
	assert_true(damaged);
	assert_false(list->stamp.valid);
	uidlist_free(&list);

	/* a bad stamp makes the header unreadable; the trailer still saves UIDVALIDITY */
	list = parse_str("buzon-uidlist 2 77 3 17x 1\n1 11 10 1.M1.h\nend 77 3 1\n", &damaged);
	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 77);
	assert_int_equal(list->count, 1);
	uidlist_free(&list);
}

/* Version 3: the retrieval and deletion times round-trip; a line without them keeps the short
 * form; version 1 and 2 lines read as "no times". */
static void test_times_round_trip(void **state)
{
	bool damaged = true;
	const char *v3 = "buzon-uidlist 3 77 5 - -\n"
			 "1 11 10 1.M1.h:2,S\n"
			 "2 5 5 1700000100 - 2.M2.h:2,S\n"
			 "3 6 6 - 1700000200 3.M3.h\n"
			 "4 7 7 1700000100 1700000300 4.M4.h:2,ST\n"
			 "end 77 5 4\n";
	struct uidlist *list = parse_str(v3, &damaged);

	assert_false(damaged);
	assert_int_equal(list->count, 4);
	assert_int_equal(list->entries[0].retrieved_at, 0);
	assert_int_equal(list->entries[0].deleted_at, 0);
	assert_int_equal(list->entries[1].retrieved_at, 1700000100);
	assert_int_equal(list->entries[1].deleted_at, 0);
	assert_int_equal(list->entries[2].retrieved_at, 0);
	assert_int_equal(list->entries[2].deleted_at, 1700000200);
	assert_null(list->entries[2].info);
	assert_int_equal(list->entries[3].deleted_at, 1700000300);
	assert_string_equal(list->entries[3].basename, "4.M4.h");
	assert_string_equal(list->entries[3].info, "2,ST");
	size_t len;
	char *text = uidlist_format(list, &len);
	assert_string_equal(text, v3);
	free(text);

	/* the times survive what an open does to entries: a flag change, a sweep, a lookup */
	assert_true(uidlist_entry_set_info(&list->entries[1], "2,RS", 4));
	assert_int_equal(list->entries[1].retrieved_at, 1700000100);
	uidlist_mark_all(list, true);
	list->entries[0].present = false;
	assert_int_equal(uidlist_sweep(list), 1);
	struct uidlist_entry *e = uidlist_lookup(list, "4.M4.h", 6);
	assert_non_null(e);
	assert_int_equal(e->uid, 4);
	assert_int_equal(e->retrieved_at, 1700000100);
	assert_int_equal(e->deleted_at, 1700000300);
	/* a new entry has no times and writes the short form; next_uid never goes back */
	uint32_t uid;
	assert_int_equal(uidlist_add(list, "5.M5.h", 6, 1, 1, &uid), 0);
	assert_int_equal(uid, 5);
	e = uidlist_lookup(list, "5.M5.h", 6);
	assert_int_equal(e->retrieved_at, 0);
	assert_int_equal(e->deleted_at, 0);
	text = uidlist_format(list, &len);
	assert_string_equal(text, "buzon-uidlist 3 77 6 - -\n"
				  "2 5 5 1700000100 - 2.M2.h:2,RS\n"
				  "3 6 6 - 1700000200 3.M3.h\n"
				  "4 7 7 1700000100 1700000300 4.M4.h:2,ST\n"
				  "5 1 1 5.M5.h\n"
				  "end 77 6 4\n");
	free(text);
	uidlist_free(&list);

	/* the long form in an older file is read too: a damaged header must not lose the times */
	list = parse_str("buzon-uidlist 2 77 3 - -\n1 1 1 1700000000 - a\nend 77 3 1\n", &damaged);
	assert_false(damaged);
	assert_int_equal(list->entries[0].retrieved_at, 1700000000);
	uidlist_free(&list);
}

/* Message lines with broken times are dropped like any damaged line; their UIDs stay used. */
static void test_damaged_times(void **state)
{
	static const char *const bad_lines[] = {
	    "2 5 5 17x - b\n",			/* not a number */
	    "2 5 5 0 - b\n",			/* 0 is not a time */
	    "2 5 5 -1 - b\n",			/* no sign */
	    "2 5 5 1700000000 b\n",		/* one time only */
	    "2 5 5 - - - b\n",			/* one field too many */
	    "2 5 5 - -  b\n",			/* two spaces */
	    "2 5 5 - 99999999999999999999 b\n", /* overflow */
	};

	for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
		char *text =
		    xasprintf("buzon-uidlist 3 9 3 - -\n1 1 1 a\n%send 9 3 2\n", bad_lines[i]);
		bool damaged = false;
		struct uidlist *list = parse_str(text, &damaged);
		assert_true(damaged);
		assert_int_equal(list->count, 1);
		assert_int_equal(uid_of(list, "a"), 1);
		assert_int_equal(uid_of(list, "b"), 0);
		assert_int_equal(list->next_uid, 3);
		uidlist_free(&list);
		free(text);
	}
}

static void test_missing_file(void **state)
{
	struct fixture *fx = *state;
	struct uidlist *list = NULL;
	bool damaged = true;
	char *error = NULL;

	assert_int_equal(uidlist_load(fx->path, &list, &damaged, &error), 0);
	assert_false(damaged);
	assert_non_null(list);
	assert_int_not_equal(list->uidvalidity, 0);
	assert_int_equal(list->next_uid, 1);
	assert_int_equal(list->count, 0);
	uidlist_free(&list);
}

static void test_unreadable_path(void **state)
{
	struct fixture *fx = *state;
	struct uidlist *list = NULL;
	bool damaged;
	char *error = NULL;

	/* A directory where the file should be: an error, not an empty index. */
	assert_int_equal(mkdir(fx->path, 0700), 0);
	assert_int_equal(uidlist_load(fx->path, &list, &damaged, &error), -1);
	assert_non_null(error);
	assert_non_null(strstr(error, UIDLIST_FILE_NAME));
	free(error);
	assert_int_equal(rmdir(fx->path), 0);
}

static void test_damaged_lines(void **state)
{
	bool damaged;
	struct uidlist *list = parse_str("buzon-uidlist 1 99 10\n"
					 "1 5 5 good1\n"
					 "garbage here\n"
					 "2 x 5 badsize\n"
					 "0 5 5 zero-uid\n"
					 "3 5 5 bad name\n"
					 "4 5 5 good4\n"
					 "5 5 5\n"
					 "6 - 7 good6\n"
					 "end 99 10 7\n",
					 &damaged);

	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 99);
	assert_int_equal(list->next_uid, 10);
	assert_int_equal(list->count, 3);
	assert_int_equal(uid_of(list, "good1"), 1);
	assert_int_equal(uid_of(list, "good4"), 4);
	assert_int_equal(uid_of(list, "good6"), 6);
	assert_int_equal(uid_of(list, "badsize"), 0);
	uidlist_free(&list);
}

static void test_truncated_file(void **state)
{
	bool damaged;
	/* Cut in the middle of a line: that line's name may be cut short, so it is dropped. */
	struct uidlist *list = parse_str("buzon-uidlist 1 99 20\n"
					 "1 5 5 first\n"
					 "7 5 5 second\n"
					 "9 5 5 thi",
					 &damaged);

	assert_true(damaged);
	assert_int_equal(list->count, 2);
	assert_int_equal(uid_of(list, "first"), 1);
	assert_int_equal(uid_of(list, "second"), 7);
	assert_int_equal(uid_of(list, "thi"), 0);
	assert_int_equal(list->next_uid, 20); /* from the header: UIDs 9..19 stay used */
	uidlist_free(&list);

	/* Cut at a line end: the missing trailer shows it. */
	list = parse_str("buzon-uidlist 1 99 20\n1 5 5 first\n", &damaged);
	assert_true(damaged);
	assert_int_equal(list->count, 1);
	uidlist_free(&list);

	/* Empty file. */
	list = parse_str("", &damaged);
	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 0);
	assert_int_equal(list->next_uid, 1);
	uidlist_free(&list);
}

static void test_header_recovered_from_trailer(void **state)
{
	bool damaged;
	struct uidlist *list = parse_str("buzon-uidXst 1 4242 30\n"
					 "3 5 5 a\n"
					 "8 5 5 b\n"
					 "end 4242 30 2\n",
					 &damaged);

	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 4242);
	assert_int_equal(list->next_uid, 30);
	assert_int_equal(uid_of(list, "a"), 3);
	assert_int_equal(uid_of(list, "b"), 8);
	uidlist_free(&list);

	/* Header line lost altogether: the first line is a message line. */
	list = parse_str("3 5 5 a\n8 5 5 b\nend 4242 30 2\n", &damaged);
	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 4242);
	assert_int_equal(list->count, 2);
	uidlist_free(&list);
}

static void test_both_bounds_lost(void **state)
{
	struct fixture *fx = *state;
	struct uidlist *list = NULL;
	bool damaged;
	char *error = NULL;

	write_file(fx->path, "junk\n3 5 5 a\n8 5 5 b\n");
	assert_int_equal(uidlist_load(fx->path, &list, &damaged, &error), 1);
	assert_true(damaged);
	assert_int_not_equal(list->uidvalidity, 0); /* load picks a new one */
	assert_int_equal(uid_of(list, "a"), 3);
	assert_int_equal(list->next_uid, 9);
	uidlist_free(&list);
}

static void test_next_uid_above_max(void **state)
{
	bool damaged;
	/* Header and trailer agree on a next_uid that is too low: lines win. */
	struct uidlist *list = parse_str("buzon-uidlist 1 5 2\n"
					 "1 5 5 a\n"
					 "17 5 5 b\n"
					 "end 5 2 2\n",
					 &damaged);

	assert_true(damaged);
	assert_int_equal(list->next_uid, 18);
	uint32_t uid;
	assert_int_equal(uidlist_add(list, "c", 1, 1, 1, &uid), 0);
	assert_int_equal(uid, 18);
	uidlist_free(&list);

	/* The larger of header and trailer wins. */
	list = parse_str("buzon-uidlist 1 5 2\nend 5 40 0\n", &damaged);
	assert_true(damaged);
	assert_int_equal(list->next_uid, 40);
	uidlist_free(&list);
}

static void test_uids_never_reused(void **state)
{
	struct fixture *fx = *state;
	struct uidlist *list = uidlist_new(7), *loaded;
	uint32_t uid;
	bool damaged;
	char *error = NULL;

	assert_int_equal(uidlist_add(list, "a", 1, 1, 1, &uid), 0);
	assert_int_equal(uidlist_add(list, "b", 1, 1, 1, &uid), 0);
	assert_int_equal(uidlist_add(list, "c", 1, 1, 1, &uid), 0);
	uidlist_mark_all(list, true);
	uidlist_lookup(list, "c", 1)->present = false;
	uidlist_lookup(list, "b", 1)->present = false;
	assert_int_equal(uidlist_sweep(list), 2);
	assert_int_equal(list->count, 1);
	assert_int_equal(uid_of(list, "a"), 1);
	assert_int_equal(uid_of(list, "b"), 0);
	assert_int_equal(uidlist_save(list, fx->path, &error), 0);
	assert_int_equal(uidlist_load(fx->path, &loaded, &damaged, &error), 1);
	assert_false(damaged);
	assert_int_equal(loaded->next_uid, 4);
	assert_int_equal(uidlist_add(loaded, "d", 1, 1, 1, &uid), 0);
	assert_int_equal(uid, 4);
	uidlist_free(&list);
	uidlist_free(&loaded);
}

static void test_duplicates(void **state)
{
	bool damaged;
	struct uidlist *list = parse_str("buzon-uidlist 1 5 10\n"
					 "1 5 5 a\n"
					 "1 5 5 b\n"
					 "3 5 5 c\n"
					 "4 5 5 c\n"
					 "end 5 10 4\n",
					 &damaged);

	assert_true(damaged);
	assert_int_equal(list->count, 2);
	assert_int_equal(uid_of(list, "a"), 1); /* the lower name keeps a shared UID */
	assert_int_equal(uid_of(list, "b"), 0);
	assert_int_equal(uid_of(list, "c"), 3); /* the lower UID is kept for a shared name */
	uidlist_free(&list);
}

/* A name twice is damage even when header, trailer and UID order look right (fuzzer finding):
 * an open from the index alone would otherwise list the message twice. */
static void test_duplicate_name_in_intact_file(void **state)
{
	bool damaged;
	struct uidlist *list =
	    parse_str("buzon-uidlist 1 5 10\n1 5 5 a\n3 6 6 b\n4 5 5 a\nend 5 10 3\n", &damaged);

	assert_true(damaged);
	assert_int_equal(list->count, 2);
	assert_int_equal(uid_of(list, "a"), 1);
	assert_int_equal(uid_of(list, "b"), 3);
	assert_int_equal(list->next_uid, 10);
	uidlist_free(&list);
	/* the same without header and trailer: next_uid still clears the dropped UID */
	list = parse_str("1 2 45 0\n65 5 65 0\n", &damaged);
	assert_true(damaged);
	assert_int_equal(list->count, 1);
	assert_int_equal(uid_of(list, "0"), 1);
	assert_int_equal(list->next_uid, 66);
	uidlist_free(&list);
}

static void test_trailer_mismatch(void **state)
{
	bool damaged;
	struct uidlist *list = parse_str("buzon-uidlist 1 5 10\n1 5 5 a\nend 5 10 2\n", &damaged);

	assert_true(damaged);
	assert_int_equal(list->count, 1);
	uidlist_free(&list);
	list = parse_str("buzon-uidlist 1 5 10\n1 5 5 a\nend 6 10 1\n", &damaged);
	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 5);
	uidlist_free(&list);
	list = parse_str("buzon-uidlist 1 5 10\n1 5 5 a\nend 5 10 1\n", &damaged);
	assert_false(damaged);
	uidlist_free(&list);
}

static void test_bad_header_values(void **state)
{
	bool damaged;
	struct uidlist *list;

	list = parse_str("buzon-uidlist 2 5 10\nend 5 10 0\n", &damaged); /* no stamp */
	assert_true(damaged);
	uidlist_free(&list);
	list = parse_str("buzon-uidlist 4 5 10 - -\nend 5 10 0\n", &damaged); /* unknown version */
	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 5); /* from the trailer */
	uidlist_free(&list);
	list = parse_str("buzon-uidlist 1 0 10\nend 0 10 0\n", &damaged); /* uidvalidity 0 */
	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 0);
	uidlist_free(&list);
	list = parse_str("buzon-uidlist 1 4294967296 10\nend 5 10 0\n", &damaged);
	assert_true(damaged);
	assert_int_equal(list->uidvalidity, 5);
	uidlist_free(&list);
	list = parse_str("buzon-uidlist 1 5 10 extra\nend 5 10 0\n", &damaged);
	assert_true(damaged);
	uidlist_free(&list);
}

static void test_uid_space_exhausted(void **state)
{
	bool damaged;
	uint32_t uid;
	struct uidlist *list =
	    parse_str("buzon-uidlist 1 5 4294967295\nend 5 4294967295 0\n", &damaged);

	assert_false(damaged);
	assert_int_equal(uidlist_add(list, "a", 1, 1, 1, &uid), 0);
	assert_true(uid == 0xffffffffU);
	assert_int_equal(uidlist_add(list, "b", 1, 1, 1, &uid), -1);
	uidlist_free(&list);
}

static void test_lookup_many(void **state)
{
	struct uidlist *list = uidlist_new(1);
	char name[32];
	uint32_t uid;

	/* Added in reverse name order, looked up after: exercises the re-sort. */
	for (int i = 20000; i > 0; i--) {
		snprintf(name, sizeof(name), "msg%06d", i);
		assert_int_equal(uidlist_add(list, name, strlen(name), 1, 1, &uid), 0);
	}
	for (int i = 1; i <= 20000; i++) {
		snprintf(name, sizeof(name), "msg%06d", i);
		assert_int_equal(uid_of(list, name), (uint32_t)(20001 - i));
	}
	assert_null(uidlist_lookup(list, "msg", 3));
	assert_null(uidlist_lookup(list, "msg0000011", 10));
	assert_null(uidlist_lookup(list, "msg000001", 8)); /* a prefix of a real name */
	assert_null(uidlist_lookup(list, "", 0));
	assert_null(uidlist_lookup(list, "a:2,", 4));
	/* Adding after lookups keeps lookups right. */
	assert_int_equal(uidlist_add(list, "aaa", 3, 1, 1, &uid), 0);
	assert_int_equal(uid_of(list, "aaa"), 20001);
	assert_int_equal(uid_of(list, "msg000500"), 19501);
	uidlist_free(&list);
}

static void test_basename_valid(void **state)
{
	char long_name[UIDLIST_BASENAME_MAX + 2];

	assert_true(uidlist_basename_valid("1700000000.M1P2.host,S=5", 24));
	assert_false(uidlist_basename_valid("", 0));
	assert_false(uidlist_basename_valid("a b", 3));
	assert_false(uidlist_basename_valid("a/b", 3));
	assert_false(uidlist_basename_valid("a:b", 3));
	assert_false(uidlist_basename_valid("a\r", 2));
	assert_false(uidlist_basename_valid("a\0b", 3));
	memset(long_name, 'x', sizeof(long_name));
	assert_true(uidlist_basename_valid(long_name, UIDLIST_BASENAME_MAX));
	assert_false(uidlist_basename_valid(long_name, UIDLIST_BASENAME_MAX + 1));
}

static void test_save_replaces_atomically(void **state)
{
	struct fixture *fx = *state;
	struct uidlist *list = uidlist_new(3);
	char *error = NULL;
	uint32_t uid;

	write_file(fx->path, "old contents\n");
	assert_int_equal(uidlist_add(list, "x", 1, 1, 1, &uid), 0);
	assert_int_equal(uidlist_save(list, fx->path, &error), 0);
	/* No temp files are left behind, and the file is private. */
	char *cmd = xasprintf("test $(ls -A '%s' | wc -l) -eq 1", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	struct stat st;
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	uidlist_free(&list);

	/* Saving into a missing directory fails and says where. */
	char *bad = xasprintf("%s/nonexistent/%s", fx->dir, UIDLIST_FILE_NAME);
	list = uidlist_new(3);
	assert_int_equal(uidlist_save(list, bad, &error), -1);
	assert_non_null(strstr(error, "nonexistent"));
	free(error);
	free(bad);
	uidlist_free(&list);
}

/* A crash between writing the temp file and renaming it leaves the temp file: the next save
 * overwrites it (even a longer one, so nothing of it survives), and crashes do not pile them up. */
static void test_save_overwrites_temp_left_by_crash(void **state)
{
	struct fixture *fx = *state;
	struct uidlist *list = uidlist_new(5), *loaded = NULL;
	char *tmp = xasprintf("%s%s", fx->path, UIDLIST_TEMP_SUFFIX);
	char *error = NULL;
	bool damaged;
	uint32_t uid;

	write_file(tmp,
		   "buzon-uidlist 2 5 99 - -\n1 1 1 left-by-a-crash-and-longer-than-the-index\n");
	assert_int_equal(uidlist_add(list, "x", 1, 1, 1, &uid), 0);
	assert_int_equal(uidlist_save(list, fx->path, &error), 0);
	assert_int_equal(access(tmp, F_OK), -1);
	char *cmd = xasprintf("test $(ls -A '%s' | wc -l) -eq 1", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	assert_int_equal(uidlist_load(fx->path, &loaded, &damaged, &error), 1);
	assert_false(damaged);
	assert_int_equal(loaded->count, 1);
	assert_int_equal(uid_of(loaded, "x"), uid);
	assert_int_equal(loaded->next_uid, 2);
	uidlist_free(&loaded);
	uidlist_free(&list);
	free(tmp);
}

static void test_parse_garbage_never_crashes(void **state)
{
	uint32_t seed = 99;
	char buf[200];
	static const char alphabet[] = "0123456789 -\nendbuzon-uidlist:/ab";

	for (int round = 0; round < 20000; round++) {
		size_t len = (size_t)(round % (int)sizeof(buf));
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			buf[i] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
		}
		bool damaged;
		struct uidlist *list = uidlist_parse(buf, len, &damaged);
		assert_true(list->next_uid >= 1);
		for (size_t i = 0; i < list->count; i++)
			assert_true(list->entries[i].uid < list->next_uid);
		/* What parses formats and re-parses to the same text. */
		if (list->uidvalidity != 0) {
			size_t len1, len2;
			char *text1 = uidlist_format(list, &len1);
			struct uidlist *again = uidlist_parse(text1, len1, &damaged);
			assert_false(damaged);
			char *text2 = uidlist_format(again, &len2);
			assert_string_equal(text1, text2);
			free(text1);
			free(text2);
			uidlist_free(&again);
		}
		uidlist_free(&list);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test(test_info_and_stamp_round_trip),
	    cmocka_unit_test(test_times_round_trip),
	    cmocka_unit_test(test_damaged_times),
	    cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unreadable_path, setup, teardown),
	    cmocka_unit_test(test_damaged_lines),
	    cmocka_unit_test(test_truncated_file),
	    cmocka_unit_test(test_header_recovered_from_trailer),
	    cmocka_unit_test_setup_teardown(test_both_bounds_lost, setup, teardown),
	    cmocka_unit_test(test_next_uid_above_max),
	    cmocka_unit_test_setup_teardown(test_uids_never_reused, setup, teardown),
	    cmocka_unit_test(test_duplicates),
	    cmocka_unit_test(test_duplicate_name_in_intact_file),
	    cmocka_unit_test(test_trailer_mismatch),
	    cmocka_unit_test(test_bad_header_values),
	    cmocka_unit_test(test_uid_space_exhausted),
	    cmocka_unit_test(test_lookup_many),
	    cmocka_unit_test(test_basename_valid),
	    cmocka_unit_test_setup_teardown(test_save_replaces_atomically, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_save_overwrites_temp_left_by_crash, setup,
					    teardown),
	    cmocka_unit_test(test_parse_garbage_never_crashes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

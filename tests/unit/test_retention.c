/* Unit tests for the undelete window and EXPIRE of the Maildir backend (store/retention.h), each in
 * its own mkdtemp() directory: moves at commit, opens that hide retained messages (also from the
 * index alone), EXPIRE, bounded purges, the repair after a crash, undelete, and the mail-root
 * walk of the background purge. */
#include <dirent.h>
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

#include "temp_maildir.h"

#include "core/util.h"
#include "store/mailroot_walk.h"
#include "store/retention.h"
#include "store/store.h"
#include "store/uidlist.h"

static const struct store_backend *const backend = &store_backend_maildir;

#define DAY 86400

static int setup(void **state)
{
	return temp_maildir_setup(state, "retention", false);
}

static int teardown(void **state)
{
	return temp_maildir_teardown(state);
}

/* ---- helpers ---- */

static void make_dir(const char *path)
{
	assert_int_equal(mkdir(path, 0700), 0);
}

static void put_file(const char *path, const char *data)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, data, strlen(data)), 0);
	assert_int_equal(close(fd), 0);
}

/* A Maildir with count messages in cur/, named m<i>:2, and holding "message <i>\n". */
static void make_mailbox(const struct temp_maildir *fx, int count)
{
	static const char *const subs[] = {"cur", "new", "tmp"};

	make_dir(fx->maildir);
	for (size_t i = 0; i < 3; i++) {
		char *sub = xasprintf("%s/%s", fx->maildir, subs[i]);
		make_dir(sub);
		free(sub);
	}
	for (int i = 1; i <= count; i++) {
		char *path = xasprintf("%s/cur/m%d:2,", fx->maildir, i);
		char *data = xasprintf("message %d\n", i);
		put_file(path, data);
		free(path);
		free(data);
	}
}

static struct store_mailbox *open_ok(const struct temp_maildir *fx)
{
	struct store_mailbox *box = NULL;
	enum store_error kind;
	char *error = NULL;

	if (backend->open(fx->maildir, &box, &kind, &error) < 0)
		fail_msg("open failed: %s", error);
	return box;
}

static void commit_ok(struct store_mailbox *box, const bool *deleted, const bool *retrieved,
		      const struct store_policy *policy, struct store_commit_report *report)
{
	struct store_changes changes = {.deleted = deleted,
					.retrieved = retrieved,
					.mark_seen = true,
					.policy = policy,
					.report_r = report};
	enum store_error kind;
	char *error = NULL;

	if (backend->commit(box, &changes, &kind, &error) < 0)
		fail_msg("commit failed: %s", error);
}

static bool exists(const struct temp_maildir *fx, const char *sub, const char *name)
{
	char *path = xasprintf("%s/%s/%s", fx->maildir, sub, name);
	bool ret = access(path, F_OK) == 0;

	free(path);
	return ret;
}

static int count_files(const struct temp_maildir *fx, const char *sub)
{
	char *path = xasprintf("%s/%s", fx->maildir, sub);
	DIR *dir = opendir(path);
	struct dirent *d;
	int count = 0;

	free(path);
	if (dir == NULL)
		return 0;
	while ((d = readdir(dir)) != NULL)
		count += d->d_name[0] != '.';
	closedir(dir);
	return count;
}

/* The message's content, read through the backend. */
static char *read_message(struct store_mailbox *box, size_t index)
{
	enum store_error kind;
	char *error = NULL;
	struct store_reader *reader = backend->read_open(box, index, &kind, &error);
	char buf[256];

	if (reader == NULL)
		fail_msg("read_open failed: %s", error);
	ssize_t n = backend->read(reader, buf, sizeof(buf) - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	backend->read_close(&reader);
	return xstrdup(buf);
}

static struct uidlist *load_index(const struct temp_maildir *fx)
{
	char *path = xasprintf("%s/%s", fx->maildir, UIDLIST_FILE_NAME);
	struct uidlist *list = NULL;
	bool damaged;
	char *error = NULL;

	assert_int_equal(uidlist_load(path, &list, &damaged, &error), 1);
	assert_false(damaged);
	free(path);
	return list;
}

/* Sets cur/ and new/ back in time, as after a quiet while: the next open may record them and
 * the one after opens from the index alone. */
static void age_dirs(const struct temp_maildir *fx)
{
	struct timespec past[2] = {{.tv_sec = time(NULL) - 60}, {.tv_sec = time(NULL) - 60}};

	for (int i = 0; i < 2; i++) {
		char *path = xasprintf("%s/%s", fx->maildir, i == 0 ? "cur" : "new");
		assert_int_equal(utimensat(AT_FDCWD, path, past, 0), 0);
		free(path);
	}
}

static struct store_policy policy_at(unsigned int retention, int expire_days, time_t now)
{
	return (struct store_policy){
	    .deleted_retention_secs = retention, .expire_days = expire_days, .now = now};
}

/* ---- tests ---- */

static void test_due_rules(void **state)
{
	struct store_policy p = policy_at(3600, 2, 1000000);
	struct store_mailbox box = {.oldest_retrieved_at = 0, .oldest_deleted_at = 0};

	assert_false(store_expire_due(&p, 0));
	assert_false(store_expire_due(&p, 1000000 - 2 * DAY + 1));
	assert_true(store_expire_due(&p, 1000000 - 2 * DAY));
	p.expire_days = -1;
	assert_false(store_expire_due(&p, 1));
	p.expire_days = 0;
	assert_true(store_expire_due(&p, 1000000)); /* EXPIRE 0: at this very commit */
	assert_false(store_purge_due(&p, 0));
	assert_false(store_purge_due(&p, 1000000 - 3599));
	assert_true(store_purge_due(&p, 1000000 - 3600));
	assert_false(store_upkeep_due(&box, NULL));
	p.expire_days = -1;
	assert_false(store_upkeep_due(&box, &p));
	box.oldest_deleted_at = 1000000 - 3600;
	assert_true(store_upkeep_due(&box, &p));
}

/* DELE moves the file into the hidden area; every later open (full scan or from the index
 * alone) leaves it out, and its UID is kept and never given again. */
static void test_commit_retains_and_opens_hide(void **state)
{
	struct temp_maildir *fx = *state;
	struct store_policy policy = policy_at(DAY, -1, time(NULL));
	struct store_commit_report report;

	make_mailbox(fx, 4);
	struct store_mailbox *box = open_ok(fx);
	assert_int_equal(box->count, 4);
	uint32_t uid3 = box->messages[2].uid;
	bool deleted[4] = {false, true, false, false};
	commit_ok(box, deleted, NULL, &policy, &report);
	assert_int_equal(report.freed_octets, strlen("message 2\n"));
	backend->close(&box);
	assert_true(exists(fx, RETENTION_DIR_NAME, "m2:2,"));
	assert_false(exists(fx, "cur", "m2:2,"));

	struct uidlist *list = load_index(fx);
	struct uidlist_entry *e = uidlist_lookup(list, "m2", 2);
	assert_non_null(e);
	assert_int_equal(e->deleted_at, policy.now);
	assert_string_equal(e->info, "2,");
	uidlist_free(&list);

	/* twice: the first open records the directories' times, the second trusts the index */
	for (int round = 0; round < 3; round++) {
		age_dirs(fx);
		box = open_ok(fx);
		assert_int_equal(box->count, 3);
		assert_int_equal(box->messages[1].uid, uid3);
		assert_int_equal(box->oldest_deleted_at, policy.now);
		/* names from the index must skip the retained entry: message 2 is m3 */
		char *content = read_message(box, 1);
		assert_string_equal(content, "message 3\n");
		free(content);
		backend->close(&box);
	}
	list = load_index(fx);
	assert_true(list->stamp.valid); /* the last open was from the index */
	assert_int_equal(list->next_uid, 5);
	uidlist_free(&list);
}

/* A commit from an index-only open, with a retained entry between live ones, deletes and marks
 * the right files. */
static void test_commit_from_index_only_open(void **state)
{
	struct temp_maildir *fx = *state;
	struct store_policy policy = policy_at(DAY, -1, time(NULL));

	make_mailbox(fx, 4);
	struct store_mailbox *box = open_ok(fx);
	bool first[4] = {true, false, false, false};
	commit_ok(box, first, NULL, &policy, NULL);
	backend->close(&box);
	age_dirs(fx);
	box = open_ok(fx); /* records the times */
	backend->close(&box);
	box = open_ok(fx); /* from the index */
	assert_int_equal(box->count, 3);
	bool del[3] = {false, true, false};
	bool retr[3] = {true, false, false};
	commit_ok(box, del, retr, &policy, NULL);
	backend->close(&box);
	assert_true(exists(fx, RETENTION_DIR_NAME, "m1:2,"));
	assert_true(exists(fx, RETENTION_DIR_NAME, "m3:2,"));
	assert_true(exists(fx, "cur", "m2:2,S"));
	assert_true(exists(fx, "cur", "m4:2,"));
}

/* Retrieval times are recorded at commit; EXPIRE N deletes those retrieved N days before, at a
 * later commit, through the undelete area when the window is on. */
static void test_expire(void **state)
{
	struct temp_maildir *fx = *state;
	time_t t0 = 1700000000;
	struct store_policy policy = policy_at(DAY, 2, t0);
	struct store_commit_report report;

	make_mailbox(fx, 3);
	struct store_mailbox *box = open_ok(fx);
	bool retr[3] = {true, false, true};
	commit_ok(box, NULL, retr, &policy, &report);
	assert_int_equal(report.expired, 0);
	backend->close(&box);
	struct uidlist *list = load_index(fx);
	assert_int_equal(uidlist_lookup(list, "m1", 2)->retrieved_at, t0);
	assert_int_equal(uidlist_lookup(list, "m2", 2)->retrieved_at, 0);
	uidlist_free(&list);

	policy.now = t0 + 2 * DAY - 1;
	box = open_ok(fx);
	assert_int_equal(box->oldest_retrieved_at, t0);
	assert_false(store_upkeep_due(box, &policy));
	backend->close(&box);

	policy.now = t0 + 2 * DAY;
	box = open_ok(fx);
	assert_true(store_upkeep_due(box, &policy));
	commit_ok(box, NULL, NULL, &policy, &report);
	assert_int_equal(report.expired, 2);
	backend->close(&box);
	assert_int_equal(count_files(fx, "cur"), 1);
	assert_int_equal(count_files(fx, RETENTION_DIR_NAME), 2);

	/* EXPIRE 0 without the window: what this session retrieved is unlinked now */
	policy = policy_at(0, 0, t0 + 3 * DAY);
	box = open_ok(fx);
	bool retr_one[1] = {true};
	commit_ok(box, NULL, retr_one, &policy, &report);
	assert_int_equal(report.expired, 1);
	backend->close(&box);
	assert_int_equal(count_files(fx, "cur"), 0);
}

/* A commit purges at most purge_max of the due messages; the rest are counted as left. */
static void test_purge_bounded(void **state)
{
	struct temp_maildir *fx = *state;
	time_t t0 = 1700000000;
	struct store_policy policy = policy_at(3600, -1, t0);
	struct store_commit_report report;

	make_mailbox(fx, 5);
	struct store_mailbox *box = open_ok(fx);
	bool all[5] = {true, true, true, true, false};
	commit_ok(box, all, NULL, &policy, &report);
	backend->close(&box);
	assert_int_equal(count_files(fx, RETENTION_DIR_NAME), 4);

	policy.now = t0 + 3600;
	policy.purge_max = 3;
	box = open_ok(fx);
	commit_ok(box, NULL, NULL, &policy, &report);
	backend->close(&box);
	assert_int_equal(report.purged, 3);
	assert_int_equal(report.purge_left, 1);
	assert_int_equal(count_files(fx, RETENTION_DIR_NAME), 1);
	struct uidlist *list = load_index(fx);
	assert_int_equal(list->count, 2);
	assert_int_equal(list->next_uid, 6);
	uidlist_free(&list);

	/* an entry whose file went behind our back is dropped too */
	char *cmd = xasprintf("rm -f '%s/%s/'*", fx->maildir, RETENTION_DIR_NAME);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	box = open_ok(fx);
	commit_ok(box, NULL, NULL, &policy, &report);
	backend->close(&box);
	assert_int_equal(report.purged, 1);
	list = load_index(fx);
	assert_int_equal(list->count, 1);
	uidlist_free(&list);
}

/* The state of a crash between the move and the index save: the next open marks the moved
 * message deleted instead of forgetting it; one moved back to cur/ is live again. */
static void test_recover_after_crash(void **state)
{
	struct temp_maildir *fx = *state;

	make_mailbox(fx, 3);
	struct store_mailbox *box = open_ok(fx);
	uint32_t uid2 = box->messages[1].uid;
	backend->close(&box);
	char *area = xasprintf("%s/%s", fx->maildir, RETENTION_DIR_NAME);
	char *from = xasprintf("%s/cur/m2:2,", fx->maildir);
	char *to = xasprintf("%s/m2:2,", area);
	make_dir(area);
	assert_int_equal(rename(from, to), 0);

	box = open_ok(fx);
	assert_int_equal(box->count, 2);
	backend->close(&box);
	struct uidlist *list = load_index(fx);
	struct uidlist_entry *e = uidlist_lookup(list, "m2", 2);
	assert_non_null(e);
	assert_int_equal(e->uid, uid2);
	assert_true(e->deleted_at != 0);
	uidlist_free(&list);

	/* an undelete that moved it back but could not save: cur/ wins */
	assert_int_equal(rename(to, from), 0);
	box = open_ok(fx);
	assert_int_equal(box->count, 3);
	assert_int_equal(box->messages[1].uid, uid2);
	backend->close(&box);
	list = load_index(fx);
	assert_int_equal(uidlist_lookup(list, "m2", 2)->deleted_at, 0);
	uidlist_free(&list);
	free(area);
	free(from);
	free(to);
}

struct restore_log {
	int restored, would, missing, failed;
	char uidls[8][STORE_UIDL_MAX + 1];
};

static void restore_report(void *context, const struct retention_message *msg,
			   enum retention_outcome outcome, const char *error)
{
	struct restore_log *log = context;
	int seen = log->restored + log->would + log->missing + log->failed;

	if (seen < 8)
		snprintf(log->uidls[seen], sizeof(log->uidls[seen]), "%s", msg->uidl);
	log->restored += outcome == RETENTION_RESTORED;
	log->would += outcome == RETENTION_WOULD_RESTORE;
	log->missing += outcome == RETENTION_MISSING;
	log->failed += outcome == RETENTION_FAILED;
}

static void test_undelete(void **state)
{
	struct temp_maildir *fx = *state;
	time_t t0 = time(NULL);
	struct store_policy policy = policy_at(DAY, -1, t0 - 100);
	struct retention_undelete_totals totals;
	struct restore_log log = {0};
	enum store_error kind;
	char *error = NULL;

	make_mailbox(fx, 4);
	struct store_mailbox *box = open_ok(fx);
	char *uidl1 = xstrdup(box->messages[0].uidl), *uidl3 = xstrdup(box->messages[2].uidl);
	bool first[4] = {true, false, false, false};
	commit_ok(box, first, NULL, &policy, NULL);
	backend->close(&box);
	policy.now = t0;
	box = open_ok(fx);
	bool more[3] = {false, true, true}; /* m3, m4, deleted later */
	commit_ok(box, more, NULL, &policy, NULL);
	backend->close(&box);

	/* dry run: nothing moves */
	struct retention_undelete_options options = {.dry_run = true};
	assert_int_equal(
	    retention_undelete(fx->maildir, &options, restore_report, &log, &totals, &kind, &error),
	    0);
	assert_int_equal(log.would, 3);
	assert_int_equal(totals.restored, 3);
	assert_int_equal(count_files(fx, RETENTION_DIR_NAME), 3);

	/* by UIDL */
	const char *wanted[] = {uidl3};
	options = (struct retention_undelete_options){.uidls = wanted, .uidl_count = 1};
	memset(&log, 0, sizeof(log));
	assert_int_equal(
	    retention_undelete(fx->maildir, &options, restore_report, &log, &totals, &kind, &error),
	    0);
	assert_int_equal(log.restored, 1);
	assert_string_equal(log.uidls[0], uidl3);
	assert_true(exists(fx, "cur", "m3:2,"));

	/* by time: only what was deleted since t0 - 50 (m4), and a missing file is reported */
	char *m1 = xasprintf("%s/%s/m1:2,", fx->maildir, RETENTION_DIR_NAME);
	assert_int_equal(unlink(m1), 0);
	free(m1);
	options = (struct retention_undelete_options){.since = t0 - 50};
	memset(&log, 0, sizeof(log));
	assert_int_equal(
	    retention_undelete(fx->maildir, &options, restore_report, &log, &totals, &kind, &error),
	    0);
	assert_int_equal(log.restored, 1);
	assert_int_equal(log.missing, 0);
	options.since = 0;
	memset(&log, 0, sizeof(log));
	assert_int_equal(
	    retention_undelete(fx->maildir, &options, restore_report, &log, &totals, &kind, &error),
	    0);
	assert_int_equal(log.missing, 1);
	assert_string_equal(log.uidls[0], uidl1);

	/* every restored message keeps its UIDL; the lost one's UID is not given again */
	box = open_ok(fx);
	assert_int_equal(box->count, 3);
	assert_string_equal(box->messages[1].uidl, uidl3);
	backend->close(&box);
	struct uidlist *list = load_index(fx);
	assert_int_equal(list->count, 3);
	assert_int_equal(list->next_uid, 5);
	uidlist_free(&list);

	/* while a session holds the mailbox nothing happens */
	box = open_ok(fx);
	options = (struct retention_undelete_options){0};
	assert_int_equal(
	    retention_undelete(fx->maildir, &options, restore_report, &log, &totals, &kind, &error),
	    -1);
	assert_int_equal(kind, STORE_ERROR_IN_USE);
	free(error);
	backend->close(&box);
	free(uidl1);
	free(uidl3);
}

/* retention_purge(): due entries, and files no entry knows once their ctime is old enough; a
 * missing Maildir is left alone (not created). */
static void test_purge_orphans_and_missing(void **state)
{
	struct temp_maildir *fx = *state;
	struct store_policy policy = policy_at(3600, -1, time(NULL));
	struct store_commit_report report;
	enum store_error kind;
	char *error = NULL;

	assert_int_equal(retention_purge(fx->maildir, &policy, &report, &kind, &error), 0);
	assert_int_equal(access(fx->maildir, F_OK), -1);
	make_mailbox(fx, 1);
	char *area = xasprintf("%s/%s", fx->maildir, RETENTION_DIR_NAME);
	char *orphan = xasprintf("%s/lost.M1:2,S", area);
	make_dir(area);
	put_file(orphan, "lost\n");
	assert_true(retention_purge_maybe_due(fx->maildir, 0, time(NULL)));
	assert_false(retention_purge_maybe_due(fx->maildir, 3600, time(NULL)));
	assert_int_equal(retention_purge(fx->maildir, &policy, &report, &kind, &error), 0);
	assert_int_equal(report.purged, 0); /* too young */
	policy.now += 3601;
	assert_int_equal(retention_purge(fx->maildir, &policy, &report, &kind, &error), 0);
	assert_int_equal(report.purged, 1);
	assert_int_equal(access(orphan, F_OK), -1);
	assert_int_equal(count_files(fx, "cur"), 1);
	free(area);
	free(orphan);
}

/* Collects a whole pass of the walk, stepping with a small budget. */
static int walk_all(struct mailroot_walk *walk, char found[][128], int max)
{
	int count = 0, steps = 0, ret;
	const char *maildir;

	for (;;) {
		size_t budget = 2;
		ret = mailroot_walk_next(walk, &budget, &maildir);
		assert_true(++steps < 1000);
		if (ret < 0)
			break;
		if (ret == 1 && count < max)
			snprintf(found[count++], 128, "%s", maildir);
	}
	return count;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void test_mailroot_walk(void **state)
{
	struct temp_maildir *fx = *state;
	static const char *const dirs[] = {"d1",       "d1/alice", "d1/bob", "d2",
					   "d2/carol", ".hidden",  "d3"};
	char found[8][128];

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char *path = xasprintf("%s/%s", fx->dir, dirs[i]);
		make_dir(path);
		free(path);
	}
	char *file = xasprintf("%s/d1/not-a-dir", fx->dir);
	put_file(file, "x");
	free(file);

	char *location = xasprintf("maildir:%s/%%d/%%n", fx->dir);
	struct mailroot_walk *walk = mailroot_walk_new(location);
	assert_non_null(walk);
	for (int pass = 0; pass < 2; pass++) { /* a second pass starts over */
		int n = walk_all(walk, found, 8);
		assert_int_equal(n, 3);
		qsort(found, (size_t)n, sizeof(found[0]), cmp_str);
		char *expect = xasprintf("%s/d1/alice", fx->dir);
		assert_string_equal(found[0], expect);
		free(expect);
		expect = xasprintf("%s/d2/carol", fx->dir);
		assert_string_equal(found[2], expect);
		free(expect);
	}
	mailroot_walk_free(&walk);
	assert_null(walk);
	free(location);

	/* a literal component after the variable one */
	location = xasprintf("maildir:%s/%%u/Maildir", fx->dir);
	walk = mailroot_walk_new(location);
	assert_int_equal(walk_all(walk, found, 8), 3); /* d1, d2, d3: each /Maildir */
	mailroot_walk_free(&walk);
	free(location);
	assert_null(mailroot_walk_new("maildir:relative/%u"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_due_rules),
	    cmocka_unit_test_setup_teardown(test_commit_retains_and_opens_hide, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_from_index_only_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_expire, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_purge_bounded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recover_after_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_undelete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_purge_orphans_and_missing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mailroot_walk, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

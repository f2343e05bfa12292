/* The Maildir undelete area (store/retention.h): the directory deleted messages wait in, its purge
 * at commit time, the repair after a crash, and `buzon undelete` / `buzon purge`.
 *
 * Crash safety, step by step (the index is always written last, atomically):
 *  - commit moves cur/X to buzon-deleted/X, fsyncs both directories, then marks the entry deleted:
 *    a crash before the index save leaves a live entry whose file is not in cur/; the next full
 *    scan finds it here (maildir_retained_recover()) and marks it deleted then;
 *  - purge unlinks buzon-deleted/X, fsyncs the directory, then drops the entry: a crash in
 *    between leaves an entry without a file, which the next purge drops (ENOENT is success);
 *  - undelete moves buzon-deleted/X back to cur/X (never over an existing file), fsyncs, then
 *    clears the mark: a crash in between leaves a marked entry whose file is in cur/, which the
 *    next scan takes as live again (maildir.c, maildir_scan_one()).
 * A file here that no entry knows (its entry lost with a damaged index) is removed by a purge once
 * its ctime is as old as the retention. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "store/maildir_private.h"
#include "store/maildir_testing.h"
#include "store/quota.h"
#include "store/retention.h"

/* Mailbox directories hold private mail: only the owner may enter them. */
#define RETENTION_DIR_MODE 0700

char *maildir_entry_file_name(const struct uidlist_entry *entry)
{
	if (entry->info == NULL)
		return xstrdup(entry->basename);
	return xasprintf("%s:%s", entry->basename, entry->info);
}

/* The undelete area's path in the Maildir, newly allocated. */
static char *retention_dir_path(const char *maildir)
{
	return xasprintf("%s/%s", maildir, RETENTION_DIR_NAME);
}

int maildir_retained_dir(struct maildir_mailbox *mbox, bool create)
{
	if (mbox->retained_fd >= 0)
		return mbox->retained_fd;
	char *path = retention_dir_path(mbox->path);
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0 && errno == ENOENT && create) {
		/* the new directory must outlive a crash before any message is moved into it */
		if ((mkdir(path, RETENTION_DIR_MODE) < 0 && errno != EEXIST) ||
		    fsync_dir(mbox->path) < 0) {
			int err = errno;
			free(path);
			errno = err;
			return -1;
		}
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	}
	int err = errno;
	free(path);
	mbox->retained_fd = fd;
	errno = err;
	return fd;
}

void maildir_retained_release(struct maildir_mailbox *mbox)
{
	if (mbox->retained_fd >= 0)
		close(mbox->retained_fd);
	mbox->retained_fd = -1;
}

/* Calls visit(mbox, dir, name, context) for each plausible file name of the undelete area.
 * Returns how many visits returned true; 0 if the area does not exist or cannot be read. */
static size_t maildir_retained_each(struct maildir_mailbox *mbox,
				    bool (*visit)(struct maildir_mailbox *, int, const char *,
						  void *),
				    void *context)
{
	int dir = maildir_retained_dir(mbox, false);
	size_t count = 0;
	struct dirent *d;

	if (dir < 0)
		return 0;
	/* opendir() by path, not fdopendir(): that one calls fcntl(), which the workers' seccomp
	 * list does not allow with its arguments */
	char *path = retention_dir_path(mbox->path);
	DIR *list = opendir(path);
	free(path);
	if (list == NULL) {
		log_warn("maildir_retained_unreadable", "path=%s error=%s", log_quote(mbox->path),
			 log_quote(strerror(errno)));
		return 0;
	}
	while ((d = readdir(list)) != NULL) {
		if ((d->d_type == DT_REG || d->d_type == DT_UNKNOWN) &&
		    maildir_name_plausible(d->d_name) && visit(mbox, dir, d->d_name, context))
			count++;
	}
	closedir(list);
	return count;
}

static bool maildir_retained_recover_one(struct maildir_mailbox *mbox, int dir, const char *name,
					 void *context)
{
	const time_t *now = context;
	size_t base_len = maildir_name_base_len(name);
	struct uidlist_entry *entry = uidlist_lookup(mbox->uidlist, name, base_len);
	const char *info = maildir_name_info(name);

	if (entry == NULL || entry->present || entry->deleted_at != 0)
		return false;
	entry->deleted_at = *now;
	entry->present = true;
	(void)uidlist_entry_set_info(entry, info != NULL ? info + 1 : NULL,
				     info != NULL ? strlen(info + 1) : 0);
	log_warn("maildir_retained_recovered", "path=%s file=%s uid=%lu", log_quote(mbox->path),
		 log_quote(name), (unsigned long)entry->uid);
	return true;
}

size_t maildir_retained_recover(struct maildir_mailbox *mbox, time_t now)
{
	return maildir_retained_each(mbox, maildir_retained_recover_one, &now);
}

size_t maildir_retained_purge(struct maildir_mailbox *mbox, const struct store_policy *policy,
			      struct store_commit_report *report)
{
	struct uidlist *list = mbox->uidlist;
	size_t marked = 0, unlinked = 0;

	for (size_t i = 0; i < list->count; i++) {
		struct uidlist_entry *entry = &list->entries[i];
		if (entry->deleted_at == 0 || !store_purge_due(policy, entry->deleted_at))
			continue;
		if (policy->purge_max != 0 && marked >= policy->purge_max) {
			report->purge_left++;
			continue;
		}
		int dir = maildir_retained_dir(mbox, false);
		char *name = maildir_entry_file_name(entry);
		if (dir >= 0 && unlinkat(dir, name, 0) == 0) {
			unlinked++;
		} else if (errno != ENOENT) {
			/* kept, entry and all, for the next purge */
			log_warn("maildir_purge_failed", "path=%s file=%s error=%s",
				 log_quote(mbox->path), log_quote(name),
				 log_quote(strerror(errno)));
			free(name);
			continue;
		}
		free(name);
		entry->present = false;
		marked++;
		report->purged++;
	}
	/* if this flush fails, a crash may bring the files back without entries: then the orphan
	 * purge of retention_purge() removes them, so the entries may go anyway */
	if (unlinked > 0 && fsync(mbox->retained_fd) < 0)
		log_warn("maildir_purge_failed", "path=%s error=%s", log_quote(mbox->path),
			 log_quote(strerror(errno)));
	return marked;
}

/* ---- outside a session ---- */

/* Whether there is a Maildir at path at all: purges and undeletes never create one. */
static bool retention_maildir_exists(const char *maildir)
{
	struct stat st;

	return stat(maildir, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool retention_orphan_purge_one(struct maildir_mailbox *mbox, int dir, const char *name,
				       void *context)
{
	const struct store_policy *policy = context;
	struct uidlist_entry *entry =
	    uidlist_lookup(mbox->uidlist, name, maildir_name_base_len(name));
	struct stat st;

	if (entry != NULL && entry->deleted_at != 0) {
		char *known = maildir_entry_file_name(entry);
		bool same = strcmp(known, name) == 0;
		free(known);
		if (same)
			return false;
	}
	if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    !store_purge_due(policy, st.st_ctime) || unlinkat(dir, name, 0) < 0)
		return false;
	log_info("maildir_orphan_purged", "path=%s file=%s", log_quote(mbox->path),
		 log_quote(name));
	return true;
}

int retention_purge(const char *maildir, const struct store_policy *policy,
		    struct store_commit_report *report_r, enum store_error *kind_r, char **error_r)
{
	const struct store_backend *backend = &store_backend_maildir;
	struct store_mailbox *box;
	struct store_changes changes = {.policy = policy, .report_r = report_r};
	struct store_policy orphan_policy = *policy;

	memset(report_r, 0, sizeof(*report_r));
	if (!retention_maildir_exists(maildir))
		return 0;
	if (backend->open(maildir, &box, kind_r, error_r) < 0)
		return -1;
	int ret = backend->commit(box, &changes, kind_r, error_r);
	/* after the commit: its lookups must come first on an index-only snapshot (maildir.c) */
	struct maildir_mailbox *mbox = (struct maildir_mailbox *)box;
	size_t orphans = maildir_retained_each(mbox, retention_orphan_purge_one, &orphan_policy);
	if (orphans > 0 && fsync(mbox->retained_fd) < 0)
		log_warn("maildir_purge_failed", "path=%s error=%s", log_quote(maildir),
			 log_quote(strerror(errno)));
	report_r->purged += orphans;
	backend->close(&box);
	return ret;
}

bool retention_purge_maybe_due(const char *maildir, unsigned int retention_secs, time_t now)
{
	char *path = retention_dir_path(maildir);
	DIR *dir = opendir(path);
	struct dirent *d;
	struct stat st;
	bool due = false;

	free(path);
	if (dir == NULL)
		return false;
	while (!due && (d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		due = fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		      S_ISREG(st.st_mode) && st.st_ctime <= now - (time_t)retention_secs;
	}
	closedir(dir);
	return due;
}

/* ---- undelete ---- */

static int retention_cmp_uid(const void *a, const void *b)
{
	const struct uidlist_entry *const *x = a, *const *y = b;

	return (*x)->uid < (*y)->uid ? -1 : (*x)->uid > (*y)->uid;
}

static bool retention_selected(const struct maildir_mailbox *mbox,
			       const struct retention_undelete_options *options,
			       const struct uidlist_entry *entry)
{
	char buf[STORE_UIDL_LEN + 1];

	if (entry->deleted_at == 0 || entry->deleted_at < options->since)
		return false;
	if (options->uidl_count == 0)
		return true;
	const char *uidl = maildir_uidl_text(mbox, entry->uid, buf);
	for (size_t i = 0; i < options->uidl_count; i++) {
		if (strcmp(options->uidls[i], uidl) == 0)
			return true;
	}
	return false;
}

/* The retained entries options selects, in ascending UID order; *count_r of them. The pointers
 * stay valid until the index is looked up, added to or swept. */
static struct uidlist_entry **retention_select(struct maildir_mailbox *mbox,
					       const struct retention_undelete_options *options,
					       size_t *count_r)
{
	struct uidlist *list = mbox->uidlist;
	struct uidlist_entry **chosen = xcalloc(list->count + 1, sizeof(*chosen));
	size_t count = 0;

	for (size_t i = 0; i < list->count; i++) {
		if (retention_selected(mbox, options, &list->entries[i]))
			chosen[count++] = &list->entries[i];
	}
	if (count > 1)
		qsort(chosen, count, sizeof(*chosen), retention_cmp_uid);
	*count_r = count;
	return chosen;
}

/* Moves the undelete area's name back into cur/ without replacing anything there. */
static int retention_move_back(struct maildir_mailbox *mbox, const char *name)
{
	int from = maildir_retained_dir(mbox, false);
	int to = maildir_cur_dir(mbox);

	if (from < 0 || to < 0)
		return -1;
	int ret = renameat2(from, name, to, name, RENAME_NOREPLACE);
	if (ret < 0 && errno == EINVAL) {
		/* no RENAME_NOREPLACE on this filesystem: racy only against tools ignoring locks */
		if (faccessat(to, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			errno = EEXIST;
			return -1;
		}
		ret = renameat(from, name, to, name);
	}
	return ret;
}

/* Restores one chosen entry (or reports it, in a dry run). Returns its outcome. */
static enum retention_outcome
retention_restore_one(struct maildir_mailbox *mbox,
		      const struct retention_undelete_options *options, struct uidlist_entry *entry,
		      retention_report_fn *report, void *context)
{
	struct retention_message msg = {.uid = entry->uid,
					.deleted_at = entry->deleted_at,
					.file_size = entry->file_size,
					.size = entry->crlf_size};
	enum retention_outcome outcome = RETENTION_WOULD_RESTORE;
	char *name = maildir_entry_file_name(entry);
	char uidl_buf[STORE_UIDL_LEN + 1];
	int err = 0;

	msg.uidl = maildir_uidl_text(mbox, entry->uid, uidl_buf);
	msg.name = name;
	if (msg.size == UIDLIST_SIZE_UNKNOWN)
		msg.size = msg.file_size;
	if (!options->dry_run) {
		outcome = RETENTION_RESTORED;
		if (retention_move_back(mbox, name) < 0) {
			err = errno;
			outcome = err == ENOENT ? RETENTION_MISSING : RETENTION_FAILED;
		}
	}
	if (outcome == RETENTION_RESTORED)
		entry->deleted_at = 0;
	if (outcome == RETENTION_MISSING)
		entry->present = false;
	report(context, &msg, outcome, outcome == RETENTION_FAILED ? strerror(err) : NULL);
	free(name);
	return outcome;
}

/* Makes the moves durable, then records them in the index. Returns 0, or -1 with *error_r. */
static int retention_undelete_save(struct maildir_mailbox *mbox, char **error_r)
{
	if ((mbox->cur_fd >= 0 && fsync(mbox->cur_fd) < 0) ||
	    (mbox->retained_fd >= 0 && fsync(mbox->retained_fd) < 0)) {
		*error_r = xasprintf("fsync(%s): %s", mbox->path, strerror(errno));
		return -1;
	}
	uidlist_sweep(mbox->uidlist);
	return uidlist_save(mbox->uidlist, mbox->index_path, error_r);
}

/* Adds the restored messages to the quota usage; a failure heals at the next login. */
static void retention_undelete_quota(const char *maildir,
				     const struct retention_undelete_totals *totals)
{
	char *error;

	if (quota_usage_add(maildir, (int64_t)totals->restored_octets, (int64_t)totals->restored,
			    &error) < 0) {
		log_warn("maildir_quota_failed", "error=%s", log_quote(error));
		free(error);
	}
}

int retention_undelete(const char *maildir, const struct retention_undelete_options *options,
		       retention_report_fn *report, void *context,
		       struct retention_undelete_totals *totals_r, enum store_error *kind_r,
		       char **error_r)
{
	const struct store_backend *backend = &store_backend_maildir;
	struct store_mailbox *box;
	size_t count, changed = 0;

	memset(totals_r, 0, sizeof(*totals_r));
	if (!retention_maildir_exists(maildir))
		return 0;
	if (backend->open(maildir, &box, kind_r, error_r) < 0)
		return -1;
	struct maildir_mailbox *mbox = (struct maildir_mailbox *)box;
	uidlist_mark_all(mbox->uidlist, true);
	struct uidlist_entry **chosen = retention_select(mbox, options, &count);
	for (size_t i = 0; i < count; i++) {
		uint64_t octets = chosen[i]->file_size;
		enum retention_outcome outcome =
		    retention_restore_one(mbox, options, chosen[i], report, context);
		if (outcome == RETENTION_RESTORED || outcome == RETENTION_WOULD_RESTORE) {
			totals_r->restored++;
			totals_r->restored_octets += octets != UIDLIST_SIZE_UNKNOWN ? octets : 0;
		}
		totals_r->failed += outcome == RETENTION_FAILED;
		changed += outcome == RETENTION_RESTORED || outcome == RETENTION_MISSING;
	}
	free(chosen);
	int ret = 0;
	if (changed > 0 && retention_undelete_save(mbox, error_r) < 0) {
		*kind_r = STORE_ERROR_TEMP;
		ret = -1;
	}
	if (!options->dry_run && totals_r->restored > 0)
		retention_undelete_quota(maildir, totals_r);
	backend->close(&box);
	return ret;
}

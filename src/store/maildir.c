/* The Maildir mailbox backend: the maildrop lock, a snapshot of cur/ with persistent UIDs from
 * buzon-uidlist, streaming reads, and the QUIT-time commit (deleted and expired messages out of
 * cur/, rename to add Seen, retrieval times into the index).
 *
 * On disk, under the mailbox directory:
 *   new/, cur/, tmp/   standard Maildir. Delivery writes tmp/ then renames into new/; open() moves
 *                      new/X to cur/X:2, and never looks in tmp/ (files there are incomplete).
 *                      A name too long for ":2," or a flag (NAME_MAX) keeps its name: it moves
 *                      to cur/X and goes without the Seen flag.
 *   buzon-lock         an empty file (0600) held with flock(LOCK_EX) while a session is open.
 *   buzon-uidlist      the UID index, format in uidlist.c, keyed by base name (the name up to
 *                      ':'), which stays the same when flags after ":2," change.
 *   buzon-uidlist.tmp  the next index while a save writes it (renamed over buzon-uidlist); one
 *                      left by a crash is overwritten by the next save.
 *   buzon-quota        quota usage for delivery (quota.h): reset to the snapshot's file sizes
 *                      at every open, and reduced by what commit() deletes.
 *   buzon-deleted/     the undelete window (store/retention.h, maildir_retention.c): deleted
 *                      messages under their names in cur/, kept in the index with their UIDs
 *                      and left out of every snapshot.
 * Message file names in cur/ may carry ",S=<file size>" and ",W=<size with CRLF line ends>" in the
 * base name (written by our delivery and by Dovecot); W= is believed only when S= matches the
 * file, and otherwise the size is counted once and cached in the index. */
#include <dirent.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "store/maildir_last_login.h"
#include "store/maildir_private.h"
#include "store/maildir_testing.h"
#include "store/quota.h"
#include "store/retention.h"
#include "store/store.h"
#include "store/uidl_import.h"
#include "store/uidlist.h"

#define MAILDIR_LOCK_NAME "buzon-lock"

/* Mailbox directories hold private mail: only the owner may enter them. */
#define MAILDIR_DIR_MODE 0700

/* Reading a message to count its bare LFs is sequential I/O; 64 KiB is large enough that syscall
 * overhead vanishes and small enough for the stack of any worker thread. */
#define MAILDIR_COUNT_CHUNK 65536

/* A directory's time is recorded in the index only once it is this many seconds old: changes
 * within one tick of the filesystem's clock would not move it, but any later change does. */
#define MAILDIR_STAMP_SETTLE_SECONDS 2

/* The maildir backend's reader; other backends define their own struct store_reader. */
struct store_reader {
	int fd;
};

/* A message found while building the snapshot. */
struct maildir_found {
	char *name;
	size_t base_len;
	uint32_t uid;
	uint64_t size;	     /* as RETR sends it */
	uint64_t file_size;  /* octets on disk, as far as the name, the index or stat() tell */
	time_t retrieved_at; /* from its index entry; 0 for a new message */
};

/* What the snapshot scan learned, and whether the index must be written. */
struct maildir_scan {
	struct maildir_found *found;
	size_t count;
	bool index_changed; /* save the index if possible */
	bool uids_assigned; /* new UIDs handed out: the index must be saved before they are shown */
};

const char *maildir_name_info(const char *name)
{
	return strchr(name, ':');
}

size_t maildir_name_base_len(const char *name)
{
	const char *info = maildir_name_info(name);

	return info == NULL ? strlen(name) : (size_t)(info - name);
}

/* A name our delivery or another Maildir writer could have made. Dot files are editor and tool
 * leftovers, and names with control bytes or spaces cannot be written to the index. */
bool maildir_name_plausible(const char *name)
{
	size_t len = strlen(name);

	if (name[0] == '.' || len > UIDLIST_BASENAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c <= ' ' || c == 0x7f || c == '/')
			return false;
	}
	return maildir_name_base_len(name) > 0;
}

/* Finds ",<key>=<digits>" in the base name, ending at ',' or the end of the base name. */
bool maildir_name_get_size(const char *name, size_t base_len, char key, uint64_t *size_r)
{
	for (size_t i = 0; i + 3 <= base_len; i++) {
		if (name[i] != ',' || name[i + 1] != key || name[i + 2] != '=')
			continue;
		uint64_t value = 0;
		size_t j = i + 3;
		for (; j < base_len && name[j] >= '0' && name[j] <= '9'; j++) {
			if (value > (UINT64_MAX - 10) / 10)
				return false; /* no real size; also keeps clear of
						 UIDLIST_SIZE_UNKNOWN */
			value = value * 10 + (uint64_t)(name[j] - '0');
		}
		if (j == i + 3 || (j < base_len && name[j] != ','))
			return false;
		*size_r = value;
		return true;
	}
	return false;
}

static enum store_error maildir_errno_kind(int err)
{
	switch (err) {
	case EACCES:
	case EPERM:
	case ELOOP:
	case ENOTDIR:
	case EROFS:
	case EINVAL:
		return STORE_ERROR_PERM;
	default:
		return STORE_ERROR_TEMP;
	}
}

int maildir_fail_errno(const char *call, const char *what, enum store_error *kind_r, char **error_r)
{
	int err = errno;

	*kind_r = maildir_errno_kind(err);
	*error_r = xasprintf("%s(%s): %s", call, what, strerror(err));
	return -1;
}

/* ---- the snapshot's file list ---- */

static int maildir_cmp_base(const char *a, size_t a_len, const char *b, size_t b_len)
{
	int ret = memcmp(a, b, a_len < b_len ? a_len : b_len);

	if (ret != 0)
		return ret;
	return a_len < b_len ? -1 : a_len > b_len;
}

/* Orders by base name, then whole name, so that duplicates of a base name are adjacent. */
static int maildir_cmp_found(const void *a, const void *b)
{
	const struct maildir_found *x = a, *y = b;
	int ret = maildir_cmp_base(x->name, x->base_len, y->name, y->base_len);

	return ret != 0 ? ret : strcmp(x->name, y->name);
}

static int maildir_cmp_found_uid(const void *a, const void *b)
{
	const struct maildir_found *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Whether a directory entry may be a message file: d_type is only a hint (DT_UNKNOWN on some
 * filesystems), so unknown types pass and reads check with fstat() later. */
static bool maildir_dirent_usable(const struct dirent *d)
{
	if (d->d_type != DT_REG && d->d_type != DT_UNKNOWN)
		return false;
	return maildir_name_plausible(d->d_name);
}

static void maildir_scan_push(struct maildir_scan *scan, size_t *alloc, const char *name)
{
	if (scan->count == *alloc) {
		*alloc = *alloc == 0 ? 256 : *alloc * 2;
		scan->found = xrealloc(scan->found, *alloc * sizeof(scan->found[0]));
	}
	struct maildir_found *found = &scan->found[scan->count++];
	found->name = xstrdup(name);
	found->base_len = maildir_name_base_len(name);
	found->uid = 0;
	found->size = 0;
	found->file_size = 0;
	found->retrieved_at = 0;
}

/* Lists the plausible message names in cur/ into scan->found. */
static int maildir_cur_list(struct maildir_mailbox *mbox, struct maildir_scan *scan,
			    enum store_error *kind_r, char **error_r)
{
	DIR *dir = opendir(mbox->cur_path);
	size_t alloc = 0;
	struct dirent *d;

	if (dir == NULL)
		return maildir_fail_errno("opendir", mbox->cur_path, kind_r, error_r);
	for (errno = 0; (d = readdir(dir)) != NULL; errno = 0) {
		if (maildir_dirent_usable(d))
			maildir_scan_push(scan, &alloc, d->d_name);
	}
	if (errno != 0) {
		maildir_fail_errno("readdir", mbox->cur_path, kind_r, error_r);
		closedir(dir);
		return -1;
	}
	closedir(dir);
	return 0;
}

/* Two files with one base name cannot share a UID. The first (by full name) keeps it; the others
 * stay on disk untouched and out of the snapshot, for the administrator, rather than being
 * deleted or given a UID that would later move between them. */
static void maildir_scan_drop_duplicates(struct maildir_mailbox *mbox, struct maildir_scan *scan)
{
	size_t out = 0;

	if (scan->count == 0)
		return; /* found may be NULL, which qsort() must not see */
	qsort(scan->found, scan->count, sizeof(scan->found[0]), maildir_cmp_found);
	for (size_t i = 0; i < scan->count; i++) {
		struct maildir_found *f = &scan->found[i];
		if (out > 0 &&
		    maildir_cmp_base(scan->found[out - 1].name, scan->found[out - 1].base_len,
				     f->name, f->base_len) == 0) {
			log_warn("maildir_duplicate", "path=%s file=%s", log_quote(mbox->cur_path),
				 log_quote(f->name));
			free(f->name);
			continue;
		}
		scan->found[out++] = *f;
	}
	scan->count = out;
}

/* The directories' modification times, read before anything in them is read. */
struct maildir_dirs_seen {
	bool ok;
	struct timespec cur_mtime;
	struct timespec new_mtime;
	time_t now;
};

/* ---- sizes ---- */

/* Counts the octets of the open file and its LFs not preceded by CR. */
static int maildir_count_fd(int fd, uint64_t *file_size_r, uint64_t *crlf_size_r)
{
	char buf[MAILDIR_COUNT_CHUNK];
	uint64_t octets = 0, bare_lf = 0;
	bool prev_cr = false;

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' && !prev_cr)
				bare_lf++;
			prev_cr = buf[i] == '\r';
		}
		octets += (uint64_t)n;
	}
	*file_size_r = octets;
	*crlf_size_r = octets + bare_lf;
	return 0;
}

/* cur/ as a directory descriptor for the *at() calls. An open mailbox does not keep it between
 * uses: an idle session then holds two descriptors (its socket and the lock), not three, which
 * decides how many sessions fit in a worker's file limit. Returns -1 with errno set. */
int maildir_cur_dir(struct maildir_mailbox *mbox)
{
	if (mbox->cur_fd < 0)
		mbox->cur_fd = open(mbox->cur_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return mbox->cur_fd;
}

static void maildir_cur_dir_release(struct maildir_mailbox *mbox)
{
	if (mbox->cur_fd >= 0)
		close(mbox->cur_fd);
	mbox->cur_fd = -1;
}

/* Opens a message in cur/ for reading. O_NOFOLLOW because a symlink could point at another
 * user's mail; O_NONBLOCK so that a FIFO planted in cur/ cannot hang the worker. Returns -1 with
 * errno set (EINVAL for something that is not a regular file). */
static int maildir_file_open(struct maildir_mailbox *mbox, const char *name)
{
	struct stat st;
	int dir = maildir_cur_dir(mbox);
	int fd = dir < 0 ? -1 : openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	return fd;
}

static int maildir_size_count(struct maildir_mailbox *mbox, const char *name, uint64_t *file_size_r,
			      uint64_t *crlf_size_r)
{
	int fd = maildir_file_open(mbox, name);

	if (fd < 0)
		return -1;
	int ret = maildir_count_fd(fd, file_size_r, crlf_size_r);
	int err = errno;
	close(fd);
	errno = err;
	return ret;
}

static bool maildir_cache_usable(const struct uidlist_entry *cached, uint64_t file_size)
{
	return cached != NULL && cached->crlf_size != UIDLIST_SIZE_UNKNOWN &&
	       cached->file_size == file_size;
}

/* Finds the RETR size of a message, touching the disk as little as possible: a cached size for
 * the S= in the name (or for a name without S=) needs no syscall; W= is believed only after
 * stat() confirms S=; otherwise a cached size for the stat() size, and as a last resort reading
 * the file. *cache_stale_r tells
 * whether the cache needs updating. Fills f->size and f->file_size; returns -1 with errno set. */
static int maildir_size_find(struct maildir_mailbox *mbox, struct maildir_found *f,
			     const struct uidlist_entry *cached, bool *cache_stale_r)
{
	uint64_t s_size, w_size;
	bool has_s = maildir_name_get_size(f->name, f->base_len, 'S', &s_size);
	bool has_w = maildir_name_get_size(f->name, f->base_len, 'W', &w_size);
	struct stat st;

	*cache_stale_r = false;
	if (has_s && maildir_cache_usable(cached, s_size)) {
		f->size = cached->crlf_size;
		f->file_size = s_size;
		return 0;
	}
	/* Maildir message files are never rewritten in place (a change makes a new file with a new
	 * base name), so a size cached for this base name holds without a stat() per message: this
	 * keeps a warm open of a big mailbox at readdir speed. */
	if (!has_s && cached != NULL && cached->crlf_size != UIDLIST_SIZE_UNKNOWN &&
	    cached->file_size != UIDLIST_SIZE_UNKNOWN) {
		f->size = cached->crlf_size;
		f->file_size = cached->file_size;
		return 0;
	}
	if (fstatat(mbox->cur_fd, f->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	if (!S_ISREG(st.st_mode)) {
		errno = EINVAL;
		return -1;
	}
	f->file_size = (uint64_t)st.st_size;
	if (maildir_cache_usable(cached, f->file_size)) {
		f->size = cached->crlf_size;
		return 0;
	}
	*cache_stale_r = true;
	if (has_s && has_w && s_size == f->file_size) {
		f->size = w_size;
		return 0;
	}
	return maildir_size_count(mbox, f->name, &f->file_size, &f->size);
}

/* ---- building the snapshot ---- */

/* Remembers the flags part of the file's name in the index, for opens that skip readdir. */
static bool maildir_entry_note_info(struct uidlist_entry *entry, const struct maildir_found *f)
{
	const char *info = maildir_name_info(f->name);

	return uidlist_entry_set_info(entry, info != NULL ? info + 1 : NULL,
				      info != NULL ? strlen(info + 1) : 0);
}

/* Sizes one listed file and matches it with the index. Returns false if it is left out of the
 * snapshot (it vanished or cannot be read); its index entry, if any, is kept, because a file that
 * vanished was most likely renamed by another Maildir tool and keeps its base name. */
static bool maildir_scan_one(struct maildir_mailbox *mbox, struct maildir_scan *scan,
			     struct maildir_found *f)
{
	struct uidlist_entry *entry = uidlist_lookup(mbox->uidlist, f->name, f->base_len);
	bool cache_stale;

	if (entry != NULL)
		entry->present = true;
	if (maildir_size_find(mbox, f, entry, &cache_stale) < 0) {
		if (errno != ENOENT)
			log_warn("maildir_unreadable", "path=%s file=%s error=%s",
				 log_quote(mbox->cur_path), log_quote(f->name),
				 log_quote(strerror(errno)));
		return false;
	}
	if (entry == NULL)
		return true; /* new: its UID is assigned in name order afterwards */
	f->uid = entry->uid;
	f->retrieved_at = entry->retrieved_at;
	if (entry->deleted_at != 0) {
		/* back from the undelete area: `buzon undelete` moved it and could not save the
		 * index (a crash), or another tool put it back; either way it is mail again */
		log_info("maildir_retained_back", "path=%s file=%s", log_quote(mbox->cur_path),
			 log_quote(f->name));
		entry->deleted_at = 0;
		scan->index_changed = true;
	}
	if (maildir_entry_note_info(entry, f))
		scan->index_changed = true;
	if (cache_stale) {
		entry->crlf_size = f->size;
		entry->file_size = f->file_size;
		scan->index_changed = true;
	}
	return true;
}

/* Gives each new message (uid 0) the next UID, in name order: for standard Maildir names that is
 * delivery order, and it is the same order if this open has to be repeated. */
static int maildir_scan_assign_uids(struct maildir_mailbox *mbox, struct maildir_scan *scan,
				    enum store_error *kind_r, char **error_r)
{
	for (size_t i = 0; i < scan->count; i++) {
		struct maildir_found *f = &scan->found[i];
		if (f->uid != 0)
			continue;
		if (uidlist_add(mbox->uidlist, f->name, f->base_len, f->size, f->file_size,
				&f->uid) < 0) {
			*kind_r = STORE_ERROR_PERM;
			*error_r = xasprintf("%s: UID space exhausted", mbox->index_path);
			return -1;
		}
		(void)maildir_entry_note_info(&mbox->uidlist->entries[mbox->uidlist->count - 1], f);
		scan->index_changed = true;
		scan->uids_assigned = true;
	}
	return 0;
}

/* Sizes every listed file and drops the ones that cannot be used. */
static void maildir_scan_size_all(struct maildir_mailbox *mbox, struct maildir_scan *scan)
{
	struct uidlist *list = mbox->uidlist;
	size_t out = 0, missing = 0;

	/* entries of the undelete area stay (they are not in cur/); the others must be found */
	for (size_t i = 0; i < list->count; i++)
		list->entries[i].present = list->entries[i].deleted_at != 0;
	for (size_t i = 0; i < scan->count; i++) {
		struct maildir_found *f = &scan->found[i];
		if (!maildir_scan_one(mbox, scan, f)) {
			free(f->name);
			continue;
		}
		scan->found[out++] = *f;
	}
	scan->count = out;
	for (size_t i = 0; i < list->count; i++)
		missing += !list->entries[i].present;
	if (missing > 0 && maildir_retained_recover(mbox, wall_now()) > 0)
		scan->index_changed = true;
}

/* The UIDL: the UID and the UIDVALIDITY as 8 lower-case hex digits each (store.h); the import
 * compares old UIDLs with the same text, so there is one formatter (uidl_import.c). */
void maildir_uidl_format(char uidl[STORE_UIDL_LEN + 1], uint32_t uid, uint32_t uidvalidity)
{
	uidl_native_format(uidl, uid, uidvalidity);
}

/* Moves the scan into the mailbox: messages and files in ascending UID order. */
static void maildir_snapshot_fill(struct maildir_mailbox *mbox, struct maildir_scan *scan)
{
	struct store_mailbox *box = &mbox->box;

	if (scan->count > 0)
		qsort(scan->found, scan->count, sizeof(scan->found[0]), maildir_cmp_found_uid);
	box->count = scan->count;
	box->messages = xcalloc(scan->count, sizeof(box->messages[0]));
	mbox->files = xcalloc(scan->count, sizeof(mbox->files[0]));
	box->total_size = 0;
	for (size_t i = 0; i < scan->count; i++) {
		struct store_message *msg = &box->messages[i];
		msg->uid = scan->found[i].uid;
		msg->size = scan->found[i].size;
		box->total_size += msg->size;
		mbox->files[i].name = scan->found[i].name;
		mbox->files[i].base_len = scan->found[i].base_len;
		mbox->files[i].file_size = scan->found[i].file_size;
		mbox->files[i].retrieved_at = scan->found[i].retrieved_at;
		mbox->file_bytes += scan->found[i].file_size;
	}
	x_free(&scan->found);
	scan->count = 0;
}

/* Saves the index when it changed. Failing to save only matters when new UIDs were handed out:
 * showing them unsaved could give the same UIDL to a different message next time. */
static int maildir_scan_save(struct maildir_mailbox *mbox, const struct maildir_scan *scan,
			     enum store_error *kind_r, char **error_r)
{
	char *error;

	if (!scan->index_changed)
		return 0;
	if (uidlist_save(mbox->uidlist, mbox->index_path, &error) == 0)
		return 0;
	if (scan->uids_assigned) {
		*kind_r = STORE_ERROR_TEMP;
		*error_r = error;
		return -1;
	}
	log_warn("maildir_index_save_failed", "error=%s", log_quote(error));
	free(error);
	return 0;
}

/* Whether the index can be trusted to list cur/ whole: every entry of a live message knows its
 * name and size (those of the undelete area are not in cur/). */
static bool maildir_index_complete(const struct uidlist *list)
{
	for (size_t i = 0; i < list->count; i++) {
		const struct uidlist_entry *entry = &list->entries[i];
		if (entry->deleted_at == 0 &&
		    (entry->info == NULL || entry->crlf_size == UIDLIST_SIZE_UNKNOWN ||
		     entry->file_size == UIDLIST_SIZE_UNKNOWN))
			return false;
	}
	return true;
}

static bool maildir_time_settled(const struct timespec *mtime, time_t now)
{
	return mtime->tv_sec + MAILDIR_STAMP_SETTLE_SECONDS <= now;
}

static bool maildir_stamp_equal(const struct uidlist_dir_stamp *a,
				const struct uidlist_dir_stamp *b)
{
	return a->valid == b->valid &&
	       (!a->valid || (a->cur_mtime.tv_sec == b->cur_mtime.tv_sec &&
			      a->cur_mtime.tv_nsec == b->cur_mtime.tv_nsec &&
			      a->new_mtime.tv_sec == b->new_mtime.tv_sec &&
			      a->new_mtime.tv_nsec == b->new_mtime.tv_nsec));
}

/* After a full scan: records the directories' times as they were before reading them, when they
 * are old enough and new/ was left empty, so that the next open can skip reading them. Returns
 * true if the stamp changed (the index should be saved). */
static bool maildir_stamp_update(struct maildir_mailbox *mbox, const struct maildir_dirs_seen *seen,
				 size_t new_left)
{
	struct uidlist_dir_stamp stamp = {.valid = false};
	struct uidlist *list = mbox->uidlist;

	if (seen->ok && new_left == 0 && maildir_time_settled(&seen->cur_mtime, seen->now) &&
	    maildir_time_settled(&seen->new_mtime, seen->now) && maildir_index_complete(list)) {
		stamp.valid = true;
		stamp.cur_mtime = seen->cur_mtime;
		stamp.new_mtime = seen->new_mtime;
	}
	if (maildir_stamp_equal(&stamp, &list->stamp))
		return false;
	list->stamp = stamp;
	/* dropping a stamp need not be written: the directories' times no longer match it */
	return stamp.valid;
}

static int maildir_snapshot_build(struct maildir_mailbox *mbox, bool index_changed,
				  const struct maildir_dirs_seen *seen, size_t new_left,
				  enum store_error *kind_r, char **error_r)
{
	struct maildir_scan scan = {.index_changed = index_changed};
	int ret = -1;

	if (maildir_cur_list(mbox, &scan, kind_r, error_r) < 0)
		goto out;
	maildir_scan_drop_duplicates(mbox, &scan);
	maildir_scan_size_all(mbox, &scan);
	if (maildir_scan_assign_uids(mbox, &scan, kind_r, error_r) < 0)
		goto out;
	if (uidlist_sweep(mbox->uidlist) > 0)
		scan.index_changed = true;
	if (maildir_stamp_update(mbox, seen, new_left))
		scan.index_changed = true;
	if (maildir_scan_save(mbox, &scan, kind_r, error_r) < 0)
		goto out;
	maildir_snapshot_fill(mbox, &scan);
	ret = 0;
out:
	for (size_t i = 0; i < scan.count; i++)
		free(scan.found[i].name);
	free(scan.found);
	return ret;
}

/* ---- new/ to cur/ ---- */

/* Renames src to dst unless dst exists. RENAME_NOREPLACE is not supported by every filesystem;
 * there the check before rename() is racy only against tools that ignore our lock. */
static int maildir_rename_noreplace(const char *src, const char *dst)
{
	int ret = renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE);

	if (ret < 0 && errno == EINVAL) {
		if (access(dst, F_OK) == 0)
			errno = EEXIST;
		else
			ret = rename(src, dst);
	}
	return ret;
}

/* Moves new/name to cur/name:2, without replacing an existing file: two messages with one name
 * must both survive. A name too long to take ":2," (NAME_MAX is 255 octets, less on some
 * filesystems) moves as it is: cur/ accepts names without info, and the base name, hence the UID,
 * is the same either way; left in new/ it would never be seen. */
static int maildir_new_move_one(struct maildir_mailbox *mbox, const char *new_path,
				const char *name)
{
	char *src = xasprintf("%s/%s", new_path, name);
	char *dst = maildir_name_info(name) != NULL ? xasprintf("%s/%s", mbox->cur_path, name)
						    : xasprintf("%s/%s:2,", mbox->cur_path, name);
	int ret = maildir_rename_noreplace(src, dst);

	if (ret < 0 && errno == ENAMETOOLONG && maildir_name_info(name) == NULL) {
		free(dst);
		dst = xasprintf("%s/%s", mbox->cur_path, name);
		ret = maildir_rename_noreplace(src, dst);
	}
	if (ret < 0 && errno != ENOENT)
		log_warn("maildir_move_failed", "from=%s to=%s error=%s", log_quote(src),
			 log_quote(dst), log_quote(strerror(errno)));
	free(src);
	free(dst);
	return ret;
}

/* No fsync of new/ or cur/ here: after a crash a message is in one or the other, and in either it
 * is found under the same base name and so keeps its UID. */
static int maildir_new_move_all(struct maildir_mailbox *mbox, size_t *left_r,
				enum store_error *kind_r, char **error_r)
{
	char *new_path = xasprintf("%s/new", mbox->path);
	DIR *dir = opendir(new_path);
	struct dirent *d;
	int ret = 0;

	if (dir == NULL) {
		maildir_fail_errno("opendir", new_path, kind_r, error_r);
		free(new_path);
		return -1;
	}
	for (errno = 0; (d = readdir(dir)) != NULL; errno = 0) {
		if (maildir_dirent_usable(d) && maildir_new_move_one(mbox, new_path, d->d_name) < 0)
			(*left_r)++;
	}
	if (errno != 0)
		ret = maildir_fail_errno("readdir", new_path, kind_r, error_r);
	closedir(dir);
	free(new_path);
	return ret;
}

/* ---- open and close ---- */

static int maildir_mkdir(const char *path, enum store_error *kind_r, char **error_r)
{
	if (mkdir(path, MAILDIR_DIR_MODE) == 0 || errno == EEXIST)
		return 0;
	if (errno == ENOENT && mkdir_parents(path, MAILDIR_DIR_MODE) == 0)
		return 0;
	return maildir_fail_errno("mkdir", path, kind_r, error_r);
}

/* A missing maildrop is an empty one: create it (and any missing part) on the spot. */
static int maildir_dirs_create(struct maildir_mailbox *mbox, enum store_error *kind_r,
			       char **error_r)
{
	static const char *const subdirs[] = {"cur", "new", "tmp"};

	if (maildir_mkdir(mbox->path, kind_r, error_r) < 0)
		return -1;
	for (size_t i = 0; i < ARRAY_SIZE(subdirs); i++) {
		char *sub = xasprintf("%s/%s", mbox->path, subdirs[i]);
		int ret = maildir_mkdir(sub, kind_r, error_r);
		free(sub);
		if (ret < 0)
			return -1;
	}
	mbox->cur_fd = open(mbox->cur_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mbox->cur_fd < 0)
		return maildir_fail_errno("open", mbox->cur_path, kind_r, error_r);
	return 0;
}

/* flock() locks belong to the open file description, not the process: a second session in the
 * same worker conflicts just like one in another process. The kernel drops the lock when the last
 * descriptor closes, including when its process dies, so a stale lock cannot outlive a crash and
 * needs no detection or clearing of its own. */
static int maildir_lock(struct maildir_mailbox *mbox, enum store_error *kind_r, char **error_r)
{
	char *lock_path = xasprintf("%s/%s", mbox->path, MAILDIR_LOCK_NAME);
	int ret = 0;

	mbox->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (mbox->lock_fd < 0) {
		ret = maildir_fail_errno("open", lock_path, kind_r, error_r);
	} else if (flock(mbox->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			*kind_r = STORE_ERROR_IN_USE;
			*error_r =
			    xasprintf("%s: mailbox is locked by another session", mbox->path);
			ret = -1;
		} else {
			ret = maildir_fail_errno("flock", lock_path, kind_r, error_r);
		}
	}
	free(lock_path);
	return ret;
}

/* Loads the index, or, when there is none, imports the UIDs of the server buzon replaces
 * (uidl_import.h); returns 1 if it has to be written back (new, imported or damaged), 0 if not,
 * -1. */
static int maildir_index_load(struct maildir_mailbox *mbox, enum store_error *kind_r,
			      char **error_r)
{
	bool damaged;
	int ret = uidlist_load(mbox->index_path, &mbox->uidlist, &damaged, error_r);

	if (ret < 0) {
		*kind_r = maildir_errno_kind(errno);
		return -1;
	}
	if (uidl_import_open(mbox->path, &mbox->uidlist, ret == 0, &mbox->import_map,
			     &mbox->import_unfinished, error_r) < 0) {
		/* going on would show UIDLs that change for good: let the client retry */
		*kind_r = STORE_ERROR_TEMP;
		return -1;
	}
	if (damaged)
		log_warn("maildir_index_damaged", "path=%s uidvalidity=%lu next_uid=%llu",
			 log_quote(mbox->index_path), (unsigned long)mbox->uidlist->uidvalidity,
			 (unsigned long long)mbox->uidlist->next_uid);
	return ret == 0 || damaged ? 1 : 0;
}

static struct maildir_mailbox *maildir_mailbox_new(const char *path)
{
	struct maildir_mailbox *mbox = xcalloc(1, sizeof(*mbox));

	mbox->box.backend = &store_backend_maildir;
	mbox->path = xstrdup(path);
	mbox->cur_path = xasprintf("%s/cur", path);
	mbox->index_path = xasprintf("%s/%s", path, UIDLIST_FILE_NAME);
	mbox->cur_fd = -1;
	mbox->lock_fd = -1;
	mbox->retained_fd = -1;
	return mbox;
}

static void maildir_mailbox_free(struct maildir_mailbox **mboxp)
{
	struct maildir_mailbox *mbox = *mboxp;

	if (mbox == NULL)
		return;
	for (size_t i = 0; i < mbox->box.count; i++)
		free(mbox->files[i].name);
	free(mbox->files);
	free(mbox->box.messages);
	free(mbox->by_name);
	uidlist_free(&mbox->uidlist);
	uidl_import_map_free(&mbox->import_map);
	free(mbox->native_uidls);
	maildir_cur_dir_release(mbox);
	maildir_retained_release(mbox);
	if (mbox->lock_fd >= 0)
		close(mbox->lock_fd); /* releases the flock */
	free(mbox->path);
	free(mbox->cur_path);
	free(mbox->index_path);
	x_free(mboxp);
}

/* Sets the quota usage to the snapshot, so that a stale or wrong usage heals at every login. A
 * delivery that lands between the scan of new/ and this write is missed until the next login;
 * that only lets a mailbox go over its quota by a message or so for a while. */
static void maildir_quota_reset(struct maildir_mailbox *mbox)
{
	char *error;

	if (quota_usage_set(mbox->path, mbox->file_bytes, mbox->box.count, &error) < 0) {
		log_warn("maildir_quota_failed", "error=%s", log_quote(error));
		free(error);
	}
}

static void maildir_dirs_stat(struct maildir_mailbox *mbox, struct maildir_dirs_seen *seen_r)
{
	char *new_path = xasprintf("%s/new", mbox->path);
	struct stat cur_st, new_st;

	seen_r->ok = fstat(mbox->cur_fd, &cur_st) == 0 && stat(new_path, &new_st) == 0;
	if (seen_r->ok) {
		seen_r->cur_mtime = cur_st.st_mtim;
		seen_r->new_mtime = new_st.st_mtim;
		seen_r->now = time(NULL);
	}
	free(new_path);
}

/* The snapshot straight from the index, when its stamp says cur/ and new/ have not changed since
 * it was known to list cur/ exactly: no readdir, no sorting, no stat() per message. Returns false
 * if the index cannot be used so (the caller reads the directories). */
static bool maildir_snapshot_from_index(struct maildir_mailbox *mbox,
					const struct maildir_dirs_seen *seen)
{
	struct uidlist *list = mbox->uidlist;
	struct uidlist_dir_stamp now_stamp = {
	    .valid = seen->ok, .cur_mtime = seen->cur_mtime, .new_mtime = seen->new_mtime};
	struct store_mailbox *box = &mbox->box;
	size_t live = 0, n = 0;

	if (!list->stamp.valid || !maildir_stamp_equal(&list->stamp, &now_stamp) ||
	    !maildir_index_complete(list))
		return false;
	for (size_t i = 0; i < list->count; i++)
		live += list->entries[i].deleted_at == 0;
	box->count = live;
	box->messages = xcalloc(live, sizeof(box->messages[0]));
	mbox->files = xcalloc(live, sizeof(mbox->files[0]));
	box->total_size = 0;
	for (size_t i = 0; i < list->count; i++) {
		const struct uidlist_entry *entry = &list->entries[i];
		if (entry->deleted_at != 0)
			continue; /* in the undelete area: not POP3's to see */
		struct store_message *msg = &box->messages[n];

		msg->uid = entry->uid;
		msg->size = entry->crlf_size;
		box->total_size += msg->size;
		mbox->files[n].file_size = entry->file_size;
		mbox->files[n].retrieved_at = entry->retrieved_at;
		mbox->file_bytes += entry->file_size;
		n++;
	}
	/* file names wait for the first RETR or commit: a session that only checks for new mail
	 * (STAT, UIDL) never needs the hundred thousand of them */
	mbox->names_pending = true;
	return true;
}

/* Gives every file of a snapshot made from the index its name in cur/. Runs before anything can
 * reorder the index's entries (only commit's lookups do), so the live entries are still the
 * messages in order. */
static void maildir_names_ready(struct maildir_mailbox *mbox)
{
	const struct uidlist *list = mbox->uidlist;
	size_t next = 0;

	if (!mbox->names_pending)
		return;
	for (size_t i = 0; i < mbox->box.count; i++) {
		while (list->entries[next].deleted_at != 0)
			next++;
		const struct uidlist_entry *entry = &list->entries[next++];
		size_t base_len = strlen(entry->basename), info_len = strlen(entry->info);
		char *name = xmalloc(base_len + 1 + info_len + 1);

		memcpy(name, entry->basename, base_len);
		name[base_len] = ':';
		memcpy(name + base_len + 1, entry->info, info_len + 1);
		mbox->files[i].name = name;
		mbox->files[i].base_len = base_len;
	}
	mbox->names_pending = false;
}

/* The earliest retrieval and deletion times, for store_upkeep_due(): one pass over the index. */
static void maildir_box_note_times(struct maildir_mailbox *mbox)
{
	const struct uidlist *list = mbox->uidlist;
	time_t retrieved = 0, deleted = 0;

	for (size_t i = 0; i < list->count; i++) {
		const struct uidlist_entry *entry = &list->entries[i];
		if (entry->deleted_at != 0) {
			if (deleted == 0 || entry->deleted_at < deleted)
				deleted = entry->deleted_at;
		} else if (entry->retrieved_at != 0 &&
			   (retrieved == 0 || entry->retrieved_at < retrieved)) {
			retrieved = entry->retrieved_at;
		}
	}
	mbox->box.oldest_retrieved_at = retrieved;
	mbox->box.oldest_deleted_at = deleted;
}

/* An import is done once its index is on disk: from then on it must never run again
 * (uidl_import.h). The index did not exist before this open, so finding it means it was saved. */
static void maildir_import_finish(struct maildir_mailbox *mbox)
{
	struct stat st;

	if (mbox->import_unfinished && stat(mbox->index_path, &st) == 0)
		uidl_import_finish(mbox->path, mbox->import_map);
	mbox->import_unfinished = false;
}

const char *maildir_uidl_text(const struct maildir_mailbox *mbox, uint32_t uid,
			      char buf[STORE_UIDL_LEN + 1])
{
	const char *imported = uidl_import_map_lookup(mbox->import_map, uid);

	if (imported != NULL)
		return imported;
	maildir_uidl_format(buf, uid, mbox->uidlist->uidvalidity);
	return buf;
}

/* Gives every message of the snapshot its UIDL: the one kept from the replaced server, if any,
 * else buzon's own. */
static void maildir_uidls_assign(struct maildir_mailbox *mbox)
{
	struct store_mailbox *box = &mbox->box;
	size_t cursor = 0; /* messages and the map both ascend by UID */

	mbox->native_uidls = xcalloc(box->count + 1, sizeof(mbox->native_uidls[0]));
	for (size_t i = 0; i < box->count; i++) {
		struct store_message *msg = &box->messages[i];
		msg->uidl = uidl_import_map_lookup_next(mbox->import_map, msg->uid, &cursor);
		if (msg->uidl == NULL) {
			maildir_uidl_format(mbox->native_uidls[i], msg->uid,
					    mbox->uidlist->uidvalidity);
			msg->uidl = mbox->native_uidls[i];
		}
	}
}

static int maildir_open(const char *path, struct store_mailbox **box_r, enum store_error *kind_r,
			char **error_r)
{
	struct maildir_mailbox *mbox;
	struct maildir_dirs_seen seen = {.ok = false};
	size_t new_left = 0;
	int changed = 0;

	if (path[0] == '\0') {
		*kind_r = STORE_ERROR_PERM;
		*error_r = xstrdup("maildir: empty mailbox path");
		return -1;
	}
	mbox = maildir_mailbox_new(path);
	if (maildir_dirs_create(mbox, kind_r, error_r) < 0 ||
	    maildir_lock(mbox, kind_r, error_r) < 0 ||
	    (changed = maildir_index_load(mbox, kind_r, error_r)) < 0) {
		maildir_mailbox_free(&mbox);
		return -1;
	}
	maildir_dirs_stat(mbox, &seen);
	if ((changed > 0 || !maildir_snapshot_from_index(mbox, &seen)) &&
	    (maildir_new_move_all(mbox, &new_left, kind_r, error_r) < 0 ||
	     maildir_snapshot_build(mbox, changed > 0, &seen, new_left, kind_r, error_r) < 0)) {
		maildir_mailbox_free(&mbox);
		return -1;
	}
	maildir_cur_dir_release(mbox);
	maildir_retained_release(mbox);
	maildir_import_finish(mbox);
	maildir_uidls_assign(mbox);
	maildir_box_note_times(mbox);
	maildir_quota_reset(mbox);
	size_t stale = maildir_cleanup_tmp(path);
	if (stale > 0)
		log_info("tmp_cleaned", "maildir=%s files=%zu", log_quote(path), stale);
	*box_r = &mbox->box;
	return 0;
}

/* The lock file's device and inode: the same for every path to the maildrop, and not reused while
 * a session holds the file open. */
static int maildir_lock_identity(const char *path, struct store_lock_id *id_r)
{
	char *lock_path = xasprintf("%s/%s", path, MAILDIR_LOCK_NAME);
	struct stat st;
	int ret = stat(lock_path, &st);

	free(lock_path);
	if (ret < 0)
		return -1;
	id_r->volume = (uint64_t)st.st_dev;
	id_r->object = (uint64_t)st.st_ino;
	return 0;
}

static void maildir_close(struct store_mailbox **box)
{
	struct maildir_mailbox *mbox = (struct maildir_mailbox *)*box;

	maildir_mailbox_free(&mbox);
	*box = NULL;
}

/* ---- finding messages renamed behind our back ---- */

static int maildir_cmp_by_name(const void *a, const void *b, void *context)
{
	const struct maildir_file *files = context;
	const struct maildir_file *x = &files[*(const size_t *)a];
	const struct maildir_file *y = &files[*(const size_t *)b];

	return maildir_cmp_base(x->name, x->base_len, y->name, y->base_len);
}

/* Returns the snapshot index of the message with this base name, or -1. */
static ssize_t maildir_find_base(struct maildir_mailbox *mbox, const char *name, size_t base_len)
{
	size_t lo = 0, hi = mbox->box.count;

	if (mbox->by_name == NULL) {
		mbox->by_name = xcalloc(mbox->box.count, sizeof(mbox->by_name[0]));
		for (size_t i = 0; i < mbox->box.count; i++)
			mbox->by_name[i] = i;
		qsort_r(mbox->by_name, mbox->box.count, sizeof(mbox->by_name[0]),
			maildir_cmp_by_name, mbox->files);
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct maildir_file *f = &mbox->files[mbox->by_name[mid]];
		int ret = maildir_cmp_base(name, base_len, f->name, f->base_len);
		if (ret == 0)
			return (ssize_t)mbox->by_name[mid];
		if (ret < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

/* Another Maildir client (a webmail, mutt) may have renamed a message to change its flags while
 * we held the snapshot; the base name stays, so one pass over cur/ finds every new name. */
static int maildir_names_rescan(struct maildir_mailbox *mbox)
{
	DIR *dir = opendir(mbox->cur_path);
	struct dirent *d;

	if (dir == NULL)
		return -1;
	for (errno = 0; (d = readdir(dir)) != NULL; errno = 0) {
		if (!maildir_dirent_usable(d))
			continue;
		size_t base_len = maildir_name_base_len(d->d_name);
		ssize_t i = maildir_find_base(mbox, d->d_name, base_len);
		if (i >= 0 && strcmp(mbox->files[i].name, d->d_name) != 0) {
			free(mbox->files[i].name);
			mbox->files[i].name = xstrdup(d->d_name);
		}
	}
	int ret = errno != 0 ? -1 : 0;
	closedir(dir);
	return ret;
}

/* ---- reading ---- */

static struct store_reader *maildir_read_open(struct store_mailbox *box, size_t index,
					      enum store_error *kind_r, char **error_r)
{
	struct maildir_mailbox *mbox = (struct maildir_mailbox *)box;
	struct store_reader *reader;
	int fd;

	if (index >= box->count)
		fatal("maildir_read_open: index %zu out of range", index);
	maildir_names_ready(mbox);
	fd = maildir_file_open(mbox, mbox->files[index].name);
	if (fd < 0 && errno == ENOENT && maildir_names_rescan(mbox) == 0)
		fd = maildir_file_open(mbox, mbox->files[index].name);
	if (fd < 0) {
		int err = errno;
		*kind_r = err == ENOENT ? STORE_ERROR_TEMP : maildir_errno_kind(err);
		*error_r = xasprintf("open(%s/%s): %s", mbox->cur_path, mbox->files[index].name,
				     strerror(err));
		return NULL;
	}
	reader = xmalloc(sizeof(*reader));
	reader->fd = fd;
	return reader;
}

static ssize_t maildir_read(struct store_reader *reader, void *buf, size_t len)
{
	ssize_t n;

	do {
		n = read(reader->fd, buf, len);
	} while (n < 0 && errno == EINTR);
	return n;
}

static void maildir_read_close(struct store_reader **reader)
{
	if (*reader == NULL)
		return;
	close((*reader)->fd);
	x_free(reader);
}

/* ---- commit ---- */

/* One commit: what it does to each message, and its failures (the first is reported, all are
 * logged, and the commit goes on). */
struct maildir_commit {
	struct maildir_mailbox *mbox;
	const struct store_policy *policy; /* NULL: no undelete window, no EXPIRE */
	time_t now;
	bool rescanned;
	size_t failures;
	char *first_error;
	bool *remove;	/* per message: DELEd, or due for EXPIRE */
	bool *removed;	/* per message: its file left cur/ (or was gone already) */
	bool *retained; /* per message: it went into the undelete area (else it was unlinked) */
	size_t removals, renamed, retained_count;
	struct store_commit_report report;
};

static void maildir_commit_fail(struct maildir_commit *commit, const char *call, const char *name)
{
	char *error =
	    xasprintf("%s(%s/%s): %s", call, commit->mbox->cur_path, name, strerror(errno));

	log_warn("maildir_commit_failed", "error=%s", log_quote(error));
	if (commit->failures++ == 0)
		commit->first_error = error;
	else
		free(error);
}

/* The same for a failure that already has its text (error is taken over). */
static void maildir_commit_fail_text(struct maildir_commit *commit, char *error)
{
	log_warn("maildir_commit_failed", "error=%s", log_quote(error));
	if (commit->failures++ == 0)
		commit->first_error = error;
	else
		free(error);
}

/* Runs op (unlink or a rename) on message i; on ENOENT, looks for the message under a new name
 * once per commit and retries. Returns 0, or -1 with errno set. */
static int maildir_commit_retry(struct maildir_commit *commit, size_t i,
				int (*op)(struct maildir_commit *, size_t))
{
	if (op(commit, i) == 0)
		return 0;
	if (errno != ENOENT || commit->rescanned)
		return -1;
	commit->rescanned = true;
	if (maildir_names_rescan(commit->mbox) < 0) {
		errno = ENOENT; /* report the message as missing, not the rescan's trouble */
		return -1;
	}
	return op(commit, i);
}

static int maildir_op_unlink(struct maildir_commit *commit, size_t i)
{
	return unlinkat(commit->mbox->cur_fd, commit->mbox->files[i].name, 0);
}

/* Moves message i into the undelete area under the same name. A name there already is a file no
 * entry knows any more (base names are unique in the index): it is replaced. */
static int maildir_op_retain(struct maildir_commit *commit, size_t i)
{
	int dir = maildir_retained_dir(commit->mbox, true);

	if (dir < 0)
		return -1;
	return renameat(commit->mbox->cur_fd, commit->mbox->files[i].name, dir,
			commit->mbox->files[i].name);
}

/* Inserts flag into the ":2," info of name, keeping flags sorted and unique. Returns the new
 * name, or NULL if name needs no change (flag present, or info other than ":2,"). */
char *maildir_name_add_flag(const char *name, char flag)
{
	const char *info = maildir_name_info(name);

	if (info == NULL)
		return xasprintf("%s:2,%c", name, flag);
	if (strncmp(info, ":2,", 3) != 0 || strchr(info + 3, flag) != NULL)
		return NULL;
	const char *pos = info + 3;
	while (*pos != '\0' && (unsigned char)*pos < (unsigned char)flag)
		pos++;
	return xasprintf("%.*s%c%s", (int)(pos - name), name, flag, pos);
}

/* Adds the Seen flag to message i's name. A name with no room left for the flag (NAME_MAX)
 * keeps its name: a missing flag costs a Maildir reader a "new" mark, while failing would make
 * every QUIT of this mailbox answer -ERR from now on. */
static int maildir_op_mark_seen(struct maildir_commit *commit, size_t i)
{
	struct maildir_file *f = &commit->mbox->files[i];
	char *new_name = maildir_name_add_flag(f->name, 'S');

	if (new_name == NULL)
		return 0;
	if (renameat(commit->mbox->cur_fd, f->name, commit->mbox->cur_fd, new_name) < 0) {
		int err = errno;
		free(new_name);
		if (err != ENAMETOOLONG) {
			errno = err;
			return -1;
		}
		log_info("maildir_flag_skipped", "path=%s file=%s flag=S reason=%s",
			 log_quote(commit->mbox->cur_path), log_quote(f->name),
			 log_quote("name too long"));
		return 0;
	}
	commit->renamed++;
	free(f->name);
	f->name = new_name;
	return 0;
}

/* When message i was first retrieved: as the index says, or now if this session did. */
static time_t maildir_commit_retrieved_at(const struct maildir_commit *commit,
					  const struct store_changes *changes, size_t i)
{
	if (commit->mbox->files[i].retrieved_at != 0)
		return commit->mbox->files[i].retrieved_at;
	return changes->retrieved != NULL && changes->retrieved[i] ? commit->now : 0;
}

/* Marks what leaves cur/: the DELEd messages, and those retrieved long enough ago for EXPIRE.
 * Returns true if the commit has anything to do at all. */
static bool maildir_commit_choose(struct maildir_commit *commit,
				  const struct store_changes *changes)
{
	const struct store_mailbox *box = &commit->mbox->box;
	bool work = store_upkeep_due(box, commit->policy);

	for (size_t i = 0; i < box->count; i++) {
		bool deleted = changes->deleted != NULL && changes->deleted[i];
		bool expired = !deleted && commit->policy != NULL &&
			       store_expire_due(commit->policy,
						maildir_commit_retrieved_at(commit, changes, i));
		commit->remove[i] = deleted || expired;
		commit->removals += commit->remove[i];
		commit->report.expired += expired;
		if (changes->retrieved != NULL && changes->retrieved[i] &&
		    (changes->mark_seen || commit->mbox->files[i].retrieved_at == 0))
			work = true;
	}
	return work || commit->removals > 0;
}

/* Takes the chosen messages out of cur/: into the undelete area when the policy keeps deleted
 * mail for a while, else unlinked. */
static void maildir_commit_removals(struct maildir_commit *commit)
{
	bool keep = commit->policy != NULL && commit->policy->deleted_retention_secs > 0;

	for (size_t i = 0; i < commit->mbox->box.count; i++) {
		if (!commit->remove[i])
			continue;
		if (maildir_commit_retry(commit, i, keep ? maildir_op_retain : maildir_op_unlink) ==
		    0) {
			commit->removed[i] = true;
			commit->retained[i] = keep;
			commit->retained_count += keep;
		} else if (errno == ENOENT) {
			commit->removed[i] = true; /* gone already: nothing to keep */
		} else {
			maildir_commit_fail(commit, keep ? "rename" : "unlink",
					    commit->mbox->files[i].name);
		}
	}
}

static void maildir_commit_seen(struct maildir_commit *commit, const struct store_changes *changes)
{
	for (size_t i = 0; i < commit->mbox->box.count; i++) {
		if (commit->remove[i] || !changes->retrieved[i])
			continue;
		if (maildir_commit_retry(commit, i, maildir_op_mark_seen) < 0)
			maildir_commit_fail(commit, "rename", commit->mbox->files[i].name);
	}
}

/* Flushes the directories the commit changed, before the index says so. */
static void maildir_commit_flush(struct maildir_commit *commit)
{
	size_t out_of_cur = 0;

	for (size_t i = 0; i < commit->mbox->box.count; i++)
		out_of_cur += commit->removed[i];
	/* a session that only read messages already marked Seen changed nothing: no flush */
	if ((out_of_cur > 0 || commit->renamed > 0) && fsync(commit->mbox->cur_fd) < 0)
		maildir_commit_fail(commit, "fsync", ".");
	if (commit->retained_count > 0 && fsync(commit->mbox->retained_fd) < 0)
		maildir_commit_fail(commit, "fsync", "../" RETENTION_DIR_NAME);
}

/* Brings message i's index entry up to date; returns true if it changed. An unlinked message's
 * entry goes (next_uid stays, so its UID is never reused); one in the undelete area keeps its
 * UID and notes when it went there. */
static bool maildir_commit_entry(struct maildir_commit *commit, const struct store_changes *changes,
				 size_t i)
{
	const struct maildir_file *f = &commit->mbox->files[i];
	bool retrieved = changes->retrieved != NULL && changes->retrieved[i];
	struct uidlist_entry *entry;
	bool changed = false;

	if (!commit->removed[i] && !retrieved)
		return false;
	entry = uidlist_lookup(commit->mbox->uidlist, f->name, f->base_len);
	if (entry == NULL)
		return false;
	if (commit->removed[i] && !commit->retained[i]) {
		entry->present = false;
		return true;
	}
	if (retrieved && entry->retrieved_at == 0) {
		entry->retrieved_at = commit->now;
		changed = true;
	}
	if (commit->retained[i]) {
		entry->deleted_at = commit->now;
		changed = true;
	}
	const char *info = maildir_name_info(f->name);
	if (uidlist_entry_set_info(entry, info != NULL ? info + 1 : NULL,
				   info != NULL ? strlen(info + 1) : 0))
		changed = true;
	return changed;
}

/* Writes what the commit did into the index, with the purge of the undelete area. */
static void maildir_commit_index(struct maildir_commit *commit, const struct store_changes *changes)
{
	struct maildir_mailbox *mbox = commit->mbox;
	bool changed = false;
	char *error;

	uidlist_mark_all(mbox->uidlist, true);
	/* before the lookups below, which reorder the entries */
	if (commit->policy != NULL &&
	    maildir_retained_purge(mbox, commit->policy, &commit->report) > 0)
		changed = true;
	for (size_t i = 0; i < mbox->box.count; i++) {
		if (maildir_commit_entry(commit, changes, i))
			changed = true;
	}
	uidlist_sweep(mbox->uidlist);
	if (changed && uidlist_save(mbox->uidlist, mbox->index_path, &error) < 0)
		maildir_commit_fail_text(commit, error);
}

/* A failed quota update is logged only: the mail is handled, and the usage heals at next login.
 * Messages in the undelete area do not count (quota.h): they leave the usage as they leave cur/. */
static void maildir_commit_quota(struct maildir_commit *commit)
{
	uint64_t bytes = 0;
	size_t count = 0;
	char *error;

	for (size_t i = 0; i < commit->mbox->box.count; i++) {
		if (commit->removed[i]) {
			bytes += commit->mbox->files[i].file_size;
			count++;
		}
	}
	commit->report.freed_octets = bytes;
	if (count == 0)
		return;
	if (quota_usage_add(commit->mbox->path, -(int64_t)bytes, -(int64_t)count, &error) < 0) {
		log_warn("maildir_quota_failed", "error=%s", log_quote(error));
		free(error);
	}
}

static void maildir_commit_free(struct maildir_commit *commit)
{
	free(commit->remove);
	free(commit->removed);
	free(commit->retained);
}

/* Runs the commit's steps in their crash-safe order: files first (out of cur/, flags), then a
 * flush of the directories, then the index that records it. */
static void maildir_commit_steps(struct maildir_commit *commit, const struct store_changes *changes)
{
	maildir_commit_removals(commit);
	if (changes->mark_seen && changes->retrieved != NULL)
		maildir_commit_seen(commit, changes);
	maildir_commit_flush(commit);
	maildir_commit_index(commit, changes);
	maildir_commit_quota(commit);
	if (commit->report.expired > 0 || commit->report.purged > 0)
		log_info("maildir_upkeep", "path=%s expired=%zu retained=%zu purged=%zu left=%zu",
			 log_quote(commit->mbox->path), commit->report.expired,
			 commit->retained_count, commit->report.purged, commit->report.purge_left);
}

static int maildir_commit_run(struct store_mailbox *box, const struct store_changes *changes,
			      enum store_error *kind_r, char **error_r)
{
	struct maildir_commit commit = {.mbox = (struct maildir_mailbox *)box,
					.policy = changes->policy,
					.now = changes->policy != NULL ? changes->policy->now
								       : wall_now()};

	commit.remove = xcalloc(box->count + 1, sizeof(commit.remove[0]));
	commit.removed = xcalloc(box->count + 1, sizeof(commit.removed[0]));
	commit.retained = xcalloc(box->count + 1, sizeof(commit.retained[0]));
	if (maildir_commit_choose(&commit, changes)) {
		maildir_names_ready(commit.mbox);
		if (maildir_cur_dir(commit.mbox) < 0) {
			maildir_fail_errno("open", commit.mbox->cur_path, kind_r, error_r);
			maildir_commit_free(&commit);
			return -1;
		}
		maildir_commit_steps(&commit, changes);
	}
	if (changes->report_r != NULL)
		*changes->report_r = commit.report;
	maildir_commit_free(&commit);
	if (commit.failures == 0)
		return 0;
	*kind_r = STORE_ERROR_TEMP;
	*error_r = commit.failures == 1 ? commit.first_error
					: xasprintf("%s (and %zu more failures)",
						    commit.first_error, commit.failures - 1);
	if (commit.failures > 1)
		free(commit.first_error);
	return -1;
}

const struct store_backend store_backend_maildir = {
    .name = "maildir",
    .open = maildir_open,
    .read_open = maildir_read_open,
    .read = maildir_read,
    .read_close = maildir_read_close,
    .commit = maildir_commit_run,
    .close = maildir_close,
    .last_login_get = maildir_last_login_get,
    .last_login_set = maildir_last_login_set,
    .lock_identity = maildir_lock_identity,
};

/* A file in tmp/ older than this is a delivery that a crash interrupted. */
#define MAILDIR_TMP_MAX_AGE_SECS (24 * 60 * 60)

size_t maildir_cleanup_tmp(const char *maildir)
{
	char *path = xasprintf("%s/tmp", maildir);
	DIR *dir = opendir(path);
	time_t cutoff = time(NULL) - MAILDIR_TMP_MAX_AGE_SECS;
	struct dirent *d;
	struct stat st;
	size_t removed = 0;

	if (dir == NULL) {
		free(path);
		return 0;
	}
	while ((d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || st.st_mtime >= cutoff)
			continue;
		if (unlinkat(dirfd(dir), d->d_name, 0) == 0)
			removed++;
		else
			log_warn("tmp_cleanup_failed", "path=%s file=%s error=%s", log_quote(path),
				 log_quote(d->d_name), log_quote(strerror(errno)));
	}
	closedir(dir);
	free(path);
	return removed;
}

/* What the Maildir backend's files share: the open mailbox (maildir.c) and the undelete area
 * (maildir_retention.c). Nothing outside src/store/ includes this. */
#ifndef BUZON_STORE_MAILDIR_PRIVATE_H
#define BUZON_STORE_MAILDIR_PRIVATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store/store.h"
#include "store/uidlist.h"

/* One message of the snapshot, parallel to store_mailbox.messages. */
struct maildir_file {
	char *name;	     /* current name in cur/; changes when flags are renamed */
	size_t base_len;     /* length of the base name: the part of name before ':' */
	uint64_t file_size;  /* octets on disk, for the quota usage */
	time_t retrieved_at; /* from the index: when it was first retrieved; 0: never */
};

struct uidl_import_map;

struct maildir_mailbox {
	struct store_mailbox box; /* first, so that store_mailbox pointers convert back */
	char *path;
	char *cur_path;
	char *index_path;
	int cur_fd;
	int lock_fd;
	int retained_fd; /* the undelete area (RETENTION_DIR_NAME), opened on first use; or -1 */
	struct uidlist *uidlist;
	struct maildir_file *files; /* box.count of them, in box.messages order */
	size_t *by_name;	    /* indexes into files sorted by base name; built on first use */
	uint64_t file_bytes;	    /* sum of the files' sizes on disk */
	bool names_pending;	    /* files[].name not built yet (snapshot from the index) */
	/* UIDLs kept from the server buzon replaced (uidl_import.h), by UID; NULL: none */
	struct uidl_import_map *import_map;
	bool import_unfinished; /* this open imported them: mark it done once the index is saved */
	char (*native_uidls)[STORE_UIDL_LEN + 1]; /* buzon's own UIDLs of the snapshot's messages */
};

/* Fills *kind_r and *error_r (newly allocated) from errno for a failed call on what. Returns -1. */
int maildir_fail_errno(const char *call, const char *what, enum store_error *kind_r,
		       char **error_r);

/* cur/ as a directory descriptor for the *at() calls, opened on demand (maildir.c says when it
 * is released). Returns -1 with errno set. */
int maildir_cur_dir(struct maildir_mailbox *mbox);

/* The UIDL of uid in a mailbox of uidvalidity (store.h). */
void maildir_uidl_format(char uidl[STORE_UIDL_LEN + 1], uint32_t uid, uint32_t uidvalidity);

/* The UIDL clients see for uid in this mailbox: the one kept from the replaced server if the
 * mailbox was imported (owned by the mailbox), else buzon's own, formatted into buf. */
const char *maildir_uidl_text(const struct maildir_mailbox *mbox, uint32_t uid,
			      char buf[STORE_UIDL_LEN + 1]);

/* ---- the undelete area (maildir_retention.c) ---- */

/* The name of an index entry's file: basename[:info], newly allocated. */
char *maildir_entry_file_name(const struct uidlist_entry *entry);

/* The undelete area's directory descriptor, made (mode 0700, and the Maildir fsynced) when
 * create is set and it does not exist yet. Returns -1 with errno set (ENOENT: none yet). */
int maildir_retained_dir(struct maildir_mailbox *mbox, bool create);

/* Closes the undelete area's descriptor, if open. */
void maildir_retained_release(struct maildir_mailbox *mbox);

/* After a full scan of cur/: finds the files of live index entries that the scan did not see
 * (present false) in the undelete area and makes them retained entries, deleted now. That is
 * where a commit that moved them there but could not save the index (a crash) left them. Returns
 * how many entries changed. */
size_t maildir_retained_recover(struct maildir_mailbox *mbox, time_t now);

/* Removes the retained messages whose time is up under policy (at most policy->purge_max, if not
 * 0) from the undelete area and marks their entries not present (the caller sweeps and saves the
 * index afterwards; the files go first, so that a crash in between leaves an entry without a
 * file, which the next purge drops, rather than a file nobody knows). Counts into report.
 * Returns how many entries were marked. */
size_t maildir_retained_purge(struct maildir_mailbox *mbox, const struct store_policy *policy,
			      struct store_commit_report *report);

#endif

/* The undelete window of Maildir mailboxes, outside a POP3 session: `buzon undelete` restores
 * deleted messages, `buzon purge` and the server's background purge remove them for good when
 * their time is up (and apply EXPIRE).
 *
 * A message deleted through POP3 (DELE, or EXPIRE) while [mail] deleted_retention is not 0 is
 * moved from cur/ into RETENTION_DIR_NAME in the Maildir, under the same file name; its index
 * entry keeps its UID and gets the time of the deletion (uidlist.h, deleted_at). No Maildir
 * reader lists that directory (it is neither cur/, new/ nor a ".Folder" of Maildir++), POP3
 * never shows its messages, and they do not count towards the quota: they are gone for the user,
 * who can no longer free space by deleting them if they counted, until the administrator brings
 * them back. Restoring one moves it back to cur/ under its old name, so it keeps its UID and a
 * client that still has its UIDL does not download it again.
 *
 * Every function here takes the maildrop lock without waiting (STORE_ERROR_IN_USE when a session
 * holds it), leaves a Maildir that does not exist alone, and changes files before the index, so a
 * crash at any point leaves either the old state or one the next open repairs (maildir.c). */
#ifndef BUZON_STORE_RETENTION_H
#define BUZON_STORE_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store/store.h"

/* The undelete area, a directory in the Maildir. */
#define RETENTION_DIR_NAME "buzon-deleted"

/* Purges the Maildir at maildir (a path, without "maildir:") under policy: the messages of the
 * undelete area whose time is up, files there that the index does not know once their ctime is
 * as old as the retention, and the messages EXPIRE deletes (policy->expire_days). Fills *report_r
 * (zeros when the Maildir does not exist). Returns 0, or -1 with *kind_r and a newly allocated
 * *error_r. */
int retention_purge(const char *maildir, const struct store_policy *policy,
		    struct store_commit_report *report_r, enum store_error *kind_r, char **error_r);

/* A cheap look, without lock or index, for the background purge: whether the undelete area of
 * maildir holds a file whose inode changed (it got there) retention_secs or more before now. The
 * deletion time in the index is never earlier than that, so false means nothing is due yet. */
bool retention_purge_maybe_due(const char *maildir, unsigned int retention_secs, time_t now);

/* A message of the undelete area, as retention_undelete() reports it. */
struct retention_message {
	uint32_t uid;
	const char *uidl; /* the UIDL clients saw (an imported one, uidl_import.h, or buzon's) */
	time_t deleted_at;
	uint64_t size;	    /* as RETR sends it, or the file's size if the index does not know */
	uint64_t file_size; /* octets on disk, as the quota counts them */
	const char *name;   /* its file name */
};

/* Which messages retention_undelete() restores: all those matching every given criterion. */
struct retention_undelete_options {
	time_t since;		  /* deleted at or after this time; 0: any time */
	const char *const *uidls; /* one of these UIDLs; uidl_count 0: any */
	size_t uidl_count;
	bool dry_run; /* report what would be restored, change nothing */
};

enum retention_outcome {
	RETENTION_RESTORED,	 /* back in cur/ with its UID */
	RETENTION_WOULD_RESTORE, /* dry run */
	RETENTION_MISSING, /* its file was gone (removed behind buzon's back): entry dropped */
	RETENTION_FAILED,  /* could not be moved; error says why; nothing changed for it */
};

/* Called once per matching message, in ascending UID order; error is NULL unless FAILED. */
typedef void retention_report_fn(void *context, const struct retention_message *msg,
				 enum retention_outcome outcome, const char *error);

struct retention_undelete_totals {
	size_t restored; /* or would be, in a dry run */
	uint64_t restored_octets;
	size_t failed;
};

/* Restores the matching messages of maildir's undelete area into cur/, and adds them to the
 * quota usage (which they may take over the quota: that is allowed, the caller says so). Returns
 * 0 (*totals_r filled; failures of single messages are reported and counted, not fatal), or -1
 * with *kind_r and *error_r when the mailbox cannot be used at all. */
int retention_undelete(const char *maildir, const struct retention_undelete_options *options,
		       retention_report_fn *report, void *context,
		       struct retention_undelete_totals *totals_r, enum store_error *kind_r,
		       char **error_r);

#endif

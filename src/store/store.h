/* The mailbox backend interface. Protocol code talks to mailboxes only through this header, so that
 * a PostgreSQL backend can slot in beside Maildir without touching src/pop3/.
 *
 * Contract (docs/DESIGN.md, "The mailbox contract"):
 *  - open() takes the exclusive maildrop lock and returns a snapshot: messages in a stable order
 *    (ascending UID), each with its UIDL and its exact size as RETR sends it (CRLF line ends,
 * before dot-stuffing). Mail arriving later is not in the snapshot.
 *  - read_open()/read() stream one message's raw bytes; the caller converts and dot-stuffs.
 *  - commit() runs only for QUIT in TRANSACTION state, and for the purges of store/retention.h
 *    (no session changes, only the policy). close() without commit() changes nothing.
 *  - Deleted messages may wait in an undelete area (store_policy): invisible to open(), keeping
 *    their UIDs, until purged or restored (store/retention.h).
 */
#ifndef BUZON_STORE_STORE_H
#define BUZON_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Why an operation failed, mapped by the protocol to RFC 2449/3206 response codes. */
enum store_error {
	STORE_ERROR_NONE = 0,
	STORE_ERROR_IN_USE, /* another session holds the maildrop lock: [IN-USE] */
	STORE_ERROR_TEMP,   /* retrying later may work (I/O error, disk full): [SYS/TEMP] */
	STORE_ERROR_PERM,   /* needs the administrator (damaged, permissions): [SYS/PERM] */
};

/* UIDL text: 8 lower-case hex digits of the UID, then 8 of the UIDVALIDITY (Dovecot's default). */
#define STORE_UIDL_LEN 16
/* The longest UIDL a client may be shown (RFC 1939 §7): a mailbox imported from another server
 * keeps that server's UIDLs (store/uidl_import.h), which may be longer than buzon's own. */
#define STORE_UIDL_MAX 70

struct store_message {
	uint32_t uid;
	uint64_t size; /* octets RETR sends before dot-stuffing: bare LF counted as CRLF */
	const char *uidl; /* 1..STORE_UIDL_MAX octets 0x21..0x7e (RFC 1939), owned by the mailbox */
};

struct store_backend;

/* What identifies a maildrop's lock, the same for every path that leads to that maildrop (Maildir:
 * the device and inode of its lock file). Sessions publish it so that another login of the same
 * maildrop can find the session that holds it ([pop3] lock_takeover, src/pop3/takeover.c). */
struct store_lock_id {
	uint64_t volume;
	uint64_t object;
};

/* A locked snapshot of one user's maildrop. Backends embed this as their first member. */
struct store_mailbox {
	const struct store_backend *backend;
	struct store_message *messages; /* ascending UID */
	size_t count;
	uint64_t total_size;
	/* For store_upkeep_due(): the earliest retrieval time of a message of the snapshot and the
	 * earliest deletion time of a message in the undelete area; 0 when there is none. */
	time_t oldest_retrieved_at;
	time_t oldest_deleted_at;
};

/* What a commit does besides the session's own changes: the undelete window and EXPIRE. */
struct store_policy {
	/* Deleted messages (DELE or EXPIRE) move to a hidden undelete area, keeping their UID, and
	 * are purged this many seconds after; 0: they are removed at once. */
	unsigned int deleted_retention_secs;
	/* RFC 2449 EXPIRE: -1 NEVER; N: messages retrieved (RETR, in a committed session) more
	 * than N days ago are deleted; 0: retrieved messages are deleted at this commit. */
	int expire_days;
	/* At most this many messages of the undelete area are purged by one commit, so that a
	 * QUIT stays quick (the rest wait for the next one or the background purge); 0: all. */
	size_t purge_max;
	/* The current time (wall_now(): tests inject it). */
	time_t now;
};

/* What a commit did beyond the deletions the session asked for (for logs and `buzon purge`). */
struct store_commit_report {
	size_t expired;	   /* messages deleted by EXPIRE */
	size_t purged;	   /* messages removed from the undelete area for good */
	size_t purge_left; /* messages of the undelete area due but left for later (purge_max) */
	uint64_t freed_octets; /* quota usage given back (deleted and expired messages) */
};

/* Streams one message's bytes; owned by the backend, closed with read_close(). */
struct store_reader;

/* What commit() should do with each message of the snapshot (arrays of mailbox->count). */
struct store_changes {
	const bool *deleted;   /* remove these (NULL: none) */
	const bool *retrieved; /* RETR'd in this session: their retrieval time is recorded, and they
				* are marked Seen when mark_seen is set (NULL: none) */
	bool mark_seen;
	const struct store_policy *policy;    /* NULL: no undelete window, no EXPIRE */
	struct store_commit_report *report_r; /* filled if not NULL */
};

/* Whether a commit would have work to do for policy even if the session changed nothing: a
 * message retrieved long enough ago for EXPIRE, or one in the undelete area whose time is up.
 * false when policy is NULL. */
bool store_upkeep_due(const struct store_mailbox *box, const struct store_policy *policy);

/* Whether EXPIRE deletes a message first retrieved at retrieved_at (0: never retrieved). */
bool store_expire_due(const struct store_policy *policy, time_t retrieved_at);

/* Whether a message that went into the undelete area at deleted_at is to be purged for good. */
bool store_purge_due(const struct store_policy *policy, time_t deleted_at);

struct store_backend {
	const char *name; /* the location prefix, e.g. "maildir" */

	/* Opens and locks the maildrop at path (the location with its "name:" prefix removed and
	 * the user's variables expanded). A missing maildrop is an empty one; backends may create
	 * it. Returns 0, or -1 with *kind_r and a newly allocated *error_r for the log. */
	int (*open)(const char *path, struct store_mailbox **box_r, enum store_error *kind_r,
		    char **error_r);

	/* Opens message index for reading. Returns NULL with *kind_r and *error_r on failure
	 * (a message removed behind our back is STORE_ERROR_TEMP). */
	struct store_reader *(*read_open)(struct store_mailbox *box, size_t index,
					  enum store_error *kind_r, char **error_r);
	/* Reads up to len bytes; returns bytes read, 0 at the end, -1 on error (errno set). */
	ssize_t (*read)(struct store_reader *reader, void *buf, size_t len);
	void (*read_close)(struct store_reader **reader);

	/* Applies changes. Deletions are done first; every one is attempted even if one fails.
	 * Returns 0, or -1 with *kind_r and *error_r if anything could not be applied. */
	int (*commit)(struct store_mailbox *box, const struct store_changes *changes,
		      enum store_error *kind_r, char **error_r);

	/* Releases the lock and frees the snapshot; sets *box to NULL. */
	void (*close)(struct store_mailbox **box);

	/* RFC 2449 LOGIN-DELAY: the time of the maildrop's last successful login, kept with the
	 * maildrop so that it outlives restarts. last_login_get() needs no lock and gives
	 * *when_r = 0 when none is recorded; last_login_set() is called with the maildrop open
	 * (locked). Both return 0, or -1 with a newly allocated *error_r (get: *when_r = 0). */
	int (*last_login_get)(const char *path, time_t *when_r, char **error_r);
	int (*last_login_set)(const char *path, time_t when, char **error_r);

	/* The identity of the lock of the maildrop at path (as for open()), without taking it.
	 * Returns 0, or -1 if there is none yet (never opened) or it cannot be found. NULL in a
	 * backend whose sessions cannot be taken over. */
	int (*lock_identity)(const char *path, struct store_lock_id *id_r);
};

/* Finds the backend for a location such as "maildir:/var/mail/%d/%n" and returns it with *path_r
 * pointing past the "name:" prefix inside location. Returns NULL for an unknown backend. */
const struct store_backend *store_backend_find(const char *location, const char **path_r);

extern const struct store_backend store_backend_maildir;

/* Removes files older than a day from maildir/tmp: deliveries that a crash interrupted before
 * their rename into new/ (Maildir's convention is 36 hours; a day is enough for any delivery
 * still in progress). Called at every mailbox open. Returns how many were removed. */
size_t maildir_cleanup_tmp(const char *maildir);

#endif

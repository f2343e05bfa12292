/* The mailbox backend interface. Protocol code talks to mailboxes only through this header, so that
 * a PostgreSQL backend can slot in beside Maildir without touching src/pop3/.
 *
 * Contract (docs/DESIGN.md, "The mailbox contract"):
 *  - open() takes the exclusive maildrop lock and returns a snapshot: messages in a stable order
 *    (ascending UID), each with its UIDL and its exact size as RETR sends it (CRLF line ends,
 * before dot-stuffing). Mail arriving later is not in the snapshot.
 *  - read_open()/read() stream one message's raw bytes; the caller converts and dot-stuffs.
 *  - commit() runs only for QUIT in TRANSACTION state. close() without commit() changes nothing.
 */
#ifndef BUZON_STORE_STORE_H
#define BUZON_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Why an operation failed, mapped by the protocol to RFC 2449/3206 response codes. */
enum store_error {
	STORE_ERROR_NONE = 0,
	STORE_ERROR_IN_USE, /* another session holds the maildrop lock: [IN-USE] */
	STORE_ERROR_TEMP,   /* retrying later may work (I/O error, disk full): [SYS/TEMP] */
	STORE_ERROR_PERM,   /* needs the administrator (damaged, permissions): [SYS/PERM] */
};

/* UIDL text: 8 lower-case hex digits of the UID, then 8 of the UIDVALIDITY (Dovecot's default). */
#define STORE_UIDL_LEN 16

struct store_message {
	uint32_t uid;
	uint64_t size; /* octets RETR sends before dot-stuffing: bare LF counted as CRLF */
	char uidl[STORE_UIDL_LEN + 1];
};

struct store_backend;

/* A locked snapshot of one user's maildrop. Backends embed this as their first member. */
struct store_mailbox {
	const struct store_backend *backend;
	struct store_message *messages; /* ascending UID */
	size_t count;
	uint64_t total_size;
};

/* Streams one message's bytes; owned by the backend, closed with read_close(). */
struct store_reader;

/* What commit() should do with each message of the snapshot (arrays of mailbox->count). */
struct store_changes {
	const bool *deleted;   /* remove these */
	const bool *retrieved; /* RETR'd in this session: mark Seen when the config asks for it */
	bool mark_seen;
};

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

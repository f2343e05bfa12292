/* The passwd-file user database, in the format Dovecot users already have:
 *
 *   user:{SCHEME}secret[:uid:gid:gecos:home:shell:extra_fields]
 *
 * One user per line; "#" starts a comment line; blank lines are ignored; fields after the secret
 * are kept but ignored. Reading tolerates bad lines (reported, skipped); writing edits one line and
 * keeps every other line byte for byte, replacing the file atomically (temp file, fsync, rename).
 */
#ifndef BUZON_AUTH_PASSWD_FILE_H
#define BUZON_AUTH_PASSWD_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/* Longest user name accepted anywhere (RFC 1939 leaves it open; 255 octets fits a command line). */
#define PASSWD_USER_MAX 255

struct passwd_entry {
	char *user;
	char *secret; /* "{SCHEME}data" as stored */
	char *extra;  /* the rest of the line after the secret's ":" (may be ""), never NULL */
	unsigned int line;
};

struct passwd_db {
	struct passwd_entry *entries; /* sorted by user for lookups */
	size_t count;
	/* identity of the file this was read from, to notice changes cheaply */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

/* Calls report(context, line, message) for each bad line that was skipped. */
typedef void passwd_report_fn(void *context, unsigned int line, const char *message);

/* Parses a whole file's text. Bad lines (no ':', invalid user name, empty secret, duplicates after
 * the first) are skipped and reported. Returns 0; db must be freed with passwd_db_free(). */
int passwd_db_parse(const char *text, size_t len, struct passwd_db *db, passwd_report_fn *report,
		    void *context);

/* Reads path. Returns -1 with a newly allocated *error_r if it cannot be read; errno is then
 * ENOENT only when the file does not exist. */
int passwd_db_load(const char *path, struct passwd_db *db, passwd_report_fn *report, void *context,
		   char **error_r);

/* True if path's identity (device, inode, size, mtime) differs from the one db was read from. */
bool passwd_db_changed(const struct passwd_db *db, const char *path);

/* Finds user by exact name, or NULL. */
const struct passwd_entry *passwd_db_lookup(const struct passwd_db *db, const char *user);

void passwd_db_free(struct passwd_db *db);

/* User names: 1..PASSWD_USER_MAX octets of well-formed UTF-8, no control bytes, no space, no ':',
 * no '/', not "." or ".."; at most one '@' and not at either end, and then neither the local part
 * nor the domain may be "." or "..". They become parts of mailbox paths (%u, %n, %d). */
bool passwd_user_name_valid(const char *user);

/* Sets user's secret, adding the user if add is true (error if present) or replacing the secret of
 * an existing user if add is false (error if absent); other fields of the line are kept. Creates
 * the file (mode 0640) if missing when adding. Returns -1 with a newly allocated *error_r. */
int passwd_file_set(const char *path, const char *user, const char *secret, bool add,
		    char **error_r);

/* Removes user's line. Returns -1 with *error_r if absent or the file cannot be written. */
int passwd_file_delete(const char *path, const char *user, char **error_r);

#endif

/* The persistent per-mailbox UID index (buzon-uidlist): Maildir base name -> UID, the mailbox's
 * UIDVALIDITY and next UID, cached message sizes, and when each message was first retrieved and
 * (for messages in the undelete area) deleted. The file format is described at the top of
 * uidlist.c.
 *
 * Rules the index keeps so that a UIDL never changes and is never reused (DESIGN.md goal 1):
 *  - next_uid only grows and is always greater than every UID the index has held;
 *  - a damaged or truncated file keeps the UID of every line that still parses;
 *  - saving is atomic (temp file, fsync, rename, fsync of the directory).
 *
 * Entry pointers returned by uidlist_lookup() stay valid until the next uidlist_add(),
 * uidlist_sweep() or uidlist_free(). */
#ifndef BUZON_STORE_UIDLIST_H
#define BUZON_STORE_UIDLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define UIDLIST_FILE_NAME "buzon-uidlist"
/* Appended to the index's path for the file a save writes before renaming it over the index. */
#define UIDLIST_TEMP_SUFFIX ".tmp"

/* A size that is not cached (written as "-" in the file). */
#define UIDLIST_SIZE_UNKNOWN UINT64_MAX

/* The highest UID the index hands out. UIDs are printed as 8 hex digits, so 0xffffffff is the
 * last; next_uid == UIDLIST_UID_MAX + 1 cannot be stored in 32 bits, hence next_uid is 64-bit. */
#define UIDLIST_UID_MAX 0xffffffffU

/* Base names are Maildir file names before ':' and are never longer than a file name. */
#define UIDLIST_BASENAME_MAX 255

struct uidlist_entry {
	uint32_t uid;
	bool present;	    /* set by the caller; uidlist_sweep() drops entries where it is false */
	uint64_t crlf_size; /* size as RETR sends it, or UIDLIST_SIZE_UNKNOWN */
	uint64_t file_size; /* size of the file that crlf_size was computed for, or UNKNOWN */
	char *basename;	    /* owned by the list */
	char *info; /* what followed ':' in the name in cur/ ("2,S"), NULL if unknown; stored in
		     * basename's allocation (free basename only) */
	time_t retrieved_at; /* when a session that RETRieved the whole message committed; 0: not
			      * retrieved (or before buzon recorded it). For EXPIRE. */
	time_t deleted_at;   /* 0: a live message (in cur/). Otherwise the message was deleted at
			      * that time and waits in the undelete area (store/retention.h) under
			      * the name basename[:info], invisible to POP3, keeping its UID. */
};

/* The modification times of cur/ and new/ at a moment when the entries listed cur/ exactly (with
 * info and sizes) and new/ held no message. While both directories still have these times,
 * nothing was added, removed or renamed in them, and a mailbox can be opened from the index alone,
 * without reading the directories (Dovecot's maildir uidlist does the same). Only times at least
 * a couple of seconds old are recorded, because a change within the same clock tick would leave a
 * directory's time unchanged. */
struct uidlist_dir_stamp {
	bool valid;
	struct timespec cur_mtime;
	struct timespec new_mtime;
};

struct uidlist {
	uint32_t uidvalidity; /* 0 only after uidlist_parse() found no header and no trailer */
	uint64_t next_uid;    /* in [1, UIDLIST_UID_MAX + 1]; greater than every UID held */
	struct uidlist_entry *entries; /* in no particular order; read them, change only sizes */
	size_t count;
	struct uidlist_dir_stamp stamp; /* saved with the list; invalid after damage */

	/* private */
	size_t alloc;
	bool sorted_by_name;
};

/* A new UIDVALIDITY: the current time in seconds, never 0. */
uint32_t uidlist_uidvalidity_now(void);

/* Returns a new empty list with uidvalidity (nonzero) and next_uid 1. Free with uidlist_free(). */
struct uidlist *uidlist_new(uint32_t uidvalidity);

/* Parses an index held in memory (data need not be NUL-terminated). Never fails: lines that do not
 * parse are skipped, duplicates are dropped, and *damaged_r tells whether anything was wrong
 * (bad header, bad or duplicate line, missing or disagreeing trailer, truncation). If neither the
 * header nor the trailer could be read, uidvalidity is 0 and the caller must pick a new one.
 * Returns a list the caller frees with uidlist_free(). */
struct uidlist *uidlist_parse(const char *data, size_t len, bool *damaged_r);

/* Serializes list (entries in ascending UID order) into newly allocated memory, NUL-terminated;
 * *len_r gets the length without the NUL. */
char *uidlist_format(const struct uidlist *list, size_t *len_r);

/* Reads the index at path. Returns 1 and the parsed list (see uidlist_parse(); a lost UIDVALIDITY
 * is replaced by a new one and reported as damaged), 0 and a new empty list if the file does not
 * exist, or -1 with a newly allocated *error_r (naming the file and errno text) and errno set. */
int uidlist_load(const char *path, struct uidlist **list_r, bool *damaged_r, char **error_r);

/* Writes the index atomically to path: the temp file path UIDLIST_TEMP_SUFFIX, fsync, rename,
 * fsync of the directory. The temp file's name is fixed, so saves of one index must not run
 * concurrently (the Maildir backend saves only under the maildrop lock). Returns 0, or -1 with a
 * newly allocated *error_r and errno set; on failure the previous file at path is left untouched
 * and the temp file is removed. */
int uidlist_save(const struct uidlist *list, const char *path, char **error_r);

/* Finds the entry for the base name of len bytes, or returns NULL. O(log n); the first lookup after
 * an uidlist_add() re-sorts the list (O(n log n)). */
struct uidlist_entry *uidlist_lookup(struct uidlist *list, const char *basename, size_t len);

/* Adds basename with the next UID (marked present). Returns 0 and the UID in *uid_r, or -1 if the
 * base name is not valid (uidlist_basename_valid()) or the UID space is exhausted. The caller must
 * make sure the name is not in the list already. */
int uidlist_add(struct uidlist *list, const char *basename, size_t len, uint64_t crlf_size,
		uint64_t file_size, uint32_t *uid_r);

/* Records the info part of the entry's current file name (NULL: unknown). Returns true if it
 * changed. */
bool uidlist_entry_set_info(struct uidlist_entry *entry, const char *info, size_t len);

/* Sets every entry's present flag to present. */
void uidlist_mark_all(struct uidlist *list, bool present);

/* Drops the entries not marked present; next_uid is unchanged, so their UIDs are never handed out
 * again. Returns how many were dropped. */
size_t uidlist_sweep(struct uidlist *list);

/* A base name the file format can hold: 1 to UIDLIST_BASENAME_MAX bytes, none of them a control
 * byte, space, DEL, '/' or ':'. */
bool uidlist_basename_valid(const char *basename, size_t len);

/* An info part the file format can hold: at most UIDLIST_BASENAME_MAX bytes, none of them a
 * control byte, space, DEL or '/'. */
bool uidlist_info_valid(const char *info, size_t len);

/* Frees the list and sets *list to NULL. */
void uidlist_free(struct uidlist **list);

#endif

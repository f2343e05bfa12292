/* Per-Maildir quota usage: how many octets and messages a mailbox holds, kept in a small file so
 * that delivery can check a quota without scanning the mailbox for every message.
 *
 * The file (QUOTA_FILE_NAME in the Maildir root, format at the top of quota.c) is a cache, never
 * the truth: the Maildir backend overwrites it with the snapshot's totals at every POP3 login, and
 * a missing or damaged file is recomputed by scanning new/ and cur/. Sizes are file octets (LF
 * line ends, as stored), not the CRLF sizes POP3 reports.
 *
 * Every function takes flock(LOCK_EX) on the file itself for its read-modify-write, so concurrent
 * deliveries and logins do not lose each other's updates. Errors are returned as -1 with a newly
 * allocated *error_r (naming the file and the errno text) and errno set. */
#ifndef BUZON_STORE_QUOTA_H
#define BUZON_STORE_QUOTA_H

#include <stdint.h>

#define QUOTA_FILE_NAME "buzon-quota"

/* Reads the usage of the Maildir at maildir. If the file is missing or unparsable, the usage is
 * recomputed from new/ and cur/ (sum of file sizes, count of regular files whose names do not
 * start with '.') and written back. A Maildir that does not exist yet has usage 0 (and is not
 * created). Returns 0 or -1. */
int quota_usage_get(const char *maildir, uint64_t *bytes_r, uint64_t *messages_r, char **error_r);

/* Adds bytes and messages (either may be negative) to the usage; a result below zero becomes zero.
 * Call it after the change is on disk: if the file must be recomputed, the scan already sees the
 * change and the deltas are not applied on top. Returns 0 or -1. */
int quota_usage_add(const char *maildir, int64_t bytes, int64_t messages, char **error_r);

/* Replaces the usage (the Maildir backend does this with its snapshot's totals). Returns 0 or -1.
 */
int quota_usage_set(const char *maildir, uint64_t bytes, uint64_t messages, char **error_r);

#endif

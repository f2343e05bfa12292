/* Per-user settings from the passwd-file: which user an address names, that user's quota and mail
 * policies. Shared by the auth process (LMTP lookups, logins) and the commands that read the
 * passwd-file themselves (`buzon deliver`, `buzon purge`). */
#ifndef BUZON_AUTH_RECIPIENT_H
#define BUZON_AUTH_RECIPIENT_H

#include <stdint.h>

#include "auth/passwd_file.h"
#include "core/config.h"

/* The user whose name is address (after SASLprep), else the user named by its local part; NULL
 * if neither exists. */
const struct passwd_entry *recipient_lookup(const struct passwd_db *db, const char *address);

/* The user's limits: [mail] quota_bytes / quota_messages, overridden by the passwd-file's extra
 * fields (after uid:gid:gecos:home:shell, space-separated key=value): Dovecot's
 * "userdb_quota_rule=*:storage=1G:messages=1000" (also without "userdb_") and
 * "quota_bytes=1G" / "quota_messages=1000". 0 means no limit. */
void recipient_quota(const struct buzon_config *config, const struct passwd_entry *entry,
		     uint64_t *bytes_r, uint64_t *messages_r);

/* Bounds of the per-user policies: the same as [pop3] expire and login_delay accept. */
#define RECIPIENT_EXPIRE_DAYS_MAX 36500
#define RECIPIENT_LOGIN_DELAY_MAX (30u * 86400u)

/* The user's RFC 2449 policies: *expire_days_r (-1 for NEVER, 0 deletes retrieved mail at QUIT)
 * and *login_delay_secs_r (0: none). They are [pop3] expire and login_delay, overridden by the
 * passwd-file's extra fields "expire=N" (days) or "expire=NEVER" and "login_delay=N" (seconds, or
 * a duration such as "15m"), also with Dovecot's "userdb_" prefix; the last one of a kind wins.
 * entry may be NULL (a user the passwd-file no longer has): the config's values. A malformed
 * value is ignored (the config's value stays): returns -1 and sets *error_r (if not NULL) to a
 * static text naming it; otherwise returns 0. */
int recipient_policies(const struct buzon_config *config, const struct passwd_entry *entry,
		       int *expire_days_r, unsigned int *login_delay_secs_r, const char **error_r);

#endif

/* Delivery recipients: which user an address names, and that user's quota. Shared by the auth
 * process (LMTP lookups) and `buzon deliver` (which reads the passwd-file itself). */
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

#endif

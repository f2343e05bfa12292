/* Delivery recipients (see recipient.h). */
#include <stdlib.h>
#include <string.h>

#include "auth/recipient.h"
#include "auth/saslprep.h"
#include "core/util.h"

static const struct passwd_entry *recipient_find(const struct passwd_db *db, const char *name)
{
	char *prepared = NULL;
	const struct passwd_entry *entry = NULL;

	if (saslprep(name, false, &prepared) == 0 && passwd_user_name_valid(prepared))
		entry = passwd_db_lookup(db, prepared);
	free(prepared);
	return entry;
}

const struct passwd_entry *recipient_lookup(const struct passwd_db *db, const char *address)
{
	const struct passwd_entry *entry = recipient_find(db, address);
	const char *at = strrchr(address, '@');

	if (entry == NULL && at != NULL && at != address) {
		char *local = xstrndup(address, (size_t)(at - address));
		entry = recipient_find(db, local);
		free(local);
	}
	return entry;
}

static void recipient_quota_rule(char *rule, uint64_t *bytes, uint64_t *messages)
{
	char *saveptr = NULL;

	for (char *r = strtok_r(rule, ":", &saveptr); r != NULL;
	     r = strtok_r(NULL, ":", &saveptr)) {
		if (strncmp(r, "storage=", 8) == 0)
			(void)str_parse_size(r + 8, bytes);
		else if (strncmp(r, "messages=", 9) == 0)
			(void)str_parse_size(r + 9, messages);
	}
}

void recipient_quota(const struct buzon_config *config, const struct passwd_entry *entry,
		     uint64_t *bytes_r, uint64_t *messages_r)
{
	const char *p = entry->extra;

	*bytes_r = config->quota_bytes;
	*messages_r = config->quota_messages;
	for (int colons = 0; *p != '\0' && colons < 5; p++)
		colons += *p == ':';
	char *copy = xstrdup(p), *saveptr = NULL;
	for (char *item = strtok_r(copy, " \t", &saveptr); item != NULL;
	     item = strtok_r(NULL, " \t", &saveptr)) {
		if (strncmp(item, "userdb_", 7) == 0)
			item += 7;
		if (strncmp(item, "quota_bytes=", 12) == 0)
			(void)str_parse_size(item + 12, bytes_r);
		else if (strncmp(item, "quota_messages=", 15) == 0)
			(void)str_parse_size(item + 15, messages_r);
		else if (strncmp(item, "quota_rule=*:", 13) == 0)
			recipient_quota_rule(item + 13, bytes_r, messages_r);
	}
	free(copy);
}

/* Per-user settings from the passwd-file (see recipient.h). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* Calls fn for each space-separated item of entry's extra fields (after uid:gid:gecos:home:shell),
 * with Dovecot's "userdb_" prefix removed. */
static void recipient_extra_each(const struct passwd_entry *entry,
				 void (*fn)(void *context, char *item), void *context)
{
	const char *p = entry->extra;

	for (int colons = 0; *p != '\0' && colons < 5; p++)
		colons += *p == ':';
	char *copy = xstrdup(p), *saveptr = NULL;
	for (char *item = strtok_r(copy, " \t", &saveptr); item != NULL;
	     item = strtok_r(NULL, " \t", &saveptr)) {
		if (strncmp(item, "userdb_", 7) == 0)
			item += 7;
		fn(context, item);
	}
	free(copy);
}

struct recipient_quota_values {
	uint64_t *bytes, *messages;
};

static void recipient_quota_item(void *context, char *item)
{
	struct recipient_quota_values *q = context;

	if (strncmp(item, "quota_bytes=", 12) == 0)
		(void)str_parse_size(item + 12, q->bytes);
	else if (strncmp(item, "quota_messages=", 15) == 0)
		(void)str_parse_size(item + 15, q->messages);
	else if (strncmp(item, "quota_rule=*:", 13) == 0)
		recipient_quota_rule(item + 13, q->bytes, q->messages);
}

void recipient_quota(const struct buzon_config *config, const struct passwd_entry *entry,
		     uint64_t *bytes_r, uint64_t *messages_r)
{
	struct recipient_quota_values q = {bytes_r, messages_r};

	*bytes_r = config->quota_bytes;
	*messages_r = config->quota_messages;
	recipient_extra_each(entry, recipient_quota_item, &q);
}

struct recipient_policy_values {
	int expire_days;
	unsigned int login_delay_secs;
	const char *error; /* the first malformed field, or NULL */
};

static void recipient_policy_item(void *context, char *item)
{
	struct recipient_policy_values *v = context;
	unsigned long long days;
	unsigned int secs;

	if (strncmp(item, "expire=", 7) == 0) {
		if (strcasecmp(item + 7, "never") == 0)
			v->expire_days = -1;
		else if (str_parse_uint(item + 7, 0, RECIPIENT_EXPIRE_DAYS_MAX, &days) == 0)
			v->expire_days = (int)days;
		else if (v->error == NULL)
			v->error = "expire= must be NEVER or a number of days";
	} else if (strncmp(item, "login_delay=", 12) == 0) {
		if (str_parse_duration(item + 12, &secs) == 0 && secs <= RECIPIENT_LOGIN_DELAY_MAX)
			v->login_delay_secs = secs;
		else if (v->error == NULL)
			v->error = "login_delay= must be a duration of at most 30 days";
	}
}

int recipient_policies(const struct buzon_config *config, const struct passwd_entry *entry,
		       int *expire_days_r, unsigned int *login_delay_secs_r, const char **error_r)
{
	struct recipient_policy_values v = {.expire_days = config_expire_days(config),
					    .login_delay_secs = config->login_delay_secs};

	if (entry != NULL)
		recipient_extra_each(entry, recipient_policy_item, &v);
	*expire_days_r = v.expire_days;
	*login_delay_secs_r = v.login_delay_secs;
	if (error_r != NULL)
		*error_r = v.error;
	return v.error != NULL ? -1 : 0;
}

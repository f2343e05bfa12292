/* The registry of mailbox backends, chosen by the prefix of [mail] location. */
#include <string.h>

#include "store/store.h"

static const struct store_backend *const store_backends[] = {
    &store_backend_maildir,
};

const struct store_backend *store_backend_find(const char *location, const char **path_r)
{
	const char *colon = strchr(location, ':');

	if (colon == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof(store_backends) / sizeof(store_backends[0]); i++) {
		const char *name = store_backends[i]->name;
		if (strlen(name) == (size_t)(colon - location) &&
		    memcmp(name, location, (size_t)(colon - location)) == 0) {
			*path_r = colon + 1;
			return store_backends[i];
		}
	}
	return NULL;
}

bool store_expire_due(const struct store_policy *policy, time_t retrieved_at)
{
	if (policy->expire_days < 0 || retrieved_at <= 0)
		return false;
	/* RFC 2449 counts days; 0 means at the end of the session that retrieved it */
	return retrieved_at <= policy->now - (time_t)policy->expire_days * 86400;
}

bool store_purge_due(const struct store_policy *policy, time_t deleted_at)
{
	return deleted_at > 0 && deleted_at <= policy->now - (time_t)policy->deleted_retention_secs;
}

bool store_upkeep_due(const struct store_mailbox *box, const struct store_policy *policy)
{
	if (policy == NULL)
		return false;
	return store_expire_due(policy, box->oldest_retrieved_at) ||
	       store_purge_due(policy, box->oldest_deleted_at);
}

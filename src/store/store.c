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

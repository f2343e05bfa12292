/* Which schemes a new secret gets (see scheme_policy.h). */
#include <string.h>

#include "auth/password.h"
#include "auth/scheme_policy.h"

/* True if the space-separated mechanism list names a mechanism starting with prefix followed by
 * the end of the name or "-PLUS". */
static bool mechanisms_include(const char *mechanisms, const char *name)
{
	size_t len = strlen(name);

	for (const char *p = mechanisms; p != NULL && *p != '\0';) {
		const char *end = strchr(p, ' ');
		size_t item = end != NULL ? (size_t)(end - p) : strlen(p);
		if ((item == len || (item == len + 5 && strncmp(p + len, "-PLUS", 5) == 0)) &&
		    strncmp(p, name, len) == 0)
			return true;
		p = end != NULL ? end + 1 : NULL;
	}
	return false;
}

size_t scheme_policy_defaults(const struct buzon_config *config, const char **schemes, size_t max)
{
	size_t count = 0;
	const char *mechs = config->auth_mechanisms != NULL ? config->auth_mechanisms : "";

	if (strcmp(config->default_scheme, SCHEME_POLICY_AUTO) != 0) {
		schemes[count++] = config->default_scheme;
		return count;
	}
	if (mechanisms_include(mechs, "SCRAM-SHA-256") && count < max)
		schemes[count++] = "SCRAM-SHA-256";
	if (mechanisms_include(mechs, "SCRAM-SHA-1") && count < max)
		schemes[count++] = "SCRAM-SHA-1";
	if (mechanisms_include(mechs, "CRAM-MD5") && count < max)
		schemes[count++] = "CRAM-MD5";
	if (count == 0)
		schemes[count++] = "YESCRYPT";
	if (config->auth_apop && count < max)
		schemes[count++] = "PLAIN";
	return count;
}

char *scheme_policy_hash(const struct buzon_config *config, const char *password,
			 const char **error_r)
{
	const char *schemes[SCHEME_POLICY_MAX];
	size_t count = scheme_policy_defaults(config, schemes, SCHEME_POLICY_MAX);

	return count == 1 ? password_hash(schemes[0], password, error_r)
			  : password_hash_multi(schemes, count, password, error_r);
}

/* Which password schemes a new secret gets. With `[auth] default_scheme = auto` (the default) a
 * secret serves every enabled mechanism: SCRAM-SHA-256 and/or SCRAM-SHA-1 stored keys for the SCRAM
 * mechanisms (which also verify PLAIN/LOGIN and USER/PASS), a CRAM-MD5 key when CRAM-MD5 is on, and
 * the plaintext only when APOP is on (APOP cannot work otherwise); with no SCRAM mechanism enabled,
 * yescrypt. An explicit default_scheme is used as it is. */
#ifndef BUZON_AUTH_SCHEME_POLICY_H
#define BUZON_AUTH_SCHEME_POLICY_H

#include <stddef.h>

#include "core/config.h"

#define SCHEME_POLICY_AUTO "AUTO"
/* At most this many secrets in one passwd-file field. */
#define SCHEME_POLICY_MAX 4

/* Fills schemes with what a new secret should hold; returns how many. */
size_t scheme_policy_defaults(const struct buzon_config *config, const char **schemes, size_t max);

/* Hashes password into a newly allocated passwd-file secret field per the policy. Returns NULL
 * with a static *error_r on failure. */
char *scheme_policy_hash(const struct buzon_config *config, const char *password,
			 const char **error_r);

#endif

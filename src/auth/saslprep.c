/* SASLprep through libidn (see saslprep.h). */
#include <stdlib.h>
#include <string.h>
#include <stringprep.h>

#include "auth/saslprep.h"
#include "core/util.h"

static bool saslprep_is_plain_ascii(const char *in)
{
	for (const unsigned char *p = (const unsigned char *)in; *p != '\0'; p++) {
		if (*p < 0x20 || *p >= 0x7f)
			return false;
	}
	return true;
}

int saslprep(const char *in, bool stored, char **out_r)
{
	char *prepared = NULL;

	/* printable ASCII maps to itself: skip the library for the common case */
	if (saslprep_is_plain_ascii(in)) {
		*out_r = xstrdup(in);
		return 0;
	}
	if (stringprep_profile(in, &prepared, "SASLprep",
			       stored ? STRINGPREP_NO_UNASSIGNED : (Stringprep_profile_flags)0) !=
	    STRINGPREP_OK) {
		free(prepared);
		return -1;
	}
	*out_r = xstrdup(prepared);
	free(prepared);
	return 0;
}

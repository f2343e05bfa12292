/* SASLprep (RFC 4013) for user names and passwords, as RFC 6856 §2.2 and RFC 5802 ask: non-ASCII
 * spaces become spaces, invisible characters vanish, NFKC normalisation, and prohibited characters
 * (controls, private use, …) are refused. ASCII text without control characters is unchanged, so
 * existing users are not affected. Uses libidn's stringprep. */
#ifndef BUZON_AUTH_SASLPREP_H
#define BUZON_AUTH_SASLPREP_H

#include <stdbool.h>

/* Prepares in into a newly allocated *out_r. stored: RFC 3454's "stored string" rules (no
 * unassigned code points: for what goes into the passwd-file); otherwise a "query string" (what a
 * client sends). Returns -1 if in is not valid UTF-8 or holds a prohibited character. */
int saslprep(const char *in, bool stored, char **out_r);

#endif

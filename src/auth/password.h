/* Password schemes: verifying a stored secret and making new ones.
 * Stored secrets use Dovecot's passwd-file syntax "{SCHEME}data"; a secret without a {SCHEME}
 * prefix is taken as a crypt(3) string. Supported: CRYPT (any libcrypt method: yescrypt $y$, bcrypt
 * $2b$, sha512-crypt $6$, sha256-crypt $5$), SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, YESCRYPT,
 * ARGON2ID and ARGON2I (libsodium), SHA256/SHA512/SSHA256/SSHA512 (base64, OpenSSL),
 * PLAIN/CLEAR/CLEARTEXT. */
#ifndef BUZON_AUTH_PASSWORD_H
#define BUZON_AUTH_PASSWORD_H

#include <stdbool.h>

/* Returns 1 if password matches stored, 0 if not, -1 if stored is malformed or its scheme unknown
 * (with a static *error_r). Comparisons are constant-time. */
int password_verify(const char *stored, const char *password, const char **error_r);

/* Hashes password with scheme (case-insensitive name as above; "YESCRYPT" and "ARGON2ID" are the
 * recommended ones) into a newly allocated "{SCHEME}…" string. Returns NULL with a static *error_r
 * for an unknown scheme or a hashing failure. */
char *password_hash(const char *scheme, const char *password, const char **error_r);

/* Returns true if scheme is a name password_hash() accepts. */
bool password_scheme_known(const char *scheme);

/* True for schemes that store the password itself (PLAIN and its aliases), which the server logs a
 * warning about. */
bool password_scheme_is_plaintext(const char *stored);

#endif

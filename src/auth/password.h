/* Password schemes: verifying a stored secret and making new ones.
 * Stored secrets use Dovecot's passwd-file syntax "{SCHEME}data"; a secret without a {SCHEME}
 * prefix is taken as a crypt(3) string. Supported: CRYPT (any libcrypt method: yescrypt $y$, bcrypt
 * $2b$, sha512-crypt $6$, sha256-crypt $5$), SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, YESCRYPT,
 * ARGON2ID and ARGON2I (libsodium), SHA256/SHA512/SSHA256/SSHA512 (base64, OpenSSL),
 * SCRAM-SHA-256 and SCRAM-SHA-1 ("<iterations>,<salt>,<StoredKey>,<ServerKey>", base64, as Dovecot
 * writes them; see sasl/scram_secret.h), CRAM-MD5 (Dovecot's 64 hex digits of HMAC-MD5 states),
 * PLAIN/CLEAR/CLEARTEXT.
 *
 * A stored field may hold several secrets separated by single spaces, so that one user line can
 * serve several SASL mechanisms, e.g. "{SCRAM-SHA-256}4096,… {SCRAM-SHA-1}4096,… {PLAIN}pw".
 * Only the first secret may lack a {SCHEME} prefix (a crypt string). A plaintext secret may hold
 * spaces, so it runs to the end of the field and must come last. */
#ifndef BUZON_AUTH_PASSWORD_H
#define BUZON_AUTH_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

/* Returns 1 if password matches stored, 0 if not, -1 if stored is malformed or its scheme unknown
 * (with a static *error_r). Comparisons are constant-time. For a field of several secrets, the
 * first one whose scheme is known decides. */
int password_verify(const char *stored, const char *password, const char **error_r);

/* Hashes password with scheme (case-insensitive name as above; "YESCRYPT" and "ARGON2ID" are the
 * recommended ones) into a newly allocated "{SCHEME}…" string. Returns NULL with a static *error_r
 * for an unknown scheme or a hashing failure. */
char *password_hash(const char *scheme, const char *password, const char **error_r);

/* Hashes password with each of count schemes and joins the results with spaces into one newly
 * allocated field (a plaintext scheme, at most one, is put last). Returns NULL with a static
 * *error_r if a scheme is unknown, fails, or count is 0. */
char *password_hash_multi(const char *const *schemes, size_t count, const char *password,
			  const char **error_r);

/* One secret of a stored field: scheme is NULL for a prefix-less (crypt) secret. Neither pointer
 * is NUL-terminated at the given length; both point into the field. */
struct password_part {
	const char *scheme;
	size_t scheme_len;
	const char *data;
	size_t data_len;
};

/* Iterates over a field: start with *pos = field; each call fills part_r and advances *pos.
 * Returns false after the last secret (a field always has at least one, maybe empty). */
bool password_field_next(const char **pos, struct password_part *part_r);
/* Finds the first secret whose scheme is named scheme (case-insensitive, exact name). */
bool password_field_find(const char *field, const char *scheme, struct password_part *part_r);
/* Finds the first PLAIN/CLEAR/CLEARTEXT secret. */
bool password_field_find_plaintext(const char *field, struct password_part *part_r);
/* True if part's scheme is PLAIN or one of its aliases. */
bool password_part_is_plaintext(const struct password_part *part);

/* Returns true if scheme is a name password_hash() accepts. */
bool password_scheme_known(const char *scheme);

/* True if the field holds a secret that stores the password itself (PLAIN and its aliases), which
 * the server logs a warning about. */
bool password_scheme_is_plaintext(const char *stored);

#endif

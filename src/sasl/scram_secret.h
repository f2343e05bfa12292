/* SCRAM keys (RFC 5802 §3) and Dovecot's stored form of them, shared by the SCRAM mechanisms and
 * the {SCRAM-SHA-1}/{SCRAM-SHA-256} password schemes.
 * Stored form (the data after "{SCRAM-SHA-256}"):
 *   <iterations>,<salt base64>,<StoredKey base64>,<ServerKey base64>
 * Passwords are used as given (UTF-8 bytes) without SASLprep, like Dovecot. */
#ifndef BUZON_SASL_SCRAM_SECRET_H
#define BUZON_SASL_SCRAM_SECRET_H

#include <stddef.h>

#include <openssl/evp.h>

/* The longest salt accepted from a stored secret. Every tool writes 16 bytes or fewer; 64 leaves
 * room while keeping the buffers fixed. */
#define SCRAM_SALT_MAX 64
/* Iteration counts above this are refused: verifying one PLAIN login would take seconds, which
 * is no protection but a way to stall the auth threads. */
#define SCRAM_ITERATIONS_MAX 1000000
/* RFC 7677 §4 asks for at least 4096; new secrets use it, matching Dovecot's default. */
#define SCRAM_ITERATIONS_DEFAULT 4096
/* Salt bytes for new secrets (Dovecot's choice). */
#define SCRAM_SALT_NEW_LEN 16

struct scram_secret {
	unsigned int iterations;
	size_t salt_len;
	unsigned char salt[SCRAM_SALT_MAX];
	size_t key_len; /* the digest size of the hash */
	unsigned char stored_key[EVP_MAX_MD_SIZE];
	unsigned char server_key[EVP_MAX_MD_SIZE];
};

/* Parses the len bytes of stored form at data for hash md. Returns -1 with a static *error_r if
 * malformed. */
int scram_secret_parse(const EVP_MD *md, const char *data, size_t len,
		       struct scram_secret *secret_r, const char **error_r);

/* Derives StoredKey and ServerKey from password, salt and iterations (PBKDF2 = RFC 5802 Hi()).
 * Returns -1 with a static *error_r on an OpenSSL failure or a salt too long. */
int scram_secret_derive(const EVP_MD *md, const char *password, size_t password_len,
			const unsigned char *salt, size_t salt_len, unsigned int iterations,
			struct scram_secret *secret_r, const char **error_r);

/* Returns the stored form as a newly allocated string. */
char *scram_secret_format(const struct scram_secret *secret);

/* HMAC(key, data) with md into out (EVP_MAX_MD_SIZE bytes). Returns -1 on an OpenSSL failure. */
int scram_hmac(const EVP_MD *md, const unsigned char *key, size_t key_len, const void *data,
	       size_t data_len, unsigned char *out);

/* Wipes the keys. */
void scram_secret_clear(struct scram_secret *secret);

#endif

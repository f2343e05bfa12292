/* SCRAM key derivation and the Dovecot stored form of SCRAM secrets (format in scram_secret.h). */
#include <limits.h>
#include <string.h>

#include <openssl/hmac.h>
#include <sodium.h>

#include "core/util.h"
#include "sasl/sasl.h"
#include "sasl/scram_secret.h"

int scram_hmac(const EVP_MD *md, const unsigned char *key, size_t key_len, const void *data,
	       size_t data_len, unsigned char *out)
{
	unsigned int out_len;

	if (key_len > INT_MAX)
		return -1;
	return HMAC(md, key, (int)key_len, data, data_len, out, &out_len) == NULL ? -1 : 0;
}

/* Decodes one base64 field of len bytes into out (capacity cap); -1 if malformed or too long. */
static long scram_field_decode(const char *field, size_t len, unsigned char *out, size_t cap)
{
	/* Room for a salt or a key, whichever is longer, and the slack of a padded last group. */
	unsigned char buf[SCRAM_SALT_MAX + EVP_MAX_MD_SIZE + 3];

	if (len % 4 != 0 || len / 4 * 3 > sizeof(buf))
		return -1;
	long n = sasl_base64_decode(field, len, buf);
	if (n <= 0 || (size_t)n > cap)
		n = -1;
	else
		memcpy(out, buf, (size_t)n);
	sodium_memzero(buf, sizeof(buf));
	return n;
}

/* Splits data into exactly four comma-separated fields. */
static int scram_fields_split(const char *data, size_t len, const char *start_r[4], size_t len_r[4])
{
	const char *p = data, *end = data + len;

	for (int i = 0; i < 4; i++) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		if ((comma == NULL) != (i == 3))
			return -1;
		start_r[i] = p;
		len_r[i] = (size_t)((comma != NULL ? comma : end) - p);
		p = comma != NULL ? comma + 1 : end;
	}
	return 0;
}

int scram_secret_parse(const EVP_MD *md, const char *data, size_t len,
		       struct scram_secret *secret_r, const char **error_r)
{
	const char *field[4];
	size_t field_len[4];
	unsigned long long iterations;
	size_t key_len = (size_t)EVP_MD_get_size(md);

	memset(secret_r, 0, sizeof(*secret_r));
	if (scram_fields_split(data, len, field, field_len) < 0 ||
	    str_parse_uint_n(field[0], field_len[0], 1, SCRAM_ITERATIONS_MAX, &iterations) < 0) {
		*error_r = "malformed SCRAM secret: expected iterations,salt,StoredKey,ServerKey";
		return -1;
	}
	long salt_len = scram_field_decode(field[1], field_len[1], secret_r->salt, SCRAM_SALT_MAX);
	if (salt_len < 0 ||
	    scram_field_decode(field[2], field_len[2], secret_r->stored_key, EVP_MAX_MD_SIZE) !=
		(long)key_len ||
	    scram_field_decode(field[3], field_len[3], secret_r->server_key, EVP_MAX_MD_SIZE) !=
		(long)key_len) {
		scram_secret_clear(secret_r);
		*error_r = "malformed SCRAM secret: bad salt or key";
		return -1;
	}
	secret_r->iterations = (unsigned int)iterations;
	secret_r->salt_len = (size_t)salt_len;
	secret_r->key_len = key_len;
	return 0;
}

int scram_secret_derive(const EVP_MD *md, const char *password, size_t password_len,
			const unsigned char *salt, size_t salt_len, unsigned int iterations,
			struct scram_secret *secret_r, const char **error_r)
{
	unsigned char salted[EVP_MAX_MD_SIZE], client_key[EVP_MAX_MD_SIZE];
	size_t key_len = (size_t)EVP_MD_get_size(md);
	unsigned int stored_len;
	int ret = -1;

	memset(secret_r, 0, sizeof(*secret_r));
	if (salt_len > SCRAM_SALT_MAX || password_len > INT_MAX || iterations == 0 ||
	    iterations > SCRAM_ITERATIONS_MAX) {
		*error_r = "SCRAM parameters out of range";
		return -1;
	}
	if (PKCS5_PBKDF2_HMAC(password, (int)password_len, salt, (int)salt_len, (int)iterations, md,
			      (int)key_len, salted) == 1 &&
	    scram_hmac(md, salted, key_len, "Client Key", 10, client_key) == 0 &&
	    EVP_Digest(client_key, key_len, secret_r->stored_key, &stored_len, md, NULL) == 1 &&
	    scram_hmac(md, salted, key_len, "Server Key", 10, secret_r->server_key) == 0) {
		memcpy(secret_r->salt, salt, salt_len);
		secret_r->salt_len = salt_len;
		secret_r->iterations = iterations;
		secret_r->key_len = key_len;
		ret = 0;
	} else {
		scram_secret_clear(secret_r);
		*error_r = "SCRAM key derivation failed";
	}
	sodium_memzero(salted, sizeof(salted));
	sodium_memzero(client_key, sizeof(client_key));
	return ret;
}

char *scram_secret_format(const struct scram_secret *secret)
{
	char *salt = sasl_base64_encode(secret->salt, secret->salt_len);
	char *stored = sasl_base64_encode(secret->stored_key, secret->key_len);
	char *server = sasl_base64_encode(secret->server_key, secret->key_len);
	char *result = xasprintf("%u,%s,%s,%s", secret->iterations, salt, stored, server);

	free(salt);
	free(stored);
	free(server);
	return result;
}

void scram_secret_clear(struct scram_secret *secret)
{
	sodium_memzero(secret, sizeof(*secret));
}

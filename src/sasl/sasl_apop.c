/* APOP (RFC 1939 §7): the digest is MD5(timestamp password), so only a plaintext secret works. */
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "auth/password.h"
#include "sasl/sasl_private.h"

#define APOP_DIGEST_LEN ((size_t)16)

/* MD5(timestamp || password) into digest_r; -1 on an OpenSSL failure. */
static int sasl_apop_digest(const char *timestamp, const char *password, size_t password_len,
			    unsigned char digest_r[APOP_DIGEST_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int len;
	bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
		  EVP_DigestUpdate(ctx, timestamp, strlen(timestamp)) == 1 &&
		  EVP_DigestUpdate(ctx, password, password_len) == 1 &&
		  EVP_DigestFinal_ex(ctx, digest_r, &len) == 1 && len == APOP_DIGEST_LEN;

	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

int sasl_apop_verify(const char *secret, const char *timestamp, const char *digest)
{
	struct password_part part;
	unsigned char expected[APOP_DIGEST_LEN], given[APOP_DIGEST_LEN];
	size_t given_len;

	if (secret == NULL || !password_field_find_plaintext(secret, &part) || part.data_len == 0)
		return -1;
	if (sasl_apop_digest(timestamp, part.data, part.data_len, expected) < 0)
		return -1;
	int ret = strlen(digest) == 2 * APOP_DIGEST_LEN &&
			  sodium_hex2bin(given, sizeof(given), digest, 2 * APOP_DIGEST_LEN, NULL,
					 &given_len, NULL) == 0 &&
			  given_len == sizeof(given) && sasl_equal(expected, given, sizeof(given))
		      ? 1
		      : 0;
	sodium_memzero(expected, sizeof(expected));
	sodium_memzero(given, sizeof(given));
	return ret;
}

/* Password schemes: one table row per scheme name, each with its verify and hash functions, and the
 * splitting of a stored field that holds several secrets (see password.h for its syntax). */
#include <crypt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "auth/password.h"
#include "core/util.h"
#include "sasl/hmac_md5.h"
#include "sasl/scram_secret.h"

/* Salt bytes for new SSHA256/SSHA512 secrets. Dovecot reads any salt length after the digest;
 * 16 random bytes make precomputed tables useless. */
#define PASSWORD_SSHA_SALT_LEN 16
/* Largest decoded digest||salt we accept: a SHA-512 digest plus a generous salt. Longer input is
 * not something any tool writes, so it is reported as malformed instead of being processed. */
#define PASSWORD_DIGEST_BUF_MAX 256

struct password_scheme {
	const char *name;
	/* Returns 1 on match, 0 on mismatch, -1 if data is malformed. */
	int (*verify)(const struct password_scheme *scheme, const char *data, const char *password,
		      const char **error_r);
	/* Returns the newly allocated data part (after "{NAME}") or NULL. */
	char *(*hash)(const struct password_scheme *scheme, const char *password,
		      const char **error_r);
	const char *prefix; /* crypt_gensalt prefix, or the "$argon2…$" string prefix */
	int argon2_alg;
	unsigned long long argon2_opslimit;
	size_t argon2_memlimit;
	const EVP_MD *(*md)(void);
	bool salted;
	bool plaintext;
};

static pthread_once_t password_init_once = PTHREAD_ONCE_INIT;

static void password_init_sodium(void)
{
	if (sodium_init() < 0)
		fatal("sodium_init() failed");
}

/* Every entry point calls this, so callers need no setup and threads may race to it safely. */
static void password_init(void)
{
	if (pthread_once(&password_init_once, password_init_sodium) != 0)
		fatal("pthread_once() failed");
}

/* crypt_data is about 32 KiB: on the heap so that auth threads with small stacks are safe. */
static struct crypt_data *crypt_data_new(void)
{
	return xcalloc(1, sizeof(struct crypt_data));
}

static void crypt_data_free(struct crypt_data **data)
{
	sodium_memzero(*data, sizeof(**data));
	x_free(data);
}

static int crypt_scheme_verify(const struct password_scheme *scheme, const char *data,
			       const char *password, const char **error_r)
{
	size_t len = strlen(data);
	int ret = -1;

	if (len == 0 || data[0] == '*') {
		*error_r = "malformed crypt string";
		return -1;
	}
	/* libcrypt refuses longer phrases, and no stored hash can have come from one. */
	if (strlen(password) >= CRYPT_MAX_PASSPHRASE_SIZE)
		return 0;
	struct crypt_data *cd = crypt_data_new();
	const char *out = crypt_rn(password, data, cd, sizeof(*cd));
	/* Re-hashing a well-formed crypt string reproduces its setting, hence its length; a
	 * different length means libcrypt read the setting differently from what was stored. */
	if (out == NULL || out[0] == '*' || strlen(out) != len)
		*error_r = "malformed crypt string";
	else
		ret = sodium_memcmp(out, data, len) == 0 ? 1 : 0;
	crypt_data_free(&cd);
	return ret;
}

static char *crypt_scheme_hash(const struct password_scheme *scheme, const char *password,
			       const char **error_r)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	char *result = NULL;

	if (strlen(password) >= CRYPT_MAX_PASSPHRASE_SIZE) {
		*error_r = "password too long for crypt";
		return NULL;
	}
	/* libxcrypt's default bcrypt cost (5) is too cheap today; 10 is OpenBSD's choice */
	unsigned long cost = strcmp(scheme->prefix, "$2b$") == 0 ? 10 : 0;
	if (crypt_gensalt_rn(scheme->prefix, cost, NULL, 0, setting, sizeof(setting)) == NULL) {
		*error_r = "crypt_gensalt failed";
		return NULL;
	}
	struct crypt_data *cd = crypt_data_new();
	const char *out = crypt_rn(password, setting, cd, sizeof(*cd));
	if (out == NULL || out[0] == '*')
		*error_r = "crypt failed";
	else
		result = xstrdup(out);
	crypt_data_free(&cd);
	return result;
}

/* Checks "v=19$m=N,t=N,p=N$salt$hash" (after the "$argon2id$" prefix) so that a malformed string
 * is reported as such: libsodium's verify answers -1 both for that and for a wrong password. */
static bool argon2_params_wellformed(const char *p)
{
	static const char digits[] = "0123456789";
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	static const char *const keys[] = {"v=19$m=", ",t=", ",p="};
	size_t n;

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		if (strncmp(p, keys[i], strlen(keys[i])) != 0)
			return false;
		p += strlen(keys[i]);
		if ((n = strspn(p, digits)) == 0)
			return false;
		p += n;
	}
	for (int part = 0; part < 2; part++) {
		if (*p++ != '$' || (n = strspn(p, b64)) == 0)
			return false;
		p += n;
	}
	return *p == '\0';
}

static int argon2_scheme_verify(const struct password_scheme *scheme, const char *data,
				const char *password, const char **error_r)
{
	size_t prefix_len = strlen(scheme->prefix);

	if (strncmp(data, scheme->prefix, prefix_len) != 0 ||
	    !argon2_params_wellformed(data + prefix_len)) {
		*error_r = "malformed argon2 string";
		return -1;
	}
	if (strlen(password) > crypto_pwhash_PASSWD_MAX)
		return 0;
	return crypto_pwhash_str_verify(data, password, strlen(password)) == 0 ? 1 : 0;
}

static char *argon2_scheme_hash(const struct password_scheme *scheme, const char *password,
				const char **error_r)
{
	char out[crypto_pwhash_STRBYTES];

	if (crypto_pwhash_str_alg(out, password, strlen(password), scheme->argon2_opslimit,
				  scheme->argon2_memlimit, scheme->argon2_alg) != 0) {
		*error_r = "argon2 hashing failed (out of memory?)";
		return NULL;
	}
	return xstrdup(out);
}

static int digest_compute(const EVP_MD *md, const char *password, const unsigned char *salt,
			  size_t salt_len, unsigned char out[EVP_MAX_MD_SIZE])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int out_len;
	bool ok = ctx != NULL && EVP_DigestInit_ex(ctx, md, NULL) == 1 &&
		  EVP_DigestUpdate(ctx, password, strlen(password)) == 1 &&
		  (salt_len == 0 || EVP_DigestUpdate(ctx, salt, salt_len) == 1) &&
		  EVP_DigestFinal_ex(ctx, out, &out_len) == 1;

	/* EVP_MD_CTX_free cleanses the context's state. */
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -1;
}

/* Decodes base64 (padded or not), or hex when the length is that of a hex digest as Dovecot
 * also accepts. Returns -1 if data is neither or too long. */
static int digest_decode(const char *data, size_t md_len, unsigned char *buf, size_t *len_r)
{
	static const int variants[] = {sodium_base64_VARIANT_ORIGINAL,
				       sodium_base64_VARIANT_ORIGINAL_NO_PADDING};
	size_t len = strlen(data);

	if (len == md_len * 2 &&
	    sodium_hex2bin(buf, PASSWORD_DIGEST_BUF_MAX, data, len, NULL, len_r, NULL) == 0)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(variants); i++) {
		if (sodium_base642bin(buf, PASSWORD_DIGEST_BUF_MAX, data, len, NULL, len_r, NULL,
				      variants[i]) == 0)
			return 0;
	}
	return -1;
}

static int digest_scheme_verify(const struct password_scheme *scheme, const char *data,
				const char *password, const char **error_r)
{
	const EVP_MD *md = scheme->md();
	size_t md_len = (size_t)EVP_MD_get_size(md), decoded_len;
	unsigned char decoded[PASSWORD_DIGEST_BUF_MAX], digest[EVP_MAX_MD_SIZE];
	int ret = -1;

	if (digest_decode(data, md_len, decoded, &decoded_len) < 0)
		*error_r = "malformed digest: not base64 or hex";
	else if (scheme->salted ? decoded_len <= md_len : decoded_len != md_len)
		*error_r = "malformed digest: wrong length";
	else if (digest_compute(md, password, decoded + md_len, decoded_len - md_len, digest) < 0)
		*error_r = "digest computation failed";
	else
		ret = sodium_memcmp(digest, decoded, md_len) == 0 ? 1 : 0;
	sodium_memzero(decoded, sizeof(decoded));
	sodium_memzero(digest, sizeof(digest));
	return ret;
}

static char *digest_scheme_hash(const struct password_scheme *scheme, const char *password,
				const char **error_r)
{
	const EVP_MD *md = scheme->md();
	size_t md_len = (size_t)EVP_MD_get_size(md);
	size_t salt_len = scheme->salted ? PASSWORD_SSHA_SALT_LEN : 0;
	unsigned char buf[EVP_MAX_MD_SIZE + PASSWORD_SSHA_SALT_LEN];

	/* Dovecot's layout: digest(password || salt) || salt. */
	randombytes_buf(buf + md_len, salt_len);
	if (digest_compute(md, password, buf + md_len, salt_len, buf) < 0) {
		*error_r = "digest computation failed";
		sodium_memzero(buf, sizeof(buf));
		return NULL;
	}
	size_t out_size =
	    sodium_base64_ENCODED_LEN(md_len + salt_len, sodium_base64_VARIANT_ORIGINAL);
	char *out = xmalloc(out_size);
	sodium_bin2base64(out, out_size, buf, md_len + salt_len, sodium_base64_VARIANT_ORIGINAL);
	sodium_memzero(buf, sizeof(buf));
	return out;
}

static int plain_scheme_verify(const struct password_scheme *scheme, const char *data,
			       const char *password, const char **error_r)
{
	unsigned char stored_hash[crypto_generichash_BYTES], given_hash[crypto_generichash_BYTES];

	if (data[0] == '\0') {
		*error_r = "empty plaintext password";
		return -1;
	}
	/* Hashing both sides first makes the comparison constant-time whatever the lengths. */
	crypto_generichash(stored_hash, sizeof(stored_hash), (const unsigned char *)data,
			   strlen(data), NULL, 0);
	crypto_generichash(given_hash, sizeof(given_hash), (const unsigned char *)password,
			   strlen(password), NULL, 0);
	int ret = sodium_memcmp(stored_hash, given_hash, sizeof(stored_hash)) == 0 ? 1 : 0;
	sodium_memzero(stored_hash, sizeof(stored_hash));
	sodium_memzero(given_hash, sizeof(given_hash));
	return ret;
}

static char *plain_scheme_hash(const struct password_scheme *scheme, const char *password,
			       const char **error_r)
{
	return xstrdup(password);
}

static int scram_scheme_verify(const struct password_scheme *scheme, const char *data,
			       const char *password, const char **error_r)
{
	struct scram_secret stored, given;
	int ret = -1;

	if (scram_secret_parse(scheme->md(), data, strlen(data), &stored, error_r) < 0)
		return -1;
	if (scram_secret_derive(scheme->md(), password, strlen(password), stored.salt,
				stored.salt_len, stored.iterations, &given, error_r) == 0)
		ret =
		    sodium_memcmp(stored.stored_key, given.stored_key, stored.key_len) == 0 ? 1 : 0;
	scram_secret_clear(&stored);
	scram_secret_clear(&given);
	return ret;
}

static char *scram_scheme_hash(const struct password_scheme *scheme, const char *password,
			       const char **error_r)
{
	unsigned char salt[SCRAM_SALT_NEW_LEN];
	struct scram_secret secret;

	randombytes_buf(salt, sizeof(salt));
	if (scram_secret_derive(scheme->md(), password, strlen(password), salt, sizeof(salt),
				SCRAM_ITERATIONS_DEFAULT, &secret, error_r) < 0)
		return NULL;
	char *data = scram_secret_format(&secret);
	scram_secret_clear(&secret);
	return data;
}

/* {CRAM-MD5} keeps HMAC-MD5 states, so checking a password means recomputing them. */
static int cram_scheme_verify(const struct password_scheme *scheme, const char *data,
			      const char *password, const char **error_r)
{
	struct hmac_md5_context stored, given;

	if (hmac_md5_context_decode(data, strlen(data), &stored) < 0) {
		*error_r = "malformed CRAM-MD5 secret: expected 64 hex digits";
		return -1;
	}
	hmac_md5_context_init(&given, (const unsigned char *)password, strlen(password));
	int ret = sodium_memcmp(&stored, &given, sizeof(stored)) == 0 ? 1 : 0;
	sodium_memzero(&stored, sizeof(stored));
	sodium_memzero(&given, sizeof(given));
	return ret;
}

static char *cram_scheme_hash(const struct password_scheme *scheme, const char *password,
			      const char **error_r)
{
	struct hmac_md5_context ctx;
	char hex[HMAC_MD5_CONTEXT_HEX_LEN + 1];

	hmac_md5_context_init(&ctx, (const unsigned char *)password, strlen(password));
	hmac_md5_context_encode(&ctx, hex);
	sodium_memzero(&ctx, sizeof(ctx));
	return xstrdup(hex);
}

#define CRYPT_SCHEME(name_, prefix_)                                                               \
	{                                                                                          \
		.name = name_, .verify = crypt_scheme_verify, .hash = crypt_scheme_hash,           \
		.prefix = prefix_                                                                  \
	}
#define ARGON2_SCHEME(name_, prefix_, alg_, ops_, mem_)                                            \
	{                                                                                          \
		.name = name_, .verify = argon2_scheme_verify, .hash = argon2_scheme_hash,         \
		.prefix = prefix_, .argon2_alg = alg_, .argon2_opslimit = ops_,                    \
		.argon2_memlimit = mem_                                                            \
	}
#define DIGEST_SCHEME(name_, md_, salted_)                                                         \
	{                                                                                          \
		.name = name_, .verify = digest_scheme_verify, .hash = digest_scheme_hash,         \
		.md = md_, .salted = salted_                                                       \
	}
#define PLAIN_SCHEME(name_)                                                                        \
	{                                                                                          \
		.name = name_, .verify = plain_scheme_verify, .hash = plain_scheme_hash,           \
		.plaintext = true                                                                  \
	}

#define SCRAM_SCHEME(name_, md_)                                                                   \
	{                                                                                          \
		.name = name_, .verify = scram_scheme_verify, .hash = scram_scheme_hash, .md = md_ \
	}

/* The first row is what a secret without a {SCHEME} prefix means. CRYPT verifies any libcrypt
 * method whatever its name says, like Dovecot; new CRYPT secrets are yescrypt. */
static const struct password_scheme password_schemes[] = {
    CRYPT_SCHEME("CRYPT", "$y$"),
    CRYPT_SCHEME("YESCRYPT", "$y$"),
    CRYPT_SCHEME("SHA512-CRYPT", "$6$"),
    CRYPT_SCHEME("SHA256-CRYPT", "$5$"),
    CRYPT_SCHEME("BLF-CRYPT", "$2b$"),
    ARGON2_SCHEME("ARGON2ID", "$argon2id$", crypto_pwhash_ALG_ARGON2ID13,
		  crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE,
		  crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE),
    ARGON2_SCHEME("ARGON2I", "$argon2i$", crypto_pwhash_ALG_ARGON2I13,
		  crypto_pwhash_argon2i_OPSLIMIT_INTERACTIVE,
		  crypto_pwhash_argon2i_MEMLIMIT_INTERACTIVE),
    DIGEST_SCHEME("SHA256", EVP_sha256, false),
    DIGEST_SCHEME("SHA512", EVP_sha512, false),
    DIGEST_SCHEME("SSHA256", EVP_sha256, true),
    DIGEST_SCHEME("SSHA512", EVP_sha512, true),
    SCRAM_SCHEME("SCRAM-SHA-256", EVP_sha256),
    SCRAM_SCHEME("SCRAM-SHA-1", EVP_sha1),
    {.name = "CRAM-MD5", .verify = cram_scheme_verify, .hash = cram_scheme_hash},
    PLAIN_SCHEME("PLAIN"),
    PLAIN_SCHEME("CLEAR"),
    PLAIN_SCHEME("CLEARTEXT"),
};

static const struct password_scheme *password_scheme_find(const char *name, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(password_schemes); i++) {
		const char *candidate = password_schemes[i].name;
		if (strlen(candidate) == len && strncasecmp(candidate, name, len) == 0)
			return &password_schemes[i];
	}
	return NULL;
}

static bool password_part_scheme_is(const struct password_part *part, const char *name)
{
	return part->scheme != NULL && strlen(name) == part->scheme_len &&
	       strncasecmp(part->scheme, name, part->scheme_len) == 0;
}

bool password_part_is_plaintext(const struct password_part *part)
{
	const struct password_scheme *scheme =
	    part->scheme == NULL ? NULL : password_scheme_find(part->scheme, part->scheme_len);

	return scheme != NULL && scheme->plaintext;
}

bool password_field_next(const char **pos, struct password_part *part_r)
{
	const char *p = *pos;

	if (p == NULL)
		return false;
	memset(part_r, 0, sizeof(*part_r));
	if (*p == '{') {
		const char *close = p + 1 + strcspn(p + 1, "} ");
		if (*close == '}') {
			part_r->scheme = p + 1;
			part_r->scheme_len = (size_t)(close - p - 1);
			p = close + 1;
		}
	}
	part_r->data = p;
	/* A plaintext password may hold spaces, so it runs to the end of the field. */
	const char *end = password_part_is_plaintext(part_r) ? p + strlen(p) : p + strcspn(p, " ");
	part_r->data_len = (size_t)(end - p);
	*pos = *end == ' ' ? end + 1 : NULL;
	return true;
}

bool password_field_find(const char *field, const char *scheme, struct password_part *part_r)
{
	const char *pos = field;

	while (password_field_next(&pos, part_r)) {
		if (password_part_scheme_is(part_r, scheme))
			return true;
	}
	return false;
}

bool password_field_find_plaintext(const char *field, struct password_part *part_r)
{
	const char *pos = field;

	while (password_field_next(&pos, part_r)) {
		if (password_part_is_plaintext(part_r))
			return true;
	}
	return false;
}

/* Finds the scheme of one part; a part without a {SCHEME} prefix is a crypt string. */
static const struct password_scheme *password_part_scheme(const struct password_part *part,
							  const char **error_r)
{
	if (part->scheme == NULL) {
		if (part->data[0] != '{')
			return &password_schemes[0];
		*error_r = "missing '}' after the password scheme";
		return NULL;
	}
	const struct password_scheme *scheme = password_scheme_find(part->scheme, part->scheme_len);
	if (scheme == NULL)
		*error_r = "unknown password scheme";
	return scheme;
}

int password_verify(const char *stored, const char *password, const char **error_r)
{
	const char *pos = stored;
	struct password_part part;

	password_init();
	/* The first part with a scheme we know decides; the others serve other mechanisms. */
	while (password_field_next(&pos, &part)) {
		const struct password_scheme *scheme = password_part_scheme(&part, error_r);
		if (scheme == NULL)
			continue;
		char *data = xstrndup(part.data, part.data_len);
		int ret = scheme->verify(scheme, data, password, error_r);
		sodium_memzero(data, part.data_len);
		free(data);
		return ret;
	}
	return -1;
}

char *password_hash(const char *scheme_name, const char *password, const char **error_r)
{
	const struct password_scheme *scheme =
	    password_scheme_find(scheme_name, strlen(scheme_name));

	password_init();
	if (scheme == NULL) {
		*error_r = "unknown password scheme";
		return NULL;
	}
	char *data = scheme->hash(scheme, password, error_r);
	if (data == NULL)
		return NULL;
	char *result = xasprintf("{%s}%s", scheme->name, data);
	/* For PLAIN, data is the password itself. */
	sodium_memzero(data, strlen(data));
	free(data);
	return result;
}

bool password_scheme_known(const char *scheme)
{
	return password_scheme_find(scheme, strlen(scheme)) != NULL;
}

bool password_scheme_is_plaintext(const char *stored)
{
	struct password_part part;

	return password_field_find_plaintext(stored, &part);
}

static bool password_scheme_name_is_plaintext(const char *name)
{
	const struct password_scheme *scheme = password_scheme_find(name, strlen(name));

	return scheme != NULL && scheme->plaintext;
}

/* Appends the hash of one scheme to *result, space-separated. */
static int password_hash_append(char **result, const char *scheme, const char *password,
				const char **error_r)
{
	char *one = password_hash(scheme, password, error_r);

	if (one == NULL)
		return -1;
	char *joined = *result == NULL ? xstrdup(one) : xasprintf("%s %s", *result, one);
	sodium_memzero(one, strlen(one));
	free(one);
	if (*result != NULL) {
		sodium_memzero(*result, strlen(*result));
		free(*result);
	}
	*result = joined;
	return 0;
}

char *password_hash_multi(const char *const *schemes, size_t count, const char *password,
			  const char **error_r)
{
	const char *plaintext = NULL;
	char *result = NULL;

	for (size_t i = 0; i < count; i++) {
		if (!password_scheme_name_is_plaintext(schemes[i])) {
			if (password_hash_append(&result, schemes[i], password, error_r) < 0)
				goto fail;
		} else if (plaintext != NULL) {
			*error_r = "more than one plaintext scheme";
			goto fail;
		} else {
			plaintext = schemes[i];
		}
	}
	/* Last, because a plaintext part runs to the end of the field. */
	if (plaintext != NULL && password_hash_append(&result, plaintext, password, error_r) < 0)
		goto fail;
	if (result == NULL)
		*error_r = "no password scheme given";
	return result;
fail:
	if (result != NULL) {
		sodium_memzero(result, strlen(result));
		free(result);
	}
	return NULL;
}

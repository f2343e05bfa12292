/* CRAM-MD5 (RFC 2195): the server sends "<random.time@buzon>", the client answers
 * "user SP hex(HMAC-MD5(password, challenge))". Needs a plaintext or a {CRAM-MD5} secret. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "auth/password.h"
#include "core/util.h"
#include "sasl/hmac_md5.h"
#include "sasl/sasl_private.h"
#include "sasl/sasl_testing.h"

/* "<" 16 hex "." up to 20 digits "@buzon>" fits easily. */
#define SASL_CRAM_CHALLENGE_MAX 64

struct sasl_cram_state {
	bool sent;
	char challenge[SASL_CRAM_CHALLENGE_MAX];
	size_t challenge_len;
};

static char *sasl_cram_test_challenge;

void sasl_cram_set_test_challenge(const char *challenge)
{
	x_free(&sasl_cram_test_challenge);
	if (challenge != NULL)
		sasl_cram_test_challenge = xstrdup(challenge);
}

static void sasl_cram_challenge_make(struct sasl_cram_state *st)
{
	unsigned char random[8];
	char hex[2 * sizeof(random) + 1];
	int n;

	if (sasl_cram_test_challenge != NULL) {
		n = snprintf(st->challenge, sizeof(st->challenge), "%s", sasl_cram_test_challenge);
	} else {
		randombytes_buf(random, sizeof(random));
		sodium_bin2hex(hex, sizeof(hex), random, sizeof(random));
		n = snprintf(st->challenge, sizeof(st->challenge), "<%s.%lld@buzon>", hex,
			     (long long)time(NULL));
	}
	if (n < 0 || (size_t)n >= sizeof(st->challenge))
		fatal("CRAM-MD5 challenge too long");
	st->challenge_len = (size_t)n;
}

/* Finds the HMAC-MD5 context for user's secret field; -1 if it holds no usable secret. */
static int sasl_cram_context_find(const char *secret, struct hmac_md5_context *ctx_r)
{
	struct password_part part;

	if (secret == NULL)
		return -1;
	if (password_field_find(secret, "CRAM-MD5", &part))
		return hmac_md5_context_decode(part.data, part.data_len, ctx_r);
	if (!password_field_find_plaintext(secret, &part) || part.data_len == 0)
		return -1;
	hmac_md5_context_init(ctx_r, (const unsigned char *)part.data, part.data_len);
	return 0;
}

static enum sasl_status sasl_cram_verify(struct sasl_conv *conv, const char *user, size_t user_len,
					 const unsigned char *digest, struct sasl_output *out)
{
	struct sasl_cram_state *st = conv->state;
	struct hmac_md5_context ctx;
	unsigned char expected[HMAC_MD5_DIGEST_LEN];
	char *name = xstrndup(user, user_len);
	const char *secret = conv->lookup->secret(conv->lookup->context, name);
	/* Compute even without a secret, so that timing does not tell users apart. */
	bool usable = sasl_cram_context_find(secret, &ctx) == 0;

	if (!usable)
		hmac_md5_context_init(&ctx, (const unsigned char *)"", 0);
	hmac_md5_context_finish(&ctx, (const unsigned char *)st->challenge, st->challenge_len,
				expected);
	bool match = sasl_equal(expected, digest, sizeof(expected));
	sodium_memzero(&ctx, sizeof(ctx));
	sodium_memzero(expected, sizeof(expected));
	free(name);
	if (secret == NULL)
		return sasl_output_fail(out, "unknown user");
	if (!usable)
		return sasl_output_fail(out, "no secret usable for CRAM-MD5");
	if (!match)
		return sasl_output_fail(out, "CRAM-MD5 digest mismatch");
	return sasl_output_success(out, user, user_len);
}

static enum sasl_status sasl_cram_step(struct sasl_conv *conv, const unsigned char *in,
				       size_t in_len, bool have_input, struct sasl_output *out)
{
	struct sasl_cram_state *st = conv->state;
	unsigned char digest[HMAC_MD5_DIGEST_LEN];
	size_t digest_len;

	if (!st->sent) {
		if (have_input)
			return sasl_output_fail(out, "CRAM-MD5 takes no initial response");
		st->sent = true;
		sasl_cram_challenge_make(st);
		return sasl_output_challenge(out, st->challenge, st->challenge_len);
	}
	/* The user name may hold spaces; the digest never does. */
	const unsigned char *space = in_len > 0 ? memrchr(in, ' ', in_len) : NULL;
	if (space == NULL)
		return sasl_output_fail(out, "malformed CRAM-MD5 response");
	size_t user_len = (size_t)(space - in), hex_len = in_len - user_len - 1;
	if (!sasl_identity_valid((const char *)in, user_len) ||
	    hex_len != 2 * HMAC_MD5_DIGEST_LEN ||
	    sodium_hex2bin(digest, sizeof(digest), (const char *)space + 1, hex_len, NULL,
			   &digest_len, NULL) != 0 ||
	    digest_len != sizeof(digest))
		return sasl_output_fail(out, "malformed CRAM-MD5 response");
	return sasl_cram_verify(conv, (const char *)in, user_len, digest, out);
}

static bool sasl_cram_usable_with(const struct sasl_mech *mech, const char *secret)
{
	return sasl_secret_has(secret, "CRAM-MD5");
}

const struct sasl_mech sasl_mech_cram_md5 = {
    .name = "CRAM-MD5",
    .state_size = sizeof(struct sasl_cram_state),
    .usable_with = sasl_cram_usable_with,
    .step = sasl_cram_step,
};

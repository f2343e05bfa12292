/* SASL mechanism registry, conversation lifecycle, output helpers and strict base64 (RFC 5034). */
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "auth/password.h"
#include "core/util.h"
#include "sasl/sasl_private.h"

static const struct sasl_mech *const sasl_mechs[] = {
    &sasl_mech_plain,
    &sasl_mech_login,
    &sasl_mech_cram_md5,
    &sasl_mech_scram_sha1,
    &sasl_mech_scram_sha1_plus,
    &sasl_mech_scram_sha256,
    &sasl_mech_scram_sha256_plus,
    &sasl_mech_external,
};

const struct sasl_mech *sasl_mech_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(sasl_mechs); i++) {
		if (strcasecmp(sasl_mechs[i]->name, name) == 0)
			return sasl_mechs[i];
	}
	return NULL;
}

const char *sasl_mech_name(const struct sasl_mech *mech)
{
	return mech->name;
}

bool sasl_mech_is_plaintext(const struct sasl_mech *mech)
{
	return mech->plaintext;
}

bool sasl_mech_needs_channel_binding(const struct sasl_mech *mech)
{
	return mech->channel_binding;
}

bool sasl_mech_usable_with(const struct sasl_mech *mech, const char *secret)
{
	return secret != NULL && mech->usable_with(mech, secret);
}

struct sasl_conv *sasl_conv_new(const struct sasl_mech *mech, const struct sasl_channel *chan,
				const struct sasl_lookup *lookup)
{
	struct sasl_conv *conv = xcalloc(1, sizeof(*conv));

	/* randombytes_buf() wants it; it is idempotent and thread-safe. */
	if (sodium_init() < 0)
		fatal("sodium_init() failed");
	conv->mech = mech;
	conv->chan = chan;
	conv->lookup = lookup;
	if (mech->state_size > 0)
		conv->state = xcalloc(1, mech->state_size);
	return conv;
}

enum sasl_status sasl_conv_step(struct sasl_conv *conv, const unsigned char *in, size_t in_len,
				bool have_input, struct sasl_output *out)
{
	memset(out, 0, sizeof(*out));
	if (conv->finished)
		return sasl_output_fail(out, "conversation already finished");
	if (!have_input)
		in_len = 0;
	enum sasl_status status = conv->mech->step(conv, in, in_len, have_input, out);
	if (status != SASL_STATUS_CONTINUE)
		conv->finished = true;
	return status;
}

static void sasl_string_wipe_free(char **s)
{
	if (*s != NULL) {
		sodium_memzero(*s, strlen(*s));
		x_free(s);
	}
}

void sasl_output_clear(struct sasl_output *out)
{
	if (out->challenge != NULL)
		sodium_memzero(out->challenge, out->challenge_len);
	x_free(&out->challenge);
	x_free(&out->user);
	x_free(&out->authzid);
	sasl_string_wipe_free(&out->password);
	memset(out, 0, sizeof(*out));
}

void sasl_conv_free(struct sasl_conv **conv)
{
	struct sasl_conv *c = *conv;

	if (c == NULL)
		return;
	if (c->mech->state_free != NULL)
		c->mech->state_free(c);
	if (c->state != NULL)
		sodium_memzero(c->state, c->mech->state_size);
	free(c->state);
	x_free(conv);
}

enum sasl_status sasl_output_fail(struct sasl_output *out, const char *error)
{
	out->error = error;
	return SASL_STATUS_FAILURE;
}

enum sasl_status sasl_output_challenge(struct sasl_output *out, const void *data, size_t len)
{
	/* One spare byte so that an empty challenge is still a valid allocation. */
	out->challenge = xmalloc(len + 1);
	if (len > 0)
		memcpy(out->challenge, data, len);
	out->challenge_len = len;
	return SASL_STATUS_CONTINUE;
}

enum sasl_status sasl_output_success(struct sasl_output *out, const char *user, size_t user_len)
{
	out->user = xstrndup(user, user_len);
	return SASL_STATUS_SUCCESS;
}

enum sasl_status sasl_output_check_password(struct sasl_output *out, const char *user,
					    size_t user_len, const char *password,
					    size_t password_len)
{
	out->user = xstrndup(user, user_len);
	out->password = xstrndup(password, password_len);
	return SASL_STATUS_CHECK_PASSWORD;
}

bool sasl_identity_valid(const char *name, size_t len)
{
	if (len == 0 || len > SASL_IDENTITY_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

bool sasl_secret_has(const char *secret, const char *scheme)
{
	struct password_part part;

	return password_field_find_plaintext(secret, &part) ||
	       (scheme != NULL && password_field_find(secret, scheme, &part));
}

bool sasl_equal(const void *a, const void *b, size_t len)
{
	return sodium_memcmp(a, b, len) == 0;
}

static const char sasl_base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Returns the 6-bit value of c, or -1 if c is not in the alphabet. */
static int sasl_base64_value(char c)
{
	const char *p = c == '\0' ? NULL : strchr(sasl_base64_alphabet, c);

	return p == NULL ? -1 : (int)(p - sasl_base64_alphabet);
}

/* Decodes one group of four characters, of which the last pad are '='. Returns the byte count, or
 * -1 if a character is bad or the bits under the padding are not zero (a non-canonical form). */
static int sasl_base64_group(const char *in, int pad, unsigned char *out)
{
	uint32_t bits = 0;

	for (int i = 0; i < 4; i++) {
		int v = i < 4 - pad ? sasl_base64_value(in[i]) : 0;
		if (v < 0)
			return -1;
		bits = bits << 6 | (uint32_t)v;
	}
	if ((pad == 1 && (bits & 0xff) != 0) || (pad == 2 && (bits & 0xffff) != 0))
		return -1;
	for (int i = 0; i < 3 - pad; i++)
		out[i] = (unsigned char)(bits >> (16 - 8 * i));
	return 3 - pad;
}

long sasl_base64_decode(const char *in, size_t len, unsigned char *out)
{
	long total = 0;

	if (len % 4 != 0)
		return -1;
	for (size_t off = 0; off < len; off += 4) {
		bool last = off + 4 == len;
		int pad = !last ? 0 : in[off + 3] != '=' ? 0 : in[off + 2] != '=' ? 1 : 2;
		int n = sasl_base64_group(in + off, pad, out + total);
		if (n < 0)
			return -1;
		total += n;
	}
	return total;
}

char *sasl_base64_encode(const unsigned char *in, size_t len)
{
	size_t size = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	char *out = xmalloc(size);

	sodium_bin2base64(out, size, in, len, sodium_base64_VARIANT_ORIGINAL);
	return out;
}

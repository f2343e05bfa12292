/* SCRAM-SHA-1, SCRAM-SHA-256 and their -PLUS variants (RFC 5802, RFC 7677), server side.
 * Messages: client-first "gs2-header n=user,r=cnonce", server-first "r=cnonce+snonce,s=salt,i=N",
 * client-final "c=base64(gs2-header+cb-data),r=nonce,p=proof", server-final "v=signature"
 * (sent as a challenge because POP3 AUTH has no success-with-data, RFC 5034 §4), then an empty
 * client response. Unknown users get a salt derived from the server's fake key, so they are
 * answered like real ones and fail only at the proof. */
#include <string.h>

#include <sodium.h>

#include "auth/password.h"
#include "core/util.h"
#include "sasl/sasl_private.h"
#include "sasl/sasl_testing.h"
#include "sasl/scram_secret.h"

/* RFC 5802 §5.1 wants a nonce that is hard to guess; 24 bytes are 192 bits, 32 base64 chars. */
#define SCRAM_NONCE_BYTES 24
/* The longest client nonce kept; clients send 24-32 characters. */
#define SCRAM_CLIENT_NONCE_MAX 256

enum scram_phase { SCRAM_PHASE_FIRST, SCRAM_PHASE_FINAL, SCRAM_PHASE_ACK };

struct sasl_scram_state {
	enum scram_phase phase;
	char *authzid; /* a master user's target, or NULL */
	bool asked;    /* the empty challenge for a missing initial response went out */
	char *gs2_header;
	size_t gs2_header_len;
	const unsigned char *cb_data; /* into the channel; NULL without channel binding */
	size_t cb_len;
	char *user;
	char *client_first_bare;
	char *server_first;
	char *nonce;  /* client nonce + server nonce */
	bool user_ok; /* known user with a usable secret */
	const char *user_error;
	struct scram_secret secret;
};

/* A cursor over comma-separated "x=value" attributes. */
struct scram_reader {
	const char *p, *end;
};

static char *sasl_scram_test_nonce;

void sasl_scram_set_test_nonce(const char *nonce)
{
	x_free(&sasl_scram_test_nonce);
	if (nonce != NULL)
		sasl_scram_test_nonce = xstrdup(nonce);
}

/* Takes the attribute "name=value" at the cursor; -1 if the next attribute has another name. */
static int scram_reader_take(struct scram_reader *rd, char name, const char **value_r,
			     size_t *len_r)
{
	if (rd->end - rd->p < 2 || rd->p[0] != name || rd->p[1] != '=')
		return -1;
	const char *value = rd->p + 2;
	const char *comma = memchr(value, ',', (size_t)(rd->end - value));
	*value_r = value;
	*len_r = (size_t)((comma != NULL ? comma : rd->end) - value);
	rd->p = comma != NULL ? comma + 1 : rd->end;
	return 0;
}

/* Decodes a saslname (RFC 5802 §5.1: "=2C" is ',', "=3D" is '=', other '=' is an error) into a
 * new string; NULL if malformed or not a valid identity. */
static char *scram_saslname_decode(const char *in, size_t len)
{
	char *out = xmalloc(len + 1);
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		if (in[i] != '=') {
			out[n++] = in[i];
		} else if (len - i >= 3 && (in[i + 1] == '2' && in[i + 2] == 'C')) {
			out[n++] = ',';
			i += 2;
		} else if (len - i >= 3 && (in[i + 1] == '3' && in[i + 2] == 'D')) {
			out[n++] = '=';
			i += 2;
		} else {
			x_free(&out);
			return NULL;
		}
	}
	out[n] = '\0';
	if (!sasl_identity_valid(out, n))
		x_free(&out);
	return out;
}

/* RFC 5802 §7: printable ASCII except ','. */
static bool scram_nonce_valid(const char *nonce, size_t len)
{
	if (len == 0 || len > SCRAM_CLIENT_NONCE_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (nonce[i] < 0x21 || nonce[i] > 0x7e || nonce[i] == ',')
			return false;
	}
	return true;
}

/* Chooses the channel-binding data the client named, enforcing RFC 5802 §6: -PLUS needs "p=";
 * "y" on a channel that offers binding means a downgrade; "p=" on a plain mechanism is an error. */
static const char *scram_cb_select(struct sasl_conv *conv, const char *flag, size_t flag_len)
{
	struct sasl_scram_state *st = conv->state;
	const struct sasl_channel *chan = conv->chan;
	bool chan_has_cb = chan->cb_exporter != NULL || chan->cb_endpoint != NULL;

	if (flag_len == 1 && (flag[0] == 'n' || flag[0] == 'y')) {
		if (conv->mech->channel_binding)
			return "-PLUS mechanism without channel binding";
		if (flag[0] == 'y' && chan_has_cb)
			return "client says the server lacks channel binding: possible downgrade";
		return NULL;
	}
	if (flag_len < 2 || flag[0] != 'p' || flag[1] != '=')
		return "malformed gs2 channel-binding flag";
	if (!conv->mech->channel_binding)
		return "channel binding requested with a mechanism without -PLUS";
	size_t name_len = flag_len - 2;
	if (name_len == 12 && memcmp(flag + 2, "tls-exporter", 12) == 0) {
		st->cb_data = chan->cb_exporter;
		st->cb_len = chan->cb_exporter_len;
	} else if (name_len == 20 && memcmp(flag + 2, "tls-server-end-point", 20) == 0) {
		st->cb_data = chan->cb_endpoint;
		st->cb_len = chan->cb_endpoint_len;
	}
	return st->cb_data == NULL ? "unsupported channel-binding type" : NULL;
}

/* Parses the gs2 header "flag,[a=authzid]," and leaves rd at the bare message. */
static const char *scram_gs2_parse(struct sasl_conv *conv, struct scram_reader *rd,
				   char **authzid_r)
{
	struct sasl_scram_state *st = conv->state;
	const char *start = rd->p, *comma = memchr(rd->p, ',', (size_t)(rd->end - rd->p));
	const char *authzid;
	size_t authzid_len;

	if (comma == NULL)
		return "malformed gs2 header";
	const char *error = scram_cb_select(conv, rd->p, (size_t)(comma - rd->p));
	if (error != NULL)
		return error;
	rd->p = comma + 1;
	if (rd->p < rd->end && rd->p[0] == ',') {
		rd->p++;
	} else if (scram_reader_take(rd, 'a', &authzid, &authzid_len) < 0 ||
		   (*authzid_r = scram_saslname_decode(authzid, authzid_len)) == NULL ||
		   rd->p == rd->end) {
		return "malformed gs2 authorization identity";
	}
	st->gs2_header_len = (size_t)(rd->p - start);
	st->gs2_header = xstrndup(start, st->gs2_header_len);
	return NULL;
}

/* Derives the salt for users without a stored SCRAM secret from the server's fake key, so that
 * it stays the same across tries and looks like a real one. */
static void scram_fake_salt(const struct sasl_lookup *lookup, const char *user,
			    unsigned char salt_r[SCRAM_SALT_NEW_LEN])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	static const unsigned char no_key[1];

	if (scram_hmac(EVP_sha256(), lookup->fake_key != NULL ? lookup->fake_key : no_key,
		       lookup->fake_key != NULL ? lookup->fake_key_len : 0, user, strlen(user),
		       mac) < 0)
		fatal("HMAC-SHA256 failed");
	memcpy(salt_r, mac, SCRAM_SALT_NEW_LEN);
	sodium_memzero(mac, sizeof(mac));
}

/* Fills st->secret from the user's stored field, or a fake one whose proof can never match. */
static void scram_secret_load(struct sasl_conv *conv)
{
	struct sasl_scram_state *st = conv->state;
	const EVP_MD *md = conv->mech->md();
	const char *field = conv->lookup->secret(conv->lookup->context, st->user);
	unsigned int iterations = conv->lookup->fake_iterations != 0 ? conv->lookup->fake_iterations
								     : SCRAM_ITERATIONS_DEFAULT;
	unsigned char salt[SCRAM_SALT_NEW_LEN];
	struct password_part part;
	const char *error = NULL;

	scram_fake_salt(conv->lookup, st->user, salt);
	st->user_error = "unknown user";
	if (field == NULL) {
		/* fall through to the fake secret */
	} else if (password_field_find(field, conv->mech->scheme, &part)) {
		if (scram_secret_parse(md, part.data, part.data_len, &st->secret, &error) == 0)
			st->user_ok = true;
		st->user_error = error;
	} else if (password_field_find_plaintext(field, &part) && part.data_len > 0) {
		/* Computed now, with the stable derived salt, so repeated tries look the same. */
		if (scram_secret_derive(md, part.data, part.data_len, salt, sizeof(salt),
					iterations, &st->secret, &error) == 0)
			st->user_ok = true;
		st->user_error = error;
	} else {
		st->user_error = "no secret usable for SCRAM";
	}
	if (!st->user_ok) {
		scram_secret_clear(&st->secret);
		st->secret.iterations = iterations;
		st->secret.salt_len = sizeof(salt);
		memcpy(st->secret.salt, salt, sizeof(salt));
		st->secret.key_len = (size_t)EVP_MD_get_size(md);
		randombytes_buf(st->secret.stored_key, st->secret.key_len);
		randombytes_buf(st->secret.server_key, st->secret.key_len);
	}
}

static char *scram_server_nonce_make(void)
{
	unsigned char random[SCRAM_NONCE_BYTES];

	if (sasl_scram_test_nonce != NULL)
		return xstrdup(sasl_scram_test_nonce);
	randombytes_buf(random, sizeof(random));
	return sasl_base64_encode(random, sizeof(random));
}

/* Parses "[m=…,]n=user,r=nonce[,ext…]" and records the user and the client nonce. */
static const char *scram_bare_parse(struct sasl_conv *conv, struct scram_reader *rd,
				    const char **cnonce_r, size_t *cnonce_len_r)
{
	struct sasl_scram_state *st = conv->state;
	const char *name;
	size_t name_len;

	/* RFC 5802 §5.1: "m" is reserved; a server that does not know it must fail. */
	if (rd->end - rd->p >= 2 && rd->p[0] == 'm' && rd->p[1] == '=')
		return "mandatory SCRAM extension not supported";
	if (scram_reader_take(rd, 'n', &name, &name_len) < 0)
		return "malformed SCRAM user name";
	if ((st->user = scram_saslname_decode(name, name_len)) == NULL)
		return "invalid SCRAM user name";
	if (scram_reader_take(rd, 'r', cnonce_r, cnonce_len_r) < 0 ||
	    !scram_nonce_valid(*cnonce_r, *cnonce_len_r))
		return "malformed SCRAM client nonce";
	return NULL;
}

static enum sasl_status scram_first_step(struct sasl_conv *conv, const char *msg, size_t len,
					 struct sasl_output *out)
{
	struct sasl_scram_state *st = conv->state;
	struct scram_reader rd = {msg, msg + len};
	char *authzid = NULL;
	const char *cnonce, *error;
	size_t cnonce_len;

	if ((error = scram_gs2_parse(conv, &rd, &authzid)) == NULL) {
		st->client_first_bare = xstrndup(rd.p, (size_t)(rd.end - rd.p));
		error = scram_bare_parse(conv, &rd, &cnonce, &cnonce_len);
	}
	if (error == NULL && authzid != NULL && strcmp(authzid, st->user) != 0) {
		/* acting as another user is for configured master users only */
		if (conv->lookup->authorize != NULL &&
		    conv->lookup->authorize(conv->lookup->context, st->user, authzid)) {
			st->authzid = authzid;
			authzid = NULL;
		} else {
			error = "authorization identity not allowed";
		}
	}
	free(authzid);
	if (error != NULL)
		return sasl_output_fail(out, error);
	scram_secret_load(conv);
	char *snonce = scram_server_nonce_make();
	st->nonce = xasprintf("%.*s%s", (int)cnonce_len, cnonce, snonce);
	free(snonce);
	char *salt = sasl_base64_encode(st->secret.salt, st->secret.salt_len);
	st->server_first = xasprintf("r=%s,s=%s,i=%u", st->nonce, salt, st->secret.iterations);
	free(salt);
	st->phase = SCRAM_PHASE_FINAL;
	return sasl_output_challenge(out, st->server_first, strlen(st->server_first));
}

/* Checks "c=": base64 of the gs2 header followed by the channel-binding data, if any. */
static bool scram_cbind_matches(const struct sasl_scram_state *st, const char *b64, size_t len)
{
	size_t expected_len = st->gs2_header_len + st->cb_len;
	unsigned char *given = xmalloc(len / 4 * 3 + 1);
	unsigned char *expected = xmalloc(expected_len + 1);

	memcpy(expected, st->gs2_header, st->gs2_header_len);
	if (st->cb_len > 0)
		memcpy(expected + st->gs2_header_len, st->cb_data, st->cb_len);
	long n = sasl_base64_decode(b64, len, given);
	bool ok = n >= 0 && (size_t)n == expected_len && sasl_equal(given, expected, expected_len);
	free(given);
	free(expected);
	return ok;
}

/* Verifies ClientProof (RFC 5802 §3) and computes the ServerSignature into sig_r. */
static bool scram_proof_verify(const struct sasl_conv *conv, const char *auth_msg,
			       const unsigned char *proof, unsigned char *sig_r)
{
	const struct sasl_scram_state *st = conv->state;
	const EVP_MD *md = conv->mech->md();
	size_t key_len = st->secret.key_len, len = strlen(auth_msg);
	unsigned char client_sig[EVP_MAX_MD_SIZE], client_key[EVP_MAX_MD_SIZE];
	unsigned char stored[EVP_MAX_MD_SIZE];
	unsigned int stored_len;

	if (scram_hmac(md, st->secret.stored_key, key_len, auth_msg, len, client_sig) < 0 ||
	    scram_hmac(md, st->secret.server_key, key_len, auth_msg, len, sig_r) < 0)
		fatal("SCRAM HMAC failed");
	for (size_t i = 0; i < key_len; i++)
		client_key[i] = proof[i] ^ client_sig[i];
	if (EVP_Digest(client_key, key_len, stored, &stored_len, md, NULL) != 1)
		fatal("SCRAM digest failed");
	bool ok = sasl_equal(stored, st->secret.stored_key, key_len);
	sodium_memzero(client_sig, sizeof(client_sig));
	sodium_memzero(client_key, sizeof(client_key));
	sodium_memzero(stored, sizeof(stored));
	return ok;
}

/* Parses client-final: "c=…,r=…[,ext…],p=proof". Sets *without_proof_len_r and proof_r. */
static const char *scram_final_parse(struct sasl_conv *conv, const char *msg, size_t len,
				     size_t *without_proof_len_r, unsigned char *proof_r)
{
	struct sasl_scram_state *st = conv->state;
	struct scram_reader rd = {msg, msg + len};
	const char *cbind, *nonce, *last = memrchr(msg, ',', len);
	size_t cbind_len, nonce_len;
	unsigned char proof[EVP_MAX_MD_SIZE + 3];

	if (scram_reader_take(&rd, 'c', &cbind, &cbind_len) < 0 ||
	    scram_reader_take(&rd, 'r', &nonce, &nonce_len) < 0 || last == NULL ||
	    last < rd.p - 1 || len - (size_t)(last - msg) < 3 || last[1] != 'p' || last[2] != '=')
		return "malformed SCRAM client-final message";
	if (!scram_cbind_matches(st, cbind, cbind_len))
		return "SCRAM channel binding mismatch";
	if (nonce_len != strlen(st->nonce) || memcmp(nonce, st->nonce, nonce_len) != 0)
		return "SCRAM nonce mismatch";
	const char *p64 = last + 3;
	size_t p64_len = len - (size_t)(p64 - msg);
	if (p64_len % 4 != 0 || p64_len / 4 * 3 > sizeof(proof) ||
	    sasl_base64_decode(p64, p64_len, proof) != (long)st->secret.key_len)
		return "malformed SCRAM client proof";
	memcpy(proof_r, proof, st->secret.key_len);
	*without_proof_len_r = (size_t)(last - msg);
	return NULL;
}

static enum sasl_status scram_final_step(struct sasl_conv *conv, const char *msg, size_t len,
					 struct sasl_output *out)
{
	struct sasl_scram_state *st = conv->state;
	unsigned char proof[EVP_MAX_MD_SIZE], sig[EVP_MAX_MD_SIZE];
	size_t without_proof_len;
	const char *error = scram_final_parse(conv, msg, len, &without_proof_len, proof);

	if (error != NULL)
		return sasl_output_fail(out, error);
	char *auth_msg = xasprintf("%s,%s,%.*s", st->client_first_bare, st->server_first,
				   (int)without_proof_len, msg);
	bool ok = scram_proof_verify(conv, auth_msg, proof, sig);
	free(auth_msg);
	if (!st->user_ok)
		return sasl_output_fail(out, st->user_error);
	if (!ok)
		return sasl_output_fail(out, "SCRAM client proof mismatch");
	char *sig64 = sasl_base64_encode(sig, st->secret.key_len);
	char *final = xasprintf("v=%s", sig64);
	free(sig64);
	st->phase = SCRAM_PHASE_ACK;
	enum sasl_status status = sasl_output_challenge(out, final, strlen(final));
	free(final);
	return status;
}

static enum sasl_status sasl_scram_step(struct sasl_conv *conv, const unsigned char *in,
					size_t in_len, bool have_input, struct sasl_output *out)
{
	struct sasl_scram_state *st = conv->state;
	const char *msg = (const char *)in;

	/* SCRAM is client-first: ask for the first message with an empty challenge. */
	if (st->phase == SCRAM_PHASE_FIRST && !have_input && !st->asked) {
		st->asked = true;
		return sasl_output_challenge(out, "", 0);
	}
	if (in_len > 0 && memchr(in, '\0', in_len) != NULL)
		return sasl_output_fail(out, "NUL in SCRAM message");
	switch (st->phase) {
	case SCRAM_PHASE_FIRST:
		return scram_first_step(conv, msg, in_len, out);
	case SCRAM_PHASE_FINAL:
		return scram_final_step(conv, msg, in_len, out);
	case SCRAM_PHASE_ACK:
	default:
		if (in_len != 0)
			return sasl_output_fail(out, "unexpected data after SCRAM server-final");
		enum sasl_status status = sasl_output_success(out, st->user, strlen(st->user));
		out->authzid = st->authzid != NULL ? xstrdup(st->authzid) : NULL;
		return status;
	}
}

static void sasl_scram_state_free(struct sasl_conv *conv)
{
	struct sasl_scram_state *st = conv->state;

	free(st->gs2_header);
	free(st->user);
	free(st->client_first_bare);
	free(st->server_first);
	free(st->nonce);
	free(st->authzid);
	scram_secret_clear(&st->secret);
}

static bool sasl_scram_usable_with(const struct sasl_mech *mech, const char *secret)
{
	return sasl_secret_has(secret, mech->scheme);
}

#define SASL_SCRAM_MECH(name_, md_, scheme_, plus_)                                                \
	{                                                                                          \
		.name = (name_), .channel_binding = (plus_), .md = (md_), .scheme = (scheme_),     \
		.state_size = sizeof(struct sasl_scram_state),                                     \
		.usable_with = sasl_scram_usable_with, .step = sasl_scram_step,                    \
		.state_free = sasl_scram_state_free                                                \
	}

const struct sasl_mech sasl_mech_scram_sha1 =
    SASL_SCRAM_MECH("SCRAM-SHA-1", EVP_sha1, "SCRAM-SHA-1", false);
const struct sasl_mech sasl_mech_scram_sha1_plus =
    SASL_SCRAM_MECH("SCRAM-SHA-1-PLUS", EVP_sha1, "SCRAM-SHA-1", true);
const struct sasl_mech sasl_mech_scram_sha256 =
    SASL_SCRAM_MECH("SCRAM-SHA-256", EVP_sha256, "SCRAM-SHA-256", false);
const struct sasl_mech sasl_mech_scram_sha256_plus =
    SASL_SCRAM_MECH("SCRAM-SHA-256-PLUS", EVP_sha256, "SCRAM-SHA-256", true);

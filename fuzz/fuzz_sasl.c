/* Fuzzes every SASL mechanism's server side (src/sasl/): PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1 and
 * SCRAM-SHA-256 with their -PLUS variants, EXTERNAL, plus APOP digests and the strict base64 codec.
 *
 * Input: byte 0 picks the mechanism (index into mechanisms[] below), byte 1 holds flags (see
 * enum fuzz_flag), the rest is split at '\n' into client responses fed one per step. A SCRAM
 * client-final ending in ",p=*" gets the correct proof for the user's password filled in by this
 * harness, so that success, the server signature and the final empty response are reached too; the
 * signature is then checked against one computed here.
 *
 * Checks: each status comes with the output it promises (challenge, user and password, error), a
 * finished conversation only fails, PLAIN hands over exactly the fields it was given, EXTERNAL
 * accepts only the certificate's identity, APOP accepts the right digest, and base64 decoding
 * accepts exactly the canonical encodings. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "auth/password.h"
#include "fuzz_common.h"
#include "sasl/sasl.h"
#include "sasl/sasl_testing.h"

enum fuzz_flag {
	FUZZ_FLAG_TLS = 1 << 0,	 /* the channel offers tls-exporter/tls-server-end-point data */
	FUZZ_FLAG_CERT = 1 << 1, /* a verified client certificate names "user" */
	FUZZ_FLAG_NO_INITIAL = 1 << 2,	 /* AUTH without an initial response */
	FUZZ_FLAG_SECRET_INPUT = 1 << 3, /* the first response is "user"'s stored secret field */
	FUZZ_FLAG_MASTER = 1 << 4,	 /* "master" may log in as anyone */
};

static const char *const mechanisms[] = {
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "EXTERNAL",
    "APOP",
    "BASE64",
};

/* RFC 5802 and RFC 7677 example secrets for the password "pencil". */
#define SECRET_SHA1                                                                                \
	"{SCRAM-SHA-1}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/" \
	"fTE="
#define SECRET_SHA256                                                                              \
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"                                            \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"                                            \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

struct fuzz_user {
	const char *name, *secret, *password;
};

static const struct fuzz_user users[] = {
    {"user", SECRET_SHA1 " " SECRET_SHA256 " {PLAIN}pencil", "pencil"},
    {"plain", "{PLAIN}correct horse", "correct horse"},
    {"dove", "{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740",
     "password"},
    {"master", "{PLAIN}master key", "master key"},
    {"tim", "{PLAIN}tanstaaftanstaaf", "tanstaaftanstaaf"}, /* RFC 2195's example */
    {"a,b=c", "{PLAIN}pencil", "pencil"},
};

/* The conversation's view of the world for one input. */
struct fuzz_world {
	const char *input_secret; /* "user"'s field when FUZZ_FLAG_SECRET_INPUT */
	bool master;
};

static const struct fuzz_user *user_find(const char *name)
{
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		if (strcmp(users[i].name, name) == 0)
			return &users[i];
	}
	return NULL;
}

static const char *lookup_secret(void *context, const char *user)
{
	const struct fuzz_world *world = context;
	const struct fuzz_user *u = user_find(user);

	if (world->input_secret != NULL && strcmp(user, "user") == 0)
		return world->input_secret;
	return u != NULL ? u->secret : NULL;
}

static bool lookup_authorize(void *context, const char *authcid, const char *authzid)
{
	const struct fuzz_world *world = context;

	return world->master && strcmp(authcid, "master") == 0;
}

static const unsigned char fake_key[32] = "fuzz-fake-key-fuzz-fake-key-0123";
static const unsigned char cb_exporter[32] = "exporter-data-exporter-data-0123";
static const unsigned char cb_endpoint[32] = "endpoint-hash-endpoint-hash-4567";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if (sodium_init() < 0)
		abort();
	/* fixed randomness: an input must always take the same path */
	sasl_scram_set_test_nonce("fuzzservernonce");
	sasl_cram_set_test_challenge("<1896.697170952@postoffice.reston.mci.net>");
	return 0;
}

/* ---- a SCRAM client, just enough to fill in proofs ---- */

struct scram_state {
	const EVP_MD *md;
	char *client_first_bare;
	char *server_first;
	unsigned char server_key[EVP_MAX_MD_SIZE];
	unsigned char expected_signature[EVP_MAX_MD_SIZE];
	bool signature_known;
};

/* Extracts "x=" attribute value from a SCRAM message into a new string, or NULL. */
static char *scram_attr(const char *msg, char name)
{
	for (const char *p = msg; p != NULL; p = strchr(p, ',')) {
		if (*p == ',')
			p++;
		if (p[0] == name && p[1] == '=') {
			size_t len = strcspn(p + 2, ",");
			return xstrndup(p + 2, len);
		}
	}
	return NULL;
}

/* Replaces a trailing "p=*" of a client-final with the proof for password. Returns the new
 * message, or NULL if it has no such ending or the server-first cannot be used. */
static char *scram_fill_proof(struct scram_state *st, const char *final, const char *password)
{
	size_t len = strlen(final);
	if (st->server_first == NULL || st->client_first_bare == NULL || len < 4 ||
	    strcmp(final + len - 4, ",p=*") != 0)
		return NULL;
	char *salt64 = scram_attr(st->server_first, 's'), *iter = scram_attr(st->server_first, 'i');
	unsigned char salt[128], salted[EVP_MAX_MD_SIZE], client_key[EVP_MAX_MD_SIZE];
	unsigned char stored[EVP_MAX_MD_SIZE], sig[EVP_MAX_MD_SIZE], proof[EVP_MAX_MD_SIZE];
	unsigned int key_len = (unsigned int)EVP_MD_get_size(st->md), n;
	long salt_len = salt64 != NULL && strlen(salt64) / 4 * 3 <= sizeof(salt)
			    ? sasl_base64_decode(salt64, strlen(salt64), salt)
			    : -1;
	long iterations = iter != NULL ? atol(iter) : 0;
	char *out = NULL;

	/* the stored example secrets use 4096; a fuzzed secret could ask for a million */
	if (salt_len > 0 && iterations > 0 && iterations <= 4096 &&
	    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, (int)iterations,
			      st->md, (int)key_len, salted) == 1) {
		char *auth = xasprintf("%s,%s,%.*s", st->client_first_bare, st->server_first,
				       (int)(len - 4), final);
		HMAC(st->md, salted, (int)key_len, (const unsigned char *)"Client Key", 10,
		     client_key, &n);
		HMAC(st->md, salted, (int)key_len, (const unsigned char *)"Server Key", 10,
		     st->server_key, &n);
		EVP_Digest(client_key, key_len, stored, &n, st->md, NULL);
		HMAC(st->md, stored, (int)key_len, (const unsigned char *)auth, strlen(auth), sig,
		     &n);
		HMAC(st->md, st->server_key, (int)key_len, (const unsigned char *)auth,
		     strlen(auth), st->expected_signature, &n);
		st->signature_known = true;
		for (unsigned int k = 0; k < key_len; k++)
			proof[k] = client_key[k] ^ sig[k];
		char *proof64 = sasl_base64_encode(proof, key_len);
		out = xasprintf("%.*sp=%s", (int)(len - 3), final, proof64);
		free(proof64);
		free(auth);
	}
	free(salt64);
	free(iter);
	return out;
}

/* ---- checks per step ---- */

/* PLAIN's CHECK_PASSWORD must carry exactly the authcid and password of the message. */
static void check_plain_fields(const char *msg, size_t len, const struct sasl_output *out)
{
	const char *nul1 = memchr(msg, '\0', len);
	FUZZ_CHECK(nul1 != NULL);
	const char *authcid = nul1 + 1;
	const char *nul2 = memchr(authcid, '\0', len - (size_t)(authcid - msg));
	FUZZ_CHECK(nul2 != NULL);
	const char *password = nul2 + 1;
	size_t password_len = len - (size_t)(password - msg);
	FUZZ_CHECK(strlen(out->user) == (size_t)(nul2 - authcid) &&
		   memcmp(out->user, authcid, strlen(out->user)) == 0);
	FUZZ_CHECK(strlen(out->password) == password_len &&
		   memcmp(out->password, password, password_len) == 0);
}

static void check_output(enum sasl_status status, const struct sasl_output *out)
{
	switch (status) {
	case SASL_STATUS_CONTINUE:
		FUZZ_CHECK(out->challenge != NULL && out->user == NULL);
		break;
	case SASL_STATUS_CHECK_PASSWORD:
		FUZZ_CHECK(out->user != NULL && out->password != NULL);
		FUZZ_CHECK(out->user[0] != '\0' && strlen(out->user) <= 255);
		FUZZ_CHECK(out->password[0] != '\0' && strlen(out->password) <= 255);
		break;
	case SASL_STATUS_SUCCESS:
		FUZZ_CHECK(out->user != NULL && out->user[0] != '\0' && out->password == NULL);
		break;
	case SASL_STATUS_FAILURE:
		FUZZ_CHECK(out->error != NULL && out->user == NULL && out->password == NULL);
		break;
	}
}

static void run_conversation(const char *mech_name, uint8_t flags, const uint8_t *data, size_t size)
{
	const struct sasl_mech *mech = sasl_mech_find(mech_name);
	struct fuzz_world world = {.master = (flags & FUZZ_FLAG_MASTER) != 0};
	struct sasl_channel chan = {.tls = (flags & FUZZ_FLAG_TLS) != 0};
	struct sasl_lookup lookup = {
	    .context = &world,
	    .secret = lookup_secret,
	    .fake_key = fake_key,
	    .fake_key_len = sizeof(fake_key),
	    .fake_iterations = 64, /* unknown users and plaintext secrets: keep PBKDF2 cheap */
	    .authorize = lookup_authorize,
	};
	struct scram_state scram = {.md = strstr(mech_name, "SHA-1") != NULL ? EVP_sha1()
									     : EVP_sha256()};
	char *segments = xmalloc(size + 1), *secret_copy = NULL;

	FUZZ_CHECK(mech != NULL);
	if (chan.tls) {
		chan.cb_exporter = cb_exporter;
		chan.cb_exporter_len = sizeof(cb_exporter);
		chan.cb_endpoint = cb_endpoint;
		chan.cb_endpoint_len = sizeof(cb_endpoint);
	}
	if (flags & FUZZ_FLAG_CERT)
		chan.cert_user = "user";
	memcpy(segments, data, size);
	segments[size] = '\n';

	struct sasl_conv *conv = sasl_conv_new(mech, &chan, &lookup);
	struct sasl_output out = {0};
	bool finished = false, first = true;
	const char *password = "pencil";
	char *pos = segments, *end = segments + size + 1;
	if ((flags & FUZZ_FLAG_SECRET_INPUT) && pos < end) {
		char *nl = memchr(pos, '\n', (size_t)(end - pos));
		secret_copy = xstrndup(pos, (size_t)(nl - pos));
		world.input_secret = secret_copy;
		pos = nl + 1;
	}
	for (unsigned int step = 0; step < 8 && pos < end; step++) {
		char *nl = memchr(pos, '\n', (size_t)(end - pos));
		size_t len = (size_t)(nl - pos);
		bool have_input = !(first && (flags & FUZZ_FLAG_NO_INITIAL));
		char *filled = NULL;
		const char *msg = pos;

		if (strncmp(mech_name, "SCRAM", 5) == 0 && have_input) {
			*nl = '\0';
			if (scram.client_first_bare == NULL && strlen(pos) == len) {
				/* client-first: the bare part follows the gs2 header's 2nd comma */
				const char *comma = strchr(pos, ',');
				comma = comma != NULL ? strchr(comma + 1, ',') : NULL;
				if (comma != NULL)
					scram.client_first_bare = xstrdup(comma + 1);
				char *user = scram_attr(comma != NULL ? comma + 1 : "", 'n');
				const struct fuzz_user *u = user != NULL ? user_find(user) : NULL;
				if (u != NULL)
					password = u->password;
				free(user);
			} else if ((filled = scram_fill_proof(&scram, pos, password)) != NULL) {
				msg = filled;
				len = strlen(filled);
			}
		}
		sasl_output_clear(&out);
		enum sasl_status status =
		    sasl_conv_step(conv, (const unsigned char *)msg, len, have_input, &out);
		check_output(status, &out);
		if (finished)
			FUZZ_CHECK(status == SASL_STATUS_FAILURE);
		if (status == SASL_STATUS_CHECK_PASSWORD && strcmp(mech_name, "PLAIN") == 0)
			check_plain_fields(msg, len, &out);
		if (status == SASL_STATUS_SUCCESS && strcmp(mech_name, "EXTERNAL") == 0)
			FUZZ_CHECK(chan.cert_user != NULL && strcmp(out.user, chan.cert_user) == 0);
		if (status == SASL_STATUS_CONTINUE && scram.server_first == NULL &&
		    strncmp(mech_name, "SCRAM", 5) == 0 && out.challenge_len > 0)
			scram.server_first =
			    xstrndup((const char *)out.challenge, out.challenge_len);
		else if (status == SASL_STATUS_CONTINUE && filled != NULL &&
			 scram.signature_known && world.input_secret == NULL) {
			/* mutual authentication: "v=" and the signature only the server can make
			 * (a fuzzed secret may pair the right StoredKey with another ServerKey) */
			size_t key_len = (size_t)EVP_MD_get_size(scram.md);
			char *sig64 = sasl_base64_encode(scram.expected_signature, key_len);
			FUZZ_CHECK(out.challenge_len == 2 + strlen(sig64) &&
				   memcmp(out.challenge, "v=", 2) == 0 &&
				   memcmp(out.challenge + 2, sig64, strlen(sig64)) == 0);
			free(sig64);
		}
		if (status != SASL_STATUS_CONTINUE)
			finished = true;
		free(filled);
		first = false;
		if (have_input)
			pos = nl + 1;
	}
	sasl_output_clear(&out);
	sasl_conv_free(&conv);
	FUZZ_CHECK(conv == NULL);
	free(scram.client_first_bare);
	free(scram.server_first);
	free(secret_copy);
	free(segments);
}

/* APOP: segments are the stored field, the timestamp and the digest; a digest "auto" is replaced
 * by the right one for the field's plaintext secret, which must then match. */
static void run_apop(const uint8_t *data, size_t size)
{
	char *text = xstrndup((const char *)data, size);
	char *secret = text, *timestamp = strchr(secret, '\n'), *digest = NULL;
	char expected_hex[33];

	if (timestamp != NULL) {
		*timestamp++ = '\0';
		digest = strchr(timestamp, '\n');
		if (digest != NULL)
			*digest++ = '\0';
	}
	if (timestamp == NULL || digest == NULL) {
		free(text);
		return;
	}
	struct password_part part;
	bool plaintext = password_field_find_plaintext(secret, &part) && part.data_len > 0;
	bool computed = false;
	if (strcmp(digest, "auto") == 0 && plaintext) {
		unsigned char md[16];
		unsigned int md_len;
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		FUZZ_CHECK(ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
			   EVP_DigestUpdate(ctx, timestamp, strlen(timestamp)) == 1 &&
			   EVP_DigestUpdate(ctx, part.data, part.data_len) == 1 &&
			   EVP_DigestFinal_ex(ctx, md, &md_len) == 1);
		EVP_MD_CTX_free(ctx);
		sodium_bin2hex(expected_hex, sizeof(expected_hex), md, sizeof(md));
		digest = expected_hex;
		computed = true;
	}
	int ret = sasl_apop_verify(secret, timestamp, digest);
	FUZZ_CHECK(ret >= -1 && ret <= 1);
	FUZZ_CHECK((ret == -1) == !plaintext);
	if (computed)
		FUZZ_CHECK(ret == 1);
	free(text);
}

/* Strict base64: what decodes is canonical (encodes back to the same text); what is encoded
 * decodes back. */
static void run_base64(const uint8_t *data, size_t size)
{
	unsigned char *decoded = xmalloc(size / 4 * 3 + 1);
	long n = sasl_base64_decode((const char *)data, size, decoded);

	if (n >= 0) {
		char *again = sasl_base64_encode(decoded, (size_t)n);
		FUZZ_CHECK(strlen(again) == size && memcmp(again, data, size) == 0);
		free(again);
	}
	char *encoded = sasl_base64_encode(data, size);
	size_t encoded_len = strlen(encoded);
	unsigned char *back = xmalloc(encoded_len / 4 * 3 + 1);
	FUZZ_CHECK(sasl_base64_decode(encoded, encoded_len, back) == (long)size);
	FUZZ_CHECK(size == 0 || memcmp(back, data, size) == 0);
	free(back);
	free(encoded);
	free(decoded);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = {data, size};
	const char *mech =
	    mechanisms[fuzz_take_byte(&in, 0) % (sizeof(mechanisms) / sizeof(mechanisms[0]))];
	uint8_t flags = fuzz_take_byte(&in, 0);

	if (strcmp(mech, "APOP") == 0)
		run_apop(in.data, in.len);
	else if (strcmp(mech, "BASE64") == 0)
		run_base64(in.data, in.len);
	else
		run_conversation(mech, flags, in.data, in.len);
	return 0;
}

/* Unit tests for the SASL mechanisms: RFC examples replayed through the state machines, malformed
 * input, channel binding, unknown users, APOP and strict base64. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/password.h"
#include "sasl/sasl.h"
#include "sasl/sasl_testing.h"

/* Where each vector comes from:
 *  - SCRAM secrets for "pencil": RFC 5802 §5 and RFC 7677 §3 salts and iteration counts, with
 *    StoredKey/ServerKey computed by Python hashlib.pbkdf2_hmac + hmac (not by buzon).
 *  - CRAM-MD5: RFC 2195 §2 example; the {CRAM-MD5} secret for "password" is `doveadm pw` output
 *    quoted in public code; HMAC values for other keys from Python's hmac module.
 *  - APOP: RFC 1939 §7 example. Base64: RFC 4648 §10. */
#define RFC5802_SECRET                                                                             \
	"{SCRAM-SHA-1}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,D+CSWLOshSulAsxiupA+qs2/" \
	"fTE="
#define RFC7677_SECRET                                                                             \
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"                                            \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"                                            \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
#define RFC2195_CHALLENGE "<1896.697170952@postoffice.reston.mci.net>"

struct test_user {
	const char *name, *secret;
};

static const struct test_user test_users[] = {
    {"user", RFC5802_SECRET " " RFC7677_SECRET},
    {"plain", "{PLAIN}correct horse"},
    {"tim", "{PLAIN}tanstaaftanstaaf"},
    {"dove", "{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740"},
    {"hashed", "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFN"},
    {"a,b=c", "{PLAIN}pencil"},
    {"multi", "{SCRAM-SHA-1}4096,QSXCR+Q6sek8bf92,6dlGYMOdZcOPutkcNY8U2g7vK9Y=,"
	      "D+CSWLOshSulAsxiupA+qs2/fTE= {PLAIN}other password"},
};

static const char *test_secret(void *context, const char *user)
{
	for (size_t i = 0; i < sizeof(test_users) / sizeof(test_users[0]); i++) {
		if (strcmp(test_users[i].name, user) == 0)
			return test_users[i].secret;
	}
	return NULL;
}

static const unsigned char test_fake_key[32] = {1, 2, 3, 4, 5, 6, 7, 8};
static const struct sasl_lookup test_lookup = {
    .secret = test_secret,
    .fake_key = test_fake_key,
    .fake_key_len = sizeof(test_fake_key),
    .fake_iterations = 4096,
};
static const unsigned char test_exporter[32] = "exporter-data-exporter-data-0123";
static const unsigned char test_endpoint[32] = "endpoint-hash-endpoint-hash-4567";
static const struct sasl_channel chan_plain = {.tls = false};
static const struct sasl_channel chan_tls = {
    .tls = true,
    .cb_exporter = test_exporter,
    .cb_exporter_len = sizeof(test_exporter),
    .cb_endpoint = test_endpoint,
    .cb_endpoint_len = sizeof(test_endpoint),
};

/* One conversation under test. */
struct conv_fixture {
	struct sasl_conv *conv;
	struct sasl_output out;
};

static void fixture_start(struct conv_fixture *f, const char *mech, const struct sasl_channel *chan)
{
	const struct sasl_mech *m = sasl_mech_find(mech);

	assert_non_null(m);
	memset(f, 0, sizeof(*f));
	f->conv = sasl_conv_new(m, chan, &test_lookup);
}

/* Feeds len bytes (or no input when data is NULL) and returns the status; out stays valid. */
static enum sasl_status fixture_step(struct conv_fixture *f, const void *data, size_t len)
{
	sasl_output_clear(&f->out);
	return sasl_conv_step(f->conv, data, data == NULL ? 0 : len, data != NULL, &f->out);
}

static enum sasl_status fixture_step_str(struct conv_fixture *f, const char *s)
{
	return fixture_step(f, s, strlen(s));
}

static void fixture_end(struct conv_fixture *f)
{
	sasl_output_clear(&f->out);
	sasl_conv_free(&f->conv);
	assert_null(f->conv);
}

static void assert_challenge(const struct conv_fixture *f, const char *expected)
{
	size_t len = strlen(expected);

	if (f->out.challenge_len != len || memcmp(f->out.challenge, expected, len) != 0)
		fail_msg("challenge \"%.*s\", expected \"%s\"", (int)f->out.challenge_len,
			 (const char *)f->out.challenge, expected);
}

static void assert_failure(struct conv_fixture *f, enum sasl_status status)
{
	assert_int_equal(status, SASL_STATUS_FAILURE);
	assert_non_null(f->out.error);
	/* SASL_TEST_VERBOSE=1 shows why each refusal happened, to check it is the intended one. */
	if (getenv("SASL_TEST_VERBOSE") != NULL)
		print_message("refused: %s\n", f->out.error);
}

/* A SCRAM client, just enough to produce proofs for the tests (RFC 5802 §3). */
struct scram_client {
	const EVP_MD *md;
	const char *password;
	char gs2[128];
	char first_bare[256];
	char nonce[256];
	unsigned char cb[64];
	size_t cb_len;
};

static void scram_client_proof(const struct scram_client *c, const char *server_first,
			       const char *final_wo_proof, char *proof64, size_t proof64_size)
{
	const char *s = strstr(server_first, ",s="), *i = strstr(server_first, ",i=");
	unsigned char salt[64], salted[64], client_key[64], stored[64], sig[64], proof[64];
	unsigned int len, key_len = (unsigned int)EVP_MD_get_size(c->md);
	char auth[2048];

	assert_non_null(s);
	assert_non_null(i);
	long salt_len = sasl_base64_decode(s + 3, (size_t)(i - s - 3), salt);
	assert_true(salt_len > 0);
	assert_int_equal(PKCS5_PBKDF2_HMAC(c->password, (int)strlen(c->password), salt,
					   (int)salt_len, atoi(i + 3), c->md, (int)key_len, salted),
			 1);
	HMAC(c->md, salted, (int)key_len, (const unsigned char *)"Client Key", 10, client_key,
	     &len);
	EVP_Digest(client_key, key_len, stored, &len, c->md, NULL);
	snprintf(auth, sizeof(auth), "%s,%s,%s", c->first_bare, server_first, final_wo_proof);
	HMAC(c->md, stored, (int)key_len, (const unsigned char *)auth, strlen(auth), sig, &len);
	for (unsigned int k = 0; k < key_len; k++)
		proof[k] = client_key[k] ^ sig[k];
	char *b64 = sasl_base64_encode(proof, key_len);
	snprintf(proof64, proof64_size, "%s", b64);
	free(b64);
}

/* Builds client-final for server_first with the client's gs2 header and cb data. */
static void scram_client_final(const struct scram_client *c, const char *server_first, char *out,
			       size_t out_size)
{
	unsigned char cbind[256];
	size_t gs2_len = strlen(c->gs2);
	char wo_proof[512], proof64[128];
	const char *r = server_first + 2, *comma = strchr(r, ',');

	memcpy(cbind, c->gs2, gs2_len);
	memcpy(cbind + gs2_len, c->cb, c->cb_len);
	char *c64 = sasl_base64_encode(cbind, gs2_len + c->cb_len);
	snprintf(wo_proof, sizeof(wo_proof), "c=%s,r=%.*s", c64, (int)(comma - r), r);
	free(c64);
	scram_client_proof(c, server_first, wo_proof, proof64, sizeof(proof64));
	snprintf(out, out_size, "%s,p=%s", wo_proof, proof64);
}

/* Runs a whole SCRAM exchange; returns the status after client-final (CONTINUE with v= on
 * success) and leaves the server-first in server_first_r if given. */
static enum sasl_status scram_run(struct conv_fixture *f, const struct scram_client *c,
				  char *server_first_r, size_t server_first_size)
{
	char first[512], final[1024], server_first[512];

	snprintf(first, sizeof(first), "%s%s", c->gs2, c->first_bare);
	enum sasl_status status = fixture_step_str(f, first);
	if (status != SASL_STATUS_CONTINUE)
		return status;
	snprintf(server_first, sizeof(server_first), "%.*s", (int)f->out.challenge_len,
		 (const char *)f->out.challenge);
	if (server_first_r != NULL)
		snprintf(server_first_r, server_first_size, "%s", server_first);
	scram_client_final(c, server_first, final, sizeof(final));
	return fixture_step_str(f, final);
}

static void scram_client_init(struct scram_client *c, const EVP_MD *md, const char *gs2,
			      const char *user, const char *password)
{
	memset(c, 0, sizeof(*c));
	c->md = md;
	c->password = password;
	snprintf(c->gs2, sizeof(c->gs2), "%s", gs2);
	snprintf(c->first_bare, sizeof(c->first_bare), "n=%s,r=clientNONCE123", user);
}

/* RFC 5802 §5: the SCRAM-SHA-1 example, byte for byte. */
static void test_scram_sha1_rfc5802(void **state)
{
	struct conv_fixture f;

	sasl_scram_set_test_nonce("3rfcNHYJY1ZVvWVs7j");
	fixture_start(&f, "SCRAM-SHA-1", &chan_plain);
	assert_int_equal(fixture_step_str(&f, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"),
			 SASL_STATUS_CONTINUE);
	assert_challenge(&f, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,"
			     "i=4096");
	assert_int_equal(fixture_step_str(&f, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
					      "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
			 SASL_STATUS_CONTINUE);
	assert_challenge(&f, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
	assert_int_equal(fixture_step(&f, "", 0), SASL_STATUS_SUCCESS);
	assert_string_equal(f.out.user, "user");
	/* Finished conversations only fail. */
	assert_failure(&f, fixture_step(&f, "", 0));
	fixture_end(&f);
	sasl_scram_set_test_nonce(NULL);
}

/* RFC 7677 §3: the SCRAM-SHA-256 example, byte for byte. */
static void test_scram_sha256_rfc7677(void **state)
{
	struct conv_fixture f;

	sasl_scram_set_test_nonce("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	fixture_start(&f, "scram-sha-256", &chan_plain);
	/* No initial response: an empty challenge first. */
	assert_int_equal(fixture_step(&f, NULL, 0), SASL_STATUS_CONTINUE);
	assert_int_equal(f.out.challenge_len, 0);
	assert_int_equal(fixture_step_str(&f, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
			 SASL_STATUS_CONTINUE);
	assert_challenge(&f, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
			     "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
	assert_int_equal(
	    fixture_step_str(&f, "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
				 "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
	    SASL_STATUS_CONTINUE);
	assert_challenge(&f, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
	assert_int_equal(fixture_step(&f, "", 0), SASL_STATUS_SUCCESS);
	assert_string_equal(f.out.user, "user");
	fixture_end(&f);
	sasl_scram_set_test_nonce(NULL);
}

static void test_scram_wrong_proof(void **state)
{
	struct conv_fixture f;
	struct scram_client c;

	scram_client_init(&c, EVP_sha256(), "n,,", "user", "pencils");
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);

	/* The right password, then a nonce that is not the server's. */
	sasl_scram_set_test_nonce("3rfcNHYJY1ZVvWVs7j");
	fixture_start(&f, "SCRAM-SHA-1", &chan_plain);
	assert_int_equal(fixture_step_str(&f, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"),
			 SASL_STATUS_CONTINUE);
	assert_failure(&f, fixture_step_str(&f, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7"
						"X,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="));
	fixture_end(&f);
	sasl_scram_set_test_nonce(NULL);
}

/* A plaintext secret works, with a salt that stays the same across conversations. */
static void test_scram_plaintext_secret(void **state)
{
	struct conv_fixture f;
	struct scram_client c;
	char first1[512], first2[512];

	for (int round = 0; round < 2; round++) {
		scram_client_init(&c, round == 0 ? EVP_sha256() : EVP_sha1(), "n,,", "plain",
				  "correct horse");
		fixture_start(&f, round == 0 ? "SCRAM-SHA-256" : "SCRAM-SHA-1", &chan_plain);
		assert_int_equal(scram_run(&f, &c, round == 0 ? first1 : first2, sizeof(first1)),
				 SASL_STATUS_CONTINUE);
		assert_true(f.out.challenge_len > 2 && memcmp(f.out.challenge, "v=", 2) == 0);
		assert_int_equal(fixture_step(&f, NULL, 0), SASL_STATUS_SUCCESS);
		assert_string_equal(f.out.user, "plain");
		fixture_end(&f);
	}
	assert_string_equal(strstr(first1, ",s="), strstr(first2, ",s="));
}

/* Unknown users look like real ones until the proof: same shape, same salt every time. */
static void test_scram_unknown_user(void **state)
{
	struct conv_fixture f;
	struct scram_client c;
	char first[3][512];
	static const char *const users[] = {"nobody", "nobody", "plain"};

	for (int i = 0; i < 3; i++) {
		scram_client_init(&c, EVP_sha256(), "n,,", users[i], "correct horse");
		fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
		enum sasl_status status = scram_run(&f, &c, first[i], sizeof(first[i]));
		if (i < 2) {
			assert_failure(&f, status);
		} else {
			assert_int_equal(status, SASL_STATUS_CONTINUE);
		}
		fixture_end(&f);
	}
	/* The same salt twice for the unknown user, a different one for another name. */
	assert_string_equal(strstr(first[0], ",s="), strstr(first[1], ",s="));
	assert_string_not_equal(strstr(first[0], ",s="), strstr(first[2], ",s="));
	/* Same shape: "r=" + 14-char client nonce + 32-char server nonce, 24-char salt, i=4096. */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(strlen(first[i]), strlen("r=,s=,i=4096") + 14 + 32 + 24);
		assert_non_null(strstr(first[i], ",i=4096"));
	}
	/* A stored secret whose scheme cannot serve SCRAM is answered like an unknown user. */
	scram_client_init(&c, EVP_sha256(), "n,,", "hashed", "Hello world!");
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);
}

static void test_scram_random_nonce(void **state)
{
	struct conv_fixture f;
	char first[2][512];

	for (int i = 0; i < 2; i++) {
		fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
		assert_int_equal(fixture_step_str(&f, "n,,n=user,r=abc"), SASL_STATUS_CONTINUE);
		snprintf(first[i], sizeof(first[i]), "%.*s", (int)f.out.challenge_len,
			 (const char *)f.out.challenge);
		fixture_end(&f);
		/* "r=abc" + 32 base64 characters of 24 random bytes. */
		assert_int_equal(strchr(first[i], ',') - first[i], 5 + 32);
	}
	assert_string_not_equal(first[0], first[1]);
}

static void test_scram_channel_binding(void **state)
{
	struct conv_fixture f;
	struct scram_client c;

	/* -PLUS with matching tls-exporter data. */
	scram_client_init(&c, EVP_sha256(), "p=tls-exporter,,", "user", "pencil");
	memcpy(c.cb, test_exporter, sizeof(test_exporter));
	c.cb_len = sizeof(test_exporter);
	fixture_start(&f, "SCRAM-SHA-256-PLUS", &chan_tls);
	assert_int_equal(scram_run(&f, &c, NULL, 0), SASL_STATUS_CONTINUE);
	assert_int_equal(fixture_step(&f, "", 0), SASL_STATUS_SUCCESS);
	fixture_end(&f);

	/* tls-server-end-point with SHA-1. */
	scram_client_init(&c, EVP_sha1(), "p=tls-server-end-point,,", "user", "pencil");
	memcpy(c.cb, test_endpoint, sizeof(test_endpoint));
	c.cb_len = sizeof(test_endpoint);
	fixture_start(&f, "SCRAM-SHA-1-PLUS", &chan_tls);
	assert_int_equal(scram_run(&f, &c, NULL, 0), SASL_STATUS_CONTINUE);
	assert_int_equal(fixture_step(&f, "", 0), SASL_STATUS_SUCCESS);
	fixture_end(&f);

	/* Mismatching data: a man in the middle holds a different TLS session. */
	scram_client_init(&c, EVP_sha256(), "p=tls-exporter,,", "user", "pencil");
	memcpy(c.cb, test_endpoint, sizeof(test_endpoint));
	c.cb_len = sizeof(test_endpoint);
	fixture_start(&f, "SCRAM-SHA-256-PLUS", &chan_tls);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);

	/* The binding type must be one the channel has. */
	scram_client_init(&c, EVP_sha256(), "p=tls-unique,,", "user", "pencil");
	fixture_start(&f, "SCRAM-SHA-256-PLUS", &chan_tls);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);
	scram_client_init(&c, EVP_sha256(), "p=tls-exporter,,", "user", "pencil");
	fixture_start(&f, "SCRAM-SHA-256-PLUS", &chan_plain);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);
}

static void test_scram_gs2_flags(void **state)
{
	struct conv_fixture f;
	struct scram_client c;

	/* "y" while the channel offers binding: a downgrade (RFC 5802 §6). */
	scram_client_init(&c, EVP_sha256(), "y,,", "user", "pencil");
	fixture_start(&f, "SCRAM-SHA-256", &chan_tls);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);
	/* "y" without TLS binding data is fine. */
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_int_equal(scram_run(&f, &c, NULL, 0), SASL_STATUS_CONTINUE);
	assert_int_equal(fixture_step(&f, "", 0), SASL_STATUS_SUCCESS);
	fixture_end(&f);
	/* "n" on TLS with the non-PLUS mechanism is the client's choice. */
	scram_client_init(&c, EVP_sha256(), "n,,", "user", "pencil");
	fixture_start(&f, "SCRAM-SHA-256", &chan_tls);
	assert_int_equal(scram_run(&f, &c, NULL, 0), SASL_STATUS_CONTINUE);
	fixture_end(&f);
	/* "p=" needs a -PLUS mechanism, and -PLUS needs "p=". */
	scram_client_init(&c, EVP_sha256(), "p=tls-exporter,,", "user", "pencil");
	memcpy(c.cb, test_exporter, sizeof(test_exporter));
	c.cb_len = sizeof(test_exporter);
	fixture_start(&f, "SCRAM-SHA-256", &chan_tls);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);
	scram_client_init(&c, EVP_sha256(), "n,,", "user", "pencil");
	fixture_start(&f, "SCRAM-SHA-256-PLUS", &chan_tls);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);
	/* The client-final c= must repeat the gs2 header the client first sent. */
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_int_equal(fixture_step_str(&f, "y,,n=user,r=abc"), SASL_STATUS_CONTINUE);
	const char *nonce = (const char *)f.out.challenge + 2;
	char final[256];
	snprintf(final, sizeof(final), "c=biws,r=%.*s,p=AAAA", (int)(strchr(nonce, ',') - nonce),
		 nonce);
	assert_failure(&f, fixture_step_str(&f, final));
	assert_string_equal(f.out.error, "SCRAM channel binding mismatch");
	fixture_end(&f);
}

static void test_scram_authzid(void **state)
{
	struct conv_fixture f;
	struct scram_client c;

	scram_client_init(&c, EVP_sha256(), "n,a=user,", "user", "pencil");
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_int_equal(scram_run(&f, &c, NULL, 0), SASL_STATUS_CONTINUE);
	fixture_end(&f);
	scram_client_init(&c, EVP_sha256(), "n,a=admin,", "user", "pencil");
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_failure(&f, scram_run(&f, &c, NULL, 0));
	fixture_end(&f);
}

static void test_scram_username_escaping(void **state)
{
	struct conv_fixture f;
	struct scram_client c;

	scram_client_init(&c, EVP_sha256(), "n,,", "a=2Cb=3Dc", "pencil");
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_int_equal(scram_run(&f, &c, NULL, 0), SASL_STATUS_CONTINUE);
	assert_int_equal(fixture_step(&f, "", 0), SASL_STATUS_SUCCESS);
	assert_string_equal(f.out.user, "a,b=c");
	fixture_end(&f);

	static const char *const bad[] = {
	    "n,,n=a=2Db,r=abc", "n,,n=a=,r=abc", "n,,n=a=2,r=abc",
	    "n,,n=a=3d,r=abc",	"n,,n=,r=abc",	 "n,,n=a\tb,r=abc",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
		assert_failure(&f, fixture_step_str(&f, bad[i]));
		fixture_end(&f);
	}
}

static void test_scram_malformed(void **state)
{
	static const char *const bad_first[] = {
	    "",
	    "n",
	    "n,",
	    "n,,",
	    "x,,n=user,r=abc",
	    "n,,m=ext,n=user,r=abc",
	    "n,,r=abc,n=user",
	    "n,,n=user",
	    "n,,n=user,r=",
	    "n,,n=user,r=a b",
	    "n,a=user",
	    "n,a=user,",
	    "n,b=x,n=user,r=abc",
	    "p=,,n=user,r=abc",
	};
	struct conv_fixture f;

	for (size_t i = 0; i < sizeof(bad_first) / sizeof(bad_first[0]); i++) {
		fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
		enum sasl_status status = fixture_step_str(&f, bad_first[i]);
		if (status != SASL_STATUS_FAILURE)
			fail_msg("accepted \"%s\"", bad_first[i]);
		assert_failure(&f, status);
		fixture_end(&f);
	}
	/* A NUL inside the message. */
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_failure(&f, fixture_step(&f, "n,,n=us\0er,r=abc", 16));
	fixture_end(&f);

	static const char *const bad_final[] = {
	    "",
	    "c=biws",
	    "c=biws,r=abcSERVER",
	    "c=biws,r=abcSERVER,p=",
	    "c=biws,r=abcSERVER,p=AAAA",
	    "c=biws,r=abcSERVER,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=,x=1",
	    "r=abcSERVER,c=biws,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
	    "c=bi!s,r=abcSERVER,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
	    "c=biws,r=abcSERVER,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts",
	    "c=biws,r=abcSERVER,p",
	    "c=biws,r=abcSERVER,",
	};
	sasl_scram_set_test_nonce("SERVER");
	for (size_t i = 0; i < sizeof(bad_final) / sizeof(bad_final[0]); i++) {
		fixture_start(&f, "SCRAM-SHA-1", &chan_plain);
		assert_int_equal(fixture_step_str(&f, "n,,n=user,r=abc"), SASL_STATUS_CONTINUE);
		enum sasl_status status = fixture_step_str(&f, bad_final[i]);
		if (status != SASL_STATUS_FAILURE)
			fail_msg("accepted final \"%s\"", bad_final[i]);
		assert_failure(&f, status);
		fixture_end(&f);
	}
	/* Data instead of the empty acknowledgement of server-final. */
	sasl_scram_set_test_nonce("3rfcNHYJY1ZVvWVs7j");
	fixture_start(&f, "SCRAM-SHA-1", &chan_plain);
	assert_int_equal(fixture_step_str(&f, "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"),
			 SASL_STATUS_CONTINUE);
	assert_int_equal(fixture_step_str(&f, "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
					      "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
			 SASL_STATUS_CONTINUE);
	assert_failure(&f, fixture_step_str(&f, "x"));
	fixture_end(&f);
	sasl_scram_set_test_nonce(NULL);
}

/* A field of several secrets: each SCRAM mechanism takes its own. */
static void test_scram_multi_secret(void **state)
{
	struct conv_fixture f;
	struct scram_client c;

	/* "multi" has a SCRAM-SHA-1 secret for "pencil" and a plaintext "other password". */
	scram_client_init(&c, EVP_sha1(), "n,,", "multi", "pencil");
	fixture_start(&f, "SCRAM-SHA-1", &chan_plain);
	assert_int_equal(scram_run(&f, &c, NULL, 0), SASL_STATUS_CONTINUE);
	fixture_end(&f);
	scram_client_init(&c, EVP_sha256(), "n,,", "multi", "other password");
	fixture_start(&f, "SCRAM-SHA-256", &chan_plain);
	assert_int_equal(scram_run(&f, &c, NULL, 0), SASL_STATUS_CONTINUE);
	fixture_end(&f);
}

static void test_cram_md5_rfc2195(void **state)
{
	static const struct {
		const char *response;
		enum sasl_status status;
	} cases[] = {
	    {"tim b913a602c7eda7a495b4e6e7334d3890", SASL_STATUS_SUCCESS},
	    {"tim B913A602C7EDA7A495B4E6E7334D3890", SASL_STATUS_SUCCESS},
	    {"tim b913a602c7eda7a495b4e6e7334d3891", SASL_STATUS_FAILURE},
	    {"dove 06d0a325f054648646e072cd4feb17c4", SASL_STATUS_SUCCESS},
	    {"dove 06d0a325f054648646e072cd4feb17c5", SASL_STATUS_FAILURE},
	    {"nobody b913a602c7eda7a495b4e6e7334d3890", SASL_STATUS_FAILURE},
	    /* A secret CRAM-MD5 cannot use. */
	    {"hashed b913a602c7eda7a495b4e6e7334d3890", SASL_STATUS_FAILURE},
	    {"tim b913a602c7eda7a495b4e6e7334d389", SASL_STATUS_FAILURE},
	    {"tim  b913a602c7eda7a495b4e6e7334d3890", SASL_STATUS_FAILURE},
	    {"timb913a602c7eda7a495b4e6e7334d3890", SASL_STATUS_FAILURE},
	    {" b913a602c7eda7a495b4e6e7334d3890", SASL_STATUS_FAILURE},
	    {"tim b913a602c7eda7a495b4e6e7334d389g", SASL_STATUS_FAILURE},
	    {"", SASL_STATUS_FAILURE},
	};
	struct conv_fixture f;

	sasl_cram_set_test_challenge(RFC2195_CHALLENGE);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fixture_start(&f, "CRAM-MD5", &chan_plain);
		/* Unknown users get the challenge too: nothing is revealed before the response. */
		assert_int_equal(fixture_step(&f, NULL, 0), SASL_STATUS_CONTINUE);
		assert_challenge(&f, RFC2195_CHALLENGE);
		enum sasl_status status = fixture_step_str(&f, cases[i].response);
		if (status != cases[i].status)
			fail_msg("case %zu \"%s\": status %d", i, cases[i].response, status);
		if (status == SASL_STATUS_FAILURE)
			assert_failure(&f, status);
		if (status == SASL_STATUS_SUCCESS)
			assert_string_equal(f.out.user,
					    cases[i].response[0] == 't' ? "tim" : "dove");
		fixture_end(&f);
	}
	sasl_cram_set_test_challenge(NULL);

	/* CRAM-MD5 is server-first: an initial response is refused. */
	fixture_start(&f, "CRAM-MD5", &chan_plain);
	assert_failure(&f, fixture_step_str(&f, "tim b913a602c7eda7a495b4e6e7334d3890"));
	fixture_end(&f);
	/* The real challenge is "<hex.time@buzon>" and differs each time. */
	char first[128];
	for (int i = 0; i < 2; i++) {
		fixture_start(&f, "CRAM-MD5", &chan_plain);
		assert_int_equal(fixture_step(&f, NULL, 0), SASL_STATUS_CONTINUE);
		assert_true(f.out.challenge_len > 10 && f.out.challenge[0] == '<');
		assert_memory_equal(f.out.challenge + f.out.challenge_len - 7, "@buzon>", 7);
		if (i == 0)
			snprintf(first, sizeof(first), "%.*s", (int)f.out.challenge_len,
				 (const char *)f.out.challenge);
		else
			assert_false(strlen(first) == f.out.challenge_len &&
				     memcmp(first, f.out.challenge, f.out.challenge_len) == 0);
		fixture_end(&f);
	}
}

static void test_plain(void **state)
{
	struct conv_fixture f;

	fixture_start(&f, "PLAIN", &chan_plain);
	assert_int_equal(fixture_step(&f, "\0tim\0tanstaaf", 13), SASL_STATUS_CHECK_PASSWORD);
	assert_string_equal(f.out.user, "tim");
	assert_string_equal(f.out.password, "tanstaaf");
	fixture_end(&f);

	fixture_start(&f, "PLAIN", &chan_plain);
	assert_int_equal(fixture_step(&f, "tim\0tim\0tanstaaf", 16), SASL_STATUS_CHECK_PASSWORD);
	assert_string_equal(f.out.user, "tim");
	fixture_end(&f);

	/* No initial response: an empty challenge, then the message. */
	fixture_start(&f, "PLAIN", &chan_plain);
	assert_int_equal(fixture_step(&f, NULL, 0), SASL_STATUS_CONTINUE);
	assert_int_equal(f.out.challenge_len, 0);
	assert_non_null(f.out.challenge);
	assert_int_equal(fixture_step(&f, "\0tim\0pass word", 14), SASL_STATUS_CHECK_PASSWORD);
	assert_string_equal(f.out.password, "pass word");
	fixture_end(&f);

	fixture_start(&f, "PLAIN", &chan_plain);
	assert_failure(&f, fixture_step(&f, "admin\0tim\0tanstaaf", 18));
	assert_string_equal(f.out.error, "authorization identity not allowed");
	fixture_end(&f);
}

static void test_plain_malformed(void **state)
{
	static const struct {
		const char *data;
		size_t len;
	} bad[] = {
	    {"", 0},
	    {"timtanstaaf", 11},
	    {"\0tim", 4},
	    {"\0tim\0", 5},
	    {"\0\0tanstaaf", 10},
	    {"\0tim\0tan\0staaf", 14},
	    {"\0tim\0tanstaaf\0", 14},
	    {"\0t\x01m\0tanstaaf", 13},
	};
	struct conv_fixture f;
	char long_user[300];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fixture_start(&f, "PLAIN", &chan_plain);
		assert_failure(&f, fixture_step(&f, bad[i].data, bad[i].len));
		fixture_end(&f);
	}
	/* 256-byte user name: over the cap. */
	long_user[0] = '\0';
	memset(long_user + 1, 'u', 256);
	memcpy(long_user + 257, "\0pw", 3);
	fixture_start(&f, "PLAIN", &chan_plain);
	assert_failure(&f, fixture_step(&f, long_user, 260));
	fixture_end(&f);
	/* 255 is fine. */
	memmove(long_user + 1, long_user + 2, 258);
	fixture_start(&f, "PLAIN", &chan_plain);
	assert_int_equal(fixture_step(&f, long_user, 259), SASL_STATUS_CHECK_PASSWORD);
	assert_int_equal(strlen(f.out.user), 255);
	fixture_end(&f);
}

static void test_login(void **state)
{
	struct conv_fixture f;

	fixture_start(&f, "LOGIN", &chan_plain);
	assert_int_equal(fixture_step(&f, NULL, 0), SASL_STATUS_CONTINUE);
	assert_challenge(&f, "Username:");
	assert_int_equal(fixture_step_str(&f, "tim"), SASL_STATUS_CONTINUE);
	assert_challenge(&f, "Password:");
	assert_int_equal(fixture_step_str(&f, "tanstaaf"), SASL_STATUS_CHECK_PASSWORD);
	assert_string_equal(f.out.user, "tim");
	assert_string_equal(f.out.password, "tanstaaf");
	fixture_end(&f);

	/* The initial response is the user name. */
	fixture_start(&f, "login", &chan_plain);
	assert_int_equal(fixture_step_str(&f, "tim"), SASL_STATUS_CONTINUE);
	assert_challenge(&f, "Password:");
	assert_int_equal(fixture_step_str(&f, "x"), SASL_STATUS_CHECK_PASSWORD);
	fixture_end(&f);

	fixture_start(&f, "LOGIN", &chan_plain);
	assert_int_equal(fixture_step(&f, NULL, 0), SASL_STATUS_CONTINUE);
	assert_failure(&f, fixture_step(&f, "", 0));
	fixture_end(&f);
	fixture_start(&f, "LOGIN", &chan_plain);
	assert_int_equal(fixture_step_str(&f, "tim"), SASL_STATUS_CONTINUE);
	assert_failure(&f, fixture_step(&f, "pa\0ss", 5));
	fixture_end(&f);
	fixture_start(&f, "LOGIN", &chan_plain);
	assert_failure(&f, fixture_step(&f, "t\0m", 3));
	fixture_end(&f);
}

static void test_external(void **state)
{
	struct sasl_channel chan = {.tls = true, .cert_user = "tim"};
	struct conv_fixture f;

	fixture_start(&f, "EXTERNAL", &chan);
	assert_int_equal(fixture_step(&f, "", 0), SASL_STATUS_SUCCESS);
	assert_string_equal(f.out.user, "tim");
	fixture_end(&f);
	fixture_start(&f, "EXTERNAL", &chan);
	assert_int_equal(fixture_step_str(&f, "tim"), SASL_STATUS_SUCCESS);
	fixture_end(&f);
	fixture_start(&f, "EXTERNAL", &chan);
	assert_int_equal(fixture_step(&f, NULL, 0), SASL_STATUS_CONTINUE);
	assert_int_equal(f.out.challenge_len, 0);
	assert_int_equal(fixture_step(&f, "", 0), SASL_STATUS_SUCCESS);
	fixture_end(&f);
	fixture_start(&f, "EXTERNAL", &chan);
	assert_failure(&f, fixture_step_str(&f, "dove"));
	fixture_end(&f);
	/* No certificate, or one naming nobody we know. */
	fixture_start(&f, "EXTERNAL", &chan_tls);
	assert_failure(&f, fixture_step(&f, "", 0));
	fixture_end(&f);
	chan.cert_user = "nobody";
	fixture_start(&f, "EXTERNAL", &chan);
	assert_failure(&f, fixture_step(&f, "", 0));
	fixture_end(&f);
}

static void test_apop(void **state)
{
	static const char ts[] = "<1896.697170952@dbc.mtview.ca.us>";

	assert_int_equal(
	    sasl_apop_verify("{PLAIN}tanstaaf", ts, "c4c9334bac560ecc979e58001b3e22fb"), 1);
	assert_int_equal(
	    sasl_apop_verify("{CLEAR}tanstaaf", ts, "C4C9334BAC560ECC979E58001B3E22FB"), 1);
	assert_int_equal(sasl_apop_verify(RFC7677_SECRET " {PLAIN}tanstaaf", ts,
					  "c4c9334bac560ecc979e58001b3e22fb"),
			 1);
	assert_int_equal(
	    sasl_apop_verify("{PLAIN}tanstaaf", ts, "c4c9334bac560ecc979e58001b3e22fc"), 0);
	assert_int_equal(sasl_apop_verify("{PLAIN}tanstaaf", ts, "c4c9334bac560ecc979e58001b3e22f"),
			 0);
	assert_int_equal(
	    sasl_apop_verify("{PLAIN}tanstaaf", ts, "c4c9334bac560ecc979e58001b3e22fbb"), 0);
	assert_int_equal(
	    sasl_apop_verify("{PLAIN}tanstaaf", "<other@x>", "c4c9334bac560ecc979e58001b3e22fb"),
	    0);
	assert_int_equal(sasl_apop_verify(RFC7677_SECRET, ts, "c4c9334bac560ecc979e58001b3e22fb"),
			 -1);
	assert_int_equal(sasl_apop_verify(NULL, ts, "c4c9334bac560ecc979e58001b3e22fb"), -1);
}

static void test_base64(void **state)
{
	static const struct {
		const char *encoded, *decoded;
	} good[] = {
	    {"", ""},
	    {"Zg==", "f"},
	    {"Zm8=", "fo"},
	    {"Zm9v", "foo"},
	    {"Zm9vYg==", "foob"},
	    {"Zm9vYmE=", "fooba"},
	    {"Zm9vYmFy", "foobar"},
	};
	static const char *const bad[] = {
	    "=AAA",   "AAA=BBB", "AAA=BBBB", "Zg=",  "Zg",   "Zm9v!A==", "Zm9 ", " Zm9v",
	    "Zm9v\n", "Zh==",	 "Zm9=",     "Z===", "====", "Zg==Zg==", "Zm-v", "Zm_v",
	};
	unsigned char out[64];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		size_t len = strlen(good[i].decoded);
		assert_int_equal(sasl_base64_decode(good[i].encoded, strlen(good[i].encoded), out),
				 (long)len);
		assert_memory_equal(out, good[i].decoded, len);
		char *enc = sasl_base64_encode((const unsigned char *)good[i].decoded, len);
		assert_string_equal(enc, good[i].encoded);
		free(enc);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (sasl_base64_decode(bad[i], strlen(bad[i]), out) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
	}
	/* A NUL byte is not in the alphabet either. */
	assert_int_equal(sasl_base64_decode("Zm\0v", 4, out), -1);
}

static void test_mech_registry(void **state)
{
	static const char *const names[] = {
	    "PLAIN",
	    "LOGIN",
	    "CRAM-MD5",
	    "SCRAM-SHA-1",
	    "SCRAM-SHA-1-PLUS",
	    "SCRAM-SHA-256",
	    "SCRAM-SHA-256-PLUS",
	    "EXTERNAL",
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct sasl_mech *mech = sasl_mech_find(names[i]);
		assert_non_null(mech);
		assert_string_equal(sasl_mech_name(mech), names[i]);
		assert_int_equal(sasl_mech_needs_channel_binding(mech),
				 strstr(names[i], "-PLUS") != NULL);
		assert_int_equal(sasl_mech_is_plaintext(mech), i < 2);
	}
	assert_non_null(sasl_mech_find("cram-md5"));
	assert_null(sasl_mech_find("DIGEST-MD5"));
	assert_null(sasl_mech_find("SCRAM-SHA-256-"));

	const struct sasl_mech *cram = sasl_mech_find("CRAM-MD5");
	const struct sasl_mech *s256 = sasl_mech_find("SCRAM-SHA-256-PLUS");
	const struct sasl_mech *s1 = sasl_mech_find("SCRAM-SHA-1");
	assert_true(sasl_mech_usable_with(cram, "{PLAIN}x"));
	assert_true(sasl_mech_usable_with(cram, test_users[3].secret));
	assert_false(sasl_mech_usable_with(cram, RFC7677_SECRET));
	assert_false(sasl_mech_usable_with(cram, NULL));
	assert_true(sasl_mech_usable_with(s256, RFC7677_SECRET));
	assert_true(sasl_mech_usable_with(s256, RFC5802_SECRET " {CLEAR}x"));
	assert_false(sasl_mech_usable_with(s256, RFC5802_SECRET));
	assert_true(sasl_mech_usable_with(s1, RFC5802_SECRET));
	assert_false(sasl_mech_usable_with(s1, test_users[4].secret));
	assert_true(sasl_mech_usable_with(sasl_mech_find("PLAIN"), test_users[4].secret));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_scram_sha1_rfc5802),
	    cmocka_unit_test(test_scram_sha256_rfc7677),
	    cmocka_unit_test(test_scram_wrong_proof),
	    cmocka_unit_test(test_scram_plaintext_secret),
	    cmocka_unit_test(test_scram_unknown_user),
	    cmocka_unit_test(test_scram_random_nonce),
	    cmocka_unit_test(test_scram_channel_binding),
	    cmocka_unit_test(test_scram_gs2_flags),
	    cmocka_unit_test(test_scram_authzid),
	    cmocka_unit_test(test_scram_username_escaping),
	    cmocka_unit_test(test_scram_malformed),
	    cmocka_unit_test(test_scram_multi_secret),
	    cmocka_unit_test(test_cram_md5_rfc2195),
	    cmocka_unit_test(test_plain),
	    cmocka_unit_test(test_plain_malformed),
	    cmocka_unit_test(test_login),
	    cmocka_unit_test(test_external),
	    cmocka_unit_test(test_apop),
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_mech_registry),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Server side of SASL (RFC 4422) mechanisms, as pure state machines without I/O. They run in the
 * auth process (never in the network-facing workers), because several of them need the user's
 * stored secret. The POP3 worker only relays base64-decoded client responses and challenges.
 *
 * Mechanisms: PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-1 and SCRAM-SHA-256
 * (RFC 5802, RFC 7677), SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS with channel binding (tls-exporter,
 * RFC 9266; tls-server-end-point, RFC 5929), EXTERNAL (RFC 4422 appendix A, TLS client
 * certificates). APOP (RFC 1939 §7) is not SASL but shares the secret lookup, so it lives here. */
#ifndef BUZON_SASL_SASL_H
#define BUZON_SASL_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the connection offers, as the worker reported it. */
struct sasl_channel {
	bool tls;
	const unsigned char *cb_exporter; /* tls-exporter data, or NULL */
	size_t cb_exporter_len;
	const unsigned char *cb_endpoint; /* tls-server-end-point data, or NULL */
	size_t cb_endpoint_len;
	const char *cert_user; /* identity from a verified client certificate, or NULL */
};

/* How mechanisms learn about users. */
struct sasl_lookup {
	void *context;
	/* Returns the stored secret field of user (one or more "{SCHEME}data" separated by single
	 * spaces), or NULL for an unknown user. The string stays valid for the conversation. */
	const char *(*secret)(void *context, const char *user);
	/* A server-wide random key: SCRAM answers an unknown user with a salt derived from it and
	 * the name, so that its answers look like a real user's and stay the same across tries. */
	const unsigned char *fake_key;
	size_t fake_key_len;
	/* SCRAM iteration count offered for unknown users (should match real users'). */
	unsigned int fake_iterations;
	/* May authcid log in as authzid (a master user)? NULL: nobody may act as another user. */
	bool (*authorize)(void *context, const char *authcid, const char *authzid);
};

enum sasl_status {
	SASL_STATUS_CONTINUE,	    /* send out->challenge, wait for the next response */
	SASL_STATUS_CHECK_PASSWORD, /* verify out->user / out->password (slow hash): caller's job */
	SASL_STATUS_SUCCESS,	    /* out->user is authenticated */
	SASL_STATUS_FAILURE,	    /* out->error says why (for the log, never for the client) */
};

struct sasl_output {
	unsigned char *challenge; /* CONTINUE: newly allocated, may be empty (len 0) */
	size_t challenge_len;
	char *user;	/* CHECK_PASSWORD, SUCCESS: newly allocated authentication identity */
	char *password; /* CHECK_PASSWORD: newly allocated; caller wipes and frees */
	char *authzid; /* CHECK_PASSWORD, SUCCESS: log in as this user (master users); NULL: user */
	const char *error; /* FAILURE: static text */
};

struct sasl_mech;
struct sasl_conv;

/* Finds a mechanism by name (case-insensitive); NULL if unknown. */
const struct sasl_mech *sasl_mech_find(const char *name);
const char *sasl_mech_name(const struct sasl_mech *mech);
/* True for mechanisms that send the password itself (PLAIN, LOGIN): the cleartext policy applies.
 */
bool sasl_mech_is_plaintext(const struct sasl_mech *mech);
/* True for -PLUS mechanisms, which need TLS channel-binding data. */
bool sasl_mech_needs_channel_binding(const struct sasl_mech *mech);
/* True if the mechanism can work for a user with this stored secret field (e.g. CRAM-MD5 needs a
 * plaintext or {CRAM-MD5} secret, SCRAM-SHA-256 a {SCRAM-SHA-256} or plaintext one). */
bool sasl_mech_usable_with(const struct sasl_mech *mech, const char *secret);

/* Starts a conversation. chan and lookup must outlive it. */
struct sasl_conv *sasl_conv_new(const struct sasl_mech *mech, const struct sasl_channel *chan,
				const struct sasl_lookup *lookup);

/* Feeds one client response (have_input false: AUTH without an initial response). Fills out
 * (zeroed by this call) and returns what happens next. After SUCCESS or FAILURE the conversation
 * only answers FAILURE. */
enum sasl_status sasl_conv_step(struct sasl_conv *conv, const unsigned char *in, size_t in_len,
				bool have_input, struct sasl_output *out);

/* Frees out's allocations, wiping the password. */
void sasl_output_clear(struct sasl_output *out);

/* Frees the conversation, wiping its secrets; sets *conv to NULL. */
void sasl_conv_free(struct sasl_conv **conv);

/* APOP: checks digest (32 lower- or upper-case hex digits of MD5(timestamp password)) against
 * the stored secret field, which must hold a plaintext secret. Returns 1 match, 0 mismatch,
 * -1 if the secret cannot serve APOP. Constant-time comparison. */
int sasl_apop_verify(const char *secret, const char *timestamp, const char *digest);

/* Base64 for SASL (RFC 4648 §4), strict as RFC 5034 asks: no characters outside the alphabet, no
 * '=' except as final padding, padding required. Returns decoded length, or -1 if malformed.
 * out must hold at least (len / 4) * 3 bytes. */
long sasl_base64_decode(const char *in, size_t len, unsigned char *out);
/* Encodes len bytes into a newly allocated NUL-terminated string. */
char *sasl_base64_encode(const unsigned char *in, size_t len);

#endif

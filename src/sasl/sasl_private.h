/* What the SASL mechanism files share: the mechanism and conversation structs, and the helpers in
 * sasl.c that fill a struct sasl_output. Not for use outside src/sasl/. */
#ifndef BUZON_SASL_SASL_PRIVATE_H
#define BUZON_SASL_SASL_PRIVATE_H

#include <openssl/evp.h>

#include "sasl/sasl.h"

/* The longest authentication or authorization identity accepted. passwd-file user names are far
 * shorter; RFC 4616 §2 lets servers cap the fields, and 255 bytes is the cap it suggests. */
#define SASL_IDENTITY_MAX 255
/* The longest password accepted (same RFC 4616 suggestion). */
#define SASL_PASSWORD_MAX 255

struct sasl_mech {
	const char *name;
	bool plaintext;
	bool channel_binding;
	/* Hash of the SCRAM family and its stored-secret scheme name; unused by others. */
	const EVP_MD *(*md)(void);
	const char *scheme;
	/* Size of the mechanism's state, allocated zeroed with the conversation. */
	size_t state_size;
	bool (*usable_with)(const struct sasl_mech *mech, const char *secret);
	enum sasl_status (*step)(struct sasl_conv *conv, const unsigned char *in, size_t in_len,
				 bool have_input, struct sasl_output *out);
	/* Frees what the state points to (the state itself is wiped and freed by sasl.c). */
	void (*state_free)(struct sasl_conv *conv);
};

struct sasl_conv {
	const struct sasl_mech *mech;
	const struct sasl_channel *chan;
	const struct sasl_lookup *lookup;
	bool finished;
	void *state;
};

extern const struct sasl_mech sasl_mech_plain, sasl_mech_login, sasl_mech_cram_md5,
    sasl_mech_scram_sha1, sasl_mech_scram_sha1_plus, sasl_mech_scram_sha256,
    sasl_mech_scram_sha256_plus, sasl_mech_external;

/* Each returns the status it sets, so a step can end with "return sasl_output_fail(out, …)". */
enum sasl_status sasl_output_fail(struct sasl_output *out, const char *error);
/* Copies len bytes as the next challenge. */
enum sasl_status sasl_output_challenge(struct sasl_output *out, const void *data, size_t len);
enum sasl_status sasl_output_success(struct sasl_output *out, const char *user, size_t user_len);
enum sasl_status sasl_output_check_password(struct sasl_output *out, const char *user,
					    size_t user_len, const char *password,
					    size_t password_len);

/* True for an identity we can pass on: 1..SASL_IDENTITY_MAX bytes, no NUL or control bytes (they
 * cannot be in the user database and would only make logs ambiguous). */
bool sasl_identity_valid(const char *name, size_t len);

/* True if the stored field holds a plaintext secret or one of the given scheme. */
bool sasl_secret_has(const char *secret, const char *scheme);

/* Constant-time comparison of two equal-length buffers; true if equal. */
bool sasl_equal(const void *a, const void *b, size_t len);

#endif

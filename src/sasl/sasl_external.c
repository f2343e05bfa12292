/* EXTERNAL (RFC 4422 appendix A): the identity comes from a verified TLS client certificate; the
 * client's response is an authorization identity, which must be empty or that same identity. */
#include <string.h>

#include "sasl/sasl_private.h"

struct sasl_external_state {
	bool asked;
};

static enum sasl_status sasl_external_step(struct sasl_conv *conv, const unsigned char *in,
					   size_t in_len, bool have_input, struct sasl_output *out)
{
	struct sasl_external_state *st = conv->state;
	const char *cert_user = conv->chan->cert_user;

	if (!have_input && !st->asked) {
		st->asked = true;
		return sasl_output_challenge(out, "", 0);
	}
	if (cert_user == NULL)
		return sasl_output_fail(out, "no verified client certificate");
	size_t len = strlen(cert_user);
	if (in_len != 0 && (in_len != len || memcmp(in, cert_user, len) != 0))
		return sasl_output_fail(out, "authorization identity not allowed");
	if (!sasl_identity_valid(cert_user, len) ||
	    conv->lookup->secret(conv->lookup->context, cert_user) == NULL)
		return sasl_output_fail(out, "certificate identity is not a known user");
	return sasl_output_success(out, cert_user, len);
}

static bool sasl_external_usable_with(const struct sasl_mech *mech, const char *secret)
{
	return true;
}

const struct sasl_mech sasl_mech_external = {
    .name = "EXTERNAL",
    .state_size = sizeof(struct sasl_external_state),
    .usable_with = sasl_external_usable_with,
    .step = sasl_external_step,
};

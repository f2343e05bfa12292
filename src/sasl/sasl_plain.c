/* PLAIN (RFC 4616): "[authzid] NUL authcid NUL passwd" in one response. */
#include <string.h>

#include "core/util.h"
#include "sasl/sasl_private.h"

/* The three fields of a PLAIN message, pointing into it. */
struct sasl_plain_fields {
	const char *authzid, *authcid, *password;
	size_t authzid_len, authcid_len, password_len;
};

/* Splits msg at its two NULs; -1 unless there are exactly two. */
static int sasl_plain_split(const unsigned char *msg, size_t len, struct sasl_plain_fields *f_r)
{
	const unsigned char *nul1 = memchr(msg, '\0', len);
	if (nul1 == NULL)
		return -1;
	const unsigned char *rest = nul1 + 1, *end = msg + len;
	const unsigned char *nul2 = memchr(rest, '\0', (size_t)(end - rest));
	if (nul2 == NULL || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
		return -1;
	f_r->authzid = (const char *)msg;
	f_r->authzid_len = (size_t)(nul1 - msg);
	f_r->authcid = (const char *)rest;
	f_r->authcid_len = (size_t)(nul2 - rest);
	f_r->password = (const char *)nul2 + 1;
	f_r->password_len = (size_t)(end - nul2 - 1);
	return 0;
}

struct sasl_plain_state {
	bool asked;
};

static enum sasl_status sasl_plain_step(struct sasl_conv *conv, const unsigned char *in,
					size_t in_len, bool have_input, struct sasl_output *out)
{
	struct sasl_plain_state *st = conv->state;
	struct sasl_plain_fields f;

	/* RFC 4616 is client-first: without an initial response, ask with an empty challenge. */
	if (!have_input && !st->asked) {
		st->asked = true;
		return sasl_output_challenge(out, "", 0);
	}
	if (sasl_plain_split(in, in_len, &f) < 0)
		return sasl_output_fail(out, "malformed PLAIN message");
	if (!sasl_identity_valid(f.authcid, f.authcid_len))
		return sasl_output_fail(out, "invalid PLAIN authentication identity");
	if (f.password_len == 0 || f.password_len > SASL_PASSWORD_MAX)
		return sasl_output_fail(out, "invalid PLAIN password length");
	/* Acting as another user is for configured master users only. */
	char *authzid = NULL;
	if (f.authzid_len != 0 &&
	    (f.authzid_len != f.authcid_len || memcmp(f.authzid, f.authcid, f.authcid_len) != 0)) {
		char *authcid = xstrndup(f.authcid, f.authcid_len);
		authzid = xstrndup(f.authzid, f.authzid_len);
		bool allowed = sasl_identity_valid(f.authzid, f.authzid_len) &&
			       conv->lookup->authorize != NULL &&
			       conv->lookup->authorize(conv->lookup->context, authcid, authzid);
		free(authcid);
		if (!allowed) {
			free(authzid);
			return sasl_output_fail(out, "authorization identity not allowed");
		}
	}
	enum sasl_status status =
	    sasl_output_check_password(out, f.authcid, f.authcid_len, f.password, f.password_len);
	out->authzid = authzid;
	return status;
}

static bool sasl_plain_usable_with(const struct sasl_mech *mech, const char *secret)
{
	return true;
}

const struct sasl_mech sasl_mech_plain = {
    .name = "PLAIN",
    .plaintext = true,
    .state_size = sizeof(struct sasl_plain_state),
    .usable_with = sasl_plain_usable_with,
    .step = sasl_plain_step,
};

/* LOGIN (draft-murchison-sasl-login): the user name and the password in two responses. */
enum sasl_login_phase { SASL_LOGIN_START, SASL_LOGIN_WANT_USER, SASL_LOGIN_WANT_PASSWORD };

struct sasl_login_state {
	enum sasl_login_phase phase;
	char user[SASL_IDENTITY_MAX + 1];
	size_t user_len;
};

static const char sasl_login_user_prompt[] = "Username:";
static const char sasl_login_password_prompt[] = "Password:";

static enum sasl_status sasl_login_take_user(struct sasl_login_state *st, const unsigned char *in,
					     size_t in_len, struct sasl_output *out)
{
	if (!sasl_identity_valid((const char *)in, in_len))
		return sasl_output_fail(out, "invalid LOGIN user name");
	memcpy(st->user, in, in_len);
	st->user_len = in_len;
	st->phase = SASL_LOGIN_WANT_PASSWORD;
	return sasl_output_challenge(out, sasl_login_password_prompt,
				     sizeof(sasl_login_password_prompt) - 1);
}

static enum sasl_status sasl_login_step(struct sasl_conv *conv, const unsigned char *in,
					size_t in_len, bool have_input, struct sasl_output *out)
{
	struct sasl_login_state *st = conv->state;

	switch (st->phase) {
	case SASL_LOGIN_START:
		if (have_input) /* initial response: the user name */
			return sasl_login_take_user(st, in, in_len, out);
		st->phase = SASL_LOGIN_WANT_USER;
		return sasl_output_challenge(out, sasl_login_user_prompt,
					     sizeof(sasl_login_user_prompt) - 1);
	case SASL_LOGIN_WANT_USER:
		return sasl_login_take_user(st, in, in_len, out);
	case SASL_LOGIN_WANT_PASSWORD:
	default:
		if (in_len == 0 || in_len > SASL_PASSWORD_MAX || memchr(in, '\0', in_len) != NULL)
			return sasl_output_fail(out, "invalid LOGIN password");
		return sasl_output_check_password(out, st->user, st->user_len, (const char *)in,
						  in_len);
	}
}

const struct sasl_mech sasl_mech_login = {
    .name = "LOGIN",
    .plaintext = true,
    .state_size = sizeof(struct sasl_login_state),
    .usable_with = sasl_plain_usable_with,
    .step = sasl_login_step,
};

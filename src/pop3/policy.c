/* RFC 2449 EXPIRE and LOGIN-DELAY in the POP3 session (see policy.h). */
#include <event2/buffer.h>
#include <stdlib.h>

#include "auth/auth_client.h"
#include "core/util.h"
#include "pop3/policy.h"
#include "pop3/worker.h"

static void pop3_capa_expire(struct evbuffer *out, int days, bool per_user)
{
	if (days < 0)
		evbuffer_add_printf(out, "EXPIRE NEVER%s\r\n", per_user ? " USER" : "");
	else
		evbuffer_add_printf(out, "EXPIRE %d%s\r\n", days, per_user ? " USER" : "");
}

/* The bounds over every user; until the auth process has sent them (the first milliseconds of a
 * worker), the config's values, as if no user had values of their own. */
static struct auth_policy_bounds pop3_policy_bounds(const struct pop3_session *session)
{
	const struct pop3_worker *worker = session->worker;
	const struct auth_policy_bounds *known =
	    worker->auth != NULL ? auth_client_policy_bounds(worker->auth) : NULL;

	if (known != NULL)
		return *known;
	return (struct auth_policy_bounds){.expire_days_min = config_expire_days(worker->config),
					   .login_delay_max = worker->config->login_delay_secs};
}

void pop3_capa_policies(const struct pop3_session *session, struct evbuffer *out)
{
	struct auth_policy_bounds bounds = pop3_policy_bounds(session);

	if (session->state == POP3_STATE_TRANSACTION) {
		pop3_capa_expire(out, session->expire_days, false);
		/* "LOGIN-DELAY 0" tells a client that saw a bound before login that none applies */
		if (session->login_delay_secs > 0 || bounds.login_delay_max > 0)
			evbuffer_add_printf(out, "LOGIN-DELAY %u\r\n", session->login_delay_secs);
		return;
	}
	pop3_capa_expire(out, bounds.expire_days_min, bounds.expire_per_user);
	if (bounds.login_delay_max > 0)
		evbuffer_add_printf(out, "LOGIN-DELAY %u%s\r\n", bounds.login_delay_max,
				    bounds.login_delay_per_user ? " USER" : "");
}

static void pop3_login_delay_warn(struct pop3_login_delay *delay, char *error)
{
	if (delay->warning == NULL)
		delay->warning = error;
	else
		free(error);
}

bool pop3_login_delay_refuses(struct pop3_login_delay *delay, const struct store_backend *backend,
			      const char *path)
{
	time_t last = 0;
	char *error = NULL;

	if (delay->delay_secs == 0 || backend->last_login_get == NULL)
		return false;
	if (backend->last_login_get(path, &last, &error) < 0)
		pop3_login_delay_warn(delay, error);
	if (last <= 0 || last > delay->now || delay->now - last >= (time_t)delay->delay_secs)
		return false;
	delay->wait_secs = (unsigned int)((time_t)delay->delay_secs - (delay->now - last));
	return true;
}

void pop3_login_delay_record(struct pop3_login_delay *delay, const struct store_backend *backend,
			     const char *path)
{
	char *error = NULL;

	if (delay->delay_secs == 0 || backend->last_login_set == NULL)
		return;
	if (backend->last_login_set(path, delay->now, &error) < 0)
		pop3_login_delay_warn(delay, error);
}

void pop3_login_delay_clear(struct pop3_login_delay *delay)
{
	x_free(&delay->warning);
}

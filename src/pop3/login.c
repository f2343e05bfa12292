/* Logging in: USER/PASS (RFC 1939), APOP (RFC 1939 §7), AUTH (SASL, RFC 5034) and UTF8 (RFC 6856).
 * Every credential goes to the auth process; this file only relays, applies the cleartext policy,
 * and turns the auth process's verdict into a reply (after the delay it asks for on failure). */
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_client.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/offload.h"
#include "core/util.h"
#include "net/ip_limit.h"
#include "net/tls.h"
#include "pop3/commands.h"
#include "pop3/policy.h"
#include "pop3/takeover.h"
#include "pop3/worker.h"
#include "sasl/sasl.h"

/* ---- shared by every way of logging in ---- */

/* USER/PASS (and PLAIN/LOGIN) where passwords would cross the network unencrypted. */
static enum pop3_outcome pop3_refuse_cleartext(struct pop3_session *session)
{
	if (session->worker->tls_ctx != NULL)
		pop3_reply_err(session, "[AUTH] Plaintext logins are not allowed without TLS; use "
					"STLS or port 995");
	else
		pop3_reply_err(session, "[AUTH] Plaintext logins are not allowed without TLS");
	return POP3_OUTCOME_BAD;
}

static void pop3_login_failed(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_session *session = arg;

	event_free(session->delay_timer);
	session->delay_timer = NULL;
	pop3_reply_err(session, "[AUTH] Authentication failed");
	pop3_session_resume(session, POP3_OUTCOME_BAD);
}

/* Opening a maildrop scans directories and may write the index: it runs on the worker's offload
 * threads, and the session takes no input until it is done. */
struct pop3_open_job {
	struct pop3_store_job base; /* first: the session points at it while waiting */
	const struct store_backend *backend;
	char *path;
	char *user;
	struct store_mailbox *box;
	enum store_error kind;
	char *error;
	int ret;
	int expire_days;		/* the user's policies from the auth process */
	struct pop3_login_delay delay;	/* refused when delay.wait_secs > 0 */
	/* [pop3] lock_takeover (takeover.c): the maildrop lock's identity, when the worker
	 * publishes locks and it could be found; when the open that took the lock started (the lock
	 * was taken after it), and when this login first tried */
	bool want_lock_id;
	bool lock_id_known;
	struct store_lock_id lock_id;
	int64_t locked_ms;
	int64_t attempt_ms;
};

/* Finds who to look for in the takeover table: the lock this login holds, or the one that
 * stopped it. */
static void pop3_open_job_identify_lock(struct pop3_open_job *job, int64_t open_started_ms)
{
	if (!job->want_lock_id || job->backend->lock_identity == NULL ||
	    (job->ret < 0 && job->kind != STORE_ERROR_IN_USE))
		return;
	job->locked_ms = open_started_ms;
	job->lock_id_known = job->backend->lock_identity(job->path, &job->lock_id) == 0;
}

static void pop3_open_job_run(struct offload_job *job)
{
	struct pop3_open_job *open_job = (struct pop3_open_job *)job;

	/* checked first so that a refused login costs no directory scan */
	if (pop3_login_delay_refuses(&open_job->delay, open_job->backend, open_job->path))
		return;
	int64_t open_started_ms = monotonic_ms();
	if (open_job->attempt_ms == 0)
		open_job->attempt_ms = open_started_ms;
	open_job->ret = open_job->backend->open(open_job->path, &open_job->box, &open_job->kind,
						&open_job->error);
	pop3_open_job_identify_lock(open_job, open_started_ms);
	if (open_job->ret < 0 || open_job->delay.delay_secs == 0)
		return;
	/* again under the maildrop lock: another login of the user may have got in meanwhile */
	if (pop3_login_delay_refuses(&open_job->delay, open_job->backend, open_job->path)) {
		open_job->box->backend->close(&open_job->box);
		return;
	}
	pop3_login_delay_record(&open_job->delay, open_job->backend, open_job->path);
}

/* RFC 2449 §8.1.1: the user logged in less than their LOGIN-DELAY ago. */
static enum pop3_outcome pop3_login_too_soon(struct pop3_session *session,
					     struct pop3_open_job *job)
{
	struct pop3_worker *worker = session->worker;

	if (session->session_counted)
		ip_limit_release(worker->session_limit, (const struct sockaddr *)&session->peer);
	session->session_counted = false;
	log_info("login_refused", "session=%s user=%s ip=%s reason=login_delay wait=%us",
		 session->id, log_quote(job->user), session->ip, job->delay.wait_secs);
	metrics_count_login(session->login_mechanism, METRICS_LOGIN_REFUSED);
	pop3_reply_err(session, "[LOGIN-DELAY] Too soon after the last login, wait %u seconds",
		       job->delay.wait_secs);
	return POP3_OUTCOME_OK;
}

static enum pop3_outcome pop3_login_opened(struct pop3_session *session, struct pop3_open_job *job)
{
	struct pop3_worker *worker = session->worker;
	const char *user = job->user;

	pop3_takeover_wait_end(session); /* answered now, whatever the answer */
	if (job->delay.warning != NULL)
		log_warn("login_delay_record_failed", "session=%s user=%s error=%s", session->id,
			 log_quote(user), log_quote(job->delay.warning));
	if (job->delay.wait_secs > 0)
		return pop3_login_too_soon(session, job);
	if (job->ret < 0) {
		if (session->session_counted)
			ip_limit_release(worker->session_limit,
					 (const struct sockaddr *)&session->peer);
		session->session_counted = false;
		log_warn("mailbox_open_failed", "session=%s user=%s kind=%s error=%s", session->id,
			 log_quote(user), pop3_store_error_code(job->kind),
			 log_quote(job->error != NULL ? job->error : "not run"));
		if (job->kind == STORE_ERROR_IN_USE) {
			metrics_count_lock_conflict();
			metrics_count_login(session->login_mechanism, METRICS_LOGIN_REFUSED);
			pop3_reply_err(session, "[IN-USE] Mailbox is locked by another session");
		} else {
			metrics_count_login(session->login_mechanism, METRICS_LOGIN_ERROR);
			pop3_reply_err(session, "%s Cannot open the mailbox",
				       pop3_store_error_code(job->kind));
		}
		return POP3_OUTCOME_OK;
	}
	session->box = job->box;
	job->box = NULL;
	session->state = POP3_STATE_TRANSACTION;
	metrics_session_login(session->listener);
	metrics_count_login(session->login_mechanism, METRICS_LOGIN_OK);
	pop3_session_set_timeouts(session);
	session->login_user = xstrdup(user);
	session->expire_days = job->expire_days;
	session->login_delay_secs = job->delay.delay_secs;
	if (job->lock_id_known)
		pop3_takeover_hold(session, &job->lock_id, job->locked_ms);
	session->deleted = xcalloc(session->box->count, sizeof(bool));
	session->retrieved = xcalloc(session->box->count, sizeof(bool));
	log_info("login", "session=%s user=%s ip=%s mechanism=%s tls=%s messages=%zu octets=%llu",
		 session->id, log_quote(user), session->ip, session->login_mechanism,
		 session->tls ? "yes" : "no", session->box->count,
		 (unsigned long long)session->box->total_size);
	pop3_reply_ok(session, "Logged in, %zu messages (%llu octets)", session->box->count,
		      (unsigned long long)session->box->total_size);
	return POP3_OUTCOME_OK;
}

/* Makes a job that found the maildrop locked ready to try again. */
static void pop3_open_job_prepare_retry(struct pop3_store_job *base)
{
	struct pop3_open_job *job = (struct pop3_open_job *)base;

	x_free(&job->error);
	pop3_login_delay_clear(&job->delay);
	job->ret = 0;
	job->kind = STORE_ERROR_NONE;
	job->lock_id_known = false;
	job->base.job.ran = false;
}

/* [pop3] lock_takeover: a login that found its maildrop locked may wait for the holder to go
 * (takeover.c keeps the job and runs it again). */
static bool pop3_open_job_wait_takeover(struct pop3_session *session, struct pop3_open_job *job)
{
	return job->ret < 0 && job->kind == STORE_ERROR_IN_USE && job->delay.wait_secs == 0 &&
	       job->lock_id_known &&
	       pop3_takeover_wait(session, &job->lock_id, job->attempt_ms, &job->base,
				  pop3_open_job_prepare_retry);
}

static void pop3_open_job_done(struct offload_job *job)
{
	struct pop3_open_job *open_job = (struct pop3_open_job *)job;
	struct pop3_session *session = open_job->base.session;

	if (!job->ran && open_job->error == NULL) {
		open_job->ret = -1;
		open_job->kind = STORE_ERROR_TEMP;
		open_job->error = xstrdup("server shutting down");
	}
	if (session != NULL) {
		session->store_job = NULL;
		session->store_waiting = false;
		if (job->ran && pop3_open_job_wait_takeover(session, open_job))
			return;
		pop3_session_resume(session, pop3_login_opened(session, open_job));
	}
	/* a session that went away meanwhile leaves the maildrop to be unlocked here */
	if (open_job->box != NULL)
		open_job->box->backend->close(&open_job->box);
	free(open_job->path);
	free(open_job->user);
	free(open_job->error);
	pop3_login_delay_clear(&open_job->delay);
	free(open_job);
}

static enum pop3_outcome pop3_login_open_mailbox(struct pop3_session *session,
						 const struct auth_reply *reply)
{
	const char *user = reply->user, *location = reply->location;
	const char *path;
	const struct store_backend *backend = store_backend_find(location, &path);
	struct pop3_worker *worker = session->worker;

	/* a session per user is the maildrop lock's job; this bounds one address's sessions */
	if (worker->session_limit != NULL &&
	    !ip_limit_acquire(worker->session_limit, (const struct sockaddr *)&session->peer,
			      worker->config->max_sessions_per_ip)) {
		log_warn("login_refused", "session=%s user=%s ip=%s reason=max_sessions_per_ip",
			 session->id, log_quote(user), session->ip);
		metrics_count_login(session->login_mechanism, METRICS_LOGIN_REFUSED);
		pop3_reply_err(session, "[SYS/TEMP] Too many sessions from your address");
		return POP3_OUTCOME_OK;
	}
	session->session_counted = worker->session_limit != NULL;

	struct pop3_open_job *job = xcalloc(1, sizeof(*job));
	job->base.job.run = pop3_open_job_run;
	job->base.job.done = pop3_open_job_done;
	job->base.session = session;
	job->user = xstrdup(user);
	job->expire_days = reply->expire_days;
	job->delay = (struct pop3_login_delay){.delay_secs = reply->login_delay_secs,
					       .now = wall_now()};
	if (backend == NULL) {
		job->ret = -1;
		job->kind = STORE_ERROR_PERM;
		job->error = xasprintf("unknown mailbox backend: %s", location);
		enum pop3_outcome outcome = pop3_login_opened(session, job);
		job->base.session = NULL;
		pop3_open_job_done(&job->base.job);
		return outcome;
	}
	job->backend = backend;
	job->path = xstrdup(path);
	job->want_lock_id = worker->takeover != NULL;
	session->store_job = &job->base;
	session->store_waiting = true;
	offload_submit(worker->offload, &job->base.job);
	return POP3_OUTCOME_WAIT;
}

/* Acts on the auth process's final answer to any way of logging in. */
static void pop3_login_result(struct pop3_session *session, const struct auth_reply *reply)
{
	session->auth_request = 0;
	session->sasl_active = false;
	switch (reply->result) {
	case AUTH_RESULT_OK:
		pop3_session_resume(session,
				    pop3_login_open_mailbox(session, reply));
		return;
	case AUTH_RESULT_BANNED:
		log_info("login_refused", "session=%s ip=%s reason=banned", session->id,
			 session->ip);
		metrics_count_login(session->login_mechanism, METRICS_LOGIN_REFUSED);
		pop3_reply_err(session,
			       "[SYS/TEMP] Too many failed logins from your address, try later");
		session->close_reason = "banned";
		pop3_session_resume(session, POP3_OUTCOME_CLOSE);
		return;
	case AUTH_RESULT_FAIL:
		metrics_count_login(session->login_mechanism, METRICS_LOGIN_FAILED);
		break;
	default:
		metrics_count_login(session->login_mechanism, METRICS_LOGIN_ERROR);
		pop3_reply_err(session,
			       "[SYS/TEMP] Authentication is unavailable, try again later");
		pop3_session_resume(session, POP3_OUTCOME_OK);
		return;
	}
	log_info("login_failed", "session=%s user=%s ip=%s mechanism=%s", session->id,
		 log_quote(session->user != NULL ? session->user : ""), session->ip,
		 session->login_mechanism);
	/* RFC 1939 §7: after a failed PASS the client starts again with USER */
	x_free(&session->user);
	/* the auth process says how long to wait before answering: it slows down guessing */
	struct timeval delay = {.tv_sec = reply->delay_ms / 1000,
				.tv_usec = (reply->delay_ms % 1000) * 1000};
	session->delay_timer = evtimer_new(session->worker->base, pop3_login_failed, session);
	evtimer_add(session->delay_timer, &delay);
}

/* The connection facts the auth process weighs (penalties, cleartext policy). */
static void pop3_auth_add_client(struct pop3_session *session, struct auth_msg_builder *b)
{
	uint32_t flags = 0;

	if (pop3_session_is_loopback(session))
		flags |= AUTH_FLAG_LOOPBACK;
	if (session->tls)
		flags |= AUTH_FLAG_TLS;
	auth_msg_add_str(b, AUTH_FIELD_CLIENT_IP, session->ip);
	auth_msg_add_u32(b, AUTH_FIELD_FLAGS, flags);
}

/* Sends the message begun on the auth client and waits for its answer. */
static enum pop3_outcome pop3_auth_send(struct pop3_session *session, auth_reply_callback *callback)
{
	session->auth_request = auth_client_send(session->worker->auth, callback, session);
	session->auth_waiting = true;
	return POP3_OUTCOME_WAIT;
}

/* ---- USER / PASS ---- */

enum pop3_outcome pop3_cmd_user(struct pop3_session *session, const struct pop3_command_line *cmd)
{
	if (!pop3_session_cleartext_allowed(session))
		return pop3_refuse_cleartext(session);
	free(session->user);
	session->user = xstrdup(cmd->args[0]);
	/* the same answer for every name: nothing is revealed before PASS */
	pop3_reply_ok(session, "Send your password");
	return POP3_OUTCOME_OK;
}

static void pop3_pass_answered(void *context, const struct auth_reply *reply)
{
	struct pop3_session *session = context;

	session->auth_waiting = false;
	if (reply->type != AUTH_MSG_RESULT) {
		/* USER/PASS has no challenges: an auth process that sends one is broken */
		auth_client_cancel(session->worker->auth, session->auth_request);
		session->auth_request = 0;
		metrics_count_login(session->login_mechanism, METRICS_LOGIN_ERROR);
		pop3_reply_err(session,
			       "[SYS/TEMP] Authentication is unavailable, try again later");
		pop3_session_resume(session, POP3_OUTCOME_OK);
		return;
	}
	pop3_login_result(session, reply);
}

enum pop3_outcome pop3_cmd_pass(struct pop3_session *session, const struct pop3_command_line *cmd)
{
	if (!pop3_session_cleartext_allowed(session)) {
		metrics_count_login("USER", METRICS_LOGIN_REFUSED);
		return pop3_refuse_cleartext(session);
	}
	if (session->user == NULL) {
		pop3_reply_err(session, "Send USER first");
		return POP3_OUTCOME_BAD;
	}
	if (cmd->rest == NULL) {
		pop3_reply_err(session, "PASS needs a password");
		return POP3_OUTCOME_BAD;
	}
	struct auth_msg_builder *b = auth_client_begin(session->worker->auth, AUTH_MSG_VERIFY, 0);
	auth_msg_add_str(b, AUTH_FIELD_USER, session->user);
	auth_msg_add_str(b, AUTH_FIELD_PASSWORD, cmd->rest);
	pop3_auth_add_client(session, b);
	session->login_mechanism = "USER";
	return pop3_auth_send(session, pop3_pass_answered);
}

/* ---- APOP ---- */

static bool pop3_is_hex_digest(const char *s)
{
	size_t len = strlen(s);

	if (len != 32)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

enum pop3_outcome pop3_cmd_apop(struct pop3_session *session, const struct pop3_command_line *cmd)
{
	if (!session->worker->config->auth_apop || session->apop_timestamp[0] == '\0') {
		pop3_reply_err(session, "APOP is not enabled");
		return POP3_OUTCOME_BAD;
	}
	if (!pop3_is_hex_digest(cmd->args[1])) {
		pop3_reply_err(session, "The APOP digest must be 32 hexadecimal digits");
		return POP3_OUTCOME_BAD;
	}
	free(session->user);
	session->user = xstrdup(cmd->args[0]);
	struct auth_msg_builder *b = auth_client_begin(session->worker->auth, AUTH_MSG_APOP, 0);
	auth_msg_add_str(b, AUTH_FIELD_USER, cmd->args[0]);
	auth_msg_add_str(b, AUTH_FIELD_TIMESTAMP, session->apop_timestamp);
	auth_msg_add_str(b, AUTH_FIELD_DIGEST, cmd->args[1]);
	pop3_auth_add_client(session, b);
	session->login_mechanism = "APOP";
	return pop3_auth_send(session, pop3_pass_answered);
}

/* ---- AUTH (SASL) ---- */

/* Whether mech is offered on this connection: plaintext mechanisms where cleartext is allowed,
 * channel binding over TLS, EXTERNAL over TLS with client certificates configured. */
static bool pop3_mech_offered(const struct pop3_session *session, const struct sasl_mech *mech)
{
	if (sasl_mech_is_plaintext(mech))
		return pop3_session_cleartext_allowed(session);
	if (sasl_mech_needs_channel_binding(mech))
		return session->tls;
	if (strcmp(sasl_mech_name(mech), "EXTERNAL") == 0)
		return session->tls && session->worker->config->tls_client_ca != NULL;
	return true;
}

/* True if mech is in [auth] mechanisms (whole names: SCRAM-SHA-256 is not SCRAM-SHA-256-PLUS). */
static bool pop3_mech_enabled(const struct pop3_session *session, const struct sasl_mech *mech)
{
	const char *list = session->worker->config->auth_mechanisms;
	const char *name = sasl_mech_name(mech);
	size_t len = strlen(name);

	for (const char *p = strstr(list, name); p != NULL; p = strstr(p + 1, name)) {
		if ((p == list || p[-1] == ' ') && (p[len] == '\0' || p[len] == ' '))
			return true;
	}
	return false;
}

/* Calls fn for each enabled mechanism offered on this connection. */
static void pop3_mechs_each(const struct pop3_session *session,
			    void (*fn)(void *context, const char *name), void *context)
{
	char *copy = xstrdup(session->worker->config->auth_mechanisms), *saveptr = NULL;

	for (char *name = strtok_r(copy, " ", &saveptr); name != NULL;
	     name = strtok_r(NULL, " ", &saveptr)) {
		const struct sasl_mech *mech = sasl_mech_find(name);
		if (mech != NULL && pop3_mech_offered(session, mech))
			fn(context, name);
	}
	free(copy);
}

static void pop3_capa_sasl_add(void *context, const char *name)
{
	struct evbuffer *line = context;

	evbuffer_add_printf(line, " %s", name);
}

void pop3_capa_sasl(struct pop3_session *session, struct evbuffer *out)
{
	struct evbuffer *line = evbuffer_new();

	pop3_mechs_each(session, pop3_capa_sasl_add, line);
	if (evbuffer_get_length(line) > 0) {
		evbuffer_add(out, "SASL", 4);
		evbuffer_add_buffer(out, line);
		evbuffer_add(out, "\r\n", 2);
	}
	evbuffer_free(line);
}

static void pop3_auth_list_add(void *context, const char *name)
{
	evbuffer_add_printf(context, "%s\r\n", name);
}

/* Sends "+ base64" (RFC 5034 §4; an empty challenge is "+ "). */
static void pop3_sasl_send_challenge(struct pop3_session *session, const unsigned char *data,
				     size_t len)
{
	char *encoded = sasl_base64_encode(data, len);

	evbuffer_add_printf(bufferevent_get_output(session->bev), "+ %s\r\n", encoded);
	free(encoded);
}

static void pop3_auth_answered(void *context, const struct auth_reply *reply)
{
	struct pop3_session *session = context;

	session->auth_waiting = false;
	if (reply->type == AUTH_MSG_CHALLENGE) {
		session->sasl_active = true;
		pop3_sasl_send_challenge(session, reply->challenge, reply->challenge_len);
		pop3_session_resume(session, POP3_OUTCOME_OK);
		return;
	}
	pop3_login_result(session, reply);
}

/* Decodes a client response; "=" is an empty one. Returns the length or -1 if malformed. */
static long pop3_sasl_decode(const char *text, unsigned char *out)
{
	if (strcmp(text, "=") == 0)
		return 0;
	return sasl_base64_decode(text, strlen(text), out);
}

/* TLS facts for SCRAM-*-PLUS and EXTERNAL. */
static void pop3_auth_add_tls(struct pop3_session *session, struct auth_msg_builder *b)
{
	SSL *ssl = session->tls ? bufferevent_openssl_get_ssl(session->bev) : NULL;
	unsigned char cb[EVP_MAX_MD_SIZE > 32 ? EVP_MAX_MD_SIZE : 32];
	size_t len;

	if (ssl == NULL)
		return;
	if ((len = tls_channel_binding_exporter(ssl, cb, sizeof(cb))) > 0)
		auth_msg_add_bytes(b, AUTH_FIELD_CB_EXPORTER, cb, len);
	if ((len = tls_channel_binding_endpoint(ssl, cb, sizeof(cb))) > 0)
		auth_msg_add_bytes(b, AUTH_FIELD_CB_ENDPOINT, cb, len);
	char *identity = tls_client_identity(ssl);
	if (identity != NULL)
		auth_msg_add_str(b, AUTH_FIELD_CERT_USER, identity);
	free(identity);
}

enum pop3_outcome pop3_cmd_auth(struct pop3_session *session, const struct pop3_command_line *cmd)
{
	if (cmd->arg_count == 0) {
		/* a bare AUTH lists the mechanisms (old Outlook asks this way) */
		struct evbuffer *out = bufferevent_get_output(session->bev);
		evbuffer_add(out, "+OK\r\n", 5);
		pop3_mechs_each(session, pop3_auth_list_add, out);
		evbuffer_add(out, ".\r\n", 3);
		return POP3_OUTCOME_OK;
	}
	const struct sasl_mech *mech = sasl_mech_find(cmd->args[0]);
	if (mech == NULL || !pop3_mech_enabled(session, mech) ||
	    !pop3_mech_offered(session, mech)) {
		if (mech != NULL && sasl_mech_is_plaintext(mech) &&
		    !pop3_session_cleartext_allowed(session)) {
			metrics_count_login(sasl_mech_name(mech), METRICS_LOGIN_REFUSED);
			return pop3_refuse_cleartext(session);
		}
		pop3_reply_err(session, "Unsupported authentication mechanism");
		return POP3_OUTCOME_BAD;
	}
	unsigned char initial[POP3_MAX_LINE];
	long initial_len = -1;
	if (cmd->arg_count == 2 && (initial_len = pop3_sasl_decode(cmd->args[1], initial)) < 0) {
		pop3_reply_err(session, "Malformed base64 in the initial response");
		return POP3_OUTCOME_BAD;
	}
	struct auth_msg_builder *b =
	    auth_client_begin(session->worker->auth, AUTH_MSG_SASL_START, 0);
	auth_msg_add_str(b, AUTH_FIELD_MECH, sasl_mech_name(mech));
	pop3_auth_add_client(session, b);
	pop3_auth_add_tls(session, b);
	if (initial_len >= 0)
		auth_msg_add_bytes(b, AUTH_FIELD_RESPONSE, initial, (size_t)initial_len);
	sodium_memzero(initial, sizeof(initial));
	session->login_mechanism = sasl_mech_name(mech);
	return pop3_auth_send(session, pop3_auth_answered);
}

void pop3_sasl_abort(struct pop3_session *session)
{
	metrics_count_login(session->login_mechanism, METRICS_LOGIN_ABORTED);
	auth_client_cancel(session->worker->auth, session->auth_request);
	session->auth_request = 0;
	session->sasl_active = false;
}

enum pop3_outcome pop3_sasl_response(struct pop3_session *session, const char *line)
{
	size_t len = strlen(line);
	unsigned char *decoded = xmalloc(len / 4 * 3 + 3);
	long decoded_len = strcmp(line, "*") == 0 ? -2 : pop3_sasl_decode(line, decoded);

	if (decoded_len < 0) {
		/* RFC 5034 §4: "*" cancels; anything that is not base64 is refused */
		pop3_sasl_abort(session);
		free(decoded);
		if (decoded_len == -2) {
			pop3_reply_err(session, "Authentication cancelled");
			return POP3_OUTCOME_OK;
		}
		pop3_reply_err(session, "Malformed base64 response, authentication cancelled");
		return POP3_OUTCOME_BAD;
	}
	session->sasl_active = false;
	struct auth_msg_builder *b =
	    auth_client_begin(session->worker->auth, AUTH_MSG_SASL_CONTINUE, session->auth_request);
	auth_msg_add_bytes(b, AUTH_FIELD_RESPONSE, decoded, (size_t)decoded_len);
	sodium_memzero(decoded, (size_t)decoded_len);
	free(decoded);
	return pop3_auth_send(session, pop3_auth_answered);
}

/* ---- UTF8 ---- */

enum pop3_outcome pop3_cmd_utf8(struct pop3_session *session, const struct pop3_command_line *cmd)
{
	/* RFC 6856 §2: UTF-8 mode; buzon accepts UTF-8 names and passwords either way */
	session->utf8 = true;
	pop3_reply_ok(session, "UTF8 enabled");
	return POP3_OUTCOME_OK;
}

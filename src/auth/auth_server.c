/* The auth process (see auth_server.h). One main thread owns everything: it polls the workers'
 * connections, decodes each request strictly, looks the user up, and hands slow password checks to
 * the hashing threads (auth_hasher.c); their verdicts come back to the main thread, which alone
 * answers, so connections and the user database need no locks. A request for an unknown user is
 * checked against a dummy secret of the default scheme, so it costs the same time as a wrong
 * password.
 *
 * SASL conversations (sasl/) live here too, keyed by worker connection and request id: the worker
 * only relays decoded client responses and challenges. Every failure goes through the penalty
 * table (a delay that doubles per failure from one client IP) and may ban the IP, which the
 * workers see in the shared ban table. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth_hasher.h"
#include "auth/penalty.h"
#include "auth/recipient.h"
#include "auth/saslprep.h"
#include "auth/scheme_policy.h"
#include "auth/auth_proto.h"
#include "auth/auth_server.h"
#include "auth/auth_server_testing.h"
#include "auth/passwd_file.h"
#include "auth/password.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/sandbox.h"
#include "core/util.h"
#include "net/ban_table.h"
#include "net/netlist.h"
#include "sasl/sasl.h"

/* A compromised worker must not be able to make the auth process hold unbounded state. */
#define AUTH_MAX_CONVERSATIONS_PER_CONN 10000

struct auth_conversation;

/* One worker's connection. Requests in the hashing threads hold references, so that a worker that
 * went away does not leave them pointing at a reused descriptor. */
struct auth_conn {
	int fd;
	unsigned int refs;
	bool closed;
	struct auth_conversation *conversations;
	size_t conversation_count;
};

/* A SASL exchange waiting for the client's next response. */
struct auth_conversation {
	struct auth_conversation *next;
	struct auth_server *server;
	uint32_t id;
	char *client_ip;
	struct sasl_conv *conv;
	struct sasl_channel channel; /* points at the copies below */
	unsigned char *cb_exporter, *cb_endpoint;
	char *cert_user;
	struct sasl_lookup lookup;
	char *secret; /* the last secret looked up, owned here so it outlives a database reload */
};

/* A login attempt waiting for its password check. */
struct auth_request {
	struct auth_check check; /* first: the hasher hands this back */
	struct auth_conn *conn;
	uint32_t id;
	bool known_user;
	char *user;	 /* the canonical name from the passwd-file, or what the client sent */
	char *client_ip; /* for penalties and logs */
	char *login_as;	 /* a master user's target (SASL authzid), or NULL */
	unsigned char fingerprint[PENALTY_FP_LEN]; /* of user and password: retries do not count */
};

struct auth_server {
	const struct buzon_config *config;
	struct passwd_db db;
	bool db_loaded;
	char *dummy_secret;
	struct auth_hasher *hasher;
	struct auth_conn **conns;
	size_t conn_count;
	struct penalty_table *penalties;
	struct net_list *trusted;
	struct ban_table *bans; /* shared with the workers */
	unsigned char fingerprint_key[PENALTY_FP_KEY_LEN];
	unsigned char fake_scram_key[32];
	const struct sasl_mech **mechs; /* enabled mechanisms */
	size_t mech_count;
	size_t checks_pending; /* submitted to the hasher and not taken back yet */
	/* over every user of the passwd-file, for CAPA before login (POLICY_QUERY) */
	uint32_t expire_days_min;     /* AUTH_EXPIRE_NEVER when nobody's mail expires */
	uint32_t login_delay_max;     /* seconds */
	uint32_t policy_flags;	      /* AUTH_POLICY_*: the values differ between users */
};

static void auth_conversation_free(struct auth_conversation **convp)
{
	struct auth_conversation *c = *convp;

	sasl_conv_free(&c->conv);
	free(c->client_ip);
	if (c->cb_exporter != NULL)
		sodium_memzero(c->cb_exporter, c->channel.cb_exporter_len);
	free(c->cb_exporter);
	free(c->cb_endpoint);
	free(c->cert_user);
	if (c->secret != NULL)
		sodium_memzero(c->secret, strlen(c->secret));
	free(c->secret);
	x_free(convp);
}

/* Unlinks conversation id of conn and returns it, or NULL. */
static struct auth_conversation *auth_conversation_take(struct auth_conn *conn, uint32_t id)
{
	for (struct auth_conversation **p = &conn->conversations; *p != NULL; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct auth_conversation *c = *p;
			*p = c->next;
			conn->conversation_count--;
			return c;
		}
	}
	return NULL;
}

static void auth_conn_unref(struct auth_conn **connp)
{
	struct auth_conn *conn = *connp;

	*connp = NULL;
	if (--conn->refs > 0)
		return;
	while (conn->conversations != NULL) {
		struct auth_conversation *c = conn->conversations;
		conn->conversations = c->next;
		auth_conversation_free(&c);
	}
	free(conn);
}

static void auth_request_free(struct auth_request **reqp)
{
	struct auth_request *req = *reqp;

	auth_check_clear(&req->check);
	free(req->user);
	free(req->client_ip);
	free(req->login_as);
	if (req->conn != NULL)
		auth_conn_unref(&req->conn);
	x_free(reqp);
}

static void auth_drop_check(struct auth_check *check)
{
	struct auth_request *req = (struct auth_request *)check;

	auth_request_free(&req);
}

static void auth_send(struct auth_conn *conn, struct auth_msg_builder *b)
{
	size_t len = auth_msg_finish(b);

	if (len == 0)
		log_error("auth_reply_encode_failed", "%s", "");
	else if (!conn->closed && send(conn->fd, b->buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_warn("auth_reply_send_failed", "error=%s", log_quote(strerror(errno)));
	auth_msg_wipe(b);
}

static void auth_send_result(struct auth_conn *conn, uint32_t id, enum auth_result result,
			     unsigned int delay_ms)
{
	struct auth_msg_builder b;

	auth_msg_begin(&b, AUTH_MSG_RESULT, id);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, (uint32_t)result);
	if (delay_ms > 0)
		auth_msg_add_u32(&b, AUTH_FIELD_DELAY_MS, delay_ms);
	auth_send(conn, &b);
}

static uint32_t auth_expire_wire(int expire_days)
{
	return expire_days < 0 ? AUTH_EXPIRE_NEVER : (uint32_t)expire_days;
}

/* A successful login: the user's mailbox and mail policies. entry is NULL for a user the
 * passwd-file lost while the password was being checked: the config's policies apply. */
static void auth_send_login_ok(struct auth_server *server, struct auth_conn *conn, uint32_t id,
			       const char *user, const char *location,
			       const struct passwd_entry *entry)
{
	struct auth_msg_builder b;
	int expire_days;
	unsigned int login_delay_secs;

	(void)recipient_policies(server->config, entry, &expire_days, &login_delay_secs, NULL);
	auth_msg_begin(&b, AUTH_MSG_RESULT, id);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, AUTH_RESULT_OK);
	auth_msg_add_str(&b, AUTH_FIELD_USER, user);
	auth_msg_add_str(&b, AUTH_FIELD_LOCATION, location);
	auth_msg_add_u32(&b, AUTH_FIELD_EXPIRE_DAYS, auth_expire_wire(expire_days));
	auth_msg_add_u32(&b, AUTH_FIELD_LOGIN_DELAY, login_delay_secs);
	auth_send(conn, &b);
}

static uint64_t auth_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Counts a failure against client_ip; bans it when it has failed too often. Returns the delay the
 * worker waits before answering. */
static unsigned int auth_penalise(struct auth_server *server, const char *client_ip,
				  const unsigned char *fingerprint)
{
	bool banned_now = false;
	unsigned int delay = penalty_record_failure(server->penalties, client_ip, fingerprint,
						    auth_now_ms(), &banned_now);

	if (delay > 0)
		metrics_count_auth_penalty();
	if (banned_now) {
		metrics_count_auth_ban();
		const struct buzon_config *config = server->config;
		uint64_t until_ms = 0;
		/* both clocks are CLOCK_MONOTONIC; round up so that the workers never let a client
		 * in while this process would still refuse its login */
		penalty_is_banned(server->penalties, client_ip, auth_now_ms(), &until_ms);
		ban_table_add(server->bans, client_ip, (until_ms + 999) / 1000, BAN_SOURCE_AUTH);
		log_warn("ban", "ip=%s failures=%u window=%us duration=%us", log_quote(client_ip),
			 config->auth_ban_failures, config->auth_ban_window_secs,
			 config->auth_ban_secs);
	}
	return delay;
}

static const struct passwd_entry *auth_lookup(struct auth_server *server, const char *user);

/* Answers a finished login attempt: the one place that decides what the worker hears. */
static void auth_finish(struct auth_server *server, struct auth_conn *conn, uint32_t id,
			const char *user, const char *client_ip, const unsigned char *fingerprint,
			bool success)
{
	if (!success) {
		unsigned int delay = auth_penalise(server, client_ip, fingerprint);
		auth_send_result(conn, id, AUTH_RESULT_FAIL, delay);
		return;
	}
	char *location = config_expand_location(server->config->mail_location, user);
	if (location == NULL) {
		log_error("mail_location_invalid", "user=%s", log_quote(user));
		auth_send_result(conn, id, AUTH_RESULT_TEMPFAIL, 0);
		return;
	}
	penalty_record_success(server->penalties, client_ip, auth_now_ms());
	auth_send_login_ok(server, conn, id, user, location, auth_lookup(server, user));
	free(location);
}

static void auth_check_finished(struct auth_server *server, struct auth_request *req)
{
	if (req->check.verdict < 0 && req->known_user)
		log_error("auth_secret_invalid", "user=%s error=%s", log_quote(req->user),
			  log_quote(req->check.error != NULL ? req->check.error : "unknown"));
	bool ok = req->known_user && req->check.verdict == 1;
	const struct passwd_entry *target = NULL;
	if (ok && req->login_as != NULL) {
		/* a master user's password was right: log in as the target, which must exist */
		target = auth_lookup(server, req->login_as);
		ok = target != NULL;
	}
	auth_finish(server, req->conn, req->id, target != NULL ? target->user : req->user,
		    req->client_ip, req->fingerprint, ok);
}

static void auth_report_bad_line(void *context, unsigned int line, const char *message)
{
	const char *path = context;

	log_warn("passwd_line_skipped", "file=%s line=%u reason=%s", log_quote(path), line,
		 log_quote(message));
}

/* The bounds of every user's policies (RFC 2449 §6.5, §6.7: before login, CAPA announces the
 * smallest EXPIRE and the largest LOGIN-DELAY any user has, with "USER" when they differ). An
 * empty database has the config's values. Malformed per-user values are logged here, once per
 * load of the file, and ignored (the config's value applies) wherever they are read. */
static void auth_policy_bounds_compute(struct auth_server *server)
{
	const char *path = server->config->passwd_file;
	int expire_days;
	unsigned int delay;
	const char *error = NULL;

	(void)recipient_policies(server->config, NULL, &expire_days, &delay, NULL);
	server->expire_days_min = auth_expire_wire(expire_days);
	server->login_delay_max = delay;
	server->policy_flags = 0;
	for (size_t i = 0; i < server->db.count; i++) {
		const struct passwd_entry *entry = &server->db.entries[i];
		if (recipient_policies(server->config, entry, &expire_days, &delay, &error) < 0)
			log_warn("passwd_field_ignored", "file=%s line=%u user=%s reason=%s",
				 log_quote(path), entry->line, log_quote(entry->user),
				 log_quote(error));
		uint32_t expire = auth_expire_wire(expire_days);
		if (i > 0 && expire != server->expire_days_min)
			server->policy_flags |= AUTH_POLICY_EXPIRE_PER_USER;
		if (i > 0 && delay != server->login_delay_max)
			server->policy_flags |= AUTH_POLICY_LOGIN_DELAY_PER_USER;
		if (i == 0 || expire < server->expire_days_min)
			server->expire_days_min = expire;
		if (i == 0 || delay > server->login_delay_max)
			server->login_delay_max = delay;
	}
}

/* Loads the passwd-file the first time and whenever it changes on disk, so that `buzon user add`
 * takes effect without a reload. A file that cannot be read keeps the last good copy. */
static int auth_db_refresh(struct auth_server *server)
{
	const char *path = server->config->passwd_file;
	struct passwd_db fresh;
	char *error = NULL;

	if (server->db_loaded && !passwd_db_changed(&server->db, path))
		return 0;
	if (passwd_db_load(path, &fresh, auth_report_bad_line, (void *)path, &error) < 0) {
		log_error("passwd_load_failed", "error=%s", log_quote(error));
		free(error);
		return server->db_loaded ? 0 : -1;
	}
	size_t plaintext = 0;
	for (size_t i = 0; i < fresh.count; i++)
		plaintext += password_scheme_is_plaintext(fresh.entries[i].secret) ? 1 : 0;
	if (server->db_loaded)
		passwd_db_free(&server->db);
	server->db = fresh;
	server->db_loaded = true;
	auth_policy_bounds_compute(server);
	log_info("passwd_loaded", "file=%s users=%zu", log_quote(path), fresh.count);
	if (plaintext > 0)
		log_warn("passwd_plaintext", "file=%s users=%zu hint=%s", log_quote(path),
			 plaintext, log_quote("store hashes: buzon user passwd USER"));
	return 0;
}

/* Looks user up; NULL if unknown (or the name is not a valid one). */
static const struct passwd_entry *auth_lookup(struct auth_server *server, const char *user)
{
	char *prepared = NULL;
	const struct passwd_entry *entry = NULL;

	/* RFC 6856 §2.2: names are compared after SASLprep, as `buzon user add` stores them */
	if (user != NULL && saslprep(user, false, &prepared) == 0 &&
	    passwd_user_name_valid(prepared))
		entry = passwd_db_lookup(&server->db, prepared);
	free(prepared);
	return entry;
}

/* The secret an unknown user's password is checked against, so that the answer takes as long as
 * for a real user: a real user's secret (the same scheme and cost), chosen by the name so that
 * one unknown name always costs the same; the verdict is "fail" whatever the check says. An empty
 * database falls back to a dummy secret made like a new user's. */
static const char *auth_timing_secret(const struct auth_server *server, const char *user)
{
	unsigned char hash[8];
	uint64_t pick = 0;

	if (server->db.count == 0)
		return server->dummy_secret;
	crypto_generichash(hash, sizeof(hash), (const unsigned char *)user, strlen(user),
			   server->fingerprint_key, sizeof(server->fingerprint_key));
	memcpy(&pick, hash, sizeof(pick));
	return server->db.entries[pick % server->db.count].secret;
}

/* Queues a password check for user (USER/PASS, or PLAIN/LOGIN after their exchange). Takes
 * ownership of user and password. */
static void auth_check_password(struct auth_server *server, struct auth_conn *conn, uint32_t id,
				char *user, char *password, const char *client_ip, char *login_as)
{
	struct auth_request *req = xcalloc(1, sizeof(*req));
	const struct passwd_entry *entry = auth_lookup(server, user);

	req->id = id;
	req->user = user;
	req->login_as = login_as;
	req->client_ip = xstrdup(client_ip);
	req->check.password = password;
	penalty_fingerprint(server->fingerprint_key, user, password, req->fingerprint);
	/* RFC 6856 §2.2 / RFC 4013: the password as SASLprep makes it; a password SASLprep refuses
	 * can match nothing, but is still checked (same time) and counted as a failure */
	char *prepared = NULL;
	if (saslprep(password, false, &prepared) == 0) {
		sodium_memzero(password, strlen(password));
		free(password);
		req->check.password = prepared;
	}
	req->known_user = entry != NULL;
	req->check.secret =
	    xstrdup(entry != NULL ? entry->secret : auth_timing_secret(server, user));
	if (entry != NULL) {
		free(req->user);
		req->user = xstrdup(entry->user);
	}
	conn->refs++;
	req->conn = conn;
	server->checks_pending++;
	auth_hasher_submit(server->hasher, &req->check);
}

/* Whether a password may travel in the clear on a connection with these flags ([auth]
 * cleartext). The worker applies the same policy before it asks; it is checked here again because
 * a worker may be compromised. */
static bool auth_cleartext_allowed(const struct auth_server *server, uint32_t flags)
{
	switch (server->config->auth_cleartext) {
	case CONFIG_CLEARTEXT_ALWAYS:
		return true;
	case CONFIG_CLEARTEXT_LOOPBACK:
		return (flags & (AUTH_FLAG_TLS | AUTH_FLAG_LOOPBACK)) != 0;
	case CONFIG_CLEARTEXT_NEVER:
		return (flags & AUTH_FLAG_TLS) != 0;
	}
	return false;
}

/* USER/PASS. */
static void auth_handle_verify(struct auth_server *server, struct auth_conn *conn,
			       const struct auth_msg *msg, const char *client_ip)
{
	if (!auth_cleartext_allowed(server, auth_msg_u32(msg, AUTH_FIELD_FLAGS, 0))) {
		log_warn("auth_cleartext_refused", "ip=%s", log_quote(client_ip));
		auth_send_result(conn, msg->id, AUTH_RESULT_FAIL, 0);
		return;
	}
	auth_check_password(server, conn, msg->id, auth_msg_strdup(msg, AUTH_FIELD_USER),
			    auth_msg_strdup(msg, AUTH_FIELD_PASSWORD), client_ip, NULL);
}

/* APOP (RFC 1939 §7): MD5 is cheap, so it is checked here. */
static void auth_handle_apop(struct auth_server *server, struct auth_conn *conn,
			     const struct auth_msg *msg, const char *client_ip)
{
	char *user = auth_msg_strdup(msg, AUTH_FIELD_USER);
	char *timestamp = auth_msg_strdup(msg, AUTH_FIELD_TIMESTAMP);
	char *digest = auth_msg_strdup(msg, AUTH_FIELD_DIGEST);
	const struct passwd_entry *entry = auth_lookup(server, user);
	bool ok = server->config->auth_apop && entry != NULL &&
		  sasl_apop_verify(entry->secret, timestamp, digest) == 1;

	auth_finish(server, conn, msg->id, ok ? entry->user : user, client_ip, NULL, ok);
	free(user);
	free(timestamp);
	free(digest);
}

/* LMTP RCPT TO: the user whose name is the address, else the one named by its local part. No
 * password, so no penalty either: the MTA asks, not a client. */
static void auth_handle_lookup(struct auth_server *server, struct auth_conn *conn,
			       const struct auth_msg *msg)
{
	char *address = auth_msg_strdup(msg, AUTH_FIELD_USER);
	const struct passwd_entry *entry = recipient_lookup(&server->db, address);

	free(address);
	if (entry == NULL) {
		auth_send_result(conn, msg->id, AUTH_RESULT_FAIL, 0);
		return;
	}
	char *location = config_expand_location(server->config->mail_location, entry->user);
	if (location == NULL) {
		auth_send_result(conn, msg->id, AUTH_RESULT_TEMPFAIL, 0);
		return;
	}
	uint64_t bytes, messages;
	recipient_quota(server->config, entry, &bytes, &messages);
	struct auth_msg_builder b;
	auth_msg_begin(&b, AUTH_MSG_RESULT, msg->id);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, AUTH_RESULT_OK);
	auth_msg_add_str(&b, AUTH_FIELD_USER, entry->user);
	auth_msg_add_str(&b, AUTH_FIELD_LOCATION, location);
	auth_msg_add_u64(&b, AUTH_FIELD_QUOTA_BYTES, bytes);
	auth_msg_add_u64(&b, AUTH_FIELD_QUOTA_MESSAGES, messages);
	auth_send(conn, &b);
	free(location);
}

/* sasl_lookup callback: the conversation keeps its own copy of the secret. */
static const char *auth_conversation_secret(void *context, const char *user)
{
	struct auth_conversation *c = context;
	const struct passwd_entry *entry = auth_lookup(c->server, user);

	if (c->secret != NULL) {
		sodium_memzero(c->secret, strlen(c->secret));
		x_free(&c->secret);
	}
	if (entry == NULL)
		return NULL;
	c->secret = xstrdup(entry->secret);
	return c->secret;
}

/* sasl_lookup callback: a master user ([auth] master_users) may log in as any existing user. */
static bool auth_conversation_authorize(void *context, const char *authcid, const char *authzid)
{
	struct auth_conversation *c = context;
	const char *masters = c->server->config->auth_master_users;
	size_t len = strlen(authcid);
	bool master = false;

	for (const char *p = masters != NULL ? strstr(masters, authcid) : NULL;
	     p != NULL && !master; p = strstr(p + 1, authcid)) {
		master = (p == masters || p[-1] == ' ' || p[-1] == ',') &&
			 (p[len] == '\0' || p[len] == ' ' || p[len] == ',');
	}
	if (master)
		log_info("master_login", "master=%s user=%s ip=%s", log_quote(authcid),
			 log_quote(authzid), log_quote(c->client_ip));
	return master && auth_lookup(c->server, authzid) != NULL;
}

static const struct sasl_mech *auth_mech_enabled(const struct auth_server *server, const char *name)
{
	const struct sasl_mech *mech = name != NULL ? sasl_mech_find(name) : NULL;

	for (size_t i = 0; mech != NULL && i < server->mech_count; i++) {
		if (server->mechs[i] == mech)
			return mech;
	}
	return NULL;
}

/* Whether mech may run on a connection with these flags: the auth process enforces the same
 * policy the worker announces, since a worker may be compromised. */
static bool auth_mech_allowed(const struct auth_server *server, const struct sasl_mech *mech,
			      uint32_t flags)
{
	if (sasl_mech_is_plaintext(mech))
		return auth_cleartext_allowed(server, flags);
	return !sasl_mech_needs_channel_binding(mech) || (flags & AUTH_FLAG_TLS) != 0;
}

static unsigned char *auth_dup_field(const struct auth_msg *msg, enum auth_field tag, size_t *len_r)
{
	const struct auth_field_value *v = &msg->fields[tag];

	*len_r = v->present ? v->len : 0;
	if (!v->present || v->len == 0)
		return NULL;
	unsigned char *copy = xmalloc(v->len);
	memcpy(copy, v->data, v->len);
	return copy;
}

static struct auth_conversation *auth_conversation_new(struct auth_server *server,
						       const struct auth_msg *msg,
						       const struct sasl_mech *mech,
						       const char *client_ip)
{
	struct auth_conversation *c = xcalloc(1, sizeof(*c));
	uint32_t flags = auth_msg_u32(msg, AUTH_FIELD_FLAGS, 0);

	c->server = server;
	c->id = msg->id;
	c->client_ip = xstrdup(client_ip);
	c->cb_exporter = auth_dup_field(msg, AUTH_FIELD_CB_EXPORTER, &c->channel.cb_exporter_len);
	c->cb_endpoint = auth_dup_field(msg, AUTH_FIELD_CB_ENDPOINT, &c->channel.cb_endpoint_len);
	c->cert_user = auth_msg_strdup(msg, AUTH_FIELD_CERT_USER);
	c->channel.tls = (flags & AUTH_FLAG_TLS) != 0;
	c->channel.cb_exporter = c->cb_exporter;
	c->channel.cb_endpoint = c->cb_endpoint;
	c->channel.cert_user = c->cert_user;
	c->lookup = (struct sasl_lookup){.context = c,
					 .secret = auth_conversation_secret,
					 .fake_key = server->fake_scram_key,
					 .fake_key_len = sizeof(server->fake_scram_key),
					 .fake_iterations = 4096,
					 .authorize = auth_conversation_authorize};
	c->conv = sasl_conv_new(mech, &c->channel, &c->lookup);
	return c;
}

/* Feeds one client response to a conversation and acts on the mechanism's answer. Takes c; keeps
 * it (linked into conn) only while the exchange goes on. */
static void auth_conversation_step(struct auth_server *server, struct auth_conn *conn,
				   struct auth_conversation *c, const struct auth_msg *msg)
{
	const struct auth_field_value *response = &msg->fields[AUTH_FIELD_RESPONSE];
	struct sasl_output out;
	enum sasl_status status =
	    sasl_conv_step(c->conv, response->data, response->len, response->present, &out);

	switch (status) {
	case SASL_STATUS_CONTINUE: {
		struct auth_msg_builder b;
		auth_msg_begin(&b, AUTH_MSG_CHALLENGE, c->id);
		auth_msg_add_bytes(&b, AUTH_FIELD_CHALLENGE, out.challenge, out.challenge_len);
		auth_send(conn, &b);
		c->next = conn->conversations;
		conn->conversations = c;
		conn->conversation_count++;
		sasl_output_clear(&out);
		return;
	}
	case SASL_STATUS_CHECK_PASSWORD:
		auth_check_password(server, conn, c->id, out.user, out.password, c->client_ip,
				    out.authzid);
		out.user = out.password = out.authzid = NULL;
		break;
	case SASL_STATUS_SUCCESS: {
		const struct passwd_entry *entry =
		    auth_lookup(server, out.authzid != NULL ? out.authzid : out.user);
		auth_finish(server, conn, c->id, entry != NULL ? entry->user : out.user,
			    c->client_ip, NULL, entry != NULL);
		break;
	}
	case SASL_STATUS_FAILURE:
		log_info("sasl_failed", "ip=%s reason=%s", log_quote(c->client_ip),
			 log_quote(out.error != NULL ? out.error : "unknown"));
		auth_finish(server, conn, c->id, NULL, c->client_ip, NULL, false);
		break;
	}
	sasl_output_clear(&out);
	auth_conversation_free(&c);
}

static void auth_handle_sasl_start(struct auth_server *server, struct auth_conn *conn,
				   const struct auth_msg *msg, const char *client_ip)
{
	char *name = auth_msg_strdup(msg, AUTH_FIELD_MECH);
	const struct sasl_mech *mech = auth_mech_enabled(server, name);

	free(name);
	if (mech == NULL ||
	    !auth_mech_allowed(server, mech, auth_msg_u32(msg, AUTH_FIELD_FLAGS, 0)) ||
	    conn->conversation_count >= AUTH_MAX_CONVERSATIONS_PER_CONN) {
		auth_send_result(conn, msg->id, AUTH_RESULT_FAIL, 0);
		return;
	}
	struct auth_conversation *old = auth_conversation_take(conn, msg->id);
	if (old != NULL)
		auth_conversation_free(&old); /* a reused id ends the old exchange */
	auth_conversation_step(server, conn, auth_conversation_new(server, msg, mech, client_ip),
			       msg);
}

static void auth_handle_sasl_continue(struct auth_server *server, struct auth_conn *conn,
				      const struct auth_msg *msg)
{
	struct auth_conversation *c = auth_conversation_take(conn, msg->id);

	if (c == NULL) {
		auth_send_result(conn, msg->id, AUTH_RESULT_FAIL, 0);
		return;
	}
	auth_conversation_step(server, conn, c, msg);
}

/* POLICY_QUERY: what CAPA announces before login. Carries no credentials, so it is answered
 * whatever the client's address. */
static void auth_handle_policy_query(struct auth_server *server, struct auth_conn *conn,
				     const struct auth_msg *msg)
{
	struct auth_msg_builder b;

	auth_msg_begin(&b, AUTH_MSG_RESULT, msg->id);
	auth_msg_add_u32(&b, AUTH_FIELD_RESULT, AUTH_RESULT_OK);
	auth_msg_add_u32(&b, AUTH_FIELD_EXPIRE_DAYS, server->expire_days_min);
	auth_msg_add_u32(&b, AUTH_FIELD_LOGIN_DELAY, server->login_delay_max);
	auth_msg_add_u32(&b, AUTH_FIELD_POLICY_FLAGS, server->policy_flags);
	auth_send(conn, &b);
}

/* Whether client_ip is banned. An administrator lifts a ban in the shared table (`buzon ban del`),
 * which this process cannot be told about: a ban it holds that the table no longer has is lifted
 * here too, so that the client can log in again, not only connect. */
static bool auth_client_banned(struct auth_server *server, const char *client_ip)
{
	uint64_t now_ms = auth_now_ms();

	if (!penalty_is_banned(server->penalties, client_ip, now_ms, NULL))
		return false;
	/* the table's end is this ban's, rounded up (auth_penalise): it outlasts it */
	if (server->bans == NULL ||
	    ban_table_is_banned_text(server->bans, client_ip, ban_table_now()))
		return true;
	penalty_unban(server->penalties, client_ip, now_ms);
	log_info("ban_lifted", "ip=%s by=admin", log_quote(client_ip));
	return false;
}

static void auth_handle_message(struct auth_server *server, struct auth_conn *conn,
				const struct auth_msg *msg)
{
	char *client_ip = auth_msg_strdup(msg, AUTH_FIELD_CLIENT_IP);

	if (msg->type == AUTH_MSG_SASL_ABORT) {
		struct auth_conversation *c = auth_conversation_take(conn, msg->id);
		if (c != NULL)
			auth_conversation_free(&c);
	} else if (msg->type == AUTH_MSG_SASL_CONTINUE) {
		auth_handle_sasl_continue(server, conn, msg);
	} else if (msg->type == AUTH_MSG_LOOKUP || msg->type == AUTH_MSG_POLICY_QUERY) {
		if (auth_db_refresh(server) < 0)
			auth_send_result(conn, msg->id, AUTH_RESULT_TEMPFAIL, 0);
		else if (msg->type == AUTH_MSG_LOOKUP)
			auth_handle_lookup(server, conn, msg);
		else
			auth_handle_policy_query(server, conn, msg);
	} else if (client_ip != NULL && auth_client_banned(server, client_ip)) {
		auth_send_result(conn, msg->id, AUTH_RESULT_BANNED, 0);
	} else if (auth_db_refresh(server) < 0) {
		auth_send_result(conn, msg->id, AUTH_RESULT_TEMPFAIL, 0);
	} else if (msg->type == AUTH_MSG_VERIFY) {
		auth_handle_verify(server, conn, msg, client_ip);
	} else if (msg->type == AUTH_MSG_APOP) {
		auth_handle_apop(server, conn, msg, client_ip);
	} else if (msg->type == AUTH_MSG_SASL_START) {
		auth_handle_sasl_start(server, conn, msg, client_ip);
	}
	free(client_ip);
}

static void auth_conn_close(struct auth_server *server, size_t index)
{
	struct auth_conn *conn = server->conns[index];

	conn->closed = true;
	close(conn->fd);
	conn->fd = -1;
	server->conns[index] = server->conns[--server->conn_count];
	auth_conn_unref(&conn);
}

/* Handles one datagram from the worker of connection index; a malformed one closes that worker's
 * connection, since only a compromised or broken worker sends it. */
static void auth_conn_datagram(struct auth_server *server, size_t index, const unsigned char *buf,
			       size_t len)
{
	struct auth_msg msg;

	if (auth_msg_decode(buf, len, &msg) < 0 || !auth_msg_type_is_request(msg.type)) {
		log_warn("auth_request_malformed", "bytes=%zu", len);
		auth_conn_close(server, index);
	} else {
		auth_handle_message(server, server->conns[index], &msg);
	}
}

/* Reads one datagram from a worker. */
static void auth_conn_readable(struct auth_server *server, size_t index)
{
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE + 1];
	ssize_t len = recv(server->conns[index]->fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (len < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (len <= 0) {
		auth_conn_close(server, index);
		return;
	}
	auth_conn_datagram(server, index, buf, (size_t)len);
	sodium_memzero(buf, (size_t)len);
}

/* Takes fd as a new worker connection. */
static void auth_conn_add(struct auth_server *server, int fd)
{
	struct auth_conn *conn = xcalloc(1, sizeof(*conn));

	conn->fd = fd;
	conn->refs = 1;
	server->conns = xrealloc(server->conns, (server->conn_count + 1) * sizeof(*server->conns));
	server->conns[server->conn_count++] = conn;
}

/* A one-byte message that can carry one descriptor as SCM_RIGHTS. */
struct fd_message {
	char byte;
	struct iovec iov;
	_Alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
	struct msghdr msg;
};

static void fd_message_init(struct fd_message *m)
{
	memset(m, 0, sizeof(*m));
	m->byte = 'F';
	m->iov = (struct iovec){.iov_base = &m->byte, .iov_len = 1};
	m->msg = (struct msghdr){.msg_iov = &m->iov,
				 .msg_iovlen = 1,
				 .msg_control = m->control,
				 .msg_controllen = sizeof(m->control)};
}

int auth_server_send_fd(int control_fd, int fd)
{
	struct fd_message m;

	fd_message_init(&m);
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&m.msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	return sendmsg(control_fd, &m.msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

/* Receives a worker connection from the master. Returns 0, or -1 when the master has gone. */
static int auth_control_readable(struct auth_server *server, int control_fd)
{
	struct fd_message m;

	fd_message_init(&m);
	ssize_t len = recvmsg(control_fd, &m.msg, MSG_CMSG_CLOEXEC);
	if (len < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (len <= 0)
		return -1;
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&m.msg);
	if (cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS ||
	    cmsg->cmsg_len != CMSG_LEN(sizeof(int)))
		return 0;
	int fd;
	memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
	auth_conn_add(server, fd);
	return 0;
}

static void auth_take_finished(struct auth_server *server)
{
	struct auth_check *check;

	while ((check = auth_hasher_take_done(server->hasher)) != NULL) {
		struct auth_request *req = (struct auth_request *)check;
		server->checks_pending--;
		auth_check_finished(server, req);
		auth_request_free(&req);
	}
}

enum { POLL_CONTROL, POLL_HASHER, POLL_FIRST_CONN };

static void auth_server_loop(struct auth_server *server, int control_fd)
{
	struct pollfd *fds = NULL;

	for (;;) {
		size_t nfds = server->conn_count + POLL_FIRST_CONN;
		fds = xrealloc(fds, nfds * sizeof(*fds));
		fds[POLL_CONTROL] = (struct pollfd){.fd = control_fd, .events = POLLIN};
		fds[POLL_HASHER] =
		    (struct pollfd){.fd = auth_hasher_fd(server->hasher), .events = POLLIN};
		for (size_t i = 0; i < server->conn_count; i++)
			fds[i + POLL_FIRST_CONN] =
			    (struct pollfd){.fd = server->conns[i]->fd, .events = POLLIN};
		if (poll(fds, nfds, -1) < 0) {
			if (errno == EINTR)
				continue;
			fatal("poll failed: %s", strerror(errno));
		}
		if (fds[POLL_CONTROL].revents != 0 && auth_control_readable(server, control_fd) < 0)
			break;
		if (fds[POLL_HASHER].revents != 0)
			auth_take_finished(server);
		/* walk backwards: closing a connection moves the last one into its slot */
		for (size_t i = nfds - POLL_FIRST_CONN; i-- > 0;) {
			if (i < server->conn_count && fds[i + POLL_FIRST_CONN].revents != 0)
				auth_conn_readable(server, i);
		}
	}
	free(fds);
}

/* A secret for a password nobody knows, made like a new user's, so that checking an unknown user
 * costs what checking a real one does. */
static char *auth_make_dummy_secret(const struct buzon_config *config)
{
	unsigned char random[16];
	char password[33];
	const char *error = NULL;

	randombytes_buf(random, sizeof(random));
	sodium_bin2hex(password, sizeof(password), random, sizeof(random));
	char *secret = scheme_policy_hash(config, password, &error);
	if (secret == NULL)
		secret = password_hash("YESCRYPT", password, &error);
	if (secret == NULL)
		fatal("cannot make the dummy secret: %s", error != NULL ? error : "unknown");
	sodium_memzero(password, sizeof(password));
	return secret;
}

/* The enabled SASL mechanisms, from [auth] mechanisms (checked when the config was read). */
static void auth_server_mechs(struct auth_server *server)
{
	char *copy = xstrdup(server->config->auth_mechanisms), *saveptr = NULL;

	for (char *name = strtok_r(copy, " ", &saveptr); name != NULL;
	     name = strtok_r(NULL, " ", &saveptr)) {
		const struct sasl_mech *mech = sasl_mech_find(name);
		if (mech == NULL)
			continue;
		server->mechs =
		    xrealloc(server->mechs, (server->mech_count + 1) * sizeof(*server->mechs));
		server->mechs[server->mech_count++] = mech;
	}
	free(copy);
}

/* Builds the penalty table from [auth] (values checked by the master before it forked us). */
static void auth_server_penalties(struct auth_server *server)
{
	struct penalty_config pc;
	char *error = NULL;

	auth_penalty_config(server->config, &pc, &server->trusted, &error);
	if (error != NULL)
		fatal("[auth] penalties: %s", error);
	server->penalties = penalty_table_new(&pc);
	penalty_fingerprint_key_generate(server->fingerprint_key);
	randombytes_buf(server->fake_scram_key, sizeof(server->fake_scram_key));
}

int auth_penalty_config(const struct buzon_config *config, struct penalty_config *pc,
			struct net_list **trusted_r, char **error_r)
{
	const char *check_error = NULL;

	*error_r = NULL;
	*trusted_r = NULL;
	penalty_config_init(pc);
	pc->initial_ms = config->auth_failure_delay_ms;
	pc->max_ms = config->auth_failure_delay_max_ms;
	pc->ban_failures = config->auth_ban_failures;
	pc->ban_window_secs = config->auth_ban_window_secs;
	pc->ban_secs = config->auth_ban_secs;
	if (config->auth_trusted_networks != NULL &&
	    net_list_parse(config->auth_trusted_networks, trusted_r, error_r) < 0)
		return -1;
	pc->trusted = *trusted_r;
	if (penalty_config_check(pc, &check_error) < 0) {
		*error_r = xstrdup(check_error);
		net_list_free(trusted_r);
		return -1;
	}
	return 0;
}

/* Everything the auth process sets up before its sandbox and its hashing threads. */
static void auth_server_setup(struct auth_server *server)
{
	server->dummy_secret = auth_make_dummy_secret(server->config);
	auth_server_mechs(server);
	auth_server_penalties(server);
	(void)auth_db_refresh(server);
}

static void auth_server_free(struct auth_server *server)
{
	auth_hasher_stop(&server->hasher, auth_drop_check);
	while (server->conn_count > 0)
		auth_conn_close(server, server->conn_count - 1);
	free(server->conns);
	if (server->db_loaded)
		passwd_db_free(&server->db);
	free(server->dummy_secret);
	penalty_table_free(&server->penalties);
	net_list_free(&server->trusted);
	free(server->mechs);
	sodium_memzero(server->fingerprint_key, sizeof(server->fingerprint_key));
	sodium_memzero(server->fake_scram_key, sizeof(server->fake_scram_key));
}

int auth_server_main(const struct buzon_config *config, int control_fd, struct ban_table *bans)
{
	struct auth_server server = {.config = config, .bans = bans};

	if (sodium_init() < 0)
		fatal("sodium_init failed");
	/* Stop signals reach the whole process group (Ctrl-C, systemd); the auth process must
	 * outlive the workers' last sessions, so only the master decides: it closes control_fd. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);

	auth_server_setup(&server);
	/* the core count comes from /sys, which the sandbox closes; the sandbox comes before the
	 * hashing threads, which inherit the Landlock domain only if they start after it */
	unsigned int threads = auth_hasher_resolve_threads(config->auth_threads);
	char *sandbox_error = NULL;
	if (sandbox_apply(config, SANDBOX_KIND_AUTH, &sandbox_error) < 0)
		fatal("sandbox: %s", sandbox_error);
	server.hasher = auth_hasher_start(threads);
	log_info("auth_started", "threads=%u", auth_hasher_thread_count(server.hasher));

	auth_server_loop(&server, control_fd);

	auth_server_free(&server);
	log_info("auth_stopped", "%s", "");
	return 0;
}

/* ---- the seam for the fuzz target (auth_server_testing.h) ---- */

struct auth_server *auth_server_testing_new(const struct buzon_config *config,
					    struct ban_table *bans)
{
	struct auth_server *server = xcalloc(1, sizeof(*server));

	server->config = config;
	server->bans = bans;
	auth_server_setup(server);
	server->hasher = auth_hasher_start(config->auth_threads);
	return server;
}

void auth_server_testing_free(struct auth_server **serverp)
{
	auth_server_free(*serverp);
	x_free(serverp);
}

void auth_server_testing_add_conn(struct auth_server *server, int fd)
{
	auth_conn_add(server, fd);
}

/* The index of the open connection fd, or -1. */
static ssize_t auth_server_conn_index(const struct auth_server *server, int fd)
{
	for (size_t i = 0; i < server->conn_count; i++) {
		if (server->conns[i]->fd == fd)
			return (ssize_t)i;
	}
	return -1;
}

bool auth_server_testing_datagram(struct auth_server *server, int fd, const void *buf, size_t len)
{
	ssize_t index = auth_server_conn_index(server, fd);

	if (index < 0)
		fatal("auth_server_testing_datagram: fd %d is not an open connection", fd);
	auth_conn_datagram(server, (size_t)index, buf, len);
	return auth_server_conn_index(server, fd) >= 0;
}

void auth_server_testing_close_conn(struct auth_server *server, int fd)
{
	ssize_t index = auth_server_conn_index(server, fd);

	if (index >= 0)
		auth_conn_close(server, (size_t)index);
}

void auth_server_testing_settle(struct auth_server *server)
{
	while (server->checks_pending > 0) {
		struct pollfd pfd = {.fd = auth_hasher_fd(server->hasher), .events = POLLIN};
		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			fatal("poll failed: %s", strerror(errno));
		auth_take_finished(server);
	}
}

void auth_server_testing_forget_clients(struct auth_server *server)
{
	penalty_table_free(&server->penalties);
	net_list_free(&server->trusted);
	auth_server_penalties(server);
}

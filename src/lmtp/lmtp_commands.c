/* LMTP commands (RFC 2033, with RFC 5321 syntax, RFC 1870 SIZE, RFC 3030 CHUNKING, RFC 6531
 * SMTPUTF8): a table of verbs, the RCPT lookup through the auth process, and the per-recipient
 * replies once the message text has been delivered. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_client.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "lmtp/lmtp_session.h"
#include "store/store.h"

struct lmtp_command {
	const char *name;
	enum lmtp_outcome (*run)(struct lmtp_session *session, char *args);
};

void lmtp_transaction_reset(struct lmtp_session *session)
{
	if (session->delivery != NULL)
		delivery_abort(&session->delivery);
	for (size_t i = 0; i < session->recipient_count; i++) {
		free(session->recipients[i].address);
		free(session->recipients[i].user);
		free(session->recipients[i].maildir);
	}
	session->recipient_count = 0;
	x_free(&session->delivery_recipients);
	x_free(&session->sender);
	x_free(&session->pending_address);
	session->have_sender = false;
	session->size_hint = 0;
	session->smtputf8 = false;
	session->body_binary = false;
	session->text_started = false;
	session->text_too_big = false;
	session->text_failed = false;
	session->text_size = 0;
}

/* Parses "<path>" at *p into addr_r (LMTP_MAX_PATH + 1 octets) and moves *p past it. A source route
 * ("<@a,@b:user@c>") is dropped as RFC 5321 §4.1.1.3 asks. Returns -1 with the reply in *reply_r.
 */
static int lmtp_parse_path(char **p, char *addr_r, const char **reply_r)
{
	char *s = *p;
	bool quoted = false;
	size_t len = 0;

	*reply_r = "501 5.5.4 Syntax error in path (angle brackets required)";
	if (*s++ != '<')
		return -1;
	for (; *s != '\0' && (quoted || *s != '>'); s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return -1;
		if (*s == '"') {
			quoted = !quoted;
		} else if (*s == '\\' && quoted && s[1] != '\0') {
			/* RFC 5321 §4.1.2: a quoted pair escapes a printable octet, never a control
			 * byte (it would reach replies and logs) */
			if ((unsigned char)s[1] < 0x20 || s[1] == 0x7f)
				return -1;
			addr_r[len++] = *s++; /* the escaped octet follows */
		}
		if (len >= LMTP_MAX_PATH - 2) {
			*reply_r = "501 5.1.3 Path too long";
			return -1;
		}
		addr_r[len++] = *s;
	}
	if (*s != '>')
		return -1;
	addr_r[len] = '\0';
	*p = s + 1;
	if (addr_r[0] == '@') {
		char *colon = strchr(addr_r, ':');
		if (colon == NULL)
			return -1;
		memmove(addr_r, colon + 1, strlen(colon + 1) + 1);
	}
	return 0;
}

/* Skips "FROM:" or "TO:" (any case, blanks allowed after the colon as most servers do). Returns
 * NULL if the keyword is missing. */
static char *lmtp_skip_keyword(char *args, const char *keyword)
{
	size_t len = strlen(keyword);

	if (strncasecmp(args, keyword, len) != 0)
		return NULL;
	args += len;
	while (*args == ' ')
		args++;
	return args;
}

static bool lmtp_is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

/* ---- LHLO, RSET, NOOP, QUIT, VRFY and the refusals ---- */

static enum lmtp_outcome lmtp_cmd_lhlo(struct lmtp_session *session, char *args)
{
	if (args[0] == '\0') {
		lmtp_reply(session, "501 5.5.4 Syntax: LHLO hostname");
		return LMTP_OUTCOME_BAD;
	}
	lmtp_transaction_reset(session);
	session->lhlo_done = true;
	lmtp_reply(session, "250-%s", session->server->hostname);
	lmtp_reply(session, "250-PIPELINING");
	lmtp_reply(session, "250-ENHANCEDSTATUSCODES");
	lmtp_reply(session, "250-8BITMIME");
	lmtp_reply(session, "250-SMTPUTF8");
	lmtp_reply(session, "250-CHUNKING");
	lmtp_reply(session, "250 SIZE %llu",
		   (unsigned long long)session->server->config->lmtp_max_message_size);
	return LMTP_OUTCOME_OK;
}

static enum lmtp_outcome lmtp_cmd_helo(struct lmtp_session *session, char *args)
{
	lmtp_reply(session, "500 5.5.1 This is LMTP: use LHLO");
	return LMTP_OUTCOME_BAD;
}

static enum lmtp_outcome lmtp_cmd_rset(struct lmtp_session *session, char *args)
{
	lmtp_transaction_reset(session);
	lmtp_reply(session, "250 2.0.0 OK");
	return LMTP_OUTCOME_OK;
}

static enum lmtp_outcome lmtp_cmd_noop(struct lmtp_session *session, char *args)
{
	lmtp_reply(session, "250 2.0.0 OK");
	return LMTP_OUTCOME_OK;
}

static enum lmtp_outcome lmtp_cmd_quit(struct lmtp_session *session, char *args)
{
	lmtp_reply(session, "221 2.0.0 %s closing connection", session->server->hostname);
	return LMTP_OUTCOME_CLOSE;
}

/* RFC 5321 §3.5.3: 252 when the server will not say which addresses exist. */
static enum lmtp_outcome lmtp_cmd_vrfy(struct lmtp_session *session, char *args)
{
	lmtp_reply(session, "252 2.5.2 Cannot VRFY user, but will accept message for delivery");
	return LMTP_OUTCOME_OK;
}

/* ---- MAIL ---- */

/* One MAIL parameter. Returns -1 with the reply in *reply_r. */
static int lmtp_mail_param(struct lmtp_session *session, const char *param, const char **reply_r)
{
	uint64_t limit = session->server->config->lmtp_max_message_size;
	unsigned long long size;

	if (strncasecmp(param, "SIZE=", 5) == 0) {
		*reply_r = "501 5.5.4 Syntax error in SIZE";
		if (str_parse_uint(param + 5, 0, UINT64_MAX, &size) < 0)
			return -1;
		*reply_r = "552 5.3.4 Message size exceeds fixed maximum message size";
		if (limit != 0 && size > limit)
			return -1;
		session->size_hint = size;
		return 0;
	}
	if (strcasecmp(param, "BODY=7BIT") == 0 || strcasecmp(param, "BODY=8BITMIME") == 0)
		return 0;
	if (strcasecmp(param, "BODY=BINARYMIME") == 0) {
		session->body_binary = true;
		return 0;
	}
	if (strcasecmp(param, "SMTPUTF8") == 0) {
		session->smtputf8 = true;
		return 0;
	}
	*reply_r = "555 5.5.4 Unsupported MAIL parameter";
	return -1;
}

/* The parameters after the path, blank-separated. Returns -1 with the reply in *reply_r. */
static int lmtp_mail_params(struct lmtp_session *session, char *params, const char **reply_r)
{
	char *save = NULL;

	if (params[0] != '\0' && params[0] != ' ') {
		*reply_r = "501 5.5.4 Syntax error after the path";
		return -1;
	}
	for (char *param = strtok_r(params, " ", &save); param != NULL;
	     param = strtok_r(NULL, " ", &save))
		if (lmtp_mail_param(session, param, reply_r) < 0)
			return -1;
	return 0;
}

static enum lmtp_outcome lmtp_cmd_mail(struct lmtp_session *session, char *args)
{
	char address[LMTP_MAX_PATH + 1];
	const char *reply;
	char *p = lmtp_skip_keyword(args, "FROM:");

	if (!session->lhlo_done || session->have_sender) {
		lmtp_reply(session, "503 5.5.1 %s",
			   session->have_sender ? "Sender already given" : "Send LHLO first");
		return LMTP_OUTCOME_BAD;
	}
	if (p == NULL) {
		lmtp_reply(session, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return LMTP_OUTCOME_BAD;
	}
	if (lmtp_parse_path(&p, address, &reply) < 0 || lmtp_mail_params(session, p, &reply) < 0) {
		session->size_hint = 0;
		session->smtputf8 = false;
		session->body_binary = false;
		lmtp_reply(session, "%s", reply);
		return reply[0] == '5' && reply[1] == '0' ? LMTP_OUTCOME_BAD : LMTP_OUTCOME_OK;
	}
	if (!session->smtputf8 && !lmtp_is_ascii(address)) {
		session->size_hint = 0;
		session->body_binary = false;
		lmtp_reply(session, "553 5.6.7 Non-ASCII address requires SMTPUTF8");
		return LMTP_OUTCOME_OK;
	}
	session->sender = xstrdup(address);
	session->have_sender = true;
	lmtp_reply(session, "250 2.1.0 Sender OK");
	return LMTP_OUTCOME_OK;
}

/* ---- RCPT ---- */

static void lmtp_rcpt_answer(void *context, const struct auth_reply *reply);

static enum lmtp_outcome lmtp_cmd_rcpt(struct lmtp_session *session, char *args)
{
	char address[LMTP_MAX_PATH + 1];
	const char *reply;
	char *p = lmtp_skip_keyword(args, "TO:");

	if (!session->have_sender || session->text_started) {
		lmtp_reply(session, "503 5.5.1 Need MAIL before RCPT");
		return LMTP_OUTCOME_BAD;
	}
	if (p == NULL || lmtp_parse_path(&p, address, &reply) < 0) {
		lmtp_reply(session, "%s",
			   p == NULL ? "501 5.5.4 Syntax: RCPT TO:<address>" : reply);
		return LMTP_OUTCOME_BAD;
	}
	if (*p != '\0') {
		lmtp_reply(session, "555 5.5.4 Unsupported RCPT parameter");
		return LMTP_OUTCOME_OK;
	}
	if (address[0] == '\0' || (!session->smtputf8 && !lmtp_is_ascii(address))) {
		lmtp_reply(session, "%s",
			   address[0] == '\0' ? "501 5.1.3 Empty recipient address"
					      : "553 5.6.7 Non-ASCII address requires SMTPUTF8");
		return LMTP_OUTCOME_OK;
	}
	if (session->recipient_count >= LMTP_MAX_RECIPIENTS) {
		lmtp_reply(session, "452 4.5.3 Too many recipients");
		return LMTP_OUTCOME_OK;
	}
	struct auth_client *auth = session->server->auth;
	struct auth_msg_builder *b = auth_client_begin(auth, AUTH_MSG_LOOKUP, 0);
	auth_msg_add_str(b, AUTH_FIELD_USER, address);
	session->pending_address = xstrdup(address);
	session->auth_waiting = true;
	session->auth_request = auth_client_send(auth, lmtp_rcpt_answer, session);
	return LMTP_OUTCOME_WAIT;
}

static void lmtp_reply_quota_full(struct lmtp_session *session, const char *address)
{
	if (session->server->config->lmtp_quota_full_tempfail)
		lmtp_reply(session, "452 4.2.2 <%s> Mailbox full", address);
	else
		lmtp_reply(session, "552 5.2.2 <%s> Mailbox full", address);
}

/* Accepts a resolved recipient after its quota check. */
static void lmtp_rcpt_accept(struct lmtp_session *session, const struct auth_reply *reply,
			     const char *maildir)
{
	const char *address = session->pending_address;
	struct delivery_recipient check = {.address = address,
					   .user = reply->user,
					   .maildir = maildir,
					   .quota_bytes = reply->quota_bytes,
					   .quota_messages = reply->quota_messages};
	char *error = NULL;
	enum delivery_result result = delivery_quota_check(&check, session->size_hint, &error);

	if (result != DELIVERY_OK) {
		log_info("rcpt_refused", "session=%s to=%s user=%s reason=%s", session->id,
			 log_quote(address), log_quote(reply->user),
			 log_quote(error != NULL ? error : "quota"));
		free(error);
		if (result == DELIVERY_OVER_QUOTA)
			lmtp_reply_quota_full(session, address);
		else
			lmtp_reply(session, "451 4.3.0 <%s> Temporary failure", address);
		return;
	}
	free(error);
	struct lmtp_recipient *rcpt = &session->recipients[session->recipient_count++];
	rcpt->address = xstrdup(address);
	rcpt->user = xstrdup(reply->user);
	rcpt->maildir = xstrdup(maildir);
	rcpt->quota_bytes = reply->quota_bytes;
	rcpt->quota_messages = reply->quota_messages;
	lmtp_reply(session, "250 2.1.5 <%s> Recipient OK", address);
}

/* Turns the auth process's answer into the RCPT reply. */
static void lmtp_rcpt_resolve(struct lmtp_session *session, const struct auth_reply *reply)
{
	const char *address = session->pending_address;
	const char *maildir = NULL;
	enum auth_result result =
	    reply->type == AUTH_MSG_RESULT ? reply->result : AUTH_RESULT_TEMPFAIL;

	if (result == AUTH_RESULT_FAIL || result == AUTH_RESULT_BANNED) {
		lmtp_reply(session, "550 5.1.1 <%s> User unknown", address);
		return;
	}
	if (result == AUTH_RESULT_OK && reply->user != NULL && reply->location != NULL &&
	    store_backend_find(reply->location, &maildir) != &store_backend_maildir) {
		log_error("rcpt_location_unsupported", "session=%s to=%s location=%s", session->id,
			  log_quote(address), log_quote(reply->location));
		maildir = NULL;
	}
	if (result != AUTH_RESULT_OK || maildir == NULL) {
		lmtp_reply(session, "451 4.3.0 <%s> Temporary failure", address);
		return;
	}
	lmtp_rcpt_accept(session, reply, maildir);
}

static void lmtp_rcpt_answer(void *context, const struct auth_reply *reply)
{
	struct lmtp_session *session = context;

	if (reply->type != AUTH_MSG_RESULT) /* a lookup never converses: end it */
		auth_client_cancel(session->server->auth, session->auth_request);
	session->auth_request = 0;
	session->auth_waiting = false;
	lmtp_rcpt_resolve(session, reply);
	x_free(&session->pending_address);
	lmtp_session_resume(session, LMTP_OUTCOME_OK);
}

/* ---- DATA and BDAT ---- */

int lmtp_text_begin(struct lmtp_session *session)
{
	enum delivery_result result;
	char *error = NULL;
	size_t count = session->recipient_count;

	session->text_started = true;
	session->at_line_start = true;
	session->dot_line = false;
	session->cr_pending = false;
	session->line_after_crlf = true;
	session->prev_bare_lf = false;
	session->held_lf = false;
	session->last_octet = -1;
	session->line_len = 0;
	session->text_size = 0;
	session->delivery_recipients = xcalloc(count, sizeof(*session->delivery_recipients));
	for (size_t i = 0; i < count; i++) {
		struct delivery_recipient *d = &session->delivery_recipients[i];
		d->address = session->recipients[i].address;
		d->user = session->recipients[i].user;
		d->maildir = session->recipients[i].maildir;
		d->quota_bytes = session->recipients[i].quota_bytes;
		d->quota_messages = session->recipients[i].quota_messages;
	}
	session->delivery =
	    delivery_begin(session->delivery_recipients, count, session->sender, &result, &error);
	if (session->delivery != NULL)
		return 0;
	log_error("delivery_begin_failed", "session=%s error=%s", session->id,
		  log_quote(error != NULL ? error : "unknown"));
	free(error);
	session->text_failed = true;
	return -1;
}

/* Why DATA or BDAT cannot start now, or NULL. */
static const char *lmtp_text_refusal(struct lmtp_session *session)
{
	if (!session->have_sender)
		return "503 5.5.1 Need MAIL and RCPT first";
	if (session->recipient_count == 0)
		return "503 5.5.1 No valid recipients"; /* RFC 2033 §4.2 */
	return NULL;
}

static enum lmtp_outcome lmtp_cmd_data(struct lmtp_session *session, char *args)
{
	const char *refusal = lmtp_text_refusal(session);

	if (refusal == NULL && (session->text_started || session->body_binary))
		refusal = "503 5.5.1 DATA cannot follow BDAT or BODY=BINARYMIME";
	if (args[0] != '\0' || refusal != NULL) {
		lmtp_reply(session, "%s", refusal != NULL ? refusal : "501 5.5.4 Syntax: DATA");
		return LMTP_OUTCOME_BAD;
	}
	if (lmtp_text_begin(session) < 0) {
		/* no 354: the client keeps its transaction and may RSET or retry DATA */
		session->text_started = false;
		session->text_failed = false;
		x_free(&session->delivery_recipients);
		lmtp_reply(session, "451 4.3.0 Temporary failure, try again later");
		return LMTP_OUTCOME_OK;
	}
	lmtp_reply(session, "354 Start mail input; end with <CRLF>.<CRLF>");
	session->input = LMTP_INPUT_DATA;
	return LMTP_OUTCOME_TEXT;
}

/* Parses "n [LAST]". Returns -1 on bad syntax. */
static int lmtp_bdat_parse(char *args, uint64_t *size_r, bool *last_r)
{
	char *space = strchr(args, ' ');
	unsigned long long size;

	*last_r = false;
	if (space != NULL) {
		*space = '\0';
		if (strcasecmp(space + 1, "LAST") != 0)
			return -1;
		*last_r = true;
	}
	if (str_parse_uint(args, 0, UINT64_MAX, &size) < 0)
		return -1;
	*size_r = size;
	return 0;
}

static enum lmtp_outcome lmtp_cmd_bdat(struct lmtp_session *session, char *args)
{
	const char *refusal = lmtp_text_refusal(session);

	if (lmtp_bdat_parse(args, &session->bdat_remaining, &session->bdat_last) < 0) {
		/* the chunk size is unknown, so its octets cannot be skipped: they will be read
		 * as commands and refused */
		lmtp_reply(session, "501 5.5.4 Syntax: BDAT size [LAST]");
		return LMTP_OUTCOME_BAD;
	}
	session->bdat_size = session->bdat_remaining;
	session->input = LMTP_INPUT_BDAT;
	if (refusal != NULL) {
		session->bdat_discard = true; /* replied after the chunk, in order */
		return LMTP_OUTCOME_TEXT;
	}
	if (!session->text_started)
		(void)lmtp_text_begin(session);
	return LMTP_OUTCOME_TEXT;
}

/* ---- the end of the message text ---- */

/* The metrics' name for what became of one recipient's copy. */
static enum metrics_delivery_result lmtp_delivery_metric(enum delivery_result result)
{
	switch (result) {
	case DELIVERY_OK:
		return METRICS_DELIVERY_DELIVERED;
	case DELIVERY_OVER_QUOTA:
		return METRICS_DELIVERY_OVER_QUOTA;
	case DELIVERY_PERMFAIL:
		return METRICS_DELIVERY_PERMFAIL;
	case DELIVERY_NO_SPACE:
		return METRICS_DELIVERY_NO_SPACE;
	case DELIVERY_TEMPFAIL:
		break;
	}
	return METRICS_DELIVERY_TEMPFAIL;
}

static void lmtp_text_reply_one(struct lmtp_session *session, struct delivery_recipient *d)
{
	const char *reason = d->error != NULL ? d->error : "unknown";

	metrics_count_delivery(lmtp_delivery_metric(d->result), session->text_size);
	if (d->result == DELIVERY_OK) {
		session->delivered++;
		log_info("delivered", "session=%s from=%s to=%s user=%s size=%llu", session->id,
			 log_quote(session->sender), log_quote(d->address), log_quote(d->user),
			 (unsigned long long)session->text_size);
		lmtp_reply(session, "250 2.0.0 <%s> delivered", d->address);
		return;
	}
	log_info("delivery_failed", "session=%s from=%s to=%s user=%s size=%llu reason=%s",
		 session->id, log_quote(session->sender), log_quote(d->address), log_quote(d->user),
		 (unsigned long long)session->text_size, log_quote(reason));
	switch (d->result) {
	case DELIVERY_OVER_QUOTA:
		lmtp_reply_quota_full(session, d->address);
		break;
	case DELIVERY_PERMFAIL:
		lmtp_reply(session, "554 5.3.0 <%s> delivery failed", d->address);
		break;
	case DELIVERY_NO_SPACE: /* RFC 5321's 452, RFC 3463's "mail system full" */
		lmtp_reply(session, "452 4.3.1 <%s> Insufficient system storage", d->address);
		break;
	case DELIVERY_TEMPFAIL:
	case DELIVERY_OK:
		lmtp_reply(session, "451 4.3.0 <%s> temporary failure", d->address);
		break;
	}
}

/* Every recipient gets the same refusal for a message that was too big. */
static void lmtp_text_reply_too_big(struct lmtp_session *session)
{
	for (size_t i = 0; i < session->recipient_count; i++) {
		struct delivery_recipient *d = &session->delivery_recipients[i];
		metrics_count_delivery(METRICS_DELIVERY_TOO_BIG, 0);
		log_info("delivery_failed",
			 "session=%s from=%s to=%s user=%s size=%llu "
			 "reason=too_big",
			 session->id, log_quote(session->sender), log_quote(d->address),
			 log_quote(d->user), (unsigned long long)session->text_size);
		lmtp_reply(session, "552 5.3.4 <%s> Message too big for system", d->address);
	}
}

void lmtp_text_finish(struct lmtp_session *session)
{
	size_t count = session->recipient_count;

	session->transactions++;
	session->recipients_total += (unsigned int)count;
	if (session->text_too_big) {
		lmtp_text_reply_too_big(session);
	} else {
		if (session->delivery != NULL)
			(void)delivery_finish(&session->delivery);
		else
			for (size_t i = 0; i < count; i++)
				session->delivery_recipients[i].result = DELIVERY_TEMPFAIL;
		for (size_t i = 0; i < count; i++)
			lmtp_text_reply_one(session, &session->delivery_recipients[i]);
	}
	for (size_t i = 0; i < count; i++)
		x_free(&session->delivery_recipients[i].error);
	lmtp_transaction_reset(session);
}

/* ---- dispatch ---- */

/* The last row catches every verb not above. */
static enum lmtp_outcome lmtp_cmd_unknown(struct lmtp_session *session, char *args)
{
	lmtp_reply(session, "500 5.5.2 Command not recognized");
	return LMTP_OUTCOME_BAD;
}

static const struct lmtp_command lmtp_commands[] = {
    {"LHLO", lmtp_cmd_lhlo}, {"MAIL", lmtp_cmd_mail}, {"RCPT", lmtp_cmd_rcpt},
    {"DATA", lmtp_cmd_data}, {"BDAT", lmtp_cmd_bdat}, {"RSET", lmtp_cmd_rset},
    {"NOOP", lmtp_cmd_noop}, {"QUIT", lmtp_cmd_quit}, {"VRFY", lmtp_cmd_vrfy},
    {"HELO", lmtp_cmd_helo}, {"EHLO", lmtp_cmd_helo}, {NULL, lmtp_cmd_unknown},
};

enum lmtp_outcome lmtp_command_run(struct lmtp_session *session, char *line)
{
	char *args = strchr(line, ' ');
	size_t verb_len = args != NULL ? (size_t)(args - line) : strlen(line);
	const struct lmtp_command *cmd = lmtp_commands;

	if (args != NULL)
		args = str_trim(args);
	else
		args = line + verb_len;
	while (cmd->name != NULL &&
	       (verb_len != strlen(cmd->name) || strncasecmp(line, cmd->name, verb_len) != 0))
		cmd++;
	return cmd->run(session, args);
}

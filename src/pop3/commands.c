/* The POP3 commands of RFC 1939 and RFC 2449: one table says in which states each command is valid
 * and how many arguments it takes; the dispatcher checks both before a handler runs, and each
 * handler replies and returns an outcome for the session loop. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_client.h"
#include "auth/passwd_file.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "pop3/commands.h"
#include "pop3/parse.h"
#include "pop3/policy.h"
#include "pop3/session.h"
#include "pop3/takeover.h"
#include "pop3/worker.h"

#define ALL_STATES (POP3_STATE_AUTHORIZATION | POP3_STATE_TRANSACTION)
/* Slice read from a message file per step of RETR/TOP. */
#define POP3_READ_SLICE (32 * 1024)
/* The largest TOP line count accepted; larger values mean "all" in practice but are refused to
 * keep the parser strict. */
#define POP3_TOP_MAX_LINES 2147483647UL

typedef enum pop3_outcome pop3_command_fn(struct pop3_session *session,
					  const struct pop3_command_line *cmd);

struct pop3_command {
	const char *name;
	unsigned int states;
	unsigned int min_args, max_args;
	pop3_command_fn *run;
};

/* ---- helpers ---- */

const char *pop3_store_error_code(enum store_error kind)
{
	switch (kind) {
	case STORE_ERROR_IN_USE:
		return "[IN-USE]";
	case STORE_ERROR_PERM:
		return "[SYS/PERM]";
	default:
		return "[SYS/TEMP]";
	}
}

/* Resolves a message-number argument; replies -ERR and returns -1 if it is not a live message. */
static int pop3_message_arg(struct pop3_session *session, const char *arg, size_t *index_r)
{
	if (pop3_parse_msgnum(arg, session->box->count, index_r) < 0) {
		pop3_reply_err(session, "No such message");
		return -1;
	}
	if (session->deleted[*index_r]) {
		pop3_reply_err(session, "Message %zu is deleted", *index_r + 1);
		return -1;
	}
	return 0;
}

static void pop3_count_live(struct pop3_session *session, size_t *count_r, uint64_t *size_r)
{
	*count_r = session->box->count - session->deleted_count;
	*size_r = session->box->total_size - session->deleted_size;
}

/* ---- AUTHORIZATION: USER, PASS, APOP, AUTH and UTF8 are in login.c ---- */

/* True where STLS is offered: TLS is configured, allowed on plain listeners, not yet on. */
static bool pop3_stls_offered(const struct pop3_session *session)
{
	return session->worker->tls_ctx != NULL && session->worker->config->stls && !session->tls;
}

static enum pop3_outcome pop3_cmd_stls(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	if (session->tls) {
		pop3_reply_err(session, "TLS is already active");
		return POP3_OUTCOME_BAD;
	}
	if (!pop3_stls_offered(session)) {
		pop3_reply_err(session, "STLS is not available");
		return POP3_OUTCOME_BAD;
	}
	pop3_reply_ok(session, "Begin TLS negotiation now");
	/* the +OK is already in the plain output, which the TLS layer writes out first */
	pop3_session_start_tls(session);
	return POP3_OUTCOME_OK;
}

/* ---- both states ---- */

static enum pop3_outcome pop3_cmd_capa(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	struct evbuffer *out = bufferevent_get_output(session->bev);

	/* RFC 2449 §5: what is announced before login stays announced after it; RFC 2595 §4:
	 * after STLS the list may change (no STLS, USER where plaintext is now allowed) */
	pop3_reply_ok(session, "Capability list follows");
	static const char fixed[] = "TOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n";
	evbuffer_add(out, fixed, sizeof(fixed) - 1);
	pop3_capa_policies(session, out);
	if (pop3_session_cleartext_allowed(session))
		evbuffer_add(out, "USER\r\n", 6);
	if (pop3_stls_offered(session))
		evbuffer_add(out, "STLS\r\n", 6);
	/* RFC 6856: UTF-8 user names and passwords are accepted with USER/PASS too */
	evbuffer_add(out, "UTF8 USER\r\n", 11);
	evbuffer_add(out, "LANG\r\n", 6); /* RFC 6856 §3 */
	pop3_capa_sasl(session, out);
	if (session->state == POP3_STATE_TRANSACTION)
		evbuffer_add_printf(out, "IMPLEMENTATION %s\r\n", session->worker->implementation);
	evbuffer_add(out, ".\r\n", 3);
	return POP3_OUTCOME_OK;
}

/* Freeing a snapshot of this many messages is worth a trip to the offload threads (a 100,000
 * message one takes milliseconds); smaller ones are closed on the spot. */
#define POP3_CLOSE_OFFLOAD_MIN 1000

/* A QUIT purges at most this many messages from the undelete area, so that its reply never waits
 * for a large purge (a few ms of unlinks); the background purge takes the rest. */
#define POP3_COMMIT_PURGE_MAX 200

/* QUIT's commit unlinks, renames and fsyncs: it runs on the worker's offload threads. The job owns
 * the snapshot and the session's marks from submission on, and unlocks the maildrop when done, so
 * a session that goes away meanwhile changes nothing about the outcome. */
struct pop3_commit_job {
	struct pop3_store_job base; /* first: the session points at it while waiting */
	struct store_mailbox *box;
	bool *deleted;
	bool *retrieved;
	bool mark_seen;
	bool apply; /* false: nothing to change, only the unlock (of a big snapshot) */
	struct store_policy policy;	   /* the undelete window and the user's EXPIRE */
	struct store_commit_report report; /* what EXPIRE and the purge did */
	size_t deleted_count;
	size_t live;
	char *session_id;
	char *user;
	enum store_error kind;
	char *error;
	int ret;
};

static void pop3_commit_job_run(struct offload_job *job)
{
	struct pop3_commit_job *commit = (struct pop3_commit_job *)job;
	struct store_changes changes = {.deleted = commit->deleted,
					.retrieved = commit->retrieved,
					.mark_seen = commit->mark_seen,
					.policy = &commit->policy,
					.report_r = &commit->report};

	if (commit->apply)
		commit->ret = commit->box->backend->commit(commit->box, &changes, &commit->kind,
							   &commit->error);
	/* unlock now, not when the connection is gone: a client that reconnects as soon as it
	 * reads the +OK must not find its own old session holding the maildrop */
	commit->box->backend->close(&commit->box);
}

static void pop3_commit_job_done(struct offload_job *job)
{
	struct pop3_commit_job *commit = (struct pop3_commit_job *)job;
	struct pop3_session *session = commit->base.session;

	if (!job->ran) {
		/* shutdown before it started: nothing was changed, which is what SIGTERM means */
		commit->box->backend->close(&commit->box);
		if (commit->apply) {
			commit->ret = -1;
			commit->kind = STORE_ERROR_TEMP;
		}
	}
	if (commit->ret >= 0 && commit->apply)
		metrics_count_deleted(commit->deleted_count);
	if (commit->ret < 0)
		log_error("commit_failed", "session=%s user=%s error=%s", commit->session_id,
			  log_quote(commit->user),
			  log_quote(commit->error != NULL ? commit->error : "not run"));
	else if (session == NULL)
		log_info("commit_done", "session=%s user=%s deleted=%zu after=disconnect",
			 commit->session_id, log_quote(commit->user), commit->deleted_count);
	if (session != NULL) {
		session->store_job = NULL;
		session->store_waiting = false;
		if (commit->ret < 0) {
			/* not "could not be deleted": the deletions may all have succeeded and only
			 * the index or flags failed; either way nothing else was touched */
			pop3_reply_err(
			    session, "%s The update could not be completed, try again later",
			    commit->kind == STORE_ERROR_PERM ? "[SYS/PERM]" : "[SYS/TEMP]");
		} else if (!commit->apply) {
			pop3_reply_ok(session, "Logging out, %zu messages left", commit->live);
		} else if (commit->report.expired > 0) {
			/* RFC 2449 EXPIRE removed retrieved messages the client had left */
			session->committed_deletions = commit->deleted_count;
			pop3_reply_ok(session,
				      "Logging out, %zu messages deleted and %zu expired, %zu left",
				      commit->deleted_count, commit->report.expired,
				      commit->live - commit->report.expired);
		} else {
			session->committed_deletions = commit->deleted_count;
			pop3_reply_ok(session, "Logging out, %zu messages deleted, %zu left",
				      commit->deleted_count, commit->live);
		}
		pop3_session_resume(session, POP3_OUTCOME_CLOSE);
	}
	free(commit->deleted);
	free(commit->retrieved);
	free(commit->session_id);
	free(commit->user);
	free(commit->error);
	free(commit);
}

static enum pop3_outcome pop3_quit_commit(struct pop3_session *session)
{
	bool mark_seen = session->worker->config->retr_marks_seen;
	size_t live;
	uint64_t size;

	session->close_reason = "quit";
	/* from here the maildrop is being released (or committed): no takeover may end it */
	pop3_takeover_committing(session);
	pop3_count_live(session, &live, &size);
	struct store_policy policy = {
	    .deleted_retention_secs = session->worker->config->deleted_retention_secs,
	    .expire_days = session->expire_days,
	    .purge_max = POP3_COMMIT_PURGE_MAX,
	    .now = wall_now()};
	/* a RETR is recorded (its time, for EXPIRE) even when no Seen flag is set, but a server
	 * that neither marks Seen nor expires mail has no reason to rewrite the index for it */
	bool record_retrievals =
	    session->retrieved_count > 0 && (mark_seen || session->expire_days >= 0);
	bool apply = session->deleted_count > 0 || record_retrievals ||
		     store_upkeep_due(session->box, &policy);
	if (!apply && session->box->count < POP3_CLOSE_OFFLOAD_MIN) {
		session->box->backend->close(&session->box); /* unlock before the +OK */
		pop3_reply_ok(session, "Logging out, %zu messages left", live);
		return POP3_OUTCOME_CLOSE;
	}
	struct pop3_commit_job *commit = xcalloc(1, sizeof(*commit));
	commit->apply = apply;
	commit->base.job.run = pop3_commit_job_run;
	commit->base.job.done = pop3_commit_job_done;
	commit->base.session = session;
	commit->box = session->box;
	commit->deleted = session->deleted;
	commit->retrieved = session->retrieved;
	commit->mark_seen = mark_seen;
	commit->policy = policy;
	commit->deleted_count = session->deleted_count;
	commit->live = live;
	commit->session_id = xstrdup(session->id);
	commit->user = xstrdup(session->login_user);
	session->box = NULL;
	session->deleted = NULL;
	session->retrieved = NULL;
	session->store_job = &commit->base;
	session->store_waiting = true;
	offload_submit(session->worker->offload, &commit->base.job);
	return POP3_OUTCOME_WAIT;
}

static enum pop3_outcome pop3_cmd_quit(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	if (session->state == POP3_STATE_TRANSACTION)
		return pop3_quit_commit(session);
	session->close_reason = "quit";
	pop3_reply_ok(session, "Logging out");
	return POP3_OUTCOME_CLOSE;
}

/* ---- TRANSACTION ---- */

static enum pop3_outcome pop3_cmd_stat(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	size_t live;
	uint64_t size;

	pop3_count_live(session, &live, &size);
	pop3_reply_ok(session, "%zu %llu", live, (unsigned long long)size);
	return POP3_OUTCOME_OK;
}

/* LIST and UIDL: one message with an argument, else a streamed listing. */
static enum pop3_outcome pop3_listing(struct pop3_session *session,
				      const struct pop3_command_line *cmd,
				      enum pop3_stream_kind kind)
{
	size_t index;

	if (cmd->arg_count == 1) {
		if (pop3_message_arg(session, cmd->args[0], &index) < 0)
			return POP3_OUTCOME_BAD;
		const struct store_message *msg = &session->box->messages[index];
		if (kind == POP3_STREAM_LIST)
			pop3_reply_ok(session, "%zu %llu", index + 1,
				      (unsigned long long)msg->size);
		else
			pop3_reply_ok(session, "%zu %s", index + 1, msg->uidl);
		return POP3_OUTCOME_OK;
	}
	size_t live;
	uint64_t size;
	pop3_count_live(session, &live, &size);
	if (kind == POP3_STREAM_LIST)
		pop3_reply_ok(session, "%zu messages (%llu octets)", live,
			      (unsigned long long)size);
	else
		pop3_reply_ok(session, "Unique-ID listing follows");
	session->stream = kind;
	session->stream_pos = 0;
	return POP3_OUTCOME_STREAM;
}

static enum pop3_outcome pop3_cmd_list(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	return pop3_listing(session, cmd, POP3_STREAM_LIST);
}

static enum pop3_outcome pop3_cmd_uidl(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	return pop3_listing(session, cmd, POP3_STREAM_UIDL);
}

/* RETR and TOP: opens the message and starts streaming it. */
static enum pop3_outcome pop3_send_message(struct pop3_session *session, size_t index,
					   long top_lines)
{
	enum store_error kind = STORE_ERROR_TEMP;
	char *error = NULL;
	const struct store_message *msg = &session->box->messages[index];

	session->reader = session->box->backend->read_open(session->box, index, &kind, &error);
	if (session->reader == NULL) {
		log_error("message_open_failed", "session=%s user=%s uidl=%s error=%s", session->id,
			  log_quote(session->login_user), log_quote(msg->uidl),
			  log_quote(error != NULL ? error : ""));
		free(error);
		pop3_reply_err(session, "%s Message %zu cannot be read now",
			       pop3_store_error_code(kind), index + 1);
		return POP3_OUTCOME_OK;
	}
	if (top_lines < 0)
		pop3_reply_ok(session, "%llu octets", (unsigned long long)msg->size);
	else
		pop3_reply_ok(session, "Top of message follows");
	dotstuff_init(&session->dotstuff, top_lines);
	session->stream = POP3_STREAM_MESSAGE;
	session->stream_index = index;
	session->stream_is_retr = top_lines < 0;
	return POP3_OUTCOME_STREAM;
}

static enum pop3_outcome pop3_cmd_retr(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	size_t index;

	if (pop3_message_arg(session, cmd->args[0], &index) < 0)
		return POP3_OUTCOME_BAD;
	return pop3_send_message(session, index, -1);
}

static enum pop3_outcome pop3_cmd_top(struct pop3_session *session,
				      const struct pop3_command_line *cmd)
{
	size_t index;
	unsigned long lines;

	if (pop3_message_arg(session, cmd->args[0], &index) < 0)
		return POP3_OUTCOME_BAD;
	if (pop3_parse_line_count(cmd->args[1], POP3_TOP_MAX_LINES, &lines) < 0) {
		pop3_reply_err(session, "Invalid number of lines");
		return POP3_OUTCOME_BAD;
	}
	return pop3_send_message(session, index, (long)lines);
}

static enum pop3_outcome pop3_cmd_dele(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	size_t index;

	if (pop3_message_arg(session, cmd->args[0], &index) < 0)
		return POP3_OUTCOME_BAD;
	session->deleted[index] = true;
	session->deleted_count++;
	session->deleted_size += session->box->messages[index].size;
	pop3_reply_ok(session, "Message %zu deleted", index + 1);
	return POP3_OUTCOME_OK;
}

static enum pop3_outcome pop3_cmd_noop(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	pop3_reply_ok(session, "%s", "");
	return POP3_OUTCOME_OK;
}

static enum pop3_outcome pop3_cmd_rset(struct pop3_session *session,
				       const struct pop3_command_line *cmd)
{
	memset(session->deleted, 0, session->box->count * sizeof(bool));
	session->deleted_count = 0;
	session->deleted_size = 0;
	pop3_reply_ok(session, "%zu messages (%llu octets)", session->box->count,
		      (unsigned long long)session->box->total_size);
	return POP3_OUTCOME_OK;
}

/* The command table. PASS takes the rest of the line (RFC 1939 §7: spaces may be part of the
 * password), so its argument count is checked by its handler. A new command also goes into
 * metrics_command_names (src/core/metrics.c), or its metrics count as "unknown". */
static const struct pop3_command pop3_commands[] = {
    {"USER", POP3_STATE_AUTHORIZATION, 1, 1, pop3_cmd_user},
    {"PASS", POP3_STATE_AUTHORIZATION, 0, POP3_MAX_ARGS + 1, pop3_cmd_pass},
    {"APOP", POP3_STATE_AUTHORIZATION, 2, 2, pop3_cmd_apop},
    {"AUTH", POP3_STATE_AUTHORIZATION, 0, 2, pop3_cmd_auth},
    {"UTF8", POP3_STATE_AUTHORIZATION, 0, 0, pop3_cmd_utf8},
    {"STLS", POP3_STATE_AUTHORIZATION, 0, 0, pop3_cmd_stls},
    {"CAPA", ALL_STATES, 0, 0, pop3_cmd_capa},
    {"QUIT", ALL_STATES, 0, 0, pop3_cmd_quit},
    {"STAT", POP3_STATE_TRANSACTION, 0, 0, pop3_cmd_stat},
    {"LIST", POP3_STATE_TRANSACTION, 0, 1, pop3_cmd_list},
    {"RETR", POP3_STATE_TRANSACTION, 1, 1, pop3_cmd_retr},
    {"DELE", POP3_STATE_TRANSACTION, 1, 1, pop3_cmd_dele},
    {"NOOP", POP3_STATE_TRANSACTION, 0, 0, pop3_cmd_noop},
    {"RSET", POP3_STATE_TRANSACTION, 0, 0, pop3_cmd_rset},
    {"TOP", POP3_STATE_TRANSACTION, 2, 2, pop3_cmd_top},
    {"UIDL", POP3_STATE_TRANSACTION, 0, 1, pop3_cmd_uidl},
    {"LANG", ALL_STATES, 0, 1, pop3_cmd_lang},
};

static const struct pop3_command *pop3_command_find(const char *keyword)
{
	for (size_t i = 0; i < ARRAY_SIZE(pop3_commands); i++) {
		if (strcmp(pop3_commands[i].name, keyword) == 0)
			return &pop3_commands[i];
	}
	return NULL;
}

static enum pop3_outcome pop3_command_dispatch(struct pop3_session *session,
					       const struct pop3_command_line *cmd)
{
	const struct pop3_command *command = pop3_command_find(cmd->keyword);

	if (command == NULL) {
		pop3_reply_err(session, "Unknown command");
		return POP3_OUTCOME_BAD;
	}
	if ((command->states & session->state) == 0) {
		pop3_reply_err(session, "%s is not valid in this state", command->name);
		return POP3_OUTCOME_BAD;
	}
	if (cmd->arg_count < command->min_args || cmd->arg_count > command->max_args) {
		pop3_reply_err(session, "Wrong number of arguments for %s", command->name);
		return POP3_OUTCOME_BAD;
	}
	/* a client that has gone cannot read a listing; its later commands (DELE, QUIT) still run
	 */
	if (session->peer_gone && (command->run == pop3_cmd_retr || command->run == pop3_cmd_top ||
				   command->run == pop3_cmd_list || command->run == pop3_cmd_uidl))
		return POP3_OUTCOME_OK;
	return command->run(session, cmd);
}

enum pop3_outcome pop3_command_run(struct pop3_session *session, const char *line)
{
	struct pop3_command_line cmd;
	enum pop3_outcome outcome;

	enum pop3_parse_result parsed = pop3_parse_line(line, &cmd);
	metrics_command_start(&session->command_timer,
			      parsed == POP3_PARSE_OK ? cmd.keyword : NULL);
	switch (parsed) {
	case POP3_PARSE_OK:
		outcome = pop3_command_dispatch(session, &cmd);
		break;
	case POP3_PARSE_EMPTY:
		pop3_reply_err(session, "Empty command");
		outcome = POP3_OUTCOME_BAD;
		break;
	case POP3_PARSE_BAD_BYTES:
		pop3_reply_err(session, "Control characters are not allowed in commands");
		outcome = POP3_OUTCOME_BAD;
		break;
	default:
		pop3_reply_err(session, "Unknown command");
		outcome = POP3_OUTCOME_BAD;
		break;
	}
	/* the line may have held a password */
	sodium_memzero(&cmd, sizeof(cmd));
	return outcome;
}

/* ---- streaming multi-line replies ---- */

static bool pop3_output_full(struct pop3_session *session)
{
	return evbuffer_get_length(bufferevent_get_output(session->bev)) >= POP3_OUTPUT_THROTTLE;
}

/* One LIST or UIDL line at p ("n size" or "n uidl", CRLF); returns the end. The longest line is
 * 20 + 1 + STORE_UIDL_MAX + 2 octets (a UIDL kept from another server may have 70), within
 * POP3_LISTING_LINE_MAX. */
static char *pop3_put_listing_line(char *p, enum pop3_stream_kind kind,
				   const struct store_message *msg, size_t number)
{
	p = str_put_u64(p, number);
	*p++ = ' ';
	if (kind == POP3_STREAM_LIST) {
		p = str_put_u64(p, msg->size);
	} else {
		size_t len = strlen(msg->uidl);
		memcpy(p, msg->uidl, len);
		p += len;
	}
	*p++ = '\r';
	*p++ = '\n';
	return p;
}

#define POP3_LISTING_LINE_MAX 96

/* LIST and UIDL without an argument. Lines are formatted by hand into blocks: a mailbox of a
 * hundred thousand messages would spend most of its listing time in printf otherwise. */
static bool pop3_stream_listing(struct pop3_session *session)
{
	struct evbuffer *out = bufferevent_get_output(session->bev);
	const struct store_mailbox *box = session->box;
	char block[POP3_READ_SLICE];

	while (session->stream_pos < box->count) {
		if (pop3_output_full(session))
			return false;
		char *p = block;
		while (session->stream_pos < box->count &&
		       (size_t)(p - block) <= sizeof(block) - POP3_LISTING_LINE_MAX) {
			size_t i = session->stream_pos++;
			if (!session->deleted[i])
				p = pop3_put_listing_line(p, session->stream, &box->messages[i],
							  i + 1);
		}
		evbuffer_add(out, block, (size_t)(p - block));
	}
	evbuffer_add(out, ".\r\n", 3);
	return true;
}

/* Returns 1 when the message is complete, 0 when the output is full, -1 on a read error. */
static int pop3_stream_message(struct pop3_session *session)
{
	struct evbuffer *out = bufferevent_get_output(session->bev);
	const struct store_backend *backend = session->box->backend;
	char buf[POP3_READ_SLICE];

	while (!pop3_output_full(session)) {
		ssize_t len = backend->read(session->reader, buf, sizeof(buf));
		if (len < 0)
			return -1;
		if (len == 0 || dotstuff_feed(&session->dotstuff, buf, (size_t)len, out)) {
			dotstuff_finish(&session->dotstuff, out);
			if (session->stream_is_retr)
				metrics_count_retrieved();
			if (session->stream_is_retr && !session->retrieved[session->stream_index]) {
				session->retrieved[session->stream_index] = true;
				session->retrieved_count++;
			}
			return 1;
		}
	}
	return 0;
}

bool pop3_stream_continue(struct pop3_session *session)
{
	bool done = false;

	switch (session->stream) {
	case POP3_STREAM_NONE:
		return true;
	case POP3_STREAM_LIST:
	case POP3_STREAM_UIDL:
		done = pop3_stream_listing(session);
		break;
	case POP3_STREAM_MESSAGE: {
		int ret = pop3_stream_message(session);
		if (ret < 0) {
			/* the +OK is out: the only honest ending is to cut the connection */
			log_error("message_read_failed", "session=%s user=%s index=%zu",
				  session->id, log_quote(session->login_user),
				  session->stream_index + 1);
			pop3_stream_abort(session);
			pop3_session_close_later(session, "read_error");
			return false;
		}
		done = ret == 1;
		break;
	}
	}
	if (done)
		pop3_stream_abort(session);
	return done;
}

void pop3_stream_abort(struct pop3_session *session)
{
	if (session->reader != NULL)
		session->box->backend->read_close(&session->reader);
	session->stream = POP3_STREAM_NONE;
}

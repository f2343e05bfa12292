/* LMTP session plumbing: the connection's callbacks, command lines with the RFC 5321 length limit,
 * the loop that answers pipelined commands in order, and the message text of DATA (dot-stuffed)
 * and BDAT (counted) streamed to the delivery as LF-only text. Commands live in lmtp_commands.c. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth_client.h"
#include "core/log.h"
#include "core/util.h"
#include "lmtp/lmtp_session.h"
#include "net/listener.h"

/* Input read ahead of the command being run; a pipelining client blocks on TCP beyond this. */
#define LMTP_INPUT_HIGH_WATER (64 * 1024)
/* Message text is handed to the delivery in slices of this size. */
#define LMTP_TEXT_SLICE 8192

static void lmtp_session_read_cb(struct bufferevent *bev, void *arg);
static void lmtp_session_write_cb(struct bufferevent *bev, void *arg);
static void lmtp_session_event_cb(struct bufferevent *bev, short what, void *arg);
static void lmtp_session_run_input(struct lmtp_session *session);

void lmtp_reply(struct lmtp_session *session, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(session->bev);
	char text[LMTP_MAX_LINE + LMTP_MAX_PATH];
	va_list args;

	va_start(args, fmt);
	vsnprintf(text, sizeof(text), fmt, args);
	va_end(args);
	evbuffer_add_printf(out, "%s\r\n", text);
}

static void lmtp_session_count_in(struct evbuffer *buffer, const struct evbuffer_cb_info *info,
				  void *arg)
{
	((struct lmtp_session *)arg)->bytes_in += info->n_added;
}

static void lmtp_session_count_out(struct evbuffer *buffer, const struct evbuffer_cb_info *info,
				   void *arg)
{
	((struct lmtp_session *)arg)->bytes_out += info->n_added;
}

static size_t lmtp_output_len(struct lmtp_session *session)
{
	return evbuffer_get_length(bufferevent_get_output(session->bev));
}

static void lmtp_session_format_peer(const struct sockaddr *peer, char *buf, size_t size)
{
	if (peer == NULL || peer->sa_family == AF_UNIX)
		snprintf(buf, size, "local"); /* the MTA on this machine, over a UNIX socket */
	else
		listener_format_ip(peer, buf, size);
}

struct lmtp_session *lmtp_session_create(struct lmtp_server *server, int fd,
					 const struct sockaddr *peer, int peer_len)
{
	struct lmtp_session *session = xcalloc(1, sizeof(*session));
	struct timeval idle = {.tv_sec = server->config->idle_timeout_secs};

	session->server = server;
	lmtp_session_format_peer(peer_len > 0 ? peer : NULL, session->ip, sizeof(session->ip));
	snprintf(session->id, sizeof(session->id), "l%llu", ++server->next_session_number);
	session->bev = bufferevent_socket_new(server->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (session->bev == NULL) {
		log_error("connection_setup_failed", "ip=%s", session->ip);
		close(fd);
		free(session);
		return NULL;
	}
	bufferevent_setcb(session->bev, lmtp_session_read_cb, lmtp_session_write_cb,
			  lmtp_session_event_cb, session);
	bufferevent_setwatermark(session->bev, EV_READ, 0, LMTP_INPUT_HIGH_WATER);
	bufferevent_setwatermark(session->bev, EV_WRITE, LMTP_OUTPUT_THROTTLE / 2, 0);
	bufferevent_set_timeouts(session->bev, &idle, &idle);
	bufferevent_enable(session->bev, EV_READ | EV_WRITE);
	evbuffer_add_cb(bufferevent_get_input(session->bev), lmtp_session_count_in, session);
	evbuffer_add_cb(bufferevent_get_output(session->bev), lmtp_session_count_out, session);
	session->started_ms = monotonic_ms();

	session->next = server->sessions;
	if (server->sessions != NULL)
		server->sessions->prev = session;
	server->sessions = session;
	server->session_count++;
	log_debug("connect", "session=%s ip=%s", session->id, session->ip);
	lmtp_reply(session, "220 %s LMTP buzon ready", server->hostname);
	return session;
}

/* The one line every LMTP connection ends with. */
static void lmtp_session_log_end(struct lmtp_session *session, const char *reason)
{
	long long ms = (long long)(monotonic_ms() - session->started_ms);

	log_info("session_end",
		 "session=%s ip=%s transactions=%u recipients=%u delivered=%u bytes_in=%llu "
		 "bytes_out=%llu reason=%s duration=%lld.%03lld",
		 session->id, session->ip, session->transactions, session->recipients_total,
		 session->delivered, (unsigned long long)session->bytes_in,
		 (unsigned long long)session->bytes_out,
		 log_quote(reason != NULL ? reason : "unknown"), ms / 1000, ms % 1000);
}

void lmtp_session_destroy(struct lmtp_session *session, const char *reason)
{
	struct lmtp_server *server = session->server;

	lmtp_session_log_end(session, reason);
	if (session->delivery != NULL)
		log_info("delivery_abandoned", "session=%s reason=%s", session->id, reason);
	if (session->auth_request != 0)
		auth_client_cancel(server->auth, session->auth_request);
	lmtp_transaction_reset(session);
	evbuffer_remove_cb(bufferevent_get_input(session->bev), lmtp_session_count_in, session);
	evbuffer_remove_cb(bufferevent_get_output(session->bev), lmtp_session_count_out, session);
	bufferevent_free(session->bev);
	if (session->prev != NULL)
		session->prev->next = session->next;
	else
		server->sessions = session->next;
	if (session->next != NULL)
		session->next->prev = session->prev;
	server->session_count--;
	free(session);
}

/* Ends the session once its output is flushed, from the write callback, so that the caller may
 * keep using the session until it returns to the event loop. */
static void lmtp_session_close_later(struct lmtp_session *session, const char *reason)
{
	session->closing = true;
	if (session->close_reason == NULL)
		session->close_reason = reason;
	bufferevent_disable(session->bev, EV_READ);
	bufferevent_setwatermark(session->bev, EV_WRITE, 0, 0);
	bufferevent_trigger(session->bev, EV_WRITE,
			    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Takes the line of line_len octets (LF excluded, eol_len more to drain) into buf without its CR.
 * Returns 1, -1 if over the limit, -2 if it holds a NUL byte. */
static int lmtp_session_take_line(struct evbuffer *in, size_t line_len, size_t eol_len, char *buf)
{
	size_t content_len = line_len;

	if (line_len > 0) {
		char last;
		struct evbuffer_ptr before;
		evbuffer_ptr_set(in, &before, line_len - 1, EVBUFFER_PTR_SET);
		evbuffer_copyout_from(in, &before, &last, 1);
		if (last == '\r')
			content_len--;
	}
	if (content_len + 2 > LMTP_MAX_LINE) {
		evbuffer_drain(in, line_len + eol_len);
		return -1;
	}
	evbuffer_remove(in, buf, content_len);
	evbuffer_drain(in, line_len - content_len + eol_len);
	buf[content_len] = '\0';
	return memchr(buf, '\0', content_len) != NULL ? -2 : 1;
}

/* Reads the next command line into buf (LMTP_MAX_LINE + 1 octets). Returns 1 for a line, 0 if none
 * is complete yet, -1 once per over-long line (its rest is skipped), -2 for a NUL byte. */
static int lmtp_session_read_line(struct lmtp_session *session, char *buf)
{
	struct evbuffer *in = bufferevent_get_input(session->bev);

	for (;;) {
		size_t eol_len = 0;
		struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			size_t pending = evbuffer_get_length(in);
			if (pending < LMTP_MAX_LINE)
				return 0;
			/* no line end within the limit: drop what came, keep dropping to the LF */
			evbuffer_drain(in, pending);
			if (session->discarding_line)
				return 0;
			session->discarding_line = true;
			return -1;
		}
		if (session->discarding_line) {
			/* the tail of a line already answered */
			evbuffer_drain(in, (size_t)eol.pos + eol_len);
			session->discarding_line = false;
			continue;
		}
		return lmtp_session_take_line(in, (size_t)eol.pos, eol_len, buf);
	}
}

/* Message text converted for the delivery, collected in slices. */
struct lmtp_text_out {
	char buf[LMTP_TEXT_SLICE];
	size_t len;
};

static void lmtp_text_flush(struct lmtp_session *session, struct lmtp_text_out *out)
{
	if (out->len > 0 && session->delivery != NULL && !session->text_failed &&
	    delivery_write(session->delivery, out->buf, out->len) < 0)
		session->text_failed = true;
	out->len = 0;
}

/* Counts octets towards the size limit (wire form: a CRLF is two); past it, nothing more is
 * written and the message will be refused. */
static void lmtp_text_count(struct lmtp_session *session, uint64_t octets)
{
	uint64_t limit = session->server->config->lmtp_max_message_size;

	session->text_size += octets;
	if (limit != 0 && session->text_size > limit && !session->text_too_big) {
		session->text_too_big = true;
		if (session->delivery != NULL)
			delivery_abort(&session->delivery);
	}
}

static void lmtp_text_put(struct lmtp_session *session, struct lmtp_text_out *out, char c)
{
	if (out->len == sizeof(out->buf))
		lmtp_text_flush(session, out);
	out->buf[out->len++] = c;
	session->last_octet = (unsigned char)c;
}

static void lmtp_text_emit(struct lmtp_session *session, struct lmtp_text_out *out, char c)
{
	if (session->text_too_big || session->bdat_discard)
		return;
	if (session->held_lf) {
		session->held_lf = false;
		lmtp_text_put(session, out, '\n');
	}
	lmtp_text_put(session, out, c);
}

/* The stored form ends with a line end (as `buzon deliver` stores it), even when the client's
 * last line had none. */
static void lmtp_text_end(struct lmtp_session *session, struct lmtp_text_out *out)
{
	if (session->last_octet >= 0 && session->last_octet != '\n')
		lmtp_text_emit(session, out, '\n');
}

/* One octet of text after a CR has been seen: CRLF becomes LF, a lone CR stays. Returns true if
 * it was a CRLF. */
static bool lmtp_text_after_cr(struct lmtp_session *session, struct lmtp_text_out *out, char c)
{
	session->cr_pending = false;
	if (c == '\n') {
		lmtp_text_count(session, 2);
		lmtp_text_emit(session, out, '\n');
		return true;
	}
	lmtp_text_count(session, 1);
	lmtp_text_emit(session, out, '\r');
	return false;
}

static void lmtp_data_line_start(struct lmtp_session *session, bool after_crlf)
{
	session->at_line_start = true;
	session->line_after_crlf = after_crlf;
	session->prev_bare_lf = !after_crlf;
	session->dot_line = false;
	session->line_len = 0;
}

/* A CRLF in DATA text. Returns true if it ends the text. An empty CRLF line right after a bare-LF
 * line is held back: clients such as Python's smtplib send an LF-only message and then add CRLF
 * before the dot, and that CRLF is theirs, not the message's. */
static bool lmtp_data_crlf(struct lmtp_session *session, struct lmtp_text_out *out)
{
	session->cr_pending = false;
	if (session->dot_line && session->line_len == 0 && session->line_after_crlf) {
		session->held_lf = false;
		return true;
	}
	lmtp_text_count(session, 2);
	if (session->prev_bare_lf && session->line_len == 0 && !session->dot_line)
		session->held_lf = !session->text_too_big && !session->bdat_discard;
	else
		lmtp_text_emit(session, out, '\n');
	lmtp_data_line_start(session, true);
	return false;
}

/* One octet of DATA text. Returns true at the end (the CRLF of the "." line). A bare LF ends a
 * line for dot-unstuffing (senders stuff dots after it too) but only a "." line that follows a
 * CRLF ends the text, so that "\n.\r\n" cannot smuggle a second message past another MTA. */
static bool lmtp_data_octet(struct lmtp_session *session, struct lmtp_text_out *out, char c)
{
	if (session->cr_pending) {
		if (c == '\n')
			return lmtp_data_crlf(session, out);
		(void)lmtp_text_after_cr(session, out, c);
		session->line_len++; /* the lone CR kept: ".\r\r\n" is not the end */
	}
	if (session->at_line_start) {
		session->at_line_start = false;
		if (c == '.') {
			session->dot_line = true; /* RFC 5321 §4.5.2: the stuffed dot goes */
			return false;
		}
	}
	if (c == '\r') {
		session->cr_pending = true;
		return false;
	}
	lmtp_text_count(session, 1);
	lmtp_text_emit(session, out, c);
	if (c == '\n')
		lmtp_data_line_start(session, false);
	else
		session->line_len++;
	return false;
}

/* Runs the DATA text in the input through the converter. Returns true when the text ended. */
static bool lmtp_data_read(struct lmtp_session *session)
{
	struct evbuffer *in = bufferevent_get_input(session->bev);
	struct lmtp_text_out out;
	bool end = false;

	out.len = 0;
	while (!end && evbuffer_get_length(in) > 0) {
		size_t avail = (size_t)evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, (ssize_t)avail);
		size_t used = 0;
		while (used < avail && !end)
			end = lmtp_data_octet(session, &out, p[used++]);
		evbuffer_drain(in, used);
	}
	if (end)
		lmtp_text_end(session, &out);
	lmtp_text_flush(session, &out);
	return end;
}

/* Runs BDAT chunk octets through the converter (no dot handling). Returns true when the chunk is
 * complete. */
static bool lmtp_bdat_read(struct lmtp_session *session)
{
	struct evbuffer *in = bufferevent_get_input(session->bev);
	struct lmtp_text_out out;

	out.len = 0;
	while (session->bdat_remaining > 0 && evbuffer_get_length(in) > 0) {
		size_t avail = (size_t)evbuffer_get_contiguous_space(in);
		if (avail > session->bdat_remaining)
			avail = (size_t)session->bdat_remaining;
		const char *p = (const char *)evbuffer_pullup(in, (ssize_t)avail);
		for (size_t i = 0; i < avail; i++) {
			if (session->cr_pending && lmtp_text_after_cr(session, &out, p[i]))
				continue;
			if (p[i] == '\r') {
				session->cr_pending = true;
				continue;
			}
			lmtp_text_count(session, 1);
			lmtp_text_emit(session, &out, p[i]);
		}
		evbuffer_drain(in, avail);
		session->bdat_remaining -= avail;
	}
	if (session->bdat_remaining == 0 && session->bdat_last && session->cr_pending) {
		/* a CR that ends the whole message has no LF to pair with */
		session->cr_pending = false;
		lmtp_text_count(session, 1);
		lmtp_text_emit(session, &out, '\r');
	}
	if (session->bdat_remaining == 0 && session->bdat_last)
		lmtp_text_end(session, &out);
	lmtp_text_flush(session, &out);
	return session->bdat_remaining == 0;
}

/* The reply to a BDAT chunk that is not the last. */
static void lmtp_bdat_reply_chunk(struct lmtp_session *session)
{
	if (session->text_too_big)
		lmtp_reply(session, "552 5.3.4 Message too big for system");
	else if (session->text_failed)
		lmtp_reply(session, "451 4.3.0 Temporary failure, try again later");
	else
		lmtp_reply(session, "250 2.0.0 %llu octets received",
			   (unsigned long long)session->bdat_size);
}

/* Reads message text. Returns false if more input is needed. */
static bool lmtp_session_read_text(struct lmtp_session *session)
{
	if (session->input == LMTP_INPUT_DATA) {
		if (!lmtp_data_read(session))
			return false;
		session->input = LMTP_INPUT_COMMANDS;
		lmtp_text_finish(session);
		return true;
	}
	if (!lmtp_bdat_read(session))
		return false;
	session->input = LMTP_INPUT_COMMANDS;
	if (session->bdat_discard) {
		session->bdat_discard = false;
		lmtp_reply(session, "503 5.5.1 Bad sequence of commands, chunk discarded");
	} else if (session->bdat_last) {
		lmtp_text_finish(session);
	} else {
		lmtp_bdat_reply_chunk(session);
	}
	return true;
}

/* Acts on a handler's outcome. Returns false when the session can take no more input now. */
static bool lmtp_session_apply(struct lmtp_session *session, enum lmtp_outcome outcome)
{
	switch (outcome) {
	case LMTP_OUTCOME_OK:
	case LMTP_OUTCOME_TEXT:
		session->bad_commands = 0;
		return true;
	case LMTP_OUTCOME_BAD:
		if (++session->bad_commands >= LMTP_MAX_BAD_COMMANDS) {
			lmtp_reply(session, "421 4.7.0 %s Too many bad commands, closing",
				   session->server->hostname);
			lmtp_session_close_later(session, "bad_commands");
			return false;
		}
		return true;
	case LMTP_OUTCOME_WAIT:
		return false;
	case LMTP_OUTCOME_CLOSE:
		lmtp_session_close_later(session, "quit");
		return false;
	}
	return false;
}

/* Reads and runs one command line. Returns false if the session can go no further now. */
static bool lmtp_session_run_command(struct lmtp_session *session)
{
	char line[LMTP_MAX_LINE + 1];
	enum lmtp_outcome outcome;
	int ret = lmtp_session_read_line(session, line);

	if (ret == 0)
		return false;
	if (ret == 1 && line[0] == '\0')
		return true; /* a stray line end (after a miscounted BDAT chunk): nothing to answer
			      */
	if (ret == -1) {
		lmtp_reply(session, "500 5.5.6 Line too long (at most %d octets)", LMTP_MAX_LINE);
		outcome = LMTP_OUTCOME_BAD;
	} else if (ret == -2) {
		lmtp_reply(session, "500 5.5.2 NUL bytes are not allowed in commands");
		outcome = LMTP_OUTCOME_BAD;
	} else {
		outcome = lmtp_command_run(session, line);
	}
	return lmtp_session_apply(session, outcome);
}

/* Runs the input in order (commands, message text) while nothing holds the session back. */
static void lmtp_session_run_input(struct lmtp_session *session)
{
	while (!session->closing && !session->auth_waiting) {
		if (session->input != LMTP_INPUT_COMMANDS) {
			if (!lmtp_session_read_text(session))
				return;
			continue;
		}
		if (lmtp_output_len(session) >= LMTP_OUTPUT_THROTTLE)
			return; /* the write callback goes on once the client reads */
		if (!lmtp_session_run_command(session))
			return;
	}
}

void lmtp_session_resume(struct lmtp_session *session, enum lmtp_outcome outcome)
{
	if (lmtp_session_apply(session, outcome))
		lmtp_session_run_input(session);
}

static void lmtp_session_read_cb(struct bufferevent *bev, void *arg)
{
	lmtp_session_run_input(arg);
}

static void lmtp_session_write_cb(struct bufferevent *bev, void *arg)
{
	struct lmtp_session *session = arg;

	if (session->closing) {
		if (lmtp_output_len(session) == 0)
			lmtp_session_destroy(session, session->close_reason);
		return;
	}
	lmtp_session_run_input(session);
}

static void lmtp_session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct lmtp_session *session = arg;

	if (what & BEV_EVENT_TIMEOUT) {
		if (session->closing) {
			lmtp_session_destroy(session, session->close_reason);
			return;
		}
		/* RFC 5321 §4.5.3.2.7: the server may close an idle connection, saying 421 */
		lmtp_reply(session, "421 4.4.2 %s Idle timeout, closing connection",
			   session->server->hostname);
		lmtp_session_close_later(session, "timeout");
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		/* nobody is left to acknowledge: a message still arriving is abandoned, so that the
		 * MTA's retry cannot produce a second copy of anything acknowledged here */
		lmtp_session_destroy(session,
				     session->closing ? session->close_reason : "disconnected");
	}
}

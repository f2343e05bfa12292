/* POP3 session plumbing: the connection's callbacks, line reading with length limits, the loop that
 * runs pipelined commands in order with back-pressure, replies, and teardown. What each command
 * does lives in commands.c. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sodium.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth_client.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"
#include "net/ban_table.h"
#include "net/ip_limit.h"
#include "net/listener.h"
#include "net/tls.h"
#include "pop3/commands.h"
#include "pop3/parse.h"
#include "pop3/session.h"
#include "pop3/takeover.h"
#include "pop3/worker.h"

/* Input read ahead of the command being run; a pipelining client blocks on TCP beyond this. */
#define POP3_INPUT_HIGH_WATER (64 * 1024)

static void pop3_session_read_cb(struct bufferevent *bev, void *arg);
static void pop3_session_release_prelogin(struct pop3_session *session);
static void pop3_session_write_cb(struct bufferevent *bev, void *arg);
static void pop3_session_event_cb(struct bufferevent *bev, short what, void *arg);
static void pop3_session_run_input(struct pop3_session *session);
static void pop3_session_close_after_flush(struct pop3_session *session, const char *reason);

static void pop3_reply_line(struct pop3_session *session, const char *status, const char *fmt,
			    va_list args) __attribute__((format(printf, 3, 0)));

static void pop3_reply_line(struct pop3_session *session, const char *status, const char *fmt,
			    va_list args)
{
	struct evbuffer *out = bufferevent_get_output(session->bev);
	char text[512];

	vsnprintf(text, sizeof(text), pop3_lang_format(session->lang, fmt), args);
	if (status[0] == '-')
		metrics_count_error_reply(text);
	evbuffer_add_printf(out, "%s%s%s\r\n", status, text[0] != '\0' ? " " : "", text);
}

void pop3_reply_ok(struct pop3_session *session, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	pop3_reply_line(session, "+OK", fmt, args);
	va_end(args);
}

void pop3_reply_err(struct pop3_session *session, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	pop3_reply_line(session, "-ERR", fmt, args);
	va_end(args);
}

void pop3_reply_raw(struct pop3_session *session, const char *data, size_t len)
{
	evbuffer_add(bufferevent_get_output(session->bev), data, len);
}

static size_t pop3_output_len(struct pop3_session *session)
{
	return evbuffer_get_length(bufferevent_get_output(session->bev));
}

/* Bytes not yet handed to the kernel, including those below a TLS filter (after STLS). */
static size_t pop3_unsent_len(struct pop3_session *session)
{
	struct bufferevent *below = bufferevent_get_underlying(session->bev);

	return pop3_output_len(session) +
	       (below != NULL ? evbuffer_get_length(bufferevent_get_output(below)) : 0);
}

/* How often a closing session checks whether the bytes below its TLS filter have gone out: the
 * filter's write callback does not report the layer below it draining. */
#define POP3_CLOSE_RECHECK_MS 20

static void pop3_session_close_recheck(evutil_socket_t fd, short what, void *arg);

/* Ends a closing session once everything is sent; returns true if it was freed. */
static bool pop3_session_finish_close(struct pop3_session *session)
{
	if (!session->peer_gone && pop3_unsent_len(session) > 0) {
		if (pop3_output_len(session) == 0) {
			/* only the layer below is busy: look again shortly */
			struct timeval again = {.tv_usec = POP3_CLOSE_RECHECK_MS * 1000};
			if (session->close_timer == NULL)
				session->close_timer = evtimer_new(
				    session->worker->base, pop3_session_close_recheck, session);
			evtimer_add(session->close_timer, &again);
		}
		return false;
	}
	pop3_session_destroy(session, session->close_reason);
	return true;
}

static void pop3_session_close_recheck(evutil_socket_t fd, short what, void *arg)
{
	(void)pop3_session_finish_close(arg);
}

/* Refuses a connection before any session exists: one line, then close (the socket is fresh, so a
 * short line fits in its send buffer). On an implicit-TLS port the client's first
 * bytes are a TLS ClientHello and it expects TLS back: a plaintext line would only read as a
 * protocol error, so the connection is just closed (the reason is in the log). */
static void pop3_refuse(int fd, bool implicit_tls, const char *line)
{
	if (!implicit_tls) {
		(void)!write(fd, line, strlen(line));
		metrics_count_error_reply(line);
	}
	close(fd);
}

static time_t monotonic_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	return now.tv_sec;
}

void pop3_session_set_timeouts(struct pop3_session *session)
{
	const struct buzon_config *config = session->worker->config;
	unsigned int secs = config->idle_timeout_secs;

	if (session->state == POP3_STATE_AUTHORIZATION && config->login_timeout_secs < secs)
		secs = config->login_timeout_secs;
	struct timeval timeout = {.tv_sec = secs};
	bufferevent_set_timeouts(session->bev, &timeout, &timeout);
}

/* True (and the session is closing) when a client that has not logged in has used up its login
 * time. The bufferevent timeout only catches silence; this catches a client that keeps sending a
 * byte now and then. */
static bool pop3_session_login_expired(struct pop3_session *session)
{
	if (session->state != POP3_STATE_AUTHORIZATION || session->closing ||
	    monotonic_seconds() < session->login_deadline)
		return false;
	log_info("login_timeout", "session=%s ip=%s", session->id, session->ip);
	pop3_reply_err(session, "Login timeout, closing connection");
	pop3_session_close_after_flush(session, "login timeout");
	return true;
}

static void pop3_session_count_in(struct evbuffer *buffer, const struct evbuffer_cb_info *info,
				  void *arg)
{
	struct pop3_session *session = arg;

	session->bytes_in += info->n_added;
	metrics_count_bytes_received(info->n_added);
}

static void pop3_session_count_out(struct evbuffer *buffer, const struct evbuffer_cb_info *info,
				   void *arg)
{
	struct pop3_session *session = arg;

	session->bytes_out += info->n_added;
	metrics_count_bytes_sent(info->n_added);
}

/* Starts or stops counting the bytes of the session's bufferevent: what the client's bytes add to
 * its input buffer and what the session queues in its output buffer. That is above TLS, so both
 * are the protocol's bytes; after STLS the buffers below the TLS filter carry ciphertext, so the
 * counting moves up to the filter. Bytes queued for a client that then vanishes count as sent. */
static void pop3_session_count_bytes(struct pop3_session *session, bool count)
{
	struct evbuffer *in = bufferevent_get_input(session->bev);
	struct evbuffer *out = bufferevent_get_output(session->bev);

	if (count) {
		evbuffer_add_cb(in, pop3_session_count_in, session);
		evbuffer_add_cb(out, pop3_session_count_out, session);
	} else {
		evbuffer_remove_cb(in, pop3_session_count_in, session);
		evbuffer_remove_cb(out, pop3_session_count_out, session);
	}
}

/* Attaches the session's callbacks, limits and timeouts to its (new) bufferevent. */
static void pop3_session_setup_bev(struct pop3_session *session)
{
	pop3_session_count_bytes(session, true);
	bufferevent_setcb(session->bev, pop3_session_read_cb, pop3_session_write_cb,
			  pop3_session_event_cb, session);
	bufferevent_setwatermark(session->bev, EV_READ, 0, POP3_INPUT_HIGH_WATER);
	bufferevent_setwatermark(session->bev, EV_WRITE, POP3_OUTPUT_THROTTLE / 2, 0);
	pop3_session_set_timeouts(session);
	bufferevent_enable(session->bev, EV_READ | EV_WRITE);
}

static struct bufferevent *pop3_session_tls_bev(struct pop3_session *session, int fd,
						struct bufferevent *underlying)
{
	SSL *ssl = SSL_new(session->worker->tls_ctx);
	struct bufferevent *bev;

	if (ssl == NULL)
		return NULL;
	if (underlying != NULL)
		bev = bufferevent_openssl_filter_new(session->worker->base, underlying, ssl,
						     BUFFEREVENT_SSL_ACCEPTING,
						     BEV_OPT_CLOSE_ON_FREE);
	else
		bev = bufferevent_openssl_socket_new(session->worker->base, fd, ssl,
						     BUFFEREVENT_SSL_ACCEPTING,
						     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* many mail clients drop the connection without a TLS close_notify */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	session->tls = true;
	return bev;
}

int pop3_session_start_tls(struct pop3_session *session)
{
	struct bufferevent *plain = session->bev;

	/* RFC 2595 §4 / the CVE-2011-0411 class: anything pipelined behind STLS is discarded */
	struct evbuffer *in = bufferevent_get_input(plain);
	evbuffer_drain(in, evbuffer_get_length(in));
	session->discarding_line = false;
	/* a LANG sent in plaintext may come from a man in the middle (RFC 6856 §7): the TLS
	 * session starts in the default language, as it starts without the plaintext input */
	session->lang = POP3_LANG_EN;
	struct bufferevent *tls = pop3_session_tls_bev(session, -1, plain);
	if (tls == NULL) {
		log_error("tls_start_failed", "session=%s", session->id);
		pop3_session_close_later(session, "tls_error");
		return -1;
	}
	pop3_session_count_bytes(session, false);
	session->bev = tls;
	pop3_session_setup_bev(session);
	return 0;
}

bool pop3_session_cleartext_allowed(const struct pop3_session *session)
{
	switch (session->worker->config->auth_cleartext) {
	case CONFIG_CLEARTEXT_ALWAYS:
		return true;
	case CONFIG_CLEARTEXT_LOOPBACK:
		return session->tls || pop3_session_is_loopback(session);
	case CONFIG_CLEARTEXT_NEVER:
		return session->tls;
	}
	return false;
}

struct pop3_session *pop3_session_create(struct pop3_worker *worker, int fd,
					 const struct sockaddr *peer, int peer_len,
					 bool implicit_tls)
{
	return pop3_session_create_proxied(worker, fd, peer, peer_len, NULL, implicit_tls);
}

struct pop3_session *pop3_session_create_proxied(struct pop3_worker *worker, int fd,
						 const struct sockaddr *peer, int peer_len,
						 const struct sockaddr *proxy, bool implicit_tls)
{
	const struct buzon_config *config = worker->config;
	char ip[64];

	listener_format_ip(peer, ip, sizeof(ip));
	/* connections still sending their PROXY header hold a slot too */
	if (worker->session_count + worker->proxy_pending_count >= config->max_connections) {
		log_warn("connection_refused", "ip=%s reason=max_connections", ip);
		pop3_refuse(fd, implicit_tls,
			    "-ERR [SYS/TEMP] Too many connections, try again later\r\n");
		return NULL;
	}
	if (worker->bans != NULL && ban_table_is_banned(worker->bans, peer, ban_table_now())) {
		log_info("connection_refused", "ip=%s reason=banned", ip);
		pop3_refuse(fd, implicit_tls,
			    "-ERR [SYS/TEMP] Too many failed logins from your address, try "
			    "again later\r\n");
		return NULL;
	}
	if (!ip_limit_acquire(worker->ip_limit, peer, config->max_prelogin_per_ip)) {
		log_warn("connection_refused", "ip=%s reason=max_prelogin_per_ip", ip);
		pop3_refuse(fd, implicit_tls,
			    "-ERR [SYS/TEMP] Too many connections from your address\r\n");
		return NULL;
	}

	/* replies are written whole or in 64 KiB slices: Nagle would only add a delayed-ACK stall
	 * (40 ms) at the end of each multi-line reply */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	struct pop3_session *session = xcalloc(1, sizeof(*session));
	session->worker = worker;
	session->state = POP3_STATE_AUTHORIZATION;
	session->login_deadline = monotonic_seconds() + (time_t)config->login_timeout_secs;
	session->started_ms = monotonic_ms();
	session->prelogin_counted = true;
	session->expire_days = config_expire_days(config);
	session->login_delay_secs = config->login_delay_secs;
	memcpy(&session->peer, peer, (size_t)peer_len);
	memcpy(session->ip, ip, sizeof(ip));
	if (proxy != NULL)
		listener_format_ip(proxy, session->proxy_ip, sizeof(session->proxy_ip));
	snprintf(session->id, sizeof(session->id), "%u.%llu", worker->index,
		 (unsigned long long)++worker->next_session_number);
	session->bev = implicit_tls
			   ? pop3_session_tls_bev(session, fd, NULL)
			   : bufferevent_socket_new(worker->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (session->bev == NULL) {
		log_error("connection_setup_failed", "ip=%s tls=%s", ip,
			  implicit_tls ? "yes" : "no");
		pop3_session_release_prelogin(session);
		close(fd);
		free(session);
		return NULL;
	}
	pop3_session_setup_bev(session);

	session->next = worker->sessions;
	if (worker->sessions != NULL)
		worker->sessions->prev = session;
	worker->sessions = session;
	worker->session_count++;
	session->listener = metrics_listener_of(implicit_tls, proxy != NULL);
	metrics_session_open(session->listener);

	log_debug("connect", "session=%s ip=%s%s%s tls=%s", session->id, session->ip,
		  proxy != NULL ? " proxy=" : "", session->proxy_ip, implicit_tls ? "yes" : "no");
	if (config->auth_apop) {
		/* RFC 1939 §7: a timestamp unique to this greeting, in msg-id form */
		unsigned char nonce[8];
		char hex[sizeof(nonce) * 2 + 1];
		randombytes_buf(nonce, sizeof(nonce));
		sodium_bin2hex(hex, sizeof(hex), nonce, sizeof(nonce));
		snprintf(session->apop_timestamp, sizeof(session->apop_timestamp), "<%d.%s@%s>",
			 (int)getpid(), hex, worker->hostname);
		pop3_reply_ok(session, "%s %s", config->greeting, session->apop_timestamp);
	} else {
		pop3_reply_ok(session, "%s", config->greeting);
	}
	return session;
}

bool pop3_session_is_loopback(const struct pop3_session *session)
{
	const struct sockaddr *addr = (const struct sockaddr *)&session->peer;

	if (addr->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)addr)->sin_addr.s_addr) >> 24) == 127;
	if (addr->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a6))
			return true;
		return IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127;
	}
	return false;
}

static void pop3_session_release_prelogin(struct pop3_session *session)
{
	if (session->prelogin_counted) {
		ip_limit_release(session->worker->ip_limit,
				 (const struct sockaddr *)&session->peer);
		session->prelogin_counted = false;
	}
}

/* The one line every session ends with, logged in or not. user and mechanism are empty ("") when
 * no login succeeded; tls is the protocol version once a handshake completed, else "no". */
static void pop3_session_log_end(struct pop3_session *session, const char *reason)
{
	bool logged_in = session->login_user != NULL;
	SSL *ssl = session->tls_announced ? bufferevent_openssl_get_ssl(session->bev) : NULL;
	long long ms = (long long)(monotonic_ms() - session->started_ms);
	log_info("session_end",
		 "session=%s user=%s ip=%s%s%s tls=%s mechanism=%s commands=%u bytes_in=%llu "
		 "bytes_out=%llu retrieved=%u deleted=%zu reason=%s duration=%lld.%03lld",
		 session->id, log_quote(logged_in ? session->login_user : ""), session->ip,
		 session->proxy_ip[0] != '\0' ? " proxy=" : "", session->proxy_ip,
		 ssl != NULL ? tls_version_name(ssl) : "no",
		 log_quote(logged_in && session->login_mechanism != NULL ? session->login_mechanism
									 : ""),
		 session->commands, (unsigned long long)session->bytes_in,
		 (unsigned long long)session->bytes_out, session->retrieved_count,
		 session->committed_deletions, log_quote(reason != NULL ? reason : "unknown"),
		 ms / 1000, ms % 1000);
}

void pop3_session_destroy(struct pop3_session *session, const char *reason)
{
	struct pop3_worker *worker = session->worker;

	pop3_session_log_end(session, reason);
	metrics_session_close(session->listener, session->state == POP3_STATE_TRANSACTION);
	if (session->tls && !session->tls_announced) {
		/* the version is only known once a session was made from the ClientHello */
		SSL *ssl = bufferevent_openssl_get_ssl(session->bev);
		bool agreed = ssl != NULL && SSL_get_session(ssl) != NULL;
		metrics_count_tls_handshake(false, agreed ? tls_version_name(ssl) : NULL);
	}
	pop3_stream_abort(session);
	if (session->auth_request != 0)
		auth_client_cancel(worker->auth, session->auth_request);
	if (session->delay_timer != NULL)
		event_free(session->delay_timer);
	if (session->close_timer != NULL)
		event_free(session->close_timer);
	if (session->store_job != NULL)
		session->store_job->session = NULL; /* it finishes on its own */
	pop3_takeover_wait_end(session);
	pop3_takeover_release(session);
	if (session->box != NULL)
		session->box->backend->close(&session->box);
	pop3_session_release_prelogin(session);
	if (session->session_counted)
		ip_limit_release(worker->session_limit, (const struct sockaddr *)&session->peer);
	free(session->deleted);
	free(session->retrieved);
	free(session->user);
	free(session->login_user);
	/* the bufferevent may outlive this call (libevent frees it once its callbacks are done) */
	pop3_session_count_bytes(session, false);
	bufferevent_free(session->bev);

	if (session->prev != NULL)
		session->prev->next = session->next;
	else
		worker->sessions = session->next;
	if (session->next != NULL)
		session->next->prev = session->prev;
	worker->session_count--;
	free(session);
}

/* Marks the session for closing once its output is flushed. */
static void pop3_session_close_after_flush(struct pop3_session *session, const char *reason)
{
	session->closing = true;
	if (session->close_reason == NULL)
		session->close_reason = reason;
	bufferevent_disable(session->bev, EV_READ);
	bufferevent_setwatermark(session->bev, EV_WRITE, 0, 0);
	(void)pop3_session_finish_close(session);
}

void pop3_session_close_later(struct pop3_session *session, const char *reason)
{
	session->closing = true;
	if (session->close_reason == NULL)
		session->close_reason = reason;
	bufferevent_disable(session->bev, EV_READ);
	bufferevent_setwatermark(session->bev, EV_WRITE, 0, 0);
	bufferevent_trigger(session->bev, EV_WRITE,
			    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Reads the next complete line into buf (CR and LF stripped). Returns 1 for a line, 0 if none is
 * complete yet, -1 if the line was too long (the caller replies -ERR once per long line), -2 if
 * it held a NUL byte (which would cut a C string short: "USER demo\0junk" must not be "demo"). */
static int pop3_session_read_line(struct pop3_session *session, char *buf)
{
	struct evbuffer *in = bufferevent_get_input(session->bev);
	/* RFC 5034 §4: SASL responses may be longer than commands */
	size_t limit = session->sasl_active ? POP3_MAX_SASL_LINE : POP3_MAX_LINE;

	for (;;) {
		size_t eol_len = 0;
		struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			size_t pending = evbuffer_get_length(in);
			/* 254 octets may still be a 253-octet command and its CR */
			if (pending < limit)
				return 0;
			/* no line end within the limit: drop what we have, keep dropping to the LF
			 */
			evbuffer_drain(in, pending);
			if (session->discarding_line)
				return 0;
			session->discarding_line = true;
			return -1;
		}
		size_t line_len = (size_t)eol.pos;
		if (session->discarding_line) {
			/* the tail of a line already answered with -ERR */
			evbuffer_drain(in, line_len + eol_len);
			session->discarding_line = false;
			continue;
		}
		size_t content_len = line_len;
		if (line_len > 0) {
			char last;
			struct evbuffer_ptr before;
			evbuffer_ptr_set(in, &before, line_len - 1, EVBUFFER_PTR_SET);
			evbuffer_copyout_from(in, &before, &last, 1);
			if (last == '\r')
				content_len--;
		}
		/* RFC 2449 §4: at most 255 octets including the CRLF */
		if (content_len + 2 > limit) {
			evbuffer_drain(in, line_len + eol_len);
			return -1;
		}
		evbuffer_remove(in, buf, content_len);
		evbuffer_drain(in, line_len - content_len + eol_len);
		buf[content_len] = '\0';
		return memchr(buf, '\0', content_len) != NULL ? -2 : 1;
	}
}

/* Acts on a handler's outcome. Returns false when the session can take no more input now. */
static bool pop3_session_apply(struct pop3_session *session, enum pop3_outcome outcome)
{
	/* the reply is queued (a multi-line one's first 64 KiB: below), or it never comes */
	if (outcome != POP3_OUTCOME_WAIT && outcome != POP3_OUTCOME_STREAM)
		metrics_command_finish(&session->command_timer);
	switch (outcome) {
	case POP3_OUTCOME_OK:
		return true;
	case POP3_OUTCOME_BAD:
		if (++session->bad_commands >= session->worker->config->max_bad_commands) {
			pop3_reply_err(session, "Too many bad commands, closing connection");
			pop3_session_close_after_flush(session, "bad_commands");
			return false;
		}
		return true;
	case POP3_OUTCOME_WAIT:
		return false;
	case POP3_OUTCOME_STREAM: {
		/* input waits while a long reply streams; the write callback resumes it */
		bufferevent_disable(session->bev, EV_READ);
		bool streamed = pop3_stream_continue(session);
		metrics_command_finish(&session->command_timer);
		if (!streamed)
			return false;
		bufferevent_enable(session->bev, EV_READ);
		return true;
	}
	case POP3_OUTCOME_CLOSE:
		pop3_session_close_after_flush(session, session->close_reason);
		return false;
	}
	return false;
}

/* The -ERR for a line pop3_session_read_line() refused (ret -1: too long, -2: NUL bytes). A
 * refused SASL response ends its exchange: the client reads this -ERR as the end of it, and its
 * next line is a command. Whole sentences, so that each can be translated (pop3/lang.h). */
static void pop3_reply_bad_line(struct pop3_session *session, int ret)
{
	if (ret == -1 && session->sasl_active)
		pop3_reply_err(session,
			       "Line too long (at most %d octets), authentication cancelled",
			       POP3_MAX_SASL_LINE);
	else if (ret == -1)
		pop3_reply_err(session, "Line too long (at most %d octets)", POP3_MAX_LINE);
	else if (session->sasl_active)
		pop3_reply_err(session,
			       "NUL bytes are not allowed in responses, authentication cancelled");
	else
		pop3_reply_err(session, "NUL bytes are not allowed in commands");
}

/* Runs complete command lines in order while nothing holds the session back. May free it. */
static void pop3_session_run_input(struct pop3_session *session)
{
	char line[POP3_MAX_SASL_LINE + 1];

	while (!session->closing && !session->auth_waiting && !session->store_waiting &&
	       session->delay_timer == NULL && session->stream == POP3_STREAM_NONE) {
		if (session->peer_gone)
			evbuffer_drain(bufferevent_get_output(session->bev),
				       pop3_output_len(session));
		else if (pop3_output_len(session) >= POP3_OUTPUT_THROTTLE)
			return;
		int ret = pop3_session_read_line(session, line);
		if (ret == 0)
			break;
		enum pop3_outcome outcome;
		if (ret < 0) {
			pop3_reply_bad_line(session, ret);
			sodium_memzero(line, sizeof(line));
			if (session->sasl_active)
				pop3_sasl_abort(session);
			outcome = POP3_OUTCOME_BAD;
		} else {
			session->commands++;
			pop3_takeover_touch(session);
			outcome = session->sasl_active ? pop3_sasl_response(session, line)
						       : pop3_command_run(session, line);
			sodium_memzero(line, sizeof(line)); /* it may have been a PASS */
		}
		if (!pop3_session_apply(session, outcome))
			return;
	}
	if (session->peer_gone && !session->closing && !session->auth_waiting &&
	    !session->store_waiting && session->delay_timer == NULL)
		pop3_session_destroy(session, "disconnected");
}

void pop3_session_resume(struct pop3_session *session, enum pop3_outcome outcome)
{
	if (session->state == POP3_STATE_TRANSACTION)
		pop3_session_release_prelogin(session);
	if (pop3_session_apply(session, outcome))
		pop3_session_run_input(session);
}

static void pop3_session_read_cb(struct bufferevent *bev, void *arg)
{
	if (pop3_session_login_expired(arg))
		return;
	pop3_session_run_input(arg);
}

static void pop3_session_write_cb(struct bufferevent *bev, void *arg)
{
	struct pop3_session *session = arg;

	if (session->closing) {
		(void)pop3_session_finish_close(session);
		return;
	}
	if (session->stream != POP3_STREAM_NONE) {
		/* a client reading a long reply is using its session, however long ago it asked */
		pop3_takeover_touch(session);
		if (!pop3_stream_continue(session))
			return;
		bufferevent_enable(session->bev, EV_READ);
	}
	pop3_session_run_input(session);
}

/* The first queued OpenSSL error, for logs (clears the queue). */
static const char *pop3_session_tls_error(void)
{
	static char buf[160];
	unsigned long code = ERR_get_error();

	ERR_clear_error();
	if (code == 0)
		return "connection closed";
	ERR_error_string_n(code, buf, sizeof(buf));
	return buf;
}

static void pop3_session_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct pop3_session *session = arg;

	if (what & BEV_EVENT_CONNECTED) {
		/* the TLS handshake finished */
		SSL *ssl = bufferevent_openssl_get_ssl(session->bev);
		log_debug("tls_established", "session=%s version=%s resumed=%s", session->id,
			  ssl != NULL ? tls_version_name(ssl) : "?",
			  ssl != NULL && SSL_session_reused(ssl) ? "yes" : "no");
		session->tls_announced = true;
		metrics_count_tls_handshake(true, ssl != NULL ? tls_version_name(ssl) : NULL);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (pop3_session_login_expired(session))
			return;
		/* RFC 1939 §3: an idle timeout ends the session without entering UPDATE. */
		pop3_reply_err(session, "Idle timeout, closing connection");
		pop3_session_close_after_flush(session, "timeout");
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if ((what & BEV_EVENT_ERROR) && session->tls && !session->tls_announced)
			log_info("tls_handshake_failed", "session=%s ip=%s error=%s", session->id,
				 session->ip, log_quote(pop3_session_tls_error()));
		/* Commands already received still count: a client that sends DELE and QUIT and
		 * closes at once (Outlook does) must get its deletions, exactly once. */
		session->peer_gone = true;
		pop3_stream_abort(session);
		if (session->closing) {
			pop3_session_destroy(session, session->close_reason);
			return;
		}
		pop3_session_run_input(session);
	}
}

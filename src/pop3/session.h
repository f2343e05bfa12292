/* One POP3 session: the connection's buffers, its RFC 1939 state, the mailbox snapshot while in
 * TRANSACTION, and the multi-line reply being streamed. The session owns everything it points to
 * and frees it in pop3_session_destroy(). */
#ifndef BUZON_POP3_SESSION_H
#define BUZON_POP3_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "core/metrics.h"
#include "core/offload.h"
#include "pop3/dotstuff.h"
#include "pop3/lang.h"
#include "store/store.h"

struct bufferevent;
struct event;
struct pop3_takeover_wait;
struct pop3_worker;

enum pop3_state {
	POP3_STATE_AUTHORIZATION = 1 << 0,
	POP3_STATE_TRANSACTION = 1 << 1,
};

/* What a command handler did; the session loop acts on it. */
enum pop3_outcome {
	POP3_OUTCOME_OK,     /* replied; go on with the next command */
	POP3_OUTCOME_BAD,    /* replied -ERR to a bad command; counts towards max_bad_commands */
	POP3_OUTCOME_WAIT,   /* waiting for the auth process; no more input until it answers */
	POP3_OUTCOME_STREAM, /* a multi-line reply is being streamed */
	POP3_OUTCOME_CLOSE,  /* replied; close once the reply is sent */
};

/* A mailbox operation (open, commit) running on the worker's offload threads for a session. The
 * session points at it while waiting and clears session when it goes away first, so that the job
 * finishes alone and releases what it holds. */
struct pop3_store_job {
	struct offload_job job;
	struct pop3_session *session; /* NULL once the session is gone */
};

/* The multi-line reply in progress, produced in slices as the output buffer drains. */
enum pop3_stream_kind {
	POP3_STREAM_NONE,
	POP3_STREAM_MESSAGE, /* RETR, TOP */
	POP3_STREAM_LIST,
	POP3_STREAM_UIDL,
};

struct pop3_session {
	struct pop3_session *prev, *next; /* in the worker's list */
	struct pop3_worker *worker;
	struct bufferevent *bev;
	struct sockaddr_storage peer; /* the client: behind a proxy, the one its header names */
	char ip[64];
	char proxy_ip[64]; /* the proxy the connection came through, "" when direct */
	char id[24];
	enum pop3_state state;
	/* for the metrics: the kind of listener that accepted it, the command being answered */
	enum metrics_listener listener;
	struct metrics_command_timer command_timer;
	bool prelogin_counted; /* holds a slot in the per-IP pre-login limit */
	bool session_counted;  /* holds a slot in the per-IP logged-in session limit */
	bool discarding_line;  /* skipping the rest of an over-long line */
	bool peer_gone;	       /* the client closed: finish what it sent, write nothing */
	bool closing;
	const char *close_reason;
	bool tls;	    /* the connection is (or is becoming) encrypted */
	bool tls_announced; /* the TLS handshake completion was logged */
	unsigned int bad_commands;
	unsigned int commands;
	time_t login_deadline;	 /* CLOCK_MONOTONIC seconds; past it, AUTHORIZATION ends */
	int64_t started_ms; /* monotonic_ms(), for the session_end line and `buzon who` */
	/* The protocol's bytes (above TLS), counted as they enter the input buffer and as they are
	 * queued in the output buffer (pop3_session_count_bytes() in session.c, which feeds the
	 * metrics from the same callbacks): for the session_end log line. */
	uint64_t bytes_in, bytes_out;

	char *user; /* from USER, until PASS */
	char *login_user;
	/* the user's mail policies ([pop3] expire and login_delay, or the passwd-file's per-user
	 * values once logged in) */
	int expire_days;	       /* RFC 2449 EXPIRE: -1 NEVER, 0 on QUIT after retrieval */
	unsigned int login_delay_secs; /* RFC 2449 LOGIN-DELAY; 0: none */
	uint32_t auth_request;	     /* the open request to the auth process, 0 when none */
	bool auth_waiting;	     /* its answer is awaited: no input is processed meanwhile */
	bool sasl_active;	     /* a challenge was sent: the next line is a SASL response */
	const char *login_mechanism; /* USER, APOP or the SASL mechanism, for logs */
	char apop_timestamp[96];     /* the greeting's <timestamp> when APOP is on, else "" */
	bool utf8;		     /* the client sent UTF8 (RFC 6856) */
	enum pop3_lang lang;	     /* of reply texts, chosen by LANG (RFC 6856 §3) */
	struct event *delay_timer;   /* failed-login delay */
	struct event *close_timer;   /* waits for a TLS filter's lower layer to drain */

	struct pop3_store_job *store_job; /* the mailbox operation in progress, if any */
	bool store_waiting;		  /* no input is processed until it completes */
	struct store_mailbox *box;
	/* [pop3] lock_takeover (takeover.c): the slot that publishes this session's maildrop lock
	 * (takeover_serial 0: none), its last activity, and a login waiting for another holder */
	uint64_t takeover_serial;
	uint32_t takeover_slot;
	bool takeover_committing; /* QUIT's commit started: never ended by a takeover */
	int64_t last_active_ms;	  /* monotonic_ms() of the last command or reply slice */
	struct pop3_takeover_wait *takeover_wait;
	bool *deleted;
	bool *retrieved;
	size_t deleted_count;
	uint64_t deleted_size;
	size_t committed_deletions; /* removed by a successful QUIT, for the log */
	unsigned int retrieved_count;

	enum pop3_stream_kind stream;
	size_t stream_pos; /* LIST/UIDL: next message index */
	struct store_reader *reader;
	struct dotstuff dotstuff;
	size_t stream_index; /* RETR/TOP: which message */
	bool stream_is_retr;
};

/* Takes over fd (an accepted connection) and sends the greeting, over TLS from the first byte when
 * implicit_tls. Returns NULL and closes fd if the connection is refused (limits). */
struct pop3_session *pop3_session_create(struct pop3_worker *worker, int fd,
					 const struct sockaddr *peer, int peer_len,
					 bool implicit_tls);
/* The same for a connection relayed by a proxy (src/pop3/proxy_accept.c): peer is the client the
 * PROXY header named (logs, limits, delays and bans apply to it), proxy the connection's own
 * peer, logged as proxy=. The header has been read off fd already. */
struct pop3_session *pop3_session_create_proxied(struct pop3_worker *worker, int fd,
						 const struct sockaddr *peer, int peer_len,
						 const struct sockaddr *proxy, bool implicit_tls);

/* STLS (RFC 2595): after the +OK has been queued, drops every byte the client already sent (no
 * plaintext may cross into the TLS session) and starts the TLS handshake. Returns -1 if TLS
 * cannot start (the session is then closed). */
int pop3_session_start_tls(struct pop3_session *session);

/* Sets the bufferevent's timeouts for the session's state: before login the shorter of the idle
 * and login timeouts, after it the idle timeout. Called again when the state changes. */
void pop3_session_set_timeouts(struct pop3_session *session);

/* True where passwords may be sent: an encrypted connection, or [auth] cleartext allows it. */
bool pop3_session_cleartext_allowed(const struct pop3_session *session);

/* Closes the connection without committing anything, logs reason, frees the session. */
void pop3_session_destroy(struct pop3_session *session, const char *reason);

/* Replies; text is one line without CRLF. */
void pop3_reply_ok(struct pop3_session *session, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pop3_reply_err(struct pop3_session *session, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends raw bytes to the output (for multi-line bodies). */
void pop3_reply_raw(struct pop3_session *session, const char *data, size_t len);

/* Dispatches one parsed command line (commands.c). */
enum pop3_outcome pop3_command_run(struct pop3_session *session, const char *line);

/* Continues the current multi-line reply until the output buffer is full enough or it ends
 * (commands.c). Returns true when the reply is complete. */
bool pop3_stream_continue(struct pop3_session *session);
/* Abandons the current multi-line reply (connection going away). */
void pop3_stream_abort(struct pop3_session *session);

/* Ends the session once its output is flushed, from a deferred callback, so that the caller may
 * keep using the session until it returns to the event loop. */
void pop3_session_close_later(struct pop3_session *session, const char *reason);

/* True if the client connects from this machine (127.0.0.0/8, ::1, IPv4-mapped loopback). */
bool pop3_session_is_loopback(const struct pop3_session *session);

/* Called by commands.c when the auth process answers a PASS. */
void pop3_session_resume(struct pop3_session *session, enum pop3_outcome outcome);

/* The output buffer level above which the session stops producing and waits for the socket
 * (back-pressure written once, as Dovecot's POP3_OUTBUF_THROTTLE_SIZE). */
#define POP3_OUTPUT_THROTTLE (64 * 1024)

#endif

/* One LMTP session (internal to src/lmtp/): the connection, its RFC 2033 transaction (sender,
 * resolved recipients) and the message text being received by DATA or BDAT. The session owns
 * everything it points to and frees it in lmtp_session_destroy(). */
#ifndef BUZON_LMTP_LMTP_SESSION_H
#define BUZON_LMTP_LMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "core/config.h"
#include "lmtp/delivery.h"

struct bufferevent;
struct event_base;
struct auth_client;
struct lmtp_session;

/* RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including the CRLF. */
#define LMTP_MAX_LINE 512
/* RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets. */
#define LMTP_MAX_PATH 256
/* RFC 5321 §4.5.3.1.8 asks for at least 100 recipients per transaction; more gets 452. */
#define LMTP_MAX_RECIPIENTS 100
/* Bad commands in a row before the connection is dropped: a confused client would loop. */
#define LMTP_MAX_BAD_COMMANDS 20
/* Replies queued for a client that does not read; input waits beyond this (back-pressure). */
#define LMTP_OUTPUT_THROTTLE (64 * 1024)

/* What the LMTP process shares with its sessions. */
struct lmtp_server {
	struct event_base *base;
	const struct buzon_config *config;
	struct auth_client *auth;
	char hostname[256];
	struct lmtp_session *sessions;
	unsigned int session_count;
	unsigned long long next_session_number;
};

/* What a command handler did; the session loop acts on it. */
enum lmtp_outcome {
	LMTP_OUTCOME_OK,   /* replied; go on with the next command */
	LMTP_OUTCOME_BAD,  /* replied with an error for a bad command; counts towards the limit */
	LMTP_OUTCOME_WAIT, /* waiting for the auth process; no more input until it answers */
	LMTP_OUTCOME_TEXT, /* message text (DATA or a BDAT chunk) follows in the input */
	LMTP_OUTCOME_CLOSE /* replied; close once the reply is sent */
};

enum lmtp_input_mode {
	LMTP_INPUT_COMMANDS,
	LMTP_INPUT_DATA, /* dot-stuffed text up to CRLF.CRLF */
	LMTP_INPUT_BDAT, /* exactly bdat_remaining octets */
};

/* A recipient accepted by RCPT; the strings are owned here, the delivery array points at them. */
struct lmtp_recipient {
	char *address;
	char *user;
	char *maildir;
	uint64_t quota_bytes;
	uint64_t quota_messages;
};

struct lmtp_session {
	struct lmtp_session *prev, *next; /* in the server's list */
	struct lmtp_server *server;
	struct bufferevent *bev;
	char ip[64];
	char id[24];
	bool lhlo_done;
	bool discarding_line; /* skipping the rest of an over-long command line */
	bool closing;
	const char *close_reason;
	unsigned int bad_commands;

	/* for the session_end log line */
	int64_t started_ms;	       /* monotonic_ms() */
	uint64_t bytes_in, bytes_out;  /* as received and as queued for the client */
	unsigned int transactions;     /* messages whose text ended (DATA's dot, BDAT LAST) */
	unsigned int recipients_total; /* their recipients, summed */
	unsigned int delivered;	       /* of those, the ones answered 250 */

	/* the transaction */
	bool have_sender;
	char *sender;
	uint64_t size_hint; /* MAIL SIZE=, 0 if not given */
	bool smtputf8;
	bool body_binary; /* BODY=BINARYMIME: only BDAT may carry the text (RFC 3030 §3) */
	struct lmtp_recipient recipients[LMTP_MAX_RECIPIENTS];
	size_t recipient_count;
	char *pending_address; /* the RCPT waiting for the auth process */
	uint32_t auth_request;
	bool auth_waiting;

	/* the message text */
	enum lmtp_input_mode input;
	bool text_started; /* DATA or the first BDAT began it */
	bool text_too_big; /* past lmtp_max_message_size: read to the end, deliver nothing */
	bool text_failed;  /* delivery_begin or delivery_write failed: TEMPFAIL for all */
	bool bdat_last;	   /* the chunk being read is the last one */
	bool bdat_discard; /* the chunk is read only to skip it (the BDAT was refused) */
	uint64_t bdat_remaining;
	uint64_t bdat_size; /* the chunk's announced size, for its reply */
	uint64_t text_size; /* octets received, CRLF counted as two, stuffing dots not */
	bool at_line_start;
	bool dot_line;	      /* the current line began with a dot (removed) */
	bool cr_pending;      /* a CR whose LF may be in the next chunk */
	bool line_after_crlf; /* the current line began after a CRLF: only there can "." end DATA */
	bool prev_bare_lf;    /* the previous line ended with a bare LF */
	bool held_lf; /* an empty CRLF line after a bare LF: the client's padding if "." follows */
	int last_octet;	 /* the last octet written (0..255; NUL is one), -1 before the first */
	size_t line_len; /* octets of the current line after any leading dot */
	struct delivery *delivery;
	struct delivery_recipient *delivery_recipients;
};

/* Takes over fd (an accepted connection, non-blocking) and sends the greeting. Returns NULL and
 * closes fd if no session can be set up. */
struct lmtp_session *lmtp_session_create(struct lmtp_server *server, int fd,
					 const struct sockaddr *peer, int peer_len);

/* Closes the connection, abandons any message in progress, logs reason and frees the session. */
void lmtp_session_destroy(struct lmtp_session *session, const char *reason);

/* Queues one reply line (without CRLF). */
void lmtp_reply(struct lmtp_session *session, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Called when the auth process answered a RCPT (lmtp_commands.c): acts on outcome and goes on
 * with the input. */
void lmtp_session_resume(struct lmtp_session *session, enum lmtp_outcome outcome);

/* Dispatches one command line (lmtp_commands.c). */
enum lmtp_outcome lmtp_command_run(struct lmtp_session *session, char *line);

/* Starts the message text of the transaction: opens the delivery (lmtp_commands.c). Returns -1 if
 * it could not be opened (the failure is remembered and reported per recipient). */
int lmtp_text_begin(struct lmtp_session *session);

/* The message text ended (DATA's dot or BDAT LAST): replies once per recipient, logs each
 * delivery and resets the transaction (lmtp_commands.c). */
void lmtp_text_finish(struct lmtp_session *session);

/* Forgets the transaction (RSET, LHLO, after the message), abandoning any delivery. */
void lmtp_transaction_reset(struct lmtp_session *session);

#endif

/* The POP3 worker's side of the auth process connection: asynchronous requests (USER/PASS, SASL
 * conversations, APOP) on the worker's event loop. */
#ifndef BUZON_AUTH_AUTH_CLIENT_H
#define BUZON_AUTH_AUTH_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "auth/auth_proto.h"

struct event_base;
struct auth_client;

/* An answer from the auth process. Pointers are valid only during the callback; strings are
 * NUL-terminated. A CHALLENGE keeps the request open (answer it with AUTH_MSG_SASL_CONTINUE or
 * AUTH_MSG_SASL_ABORT under the same id); a RESULT ends it. */
struct auth_reply {
	enum auth_msg_type type;
	enum auth_result result;
	const char *user;     /* RESULT OK: the canonical user name */
	const char *location; /* RESULT OK: the mailbox location */
	uint32_t delay_ms;    /* RESULT failures: wait this long before answering the client */
	uint64_t quota_bytes; /* RESULT of a LOOKUP: the user's limits, 0 for none */
	uint64_t quota_messages;
	/* RESULT OK of a login or a POLICY_QUERY: the user's RFC 2449 policies, or (POLICY_QUERY)
	 * the bounds over every user; checked for range here, so that a broken answer becomes a
	 * TEMPFAIL instead of a policy */
	bool has_policy;
	int expire_days;	       /* -1: NEVER */
	unsigned int login_delay_secs; /* 0: none */
	uint32_t policy_flags;	       /* POLICY_QUERY: AUTH_POLICY_* */
	const unsigned char *challenge;
	size_t challenge_len;
};

typedef void auth_reply_callback(void *context, const struct auth_reply *reply);

/* Takes ownership of fd (a SOCK_SEQPACKET connection to the auth process). */
struct auth_client *auth_client_create(struct event_base *base, int fd);
/* Frees the client without calling any pending callback (callers cancel their requests first)
 * and sets *client to NULL. */
void auth_client_destroy(struct auth_client **client);

/* Begins a message: id 0 starts a new request (its id is chosen), otherwise it continues request
 * id. Returns the client's builder, to fill with auth_msg_add_*() and send with
 * auth_client_send() before any other call. */
struct auth_msg_builder *auth_client_begin(struct auth_client *client, enum auth_msg_type type,
					   uint32_t id);

/* Sends the message begun last; callback gets every answer to its request. Returns the request
 * id (never 0). Failures (a message that does not encode, the auth process gone) are reported
 * through the callback as a TEMPFAIL result, never from inside this call. The builder is wiped. */
uint32_t auth_client_send(struct auth_client *client, auth_reply_callback *callback, void *context);

/* What CAPA announces before login (RFC 2449 §6.5, §6.7): the smallest EXPIRE and the largest
 * LOGIN-DELAY of any user, and whether users differ. */
struct auth_policy_bounds {
	int expire_days_min; /* -1: NEVER for everyone */
	unsigned int login_delay_max;
	bool expire_per_user;
	bool login_delay_per_user;
};

/* Asks the auth process for the policy bounds now and every AUTH_POLICY_REFRESH_SECS after, so
 * that an edited passwd-file shows in CAPA without a reload. For the POP3 workers (LMTP needs no
 * CAPA). */
#define AUTH_POLICY_REFRESH_SECS 10
void auth_client_watch_policy(struct auth_client *client);
/* The last bounds the auth process sent, or NULL before its first answer. */
const struct auth_policy_bounds *auth_client_policy_bounds(const struct auth_client *client);

/* Forgets request id, so its callback will not run again; an open SASL conversation is aborted in
 * the auth process too. */
void auth_client_cancel(struct auth_client *client, uint32_t id);

#endif

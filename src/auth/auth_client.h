/* The POP3 worker's side of the auth process connection: asynchronous credential checks on the
 * worker's event loop. */
#ifndef BUZON_AUTH_AUTH_CLIENT_H
#define BUZON_AUTH_AUTH_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "auth/auth_proto.h"

struct event_base;
struct auth_client;

/* Called once per request unless cancelled. user and location are NUL-terminated and valid only
 * during the call; both are NULL unless result is AUTH_RESULT_OK. */
typedef void auth_verify_callback(void *context, enum auth_result result, const char *user,
				  const char *location);

/* Takes ownership of fd (a SOCK_SEQPACKET connection to the auth process). */
struct auth_client *auth_client_create(struct event_base *base, int fd);
/* Frees the client without calling any pending callback (callers cancel their requests first)
 * and sets *client to NULL. */
void auth_client_destroy(struct auth_client **client);

/* Sends a request; returns its id (never 0). If the auth process is gone the callback runs later
 * with AUTH_RESULT_TEMPFAIL, never from inside this call. */
uint32_t auth_client_verify(struct auth_client *client, const char *user, const char *password,
			    auth_verify_callback *callback, void *context);

/* Forgets request id, so its callback will not run (the session went away). */
void auth_client_cancel(struct auth_client *client, uint32_t id);

#endif

/* The per-user mail policies of RFC 2449 in a POP3 session: the EXPIRE and LOGIN-DELAY lines of
 * CAPA, and LOGIN-DELAY enforced against the maildrop's last-login record (store.h). The values
 * come from the auth process: the user's own at login, the bounds over every user before it. */
#ifndef BUZON_POP3_POLICY_H
#define BUZON_POP3_POLICY_H

#include <stdbool.h>
#include <time.h>

#include "pop3/session.h"
#include "store/store.h"

struct evbuffer;

/* Appends the EXPIRE line and, where a delay can apply, the LOGIN-DELAY line to a CAPA reply.
 * Before login: the smallest EXPIRE and the largest LOGIN-DELAY of any user (RFC 2449 §6.5,
 * §6.7), followed by "USER" when users differ; after login: the user's own values. */
void pop3_capa_policies(const struct pop3_session *session, struct evbuffer *out);

/* One login's LOGIN-DELAY check. Filled on the worker's loop; the checks run on an offload
 * thread, beside the mailbox open. */
struct pop3_login_delay {
	unsigned int delay_secs; /* the user's LOGIN-DELAY; 0: nothing to check or record */
	time_t now;		 /* wall_now() when the auth process said yes */
	unsigned int wait_secs;	 /* set when refused: the seconds until a login is allowed */
	char *warning;		 /* a record that could not be read or written, for the log */
};

/* Whether the maildrop at path had a successful login less than delay_secs before now; then
 * sets wait_secs. A missing, unreadable or damaged record, or one in the future (the clock was
 * set back), refuses nothing: the delay spares the server, it does not protect the user. */
bool pop3_login_delay_refuses(struct pop3_login_delay *delay, const struct store_backend *backend,
			      const char *path);

/* Records now as the maildrop's last login (the maildrop is open, so its lock is held). A
 * failure is kept in warning and does not fail the login. */
void pop3_login_delay_record(struct pop3_login_delay *delay, const struct store_backend *backend,
			     const char *path);

/* Frees what the check holds. */
void pop3_login_delay_clear(struct pop3_login_delay *delay);

#endif

/* Taking over a maildrop held by another session of the same user ([pop3] lock_takeover, design in
 * docs/DESIGN.md "Lock takeover"): a session that holds a maildrop publishes it in the shared table
 * (takeover_table.h) and its worker ends it when a contender asks and it is idle enough; a login
 * that finds its maildrop locked asks, then tries the lock again on a timer for a bounded time.
 * Workers cannot signal each other (Landlock scoping), so requests are noticed by a timer that
 * runs while the worker holds maildrops. */
#ifndef BUZON_POP3_TAKEOVER_H
#define BUZON_POP3_TAKEOVER_H

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

struct pop3_session;
struct pop3_store_job;
struct pop3_worker;
struct takeover_table;

/* How often a worker that holds maildrops looks for requests to end one: the part of a takeover's
 * delay on the holder's side; the look itself is one atomic load when nobody asked. */
#define POP3_TAKEOVER_TICK_MS 200
/* How often a waiting login tries its maildrop again. */
#define POP3_TAKEOVER_RETRY_MS 100
/* How long a login waits at most for a holder to go (asked to, or committing its QUIT) before it
 * answers [IN-USE]: long enough for a holder's worker to notice and for a QUIT commit of some
 * thousand messages, short enough for a client's response timeout. */
#define POP3_TAKEOVER_WAIT_MS 3000

/* Worker: uses table (NULL: takeovers are off) and makes the timer. Call before the loop runs. */
void pop3_takeover_worker_init(struct pop3_worker *worker, struct takeover_table *table);
/* Frees the timer; call after the last session is gone. */
void pop3_takeover_worker_free(struct pop3_worker *worker);

/* Holder side. The session has just opened its maildrop (lock id, taken at locked_ms): publishes
 * it so that other logins can ask for it. Without a table, or with the table full, the session
 * simply cannot be taken over (logged). */
void pop3_takeover_hold(struct pop3_session *session, const struct store_lock_id *id,
			int64_t locked_ms);
/* The session did something (a command, a slice of a reply): it is not idle. Cheap. */
void pop3_takeover_touch(struct pop3_session *session);
/* The session's QUIT commit is about to start: it must not be ended, and contenders wait for the
 * lock instead of asking. Call before the commit job is submitted. */
void pop3_takeover_committing(struct pop3_session *session);
/* The session stops holding its maildrop (it ends): withdraws it from the table. */
void pop3_takeover_release(struct pop3_session *session);

/* Contender side. A login's open job found the maildrop locked (lock id; attempt_ms: when this
 * login first tried it). Decides by [pop3] lock_takeover whether to wait for the holder to go,
 * asking it to when it is idle enough. If so, keeps job (the session's store job again, with
 * session->store_waiting set), submits it again after POP3_TAKEOVER_RETRY_MS after calling
 * prepare(job), and returns true. False: the caller answers [IN-USE] now and keeps the job. */
bool pop3_takeover_wait(struct pop3_session *session, const struct store_lock_id *id,
			int64_t attempt_ms, struct pop3_store_job *job,
			void (*prepare)(struct pop3_store_job *job));
/* The login is answered, or the session ends: forgets the waiting state. A job kept waiting is
 * then completed with no session, which frees it. */
void pop3_takeover_wait_end(struct pop3_session *session);

#endif

/* Lock takeover between sessions of one user, across workers (see takeover.h). */
#include <event2/event.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "pop3/session.h"
#include "pop3/takeover.h"
#include "pop3/takeover_table.h"
#include "pop3/worker.h"

/* A login waiting for its maildrop's holder to go: its open job, parked between tries. */
struct pop3_takeover_wait {
	struct event *timer;
	struct pop3_store_job *job; /* the open job; parked while the timer runs */
	bool parked;
	void (*prepare)(struct pop3_store_job *job);
	int64_t attempt_ms; /* the login's first try: holders that locked later are newer */
	int64_t deadline_ms;
	uint64_t asked_serial; /* the holder last asked to go, to log each request once */
};

/* ---- holder side ---- */

static void pop3_takeover_answer(struct pop3_session *session);

static void pop3_takeover_tick(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_worker *worker = arg;
	uint32_t bell = takeover_table_doorbell(worker->takeover, worker->pid);

	if (bell == worker->takeover_doorbell)
		return;
	worker->takeover_doorbell = bell;
	for (struct pop3_session *session = worker->sessions, *next; session != NULL;
	     session = next) {
		next = session->next; /* the session may end */
		if (session->takeover_serial != 0)
			pop3_takeover_answer(session);
	}
}

void pop3_takeover_worker_init(struct pop3_worker *worker, struct takeover_table *table)
{
	worker->takeover = table;
	worker->pid = getpid();
	if (table == NULL)
		return;
	worker->takeover_tick = event_new(worker->base, -1, EV_PERSIST, pop3_takeover_tick, worker);
	worker->takeover_doorbell = takeover_table_doorbell(table, worker->pid);
}

void pop3_takeover_worker_free(struct pop3_worker *worker)
{
	if (worker->takeover_tick != NULL)
		event_free(worker->takeover_tick);
	worker->takeover_tick = NULL;
}

void pop3_takeover_hold(struct pop3_session *session, const struct store_lock_id *id,
			int64_t locked_ms)
{
	struct pop3_worker *worker = session->worker;
	uint64_t serial;

	session->last_active_ms = monotonic_ms();
	if (worker->takeover == NULL)
		return;
	int slot = takeover_table_publish(worker->takeover, id, worker->pid, locked_ms, &serial);
	if (slot < 0) {
		log_warn("lock_takeover_table_full", "session=%s", session->id);
		return;
	}
	takeover_table_touch(worker->takeover, (uint32_t)slot, session->last_active_ms);
	session->takeover_slot = (uint32_t)slot;
	session->takeover_serial = serial;
	if (worker->takeover_held++ == 0) {
		struct timeval every = {.tv_usec = POP3_TAKEOVER_TICK_MS * 1000};
		event_add(worker->takeover_tick, &every);
	}
}

void pop3_takeover_touch(struct pop3_session *session)
{
	if (session->takeover_serial == 0 || session->takeover_committing)
		return;
	session->last_active_ms = monotonic_ms();
	takeover_table_touch(session->worker->takeover, session->takeover_slot,
			     session->last_active_ms);
}

void pop3_takeover_committing(struct pop3_session *session)
{
	/* the commit job releases the lock when it is done: the slot is not ours to write then */
	if (session->takeover_serial != 0 && !session->takeover_committing)
		takeover_table_set_committing(session->worker->takeover, session->takeover_slot);
	session->takeover_committing = true;
}

void pop3_takeover_release(struct pop3_session *session)
{
	struct pop3_worker *worker = session->worker;

	if (session->takeover_serial == 0)
		return;
	takeover_table_withdraw(worker->takeover, session->takeover_slot, session->takeover_serial);
	session->takeover_serial = 0;
	if (--worker->takeover_held == 0)
		event_del(worker->takeover_tick);
}

/* Why the session must not be ended now, or NULL. A commit in progress must finish (the client
 * asked for it); a session active within the contender's idle time is in use. */
static const char *pop3_takeover_refusal(const struct pop3_session *session,
					 unsigned int min_idle_secs, int64_t idle_ms)
{
	if (session->takeover_committing || session->store_job != NULL || session->box == NULL)
		return "committing";
	if (idle_ms < (int64_t)min_idle_secs * 1000)
		return "active";
	return NULL;
}

/* Acts on a request for this session, if there is one. May end the session. */
static void pop3_takeover_answer(struct pop3_session *session)
{
	struct takeover_table *table = session->worker->takeover;
	unsigned int min_idle_secs;

	if (!takeover_table_requested(table, session->takeover_slot, session->takeover_serial,
				      &min_idle_secs))
		return;
	long long idle_ms = (long long)(monotonic_ms() - session->last_active_ms);
	const char *refusal = pop3_takeover_refusal(session, min_idle_secs, idle_ms);
	if (refusal != NULL) {
		log_info("lock_takeover_refused", "session=%s user=%s reason=%s idle=%lld.%03llds",
			 session->id, log_quote(session->login_user), refusal, idle_ms / 1000,
			 idle_ms % 1000);
		takeover_table_refuse(table, session->takeover_slot, session->takeover_serial);
		return;
	}
	log_info("lock_taken_over", "session=%s user=%s idle=%lld.%03llds", session->id,
		 log_quote(session->login_user), idle_ms / 1000, idle_ms % 1000);
	/* like a kick: nothing is committed, the DELEs of this session are forgotten */
	pop3_session_destroy(session, "taken_over");
}

/* ---- contender side ---- */

enum pop3_takeover_step {
	POP3_TAKEOVER_GIVE_UP, /* answer [IN-USE] */
	POP3_TAKEOVER_RETRY,   /* try the lock again shortly */
};

/* Looks at the holder of id and asks it to go when the policy allows. */
static enum pop3_takeover_step pop3_takeover_judge(struct pop3_session *session,
						   const struct store_lock_id *id,
						   struct pop3_takeover_wait *wait)
{
	const struct buzon_config *config = session->worker->config;
	struct takeover_table *table = session->worker->takeover;
	struct takeover_holder holder;

	/* not published: still opening, a command-line tool, or a full table; the lock may
	 * come free within the wait */
	if (!takeover_table_find(table, id, &holder))
		return POP3_TAKEOVER_RETRY;
	/* it locked after this login first tried: it won a race with this login (two contenders
	 * asked at once) and is not the session the user meant to replace */
	if (holder.since_ms > wait->attempt_ms)
		return POP3_TAKEOVER_GIVE_UP;
	/* its QUIT is committing: the lock comes free when the commit is done */
	if (holder.committing)
		return POP3_TAKEOVER_RETRY;
	unsigned int min_idle_secs = config->lock_takeover == CONFIG_LOCK_TAKEOVER_IDLE
					 ? config->lock_takeover_idle_secs
					 : 0;
	long long idle_ms = (long long)(monotonic_ms() - holder.active_ms);
	if (idle_ms < (long long)min_idle_secs * 1000)
		return POP3_TAKEOVER_GIVE_UP;
	if (!takeover_table_request(table, &holder, min_idle_secs))
		return POP3_TAKEOVER_RETRY; /* it changed meanwhile: look again at the next try */
	if (wait->asked_serial != holder.serial)
		log_info("lock_takeover_asked", "session=%s holder_pid=%d holder_idle=%lld.%03llds",
			 session->id, (int)holder.pid, idle_ms / 1000, idle_ms % 1000);
	wait->asked_serial = holder.serial;
	return POP3_TAKEOVER_RETRY;
}

static void pop3_takeover_retry(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_session *session = arg;
	struct pop3_takeover_wait *wait = session->takeover_wait;

	wait->parked = false;
	wait->prepare(wait->job);
	session->store_job = wait->job;
	offload_submit(session->worker->offload, &wait->job->job);
}

bool pop3_takeover_wait(struct pop3_session *session, const struct store_lock_id *id,
			int64_t attempt_ms, struct pop3_store_job *job,
			void (*prepare)(struct pop3_store_job *job))
{
	struct pop3_worker *worker = session->worker;
	struct pop3_takeover_wait *wait = session->takeover_wait;

	if (worker->takeover == NULL || worker->config->lock_takeover == CONFIG_LOCK_TAKEOVER_NEVER)
		return false;
	if (wait == NULL) {
		wait = xcalloc(1, sizeof(*wait));
		wait->timer = evtimer_new(worker->base, pop3_takeover_retry, session);
		wait->attempt_ms = attempt_ms;
		wait->deadline_ms = attempt_ms + POP3_TAKEOVER_WAIT_MS;
		session->takeover_wait = wait;
	}
	/* a client that has gone has nothing to take over for */
	if (session->peer_gone || monotonic_ms() >= wait->deadline_ms ||
	    pop3_takeover_judge(session, id, wait) == POP3_TAKEOVER_GIVE_UP)
		return false;
	wait->job = job;
	wait->prepare = prepare;
	wait->parked = true;
	session->store_job = job;
	session->store_waiting = true;
	struct timeval again = {.tv_usec = POP3_TAKEOVER_RETRY_MS * 1000};
	evtimer_add(wait->timer, &again);
	return true;
}

void pop3_takeover_wait_end(struct pop3_session *session)
{
	struct pop3_takeover_wait *wait = session->takeover_wait;

	if (wait == NULL)
		return;
	event_free(wait->timer);
	if (wait->parked) {
		/* the session is ending: the job finishes alone, which frees it */
		wait->job->session = NULL;
		session->store_job = NULL;
		wait->job->job.done(&wait->job->job);
	}
	x_free(&session->takeover_wait);
}

/* The background purge of the undelete window (store/retention.h), run by POP3 worker 0 of the
 * current generation: every [mail] purge_interval it walks the mail root in small steps, on its
 * offload threads so that no session waits, and purges each mailbox whose undelete area holds a
 * message whose time is up.
 *
 * Why here: worker 0 always exists (an LMTP process only with [lmtp] listen), its sandbox already
 * allows every Maildir call on the mail root, and its offload threads keep the disk work off the
 * event loop. Bounds: one step reads at most PURGE_STEP_ENTRIES directory entries and purges at
 * most one mailbox (at most PURGE_MAILBOX_MAX messages), and steps are PURGE_STEP_MS apart, one at
 * a time. A mailbox a session holds is skipped (its QUIT purges it). EXPIRE is not applied here:
 * it can be set per user in the passwd-file, which a worker does not read; QUIT and `buzon purge`
 * apply it. */
#include <event2/event.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/offload.h"
#include "core/util.h"
#include "pop3/worker.h"
#include "store/mailroot_walk.h"
#include "store/retention.h"

/* Directory entries one step reads: a few milliseconds of getdents on a cold cache. */
#define PURGE_STEP_ENTRIES 256
/* The pause between steps of a pass: at most a few thousand entries a second. */
#define PURGE_STEP_MS 100
/* Messages one mailbox gives up in one step; the rest wait for the next pass. */
#define PURGE_MAILBOX_MAX 1000
/* The first pass starts this long after the worker (or purge_interval, if shorter): start-up and
 * the first logins go first. */
#define PURGE_FIRST_DELAY_SECS 60

struct pop3_purge {
	struct pop3_worker *worker;
	struct event *timer;
	struct mailroot_walk *walk;
	bool job_running;
	bool stopping;	      /* the worker is going: the job's completion frees this */
	int64_t pass_started; /* monotonic_ms() at the first step of the pass; 0 between passes */
	size_t pass_mailboxes, pass_purged;
};

/* One step, run on an offload thread; owns nothing but its results. */
struct pop3_purge_job {
	struct offload_job job;
	struct pop3_purge *purge;
	int walk_result; /* mailroot_walk_next()'s last answer */
	size_t mailboxes;
	char *target_maildir; /* the mailbox this step tried to purge, if any */
	struct store_commit_report report;
	enum store_error kind;
	char *error;
};

static void pop3_purge_free(struct pop3_purge **purgep)
{
	struct pop3_purge *purge = *purgep;

	event_free(purge->timer);
	mailroot_walk_free(&purge->walk);
	x_free(purgep);
}

static void pop3_purge_job_run(struct offload_job *job)
{
	struct pop3_purge_job *step = (struct pop3_purge_job *)job;
	const struct buzon_config *config = step->purge->worker->config;
	struct store_policy policy = {.deleted_retention_secs = config->deleted_retention_secs,
				      .expire_days = -1,
				      .purge_max = PURGE_MAILBOX_MAX,
				      .now = wall_now()};
	size_t budget = PURGE_STEP_ENTRIES;
	const char *maildir;

	for (;;) {
		step->walk_result = mailroot_walk_next(step->purge->walk, &budget, &maildir);
		if (step->walk_result != 1)
			return;
		step->mailboxes++;
		if (!retention_purge_maybe_due(maildir, policy.deleted_retention_secs, policy.now))
			continue;
		step->target_maildir = xstrdup(maildir);
		int ret =
		    retention_purge(maildir, &policy, &step->report, &step->kind, &step->error);
		if (ret < 0 && step->error == NULL)
			step->error = xstrdup("purge failed");
		return; /* one mailbox per step */
	}
}

static void pop3_purge_log_step(const struct pop3_purge_job *step)
{
	if (step->target_maildir == NULL)
		return;
	if (step->error != NULL && step->kind == STORE_ERROR_IN_USE)
		log_debug("purge_skipped", "maildir=%s reason=in-use",
			  log_quote(step->target_maildir));
	else if (step->error != NULL)
		log_warn("purge_failed", "maildir=%s error=%s", log_quote(step->target_maildir),
			 log_quote(step->error));
	else
		log_info("purge", "maildir=%s purged=%zu left=%zu", log_quote(step->target_maildir),
			 step->report.purged, step->report.purge_left);
}

/* Schedules the next step: soon within a pass, at the next interval after a pass. */
static void pop3_purge_schedule(struct pop3_purge *purge, bool pass_done)
{
	struct timeval next = {.tv_usec = PURGE_STEP_MS * 1000};

	if (pass_done) {
		int64_t elapsed_ms = monotonic_ms() - purge->pass_started;
		int64_t wait_ms =
		    (int64_t)purge->worker->config->purge_interval_secs * 1000 - elapsed_ms;
		log_event(purge->pass_purged > 0 ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG,
			  "purge_pass_done", "mailboxes=%zu purged=%zu ms=%lld",
			  purge->pass_mailboxes, purge->pass_purged, (long long)elapsed_ms);
		purge->pass_mailboxes = 0;
		purge->pass_purged = 0;
		purge->pass_started = 0;
		if (wait_ms > PURGE_STEP_MS) {
			next.tv_sec = (time_t)(wait_ms / 1000);
			next.tv_usec = (suseconds_t)(wait_ms % 1000) * 1000;
		}
	}
	evtimer_add(purge->timer, &next);
}

static void pop3_purge_job_done(struct offload_job *job)
{
	struct pop3_purge_job *step = (struct pop3_purge_job *)job;
	struct pop3_purge *purge = step->purge;

	purge->job_running = false;
	if (job->ran)
		pop3_purge_log_step(step);
	if (purge->stopping) {
		pop3_purge_free(&purge);
	} else {
		purge->pass_mailboxes += step->mailboxes;
		purge->pass_purged += step->report.purged;
		pop3_purge_schedule(purge, step->walk_result < 0);
	}
	free(step->target_maildir);
	free(step->error);
	free(step);
}

static void pop3_purge_tick(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_purge *purge = arg;
	struct pop3_purge_job *step = xcalloc(1, sizeof(*step));

	if (purge->pass_started == 0)
		purge->pass_started = monotonic_ms();
	step->job.run = pop3_purge_job_run;
	step->job.done = pop3_purge_job_done;
	step->purge = purge;
	purge->job_running = true;
	offload_submit(purge->worker->offload, &step->job);
}

void pop3_worker_purge_start(struct pop3_worker *worker)
{
	const struct buzon_config *config = worker->config;

	if (worker->index != 0 || config->purge_interval_secs == 0)
		return;
	struct mailroot_walk *walk = mailroot_walk_new(config->mail_location);
	if (walk == NULL) {
		log_warn("purge_unavailable", "reason=%s",
			 log_quote("[mail] location cannot be walked"));
		return;
	}
	struct pop3_purge *purge = xcalloc(1, sizeof(*purge));
	purge->worker = worker;
	purge->walk = walk;
	purge->timer = evtimer_new(worker->base, pop3_purge_tick, purge);
	unsigned int first = config->purge_interval_secs < PURGE_FIRST_DELAY_SECS
				 ? config->purge_interval_secs
				 : PURGE_FIRST_DELAY_SECS;
	struct timeval delay = {.tv_sec = first};
	evtimer_add(purge->timer, &delay);
	worker->purge = purge;
}

void pop3_worker_purge_stop(struct pop3_worker *worker)
{
	struct pop3_purge *purge = worker->purge;

	if (purge == NULL)
		return;
	worker->purge = NULL;
	evtimer_del(purge->timer);
	if (purge->job_running)
		purge->stopping = true; /* pop3_purge_job_done() frees it */
	else
		pop3_purge_free(&purge);
}

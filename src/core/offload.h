/* Runs blocking work (mailbox scans, commits with fsync) on a few threads beside an event loop, so
 * that one session's slow disk never delays the other sessions of its worker. A job's run() is
 * called on a pool thread; its done() is called afterwards on the loop's thread, from the event
 * loop, in submission order per thread of completion. The pool never touches a job's data besides
 * the struct offload_job embedded in it: run() must only use what the job owns, and done() owns
 * the job again (and frees it).
 *
 * Shutdown: offload_pool_free() lets running jobs finish, then calls done() for every job, with
 * job->ran false for those that never started, so that owners can release what the jobs hold. */
#ifndef BUZON_CORE_OFFLOAD_H
#define BUZON_CORE_OFFLOAD_H

#include <stdbool.h>

struct event_base;
struct offload_pool;

struct offload_job {
	void (*run)(struct offload_job *job);  /* on a pool thread */
	void (*done)(struct offload_job *job); /* on the loop thread; frees the job */
	bool ran;			       /* run() was called (false only at shutdown) */
	struct offload_job *next;	       /* private to the pool */
};

/* Starts threads (at least 1) whose finished jobs are handed back through base. NULL on failure
 * (errno set). */
struct offload_pool *offload_pool_new(struct event_base *base, unsigned int threads);

/* Queues job; job->run and job->done must be set. */
void offload_submit(struct offload_pool *pool, struct offload_job *job);

/* Jobs queued or running, for tests and metrics. */
unsigned int offload_pending(const struct offload_pool *pool);

/* Waits for running jobs, then completes every job (see above), joins the threads and frees the
 * pool; sets *poolp to NULL. */
void offload_pool_free(struct offload_pool **poolp);

#endif

/* A small thread pool for blocking work beside an event loop (see offload.h). Finished jobs go on
 * a list and an eventfd wakes the loop, which calls their done() callbacks: the loop thread is the
 * only one that ever sees a job after run(). */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/offload.h"
#include "core/util.h"

/* More threads than this buy nothing: the work is disk-bound and a worker serves one core. */
#define OFFLOAD_MAX_THREADS 16

/* Scheduler weight of nice 10 is about a tenth of nice 0's: enough for the loop to win every
 * contest for a core, while the jobs still run whenever a core is free. */
#define OFFLOAD_THREAD_NICE 10

struct offload_queue {
	struct offload_job *head, *tail;
};

struct offload_pool {
	pthread_mutex_t lock;
	pthread_cond_t wake; /* a job was queued, or the pool is stopping */
	struct offload_queue waiting;
	struct offload_queue finished;
	unsigned int pending; /* queued or running; changed on the loop thread only */
	bool stopping;
	int wake_fd; /* eventfd: finished jobs are ready */
	struct event *wake_event;
	pthread_t threads[OFFLOAD_MAX_THREADS];
	unsigned int thread_count;
};

static void offload_queue_push(struct offload_queue *queue, struct offload_job *job)
{
	job->next = NULL;
	if (queue->tail != NULL)
		queue->tail->next = job;
	else
		queue->head = job;
	queue->tail = job;
}

static struct offload_job *offload_queue_take_all(struct offload_queue *queue)
{
	struct offload_job *all = queue->head;

	queue->head = queue->tail = NULL;
	return all;
}

static void *offload_thread_main(void *arg)
{
	struct offload_pool *pool = arg;

	/* Background work yields the CPU to the event loop: a big mailbox scan must not delay the
	 * NOOP of an idle session in the same worker. On Linux, nice applies per thread. */
	(void)!setpriority(PRIO_PROCESS, (id_t)gettid(), OFFLOAD_THREAD_NICE);

	pthread_mutex_lock(&pool->lock);
	for (;;) {
		while (pool->waiting.head == NULL && !pool->stopping)
			pthread_cond_wait(&pool->wake, &pool->lock);
		if (pool->stopping)
			break;
		struct offload_job *job = pool->waiting.head;
		pool->waiting.head = job->next;
		if (pool->waiting.head == NULL)
			pool->waiting.tail = NULL;
		pthread_mutex_unlock(&pool->lock);

		job->run(job);
		job->ran = true;

		pthread_mutex_lock(&pool->lock);
		bool was_empty = pool->finished.head == NULL;
		offload_queue_push(&pool->finished, job);
		if (was_empty) {
			uint64_t one = 1;
			/* the counter only needs to be nonzero; EAGAIN means it already is */
			(void)!write(pool->wake_fd, &one, sizeof(one));
		}
	}
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

static void offload_complete(struct offload_pool *pool, struct offload_job *jobs)
{
	while (jobs != NULL) {
		struct offload_job *next = jobs->next;
		pool->pending--;
		jobs->done(jobs);
		jobs = next;
	}
}

static void offload_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct offload_pool *pool = arg;
	uint64_t count;

	(void)!read(fd, &count, sizeof(count));
	pthread_mutex_lock(&pool->lock);
	struct offload_job *jobs = offload_queue_take_all(&pool->finished);
	pthread_mutex_unlock(&pool->lock);
	offload_complete(pool, jobs);
}

/* Pool threads must not take the signals the loop thread handles (SIGTERM, SIGHUP). */
static int offload_threads_start(struct offload_pool *pool, unsigned int threads)
{
	sigset_t all, old;
	int err = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; pool->thread_count < threads; pool->thread_count++) {
		err = pthread_create(&pool->threads[pool->thread_count], NULL, offload_thread_main,
				     pool);
		if (err != 0)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = err;
	return err == 0 ? 0 : -1;
}

struct offload_pool *offload_pool_new(struct event_base *base, unsigned int threads)
{
	struct offload_pool *pool = xcalloc(1, sizeof(*pool));

	if (threads < 1)
		threads = 1;
	if (threads > OFFLOAD_MAX_THREADS)
		threads = OFFLOAD_MAX_THREADS;
	pthread_mutex_init(&pool->lock, NULL);
	pthread_cond_init(&pool->wake, NULL);
	pool->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (pool->wake_fd < 0)
		goto fail;
	pool->wake_event =
	    event_new(base, pool->wake_fd, EV_READ | EV_PERSIST, offload_wake_cb, pool);
	if (pool->wake_event == NULL || event_add(pool->wake_event, NULL) < 0)
		goto fail;
	if (offload_threads_start(pool, threads) < 0)
		goto fail;
	return pool;
fail:
	offload_pool_free(&pool);
	return NULL;
}

void offload_submit(struct offload_pool *pool, struct offload_job *job)
{
	job->ran = false;
	pool->pending++;
	pthread_mutex_lock(&pool->lock);
	offload_queue_push(&pool->waiting, job);
	pthread_cond_signal(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
}

unsigned int offload_pending(const struct offload_pool *pool)
{
	return pool->pending;
}

void offload_pool_free(struct offload_pool **poolp)
{
	struct offload_pool *pool = *poolp;
	int saved_errno = errno;

	if (pool == NULL)
		return;
	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->wake);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned int i = 0; i < pool->thread_count; i++)
		pthread_join(pool->threads[i], NULL);
	/* no thread is left: finished jobs first (they ran), then those that never started */
	offload_complete(pool, offload_queue_take_all(&pool->finished));
	offload_complete(pool, offload_queue_take_all(&pool->waiting));
	if (pool->wake_event != NULL)
		event_free(pool->wake_event);
	if (pool->wake_fd >= 0)
		close(pool->wake_fd);
	pthread_cond_destroy(&pool->wake);
	pthread_mutex_destroy(&pool->lock);
	x_free(poolp);
	errno = saved_errno;
}

/* Unit tests for the offload pool: jobs run off the loop thread, complete on it, and every job is
 * completed exactly once, also when the pool is freed with jobs still queued. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "core/offload.h"
#include "core/util.h"

struct counting_job {
	struct offload_job job;
	pthread_t loop_thread;
	pthread_t run_thread;
	useconds_t sleep_us;
	int *done_count;
	int *ran_count;
	struct event_base *base;
	int stop_after; /* break the loop when *done_count reaches this */
};

static void counting_run(struct offload_job *job)
{
	struct counting_job *cj = (struct counting_job *)job;

	cj->run_thread = pthread_self();
	if (cj->sleep_us > 0)
		usleep(cj->sleep_us);
}

static void counting_done(struct offload_job *job)
{
	struct counting_job *cj = (struct counting_job *)job;

	/* done() runs on the loop's thread, never on a pool thread */
	assert_true(pthread_equal(pthread_self(), cj->loop_thread));
	if (job->ran) {
		(*cj->ran_count)++;
		assert_false(pthread_equal(cj->run_thread, cj->loop_thread));
	}
	(*cj->done_count)++;
	if (cj->base != NULL && *cj->done_count == cj->stop_after)
		event_base_loopbreak(cj->base);
	free(cj);
}

static struct counting_job *counting_job_new(int *done_count, int *ran_count)
{
	struct counting_job *cj = xcalloc(1, sizeof(*cj));

	cj->job.run = counting_run;
	cj->job.done = counting_done;
	cj->loop_thread = pthread_self();
	cj->done_count = done_count;
	cj->ran_count = ran_count;
	return cj;
}

static void test_jobs_complete_on_loop_thread(void **state)
{
	struct event_base *base = event_base_new();
	struct offload_pool *pool = offload_pool_new(base, 3);
	int done = 0, ran = 0;
	const int jobs = 50;

	assert_non_null(pool);
	for (int i = 0; i < jobs; i++) {
		struct counting_job *cj = counting_job_new(&done, &ran);
		cj->base = base;
		cj->stop_after = jobs;
		cj->sleep_us = (useconds_t)(i % 5) * 200;
		offload_submit(pool, &cj->job);
	}
	assert_int_equal(offload_pending(pool), jobs);
	event_base_dispatch(base);
	assert_int_equal(done, jobs);
	assert_int_equal(ran, jobs);
	assert_int_equal(offload_pending(pool), 0);
	offload_pool_free(&pool);
	assert_null(pool);
	event_base_free(base);
}

/* A slow job must not hold up the loop: a timer fires while it runs. */
static void timer_fired(evutil_socket_t fd, short what, void *arg)
{
	*(int *)arg = 1;
}

static void test_loop_runs_while_job_blocks(void **state)
{
	struct event_base *base = event_base_new();
	struct offload_pool *pool = offload_pool_new(base, 1);
	int done = 0, ran = 0, fired = 0;
	struct counting_job *cj = counting_job_new(&done, &ran);
	struct timeval ten_ms = {0, 10000};

	cj->sleep_us = 300000;
	cj->base = base;
	cj->stop_after = 1;
	offload_submit(pool, &cj->job);
	struct event *timer = evtimer_new(base, timer_fired, &fired);
	evtimer_add(timer, &ten_ms);
	event_base_dispatch(base);
	assert_int_equal(fired, 1);
	assert_int_equal(done, 1);
	event_free(timer);
	offload_pool_free(&pool);
	event_base_free(base);
}

/* Freeing the pool completes everything: queued jobs are handed back with ran == false. */
static void test_free_completes_queued_jobs(void **state)
{
	struct event_base *base = event_base_new();
	struct offload_pool *pool = offload_pool_new(base, 1);
	int done = 0, ran = 0;

	for (int i = 0; i < 10; i++) {
		struct counting_job *cj = counting_job_new(&done, &ran);
		cj->sleep_us = 20000;
		offload_submit(pool, &cj->job);
	}
	usleep(5000); /* let the thread start the first one */
	offload_pool_free(&pool);
	assert_int_equal(done, 10);
	assert_true(ran >= 1 && ran < 10);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jobs_complete_on_loop_thread),
	    cmocka_unit_test(test_loop_runs_while_job_blocks),
	    cmocka_unit_test(test_free_completes_queued_jobs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

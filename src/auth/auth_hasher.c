/* Hashing threads for the auth process (see auth_hasher.h): a work queue under a mutex, a done
 * queue under the same mutex, and an eventfd that tells the main thread's poll() about done work.
 */
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "auth/auth_hasher.h"
#include "auth/password.h"
#include "core/util.h"

struct check_queue {
	struct auth_check *head, *tail;
};

struct auth_hasher {
	pthread_mutex_t lock;
	pthread_cond_t work_ready;
	struct check_queue work, done;
	bool stopping;
	int done_fd;
	pthread_t *threads;
	unsigned int thread_count;
};

static void queue_push(struct check_queue *q, struct auth_check *check)
{
	check->next = NULL;
	if (q->tail != NULL)
		q->tail->next = check;
	else
		q->head = check;
	q->tail = check;
}

static struct auth_check *queue_pop(struct check_queue *q)
{
	struct auth_check *check = q->head;

	if (check != NULL) {
		q->head = check->next;
		if (q->head == NULL)
			q->tail = NULL;
		check->next = NULL;
	}
	return check;
}

static void *auth_hasher_thread(void *arg)
{
	struct auth_hasher *hasher = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&hasher->lock);
	for (;;) {
		while (hasher->work.head == NULL && !hasher->stopping)
			pthread_cond_wait(&hasher->work_ready, &hasher->lock);
		if (hasher->stopping)
			break;
		struct auth_check *check = queue_pop(&hasher->work);
		pthread_mutex_unlock(&hasher->lock);
		check->error = NULL;
		check->verdict = password_verify(check->secret, check->password, &check->error);
		pthread_mutex_lock(&hasher->lock);
		queue_push(&hasher->done, check);
		(void)!write(hasher->done_fd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&hasher->lock);
	return NULL;
}

unsigned int auth_hasher_resolve_threads(unsigned int threads)
{
	if (threads != 0)
		return threads;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	return cores > 0 ? (unsigned int)cores : 2;
}

struct auth_hasher *auth_hasher_start(unsigned int threads)
{
	struct auth_hasher *hasher = xcalloc(1, sizeof(*hasher));

	pthread_mutex_init(&hasher->lock, NULL);
	pthread_cond_init(&hasher->work_ready, NULL);
	hasher->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (hasher->done_fd < 0)
		fatal("eventfd failed");
	hasher->thread_count = auth_hasher_resolve_threads(threads);
	hasher->threads = xcalloc(hasher->thread_count, sizeof(*hasher->threads));
	for (unsigned int i = 0; i < hasher->thread_count; i++) {
		if (pthread_create(&hasher->threads[i], NULL, auth_hasher_thread, hasher) != 0)
			fatal("pthread_create failed");
	}
	return hasher;
}

unsigned int auth_hasher_thread_count(const struct auth_hasher *hasher)
{
	return hasher->thread_count;
}

void auth_hasher_submit(struct auth_hasher *hasher, struct auth_check *check)
{
	pthread_mutex_lock(&hasher->lock);
	queue_push(&hasher->work, check);
	pthread_cond_signal(&hasher->work_ready);
	pthread_mutex_unlock(&hasher->lock);
}

int auth_hasher_fd(const struct auth_hasher *hasher)
{
	return hasher->done_fd;
}

struct auth_check *auth_hasher_take_done(struct auth_hasher *hasher)
{
	uint64_t count;

	pthread_mutex_lock(&hasher->lock);
	struct auth_check *check = queue_pop(&hasher->done);
	if (hasher->done.head == NULL)
		(void)!read(hasher->done_fd, &count, sizeof(count)); /* drain: nothing else waits */
	pthread_mutex_unlock(&hasher->lock);
	return check;
}

void auth_hasher_stop(struct auth_hasher **hasherp, void (*drop)(struct auth_check *check))
{
	struct auth_hasher *hasher = *hasherp;
	struct auth_check *check;

	pthread_mutex_lock(&hasher->lock);
	hasher->stopping = true;
	pthread_cond_broadcast(&hasher->work_ready);
	pthread_mutex_unlock(&hasher->lock);
	for (unsigned int i = 0; i < hasher->thread_count; i++)
		pthread_join(hasher->threads[i], NULL);
	while ((check = queue_pop(&hasher->work)) != NULL)
		drop(check);
	while ((check = queue_pop(&hasher->done)) != NULL)
		drop(check);
	close(hasher->done_fd);
	pthread_mutex_destroy(&hasher->lock);
	pthread_cond_destroy(&hasher->work_ready);
	free(hasher->threads);
	x_free(hasherp);
}

void auth_check_clear(struct auth_check *check)
{
	if (check->password != NULL) {
		sodium_memzero(check->password, strlen(check->password));
		x_free(&check->password);
	}
	x_free(&check->secret);
}

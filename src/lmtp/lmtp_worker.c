/* The LMTP process (see lmtp.h): its event loop, listeners, and orderly shutdown. */
#include <event2/event.h>
#include <event2/listener.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth_client.h"
#include "core/log.h"
#include "core/sandbox.h"
#include "core/util.h"
#include "lmtp/lmtp.h"
#include "lmtp/lmtp_session.h"

/* How long accepting pauses after accept() fails for lack of descriptors or memory. */
#define LMTP_ACCEPT_PAUSE_MS 100

struct lmtp_worker {
	struct lmtp_server server;
	struct evconnlistener **listeners;
	size_t listener_count;
	struct event *accept_resume;
	bool draining;		      /* stopped accepting; exits when the last session ends */
	struct event *drain_check;    /* polls for that end while draining */
	struct event *drain_deadline; /* SIGTERM: the sessions left then are closed */
};

/* How often a draining LMTP process looks whether its last session has ended. */
#define LMTP_DRAIN_CHECK_MS 100

static void lmtp_worker_accept(struct evconnlistener *listener, evutil_socket_t fd,
			       struct sockaddr *addr, int addr_len, void *arg)
{
	struct lmtp_worker *worker = arg;

	(void)lmtp_session_create(&worker->server, fd, addr, addr_len);
}

static void lmtp_worker_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct lmtp_worker *worker = arg;

	for (size_t i = 0; i < worker->listener_count; i++)
		evconnlistener_enable(worker->listeners[i]);
}

static void lmtp_worker_accept_error(struct evconnlistener *listener, void *arg)
{
	struct lmtp_worker *worker = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval pause = {.tv_usec = LMTP_ACCEPT_PAUSE_MS * 1000};

	/* with EMFILE the connection stays queued and the socket readable: pause, do not spin */
	log_error("accept_failed", "error=%s", log_quote(evutil_socket_error_to_string(err)));
	for (size_t i = 0; i < worker->listener_count; i++)
		evconnlistener_disable(worker->listeners[i]);
	evtimer_add(worker->accept_resume, &pause);
}

static void lmtp_worker_drain_check(evutil_socket_t fd, short what, void *arg)
{
	struct lmtp_worker *worker = arg;

	if (worker->server.session_count == 0)
		event_base_loopbreak(worker->server.base);
}

/* The drain time is over: a transaction still open is abandoned, and since recipients are only
 * acknowledged after their delivery, the MTA keeps the message and retries it. */
static void lmtp_worker_drain_over(evutil_socket_t fd, short what, void *arg)
{
	struct lmtp_worker *worker = arg;

	log_info("lmtp_drain_over", "sessions=%u", worker->server.session_count);
	while (worker->server.sessions != NULL)
		lmtp_session_destroy(worker->server.sessions, "shutdown");
	event_base_loopbreak(worker->server.base);
}

/* SIGTERM/SIGINT: stop accepting, let the deliveries in progress finish for [server] drain_time.
 * SIGUSR1 (retired by a reload): the same without a deadline. */
static void lmtp_worker_stop(evutil_socket_t sig, short what, void *arg)
{
	struct lmtp_worker *worker = arg;
	bool deadline = sig != SIGUSR1;

	log_info(deadline ? "lmtp_stopping" : "lmtp_retiring", "signal=%d sessions=%u", (int)sig,
		 worker->server.session_count);
	if (!worker->draining) {
		struct timeval every = {.tv_usec = LMTP_DRAIN_CHECK_MS * 1000};
		worker->draining = true;
		/* the master keeps the listening sockets: what waits in a backlog goes to the
		 * next LMTP process */
		for (size_t i = 0; i < worker->listener_count; i++)
			evconnlistener_free(worker->listeners[i]);
		worker->listener_count = 0;
		evtimer_del(worker->accept_resume);
		event_add(worker->drain_check, &every);
	}
	if (deadline && !evtimer_pending(worker->drain_deadline, NULL)) {
		struct timeval drain = {.tv_sec = worker->server.config->drain_secs};
		evtimer_add(worker->drain_deadline, &drain);
	}
	lmtp_worker_drain_check(-1, 0, worker);
}

static void lmtp_worker_listen(struct lmtp_worker *worker, const struct lmtp_worker_setup *setup)
{
	worker->listeners = xcalloc(setup->listen_count, sizeof(*worker->listeners));
	for (size_t i = 0; i < setup->listen_count; i++) {
		worker->listeners[i] = evconnlistener_new(
		    worker->server.base, lmtp_worker_accept, worker,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, setup->listen_fds[i]);
		if (worker->listeners[i] == NULL)
			fatal("evconnlistener_new failed");
		evconnlistener_set_error_cb(worker->listeners[i], lmtp_worker_accept_error);
		worker->listener_count++;
	}
}

static void lmtp_worker_set_hostname(struct lmtp_server *server)
{
	const char *configured = server->config->lmtp_hostname;

	if (configured != NULL && configured[0] != '\0')
		snprintf(server->hostname, sizeof(server->hostname), "%s", configured);
	else if (gethostname(server->hostname, sizeof(server->hostname) - 1) < 0)
		snprintf(server->hostname, sizeof(server->hostname), "localhost");
}

/* Installs the stop handlers, then lets the signals in: the master forks us with them blocked. */
static void lmtp_worker_catch_signals(struct lmtp_worker *worker, struct event *signals[3])
{
	static const int stop_signal_numbers[3] = {SIGTERM, SIGINT, SIGUSR1};
	sigset_t stop_signals;

	sigemptyset(&stop_signals);
	for (size_t i = 0; i < 3; i++) {
		signals[i] = evsignal_new(worker->server.base, stop_signal_numbers[i],
					  lmtp_worker_stop, worker);
		event_add(signals[i], NULL);
		sigaddset(&stop_signals, stop_signal_numbers[i]);
	}
	sigprocmask(SIG_UNBLOCK, &stop_signals, NULL);
}

int lmtp_worker_main(const struct buzon_config *config, const struct lmtp_worker_setup *setup)
{
	struct lmtp_worker worker = {.server.config = config};
	struct event_config *event_config = event_config_new();
	struct event *signals[3];

	/* one thread per loop: no locks needed inside libevent */
	event_config_set_flag(event_config, EVENT_BASE_FLAG_NOLOCK);
	worker.server.base = event_base_new_with_config(event_config);
	event_config_free(event_config);
	if (worker.server.base == NULL)
		fatal("event_base_new failed");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	lmtp_worker_set_hostname(&worker.server);
	worker.server.auth = auth_client_create(worker.server.base, setup->auth_fd);
	worker.accept_resume = evtimer_new(worker.server.base, lmtp_worker_accept_resume, &worker);
	worker.drain_check =
	    event_new(worker.server.base, -1, EV_PERSIST, lmtp_worker_drain_check, &worker);
	worker.drain_deadline = evtimer_new(worker.server.base, lmtp_worker_drain_over, &worker);
	lmtp_worker_catch_signals(&worker, signals);
	lmtp_worker_listen(&worker, setup);
	char *sandbox_error = NULL;
	if (sandbox_apply(config, SANDBOX_KIND_LMTP, &sandbox_error) < 0)
		fatal("sandbox: %s", sandbox_error);
	log_info("lmtp_started", "listeners=%zu hostname=%s", setup->listen_count,
		 log_quote(worker.server.hostname));

	event_base_dispatch(worker.server.base);
	block_stop_signals();

	while (worker.server.sessions != NULL)
		lmtp_session_destroy(worker.server.sessions, "shutdown");
	for (size_t i = 0; i < worker.listener_count; i++)
		evconnlistener_free(worker.listeners[i]);
	free(worker.listeners);
	auth_client_destroy(&worker.server.auth);
	event_free(worker.accept_resume);
	for (size_t i = 0; i < 3; i++)
		event_free(signals[i]);
	event_free(worker.drain_check);
	event_free(worker.drain_deadline);
	event_base_free(worker.server.base);
	log_info("lmtp_stopped", "%s", "");
	return 0;
}

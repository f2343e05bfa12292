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
};

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

static void lmtp_worker_stop(evutil_socket_t sig, short what, void *arg)
{
	struct lmtp_worker *worker = arg;

	log_info("lmtp_stopping", "signal=%d sessions=%u", (int)sig, worker->server.session_count);
	/* stop accepting first, then drop sessions: nothing unacknowledged is kept */
	for (size_t i = 0; i < worker->listener_count; i++)
		evconnlistener_disable(worker->listeners[i]);
	while (worker->server.sessions != NULL)
		lmtp_session_destroy(worker->server.sessions, "shutdown");
	event_base_loopbreak(worker->server.base);
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
static void lmtp_worker_catch_signals(struct lmtp_worker *worker, struct event **sigterm_r,
				      struct event **sigint_r)
{
	sigset_t stop_signals;

	*sigterm_r = evsignal_new(worker->server.base, SIGTERM, lmtp_worker_stop, worker);
	*sigint_r = evsignal_new(worker->server.base, SIGINT, lmtp_worker_stop, worker);
	event_add(*sigterm_r, NULL);
	event_add(*sigint_r, NULL);
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigprocmask(SIG_UNBLOCK, &stop_signals, NULL);
}

int lmtp_worker_main(const struct buzon_config *config, const struct lmtp_worker_setup *setup)
{
	struct lmtp_worker worker = {.server.config = config};
	struct event_config *event_config = event_config_new();
	struct event *sigterm, *sigint;

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
	lmtp_worker_catch_signals(&worker, &sigterm, &sigint);
	lmtp_worker_listen(&worker, setup);
	char *sandbox_error = NULL;
	if (sandbox_apply(config, SANDBOX_KIND_LMTP, &sandbox_error) < 0)
		fatal("sandbox: %s", sandbox_error);
	log_info("lmtp_started", "listeners=%zu hostname=%s", setup->listen_count,
		 log_quote(worker.server.hostname));

	event_base_dispatch(worker.server.base);

	while (worker.server.sessions != NULL)
		lmtp_session_destroy(worker.server.sessions, "shutdown");
	for (size_t i = 0; i < worker.listener_count; i++)
		evconnlistener_free(worker.listeners[i]);
	free(worker.listeners);
	auth_client_destroy(&worker.server.auth);
	event_free(worker.accept_resume);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(worker.server.base);
	log_info("lmtp_stopped", "%s", "");
	return 0;
}

/* A POP3 worker process (see worker.h): its event loop, listeners, and orderly shutdown. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth_client.h"
#include "core/log.h"
#include "core/offload.h"
#include "core/sandbox.h"
#include "core/util.h"
#include "pop3/proxy_accept.h"
#include "pop3/session.h"
#include "pop3/takeover.h"
#include "net/tls.h"
#include "pop3/worker.h"
#include "store/uidl_import.h"

static void pop3_worker_accept(struct evconnlistener *listener, evutil_socket_t fd,
			       struct sockaddr *addr, int addr_len, void *arg)
{
	(void)pop3_session_create(arg, fd, addr, addr_len, false);
}

/* Implicit TLS (RFC 8314): the session speaks TLS from the first byte. */
static void pop3_worker_accept_tls(struct evconnlistener *listener, evutil_socket_t fd,
				   struct sockaddr *addr, int addr_len, void *arg)
{
	(void)pop3_session_create(arg, fd, addr, addr_len, true);
}

/* Behind a proxy (listen_proxy, listen_tls_proxy): the session starts once the PROXY header
 * has been read. */
static void pop3_worker_accept_proxy(struct evconnlistener *listener, evutil_socket_t fd,
				     struct sockaddr *addr, int addr_len, void *arg)
{
	pop3_proxy_accept(arg, fd, addr, addr_len, false);
}

static void pop3_worker_accept_tls_proxy(struct evconnlistener *listener, evutil_socket_t fd,
					 struct sockaddr *addr, int addr_len, void *arg)
{
	pop3_proxy_accept(arg, fd, addr, addr_len, true);
}

/* The accept callback of the i-th listening socket, in the order of pop3_worker_setup. */
static evconnlistener_cb pop3_worker_accept_cb(const struct buzon_config *config, size_t i)
{
	if (i < config->listen_count)
		return pop3_worker_accept;
	i -= config->listen_count;
	if (i < config->listen_tls_count)
		return pop3_worker_accept_tls;
	i -= config->listen_tls_count;
	return i < config->listen_proxy_count ? pop3_worker_accept_proxy
					      : pop3_worker_accept_tls_proxy;
}

/* How long accepting pauses after accept() fails for lack of descriptors or memory. */
#define POP3_ACCEPT_PAUSE_MS 100

/* Threads per worker for mailbox opens and commits. They wait on the disk, not the CPU, so a few
 * let one worker open several big mailboxes at once without any of them holding up its loop. */
#define POP3_WORKER_OFFLOAD_THREADS 4

static void pop3_worker_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_worker *worker = arg;

	for (size_t i = 0; i < worker->listener_count; i++)
		evconnlistener_enable(worker->listeners[i]);
}

static void pop3_worker_accept_error(struct evconnlistener *listener, void *arg)
{
	struct pop3_worker *worker = arg;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval pause = {.tv_usec = POP3_ACCEPT_PAUSE_MS * 1000};

	/* With EMFILE the pending connection stays queued and the socket stays readable: pause
	 * instead of spinning on accept() errors. */
	log_error("accept_failed", "error=%s", log_quote(evutil_socket_error_to_string(err)));
	for (size_t i = 0; i < worker->listener_count; i++)
		evconnlistener_disable(worker->listeners[i]);
	evtimer_add(worker->accept_resume, &pause);
}

/* How often a draining worker looks whether its last session has ended. */
#define POP3_DRAIN_CHECK_MS 100

static void pop3_worker_stop_accepting(struct pop3_worker *worker)
{
	/* the listening sockets stay open in the master and the other workers: connections
	 * waiting in their backlog go to those */
	for (size_t i = 0; i < worker->listener_count; i++)
		evconnlistener_free(worker->listeners[i]);
	worker->listener_count = 0;
	evtimer_del(worker->accept_resume);
}

static void pop3_worker_drain_check(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_worker *worker = arg;

	if (worker->session_count + worker->proxy_pending_count == 0)
		event_base_loopbreak(worker->base);
}

/* The drain time is over: the sessions left end without committing anything half-done. */
static void pop3_worker_drain_over(evutil_socket_t fd, short what, void *arg)
{
	struct pop3_worker *worker = arg;

	log_info("worker_drain_over", "sessions=%u", worker->session_count);
	while (worker->sessions != NULL)
		pop3_session_destroy(worker->sessions, "shutdown");
	event_base_loopbreak(worker->base);
}

/* SIGTERM/SIGINT: drain for [server] drain_time. SIGUSR1 (retired by a reload): drain until the
 * sessions end by themselves (the idle timeout bounds them). A SIGTERM during a SIGUSR1 drain
 * sets the deadline. */
static void pop3_worker_stop(evutil_socket_t sig, short what, void *arg)
{
	struct pop3_worker *worker = arg;
	bool deadline = sig != SIGUSR1;

	log_info(deadline ? "worker_stopping" : "worker_retiring", "signal=%d sessions=%u",
		 (int)sig, worker->session_count);
	if (!worker->draining) {
		struct timeval every = {.tv_usec = POP3_DRAIN_CHECK_MS * 1000};
		worker->draining = true;
		pop3_worker_stop_accepting(worker);
		pop3_worker_purge_stop(worker); /* the next generation's worker 0 takes over */
		event_add(worker->drain_check, &every);
	}
	if (deadline && !evtimer_pending(worker->drain_deadline, NULL)) {
		struct timeval drain = {.tv_sec = worker->config->drain_secs};
		evtimer_add(worker->drain_deadline, &drain);
	}
	pop3_worker_drain_check(-1, 0, worker);
}

static void pop3_worker_tls_start(struct pop3_worker *worker, const struct tls_material *tls)
{
	char *error = NULL;

	if (tls == NULL)
		return;
	worker->tls_ctx = tls_context_new(worker->config, tls, &error);
	if (worker->tls_ctx == NULL)
		fatal("TLS: %s", error); /* the master checked the same material before */
}

static void pop3_worker_listen(struct pop3_worker *worker, const struct pop3_worker_setup *setup)
{
	worker->listeners = xcalloc(setup->listen_count, sizeof(*worker->listeners));
	pop3_proxy_start(worker);
	for (size_t i = 0; i < setup->listen_count; i++) {
		worker->listeners[i] = evconnlistener_new(
		    worker->base, pop3_worker_accept_cb(worker->config, i), worker,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, setup->listen_fds[i]);
		if (worker->listeners[i] == NULL)
			fatal("evconnlistener_new failed");
		evconnlistener_set_error_cb(worker->listeners[i], pop3_worker_accept_error);
		worker->listener_count++;
	}
}

int pop3_worker_main(const struct buzon_config *config, const struct pop3_worker_setup *setup)
{
	struct pop3_worker worker = {.index = setup->index,
				     .config = config,
				     .ip_limit = setup->ip_limit,
				     .session_limit = setup->session_limit,
				     .bans = setup->bans};
	struct event_config *event_config = event_config_new();

	/* one thread per loop: no locks needed inside libevent */
	event_config_set_flag(event_config, EVENT_BASE_FLAG_NOLOCK);
	/* coalesce epoll_ctl() calls: a request/response session toggles write interest per reply
	 */
	event_config_set_flag(event_config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	worker.base = event_base_new_with_config(event_config);
	event_config_free(event_config);
	if (worker.base == NULL)
		fatal("event_base_new failed");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	/* a Maildir imported from Dovecot at its first open takes the configured UIDL format (the
	 * config check accepted it, so this cannot fail) */
	char *format_error = NULL;
	if (uidl_import_set_format(config->import_uidl_format, &format_error) < 0)
		fatal("%s", format_error);
	worker.implementation = xasprintf("buzon %s", BUZON_VERSION);
	if (gethostname(worker.hostname, sizeof(worker.hostname) - 1) < 0)
		snprintf(worker.hostname, sizeof(worker.hostname), "localhost");
	worker.auth = auth_client_create(worker.base, setup->auth_fd);
	auth_client_watch_policy(worker.auth); /* for CAPA before login */
	pop3_worker_admin_attach(&worker, setup->admin_fd);
	pop3_worker_tls_start(&worker, setup->tls);
	/* set-up is done: from here on only mailboxes; before the offload threads, which inherit
	 * the Landlock domain only if they start after it */
	char *sandbox_error = NULL;
	if (sandbox_apply(config, SANDBOX_KIND_POP3, &sandbox_error) < 0)
		fatal("sandbox: %s", sandbox_error);
	worker.offload = offload_pool_new(worker.base, POP3_WORKER_OFFLOAD_THREADS);
	if (worker.offload == NULL)
		fatal("cannot start the offload threads: %s", strerror(errno));
	worker.accept_resume = evtimer_new(worker.base, pop3_worker_accept_resume, &worker);
	worker.drain_check = event_new(worker.base, -1, EV_PERSIST, pop3_worker_drain_check, &worker);
	worker.drain_deadline = evtimer_new(worker.base, pop3_worker_drain_over, &worker);
	pop3_worker_purge_start(&worker);
	pop3_takeover_worker_init(&worker, setup->takeover);

	struct event *sigterm = evsignal_new(worker.base, SIGTERM, pop3_worker_stop, &worker);
	struct event *sigint = evsignal_new(worker.base, SIGINT, pop3_worker_stop, &worker);
	struct event *sigusr1 = evsignal_new(worker.base, SIGUSR1, pop3_worker_stop, &worker);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	event_add(sigusr1, NULL);
	/* the master forks us with the stop signals blocked; our handlers are in place now */
	sigset_t stop_signals;
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGUSR1);
	sigprocmask(SIG_UNBLOCK, &stop_signals, NULL);

	pop3_worker_listen(&worker, setup);
	log_info("worker_started", "listeners=%zu tls=%s", setup->listen_count,
		 worker.tls_ctx != NULL ? "yes" : "no");

	event_base_dispatch(worker.base);
	block_stop_signals();

	while (worker.sessions != NULL)
		pop3_session_destroy(worker.sessions, "shutdown");
	pop3_proxy_stop(&worker);
	pop3_takeover_worker_free(&worker);
	pop3_worker_purge_stop(&worker);
	/* after the sessions: jobs that outlived them release their maildrops */
	offload_pool_free(&worker.offload);
	for (size_t i = 0; i < worker.listener_count; i++)
		evconnlistener_free(worker.listeners[i]);
	free(worker.listeners);
	auth_client_destroy(&worker.auth);
	pop3_worker_admin_detach(&worker);
	event_free(worker.accept_resume);
	event_free(worker.drain_check);
	event_free(worker.drain_deadline);
	event_free(sigterm);
	event_free(sigint);
	event_free(sigusr1);
	event_base_free(worker.base);
	SSL_CTX_free(worker.tls_ctx);
	free(worker.implementation);
	log_info("worker_stopped", "sessions=%u", worker.session_count);
	return 0;
}

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
#include "pop3/session.h"
#include "net/tls.h"
#include "pop3/worker.h"

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

static void pop3_worker_stop(evutil_socket_t sig, short what, void *arg)
{
	struct pop3_worker *worker = arg;

	log_info("worker_stopping", "signal=%d sessions=%u", (int)sig, worker->session_count);
	/* stop accepting first, then drop sessions: nothing half-done is committed */
	for (size_t i = 0; i < worker->listener_count; i++)
		evconnlistener_disable(worker->listeners[i]);
	while (worker->sessions != NULL)
		pop3_session_destroy(worker->sessions, "shutdown");
	event_base_loopbreak(worker->base);
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

/* New TLS material from the master (SIGHUP): new connections use it, open ones keep theirs. */
static void pop3_worker_ctl_read(struct bufferevent *bev, void *arg)
{
	struct pop3_worker *worker = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (evbuffer_get_length(in) >= TLS_PACK_HEADER_LEN) {
		unsigned char *header = evbuffer_pullup(in, TLS_PACK_HEADER_LEN);
		size_t need = tls_material_packed_len(header, TLS_PACK_HEADER_LEN);
		if (need == 0) {
			log_error("ctl_message_malformed", "%s", "");
			evbuffer_drain(in, evbuffer_get_length(in));
			return;
		}
		if (evbuffer_get_length(in) < need)
			return;
		struct tls_material material;
		char *error = NULL;
		int ret = tls_material_unpack(evbuffer_pullup(in, (ssize_t)need), need, &material);
		evbuffer_drain(in, need);
		SSL_CTX *ctx = ret == 0 ? tls_context_new(worker->config, &material, &error) : NULL;
		tls_material_clear(&material);
		if (ctx == NULL) {
			log_error("tls_reload_failed", "error=%s keeping=old",
				  log_quote(error != NULL ? error : "malformed"));
			free(error);
			continue;
		}
		SSL_CTX_free(worker->tls_ctx); /* open sessions hold their own references */
		worker->tls_ctx = ctx;
		log_info("tls_reloaded", "%s", "");
	}
}

static void pop3_worker_ctl_event(struct bufferevent *bev, short what, void *arg)
{
	struct pop3_worker *worker = arg;

	/* the master is gone: nothing more will come */
	bufferevent_free(worker->ctl);
	worker->ctl = NULL;
}

static void pop3_worker_listen(struct pop3_worker *worker, const struct pop3_worker_setup *setup)
{
	worker->listeners = xcalloc(setup->listen_count, sizeof(*worker->listeners));
	for (size_t i = 0; i < setup->listen_count; i++) {
		bool tls = i >= worker->config->listen_count;
		worker->listeners[i] = evconnlistener_new(
		    worker->base, tls ? pop3_worker_accept_tls : pop3_worker_accept, worker,
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
	worker.implementation = xasprintf("buzon %s", BUZON_VERSION);
	if (gethostname(worker.hostname, sizeof(worker.hostname) - 1) < 0)
		snprintf(worker.hostname, sizeof(worker.hostname), "localhost");
	worker.auth = auth_client_create(worker.base, setup->auth_fd);
	pop3_worker_tls_start(&worker, setup->tls);
	/* set-up is done: from here on only mailboxes; before the offload threads, which inherit
	 * the Landlock domain only if they start after it */
	char *sandbox_error = NULL;
	if (sandbox_apply(config, SANDBOX_KIND_POP3, &sandbox_error) < 0)
		fatal("sandbox: %s", sandbox_error);
	worker.offload = offload_pool_new(worker.base, POP3_WORKER_OFFLOAD_THREADS);
	if (worker.offload == NULL)
		fatal("cannot start the offload threads: %s", strerror(errno));
	worker.ctl = bufferevent_socket_new(worker.base, setup->ctl_fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(worker.ctl, pop3_worker_ctl_read, NULL, pop3_worker_ctl_event, &worker);
	bufferevent_enable(worker.ctl, EV_READ);
	worker.accept_resume = evtimer_new(worker.base, pop3_worker_accept_resume, &worker);

	struct event *sigterm = evsignal_new(worker.base, SIGTERM, pop3_worker_stop, &worker);
	struct event *sigint = evsignal_new(worker.base, SIGINT, pop3_worker_stop, &worker);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	/* the master forks us with the stop signals blocked; our handlers are in place now */
	sigset_t stop_signals;
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigprocmask(SIG_UNBLOCK, &stop_signals, NULL);

	pop3_worker_listen(&worker, setup);
	log_info("worker_started", "listeners=%zu tls=%s", setup->listen_count,
		 worker.tls_ctx != NULL ? "yes" : "no");

	event_base_dispatch(worker.base);

	while (worker.sessions != NULL)
		pop3_session_destroy(worker.sessions, "shutdown");
	/* after the sessions: jobs that outlived them release their maildrops */
	offload_pool_free(&worker.offload);
	for (size_t i = 0; i < worker.listener_count; i++)
		evconnlistener_free(worker.listeners[i]);
	free(worker.listeners);
	auth_client_destroy(&worker.auth);
	event_free(worker.accept_resume);
	if (worker.ctl != NULL)
		bufferevent_free(worker.ctl);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(worker.base);
	SSL_CTX_free(worker.tls_ctx);
	free(worker.implementation);
	log_info("worker_stopped", "sessions=%u", worker.session_count);
	return 0;
}

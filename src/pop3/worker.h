/* A POP3 worker process: one libevent loop that accepts on its own SO_REUSEPORT listeners and runs
 * the sessions of the connections the kernel hands it. */
#ifndef BUZON_POP3_WORKER_H
#define BUZON_POP3_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/config.h"

#include <openssl/ssl.h>

struct event_base;
struct bufferevent;
struct auth_client;
struct tls_material;
struct ip_limit;
struct ban_table;
struct takeover_table;
struct pop3_session;
struct offload_pool;
struct net_list;
struct pop3_proxy_pending;
struct pop3_purge;

struct pop3_worker {
	unsigned int index;
	const struct buzon_config *config;
	struct event_base *base;
	struct auth_client *auth;
	struct ip_limit *ip_limit;	/* pre-login connections per IP, across workers */
	struct ip_limit *session_limit; /* logged-in sessions per IP, across workers */
	struct ban_table *bans;		/* client IPs the auth process banned */
	struct net_list *proxy_trusted; /* [pop3] proxy_trusted: who may send PROXY headers */
	struct pop3_proxy_pending *proxy_pending; /* connections still sending their header */
	unsigned int proxy_pending_count;	  /* they count against max_connections */
	struct evconnlistener **listeners;
	size_t listener_count;
	struct pop3_session *sessions; /* every live session, for shutdown */
	unsigned int session_count;
	uint64_t next_session_number;
	char *implementation;	      /* CAPA IMPLEMENTATION text */
	struct event *accept_resume;  /* re-enables accepting after running out of descriptors */
	char hostname[64];	      /* for APOP timestamps */
	SSL_CTX *tls_ctx;	      /* NULL when TLS is not configured */
	struct offload_pool *offload; /* threads for mailbox opens and commits */
	struct bufferevent *admin;    /* the admin process's channel (worker_admin.c), or NULL */
	bool draining;		      /* stopped accepting; exits when the last session ends */
	struct event *drain_check;    /* polls for that end while draining */
	struct event *drain_deadline; /* SIGTERM: the sessions left then are closed */
	struct pop3_purge *purge;     /* worker 0's background purge (worker_purge.c), or NULL */
	/* [pop3] lock_takeover (takeover.c): the shared table of held maildrops (NULL: off), the
	 * timer that looks for requests while takeover_held sessions are published, and the
	 * doorbell value it last saw */
	struct takeover_table *takeover;
	struct event *takeover_tick;
	unsigned int takeover_held;
	uint32_t takeover_doorbell;
	pid_t pid;
};

/* What the master hands a worker it starts. */
struct pop3_worker_setup {
	unsigned int index;
	/* listening sockets: one per [pop3] listen address, then one per listen_tls address, then
	 * listen_proxy, then listen_tls_proxy */
	const int *listen_fds;
	size_t listen_count;
	int auth_fd;
	int admin_fd; /* the admin process's channel (`buzon who`, `kick`); -1 when none */
	struct ip_limit *ip_limit;
	struct ip_limit *session_limit;
	struct ban_table *bans;
	struct takeover_table *takeover; /* held maildrops, across workers and generations */
	const struct tls_material *tls;	 /* NULL when TLS is not configured */
};

/* Runs the worker. SIGTERM/SIGINT: stops accepting, lets the sessions go on for [server]
 * drain_time, then closes those left without committing. SIGUSR1 (a reload retires this worker):
 * stops accepting and lets the sessions end by themselves. The worker exits when no session is
 * left. Takes ownership of the listening sockets, auth_fd and admin_fd. Returns the exit status. */
int pop3_worker_main(const struct buzon_config *config, const struct pop3_worker_setup *setup);

/* Serves the admin process's requests (`buzon who`, `buzon kick`) on channel_fd, the worker's end
 * of its admin channel, which it takes over (worker_admin.c); -1 does nothing. Call before the
 * sandbox: the channel is made non-blocking. */
void pop3_worker_admin_attach(struct pop3_worker *worker, int channel_fd);
/* Closes the admin channel, if any. */
void pop3_worker_admin_detach(struct pop3_worker *worker);

/* Worker 0 only, when [mail] purge_interval is not 0: starts the background purge of the undelete
 * window (worker_purge.c), a pass over the mail root every purge_interval on the offload threads.
 * Call after the offload pool exists. */
void pop3_worker_purge_start(struct pop3_worker *worker);
/* Stops it (a step running on an offload thread finishes first). Call when the worker starts to
 * drain and before the offload pool is freed; does nothing when it is not running. */
void pop3_worker_purge_stop(struct pop3_worker *worker);

#endif

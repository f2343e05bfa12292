/* A POP3 worker process: one libevent loop that accepts on its own SO_REUSEPORT listeners and runs
 * the sessions of the connections the kernel hands it. */
#ifndef BUZON_POP3_WORKER_H
#define BUZON_POP3_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

#include <openssl/ssl.h>

struct event_base;
struct auth_client;
struct tls_material;
struct ip_limit;
struct ban_table;
struct pop3_session;
struct offload_pool;

struct pop3_worker {
	unsigned int index;
	const struct buzon_config *config;
	struct event_base *base;
	struct auth_client *auth;
	struct ip_limit *ip_limit;	/* pre-login connections per IP, across workers */
	struct ip_limit *session_limit; /* logged-in sessions per IP, across workers */
	struct ban_table *bans;		/* client IPs the auth process banned */
	struct evconnlistener **listeners;
	size_t listener_count;
	struct pop3_session *sessions; /* every live session, for shutdown */
	unsigned int session_count;
	uint64_t next_session_number;
	char *implementation;	      /* CAPA IMPLEMENTATION text */
	struct event *accept_resume;  /* re-enables accepting after running out of descriptors */
	char hostname[64];	      /* for APOP timestamps */
	SSL_CTX *tls_ctx;	      /* NULL when TLS is not configured */
	struct bufferevent *ctl;      /* the master's control channel */
	struct offload_pool *offload; /* threads for mailbox opens and commits */
};

/* What the master hands a worker it starts. */
struct pop3_worker_setup {
	unsigned int index;
	/* listening sockets: one per [pop3] listen address, then one per listen_tls address */
	const int *listen_fds;
	size_t listen_count;
	int auth_fd;
	int ctl_fd; /* from the master: new TLS material on reload */
	struct ip_limit *ip_limit;
	struct ip_limit *session_limit;
	struct ban_table *bans;
	const struct tls_material *tls; /* NULL when TLS is not configured */
};

/* Runs the worker until SIGTERM/SIGINT, then drops every session without committing. Takes
 * ownership of the listening sockets and auth_fd. Returns the process exit status. */
int pop3_worker_main(const struct buzon_config *config, const struct pop3_worker_setup *setup);

#endif

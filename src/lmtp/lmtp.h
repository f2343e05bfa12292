/* The LMTP server (RFC 2033): one process with one libevent loop, on the TCP and UNIX sockets of
 * [lmtp] listen, running as the mail user. Recipients are resolved by the auth process
 * (AUTH_MSG_LOOKUP); messages go through delivery.h. */
#ifndef BUZON_LMTP_LMTP_H
#define BUZON_LMTP_LMTP_H

#include <stddef.h>

#include "core/config.h"

/* What the master hands the LMTP process. */
struct lmtp_worker_setup {
	const int *listen_fds; /* already listening: UNIX sockets and TCP sockets */
	size_t listen_count;
	int auth_fd; /* SOCK_SEQPACKET connection to the auth process */
};

/* Runs until SIGTERM/SIGINT (stop accepting, let sessions finish for [server] drain_time) or
 * SIGUSR1 (a reload retires it: the same without a deadline). A transaction still open at the
 * deadline is abandoned (nothing half-delivered: recipients are only acknowledged after
 * delivery_finish()). Returns the exit status. */
int lmtp_worker_main(const struct buzon_config *config, const struct lmtp_worker_setup *setup);

#endif

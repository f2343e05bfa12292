/* The admin process: serves the control socket (`buzon who|kick|stats|reload|ban`) and the
 * Prometheus metrics over HTTP. It runs unprivileged and sandboxed like a POP3 worker, so that the
 * parsing of HTTP requests and control commands never happens in the root master.
 *
 * Channels:
 * - master <-> admin: a SOCK_SEQPACKET socketpair. The master sends each POP3 worker's admin
 *   channel (SCM_RIGHTS) as the worker starts; the admin sends RELOAD requests and gets the
 *   master's answer.
 * - admin <-> each POP3 worker: a SOCK_STREAM socketpair of newline-terminated text requests
 *   (WHO, KICK) and replies; the admin sees EOF when the worker exits.
 * - clients <-> admin: the control socket, a UNIX stream socket that only root and the server's own
 *   user may open (file mode 0600, and the peer's uid is checked with SO_PEERCRED). */
#ifndef BUZON_ADMIN_ADMIN_H
#define BUZON_ADMIN_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/config.h"

struct metrics;
struct ban_table;

/* What the master hands the admin process it starts. */
struct admin_setup {
	int master_fd;		/* SOCK_SEQPACKET to the master */
	int control_fd;		/* the listening control socket */
	const int *metrics_fds; /* listening TCP sockets of [metrics] listen */
	size_t metrics_fd_count;
	struct metrics *metrics; /* the shared counters of every process */
	struct ban_table *bans;	 /* the shared ban table (and its register of banned addresses) */
};

/* Runs the admin process until SIGTERM (or SIGUSR1: stop accepting, finish the requests in
 * progress, then exit). Returns the exit status. */
int admin_main(const struct buzon_config *config, const struct admin_setup *setup);

/* ---- master side ---- */

/* Creates the listening control socket at path (replacing a stale socket file, creating the
 * directory with mode 0755), mode 0600, owned by owner:group when change_owner (the master runs as
 * root). Returns the listening fd or -1 with *error_r set. */
int admin_control_socket_open(const char *path, bool change_owner, uid_t owner, gid_t group,
			      char **error_r);

/* Hands the admin process a new POP3 worker's channel (the admin's end), with the worker's index,
 * generation (reload count) and pid for `buzon who`. The caller keeps and closes its own copy of
 * channel_fd. Returns -1 on error (errno set). */
int admin_send_worker_channel(int admin_fd, unsigned int index, unsigned int generation, pid_t pid,
			      int channel_fd);

/* Requests the admin process sends the master. */
enum admin_master_request {
	ADMIN_MASTER_RELOAD = 1, /* re-read the config, users and TLS; answer with the result */
};

/* Reads one request from the admin process (the fd is readable). Returns 0 with *request_r set,
 * -1 on EOF, error or a malformed message (the master then closes the channel). */
int admin_master_read_request(int admin_fd, enum admin_master_request *request_r);

/* Answers the pending request: ok, and a one-line text for the operator. Returns -1 on error. */
int admin_master_reply(int admin_fd, bool ok, const char *text);

#endif

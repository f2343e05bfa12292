/* Confines each child of `buzon serve` once its set-up is done: Landlock limits the files it may
 * touch and forbids new TCP binds and connections, seccomp limits the system calls it may make.
 * What each process may do, and why, is in docs/DESIGN.md ("Sandbox"). */
#ifndef BUZON_CORE_SANDBOX_H
#define BUZON_CORE_SANDBOX_H

#include "core/config.h"

/* The processes that get a sandbox; each kind has its own file rules and system calls. */
enum sandbox_kind {
	SANDBOX_KIND_POP3, /* POP3 workers: network, TLS, mailboxes (offload threads) */
	SANDBOX_KIND_LMTP, /* the LMTP process: network, delivery into mailboxes */
	SANDBOX_KIND_AUTH, /* the auth process: its workers' sockets, the passwd-file (hash threads)
			    */
	SANDBOX_KIND_ADMIN, /* the admin process: control socket, metrics HTTP, no files at all */
};

/* Confines the calling process for the rest of its life, unless [server] sandbox = no.
 *
 * Call it once the process holds everything it needs from outside its allowance (listening
 * sockets, its sockets to other processes, TLS contexts, privileges dropped) and before it starts
 * any thread: Landlock covers only the calling thread and the threads it starts later (seccomp is
 * synchronised over every thread anyway).
 *
 * Logs "sandbox process=KIND landlock_abi=N seccomp=yes|no", and one "sandbox_degraded" line per
 * part the kernel does not offer; the process then runs with what is left. Returns 0, or -1 with
 * *error_r (newly allocated) when a part the kernel offers could not be applied: the caller must
 * not run on without it.
 *
 * Test hook, inert unless set in the environment: BUZON_SANDBOX_PROBE=PATH[:PATH…] makes the
 * process, once confined, try to open each PATH for reading and for appending (it never reads or
 * writes a byte) and log "sandbox_probe process=KIND access=read path=… result=allowed|denied";
 * BUZON_SANDBOX_PROBE_SYSCALL=KIND makes processes of that kind then open an IPv4 socket, which
 * none of them may do (the kernel kills it with SIGSYS when seccomp is on). */
int sandbox_apply(const struct buzon_config *config, enum sandbox_kind kind, char **error_r);

/* The directory every mailbox lives beneath: [mail] location up to its first '%', cut back to a
 * whole directory ("maildir:/srv/mail/%d/%n" gives "/srv/mail", "maildir:/home/%u/Maildir"
 * gives "/home", "maildir:/%u" gives "/"). Newly allocated; NULL if location names no absolute
 * path. */
char *sandbox_mail_root(const char *location);

#endif

/* Prometheus metrics of the whole daemon: counters and gauges that every process writes into one
 * anonymous shared mapping made by the master before it forks (like ip_limit and ban_table), and
 * that the admin process renders in the Prometheus text exposition format 0.0.4 for /metrics.
 *
 * Layout: one slot per child process, plus the "retired" totals. The master claims a slot for each
 * child it forks; the child attaches to it and is the only writer of its slot, so no lock is
 * needed: every value is a 64-bit atomic updated with relaxed ordering (memory writes only, no
 * system call: the sandbox's seccomp lists allow nothing more in the hot path). When the master
 * reaps a child it folds the slot's counters into the retired totals and frees the slot, so
 * counters never go backwards across restarts and reloads; gauges (open sessions) of a dead
 * process are dropped. The renderer sums the retired totals and every slot, retrying while the
 * master is in the middle of a release (a sequence count), so that a scrape never sees a released
 * slot's counters twice or not at all.
 *
 * The mapping holds fixed-size arrays only, no pointers, since its processes run as different
 * users and each maps it at its own address.
 *
 * Instrumentation calls (metrics_session_*, metrics_count_*, metrics_command_*) write the slot the
 * calling process attached to; in a process that attached to none (unit tests, the CLI commands,
 * `buzon deliver`) they do nothing. */
#ifndef BUZON_CORE_METRICS_H
#define BUZON_CORE_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct evbuffer;
struct metrics;

/* ---- master and admin side ---- */

/* Creates the shared mapping with slot_count process slots, all free, and records the start time
 * of the daemon (buzon_start_time_seconds). Call in the master before forking. Aborts if the
 * mapping cannot be made. */
struct metrics *metrics_create(unsigned int slot_count);
/* Unmaps the mapping in this process and frees *metrics, setting it to NULL; NULL is ignored. */
void metrics_destroy(struct metrics **metrics);

/* Master: claims a free slot for a child about to be forked, for role "pop3", "lmtp", "auth" or
 * "admin" (another role is a programming error and aborts). The slot starts at zero. Returns the
 * slot number, or -1 if every slot is taken (the child then runs without metrics). */
int metrics_slot_claim(struct metrics *metrics, const char *role);
/* Master, after reaping the slot's process: adds its counters to the retired totals, drops its
 * gauges and frees the slot. A slot of -1 is ignored. */
void metrics_slot_release(struct metrics *metrics, int slot);

/* Child, right after fork: the instrumentation calls of this process write slot from now on (-1:
 * nowhere). */
void metrics_attach(struct metrics *metrics, int slot);

/* Appends every metric to out in the Prometheus text exposition format 0.0.4, each family with its
 * # HELP and # TYPE lines. Reads the mapping only. */
void metrics_render(const struct metrics *metrics, struct evbuffer *out);

/* ---- instrumentation (no-ops without an attached slot) ---- */

/* The listener that accepted a POP3 connection: [pop3] listen, listen_tls, listen_proxy,
 * listen_tls_proxy. */
enum metrics_listener {
	METRICS_LISTENER_POP3,
	METRICS_LISTENER_POP3S,
	METRICS_LISTENER_POP3_PROXY,
	METRICS_LISTENER_POP3S_PROXY,
	METRICS_LISTENER_COUNT
};

/* The listener kind of a connection with implicit TLS or not, behind the PROXY protocol or not. */
enum metrics_listener metrics_listener_of(bool implicit_tls, bool proxy);

/* A POP3 session began (connected, not logged in). */
void metrics_session_open(enum metrics_listener listener);
/* The session logged in: it moves from "connected" to "authenticated". */
void metrics_session_login(enum metrics_listener listener);
/* The session ended; authenticated says which state it left. */
void metrics_session_close(enum metrics_listener listener, bool authenticated);

/* How a login attempt ended. */
enum metrics_login_result {
	METRICS_LOGIN_OK,      /* logged in: the maildrop is open */
	METRICS_LOGIN_FAILED,  /* wrong credentials (or an unknown user) */
	METRICS_LOGIN_REFUSED, /* refused whatever the credentials: banned, cleartext not allowed,
				  too many sessions from the address, maildrop in use */
	METRICS_LOGIN_ERROR,   /* a temporary failure: auth process unavailable, mailbox error */
	METRICS_LOGIN_ABORTED, /* the client cancelled its SASL exchange or broke it off */
	METRICS_LOGIN_RESULT_COUNT
};

/* Counts a login attempt with mechanism "USER" (USER/PASS), "APOP" or a SASL mechanism name. A
 * name buzon does not implement is not counted (none reaches here: the command table and the
 * SASL registry only let the known ones through). */
void metrics_count_login(const char *mechanism, enum metrics_login_result result);

/* The latency of one POP3 command, kept in its session: from the command line being parsed to
 * its reply being queued for the client. For a multi-line reply (RETR, TOP, LIST, UIDL) that is
 * the status line and as much of the body as fills the output buffer (POP3_OUTPUT_THROTTLE, 64
 * KiB), not the whole transfer; for
 * commands that wait (PASS, APOP, AUTH, QUIT in TRANSACTION) it includes the auth process's
 * answer, the failed-login delay and the mailbox open or commit. */
struct metrics_command_timer {
	bool running;
	unsigned int command; /* index into the command names */
	uint64_t started_ns;  /* CLOCK_MONOTONIC */
};

/* Counts a command (name as parsed, upper case; NULL or a name that is not a POP3 command counts
 * as "unknown") and starts timing it. */
void metrics_command_start(struct metrics_command_timer *timer, const char *name);
/* Records the latency of the command being timed, if any, and stops timing. */
void metrics_command_finish(struct metrics_command_timer *timer);

/* Bytes to and from POP3 clients (the protocol's bytes, before TLS encryption). */
void metrics_count_bytes_sent(uint64_t bytes);
void metrics_count_bytes_received(uint64_t bytes);
/* A RETR that sent its whole message. */
void metrics_count_retrieved(void);
/* Messages removed by a successful QUIT commit. */
void metrics_count_deleted(uint64_t messages);
/* A login refused with [IN-USE]: another session holds the maildrop lock. */
void metrics_count_lock_conflict(void);
/* Counts a -ERR reply by its RFC 2449/3206 response code; text is the reply line, with or without
 * its leading "-ERR ". */
void metrics_count_error_reply(const char *text);

/* A TLS handshake that completed (ok) or did not; version is the protocol version name OpenSSL
 * reports for the connection (SSL_get_version()), NULL if unknown. */
void metrics_count_tls_handshake(bool ok, const char *version);

/* What became of one LMTP recipient's copy of a message. */
enum metrics_delivery_result {
	METRICS_DELIVERY_DELIVERED,
	METRICS_DELIVERY_TEMPFAIL,
	METRICS_DELIVERY_PERMFAIL,
	METRICS_DELIVERY_OVER_QUOTA,
	METRICS_DELIVERY_NO_SPACE,
	METRICS_DELIVERY_TOO_BIG,
	METRICS_DELIVERY_RESULT_COUNT
};

/* Counts one recipient's delivery; bytes (the message size) are added when delivered. */
void metrics_count_delivery(enum metrics_delivery_result result, uint64_t bytes);

/* Auth process: a failed login answered with a delay, and a client banned. */
void metrics_count_auth_penalty(void);
void metrics_count_auth_ban(void);

#endif

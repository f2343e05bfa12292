/* The auth process's hashing threads: slow password checks (yescrypt, Argon2id, PBKDF2) run here so
 * that the auth process's main thread keeps answering. Checks go in with auth_hasher_submit() and
 * come back, in any order, through auth_hasher_take_done() when auth_hasher_fd() is readable. */
#ifndef BUZON_AUTH_AUTH_HASHER_H
#define BUZON_AUTH_AUTH_HASHER_H

#include <stdbool.h>

/* One password check; the caller allocates it, embeds its own data after these fields, and gets
 * it back done. */
struct auth_check {
	struct auth_check *next;
	char *secret;	   /* stored secret to check against (for unknown users: a dummy) */
	char *password;	   /* wiped and freed by auth_check_clear() */
	int verdict;	   /* out: 1 match, 0 mismatch, -1 malformed secret */
	const char *error; /* out: why the secret is malformed */
};

struct auth_hasher;

/* The number of threads auth_hasher_start(threads) starts: threads, or for 0 one per core. For 0
 * it reads /sys, so a sandboxed process asks before its sandbox closes /sys. */
unsigned int auth_hasher_resolve_threads(unsigned int threads);

/* Starts threads (0 = one per core). */
struct auth_hasher *auth_hasher_start(unsigned int threads);
unsigned int auth_hasher_thread_count(const struct auth_hasher *hasher);

/* Queues check; it comes back through auth_hasher_take_done(). */
void auth_hasher_submit(struct auth_hasher *hasher, struct auth_check *check);

/* A descriptor that is readable while finished checks wait to be taken. */
int auth_hasher_fd(const struct auth_hasher *hasher);

/* Returns one finished check or NULL. */
struct auth_check *auth_hasher_take_done(struct auth_hasher *hasher);

/* Stops the threads and hands every unfinished or untaken check to drop(check). */
void auth_hasher_stop(struct auth_hasher **hasher, void (*drop)(struct auth_check *check));

/* Wipes and frees the password and frees the secret. */
void auth_check_clear(struct auth_check *check);

#endif

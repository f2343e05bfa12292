/* Brute-force slow-down in the auth process: per-client failure tracking that says how long a
 * worker waits before answering a failed login, and when a client is banned. Used only from the
 * auth process's main thread, so nothing here locks.
 *
 * Policy, per client (net_addr_client(): an IPv4 address, or the /64 of an IPv6 address):
 *  - Each failed login doubles the delay: initial_ms, 2x, 4x, ... capped at max_ms.
 *  - A retry of one of the last PENALTY_FINGERPRINTS wrong passwords (same user and password, told
 *    apart by penalty_fingerprint()) neither grows the delay nor counts towards a ban: mail clients
 *    retry a stale stored password every few minutes, which is no guessing.
 *  - ban_failures counted failures within ban_window_secs ban the client for ban_secs. The failure
 *    counts restart when a ban starts, so a client back from a ban gets ban_failures fresh tries.
 *  - A successful login resets the delay and the remembered passwords, but neither an active ban
 *    nor the failures counted towards one, so an attacker with one valid account cannot wash away
 *    its count by logging in between guesses.
 *  - Clients in the trusted networks get no delay and are never banned or tracked.
 *  - A client's record (its delay, its counts) is forgotten when it has had no failure for longer
 *    than ban_window_secs and is not banned.
 *
 * Memory is bounded: at most PENALTY_MAX_CLIENTS records; when full, the least recently updated
 * one is dropped (a flood of that many clients can thus drop a ban from this table, which is why
 * bans are also written to the shared ban table that workers check).
 *
 * Time is a millisecond count passed in by the caller (CLOCK_MONOTONIC in the server, anything
 * non-decreasing in tests); bans are counted at one-second granularity. IP arguments are numeric
 * IPv4/IPv6 text; text that does not parse is tracked as one shared client "::" so that it is still
 * slowed down (the auth protocol should never send it). */
#ifndef BUZON_AUTH_PENALTY_H
#define BUZON_AUTH_PENALTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#include <sodium.h>

#include "net/netlist.h"

/* Defaults, each chosen so that a person who mistypes loses little and a guesser loses a lot. */
/* First delay: long enough that one connection cannot make more than ~30 guesses a minute, short
 * enough that a person who mistyped once hardly notices. */
#define PENALTY_DEFAULT_INITIAL_MS 2000
/* Cap: reached on the fourth failure; beyond about 15 s clients start timing out and reconnecting,
 * which costs us a new connection instead of saving anything. */
#define PENALTY_DEFAULT_MAX_MS 15000
/* 20 distinct wrong passwords in 10 minutes is beyond any person but a small dictionary to a
 * guesser; after it, the client is banned. */
#define PENALTY_DEFAULT_BAN_FAILURES	20
#define PENALTY_DEFAULT_BAN_WINDOW_SECS 600
/* Ban length equal to the window: a guesser gets at most 20 guesses per 20 minutes (~1,400 a day)
 * per address, while a household or office behind one NAT address that trips it is locked out
 * for only 10 minutes, which needs no admin to undo. Longer bans cut guessing little further
 * (the delay already limits it) but make the collateral damage of shared addresses worse. */
#define PENALTY_DEFAULT_BAN_SECS 600

/* Upper bounds that penalty_config_check() enforces. */
/* Each record keeps one 4-byte timestamp per failure that counts towards a ban, so at 64 a full
 * table takes ~42 MB instead of ~25 MB with the default 20; a threshold higher than 64 is no
 * longer a brute-force defence anyway. */
#define PENALTY_BAN_FAILURES_MAX 64
/* Longer delays than a minute make clients time out before they hear the answer. */
#define PENALTY_DELAY_MAX_MS 60000
/* A window or ban over a day is a typo for a permanent block, which belongs in a firewall. */
#define PENALTY_PERIOD_MAX_SECS 86400

/* Clients tracked at most. Full, the table takes ~25 MB with the defaults (232-byte records plus
 * 1 MiB of hash chains; 26 MB RSS measured) and covers far more distinct addresses than any real
 * user base fails from within one window. A larger flood evicts the oldest records, which loses
 * slow-down state and possibly bans held here, but not those already in the shared ban table. */
#define PENALTY_MAX_CLIENTS 100000
/* Wrong passwords remembered per client: enough for a household's or office's few devices that
 * each keep retrying their own stale password. */
#define PENALTY_FINGERPRINTS 4

#define PENALTY_FP_LEN	   16 /* bytes of a fingerprint: enough that two passwords never collide */
#define PENALTY_FP_KEY_LEN crypto_generichash_KEYBYTES

struct penalty_config {
	unsigned int initial_ms;      /* first delay; 0 disables delays */
	unsigned int max_ms;	      /* delay cap */
	unsigned int ban_failures;    /* failures within the window that ban; 0 disables bans */
	unsigned int ban_window_secs; /* window in which ban_failures are counted */
	unsigned int ban_secs;	      /* how long a ban lasts */
	/* Exempt from delays and bans; NULL for none. Not owned: must outlive the table. */
	const struct net_list *trusted;
};

/* A ban, for an admin listing. */
struct penalty_ban {
	char ip[INET6_ADDRSTRLEN]; /* the client's address, or its /64 network address */
	unsigned int prefix_len;   /* 32 for IPv4, NET_CLIENT_IPV6_PREFIX for IPv6 */
	uint64_t until_ms;	   /* on the caller's clock */
};

struct penalty_table;

/* Fills config with the PENALTY_DEFAULT_* values and no trusted networks. */
void penalty_config_init(struct penalty_config *config);
/* Returns 0 if config is usable, or -1 with a static *error_r saying which value is wrong. */
int penalty_config_check(const struct penalty_config *config, const char **error_r);

/* Creates an empty table that copies config (but not the trusted list it points to). config must
 * pass penalty_config_check(); a bad one aborts. Free with penalty_table_free(). */
struct penalty_table *penalty_table_new(const struct penalty_config *config);
/* Frees *table and sets it to NULL; NULL is ignored. */
void penalty_table_free(struct penalty_table **table);

/* Records a failed login from ip, where fp is the penalty_fingerprint() of the user and password
 * tried (NULL if there was no password to fingerprint: every such failure counts). Returns the
 * delay in ms the worker should wait before answering (0 for trusted clients). *banned_now_r is
 * set to true only on the failure that starts a ban; a failure during a ban (a connection made
 * before it) neither extends it nor reports it again. */
unsigned int penalty_record_failure(struct penalty_table *table, const char *ip,
				    const unsigned char fp[PENALTY_FP_LEN], uint64_t now_ms,
				    bool *banned_now_r);
/* Records a successful login from ip: resets its delay and remembered passwords. */
void penalty_record_success(struct penalty_table *table, const char *ip, uint64_t now_ms);

/* Returns the delay ip's last failure earned, or 0 if it has none in force (trusted, unknown,
 * reset by a success, or forgotten). Does not change the table. */
unsigned int penalty_delay(const struct penalty_table *table, const char *ip, uint64_t now_ms);
/* Returns true if ip is banned at now_ms, with the end of the ban in *until_ms_r (may be NULL). */
bool penalty_is_banned(const struct penalty_table *table, const char *ip, uint64_t now_ms,
		       uint64_t *until_ms_r);
/* Lifts ip's ban and restarts its failure counts (an admin action). Returns true if it was
 * banned. */
bool penalty_unban(struct penalty_table *table, const char *ip, uint64_t now_ms);
/* Writes up to max active bans into bans_r (in no particular order) and returns how many bans are
 * active in all, which may be more than max. O(number of clients tracked): for admin use. */
size_t penalty_list_bans(const struct penalty_table *table, uint64_t now_ms,
			 struct penalty_ban *bans_r, size_t max);
/* Returns the number of clients tracked (for tests and statistics). */
size_t penalty_table_count(const struct penalty_table *table);

/* Fills key with a new random fingerprint key; make one per process at startup. */
void penalty_fingerprint_key_generate(unsigned char key[PENALTY_FP_KEY_LEN]);
/* Computes the fingerprint of user and password into out: keyed BLAKE2b over both with their
 * lengths, so "ab"+"c" and "a"+"bc" differ. Keyed with a per-process key so that a fingerprint
 * cannot be checked against precomputed tables or compared across restarts; it is still a fast
 * hash of a password, so never log it, and wipe it after use. Safe from any thread. */
void penalty_fingerprint(const unsigned char key[PENALTY_FP_KEY_LEN], const char *user,
			 const char *password, unsigned char out[PENALTY_FP_LEN]);

#endif

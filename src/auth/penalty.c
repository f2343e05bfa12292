/* Per-client failure tracking for the auth process (see penalty.h).
 *
 * Records live in a chained hash table (SipHash with a random key, since attackers choose their
 * addresses and could otherwise pile them into one chain) and on a doubly linked list ordered by
 * last failure, so the least recently updated record is at hand in O(1) for eviction and expiry.
 * Each record keeps the times of its last ban_failures failures in a ring: when the ring is full
 * and its oldest time is within the window, ban_failures failures happened within the window. */
#include <string.h>

#include "auth/penalty.h"
#include "core/util.h"

/* Hash chains: a power of two above PENALTY_MAX_CLIENTS keeps the average chain under one record
 * for 1 MiB of pointers, allocated once so a flood never triggers a rehash. */
#define PENALTY_BUCKETS 131072
_Static_assert((PENALTY_BUCKETS & (PENALTY_BUCKETS - 1)) == 0, "bucket count must be a power of 2");
_Static_assert(PENALTY_BUCKETS >= PENALTY_MAX_CLIENTS, "chains would grow long when full");

/* Expired records freed per failure: more than the one record a failure can add, so the table
 * drains after a flood, yet a bounded amount of work per call. */
#define PENALTY_SWEEP_PER_CALL 8

struct penalty_client {
	struct penalty_client *hash_next;
	struct penalty_client *newer, *older; /* on the list ordered by last failure */
	struct net_addr addr;		      /* net_addr_client() form */
	uint64_t updated_ms;		      /* last failure */
	uint64_t banned_until_ms;	      /* 0 or in the past: not banned */
	unsigned int delay_ms;		      /* delay the last failure earned */
	unsigned int fp_count, fp_next;	      /* ring of remembered wrong passwords */
	unsigned int fail_count, fail_next;   /* ring of failure times */
	unsigned char fps[PENALTY_FINGERPRINTS][PENALTY_FP_LEN];
	uint32_t fail_secs[]; /* ban_failures of them, in seconds of the caller's clock */
};

struct penalty_table {
	struct penalty_config config;
	struct penalty_client **buckets;
	size_t count;
	struct penalty_client *newest, *oldest;
	unsigned char hash_key[crypto_shorthash_KEYBYTES];
};

void penalty_config_init(struct penalty_config *config)
{
	memset(config, 0, sizeof(*config));
	config->initial_ms = PENALTY_DEFAULT_INITIAL_MS;
	config->max_ms = PENALTY_DEFAULT_MAX_MS;
	config->ban_failures = PENALTY_DEFAULT_BAN_FAILURES;
	config->ban_window_secs = PENALTY_DEFAULT_BAN_WINDOW_SECS;
	config->ban_secs = PENALTY_DEFAULT_BAN_SECS;
}

int penalty_config_check(const struct penalty_config *config, const char **error_r)
{
	if (config->max_ms > PENALTY_DELAY_MAX_MS)
		*error_r = "maximum login failure delay is longer than 60 seconds";
	else if (config->initial_ms > config->max_ms)
		*error_r = "initial login failure delay is longer than the maximum";
	else if (config->ban_failures > PENALTY_BAN_FAILURES_MAX)
		*error_r = "ban threshold is above 64 failures";
	else if (config->ban_window_secs == 0 || config->ban_window_secs > PENALTY_PERIOD_MAX_SECS)
		*error_r = "ban window must be from 1 second to 1 day";
	else if (config->ban_failures > 0 &&
		 (config->ban_secs == 0 || config->ban_secs > PENALTY_PERIOD_MAX_SECS))
		*error_r = "ban duration must be from 1 second to 1 day";
	else
		return 0;
	return -1;
}

struct penalty_table *penalty_table_new(const struct penalty_config *config)
{
	struct penalty_table *table;
	const char *error;

	if (penalty_config_check(config, &error) < 0)
		fatal("penalty_table_new: %s", error);
	if (sodium_init() < 0)
		fatal("sodium_init() failed");
	table = xcalloc(1, sizeof(*table));
	table->config = *config;
	table->buckets = xcalloc(PENALTY_BUCKETS, sizeof(struct penalty_client *));
	crypto_shorthash_keygen(table->hash_key);
	return table;
}

static void penalty_client_free(struct penalty_client *client)
{
	sodium_memzero(client->fps, sizeof(client->fps));
	free(client);
}

void penalty_table_free(struct penalty_table **tablep)
{
	struct penalty_table *table = *tablep;

	if (table == NULL)
		return;
	while (table->newest != NULL) {
		struct penalty_client *client = table->newest;
		table->newest = client->older;
		penalty_client_free(client);
	}
	free(table->buckets);
	x_free(tablep);
}

/* Parses ip into its client identity; sets *trusted_r if the full address is trusted. */
static struct net_addr penalty_client_key(const struct penalty_table *table, const char *ip,
					  bool *trusted_r)
{
	struct net_addr addr;

	if (net_addr_from_text(ip, &addr) < 0) {
		memset(&addr, 0, sizeof(addr));
		addr.family = AF_INET6; /* "::", see penalty.h */
	}
	*trusted_r = net_list_contains_addr(table->config.trusted, &addr);
	return net_addr_client(&addr);
}

static struct penalty_client **penalty_bucket(const struct penalty_table *table,
					      const struct net_addr *key)
{
	unsigned char hash[crypto_shorthash_BYTES];
	uint64_t index;

	crypto_shorthash(hash, (const unsigned char *)key, sizeof(*key), table->hash_key);
	memcpy(&index, hash, sizeof(index));
	return &table->buckets[index & (PENALTY_BUCKETS - 1)];
}

static struct penalty_client *penalty_find(const struct penalty_table *table,
					   const struct net_addr *key)
{
	struct penalty_client *client = *penalty_bucket(table, key);

	while (client != NULL && memcmp(&client->addr, key, sizeof(*key)) != 0)
		client = client->hash_next;
	return client;
}

static bool penalty_client_is_banned(const struct penalty_client *client, uint64_t now_ms)
{
	return client->banned_until_ms > now_ms;
}

/* True if the record no longer matters: not banned and no failure within the window. */
static bool penalty_client_expired(const struct penalty_table *table,
				   const struct penalty_client *client, uint64_t now_ms)
{
	uint64_t idle = now_ms > client->updated_ms ? now_ms - client->updated_ms : 0;

	return !penalty_client_is_banned(client, now_ms) &&
	       idle > (uint64_t)table->config.ban_window_secs * 1000;
}

/* Returns ip's record if it is still in force, for the read-only queries. */
static const struct penalty_client *penalty_lookup(const struct penalty_table *table,
						   const char *ip, uint64_t now_ms)
{
	bool trusted;
	struct net_addr key = penalty_client_key(table, ip, &trusted);
	const struct penalty_client *client;

	if (trusted)
		return NULL;
	client = penalty_find(table, &key);
	return client == NULL || penalty_client_expired(table, client, now_ms) ? NULL : client;
}

static void penalty_list_unlink(struct penalty_table *table, struct penalty_client *client)
{
	if (client->newer != NULL)
		client->newer->older = client->older;
	else
		table->newest = client->older;
	if (client->older != NULL)
		client->older->newer = client->newer;
	else
		table->oldest = client->newer;
	client->newer = client->older = NULL;
}

static void penalty_list_push_newest(struct penalty_table *table, struct penalty_client *client)
{
	client->older = table->newest;
	client->newer = NULL;
	if (table->newest != NULL)
		table->newest->newer = client;
	else
		table->oldest = client;
	table->newest = client;
}

/* Takes the least recently updated record out of the hash table and the list, and returns it for
 * the caller to free or reuse. The table must not be empty. */
static struct penalty_client *penalty_take_oldest(struct penalty_table *table)
{
	struct penalty_client *client = table->oldest;
	struct penalty_client **link = penalty_bucket(table, &client->addr);

	while (*link != client)
		link = &(*link)->hash_next;
	*link = client->hash_next;
	client->hash_next = NULL;
	table->oldest = client->newer;
	if (table->oldest != NULL)
		table->oldest->older = NULL;
	else
		table->newest = NULL;
	client->newer = NULL;
	table->count--;
	return client;
}

static void penalty_sweep(struct penalty_table *table, uint64_t now_ms)
{
	for (unsigned int i = 0; i < PENALTY_SWEEP_PER_CALL; i++) {
		if (table->oldest == NULL || !penalty_client_expired(table, table->oldest, now_ms))
			return;
		penalty_client_free(penalty_take_oldest(table));
	}
}

/* Forgets everything about client but its address and its place in the table. */
static void penalty_client_reset(struct penalty_client *client)
{
	client->banned_until_ms = 0;
	client->delay_ms = 0;
	client->fp_count = client->fp_next = 0;
	client->fail_count = client->fail_next = 0;
	sodium_memzero(client->fps, sizeof(client->fps));
}

/* Returns a record for key that is not in the table: the oldest one when the table is full. */
static struct penalty_client *penalty_client_make(struct penalty_table *table)
{
	struct penalty_client *client;

	if (table->count >= PENALTY_MAX_CLIENTS) {
		client = penalty_take_oldest(table);
	} else {
		client = xcalloc(1, sizeof(*client) +
					table->config.ban_failures * sizeof(client->fail_secs[0]));
	}
	penalty_client_reset(client);
	return client;
}

/* Returns key's record, made fresh if it was missing or expired, as the newest on the list. */
static struct penalty_client *penalty_get(struct penalty_table *table, const struct net_addr *key,
					  uint64_t now_ms)
{
	struct penalty_client *client = penalty_find(table, key);

	if (client != NULL) {
		if (penalty_client_expired(table, client, now_ms))
			penalty_client_reset(client);
		penalty_list_unlink(table, client);
		penalty_list_push_newest(table, client);
		return client;
	}
	client = penalty_client_make(table);
	client->addr = *key;
	struct penalty_client **bucket = penalty_bucket(table, key);
	client->hash_next = *bucket;
	*bucket = client;
	penalty_list_push_newest(table, client);
	table->count++;
	return client;
}

/* Returns true if fp is one of client's remembered wrong passwords; remembers it if not. */
static bool penalty_fp_seen(struct penalty_client *client, const unsigned char fp[PENALTY_FP_LEN])
{
	for (unsigned int i = 0; i < client->fp_count; i++) {
		if (sodium_memcmp(client->fps[i], fp, PENALTY_FP_LEN) == 0)
			return true;
	}
	memcpy(client->fps[client->fp_next], fp, PENALTY_FP_LEN);
	client->fp_next = (client->fp_next + 1) % PENALTY_FINGERPRINTS;
	if (client->fp_count < PENALTY_FINGERPRINTS)
		client->fp_count++;
	return false;
}

static unsigned int penalty_next_delay(const struct penalty_config *config, unsigned int current)
{
	uint64_t next = current == 0 ? config->initial_ms : (uint64_t)current * 2;

	return next > config->max_ms ? config->max_ms : (unsigned int)next;
}

static void penalty_ban(const struct penalty_config *config, struct penalty_client *client,
			uint64_t now_ms)
{
	client->banned_until_ms = now_ms + (uint64_t)config->ban_secs * 1000;
	client->fail_count = client->fail_next = 0;
}

/* Adds a failure at now_ms to client's ring; returns true if it starts a ban. */
static bool penalty_count_failure(const struct penalty_config *config,
				  struct penalty_client *client, uint64_t now_ms)
{
	uint64_t secs = now_ms / 1000;
	uint32_t now_s = secs > UINT32_MAX ? UINT32_MAX : (uint32_t)secs;

	if (config->ban_failures == 0 || penalty_client_is_banned(client, now_ms))
		return false;
	client->fail_secs[client->fail_next] = now_s;
	client->fail_next = (client->fail_next + 1) % config->ban_failures;
	if (client->fail_count < config->ban_failures)
		client->fail_count++;
	if (client->fail_count < config->ban_failures)
		return false;
	/* Full ring: the slot written next holds the oldest of the last ban_failures failures. */
	uint32_t oldest = client->fail_secs[client->fail_next];
	if (now_s > oldest && now_s - oldest >= config->ban_window_secs)
		return false;
	penalty_ban(config, client, now_ms);
	return true;
}

unsigned int penalty_record_failure(struct penalty_table *table, const char *ip,
				    const unsigned char fp[PENALTY_FP_LEN], uint64_t now_ms,
				    bool *banned_now_r)
{
	bool trusted;
	struct net_addr key = penalty_client_key(table, ip, &trusted);
	struct penalty_client *client;

	*banned_now_r = false;
	if (trusted)
		return 0;
	penalty_sweep(table, now_ms);
	client = penalty_get(table, &key, now_ms);
	client->updated_ms = now_ms;
	if (fp != NULL && penalty_fp_seen(client, fp))
		return client->delay_ms;
	client->delay_ms = penalty_next_delay(&table->config, client->delay_ms);
	*banned_now_r = penalty_count_failure(&table->config, client, now_ms);
	return client->delay_ms;
}

void penalty_record_success(struct penalty_table *table, const char *ip, uint64_t now_ms)
{
	bool trusted;
	struct net_addr key = penalty_client_key(table, ip, &trusted);
	struct penalty_client *client;

	if (trusted || (client = penalty_find(table, &key)) == NULL)
		return;
	if (penalty_client_expired(table, client, now_ms)) {
		penalty_client_reset(client);
		return;
	}
	client->delay_ms = 0;
	client->fp_count = client->fp_next = 0;
	sodium_memzero(client->fps, sizeof(client->fps));
}

unsigned int penalty_delay(const struct penalty_table *table, const char *ip, uint64_t now_ms)
{
	const struct penalty_client *client = penalty_lookup(table, ip, now_ms);

	return client == NULL ? 0 : client->delay_ms;
}

bool penalty_is_banned(const struct penalty_table *table, const char *ip, uint64_t now_ms,
		       uint64_t *until_ms_r)
{
	const struct penalty_client *client = penalty_lookup(table, ip, now_ms);

	if (client == NULL || !penalty_client_is_banned(client, now_ms))
		return false;
	if (until_ms_r != NULL)
		*until_ms_r = client->banned_until_ms;
	return true;
}

bool penalty_unban(struct penalty_table *table, const char *ip, uint64_t now_ms)
{
	bool trusted;
	struct net_addr key = penalty_client_key(table, ip, &trusted);
	struct penalty_client *client = trusted ? NULL : penalty_find(table, &key);

	if (client == NULL || !penalty_client_is_banned(client, now_ms))
		return false;
	client->banned_until_ms = 0;
	client->fail_count = client->fail_next = 0;
	return true;
}

size_t penalty_list_bans(const struct penalty_table *table, uint64_t now_ms,
			 struct penalty_ban *bans_r, size_t max)
{
	size_t found = 0;

	for (const struct penalty_client *c = table->newest; c != NULL; c = c->older) {
		if (!penalty_client_is_banned(c, now_ms))
			continue;
		if (found < max) {
			net_addr_to_text(&c->addr, bans_r[found].ip, sizeof(bans_r[found].ip));
			bans_r[found].prefix_len = net_addr_client_prefix(&c->addr);
			bans_r[found].until_ms = c->banned_until_ms;
		}
		found++;
	}
	return found;
}

size_t penalty_table_count(const struct penalty_table *table)
{
	return table->count;
}

void penalty_fingerprint_key_generate(unsigned char key[PENALTY_FP_KEY_LEN])
{
	if (sodium_init() < 0)
		fatal("sodium_init() failed");
	crypto_generichash_keygen(key);
}

void penalty_fingerprint(const unsigned char key[PENALTY_FP_KEY_LEN], const char *user,
			 const char *password, unsigned char out[PENALTY_FP_LEN])
{
	crypto_generichash_state state;
	uint64_t user_len = strlen(user);
	unsigned char len_bytes[8];

	/* The length of user goes first, little-endian, so the split between user and password is
	 * part of what is hashed. */
	for (unsigned int i = 0; i < sizeof(len_bytes); i++)
		len_bytes[i] = (unsigned char)(user_len >> (8 * i));
	crypto_generichash_init(&state, key, PENALTY_FP_KEY_LEN, PENALTY_FP_LEN);
	crypto_generichash_update(&state, len_bytes, sizeof(len_bytes));
	crypto_generichash_update(&state, (const unsigned char *)user, user_len);
	crypto_generichash_update(&state, (const unsigned char *)password, strlen(password));
	crypto_generichash_final(&state, out, PENALTY_FP_LEN);
	sodium_memzero(&state, sizeof(state));
}

/* The shared table of banned clients (see ban_table.h). Slots hold "banned until" seconds; 0 means
 * free. Loads and stores are atomic so a worker never reads half a write; no ordering with other
 * memory is needed because a slot's value is the whole message.
 *
 * The register of bans (for listing) sits in the same mapping behind a spinlock: its entries are
 * several words, which no single atomic store can update. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <sodium.h>

#include "core/log.h"
#include "core/util.h"
#include "net/ban_table.h"

_Static_assert((BAN_TABLE_SLOTS & (BAN_TABLE_SLOTS - 1)) == 0, "slot count must be a power of 2");

/* One register entry; source 0 marks a free entry. */
struct ban_register_entry {
	struct net_addr client;
	unsigned char source; /* enum ban_source, 0 when free */
	uint32_t until;	      /* clamped like the slots */
};

/* The whole shared mapping. */
struct ban_shared {
	uint32_t until[BAN_TABLE_SLOTS];
	/* 0 free, 1 held. Only ever held for a scan of the entries: no system call, no allocation,
	 * no logging inside. */
	atomic_uint register_lock;
	struct ban_register_entry entries[BAN_REGISTER_ENTRIES];
};

/* Spins after which the lock's holder is taken to have died inside the section (SIGKILL, a crash):
 * the section is a scan of 1,024 entries, microseconds, so 2^24 spins (a good fraction of a
 * second) is far beyond any holder that was merely preempted. Taking over then risks at worst a
 * garbled register entry, which the slots (the authority) do not depend on; never taking over
 * would hang every later writer, the auth process included. */
#define BAN_REGISTER_SPINS_MAX (1UL << 24)

struct ban_table {
	struct ban_shared *shared; /* the mapping */
	uint32_t *until;	   /* shared->until: BAN_TABLE_SLOTS of them */
	/* SipHash key, random per start and inherited by fork(), so that nobody outside can compute
	 * which clients share a slot and get a victim refused by banning a slot-mate. */
	unsigned char key[crypto_shorthash_KEYBYTES];
};

uint64_t ban_table_now(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		fatal("clock_gettime(CLOCK_MONOTONIC) failed");
	return (uint64_t)ts.tv_sec;
}

struct ban_table *ban_table_create(void)
{
	struct ban_table *table = xcalloc(1, sizeof(*table));

	if (sodium_init() < 0)
		fatal("sodium_init() failed");
	crypto_shorthash_keygen(table->key);
	/* anonymous memory starts zeroed: no slot banned, lock free, every entry free */
	table->shared = mmap(NULL, sizeof(struct ban_shared), PROT_READ | PROT_WRITE,
			     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (table->shared == MAP_FAILED)
		fatal("mmap of the ban table failed");
	table->until = table->shared->until;
	return table;
}

void ban_table_destroy(struct ban_table **tablep)
{
	if (*tablep == NULL)
		return;
	munmap((*tablep)->shared, sizeof(struct ban_shared));
	sodium_memzero((*tablep)->key, sizeof((*tablep)->key));
	x_free(tablep);
}

static uint32_t *ban_table_slot(const struct ban_table *table, const struct net_addr *addr)
{
	struct net_addr client = net_addr_client(addr);
	unsigned char hash[crypto_shorthash_BYTES];
	uint64_t index;

	crypto_shorthash(hash, (const unsigned char *)&client, sizeof(client), table->key);
	memcpy(&index, hash, sizeof(index));
	return &table->until[index & (BAN_TABLE_SLOTS - 1)];
}

void ban_table_ban_addr(struct ban_table *table, const struct net_addr *addr, uint64_t until)
{
	uint32_t *slot = ban_table_slot(table, addr);
	uint32_t wanted = until > UINT32_MAX ? UINT32_MAX : (uint32_t)until;
	uint32_t current = __atomic_load_n(slot, __ATOMIC_RELAXED);

	/* Only one process writes, but compare-and-swap keeps this right if that changes. */
	do {
		if (current >= wanted)
			return;
	} while (!__atomic_compare_exchange_n(slot, &current, wanted, true, __ATOMIC_RELAXED,
					      __ATOMIC_RELAXED));
}

int ban_table_ban(struct ban_table *table, const struct sockaddr *addr, uint64_t until)
{
	struct net_addr canon;

	if (net_addr_from_sockaddr(addr, &canon) < 0)
		return -1;
	ban_table_ban_addr(table, &canon, until);
	return 0;
}

int ban_table_ban_text(struct ban_table *table, const char *ip, uint64_t until)
{
	struct net_addr canon;

	if (net_addr_from_text(ip, &canon) < 0)
		return -1;
	ban_table_ban_addr(table, &canon, until);
	return 0;
}

int ban_table_unban(struct ban_table *table, const struct sockaddr *addr)
{
	struct net_addr canon;

	if (net_addr_from_sockaddr(addr, &canon) < 0)
		return -1;
	__atomic_store_n(ban_table_slot(table, &canon), 0, __ATOMIC_RELAXED);
	return 0;
}

int ban_table_unban_text(struct ban_table *table, const char *ip)
{
	struct net_addr canon;

	if (net_addr_from_text(ip, &canon) < 0)
		return -1;
	__atomic_store_n(ban_table_slot(table, &canon), 0, __ATOMIC_RELAXED);
	return 0;
}

static bool ban_table_addr_is_banned(const struct ban_table *table, const struct net_addr *addr,
				     uint64_t now)
{
	return __atomic_load_n(ban_table_slot(table, addr), __ATOMIC_RELAXED) > now;
}

bool ban_table_is_banned(const struct ban_table *table, const struct sockaddr *addr, uint64_t now)
{
	struct net_addr canon;

	return net_addr_from_sockaddr(addr, &canon) == 0 &&
	       ban_table_addr_is_banned(table, &canon, now);
}

bool ban_table_is_banned_text(const struct ban_table *table, const char *ip, uint64_t now)
{
	struct net_addr canon;

	return net_addr_from_text(ip, &canon) == 0 && ban_table_addr_is_banned(table, &canon, now);
}

/* ------------------------------------------------------------------------------------------ */
/* The register */

static void ban_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static void ban_register_lock(struct ban_shared *shared)
{
	for (unsigned long spins = 0;; spins++) {
		if (atomic_load_explicit(&shared->register_lock, memory_order_relaxed) == 0 &&
		    atomic_exchange_explicit(&shared->register_lock, 1, memory_order_acquire) == 0)
			return;
		if (spins >= BAN_REGISTER_SPINS_MAX) {
			/* see BAN_REGISTER_SPINS_MAX: the lock stays 1, now held by us */
			atomic_thread_fence(memory_order_acquire);
			log_warn("ban_register_lock_taken_over", "spins=%lu", spins);
			return;
		}
		ban_cpu_relax();
	}
}

static void ban_register_unlock(struct ban_shared *shared)
{
	atomic_store_explicit(&shared->register_lock, 0, memory_order_release);
}

/* The entry that lists client, or NULL. Called with the lock held. */
static struct ban_register_entry *ban_register_find(struct ban_shared *shared,
						    const struct net_addr *client)
{
	for (size_t i = 0; i < BAN_REGISTER_ENTRIES; i++) {
		struct ban_register_entry *entry = &shared->entries[i];
		if (entry->source != 0 && memcmp(&entry->client, client, sizeof(*client)) == 0)
			return entry;
	}
	return NULL;
}

/* Where a new ban goes: a free or ended entry, else the entry that ends first if the new ban
 * outlasts it, else NULL (the register keeps the longest bans). Called with the lock held. */
static struct ban_register_entry *ban_register_room(struct ban_shared *shared, uint32_t until,
						    uint64_t now)
{
	struct ban_register_entry *soonest = NULL;

	for (size_t i = 0; i < BAN_REGISTER_ENTRIES; i++) {
		struct ban_register_entry *entry = &shared->entries[i];
		if (entry->source == 0 || entry->until <= now)
			return entry;
		if (soonest == NULL || entry->until < soonest->until)
			soonest = entry;
	}
	return soonest->until < until ? soonest : NULL;
}

int ban_table_add(struct ban_table *table, const char *ip, uint64_t until, enum ban_source source)
{
	struct net_addr canon;

	if (net_addr_from_text(ip, &canon) < 0)
		return -1;
	ban_table_ban_addr(table, &canon, until);

	struct net_addr client = net_addr_client(&canon);
	uint32_t wanted = until > UINT32_MAX ? UINT32_MAX : (uint32_t)until;
	uint64_t now = ban_table_now();
	ban_register_lock(table->shared);
	struct ban_register_entry *entry = ban_register_find(table->shared, &client);
	if (entry == NULL)
		entry = ban_register_room(table->shared, wanted, now);
	if (entry != NULL) {
		if (entry->source == 0 || memcmp(&entry->client, &client, sizeof(client)) != 0) {
			entry->client = client;
			entry->until = 0;
		}
		/* like the slot: a ban never shortens a longer one */
		if (entry->until < wanted)
			entry->until = wanted;
		entry->source = (unsigned char)source;
	}
	ban_register_unlock(table->shared);
	return 0;
}

int ban_table_remove(struct ban_table *table, const char *ip, uint64_t now)
{
	struct net_addr canon;

	if (net_addr_from_text(ip, &canon) < 0)
		return -1;
	uint32_t *slot = ban_table_slot(table, &canon);
	bool lifted = __atomic_exchange_n(slot, 0, __ATOMIC_RELAXED) > now;

	struct net_addr client = net_addr_client(&canon);
	ban_register_lock(table->shared);
	struct ban_register_entry *entry = ban_register_find(table->shared, &client);
	if (entry != NULL) {
		lifted = lifted || entry->until > now;
		memset(entry, 0, sizeof(*entry));
	}
	ban_register_unlock(table->shared);
	return lifted ? 1 : 0;
}

static int ban_entry_compare_longest_first(const void *a, const void *b)
{
	uint64_t ua = ((const struct ban_entry *)a)->until;
	uint64_t ub = ((const struct ban_entry *)b)->until;

	return ua < ub ? 1 : ua > ub ? -1 : 0;
}

size_t ban_table_list(struct ban_table *table, uint64_t now, struct ban_entry *entries_r,
		      size_t max)
{
	struct ban_entry *all = xcalloc(BAN_REGISTER_ENTRIES, sizeof(*all));
	size_t count = 0;

	ban_register_lock(table->shared);
	for (size_t i = 0; i < BAN_REGISTER_ENTRIES; i++) {
		struct ban_register_entry *entry = &table->shared->entries[i];
		if (entry->source == 0)
			continue;
		if (entry->until <= now) {
			memset(entry, 0, sizeof(*entry));
			continue;
		}
		all[count++] =
		    (struct ban_entry){.client = entry->client,
				       .prefix_len = net_addr_client_prefix(&entry->client),
				       .until = entry->until,
				       .source = (enum ban_source)entry->source};
	}
	ban_register_unlock(table->shared);
	qsort(all, count, sizeof(*all), ban_entry_compare_longest_first);
	memcpy(entries_r, all, (count < max ? count : max) * sizeof(*all));
	free(all);
	return count;
}

const char *ban_entry_text(const struct ban_entry *entry, char *buf, size_t size)
{
	char addr[INET6_ADDRSTRLEN];

	net_addr_to_text(&entry->client, addr, sizeof(addr));
	if (entry->client.family == AF_INET6)
		snprintf(buf, size, "%s/%u", addr, entry->prefix_len);
	else
		snprintf(buf, size, "%s", addr);
	return buf;
}

const char *ban_source_name(enum ban_source source)
{
	switch (source) {
	case BAN_SOURCE_AUTH:
		return "auth";
	case BAN_SOURCE_ADMIN:
		return "admin";
	}
	return "unknown";
}

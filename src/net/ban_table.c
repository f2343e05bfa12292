/* The shared table of banned clients (see ban_table.h). Slots hold "banned until" seconds; 0 means
 * free. Loads and stores are atomic so a worker never reads half a write; no ordering with other
 * memory is needed because a slot's value is the whole message. */
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <sodium.h>

#include "core/util.h"
#include "net/ban_table.h"

_Static_assert((BAN_TABLE_SLOTS & (BAN_TABLE_SLOTS - 1)) == 0, "slot count must be a power of 2");

struct ban_table {
	uint32_t *until; /* BAN_TABLE_SLOTS of them, in shared memory */
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
	table->until = mmap(NULL, BAN_TABLE_SLOTS * sizeof(uint32_t), PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (table->until == MAP_FAILED)
		fatal("mmap of the ban table failed");
	return table;
}

void ban_table_destroy(struct ban_table **tablep)
{
	if (*tablep == NULL)
		return;
	munmap((*tablep)->until, BAN_TABLE_SLOTS * sizeof(uint32_t));
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

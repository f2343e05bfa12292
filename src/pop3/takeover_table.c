/* The shared table of held maildrop locks (see takeover_table.h). Every shared field is accessed
 * with the __atomic builtins; nothing the workers call makes a system call, so it works inside
 * every sandbox (only the master's takeover_table_forget_process() asks the kernel, mincore(),
 * which pages are resident). */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/util.h"
#include "pop3/takeover_table.h"

/* Serials are 47 bits so that a request packs one with an idle time (17 bits) into one word that
 * a contender can swap atomically. At 10,000 logins a second they last for 400 years. */
#define TAKEOVER_SERIAL_BITS 47
#define TAKEOVER_SERIAL_MASK ((UINT64_C(1) << TAKEOVER_SERIAL_BITS) - 1)
#define TAKEOVER_IDLE_BITS   17
/* An owner word with this bit set: the slot is being filled by the process whose pid is in the
 * low bits (so that the master can free it too if that process dies in between). */
#define TAKEOVER_OWNER_FILLING (UINT64_C(1) << 63)
/* Doorbells, one per pid modulo this: a worker whose counter has not moved has no request. */
#define TAKEOVER_DOORBELLS 256

struct takeover_slot {
	uint64_t owner; /* 0 free, TAKEOVER_OWNER_FILLING | pid, else the holder's serial */
	uint64_t lock_volume, lock_object;
	int64_t since_ms;
	int64_t active_ms;
	uint64_t request; /* serial << TAKEOVER_IDLE_BITS | idle seconds demanded; 0 none */
	uint32_t pid;
	uint32_t committing;
	uint64_t unused; /* pads the slot to one cache line */
};

_Static_assert(sizeof(struct takeover_slot) == 64, "a slot is one cache line");

struct takeover_shared {
	uint64_t next_serial;
	uint32_t doorbells[TAKEOVER_DOORBELLS];
	_Alignas(64) struct takeover_slot slots[];
};

struct takeover_table {
	struct takeover_shared *shared;
	size_t map_size;
	uint32_t slot_mask;
	uint32_t window;
};

struct takeover_table *takeover_table_create_sized(uint32_t slot_count)
{
	if (slot_count == 0 || (slot_count & (slot_count - 1)) != 0)
		fatal("takeover table: %u slots is not a power of two", slot_count);
	struct takeover_table *table = xcalloc(1, sizeof(*table));
	table->map_size =
	    sizeof(struct takeover_shared) + (size_t)slot_count * sizeof(struct takeover_slot);
	table->shared =
	    mmap(NULL, table->map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (table->shared == MAP_FAILED)
		fatal("mmap of the lock takeover table failed");
	table->slot_mask = slot_count - 1;
	table->window = slot_count < TAKEOVER_TABLE_WINDOW ? slot_count : TAKEOVER_TABLE_WINDOW;
	return table;
}

struct takeover_table *takeover_table_create(void)
{
	return takeover_table_create_sized(TAKEOVER_TABLE_SLOTS);
}

void takeover_table_destroy(struct takeover_table **tablep)
{
	if (*tablep == NULL)
		return;
	munmap((*tablep)->shared, (*tablep)->map_size);
	x_free(tablep);
}

/* splitmix64's finalizer over both halves: identities are inode numbers, often close together. */
static uint32_t takeover_hash(const struct store_lock_id *id)
{
	uint64_t x = id->volume * UINT64_C(0x9e3779b97f4a7c15) ^ id->object;

	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	x ^= x >> 31;
	return (uint32_t)x;
}

static struct takeover_slot *takeover_slot_at(struct takeover_table *table, uint32_t index)
{
	return &table->shared->slots[index & table->slot_mask];
}

static uint64_t takeover_next_serial(struct takeover_table *table)
{
	uint64_t serial;

	do
		serial = __atomic_fetch_add(&table->shared->next_serial, 1, __ATOMIC_RELAXED) &
			 TAKEOVER_SERIAL_MASK;
	while (serial == 0);
	return serial;
}

static bool takeover_owner_is_serial(uint64_t owner)
{
	return owner != 0 && (owner & TAKEOVER_OWNER_FILLING) == 0;
}

/* Copies a published slot; false if it is free, being filled, or changed while being read. */
static bool takeover_slot_read(struct takeover_slot *slot, uint32_t index,
			       struct store_lock_id *id_r, struct takeover_holder *holder_r)
{
	uint64_t owner = __atomic_load_n(&slot->owner, __ATOMIC_ACQUIRE);

	if (!takeover_owner_is_serial(owner))
		return false;
	id_r->volume = __atomic_load_n(&slot->lock_volume, __ATOMIC_RELAXED);
	id_r->object = __atomic_load_n(&slot->lock_object, __ATOMIC_RELAXED);
	holder_r->slot = index;
	holder_r->serial = owner;
	holder_r->pid = (pid_t)__atomic_load_n(&slot->pid, __ATOMIC_RELAXED);
	holder_r->since_ms = __atomic_load_n(&slot->since_ms, __ATOMIC_RELAXED);
	holder_r->active_ms = __atomic_load_n(&slot->active_ms, __ATOMIC_RELAXED);
	holder_r->committing = __atomic_load_n(&slot->committing, __ATOMIC_RELAXED) != 0;
	/* the loads above may not move below the second read of the owner */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return __atomic_load_n(&slot->owner, __ATOMIC_RELAXED) == owner;
}

/* Fills a slot claimed with the FILLING marker and hands it to serial. */
static void takeover_slot_fill(struct takeover_slot *slot, const struct store_lock_id *id,
			       pid_t pid, int64_t now_ms, uint64_t serial)
{
	__atomic_store_n(&slot->lock_volume, id->volume, __ATOMIC_RELAXED);
	__atomic_store_n(&slot->lock_object, id->object, __ATOMIC_RELAXED);
	__atomic_store_n(&slot->pid, (uint32_t)pid, __ATOMIC_RELAXED);
	__atomic_store_n(&slot->since_ms, now_ms, __ATOMIC_RELAXED);
	__atomic_store_n(&slot->active_ms, now_ms, __ATOMIC_RELAXED);
	__atomic_store_n(&slot->committing, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&slot->request, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&slot->owner, serial, __ATOMIC_RELEASE);
}

/* Claims the slot if its owner word is still expected. */
static bool takeover_slot_claim(struct takeover_slot *slot, uint64_t expected, pid_t pid)
{
	return __atomic_compare_exchange_n(&slot->owner, &expected,
					   TAKEOVER_OWNER_FILLING | (uint32_t)pid, false,
					   __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

static bool takeover_id_equal(const struct store_lock_id *a, const struct store_lock_id *b)
{
	return a->volume == b->volume && a->object == b->object;
}

int takeover_table_publish(struct takeover_table *table, const struct store_lock_id *id, pid_t pid,
			   int64_t now_ms, uint64_t *serial_r)
{
	uint32_t start = takeover_hash(id);
	uint64_t serial = takeover_next_serial(table);

	/* the caller holds the lock: a slot for the same lock is a leftover to take over */
	for (uint32_t i = 0; i < table->window; i++) {
		struct takeover_slot *slot = takeover_slot_at(table, start + i);
		struct store_lock_id seen;
		struct takeover_holder old;
		if (takeover_slot_read(slot, start + i, &seen, &old) &&
		    takeover_id_equal(&seen, id) && takeover_slot_claim(slot, old.serial, pid)) {
			takeover_slot_fill(slot, id, pid, now_ms, serial);
			*serial_r = serial;
			return (int)((start + i) & table->slot_mask);
		}
	}
	for (uint32_t i = 0; i < table->window; i++) {
		struct takeover_slot *slot = takeover_slot_at(table, start + i);
		if (takeover_slot_claim(slot, 0, pid)) {
			takeover_slot_fill(slot, id, pid, now_ms, serial);
			*serial_r = serial;
			return (int)((start + i) & table->slot_mask);
		}
	}
	return -1;
}

void takeover_table_touch(struct takeover_table *table, uint32_t slot, int64_t now_ms)
{
	__atomic_store_n(&takeover_slot_at(table, slot)->active_ms, now_ms, __ATOMIC_RELAXED);
}

void takeover_table_set_committing(struct takeover_table *table, uint32_t slot)
{
	__atomic_store_n(&takeover_slot_at(table, slot)->committing, 1, __ATOMIC_RELEASE);
}

void takeover_table_withdraw(struct takeover_table *table, uint32_t slot, uint64_t serial)
{
	uint64_t expected = serial;

	__atomic_compare_exchange_n(&takeover_slot_at(table, slot)->owner, &expected, 0, false,
				    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
}

static uint64_t takeover_request_pack(uint64_t serial, unsigned int min_idle_secs)
{
	return serial << TAKEOVER_IDLE_BITS | min_idle_secs;
}

bool takeover_table_requested(struct takeover_table *table, uint32_t slot, uint64_t serial,
			      unsigned int *min_idle_secs_r)
{
	uint64_t request =
	    __atomic_load_n(&takeover_slot_at(table, slot)->request, __ATOMIC_ACQUIRE);

	if (request == 0 || request >> TAKEOVER_IDLE_BITS != serial)
		return false;
	*min_idle_secs_r = (unsigned int)(request & TAKEOVER_TABLE_MAX_IDLE_SECS);
	return true;
}

void takeover_table_refuse(struct takeover_table *table, uint32_t slot, uint64_t serial)
{
	struct takeover_slot *entry = takeover_slot_at(table, slot);
	uint64_t request = __atomic_load_n(&entry->request, __ATOMIC_ACQUIRE);

	if (request != 0 && request >> TAKEOVER_IDLE_BITS == serial)
		__atomic_compare_exchange_n(&entry->request, &request, 0, false, __ATOMIC_SEQ_CST,
					    __ATOMIC_RELAXED);
}

uint32_t takeover_table_doorbell(struct takeover_table *table, pid_t pid)
{
	return __atomic_load_n(&table->shared->doorbells[(uint32_t)pid % TAKEOVER_DOORBELLS],
			       __ATOMIC_ACQUIRE);
}

bool takeover_table_find(struct takeover_table *table, const struct store_lock_id *id,
			 struct takeover_holder *holder_r)
{
	uint32_t start = takeover_hash(id);

	for (uint32_t i = 0; i < table->window; i++) {
		uint32_t index = (start + i) & table->slot_mask;
		struct store_lock_id seen;
		if (takeover_slot_read(takeover_slot_at(table, index), index, &seen, holder_r) &&
		    takeover_id_equal(&seen, id))
			return true;
	}
	return false;
}

bool takeover_table_request(struct takeover_table *table, const struct takeover_holder *holder,
			    unsigned int min_idle_secs)
{
	struct takeover_slot *slot = takeover_slot_at(table, holder->slot);
	unsigned int idle = min_idle_secs < TAKEOVER_TABLE_MAX_IDLE_SECS
				? min_idle_secs
				: TAKEOVER_TABLE_MAX_IDLE_SECS;
	uint64_t wanted = takeover_request_pack(holder->serial, idle);
	uint64_t current = __atomic_load_n(&slot->request, __ATOMIC_RELAXED);

	do {
		/* another contender's request for the same session that demands as much stays */
		if (current >> TAKEOVER_IDLE_BITS == holder->serial &&
		    (current & TAKEOVER_TABLE_MAX_IDLE_SECS) >= idle)
			break;
	} while (!__atomic_compare_exchange_n(&slot->request, &current, wanted, true,
					      __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
	/* a request left in a slot that another session took meanwhile names the old serial, which
	 * that session ignores */
	if (__atomic_load_n(&slot->owner, __ATOMIC_SEQ_CST) != holder->serial)
		return false;
	__atomic_fetch_add(&table->shared->doorbells[(uint32_t)holder->pid % TAKEOVER_DOORBELLS], 1,
			   __ATOMIC_SEQ_CST);
	return true;
}

/* Which pages of the mapping are resident: a page never written holds no slot in use, and
 * reading it would make it resident in every process for good (8 MiB at the default size). NULL
 * when the kernel cannot tell (every page is then read). */
static unsigned char *takeover_resident_pages(const struct takeover_table *table, size_t page_size)
{
	unsigned char *resident = xcalloc((table->map_size + page_size - 1) / page_size, 1);

	if (mincore(table->shared, table->map_size, resident) < 0) {
		free(resident);
		return NULL;
	}
	return resident;
}

size_t takeover_table_forget_process(struct takeover_table *table, pid_t pid)
{
	size_t freed = 0;
	size_t page_size = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char *resident = takeover_resident_pages(table, page_size);

	for (uint32_t index = 0; index <= table->slot_mask; index++) {
		struct takeover_slot *slot = takeover_slot_at(table, index);
		size_t page = (size_t)((char *)slot - (char *)table->shared) / page_size;
		if (resident != NULL && (resident[page] & 1) == 0)
			continue;
		uint64_t owner = __atomic_load_n(&slot->owner, __ATOMIC_ACQUIRE);
		bool theirs;
		if (owner == 0)
			continue;
		if ((owner & TAKEOVER_OWNER_FILLING) != 0)
			theirs = (uint32_t)owner == (uint32_t)pid; /* died while filling it */
		else
			theirs = __atomic_load_n(&slot->pid, __ATOMIC_RELAXED) == (uint32_t)pid;
		if (theirs && __atomic_compare_exchange_n(&slot->owner, &owner, 0, false,
							  __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
			freed++;
	}
	free(resident);
	return freed;
}

/* The maildrop locks that POP3 sessions hold, shared by every worker of every generation, so that a
 * login that finds its maildrop locked can ask the holder's worker to end that session ([pop3]
 * lock_takeover). One anonymous shared mapping made by the master before it forks, like ip_limit:
 * fixed size, no pointers inside, no lock (every field is read and written with atomics).
 *
 * Each slot describes one session holding one lock: the lock's identity (struct store_lock_id,
 * compared in full, so two maildrops whose identities hash alike are never confused), the worker's
 * pid, a serial unique across all processes, when it got the lock, when it last did something,
 * whether its QUIT is committing, and a takeover request a contender may post.
 *
 * Slot ownership: the session that holds the lock owns its slot and is the only writer of its
 * fields, except `request` (contenders) and the slot's release by the master when the worker
 * died. A slot is claimed by a compare-and-swap of its owner word (0 free, a marker while it is
 * filled, then the serial); readers copy the fields between two reads of that word and keep the
 * copy only if it did not change (a seqlock whose sequence is the serial, never reused).
 *
 * Placement: a slot is looked for within TAKEOVER_TABLE_WINDOW slots from a hash of the identity;
 * a full window means the session is not published (it runs normally but cannot be taken over).
 * Since the lock is exclusive, a session that has just taken it replaces any slot left for the
 * same identity (a session that has released the lock but not yet withdrawn its slot, or one of a
 * worker that died). */
#ifndef BUZON_POP3_TAKEOVER_TABLE_H
#define BUZON_POP3_TAKEOVER_TABLE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/store.h"

/* Slots in the table made for the server: one per logged-in session of the whole server, at 64
 * octets each (8 MiB of shared memory). Issue 5 measured 50,000 idle sessions over 6 workers;
 * placed with random hashes in windows of 64, 80,000 sessions all find a slot and 100,000 leave
 * a few dozen unpublished (a simulation). */
#define TAKEOVER_TABLE_SLOTS 131072
/* How many slots from its hash position a lock may be placed or looked for. */
#define TAKEOVER_TABLE_WINDOW 64
/* The longest idle time a request can carry: requests pack it beside the serial (17 bits, above
 * [pop3] lock_takeover_idle's limit of a day). */
#define TAKEOVER_TABLE_MAX_IDLE_SECS 131071u

struct takeover_table;

/* A consistent copy of a published session, for a contender. */
struct takeover_holder {
	uint32_t slot;
	uint64_t serial;
	pid_t pid;	   /* the worker that runs it */
	int64_t since_ms;  /* when it took the lock (monotonic_ms(), shared by every process) */
	int64_t active_ms; /* its last command or streamed reply */
	bool committing;   /* its QUIT commit is running: the lock is about to be released */
};

/* Creates the shared table; call in the master before forking. Aborts if the mapping fails. */
struct takeover_table *takeover_table_create(void);
/* The same with slot_count slots (a power of two; tests use a few to fill windows). */
struct takeover_table *takeover_table_create_sized(uint32_t slot_count);
/* Unmaps the table in this process and frees *table, setting it to NULL; NULL is ignored. */
void takeover_table_destroy(struct takeover_table **table);

/* Holder side. Publishes that process pid holds the lock id from now_ms on, replacing a slot left
 * for the same lock. Returns the slot and sets *serial_r (never 0), or -1 if the window is full. */
int takeover_table_publish(struct takeover_table *table, const struct store_lock_id *id, pid_t pid,
			   int64_t now_ms, uint64_t *serial_r);
/* Records activity at now_ms. Call only while holding the lock (before any commit released it). */
void takeover_table_touch(struct takeover_table *table, uint32_t slot, int64_t now_ms);
/* Marks the session's QUIT commit as running; contenders then wait for the lock instead of
 * asking. Call while holding the lock, before the commit starts. */
void takeover_table_set_committing(struct takeover_table *table, uint32_t slot);
/* Frees the slot if it still belongs to serial (another session may have replaced it since the
 * lock was released). */
void takeover_table_withdraw(struct takeover_table *table, uint32_t slot, uint64_t serial);
/* The takeover request pending for serial in slot, if any: true with *min_idle_secs_r, the idle
 * time the contender demands (0: however active). */
bool takeover_table_requested(struct takeover_table *table, uint32_t slot, uint64_t serial,
			      unsigned int *min_idle_secs_r);
/* Drops the request for serial in slot (refused: the session was busy or active). A request a
 * contender posts meanwhile stays. */
void takeover_table_refuse(struct takeover_table *table, uint32_t slot, uint64_t serial);
/* A counter that contenders of pid's sessions increase when they post a request: a worker that
 * sees it unchanged has nothing to look at (counters are shared by pids modulo a small number). */
uint32_t takeover_table_doorbell(struct takeover_table *table, pid_t pid);

/* Contender side. Finds the session holding id; returns false if none is published. */
bool takeover_table_find(struct takeover_table *table, const struct store_lock_id *id,
			 struct takeover_holder *holder_r);
/* Asks the holder to end its session if it has been idle for min_idle_secs (0: in any case; capped
 * at TAKEOVER_TABLE_MAX_IDLE_SECS), and rings its worker's doorbell. Of two requests for the same
 * session, the one demanding the longer idle time stays. Returns false if the slot no longer
 * belongs to holder->serial. */
bool takeover_table_request(struct takeover_table *table, const struct takeover_holder *holder,
			    unsigned int min_idle_secs);

/* The master, after reaping worker pid: frees its slots (its locks died with it). Reads only the
 * pages of the table that are resident (mincore), so that the master does not make the whole
 * table resident. Returns how many. */
size_t takeover_table_forget_process(struct takeover_table *table, pid_t pid);

#endif

/* Unit tests for the shared table of held maildrop locks (src/pop3/takeover_table.c): publishing,
 * finding by the full identity (never a look-alike), leftovers replaced, a full window, requests
 * and refusals, the master's clean-up after a dead worker, and processes writing it at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "pop3/takeover_table.h"

static struct store_lock_id lock_id(uint64_t volume, uint64_t object)
{
	return (struct store_lock_id){.volume = volume, .object = object};
}

static void test_publish_find_withdraw(void **state)
{
	struct takeover_table *table = takeover_table_create();
	struct store_lock_id a = lock_id(2049, 131), b = lock_id(2049, 132);
	struct takeover_holder holder;
	uint64_t serial;

	assert_false(takeover_table_find(table, &a, &holder));
	int slot = takeover_table_publish(table, &a, 4242, 1000, &serial);
	assert_true(slot >= 0);
	assert_int_not_equal(serial, 0);
	assert_true(takeover_table_find(table, &a, &holder));
	assert_int_equal(holder.slot, slot);
	assert_int_equal(holder.serial, serial);
	assert_int_equal(holder.pid, 4242);
	assert_int_equal(holder.since_ms, 1000);
	assert_int_equal(holder.active_ms, 1000);
	assert_false(holder.committing);
	assert_false(takeover_table_find(table, &b, &holder));

	takeover_table_touch(table, (uint32_t)slot, 2500);
	takeover_table_set_committing(table, (uint32_t)slot);
	assert_true(takeover_table_find(table, &a, &holder));
	assert_int_equal(holder.active_ms, 2500);
	assert_int_equal(holder.since_ms, 1000);
	assert_true(holder.committing);

	/* only the owner's serial frees the slot */
	takeover_table_withdraw(table, (uint32_t)slot, serial + 1);
	assert_true(takeover_table_find(table, &a, &holder));
	takeover_table_withdraw(table, (uint32_t)slot, serial);
	assert_false(takeover_table_find(table, &a, &holder));
	takeover_table_destroy(&table);
	assert_null(table);
}

/* Four slots, so every identity shares the one window: each is still found as itself. */
static void test_full_window_and_exact_match(void **state)
{
	struct takeover_table *table = takeover_table_create_sized(4);
	struct takeover_holder holder;
	uint64_t serials[5];
	int slots[5];

	for (uint64_t i = 0; i < 4; i++) {
		struct store_lock_id id = lock_id(7, 100 + i);
		slots[i] = takeover_table_publish(table, &id, 10 + (pid_t)i, 0, &serials[i]);
		assert_true(slots[i] >= 0);
	}
	struct store_lock_id fifth = lock_id(7, 104);
	assert_int_equal(takeover_table_publish(table, &fifth, 14, 0, &serials[4]), -1);
	assert_false(takeover_table_find(table, &fifth, &holder));
	/* same object on another volume: a different lock */
	struct store_lock_id other_volume = lock_id(8, 100);
	assert_false(takeover_table_find(table, &other_volume, &holder));
	for (uint64_t i = 0; i < 4; i++) {
		struct store_lock_id id = lock_id(7, 100 + i);
		assert_true(takeover_table_find(table, &id, &holder));
		assert_int_equal(holder.serial, serials[i]);
		assert_int_equal(holder.pid, 10 + (pid_t)i);
	}
	takeover_table_withdraw(table, (uint32_t)slots[2], serials[2]);
	slots[4] = takeover_table_publish(table, &fifth, 14, 0, &serials[4]);
	assert_int_equal(slots[4], slots[2]);
	takeover_table_destroy(&table);
}

/* The lock is exclusive: a new holder of the same lock replaces what an earlier one left. */
static void test_same_lock_replaces_leftover(void **state)
{
	struct takeover_table *table = takeover_table_create_sized(4);
	struct store_lock_id a = lock_id(1, 1);
	struct takeover_holder holder;
	uint64_t first, second;

	int slot = takeover_table_publish(table, &a, 100, 10, &first);
	assert_int_equal(takeover_table_publish(table, &a, 200, 20, &second), slot);
	assert_int_not_equal(first, second);
	/* the first session withdraws late: the new holder's slot stays */
	takeover_table_withdraw(table, (uint32_t)slot, first);
	assert_true(takeover_table_find(table, &a, &holder));
	assert_int_equal(holder.serial, second);
	assert_int_equal(holder.pid, 200);
	assert_int_equal(holder.since_ms, 20);
	/* no slot was used up by the leftover: three others still fit */
	for (uint64_t i = 2; i < 5; i++) {
		struct store_lock_id id = lock_id(1, i);
		uint64_t serial;
		assert_true(takeover_table_publish(table, &id, 300, 0, &serial) >= 0);
	}
	takeover_table_destroy(&table);
}

static void test_request_refuse_and_doorbell(void **state)
{
	struct takeover_table *table = takeover_table_create();
	struct store_lock_id a = lock_id(3, 33);
	struct takeover_holder holder;
	unsigned int min_idle;
	uint64_t serial;

	int slot = takeover_table_publish(table, &a, 777, 0, &serial);
	assert_false(takeover_table_requested(table, (uint32_t)slot, serial, &min_idle));
	uint32_t bell = takeover_table_doorbell(table, 777);
	assert_true(takeover_table_find(table, &a, &holder));
	assert_true(takeover_table_request(table, &holder, 30));
	assert_int_not_equal(takeover_table_doorbell(table, 777), bell);
	assert_true(takeover_table_requested(table, (uint32_t)slot, serial, &min_idle));
	assert_int_equal(min_idle, 30);
	/* a second contender that would accept less does not weaken the request */
	assert_true(takeover_table_request(table, &holder, 0));
	assert_true(takeover_table_requested(table, (uint32_t)slot, serial, &min_idle));
	assert_int_equal(min_idle, 30);
	/* nor is the request seen by another serial in that slot */
	assert_false(takeover_table_requested(table, (uint32_t)slot, serial + 1, &min_idle));

	takeover_table_refuse(table, (uint32_t)slot, serial);
	assert_false(takeover_table_requested(table, (uint32_t)slot, serial, &min_idle));
	/* idle times beyond what a request can carry are capped, not wrapped */
	assert_true(takeover_table_request(table, &holder, 10 * TAKEOVER_TABLE_MAX_IDLE_SECS));
	assert_true(takeover_table_requested(table, (uint32_t)slot, serial, &min_idle));
	assert_int_equal(min_idle, TAKEOVER_TABLE_MAX_IDLE_SECS);

	takeover_table_destroy(&table);
}

/* The holder went and another session took its slot: a contender's old view asks nobody. */
static void test_request_for_replaced_holder(void **state)
{
	struct takeover_table *table = takeover_table_create_sized(1);
	struct store_lock_id a = lock_id(3, 33), b = lock_id(3, 34);
	struct takeover_holder holder;
	unsigned int min_idle;
	uint64_t serial, newer;

	int slot = takeover_table_publish(table, &a, 777, 0, &serial);
	assert_true(takeover_table_find(table, &a, &holder));
	takeover_table_withdraw(table, (uint32_t)slot, serial);
	assert_int_equal(takeover_table_publish(table, &b, 778, 0, &newer), slot);
	assert_false(takeover_table_request(table, &holder, 0));
	assert_false(takeover_table_requested(table, (uint32_t)slot, newer, &min_idle));
	takeover_table_destroy(&table);
}

static void test_forget_process(void **state)
{
	struct takeover_table *table = takeover_table_create();
	struct takeover_holder holder;
	uint64_t serial;

	for (uint64_t i = 0; i < 3; i++) {
		struct store_lock_id id = lock_id(9, i);
		assert_true(takeover_table_publish(table, &id, i < 2 ? 100 : 200, 0, &serial) >= 0);
	}
	assert_int_equal(takeover_table_forget_process(table, 100), 2);
	struct store_lock_id first = lock_id(9, 0), third = lock_id(9, 2);
	assert_false(takeover_table_find(table, &first, &holder));
	assert_true(takeover_table_find(table, &third, &holder));
	assert_int_equal(holder.pid, 200);
	assert_int_equal(takeover_table_forget_process(table, 100), 0);
	takeover_table_destroy(&table);
}

/* Processes publish, touch and withdraw their own locks in a small table while reading every
 * lock: a copy that is returned must be whole (the identity, pid and times of one session). */
#define CHURN_PROCESSES 3
#define CHURN_ROUNDS	20000

static int churn(struct takeover_table *table, uint64_t me)
{
	for (int round = 0; round < CHURN_ROUNDS; round++) {
		struct store_lock_id mine = lock_id(me, (uint64_t)round % 5);
		uint64_t serial;
		int slot = takeover_table_publish(table, &mine, (pid_t)me, (int64_t)me, &serial);
		if (slot >= 0)
			takeover_table_touch(table, (uint32_t)slot, (int64_t)me * 1000);
		for (uint64_t other = 1; other <= CHURN_PROCESSES; other++) {
			struct store_lock_id theirs = lock_id(other, (uint64_t)round % 5);
			struct takeover_holder holder;
			if (takeover_table_find(table, &theirs, &holder) &&
			    (holder.pid != (pid_t)other || holder.since_ms != (int64_t)other ||
			     (holder.active_ms != (int64_t)other &&
			      holder.active_ms != (int64_t)other * 1000)))
				return 1;
		}
		if (slot >= 0)
			takeover_table_withdraw(table, (uint32_t)slot, serial);
	}
	return 0;
}

static void test_processes_at_once(void **state)
{
	struct takeover_table *table = takeover_table_create_sized(8);
	pid_t children[CHURN_PROCESSES];

	for (uint64_t i = 0; i < CHURN_PROCESSES; i++) {
		children[i] = fork();
		assert_true(children[i] >= 0);
		if (children[i] == 0)
			_exit(churn(table, i + 1));
	}
	for (int i = 0; i < CHURN_PROCESSES; i++) {
		int status;
		assert_int_equal(waitpid(children[i], &status, 0), children[i]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	/* every process withdrew what it published */
	for (uint64_t i = 1; i <= CHURN_PROCESSES; i++) {
		for (uint64_t object = 0; object < 5; object++) {
			struct store_lock_id id = lock_id(i, object);
			struct takeover_holder holder;
			assert_false(takeover_table_find(table, &id, &holder));
		}
	}
	takeover_table_destroy(&table);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_publish_find_withdraw),
	    cmocka_unit_test(test_full_window_and_exact_match),
	    cmocka_unit_test(test_same_lock_replaces_leftover),
	    cmocka_unit_test(test_request_refuse_and_doorbell),
	    cmocka_unit_test(test_request_for_replaced_holder),
	    cmocka_unit_test(test_forget_process),
	    cmocka_unit_test(test_processes_at_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the register of bans in the shared ban table (`buzon ban list|add|del`): what it
 * lists, in which order, how it forgets ended bans, how it stays bounded, and that several
 * processes can write it at once. The slots themselves are tested in test_netlist.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/util.h"
#include "net/ban_table.h"

static const char *entry_text(const struct ban_entry *entry)
{
	static char buf[BAN_ENTRY_TEXT_MAX];

	return ban_entry_text(entry, buf, sizeof(buf));
}

static void test_add_list_remove(void **state)
{
	struct ban_table *table = ban_table_create();
	uint64_t now = ban_table_now();
	struct ban_entry entries[4];

	assert_int_equal(ban_table_list(table, now, entries, 4), 0);
	assert_int_equal(ban_table_add(table, "192.0.2.7", now + 100, BAN_SOURCE_ADMIN), 0);
	/* an IPv6 client is its /64: listed as the network, removable by any address in it */
	assert_int_equal(ban_table_add(table, "2001:db8:1:2::99", now + 300, BAN_SOURCE_AUTH), 0);
	assert_int_equal(ban_table_add(table, "not-an-ip", now + 300, BAN_SOURCE_AUTH), -1);
	assert_int_equal(ban_table_add(table, "10.0.0.0/8", now + 300, BAN_SOURCE_ADMIN), -1);

	assert_int_equal(ban_table_list(table, now, entries, 4), 2);
	assert_string_equal(entry_text(&entries[0]), "2001:db8:1:2::/64"); /* longest first */
	assert_int_equal(entries[0].until, now + 300);
	assert_int_equal(entries[0].source, BAN_SOURCE_AUTH);
	assert_int_equal(entries[0].prefix_len, 64);
	assert_string_equal(entry_text(&entries[1]), "192.0.2.7");
	assert_int_equal(entries[1].source, BAN_SOURCE_ADMIN);
	assert_string_equal(ban_source_name(entries[1].source), "admin");
	assert_string_equal(ban_source_name(entries[0].source), "auth");
	/* the slots are banned too: that is what the workers check */
	assert_true(ban_table_is_banned_text(table, "192.0.2.7", now));
	assert_true(ban_table_is_banned_text(table, "2001:db8:1:2::1", now));

	/* max smaller than the count: the count is still the whole */
	assert_int_equal(ban_table_list(table, now, entries, 1), 2);
	assert_string_equal(entry_text(&entries[0]), "2001:db8:1:2::/64");

	assert_int_equal(ban_table_remove(table, "2001:db8:1:2::5", now), 1);
	assert_false(ban_table_is_banned_text(table, "2001:db8:1:2::99", now));
	assert_int_equal(ban_table_remove(table, "2001:db8:1:2::5", now), 0);
	assert_int_equal(ban_table_remove(table, "nonsense", now), -1);
	assert_int_equal(ban_table_list(table, now, entries, 4), 1);
	assert_string_equal(entry_text(&entries[0]), "192.0.2.7");
	ban_table_destroy(&table);
}

static void test_rebans_keep_the_later_end(void **state)
{
	struct ban_table *table = ban_table_create();
	uint64_t now = ban_table_now();
	struct ban_entry entry;

	assert_int_equal(ban_table_add(table, "198.51.100.1", now + 500, BAN_SOURCE_AUTH), 0);
	assert_int_equal(ban_table_add(table, "198.51.100.1", now + 50, BAN_SOURCE_ADMIN), 0);
	assert_int_equal(ban_table_list(table, now, &entry, 1), 1);
	assert_int_equal(entry.until, now + 500);
	assert_int_equal(entry.source, BAN_SOURCE_ADMIN);
	assert_int_equal(ban_table_add(table, "198.51.100.1", now + 900, BAN_SOURCE_AUTH), 0);
	assert_int_equal(ban_table_list(table, now, &entry, 1), 1);
	assert_int_equal(entry.until, now + 900);
	/* an IPv4-mapped IPv6 address is the same client */
	assert_int_equal(ban_table_add(table, "::ffff:198.51.100.1", now + 950, BAN_SOURCE_AUTH),
			 0);
	assert_int_equal(ban_table_list(table, now, &entry, 1), 1);
	assert_int_equal(entry.until, now + 950);
	ban_table_destroy(&table);
}

static void test_ended_bans_drop_out(void **state)
{
	struct ban_table *table = ban_table_create();
	uint64_t now = ban_table_now();
	struct ban_entry entries[2];

	assert_int_equal(ban_table_add(table, "203.0.113.1", now + 10, BAN_SOURCE_AUTH), 0);
	assert_int_equal(ban_table_add(table, "203.0.113.2", now + 1000, BAN_SOURCE_AUTH), 0);
	assert_int_equal(ban_table_list(table, now + 10, entries, 2), 1);
	assert_string_equal(entry_text(&entries[0]), "203.0.113.2");
	/* dropped for good, not only hidden */
	assert_int_equal(ban_table_list(table, now, entries, 2), 1);
	/* removing an ended ban lifts nothing */
	assert_int_equal(ban_table_remove(table, "203.0.113.1", now + 10), 0);
	/* a slot banned without the register (the register was full) is still lifted */
	assert_int_equal(ban_table_ban_text(table, "203.0.113.3", now + 100), 0);
	assert_int_equal(ban_table_remove(table, "203.0.113.3", now), 1);
	assert_false(ban_table_is_banned_text(table, "203.0.113.3", now));
	ban_table_destroy(&table);
}

static void test_full_register_keeps_the_longest(void **state)
{
	struct ban_table *table = ban_table_create();
	uint64_t now = ban_table_now();
	struct ban_entry *entries = xcalloc(BAN_REGISTER_ENTRIES + 1, sizeof(*entries));
	char ip[32];

	/* 10.0.x.y, ending one second apart; the first 16 are pushed out by the last 16 */
	for (unsigned int i = 0; i < BAN_REGISTER_ENTRIES + 16; i++) {
		snprintf(ip, sizeof(ip), "10.0.%u.%u", i / 256, i % 256);
		assert_int_equal(ban_table_add(table, ip, now + 100 + i, BAN_SOURCE_AUTH), 0);
	}
	assert_int_equal(ban_table_list(table, now, entries, BAN_REGISTER_ENTRIES + 1),
			 BAN_REGISTER_ENTRIES);
	assert_int_equal(entries[0].until, now + 100 + BAN_REGISTER_ENTRIES + 15);
	assert_int_equal(entries[BAN_REGISTER_ENTRIES - 1].until, now + 100 + 16);
	/* a ban shorter than every listed one is enforced but not listed */
	assert_int_equal(ban_table_add(table, "192.0.2.200", now + 50, BAN_SOURCE_ADMIN), 0);
	assert_true(ban_table_is_banned_text(table, "192.0.2.200", now));
	assert_int_equal(ban_table_list(table, now, entries, BAN_REGISTER_ENTRIES + 1),
			 BAN_REGISTER_ENTRIES);
	for (size_t i = 0; i < BAN_REGISTER_ENTRIES; i++)
		assert_string_not_equal(entry_text(&entries[i]), "192.0.2.200");
	/* once bans end, their entries are free again */
	assert_int_equal(ban_table_add(table, "192.0.2.201", now + 5000, BAN_SOURCE_ADMIN), 0);
	assert_int_equal(ban_table_list(table, now + 100 + BAN_REGISTER_ENTRIES + 15, entries,
					BAN_REGISTER_ENTRIES + 1),
			 1);
	assert_string_equal(entry_text(&entries[0]), "192.0.2.201");
	free(entries);
	ban_table_destroy(&table);
}

/* Writers per process and processes in the concurrent test. */
#define WRITES_PER_PROCESS 300
#define WRITER_PROCESSES   3

/* Writer number w adds 172.(16+w).(i/256).(i%256) for i < WRITES_PER_PROCESS, removing every third
 * right away. */
static int write_register(struct ban_table *table, unsigned int w, uint64_t now)
{
	char ip[32];

	for (unsigned int i = 0; i < WRITES_PER_PROCESS; i++) {
		snprintf(ip, sizeof(ip), "172.%u.%u.%u", 16 + w, i / 256, i % 256);
		if (ban_table_add(table, ip, now + 1000, BAN_SOURCE_AUTH) < 0)
			return 1;
		if (i % 3 == 0 && ban_table_remove(table, ip, now) != 1)
			return 1;
	}
	return 0;
}

/* Several processes write at once (the auth and admin processes do): no entry is lost or torn. */
static void test_concurrent_writers(void **state)
{
	struct ban_table *table = ban_table_create();
	uint64_t now = ban_table_now();
	pid_t pids[WRITER_PROCESSES];
	struct ban_entry *entries = xcalloc(BAN_REGISTER_ENTRIES, sizeof(*entries));

	for (unsigned int w = 0; w < WRITER_PROCESSES; w++) {
		pids[w] = fork();
		assert_true(pids[w] >= 0);
		if (pids[w] == 0)
			_exit(write_register(table, w, now));
	}
	for (unsigned int w = 0; w < WRITER_PROCESSES; w++) {
		int status;
		assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	size_t expected = WRITER_PROCESSES * (WRITES_PER_PROCESS - WRITES_PER_PROCESS / 3);
	assert_int_equal(ban_table_list(table, now, entries, BAN_REGISTER_ENTRIES), expected);
	unsigned int seen[WRITER_PROCESSES][WRITES_PER_PROCESS] = {{0}};
	for (size_t i = 0; i < expected; i++) {
		unsigned int w, high, low;
		assert_int_equal(sscanf(entry_text(&entries[i]), "172.%u.%u.%u", &w, &high, &low),
				 3);
		w -= 16;
		unsigned int n = high * 256 + low;
		assert_true(w < WRITER_PROCESSES && n < WRITES_PER_PROCESS && n % 3 != 0);
		assert_int_equal(++seen[w][n], 1);
	}
	free(entries);
	ban_table_destroy(&table);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_add_list_remove),
	    cmocka_unit_test(test_rebans_keep_the_later_end),
	    cmocka_unit_test(test_ended_bans_drop_out),
	    cmocka_unit_test(test_full_register_keeps_the_longest),
	    cmocka_unit_test(test_concurrent_writers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

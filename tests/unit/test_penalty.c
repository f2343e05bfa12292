/* Unit tests for the brute-force slow-down policy: delays, retries, bans, trust, memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "auth/penalty.h"
#include "core/util.h"
#include "net/netlist.h"

static unsigned char fp_key[PENALTY_FP_KEY_LEN];

/* A fingerprint for a password in the tests' account. */
static const unsigned char *fp_of(const char *password)
{
	static unsigned char fps[8][PENALTY_FP_LEN];
	static unsigned int next;
	unsigned char *fp = fps[next++ % ARRAY_SIZE(fps)];

	penalty_fingerprint(fp_key, "alice", password, fp);
	return fp;
}

/* Records a failure with password number n, asserting it does not start a ban. */
static unsigned int fail_n(struct penalty_table *table, const char *ip, unsigned int n,
			   uint64_t now_ms)
{
	char password[32];
	bool banned_now;

	(void)snprintf(password, sizeof(password), "guess%u", n);
	unsigned int delay =
	    penalty_record_failure(table, ip, fp_of(password), now_ms, &banned_now);
	assert_false(banned_now);
	return delay;
}

static struct penalty_table *table_with_bans(unsigned int failures, unsigned int window_secs,
					     unsigned int ban_secs)
{
	struct penalty_config config;

	penalty_config_init(&config);
	config.ban_failures = failures;
	config.ban_window_secs = window_secs;
	config.ban_secs = ban_secs;
	return penalty_table_new(&config);
}

static void test_delay_doubles_to_cap(void **state)
{
	struct penalty_config config;
	struct penalty_table *table;
	bool banned_now;

	penalty_config_init(&config);
	table = penalty_table_new(&config);
	assert_int_equal(penalty_delay(table, "192.0.2.1", 0), 0);
	assert_int_equal(fail_n(table, "192.0.2.1", 1, 1000), 2000);
	assert_int_equal(fail_n(table, "192.0.2.1", 2, 2000), 4000);
	assert_int_equal(fail_n(table, "192.0.2.1", 3, 3000), 8000);
	assert_int_equal(fail_n(table, "192.0.2.1", 4, 4000), 15000);
	assert_int_equal(fail_n(table, "192.0.2.1", 5, 5000), 15000);
	assert_int_equal(penalty_delay(table, "192.0.2.1", 5000), 15000);
	/* without a fingerprint every failure counts */
	assert_int_equal(penalty_record_failure(table, "192.0.2.2", NULL, 0, &banned_now), 2000);
	assert_int_equal(penalty_record_failure(table, "192.0.2.2", NULL, 0, &banned_now), 4000);
	/* other clients are unaffected */
	assert_int_equal(penalty_delay(table, "192.0.2.3", 5000), 0);
	penalty_table_free(&table);
	assert_null(table);
}

static void test_same_password_retry_does_not_grow(void **state)
{
	struct penalty_table *table = table_with_bans(3, 600, 600);
	bool banned_now;

	assert_int_equal(penalty_record_failure(table, "192.0.2.1", fp_of("old"), 0, &banned_now),
			 2000);
	for (unsigned int i = 1; i <= 50; i++) {
		assert_int_equal(penalty_record_failure(table, "192.0.2.1", fp_of("old"),
							(uint64_t)i * 1000, &banned_now),
				 2000);
		assert_false(banned_now);
	}
	assert_false(penalty_is_banned(table, "192.0.2.1", 60000, NULL));
	/* a new password grows it; the old one again does not */
	assert_int_equal(fail_n(table, "192.0.2.1", 1, 61000), 4000);
	assert_int_equal(
	    penalty_record_failure(table, "192.0.2.1", fp_of("old"), 62000, &banned_now), 4000);
	/* another user with the same password is a different guess */
	unsigned char fp[PENALTY_FP_LEN];
	penalty_fingerprint(fp_key, "bob", "old", fp);
	assert_int_equal(penalty_record_failure(table, "192.0.2.1", fp, 63000, &banned_now), 8000);
	assert_true(banned_now); /* third distinct failure */
	penalty_table_free(&table);
}

static void test_fingerprints_remembered_are_few(void **state)
{
	struct penalty_config config;
	struct penalty_table *table;

	penalty_config_init(&config);
	config.initial_ms = 1;
	config.max_ms = 60000;
	table = penalty_table_new(&config);
	/* PENALTY_FINGERPRINTS + 1 distinct passwords push out the first one */
	for (unsigned int i = 0; i <= PENALTY_FINGERPRINTS; i++)
		assert_int_equal(fail_n(table, "192.0.2.1", i, i), 1u << i);
	assert_int_equal(fail_n(table, "192.0.2.1", PENALTY_FINGERPRINTS, 10),
			 1u << PENALTY_FINGERPRINTS);
	assert_int_equal(fail_n(table, "192.0.2.1", 0, 11), 1u << (PENALTY_FINGERPRINTS + 1));
	penalty_table_free(&table);
}

static void test_ban_after_failures_in_window(void **state)
{
	struct penalty_table *table = table_with_bans(5, 60, 120);
	uint64_t until = 0;
	bool banned_now;

	for (unsigned int i = 0; i < 4; i++)
		fail_n(table, "198.51.100.7", i, 1000 + i * 1000);
	assert_false(penalty_is_banned(table, "198.51.100.7", 4000, NULL));
	penalty_record_failure(table, "198.51.100.7", fp_of("guess4"), 59000, &banned_now);
	assert_true(banned_now);
	assert_true(penalty_is_banned(table, "198.51.100.7", 59000, &until));
	assert_int_equal(until, 59000 + 120000);
	/* a late failure (connection made before the ban) neither reports nor extends it */
	penalty_record_failure(table, "198.51.100.7", fp_of("guess5"), 60000, &banned_now);
	assert_false(banned_now);
	assert_true(penalty_is_banned(table, "198.51.100.7", 60000, &until));
	assert_int_equal(until, 59000 + 120000);
	assert_false(penalty_is_banned(table, "198.51.100.8", 60000, NULL));

	struct penalty_ban bans[4];
	assert_int_equal(penalty_list_bans(table, 60000, bans, ARRAY_SIZE(bans)), 1);
	assert_string_equal(bans[0].ip, "198.51.100.7");
	assert_int_equal(bans[0].prefix_len, 32);
	assert_int_equal(bans[0].until_ms, 179000);
	penalty_table_free(&table);
}

static void test_no_ban_when_spread_over_more_than_window(void **state)
{
	struct penalty_table *table = table_with_bans(5, 60, 120);

	/* 16 s apart: any 5 consecutive failures span 64 s, more than the window, however long the
	 * guessing goes on */
	for (unsigned int i = 0; i < 40; i++)
		fail_n(table, "198.51.100.7", i, (uint64_t)i * 16000);
	assert_false(penalty_is_banned(table, "198.51.100.7", (uint64_t)40 * 16000, NULL));
	/* 14 s apart: 5 failures within 56 s */
	bool banned_now = false;
	unsigned int i;
	for (i = 0; i < 5 && !banned_now; i++)
		penalty_record_failure(table, "198.51.100.9", NULL, (uint64_t)i * 14000,
				       &banned_now);
	assert_true(banned_now);
	assert_int_equal(i, 5);
	penalty_table_free(&table);
}

static void test_ban_expires_and_counts_restart(void **state)
{
	struct penalty_table *table = table_with_bans(3, 600, 60);
	uint64_t until;
	bool banned_now;

	fail_n(table, "203.0.113.5", 1, 0);
	fail_n(table, "203.0.113.5", 2, 1000);
	penalty_record_failure(table, "203.0.113.5", fp_of("guess3"), 2000, &banned_now);
	assert_true(banned_now);
	assert_true(penalty_is_banned(table, "203.0.113.5", 61999, &until));
	assert_int_equal(until, 62000);
	assert_false(penalty_is_banned(table, "203.0.113.5", 62000, NULL));
	assert_int_equal(penalty_list_bans(table, 62000, NULL, 0), 0);
	/* back from the ban with fresh counts: two more failures do not ban, the third does */
	fail_n(table, "203.0.113.5", 4, 63000);
	fail_n(table, "203.0.113.5", 5, 64000);
	penalty_record_failure(table, "203.0.113.5", fp_of("guess6"), 65000, &banned_now);
	assert_true(banned_now);
	penalty_table_free(&table);
}

static void test_success_resets_delay_not_ban(void **state)
{
	struct penalty_table *table = table_with_bans(4, 600, 600);
	bool banned_now;

	fail_n(table, "192.0.2.1", 1, 0);
	fail_n(table, "192.0.2.1", 2, 1000);
	assert_int_equal(fail_n(table, "192.0.2.1", 3, 2000), 8000);
	penalty_record_success(table, "192.0.2.1", 3000);
	assert_int_equal(penalty_delay(table, "192.0.2.1", 3000), 0);
	/* the delay starts again, but the three failures still count towards the ban */
	assert_int_equal(
	    penalty_record_failure(table, "192.0.2.1", fp_of("guess1"), 4000, &banned_now), 2000);
	assert_true(banned_now);
	penalty_record_success(table, "192.0.2.1", 5000);
	assert_true(penalty_is_banned(table, "192.0.2.1", 5000, NULL));
	/* success from an unknown client is harmless */
	penalty_record_success(table, "192.0.2.99", 5000);
	assert_int_equal(penalty_table_count(table), 1);
	penalty_table_free(&table);
}

static void test_trusted_networks_exempt(void **state)
{
	struct penalty_config config;
	struct penalty_table *table;
	struct net_list *trusted;
	char *error = NULL;
	bool banned_now;

	assert_int_equal(
	    net_list_parse("10.0.0.0/8, 192.168.1.0/24, ::1/128, 2001:db8::/32", &trusted, &error),
	    0);
	penalty_config_init(&config);
	config.ban_failures = 2;
	config.trusted = trusted;
	table = penalty_table_new(&config);
	static const char *const exempt[] = {"10.1.2.3", "::ffff:10.1.2.3", "192.168.1.255", "::1",
					     "2001:db8:ffff::5"};
	for (size_t i = 0; i < ARRAY_SIZE(exempt); i++) {
		for (unsigned int n = 0; n < 10; n++) {
			assert_int_equal(
			    penalty_record_failure(table, exempt[i], NULL, n, &banned_now), 0);
			assert_false(banned_now);
		}
		assert_false(penalty_is_banned(table, exempt[i], 10, NULL));
		assert_int_equal(penalty_delay(table, exempt[i], 10), 0);
	}
	assert_int_equal(penalty_table_count(table), 0);
	/* just outside: 11.0.0.1, and its mapped form is the same client */
	assert_int_equal(fail_n(table, "11.0.0.1", 1, 0), 2000);
	assert_int_equal(penalty_record_failure(table, "::ffff:11.0.0.1", NULL, 1, &banned_now),
			 4000);
	assert_true(banned_now);
	assert_true(penalty_is_banned(table, "11.0.0.1", 2, NULL));
	assert_int_equal(fail_n(table, "192.168.2.1", 1, 0), 2000);
	penalty_table_free(&table);
	net_list_free(&trusted);
}

static void test_ipv6_clients_counted_per_64(void **state)
{
	struct penalty_table *table = table_with_bans(3, 600, 600);
	struct penalty_ban bans[2];
	bool banned_now;

	fail_n(table, "2001:db8:1:2::1", 1, 0);
	fail_n(table, "2001:db8:1:2:aaaa::9", 2, 1);
	assert_int_equal(fail_n(table, "2001:db8:1:3::1", 3, 2), 2000);
	penalty_record_failure(table, "2001:db8:1:2:ffff:ffff:ffff:ffff", fp_of("x"), 3,
			       &banned_now);
	assert_true(banned_now);
	assert_true(penalty_is_banned(table, "2001:db8:1:2::77", 4, NULL));
	assert_false(penalty_is_banned(table, "2001:db8:1:3::1", 4, NULL));
	assert_int_equal(penalty_list_bans(table, 4, bans, ARRAY_SIZE(bans)), 1);
	assert_string_equal(bans[0].ip, "2001:db8:1:2::");
	assert_int_equal(bans[0].prefix_len, 64);
	penalty_table_free(&table);
}

static void test_list_bans_and_unban(void **state)
{
	struct penalty_table *table = table_with_bans(1, 600, 600);
	struct penalty_ban bans[1];
	bool banned_now;

	penalty_record_failure(table, "192.0.2.1", NULL, 0, &banned_now);
	assert_true(banned_now);
	penalty_record_failure(table, "192.0.2.2", NULL, 0, &banned_now);
	assert_true(banned_now);
	fail_n(table, "192.0.2.1", 1, 1); /* during the ban: no new report */
	assert_int_equal(penalty_list_bans(table, 1, bans, ARRAY_SIZE(bans)), 2);
	assert_true(strcmp(bans[0].ip, "192.0.2.1") == 0 || strcmp(bans[0].ip, "192.0.2.2") == 0);
	assert_true(penalty_unban(table, "192.0.2.1", 2));
	assert_false(penalty_unban(table, "192.0.2.1", 2));
	assert_false(penalty_unban(table, "192.0.2.3", 2));
	assert_false(penalty_is_banned(table, "192.0.2.1", 2, NULL));
	assert_int_equal(penalty_list_bans(table, 2, bans, ARRAY_SIZE(bans)), 1);
	assert_string_equal(bans[0].ip, "192.0.2.2");
	penalty_table_free(&table);
}

static void test_idle_clients_forgotten(void **state)
{
	struct penalty_table *table = table_with_bans(20, 600, 600);

	fail_n(table, "192.0.2.1", 1, 0);
	fail_n(table, "192.0.2.2", 1, 1000);
	assert_int_equal(penalty_table_count(table), 2);
	assert_int_equal(penalty_delay(table, "192.0.2.1", 600000), 2000);
	assert_int_equal(penalty_delay(table, "192.0.2.1", 600001), 0);
	/* an expired record starts over */
	assert_int_equal(fail_n(table, "192.0.2.1", 2, 600001), 2000);
	/* a later failure sweeps 192.0.2.2, idle for more than the window */
	fail_n(table, "192.0.2.3", 1, 700000);
	assert_int_equal(penalty_table_count(table), 2);
	penalty_table_free(&table);
}

static void test_unparsable_ip_still_slowed(void **state)
{
	struct penalty_table *table = table_with_bans(20, 600, 600);

	assert_int_equal(fail_n(table, "not-an-ip", 1, 0), 2000);
	assert_int_equal(fail_n(table, "", 2, 0), 4000);
	assert_int_equal(penalty_table_count(table), 1);
	penalty_table_free(&table);
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void test_eviction_bounds_memory_and_is_fast(void **state)
{
	struct penalty_table *table = table_with_bans(20, 600, 600);
	const unsigned int clients = 2 * PENALTY_MAX_CLIENTS;
	struct timespec start;
	char ip[INET6_ADDRSTRLEN];

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (unsigned int i = 0; i < clients; i++) {
		bool banned_now;
		(void)snprintf(ip, sizeof(ip), "10.%u.%u.%u", (i >> 16) & 0xff, (i >> 8) & 0xff,
			       i & 0xff);
		penalty_record_failure(table, ip, NULL, i / 1000, &banned_now);
		assert_true(penalty_table_count(table) <= PENALTY_MAX_CLIENTS);
	}
	double elapsed = seconds_since(&start);
	print_message("%u distinct clients in %.3f s\n", clients, elapsed);
	/* the bound catches eviction that grows with the table; valgrind (make check-valgrind sets
	 * BUZON_VALGRIND) runs everything some 50 times slower */
	assert_true(elapsed < (getenv("BUZON_VALGRIND") != NULL ? 100.0 : 2.0));
	assert_int_equal(penalty_table_count(table), PENALTY_MAX_CLIENTS);
	/* the oldest were evicted, the newest kept */
	assert_int_equal(penalty_delay(table, "10.0.0.0", clients / 1000), 0);
	(void)snprintf(ip, sizeof(ip), "10.%u.%u.%u", ((clients - 1) >> 16) & 0xff,
		       ((clients - 1) >> 8) & 0xff, (clients - 1) & 0xff);
	assert_int_equal(penalty_delay(table, ip, clients / 1000), 2000);
	penalty_table_free(&table);
}

static void test_recent_client_survives_flood(void **state)
{
	struct penalty_table *table = table_with_bans(20, 600, 600);
	char ip[INET6_ADDRSTRLEN];
	bool banned_now;

	for (unsigned int i = 0; i < PENALTY_MAX_CLIENTS + 1000; i++) {
		if (i % 1000 == 0)
			penalty_record_failure(table, "192.0.2.1", NULL, i, &banned_now);
		(void)snprintf(ip, sizeof(ip), "2001:db8:%x:%x::1", i >> 16, i & 0xffff);
		penalty_record_failure(table, ip, NULL, i, &banned_now);
	}
	assert_int_equal(penalty_table_count(table), PENALTY_MAX_CLIENTS);
	assert_int_equal(penalty_delay(table, "192.0.2.1", PENALTY_MAX_CLIENTS), 15000);
	assert_int_equal(penalty_delay(table, "2001:db8::1", PENALTY_MAX_CLIENTS), 0);
	penalty_table_free(&table);
}

static void test_fingerprints_differ(void **state)
{
	unsigned char a[PENALTY_FP_LEN], b[PENALTY_FP_LEN], other_key[PENALTY_FP_KEY_LEN];

	penalty_fingerprint(fp_key, "alice", "secret", a);
	penalty_fingerprint(fp_key, "alice", "secret", b);
	assert_memory_equal(a, b, PENALTY_FP_LEN);
	penalty_fingerprint(fp_key, "alice", "secreT", b);
	assert_memory_not_equal(a, b, PENALTY_FP_LEN);
	penalty_fingerprint(fp_key, "bob", "secret", b);
	assert_memory_not_equal(a, b, PENALTY_FP_LEN);
	/* where user ends and password starts matters */
	penalty_fingerprint(fp_key, "ab", "c", a);
	penalty_fingerprint(fp_key, "a", "bc", b);
	assert_memory_not_equal(a, b, PENALTY_FP_LEN);
	/* another process (key) gives another fingerprint */
	penalty_fingerprint_key_generate(other_key);
	penalty_fingerprint(fp_key, "alice", "secret", a);
	penalty_fingerprint(other_key, "alice", "secret", b);
	assert_memory_not_equal(a, b, PENALTY_FP_LEN);
}

static void test_config_check(void **state)
{
	struct penalty_config config;
	const char *error = NULL;

	penalty_config_init(&config);
	assert_int_equal(penalty_config_check(&config, &error), 0);
	assert_int_equal(config.initial_ms, 2000);
	assert_int_equal(config.max_ms, 15000);
	assert_int_equal(config.ban_failures, 20);
	assert_int_equal(config.ban_window_secs, 600);
	assert_int_equal(config.ban_secs, 600);
	config.initial_ms = 20000;
	assert_int_equal(penalty_config_check(&config, &error), -1);
	assert_non_null(strstr(error, "initial"));
	penalty_config_init(&config);
	config.max_ms = PENALTY_DELAY_MAX_MS + 1;
	assert_int_equal(penalty_config_check(&config, &error), -1);
	penalty_config_init(&config);
	config.ban_failures = PENALTY_BAN_FAILURES_MAX + 1;
	assert_int_equal(penalty_config_check(&config, &error), -1);
	penalty_config_init(&config);
	config.ban_window_secs = 0;
	assert_int_equal(penalty_config_check(&config, &error), -1);
	penalty_config_init(&config);
	config.ban_secs = 0;
	assert_int_equal(penalty_config_check(&config, &error), -1);
	config.ban_failures = 0; /* bans off: their length does not matter */
	assert_int_equal(penalty_config_check(&config, &error), 0);
}

static void test_bans_disabled(void **state)
{
	struct penalty_table *table = table_with_bans(0, 600, 0);

	for (unsigned int i = 0; i < 100; i++)
		fail_n(table, "192.0.2.1", i, i);
	assert_false(penalty_is_banned(table, "192.0.2.1", 100, NULL));
	assert_int_equal(penalty_delay(table, "192.0.2.1", 100), 15000);
	penalty_table_free(&table);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_delay_doubles_to_cap),
	    cmocka_unit_test(test_same_password_retry_does_not_grow),
	    cmocka_unit_test(test_fingerprints_remembered_are_few),
	    cmocka_unit_test(test_ban_after_failures_in_window),
	    cmocka_unit_test(test_no_ban_when_spread_over_more_than_window),
	    cmocka_unit_test(test_ban_expires_and_counts_restart),
	    cmocka_unit_test(test_success_resets_delay_not_ban),
	    cmocka_unit_test(test_trusted_networks_exempt),
	    cmocka_unit_test(test_ipv6_clients_counted_per_64),
	    cmocka_unit_test(test_list_bans_and_unban),
	    cmocka_unit_test(test_idle_clients_forgotten),
	    cmocka_unit_test(test_unparsable_ip_still_slowed),
	    cmocka_unit_test(test_eviction_bounds_memory_and_is_fast),
	    cmocka_unit_test(test_recent_client_survives_flood),
	    cmocka_unit_test(test_fingerprints_differ),
	    cmocka_unit_test(test_config_check),
	    cmocka_unit_test(test_bans_disabled),
	};

	penalty_fingerprint_key_generate(fp_key);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the net helpers: canonical addresses, CIDR lists, and the shared ban table (also
 * across fork()). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/util.h"
#include "net/ban_table.h"
#include "net/netlist.h"

static struct net_list *parse_ok(const char *text)
{
	struct net_list *list = NULL;
	char *error = NULL;

	if (net_list_parse(text, &list, &error) < 0)
		fail_msg("parsing \"%s\" failed: %s", text, error);
	assert_null(error);
	return list;
}

/* Asserts that text is refused with a message containing expect. */
static void parse_bad(const char *text, const char *expect)
{
	struct net_list *list = NULL;
	char *error = NULL;

	if (net_list_parse(text, &list, &error) == 0)
		fail_msg("parsing \"%s\" should have failed", text);
	assert_null(list);
	assert_non_null(error);
	if (strstr(error, expect) == NULL)
		fail_msg("error for \"%s\" is \"%s\", expected it to mention \"%s\"", text, error,
			 expect);
	free(error);
}

static void test_parse_good_lists(void **state)
{
	struct net_list *list;

	list = parse_ok("10.0.0.0/8, 192.168.1.0/24, ::1/128, 2001:db8::/32");
	assert_int_equal(net_list_count(list), 4);
	net_list_free(&list);
	assert_null(list);
	net_list_free(&list); /* twice is harmless */

	list = parse_ok("");
	assert_int_equal(net_list_count(list), 0);
	assert_false(net_list_contains_text(list, "10.0.0.1"));
	net_list_free(&list);
	list = parse_ok(" \t ");
	assert_int_equal(net_list_count(list), 0);
	net_list_free(&list);
	list = parse_ok("10.0.0.0/8 192.168.0.0/16\t172.16.0.0/12 ,::1");
	assert_int_equal(net_list_count(list), 4);
	net_list_free(&list);
	list = parse_ok("203.0.113.7,2001:db8::7"); /* no prefix: one host */
	assert_true(net_list_contains_text(list, "203.0.113.7"));
	assert_false(net_list_contains_text(list, "203.0.113.6"));
	assert_true(net_list_contains_text(list, "2001:db8::7"));
	assert_false(net_list_contains_text(list, "2001:db8::8"));
	net_list_free(&list);
	assert_int_equal(net_list_count(NULL), 0);
}

static void test_parse_bad_lists(void **state)
{
	parse_bad("garbage", "\"garbage\"");
	parse_bad("10.0.0.0/8, bogus, 192.168.0.0/16", "\"bogus\"");
	parse_bad("10.0.0.0/33", "0 to 32");
	parse_bad("::/129", "0 to 128");
	parse_bad("10.0.0.0/", "prefix");
	parse_bad("10.0.0.0/-1", "prefix");
	parse_bad("10.0.0.0/+8", "prefix");
	parse_bad("10.0.0.0/8x", "prefix");
	parse_bad("10.0.0.0/8/8", "prefix");
	parse_bad("10.0.0.1/8", "bits set beyond");
	parse_bad("2001:db8::1/32", "bits set beyond");
	parse_bad("10.0.0.0/8,,11.0.0.0/8", "empty item");
	parse_bad(",10.0.0.0/8", "empty item");
	parse_bad("10.0.0.0/8,", "empty item");
	parse_bad("10.0.0.0/8, ,", "empty item");
	parse_bad("010.0.0.1", "not an IPv4 or IPv6");
	parse_bad("1.2.3", "not an IPv4 or IPv6");
	parse_bad("fe80::1%eth0", "not an IPv4 or IPv6");
	parse_bad("10.0.0.0/8;11.0.0.0/8", "\"10.0.0.0/8;11.0.0.0/8\"");

	char long_item[300];
	memset(long_item, '1', sizeof(long_item) - 1);
	long_item[sizeof(long_item) - 1] = '\0';
	parse_bad(long_item, "...\": too long");

	/* one more than allowed */
	size_t size = (size_t)(NET_LIST_MAX_ENTRIES + 1) * 16;
	char *many = xmalloc(size), *p = many;
	for (unsigned int i = 0; i <= NET_LIST_MAX_ENTRIES; i++)
		p += snprintf(p, size - (size_t)(p - many), "10.%u.%u.0/24,", i >> 8, i & 0xff);
	p[-1] = '\0';
	parse_bad(many, "too many");
	/* exactly the limit is fine */
	*strrchr(many, ',') = '\0';
	struct net_list *list = parse_ok(many);
	assert_int_equal(net_list_count(list), NET_LIST_MAX_ENTRIES);
	net_list_free(&list);
	free(many);
}

static void test_ipv4_prefix_boundaries(void **state)
{
	struct net_list *list = parse_ok("192.168.1.0/24, 10.0.0.0/9, 172.16.0.0/12");

	assert_false(net_list_contains_text(list, "192.168.0.255"));
	assert_true(net_list_contains_text(list, "192.168.1.0"));
	assert_true(net_list_contains_text(list, "192.168.1.255"));
	assert_false(net_list_contains_text(list, "192.168.2.0"));
	assert_true(net_list_contains_text(list, "10.0.0.0"));
	assert_true(net_list_contains_text(list, "10.127.255.255"));
	assert_false(net_list_contains_text(list, "10.128.0.0"));
	assert_false(net_list_contains_text(list, "9.255.255.255"));
	assert_true(net_list_contains_text(list, "172.31.255.255"));
	assert_false(net_list_contains_text(list, "172.32.0.0"));
	assert_false(net_list_contains_text(list, "172.15.255.255"));
	/* IPv4-mapped IPv6 clients match IPv4 entries */
	assert_true(net_list_contains_text(list, "::ffff:192.168.1.77"));
	assert_false(net_list_contains_text(list, "::ffff:192.168.2.77"));
	/* an IPv4 address embedded some other way is IPv6 */
	assert_false(net_list_contains_text(list, "::192.168.1.77"));
	assert_false(net_list_contains_text(list, "not an ip"));
	net_list_free(&list);
}

static void test_ipv6_prefix_boundaries(void **state)
{
	struct net_list *list = parse_ok("2001:db8:abcd:12::/63, 2001:db8::7/128, fe80::/10");

	assert_true(net_list_contains_text(list, "2001:db8:abcd:12::"));
	assert_true(net_list_contains_text(list, "2001:db8:abcd:13:ffff:ffff:ffff:ffff"));
	assert_false(net_list_contains_text(list, "2001:db8:abcd:14::"));
	assert_false(net_list_contains_text(list, "2001:db8:abcd:11:ffff:ffff:ffff:ffff"));
	assert_true(net_list_contains_text(list, "2001:db8::7"));
	assert_false(net_list_contains_text(list, "2001:db8::6"));
	assert_false(net_list_contains_text(list, "2001:db8::8"));
	assert_true(net_list_contains_text(list, "febf:ffff::1"));
	assert_false(net_list_contains_text(list, "fec0::1"));
	assert_false(net_list_contains_text(list, "10.0.0.1"));
	net_list_free(&list);
}

static void test_zero_and_full_prefixes(void **state)
{
	struct net_list *v4all = parse_ok("0.0.0.0/0");
	struct net_list *v6all = parse_ok("::/0");
	struct net_list *hosts = parse_ok("203.0.113.7/32, ::1/128");

	assert_true(net_list_contains_text(v4all, "0.0.0.0"));
	assert_true(net_list_contains_text(v4all, "255.255.255.255"));
	assert_true(net_list_contains_text(v4all, "::ffff:1.2.3.4"));
	assert_false(net_list_contains_text(v4all, "2001:db8::1"));
	assert_true(net_list_contains_text(v6all, "2001:db8::1"));
	assert_true(net_list_contains_text(v6all, "::"));
	assert_false(net_list_contains_text(v6all, "1.2.3.4"));
	assert_false(net_list_contains_text(v6all, "::ffff:1.2.3.4"));
	assert_true(net_list_contains_text(hosts, "203.0.113.7"));
	assert_false(net_list_contains_text(hosts, "203.0.113.6"));
	assert_false(net_list_contains_text(hosts, "203.0.113.8"));
	assert_true(net_list_contains_text(hosts, "::1"));
	assert_false(net_list_contains_text(hosts, "::2"));
	assert_false(net_list_contains_text(hosts, "::"));
	net_list_free(&v4all);
	net_list_free(&v6all);
	net_list_free(&hosts);
}

static void test_mapped_entries_become_ipv4(void **state)
{
	struct net_list *list = parse_ok("::ffff:10.0.0.0/104, ::ffff:192.0.2.1");

	assert_true(net_list_contains_text(list, "10.200.1.1"));
	assert_true(net_list_contains_text(list, "::ffff:10.200.1.1"));
	assert_false(net_list_contains_text(list, "11.0.0.1"));
	assert_true(net_list_contains_text(list, "192.0.2.1"));
	assert_false(net_list_contains_text(list, "192.0.2.2"));
	net_list_free(&list);
}

static void sockaddr_v4(struct sockaddr_in *sin, const char *ip)
{
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

static void sockaddr_v6(struct sockaddr_in6 *sin6, const char *ip)
{
	memset(sin6, 0, sizeof(*sin6));
	sin6->sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
}

static void test_contains_sockaddr(void **state)
{
	struct net_list *list = parse_ok("10.0.0.0/8, 2001:db8::/32");
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	sockaddr_v4(&sin, "10.9.8.7");
	assert_true(net_list_contains(list, (struct sockaddr *)&sin));
	sockaddr_v4(&sin, "11.9.8.7");
	assert_false(net_list_contains(list, (struct sockaddr *)&sin));
	sockaddr_v6(&sin6, "::ffff:10.9.8.7");
	assert_true(net_list_contains(list, (struct sockaddr *)&sin6));
	sockaddr_v6(&sin6, "2001:db8:ffff::1");
	assert_true(net_list_contains(list, (struct sockaddr *)&sin6));
	sockaddr_v6(&sin6, "2001:db9::1");
	assert_false(net_list_contains(list, (struct sockaddr *)&sin6));
	assert_false(net_list_contains(list, (struct sockaddr *)&sun));
	assert_false(net_list_contains(NULL, (struct sockaddr *)&sin6));
	net_list_free(&list);
}

static void test_client_identity(void **state)
{
	struct net_addr addr, client;
	char text[INET6_ADDRSTRLEN];

	assert_int_equal(net_addr_from_text("2001:db8:1:2:3:4:5:6", &addr), 0);
	client = net_addr_client(&addr);
	assert_string_equal(net_addr_to_text(&client, text, sizeof(text)), "2001:db8:1:2::");
	assert_int_equal(net_addr_client_prefix(&client), NET_CLIENT_IPV6_PREFIX);
	assert_int_equal(net_addr_from_text("::ffff:192.0.2.9", &addr), 0);
	assert_int_equal(addr.family, AF_INET);
	client = net_addr_client(&addr);
	assert_string_equal(net_addr_to_text(&client, text, sizeof(text)), "192.0.2.9");
	assert_int_equal(net_addr_client_prefix(&client), 32);
	assert_int_equal(net_addr_from_text("192.0.2.9/32", &addr), -1);
	assert_int_equal(net_addr_from_text("", &addr), -1);
}

/* Counts how many of 1000 other IPv4 clients look banned: slot-mates of a ban, which should be
 * rare (1000/65536 expected per ban), so a handful means the hash spreads badly. */
static unsigned int count_others_banned(const struct ban_table *table, uint64_t now)
{
	char ip[INET_ADDRSTRLEN];
	unsigned int banned = 0;

	for (unsigned int i = 0; i < 1000; i++) {
		(void)snprintf(ip, sizeof(ip), "198.18.%u.%u", i >> 8, i & 0xff);
		banned += ban_table_is_banned_text(table, ip, now);
	}
	return banned;
}

static void test_ban_table_ban_unban_expire(void **state)
{
	struct ban_table *table = ban_table_create();
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	assert_false(ban_table_is_banned_text(table, "192.0.2.1", 0));
	assert_int_equal(ban_table_ban_text(table, "192.0.2.1", 100), 0);
	assert_true(ban_table_is_banned_text(table, "192.0.2.1", 99));
	assert_false(ban_table_is_banned_text(table, "192.0.2.1", 100));
	assert_true(count_others_banned(table, 99) <= 3);
	/* the sockaddr forms, mapped or not, are the same client */
	sockaddr_v4(&sin, "192.0.2.1");
	assert_true(ban_table_is_banned(table, (struct sockaddr *)&sin, 50));
	sockaddr_v6(&sin6, "::ffff:192.0.2.1");
	assert_true(ban_table_is_banned(table, (struct sockaddr *)&sin6, 50));
	/* a shorter ban does not cut a longer one short; a longer one extends it */
	assert_int_equal(ban_table_ban(table, (struct sockaddr *)&sin6, 60), 0);
	assert_true(ban_table_is_banned_text(table, "192.0.2.1", 99));
	assert_int_equal(ban_table_ban(table, (struct sockaddr *)&sin, 200), 0);
	assert_true(ban_table_is_banned_text(table, "192.0.2.1", 199));
	assert_int_equal(ban_table_unban(table, (struct sockaddr *)&sin6), 0);
	assert_false(ban_table_is_banned_text(table, "192.0.2.1", 50));
	assert_int_equal(ban_table_ban_text(table, "192.0.2.1", 100), 0);
	assert_int_equal(ban_table_unban_text(table, "192.0.2.1"), 0);
	assert_false(ban_table_is_banned_text(table, "192.0.2.1", 50));
	ban_table_destroy(&table);
	assert_null(table);
	ban_table_destroy(&table);
}

static void test_ban_table_ipv6_and_bad_input(void **state)
{
	struct ban_table *table = ban_table_create();
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	assert_int_equal(ban_table_ban_text(table, "2001:db8:1:2::1", 100), 0);
	assert_true(ban_table_is_banned_text(table, "2001:db8:1:2:ffff::9", 10));
	assert_int_equal(ban_table_ban_text(table, "not an ip", 100), -1);
	assert_int_equal(ban_table_ban_text(table, "10.0.0.0/8", 100), -1);
	assert_int_equal(ban_table_unban_text(table, "nope"), -1);
	assert_false(ban_table_is_banned_text(table, "nope", 10));
	assert_int_equal(ban_table_ban(table, (struct sockaddr *)&sun, 100), -1);
	assert_int_equal(ban_table_unban(table, (struct sockaddr *)&sun), -1);
	assert_false(ban_table_is_banned(table, (struct sockaddr *)&sun, 10));
	/* times past 32 bits are clamped to the end of the table's time */
	assert_int_equal(ban_table_ban_text(table, "192.0.2.5", UINT64_MAX), 0);
	assert_true(ban_table_is_banned_text(table, "192.0.2.5", (uint64_t)UINT32_MAX - 1));
	uint64_t first = ban_table_now();
	assert_true(ban_table_now() >= first);
	ban_table_destroy(&table);
}

/* Waits for child and returns its exit status, or -1 if it did not exit normally. */
static int wait_child(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static void test_ban_table_shared_across_fork(void **state)
{
	struct ban_table *table = ban_table_create();
	uint64_t now = ban_table_now();
	int go[2];
	char byte = 'x';

	assert_int_equal(pipe(go), 0);
	pid_t reader = fork();
	assert_true(reader >= 0);
	if (reader == 0) {
		/* a worker: waits until the parent has banned, then reads the shared slot */
		close(go[1]);
		if (read(go[0], &byte, 1) != 1)
			_exit(2);
		_exit(ban_table_is_banned_text(table, "203.0.113.9", now) &&
			      !ban_table_is_banned_text(table, "203.0.113.9", now + 61)
			  ? 0
			  : 1);
	}
	close(go[0]);
	assert_int_equal(ban_table_ban_text(table, "203.0.113.9", now + 60), 0);
	assert_int_equal(write(go[1], &byte, 1), 1);
	close(go[1]);
	assert_int_equal(wait_child(reader), 0);

	/* the other way round: a child (the auth process) bans, the parent sees it */
	pid_t writer = fork();
	assert_true(writer >= 0);
	if (writer == 0)
		_exit(ban_table_ban_text(table, "2001:db8:5::1", now + 60) == 0 ? 0 : 1);
	assert_int_equal(wait_child(writer), 0);
	assert_true(ban_table_is_banned_text(table, "2001:db8:5::2", now));
	ban_table_destroy(&table);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_good_lists),
	    cmocka_unit_test(test_parse_bad_lists),
	    cmocka_unit_test(test_ipv4_prefix_boundaries),
	    cmocka_unit_test(test_ipv6_prefix_boundaries),
	    cmocka_unit_test(test_zero_and_full_prefixes),
	    cmocka_unit_test(test_mapped_entries_become_ipv4),
	    cmocka_unit_test(test_contains_sockaddr),
	    cmocka_unit_test(test_client_identity),
	    cmocka_unit_test(test_ban_table_ban_unban_expire),
	    cmocka_unit_test(test_ban_table_ipv6_and_bad_input),
	    cmocka_unit_test(test_ban_table_shared_across_fork),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

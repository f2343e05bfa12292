/* Unit tests for the PROXY protocol parser and formatters (src/net/proxy_protocol.c): valid v1
 * and v2 headers, every prefix of them, and malformed ones of each kind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "net/proxy_protocol.h"

static const unsigned char v2_signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
					       0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Builds a v2 header: signature, ver_cmd, fam, then payload (payload_len octets, announced as
 * announced_len). Returns its length. */
static size_t build_v2_announcing(unsigned char *buf, unsigned char ver_cmd, unsigned char fam,
				  const unsigned char *payload, size_t payload_len,
				  size_t announced_len)
{
	memcpy(buf, v2_signature, sizeof(v2_signature));
	buf[12] = ver_cmd;
	buf[13] = fam;
	buf[14] = (unsigned char)(announced_len >> 8);
	buf[15] = (unsigned char)announced_len;
	if (payload_len > 0)
		memcpy(buf + 16, payload, payload_len);
	return 16 + payload_len;
}

static size_t build_v2(unsigned char *buf, unsigned char ver_cmd, unsigned char fam,
		       const unsigned char *payload, size_t payload_len)
{
	return build_v2_announcing(buf, ver_cmd, fam, payload, payload_len, payload_len);
}

/* The INET address block of 192.0.2.10:56324 -> 198.51.100.1:110. */
static const unsigned char inet_block[12] = {192, 0, 2, 10, 198, 51, 100, 1, 0xDC, 0x04, 0, 110};

static struct proxy_header parse_complete(const void *data, size_t len)
{
	struct proxy_header header;
	size_t missing = 0;
	const char *error = NULL;

	int ret = proxy_header_parse(data, len, &header, &missing, &error);
	if (ret != 1)
		fail_msg("expected a complete header, got %d (%s)", ret, error ? error : "-");
	assert_true(header.length <= len);
	return header;
}

static void parse_bad_len(const void *data, size_t len, const char *expect)
{
	struct proxy_header header;
	size_t missing = 0;
	const char *error = NULL;

	int ret = proxy_header_parse(data, len, &header, &missing, &error);
	if (ret != -1)
		fail_msg("expected \"%.*s\" to be malformed, got %d", (int)len, (const char *)data,
			 ret);
	assert_non_null(error);
	if (strstr(error, expect) == NULL)
		fail_msg("error is \"%s\", expected it to mention \"%s\"", error, expect);
}

static void parse_bad(const char *text, const char *expect)
{
	parse_bad_len(text, strlen(text), expect);
}

/* Every strict prefix of a header asks for more, never for more than the header can take, and
 * never for fewer than one octet. */
static void assert_prefixes_need_more(const unsigned char *data, size_t header_len)
{
	for (size_t k = 0; k < header_len; k++) {
		struct proxy_header header;
		size_t missing = 0;
		const char *error = NULL;
		int ret = proxy_header_parse(data, k, &header, &missing, &error);
		if (ret != 0)
			fail_msg("prefix of %zu octets: expected need-more, got %d (%s)", k, ret,
				 error ? error : "-");
		assert_true(missing >= 1);
		assert_true(k + missing >= header_len);
		assert_true(k + missing <= PROXY_HEADER_MAX);
	}
}

static void assert_ipv4(const struct sockaddr_storage *sa, const char *ip, unsigned int port)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
	char text[INET_ADDRSTRLEN];

	assert_int_equal(sa->ss_family, AF_INET);
	assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)));
	assert_string_equal(text, ip);
	assert_int_equal(ntohs(sin->sin_port), port);
}

static void assert_ipv6(const struct sockaddr_storage *sa, const char *ip, unsigned int port)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
	char text[INET6_ADDRSTRLEN];

	assert_int_equal(sa->ss_family, AF_INET6);
	assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text)));
	assert_string_equal(text, ip);
	assert_int_equal(ntohs(sin6->sin6_port), port);
}

static void test_v1_tcp4(void **state)
{
	const char *line = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 110\r\n";
	char glued[128];

	/* the POP3 bytes that follow in the same packet are not part of the header */
	snprintf(glued, sizeof(glued), "%sUSER demo\r\n", line);
	struct proxy_header header = parse_complete(glued, strlen(glued));
	assert_int_equal(header.version, 1);
	assert_int_equal(header.command, PROXY_COMMAND_PROXY);
	assert_int_equal(header.length, strlen(line));
	assert_true(header.has_addresses);
	assert_ipv4(&header.source, "192.0.2.10", 56324);
	assert_ipv4(&header.destination, "198.51.100.1", 110);
	assert_prefixes_need_more((const unsigned char *)line, strlen(line));

	/* the extremes of each field */
	header = parse_complete("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", 44);
	assert_ipv4(&header.source, "0.0.0.0", 0);
	assert_ipv4(&header.destination, "255.255.255.255", 65535);
}

static void test_v1_tcp6(void **state)
{
	const char *line = "PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 1 995\r\n";
	struct proxy_header header = parse_complete(line, strlen(line));

	assert_int_equal(header.version, 1);
	assert_int_equal(header.length, strlen(line));
	assert_ipv6(&header.source, "2001:db8::1", 1);
	assert_ipv6(&header.destination, "2001:db8::2", 995);
	assert_prefixes_need_more((const unsigned char *)line, strlen(line));

	/* what inet_ntop() prints for an IPv4 client of a dual-stack proxy */
	header = parse_complete("PROXY TCP6 ::ffff:192.0.2.7 ::1 4000 110\r\n", 42);
	assert_ipv6(&header.source, "::ffff:192.0.2.7", 4000);

	/* the longest line the spec allows */
	const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(strlen(longest), 104);
	assert_int_equal(parse_complete(longest, strlen(longest)).length, 104);
}

static void test_v1_unknown(void **state)
{
	struct proxy_header header = parse_complete("PROXY UNKNOWN\r\nUSER x\r\n", 23);

	assert_int_equal(header.version, 1);
	assert_int_equal(header.length, 15);
	assert_false(header.has_addresses);

	/* the receiver ignores whatever follows UNKNOWN on the line, up to 107 octets in all */
	char line[PROXY_V1_MAX_LENGTH + 1];
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + PROXY_V1_MAX_LENGTH - 2, "\r\n", 2);
	header = parse_complete(line, PROXY_V1_MAX_LENGTH);
	assert_int_equal(header.length, PROXY_V1_MAX_LENGTH);
	assert_false(header.has_addresses);
	assert_prefixes_need_more((const unsigned char *)line, PROXY_V1_MAX_LENGTH);

	/* one octet more and the CRLF comes too late */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + PROXY_V1_MAX_LENGTH - 1, "\r\n", 2);
	parse_bad_len(line, sizeof(line), "no CRLF");
	parse_bad("PROXY UNKNOWNX\r\n", "not TCP4, TCP6 or UNKNOWN");
}

static void test_v1_bad_syntax(void **state)
{
	/* not the protocol at all: refused at the first octet that cannot fit */
	parse_bad("USER demo\r\n", "not a PROXY");
	parse_bad("U", "not a PROXY");
	parse_bad("PROXX", "not a PROXY");
	parse_bad("proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n", "not a PROXY");
	parse_bad_len("\x16\x03\x01\x02\x00", 5, "not a PROXY"); /* a TLS ClientHello */
	parse_bad("PROXY  TCP4 192.0.2.1 192.0.2.2 1 2\r\n", "not TCP4, TCP6 or UNKNOWN");
	parse_bad("PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n", "not TCP4, TCP6 or UNKNOWN");
	parse_bad("PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n", "not TCP4, TCP6 or UNKNOWN");
	parse_bad("PROXY TCP4\r\n", "ends before its protocol");
	parse_bad("PROXY\r\n", "ends before its protocol");

	/* the line end: CRLF and nothing else */
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n", "bare LF");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX", "octet that no address");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\r\n", "octet that no address");
	parse_bad("\n", "bare LF");

	/* exactly one space between four fields */
	parse_bad("PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n", "four fields");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n", "four fields");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n", "four fields");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", "four fields");
	parse_bad("PROXY TCP4 192.0.2.1\t192.0.2.2 1 2\r\n", "octet that no address");
	parse_bad("PROXY TCP4 \r\n", "four fields");
}

static void test_v1_bad_addresses(void **state)
{
	parse_bad("PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n", "source address");
	parse_bad("PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n", "source address");
	parse_bad("PROXY TCP4 192.0.2.1.5 192.0.2.2 1 2\r\n", "source address");
	parse_bad("PROXY TCP4 192.0..1 192.0.2.2 1 2\r\n", "source address");
	parse_bad("PROXY TCP4 1922.0.2.1 192.0.2.2 1 2\r\n", "source address");
	/* leading zeros would read as octal elsewhere: the spec forbids them */
	parse_bad("PROXY TCP4 192.0.02.1 192.0.2.2 1 2\r\n", "source address");
	parse_bad("PROXY TCP4 192.0.2.1 010.0.2.2 1 2\r\n", "destination address");
	parse_bad("PROXY TCP4 192.0.2.1 00.0.2.2 1 2\r\n", "destination address");
	/* the family must match the protocol */
	parse_bad("PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n", "source address");
	parse_bad("PROXY TCP6 192.0.2.1 2001:db8::1 1 2\r\n", "source address");
	parse_bad("PROXY TCP6 2001:db8::1 192.0.2.2 1 2\r\n", "destination address");
	/* IPv6: one "::" at most, eight groups of at most four digits, no scope */
	parse_bad("PROXY TCP6 2001::db8::1 ::1 1 2\r\n", "source address");
	parse_bad("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "source address");
	parse_bad("PROXY TCP6 2001:db8::12345 ::1 1 2\r\n", "source address");
	parse_bad("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "octet that no address");
	parse_bad("PROXY TCP6 2001:db8::g ::1 1 2\r\n", "octet that no address");
}

static void test_v1_bad_ports(void **state)
{
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n", "source port");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 99999 2\r\n", "source port");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 123456 2\r\n", "source port");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 70000\r\n", "destination port");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 0110 2\r\n", "source port");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 00\r\n", "destination port");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 :2\r\n", "destination port");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 1 2.\r\n", "destination port");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n", "octet that no address");
	parse_bad("PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n", "octet that no address");
}

static void test_v1_partial(void **state)
{
	struct proxy_header header;
	size_t missing = 0;
	const char *error = NULL;
	const char *cr_only = "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r";

	/* the CR may be followed by its LF in the next packet */
	assert_int_equal(proxy_header_parse((const unsigned char *)cr_only, strlen(cr_only),
					    &header, &missing, &error),
			 0);
	assert_int_equal(missing, PROXY_V1_MAX_LENGTH - strlen(cr_only));
	/* nothing received yet: the longest header of either version may come */
	assert_int_equal(proxy_header_parse(NULL, 0, &header, &missing, &error), 0);
	assert_int_equal(missing, PROXY_HEADER_MAX);
}

static void test_v2_tcp4(void **state)
{
	unsigned char buf[64];
	size_t len = build_v2(buf, 0x21, 0x11, inet_block, sizeof(inet_block));

	memcpy(buf + len, "USER", 4); /* not part of the header */
	struct proxy_header header = parse_complete(buf, len + 4);
	assert_int_equal(header.version, 2);
	assert_int_equal(header.command, PROXY_COMMAND_PROXY);
	assert_int_equal(header.length, 28);
	assert_true(header.has_addresses);
	assert_ipv4(&header.source, "192.0.2.10", 56324);
	assert_ipv4(&header.destination, "198.51.100.1", 110);
	assert_prefixes_need_more(buf, len);

	/* once the fixed part is in, the exact remainder is known */
	struct proxy_header partial;
	size_t missing = 0;
	const char *error = NULL;
	assert_int_equal(proxy_header_parse(buf, 20, &partial, &missing, &error), 0);
	assert_int_equal(missing, 8);
}

static void test_v2_tcp6(void **state)
{
	unsigned char block[36] = {0}, buf[64];

	block[0] = 0x20, block[1] = 0x01, block[2] = 0x0d, block[3] = 0xb8, block[15] = 0x07;
	block[31] = 1;
	block[32] = 0x12, block[33] = 0x34, block[34] = 0x00, block[35] = 0x6e;
	size_t len = build_v2(buf, 0x21, 0x21, block, sizeof(block));
	struct proxy_header header = parse_complete(buf, len);
	assert_int_equal(header.length, 52);
	assert_ipv6(&header.source, "2001:db8::7", 0x1234);
	assert_ipv6(&header.destination, "::1", 110);
	assert_prefixes_need_more(buf, len);
}

static void test_v2_local_and_other_families(void **state)
{
	unsigned char buf[PROXY_HEADER_MAX + 16], unix_block[216] = {0};

	/* LOCAL (a health check): the proxy's own connection; any block is ignored */
	size_t len = build_v2(buf, 0x20, 0x00, NULL, 0);
	struct proxy_header header = parse_complete(buf, len);
	assert_int_equal(header.command, PROXY_COMMAND_LOCAL);
	assert_int_equal(header.length, 16);
	assert_false(header.has_addresses);
	len = build_v2(buf, 0x20, 0x11, (const unsigned char *)"\xff\xff\xff", 3);
	header = parse_complete(buf, len);
	assert_int_equal(header.command, PROXY_COMMAND_LOCAL);
	assert_int_equal(header.length, 19);

	/* PROXY without TCP endpoints: the connection's own addresses are kept */
	len = build_v2(buf, 0x21, 0x00, NULL, 0);
	assert_false(parse_complete(buf, len).has_addresses);
	len = build_v2(buf, 0x21, 0x31, unix_block, sizeof(unix_block));
	header = parse_complete(buf, len);
	assert_int_equal(header.length, 16 + 216);
	assert_false(header.has_addresses);
	len = build_v2(buf, 0x21, 0x12, inet_block, sizeof(inet_block)); /* UDP */
	assert_false(parse_complete(buf, len).has_addresses);
}

static void test_v2_tlvs(void **state)
{
	unsigned char payload[128], buf[160];
	size_t n = 0;

	memcpy(payload, inet_block, sizeof(inet_block));
	n = sizeof(inet_block);
	memcpy(payload + n, "\x01\x00\x04pop3", 7); /* ALPN */
	n += 7;
	memcpy(payload + n, "\x04\x00\x00", 3); /* NOOP, empty */
	n += 3;
	memcpy(payload + n, "\x20\x00\x05\x01\x00\x00\x00\x00", 8); /* SSL, no sub-TLVs */
	n += 8;
	size_t len = build_v2(buf, 0x21, 0x11, payload, n);
	struct proxy_header header = parse_complete(buf, len);
	assert_int_equal(header.length, 16 + n);
	assert_ipv4(&header.source, "192.0.2.10", 56324);
	assert_prefixes_need_more(buf, len);

	/* a TLV must fit the announced length exactly */
	len = build_v2(buf, 0x21, 0x11, payload, sizeof(inet_block) + 2);
	parse_bad_len(buf, len, "TLV cut short");
	static const unsigned char overrun[] = {0x05, 0x00, 0x10,
						'a',  'b',  'c'}; /* says 16, has 3 */
	memcpy(payload + sizeof(inet_block), overrun, sizeof(overrun));
	len = build_v2(buf, 0x21, 0x11, payload, sizeof(inet_block) + sizeof(overrun));
	parse_bad_len(buf, len, "TLV longer");
}

static void test_v2_malformed(void **state)
{
	unsigned char buf[64], bad[64];
	size_t len = build_v2(buf, 0x21, 0x11, inet_block, sizeof(inet_block));

	/* any signature octet wrong: refused as soon as it arrives */
	for (size_t i = 0; i < 12; i++) {
		memcpy(bad, buf, len);
		bad[i] ^= 0x40;
		parse_bad_len(bad, i + 1, "not a PROXY");
	}
	memcpy(bad, buf, len);
	bad[12] = 0x11; /* version 1 in binary form does not exist */
	parse_bad_len(bad, 13, "version");
	bad[12] = 0x31;
	parse_bad_len(bad, len, "version");
	bad[12] = 0x22;
	parse_bad_len(bad, 13, "command");
	bad[12] = 0x2F;
	parse_bad_len(bad, len, "command");
	memcpy(bad, buf, len);
	bad[13] = 0x41;
	parse_bad_len(bad, 14, "family or transport");
	bad[13] = 0x13;
	parse_bad_len(bad, 14, "family or transport");

	/* an oversized announcement fails at the fixed part, without waiting for the octets */
	len = build_v2_announcing(bad, 0x21, 0x11, NULL, 0, 0xFFFF);
	parse_bad_len(bad, len, "more octets than allowed");
	len = build_v2_announcing(bad, 0x21, 0x11, NULL, 0, PROXY_V2_MAX_PAYLOAD + 1);
	parse_bad_len(bad, len, "more octets than allowed");

	/* an address block too short for its family */
	len = build_v2(bad, 0x21, 0x11, inet_block, 8);
	parse_bad_len(bad, len, "shorter than its family");
	len = build_v2(bad, 0x21, 0x21, inet_block, 12);
	parse_bad_len(bad, len, "shorter than its family");
}

static void test_v2_largest(void **state)
{
	static unsigned char buf[PROXY_HEADER_MAX + 1];
	unsigned char *payload = buf + 16;
	size_t value_len = PROXY_V2_MAX_PAYLOAD - sizeof(inet_block) - 3;

	memcpy(payload, inet_block, sizeof(inet_block));
	payload[12] = 0xE0; /* a custom TLV filling the rest */
	payload[13] = (unsigned char)(value_len >> 8);
	payload[14] = (unsigned char)value_len;
	memset(payload + 15, 'v', value_len);
	size_t len = build_v2_announcing(buf, 0x21, 0x11, NULL, 0, PROXY_V2_MAX_PAYLOAD);
	assert_int_equal(len + PROXY_V2_MAX_PAYLOAD, PROXY_HEADER_MAX);
	assert_int_equal(parse_complete(buf, PROXY_HEADER_MAX).length, PROXY_HEADER_MAX);
}

static void test_format_round_trips(void **state)
{
	const char *lines[] = {
	    "PROXY TCP4 192.0.2.10 198.51.100.1 56324 110\r\n",
	    "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 0 65535\r\n",
	    "PROXY UNKNOWN\r\n",
	};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		struct proxy_header header = parse_complete(lines[i], strlen(lines[i]));
		char text[PROXY_V1_MAX_LENGTH + 1];
		unsigned char binary[PROXY_HEADER_MAX];

		/* canonical input formats back to itself */
		int len = proxy_header_format_v1(&header, text, sizeof(text));
		assert_int_equal(len, strlen(lines[i]));
		assert_string_equal(text, lines[i]);

		len = proxy_header_format_v2(&header, binary, sizeof(binary));
		assert_true(len >= 16);
		struct proxy_header again = parse_complete(binary, (size_t)len);
		assert_int_equal(again.version, 2);
		assert_int_equal(again.length, len);
		assert_int_equal(again.command, header.command);
		assert_int_equal(again.has_addresses, header.has_addresses);
		if (header.has_addresses) {
			size_t sa_len = header.source.ss_family == AF_INET
					    ? sizeof(struct sockaddr_in)
					    : sizeof(struct sockaddr_in6);
			assert_memory_equal(&again.source, &header.source, sa_len);
			assert_memory_equal(&again.destination, &header.destination, sa_len);
		}
		/* a buffer one octet short is refused, not overrun */
		assert_int_equal(proxy_header_format_v1(&header, text, strlen(lines[i])), -1);
		assert_int_equal(proxy_header_format_v2(&header, binary, (size_t)len - 1), -1);
	}

	/* mixed families cannot be written as one header */
	struct proxy_header mixed = parse_complete(lines[0], strlen(lines[0]));
	struct proxy_header six = parse_complete(lines[1], strlen(lines[1]));
	mixed.destination = six.destination;
	char text[PROXY_V1_MAX_LENGTH + 1];
	unsigned char binary[64];
	assert_int_equal(proxy_header_format_v1(&mixed, text, sizeof(text)), -1);
	assert_int_equal(proxy_header_format_v2(&mixed, binary, sizeof(binary)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v1_tcp4),
	    cmocka_unit_test(test_v1_tcp6),
	    cmocka_unit_test(test_v1_unknown),
	    cmocka_unit_test(test_v1_bad_syntax),
	    cmocka_unit_test(test_v1_bad_addresses),
	    cmocka_unit_test(test_v1_bad_ports),
	    cmocka_unit_test(test_v1_partial),
	    cmocka_unit_test(test_v2_tcp4),
	    cmocka_unit_test(test_v2_tcp6),
	    cmocka_unit_test(test_v2_local_and_other_families),
	    cmocka_unit_test(test_v2_tlvs),
	    cmocka_unit_test(test_v2_malformed),
	    cmocka_unit_test(test_v2_largest),
	    cmocka_unit_test(test_format_round_trips),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

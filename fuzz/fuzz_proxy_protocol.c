/* Fuzzes the PROXY protocol parser (src/net/proxy_protocol.c) with the first bytes of a connection
 * as input. Beyond memory errors it checks what the worker relies on when it reads a header with
 * MSG_PEEK: every prefix of the input gives "need more" until one gives a verdict, and every longer
 * prefix gives the same verdict (a complete header keeps its length and addresses); "need more"
 * never promises less than the header still takes nor more than PROXY_HEADER_MAX; a complete
 * header lies within the input and ends where its version says (CRLF, or 16 + its length); and a
 * parsed header formatted as v1 and as v2 parses again to the same addresses (byte for byte for
 * TCP4 lines, whose syntax allows one spelling only). */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "fuzz_common.h"
#include "net/proxy_protocol.h"

struct verdict {
	int ret;
	struct proxy_header header;
	size_t missing;
	const char *error;
};

static struct verdict parse(const uint8_t *data, size_t len)
{
	struct verdict v = {.error = NULL};

	v.ret = proxy_header_parse(data, len, &v.header, &v.missing, &v.error);
	FUZZ_CHECK(v.ret >= -1 && v.ret <= 1);
	return v;
}

static size_t sockaddr_len(const struct sockaddr_storage *sa)
{
	return sa->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
}

static bool same_header(const struct proxy_header *a, const struct proxy_header *b)
{
	if (a->command != b->command || a->has_addresses != b->has_addresses)
		return false;
	if (!a->has_addresses)
		return true;
	return memcmp(&a->source, &b->source, sockaddr_len(&a->source)) == 0 &&
	       memcmp(&a->destination, &b->destination, sockaddr_len(&a->destination)) == 0;
}

/* What a complete header must look like against the bytes it came from. */
static void check_complete(const uint8_t *data, size_t size, const struct proxy_header *header)
{
	FUZZ_CHECK(header->length <= size && header->length <= PROXY_HEADER_MAX);
	if (header->version == 1) {
		FUZZ_CHECK(header->length >= sizeof("PROXY UNKNOWN\r\n") - 1);
		FUZZ_CHECK(header->length <= PROXY_V1_MAX_LENGTH);
		FUZZ_CHECK(memcmp(data, "PROXY ", 6) == 0);
		FUZZ_CHECK(data[header->length - 2] == '\r' && data[header->length - 1] == '\n');
		FUZZ_CHECK(memchr(data, '\n', header->length - 1) == NULL);
		FUZZ_CHECK(header->command == PROXY_COMMAND_PROXY);
	} else {
		FUZZ_CHECK(header->version == 2);
		FUZZ_CHECK(header->length ==
			   PROXY_V2_FIXED_LENGTH + ((size_t)data[14] << 8 | data[15]));
	}
	if (header->has_addresses) {
		int family = header->source.ss_family;
		FUZZ_CHECK(family == AF_INET || family == AF_INET6);
		FUZZ_CHECK(header->destination.ss_family == family);
	}
}

/* Formats the header both ways and parses the results again. */
static void check_round_trips(const uint8_t *data, const struct proxy_header *header)
{
	char line[PROXY_V1_MAX_LENGTH + 1];
	uint8_t binary[PROXY_HEADER_MAX];

	int len = proxy_header_format_v1(header, line, sizeof(line));
	FUZZ_CHECK(len > 0);
	struct verdict again = parse((const uint8_t *)line, (size_t)len);
	FUZZ_CHECK(again.ret == 1 && again.header.version == 1);
	FUZZ_CHECK(again.header.length == (size_t)len);
	/* v1 cannot say LOCAL: it says UNKNOWN, which also keeps the connection's addresses */
	FUZZ_CHECK(again.header.has_addresses == header->has_addresses);
	if (header->has_addresses)
		FUZZ_CHECK(same_header(&again.header, header));
	if (header->version == 1 && header->has_addresses && header->source.ss_family == AF_INET)
		FUZZ_CHECK((size_t)len == header->length && memcmp(line, data, (size_t)len) == 0);

	len = proxy_header_format_v2(header, binary, sizeof(binary));
	FUZZ_CHECK(len >= PROXY_V2_FIXED_LENGTH);
	again = parse(binary, (size_t)len);
	FUZZ_CHECK(again.ret == 1 && again.header.version == 2);
	FUZZ_CHECK(again.header.length == (size_t)len);
	FUZZ_CHECK(same_header(&again.header, header));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct verdict final = parse(data, size);

	/* the prefixes a reader sees as the bytes trickle in; past PROXY_HEADER_MAX octets every
	 * verdict is taken, so longer prefixes only repeat the final one */
	size_t limit = size < PROXY_HEADER_MAX ? size : PROXY_HEADER_MAX;
	bool decided = false;
	for (size_t k = 0; k <= limit; k++) {
		struct verdict v = k == size ? final : parse(data, k);
		if (v.ret == 0) {
			FUZZ_CHECK(!decided);
			FUZZ_CHECK(v.missing >= 1 && k + v.missing <= PROXY_HEADER_MAX);
			if (k > 0 && data[0] != 0x0D)
				FUZZ_CHECK(k + v.missing <= PROXY_V1_MAX_LENGTH);
			if (final.ret == 1)
				FUZZ_CHECK(k + v.missing >= final.header.length);
			continue;
		}
		decided = true;
		FUZZ_CHECK(v.ret == final.ret);
		if (v.ret == 1)
			FUZZ_CHECK(v.header.version == final.header.version &&
				   v.header.length == final.header.length &&
				   same_header(&v.header, &final.header));
		else
			FUZZ_CHECK(v.error != NULL && v.error[0] != '\0');
	}
	if (final.ret == 0)
		FUZZ_CHECK(size < PROXY_HEADER_MAX);
	if (final.ret == 1) {
		check_complete(data, size, &final.header);
		check_round_trips(data, &final.header);
	}
	return 0;
}

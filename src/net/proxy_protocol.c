/* PROXY protocol v1 and v2 headers (see proxy_protocol.h): parsing the bytes received so far, and
 * formatting.
 *
 * v1, one line of US-ASCII:  "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n", or
 *                            "PROXY UNKNOWN[ <anything>]\r\n"; at most 107 octets.
 *   Exactly one space between fields; IPv4 as four decimals 0..255 and ports as decimals
 *   0..65535, both without leading zeros (the spec forbids them: they read as octal elsewhere);
 *   IPv6 as inet_pton() reads it; a lone CR or LF does not end the line.
 * v2, binary:  12-octet signature \r\n\r\n\0\r\nQUIT\n, then
 *   octet 13  version (high nibble, must be 2) and command (low nibble: 0 LOCAL, 1 PROXY),
 *   octet 14  family (high: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and transport (low: 0 UNSPEC,
 *             1 STREAM, 2 DGRAM),
 *   octets 15-16  length of the rest, big-endian: the address block (INET 2×4 + 2×2,
 *             INET6 2×16 + 2×2, UNIX 2×108), then TLVs (type, 16-bit length, value). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "net/proxy_protocol.h"

static const char proxy_v1_prefix[] = "PROXY ";
#define PROXY_V1_PREFIX_LEN (sizeof(proxy_v1_prefix) - 1)

static const unsigned char proxy_v2_signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
						     0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

enum proxy_v1_protocol { PROXY_V1_TCP4, PROXY_V1_TCP6, PROXY_V1_UNKNOWN };

/* Where the fields of a TCP4/TCP6 line start: after "PROXY TCP4 ". */
#define PROXY_V1_FIELDS_START (PROXY_V1_PREFIX_LEN + sizeof("TCP4 ") - 1)

/* The protocol names with what must follow them: TCP4/TCP6 take four fields after a space;
 * UNKNOWN may end the line or be followed by a space and anything. */
static const struct {
	const char *token;
	enum proxy_v1_protocol protocol;
} proxy_v1_protocols[] = {
    {"TCP4 ", PROXY_V1_TCP4},
    {"TCP6 ", PROXY_V1_TCP6},
    {"UNKNOWN", PROXY_V1_UNKNOWN},
};

static bool proxy_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Octets that may appear in the fields of a TCP4/TCP6 line: addresses, ports, separators. */
static bool proxy_v1_field_octet(unsigned char c)
{
	return proxy_is_digit((char)c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
	       c == ':' || c == '.' || c == ' ';
}

/* Which protocol the line text (len octets after "PROXY ", maybe incomplete) names. Returns 0
 * with *protocol_r when it names one or may still become one (*complete_r says whether the name
 * is all there), -1 when it cannot. */
static int proxy_v1_protocol_of(const unsigned char *text, size_t len,
				enum proxy_v1_protocol *protocol_r, bool *complete_r)
{
	for (size_t i = 0; i < sizeof(proxy_v1_protocols) / sizeof(proxy_v1_protocols[0]); i++) {
		const char *token = proxy_v1_protocols[i].token;
		size_t token_len = strlen(token);
		size_t compare = len < token_len ? len : token_len;
		if (memcmp(text, token, compare) != 0)
			continue;
		/* "UNKNOWNX" is no protocol; "UNKNOWN " and "UNKNOWN" (line end) are */
		if (proxy_v1_protocols[i].protocol == PROXY_V1_UNKNOWN && len > token_len &&
		    text[token_len] != ' ')
			return -1;
		*protocol_r = proxy_v1_protocols[i].protocol;
		*complete_r = len >= token_len;
		return 0;
	}
	return -1;
}

/* Checks the first len octets of a v1 line's content (no CR, no LF): a prefix of some valid
 * line. Lets a wrong start fail at once instead of after 107 octets or the timeout. */
static int proxy_v1_check_content(const unsigned char *content, size_t len, const char **error_r)
{
	size_t compare = len < PROXY_V1_PREFIX_LEN ? len : PROXY_V1_PREFIX_LEN;

	if (memcmp(content, proxy_v1_prefix, compare) != 0) {
		*error_r = "not a PROXY protocol header";
		return -1;
	}
	if (len <= PROXY_V1_PREFIX_LEN)
		return 0;
	enum proxy_v1_protocol protocol;
	bool complete;
	if (proxy_v1_protocol_of(content + PROXY_V1_PREFIX_LEN, len - PROXY_V1_PREFIX_LEN,
				 &protocol, &complete) < 0) {
		*error_r = "v1 protocol is not TCP4, TCP6 or UNKNOWN";
		return -1;
	}
	if (protocol == PROXY_V1_UNKNOWN)
		return 0; /* the spec: the receiver ignores the rest of the line */
	for (size_t i = PROXY_V1_FIELDS_START; i < len; i++) {
		if (!proxy_v1_field_octet(content[i])) {
			*error_r = "v1 line holds an octet that no address or port has";
			return -1;
		}
	}
	return 0;
}

/* Parses four decimals 0..255 without leading zeros, separated by single dots. */
static bool proxy_parse_ipv4(const char *text, struct in_addr *addr_r)
{
	unsigned char bytes[4];
	const char *p = text;

	for (size_t i = 0; i < sizeof(bytes); i++) {
		if (i > 0 && *p++ != '.')
			return false;
		if (!proxy_is_digit(*p) || (p[0] == '0' && proxy_is_digit(p[1])))
			return false;
		unsigned int value = 0;
		for (size_t digits = 0; digits < 3 && proxy_is_digit(*p); digits++)
			value = value * 10 + (unsigned int)(*p++ - '0');
		if (proxy_is_digit(*p) || value > 255)
			return false;
		bytes[i] = (unsigned char)value;
	}
	if (*p != '\0')
		return false;
	memcpy(&addr_r->s_addr, bytes, sizeof(bytes));
	return true;
}

/* Parses a decimal 0..65535 without leading zeros. */
static bool proxy_parse_port(const char *text, uint16_t *port_r)
{
	unsigned long value = 0;
	size_t digits = 0;

	if (text[0] == '0' && text[1] != '\0')
		return false;
	for (; proxy_is_digit(text[digits]); digits++) {
		if (digits == 5)
			return false;
		value = value * 10 + (unsigned long)(text[digits] - '0');
	}
	if (digits == 0 || text[digits] != '\0' || value > 65535)
		return false;
	*port_r = (uint16_t)value;
	return true;
}

/* Parses one address of the line's family into sa (port left 0). */
static bool proxy_v1_parse_address(const char *text, enum proxy_v1_protocol protocol,
				   struct sockaddr_storage *sa)
{
	memset(sa, 0, sizeof(*sa));
	if (protocol == PROXY_V1_TCP4) {
		struct sockaddr_in *sin = (struct sockaddr_in *)sa;
		sin->sin_family = AF_INET;
		return proxy_parse_ipv4(text, &sin->sin_addr);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;
	sin6->sin6_family = AF_INET6;
	/* the field's octets were checked (hex digits, colons, dots): no scope, no prefix */
	return strlen(text) < INET6_ADDRSTRLEN && inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1;
}

static void proxy_set_port(struct sockaddr_storage *sa, uint16_t port)
{
	if (sa->ss_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

/* Splits text at single spaces into exactly count non-empty fields (text is modified). */
static bool proxy_split_fields(char *text, char **fields, size_t count)
{
	char *p = text;

	for (size_t i = 0; i < count; i++) {
		fields[i] = p;
		char *space = strchr(p, ' ');
		if ((space == NULL) != (i == count - 1))
			return false;
		if (*p == '\0' || p == space)
			return false;
		if (space != NULL) {
			*space = '\0';
			p = space + 1;
		}
	}
	return true;
}

/* Parses the four fields of a TCP4/TCP6 line: source, destination, source port, dest port. */
static int proxy_v1_parse_fields(char *text, enum proxy_v1_protocol protocol,
				 struct proxy_header *header_r, const char **error_r)
{
	char *fields[4];
	uint16_t source_port, destination_port;

	if (!proxy_split_fields(text, fields, 4)) {
		*error_r = "v1 line does not have four fields separated by single spaces";
		return -1;
	}
	if (!proxy_v1_parse_address(fields[0], protocol, &header_r->source)) {
		*error_r = "bad v1 source address";
		return -1;
	}
	if (!proxy_v1_parse_address(fields[1], protocol, &header_r->destination)) {
		*error_r = "bad v1 destination address";
		return -1;
	}
	if (!proxy_parse_port(fields[2], &source_port)) {
		*error_r = "bad v1 source port";
		return -1;
	}
	if (!proxy_parse_port(fields[3], &destination_port)) {
		*error_r = "bad v1 destination port";
		return -1;
	}
	proxy_set_port(&header_r->source, source_port);
	proxy_set_port(&header_r->destination, destination_port);
	header_r->has_addresses = true;
	return 0;
}

/* Parses a whole v1 line: content_len octets of content, then CRLF. */
static int proxy_v1_parse_line(const unsigned char *content, size_t content_len,
			       struct proxy_header *header_r, const char **error_r)
{
	enum proxy_v1_protocol protocol;
	bool complete;

	if (proxy_v1_check_content(content, content_len, error_r) < 0)
		return -1;
	if (content_len < PROXY_V1_PREFIX_LEN ||
	    proxy_v1_protocol_of(content + PROXY_V1_PREFIX_LEN, content_len - PROXY_V1_PREFIX_LEN,
				 &protocol, &complete) < 0 ||
	    !complete) {
		*error_r = "v1 line ends before its protocol";
		return -1;
	}
	memset(header_r, 0, sizeof(*header_r));
	header_r->version = 1;
	header_r->command = PROXY_COMMAND_PROXY;
	header_r->length = content_len + 2;
	if (protocol == PROXY_V1_UNKNOWN)
		return 0;

	char fields[PROXY_V1_MAX_LENGTH];
	memcpy(fields, content + PROXY_V1_FIELDS_START, content_len - PROXY_V1_FIELDS_START);
	fields[content_len - PROXY_V1_FIELDS_START] = '\0';
	return proxy_v1_parse_fields(fields, protocol, header_r, error_r);
}

/* A header starting with anything but the v2 signature's first octet; returns as
 * proxy_header_parse(). */
static int proxy_v1_parse(const unsigned char *data, size_t len, struct proxy_header *header_r,
			  size_t *missing_r, const char **error_r)
{
	size_t window = len < PROXY_V1_MAX_LENGTH ? len : PROXY_V1_MAX_LENGTH;
	const unsigned char *lf = memchr(data, '\n', window);

	if (lf == NULL) {
		/* a CR as the last octet may be the start of the CRLF */
		size_t content_len = data[window - 1] == '\r' ? window - 1 : window;
		if (proxy_v1_check_content(data, content_len, error_r) < 0)
			return -1;
		if (len >= PROXY_V1_MAX_LENGTH) {
			*error_r = "no CRLF within the 107 octets of a v1 line";
			return -1;
		}
		*missing_r = PROXY_V1_MAX_LENGTH - len;
		return 0;
	}
	size_t line_len = (size_t)(lf - data);
	if (line_len == 0 || data[line_len - 1] != '\r') {
		*error_r = "v1 line ends with a bare LF";
		return -1;
	}
	return proxy_v1_parse_line(data, line_len - 1, header_r, error_r) < 0 ? -1 : 1;
}

static size_t proxy_v2_address_block_len(unsigned int family)
{
	switch (family) {
	case 0x1:
		return 2 * 4 + 2 * 2;
	case 0x2:
		return 2 * 16 + 2 * 2;
	case 0x3:
		return 2 * 108;
	}
	return 0;
}

/* Checks that the TLVs after the address block exactly fill it; their values are skipped. */
static int proxy_v2_check_tlvs(const unsigned char *tlv, size_t len, const char **error_r)
{
	while (len > 0) {
		if (len < 3) {
			*error_r = "v2 TLV cut short";
			return -1;
		}
		size_t value_len = (size_t)tlv[1] << 8 | tlv[2];
		if (value_len > len - 3) {
			*error_r = "v2 TLV longer than the header";
			return -1;
		}
		tlv += 3 + value_len;
		len -= 3 + value_len;
	}
	return 0;
}

/* Fills the addresses from an INET or INET6 address block. */
static void proxy_v2_read_addresses(const unsigned char *block, unsigned int family,
				    struct proxy_header *header_r)
{
	size_t addr_len = family == 0x1 ? 4 : 16;
	const unsigned char *ports = block + 2 * addr_len;

	for (size_t i = 0; i < 2; i++) {
		struct sockaddr_storage *sa = i == 0 ? &header_r->source : &header_r->destination;
		const unsigned char *addr = block + i * addr_len;
		memset(sa, 0, sizeof(*sa));
		if (family == 0x1) {
			((struct sockaddr_in *)sa)->sin_family = AF_INET;
			memcpy(&((struct sockaddr_in *)sa)->sin_addr, addr, addr_len);
		} else {
			((struct sockaddr_in6 *)sa)->sin6_family = AF_INET6;
			memcpy(&((struct sockaddr_in6 *)sa)->sin6_addr, addr, addr_len);
		}
		proxy_set_port(sa, (uint16_t)(ports[2 * i] << 8 | ports[2 * i + 1]));
	}
	header_r->has_addresses = true;
}

/* Checks the octets of the fixed part that have arrived (len may be below 16). */
static int proxy_v2_check_fixed(const unsigned char *data, size_t len, const char **error_r)
{
	size_t compare = len < sizeof(proxy_v2_signature) ? len : sizeof(proxy_v2_signature);

	if (memcmp(data, proxy_v2_signature, compare) != 0) {
		*error_r = "not a PROXY protocol header";
		return -1;
	}
	if (len > 12 && data[12] >> 4 != 0x2) {
		*error_r = "unsupported v2 version";
		return -1;
	}
	if (len > 12 && (data[12] & 0xF) > 0x1) {
		*error_r = "unknown v2 command";
		return -1;
	}
	if (len > 13 && (data[13] >> 4 > 0x3 || (data[13] & 0xF) > 0x2)) {
		*error_r = "unknown v2 address family or transport";
		return -1;
	}
	if (len >= PROXY_V2_FIXED_LENGTH &&
	    ((size_t)data[14] << 8 | data[15]) > PROXY_V2_MAX_PAYLOAD) {
		*error_r = "v2 header announces more octets than allowed";
		return -1;
	}
	return 0;
}

/* A header starting with the v2 signature's first octet; returns as proxy_header_parse(). */
static int proxy_v2_parse(const unsigned char *data, size_t len, struct proxy_header *header_r,
			  size_t *missing_r, const char **error_r)
{
	if (proxy_v2_check_fixed(data, len, error_r) < 0)
		return -1;
	if (len < PROXY_V2_FIXED_LENGTH) {
		*missing_r = PROXY_HEADER_MAX - len;
		return 0;
	}
	size_t payload_len = (size_t)data[14] << 8 | data[15];
	size_t total = PROXY_V2_FIXED_LENGTH + payload_len;
	if (len < total) {
		*missing_r = total - len;
		return 0;
	}

	unsigned int family = data[13] >> 4, transport = data[13] & 0xF;
	const unsigned char *payload = data + PROXY_V2_FIXED_LENGTH;
	memset(header_r, 0, sizeof(*header_r));
	header_r->version = 2;
	header_r->length = total;
	if ((data[12] & 0xF) == 0x0) {
		/* LOCAL: the spec says to discard the whole block, family included */
		header_r->command = PROXY_COMMAND_LOCAL;
		return 1;
	}
	header_r->command = PROXY_COMMAND_PROXY;
	size_t block_len = proxy_v2_address_block_len(family);
	if (payload_len < block_len) {
		*error_r = "v2 address block shorter than its family needs";
		return -1;
	}
	if (proxy_v2_check_tlvs(payload + block_len, payload_len - block_len, error_r) < 0)
		return -1;
	/* only TCP endpoints describe a POP3 client; others leave the connection's own */
	if ((family == 0x1 || family == 0x2) && transport == 0x1)
		proxy_v2_read_addresses(payload, family, header_r);
	return 1;
}

int proxy_header_parse(const unsigned char *data, size_t len, struct proxy_header *header_r,
		       size_t *missing_r, const char **error_r)
{
	if (len == 0) {
		*missing_r = PROXY_HEADER_MAX;
		return 0;
	}
	if (data[0] == proxy_v2_signature[0])
		return proxy_v2_parse(data, len, header_r, missing_r, error_r);
	return proxy_v1_parse(data, len, header_r, missing_r, error_r);
}

/* The TCP endpoints of header as a family and (address, port) pairs; false if they are not a
 * matching AF_INET or AF_INET6 pair. */
static bool proxy_header_endpoints(const struct proxy_header *header, int *family_r,
				   const void *addrs_r[2], uint16_t ports_r[2])
{
	const struct sockaddr_storage *sas[2] = {&header->source, &header->destination};

	*family_r = header->source.ss_family;
	if (*family_r != AF_INET && *family_r != AF_INET6)
		return false;
	for (size_t i = 0; i < 2; i++) {
		if (sas[i]->ss_family != *family_r)
			return false;
		if (*family_r == AF_INET) {
			const struct sockaddr_in *sin = (const struct sockaddr_in *)sas[i];
			addrs_r[i] = &sin->sin_addr;
			ports_r[i] = ntohs(sin->sin_port);
		} else {
			const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sas[i];
			addrs_r[i] = &sin6->sin6_addr;
			ports_r[i] = ntohs(sin6->sin6_port);
		}
	}
	return true;
}

int proxy_header_format_v1(const struct proxy_header *header, char *buf, size_t size)
{
	int len;

	if (!header->has_addresses) {
		len = snprintf(buf, size, "PROXY UNKNOWN\r\n");
	} else {
		int family;
		const void *addrs[2];
		uint16_t ports[2];
		char texts[2][INET6_ADDRSTRLEN];
		if (!proxy_header_endpoints(header, &family, addrs, ports))
			return -1;
		for (size_t i = 0; i < 2; i++) {
			if (inet_ntop(family, addrs[i], texts[i], sizeof(texts[i])) == NULL)
				return -1;
		}
		len = snprintf(buf, size, "PROXY %s %s %s %u %u\r\n",
			       family == AF_INET ? "TCP4" : "TCP6", texts[0], texts[1],
			       (unsigned int)ports[0], (unsigned int)ports[1]);
	}
	return len < 0 || (size_t)len >= size ? -1 : len;
}

int proxy_header_format_v2(const struct proxy_header *header, unsigned char *buf, size_t size)
{
	int family = AF_UNSPEC;
	const void *addrs[2];
	uint16_t ports[2];

	if (header->has_addresses && !proxy_header_endpoints(header, &family, addrs, ports))
		return -1;
	size_t addr_len = family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
	size_t payload_len = addr_len > 0 ? 2 * addr_len + 2 * 2 : 0;
	if (size < PROXY_V2_FIXED_LENGTH + payload_len)
		return -1;
	memcpy(buf, proxy_v2_signature, sizeof(proxy_v2_signature));
	buf[12] = 0x20 | (header->command == PROXY_COMMAND_PROXY ? 0x1 : 0x0);
	buf[13] = family == AF_INET ? 0x11 : family == AF_INET6 ? 0x21 : 0x00;
	buf[14] = (unsigned char)(payload_len >> 8);
	buf[15] = (unsigned char)payload_len;
	unsigned char *p = buf + PROXY_V2_FIXED_LENGTH;
	for (size_t i = 0; i < 2 && addr_len > 0; i++, p += addr_len)
		memcpy(p, addrs[i], addr_len);
	for (size_t i = 0; i < 2 && addr_len > 0; i++, p += 2) {
		p[0] = (unsigned char)(ports[i] >> 8);
		p[1] = (unsigned char)ports[i];
	}
	return (int)(p - buf);
}

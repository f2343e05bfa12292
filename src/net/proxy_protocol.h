/* The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header a trusted proxy
 * puts in front of a relayed connection to tell the server who the real client is. A pure parser
 * (no I/O, no allocation) that works on the bytes received so far, and the two formatters. */
#ifndef BUZON_NET_PROXY_PROTOCOL_H
#define BUZON_NET_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* A v1 header is one line of at most 107 octets with its CRLF (the spec's worst case:
 * "PROXY UNKNOWN", two full IPv6 addresses and two 5-digit ports). */
#define PROXY_V1_MAX_LENGTH 107

/* A v2 header: 12-octet signature, version and command, family and transport, 16-bit length. */
#define PROXY_V2_FIXED_LENGTH 16

/* Most octets a v2 header may announce after its fixed part. The spec allows 65,535, but what
 * real senders put there (IPv6 addresses: 36; HAProxy's TLVs: ALPN, authority ≤ 255, unique id
 * ≤ 128, the TLS block with version, cipher, algorithms and client CN; AWS and Azure endpoint
 * ids) stays well under 1 KiB. Twice that leaves room for custom TLVs while a connection waiting
 * for its header costs at most about 2 KiB; a larger announcement is refused at once. */
#define PROXY_V2_MAX_PAYLOAD 2048

/* The longest header of either version: a buffer of this size always holds a whole header. */
#define PROXY_HEADER_MAX (PROXY_V2_FIXED_LENGTH + PROXY_V2_MAX_PAYLOAD)

enum proxy_command {
	PROXY_COMMAND_LOCAL, /* v2 LOCAL: the proxy's own connection (health checks) */
	PROXY_COMMAND_PROXY, /* a relayed connection; every v1 header */
};

/* A complete, valid header. */
struct proxy_header {
	unsigned int version; /* 1 or 2 */
	enum proxy_command command;
	size_t length; /* octets of the header: the relayed protocol starts right after them */
	/* True when source and destination hold the relayed connection's TCP endpoints (both
	 * AF_INET or both AF_INET6, with ports). False for v2 LOCAL, v1 UNKNOWN and v2 headers
	 * without IP addresses (UNSPEC, UNIX, or a non-stream transport): the receiver then keeps
	 * the connection's own addresses, as the spec asks. */
	bool has_addresses;
	struct sockaddr_storage source;
	struct sockaddr_storage destination;
};

/* Parses the first len octets received on a connection (data may hold bytes past the header;
 * they are not looked at). Returns:
 *   1  a complete header: *header_r is filled, header_r->length <= len;
 *   0  the octets so far are the valid start of a header: *missing_r is at most how many more
 *      octets the header can still take (>= 1), so a reader that asks for no more than that
 *      never takes bytes of the relayed protocol; every octet received so far is header;
 *  -1  not a valid header (or one announcing more than PROXY_V2_MAX_PAYLOAD): *error_r is a
 *      static text saying why. Further octets cannot make it valid.
 * A malformed start is reported as soon as it is seen (a POP3 client that connects to a PROXY
 * port fails at its first byte), not after waiting for a whole line. */
int proxy_header_parse(const unsigned char *data, size_t len, struct proxy_header *header_r,
		       size_t *missing_r, const char **error_r);

/* Formats header as a v1 line with its CRLF into buf, followed by a NUL ("PROXY UNKNOWN\r\n"
 * when it has no addresses). Returns the line's length, or -1 if buf (size octets) is too small
 * or the addresses are not a matching AF_INET or AF_INET6 pair. Used by the tests and the
 * fuzzer, and meant for a POP3 proxy mode that would pass client addresses on to backends. */
int proxy_header_format_v1(const struct proxy_header *header, char *buf, size_t size);

/* Formats header as a v2 header without TLVs into buf (family UNSPEC when it has no addresses,
 * keeping its command). Returns its length or -1, as proxy_header_format_v1(). */
int proxy_header_format_v2(const struct proxy_header *header, unsigned char *buf, size_t size);

#endif

/* Client addresses in one canonical form, and lists of networks in CIDR notation ("10.0.0.0/8,
 * ::1/128") such as the trusted networks that brute-force slow-downs exempt.
 *
 * Canonical form: an IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack socket reports
 * for an IPv4 client) is the IPv4 address a.b.c.d, so one client is one key whichever socket it
 * came in on, and IPv4 list entries match it. */
#ifndef BUZON_NET_NETLIST_H
#define BUZON_NET_NETLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* How much of an IPv6 address identifies one client for slow-downs and bans. A host gets a whole
 * /64 from its provider and can pick any of its 2^64 addresses (privacy extensions do it on their
 * own), so counting per full address would give an attacker endless fresh identities and let one
 * host flush the failure table. The cost: hosts that share a /64 (rare: some hosting and campus
 * networks) share their penalties. IPv4 addresses are always taken whole. */
#define NET_CLIENT_IPV6_PREFIX 64

/* An address in canonical form. For AF_INET only bytes[0..3] are used and the rest are zero, so
 * the whole struct can be hashed or compared with memcmp. */
struct net_addr {
	unsigned char family; /* AF_INET or AF_INET6 */
	unsigned char bytes[16];
};

/* Parses a numeric IPv4 or IPv6 address (no prefix, no port, no scope) into canonical form.
 * Returns 0, or -1 if text is not such an address. */
int net_addr_from_text(const char *text, struct net_addr *addr_r);
/* Converts an AF_INET or AF_INET6 sockaddr into canonical form. Returns -1 for other families. */
int net_addr_from_sockaddr(const struct sockaddr *sa, struct net_addr *addr_r);
/* Returns the client identity of addr: IPv4 unchanged, IPv6 cut to NET_CLIENT_IPV6_PREFIX bits. */
struct net_addr net_addr_client(const struct net_addr *addr);
/* Returns the prefix length that net_addr_client() keeps for addr's family (32 or 64). */
unsigned int net_addr_client_prefix(const struct net_addr *addr);
/* Writes addr as text ("192.0.2.1", "2001:db8::") into buf, which must have room for
 * INET6_ADDRSTRLEN bytes. Returns buf. */
const char *net_addr_to_text(const struct net_addr *addr, char *buf, size_t size);

/* Most networks one list may hold. A list is written by hand in the configuration, so thousands of
 * entries mean a mistake (a pasted file, a loop in a generator), and a linear scan of up to this
 * many entries per login stays far cheaper than the password hash it guards. */
#define NET_LIST_MAX_ENTRIES 1024

struct net_list;

/* Parses a list of networks separated by commas and/or blanks. Each item is an address with an
 * optional "/prefix" (none means one host: /32 or /128). Empty or blank text gives an empty list.
 *
 * Strict on purpose, since a list that trusts more than meant disables protection silently:
 * an item with bits set beyond its prefix ("10.0.0.1/8") is refused rather than masked, because
 * the writer meant either the host or the network and we cannot tell which. Prefix lengths must be
 * plain decimal within 0..32 or 0..128. An IPv6 item inside ::ffff:0:0/96 with a prefix of at least
 * 96 is stored as the IPv4 network it describes.
 *
 * Returns 0 with a new *list_r (free with net_list_free()), or -1 with a newly allocated *error_r
 * naming the bad item. */
int net_list_parse(const char *text, struct net_list **list_r, char **error_r);

/* Returns the number of networks in list (0 for NULL). */
size_t net_list_count(const struct net_list *list);

/* Returns true if addr lies in one of the networks. A NULL list contains nothing. An IPv6 entry
 * such as ::/0 matches only IPv6 clients: IPv4 clients (mapped or not) match IPv4 entries only. */
bool net_list_contains_addr(const struct net_list *list, const struct net_addr *addr);
/* The same for a sockaddr; families other than AF_INET/AF_INET6 are never contained. */
bool net_list_contains(const struct net_list *list, const struct sockaddr *sa);
/* The same for an address in text; text that is not an address is never contained. */
bool net_list_contains_text(const struct net_list *list, const char *ip_text);

/* Frees *list and sets it to NULL; does nothing if already NULL. */
void net_list_free(struct net_list **list);

#endif

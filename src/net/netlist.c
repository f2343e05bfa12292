/* Canonical client addresses and CIDR network lists (see netlist.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "core/util.h"
#include "net/netlist.h"

/* Longest item we accept: a full IPv6 address in text (INET6_ADDRSTRLEN counts its NUL) plus
 * "/128". Anything longer is not an address, and the cap keeps the item in a stack buffer. */
#define NET_ITEM_MAX (INET6_ADDRSTRLEN + 4)
/* How much of a bad item an error message quotes, so a pasted blob cannot flood the log. */
#define NET_ITEM_QUOTE_MAX 64

/* The first 12 bytes of an IPv4-mapped IPv6 address. */
static const unsigned char net_v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

struct net_entry {
	struct net_addr net; /* host bits are zero */
	unsigned int prefix;
};

struct net_list {
	size_t count;
	struct net_entry *entries;
};

static void net_addr_set_v4(struct net_addr *addr, const unsigned char bytes[4])
{
	memset(addr, 0, sizeof(*addr));
	addr->family = AF_INET;
	memcpy(addr->bytes, bytes, 4);
}

static void net_addr_set_v6(struct net_addr *addr, const unsigned char bytes[16])
{
	if (memcmp(bytes, net_v4mapped_prefix, sizeof(net_v4mapped_prefix)) == 0) {
		net_addr_set_v4(addr, bytes + 12);
		return;
	}
	memset(addr, 0, sizeof(*addr));
	addr->family = AF_INET6;
	memcpy(addr->bytes, bytes, 16);
}

int net_addr_from_text(const char *text, struct net_addr *addr_r)
{
	unsigned char bytes[16];

	if (inet_pton(AF_INET, text, bytes) == 1) {
		net_addr_set_v4(addr_r, bytes);
		return 0;
	}
	if (inet_pton(AF_INET6, text, bytes) == 1) {
		net_addr_set_v6(addr_r, bytes);
		return 0;
	}
	return -1;
}

int net_addr_from_sockaddr(const struct sockaddr *sa, struct net_addr *addr_r)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		net_addr_set_v4(addr_r, (const unsigned char *)&sin->sin_addr);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		net_addr_set_v6(addr_r, sin6->sin6_addr.s6_addr);
		return 0;
	}
	return -1;
}

/* Clears every bit of addr after the first prefix bits. */
static void net_addr_mask(struct net_addr *addr, unsigned int prefix)
{
	for (unsigned int i = 0; i < sizeof(addr->bytes); i++) {
		unsigned int start = i * 8;
		if (start >= prefix)
			addr->bytes[i] = 0;
		else if (prefix - start < 8)
			addr->bytes[i] &= (unsigned char)(0xff << (8 - (prefix - start)));
	}
}

unsigned int net_addr_client_prefix(const struct net_addr *addr)
{
	return addr->family == AF_INET ? 32 : NET_CLIENT_IPV6_PREFIX;
}

struct net_addr net_addr_client(const struct net_addr *addr)
{
	struct net_addr client = *addr;

	net_addr_mask(&client, net_addr_client_prefix(addr));
	return client;
}

const char *net_addr_to_text(const struct net_addr *addr, char *buf, size_t size)
{
	int family = addr->family == AF_INET ? AF_INET : AF_INET6;

	if (inet_ntop(family, addr->bytes, buf, (socklen_t)size) == NULL)
		fatal("net_addr_to_text: buffer of %zu bytes is too small", size);
	return buf;
}

/* Returns true if the first prefix bits of a and b are equal. */
static bool net_bits_equal(const unsigned char *a, const unsigned char *b, unsigned int prefix)
{
	unsigned int whole = prefix / 8, rest = prefix % 8;

	if (memcmp(a, b, whole) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (a[whole] & mask) == (b[whole] & mask);
}

/* Stores an IPv6 network that lies inside ::ffff:0:0/96 as the IPv4 network it describes, since
 * client addresses in that range are canonicalised to IPv4 before matching. */
static void net_entry_canonicalise(struct net_entry *entry)
{
	if (entry->net.family != AF_INET6 || entry->prefix < 96 ||
	    memcmp(entry->net.bytes, net_v4mapped_prefix, sizeof(net_v4mapped_prefix)) != 0)
		return;
	unsigned char v4[4];
	memcpy(v4, entry->net.bytes + 12, 4);
	net_addr_set_v4(&entry->net, v4);
	entry->prefix -= 96;
}

/* Parses the prefix length after '/' (or none). Returns -1 with a static *why_r. */
static int net_prefix_parse(const char *slash, unsigned int max_bits, unsigned int *prefix_r,
			    const char **why_r)
{
	unsigned long long value;

	if (slash == NULL) {
		*prefix_r = max_bits;
		return 0;
	}
	if (str_parse_uint_n(slash + 1, strlen(slash + 1), 0, max_bits, &value) < 0) {
		*why_r = max_bits == 32 ? "prefix length must be a number from 0 to 32"
					: "prefix length must be a number from 0 to 128";
		return -1;
	}
	*prefix_r = (unsigned int)value;
	return 0;
}

/* Parses one NUL-terminated item into entry. Returns -1 with a static *why_r. */
static int net_item_parse(char *item, struct net_entry *entry, const char **why_r)
{
	char *slash = strchr(item, '/');
	unsigned char bytes[16];
	struct net_addr masked;

	if (slash != NULL)
		*slash = '\0';
	memset(&entry->net, 0, sizeof(entry->net));
	if (inet_pton(AF_INET, item, bytes) == 1) {
		entry->net.family = AF_INET;
		memcpy(entry->net.bytes, bytes, 4);
	} else if (inet_pton(AF_INET6, item, bytes) == 1) {
		entry->net.family = AF_INET6;
		memcpy(entry->net.bytes, bytes, 16);
	} else {
		*why_r = "not an IPv4 or IPv6 address";
		return -1;
	}
	if (slash != NULL)
		*slash = '/';
	if (net_prefix_parse(slash, entry->net.family == AF_INET ? 32 : 128, &entry->prefix,
			     why_r) < 0)
		return -1;
	masked = entry->net;
	net_addr_mask(&masked, entry->prefix);
	if (memcmp(&masked, &entry->net, sizeof(masked)) != 0) {
		*why_r = "address has bits set beyond the prefix length";
		return -1;
	}
	net_entry_canonicalise(entry);
	return 0;
}

static bool net_is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int net_list_fail(char **error_r, const char *item, size_t len, const char *why)
{
	int shown = len > NET_ITEM_QUOTE_MAX ? NET_ITEM_QUOTE_MAX : (int)len;

	*error_r = xasprintf("bad network \"%.*s%s\": %s", shown, item,
			     len > NET_ITEM_QUOTE_MAX ? "..." : "", why);
	return -1;
}

/* Parses the item of len bytes at start and appends it to list. Returns -1 with *error_r. */
static int net_list_add_item(struct net_list *list, const char *start, size_t len, char **error_r)
{
	char item[NET_ITEM_MAX + 1];
	const char *why = NULL;

	if (len > NET_ITEM_MAX)
		return net_list_fail(error_r, start, len, "too long to be a network");
	if (list->count >= NET_LIST_MAX_ENTRIES)
		return net_list_fail(error_r, start, len, "too many networks in one list");
	memcpy(item, start, len);
	item[len] = '\0';
	list->entries = xrealloc(list->entries, (list->count + 1) * sizeof(*list->entries));
	if (net_item_parse(item, &list->entries[list->count], &why) < 0)
		return net_list_fail(error_r, start, len, why);
	list->count++;
	return 0;
}

/* Walks text item by item. A comma must separate two items: empty items (",,", a leading or
 * trailing comma) are refused, since they usually mean something was deleted by mistake. */
static int net_list_parse_items(struct net_list *list, const char *text, char **error_r)
{
	const char *p = text;
	bool need_item = false; /* true right after a comma */

	for (;;) {
		while (net_is_blank(*p))
			p++;
		if (*p == '\0' || *p == ',') {
			if (need_item || *p == ',') {
				*error_r = xasprintf("empty item in network list");
				return -1;
			}
			return 0;
		}
		const char *start = p;
		while (*p != '\0' && *p != ',' && !net_is_blank(*p))
			p++;
		if (net_list_add_item(list, start, (size_t)(p - start), error_r) < 0)
			return -1;
		while (net_is_blank(*p))
			p++;
		need_item = *p == ',';
		if (need_item)
			p++;
	}
}

int net_list_parse(const char *text, struct net_list **list_r, char **error_r)
{
	struct net_list *list = xcalloc(1, sizeof(*list));

	if (net_list_parse_items(list, text, error_r) < 0) {
		net_list_free(&list);
		return -1;
	}
	*list_r = list;
	return 0;
}

size_t net_list_count(const struct net_list *list)
{
	return list == NULL ? 0 : list->count;
}

bool net_list_contains_addr(const struct net_list *list, const struct net_addr *addr)
{
	if (list == NULL)
		return false;
	for (size_t i = 0; i < list->count; i++) {
		const struct net_entry *entry = &list->entries[i];
		if (entry->net.family == addr->family &&
		    net_bits_equal(entry->net.bytes, addr->bytes, entry->prefix))
			return true;
	}
	return false;
}

bool net_list_contains(const struct net_list *list, const struct sockaddr *sa)
{
	struct net_addr addr;

	return net_addr_from_sockaddr(sa, &addr) == 0 && net_list_contains_addr(list, &addr);
}

bool net_list_contains_text(const struct net_list *list, const char *ip_text)
{
	struct net_addr addr;

	return net_addr_from_text(ip_text, &addr) == 0 && net_list_contains_addr(list, &addr);
}

void net_list_free(struct net_list **listp)
{
	if (*listp == NULL)
		return;
	free((*listp)->entries);
	x_free(listp);
}

/* The banned clients, shared by the auth process and the admin process (the writers) with the POP3
 * workers (readers) so that a worker refuses a banned client as it connects, before spending a
 * TLS handshake or a password hash on it. One anonymous shared mapping made by the master before
 * it forks, like ip_limit.
 *
 * Design: a fixed array of BAN_TABLE_SLOTS "banned until" times, indexed by a keyed hash of the
 * client's identity (net_addr_client(): the IPv4 address, or the /64 of an IPv6 address). Fixed
 * memory whatever an attacker does, no lock (each slot is read and written atomically), and no
 * allocation in shared memory. The trade-off: clients that share a slot share its ban, so while
 * one client is banned an innocent client that hashes to the same slot is refused too. With
 * 65,536 slots and b clients banned at once, an innocent client is refused with probability about
 * b/65,536 (0.15% with 100 bans); the hash key is random per start so nobody can aim a ban at a
 * chosen victim's slot.
 *
 * Times are seconds of CLOCK_MONOTONIC (see ban_table_now()), which every process on the machine
 * shares and which does not jump when the wall clock is set. */
#ifndef BUZON_NET_BAN_TABLE_H
#define BUZON_NET_BAN_TABLE_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

#include "net/netlist.h"

/* Slots in the table: 256 KiB of shared memory, and a small chance of sharing a slot (see above)
 * even with hundreds of clients banned at once. */
#define BAN_TABLE_SLOTS 65536

struct ban_table;

/* Returns the current time on the table's clock, in seconds (CLOCK_MONOTONIC). */
uint64_t ban_table_now(void);

/* Creates the shared table with nobody banned; call in the master before forking, so that every
 * child shares the mapping and the hash key. Aborts if the mapping cannot be made. */
struct ban_table *ban_table_create(void);
/* Unmaps the table in this process and frees *table, setting it to NULL; NULL is ignored. */
void ban_table_destroy(struct ban_table **table);

/* Bans the client at addr (and its slot-mates) until the time until (ban_table_now() seconds).
 * A ban never shortens a longer one already in the slot, since that one may belong to another
 * client. Times beyond 2^32-1 s are clamped. Returns -1 if addr is not AF_INET/AF_INET6. */
int ban_table_ban(struct ban_table *table, const struct sockaddr *addr, uint64_t until);
/* The same with the address in text. Returns -1 if ip is not a numeric IPv4/IPv6 address. */
int ban_table_ban_text(struct ban_table *table, const char *ip, uint64_t until);
/* The same with a canonical address. */
void ban_table_ban_addr(struct ban_table *table, const struct net_addr *addr, uint64_t until);

/* Lifts the ban on addr's slot, which also lifts the ban of any client sharing it (an admin
 * action; the auth process bans them again if they keep failing). Returns -1 for a bad address. */
int ban_table_unban(struct ban_table *table, const struct sockaddr *addr);
int ban_table_unban_text(struct ban_table *table, const char *ip);

/* Returns true if addr's slot is banned at time now. Addresses that are not AF_INET/AF_INET6 (a
 * UNIX socket) are never banned. */
bool ban_table_is_banned(const struct ban_table *table, const struct sockaddr *addr, uint64_t now);
bool ban_table_is_banned_text(const struct ban_table *table, const char *ip, uint64_t now);

/* ---- The register of recent bans ----
 *
 * The slots above are hashed, so they cannot say which addresses are banned. For `buzon ban list`
 * the same mapping holds a bounded register of the bans in force: the client identity, the end of
 * the ban and who made it. Its writers are the auth process (automatic bans) and the admin
 * process (`buzon ban add|del`); they serialise on a spinlock in the mapping (C11 atomics, no
 * system call, so it works inside every sandbox). The slots stay the authority that workers check:
 * the register only describes them. */

/* Entries in the register. More bans than this at once are all enforced (by the slots), but the
 * listing then shows the ones that last longest: an admin reading a list of a thousand bans is
 * looking at an attack, not at individual addresses. 1,024 entries are 24 KiB of shared memory. */
#define BAN_REGISTER_ENTRIES 1024

/* Who made a ban. */
enum ban_source {
	BAN_SOURCE_AUTH = 1, /* the auth process: too many failed logins */
	BAN_SOURCE_ADMIN,    /* an administrator: `buzon ban add` */
};

/* One ban in force, as ban_table_list() reports it. */
struct ban_entry {
	struct net_addr client;	 /* the client identity (net_addr_client(): IPv6 cut to its /64) */
	unsigned int prefix_len; /* 32 for IPv4, NET_CLIENT_IPV6_PREFIX for IPv6 */
	uint64_t until;		 /* end of the ban, ban_table_now() seconds */
	enum ban_source source;
};

/* Bans ip (a numeric IPv4/IPv6 address) until the time until, like ban_table_ban_text(), and
 * records the ban in the register (a ban already listed for the same client keeps the later end
 * and takes the new source). Returns -1 if ip is not an address. */
int ban_table_add(struct ban_table *table, const char *ip, uint64_t until, enum ban_source source);

/* Lifts the ban on ip's slot and removes ip's client from the register. Returns 1 if something
 * was lifted (the slot was banned at now or the register listed the client), 0 if nothing was
 * banned, -1 if ip is not an address. */
int ban_table_remove(struct ban_table *table, const char *ip, uint64_t now);

/* Copies up to max of the register's bans in force at now into entries_r, the longest first, and
 * returns how many are in force (which may exceed max). Entries that have ended are dropped from
 * the register on the way. */
size_t ban_table_list(struct ban_table *table, uint64_t now, struct ban_entry *entries_r,
		      size_t max);

/* Writes entry's client as text with its prefix ("192.0.2.7", "2001:db8:1:2::/64") into buf, of
 * at least BAN_ENTRY_TEXT_MAX bytes. Returns buf. */
#define BAN_ENTRY_TEXT_MAX (INET6_ADDRSTRLEN + 4)
const char *ban_entry_text(const struct ban_entry *entry, char *buf, size_t size);

/* The name of a source: "auth" or "admin". */
const char *ban_source_name(enum ban_source source);

#endif

/* Shared per-IP counters (see ip_limit.h). Counters are updated with atomic compare-and-swap, so
 * workers need no lock. */
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "core/util.h"
#include "net/ip_limit.h"

#define IP_LIMIT_SLOTS 65536

struct ip_limit {
	unsigned int *counters; /* IP_LIMIT_SLOTS of them, in shared memory */
	uint32_t seed;
};

struct ip_limit *ip_limit_create(void)
{
	struct ip_limit *limit = xcalloc(1, sizeof(*limit));

	limit->counters = mmap(NULL, IP_LIMIT_SLOTS * sizeof(unsigned int), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (limit->counters == MAP_FAILED)
		fatal("mmap of the per-IP table failed");
	return limit;
}

void ip_limit_destroy(struct ip_limit **limitp)
{
	if (*limitp == NULL)
		return;
	munmap((*limitp)->counters, IP_LIMIT_SLOTS * sizeof(unsigned int));
	x_free(limitp);
}

/* FNV-1a over the address bytes; IPv4-mapped IPv6 addresses hash like their IPv4 form. */
static unsigned int *ip_limit_slot(struct ip_limit *limit, const struct sockaddr *addr)
{
	const unsigned char *bytes = NULL;
	size_t len = 0;
	uint32_t hash = 2166136261u;

	if (addr->sa_family == AF_INET) {
		bytes = (const unsigned char *)&((const struct sockaddr_in *)addr)->sin_addr;
		len = 4;
	} else if (addr->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)addr)->sin6_addr;
		bytes = a6->s6_addr;
		len = 16;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			bytes += 12;
			len = 4;
		}
	}
	for (size_t i = 0; i < len; i++) {
		hash ^= bytes[i];
		hash *= 16777619u;
	}
	return &limit->counters[hash % IP_LIMIT_SLOTS];
}

bool ip_limit_acquire(struct ip_limit *limit, const struct sockaddr *addr, unsigned int max)
{
	unsigned int *slot = ip_limit_slot(limit, addr);
	unsigned int current = __atomic_load_n(slot, __ATOMIC_RELAXED);

	do {
		if (current >= max)
			return false;
	} while (!__atomic_compare_exchange_n(slot, &current, current + 1, true, __ATOMIC_ACQ_REL,
					      __ATOMIC_RELAXED));
	return true;
}

void ip_limit_release(struct ip_limit *limit, const struct sockaddr *addr)
{
	unsigned int *slot = ip_limit_slot(limit, addr);
	unsigned int current = __atomic_load_n(slot, __ATOMIC_RELAXED);

	do {
		if (current == 0)
			return; /* a worker that died left the count low; never wrap below zero */
	} while (!__atomic_compare_exchange_n(slot, &current, current - 1, true, __ATOMIC_ACQ_REL,
					      __ATOMIC_RELAXED));
}

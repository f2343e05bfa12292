/* Per-client-IP connection counters shared by every worker process (one anonymous shared mapping
 * made by the master before it forks), so that a limit per IP holds across workers. IPs are hashed
 * into a fixed table of counters; two IPs that share a counter share its limit, which errs on the
 * side of refusing (rare with 65536 counters) and keeps the table's memory fixed. */
#ifndef BUZON_NET_IP_LIMIT_H
#define BUZON_NET_IP_LIMIT_H

#include <stdbool.h>
#include <sys/socket.h>

struct ip_limit;

/* Creates the shared table; call before forking. */
struct ip_limit *ip_limit_create(void);
void ip_limit_destroy(struct ip_limit **limit);

/* Counts one more connection from addr unless it already has max; returns false if refused. */
bool ip_limit_acquire(struct ip_limit *limit, const struct sockaddr *addr, unsigned int max);
/* Releases a connection counted by ip_limit_acquire(). */
void ip_limit_release(struct ip_limit *limit, const struct sockaddr *addr);

#endif

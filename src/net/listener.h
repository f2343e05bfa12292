/* Listening sockets: one SO_REUSEPORT socket per worker and address, bound by the master before it
 * drops privileges, so that the kernel spreads connections over the workers. */
#ifndef BUZON_NET_LISTENER_H
#define BUZON_NET_LISTENER_H

#include "core/config.h"

/* Checks that addr is free by binding it once without SO_REUSEPORT: a second buzon started by
 * mistake must fail loudly instead of silently sharing the port. Returns -1 with *error_r. */
int listener_probe(const struct config_listen *where, char **error_r);

/* Creates a non-blocking, close-on-exec, listening SO_REUSEPORT socket for listen. IPv6 sockets
 * are IPv6-only so that "[::]:110" and "0.0.0.0:110" can both be configured.
 * Returns the fd or -1 with a newly allocated *error_r. */
int listener_open(const struct config_listen *where, char **error_r);

/* Formats the peer address of a connection as text (no port). */
void listener_format_ip(const struct sockaddr *addr, char *buf, size_t size);

#endif

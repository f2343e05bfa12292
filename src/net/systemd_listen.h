/* Listening sockets passed by systemd socket activation (dist/systemd/buzon.socket). systemd
 * passes them as fds 3, 4, … with LISTEN_PID/LISTEN_FDS set; buzon does not rely on their order
 * or names but matches each one to a config address by the address it is bound to
 * (getsockname()), so the socket unit's ListenStream= addresses must equal the config's listen
 * addresses exactly ("0.0.0.0:110" matches `listen = *:110` or `0.0.0.0:110`; systemd's bare
 * "ListenStream=110" is "[::]:110" and matches only `[::]:110`).
 *
 * The pool is process-wide because the passed descriptors are: the master collects it once at
 * start, takes a socket for each config address it would otherwise bind, and refuses to start
 * when the unit passed a socket that no config address takes (a typo in either file would
 * otherwise leave a port that accepts connections nobody serves). */
#ifndef BUZON_NET_SYSTEMD_LISTEN_H
#define BUZON_NET_SYSTEMD_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

/* The most sockets buzon accepts from systemd: far more addresses than a config can sensibly
 * list, and it bounds the pool. */
#define SYSTEMD_LISTEN_MAX 256

/* Collects the sockets systemd passed to this process (sd_listen_fds()), and unsets LISTEN_PID,
 * LISTEN_FDS and LISTEN_FDNAMES so that no child mistakes them for its own. Each socket is made
 * non-blocking and close-on-exec, as listener_open() makes its own. Returns how many were passed
 * (0 when the process was not socket-activated), or -1 with a newly allocated *error_r when the
 * environment is malformed or a passed descriptor is not a listening stream socket of AF_INET,
 * AF_INET6 or AF_UNIX (a unit with ListenDatagram= or Accept=yes); the process should then stop
 * (systemd_listen_close_leftovers() closes what was collected). A second call collects nothing
 * and returns the count of the first. */
int systemd_listen_collect(char **error_r);

/* Returns the passed socket bound to exactly addr (same family and port, same address, and for
 * IPv6 the same scope; for AF_UNIX the same path) and removes it from the pool: the caller owns
 * it from then on. Returns -1 when no socket in the pool is bound there (the caller then binds the
 * address itself). */
int systemd_listen_take(const struct sockaddr *addr, socklen_t len);

/* Returns a newly allocated, comma-separated list of the addresses of the passed sockets that no
 * systemd_listen_take() claimed ("0.0.0.0:110, [::]:995, unix:/run/x.sock"), or NULL when there
 * are none. */
char *systemd_listen_leftovers(void);

/* Closes the sockets still in the pool and empties it. */
void systemd_listen_close_leftovers(void);

/* Formats a socket address the way the config writes it: "127.0.0.1:110", "[::1]:995",
 * "unix:/path" ("unix:@name" for an abstract socket). Truncates to size. */
void systemd_listen_format_address(const struct sockaddr *addr, socklen_t len, char *buf,
				   size_t size);

#endif

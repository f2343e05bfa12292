/* Listening sockets (see listener.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"
#include "net/listener.h"

/* Large enough for a burst of thousands of logins per second; the kernel caps it at somaxconn. */
#define LISTENER_BACKLOG 4096

static int listener_socket(const struct config_listen *where, bool reuseport, char **error_r)
{
	int one = 1;
	int fd = socket(where->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		*error_r =
		    xasprintf("cannot listen on %s: socket: %s", where->text, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		*error_r = xasprintf("cannot listen on %s: SO_REUSEPORT: %s", where->text,
				     strerror(errno));
		close(fd);
		return -1;
	}
	if (where->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&where->addr, where->addr_len) < 0) {
		*error_r = xasprintf("cannot listen on %s: %s", where->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int listener_probe(const struct config_listen *where, char **error_r)
{
	int fd = listener_socket(where, false, error_r);

	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

int listener_open(const struct config_listen *where, char **error_r)
{
	int fd = listener_socket(where, true, error_r);

	if (fd < 0)
		return -1;
	if (listen(fd, LISTENER_BACKLOG) < 0) {
		*error_r = xasprintf("cannot listen on %s: %s", where->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

void listener_format_ip(const struct sockaddr *addr, char *buf, size_t size)
{
	const void *raw = NULL;

	if (addr->sa_family == AF_INET)
		raw = &((const struct sockaddr_in *)addr)->sin_addr;
	else if (addr->sa_family == AF_INET6)
		raw = &((const struct sockaddr_in6 *)addr)->sin6_addr;
	if (raw == NULL || inet_ntop(addr->sa_family, raw, buf, (socklen_t)size) == NULL)
		snprintf(buf, size, "unknown");
}

/* Sockets passed by systemd socket activation, matched to config addresses (systemd_listen.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "core/util.h"
#include "net/systemd_listen.h"

struct systemd_socket {
	int fd; /* -1 once taken */
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

/* The descriptors systemd passed exist once per process, so their pool does too. */
static struct systemd_socket systemd_pool[SYSTEMD_LISTEN_MAX];
static int systemd_pool_count = -1; /* -1: not collected yet */

void systemd_listen_format_address(const struct sockaddr *addr, socklen_t len, char *buf,
				   size_t size)
{
	char host[INET6_ADDRSTRLEN];

	if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, size, "%s:%u", host, ntohs(sin->sin_port));
	} else if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)addr;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, size, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else if (addr->sa_family == AF_UNIX && len > offsetof(struct sockaddr_un, sun_path)) {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)addr;
		size_t path_len = len - offsetof(struct sockaddr_un, sun_path);
		/* an abstract socket's name starts with a NUL and is not NUL-terminated */
		if (sun->sun_path[0] == '\0')
			snprintf(buf, size, "unix:@%.*s", (int)(path_len - 1), sun->sun_path + 1);
		else
			snprintf(buf, size, "unix:%.*s", (int)strnlen(sun->sun_path, path_len),
				 sun->sun_path);
	} else {
		snprintf(buf, size, "family-%d", (int)addr->sa_family);
	}
}

/* The bytes of a UNIX socket path, without the NUL that some callers count in len. */
static size_t systemd_unix_path_len(const struct sockaddr_un *sun, socklen_t len)
{
	size_t path_len = len - offsetof(struct sockaddr_un, sun_path);

	if (path_len > 0 && sun->sun_path[0] != '\0')
		return strnlen(sun->sun_path, path_len);
	return path_len;
}

/* Same family, address and port: sockaddr structures carry padding (sin_zero) and lengths that
 * differ by caller, so they are compared field by field, never with memcmp. */
static bool systemd_address_equal(const struct sockaddr *a, socklen_t a_len,
				  const struct sockaddr *b, socklen_t b_len)
{
	if (a->sa_family != b->sa_family)
		return false;
	switch (a->sa_family) {
	case AF_INET: {
		if (a_len < sizeof(struct sockaddr_in) || b_len < sizeof(struct sockaddr_in))
			return false;
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	case AF_INET6: {
		if (a_len < sizeof(struct sockaddr_in6) || b_len < sizeof(struct sockaddr_in6))
			return false;
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
		return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	case AF_UNIX: {
		socklen_t base = offsetof(struct sockaddr_un, sun_path);
		if (a_len <= base || b_len <= base)
			return false;
		const struct sockaddr_un *x = (const struct sockaddr_un *)a;
		const struct sockaddr_un *y = (const struct sockaddr_un *)b;
		size_t x_len = systemd_unix_path_len(x, a_len),
		       y_len = systemd_unix_path_len(y, b_len);
		return x_len == y_len && memcmp(x->sun_path, y->sun_path, x_len) == 0;
	}
	default:
		return false;
	}
}

/* Checks that fd is something buzon can accept() on and records its address. */
static int systemd_socket_adopt(int fd, struct systemd_socket *out, char **error_r)
{
	bool stream_listener = sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0 ||
			       sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0;

	if (!stream_listener) {
		*error_r =
		    xasprintf("systemd passed descriptor %d, which is not a listening TCP or "
			      "UNIX stream socket (the socket unit needs ListenStream= and "
			      "Accept=no)",
			      fd);
		return -1;
	}
	out->addr_len = sizeof(out->addr);
	if (getsockname(fd, (struct sockaddr *)&out->addr, &out->addr_len) < 0) {
		*error_r =
		    xasprintf("systemd passed descriptor %d: getsockname: %s", fd, strerror(errno));
		return -1;
	}
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		*error_r =
		    xasprintf("systemd passed descriptor %d: fcntl: %s", fd, strerror(errno));
		return -1;
	}
	out->fd = fd;
	return 0;
}

int systemd_listen_collect(char **error_r)
{
	if (systemd_pool_count >= 0)
		return systemd_pool_count;
	/* 1: unset LISTEN_* now, so a child's environment never claims fds it does not have */
	int passed = sd_listen_fds(1);
	if (passed < 0) {
		*error_r = xasprintf("cannot read the sockets passed by systemd (LISTEN_FDS): %s",
				     strerror(-passed));
		return -1;
	}
	if (passed > SYSTEMD_LISTEN_MAX) {
		*error_r = xasprintf("systemd passed %d sockets; buzon takes at most %d", passed,
				     SYSTEMD_LISTEN_MAX);
		return -1;
	}
	for (int i = 0; i < passed; i++) {
		if (systemd_socket_adopt(SD_LISTEN_FDS_START + i, &systemd_pool[i], error_r) < 0) {
			systemd_pool_count = i; /* so that close_leftovers() closes those adopted */
			return -1;
		}
	}
	systemd_pool_count = passed;
	return passed;
}

int systemd_listen_take(const struct sockaddr *addr, socklen_t len)
{
	for (int i = 0; i < systemd_pool_count; i++) {
		struct systemd_socket *entry = &systemd_pool[i];
		if (entry->fd >= 0 && systemd_address_equal((const struct sockaddr *)&entry->addr,
							    entry->addr_len, addr, len)) {
			int fd = entry->fd;
			entry->fd = -1;
			return fd;
		}
	}
	return -1;
}

char *systemd_listen_leftovers(void)
{
	char *list = NULL;
	size_t list_len = 0;
	FILE *out = open_memstream(&list, &list_len);
	bool any = false;

	if (out == NULL)
		fatal("open_memstream failed");
	for (int i = 0; i < systemd_pool_count; i++) {
		const struct systemd_socket *entry = &systemd_pool[i];
		char text[sizeof(struct sockaddr_un) + 16];
		if (entry->fd < 0)
			continue;
		systemd_listen_format_address((const struct sockaddr *)&entry->addr,
					      entry->addr_len, text, sizeof(text));
		fprintf(out, "%s%s", any ? ", " : "", text);
		any = true;
	}
	fclose(out);
	if (!any)
		x_free(&list);
	return list;
}

void systemd_listen_close_leftovers(void)
{
	for (int i = 0; i < systemd_pool_count; i++) {
		if (systemd_pool[i].fd >= 0) {
			close(systemd_pool[i].fd);
			systemd_pool[i].fd = -1;
		}
	}
}

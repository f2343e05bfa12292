/* Unit tests for buzon's side of systemd: socket activation (src/net/systemd_listen.c), where
 * sockets placed at fd 3, 4, … with LISTEN_PID/LISTEN_FDS set, the way systemd passes them, are
 * matched to config addresses by the address they are bound to (each case runs in a forked child,
 * whose descriptor numbers the test controls and whose process-wide pool starts empty); and the
 * Type=notify messages (src/core/systemd_notify.c), read from a stand-in NOTIFY_SOCKET. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/systemd_notify.h"
#include "core/util.h"
#include "net/systemd_listen.h"

/* Descriptors are parked here while the passed ones are laid out from fd 3 up. */
#define PARK_FD_BASE 200

/* cmocka's assertions cannot cross fork(): a child reports the first failed check on stderr and
 * exits non-zero, and the parent asserts a clean exit. */
#define CHILD_CHECK(cond)                                                                          \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			_exit(1);                                                                  \
		}                                                                                  \
	} while (0)

static void run_in_child(void (*body)(void))
{
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		body();
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* A listening TCP socket on a free port of 127.0.0.1 (or ::1); its port goes to *port_r. */
static int listen_loopback(int family, int *port_r)
{
	struct sockaddr_storage addr = {0};
	socklen_t len;
	int fd = socket(family, SOCK_STREAM, 0);

	CHILD_CHECK(fd >= 0);
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addr;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&addr;
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*sin);
	}
	CHILD_CHECK(bind(fd, (struct sockaddr *)&addr, len) == 0);
	CHILD_CHECK(listen(fd, 16) == 0);
	CHILD_CHECK(getsockname(fd, (struct sockaddr *)&addr, &len) == 0);
	*port_r = family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&addr)->sin6_port)
				     : ntohs(((struct sockaddr_in *)&addr)->sin_port);
	return fd;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	CHILD_CHECK(fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	unlink(path);
	CHILD_CHECK(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	CHILD_CHECK(listen(fd, 16) == 0);
	return fd;
}

/* Moves fds[0..count) to 3, 4, … and sets the environment systemd sets for pid. */
static void pass_like_systemd(const int *fds, int count, pid_t pid)
{
	char text[32];

	/* parked first, so that moving one to fd 3+i cannot overwrite another still to move */
	for (int i = 0; i < count; i++) {
		CHILD_CHECK(dup2(fds[i], PARK_FD_BASE + i) == PARK_FD_BASE + i);
		close(fds[i]);
	}
	for (int i = 0; i < count; i++) {
		CHILD_CHECK(dup2(PARK_FD_BASE + i, 3 + i) == 3 + i);
		close(PARK_FD_BASE + i);
	}
	snprintf(text, sizeof(text), "%d", (int)pid);
	setenv("LISTEN_PID", text, 1);
	snprintf(text, sizeof(text), "%d", count);
	setenv("LISTEN_FDS", text, 1);
}

/* The address as the config would give it to the master. */
static struct config_listen config_address(const char *text)
{
	struct config_listen where;

	CHILD_CHECK(config_parse_listen(text, &where) == 0);
	return where;
}

static int take_text(const char *text)
{
	struct config_listen where = config_address(text);
	int fd = systemd_listen_take((const struct sockaddr *)&where.addr, where.addr_len);

	free(where.text);
	return fd;
}

static bool leftovers_are(const char *expect)
{
	char *list = systemd_listen_leftovers();
	bool same = expect == NULL ? list == NULL : list != NULL && strcmp(list, expect) == 0;

	if (!same)
		fprintf(stderr, "leftovers: \"%s\", expected \"%s\"\n", list ? list : "(none)",
			expect ? expect : "(none)");
	free(list);
	return same;
}

static char unix_path[108];

static void child_matches_by_address(void)
{
	int ports[3], fds[4];
	char text[64], expect[256];
	char *error = NULL;

	for (int i = 0; i < 3; i++)
		fds[i] = listen_loopback(AF_INET, &ports[i]);
	fds[3] = listen_unix(unix_path);
	pass_like_systemd(fds, 4, getpid());

	CHILD_CHECK(systemd_listen_collect(&error) == 4);
	CHILD_CHECK(getenv("LISTEN_FDS") == NULL && getenv("LISTEN_PID") == NULL);
	for (int fd = 3; fd < 7; fd++) {
		CHILD_CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
		CHILD_CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	}

	/* the second socket, by its address; once taken it is gone from the pool */
	snprintf(text, sizeof(text), "127.0.0.1:%d", ports[1]);
	CHILD_CHECK(take_text(text) == 4);
	CHILD_CHECK(take_text(text) == -1);
	/* the same port on another address, or the wildcard, is not the same socket */
	snprintf(text, sizeof(text), "127.0.0.2:%d", ports[0]);
	CHILD_CHECK(take_text(text) == -1);
	snprintf(text, sizeof(text), "*:%d", ports[0]);
	CHILD_CHECK(take_text(text) == -1);
	snprintf(text, sizeof(text), "[::1]:%d", ports[0]);
	CHILD_CHECK(take_text(text) == -1);

	snprintf(expect, sizeof(expect), "127.0.0.1:%d, 127.0.0.1:%d, unix:%s", ports[0], ports[2],
		 unix_path);
	CHILD_CHECK(leftovers_are(expect));

	/* a UNIX path matches whether or not the caller counts its NUL in the length */
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", unix_path);
	socklen_t exact = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(unix_path));
	CHILD_CHECK(systemd_listen_take((struct sockaddr *)&sun, exact) == 6);

	snprintf(text, sizeof(text), "127.0.0.1:%d", ports[2]);
	CHILD_CHECK(take_text(text) == 5);
	snprintf(expect, sizeof(expect), "127.0.0.1:%d", ports[0]);
	CHILD_CHECK(leftovers_are(expect));
	snprintf(text, sizeof(text), "127.0.0.1:%d", ports[0]);
	CHILD_CHECK(take_text(text) == 3);
	CHILD_CHECK(leftovers_are(NULL));

	/* collected once: a second call neither re-reads nor hands out the taken sockets again */
	CHILD_CHECK(systemd_listen_collect(&error) == 4);
	CHILD_CHECK(take_text(text) == -1);
	unlink(unix_path);
}

static void test_matches_by_address(void **state)
{
	snprintf(unix_path, sizeof(unix_path), "/tmp/buzon-test-systemd-%d.sock", (int)getpid());
	run_in_child(child_matches_by_address);
	unlink(unix_path);
}

static void child_ipv6_and_close_leftovers(void)
{
	int ports[2], fds[2];
	char text[64], expect[128];
	char *error = NULL;

	fds[0] = listen_loopback(AF_INET6, &ports[0]);
	fds[1] = listen_loopback(AF_INET, &ports[1]);
	pass_like_systemd(fds, 2, getpid());
	CHILD_CHECK(systemd_listen_collect(&error) == 2);
	snprintf(text, sizeof(text), "127.0.0.1:%d", ports[0]);
	CHILD_CHECK(take_text(text) == -1);
	snprintf(expect, sizeof(expect), "[::1]:%d, 127.0.0.1:%d", ports[0], ports[1]);
	CHILD_CHECK(leftovers_are(expect));
	snprintf(text, sizeof(text), "[::1]:%d", ports[0]);
	CHILD_CHECK(take_text(text) == 3);

	/* the master refuses to start with a leftover and closes it: the port is free again */
	systemd_listen_close_leftovers();
	CHILD_CHECK(leftovers_are(NULL));
	CHILD_CHECK(fcntl(4, F_GETFD) == -1);
	CHILD_CHECK(fcntl(3, F_GETFD) != -1); /* the taken one belongs to the caller */
}

static void test_ipv6_and_close_leftovers(void **state)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 probe = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	bool have_ipv6 = fd >= 0 && bind(fd, (struct sockaddr *)&probe, sizeof(probe)) == 0;

	if (fd >= 0)
		close(fd);
	if (!have_ipv6)
		skip();
	run_in_child(child_ipv6_and_close_leftovers);
}

static void child_not_activated(void)
{
	int port, fd = listen_loopback(AF_INET, &port);
	char text[64];
	char *error = NULL;

	/* the variables name another process (the master's parent, say): not ours to take */
	pass_like_systemd(&fd, 1, getppid());
	CHILD_CHECK(systemd_listen_collect(&error) == 0);
	CHILD_CHECK(error == NULL);
	snprintf(text, sizeof(text), "127.0.0.1:%d", port);
	CHILD_CHECK(take_text(text) == -1);
	CHILD_CHECK(leftovers_are(NULL));
}

static void child_no_environment(void)
{
	char *error = NULL;

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	CHILD_CHECK(systemd_listen_collect(&error) == 0);
	CHILD_CHECK(leftovers_are(NULL));
}

static void test_not_activated(void **state)
{
	run_in_child(child_not_activated);
	run_in_child(child_no_environment);
}

/* A datagram socket (ListenDatagram=) cannot be accepted on. */
static void child_refuses_datagram(void)
{
	int fds[2], port;
	char *error = NULL;

	fds[0] = listen_loopback(AF_INET, &port);
	fds[1] = socket(AF_INET, SOCK_DGRAM, 0);
	CHILD_CHECK(fds[1] >= 0);
	pass_like_systemd(fds, 2, getpid());
	CHILD_CHECK(systemd_listen_collect(&error) == -1);
	CHILD_CHECK(error != NULL && strstr(error, "descriptor 4") != NULL);
	free(error);
	/* what was adopted before the bad one is closed with the leftovers */
	systemd_listen_close_leftovers();
	CHILD_CHECK(fcntl(3, F_GETFD) == -1);
}

/* A connected or merely bound socket (Accept=yes passes connections) is not a listener either. */
static void child_refuses_not_listening(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	char *error = NULL;

	CHILD_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	pass_like_systemd(&fd, 1, getpid());
	CHILD_CHECK(systemd_listen_collect(&error) == -1);
	CHILD_CHECK(error != NULL && strstr(error, "descriptor 3") != NULL);
	free(error);
}

static void child_refuses_malformed_environment(void)
{
	char *error = NULL;
	char pid[32];

	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", "two", 1);
	CHILD_CHECK(systemd_listen_collect(&error) == -1);
	CHILD_CHECK(error != NULL && strstr(error, "LISTEN_FDS") != NULL);
	free(error);
}

static void test_refuses_what_cannot_be_served(void **state)
{
	run_in_child(child_refuses_datagram);
	run_in_child(child_refuses_not_listening);
	run_in_child(child_refuses_malformed_environment);
}

static void test_format_address(void **state)
{
	char buf[128];
	struct sockaddr_in6 sin6 = {
	    .sin6_family = AF_INET6, .sin6_port = htons(995), .sin6_addr = IN6ADDR_ANY_INIT};
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	systemd_listen_format_address((struct sockaddr *)&sin6, sizeof(sin6), buf, sizeof(buf));
	assert_string_equal(buf, "[::]:995");

	/* an abstract name: a leading NUL, then exactly the bytes the length counts */
	memcpy(sun.sun_path, "\0buzon", 6);
	systemd_listen_format_address((struct sockaddr *)&sun,
				      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 6), buf,
				      sizeof(buf));
	assert_string_equal(buf, "unix:@buzon");

	struct config_listen where;
	assert_int_equal(config_parse_listen("*:110", &where), 0);
	systemd_listen_format_address((struct sockaddr *)&where.addr, where.addr_len, buf,
				      sizeof(buf));
	assert_string_equal(buf, "0.0.0.0:110"); /* what ListenStream= must say for `*:110` */
	free(where.text);
}

/* Receives one notification on sock, NUL-terminated, into buf. */
static void notify_receive(int sock, char *buf, size_t size)
{
	ssize_t n = recv(sock, buf, size - 1, MSG_DONTWAIT);

	assert_true(n > 0);
	buf[n] = '\0';
}

static void test_notify_messages(void **state)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char buf[256];
	int sock = socket(AF_UNIX, SOCK_DGRAM, 0);

	assert_true(sock >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "/tmp/buzon-test-notify-%d.sock",
		 (int)getpid());
	unlink(addr.sun_path);
	assert_int_equal(bind(sock, (struct sockaddr *)&addr, sizeof(addr)), 0);
	setenv("NOTIFY_SOCKET", addr.sun_path, 1);

	systemd_notify_ready("serving, 2 POP3 workers");
	notify_receive(sock, buf, sizeof(buf));
	assert_string_equal(buf, "READY=1\nSTATUS=serving, 2 POP3 workers");
	systemd_notify_reloading();
	notify_receive(sock, buf, sizeof(buf));
	assert_true(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
	assert_non_null(strstr(buf, "\nSTATUS=reloading"));
	systemd_notify_stopping("draining 3 sessions");
	notify_receive(sock, buf, sizeof(buf));
	assert_string_equal(buf, "STOPPING=1\nSTATUS=draining 3 sessions");
	/* the master notifies again later (every reload): the variable must stay */
	assert_non_null(getenv("NOTIFY_SOCKET"));

	/* outside systemd the calls do nothing */
	unsetenv("NOTIFY_SOCKET");
	systemd_notify_ready("serving");
	assert_int_equal(recv(sock, buf, sizeof(buf), MSG_DONTWAIT), -1);
	close(sock);
	unlink(addr.sun_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_matches_by_address),
	    cmocka_unit_test(test_ipv6_and_close_leftovers),
	    cmocka_unit_test(test_not_activated),
	    cmocka_unit_test(test_refuses_what_cannot_be_served),
	    cmocka_unit_test(test_format_address),
	    cmocka_unit_test(test_notify_messages),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

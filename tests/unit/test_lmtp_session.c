/* LMTP session tests in one process: a real lmtp_session on a socketpair, real Maildirs in a temp
 * directory, and this test playing the auth process on the other end of the auth socketpair
 * (alice and small exist, small with a 100-octet quota; "broken" makes the lookup fail
 * temporarily; every other address is unknown). */
#include <dirent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth_client.h"
#include "auth/auth_proto.h"
#include "core/config.h"
#include "core/util.h"
#include "lmtp/lmtp_session.h"

struct harness {
	char dir[64];
	struct buzon_config config;
	struct lmtp_server server;
	struct event *auth_event;
	int auth_peer_fd; /* the test's end: plays the auth process */
	int client_fd;	  /* the test's end of the LMTP connection */
	unsigned int lookups;
	char buf[1 << 16];
	size_t len;
};

/* The local part of an address, into buf. */
static void local_part(const struct auth_field_value *user, char *buf, size_t size)
{
	size_t len = user->len < size - 1 ? user->len : size - 1;

	memcpy(buf, user->data, len);
	buf[len] = '\0';
	char *at = strchr(buf, '@');
	if (at != NULL)
		*at = '\0';
}

static void fake_auth_readable(evutil_socket_t fd, short what, void *arg)
{
	struct harness *h = arg;
	unsigned char in[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg;
	struct auth_msg_builder out;
	char user[128];
	ssize_t len = recv(fd, in, sizeof(in), MSG_DONTWAIT);

	if (len <= 0 || auth_msg_decode(in, (size_t)len, &msg) < 0 || msg.type != AUTH_MSG_LOOKUP)
		return;
	h->lookups++;
	local_part(&msg.fields[AUTH_FIELD_USER], user, sizeof(user));
	bool known = strcmp(user, "alice") == 0 || strcmp(user, "small") == 0;
	enum auth_result result = known				? AUTH_RESULT_OK
				  : strcmp(user, "broken") == 0 ? AUTH_RESULT_TEMPFAIL
								: AUTH_RESULT_FAIL;
	auth_msg_begin(&out, AUTH_MSG_RESULT, msg.id);
	auth_msg_add_u32(&out, AUTH_FIELD_RESULT, result);
	if (known) {
		char *location = xasprintf("maildir:%s/%s", h->dir, user);
		auth_msg_add_str(&out, AUTH_FIELD_USER, user);
		auth_msg_add_str(&out, AUTH_FIELD_LOCATION, location);
		if (strcmp(user, "small") == 0)
			auth_msg_add_u64(&out, AUTH_FIELD_QUOTA_BYTES, 100);
		free(location);
	}
	size_t n = auth_msg_finish(&out);
	assert_true(n > 0);
	assert_true(send(fd, out.buf, n, 0) == (ssize_t)n);
}

static int setup(void **state)
{
	struct harness *h = xcalloc(1, sizeof(*h));
	int auth_pair[2], conn_pair[2];

	strcpy(h->dir, "/tmp/buzon-lmtp-XXXXXX");
	assert_non_null(mkdtemp(h->dir));
	h->config.idle_timeout_secs = 5;
	h->config.lmtp_max_message_size = 10000;
	h->server.config = &h->config;
	h->server.base = event_base_new();
	strcpy(h->server.hostname, "mx.example");
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, auth_pair), 0);
	h->server.auth = auth_client_create(h->server.base, auth_pair[0]);
	h->auth_peer_fd = auth_pair[1];
	h->auth_event =
	    event_new(h->server.base, h->auth_peer_fd, EV_READ | EV_PERSIST, fake_auth_readable, h);
	event_add(h->auth_event, NULL);

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, conn_pair), 0);
	h->client_fd = conn_pair[1];
	fcntl(h->client_fd, F_SETFL, O_NONBLOCK);
	evutil_make_socket_nonblocking(conn_pair[0]);
	assert_non_null(lmtp_session_create(&h->server, conn_pair[0], NULL, 0));
	*state = h;
	return 0;
}

static int teardown(void **state)
{
	struct harness *h = *state;

	while (h->server.sessions != NULL)
		lmtp_session_destroy(h->server.sessions, "test");
	auth_client_destroy(&h->server.auth);
	event_free(h->auth_event);
	close(h->auth_peer_fd);
	if (h->client_fd >= 0)
		close(h->client_fd);
	event_base_free(h->server.base);
	char *cmd = xasprintf("rm -rf '%s'", h->dir);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(h);
	return 0;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the loop until the client has received want (or EOF when want is NULL), at most timeout
 * seconds. Returns true if it arrived. */
static bool pump_until(struct harness *h, const char *want, double timeout)
{
	double deadline = now_seconds() + timeout;

	while (now_seconds() < deadline) {
		struct timeval slice = {.tv_usec = 10000};
		event_base_loopexit(h->server.base, &slice);
		event_base_dispatch(h->server.base);
		ssize_t n = read(h->client_fd, h->buf + h->len, sizeof(h->buf) - 1 - h->len);
		if (n > 0) {
			h->len += (size_t)n;
			h->buf[h->len] = '\0';
		}
		if (want != NULL && strstr(h->buf, want) != NULL)
			return true;
		if (want == NULL && n == 0)
			return true;
	}
	return false;
}

static void say(struct harness *h, const char *text)
{
	assert_int_equal(write_full(h->client_fd, text, strlen(text)), 0);
}

static unsigned int count_in(const char *haystack, const char *needle)
{
	unsigned int n = 0;

	for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* The files in user's Maildir subdirectory sub (missing directory: 0). */
static int count_files(struct harness *h, const char *user, const char *sub)
{
	char *path = xasprintf("%s/%s/%s", h->dir, user, sub);
	DIR *dir = opendir(path);
	struct dirent *d;
	int n = 0;

	free(path);
	if (dir == NULL)
		return 0;
	while ((d = readdir(dir)) != NULL)
		if (d->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

/* The only message in user's new/, newly allocated. */
static char *read_only_message(struct harness *h, const char *user)
{
	char *path = xasprintf("%s/%s/new", h->dir, user);
	DIR *dir = opendir(path);
	struct dirent *d;
	char *file = NULL;
	static char text[1 << 16];

	assert_non_null(dir);
	while ((d = readdir(dir)) != NULL)
		if (d->d_name[0] != '.') {
			assert_null(file);
			file = xasprintf("%s/%s", path, d->d_name);
		}
	closedir(dir);
	assert_non_null(file);
	int fd = open(file, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, text, sizeof(text) - 1);
	assert_true(n >= 0);
	text[n] = '\0';
	close(fd);
	free(file);
	free(path);
	return xstrdup(text);
}

static void test_greeting_and_lhlo(void **state)
{
	struct harness *h = *state;

	assert_true(pump_until(h, "220 mx.example LMTP buzon ready\r\n", 2));
	say(h, "LHLO client.example\r\n");
	assert_true(pump_until(h, "250 SIZE 10000\r\n", 2));
	const char *want[] = {
	    "250-mx.example\r\n", "250-PIPELINING\r\n", "250-ENHANCEDSTATUSCODES\r\n",
	    "250-8BITMIME\r\n",	  "250-SMTPUTF8\r\n",	"250-CHUNKING\r\n"};
	for (size_t i = 0; i < ARRAY_SIZE(want); i++)
		assert_non_null(strstr(h->buf, want[i]));
	say(h, "HELO client.example\r\nEHLO client.example\r\nFOO\r\nVRFY alice\r\n");
	assert_true(pump_until(h, "252 2.5.2", 2));
	assert_int_equal(count_in(h->buf, "500 5.5.1"), 2);
	assert_non_null(strstr(h->buf, "500 5.5.2"));
}

/* One known, one unknown recipient: one reply after the text, for the one accepted. */
static void test_data_two_recipients(void **state)
{
	struct harness *h = *state;

	say(h, "LHLO c\r\n");
	assert_true(pump_until(h, "250 SIZE", 2));
	say(h, "MAIL FROM:<sender@example.net>\r\n");
	assert_true(pump_until(h, "250 2.1.0", 2));
	say(h, "RCPT TO:<alice@example.org>\r\n");
	assert_true(pump_until(h, "250 2.1.5 <alice@example.org>", 2));
	say(h, "RCPT TO:<nobody@example.org>\r\n");
	assert_true(pump_until(h, "550 5.1.1 <nobody@example.org>", 2));
	say(h, "DATA\r\n");
	assert_true(pump_until(h, "354 ", 2));
	size_t mark = h->len;
	say(h, "Subject: hi\r\n\r\nline one\r\n..dotted\r\n.\r\n");
	assert_true(pump_until(h, "250 2.0.0 <alice@example.org> delivered\r\n", 3));
	/* exactly one reply for the one accepted recipient */
	assert_int_equal(count_in(h->buf + mark, "\r\n"), 1);

	char *text = read_only_message(h, "alice");
	assert_non_null(strstr(text, "Return-Path: <sender@example.net>\n"));
	assert_non_null(strstr(text, "\nSubject: hi\n\nline one\n.dotted\n"));
	assert_null(strchr(text, '\r'));
	assert_null(strstr(text, "..dotted"));
	free(text);
	assert_int_equal(count_files(h, "nobody", "new"), 0);
}

/* Everything in one write: replies come back in order, and the text after 354 is message. */
static void test_pipelined(void **state)
{
	struct harness *h = *state;

	say(h, "LHLO c\r\nMAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<unknown@example.org>\r\n"
	       "RCPT TO:<alice@example.org>\r\nDATA\r\nNOOP\r\n.\r\nNOOP\r\nQUIT\r\n");
	assert_true(pump_until(h, "221 2.0.0", 3));
	const char *order[] = {"220 ",
			       "250 SIZE",
			       "250 2.1.0",
			       "550 5.1.1",
			       "250 2.1.5",
			       "354 ",
			       "250 2.0.0 <alice@example.org> delivered",
			       "250 2.0.0 OK",
			       "221 2.0.0"};
	const char *at = h->buf;
	for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
		const char *next = strstr(at, order[i]);
		if (next == NULL)
			fail_msg("missing or out of order: %s in %s", order[i], h->buf);
		at = next;
	}
	assert_int_equal(count_in(h->buf, "250 2.0.0 OK"), 1); /* the NOOP inside was text */
	char *text = read_only_message(h, "alice");
	assert_non_null(strstr(text, "Return-Path: <>\n"));
	assert_non_null(strstr(text, "NOOP\n"));
	free(text);
	assert_true(pump_until(h, NULL, 2));
	assert_null(h->server.sessions);
}

/* CHUNKING: counted octets, no dot-unstuffing, CRLF split across chunks. */
static void test_bdat(void **state)
{
	struct harness *h = *state;

	say(h, "LHLO c\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n");
	assert_true(pump_until(h, "250 2.1.5", 2));
	say(h, "BDAT 12\r\nA: b\r\n\r\n..x\r");
	assert_true(pump_until(h, "250 2.0.0 12 octets", 2));
	say(h, "BDAT 4 LAST\r\n\nend");
	assert_true(pump_until(h, "250 2.0.0 <alice@example.org> delivered\r\n", 3));
	char *text = read_only_message(h, "alice");
	assert_non_null(strstr(text, "\nA: b\n\n..x\nend"));
	assert_null(strchr(text, '\r'));
	free(text);
	/* the transaction is over: a new one needs MAIL again */
	say(h, "BDAT 3 LAST\r\nabcNOOP\r\n");
	assert_true(pump_until(h, "250 2.0.0 OK", 2));
	assert_non_null(strstr(h->buf, "503 5.5.1"));
}

static void test_wrong_sequence(void **state)
{
	struct harness *h = *state;

	say(h, "MAIL FROM:<a@example.net>\r\n");
	assert_true(pump_until(h, "503 5.5.1", 2));
	say(h, "LHLO c\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
	       "MAIL FROM:<a@example.net>\r\nMAIL FROM:<b@example.net>\r\nDATA\r\nNOOP\r\n");
	assert_true(pump_until(h, "250 2.0.0 OK", 2));
	/* MAIL before LHLO, RCPT and DATA before MAIL, MAIL twice, DATA without recipients */
	assert_int_equal(count_in(h->buf, "503 5.5.1"), 5);
	assert_int_equal(h->lookups, 0);
	say(h, "RSET\r\nMAIL FROM:alice\r\nMAIL FROM:<a@example.net>\r\n"
	       "RCPT TO:<broken@example.org>\r\n");
	assert_true(pump_until(h, "451 4.3.0 <broken@example.org>", 2));
	assert_non_null(strstr(h->buf, "501 5.5.4"));
}

static void test_size_limits(void **state)
{
	struct harness *h = *state;

	say(h, "LHLO c\r\nMAIL FROM:<a@example.net> SIZE=20000\r\n");
	assert_true(pump_until(h, "552 5.3.4", 2));
	say(h, "MAIL FROM:<a@example.net> SIZE=500\r\nRCPT TO:<small@example.org>\r\n"
	       "RCPT TO:<alice@example.org>\r\nDATA\r\n");
	assert_true(pump_until(h, "354 ", 2));
	assert_non_null(strstr(h->buf, "552 5.2.2 <small@example.org>"));
	/* 120 lines of 100 octets: over the 10000-octet limit; read to the end, refuse */
	char line[101];
	memset(line, 'x', 98);
	memcpy(line + 98, "\r\n", 3);
	for (int i = 0; i < 120; i++)
		say(h, line);
	say(h, ".\r\nNOOP\r\n");
	assert_true(pump_until(h, "250 2.0.0 OK", 3));
	assert_non_null(strstr(h->buf, "552 5.3.4 <alice@example.org>"));
	assert_int_equal(count_files(h, "alice", "new"), 0);
	assert_int_equal(count_files(h, "alice", "tmp"), 0);
}

static void test_rset(void **state)
{
	struct harness *h = *state;

	say(h, "LHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nRSET\r\n"
	       "DATA\r\n");
	assert_true(pump_until(h, "503 5.5.1", 2));
	assert_non_null(strstr(h->buf, "250 2.0.0 OK"));
	assert_int_equal(count_files(h, "alice", "new"), 0);
}

/* A command line over 512 octets is refused once; the next command still works. */
static void test_long_line(void **state)
{
	struct harness *h = *state;
	char line[2000];

	memset(line, 'N', sizeof(line) - 3);
	memcpy(line + sizeof(line) - 3, "\r\n", 3);
	say(h, line);
	say(h, "NOOP\r\n");
	assert_true(pump_until(h, "250 2.0.0 OK", 2));
	assert_int_equal(count_in(h->buf, "500 5.5.6"), 1);
}

/* The size of the only message in user's new/. */
static off_t only_message_size(struct harness *h, const char *user)
{
	char *path = xasprintf("%s/%s/new", h->dir, user);
	DIR *dir = opendir(path);
	struct dirent *d;
	struct stat st = {.st_size = -1};

	assert_non_null(dir);
	while ((d = readdir(dir)) != NULL)
		if (d->d_name[0] != '.')
			assert_int_equal(fstatat(dirfd(dir), d->d_name, &st, 0), 0);
	closedir(dir);
	free(path);
	return st.st_size;
}

/* A message whose last octet is NUL still gets its final line end (fuzzer finding: NUL was taken
 * for "nothing written yet"). */
static void test_bdat_ends_in_nul(void **state)
{
	struct harness *h = *state;
	static const char headers[] =
	    "Return-Path: <s@example.net>\nDelivered-To: alice@example.org\n";

	say(h, "LHLO c\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n");
	assert_true(pump_until(h, "250 2.1.5", 2));
	assert_int_equal(write_full(h->client_fd, "BDAT 3 LAST\r\nab\0", 16), 0);
	assert_true(pump_until(h, "250 2.0.0 <alice@example.org> delivered\r\n", 3));
	assert_int_equal(only_message_size(h, "alice"), sizeof(headers) - 1 + 4); /* "ab\0\n" */
}

/* A quoted pair may not smuggle a control byte into a path, the lookup or the reply (fuzzer
 * finding). */
static void test_quoted_pair_control_byte(void **state)
{
	struct harness *h = *state;

	say(h, "LHLO c\r\nMAIL FROM:<s@example.net>\r\nRCPT TO:<\"a\\\001\"@example.org>\r\n"
	       "RCPT TO:<\"a\\ b\"@example.org>\r\n");
	assert_true(pump_until(h, "550 5.1.1", 2));
	assert_int_equal(count_in(h->buf, "501 5.5.4"), 1);
	assert_null(strchr(h->buf, '\001'));
	assert_int_equal(h->lookups, 1); /* only the printable one was looked up */
}

/* A connection that drops mid-DATA delivers nothing and leaves no temp file. */
static void test_drop_mid_data(void **state)
{
	struct harness *h = *state;

	say(h, "LHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
	       "Subject: half\r\n");
	assert_true(pump_until(h, "354 ", 2));
	close(h->client_fd);
	h->client_fd = -1;
	for (int i = 0; i < 20 && h->server.sessions != NULL; i++) {
		struct timeval slice = {.tv_usec = 10000};
		event_base_loopexit(h->server.base, &slice);
		event_base_dispatch(h->server.base);
	}
	assert_null(h->server.sessions);
	assert_int_equal(count_files(h, "alice", "new"), 0);
	assert_int_equal(count_files(h, "alice", "tmp"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_greeting_and_lhlo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_data_two_recipients, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bdat, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wrong_sequence, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_size_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rset, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_drop_mid_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bdat_ends_in_nul, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quoted_pair_control_byte, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

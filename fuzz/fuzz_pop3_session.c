/* Fuzzes a whole POP3 session (src/pop3/): the input is what the client sends, byte for byte, over
 * a real socketpair into a real pop3_session with a real Maildir (on tmpfs) and the worker's
 * offload threads. This target plays the auth process on the other end of the auth socketpair,
 * like tests/unit/test_session.c: USER/PASS with the password "right" logs in, the SASL
 * mechanisms run for real against the user "demo" whose secret is {PLAIN}right, and APOP accepts
 * the digest of 32 zeros for "demo".
 *
 * Each input runs to the end: the loop runs until the session has done all it can with the input,
 * then the client half-closes, and the loop runs until the session is gone and every offload job
 * and auth message is done. The Maildir is put back as it was before every input (QUIT commits
 * deletions and Seen flags), so that each input runs the same way every time.
 *
 * Checks: no memory error or leak, no stall (libFuzzer's -timeout), and the client never receives
 * a bare LF or an unterminated last line. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <sys/stat.h>

#include "auth/auth_client.h"
#include "auth/auth_proto.h"
#include "core/config.h"
#include "core/log.h"
#include "core/offload.h"
#include "fuzz_loop.h"
#include "net/ip_limit.h"
#include "pop3/session.h"
#include "pop3/worker.h"
#include "sasl/sasl.h"
#include "sasl/sasl_testing.h"
#include "store/store.h"

/* The messages of the test Maildir: names and texts cover new/ and cur/, S= and W= in names,
 * flags, bare LF and CRLF, dot lines, a lone CR at the end and an empty message. */
struct fuzz_message {
	const char *name; /* under the Maildir */
	const char *text;
};

static const struct fuzz_message messages[] = {
    {"new/1700000001.M1P1.fuzz",
     "From: a@example.org\nSubject: one\n\nbody line\n.dotted line\n..two dots\n.\nlast\n"},
    {"cur/1700000002.M2P1.fuzz,S=32,W=32:2,S", "Subject: two\r\n\r\nline\r\n.\r\nend\r\n\r\n"},
    {"cur/1700000003.M3P1.fuzz:2,", "Subject: three\n\nno final newline\r"},
    {"cur/1700000004.M4P1.fuzz:2,FS", ""},
};

struct harness {
	char *scratch;
	char *maildir;
	char *location;
	char *uidlist_template;
	size_t uidlist_len;
	struct buzon_config *config;
	struct pop3_worker worker;
	int auth_peer_fd;   /* this target's end: plays the auth process */
	int auth_client_fd; /* the worker's end, owned by its auth_client */
	struct event *auth_event;
	/* the fake auth process's SASL conversation */
	struct sasl_conv *conv;
	uint32_t conv_id;
	struct sasl_channel chan;
	struct sasl_lookup lookup;
	struct fuzz_client client;
	int session_fd;
};

static struct harness h;

static void self_test(void);

static const char *fake_secret(void *context, const char *user)
{
	return strcmp(user, "demo") == 0 ? "{PLAIN}right" : NULL;
}

static const unsigned char fake_key[32] = "fuzz-fake-key-fuzz-fake-key-0123";

/* ---- the fake auth process ---- */

static void auth_reply_send(struct auth_msg_builder *out)
{
	size_t n = auth_msg_finish(out);

	FUZZ_CHECK(n > 0);
	FUZZ_CHECK(send(h.auth_peer_fd, out->buf, n, MSG_NOSIGNAL) == (ssize_t)n);
}

static void auth_reply_result(uint32_t id, bool ok, const char *user)
{
	struct auth_msg_builder out;

	auth_msg_begin(&out, AUTH_MSG_RESULT, id);
	auth_msg_add_u32(&out, AUTH_FIELD_RESULT, ok ? AUTH_RESULT_OK : AUTH_RESULT_FAIL);
	if (ok) {
		auth_msg_add_str(&out, AUTH_FIELD_USER, user);
		auth_msg_add_str(&out, AUTH_FIELD_LOCATION, h.location);
		auth_msg_add_u32(&out, AUTH_FIELD_EXPIRE_DAYS, AUTH_EXPIRE_NEVER);
		auth_msg_add_u32(&out, AUTH_FIELD_LOGIN_DELAY, 0);
	}
	auth_reply_send(&out);
}

static void fake_conv_end(void)
{
	sasl_conv_free(&h.conv);
	h.conv_id = 0;
}

/* One SASL step, as the auth process does it: challenges go back, a password is checked here. */
static void fake_sasl_step(const struct auth_msg *msg, const struct auth_field_value *response)
{
	struct sasl_output out;
	struct auth_msg_builder reply;

	if (h.conv == NULL || msg->id != h.conv_id) {
		auth_reply_result(msg->id, false, NULL);
		return;
	}
	enum sasl_status status = sasl_conv_step(h.conv, response->present ? response->data : NULL,
						 response->len, response->present, &out);
	switch (status) {
	case SASL_STATUS_CONTINUE:
		auth_msg_begin(&reply, AUTH_MSG_CHALLENGE, msg->id);
		auth_msg_add_bytes(&reply, AUTH_FIELD_CHALLENGE, out.challenge, out.challenge_len);
		auth_reply_send(&reply);
		break;
	case SASL_STATUS_CHECK_PASSWORD:
		auth_reply_result(
		    msg->id, strcmp(out.user, "demo") == 0 && strcmp(out.password, "right") == 0,
		    out.user);
		fake_conv_end();
		break;
	case SASL_STATUS_SUCCESS:
		auth_reply_result(msg->id, true, out.user);
		fake_conv_end();
		break;
	case SASL_STATUS_FAILURE:
		auth_reply_result(msg->id, false, NULL);
		fake_conv_end();
		break;
	}
	sasl_output_clear(&out);
}

static void fake_auth_readable(evutil_socket_t fd, short what, void *arg)
{
	unsigned char in[AUTH_PROTO_MAX_MESSAGE];
	struct auth_msg msg;
	ssize_t len = recv(fd, in, sizeof(in), MSG_DONTWAIT);

	if (len <= 0)
		return;
	/* the worker must only ever send what the protocol allows */
	FUZZ_CHECK(auth_msg_decode(in, (size_t)len, &msg) == 0);
	const struct auth_field_value *f = msg.fields;
	switch (msg.type) {
	case AUTH_MSG_VERIFY:
		auth_reply_result(msg.id,
				  f[AUTH_FIELD_PASSWORD].len == 5 &&
				      memcmp(f[AUTH_FIELD_PASSWORD].data, "right", 5) == 0,
				  "demo");
		break;
	case AUTH_MSG_APOP: {
		static const char zeros[32] = "00000000000000000000000000000000";
		auth_reply_result(msg.id,
				  f[AUTH_FIELD_USER].len == 4 &&
				      memcmp(f[AUTH_FIELD_USER].data, "demo", 4) == 0 &&
				      f[AUTH_FIELD_DIGEST].len == 32 &&
				      memcmp(f[AUTH_FIELD_DIGEST].data, zeros, 32) == 0,
				  "demo");
		break;
	}
	case AUTH_MSG_SASL_START: {
		char mech[32];
		size_t mech_len = f[AUTH_FIELD_MECH].len < sizeof(mech) - 1 ? f[AUTH_FIELD_MECH].len
									    : sizeof(mech) - 1;
		memcpy(mech, f[AUTH_FIELD_MECH].data, mech_len);
		mech[mech_len] = '\0';
		const struct sasl_mech *m = sasl_mech_find(mech);
		fake_conv_end();
		if (m == NULL) {
			auth_reply_result(msg.id, false, NULL);
			break;
		}
		h.conv = sasl_conv_new(m, &h.chan, &h.lookup);
		h.conv_id = msg.id;
		fake_sasl_step(&msg, &f[AUTH_FIELD_RESPONSE]);
		break;
	}
	case AUTH_MSG_SASL_CONTINUE:
		fake_sasl_step(&msg, &f[AUTH_FIELD_RESPONSE]);
		break;
	case AUTH_MSG_SASL_ABORT:
		if (msg.id == h.conv_id)
			fake_conv_end();
		break;
	default:
		FUZZ_CHECK(!"unexpected auth message type");
	}
}

/* ---- the Maildir ---- */

static void maildir_put_messages(void)
{
	static const char *const subdirs[] = {"", "/new", "/cur", "/tmp"};

	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		char *dir = xasprintf("%s%s", h.maildir, subdirs[i]);
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			abort();
		free(dir);
	}
	for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
		char *path = xasprintf("%s/%s", h.maildir, messages[i].name);
		fuzz_write_file(path, messages[i].text, strlen(messages[i].text));
		free(path);
	}
}

/* Puts the Maildir back as the template: the same files, the same UID index. */
static void maildir_restore(void)
{
	fuzz_remove_tree(h.maildir);
	maildir_put_messages();
	char *index = xasprintf("%s/%s", h.maildir, "buzon-uidlist");
	fuzz_write_file(index, h.uidlist_template, h.uidlist_len);
	free(index);
}

/* Opens the Maildir once, so that its UIDs are assigned, and keeps the index as the template. */
static void maildir_make_template(void)
{
	struct store_mailbox *box;
	enum store_error kind;
	char *error = NULL;

	maildir_put_messages();
	if (store_backend_maildir.open(h.maildir, &box, &kind, &error) < 0) {
		fprintf(stderr, "maildir open: %s\n", error);
		abort();
	}
	FUZZ_CHECK(box->count == sizeof(messages) / sizeof(messages[0]));
	store_backend_maildir.close(&box);
	char *index = xasprintf("%s/%s", h.maildir, "buzon-uidlist");
	h.uidlist_template = fuzz_read_file(index, &h.uidlist_len);
	FUZZ_CHECK(h.uidlist_template != NULL);
	free(index);
}

static void cleanup(void)
{
	fuzz_remove_tree(h.scratch);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int auth_pair[2];

	signal(SIGPIPE, SIG_IGN);
	log_init("fuzz", LOG_LEVEL_ERROR);
	if (sodium_init() < 0)
		abort();
	sasl_scram_set_test_nonce("fuzzservernonce");
	sasl_cram_set_test_challenge("<1896.697170952@postoffice.reston.mci.net>");
	h.scratch = fuzz_scratch_dir("pop3");
	atexit(cleanup);
	h.maildir = xasprintf("%s/mail", h.scratch);
	h.location = xasprintf("maildir:%s", h.maildir);
	maildir_make_template();

	/* the timeouts keep their defaults (minutes): a stall shows as a libFuzzer timeout */
	h.config = fuzz_config_load(h.scratch,
				    "[pop3]\n"
				    "listen = 127.0.0.1:1\n"
				    "greeting = ready\n"
				    "max_connections = 10\n"
				    "[auth]\n"
				    "passwd_file = /nonexistent\n"
				    "cleartext = loopback\n"
				    "mechanisms = PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 SCRAM-SHA-1\n"
				    "mechanisms = EXTERNAL\n"
				    "apop = yes\n"
				    "[mail]\n"
				    "location = maildir:/nonexistent/%u\n");
	h.worker.config = h.config;
	h.worker.base = event_base_new();
	h.worker.ip_limit = ip_limit_create();
	h.worker.offload = offload_pool_new(h.worker.base, 1);
	h.worker.implementation = "buzon fuzz";
	snprintf(h.worker.hostname, sizeof(h.worker.hostname), "fuzz.example");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, auth_pair) < 0)
		abort();
	h.worker.auth = auth_client_create(h.worker.base, auth_pair[0]);
	h.auth_client_fd = auth_pair[0];
	h.auth_peer_fd = auth_pair[1];
	h.auth_event = event_new(h.worker.base, h.auth_peer_fd, EV_READ | EV_PERSIST,
				 fake_auth_readable, NULL);
	event_add(h.auth_event, NULL);
	h.lookup.secret = fake_secret;
	h.lookup.fake_key = fake_key;
	h.lookup.fake_key_len = sizeof(fake_key);
	h.lookup.fake_iterations = 64; /* PBKDF2 for SCRAM against {PLAIN}: cheap here */
	self_test();
	return 0;
}

/* ---- one input ---- */

/* No auth datagram in either direction and no offload job waits. */
static bool auth_idle(void)
{
	return fuzz_fd_pending(h.auth_peer_fd) == 0 && fuzz_fd_pending(h.auth_client_fd) == 0 &&
	       offload_pending(h.worker.offload) == 0;
}

/* The session can do nothing more with the input it has: nothing in flight, no complete line. */
static bool session_settled(void *context)
{
	struct pop3_session *s = h.worker.sessions;

	if (s == NULL)
		return auth_idle();
	return !s->auth_waiting && !s->store_waiting && s->delay_timer == NULL &&
	       s->stream == POP3_STREAM_NONE && !s->closing && auth_idle() &&
	       fuzz_fd_pending(h.session_fd) == 0 &&
	       evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
	       !fuzz_evbuffer_has_line(bufferevent_get_input(s->bev));
}

static bool session_gone(void *context)
{
	return h.worker.sessions == NULL && auth_idle();
}

/* Every LF the client gets ends a CRLF, and so does the last line. */
static void check_output(struct evbuffer *received)
{
	size_t len = evbuffer_get_length(received);
	const char *out = (const char *)evbuffer_pullup(received, -1);

	for (const char *lf = memchr(out, '\n', len); lf != NULL;
	     lf = memchr(lf + 1, '\n', len - (size_t)(lf + 1 - out)))
		FUZZ_CHECK(lf > out && lf[-1] == '\r');
	FUZZ_CHECK(len == 0 || (len >= 2 && out[len - 1] == '\n'));
}

/* Runs one connection with data as the client's side; the caller reads h.client.received, then
 * calls session_end(). */
static void session_run(const void *data, size_t size)
{
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};

	maildir_restore();
	fuzz_client_open(&h.client, h.worker.base, &h.session_fd);
	FUZZ_CHECK(pop3_session_create(&h.worker, h.session_fd, (struct sockaddr *)&peer,
				       sizeof(peer), false) != NULL);
	fuzz_client_send(&h.client, h.worker.base, data, size);
	fuzz_loop_until(h.worker.base, session_settled, NULL);
	shutdown(h.client.fd, SHUT_WR);
	fuzz_loop_until(h.worker.base, session_gone, NULL);
	/* what is still in the socket was sent before the session closed it */
	fuzz_client_readable(h.client.fd, EV_READ, &h.client);
	check_output(h.client.received);
}

static void session_end(void)
{
	fuzz_client_close(&h.client);
	fake_conv_end();
}

/* The harness must still reach TRANSACTION and stream a message: a change elsewhere (a new
 * config option, a refused login) would otherwise leave the fuzzer exploring only the greeting.
 */
static void self_test(void)
{
	static const char script[] = "USER demo\r\nPASS right\r\nRETR 1\r\nQUIT\r\n";
	static const char *const expected[] = {"+OK Logged in, 4 messages", "\r\n..dotted line\r\n",
					       "+OK Logging out"};

	session_run(script, strlen(script));
	evbuffer_add(h.client.received, "", 1);
	const char *out = (const char *)evbuffer_pullup(h.client.received, -1);
	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
		if (strstr(out, expected[i]) == NULL) {
			fprintf(stderr, "fuzz_pop3_session self-test: no \"%s\" in:\n%s\n",
				expected[i], out);
			abort();
		}
	}
	session_end();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	session_run(data, size);
	session_end();
	return 0;
}

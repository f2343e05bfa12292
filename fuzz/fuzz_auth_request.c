/* Fuzzes what the auth process does with the datagrams a worker sends it: the strict decoder
 * (src/auth/auth_proto.c) and the request handling of src/auth/auth_server.c, reached through
 * auth_server_testing.h: VERIFY with a password, APOP, SASL conversations (start, continue, abort,
 * reused ids, master users), LMTP recipient lookups, penalties and bans. A compromised POP3 or LMTP
 * worker can send the auth process anything, so this is a trust boundary.
 *
 * One auth server per process, as in the daemon: its passwd-file (in a scratch directory) is
 * loaded once, its one hashing thread runs for real. Each input gets a fresh connection and a
 * fresh penalty table (auth_server_testing_forget_clients()), so that inputs do not depend on each
 * other. Password checks run in the hashing thread; this harness waits for them (settle) after
 * every datagram unless the record says not to, so that checks can still be in flight when the
 * next request, a SASL abort, a reused id or a closed connection arrives. With one thread and
 * verdicts taken only when settling, every input runs the same way each time.
 *
 * Input: records, each starting with a control byte (enum record_bit: raw or structured, wait
 * for the password checks after it or not, reconnect before it), then
 *   raw:        two length bytes (little-endian) and that many bytes, sent as they are;
 *   structured: type (control & 15, modulo the number of types, plus 1: every type, also the
 *               two that only the auth process sends), id (1 byte), a field mask (3 bytes, bit t = tag t, so tag 0 and
 *               tags past the last are there too), then per tag in the mask a length byte and
 *               the value; built with auth_msg_builder (u32/u64 fields of the right length through
 *               auth_msg_add_u32/_u64).
 *
 * Checks beyond memory safety and leaks:
 *   - builder -> decode round trip: a structured message decodes exactly when the type's field
 *     rules, the string/u32/u64 kinds and known tags say it must, and then gives back every
 *     field; a raw datagram that decodes re-encodes to the same length and the same fields;
 *   - the server closes the connection exactly for malformed datagrams and worker-bound types;
 *   - every reply decodes, is a CHALLENGE or a RESULT, and answers a request of this connection
 *     with its id: at once, or, for a password check, when the checks are taken, in the order
 *     they were submitted; every request but SASL_ABORT gets exactly one reply;
 *   - OK names a user of the passwd-file with its mailbox location (and quotas for LOOKUP only,
 *     the user's EXPIRE and LOGIN-DELAY for logins only); OK to POLICY_QUERY names nobody and
 *     carries the bounds over every user;
 *     OK to VERIFY only with that user's password (after SASLprep); OK to APOP only for a user
 *     with a plaintext secret; a password in the clear (VERIFY, PLAIN, LOGIN) only with TLS or
 *     from loopback ([auth] cleartext); failures carry no user or location and a delay within the
 *     configured maximum; TEMPFAIL never happens (the passwd-file and the location are fine);
 *     BANNED never for a trusted network. */
#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <sys/socket.h>

#include "auth/auth_proto.h"
#include "auth/auth_server_testing.h"
#include "auth/saslprep.h"
#include "core/log.h"
#include "fuzz_common.h"
#include "net/ban_table.h"
#include "sasl/sasl_testing.h"

enum record_bit {
	RECORD_TYPE_MASK = 0x0f,
	RECORD_RECONNECT = 0x20, /* the worker goes away first (checks may be in flight) */
	RECORD_NO_WAIT = 0x40,	 /* do not wait for password checks after this datagram */
	RECORD_RAW = 0x80,
};

/* Structured messages use tags 0..23: the known ones and some unknown ones on both sides. */
#define MASK_BYTES 3
#define MASK_TAGS  (MASK_BYTES * 8)

/* At most this many requests wait for an answer before the harness settles anyway, so that the
 * answers never fill the socket buffer (the server does not block on a full socket: it drops the
 * answer and logs it, which would be a harness artefact here). */
#define MAX_WAITING 32

#define FAILURE_DELAY_MAX_MS 15000
#define TRUSTED_NETWORK	     "192.0.2.0/24"
#define TRUSTED_PREFIX	     "192.0.2."

/* The password "pencil" with the salts of the RFC 5802 and RFC 7677 examples but 64 iterations
 * instead of 4096: the harness hashes it thousands of times a second. */
#define SECRET_SHA1                                                                                \
	"{SCRAM-SHA-1}64,QSXCR+Q6sek8bf92,gfaxgfbcZ6ILSiTdWa0kiWsLiUA=,PacvvYP5V81A3oGUu+"         \
	"y9wZEEV2g="
#define SECRET_SHA256                                                                              \
	"{SCRAM-SHA-256}64,W22ZaJ0SNY7soEsUEjb6gQ==,"                                              \
	"EDuIoy3QjQhVWlMRou1d5KUuyYwut6zmJX40GRhBYKE=,"                                            \
	"iNOTxgzPnChxGOyVcGCDwipMrqZi5P4ri649BzP7ci4="

struct fuzz_user {
	const char *name;
	const char *line_rest; /* the passwd-file line after "name:" */
	const char *password;  /* NULL: no password matches */
	bool plaintext;	       /* the secret holds the password itself (APOP works) */
};

static const struct fuzz_user users[] = {
    {"user", SECRET_SHA1 " " SECRET_SHA256 " {PLAIN}pencil", "pencil", true},
    {"plain", "{PLAIN}correct horse", "correct horse", true},
    {"dove", "{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740",
     "password", false},
    {"master", "{PLAIN}master key", "master key", true},
    {"tim", "{PLAIN}tanstaaftanstaaf", "tanstaaftanstaaf", true}, /* RFC 2195's example */
    {"crypt", "{SHA256-CRYPT}$5$rounds=1000$fuzzsalt$qGCc4JvvMNwwgoU2eJ4FMcZ.jSqNaOPBoUN0Jv2w9O2",
     "secret", false},
    {"a@example.org", "{PLAIN}pw::::::userdb_quota_rule=*:storage=1G:messages=10", "pw", true},
    {"b@example.org", "{PLAIN}pw2::::::quota_bytes=5M quota_messages=7", "pw2", true},
    {"broken", "{SCRAM-SHA-256}4096,not base64", NULL, false},
    {"unknown-scheme", "{NOPE}x", NULL, false},
    {"j\xc3\xbcrgen", "{PLAIN}p\xc3\xa4ss", "p\xc3\xa4ss", true},
    {"policy", "{PLAIN}pol:1:1:::: expire=3 userdb_login_delay=1h", "pol", true},
    {"badpolicy", "{PLAIN}bad::::::expire=soon login_delay=-1", "bad", true},
};

/* The users' RFC 2449 policies: "policy" has its own, everyone else (malformed values are
 * ignored) the config's: EXPIRE NEVER, no LOGIN-DELAY. */
#define POLICY_EXPIRE_DAYS 3
#define POLICY_LOGIN_DELAY 3600

static void expected_policy(const char *user, uint32_t *expire_r, uint32_t *delay_r)
{
	bool own = strcmp(user, "policy") == 0;

	*expire_r = own ? POLICY_EXPIRE_DAYS : AUTH_EXPIRE_NEVER;
	*delay_r = own ? POLICY_LOGIN_DELAY : 0;
}

/* What the harness knows about the field rules of each type: the spec the decoder must follow
 * (auth_proto.h), written out again here. */
enum fuzz_kind { KIND_UNKNOWN, KIND_STRING, KIND_BYTES, KIND_U32, KIND_U64 };

static enum fuzz_kind field_kind(unsigned tag)
{
	switch (tag) {
	case AUTH_FIELD_USER:
	case AUTH_FIELD_PASSWORD:
	case AUTH_FIELD_CLIENT_IP:
	case AUTH_FIELD_MECH:
	case AUTH_FIELD_CERT_USER:
	case AUTH_FIELD_TIMESTAMP:
	case AUTH_FIELD_DIGEST:
	case AUTH_FIELD_LOCATION:
		return KIND_STRING;
	case AUTH_FIELD_RESPONSE:
	case AUTH_FIELD_CB_EXPORTER:
	case AUTH_FIELD_CB_ENDPOINT:
	case AUTH_FIELD_CHALLENGE:
		return KIND_BYTES;
	case AUTH_FIELD_FLAGS:
	case AUTH_FIELD_RESULT:
	case AUTH_FIELD_DELAY_MS:
	case AUTH_FIELD_EXPIRE_DAYS:
	case AUTH_FIELD_LOGIN_DELAY:
	case AUTH_FIELD_POLICY_FLAGS:
		return KIND_U32;
	case AUTH_FIELD_QUOTA_BYTES:
	case AUTH_FIELD_QUOTA_MESSAGES:
		return KIND_U64;
	default:
		return KIND_UNKNOWN;
	}
}

#define BIT(tag)      (1u << (tag))
#define LOGIN_CONTEXT (BIT(AUTH_FIELD_CLIENT_IP) | BIT(AUTH_FIELD_FLAGS))

static void type_rules(enum auth_msg_type type, uint32_t *required, uint32_t *optional)
{
	*required = *optional = 0;
	switch (type) {
	case AUTH_MSG_VERIFY:
		*required = BIT(AUTH_FIELD_USER) | BIT(AUTH_FIELD_PASSWORD) | LOGIN_CONTEXT;
		break;
	case AUTH_MSG_SASL_START:
		*required = BIT(AUTH_FIELD_MECH) | LOGIN_CONTEXT;
		*optional = BIT(AUTH_FIELD_RESPONSE) | BIT(AUTH_FIELD_CB_EXPORTER) |
			    BIT(AUTH_FIELD_CB_ENDPOINT) | BIT(AUTH_FIELD_CERT_USER);
		break;
	case AUTH_MSG_SASL_CONTINUE:
		*required = BIT(AUTH_FIELD_RESPONSE);
		break;
	case AUTH_MSG_SASL_ABORT:
		break;
	case AUTH_MSG_APOP:
		*required = BIT(AUTH_FIELD_USER) | BIT(AUTH_FIELD_TIMESTAMP) |
			    BIT(AUTH_FIELD_DIGEST) | LOGIN_CONTEXT;
		break;
	case AUTH_MSG_LOOKUP:
		*required = BIT(AUTH_FIELD_USER);
		break;
	case AUTH_MSG_POLICY_QUERY:
		break;
	case AUTH_MSG_CHALLENGE:
		*required = BIT(AUTH_FIELD_CHALLENGE);
		break;
	case AUTH_MSG_RESULT:
		*required = BIT(AUTH_FIELD_RESULT);
		*optional = BIT(AUTH_FIELD_USER) | BIT(AUTH_FIELD_LOCATION) |
			    BIT(AUTH_FIELD_DELAY_MS) | BIT(AUTH_FIELD_QUOTA_BYTES) |
			    BIT(AUTH_FIELD_QUOTA_MESSAGES) | BIT(AUTH_FIELD_EXPIRE_DAYS) |
			    BIT(AUTH_FIELD_LOGIN_DELAY) | BIT(AUTH_FIELD_POLICY_FLAGS);
		break;
	case AUTH_MSG_TYPE_COUNT:
		break;
	}
}

/* A request: copies of what the checks of its answer need. */
struct request {
	uint32_t id;
	enum auth_msg_type type;
	char *user, *password, *client_ip; /* NULL when absent */
	bool cleartext; /* a password in the clear: VERIFY, or SASL_START of PLAIN or LOGIN */
	uint32_t flags;
};

static struct {
	char *scratch;
	struct buzon_config *config;
	struct ban_table *bans;
	struct auth_server *server;
	int fd;	     /* this harness's end: plays the worker */
	int conn_fd; /* the server's end, or -1 while closed */
	/* requests whose password check is in the hashing thread, in the order they went there:
	 * with one thread, the order their answers come in */
	struct request waiting[MAX_WAITING];
	size_t waiting_count;
	size_t logins; /* OK answers so far, for the self-test */
} h;

/* The server stays up to the end, like the other targets' workers: OpenSSL keeps per-thread
 * state that its hashing thread would leak on a stop. */
static void cleanup(void)
{
	fuzz_remove_tree(h.scratch);
}

static void write_passwd_file(const char *path)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		abort();
	fputs("# fuzz_auth_request users\n", f);
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
		fprintf(f, "%s:%s\n", users[i].name, users[i].line_rest);
	if (fclose(f) != 0)
		abort();
}

static const struct fuzz_user *user_find(const char *name)
{
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		if (strcmp(users[i].name, name) == 0)
			return &users[i];
	}
	return NULL;
}

/* ---- the connection ---- */

static void conn_open(void)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		abort();
	h.fd = pair[0];
	h.conn_fd = pair[1];
	auth_server_testing_add_conn(h.server, h.conn_fd);
}

static void request_clear(struct request *r)
{
	free(r->user);
	free(r->password);
	free(r->client_ip);
	*r = (struct request){0};
}

static void waiting_clear(void)
{
	for (size_t i = 0; i < h.waiting_count; i++)
		request_clear(&h.waiting[i]);
	h.waiting_count = 0;
}

/* The worker end goes away: the answers still owed are lost with it. */
static void conn_close(void)
{
	if (h.conn_fd >= 0)
		auth_server_testing_close_conn(h.server, h.conn_fd);
	h.conn_fd = -1;
	close(h.fd);
	h.fd = -1;
	waiting_clear();
}

/* ---- checking the answers ---- */

static bool field_equals(const struct auth_msg *msg, enum auth_field tag, const char *s)
{
	const struct auth_field_value *v = &msg->fields[tag];

	return v->present && v->len == strlen(s) && memcmp(v->data, s, v->len) == 0;
}

/* Whether a VERIFY's user and password, prepared as the server prepares them, are canonical's. */
static bool verify_credentials_right(const struct request *r, const char *canonical)
{
	const struct fuzz_user *u = user_find(canonical);
	char *user = NULL, *password = NULL;
	bool right = false;

	if (u != NULL && u->password != NULL && saslprep(r->user, false, &user) == 0 &&
	    saslprep(r->password, false, &password) == 0)
		right = strcmp(user, canonical) == 0 && strcmp(password, u->password) == 0;
	free(user);
	free(password);
	return right;
}

/* OK to a POLICY_QUERY: the bounds over the users above. */
static void check_policy_bounds(const struct auth_msg *msg)
{
	FUZZ_CHECK(!msg->fields[AUTH_FIELD_USER].present &&
		   !msg->fields[AUTH_FIELD_LOCATION].present &&
		   !msg->fields[AUTH_FIELD_QUOTA_BYTES].present);
	FUZZ_CHECK(auth_msg_u32(msg, AUTH_FIELD_EXPIRE_DAYS, 0) == POLICY_EXPIRE_DAYS);
	FUZZ_CHECK(auth_msg_u32(msg, AUTH_FIELD_LOGIN_DELAY, 0) == POLICY_LOGIN_DELAY);
	FUZZ_CHECK(auth_msg_u32(msg, AUTH_FIELD_POLICY_FLAGS, 0) ==
		   (AUTH_POLICY_EXPIRE_PER_USER | AUTH_POLICY_LOGIN_DELAY_PER_USER));
}

/* A login's OK carries the user's policies; a LOOKUP's none. */
static void check_user_policy(const struct auth_msg *msg, const struct request *r,
			      const char *user)
{
	uint32_t expire, delay;

	FUZZ_CHECK(!msg->fields[AUTH_FIELD_POLICY_FLAGS].present);
	if (r->type == AUTH_MSG_LOOKUP) {
		FUZZ_CHECK(!msg->fields[AUTH_FIELD_EXPIRE_DAYS].present &&
			   !msg->fields[AUTH_FIELD_LOGIN_DELAY].present);
		return;
	}
	expected_policy(user, &expire, &delay);
	FUZZ_CHECK(msg->fields[AUTH_FIELD_EXPIRE_DAYS].present &&
		   auth_msg_u32(msg, AUTH_FIELD_EXPIRE_DAYS, 0) == expire);
	FUZZ_CHECK(msg->fields[AUTH_FIELD_LOGIN_DELAY].present &&
		   auth_msg_u32(msg, AUTH_FIELD_LOGIN_DELAY, 0) == delay);
}

static void check_result_ok(const struct auth_msg *msg, const struct request *r)
{
	if (r->type == AUTH_MSG_POLICY_QUERY) {
		check_policy_bounds(msg);
		return;
	}
	char *user = auth_msg_strdup(msg, AUTH_FIELD_USER);

	FUZZ_CHECK(user != NULL && msg->fields[AUTH_FIELD_LOCATION].present);
	const struct fuzz_user *u = user_find(user);
	FUZZ_CHECK(u != NULL);
	char *location = config_expand_location(h.config->mail_location, user);
	FUZZ_CHECK(location != NULL && field_equals(msg, AUTH_FIELD_LOCATION, location));
	free(location);
	bool quotas = msg->fields[AUTH_FIELD_QUOTA_BYTES].present;
	FUZZ_CHECK(quotas == msg->fields[AUTH_FIELD_QUOTA_MESSAGES].present);
	FUZZ_CHECK(quotas == (r->type == AUTH_MSG_LOOKUP));
	FUZZ_CHECK(!msg->fields[AUTH_FIELD_DELAY_MS].present);
	check_user_policy(msg, r, user);
	FUZZ_CHECK(r->type != AUTH_MSG_VERIFY || verify_credentials_right(r, user));
	FUZZ_CHECK(r->type != AUTH_MSG_APOP || u->plaintext);
	h.logins++;
	/* [auth] cleartext = loopback */
	FUZZ_CHECK(!r->cleartext || (r->flags & (AUTH_FLAG_TLS | AUTH_FLAG_LOOPBACK)) != 0);
	free(user);
}

/* msg answers request r. */
static void check_answer(const struct auth_msg *msg, const struct request *r)
{
	FUZZ_CHECK(msg->id == r->id && r->type != AUTH_MSG_SASL_ABORT);
	if (msg->type == AUTH_MSG_CHALLENGE) {
		FUZZ_CHECK(r->type == AUTH_MSG_SASL_START || r->type == AUTH_MSG_SASL_CONTINUE);
		return;
	}
	FUZZ_CHECK(msg->type == AUTH_MSG_RESULT);
	uint32_t result = auth_msg_u32(msg, AUTH_FIELD_RESULT, 0);
	FUZZ_CHECK(result == AUTH_RESULT_OK || result == AUTH_RESULT_FAIL ||
		   result == AUTH_RESULT_BANNED);
	if (result == AUTH_RESULT_OK) {
		check_result_ok(msg, r);
		return;
	}
	FUZZ_CHECK(!msg->fields[AUTH_FIELD_USER].present &&
		   !msg->fields[AUTH_FIELD_LOCATION].present &&
		   !msg->fields[AUTH_FIELD_QUOTA_BYTES].present &&
		   !msg->fields[AUTH_FIELD_EXPIRE_DAYS].present);
	FUZZ_CHECK(auth_msg_u32(msg, AUTH_FIELD_DELAY_MS, 0) <= FAILURE_DELAY_MAX_MS);
	FUZZ_CHECK(result != AUTH_RESULT_BANNED || r->type == AUTH_MSG_VERIFY ||
		   r->type == AUTH_MSG_APOP || r->type == AUTH_MSG_SASL_START);
	FUZZ_CHECK(result != AUTH_RESULT_BANNED ||
		   strncmp(r->client_ip, TRUSTED_PREFIX, strlen(TRUSTED_PREFIX)) != 0);
}

/* Receives the next answer into buf and decodes it; returns false if there is none. */
static bool answer_receive(unsigned char *buf, size_t size, struct auth_msg *msg)
{
	ssize_t len = recv(h.fd, buf, size, MSG_DONTWAIT);

	if (len < 0) {
		FUZZ_CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
		return false;
	}
	FUZZ_CHECK(len > 0); /* the server closes only after a malformed request */
	FUZZ_CHECK(auth_msg_decode(buf, (size_t)len, msg) == 0);
	return true;
}

/* Waits for the password checks: their answers come in the order they were submitted, and then
 * every request has had its answer. */
static void settle(void)
{
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE + 1];
	struct auth_msg msg;
	size_t answered = 0;

	auth_server_testing_settle(h.server);
	while (answer_receive(buf, sizeof(buf), &msg)) {
		FUZZ_CHECK(answered < h.waiting_count);
		check_answer(&msg, &h.waiting[answered++]);
	}
	FUZZ_CHECK(answered == h.waiting_count);
	waiting_clear();
}

/* ---- the round trip through the codec ---- */

/* msg holds exactly the fields of other (and the same type and id). */
static void check_same_fields(const struct auth_msg *a, const struct auth_msg *b)
{
	FUZZ_CHECK(a->type == b->type && a->id == b->id);
	for (unsigned tag = 0; tag < AUTH_FIELD_COUNT; tag++) {
		const struct auth_field_value *x = &a->fields[tag], *y = &b->fields[tag];
		FUZZ_CHECK(x->present == y->present && x->len == y->len);
		FUZZ_CHECK(x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
	}
}

/* A datagram that decodes encodes again, with the builder, into one of the same length (the
 * format has no slack) that decodes to the same fields. */
static void check_reencode(const struct auth_msg *msg, size_t len)
{
	static struct auth_msg_builder b;
	struct auth_msg again;

	auth_msg_begin(&b, msg->type, msg->id);
	for (unsigned tag = 1; tag < AUTH_FIELD_COUNT; tag++) {
		const struct auth_field_value *v = &msg->fields[tag];
		if (v->present)
			auth_msg_add_bytes(&b, (enum auth_field)tag, v->data, v->len);
	}
	size_t again_len = auth_msg_finish(&b);
	FUZZ_CHECK(again_len == len);
	FUZZ_CHECK(auth_msg_decode(b.buf, again_len, &again) == 0);
	check_same_fields(msg, &again);
}

/* One field given to the builder. */
struct given_field {
	const uint8_t *data;
	size_t len;
};

/* Whether the decoder must accept a message of type with these fields. */
static bool message_valid(enum auth_msg_type type, uint32_t mask, const struct given_field *fields)
{
	uint32_t required, optional;

	type_rules(type, &required, &optional);
	if ((mask & required) != required || (mask & ~(required | optional)) != 0)
		return false;
	for (unsigned tag = 0; tag < MASK_TAGS; tag++) {
		if ((mask & BIT(tag)) == 0)
			continue;
		const struct given_field *f = &fields[tag];
		switch (field_kind(tag)) {
		case KIND_UNKNOWN:
			return false;
		case KIND_STRING:
			if (f->len > 0 && memchr(f->data, '\0', f->len) != NULL)
				return false;
			break;
		case KIND_U32:
			if (f->len != 4)
				return false;
			break;
		case KIND_U64:
			if (f->len != 8)
				return false;
			break;
		case KIND_BYTES:
			break;
		}
	}
	return true;
}

static uint64_t little_endian(const uint8_t *p, size_t len)
{
	uint64_t v = 0;

	for (size_t i = len; i-- > 0;)
		v = (v << 8) | p[i];
	return v;
}

/* Builds a structured record into b; checks the decoder against the rules. */
static void structured_build(struct fuzz_input *in, uint8_t control, struct auth_msg_builder *b)
{
	enum auth_msg_type type =
	    (enum auth_msg_type)((control & RECORD_TYPE_MASK) % (AUTH_MSG_TYPE_COUNT - 1) + 1);
	uint32_t id = fuzz_take_byte(in, 0), mask = 0;
	struct given_field fields[MASK_TAGS] = {{NULL, 0}};
	struct auth_msg msg;

	for (int i = 0; i < MASK_BYTES; i++)
		mask |= (uint32_t)fuzz_take_byte(in, 0) << (8 * i);
	auth_msg_begin(b, type, id);
	for (unsigned tag = 0; tag < MASK_TAGS; tag++) {
		if ((mask & BIT(tag)) == 0)
			continue;
		size_t len = fuzz_take_byte(in, 0);
		if (len > in->len)
			len = in->len;
		fields[tag] = (struct given_field){in->data, len};
		in->data += len;
		in->len -= len;
		if (field_kind(tag) == KIND_U32 && len == 4)
			auth_msg_add_u32(b, (enum auth_field)tag,
					 (uint32_t)little_endian(fields[tag].data, 4));
		else if (field_kind(tag) == KIND_U64 && len == 8)
			auth_msg_add_u64(b, (enum auth_field)tag,
					 little_endian(fields[tag].data, 8));
		else
			auth_msg_add_bytes(b, (enum auth_field)tag, fields[tag].data, len);
	}
	size_t len = auth_msg_finish(b);
	FUZZ_CHECK(len > 0); /* 24 fields of 255 bytes fit */
	bool valid = message_valid(type, mask, fields);
	FUZZ_CHECK((auth_msg_decode(b->buf, len, &msg) == 0) == valid);
	if (!valid)
		return;
	FUZZ_CHECK(msg.type == type && msg.id == id);
	for (unsigned tag = 0; tag < AUTH_FIELD_COUNT; tag++) {
		const struct auth_field_value *v = &msg.fields[tag];
		FUZZ_CHECK(v->present == ((mask & BIT(tag)) != 0));
		FUZZ_CHECK(v->len == fields[tag].len);
		FUZZ_CHECK(v->len == 0 || memcmp(v->data, fields[tag].data, v->len) == 0);
	}
}

/* ---- one datagram to the server ---- */

/* Sends one datagram. A request is answered at once, or, if its password goes to the hashing
 * thread, when the harness settles: the answers sent meanwhile are all for this datagram. */
static void send_datagram(const void *buf, size_t len, bool wait)
{
	unsigned char answer_buf[AUTH_PROTO_MAX_MESSAGE + 1];
	struct auth_msg msg, answer;
	bool well_formed = auth_msg_decode(buf, len, &msg) == 0;

	if (well_formed)
		check_reencode(&msg, len);
	bool request = well_formed && auth_msg_type_is_request(msg.type);
	bool open = auth_server_testing_datagram(h.server, h.conn_fd, buf, len);
	FUZZ_CHECK(open == request);
	if (!open) {
		/* the answers still owed on this connection are lost with it */
		unsigned char byte;
		FUZZ_CHECK(recv(h.fd, &byte, 1, MSG_DONTWAIT) == 0);
		h.conn_fd = -1;
		conn_close();
		return;
	}
	struct request r = {.id = msg.id,
			    .type = msg.type,
			    .user = auth_msg_strdup(&msg, AUTH_FIELD_USER),
			    .password = auth_msg_strdup(&msg, AUTH_FIELD_PASSWORD),
			    .client_ip = auth_msg_strdup(&msg, AUTH_FIELD_CLIENT_IP),
			    .cleartext = msg.type == AUTH_MSG_VERIFY ||
					 (msg.type == AUTH_MSG_SASL_START &&
					  (field_equals(&msg, AUTH_FIELD_MECH, "PLAIN") ||
					   field_equals(&msg, AUTH_FIELD_MECH, "LOGIN"))),
			    .flags = auth_msg_u32(&msg, AUTH_FIELD_FLAGS, 0)};
	if (answer_receive(answer_buf, sizeof(answer_buf), &answer)) {
		check_answer(&answer, &r);
		FUZZ_CHECK(!answer_receive(answer_buf, sizeof(answer_buf), &answer));
		request_clear(&r);
	} else if (r.type == AUTH_MSG_SASL_ABORT) {
		request_clear(&r);
	} else {
		FUZZ_CHECK(r.type == AUTH_MSG_VERIFY || r.type == AUTH_MSG_SASL_START ||
			   r.type == AUTH_MSG_SASL_CONTINUE);
		h.waiting[h.waiting_count++] = r;
	}
	if (wait || h.waiting_count == MAX_WAITING)
		settle();
}

static void run_record(struct fuzz_input *in)
{
	static struct auth_msg_builder b;
	uint8_t control = fuzz_take_byte(in, 0);

	if ((control & RECORD_RECONNECT) != 0 || h.fd < 0) {
		if (h.fd >= 0)
			conn_close();
		conn_open();
	}
	if ((control & RECORD_RAW) != 0) {
		size_t len = fuzz_take_byte(in, 0);
		len |= (size_t)fuzz_take_byte(in, 0) << 8;
		if (len > AUTH_PROTO_MAX_MESSAGE + 1)
			len = AUTH_PROTO_MAX_MESSAGE + 1; /* what the server's recv() takes */
		if (len > in->len)
			len = in->len;
		send_datagram(in->data, len, (control & RECORD_NO_WAIT) == 0);
		in->data += len;
		in->len -= len;
	} else {
		structured_build(in, control, &b);
		send_datagram(b.buf, auth_msg_finish(&b), (control & RECORD_NO_WAIT) == 0);
		auth_msg_wipe(&b);
	}
}

/* Appends a raw record holding b's message to input. */
static size_t self_test_record(uint8_t *input, struct auth_msg_builder *b)
{
	size_t len = auth_msg_finish(b);

	input[0] = RECORD_RAW;
	input[1] = (uint8_t)(len & 0xff);
	input[2] = (uint8_t)(len >> 8);
	memcpy(input + 3, b->buf, len);
	return 3 + len;
}

/* A right password and a recipient lookup must still succeed: a change elsewhere (a config
 * option, the passwd-file format) would otherwise leave the fuzzer exploring refusals only. */
static void self_test(void)
{
	static struct auth_msg_builder b;
	static uint8_t input[2 * (AUTH_PROTO_MAX_MESSAGE + 3)];
	size_t len;

	auth_msg_begin(&b, AUTH_MSG_VERIFY, 1);
	auth_msg_add_str(&b, AUTH_FIELD_USER, "plain");
	auth_msg_add_str(&b, AUTH_FIELD_PASSWORD, "correct horse");
	auth_msg_add_str(&b, AUTH_FIELD_CLIENT_IP, "127.0.0.1");
	auth_msg_add_u32(&b, AUTH_FIELD_FLAGS, AUTH_FLAG_LOOPBACK);
	len = self_test_record(input, &b);
	auth_msg_begin(&b, AUTH_MSG_LOOKUP, 2);
	auth_msg_add_str(&b, AUTH_FIELD_USER, "a@example.org");
	len += self_test_record(input + len, &b);
	LLVMFuzzerTestOneInput(input, len);
	if (h.logins != 2) {
		fprintf(stderr, "fuzz_auth_request self-test: %zu of 2 requests succeeded\n",
			h.logins);
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	signal(SIGPIPE, SIG_IGN);
	log_init("fuzz", LOG_LEVEL_ERROR);
	if (sodium_init() < 0)
		abort();
	/* fixed randomness: an input must always take the same path */
	sasl_scram_set_test_nonce("fuzzservernonce");
	sasl_cram_set_test_challenge("<1896.697170952@postoffice.reston.mci.net>");
	h.scratch = fuzz_scratch_dir("auth");
	atexit(cleanup);
	char *passwd = xasprintf("%s/users", h.scratch);
	write_passwd_file(passwd);
	char *config = xasprintf("[pop3]\n"
				 "listen = 127.0.0.1:1\n"
				 "[auth]\n"
				 "passwd_file = %s\n"
				 "threads = 1\n"
				 "cleartext = loopback\n"
				 "mechanisms = PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-1-PLUS "
				 "SCRAM-SHA-256 SCRAM-SHA-256-PLUS EXTERNAL\n"
				 "apop = yes\n"
				 "master_users = master\n"
				 "default_scheme = PLAIN\n"
				 "failure_delay_max = %ums\n"
				 "ban_failures = 5\n"
				 "trusted_networks = " TRUSTED_NETWORK "\n"
				 "[mail]\n"
				 "location = maildir:/srv/mail/%%d/%%n\n"
				 "quota_bytes = 1G\n",
				 passwd, FAILURE_DELAY_MAX_MS);
	h.config = fuzz_config_load(h.scratch, config);
	free(config);
	free(passwd);
	h.bans = ban_table_create();
	h.server = auth_server_testing_new(h.config, h.bans);
	h.fd = h.conn_fd = -1;
	self_test();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = {data, size};

	auth_server_testing_forget_clients(h.server);
	while (in.len > 0)
		run_record(&in);
	if (h.fd >= 0) {
		settle();
		conn_close();
	}
	auth_server_testing_settle(h.server); /* checks of connections closed on the way */
	return 0;
}

/* Typed, versioned messages between the POP3 workers and the auth process. Each message is one
 * SOCK_SEQPACKET datagram (the kernel keeps message boundaries). Every message is checked on
 * decode against a table of the fields its type allows and requires: a worker may be compromised,
 * so the auth process treats its messages as hostile, and the worker checks replies as strictly.
 *
 * Layout (integers little-endian, no padding):
 *   header: u16 version, u16 type, u32 request id
 *   fields: u8 tag, u16 length, bytes — each tag at most once, in any order
 * String fields hold no NUL byte and no terminator; byte fields (SASL data) may hold anything;
 * u32 fields are exactly 4 bytes. */
#ifndef BUZON_AUTH_AUTH_PROTO_H
#define BUZON_AUTH_AUTH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 3: the per-user mail policies (EXPIRE_DAYS, LOGIN_DELAY) and POLICY_QUERY */
#define AUTH_PROTO_VERSION 3
/* The largest datagram either side sends or accepts: SASL responses are capped by the worker at
 * POP3_MAX_SASL_LINE octets of base64, mailbox locations at PATH_MAX. */
#define AUTH_PROTO_MAX_MESSAGE 16384

enum auth_msg_type {
	/* worker -> auth */
	AUTH_MSG_VERIFY = 1,	/* USER/PASS: USER, PASSWORD, CLIENT */
	AUTH_MSG_SASL_START,	/* AUTH: MECH, CLIENT, optional RESPONSE and channel-binding data */
	AUTH_MSG_SASL_CONTINUE, /* a client response: RESPONSE */
	AUTH_MSG_SASL_ABORT,	/* the client sent "*" or went away */
	AUTH_MSG_APOP,		/* APOP: USER, TIMESTAMP, DIGEST, CLIENT */
	AUTH_MSG_LOOKUP,	/* LMTP RCPT: USER (an address); no password */
	AUTH_MSG_POLICY_QUERY,	/* the bounds of every user's policies, for CAPA before login */
	/* auth -> worker */
	AUTH_MSG_CHALLENGE, /* SASL: send CHALLENGE to the client and wait for a response */
	/* RESULT; OK to a login: also USER, LOCATION, EXPIRE_DAYS and LOGIN_DELAY; OK to a LOOKUP:
	 * USER, LOCATION and the QUOTA_* fields; OK to a POLICY_QUERY: EXPIRE_DAYS (the smallest of
	 * any user), LOGIN_DELAY (the largest) and POLICY_FLAGS; failures: DELAY_MS */
	AUTH_MSG_RESULT,
	AUTH_MSG_TYPE_COUNT
};

enum auth_field {
	AUTH_FIELD_USER = 1,	/* string: the user name (in RESULT: the canonical one) */
	AUTH_FIELD_PASSWORD,	/* string */
	AUTH_FIELD_CLIENT_IP,	/* string: the client's address, for penalties and logs */
	AUTH_FIELD_FLAGS,	/* u32: AUTH_FLAG_* */
	AUTH_FIELD_MECH,	/* string: SASL mechanism name, upper case */
	AUTH_FIELD_RESPONSE,	/* bytes: decoded SASL client response (may be empty) */
	AUTH_FIELD_CB_EXPORTER, /* bytes: RFC 9266 tls-exporter channel binding */
	AUTH_FIELD_CB_ENDPOINT, /* bytes: RFC 5929 tls-server-end-point channel binding */
	AUTH_FIELD_CERT_USER,	/* string: identity of a verified client certificate (EXTERNAL) */
	AUTH_FIELD_TIMESTAMP,	/* string: APOP banner timestamp */
	AUTH_FIELD_DIGEST,	/* string: APOP digest, 32 hex digits */
	AUTH_FIELD_CHALLENGE,	/* bytes: SASL server challenge (may be empty) */
	AUTH_FIELD_RESULT,	/* u32: enum auth_result */
	AUTH_FIELD_LOCATION,	/* string: the mailbox location, e.g. "maildir:/var/mail/x" */
	AUTH_FIELD_DELAY_MS,	/* u32: wait this long before telling the client it failed */
	AUTH_FIELD_QUOTA_BYTES, /* u64: LOOKUP result: storage limit, 0 for none */
	AUTH_FIELD_QUOTA_MESSAGES, /* u64: LOOKUP result: message limit, 0 for none */
	AUTH_FIELD_EXPIRE_DAYS,	   /* u32: RFC 2449 EXPIRE in days, or AUTH_EXPIRE_NEVER */
	AUTH_FIELD_LOGIN_DELAY,	   /* u32: RFC 2449 LOGIN-DELAY in seconds, 0 for none */
	AUTH_FIELD_POLICY_FLAGS,   /* u32: AUTH_POLICY_* */
	AUTH_FIELD_COUNT
};

/* What the worker knows about the connection a request comes from. */
enum auth_flag {
	AUTH_FLAG_TLS = 1 << 0,	     /* the connection is encrypted */
	AUTH_FLAG_LOOPBACK = 1 << 1, /* the client is on this machine */
};

/* EXPIRE_DAYS of a user whose mail the server never deletes. */
#define AUTH_EXPIRE_NEVER UINT32_MAX

/* POLICY_QUERY answer: whether users differ (CAPA then appends "USER", RFC 2449 §6.5, §6.7). */
enum auth_policy_flag {
	AUTH_POLICY_EXPIRE_PER_USER = 1 << 0,
	AUTH_POLICY_LOGIN_DELAY_PER_USER = 1 << 1,
};

enum auth_result {
	AUTH_RESULT_OK = 1,
	AUTH_RESULT_FAIL = 2,	  /* unknown user or wrong password: indistinguishable on purpose */
	AUTH_RESULT_TEMPFAIL = 3, /* the user database could not be read */
	AUTH_RESULT_BANNED = 4,	  /* the client's address is refused for a while */
};

struct auth_field_value {
	const unsigned char *data; /* points into the datagram */
	size_t len;
	bool present;
};

struct auth_msg {
	enum auth_msg_type type;
	uint32_t id;
	struct auth_field_value fields[AUTH_FIELD_COUNT];
};

/* Builds one datagram. Adding past AUTH_PROTO_MAX_MESSAGE, or a string with a NUL, makes
 * auth_msg_finish() fail. */
struct auth_msg_builder {
	unsigned char buf[AUTH_PROTO_MAX_MESSAGE];
	size_t len;
	bool failed;
};

void auth_msg_begin(struct auth_msg_builder *b, enum auth_msg_type type, uint32_t id);
void auth_msg_add_bytes(struct auth_msg_builder *b, enum auth_field tag, const void *data,
			size_t len);
void auth_msg_add_str(struct auth_msg_builder *b, enum auth_field tag, const char *s);
void auth_msg_add_u32(struct auth_msg_builder *b, enum auth_field tag, uint32_t value);
/* Returns the datagram length, or 0 if anything could not be added. */
size_t auth_msg_finish(struct auth_msg_builder *b);
/* Wipes the buffer (it may have held a password). */
void auth_msg_wipe(struct auth_msg_builder *b);

void auth_msg_add_u64(struct auth_msg_builder *b, enum auth_field tag, uint64_t value);

/* True for the types a worker sends (the auth process closes a connection that sends others). */
bool auth_msg_type_is_request(enum auth_msg_type type);

/* Decodes and validates a datagram: version, known type, known tags each at most once, lengths
 * that add up exactly, the fields the type requires present and no field it does not allow, no
 * NUL in string fields, u32/u64 fields of 4/8 bytes. Returns 0, or -1 for anything malformed. */
int auth_msg_decode(const void *buf, size_t len, struct auth_msg *msg_r);

/* A present field as a newly allocated NUL-terminated string, or NULL if absent. */
char *auth_msg_strdup(const struct auth_msg *msg, enum auth_field tag);
/* A u32 field's value, or fallback if absent. */
uint32_t auth_msg_u32(const struct auth_msg *msg, enum auth_field tag, uint32_t fallback);
/* A u64 field's value, or fallback if absent. */
uint64_t auth_msg_u64(const struct auth_msg *msg, enum auth_field tag, uint64_t fallback);

#endif

/* Typed, versioned messages between the POP3 workers and the auth process. Each message is one
 * SOCK_SEQPACKET datagram (so message boundaries are kept by the kernel). Every field is checked on
 * decode: a worker may be compromised, so the auth process treats its messages as hostile, and
 * the worker checks the auth process's replies just as strictly.
 *
 * Layout (all integers little-endian, no padding):
 *   header:  u16 version, u16 type, u32 request id
 *   VERIFY_REQUEST: header, u16 user_len, u16 password_len, user bytes, password bytes
 *   VERIFY_REPLY:   header, u8 result, u16 user_len, u16 location_len, user bytes, location bytes
 * Strings carry no NUL bytes and no terminator. */
#ifndef BUZON_AUTH_AUTH_PROTO_H
#define BUZON_AUTH_AUTH_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_PROTO_VERSION 1
/* The largest datagram either side sends or accepts; user names and passwords fit in a POP3
 * command line (255 octets), a mailbox location in PATH_MAX. */
#define AUTH_PROTO_MAX_MESSAGE 8192
#define AUTH_PROTO_MAX_STRING  4096

enum auth_msg_type {
	AUTH_MSG_VERIFY_REQUEST = 1,
	AUTH_MSG_VERIFY_REPLY = 2,
};

enum auth_result {
	AUTH_RESULT_OK = 1,
	AUTH_RESULT_FAIL = 2,	  /* unknown user or wrong password: indistinguishable on purpose */
	AUTH_RESULT_TEMPFAIL = 3, /* the user database could not be read */
};

struct auth_verify_request {
	uint32_t id;
	const char *user; /* point into the datagram; not NUL-terminated */
	size_t user_len;
	const char *password;
	size_t password_len;
};

struct auth_verify_reply {
	uint32_t id;
	enum auth_result result;
	const char *user;
	size_t user_len;
	const char *location;
	size_t location_len;
};

/* Encoders return the datagram length written into buf, or 0 if it does not fit or a string is
 * too long or has a NUL byte. */
size_t auth_proto_encode_request(void *buf, size_t cap, const struct auth_verify_request *req);
size_t auth_proto_encode_reply(void *buf, size_t cap, const struct auth_verify_reply *reply);

/* Decoders return 0 and fill the struct (pointers into buf), or -1 for anything malformed:
 * wrong version or type, lengths that disagree with the datagram size, NUL bytes. */
int auth_proto_decode_request(const void *buf, size_t len, struct auth_verify_request *req_r);
int auth_proto_decode_reply(const void *buf, size_t len, struct auth_verify_reply *reply_r);

#endif

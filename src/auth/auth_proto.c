/* Encoding and strict decoding of the worker <-> auth process datagrams (see auth_proto.h). */
#include <sodium.h>
#include <string.h>

#include "auth/auth_proto.h"
#include "core/util.h"

#define HEADER_LEN	 8
#define FIELD_HEADER_LEN 3

enum field_kind { FIELD_STRING, FIELD_BYTES, FIELD_U32, FIELD_U64 };

static const enum field_kind field_kinds[AUTH_FIELD_COUNT] = {
    [AUTH_FIELD_USER] = FIELD_STRING,	     [AUTH_FIELD_PASSWORD] = FIELD_STRING,
    [AUTH_FIELD_CLIENT_IP] = FIELD_STRING,   [AUTH_FIELD_FLAGS] = FIELD_U32,
    [AUTH_FIELD_MECH] = FIELD_STRING,	     [AUTH_FIELD_RESPONSE] = FIELD_BYTES,
    [AUTH_FIELD_CB_EXPORTER] = FIELD_BYTES,  [AUTH_FIELD_CB_ENDPOINT] = FIELD_BYTES,
    [AUTH_FIELD_CERT_USER] = FIELD_STRING,   [AUTH_FIELD_TIMESTAMP] = FIELD_STRING,
    [AUTH_FIELD_DIGEST] = FIELD_STRING,	     [AUTH_FIELD_CHALLENGE] = FIELD_BYTES,
    [AUTH_FIELD_RESULT] = FIELD_U32,	     [AUTH_FIELD_LOCATION] = FIELD_STRING,
    [AUTH_FIELD_DELAY_MS] = FIELD_U32,	     [AUTH_FIELD_QUOTA_BYTES] = FIELD_U64,
    [AUTH_FIELD_QUOTA_MESSAGES] = FIELD_U64, [AUTH_FIELD_EXPIRE_DAYS] = FIELD_U32,
    [AUTH_FIELD_LOGIN_DELAY] = FIELD_U32,    [AUTH_FIELD_POLICY_FLAGS] = FIELD_U32,
};

#define F(tag) (1u << (tag))
/* Which fields each type requires, and which it allows besides. */
static const struct {
	uint32_t required, optional;
} type_rules[AUTH_MSG_TYPE_COUNT] = {
    [AUTH_MSG_VERIFY] = {F(AUTH_FIELD_USER) | F(AUTH_FIELD_PASSWORD) | F(AUTH_FIELD_CLIENT_IP) |
			     F(AUTH_FIELD_FLAGS),
			 0},
    [AUTH_MSG_SASL_START] = {F(AUTH_FIELD_MECH) | F(AUTH_FIELD_CLIENT_IP) | F(AUTH_FIELD_FLAGS),
			     F(AUTH_FIELD_RESPONSE) | F(AUTH_FIELD_CB_EXPORTER) |
				 F(AUTH_FIELD_CB_ENDPOINT) | F(AUTH_FIELD_CERT_USER)},
    [AUTH_MSG_SASL_CONTINUE] = {F(AUTH_FIELD_RESPONSE), 0},
    [AUTH_MSG_SASL_ABORT] = {0, 0},
    [AUTH_MSG_APOP] = {F(AUTH_FIELD_USER) | F(AUTH_FIELD_TIMESTAMP) | F(AUTH_FIELD_DIGEST) |
			   F(AUTH_FIELD_CLIENT_IP) | F(AUTH_FIELD_FLAGS),
		       0},
    [AUTH_MSG_CHALLENGE] = {F(AUTH_FIELD_CHALLENGE), 0},
    [AUTH_MSG_LOOKUP] = {F(AUTH_FIELD_USER), 0},
    [AUTH_MSG_POLICY_QUERY] = {0, 0},
    [AUTH_MSG_RESULT] = {F(AUTH_FIELD_RESULT),
			 F(AUTH_FIELD_USER) | F(AUTH_FIELD_LOCATION) | F(AUTH_FIELD_DELAY_MS) |
			     F(AUTH_FIELD_QUOTA_BYTES) | F(AUTH_FIELD_QUOTA_MESSAGES) |
			     F(AUTH_FIELD_EXPIRE_DAYS) | F(AUTH_FIELD_LOGIN_DELAY) |
			     F(AUTH_FIELD_POLICY_FLAGS)},
};

bool auth_msg_type_is_request(enum auth_msg_type type)
{
	return type >= AUTH_MSG_VERIFY && type <= AUTH_MSG_POLICY_QUERY;
}

static void put_u16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v & 0xff);
	p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)((v >> (8 * i)) & 0xff);
}

static uint16_t get_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

void auth_msg_begin(struct auth_msg_builder *b, enum auth_msg_type type, uint32_t id)
{
	put_u16(b->buf, AUTH_PROTO_VERSION);
	put_u16(b->buf + 2, (uint16_t)type);
	put_u32(b->buf + 4, id);
	b->len = HEADER_LEN;
	b->failed = false;
}

void auth_msg_add_bytes(struct auth_msg_builder *b, enum auth_field tag, const void *data,
			size_t len)
{
	if (b->failed || len > 0xffff || b->len + FIELD_HEADER_LEN + len > sizeof(b->buf)) {
		b->failed = true;
		return;
	}
	b->buf[b->len] = (unsigned char)tag;
	put_u16(b->buf + b->len + 1, (uint16_t)len);
	if (len > 0)
		memcpy(b->buf + b->len + FIELD_HEADER_LEN, data, len);
	b->len += FIELD_HEADER_LEN + len;
}

void auth_msg_add_str(struct auth_msg_builder *b, enum auth_field tag, const char *s)
{
	auth_msg_add_bytes(b, tag, s, strlen(s));
}

void auth_msg_add_u32(struct auth_msg_builder *b, enum auth_field tag, uint32_t value)
{
	unsigned char raw[4];

	put_u32(raw, value);
	auth_msg_add_bytes(b, tag, raw, sizeof(raw));
}

size_t auth_msg_finish(struct auth_msg_builder *b)
{
	return b->failed ? 0 : b->len;
}

void auth_msg_wipe(struct auth_msg_builder *b)
{
	sodium_memzero(b->buf, b->len);
	b->len = 0;
}

static int field_value_ok(enum auth_field tag, const unsigned char *data, size_t len)
{
	switch (field_kinds[tag]) {
	case FIELD_STRING:
		return len == 0 || memchr(data, '\0', len) == NULL;
	case FIELD_U32:
		return len == 4;
	case FIELD_U64:
		return len == 8;
	case FIELD_BYTES:
		return 1;
	}
	return 0;
}

int auth_msg_decode(const void *buf, size_t len, struct auth_msg *msg_r)
{
	const unsigned char *p = buf;
	uint32_t seen = 0;

	memset(msg_r, 0, sizeof(*msg_r));
	if (len < HEADER_LEN || len > AUTH_PROTO_MAX_MESSAGE || get_u16(p) != AUTH_PROTO_VERSION)
		return -1;
	uint16_t type = get_u16(p + 2);
	if (type == 0 || type >= AUTH_MSG_TYPE_COUNT)
		return -1;
	msg_r->type = (enum auth_msg_type)type;
	msg_r->id = get_u32(p + 4);
	for (size_t pos = HEADER_LEN; pos < len;) {
		if (len - pos < FIELD_HEADER_LEN)
			return -1;
		unsigned tag = p[pos];
		size_t flen = get_u16(p + pos + 1);
		pos += FIELD_HEADER_LEN;
		if (tag == 0 || tag >= AUTH_FIELD_COUNT || (seen & F(tag)) != 0 ||
		    flen > len - pos || !field_value_ok((enum auth_field)tag, p + pos, flen))
			return -1;
		seen |= F(tag);
		msg_r->fields[tag] = (struct auth_field_value){p + pos, flen, true};
		pos += flen;
	}
	uint32_t required = type_rules[type].required;
	if ((seen & required) != required || (seen & ~(required | type_rules[type].optional)) != 0)
		return -1;
	return 0;
}

char *auth_msg_strdup(const struct auth_msg *msg, enum auth_field tag)
{
	const struct auth_field_value *v = &msg->fields[tag];

	return v->present ? xstrndup((const char *)v->data, v->len) : NULL;
}

void auth_msg_add_u64(struct auth_msg_builder *b, enum auth_field tag, uint64_t value)
{
	unsigned char raw[8];

	put_u32(raw, (uint32_t)(value & 0xffffffffu));
	put_u32(raw + 4, (uint32_t)(value >> 32));
	auth_msg_add_bytes(b, tag, raw, sizeof(raw));
}

uint64_t auth_msg_u64(const struct auth_msg *msg, enum auth_field tag, uint64_t fallback)
{
	const struct auth_field_value *v = &msg->fields[tag];

	if (!v->present || v->len != 8)
		return fallback;
	return (uint64_t)get_u32(v->data) | ((uint64_t)get_u32(v->data + 4) << 32);
}

uint32_t auth_msg_u32(const struct auth_msg *msg, enum auth_field tag, uint32_t fallback)
{
	const struct auth_field_value *v = &msg->fields[tag];

	return v->present && v->len == 4 ? get_u32(v->data) : fallback;
}

/* Encoding and strict decoding of the worker <-> auth process datagrams (see auth_proto.h). */
#include <string.h>

#include "auth/auth_proto.h"

#define HEADER_LEN 8

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

static int string_ok(const char *s, size_t len)
{
	return len <= AUTH_PROTO_MAX_STRING && (len == 0 || memchr(s, '\0', len) == NULL);
}

static size_t encode_two_strings(void *buf, size_t cap, uint16_t type, uint32_t id,
				 const unsigned char *prefix, size_t prefix_len, const char *a,
				 size_t a_len, const char *b, size_t b_len)
{
	unsigned char *p = buf;
	size_t total = HEADER_LEN + prefix_len + 4 + a_len + b_len;

	if (!string_ok(a, a_len) || !string_ok(b, b_len) || total > cap ||
	    total > AUTH_PROTO_MAX_MESSAGE)
		return 0;
	put_u16(p, AUTH_PROTO_VERSION);
	put_u16(p + 2, type);
	put_u32(p + 4, id);
	p += HEADER_LEN;
	if (prefix_len > 0)
		memcpy(p, prefix, prefix_len);
	p += prefix_len;
	put_u16(p, (uint16_t)a_len);
	put_u16(p + 2, (uint16_t)b_len);
	p += 4;
	if (a_len > 0)
		memcpy(p, a, a_len);
	if (b_len > 0)
		memcpy(p + a_len, b, b_len);
	return total;
}

/* Checks the header and splits the two length-prefixed strings after prefix_len bytes. */
static int decode_two_strings(const void *buf, size_t len, uint16_t type, uint32_t *id_r,
			      const unsigned char **prefix_r, size_t prefix_len, const char **a_r,
			      size_t *a_len_r, const char **b_r, size_t *b_len_r)
{
	const unsigned char *p = buf;

	if (len < HEADER_LEN + prefix_len + 4 || len > AUTH_PROTO_MAX_MESSAGE)
		return -1;
	if (get_u16(p) != AUTH_PROTO_VERSION || get_u16(p + 2) != type)
		return -1;
	*id_r = get_u32(p + 4);
	*prefix_r = p + HEADER_LEN;
	const unsigned char *lens = p + HEADER_LEN + prefix_len;
	size_t a_len = get_u16(lens), b_len = get_u16(lens + 2);
	if (HEADER_LEN + prefix_len + 4 + a_len + b_len != len)
		return -1;
	*a_r = (const char *)lens + 4;
	*b_r = *a_r + a_len;
	*a_len_r = a_len;
	*b_len_r = b_len;
	if (!string_ok(*a_r, a_len) || !string_ok(*b_r, b_len))
		return -1;
	return 0;
}

size_t auth_proto_encode_request(void *buf, size_t cap, const struct auth_verify_request *req)
{
	return encode_two_strings(buf, cap, AUTH_MSG_VERIFY_REQUEST, req->id, NULL, 0, req->user,
				  req->user_len, req->password, req->password_len);
}

size_t auth_proto_encode_reply(void *buf, size_t cap, const struct auth_verify_reply *reply)
{
	unsigned char result = (unsigned char)reply->result;

	return encode_two_strings(buf, cap, AUTH_MSG_VERIFY_REPLY, reply->id, &result, 1,
				  reply->user, reply->user_len, reply->location,
				  reply->location_len);
}

int auth_proto_decode_request(const void *buf, size_t len, struct auth_verify_request *req_r)
{
	const unsigned char *prefix;

	return decode_two_strings(buf, len, AUTH_MSG_VERIFY_REQUEST, &req_r->id, &prefix, 0,
				  &req_r->user, &req_r->user_len, &req_r->password,
				  &req_r->password_len);
}

int auth_proto_decode_reply(const void *buf, size_t len, struct auth_verify_reply *reply_r)
{
	const unsigned char *prefix;

	if (decode_two_strings(buf, len, AUTH_MSG_VERIFY_REPLY, &reply_r->id, &prefix, 1,
			       &reply_r->user, &reply_r->user_len, &reply_r->location,
			       &reply_r->location_len) < 0)
		return -1;
	if (prefix[0] < AUTH_RESULT_OK || prefix[0] > AUTH_RESULT_TEMPFAIL)
		return -1;
	reply_r->result = (enum auth_result)prefix[0];
	return 0;
}

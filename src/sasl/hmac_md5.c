/* HMAC-MD5 with exposed MD5 states (RFC 1321, RFC 2104) for Dovecot's {CRAM-MD5} secrets. */
#include <string.h>

#include <sodium.h>

#include "sasl/hmac_md5.h"

#define MD5_BLOCK_LEN 64

/* RFC 1321 §3.4: K[i] = floor(2^32 * abs(sin(i + 1))). */
static const uint32_t md5_k[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};
/* Rotation amounts, four per round. */
static const unsigned int md5_shift[4][4] = {
    {7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};
static const uint32_t md5_iv[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};

static uint32_t md5_rotl(uint32_t x, unsigned int n)
{
	return (x << n) | (x >> (32 - n));
}

static uint32_t md5_load_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void md5_store_le32(unsigned char *p, uint32_t v)
{
	for (size_t i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* The round function and message word for step i (RFC 1321 §3.4). */
static uint32_t md5_mix(unsigned int i, uint32_t b, uint32_t c, uint32_t d, unsigned int *word_r)
{
	switch (i / 16) {
	case 0:
		*word_r = i;
		return (b & c) | (~b & d);
	case 1:
		*word_r = (5 * i + 1) % 16;
		return (d & b) | (~d & c);
	case 2:
		*word_r = (3 * i + 5) % 16;
		return b ^ c ^ d;
	default:
		*word_r = (7 * i) % 16;
		return c ^ (b | ~d);
	}
}

static void md5_block(uint32_t state[4], const unsigned char block[MD5_BLOCK_LEN])
{
	uint32_t x[16], a = state[0], b = state[1], c = state[2], d = state[3];

	for (size_t i = 0; i < 16; i++)
		x[i] = md5_load_le32(block + 4 * i);
	for (unsigned int i = 0; i < 64; i++) {
		unsigned int word;
		uint32_t f = md5_mix(i, b, c, d, &word) + a + md5_k[i] + x[word];
		a = d;
		d = c;
		c = b;
		b += md5_rotl(f, md5_shift[i / 16][i % 4]);
	}
	state[0] += a;
	state[1] += b;
	state[2] += c;
	state[3] += d;
	sodium_memzero(x, sizeof(x));
}

/* Hashes msg as the continuation of prefix_len bytes already folded into state (a multiple of
 * the block size), and writes the final digest. */
static void md5_finish_from(const uint32_t start[4], uint64_t prefix_len, const unsigned char *msg,
			    size_t len, unsigned char digest_r[HMAC_MD5_DIGEST_LEN])
{
	uint32_t state[4];
	unsigned char tail[2 * MD5_BLOCK_LEN] = {0};
	uint64_t bits = (prefix_len + len) * 8;
	size_t full = len - len % MD5_BLOCK_LEN, rest = len - full;

	memcpy(state, start, sizeof(state));
	for (size_t off = 0; off < full; off += MD5_BLOCK_LEN)
		md5_block(state, msg + off);
	memcpy(tail, msg + full, rest);
	tail[rest] = 0x80;
	size_t tail_len = rest + 9 <= MD5_BLOCK_LEN ? MD5_BLOCK_LEN : 2 * MD5_BLOCK_LEN;
	for (size_t i = 0; i < 8; i++)
		tail[tail_len - 8 + i] = (unsigned char)(bits >> (8 * i));
	for (size_t off = 0; off < tail_len; off += MD5_BLOCK_LEN)
		md5_block(state, tail + off);
	for (size_t i = 0; i < 4; i++)
		md5_store_le32(digest_r + 4 * i, state[i]);
	sodium_memzero(tail, sizeof(tail));
	sodium_memzero(state, sizeof(state));
}

static void md5_state_after_pad(uint32_t state_r[4], const unsigned char key[MD5_BLOCK_LEN],
				unsigned char pad)
{
	unsigned char block[MD5_BLOCK_LEN];

	for (size_t i = 0; i < MD5_BLOCK_LEN; i++)
		block[i] = key[i] ^ pad;
	memcpy(state_r, md5_iv, sizeof(md5_iv));
	md5_block(state_r, block);
	sodium_memzero(block, sizeof(block));
}

void hmac_md5_context_init(struct hmac_md5_context *ctx_r, const unsigned char *key, size_t key_len)
{
	unsigned char block[MD5_BLOCK_LEN] = {0};

	if (key_len > MD5_BLOCK_LEN)
		md5_finish_from(md5_iv, 0, key, key_len, block);
	else
		memcpy(block, key, key_len);
	md5_state_after_pad(ctx_r->inner, block, 0x36);
	md5_state_after_pad(ctx_r->outer, block, 0x5c);
	sodium_memzero(block, sizeof(block));
}

void hmac_md5_context_finish(const struct hmac_md5_context *ctx, const unsigned char *msg,
			     size_t msg_len, unsigned char digest_r[HMAC_MD5_DIGEST_LEN])
{
	unsigned char inner[HMAC_MD5_DIGEST_LEN];

	md5_finish_from(ctx->inner, MD5_BLOCK_LEN, msg, msg_len, inner);
	md5_finish_from(ctx->outer, MD5_BLOCK_LEN, inner, sizeof(inner), digest_r);
	sodium_memzero(inner, sizeof(inner));
}

int hmac_md5_context_decode(const char *hex, size_t len, struct hmac_md5_context *ctx_r)
{
	unsigned char raw[HMAC_MD5_CONTEXT_HEX_LEN / 2];
	size_t raw_len;

	if (len != HMAC_MD5_CONTEXT_HEX_LEN ||
	    sodium_hex2bin(raw, sizeof(raw), hex, len, NULL, &raw_len, NULL) != 0 ||
	    raw_len != sizeof(raw))
		return -1;
	for (size_t i = 0; i < 4; i++) {
		ctx_r->outer[i] = md5_load_le32(raw + 4 * i);
		ctx_r->inner[i] = md5_load_le32(raw + 16 + 4 * i);
	}
	sodium_memzero(raw, sizeof(raw));
	return 0;
}

void hmac_md5_context_encode(const struct hmac_md5_context *ctx,
			     char hex_r[HMAC_MD5_CONTEXT_HEX_LEN + 1])
{
	unsigned char raw[HMAC_MD5_CONTEXT_HEX_LEN / 2];

	for (size_t i = 0; i < 4; i++) {
		md5_store_le32(raw + 4 * i, ctx->outer[i]);
		md5_store_le32(raw + 16 + 4 * i, ctx->inner[i]);
	}
	sodium_bin2hex(hex_r, HMAC_MD5_CONTEXT_HEX_LEN + 1, raw, sizeof(raw));
	sodium_memzero(raw, sizeof(raw));
}

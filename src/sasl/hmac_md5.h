/* HMAC-MD5 from precomputed inner and outer MD5 states, as CRAM-MD5 needs when the stored secret is
 * Dovecot's {CRAM-MD5} (which keeps the states instead of the password). OpenSSL does not expose
 * MD5 states without deprecated APIs, so the MD5 block function (RFC 1321) is written out here. */
#ifndef BUZON_SASL_HMAC_MD5_H
#define BUZON_SASL_HMAC_MD5_H

#include <stddef.h>
#include <stdint.h>

#define HMAC_MD5_DIGEST_LEN ((size_t)16)
/* Dovecot's {CRAM-MD5} data: hex of the outer state, then the inner state, each as four
 * little-endian 32-bit words. */
#define HMAC_MD5_CONTEXT_HEX_LEN 64

/* MD5 states after hashing one block of key XOR opad (outer) and key XOR ipad (inner). */
struct hmac_md5_context {
	uint32_t outer[4];
	uint32_t inner[4];
};

/* Fills ctx_r for key (keys over 64 bytes are first hashed, as RFC 2104 says). */
void hmac_md5_context_init(struct hmac_md5_context *ctx_r, const unsigned char *key,
			   size_t key_len);
/* Computes HMAC-MD5(key, msg) from the precomputed context. */
void hmac_md5_context_finish(const struct hmac_md5_context *ctx, const unsigned char *msg,
			     size_t msg_len, unsigned char digest_r[HMAC_MD5_DIGEST_LEN]);
/* Parses exactly HMAC_MD5_CONTEXT_HEX_LEN hex digits (Dovecot's layout). Returns -1 if malformed.
 */
int hmac_md5_context_decode(const char *hex, size_t len, struct hmac_md5_context *ctx_r);
/* Writes the Dovecot layout as lower-case hex plus a NUL into hex_r. */
void hmac_md5_context_encode(const struct hmac_md5_context *ctx,
			     char hex_r[HMAC_MD5_CONTEXT_HEX_LEN + 1]);

#endif

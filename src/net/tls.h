/* TLS for POP3 (implicit TLS on 995, RFC 8314; STLS, RFC 2595) with OpenSSL 3. The master reads
 * the certificate and key files (it may be the only process allowed to) into memory; workers build
 * their SSL_CTX from that memory, and get fresh material on reload without dropping sessions. */
#ifndef BUZON_NET_TLS_H
#define BUZON_NET_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/ssl.h>

#include "core/config.h"

/* OpenSSL's ticket key material: name, HMAC key and AES key. */
#define TLS_TICKET_KEYS_LEN 80

/* The PEM files' contents: the default certificate, and per-name ones chosen by SNI. */
struct tls_material {
	char *name;	/* SNI name of a per-name entry; NULL for the default */
	char *cert_pem; /* certificate chain, leaf first */
	size_t cert_len;
	char *key_pem;
	size_t key_len;
	char *client_ca_pem; /* CAs for client certificates (EXTERNAL), or NULL */
	size_t client_ca_len;
	struct tls_material *sni; /* [tls] sni entries (only in the default) */
	size_t sni_count;
	/* Session-ticket keys shared by every worker, so that a client resumes whichever worker the
	 * kernel hands its next connection to; made once per start (kept across reloads). */
	unsigned char ticket_keys[TLS_TICKET_KEYS_LEN];
	bool has_ticket_keys;
};

/* Splits one "NAME=/path/cert.pem:/path/key.pem" entry of [tls] sni in place (NUL-terminating
 * and trimming the parts). Returns -1 if it has not that shape or a path is not absolute. */
int tls_sni_entry_split(char *item, char **name_r, char **cert_r, char **key_r);

/* True when the config asks for TLS at all ([tls] cert set). */
bool tls_configured(const struct buzon_config *config);

/* Fills material's ticket keys with fresh random bytes. */
void tls_material_new_ticket_keys(struct tls_material *material);

/* Reads the files named by [tls]. Returns -1 with a newly allocated *error_r naming the file. */
int tls_material_load(const struct buzon_config *config, struct tls_material *material,
		      char **error_r);
/* Wipes (the key) and frees. */
void tls_material_clear(struct tls_material *material);

/* Builds a server context from material and the [tls] settings (minimum version, ciphers,
 * session tickets, ignoring a missing close_notify as many mail clients omit it). Checks that the
 * key matches the certificate. Per-name entries become contexts that the SNI callback switches
 * to ("*.example.org" matches one label). Returns NULL with a newly allocated *error_r. */
SSL_CTX *tls_context_new(const struct buzon_config *config, const struct tls_material *material,
			 char **error_r);

/* Channel-binding data of an established connection, for SCRAM-*-PLUS. Each returns the length
 * written into out (at most size), or 0 if unavailable. */
size_t tls_channel_binding_exporter(SSL *ssl, unsigned char *out, size_t size);
size_t tls_channel_binding_endpoint(SSL *ssl, unsigned char *out, size_t size);

/* The identity of a verified client certificate (its subject's first email SAN, else its CN) as a
 * newly allocated string, or NULL when there is none or it did not verify. */
char *tls_client_identity(SSL *ssl);

/* Protocol version name of an established connection ("TLSv1.3"). */
const char *tls_version_name(SSL *ssl);

#endif

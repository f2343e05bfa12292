/* TLS contexts and per-connection facts (see tls.h). */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "net/tls.h"

/* PEM files larger than this are refused: a chain of a few certificates is a few KiB. */
#define TLS_PEM_MAX (1024 * 1024)

bool tls_configured(const struct buzon_config *config)
{
	return config->tls_cert != NULL;
}

static int tls_read_file(const char *path, char **data_r, size_t *len_r, char **error_r)
{
	FILE *file = fopen(path, "re");
	char *data = NULL;
	size_t len = 0;

	if (file == NULL) {
		*error_r = xasprintf("%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	data = xmalloc(TLS_PEM_MAX + 1);
	len = fread(data, 1, TLS_PEM_MAX + 1, file);
	bool failed = ferror(file) != 0;
	fclose(file);
	if (failed || len > TLS_PEM_MAX || len == 0) {
		*error_r = xasprintf("%s: %s", path,
				     failed ? "read error" : len == 0 ? "empty" : "larger than 1 MiB");
		sodium_memzero(data, len > TLS_PEM_MAX ? TLS_PEM_MAX : len);
		free(data);
		return -1;
	}
	data[len] = '\0';
	*data_r = xrealloc(data, len + 1);
	*len_r = len;
	return 0;
}

int tls_material_load(const struct buzon_config *config, struct tls_material *material,
		      char **error_r)
{
	memset(material, 0, sizeof(*material));
	if (tls_read_file(config->tls_cert, &material->cert_pem, &material->cert_len, error_r) < 0 ||
	    tls_read_file(config->tls_key != NULL ? config->tls_key : config->tls_cert,
			  &material->key_pem, &material->key_len, error_r) < 0 ||
	    (config->tls_client_ca != NULL &&
	     tls_read_file(config->tls_client_ca, &material->client_ca_pem,
			   &material->client_ca_len, error_r) < 0)) {
		tls_material_clear(material);
		return -1;
	}
	return 0;
}

void tls_material_clear(struct tls_material *material)
{
	if (material->key_pem != NULL)
		sodium_memzero(material->key_pem, material->key_len);
	free(material->key_pem);
	free(material->cert_pem);
	free(material->client_ca_pem);
	memset(material, 0, sizeof(*material));
}

static void tls_put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t tls_get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

unsigned char *tls_material_pack(const struct tls_material *material, size_t *len_r)
{
	size_t total = TLS_PACK_HEADER_LEN + material->cert_len + material->key_len +
		       material->client_ca_len;
	unsigned char *buf = xmalloc(total), *p = buf + TLS_PACK_HEADER_LEN;

	tls_put_u32(buf, (uint32_t)material->cert_len);
	tls_put_u32(buf + 4, (uint32_t)material->key_len);
	tls_put_u32(buf + 8, (uint32_t)material->client_ca_len);
	memcpy(p, material->cert_pem, material->cert_len);
	p += material->cert_len;
	memcpy(p, material->key_pem, material->key_len);
	p += material->key_len;
	if (material->client_ca_len > 0)
		memcpy(p, material->client_ca_pem, material->client_ca_len);
	*len_r = total;
	return buf;
}

size_t tls_material_packed_len(const unsigned char *header, size_t header_len)
{
	if (header_len < TLS_PACK_HEADER_LEN)
		return 0;
	uint64_t cert = tls_get_u32(header), key = tls_get_u32(header + 4),
		 ca = tls_get_u32(header + 8);
	if (cert == 0 || cert > TLS_PEM_MAX || key == 0 || key > TLS_PEM_MAX || ca > TLS_PEM_MAX)
		return 0;
	return (size_t)(TLS_PACK_HEADER_LEN + cert + key + ca);
}

static char *tls_copy_blob(const unsigned char *p, size_t len)
{
	char *copy = xmalloc(len + 1);

	memcpy(copy, p, len);
	copy[len] = '\0';
	return copy;
}

int tls_material_unpack(const unsigned char *buf, size_t len, struct tls_material *material)
{
	size_t total = tls_material_packed_len(buf, len);

	memset(material, 0, sizeof(*material));
	if (total == 0 || total != len)
		return -1;
	const unsigned char *p = buf + TLS_PACK_HEADER_LEN;
	material->cert_len = tls_get_u32(buf);
	material->key_len = tls_get_u32(buf + 4);
	material->client_ca_len = tls_get_u32(buf + 8);
	material->cert_pem = tls_copy_blob(p, material->cert_len);
	material->key_pem = tls_copy_blob(p + material->cert_len, material->key_len);
	if (material->client_ca_len > 0)
		material->client_ca_pem = tls_copy_blob(p + material->cert_len + material->key_len,
							material->client_ca_len);
	return 0;
}

static char *tls_error_text(const char *what)
{
	unsigned long code = ERR_get_error();
	char buf[256];

	ERR_error_string_n(code, buf, sizeof(buf));
	ERR_clear_error();
	return xasprintf("%s: %s", what, code != 0 ? buf : "unknown error");
}

/* Loads the leaf certificate and the rest of the chain from PEM in memory. */
static int tls_context_use_chain(SSL_CTX *ctx, const struct tls_material *material)
{
	BIO *bio = BIO_new_mem_buf(material->cert_pem, (int)material->cert_len);
	X509 *cert = bio != NULL ? PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL) : NULL;
	int ok = cert != NULL && SSL_CTX_use_certificate(ctx, cert) == 1;

	X509_free(cert);
	SSL_CTX_clear_chain_certs(ctx);
	while (ok) {
		X509 *extra = PEM_read_bio_X509(bio, NULL, NULL, NULL);
		if (extra == NULL)
			break;
		if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
			X509_free(extra);
			ok = 0;
		}
	}
	ERR_clear_error(); /* the end of the PEM data reads as an error */
	BIO_free(bio);
	return ok ? 0 : -1;
}

static int tls_context_use_key(SSL_CTX *ctx, const struct tls_material *material)
{
	BIO *bio = BIO_new_mem_buf(material->key_pem, (int)material->key_len);
	EVP_PKEY *key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	int ok = key != NULL && SSL_CTX_use_PrivateKey(ctx, key) == 1 &&
		 SSL_CTX_check_private_key(ctx) == 1;

	EVP_PKEY_free(key);
	BIO_free(bio);
	return ok ? 0 : -1;
}

static int tls_context_use_client_ca(SSL_CTX *ctx, const struct tls_material *material)
{
	BIO *bio = BIO_new_mem_buf(material->client_ca_pem, (int)material->client_ca_len);
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
	int count = 0;
	X509 *ca;

	while (bio != NULL && names != NULL && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		X509_STORE_add_cert(store, ca);
		sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(ca)));
		X509_free(ca);
		count++;
	}
	ERR_clear_error();
	BIO_free(bio);
	if (count == 0) {
		sk_X509_NAME_pop_free(names, X509_NAME_free);
		return -1;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	/* ask for a certificate but do not insist: most clients log in with a password */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return 0;
}

static int tls_context_settings(SSL_CTX *ctx, const struct buzon_config *config, char **error_r)
{
	int version = strcmp(config->tls_min_version, "TLSv1.3") == 0 ? TLS1_3_VERSION
									 : TLS1_2_VERSION;

	SSL_CTX_set_min_proto_version(ctx, version);
	/* Many mail clients close without close_notify; OpenSSL 3 reports that as an error and
	 * Debian's libevent 2.1.12 predates its fix. */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION |
					 SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (config->tls_ciphers != NULL && SSL_CTX_set_cipher_list(ctx, config->tls_ciphers) != 1) {
		*error_r = tls_error_text("[tls] ciphers");
		return -1;
	}
	if (config->tls_ciphersuites != NULL &&
	    SSL_CTX_set_ciphersuites(ctx, config->tls_ciphersuites) != 1) {
		*error_r = tls_error_text("[tls] ciphersuites");
		return -1;
	}
	/* resumption: stateless tickets (keys are per worker process) and a session cache */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"buzon-pop3", 10);
	SSL_CTX_set_num_tickets(ctx, 1);
	return 0;
}

SSL_CTX *tls_context_new(const struct buzon_config *config, const struct tls_material *material,
			 char **error_r)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL) {
		*error_r = tls_error_text("SSL_CTX_new");
		return NULL;
	}
	if (tls_context_settings(ctx, config, error_r) < 0)
		goto fail;
	if (tls_context_use_chain(ctx, material) < 0) {
		*error_r = tls_error_text(config->tls_cert);
		goto fail;
	}
	if (tls_context_use_key(ctx, material) < 0) {
		*error_r = tls_error_text(config->tls_key != NULL ? config->tls_key
								   : config->tls_cert);
		goto fail;
	}
	if (material->client_ca_pem != NULL && tls_context_use_client_ca(ctx, material) < 0) {
		*error_r = xasprintf("%s: no certificate found", config->tls_client_ca);
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

size_t tls_channel_binding_exporter(SSL *ssl, unsigned char *out, size_t size)
{
	static const char label[] = "EXPORTER-Channel-Binding";

	/* RFC 9266: 32 bytes; meaningful only with TLS 1.3 (or 1.2 with extended master secret) */
	if (size < 32 ||
	    (SSL_version(ssl) < TLS1_3_VERSION && SSL_get_extms_support(ssl) != 1) ||
	    SSL_export_keying_material(ssl, out, 32, label, sizeof(label) - 1, NULL, 0, 0) != 1)
		return 0;
	return 32;
}

size_t tls_channel_binding_endpoint(SSL *ssl, unsigned char *out, size_t size)
{
	X509 *cert = SSL_get_certificate(ssl);
	const EVP_MD *md = NULL;
	unsigned int len = 0;
	int md_nid = NID_undef;

	if (cert == NULL || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL))
		return 0;
	/* RFC 5929 §4.1: MD5 and SHA-1 are replaced by SHA-256 */
	if (md_nid == NID_md5 || md_nid == NID_sha1 || md_nid == NID_undef)
		md = EVP_sha256();
	else
		md = EVP_get_digestbynid(md_nid);
	if (md == NULL || (size_t)EVP_MD_get_size(md) > size || !X509_digest(cert, md, out, &len))
		return 0;
	return len;
}

char *tls_client_identity(SSL *ssl)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	char *identity = NULL;

	if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
		return NULL;
	GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names) && identity == NULL; i++) {
		const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
		if (name->type == GEN_EMAIL)
			identity = xstrndup((const char *)ASN1_STRING_get0_data(name->d.rfc822Name),
					    (size_t)ASN1_STRING_length(name->d.rfc822Name));
	}
	GENERAL_NAMES_free(names);
	if (identity == NULL) {
		char cn[256];
		if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
					      sizeof(cn)) > 0)
			identity = xstrdup(cn);
	}
	return identity;
}

const char *tls_version_name(SSL *ssl)
{
	return SSL_get_version(ssl);
}

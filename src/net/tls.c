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
#include <strings.h>

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
				     failed	? "read error"
				     : len == 0 ? "empty"
						: "larger than 1 MiB");
		sodium_memzero(data, len > TLS_PEM_MAX ? TLS_PEM_MAX : len);
		free(data);
		return -1;
	}
	data[len] = '\0';
	*data_r = xrealloc(data, len + 1);
	*len_r = len;
	return 0;
}

/* Reads one cert/key pair (key_path NULL: the key is in the cert file). */
static int tls_identity_load(const char *cert_path, const char *key_path,
			     struct tls_material *material, char **error_r)
{
	if (tls_read_file(cert_path, &material->cert_pem, &material->cert_len, error_r) < 0)
		return -1;
	return tls_read_file(key_path != NULL ? key_path : cert_path, &material->key_pem,
			     &material->key_len, error_r);
}

int tls_sni_entry_split(char *item, char **name_r, char **cert_r, char **key_r)
{
	char *eq = strchr(item, '='), *colon = eq != NULL ? strchr(eq, ':') : NULL;

	if (eq == NULL || colon == NULL)
		return -1;
	*eq = *colon = '\0';
	*name_r = str_trim(item);
	*cert_r = str_trim(eq + 1);
	*key_r = str_trim(colon + 1);
	return **name_r != '\0' && **cert_r == '/' && **key_r == '/' ? 0 : -1;
}

/* [tls] sni = NAME=CERT:KEY, …  (checked by the config reader; parsed again here). */
static int tls_sni_load(const char *list, struct tls_material *material, char **error_r)
{
	char *copy = xstrdup(list), *saveptr = NULL, *name, *cert, *key;
	int ret = 0;

	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL && ret == 0;
	     item = strtok_r(NULL, ",", &saveptr)) {
		if (tls_sni_entry_split(item, &name, &cert, &key) < 0) {
			*error_r = xasprintf("[tls] sni: an entry is not NAME=CERT:KEY");
			ret = -1;
			break;
		}
		material->sni =
		    xrealloc(material->sni, (material->sni_count + 1) * sizeof(*material->sni));
		struct tls_material *entry = &material->sni[material->sni_count++];
		memset(entry, 0, sizeof(*entry));
		entry->name = xstrdup(name);
		ret = tls_identity_load(cert, key, entry, error_r);
	}
	free(copy);
	return ret;
}

void tls_material_new_ticket_keys(struct tls_material *material)
{
	randombytes_buf(material->ticket_keys, sizeof(material->ticket_keys));
	material->has_ticket_keys = true;
}

int tls_material_load(const struct buzon_config *config, struct tls_material *material,
		      char **error_r)
{
	memset(material, 0, sizeof(*material));
	if (tls_identity_load(config->tls_cert, config->tls_key, material, error_r) < 0 ||
	    (config->tls_client_ca != NULL &&
	     tls_read_file(config->tls_client_ca, &material->client_ca_pem,
			   &material->client_ca_len, error_r) < 0) ||
	    (config->tls_sni != NULL && tls_sni_load(config->tls_sni, material, error_r) < 0)) {
		tls_material_clear(material);
		return -1;
	}
	return 0;
}

void tls_material_clear(struct tls_material *material)
{
	sodium_memzero(material->ticket_keys, sizeof(material->ticket_keys));
	for (size_t i = 0; i < material->sni_count; i++)
		tls_material_clear(&material->sni[i]);
	free(material->sni);
	if (material->key_pem != NULL)
		sodium_memzero(material->key_pem, material->key_len);
	free(material->key_pem);
	free(material->cert_pem);
	free(material->client_ca_pem);
	free(material->name);
	memset(material, 0, sizeof(*material));
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
	int version =
	    strcmp(config->tls_min_version, "TLSv1.3") == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;

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
	/* resumption: stateless tickets (one key set shared by every worker) and a session cache */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"buzon-pop3", 10);
	SSL_CTX_set_num_tickets(ctx, 1);
	/* an idle session holds no 16 KiB+ record buffers: they are freed whenever empty and
	 * allocated again for the next record, which keeps thousands of idle TLS sessions cheap */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return 0;
}

/* One context from one cert/key pair with the [tls] settings. */
static SSL_CTX *tls_context_one(const struct buzon_config *config,
				const struct tls_material *material, const unsigned char *keys,
				char **error_r)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	const char *what = material->name != NULL ? material->name : config->tls_cert;

	if (ctx == NULL) {
		*error_r = tls_error_text("SSL_CTX_new");
		return NULL;
	}
	if (tls_context_settings(ctx, config, error_r) < 0)
		goto fail;
	if (tls_context_use_chain(ctx, material) < 0) {
		*error_r = tls_error_text(what);
		goto fail;
	}
	if (tls_context_use_key(ctx, material) < 0) {
		*error_r = tls_error_text(material->name != NULL    ? material->name
					  : config->tls_key != NULL ? config->tls_key
								    : config->tls_cert);
		goto fail;
	}
	if (keys != NULL &&
	    SSL_CTX_set_tlsext_ticket_keys(ctx, (void *)keys, TLS_TICKET_KEYS_LEN) != 1) {
		*error_r = tls_error_text("session ticket keys");
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* The per-name contexts, kept in the default context's ex_data and freed with it. */
struct tls_sni_table {
	size_t count;
	char **names;
	SSL_CTX **ctxs;
};

static int tls_sni_index = -1;

static void tls_sni_table_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			       void *argp)
{
	struct tls_sni_table *table = ptr;

	if (table == NULL)
		return;
	for (size_t i = 0; i < table->count; i++) {
		SSL_CTX_free(table->ctxs[i]);
		free(table->names[i]);
	}
	free(table->ctxs);
	free(table->names);
	free(table);
}

/* "mail.example.org" matches itself; "*.example.org" matches one more label. */
static bool tls_sni_name_matches(const char *pattern, const char *name)
{
	if (strncmp(pattern, "*.", 2) == 0) {
		const char *dot = strchr(name, '.');
		return dot != NULL && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
	}
	return strcasecmp(pattern, name) == 0;
}

static int tls_sni_callback(SSL *ssl, int *alert, void *arg)
{
	const struct tls_sni_table *table = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	/* exact names first, then wildcards, else the default certificate */
	for (int pass = 0; name != NULL && pass < 2; pass++) {
		for (size_t i = 0; i < table->count; i++) {
			bool wildcard = table->names[i][0] == '*';
			if (wildcard == (pass == 1) &&
			    tls_sni_name_matches(table->names[i], name)) {
				SSL_set_SSL_CTX(ssl, table->ctxs[i]);
				return SSL_TLSEXT_ERR_OK;
			}
		}
	}
	return SSL_TLSEXT_ERR_NOACK;
}

static int tls_context_add_sni(SSL_CTX *ctx, const struct buzon_config *config,
			       const struct tls_material *material, char **error_r)
{
	if (material->sni_count == 0)
		return 0;
	if (tls_sni_index < 0)
		tls_sni_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_sni_table_free);
	struct tls_sni_table *table = xcalloc(1, sizeof(*table));
	table->names = xcalloc(material->sni_count, sizeof(*table->names));
	table->ctxs = xcalloc(material->sni_count, sizeof(*table->ctxs));
	SSL_CTX_set_ex_data(ctx, tls_sni_index, table); /* freed with ctx from here on */
	for (size_t i = 0; i < material->sni_count; i++) {
		SSL_CTX *named = tls_context_one(
		    config, &material->sni[i],
		    material->has_ticket_keys ? material->ticket_keys : NULL, error_r);
		if (named == NULL)
			return -1;
		table->names[table->count] = xstrdup(material->sni[i].name);
		table->ctxs[table->count++] = named;
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, tls_sni_callback);
	SSL_CTX_set_tlsext_servername_arg(ctx, table);
	return 0;
}

SSL_CTX *tls_context_new(const struct buzon_config *config, const struct tls_material *material,
			 char **error_r)
{
	SSL_CTX *ctx = tls_context_one(
	    config, material, material->has_ticket_keys ? material->ticket_keys : NULL, error_r);

	if (ctx == NULL)
		return NULL;
	if (material->client_ca_pem != NULL && tls_context_use_client_ca(ctx, material) < 0) {
		*error_r = xasprintf("%s: no certificate found", config->tls_client_ca);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (tls_context_add_sni(ctx, config, material, error_r) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

size_t tls_channel_binding_exporter(SSL *ssl, unsigned char *out, size_t size)
{
	static const char label[] = "EXPORTER-Channel-Binding";

	/* RFC 9266: 32 bytes; meaningful only with TLS 1.3 (or 1.2 with extended master secret) */
	if (size < 32 || (SSL_version(ssl) < TLS1_3_VERSION && SSL_get_extms_support(ssl) != 1) ||
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

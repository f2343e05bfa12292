/* Reads the INI configuration file with inih into struct buzon_config, with a table of keys so that
 * every option is parsed, defaulted, checked and printed in one place. Errors name FILE:LINE. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth/password.h"
#include "core/config.h"
#include "core/util.h"
#include "net/netlist.h"
#include "net/tls.h"
#include "sasl/sasl.h"
#include "store/store.h"
#include "store/uidl_import.h"

enum config_type {
	CONFIG_STRING,
	CONFIG_UINT,
	CONFIG_DURATION,    /* seconds */
	CONFIG_DURATION_MS, /* milliseconds; accepts "500ms" as well as the second units */
	CONFIG_BOOL,
	CONFIG_WORKERS,
	CONFIG_LOG_LEVEL,
	CONFIG_LISTEN, /* a list of addresses; count_offset locates its count */
	CONFIG_TLS_VERSION,
	CONFIG_CLEARTEXT,
	CONFIG_EXPIRE,
	CONFIG_MECHANISMS,
	CONFIG_NETWORKS,
	CONFIG_SNI,
	CONFIG_SIZE,
	CONFIG_LMTP_LISTEN,
	CONFIG_LOCATION,
	CONFIG_SCHEME,
	CONFIG_LOG_FORMAT,
	CONFIG_LOG_OUTPUT,
	CONFIG_SYSLOG_FACILITY,
	CONFIG_PATH, /* an absolute path */
	CONFIG_LOCK_TAKEOVER,
	CONFIG_UIDL_FORMAT, /* a pop3_uidl_format buzon can reproduce (store/uidl_import.h) */
};

struct config_key {
	const char *section;
	const char *name;
	enum config_type type;
	size_t offset;
	const char *default_value; /* NULL: no default (required keys are checked after parsing) */
	unsigned long long min, max; /* for CONFIG_UINT */
	size_t count_offset;	     /* CONFIG_LISTEN: where the number of addresses is kept */
};

#define KEY(sec, nm, ty, field, def, lo, hi)                                                       \
	{                                                                                          \
		sec, nm, ty, offsetof(struct buzon_config, field), def, lo, hi, 0                  \
	}
/* A list of listening addresses: the array field and its count field. */
#define LISTEN_KEY(sec, nm, field, count)                                                          \
	{                                                                                          \
		sec, nm, CONFIG_LISTEN, offsetof(struct buzon_config, field), NULL, 0, 0,          \
		    offsetof(struct buzon_config, count)                                           \
	}

/* Every option, its type and default. README.md documents each of them. */
static const struct config_key config_keys[] = {
    KEY("server", "user", CONFIG_STRING, server_user, NULL, 0, 0),
    KEY("server", "workers", CONFIG_WORKERS, workers, "auto", 0, 0),
    KEY("server", "log_level", CONFIG_LOG_LEVEL, log_level, "info", 0, 0),
    KEY("server", "sandbox", CONFIG_BOOL, sandbox, "yes", 0, 0),
    KEY("server", "sandbox_extra_paths", CONFIG_STRING, sandbox_extra_paths, NULL, 0, 0),
    KEY("server", "log_format", CONFIG_LOG_FORMAT, log_format, "text", 0, 0),
    KEY("server", "log_output", CONFIG_LOG_OUTPUT, log_output, "stderr", 0, 0),
    KEY("server", "syslog_facility", CONFIG_SYSLOG_FACILITY, syslog_facility, "mail", 0, 0),
    KEY("server", "control_socket", CONFIG_PATH, control_socket, "/run/buzon/control.sock", 0,
	0),
    /* SIGTERM: how long open sessions may go on before they are closed without committing */
    KEY("server", "drain_time", CONFIG_DURATION, drain_secs, "30s", 0, 3600),
    LISTEN_KEY("pop3", "listen", listens, listen_count),
    LISTEN_KEY("pop3", "listen_tls", listens_tls, listen_tls_count),
    /* behind HAProxy and the like: each connection starts with a PROXY v1/v2 header */
    LISTEN_KEY("pop3", "listen_proxy", listens_proxy, listen_proxy_count),
    LISTEN_KEY("pop3", "listen_tls_proxy", listens_tls_proxy, listen_tls_proxy_count),
    KEY("pop3", "proxy_trusted", CONFIG_NETWORKS, proxy_trusted, "", 0, 0),
    KEY("pop3", "stls", CONFIG_BOOL, stls, "yes", 0, 0),
    /* RFC 1939 §3: an autologout timer must be at least 10 minutes. */
    KEY("pop3", "idle_timeout", CONFIG_DURATION, idle_timeout_secs, "10m", 600, 86400),
    /* Not an autologout timer: the time a connection may take to log in at all, so that
     * clients trickling bytes (slowloris) cannot hold pre-login slots for the idle timeout. */
    KEY("pop3", "login_timeout", CONFIG_DURATION, login_timeout_secs, "1m", 5, 3600),
    KEY("pop3", "max_bad_commands", CONFIG_UINT, max_bad_commands, "20", 1, 1000),
    KEY("pop3", "max_connections", CONFIG_UINT, max_connections, "10000", 1, 1000000),
    KEY("pop3", "max_prelogin_per_ip", CONFIG_UINT, max_prelogin_per_ip, "50", 1, 100000),
    KEY("pop3", "max_sessions_per_ip", CONFIG_UINT, max_sessions_per_ip, "100", 1, 100000),
    KEY("pop3", "retr_marks_seen", CONFIG_BOOL, retr_marks_seen, "yes", 0, 0),
    KEY("pop3", "expire", CONFIG_EXPIRE, expire, "NEVER", 0, 0),
    KEY("pop3", "greeting", CONFIG_STRING, greeting, "buzon POP3 server ready", 0, 0),
    /* RFC 2449 LOGIN-DELAY: the least time between two logins of a user; 0: none */
    KEY("pop3", "login_delay", CONFIG_DURATION, login_delay_secs, "0", 0, 30 * 86400),
    /* a new session of a user whose maildrop another session holds may end that session */
    KEY("pop3", "lock_takeover", CONFIG_LOCK_TAKEOVER, lock_takeover, "idle", 0, 0),
    KEY("pop3", "lock_takeover_idle", CONFIG_DURATION, lock_takeover_idle_secs, "30s", 1, 86400),
    KEY("tls", "cert", CONFIG_STRING, tls_cert, NULL, 0, 0),
    KEY("tls", "key", CONFIG_STRING, tls_key, NULL, 0, 0),
    KEY("tls", "min_version", CONFIG_TLS_VERSION, tls_min_version, "TLSv1.2", 0, 0),
    KEY("tls", "ciphers", CONFIG_STRING, tls_ciphers, NULL, 0, 0),
    KEY("tls", "ciphersuites", CONFIG_STRING, tls_ciphersuites, NULL, 0, 0),
    KEY("tls", "client_ca", CONFIG_STRING, tls_client_ca, NULL, 0, 0),
    KEY("tls", "sni", CONFIG_SNI, tls_sni, NULL, 0, 0),
    KEY("auth", "passwd_file", CONFIG_STRING, passwd_file, NULL, 0, 0),
    KEY("auth", "cleartext", CONFIG_CLEARTEXT, auth_cleartext, "loopback", 0, 0),
    KEY("auth", "user", CONFIG_STRING, auth_user, NULL, 0, 0),
    KEY("auth", "threads", CONFIG_WORKERS, auth_threads, "auto", 0, 0),
    KEY("auth", "failure_delay", CONFIG_DURATION_MS, auth_failure_delay_ms, "2s", 0, 0),
    KEY("auth", "failure_delay_max", CONFIG_DURATION_MS, auth_failure_delay_max_ms, "15s", 0, 0),
    KEY("auth", "ban_failures", CONFIG_UINT, auth_ban_failures, "20", 0, 64),
    KEY("auth", "ban_window", CONFIG_DURATION, auth_ban_window_secs, "10m", 1, 86400),
    KEY("auth", "ban_time", CONFIG_DURATION, auth_ban_secs, "10m", 1, 86400),
    KEY("auth", "trusted_networks", CONFIG_NETWORKS, auth_trusted_networks, "", 0, 0),
    KEY("auth", "mechanisms", CONFIG_MECHANISMS, auth_mechanisms,
	"PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS SCRAM-SHA-1", 0, 0),
    KEY("auth", "apop", CONFIG_BOOL, auth_apop, "no", 0, 0),
    KEY("auth", "master_users", CONFIG_STRING, auth_master_users, NULL, 0, 0),
    KEY("auth", "default_scheme", CONFIG_SCHEME, default_scheme, "auto", 0, 0),
    KEY("mail", "location", CONFIG_LOCATION, mail_location, NULL, 0, 0),
    KEY("mail", "quota_bytes", CONFIG_SIZE, quota_bytes, "0", 0, 0),
    KEY("mail", "quota_messages", CONFIG_SIZE, quota_messages, "0", 0, 0),
    /* messages deleted through POP3 are kept hidden this long (buzon undelete); 0: unlinked */
    KEY("mail", "deleted_retention", CONFIG_DURATION, deleted_retention_secs, "7d", 0,
	3650U * 86400),
    /* how often POP3 worker 0 walks the mail root to purge what the undelete window let go */
    KEY("mail", "purge_interval", CONFIG_DURATION, purge_interval_secs, "1h", 0, 7 * 86400),
    /* the UIDL format of the server buzon replaces, for mailboxes imported from its index */
    KEY("mail", "import_uidl_format", CONFIG_UIDL_FORMAT, import_uidl_format, "%08Xu%08Xv", 0, 0),
    KEY("lmtp", "listen", CONFIG_LMTP_LISTEN, lmtp_listens, NULL, 0, 0),
    KEY("lmtp", "max_message_size", CONFIG_SIZE, lmtp_max_message_size, "50M", 0, 0),
    KEY("lmtp", "quota_full_tempfail", CONFIG_BOOL, lmtp_quota_full_tempfail, "no", 0, 0),
    KEY("lmtp", "hostname", CONFIG_STRING, lmtp_hostname, NULL, 0, 0),
    LISTEN_KEY("metrics", "listen", metrics_listens, metrics_listen_count),
};

struct config_parse_state {
	struct buzon_config *config;
	bool seen[ARRAY_SIZE(config_keys)];
	char *error; /* the first error; inih gives its line number */
};

static const struct config_key *config_key_find(const char *section, const char *name,
						bool *section_known_r)
{
	*section_known_r = false;
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		if (strcmp(config_keys[i].section, section) != 0)
			continue;
		*section_known_r = true;
		if (strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	}
	return NULL;
}

int config_parse_listen(const char *text, struct config_listen *out)
{
	char host[256];
	const char *port_text;
	unsigned long long port;

	memset(out, 0, sizeof(*out));
	if (text[0] == '[') {
		const char *end = strchr(text, ']');
		if (end == NULL || end[1] != ':' || (size_t)(end - text - 1) >= sizeof(host))
			return -1;
		memcpy(host, text + 1, (size_t)(end - text - 1));
		host[end - text - 1] = '\0';
		port_text = end + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (colon == NULL || (size_t)(colon - text) >= sizeof(host) ||
		    memchr(text, ':', (size_t)(colon - text)) != NULL)
			return -1;
		memcpy(host, text, (size_t)(colon - text));
		host[colon - text] = '\0';
		port_text = colon + 1;
	}
	if (str_parse_uint(port_text, 1, 65535, &port) < 0)
		return -1;

	struct sockaddr_in *sin = (struct sockaddr_in *)&out->addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->addr;
	if (strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0) {
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		sin->sin_port = htons((uint16_t)port);
		out->addr_len = sizeof(*sin);
	} else if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		out->addr_len = sizeof(*sin);
	} else if (text[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		out->addr_len = sizeof(*sin6);
	} else {
		return -1;
	}
	out->text = xstrdup(text);
	return 0;
}

static int config_set_listen(struct config_listen **listens, size_t *count, const char *value,
			     char **error_r)
{
	char *copy = xstrdup(value), *saveptr = NULL;
	int ret = 0;

	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL;
	     item = strtok_r(NULL, ",", &saveptr)) {
		item = str_trim(item);
		if (*item == '\0')
			continue;
		struct config_listen listen;
		if (config_parse_listen(item, &listen) < 0) {
			*error_r = xasprintf("invalid listen address '%s' (expected HOST:PORT, "
					     "[IPV6]:PORT or *:PORT)",
					     item);
			ret = -1;
			break;
		}
		*listens = xrealloc(*listens, (*count + 1) * sizeof(**listens));
		(*listens)[(*count)++] = listen;
	}
	free(copy);
	return ret;
}

/* A space- or comma-separated list of known SASL mechanism names, stored upper-cased. */
static int config_set_mechanisms(char **field, const struct config_key *key, const char *value,
				 char **error_r)
{
	char *copy = xstrdup(value), *saveptr = NULL;
	char *out = xstrdup("");

	for (char *name = strtok_r(copy, " ,\t", &saveptr); name != NULL;
	     name = strtok_r(NULL, " ,\t", &saveptr)) {
		const struct sasl_mech *mech = sasl_mech_find(name);
		if (mech == NULL) {
			*error_r = xasprintf("%s: unknown SASL mechanism '%s'", key->name, name);
			free(copy);
			free(out);
			return -1;
		}
		char *next =
		    xasprintf("%s%s%s", out, out[0] != '\0' ? " " : "", sasl_mech_name(mech));
		free(out);
		out = next;
	}
	free(copy);
	free(*field);
	*field = out;
	return 0;
}

/* [lmtp] listen: "unix:/path" or HOST:PORT items, comma separated. */
static int config_set_lmtp_listen(struct buzon_config *config, const char *value, char **error_r)
{
	char *copy = xstrdup(value), *saveptr = NULL;
	int ret = 0;

	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL && ret == 0;
	     item = strtok_r(NULL, ",", &saveptr)) {
		item = str_trim(item);
		if (strncmp(item, "unix:", 5) == 0) {
			if (item[5] != '/' || strlen(item + 5) >= 108) {
				*error_r =
				    xasprintf("lmtp listen: '%s' needs an absolute path of at "
					      "most 107 characters",
					      item);
				ret = -1;
				break;
			}
			config->lmtp_unix_paths =
			    xrealloc(config->lmtp_unix_paths, (config->lmtp_unix_count + 1) *
								  sizeof(*config->lmtp_unix_paths));
			config->lmtp_unix_paths[config->lmtp_unix_count++] = xstrdup(item + 5);
		} else if (*item != '\0') {
			ret = config_set_listen(&config->lmtp_listens, &config->lmtp_listen_count,
						item, error_r);
		}
	}
	free(copy);
	return ret;
}

/* [tls] sni: NAME=CERT:KEY entries separated by commas; each path absolute. */
static int config_set_sni(char **field, const struct config_key *key, const char *value,
			  char **error_r)
{
	char *copy = xstrdup(value), *saveptr = NULL, *name, *cert, *keyfile;
	int ret = 0;

	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL && ret == 0;
	     item = strtok_r(NULL, ",", &saveptr)) {
		char *shown = xstrdup(str_trim(item));
		if (tls_sni_entry_split(item, &name, &cert, &keyfile) < 0) {
			*error_r = xasprintf("%s: '%s' is not NAME=/path/cert.pem:/path/key.pem",
					     key->name, shown);
			ret = -1;
		}
		free(shown);
	}
	free(copy);
	if (ret == 0) {
		free(*field);
		*field = value[0] == '\0' ? NULL : xstrdup(value);
	}
	return ret;
}

/* Stores value into the field described by key. */
static int config_set(struct buzon_config *config, const struct config_key *key, const char *value,
		      char **error_r)
{
	void *field = (char *)config + key->offset;
	unsigned long long number;
	unsigned int seconds;
	bool flag;

	switch (key->type) {
	case CONFIG_STRING:
		free(*(char **)field);
		*(char **)field = value[0] == '\0' ? NULL : xstrdup(value);
		return 0;
	case CONFIG_SCHEME: {
		char *upper = xstrdup(value);
		for (char *p = upper; *p != '\0'; p++)
			*p = (char)toupper((unsigned char)*p);
		if (!password_scheme_known(upper) && strcmp(upper, "AUTO") != 0) {
			*error_r = xasprintf("%s: unknown password scheme '%s' (use YESCRYPT, "
					     "ARGON2ID, SHA512-CRYPT, BLF-CRYPT, ...)",
					     key->name, value);
			free(upper);
			return -1;
		}
		free(*(char **)field);
		*(char **)field = upper;
		return 0;
	}
	case CONFIG_UINT:
		if (str_parse_uint(value, key->min, key->max, &number) < 0) {
			*error_r = xasprintf("%s must be a whole number from %llu to %llu",
					     key->name, key->min, key->max);
			return -1;
		}
		*(unsigned int *)field = (unsigned int)number;
		return 0;
	case CONFIG_DURATION:
		if (str_parse_duration(value, &seconds) < 0 || seconds < key->min ||
		    seconds > key->max) {
			*error_r =
			    xasprintf("%s must be a duration (e.g. 600, 90s, 10m, 2h) from %llu "
				      "to %llu seconds",
				      key->name, key->min, key->max);
			return -1;
		}
		*(unsigned int *)field = seconds;
		return 0;
	case CONFIG_DURATION_MS: {
		size_t len = strlen(value);
		if (len > 2 && strcmp(value + len - 2, "ms") == 0) {
			char *digits = xstrndup(value, len - 2);
			int ret = str_parse_uint(digits, 0, 3600000, &number);
			free(digits);
			if (ret == 0) {
				*(unsigned int *)field = (unsigned int)number;
				return 0;
			}
		} else if (str_parse_duration(value, &seconds) == 0 && seconds <= 3600) {
			*(unsigned int *)field = seconds * 1000;
			return 0;
		}
		*error_r = xasprintf("%s must be a duration such as 0, 500ms or 2s (at most 1h)",
				     key->name);
		return -1;
	}
	case CONFIG_BOOL:
		if (str_parse_bool(value, &flag) < 0) {
			*error_r = xasprintf("%s must be yes or no", key->name);
			return -1;
		}
		*(bool *)field = flag;
		return 0;
	case CONFIG_WORKERS:
		if (strcasecmp(value, "auto") == 0) {
			*(unsigned int *)field = 0;
			return 0;
		}
		if (str_parse_uint(value, 1, 256, &number) < 0) {
			*error_r =
			    xasprintf("%s must be auto or a number from 1 to 256", key->name);
			return -1;
		}
		*(unsigned int *)field = (unsigned int)number;
		return 0;
	case CONFIG_LOG_LEVEL:
		if (log_level_parse(value, (enum log_level *)field) < 0) {
			*error_r = xasprintf("%s must be debug, info, warn or error", key->name);
			return -1;
		}
		return 0;
	case CONFIG_LISTEN:
		return config_set_listen((struct config_listen **)field,
					 (size_t *)((char *)config + key->count_offset), value,
					 error_r);
	case CONFIG_LOG_FORMAT:
		if (log_format_parse(value, (enum log_format *)field) < 0) {
			*error_r = xasprintf("%s must be text or json", key->name);
			return -1;
		}
		return 0;
	case CONFIG_LOG_OUTPUT:
		if (log_output_parse(value, (enum log_output *)field) < 0) {
			*error_r = xasprintf("%s must be stderr or syslog", key->name);
			return -1;
		}
		return 0;
	case CONFIG_SYSLOG_FACILITY:
		if (log_syslog_facility_parse(value, NULL) < 0) {
			*error_r = xasprintf("%s must be mail, daemon, auth or local0 to local7",
					     key->name);
			return -1;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case CONFIG_LOCK_TAKEOVER: {
		static const char *const names[] = {"never", "idle", "always"};
		for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
			if (strcasecmp(value, names[i]) == 0) {
				*(enum config_lock_takeover *)field = (enum config_lock_takeover)i;
				return 0;
			}
		}
		*error_r = xasprintf("%s must be never, idle or always", key->name);
		return -1;
	}
	case CONFIG_PATH:
		if (value[0] != '/' || strlen(value) >= 108) {
			*error_r = xasprintf("%s must be an absolute path of at most 107 characters",
					     key->name);
			return -1;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case CONFIG_TLS_VERSION:
		if (strcmp(value, "TLSv1.2") != 0 && strcmp(value, "TLSv1.3") != 0) {
			*error_r = xasprintf("%s must be TLSv1.2 or TLSv1.3", key->name);
			return -1;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	case CONFIG_CLEARTEXT: {
		static const char *const names[] = {"never", "loopback", "always"};
		for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
			if (strcasecmp(value, names[i]) == 0) {
				*(enum config_cleartext *)field = (enum config_cleartext)i;
				return 0;
			}
		}
		*error_r = xasprintf("%s must be never, loopback or always", key->name);
		return -1;
	}
	case CONFIG_MECHANISMS:
		return config_set_mechanisms((char **)field, key, value, error_r);
	case CONFIG_SNI:
		return config_set_sni((char **)field, key, value, error_r);
	case CONFIG_SIZE:
		if (str_parse_size(value, (uint64_t *)field) < 0) {
			*error_r = xasprintf("%s must be a size such as 0, 10M or 2G", key->name);
			return -1;
		}
		return 0;
	case CONFIG_LMTP_LISTEN:
		return config_set_lmtp_listen(config, value, error_r);
	case CONFIG_NETWORKS: {
		struct net_list *list = NULL;
		if (net_list_parse(value, &list, error_r) < 0)
			return -1;
		net_list_free(&list);
		free(*(char **)field);
		*(char **)field = value[0] == '\0' ? NULL : xstrdup(value);
		return 0;
	}
	case CONFIG_EXPIRE:
		if (strcasecmp(value, "never") == 0) {
			free(*(char **)field);
			*(char **)field = xstrdup("NEVER");
			return 0;
		}
		if (str_parse_uint(value, 0, 36500, &number) < 0) {
			*error_r = xasprintf("expire must be NEVER or a number of days");
			return -1;
		}
		free(*(char **)field);
		*(char **)field = xasprintf("%llu", number);
		return 0;
	case CONFIG_LOCATION: {
		const char *path;
		if (store_backend_find(value, &path) == NULL || path[0] != '/') {
			*error_r =
			    xasprintf("location must be maildir:/absolute/path with %%u, %%n or "
				      "%%d, e.g. maildir:/var/mail/%%d/%%n");
			return -1;
		}
		if (strstr(path, "%u") == NULL && strstr(path, "%n") == NULL) {
			*error_r =
			    xasprintf("location must contain %%u or %%n, or every user would "
				      "share one mailbox");
			return -1;
		}
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	}
	case CONFIG_UIDL_FORMAT: {
		struct uidl_format format;
		if (uidl_format_parse(value, &format, error_r) < 0)
			return -1;
		free(*(char **)field);
		*(char **)field = xstrdup(value);
		return 0;
	}
	}
	return -1;
}

/* Keys whose value is a list that may continue over several lines. */
static bool config_key_is_list(enum config_type type)
{
	return type == CONFIG_SNI || type == CONFIG_NETWORKS || type == CONFIG_MECHANISMS;
}

static int config_ini_handler(void *user, const char *section, const char *name, const char *value)
{
	struct config_parse_state *state = user;
	bool section_known;
	const struct config_key *key = config_key_find(section, name, &section_known);

	if (state->error != NULL)
		return 1; /* report only the first error, but let inih find no more */
	if (key == NULL) {
		state->error = section_known ? xasprintf("unknown key '%s' in [%s]", name, section)
					     : xasprintf("unknown section [%s]", section);
		return 0;
	}
	size_t index = (size_t)(key - config_keys);
	bool append = state->seen[index] && config_key_is_list(key->type);
	if (state->seen[index] && !append && key->type != CONFIG_LISTEN &&
	    key->type != CONFIG_LMTP_LISTEN) {
		state->error = xasprintf("%s is set twice in [%s]", name, section);
		return 0;
	}
	state->seen[index] = true;
	if (append) {
		/* a repeated key or an indented continuation line extends the list (inih reads
		 * at most 200 characters a line) */
		const char *old = *(char **)((char *)state->config + key->offset);
		char *joined = xasprintf("%s%s%s", old != NULL ? old : "",
					 key->type == CONFIG_MECHANISMS ? " " : ", ", value);
		int ret = config_set(state->config, key, joined, &state->error);
		free(joined);
		return ret < 0 ? 0 : 1;
	}
	if (config_set(state->config, key, value, &state->error) < 0)
		return 0;
	return 1;
}

static int config_apply_defaults(struct config_parse_state *state)
{
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		if (state->seen[i] || config_keys[i].default_value == NULL)
			continue;
		if (config_set(state->config, &config_keys[i], config_keys[i].default_value,
			       &state->error) < 0)
			fatal("default of %s is invalid", config_keys[i].name);
	}
	return 0;
}

/* [server] sandbox_extra_paths: absolute paths only; a relative one would depend on the directory
 * buzon was started in. */
static char *config_check_sandbox_paths(const struct buzon_config *config)
{
	char *copy, *saveptr = NULL, *problem = NULL;

	if (config->sandbox_extra_paths == NULL)
		return NULL;
	copy = xstrdup(config->sandbox_extra_paths);
	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL && problem == NULL;
	     item = strtok_r(NULL, ",", &saveptr)) {
		const char *path = str_trim(item);
		if (path[0] != '/')
			problem = xasprintf("[server] sandbox_extra_paths: '%s' is not an absolute "
					    "path",
					    path);
	}
	free(copy);
	return problem;
}

static char *config_check_required(const struct buzon_config *config)
{
	if (config->listen_count == 0 && config->listen_tls_count == 0 &&
	    config->listen_proxy_count == 0 && config->listen_tls_proxy_count == 0)
		return xstrdup("[pop3] listen or listen_tls is required");
	if ((config->listen_tls_count > 0 || config->listen_tls_proxy_count > 0) &&
	    config->tls_cert == NULL)
		return xstrdup("[pop3] listen_tls needs [tls] cert and key");
	if ((config->listen_proxy_count > 0 || config->listen_tls_proxy_count > 0) &&
	    config->proxy_trusted == NULL)
		return xstrdup("[pop3] listen_proxy and listen_tls_proxy need proxy_trusted (the "
			       "addresses of the proxies allowed to send PROXY headers)");
	if (config->passwd_file == NULL)
		return xstrdup("[auth] passwd_file is required");
	if (config->mail_location == NULL)
		return xstrdup("[mail] location is required");
	return config_check_sandbox_paths(config);
}

struct buzon_config *config_load(const char *path, char **error_r)
{
	struct config_parse_state state = {.config = xcalloc(1, sizeof(struct buzon_config))};

	state.config->path = xstrdup(path);
	FILE *file = fopen(path, "r");
	if (file == NULL) {
		*error_r = xasprintf("%s: cannot open: %s", path, strerror(errno));
		config_free(&state.config);
		return NULL;
	}
	int line = ini_parse_file(file, config_ini_handler, &state);
	fclose(file);
	if (line != 0) {
		*error_r = xasprintf("%s:%d: %s", path, line,
				     state.error != NULL ? state.error : "syntax error");
		free(state.error);
		config_free(&state.config);
		return NULL;
	}
	config_apply_defaults(&state);
	char *missing = config_check_required(state.config);
	if (missing != NULL) {
		*error_r = xasprintf("%s: %s", path, missing);
		free(missing);
		config_free(&state.config);
		return NULL;
	}
	return state.config;
}

void config_free(struct buzon_config **configp)
{
	struct buzon_config *config = *configp;

	if (config == NULL)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		if (config_keys[i].type == CONFIG_STRING || config_keys[i].type == CONFIG_EXPIRE ||
		    config_keys[i].type == CONFIG_LOCATION ||
		    config_keys[i].type == CONFIG_SCHEME ||
		    config_keys[i].type == CONFIG_TLS_VERSION ||
		    config_keys[i].type == CONFIG_MECHANISMS ||
		    config_keys[i].type == CONFIG_NETWORKS || config_keys[i].type == CONFIG_SNI ||
		    config_keys[i].type == CONFIG_SYSLOG_FACILITY ||
		    config_keys[i].type == CONFIG_UIDL_FORMAT || config_keys[i].type == CONFIG_PATH)
			free(*(char **)((char *)config + config_keys[i].offset));
		if (config_keys[i].type == CONFIG_LISTEN) {
			struct config_listen *listens =
			    *(struct config_listen **)((char *)config + config_keys[i].offset);
			size_t count = *(size_t *)((char *)config + config_keys[i].count_offset);
			for (size_t j = 0; j < count; j++)
				free(listens[j].text);
			free(listens);
		}
	}
	for (size_t i = 0; i < config->lmtp_listen_count; i++)
		free(config->lmtp_listens[i].text);
	free(config->lmtp_listens);
	for (size_t i = 0; i < config->lmtp_unix_count; i++)
		free(config->lmtp_unix_paths[i]);
	free(config->lmtp_unix_paths);
	free(config->path);
	free(config);
	*configp = NULL;
}

static void config_print_value(const struct buzon_config *config, const struct config_key *key,
			       FILE *out)
{
	const void *field = (const char *)config + key->offset;
	static const char *const levels[] = {"debug", "info", "warn", "error"};

	switch (key->type) {
	case CONFIG_STRING:
	case CONFIG_EXPIRE:
	case CONFIG_LOCATION:
	case CONFIG_SCHEME:
	case CONFIG_TLS_VERSION:
	case CONFIG_MECHANISMS:
	case CONFIG_NETWORKS:
	case CONFIG_SNI:
	case CONFIG_SYSLOG_FACILITY:
	case CONFIG_UIDL_FORMAT:
	case CONFIG_PATH: {
		const char *s = *(char *const *)field;
		fputs(s != NULL ? s : "", out);
		break;
	}
	case CONFIG_UINT:
		fprintf(out, "%u", *(const unsigned int *)field);
		break;
	case CONFIG_DURATION:
		fprintf(out, "%us", *(const unsigned int *)field);
		break;
	case CONFIG_DURATION_MS:
		fprintf(out, "%ums", *(const unsigned int *)field);
		break;
	case CONFIG_BOOL:
		fputs(*(const bool *)field ? "yes" : "no", out);
		break;
	case CONFIG_WORKERS: {
		unsigned int n = *(const unsigned int *)field;
		if (n == 0)
			fputs("auto", out);
		else
			fprintf(out, "%u", n);
		break;
	}
	case CONFIG_LOG_LEVEL:
		fputs(levels[*(const enum log_level *)field], out);
		break;
	case CONFIG_LISTEN: {
		const struct config_listen *listens = *(struct config_listen *const *)field;
		size_t count = *(const size_t *)((const char *)config + key->count_offset);
		for (size_t i = 0; i < count; i++)
			fprintf(out, "%s%s", i > 0 ? ", " : "", listens[i].text);
		break;
	}
	case CONFIG_LOG_FORMAT:
		fputs(log_format_name(*(const enum log_format *)field), out);
		break;
	case CONFIG_LOCK_TAKEOVER: {
		static const char *const names[] = {"never", "idle", "always"};
		fputs(names[*(const enum config_lock_takeover *)field], out);
		break;
	}
	case CONFIG_LOG_OUTPUT:
		fputs(log_output_name(*(const enum log_output *)field), out);
		break;
	case CONFIG_LMTP_LISTEN:
		for (size_t i = 0; i < config->lmtp_unix_count; i++)
			fprintf(out, "%sunix:%s", i > 0 ? ", " : "", config->lmtp_unix_paths[i]);
		for (size_t i = 0; i < config->lmtp_listen_count; i++)
			fprintf(out, "%s%s", i + config->lmtp_unix_count > 0 ? ", " : "",
				config->lmtp_listens[i].text);
		break;
	case CONFIG_SIZE:
		fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)field);
		break;
	case CONFIG_CLEARTEXT: {
		static const char *const names[] = {"never", "loopback", "always"};
		fputs(names[*(const enum config_cleartext *)field], out);
		break;
	}
	}
}

/* Prints "name = value" so that the reader gets value back: inih takes " ;" for the start of a
 * comment and reads at most INI_MAX_LINE - 2 octets of a line, so a value that begins with ';' or
 * fits only without the blanks is printed as "name=value" (the way it must have been written). */
static void config_print_line(FILE *out, const char *name, const char *value, size_t len)
{
	bool compact = (len > 0 && value[0] == ';') || strlen(name) + 3 + len > INI_MAX_LINE - 2;

	fprintf(out, "%s%s%.*s\n", name, compact ? "=" : " = ", (int)len, value);
}

/* What separates the items of a list key's printed value ("" for other keys). */
static const char *config_print_separators(enum config_type type)
{
	switch (type) {
	case CONFIG_MECHANISMS:
		return " ";
	case CONFIG_NETWORKS:
	case CONFIG_SNI:
	case CONFIG_LISTEN:
	case CONFIG_LMTP_LISTEN:
		return ",";
	default:
		return "";
	}
}

/* Lists are printed an item a line (a repeated key adds to a list): joined, a long list of
 * networks or certificates would be longer than a line the reader accepts. */
static void config_print_key(const struct buzon_config *config, const struct config_key *key,
			     FILE *out)
{
	char *value = NULL;
	size_t len = 0;
	FILE *text = open_memstream(&value, &len);

	if (text == NULL)
		fatal("open_memstream failed");
	config_print_value(config, key, text);
	fclose(text);
	const char *separators = config_print_separators(key->type);
	size_t printed = 0;
	for (const char *item = value; separators[0] != '\0' && *item != '\0';) {
		size_t item_len = strcspn(item, separators);
		const char *start = item, *end = item + item_len;
		/* the reader strips white space (isspace: CR too) around a value, so the item's
		 * own must go too, or what is printed would not read back the same */
		while (start < end && isspace((unsigned char)*start))
			start++;
		while (end > start && isspace((unsigned char)end[-1]))
			end--;
		if (start < end) {
			config_print_line(out, key->name, start, (size_t)(end - start));
			printed++;
		}
		const char *item_end = item + item_len;
		item = *item_end != '\0' ? item_end + 1 : item_end;
	}
	if (printed == 0)
		config_print_line(out, key->name, value, len);
	free(value);
}

void config_print(const struct buzon_config *config, FILE *out)
{
	const char *section = "";

	for (size_t i = 0; i < ARRAY_SIZE(config_keys); i++) {
		if (strcmp(section, config_keys[i].section) != 0) {
			section = config_keys[i].section;
			fprintf(out, "%s[%s]\n", i > 0 ? "\n" : "", section);
		}
		config_print_key(config, &config_keys[i], out);
	}
}

char *config_expand_location(const char *location, const char *user)
{
	const char *at = strrchr(user, '@');
	size_t local_len = at != NULL ? (size_t)(at - user) : strlen(user);
	const char *domain = at != NULL ? at + 1 : "";
	char *out = NULL;
	size_t out_len = 0;
	FILE *stream = open_memstream(&out, &out_len);

	if (stream == NULL)
		fatal("open_memstream failed");
	for (const char *p = location; *p != '\0'; p++) {
		if (*p != '%') {
			fputc(*p, stream);
			continue;
		}
		switch (*++p) {
		case 'u':
			fputs(user, stream);
			break;
		case 'n':
			fwrite(user, 1, local_len, stream);
			break;
		case 'd':
			fputs(domain, stream);
			break;
		case '%':
			fputc('%', stream);
			break;
		default:
			fclose(stream);
			free(out);
			return NULL;
		}
	}
	fclose(stream);
	return out;
}

int config_expire_days(const struct buzon_config *config)
{
	unsigned long long days;

	if (config->expire == NULL || str_parse_uint(config->expire, 0, 36500, &days) < 0)
		return -1;
	return (int)days;
}

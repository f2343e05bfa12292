/* The configuration file: an INI file read with inih into struct buzon_config.
 * Every key is documented in README.md (config reference); unknown sections or keys and bad values
 * are errors reported as FILE:LINE. */
#ifndef BUZON_CORE_CONFIG_H
#define BUZON_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "core/log.h"

/* One listening address from `listen = …`; the text form is kept for logs. */
struct config_listen {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char *text;
};

/* What a new session does when another session of the same user holds the maildrop lock. */
enum config_lock_takeover {
	CONFIG_LOCK_TAKEOVER_NEVER,  /* [IN-USE] */
	CONFIG_LOCK_TAKEOVER_IDLE,   /* end the other session if it has been idle long enough */
	CONFIG_LOCK_TAKEOVER_ALWAYS, /* end the other session */
};

/* Where passwords may travel unencrypted. */
enum config_cleartext {
	CONFIG_CLEARTEXT_NEVER,
	CONFIG_CLEARTEXT_LOOPBACK, /* only from this machine */
	CONFIG_CLEARTEXT_ALWAYS,
};

struct buzon_config {
	char *path; /* the file this was read from */

	/* [server] */
	char *server_user;    /* user to run as when started as root; NULL = none */
	unsigned int workers; /* POP3 worker processes; 0 in the file means auto (one per core) */
	enum log_level log_level;
	bool sandbox;		   /* Landlock and seccomp for the children (core/sandbox.h) */
	char *sandbox_extra_paths; /* comma-separated trees the mail processes may use too */
	enum log_format log_format; /* text (key=value) or json, one object a line */
	enum log_output log_output; /* stderr (the journal under systemd) or syslog */
	char *syslog_facility;	    /* mail, daemon, auth, local0…local7 */
	char *control_socket;	    /* UNIX socket of `buzon who|kick|stats|reload|ban` */
	unsigned int drain_secs;    /* SIGTERM: sessions may finish for this long */

	/* [pop3] */
	struct config_listen *listens;
	size_t listen_count;
	struct config_listen *listens_tls; /* implicit TLS (RFC 8314), usually port 995 */
	size_t listen_tls_count;
	/* the same behind a proxy: every connection starts with a PROXY v1/v2 header */
	struct config_listen *listens_proxy;
	size_t listen_proxy_count;
	struct config_listen *listens_tls_proxy;
	size_t listen_tls_proxy_count;
	char *proxy_trusted; /* CIDR list of proxies allowed to send PROXY headers */
	bool stls;			  /* offer STLS on plain listeners when TLS is configured */
	unsigned int idle_timeout_secs;	  /* RFC 1939 §3: at least 10 minutes */
	unsigned int login_timeout_secs;  /* from connection to a successful login */
	unsigned int max_bad_commands;	  /* the session ends after this many bad commands */
	unsigned int max_connections;	  /* per worker process */
	unsigned int max_prelogin_per_ip; /* connections not yet logged in, per client IP */
	unsigned int max_sessions_per_ip; /* logged-in sessions per client IP */
	bool retr_marks_seen;		  /* RETR sets the Maildir S flag at QUIT */
	char *expire;			  /* EXPIRE capability argument: "NEVER" or days */
	char *greeting;			  /* text after +OK in the greeting */
	unsigned int login_delay_secs;	  /* RFC 2449 LOGIN-DELAY; 0: none */
	enum config_lock_takeover lock_takeover;
	unsigned int lock_takeover_idle_secs; /* idle: how long the holder must have been idle */

	/* [tls] */
	char *tls_cert;		/* PEM certificate chain; NULL: no TLS */
	char *tls_key;		/* PEM private key; NULL: in the cert file */
	char *tls_min_version;	/* "TLSv1.2" or "TLSv1.3" */
	char *tls_ciphers;	/* TLS 1.2 cipher list; NULL: OpenSSL's default */
	char *tls_ciphersuites; /* TLS 1.3 suites; NULL: OpenSSL's default */
	char *tls_client_ca;	/* CAs for client certificates (SASL EXTERNAL); NULL: none */
	char *tls_sni;		/* NAME=CERT:KEY, … for SNI; NULL: none */

	/* [auth] */
	enum config_cleartext auth_cleartext; /* where USER/PASS and PLAIN/LOGIN are allowed */
	char *passwd_file;
	char *auth_user;		    /* user the auth process runs as when started as root */
	unsigned int auth_threads;	    /* hashing threads in the auth process */
	unsigned int auth_failure_delay_ms; /* first delay before answering a failed login */
	unsigned int auth_failure_delay_max_ms; /* the delay doubles per failure up to this */
	unsigned int auth_ban_failures;		/* failures within ban_window that ban an IP */
	unsigned int auth_ban_window_secs;
	unsigned int auth_ban_secs;
	char *auth_trusted_networks; /* CIDR list exempt from delays and bans; NULL: none */
	char *auth_mechanisms;	     /* SASL mechanisms offered, upper case, space-separated */
	bool auth_apop;		     /* offer APOP (needs plaintext-equivalent secrets) */
	char *auth_master_users;     /* users who may log in as anyone (SASL authzid); NULL: none */
	char *default_scheme;	     /* scheme `buzon user add` uses */

	/* [mail] */
	char *mail_location;	 /* template after "maildir:" with %u %n %d */
	uint64_t quota_bytes;	 /* default storage limit per user; 0: none */
	uint64_t quota_messages; /* default message limit per user; 0: none */
	unsigned int deleted_retention_secs; /* deleted messages kept hidden this long; 0: none */
	unsigned int purge_interval_secs;    /* background purge pass this often; 0: none */
	char *import_uidl_format; /* the replaced server's UIDL format (Dovecot's variables) */

	/* [lmtp] */
	struct config_listen *lmtp_listens; /* TCP addresses */
	size_t lmtp_listen_count;
	char **lmtp_unix_paths; /* UNIX socket paths (listen = unix:/path) */
	size_t lmtp_unix_count;
	uint64_t lmtp_max_message_size; /* SIZE (RFC 1870) */
	bool lmtp_quota_full_tempfail;	/* 452 4.2.2 instead of 552 5.2.2 */
	char *lmtp_hostname;		/* in the greeting and LHLO reply */

	/* [metrics] */
	struct config_listen *metrics_listens; /* Prometheus /metrics over HTTP; none: off */
	size_t metrics_listen_count;
};

/* Reads path into a newly allocated config. On error returns NULL and sets *error_r to a newly
 * allocated message of the form "FILE:LINE: what is wrong". */
struct buzon_config *config_load(const char *path, char **error_r);
void config_free(struct buzon_config **config);

/* Parses "127.0.0.1:110", "[::1]:110" or "*:110" into out. Returns -1 if invalid. */
int config_parse_listen(const char *text, struct config_listen *out);

/* [pop3] expire as a number of days, or -1 for NEVER. */
int config_expire_days(const struct buzon_config *config);

/* Prints the effective configuration in the file's own syntax. */
void config_print(const struct buzon_config *config, FILE *out);

/* Expands a mail location template (%u full user, %n local part, %d domain, %% a percent sign)
 * for user into a newly allocated path. Returns NULL if the template or user name is unusable. */
char *config_expand_location(const char *location, const char *user);

#endif

/* `buzon undelete` and `buzon purge`: the undelete window from the command line
 * (store/retention.h). Both work on the Maildirs directly, under each maildrop lock, with the
 * server running or not.
 *
 * Started as root they first become [server] user, the owner of the mail: files they write (the
 * UID index) must stay readable and writable by the server.
 *
 * Exit codes (sysexits.h): 0 done; 1 some messages or mailboxes failed; 64 bad command line;
 * 67 no such user; 75 the mailbox is in use (undelete: the user is logged in); 77 cannot become
 * the mail user; 78 the configuration or the passwd-file cannot be read. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "auth/passwd_file.h"
#include "auth/recipient.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "store/quota.h"
#include "store/retention.h"
#include "store/store.h"
#include "store/uidl_import.h"

#define CLI_EXIT_FAIL 1
/* RFC 1939: a UIDL is at most 70 characters. */
#define CLI_UIDL_MAX 70

static const char undelete_usage_text[] =
    "usage: buzon undelete [-c FILE] [--since TIME] [--uidl UIDL]... [--dry-run] USER\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n"
    "  --since TIME        only messages deleted since TIME: a duration ago (30m, 2h, 3d)\n"
    "                      or a UTC date (2026-11-20, 2026-11-20T08:00, 2026-11-20T08:00:00Z)\n"
    "  --uidl UIDL         only the message with this UIDL (repeatable)\n"
    "  --dry-run           list what would be restored, change nothing\n";

static const char purge_usage_text[] =
    "usage: buzon purge [-c FILE] [USER...]\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n"
    "Removes deleted messages whose [mail] deleted_retention is over and applies EXPIRE,\n"
    "for the users named, or for every user of the passwd-file.\n";

enum retention_cli_option { RETENTION_OPT_SINCE = 256, RETENTION_OPT_UIDL, RETENTION_OPT_DRY_RUN };

/* What both commands share once the configuration is read. */
struct retention_cli {
	struct buzon_config *config;
	struct passwd_db db;
	time_t now;
};

/* ---- set-up ---- */

/* Reads the configuration and the passwd-file, and drops root. Returns -1 when ready, else the
 * exit status. */
static int retention_cli_setup(struct retention_cli *cli, const char *config_path, const char *role)
{
	char *error = NULL;

	cli->config = cli_config_load(config_path);
	if (cli->config == NULL)
		return EX_CONFIG;
	/* the store logs its events; here only what needs the operator's eye */
	log_init(role,
		 cli->config->log_level > LOG_LEVEL_WARN ? cli->config->log_level : LOG_LEVEL_WARN);
	/* opening a mailbox that has no index yet may import a dovecot-uidlist: with the
	 * configured format, as the server would (store/uidl_import.h) */
	if (uidl_import_set_format(cli->config->import_uidl_format, &error) < 0) {
		fprintf(stderr, "buzon: %s\n", error);
		free(error);
		return EX_CONFIG;
	}
	/* read before giving up root: the passwd-file may be for root and [auth] user only */
	if (passwd_db_load(cli->config->passwd_file, &cli->db, NULL, NULL, &error) < 0) {
		fprintf(stderr, "buzon: %s\n", error);
		free(error);
		return EX_CONFIG;
	}
	int code = cli_become_mail_owner(cli->config);
	if (code != 0)
		return code;
	cli->now = wall_now();
	return -1;
}

static void retention_cli_free(struct retention_cli *cli)
{
	passwd_db_free(&cli->db);
	config_free(&cli->config);
}

/* The Maildir path of entry's user, newly allocated in *location_r (path points into it). */
static int retention_cli_maildir(const struct retention_cli *cli, const struct passwd_entry *entry,
				 char **location_r, const char **path_r)
{
	*location_r = config_expand_location(cli->config->mail_location, entry->user);
	if (*location_r == NULL ||
	    store_backend_find(*location_r, path_r) != &store_backend_maildir) {
		fprintf(stderr, "buzon: [mail] location cannot be used for user %s\n", entry->user);
		free(*location_r);
		*location_r = NULL;
		return -1;
	}
	return 0;
}

/* "2026-11-26 20:14:03 UTC" */
static const char *retention_cli_time(time_t when, char buf[32])
{
	struct tm tm;

	if (gmtime_r(&when, &tm) == NULL || strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, 32, "%lld", (long long)when);
	return buf;
}

/* ---- buzon undelete ---- */

struct undelete_options {
	const char *config_path;
	const char *user;
	const char *since_text;
	const char **uidls;
	size_t uidl_count;
	bool dry_run;
};

/* TIME of --since: a duration before now, or a UTC date with an optional time of day. */
static int retention_cli_parse_since(const char *text, time_t now, time_t *since_r)
{
	unsigned int seconds;
	struct tm tm = {0};

	if (str_parse_duration(text, &seconds) == 0) {
		*since_r = now - (time_t)seconds;
		return 0;
	}
	const char *end = strptime(text, "%Y-%m-%d", &tm);
	if (end != NULL && (*end == 'T' || *end == ' ')) {
		end = strptime(end + 1, "%H:%M", &tm);
		if (end != NULL && *end == ':')
			end = strptime(end + 1, "%S", &tm);
	}
	if (end != NULL && *end == 'Z')
		end++;
	if (end == NULL || *end != '\0')
		return -1;
	*since_r = timegm(&tm);
	return *since_r == (time_t)-1 ? -1 : 0;
}

static int undelete_parse_args(int argc, char **argv, struct undelete_options *opts)
{
	static const struct option options[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"since", required_argument, NULL, RETENTION_OPT_SINCE},
	    {"uidl", required_argument, NULL, RETENTION_OPT_UIDL},
	    {"dry-run", no_argument, NULL, RETENTION_OPT_DRY_RUN},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0}};
	int opt;

	opts->config_path = CLI_DEFAULT_CONFIG;
	optind = 0; /* getopt may have run before; 0 makes glibc start afresh */
	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			opts->config_path = optarg;
			break;
		case RETENTION_OPT_SINCE:
			opts->since_text = optarg;
			break;
		case RETENTION_OPT_UIDL:
			if (strlen(optarg) == 0 || strlen(optarg) > CLI_UIDL_MAX) {
				fprintf(stderr, "buzon: --uidl: not a UIDL: %s\n", optarg);
				return EX_USAGE;
			}
			opts->uidls =
			    xrealloc(opts->uidls, (opts->uidl_count + 1) * sizeof(opts->uidls[0]));
			opts->uidls[opts->uidl_count++] = optarg;
			break;
		case RETENTION_OPT_DRY_RUN:
			opts->dry_run = true;
			break;
		default:
			fputs(undelete_usage_text, opt == 'h' ? stdout : stderr);
			return opt == 'h' ? EX_OK : EX_USAGE;
		}
	}
	if (optind + 1 != argc) {
		fputs(undelete_usage_text, stderr);
		return EX_USAGE;
	}
	opts->user = argv[optind];
	return -1;
}

static void undelete_print(void *context, const struct retention_message *msg,
			   enum retention_outcome outcome, const char *error)
{
	static const char *const verbs[] = {
	    [RETENTION_RESTORED] = "restored",
	    [RETENTION_WOULD_RESTORE] = "would restore",
	    [RETENTION_MISSING] = "missing",
	    [RETENTION_FAILED] = "failed",
	};
	char when[32];

	printf("%s %s (uid %lu, %llu octets, deleted %s)", verbs[outcome], msg->uidl,
	       (unsigned long)msg->uid, (unsigned long long)msg->size,
	       retention_cli_time(msg->deleted_at, when));
	if (outcome == RETENTION_MISSING)
		printf(": its file is gone, dropped from the index");
	else if (outcome == RETENTION_FAILED)
		printf(": %s", error);
	putchar('\n');
}

/* After restoring (or before, in a dry run): says whether the mailbox is, or would be, over its
 * quota. Restoring is allowed to exceed it; delivery refuses new mail until some is deleted. */
static void undelete_quota_note(const struct retention_cli *cli, const struct passwd_entry *entry,
				const char *maildir, const struct retention_undelete_totals *totals,
				bool dry_run)
{
	uint64_t limit_bytes, limit_messages, bytes, messages;
	char *error;

	recipient_quota(cli->config, entry, &limit_bytes, &limit_messages);
	if ((limit_bytes == 0 && limit_messages == 0) || totals->restored == 0)
		return;
	if (quota_usage_get(maildir, &bytes, &messages, &error) < 0) {
		fprintf(stderr, "buzon: quota usage: %s\n", error);
		free(error);
		return;
	}
	if (dry_run) {
		bytes += totals->restored_octets;
		messages += totals->restored;
	}
	if ((limit_bytes == 0 || bytes <= limit_bytes) &&
	    (limit_messages == 0 || messages <= limit_messages))
		return;
	printf("note: %s %s over quota: %llu octets (limit %llu), %llu messages (limit %llu); "
	       "undelete may exceed the quota, and new mail is refused until some is deleted\n",
	       entry->user, dry_run ? "would be" : "is now", (unsigned long long)bytes,
	       (unsigned long long)limit_bytes, (unsigned long long)messages,
	       (unsigned long long)limit_messages);
}

static int undelete_summary(const char *user, const struct retention_undelete_totals *totals,
			    bool dry_run)
{
	if (totals->restored == 0 && totals->failed == 0)
		printf("%s: no deleted message matches\n", user);
	else if (dry_run)
		printf("%s: %zu messages would be restored (%llu octets on disk); dry run, "
		       "nothing changed\n",
		       user, totals->restored, (unsigned long long)totals->restored_octets);
	else
		printf("%s: %zu messages restored (%llu octets on disk)%s\n", user,
		       totals->restored, (unsigned long long)totals->restored_octets,
		       totals->failed > 0 ? ", some failed" : "");
	return totals->failed > 0 ? CLI_EXIT_FAIL : EX_OK;
}

static int undelete_run(struct retention_cli *cli, const struct undelete_options *opts)
{
	struct retention_undelete_options options = {
	    .uidls = opts->uidls, .uidl_count = opts->uidl_count, .dry_run = opts->dry_run};
	struct retention_undelete_totals totals;
	const struct passwd_entry *entry = recipient_lookup(&cli->db, opts->user);
	enum store_error kind = STORE_ERROR_NONE;
	char *location, *error = NULL;
	const char *maildir;

	if (opts->since_text != NULL &&
	    retention_cli_parse_since(opts->since_text, cli->now, &options.since) < 0) {
		fprintf(stderr, "buzon: --since: not a duration or a date: %s\n%s",
			opts->since_text, undelete_usage_text);
		return EX_USAGE;
	}
	if (entry == NULL) {
		fprintf(stderr, "buzon: no such user: %s\n", opts->user);
		return EX_NOUSER;
	}
	if (retention_cli_maildir(cli, entry, &location, &maildir) < 0)
		return EX_CONFIG;
	int ret =
	    retention_undelete(maildir, &options, undelete_print, NULL, &totals, &kind, &error);
	int code;
	if (ret < 0 && kind == STORE_ERROR_IN_USE) {
		fprintf(stderr,
			"buzon: %s is logged in: a POP3 session holds the mailbox; nothing was "
			"restored, try again when the session has ended\n",
			entry->user);
		code = EX_TEMPFAIL;
	} else if (ret < 0) {
		fprintf(stderr, "buzon: %s: %s\n", entry->user, error);
		code = CLI_EXIT_FAIL;
	} else {
		code = undelete_summary(entry->user, &totals, opts->dry_run);
		undelete_quota_note(cli, entry, maildir, &totals, opts->dry_run);
	}
	free(error);
	free(location);
	return code;
}

int cli_undelete_main(int argc, char **argv)
{
	struct undelete_options opts = {0};
	struct retention_cli cli = {0};
	int code = undelete_parse_args(argc, argv, &opts);

	if (code < 0)
		code = retention_cli_setup(&cli, opts.config_path, "undelete");
	if (code < 0)
		code = undelete_run(&cli, &opts);
	if (cli.config != NULL)
		retention_cli_free(&cli);
	free(opts.uidls);
	fflush(stdout);
	return code;
}

/* ---- buzon purge ---- */

/* What a purge run did, for its closing line and exit status. */
struct purge_totals {
	size_t users, purged, expired, in_use, failed, unknown;
};

static void purge_user(const struct retention_cli *cli, const struct passwd_entry *entry,
		       struct purge_totals *totals)
{
	struct store_policy policy = {.deleted_retention_secs = cli->config->deleted_retention_secs,
				      .now = cli->now};
	unsigned int login_delay;
	const char *policy_error, *maildir;
	struct store_commit_report report;
	enum store_error kind = STORE_ERROR_NONE;
	char *location, *error = NULL;

	/* the same EXPIRE the user's sessions get (the passwd-file's expire=, else [pop3]) */
	if (recipient_policies(cli->config, entry, &policy.expire_days, &login_delay,
			       &policy_error) < 0)
		fprintf(stderr, "buzon: %s: %s; using [pop3] expire\n", entry->user, policy_error);
	if (retention_cli_maildir(cli, entry, &location, &maildir) < 0) {
		totals->failed++;
		return;
	}
	if (retention_purge(maildir, &policy, &report, &kind, &error) < 0) {
		if (kind == STORE_ERROR_IN_USE) {
			printf("%s: in use by a session, skipped (its QUIT purges it)\n",
			       entry->user);
			totals->in_use++;
		} else {
			fprintf(stderr, "buzon: %s: %s\n", entry->user, error);
			totals->failed++;
		}
	} else {
		totals->users++;
		totals->purged += report.purged;
		totals->expired += report.expired;
		if (report.purged > 0 || report.expired > 0)
			printf("%s: %zu deleted messages purged, %zu expired\n", entry->user,
			       report.purged, report.expired);
	}
	free(error);
	free(location);
}

/* Returns -1 with the index of the first USER argument in *first_user_r, else the exit status. */
static int purge_parse_args(int argc, char **argv, const char **config_path_r, int *first_user_r)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'},
						{"help", no_argument, NULL, 'h'},
						{NULL, 0, NULL, 0}};
	int opt;

	*config_path_r = CLI_DEFAULT_CONFIG;
	optind = 0;
	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		if (opt == 'c') {
			*config_path_r = optarg;
			continue;
		}
		fputs(purge_usage_text, opt == 'h' ? stdout : stderr);
		return opt == 'h' ? EX_OK : EX_USAGE;
	}
	*first_user_r = optind;
	return -1;
}

static int purge_run(const struct retention_cli *cli, int argc, char **argv)
{
	struct purge_totals totals = {0};

	if (argc == 0) {
		for (size_t i = 0; i < cli->db.count; i++)
			purge_user(cli, &cli->db.entries[i], &totals);
	}
	for (int i = 0; i < argc; i++) {
		const struct passwd_entry *entry = recipient_lookup(&cli->db, argv[i]);
		if (entry == NULL) {
			fprintf(stderr, "buzon: no such user: %s\n", argv[i]);
			totals.unknown++;
			continue;
		}
		purge_user(cli, entry, &totals);
	}
	printf("purge: %zu users done, %zu deleted messages purged, %zu expired, %zu in use "
	       "(skipped), %zu failed\n",
	       totals.users, totals.purged, totals.expired, totals.in_use, totals.failed);
	if (totals.failed > 0)
		return CLI_EXIT_FAIL;
	return totals.unknown > 0 ? EX_NOUSER : EX_OK;
}

int cli_purge_main(int argc, char **argv)
{
	struct retention_cli cli = {0};
	const char *config_path;
	int first_user = argc;
	int code = purge_parse_args(argc, argv, &config_path, &first_user);

	if (code < 0)
		code = retention_cli_setup(&cli, config_path, "purge");
	if (code < 0)
		code = purge_run(&cli, argc - first_user, argv + first_user);
	if (cli.config != NULL)
		retention_cli_free(&cli);
	fflush(stdout);
	return code;
}

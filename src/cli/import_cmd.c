/* `buzon import [--dry-run] USER...`: imports the UIDLs of the server buzon replaces (Dovecot's
 * dovecot-uidlist, Courier's courierpop3dsizelist) into the Maildirs of the users named, before
 * their first login would (store/uidl_import.h), and shows for each message the UIDL clients saw
 * and the one buzon will show, and what cannot be imported. With --dry-run no file changes.
 *
 * The import itself is the one a login runs: the mailbox is opened (under its maildrop lock) and
 * closed. Started as root the command first becomes [server] user, the owner of the mail, so that
 * the files it writes stay the server's.
 *
 * Exit codes (sysexits.h): 0 done (also when there was nothing to import); 1 an import could not
 * keep every UIDL (see its report); 64 bad command line; 67 no such user; 75 a mailbox is in use
 * or cannot be read now; 77 cannot become the mail user; 78 the configuration or the passwd-file
 * cannot be read. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include "auth/passwd_file.h"
#include "auth/recipient.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "store/maildir_testing.h"
#include "store/store.h"
#include "store/uidl_import.h"
#include "store/uidlist.h"

#define IMPORT_EXIT_INCOMPLETE 1

static const char import_usage_text[] =
    "usage: buzon import [-c FILE] [--dry-run] USER...\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n"
    "  -n, --dry-run       show what the import would do, change no file\n"
    "Imports the UIDLs of a dovecot-uidlist or courierpop3dsizelist in each user's Maildir,\n"
    "which the first login would otherwise do, and shows each message's old and new UIDL.\n";

struct import_options {
	const char *config_path;
	bool dry_run;
	char **users;
	size_t user_count;
};

/* A message file of the Maildir, for the report. */
struct import_file {
	char *basename;
	bool listed; /* the old server's list has it */
};

/* What one user's report counts. */
struct import_counts {
	size_t kept, changed, added, missing;
};

static int import_parse_args(int argc, char **argv, struct import_options *opts)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'},
						{"dry-run", no_argument, NULL, 'n'},
						{"help", no_argument, NULL, 'h'},
						{NULL, 0, NULL, 0}};
	int opt;

	opts->config_path = CLI_DEFAULT_CONFIG;
	opts->dry_run = false;
	optind = 0; /* getopt may have run before; 0 makes glibc start afresh */
	while ((opt = getopt_long(argc, argv, "c:nh", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			opts->config_path = optarg;
			break;
		case 'n':
			opts->dry_run = true;
			break;
		default:
			fputs(import_usage_text, opt == 'h' ? stdout : stderr);
			return opt == 'h' ? EX_OK : EX_USAGE;
		}
	}
	if (optind == argc) {
		fputs(import_usage_text, stderr);
		return EX_USAGE;
	}
	opts->users = argv + optind;
	opts->user_count = (size_t)(argc - optind);
	return -1;
}

/* ---- the Maildir's files ---- */

static int import_file_cmp(const void *a, const void *b)
{
	const struct import_file *x = a, *y = b;

	return strcmp(x->basename, y->basename);
}

/* Adds the base names of the message files in maildir/sub to *files. */
static void import_list_dir(const char *maildir, const char *sub, struct import_file **files,
			    size_t *count)
{
	char *path = xasprintf("%s/%s", maildir, sub);
	DIR *dir = opendir(path);
	struct dirent *d;

	free(path);
	if (dir == NULL)
		return;
	while ((d = readdir(dir)) != NULL) {
		if (!maildir_name_plausible(d->d_name))
			continue;
		*files = xrealloc(*files, (*count + 1) * sizeof(**files));
		(*files)[*count].basename = xstrndup(d->d_name, maildir_name_base_len(d->d_name));
		(*files)[(*count)++].listed = false;
	}
	closedir(dir);
}

/* The messages of the Maildir by base name (a name in both new/ and cur/ once), sorted. */
static struct import_file *import_list_files(const char *maildir, size_t *count_r)
{
	struct import_file *files = NULL;
	size_t count = 0, out = 0;

	import_list_dir(maildir, "cur", &files, &count);
	import_list_dir(maildir, "new", &files, &count);
	if (count > 1)
		qsort(files, count, sizeof(*files), import_file_cmp);
	for (size_t i = 0; i < count; i++) {
		if (out > 0 && strcmp(files[out - 1].basename, files[i].basename) == 0) {
			free(files[i].basename);
			continue;
		}
		files[out++] = files[i];
	}
	*count_r = out;
	return files;
}

static void import_files_free(struct import_file *files, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(files[i].basename);
	free(files);
}

static struct import_file *import_file_find(struct import_file *files, size_t count,
					    const char *basename)
{
	struct import_file key = {.basename = (char *)basename};

	return count == 0 ? NULL : bsearch(&key, files, count, sizeof(key), import_file_cmp);
}

/* ---- the report ---- */

/* One line per message of the old list: old UIDL -> the UIDL buzon shows. */
static void import_report_items(const struct uidl_import_plan *plan, struct import_file *files,
				size_t file_count, struct import_counts *counts)
{
	char native[STORE_UIDL_LEN + 1];

	for (size_t i = 0; i < plan->count; i++) {
		const struct uidl_import_item *item = &plan->items[i];
		const char *old = item->record->uidl != NULL ? item->record->uidl : "(invalid)";
		struct import_file *file =
		    import_file_find(files, file_count, item->record->basename);
		uidl_native_format(native, item->uid, plan->list->uidvalidity);
		if (file == NULL) {
			printf("  %s -> (no such file in the Maildir, skipped)  %s\n", old,
			       item->record->basename);
			counts->missing++;
			continue;
		}
		file->listed = true;
		printf("  %s -> %s  %s%s\n", old, item->shown != NULL ? item->shown : native,
		       item->record->basename,
		       item->uidl_dropped ? "  (UIDL changes, see below)" : "");
		if (item->uidl_dropped)
			counts->changed++;
		else
			counts->kept++;
	}
}

/* The files the old list does not have: new UIDs from next_uid on, in name order, as an open
 * gives them. */
static void import_report_new(const struct uidl_import_plan *plan, const char *source,
			      const struct import_file *files, size_t file_count,
			      struct import_counts *counts)
{
	uint64_t next_uid = plan->list->next_uid;
	char native[STORE_UIDL_LEN + 1];

	for (size_t i = 0; i < file_count; i++) {
		if (files[i].listed)
			continue;
		if (next_uid > UIDLIST_UID_MAX) {
			printf("  (new) -> (no UID left)  %s\n", files[i].basename);
			continue;
		}
		uidl_native_format(native, (uint32_t)next_uid++, plan->list->uidvalidity);
		printf("  (new) -> %s  %s  (not in %s: clients never saw it)\n", native,
		       files[i].basename, source);
		counts->added++;
	}
}

/* Prints the import of one Maildir; returns whether every listed message keeps its UIDL. */
static bool import_report(const char *user, const struct uidl_import_source *source,
			  const struct uidl_import_plan *plan, const char *maildir, bool dry_run)
{
	size_t file_count;
	struct import_file *files = import_list_files(maildir, &file_count);
	struct import_counts counts = {0};

	printf("%s: %s from %s, UIDVALIDITY %lu, next UID %llu\n", user,
	       dry_run ? "would import" : "importing", source->name,
	       (unsigned long)plan->list->uidvalidity, (unsigned long long)plan->list->next_uid);
	import_report_items(plan, files, file_count, &counts);
	import_report_new(plan, source->name, files, file_count, &counts);
	for (size_t i = 0; i < plan->note_count; i++)
		printf("  cannot import: %s\n", plan->notes[i]);
	printf("%s: %zu keep their UIDL, %zu change, %zu new, %zu listed but missing\n", user,
	       counts.kept, counts.changed, counts.added, counts.missing);
	import_files_free(files, file_count);
	return counts.changed == 0;
}

/* ---- one user ---- */

static bool import_file_exists(const char *maildir, const char *name)
{
	char *path = xasprintf("%s/%s", maildir, name);
	struct stat st;
	bool exists = lstat(path, &st) == 0;

	free(path);
	return exists;
}

/* Runs the import the way a login would: open (which imports under the lock) and close. */
static int import_apply(const char *user, const char *maildir)
{
	struct store_mailbox *box = NULL;
	enum store_error kind = STORE_ERROR_NONE;
	char *error = NULL;

	if (store_backend_maildir.open(maildir, &box, &kind, &error) < 0) {
		fprintf(stderr, "buzon: %s: %s%s\n", user, error,
			kind == STORE_ERROR_IN_USE ? " (the user is logged in; try again later)"
						   : "");
		free(error);
		return kind == STORE_ERROR_PERM ? EX_NOPERM : EX_TEMPFAIL;
	}
	box->backend->close(&box);
	if (!import_file_exists(maildir, UIDLIST_FILE_NAME)) {
		fprintf(stderr, "buzon: %s: the index could not be saved; the next login imports\n",
			user);
		return EX_TEMPFAIL;
	}
	printf("%s: imported\n", user);
	return 0;
}

/* Imports (or shows the import of) one Maildir. Returns an exit status. */
static int import_maildir(const char *user, const char *maildir, const struct uidl_format *format,
			  bool dry_run)
{
	struct uidl_import_source *source = NULL;
	struct uidl_import_plan *plan = NULL;
	char *error = NULL;
	int code = 0;

	if (import_file_exists(maildir, UIDLIST_FILE_NAME)) {
		printf("%s: already has %s%s: nothing to import\n", user, UIDLIST_FILE_NAME,
		       import_file_exists(maildir, UIDL_IMPORT_MAP_NAME) ? " (imported before)"
									 : "");
		return 0;
	}
	int ret = uidl_import_source_read(maildir, format, &source, &error);
	if (ret < 0) {
		fprintf(stderr, "buzon: %s: %s\n", user, error);
		free(error);
		return EX_TEMPFAIL;
	}
	if (ret == 0) {
		printf("%s: no %s or %s: nothing to import\n", user, UIDL_IMPORT_DOVECOT_NAME,
		       UIDL_IMPORT_COURIER_NAME);
		return 0;
	}
	if (uidl_import_plan_build(source, &plan, &error) < 0) {
		printf("%s: cannot import %s: %s; the first login starts with new UIDLs\n", user,
		       source->name, error);
		for (size_t i = 0; i < source->note_count; i++)
			printf("  %s\n", source->notes[i]);
		free(error);
		uidl_import_source_free(&source);
		return IMPORT_EXIT_INCOMPLETE;
	}
	if (!import_report(user, source, plan, maildir, dry_run))
		code = IMPORT_EXIT_INCOMPLETE;
	uidl_import_plan_free(&plan);
	uidl_import_source_free(&source);
	if (!dry_run) {
		int applied = import_apply(user, maildir);
		code = applied != 0 ? applied : code;
	}
	return code;
}

/* The Maildir of address's user, newly allocated in *location_r (*path_r points into it). */
static int import_resolve(const struct buzon_config *config, const struct passwd_db *db,
			  const char *address, char **location_r, const char **path_r)
{
	const struct passwd_entry *entry = recipient_lookup(db, address);

	if (entry == NULL) {
		fprintf(stderr, "buzon: no such user: %s\n", address);
		return EX_NOUSER;
	}
	*location_r = config_expand_location(config->mail_location, entry->user);
	if (*location_r == NULL ||
	    store_backend_find(*location_r, path_r) != &store_backend_maildir) {
		fprintf(stderr, "buzon: [mail] location cannot be used for user %s\n", entry->user);
		free(*location_r);
		*location_r = NULL;
		return EX_CONFIG;
	}
	return 0;
}

static int import_users(const struct buzon_config *config, const struct import_options *opts)
{
	struct passwd_db db = {0};
	struct uidl_format format;
	char *error = NULL;
	int worst = 0;

	if (uidl_format_parse(config->import_uidl_format, &format, &error) < 0 ||
	    uidl_import_set_format(config->import_uidl_format, &error) < 0 ||
	    passwd_db_load(config->passwd_file, &db, NULL, NULL, &error) < 0) {
		fprintf(stderr, "buzon: %s\n", error);
		free(error);
		return EX_CONFIG;
	}
	for (size_t i = 0; i < opts->user_count; i++) {
		char *location = NULL;
		const char *path = NULL;
		int code = import_resolve(config, &db, opts->users[i], &location, &path);
		if (code == 0)
			code = import_maildir(opts->users[i], path, &format, opts->dry_run);
		free(location);
		/* the most serious outcome decides: usage and set-up codes are above 1 */
		if (code > worst)
			worst = code;
	}
	passwd_db_free(&db);
	return worst;
}

int cli_import_main(int argc, char **argv)
{
	struct import_options opts;
	int code = import_parse_args(argc, argv, &opts);

	if (code >= 0)
		return code;
	struct buzon_config *config = cli_config_load(opts.config_path);
	if (config == NULL)
		return EX_CONFIG;
	/* the store logs its events; here only what needs the operator's eye */
	log_init("import", config->log_level > LOG_LEVEL_WARN ? config->log_level : LOG_LEVEL_WARN);
	code = cli_become_mail_owner(config);
	if (code == 0)
		code = import_users(config, &opts);
	config_free(&config);
	return code;
}

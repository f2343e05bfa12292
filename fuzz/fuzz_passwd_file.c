/* Fuzzes the passwd-file reader and editor (src/auth/passwd_file.c) with the whole file as input.
 * Checks the database it reads (sorted, unique, valid names, non-empty secrets, lookups that find
 * every user, reports in line order), that loading the file gives the same as parsing the text,
 * and that each edit `buzon user` makes (add, change a secret, delete) changes exactly the one
 * user it names: every other user keeps its secret and extra fields. The stored secret fields are
 * also walked with the multi-secret iterator of src/auth/password.c. */
#include <errno.h>

#include "auth/passwd_file.h"
#include "auth/password.h"
#include "fuzz_common.h"

static char *scratch;
static char *db_path;

static void cleanup(void)
{
	fuzz_remove_tree(scratch);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	scratch = fuzz_scratch_dir("passwd");
	db_path = xasprintf("%s/users", scratch);
	atexit(cleanup);
	return 0;
}

struct report_check {
	unsigned int last_line;
	unsigned int lines; /* in the text */
};

static void report_line(void *context, unsigned int line, const char *message)
{
	struct report_check *check = context;

	FUZZ_CHECK(line >= 1 && line <= check->lines && line >= check->last_line);
	FUZZ_CHECK(message != NULL && message[0] != '\0');
	check->last_line = line;
}

/* Every part of a secret field lies inside it; at most the first one lacks a scheme. */
static void check_secret_parts(const char *secret)
{
	const char *pos = secret, *end = secret + strlen(secret);
	struct password_part part;
	size_t parts = 0;

	while (password_field_next(&pos, &part)) {
		FUZZ_CHECK(part.data >= secret && part.data + part.data_len <= end);
		FUZZ_CHECK(part.scheme == NULL ||
			   (part.scheme > secret && part.scheme + part.scheme_len < part.data));
		FUZZ_CHECK(++parts <= strlen(secret) + 1);
	}
	FUZZ_CHECK(parts >= 1);
	(void)password_field_find_plaintext(secret, &part);
	(void)password_scheme_is_plaintext(secret);
}

static void check_db(const struct passwd_db *db)
{
	for (size_t i = 0; i < db->count; i++) {
		const struct passwd_entry *e = &db->entries[i];
		FUZZ_CHECK(passwd_user_name_valid(e->user));
		FUZZ_CHECK(e->secret[0] != '\0' && strchr(e->secret, ':') == NULL);
		FUZZ_CHECK(e->extra != NULL && e->line >= 1);
		FUZZ_CHECK(i == 0 || strcmp(db->entries[i - 1].user, e->user) < 0);
		FUZZ_CHECK(passwd_db_lookup(db, e->user) == e);
		check_secret_parts(e->secret);
	}
}

/* b is a with user's entry replaced (new_secret non-NULL; added if absent) or removed (NULL). */
static void check_edit(const struct passwd_db *a, const struct passwd_db *b, const char *user,
		       const char *new_secret)
{
	const struct passwd_entry *changed = passwd_db_lookup(b, user);
	bool existed = passwd_db_lookup(a, user) != NULL;

	FUZZ_CHECK((changed != NULL) == (new_secret != NULL));
	if (changed != NULL)
		FUZZ_CHECK(strcmp(changed->secret, new_secret) == 0);
	FUZZ_CHECK(b->count ==
		   a->count + (new_secret != NULL && !existed) - (new_secret == NULL && existed));
	for (size_t i = 0; i < a->count; i++) {
		const struct passwd_entry *old = &a->entries[i];
		const struct passwd_entry *now = passwd_db_lookup(b, old->user);
		if (strcmp(old->user, user) == 0) {
			if (now != NULL)
				FUZZ_CHECK(strcmp(now->extra, old->extra) == 0);
			continue;
		}
		FUZZ_CHECK(now != NULL && strcmp(now->secret, old->secret) == 0 &&
			   strcmp(now->extra, old->extra) == 0);
	}
}

static void load(struct passwd_db *db)
{
	char *error = NULL;

	FUZZ_CHECK(passwd_db_load(db_path, db, NULL, NULL, &error) == 0);
	check_db(db);
}

/* Writes text as the file, runs one edit, and checks the file it leaves. */
static void edit_and_check(const uint8_t *text, size_t len, const struct passwd_db *before,
			   const char *user, const char *secret, bool add)
{
	struct passwd_db after;
	char *error = NULL;
	int ret;

	fuzz_write_file(db_path, text, len);
	if (secret != NULL)
		ret = passwd_file_set(db_path, user, secret, add, &error);
	else
		ret = passwd_file_delete(db_path, user, &error);
	bool present = passwd_db_lookup(before, user) != NULL;
	bool expected = secret == NULL || !add ? present : !present;
	FUZZ_CHECK((ret == 0) == expected);
	if (ret < 0) {
		FUZZ_CHECK(error != NULL);
		free(error);
		return;
	}
	load(&after);
	check_edit(before, &after, user, secret);
	passwd_db_free(&after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct report_check reports = {.last_line = 0, .lines = 1};
	struct passwd_db db, loaded;

	for (size_t i = 0; i < size; i++)
		reports.lines += data[i] == '\n';
	FUZZ_CHECK(passwd_db_parse((const char *)data, size, &db, report_line, &reports) == 0);
	check_db(&db);

	fuzz_write_file(db_path, data, size);
	load(&loaded);
	FUZZ_CHECK(loaded.count == db.count);
	for (size_t i = 0; i < db.count; i++)
		FUZZ_CHECK(strcmp(loaded.entries[i].user, db.entries[i].user) == 0 &&
			   strcmp(loaded.entries[i].secret, db.entries[i].secret) == 0 &&
			   strcmp(loaded.entries[i].extra, db.entries[i].extra) == 0);
	passwd_db_free(&loaded);

	edit_and_check(data, size, &db, "fuzz.added@example.org", "{PLAIN}added", true);
	if (db.count > 0) {
		const char *user = db.entries[size % db.count].user;
		edit_and_check(data, size, &db, user, "{PLAIN}changed secret", false);
		edit_and_check(data, size, &db, user, NULL, false);
	}
	passwd_db_free(&db);
	return 0;
}

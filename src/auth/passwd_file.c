/* The passwd-file user database: tolerant parsing, sorted lookups and atomic one-line edits.
 *
 * The file format is described in passwd_file.h. Lines end in LF or CRLF, and the last line may
 * have no line end. A user line is "user:secret" optionally followed by ":rest", where rest is kept
 * unparsed (Dovecot's uid:gid:gecos:home:shell:extra_fields). A line whose first non-blank
 * character is '#' is a comment; blank lines are ignored. When a user appears on several lines,
 * the first one counts. Edits rewrite the whole file through a temporary file in the same
 * directory, so that readers see the old or the new file, never a mix. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "auth/passwd_file.h"
#include "core/util.h"

/* Longest file read: a million users fit many times over, and a wrong path (a disk image, a log)
 * is refused instead of filling memory. */
#define PASSWD_FILE_MAX (64 * 1024 * 1024)
/* Mode of a passwd file that `buzon user add` creates: the auth process's group may read it. */
#define PASSWD_FILE_NEW_MODE 0640

/* One line of the raw text. */
struct passwd_line {
	const char *start;
	size_t len;	/* without the line end and a CR before it */
	size_t end_len; /* bytes after the content up to the next line: 0, 1 or 2 */
	unsigned int number;
};

/* The fields of a user line, pointing into the text. */
struct passwd_fields {
	const char *user;
	size_t user_len;
	const char *secret;
	size_t secret_len;
	const char *extra; /* NULL when the line has no field after the secret */
	size_t extra_len;
};

struct passwd_report {
	unsigned int line;
	const char *message;
};

struct passwd_reports {
	struct passwd_report *items;
	size_t count, size;
};

/* Fills line_r with the line starting at *pos; returns false at the end of the text. */
static bool passwd_line_next(const char *text, size_t text_len, size_t *pos,
			     struct passwd_line *line_r)
{
	if (*pos >= text_len)
		return false;
	const char *start = text + *pos;
	const char *lf = memchr(start, '\n', text_len - *pos);
	size_t len = lf != NULL ? (size_t)(lf - start) : text_len - *pos;
	size_t total = lf != NULL ? len + 1 : len;

	if (len > 0 && start[len - 1] == '\r')
		len--;
	line_r->start = start;
	line_r->len = len;
	line_r->end_len = total - len;
	line_r->number++;
	*pos += total;
	return true;
}

static bool passwd_line_is_ignored(const struct passwd_line *line)
{
	size_t i = 0;

	while (i < line->len && (line->start[i] == ' ' || line->start[i] == '\t'))
		i++;
	return i == line->len || line->start[i] == '#';
}

static bool passwd_user_field_valid(const char *user, size_t len)
{
	char name[PASSWD_USER_MAX + 1];

	if (len > PASSWD_USER_MAX)
		return false;
	memcpy(name, user, len);
	name[len] = '\0';
	return passwd_user_name_valid(name);
}

/* Returns 1 for a user line, 0 for a blank or comment line, -1 for a bad line with *error_r. */
static int passwd_line_parse(const struct passwd_line *line, struct passwd_fields *fields_r,
			     const char **error_r)
{
	const char *p = line->start, *end = line->start + line->len;

	if (passwd_line_is_ignored(line))
		return 0;
	if (memchr(p, '\0', line->len) != NULL) {
		*error_r = "NUL byte in line";
		return -1;
	}
	const char *colon = memchr(p, ':', line->len);
	if (colon == NULL) {
		*error_r = "no ':' after the user name";
		return -1;
	}
	if (!passwd_user_field_valid(p, (size_t)(colon - p))) {
		*error_r = "invalid user name";
		return -1;
	}
	fields_r->user = p;
	fields_r->user_len = (size_t)(colon - p);
	fields_r->secret = colon + 1;
	const char *colon2 = memchr(colon + 1, ':', (size_t)(end - colon - 1));
	fields_r->secret_len = (size_t)((colon2 != NULL ? colon2 : end) - fields_r->secret);
	fields_r->extra = colon2 != NULL ? colon2 + 1 : NULL;
	fields_r->extra_len = colon2 != NULL ? (size_t)(end - colon2 - 1) : 0;
	if (fields_r->secret_len == 0) {
		*error_r = "empty password field";
		return -1;
	}
	return 1;
}

static bool passwd_fields_user_is(const struct passwd_fields *fields, const char *user)
{
	return fields->user_len == strlen(user) &&
	       memcmp(fields->user, user, fields->user_len) == 0;
}

static void passwd_reports_add(struct passwd_reports *reports, unsigned int line,
			       const char *message)
{
	if (reports->count == reports->size) {
		reports->size = reports->size == 0 ? 8 : reports->size * 2;
		reports->items = xrealloc(reports->items, reports->size * sizeof(*reports->items));
	}
	reports->items[reports->count].line = line;
	reports->items[reports->count].message = message;
	reports->count++;
}

static int passwd_report_cmp(const void *a, const void *b)
{
	const struct passwd_report *ra = a, *rb = b;

	return ra->line < rb->line ? -1 : ra->line > rb->line;
}

/* Reports in line order, whichever pass found them. */
static void passwd_reports_flush(struct passwd_reports *reports, passwd_report_fn *report,
				 void *context)
{
	if (reports->count > 0)
		qsort(reports->items, reports->count, sizeof(*reports->items), passwd_report_cmp);
	for (size_t i = 0; report != NULL && i < reports->count; i++)
		report(context, reports->items[i].line, reports->items[i].message);
	x_free(&reports->items);
	reports->count = reports->size = 0;
}

static void passwd_entry_clear(struct passwd_entry *entry)
{
	/* The secret may be a plaintext password. */
	sodium_memzero(entry->secret, strlen(entry->secret));
	x_free(&entry->user);
	x_free(&entry->secret);
	x_free(&entry->extra);
}

static void passwd_db_append(struct passwd_db *db, size_t *size, const struct passwd_fields *fields,
			     unsigned int line)
{
	if (db->count == *size) {
		*size = *size == 0 ? 16 : *size * 2;
		db->entries = xrealloc(db->entries, *size * sizeof(*db->entries));
	}
	struct passwd_entry *entry = &db->entries[db->count++];
	entry->user = xstrndup(fields->user, fields->user_len);
	entry->secret = xstrndup(fields->secret, fields->secret_len);
	entry->extra = xstrndup(fields->extra != NULL ? fields->extra : "", fields->extra_len);
	entry->line = line;
}

static int passwd_entry_cmp(const void *a, const void *b)
{
	const struct passwd_entry *ea = a, *eb = b;
	int ret = strcmp(ea->user, eb->user);

	if (ret != 0)
		return ret;
	return ea->line < eb->line ? -1 : ea->line > eb->line;
}

/* Sorts by user and drops every line of a user but the first. */
static void passwd_db_sort_unique(struct passwd_db *db, struct passwd_reports *reports)
{
	size_t kept = 0;

	if (db->count > 0)
		qsort(db->entries, db->count, sizeof(*db->entries), passwd_entry_cmp);
	for (size_t i = 0; i < db->count; i++) {
		if (kept > 0 && strcmp(db->entries[kept - 1].user, db->entries[i].user) == 0) {
			passwd_reports_add(reports, db->entries[i].line,
					   "duplicate user; the first line wins");
			passwd_entry_clear(&db->entries[i]);
			continue;
		}
		db->entries[kept++] = db->entries[i];
	}
	db->count = kept;
}

int passwd_db_parse(const char *text, size_t len, struct passwd_db *db, passwd_report_fn *report,
		    void *context)
{
	struct passwd_reports reports = {0};
	struct passwd_line line = {0};
	struct passwd_fields fields;
	size_t pos = 0, size = 0;
	const char *error;

	memset(db, 0, sizeof(*db));
	while (passwd_line_next(text, len, &pos, &line)) {
		int ret = passwd_line_parse(&line, &fields, &error);
		if (ret < 0)
			passwd_reports_add(&reports, line.number, error);
		else if (ret > 0)
			passwd_db_append(db, &size, &fields, line.number);
	}
	passwd_db_sort_unique(db, &reports);
	passwd_reports_flush(&reports, report, context);
	return 0;
}

/* Reads all of fd, which st describes, into a newly allocated buffer. */
static int passwd_file_read_fd(int fd, const char *path, const struct stat *st, char **text_r,
			       size_t *len_r, char **error_r)
{
	if (!S_ISREG(st->st_mode)) {
		*error_r = xasprintf("%s: not a regular file", path);
		return -1;
	}
	if (st->st_size > PASSWD_FILE_MAX) {
		*error_r = xasprintf("%s: larger than %d bytes", path, PASSWD_FILE_MAX);
		return -1;
	}
	/* One byte more than the size, to notice a file that grew while being read. */
	size_t size = (size_t)st->st_size + 1, len = 0;
	char *text = xmalloc(size);
	for (;;) {
		ssize_t ret = read(fd, text + len, size - len);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0 || (size_t)ret == size - len) {
			*error_r = ret < 0 ? xasprintf("read(%s) failed: %s", path, strerror(errno))
					   : xasprintf("%s: changed while being read", path);
			sodium_memzero(text, len);
			free(text);
			return -1;
		}
		if (ret == 0)
			break;
		len += (size_t)ret;
	}
	*text_r = text;
	*len_r = len;
	return 0;
}

/* Opens and reads path. Returns -1 with errno kept for a failed open(). */
static int passwd_file_read(const char *path, char **text_r, size_t *len_r, struct stat *st_r,
			    char **error_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0) {
		int err = errno;
		*error_r = xasprintf("open(%s) failed: %s", path, strerror(err));
		errno = err;
		return -1;
	}
	int ret = -1;
	if (fstat(fd, st_r) < 0)
		*error_r = xasprintf("fstat(%s) failed: %s", path, strerror(errno));
	else
		ret = passwd_file_read_fd(fd, path, st_r, text_r, len_r, error_r);
	close(fd);
	/* Only a failed open() may leave ENOENT for the caller to see. */
	errno = 0;
	return ret;
}

static void passwd_text_free(char **text, size_t len)
{
	if (*text != NULL)
		sodium_memzero(*text, len);
	x_free(text);
}

int passwd_db_load(const char *path, struct passwd_db *db, passwd_report_fn *report, void *context,
		   char **error_r)
{
	struct stat st;
	char *text;
	size_t len;

	memset(db, 0, sizeof(*db));
	if (passwd_file_read(path, &text, &len, &st, error_r) < 0)
		return -1;
	passwd_db_parse(text, len, db, report, context);
	passwd_text_free(&text, len);
	db->dev = st.st_dev;
	db->ino = st.st_ino;
	db->size = st.st_size;
	db->mtime = st.st_mtim;
	return 0;
}

bool passwd_db_changed(const struct passwd_db *db, const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return true;
	return st.st_dev != db->dev || st.st_ino != db->ino || st.st_size != db->size ||
	       st.st_mtim.tv_sec != db->mtime.tv_sec || st.st_mtim.tv_nsec != db->mtime.tv_nsec;
}

static int passwd_entry_key_cmp(const void *key, const void *member)
{
	const struct passwd_entry *entry = member;

	return strcmp(key, entry->user);
}

const struct passwd_entry *passwd_db_lookup(const struct passwd_db *db, const char *user)
{
	if (db->count == 0)
		return NULL;
	return bsearch(user, db->entries, db->count, sizeof(*db->entries), passwd_entry_key_cmp);
}

void passwd_db_free(struct passwd_db *db)
{
	for (size_t i = 0; i < db->count; i++)
		passwd_entry_clear(&db->entries[i]);
	x_free(&db->entries);
	db->count = 0;
}

/* Bytes that cannot appear anywhere in a name: control bytes and space (POP3 separates command
 * arguments with spaces), ':' (the file's separator) and '/' (names become path parts). */
static bool passwd_user_bytes_valid(const char *user)
{
	const unsigned char *p = (const unsigned char *)user;

	while (*p != '\0') {
		if (*p <= 0x20 || *p == 0x7f || *p == ':' || *p == '/')
			return false;
		size_t len = utf8_sequence_len(p);
		if (len == 0)
			return false;
		p += len;
	}
	return true;
}

static bool passwd_name_is_dots(const char *s, size_t len)
{
	return (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.');
}

bool passwd_user_name_valid(const char *user)
{
	size_t len = strlen(user);

	if (len == 0 || len > PASSWD_USER_MAX || !passwd_user_bytes_valid(user))
		return false;
	const char *at = strchr(user, '@');
	if (at == NULL)
		return !passwd_name_is_dots(user, len);
	/* The local part and the domain become path parts of their own (%n and %d). */
	size_t local_len = (size_t)(at - user), domain_len = len - local_len - 1;
	return local_len > 0 && domain_len > 0 && strchr(at + 1, '@') == NULL &&
	       !passwd_name_is_dots(user, local_len) && !passwd_name_is_dots(at + 1, domain_len);
}

/* A bounded buffer for the edited text, sized up front so that no realloc leaves copies of
 * secrets behind. */
struct passwd_text {
	char *data;
	size_t len, size;
};

static void passwd_text_append(struct passwd_text *out, const void *data, size_t len)
{
	if (len > out->size - out->len)
		fatal("passwd edit buffer too small (%zu + %zu > %zu)", out->len, len, out->size);
	memcpy(out->data + out->len, data, len);
	out->len += len;
}

static void passwd_text_append_str(struct passwd_text *out, const char *s)
{
	passwd_text_append(out, s, strlen(s));
}

/* The line end new lines get: CRLF if the file's first line end is one, else LF. */
static const char *passwd_text_eol(const char *text, size_t len)
{
	const char *lf = memchr(text, '\n', len);

	return lf != NULL && lf > text && lf[-1] == '\r' ? "\r\n" : "\n";
}

/* Finds the first user line of user; returns false if there is none. */
static bool passwd_text_find_user(const char *text, size_t len, const char *user,
				  struct passwd_line *line_r, struct passwd_fields *fields_r)
{
	struct passwd_line line = {0};
	const char *error;
	size_t pos = 0;

	while (passwd_line_next(text, len, &pos, &line)) {
		if (passwd_line_parse(&line, fields_r, &error) > 0 &&
		    passwd_fields_user_is(fields_r, user)) {
			*line_r = line;
			return true;
		}
	}
	return false;
}

static void passwd_text_add_user(const char *text, size_t len, const char *user, const char *secret,
				 struct passwd_text *out)
{
	const char *eol = passwd_text_eol(text, len);

	passwd_text_append(out, text, len);
	/* End the last line first. A CR already there is half of its line end: the reader strips
	 * one CR before the end of a line, so a CRLF after it would make the CR part of the secret.
	 */
	if (len > 0 && text[len - 1] != '\n')
		passwd_text_append_str(out, text[len - 1] == '\r' ? "\n" : eol);
	passwd_text_append_str(out, user);
	passwd_text_append_str(out, ":");
	passwd_text_append_str(out, secret);
	passwd_text_append_str(out, eol);
}

/* Rewrites the secret of line, keeping its user, extra fields and line end. */
static void passwd_text_replace_secret(const char *text, size_t len, const struct passwd_line *line,
				       const struct passwd_fields *fields, const char *secret,
				       struct passwd_text *out)
{
	const char *secret_end = fields->secret + fields->secret_len;

	passwd_text_append(out, text, (size_t)(fields->secret - text));
	passwd_text_append_str(out, secret);
	passwd_text_append(out, secret_end, len - (size_t)(secret_end - text));
}

/* Copies text without any user line of user; returns the number of lines removed. */
static unsigned int passwd_text_remove_user(const char *text, size_t len, const char *user,
					    struct passwd_text *out)
{
	struct passwd_line line = {0};
	struct passwd_fields fields;
	const char *error;
	unsigned int removed = 0;
	size_t pos = 0;

	while (passwd_line_next(text, len, &pos, &line)) {
		/* Later duplicates go too: otherwise the next one would bring the user back. */
		if (passwd_line_parse(&line, &fields, &error) > 0 &&
		    passwd_fields_user_is(&fields, user)) {
			removed++;
			continue;
		}
		passwd_text_append(out, line.start, line.len + line.end_len);
	}
	return removed;
}

/* Gives fd the owner of the file it replaces, so that the auth process can still read it. */
static int passwd_file_keep_owner(int fd, const struct stat *old_st)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -1;
	if (st.st_uid == old_st->st_uid && st.st_gid == old_st->st_gid)
		return 0;
	return fchown(fd, old_st->st_uid, old_st->st_gid);
}

static int passwd_file_write_temp(int fd, const struct stat *old_st, const char *text, size_t len)
{
	mode_t mode = old_st != NULL ? old_st->st_mode & 07777 : PASSWD_FILE_NEW_MODE;

	if (fchmod(fd, mode) < 0)
		return -1;
	if (old_st != NULL && passwd_file_keep_owner(fd, old_st) < 0)
		return -1;
	if (write_full(fd, text, len) < 0 || fsync(fd) < 0)
		return -1;
	return 0;
}

static int passwd_file_sync_parent(const char *path, char **error_r)
{
	char *copy = xstrdup(path);
	const char *dir = dirname(copy);
	int ret = fsync_dir(dir);

	if (ret < 0)
		*error_r = xasprintf("fsync(%s) failed: %s", dir, strerror(errno));
	free(copy);
	return ret;
}

/* Replaces path by text atomically: temporary file beside it, fsync, rename, fsync the dir.
 * old_st is the replaced file's, or NULL for a new file. */
static int passwd_file_replace(const char *path, const struct stat *old_st, const char *text,
			       size_t len, char **error_r)
{
	char *temp = xasprintf("%s.tmp.XXXXXX", path);
	int fd = mkostemp(temp, O_CLOEXEC);

	if (fd < 0) {
		*error_r = xasprintf("mkstemp(%s) failed: %s", temp, strerror(errno));
		free(temp);
		return -1;
	}
	const char *step = NULL;
	if (passwd_file_write_temp(fd, old_st, text, len) < 0)
		step = "write";
	if (close(fd) < 0 && step == NULL)
		step = "close";
	if (step == NULL && rename(temp, path) < 0)
		step = "rename";
	if (step != NULL) {
		*error_r = xasprintf("%s(%s) failed: %s", step, temp, strerror(errno));
		unlink(temp);
		free(temp);
		return -1;
	}
	free(temp);
	return passwd_file_sync_parent(path, error_r);
}

/* Serialises edits: two `buzon user` commands at once must not both read the old file and each
 * write back their own change, losing the other. The lock is a separate file beside the database
 * (the database itself is replaced by rename, so its inode cannot carry the lock). Returns the
 * lock's fd (close it to unlock) or -1 with *error_r. */
static int passwd_file_lock(const char *real_path, char **error_r)
{
	char *lock_path = xasprintf("%s.lock", real_path);
	int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0 || flock(fd, LOCK_EX) < 0) {
		*error_r = xasprintf("%s: cannot lock: %s", lock_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	free(lock_path);
	return fd;
}

/* The file to edit: a symlink's target, so that the link itself stays. */
static char *passwd_file_resolve(const char *path)
{
	char *real = realpath(path, NULL);

	return real != NULL ? real : xstrdup(path);
}

static int passwd_secret_check(const char *secret, char **error_r)
{
	if (secret[0] == '\0') {
		*error_r = xstrdup("empty secret");
		return -1;
	}
	for (const unsigned char *p = (const unsigned char *)secret; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == ':') {
			*error_r = xstrdup("the secret contains ':' or a control byte");
			return -1;
		}
	}
	return 0;
}

/* Reads path for an edit; a missing file reads as empty with *exists_r false. */
static int passwd_file_read_for_edit(const char *path, char **text_r, size_t *len_r,
				     struct stat *st_r, bool *exists_r, char **error_r)
{
	*exists_r = true;
	if (passwd_file_read(path, text_r, len_r, st_r, error_r) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	x_free(error_r);
	*exists_r = false;
	*text_r = xstrdup("");
	*len_r = 0;
	return 0;
}

/* Builds the edited text for passwd_file_set(); returns -1 with *error_r if user's presence is
 * not what add expects. */
static int passwd_text_set(const char *path, const char *text, size_t len, const char *user,
			   const char *secret, bool add, struct passwd_text *out, char **error_r)
{
	struct passwd_line line;
	struct passwd_fields fields;
	bool found = passwd_text_find_user(text, len, user, &line, &fields);

	if (add && found) {
		*error_r = xasprintf("%s:%u: user %s already exists", path, line.number, user);
		return -1;
	}
	if (!add && !found) {
		*error_r = xasprintf("%s: no user %s", path, user);
		return -1;
	}
	if (add)
		passwd_text_add_user(text, len, user, secret, out);
	else
		passwd_text_replace_secret(text, len, &line, &fields, secret, out);
	return 0;
}

static void passwd_text_init(struct passwd_text *out, size_t size)
{
	out->data = xmalloc(size);
	out->size = size;
	out->len = 0;
}

int passwd_file_set(const char *path, const char *user, const char *secret, bool add,
		    char **error_r)
{
	struct passwd_text out;
	struct stat st;
	char *text;
	size_t len;
	bool exists;

	if (!passwd_user_name_valid(user)) {
		*error_r = xstrdup("invalid user name");
		return -1;
	}
	if (passwd_secret_check(secret, error_r) < 0)
		return -1;
	char *real = passwd_file_resolve(path);
	int lock_fd = passwd_file_lock(real, error_r);
	if (lock_fd < 0 ||
	    passwd_file_read_for_edit(real, &text, &len, &st, &exists, error_r) < 0) {
		if (lock_fd >= 0)
			close(lock_fd);
		free(real);
		return -1;
	}
	/* Room for the old text, a new line "user:secret" and two line ends. */
	passwd_text_init(&out, len + strlen(user) + strlen(secret) + 8);
	int ret = passwd_text_set(path, text, len, user, secret, add, &out, error_r);
	if (ret == 0)
		ret = passwd_file_replace(real, exists ? &st : NULL, out.data, out.len, error_r);
	passwd_text_free(&out.data, out.size);
	passwd_text_free(&text, len);
	close(lock_fd);
	free(real);
	return ret;
}

int passwd_file_delete(const char *path, const char *user, char **error_r)
{
	struct passwd_text out;
	struct stat st;
	char *text;
	size_t len;

	char *real = passwd_file_resolve(path);
	int lock_fd = passwd_file_lock(real, error_r);
	if (lock_fd < 0 || passwd_file_read(real, &text, &len, &st, error_r) < 0) {
		if (lock_fd >= 0)
			close(lock_fd);
		free(real);
		return -1;
	}
	passwd_text_init(&out, len);
	int ret = -1;
	if (passwd_text_remove_user(text, len, user, &out) == 0)
		*error_r = xasprintf("%s: no user %s", path, user);
	else
		ret = passwd_file_replace(real, &st, out.data, out.len, error_r);
	passwd_text_free(&out.data, out.size);
	passwd_text_free(&text, len);
	close(lock_fd);
	free(real);
	return ret;
}

/* Quota usage of a Maildir (see quota.h).
 *
 * On disk: <maildir>/buzon-quota, mode 0600, exactly one line
 *   "<bytes> <messages>\n"
 * both decimal, no sign, no padding. Anything else (empty, truncated by a crash between the
 * write and the truncate, noise) is unparsable and triggers a rescan. The file is not fsync()ed:
 * losing an update in a crash only makes the usage stale until the next POP3 login resets it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "store/quota.h"

/* Two 20-digit numbers, a space and a newline fit; a longer file is damaged. */
#define QUOTA_LINE_MAX 64

static int quota_fail(const char *call, const char *path, char **error_r)
{
	int err = errno;

	*error_r = xasprintf("%s(%s): %s", call, path, strerror(err));
	errno = err;
	return -1;
}

/* Opens and locks the usage file. Returns the fd, or -1 with errno set. */
static int quota_file_open(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return -1;
	while (flock(fd, LOCK_EX) < 0) {
		if (errno == EINTR)
			continue;
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* Parses one decimal number ending at stop; advances *p past it. */
static bool quota_parse_number(const char **p, const char *end, char stop, uint64_t *value_r)
{
	const char *start = *p, *q = *p;
	unsigned long long value;

	while (q < end && *q != stop)
		q++;
	if (q == end || str_parse_uint_n(start, (size_t)(q - start), 0, UINT64_MAX, &value) < 0)
		return false;
	*value_r = value;
	*p = q + 1;
	return true;
}

/* Reads "<bytes> <messages>\n". Returns false if the file does not hold exactly that. */
static bool quota_file_read(int fd, uint64_t *bytes_r, uint64_t *messages_r)
{
	char buf[QUOTA_LINE_MAX + 1];
	ssize_t n;

	do {
		n = pread(fd, buf, sizeof(buf), 0);
	} while (n < 0 && errno == EINTR);
	if (n <= 0 || n > QUOTA_LINE_MAX)
		return false;
	const char *p = buf, *end = buf + n;
	return quota_parse_number(&p, end, ' ', bytes_r) &&
	       quota_parse_number(&p, end, '\n', messages_r) && p == end;
}

static int quota_file_write(int fd, uint64_t bytes, uint64_t messages)
{
	char line[QUOTA_LINE_MAX];
	int len = snprintf(line, sizeof(line), "%llu %llu\n", (unsigned long long)bytes,
			   (unsigned long long)messages);
	ssize_t n;

	do {
		n = pwrite(fd, line, (size_t)len, 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	if (n != len) {
		errno = EIO;
		return -1;
	}
	return ftruncate(fd, len);
}

/* Adds the regular, non-dot files of maildir/sub. A missing subdirectory counts as empty. */
static int quota_scan_dir(const char *maildir, const char *sub, uint64_t *bytes, uint64_t *messages,
			  char **error_r)
{
	char *path = xasprintf("%s/%s", maildir, sub);
	DIR *dir = opendir(path);
	struct dirent *d;
	struct stat st;
	int ret = 0;

	if (dir == NULL) {
		ret = errno == ENOENT ? 0 : quota_fail("opendir", path, error_r);
		free(path);
		return ret;
	}
	for (errno = 0; (d = readdir(dir)) != NULL; errno = 0) {
		if (d->d_name[0] == '.')
			continue;
		/* A file can vanish between readdir() and stat() (a POP3 QUIT): skip it. */
		if (fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		*bytes += (uint64_t)st.st_size;
		*messages += 1;
	}
	if (errno != 0)
		ret = quota_fail("readdir", path, error_r);
	closedir(dir);
	free(path);
	return ret;
}

static int quota_scan(const char *maildir, uint64_t *bytes_r, uint64_t *messages_r, char **error_r)
{
	uint64_t bytes = 0, messages = 0;

	if (quota_scan_dir(maildir, "new", &bytes, &messages, error_r) < 0 ||
	    quota_scan_dir(maildir, "cur", &bytes, &messages, error_r) < 0)
		return -1;
	*bytes_r = bytes;
	*messages_r = messages;
	return 0;
}

/* Reads the locked file, or rescans and writes it. *recomputed_r tells which happened. */
static int quota_file_load(int fd, const char *maildir, const char *path, uint64_t *bytes_r,
			   uint64_t *messages_r, bool *recomputed_r, char **error_r)
{
	*recomputed_r = false;
	if (quota_file_read(fd, bytes_r, messages_r))
		return 0;
	*recomputed_r = true;
	if (quota_scan(maildir, bytes_r, messages_r, error_r) < 0)
		return -1;
	if (quota_file_write(fd, *bytes_r, *messages_r) < 0)
		return quota_fail("write", path, error_r);
	return 0;
}

int quota_usage_get(const char *maildir, uint64_t *bytes_r, uint64_t *messages_r, char **error_r)
{
	char *path = xasprintf("%s/%s", maildir, QUOTA_FILE_NAME);
	bool recomputed;
	int fd = quota_file_open(path);
	int ret;

	if (fd < 0) {
		/* No Maildir yet (first delivery still to come): nothing is used. */
		if (errno == ENOENT) {
			*bytes_r = 0;
			*messages_r = 0;
			free(path);
			return 0;
		}
		ret = quota_fail("open", path, error_r);
		free(path);
		return ret;
	}
	ret = quota_file_load(fd, maildir, path, bytes_r, messages_r, &recomputed, error_r);
	close(fd);
	free(path);
	return ret;
}

/* value + delta, clamped to [0, UINT64_MAX]. */
static uint64_t quota_apply(uint64_t value, int64_t delta)
{
	if (delta >= 0)
		return UINT64_MAX - value < (uint64_t)delta ? UINT64_MAX : value + (uint64_t)delta;
	uint64_t minus = (uint64_t)(-(delta + 1)) + 1; /* |delta| without overflow at INT64_MIN */
	return value < minus ? 0 : value - minus;
}

int quota_usage_add(const char *maildir, int64_t bytes, int64_t messages, char **error_r)
{
	char *path = xasprintf("%s/%s", maildir, QUOTA_FILE_NAME);
	uint64_t cur_bytes, cur_messages;
	bool recomputed;
	int fd = quota_file_open(path);
	int ret;

	if (fd < 0) {
		ret = quota_fail("open", path, error_r);
		free(path);
		return ret;
	}
	ret = quota_file_load(fd, maildir, path, &cur_bytes, &cur_messages, &recomputed, error_r);
	if (ret == 0 && !recomputed &&
	    quota_file_write(fd, quota_apply(cur_bytes, bytes),
			     quota_apply(cur_messages, messages)) < 0)
		ret = quota_fail("write", path, error_r);
	close(fd);
	free(path);
	return ret;
}

int quota_usage_set(const char *maildir, uint64_t bytes, uint64_t messages, char **error_r)
{
	char *path = xasprintf("%s/%s", maildir, QUOTA_FILE_NAME);
	int fd = quota_file_open(path);
	int ret = 0;

	if (fd < 0) {
		ret = quota_fail("open", path, error_r);
	} else {
		uint64_t old_bytes, old_messages;
		/* every login resets the usage: rewriting an unchanged file would dirty its inode
		 * (a journal write) for nothing */
		bool same = quota_file_read(fd, &old_bytes, &old_messages) && old_bytes == bytes &&
			    old_messages == messages;
		if (!same && quota_file_write(fd, bytes, messages) < 0)
			ret = quota_fail("write", path, error_r);
		close(fd);
	}
	free(path);
	return ret;
}

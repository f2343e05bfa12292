/* The time of a maildrop's last successful login, for RFC 2449 LOGIN-DELAY.
 *
 * On disk: <maildir>/buzon-lastlogin holds the time in decimal Unix seconds followed by one LF
 * ("1767225600\n"), owner-only (0600). Anything else reads as malformed, which counts as no
 * record: a damaged file lets one login through early instead of locking the user out.
 *
 * Written at each login of a user with a delay, under the maildrop lock: buzon-lastlogin.tmp
 * (a fixed name, since only the lock holder writes it; one a crash left is replaced), then
 * renamed over the record, so that a reader sees the old time or the new one. Neither the file
 * nor the directory is fsynced: the record is a rate limit, not mail, and a crash that loses the
 * last write only lets the next login through sooner, while an fsync would put a disk flush on
 * every login of every user with a delay. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "store/maildir_last_login.h"

/* "18446744073709551615\n" and one more octet, to tell an over-long file from a full one. */
#define LAST_LOGIN_MAX_TEXT (STR_U64_DIGITS_MAX + 2)

int maildir_last_login_get(const char *maildir, time_t *when_r, char **error_r)
{
	char *path = xasprintf("%s/" MAILDIR_LAST_LOGIN_NAME, maildir);
	char text[LAST_LOGIN_MAX_TEXT];
	unsigned long long seconds;
	ssize_t len = -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	*when_r = 0;
	if (fd < 0 && errno == ENOENT) {
		free(path);
		return 0;
	}
	if (fd >= 0) {
		do
			len = read(fd, text, sizeof(text));
		while (len < 0 && errno == EINTR);
		close(fd);
	}
	if (len < 0) {
		*error_r = xasprintf("%s(%s): %s", fd < 0 ? "open" : "read", path, strerror(errno));
		free(path);
		return -1;
	}
	if (len < 2 || text[len - 1] != '\n' ||
	    str_parse_uint_n(text, (size_t)len - 1, 1, INT64_MAX, &seconds) < 0) {
		*error_r = xasprintf("%s: malformed", path);
		free(path);
		return -1;
	}
	free(path);
	*when_r = (time_t)seconds;
	return 0;
}

/* Writes text to a new file at path. One a crash left is removed first rather than reused, so
 * that the new one has our mode and is no hard link to another file. */
static int last_login_write_tmp(const char *path, const char *text, size_t len, char **error_r)
{
	if (unlink(path) < 0 && errno != ENOENT) {
		*error_r = xasprintf("unlink(%s): %s", path, strerror(errno));
		return -1;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0) {
		*error_r = xasprintf("open(%s): %s", path, strerror(errno));
		return -1;
	}
	if (write_full(fd, text, len) < 0) {
		*error_r = xasprintf("write(%s): %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (close(fd) < 0) {
		*error_r = xasprintf("close(%s): %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int maildir_last_login_set(const char *maildir, time_t when, char **error_r)
{
	char *tmp = xasprintf("%s/" MAILDIR_LAST_LOGIN_TMP, maildir);
	char *path = xasprintf("%s/" MAILDIR_LAST_LOGIN_NAME, maildir);
	char text[LAST_LOGIN_MAX_TEXT];
	char *end = str_put_u64(text, (uint64_t)(when > 0 ? when : 0));
	int ret = 0;

	*end++ = '\n';
	if (last_login_write_tmp(tmp, text, (size_t)(end - text), error_r) < 0) {
		ret = -1;
	} else if (rename(tmp, path) < 0) {
		*error_r = xasprintf("rename(%s): %s", tmp, strerror(errno));
		ret = -1;
	}
	if (ret < 0)
		(void)unlink(tmp);
	free(tmp);
	free(path);
	return ret;
}

/* The delivery path (see delivery.h): one temp file, linked into every recipient's Maildir.
 *
 * File names: the temp file is tmp/<unique>.<host> in the Maildir of the first recipient that can
 * take it; recipient i gets tmp/<unique>R<i>.<host>, renamed to new/<unique>R<i>.<host>,S=<S>,W=<W>
 * where <unique> is "<seconds>.M<microseconds>P<pid>Q<counter>" (the usual Maildir recipe), S the
 * file's octets and W its size with CRLF line ends (what POP3 LIST reports). The R<i> keeps names
 * unique when one Maildir is named by two recipients, and POP3 login keys UIDs on these names.
 *
 * Failures are temporary unless no retry can help: a permission problem, a missing directory or a
 * full disk is fixed by an administrator while the MTA keeps the message queued, whereas a
 * permanent failure would bounce mail that an hour later could have been delivered. Only a
 * Maildir path that the kernel can never accept (empty, relative, too long) is permanent. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"
#include "lmtp/delivery.h"
#include "store/quota.h"

/* Message text is buffered in 64 KiB pieces: large enough that syscalls do not dominate, small
 * enough that a delivery never holds more than this of the message in memory. */
#define DELIVERY_BUFFER_SIZE 65536

/* Temp files older than this are leftovers of a crash: no delivery takes a day. */

/* Mailbox directories hold private mail: only the owner may enter them. */
#define DELIVERY_DIR_MODE 0700

/* Escaped host names are cut here so that file names stay far below NAME_MAX (and the uidlist's
 * 255-octet base names). */
#define DELIVERY_HOST_MAX 64

/* A temp name that exists already (a reused pid after a crash) is retried with the next counter. */
#define DELIVERY_CREATE_TRIES 8

struct delivery {
	struct delivery_recipient *recipients;
	size_t count;
	char *unique; /* "<sec>.M<usec>P<pid>Q<counter>" */
	char *host;   /* escaped host name */
	char *tmp_path;
	int fd;
	char *buf;
	size_t buf_used;
	uint64_t size;	  /* octets in the file (S=) */
	uint64_t bare_lf; /* LFs not preceded by CR: each becomes CRLF in POP3 (W= - S=) */
	bool prev_cr;
	char *error;	    /* first write failure; every recipient then gets a failure */
	int error_errno;    /* its errno, which decides between TEMPFAIL and NO_SPACE */
	size_t tmp_owner;   /* the recipient whose Maildir holds the temp file */
	uint64_t flushed;   /* octets safely written to the temp file */
	char **owner_error; /* per recipient: its Maildir ran out of space while holding the file */
	int *owner_errno;   /* and the errno of that failure */
};

/* Per process, so that two deliveries within one microsecond still get different names. */
static unsigned long delivery_counter;

static bool delivery_maildir_valid(const char *maildir)
{
	return maildir != NULL && maildir[0] == '/';
}

/* A full filesystem gets its own result because SMTP has its own reply for it (RFC 5321's 452,
 * RFC 3463's X.3.1); both it and other errors are temporary for the reasons above. */
static enum delivery_result delivery_errno_result(int err)
{
	switch (err) {
	case ENAMETOOLONG:
		return DELIVERY_PERMFAIL;
	case ENOSPC:
	case EDQUOT:
		return DELIVERY_NO_SPACE;
	default:
		return DELIVERY_TEMPFAIL;
	}
}

/* Sets *error_r from errno for call on path and returns the matching result. */
static enum delivery_result delivery_fail_errno(const char *call, const char *path, char **error_r)
{
	int err = errno;

	*error_r = xasprintf("%s(%s): %s", call, path, strerror(err));
	return delivery_errno_result(err);
}

/* The host name with '/', ':' and anything else unusual in a file name as \ooo (the Maildir
 * convention, which turns '/' into \057 and ':' into \072). */
static char *delivery_host_escape(void)
{
	char host[256] = "localhost";
	char out[DELIVERY_HOST_MAX + 1];
	size_t len = 0;

	if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	for (const char *p = host; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
		size_t need = plain ? 1 : 4;
		if (len + need > DELIVERY_HOST_MAX)
			break;
		if (plain)
			out[len++] = (char)c;
		else
			len += (size_t)snprintf(out + len, sizeof(out) - len, "\\%03o", c);
	}
	out[len] = '\0';
	return xstrdup(out);
}

static char *delivery_unique_new(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return xasprintf("%lld.M%06ldP%ldQ%lu", (long long)ts.tv_sec, ts.tv_nsec / 1000,
			 (long)getpid(), ++delivery_counter);
}

/* Creates maildir (and missing parents) with cur/, new/ and tmp/. Returns -1 with errno set. */
static int delivery_maildir_prepare(const char *maildir)
{
	static const char *const subdirs[] = {"cur", "new", "tmp"};

	for (size_t i = 0; i < ARRAY_SIZE(subdirs); i++) {
		char *sub = xasprintf("%s/%s", maildir, subdirs[i]);
		int ret = mkdir(sub, DELIVERY_DIR_MODE);
		if (ret < 0 && errno == EEXIST)
			ret = 0;
		else if (ret < 0 && errno == ENOENT)
			ret = mkdir_parents(sub, DELIVERY_DIR_MODE);
		int err = errno;
		free(sub);
		if (ret < 0) {
			errno = err;
			return -1;
		}
	}
	return 0;
}

/* Creates the temp file in maildir/tmp/. Returns DELIVERY_OK or a failure with *error_r. */
static enum delivery_result delivery_tmp_create(struct delivery *d, const char *maildir,
						char **error_r)
{
	if (!delivery_maildir_valid(maildir)) {
		*error_r = xasprintf("invalid maildir path: %s", maildir == NULL ? "" : maildir);
		return DELIVERY_PERMFAIL;
	}
	if (delivery_maildir_prepare(maildir) < 0)
		return delivery_fail_errno("mkdir", maildir, error_r);
	for (int tries = 0;; tries++) {
		d->unique = delivery_unique_new();
		d->tmp_path = xasprintf("%s/tmp/%s.%s", maildir, d->unique, d->host);
		d->fd =
		    open(d->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (d->fd >= 0)
			return DELIVERY_OK;
		int err = errno;
		enum delivery_result result = delivery_fail_errno("open", d->tmp_path, error_r);
		x_free(&d->unique);
		x_free(&d->tmp_path);
		if (err != EEXIST || tries + 1 == DELIVERY_CREATE_TRIES)
			return result;
		x_free(error_r);
	}
}

static bool delivery_space_error(int err)
{
	return err == ENOSPC || err == EDQUOT || err == EFBIG;
}

/* Copies the first len octets of the file at src_path to fd. */
static int delivery_copy_prefix(const char *src_path, int fd, uint64_t len)
{
	char buf[65536];
	int src = open(src_path, O_RDONLY | O_CLOEXEC);

	if (src < 0)
		return -1;
	while (len > 0) {
		ssize_t n = read(src, buf, len < sizeof(buf) ? (size_t)len : sizeof(buf));
		if (n <= 0 || write_full(fd, buf, (size_t)n) < 0) {
			close(src);
			return -1;
		}
		len -= (uint64_t)n;
	}
	close(src);
	return 0;
}

/* The temp file's Maildir is full: its recipient gets TEMPFAIL, and what was written so far moves
 * to the next recipient's Maildir that can take it, so one full disk fails only its own users.
 * Returns true if the message now lives somewhere else. */
static bool delivery_relocate(struct delivery *d, int err)
{
	size_t owner = d->tmp_owner;
	char *old_path = d->tmp_path;
	int old_fd = d->fd;

	d->owner_error[owner] = xasprintf("write(%s): %s", old_path, strerror(err));
	d->owner_errno[owner] = err;
	free(d->unique);
	d->unique = NULL;
	d->tmp_path = NULL;
	for (size_t i = owner + 1; i < d->count; i++) {
		char *error = NULL;
		if (delivery_tmp_create(d, d->recipients[i].maildir, &error) != DELIVERY_OK) {
			free(error);
			continue;
		}
		if (delivery_copy_prefix(old_path, d->fd, d->flushed) == 0) {
			close(old_fd);
			unlink(old_path);
			free(old_path);
			d->tmp_owner = i;
			return true;
		}
		close(d->fd);
		unlink(d->tmp_path);
		x_free(&d->tmp_path);
		x_free(&d->unique);
	}
	/* nowhere to go: keep the old file so that finish reports and removes it */
	d->fd = old_fd;
	d->tmp_path = old_path;
	d->unique = delivery_unique_new();
	return false;
}

static void delivery_flush(struct delivery *d)
{
	if (d->buf_used == 0 || d->error != NULL)
		return;
	while (write_full(d->fd, d->buf, d->buf_used) < 0) {
		int err = errno;
		/* a partial write is undone: the copy takes only what was flushed before */
		if (!delivery_space_error(err) || !delivery_relocate(d, err)) {
			d->error = xasprintf("write(%s): %s", d->tmp_path, strerror(err));
			d->error_errno = err;
			break;
		}
	}
	if (d->error == NULL)
		d->flushed += d->buf_used;
	d->buf_used = 0;
}

static void delivery_count(struct delivery *d, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\n' && !d->prev_cr)
			d->bare_lf++;
		d->prev_cr = p[i] == '\r';
	}
	d->size += len;
}

int delivery_write(struct delivery *d, const void *data, size_t len)
{
	const unsigned char *p = data;

	if (d->error != NULL)
		return -1;
	delivery_count(d, p, len);
	while (len > 0) {
		size_t n = DELIVERY_BUFFER_SIZE - d->buf_used;
		if (n > len)
			n = len;
		memcpy(d->buf + d->buf_used, p, n);
		d->buf_used += n;
		p += n;
		len -= n;
		if (d->buf_used == DELIVERY_BUFFER_SIZE)
			delivery_flush(d);
	}
	return d->error != NULL ? -1 : 0;
}

/* Writes "name: <value>\n" (or "name: value\n"), dropping control bytes from value: an address
 * with CR or LF must not be able to add header lines. */
static void delivery_write_header(struct delivery *d, const char *name, const char *value,
				  bool angle)
{
	size_t len = strlen(value);
	char *line = xmalloc(strlen(name) + len + 6);
	size_t out = (size_t)sprintf(line, "%s: %s", name, angle ? "<" : "");

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)value[i];
		if (c >= 0x20 && c != 0x7f)
			line[out++] = (char)c;
	}
	if (angle)
		line[out++] = '>';
	line[out++] = '\n';
	(void)delivery_write(d, line, out);
	free(line);
}

static void delivery_free(struct delivery **deliveryp)
{
	struct delivery *d = *deliveryp;

	if (d->fd >= 0)
		close(d->fd);
	free(d->unique);
	free(d->host);
	free(d->tmp_path);
	free(d->buf);
	free(d->error);
	for (size_t i = 0; d->owner_error != NULL && i < d->count; i++)
		free(d->owner_error[i]);
	free(d->owner_error);
	free(d->owner_errno);
	x_free(deliveryp);
}

/* Tries each recipient's Maildir in turn until one takes the temp file. */
static enum delivery_result delivery_tmp_place(struct delivery *d, char **error_r)
{
	enum delivery_result result = DELIVERY_PERMFAIL;

	*error_r = NULL;
	for (size_t i = 0; i < d->count; i++) {
		char *error = NULL;
		enum delivery_result r = delivery_tmp_create(d, d->recipients[i].maildir, &error);
		if (r == DELIVERY_OK) {
			d->tmp_owner = i;
			x_free(error_r);
			return DELIVERY_OK;
		}
		if (r != DELIVERY_PERMFAIL && result == DELIVERY_PERMFAIL)
			result = r; /* one Maildir that may work later makes it temporary */
		if (*error_r == NULL)
			*error_r = error;
		else
			free(error);
	}
	return result;
}

struct delivery *delivery_begin(struct delivery_recipient *recipients, size_t count,
				const char *sender, enum delivery_result *result_r, char **error_r)
{
	struct delivery *d;

	if (count == 0)
		fatal("delivery_begin: no recipients");
	d = xcalloc(1, sizeof(*d));
	d->recipients = recipients;
	d->count = count;
	d->fd = -1;
	d->host = delivery_host_escape();
	d->owner_error = xcalloc(count, sizeof(*d->owner_error));
	d->owner_errno = xcalloc(count, sizeof(*d->owner_errno));
	*result_r = delivery_tmp_place(d, error_r);
	if (*result_r != DELIVERY_OK) {
		delivery_free(&d);
		return NULL;
	}
	d->buf = xmalloc(DELIVERY_BUFFER_SIZE);
	delivery_write_header(d, "Return-Path", sender, true);
	if (count == 1)
		delivery_write_header(d, "Delivered-To", recipients[0].address, false);
	return d;
}

/* Flushes, fsyncs and closes the temp file; failures end up in d->error. */
static void delivery_tmp_sync(struct delivery *d)
{
	delivery_flush(d);
	if (d->error == NULL && fsync(d->fd) < 0) {
		d->error_errno = errno;
		d->error = xasprintf("fsync(%s): %s", d->tmp_path, strerror(errno));
	}
	if (close(d->fd) < 0 && d->error == NULL) {
		d->error_errno = errno;
		d->error = xasprintf("close(%s): %s", d->tmp_path, strerror(errno));
	}
	d->fd = -1;
}

/* Copies src to the new file dst (link() across filesystems is impossible) and fsyncs it. */
static int delivery_copy(const char *src, const char *dst)
{
	char buf[DELIVERY_BUFFER_SIZE];
	int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int out = -1, ret = -1, err;
	ssize_t n;

	if (in < 0)
		return -1;
	out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out >= 0) {
		while ((n = read(in, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
			if (n > 0 && write_full(out, buf, (size_t)n) < 0)
				break;
		}
		if (n == 0 && fsync(out) == 0)
			ret = 0;
	}
	err = errno;
	close(in);
	if (out >= 0 && close(out) < 0 && ret == 0) {
		err = errno;
		ret = -1;
	}
	if (ret < 0 && out >= 0)
		unlink(dst);
	errno = err;
	return ret;
}

/* Puts the message into recipient i's new/. */
static enum delivery_result delivery_link_one(struct delivery *d, size_t i, const char *tmp,
					      const char *final, char **error_r)
{
	const char *maildir = d->recipients[i].maildir;

	if (delivery_maildir_prepare(maildir) < 0)
		return delivery_fail_errno("mkdir", maildir, error_r);
	/* EPERM: some filesystems (vfat, some FUSE) have no hard links at all. */
	if (link(d->tmp_path, tmp) < 0 &&
	    ((errno != EXDEV && errno != EPERM) || delivery_copy(d->tmp_path, tmp) < 0))
		return delivery_fail_errno("link", tmp, error_r);
	if (rename(tmp, final) < 0) {
		enum delivery_result result = delivery_fail_errno("rename", final, error_r);
		unlink(tmp);
		return result;
	}
	char *new_dir = xasprintf("%s/new", maildir);
	if (fsync_dir(new_dir) < 0) {
		/* Not durable, so not acknowledged: take it back, and the MTA retries. (If a POP3
		 * login already moved it to cur/, the unlink misses and a retry may duplicate it;
		 * a failing fsync on a directory is rare enough to accept that.) */
		enum delivery_result result = delivery_fail_errno("fsync", new_dir, error_r);
		unlink(final);
		free(new_dir);
		return result;
	}
	free(new_dir);
	return DELIVERY_OK;
}

static enum delivery_result delivery_one(struct delivery *d, size_t i, char **error_r)
{
	const struct delivery_recipient *r = &d->recipients[i];
	uint64_t s_size = d->size, w_size = d->size + d->bare_lf;
	enum delivery_result result;
	char *quota_error = NULL;

	if (!delivery_maildir_valid(r->maildir)) {
		*error_r =
		    xasprintf("invalid maildir path: %s", r->maildir == NULL ? "" : r->maildir);
		return DELIVERY_PERMFAIL;
	}
	result = delivery_quota_check(r, s_size, error_r);
	if (result != DELIVERY_OK)
		return result;
	char *name = xasprintf("%sR%zu.%s", d->unique, i, d->host);
	char *tmp = xasprintf("%s/tmp/%s", r->maildir, name);
	char *final = xasprintf("%s/new/%s,S=%llu,W=%llu", r->maildir, name,
				(unsigned long long)s_size, (unsigned long long)w_size);
	result = delivery_link_one(d, i, tmp, final, error_r);
	if (result == DELIVERY_OK &&
	    quota_usage_add(r->maildir, (int64_t)s_size, 1, &quota_error) < 0) {
		/* The mail is safe; the usage heals at the user's next POP3 login. */
		log_warn("quota_update_failed", "user=%s error=%s", log_quote(r->user),
			 log_quote(quota_error));
		free(quota_error);
	}
	free(name);
	free(tmp);
	free(final);
	return result;
}

size_t delivery_finish(struct delivery **deliveryp)
{
	struct delivery *d = *deliveryp;
	size_t delivered = 0;

	delivery_tmp_sync(d);
	for (size_t i = 0; i < d->count; i++) {
		struct delivery_recipient *r = &d->recipients[i];
		r->error = NULL;
		if (d->error != NULL || d->owner_error[i] != NULL) {
			bool own = d->owner_error[i] != NULL;
			r->result = delivery_errno_result(own ? d->owner_errno[i] : d->error_errno);
			r->error = xstrdup(own ? d->owner_error[i] : d->error);
			continue;
		}
		r->result = delivery_one(d, i, &r->error);
		if (r->result == DELIVERY_OK)
			delivered++;
	}
	if (unlink(d->tmp_path) < 0)
		log_warn("delivery_unlink_failed", "path=%s error=%s", log_quote(d->tmp_path),
			 log_quote(strerror(errno)));
	delivery_free(deliveryp);
	return delivered;
}

void delivery_abort(struct delivery **deliveryp)
{
	struct delivery *d = *deliveryp;

	if (d == NULL)
		return;
	if (d->fd >= 0) {
		close(d->fd);
		d->fd = -1;
	}
	(void)unlink(d->tmp_path);
	delivery_free(deliveryp);
}

enum delivery_result delivery_quota_check(const struct delivery_recipient *recipient, uint64_t size,
					  char **error_r)
{
	uint64_t bytes, messages;
	char *error = NULL;

	*error_r = NULL;
	if (recipient->quota_bytes == 0 && recipient->quota_messages == 0)
		return DELIVERY_OK;
	if (quota_usage_get(recipient->maildir, &bytes, &messages, &error) < 0) {
		*error_r = error;
		return DELIVERY_TEMPFAIL;
	}
	if (recipient->quota_bytes != 0 &&
	    (bytes > recipient->quota_bytes || size > recipient->quota_bytes - bytes)) {
		*error_r =
		    xasprintf("quota exceeded: %llu + %llu bytes > %llu", (unsigned long long)bytes,
			      (unsigned long long)size, (unsigned long long)recipient->quota_bytes);
		return DELIVERY_OVER_QUOTA;
	}
	if (recipient->quota_messages != 0 && messages >= recipient->quota_messages) {
		*error_r = xasprintf("quota exceeded: %llu messages, limit %llu",
				     (unsigned long long)messages,
				     (unsigned long long)recipient->quota_messages);
		return DELIVERY_OVER_QUOTA;
	}
	return DELIVERY_OK;
}

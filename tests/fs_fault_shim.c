/* An LD_PRELOAD library for the storage-fault tests: makes chosen filesystem calls of a process
 * fail with a chosen errno, for chosen paths, while a control file says so. Built by
 * tests/integration/test_storage_faults.py into its temp directory:
 *     cc -shared -fPIC -o fs_fault_shim.so tests/fs_fault_shim.c -ldl
 *
 * Environment:
 *   BUZON_FAULT_CONTROL  the control file, read again at every call that may fail, so a test arms
 *                        and disarms faults in a running server by replacing it;
 *   BUZON_FAULT_SCOPE    only paths containing this string can fail (the Maildir under test);
 *                        other calls cost a string search and nothing else.
 * Control file: one rule per line, "<call> <errno> <path part>", for example
 *     fsync EIO /cur
 *     open ENOSPC buzon-uidlist.tmp
 * call is one of open (only opens that may create: O_CREAT), write, fsync, rename, unlink, link;
 * errno one of EIO, ENOSPC, EDQUOT, EROFS, or SLOW: the call waits SHIM_SLOW_MS and then runs
 * (a commit that takes long); the rule matches when the call's path contains the path part. For
 * write and fsync the path is the one the descriptor was opened with (tracked here for descriptors
 * opened inside the scope); for the *at() calls it is the directory descriptor's path joined with
 * the name; rename matches on either name. A missing or empty file fails nothing. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Descriptors above this are not tracked: a test server opens far fewer. */
#define SHIM_FD_MAX 65536
#define SHIM_CONTROL_MAX 4096
#define SHIM_PATH_MAX 4096

/* What shim_fault() returns for a SLOW rule, and how long such a call waits. */
#define SHIM_SLOW (-1)
#define SHIM_SLOW_MS 1500

static char *shim_fd_paths[SHIM_FD_MAX];
static pthread_mutex_t shim_lock = PTHREAD_MUTEX_INITIALIZER;

static const struct {
	const char *name;
	int value;
} shim_errnos[] = {
    {"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS}, {"SLOW", SHIM_SLOW}};

/* Waits SHIM_SLOW_MS with a futex wait that nobody wakes: unlike nanosleep(), a call that every
 * sandboxed buzon process may make. */
static void shim_pause(void)
{
	static int never_woken;
	struct timespec now, end;

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += SHIM_SLOW_MS / 1000;
	end.tv_nsec += (SHIM_SLOW_MS % 1000) * 1000000L;
	if (end.tv_nsec >= 1000000000L) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000L;
	}
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		struct timespec left = {.tv_sec = end.tv_sec - now.tv_sec,
					.tv_nsec = end.tv_nsec - now.tv_nsec};
		if (left.tv_nsec < 0) {
			left.tv_sec--;
			left.tv_nsec += 1000000000L;
		}
		if (left.tv_sec < 0)
			return;
		syscall(SYS_futex, &never_woken, FUTEX_WAIT_PRIVATE, 0, &left, NULL, 0);
	}
}

static bool shim_in_scope(const char *path)
{
	const char *scope = getenv("BUZON_FAULT_SCOPE");

	return path != NULL && scope != NULL && scope[0] != '\0' && strstr(path, scope) != NULL;
}

/* Reads the control file with raw syscalls, which this library does not intercept. */
static ssize_t shim_control_read(char *buf, size_t size)
{
	const char *path = getenv("BUZON_FAULT_CONTROL");
	ssize_t len = 0, n;
	int fd;

	if (path == NULL)
		return 0;
	fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	while ((size_t)len < size - 1 && (n = syscall(SYS_read, fd, buf + len, size - 1 - len)) > 0)
		len += n;
	syscall(SYS_close, fd);
	buf[len] = '\0';
	return len;
}

/* The errno a rule for call on path asks for, or 0. */
static int shim_fault(const char *call, const char *path)
{
	char control[SHIM_CONTROL_MAX];
	char *save = NULL;

	if (!shim_in_scope(path) || shim_control_read(control, sizeof(control)) <= 0)
		return 0;
	for (char *line = strtok_r(control, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char rule_call[32], rule_errno[32], part[SHIM_PATH_MAX];
		if (sscanf(line, "%31s %31s %4095s", rule_call, rule_errno, part) != 3 ||
		    strcmp(rule_call, call) != 0 || strstr(path, part) == NULL)
			continue;
		for (size_t i = 0; i < sizeof(shim_errnos) / sizeof(shim_errnos[0]); i++) {
			if (strcmp(shim_errnos[i].name, rule_errno) == 0)
				return shim_errnos[i].value;
		}
	}
	return 0;
}

/* The tracked path of fd, copied into buf; "" if untracked. */
static const char *shim_fd_path(int fd, char *buf, size_t size)
{
	buf[0] = '\0';
	if (fd < 0 || fd >= SHIM_FD_MAX)
		return buf;
	pthread_mutex_lock(&shim_lock);
	if (shim_fd_paths[fd] != NULL)
		snprintf(buf, size, "%s", shim_fd_paths[fd]);
	pthread_mutex_unlock(&shim_lock);
	return buf;
}

static void shim_fd_set(int fd, const char *path)
{
	if (fd < 0 || fd >= SHIM_FD_MAX)
		return;
	char *copy = shim_in_scope(path) ? strdup(path) : NULL;
	pthread_mutex_lock(&shim_lock);
	free(shim_fd_paths[fd]);
	shim_fd_paths[fd] = copy;
	pthread_mutex_unlock(&shim_lock);
}

/* name relative to dirfd as a full path, as far as this library knows dirfd's path. */
static const char *shim_at_path(int dirfd, const char *name, char *buf, size_t size)
{
	char dir[SHIM_PATH_MAX];

	if (name[0] == '/' || dirfd == AT_FDCWD)
		snprintf(buf, size, "%s", name);
	else
		snprintf(buf, size, "%s/%s", shim_fd_path(dirfd, dir, sizeof(dir)), name);
	return buf;
}

#define SHIM_REAL(ret, name, ...)                                                                 \
	static ret (*real)(__VA_ARGS__);                                                          \
	if (real == NULL)                                                                         \
		real = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

#define SHIM_FAIL_IF(call, path)                                                                  \
	do {                                                                                      \
		int fault_ = shim_fault(call, path);                                              \
		if (fault_ == SHIM_SLOW)                                                          \
			shim_pause();                                                             \
		else if (fault_ != 0) {                                                           \
			errno = fault_;                                                           \
			return -1;                                                                \
		}                                                                                 \
	} while (0)

/* On 64-bit glibc, open64 and openat64 are other names of open and openat: a program may import
 * any of the four, and all end up here, calling the real openat. */
static int shim_openat(int dirfd, const char *name, int flags, mode_t mode)
{
	SHIM_REAL(int, "openat", int, const char *, int, mode_t);
	char path[SHIM_PATH_MAX];

	shim_at_path(dirfd, name, path, sizeof(path));
	if (flags & O_CREAT)
		SHIM_FAIL_IF("open", path);
	int fd = real(dirfd, name, flags, mode);
	if (fd >= 0)
		shim_fd_set(fd, path);
	return fd;
}

#define SHIM_MODE_ARG(flags)                                                                      \
	mode_t mode = 0;                                                                          \
	if ((flags) & (O_CREAT | O_TMPFILE)) {                                                     \
		va_list ap;                                                                       \
		va_start(ap, flags);                                                              \
		mode = va_arg(ap, mode_t);                                                        \
		va_end(ap);                                                                       \
	}

int openat(int dirfd, const char *name, int flags, ...)
{
	SHIM_MODE_ARG(flags);
	return shim_openat(dirfd, name, flags, mode);
}

int openat64(int dirfd, const char *name, int flags, ...)
{
	SHIM_MODE_ARG(flags);
	return shim_openat(dirfd, name, flags, mode);
}

int open(const char *name, int flags, ...)
{
	SHIM_MODE_ARG(flags);
	return shim_openat(AT_FDCWD, name, flags, mode);
}

int open64(const char *name, int flags, ...)
{
	SHIM_MODE_ARG(flags);
	return shim_openat(AT_FDCWD, name, flags, mode);
}

int close(int fd)
{
	SHIM_REAL(int, "close", int);

	shim_fd_set(fd, NULL);
	return real(fd);
}

ssize_t write(int fd, const void *buf, size_t len)
{
	SHIM_REAL(ssize_t, "write", int, const void *, size_t);
	char path[SHIM_PATH_MAX];

	SHIM_FAIL_IF("write", shim_fd_path(fd, path, sizeof(path)));
	return real(fd, buf, len);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t offset)
{
	SHIM_REAL(ssize_t, "pwrite", int, const void *, size_t, off_t);
	char path[SHIM_PATH_MAX];

	SHIM_FAIL_IF("write", shim_fd_path(fd, path, sizeof(path)));
	return real(fd, buf, len, offset);
}

int fsync(int fd)
{
	SHIM_REAL(int, "fsync", int);
	char path[SHIM_PATH_MAX];

	SHIM_FAIL_IF("fsync", shim_fd_path(fd, path, sizeof(path)));
	return real(fd);
}

int fdatasync(int fd)
{
	SHIM_REAL(int, "fdatasync", int);
	char path[SHIM_PATH_MAX];

	SHIM_FAIL_IF("fsync", shim_fd_path(fd, path, sizeof(path)));
	return real(fd);
}

static int shim_rename_fault(int olddirfd, const char *oldname, int newdirfd, const char *newname)
{
	char from[SHIM_PATH_MAX], to[SHIM_PATH_MAX];
	int fault = shim_fault("rename", shim_at_path(olddirfd, oldname, from, sizeof(from)));

	if (fault == 0)
		fault = shim_fault("rename", shim_at_path(newdirfd, newname, to, sizeof(to)));
	if (fault == SHIM_SLOW) {
		shim_pause();
		fault = 0;
	}
	return fault;
}

int rename(const char *oldname, const char *newname)
{
	SHIM_REAL(int, "rename", const char *, const char *);
	int fault = shim_rename_fault(AT_FDCWD, oldname, AT_FDCWD, newname);

	if (fault != 0) {
		errno = fault;
		return -1;
	}
	return real(oldname, newname);
}

int renameat(int olddirfd, const char *oldname, int newdirfd, const char *newname)
{
	SHIM_REAL(int, "renameat", int, const char *, int, const char *);
	int fault = shim_rename_fault(olddirfd, oldname, newdirfd, newname);

	if (fault != 0) {
		errno = fault;
		return -1;
	}
	return real(olddirfd, oldname, newdirfd, newname);
}

int renameat2(int olddirfd, const char *oldname, int newdirfd, const char *newname,
	      unsigned int flags)
{
	SHIM_REAL(int, "renameat2", int, const char *, int, const char *, unsigned int);
	int fault = shim_rename_fault(olddirfd, oldname, newdirfd, newname);

	if (fault != 0) {
		errno = fault;
		return -1;
	}
	return real(olddirfd, oldname, newdirfd, newname, flags);
}

int unlink(const char *name)
{
	SHIM_REAL(int, "unlink", const char *);

	SHIM_FAIL_IF("unlink", name);
	return real(name);
}

int unlinkat(int dirfd, const char *name, int flags)
{
	SHIM_REAL(int, "unlinkat", int, const char *, int);
	char path[SHIM_PATH_MAX];

	SHIM_FAIL_IF("unlink", shim_at_path(dirfd, name, path, sizeof(path)));
	return real(dirfd, name, flags);
}

int link(const char *oldname, const char *newname)
{
	SHIM_REAL(int, "link", const char *, const char *);

	SHIM_FAIL_IF("link", newname);
	return real(oldname, newname);
}

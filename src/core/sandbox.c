/* Landlock and seccomp for the children of `buzon serve` (see sandbox.h).
 *
 * Landlock goes through its raw system calls (glibc has no wrappers) and is best effort: the
 * running kernel's ABI version says which access rights it knows, only those are handled, so one
 * binary runs from ABI 1 (Linux 5.13) on and gains each restriction the kernel adds. Rights newer
 * than this file stay allowed until it learns them.
 *
 * The seccomp lists hold what each process calls after its set-up, measured with strace -f over
 * the integration and interop suites, plus what the libraries it uses call on paths the tests do
 * not reach (glibc's abort(), qsort(), realloc(); other architectures' names for the same calls).
 * Any other call kills the whole process: an exploit gets no second try, and the master logs the
 * death by SIGSYS. */
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <openssl/crypto.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#include "core/log.h"
#include "core/sandbox.h"
#include "core/util.h"
#include "store/store.h"

/* Landlock rights newer than the kernel headers Debian 12 ships (Linux 6.1, ABI 2). */
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13) /* ABI 2 */
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_NET_BIND_TCP
#define LANDLOCK_ACCESS_NET_BIND_TCP	(1ULL << 0) /* ABI 4 */
#define LANDLOCK_ACCESS_NET_CONNECT_TCP (1ULL << 1)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#define LANDLOCK_SCOPE_SIGNAL		    (1ULL << 1)
#endif

/* struct landlock_ruleset_attr as of ABI 6. The size handed to the kernel says which fields this
 * process fills, so that an older kernel is only given the fields it knows. */
struct sandbox_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net; /* ABI 4 */
	uint64_t scoped;	     /* ABI 6 */
};

/* What POP3 and LMTP may do beneath the mail root: read and write messages, list directories,
 * create them and files, move files between tmp/, new/ and cur/ and link them into other
 * mailboxes (REFER), remove them, truncate buzon-quota. No execution, no symlinks, no device or
 * special files. */
#define SANDBOX_MAIL_ACCESS                                                                        \
	(LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |                            \
	 LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |                             \
	 LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_DIR |                            \
	 LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_REFER | LANDLOCK_ACCESS_FS_TRUNCATE)

/* The rights Landlock accepts on a rule for a file rather than a directory. */
#define SANDBOX_FILE_ACCESS                                                                        \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |                              \
	 LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE |                              \
	 LANDLOCK_ACCESS_FS_IOCTL_DEV)

/* Sanitizer builds: LeakSanitizer's exit-time check lists /proc/self/task, reads
 * /proc/self/maps, stops the threads from a helper clone()d without CLONE_THREAD and ptrace()s
 * them. Normal builds allow none of that. */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZER 1
#endif
#endif
#ifndef SANDBOX_SANITIZER
#define SANDBOX_SANITIZER 0
#endif

/* What a call outside the lists gets. A development build made with -DSANDBOX_SECCOMP_LOG_ONLY
 * only logs such calls to the kernel's audit log (type=1326 … syscall=N): the way to measure the
 * lists again after a change. */
#ifdef SANDBOX_SECCOMP_LOG_ONLY
#define SANDBOX_SECCOMP_DEFAULT SCMP_ACT_LOG
#else
#define SANDBOX_SECCOMP_DEFAULT SCMP_ACT_KILL_PROCESS
#endif

static const char *const sandbox_kind_names[] = {
    [SANDBOX_KIND_POP3] = "pop3",
    [SANDBOX_KIND_LMTP] = "lmtp",
    [SANDBOX_KIND_AUTH] = "auth",
    [SANDBOX_KIND_ADMIN] = "admin",
};

char *sandbox_mail_root(const char *location)
{
	const char *path = NULL;

	if (location == NULL || store_backend_find(location, &path) == NULL || path[0] != '/')
		return NULL;
	char *root = xstrndup(path, strcspn(path, "%"));
	char *slash = strrchr(root, '/');
	/* "/srv/mail/%u" and "/srv/mail/user-%u" both live in /srv/mail */
	if (slash == root)
		slash[1] = '\0';
	else
		*slash = '\0';
	return root;
}

/* ------------------------------------------------------------------------------------------ */
/* Landlock */

/* The kernel's Landlock ABI version, or -1 with errno (ENOSYS: not built in; EOPNOTSUPP: not
 * enabled at boot). */
static int sandbox_landlock_abi(void)
{
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);

	return abi < 0 ? -1 : (int)abi;
}

/* The file-system rights a kernel of this ABI knows, and so can deny. */
static uint64_t sandbox_fs_rights(int abi)
{
	uint64_t rights = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0 to 12 */

	if (abi >= 2)
		rights |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	return rights;
}

/* Allows access beneath path, or to path itself when it is not a directory. Returns -1 with
 * errno. */
static int sandbox_allow_path(int ruleset_fd, const char *path, uint64_t access)
{
	struct stat st;
	int fd = open(path, O_PATH | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
		access &= SANDBOX_FILE_ACCESS;
	struct landlock_path_beneath_attr rule = {.allowed_access = access, .parent_fd = fd};
	long ret = syscall(SYS_landlock_add_rule, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
	int saved = errno;
	close(fd);
	errno = saved;
	return ret < 0 ? -1 : 0;
}

/* Allows the mail root, or while it does not exist yet (a new installation, whose mailboxes
 * appear with the first delivery) its nearest existing ancestor, and says so in the log. */
static int sandbox_allow_mail_root(int ruleset_fd, const char *location, uint64_t access,
				   char **error_r)
{
	char *root = sandbox_mail_root(location);

	if (root == NULL) {
		*error_r = xasprintf("[mail] location %s has no absolute path", location);
		return -1;
	}
	char *dir = xstrdup(root);
	while (sandbox_allow_path(ruleset_fd, dir, access) < 0) {
		char *slash = strrchr(dir, '/');
		if (errno != ENOENT || slash == NULL || strcmp(dir, "/") == 0) {
			*error_r =
			    xasprintf("cannot open the mail root %s: %s", dir, strerror(errno));
			free(dir);
			free(root);
			return -1;
		}
		if (slash == dir)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	if (strcmp(dir, root) != 0)
		log_warn("sandbox_mail_root_missing", "root=%s allowed=%s hint=%s", log_quote(root),
			 log_quote(dir), log_quote("create the mail root to confine mail to it"));
	free(dir);
	free(root);
	return 0;
}

/* [server] sandbox_extra_paths: more trees the mail processes may use like the mail root (a
 * Maildir that a symlink moved to another disk). One that is missing is logged and left out. */
static void sandbox_allow_extra_paths(int ruleset_fd, const char *list, uint64_t access)
{
	if (list == NULL)
		return;
	char *copy = xstrdup(list), *saveptr = NULL;
	for (char *item = strtok_r(copy, ",", &saveptr); item != NULL;
	     item = strtok_r(NULL, ",", &saveptr)) {
		const char *path = str_trim(item);
		if (path[0] != '\0' && sandbox_allow_path(ruleset_fd, path, access) < 0)
			log_warn("sandbox_extra_path_skipped", "path=%s error=%s", log_quote(path),
				 log_quote(strerror(errno)));
	}
	free(copy);
}

/* Whether path is dir or lies beneath it, compared after resolving symlinks where they exist. */
static bool sandbox_path_beneath(const char *dir, const char *path)
{
	char *real_dir = realpath(dir, NULL), *real_path = realpath(path, NULL);
	const char *d = real_dir != NULL ? real_dir : dir;
	const char *p = real_path != NULL ? real_path : path;
	size_t len = strlen(d);
	bool beneath =
	    strcmp(d, "/") == 0 || (strncmp(p, d, len) == 0 && (p[len] == '/' || p[len] == '\0'));

	free(real_dir);
	free(real_path);
	return beneath;
}

/* Landlock rules cover whole trees: say so when the auth process's tree holds mail or a TLS key. */
static void sandbox_check_passwd_dir(const struct buzon_config *config, const char *dir)
{
	char *root = sandbox_mail_root(config->mail_location);
	const char *key = config->tls_key != NULL ? config->tls_key : config->tls_cert;

	if ((root != NULL && sandbox_path_beneath(dir, root)) ||
	    (key != NULL && sandbox_path_beneath(dir, key)))
		log_warn("sandbox_passwd_dir_shared", "dir=%s hint=%s", log_quote(dir),
			 log_quote("the auth process may read any file beneath the passwd-file's "
				   "directory: give it a directory apart from mail and TLS keys"));
	free(root);
}

/* The auth process reads the passwd-file again whenever it changes. `buzon user` replaces it by
 * renaming a new file over it (a new inode), so the rule covers its directory: read-only, files
 * only, no listing. */
static int sandbox_allow_passwd_dir(const struct buzon_config *config, int ruleset_fd,
				    char **error_r)
{
	const char *passwd_file = config->passwd_file;
	const char *slash = strrchr(passwd_file, '/');
	char *dir = slash == NULL	   ? xstrdup(".")
		    : slash == passwd_file ? xstrdup("/")
					   : xstrndup(passwd_file, (size_t)(slash - passwd_file));
	int ret = sandbox_allow_path(ruleset_fd, dir, LANDLOCK_ACCESS_FS_READ_FILE);

	if (ret < 0 && errno == ENOENT) {
		/* the database cannot be read either way; failing here would only make the master
		 * restart the auth process, and every worker with it, once a second */
		log_warn("sandbox_passwd_dir_missing", "dir=%s", log_quote(dir));
		ret = 0;
	} else if (ret < 0) {
		*error_r = xasprintf("cannot open %s, the passwd-file's directory: %s", dir,
				     strerror(errno));
	} else {
		sandbox_check_passwd_dir(config, dir);
	}
	free(dir);
	return ret;
}

static int sandbox_landlock_rules(const struct buzon_config *config, enum sandbox_kind kind,
				  int ruleset_fd, uint64_t fs_rights, char **error_r)
{
	if (SANDBOX_SANITIZER &&
	    sandbox_allow_path(ruleset_fd, "/proc",
			       LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR) < 0) {
		*error_r = xasprintf("cannot open /proc: %s", strerror(errno));
		return -1;
	}
	if (kind == SANDBOX_KIND_AUTH)
		return sandbox_allow_passwd_dir(config, ruleset_fd, error_r);
	if (kind == SANDBOX_KIND_ADMIN)
		return 0; /* no file at all: its sockets and the shared mappings are inherited */
	uint64_t access = SANDBOX_MAIL_ACCESS & fs_rights;
	if (sandbox_allow_mail_root(ruleset_fd, config->mail_location, access, error_r) < 0)
		return -1;
	sandbox_allow_extra_paths(ruleset_fd, config->sandbox_extra_paths, access);
	return 0;
}

/* Applies Landlock. Returns 0 with *abi_r set, 1 with *degraded_r when the kernel cannot give
 * what this process needs, -1 with *error_r on failure. */
static int sandbox_landlock(const struct buzon_config *config, enum sandbox_kind kind, int *abi_r,
			    const char **degraded_r, char **error_r)
{
	int abi = sandbox_landlock_abi();

	*abi_r = 0;
	if (abi < 0 && errno == ENOSYS) {
		*degraded_r = "landlock not supported by this kernel";
		return 1;
	}
	if (abi < 0 && errno == EOPNOTSUPP) {
		*degraded_r = "landlock disabled in this kernel (lsm= boot parameter)";
		return 1;
	}
	if (abi < 0) {
		*error_r = xasprintf("landlock: cannot read the ABI version: %s", strerror(errno));
		return -1;
	}
	if (abi < 2 && (kind == SANDBOX_KIND_POP3 || kind == SANDBOX_KIND_LMTP)) {
		*degraded_r = "landlock ABI 1 cannot allow moving files between directories, which "
			      "Maildir needs";
		return 1;
	}
	struct sandbox_ruleset_attr attr = {.handled_access_fs = sandbox_fs_rights(abi)};
	size_t attr_size = offsetof(struct sandbox_ruleset_attr, handled_access_net);
	if (abi >= 4) {
		/* nothing binds or connects a TCP socket after set-up: no rule, so none may */
		attr.handled_access_net =
		    LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP;
		attr_size = offsetof(struct sandbox_ruleset_attr, scoped);
	}
	if (abi >= 6) {
		/* no signals to processes outside this sandbox (the master, the other children) and
		 * no abstract UNIX sockets outside it */
		attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL;
		attr_size = sizeof(attr);
	}
	int ruleset_fd = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
	if (ruleset_fd < 0) {
		*error_r = xasprintf("landlock: cannot create a ruleset: %s", strerror(errno));
		return -1;
	}
	int ret = sandbox_landlock_rules(config, kind, ruleset_fd, attr.handled_access_fs, error_r);
	/* Landlock demands no_new_privs; identity_drop() set it already */
	if (ret == 0 && (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
			 syscall(SYS_landlock_restrict_self, ruleset_fd, 0) < 0)) {
		*error_r = xasprintf("landlock: cannot restrict the process: %s", strerror(errno));
		ret = -1;
	}
	close(ruleset_fd);
	*abi_r = ret == 0 ? abi : 0;
	return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* seccomp */

struct sandbox_calls {
	const char *const *names;
	size_t count;
};

#define SANDBOX_CALLS(list)                                                                        \
	{                                                                                          \
		list, ARRAY_SIZE(list)                                                             \
	}

/* Every process: memory, futexes, signals, the clock, randomness, log lines, exit. tgkill (for
 * abort()), mmap and mprotect (never executable), clone and ioctl have argument rules in
 * sandbox_seccomp_arg_rules(). */
static const char *const sandbox_calls_common[] = {
    "read",
    "write",
    "sendto", /* log lines on the syslog socket connected before the sandbox (core/log.c) */
    "readv",
    "writev",
    "close",
    "fstat",
    "newfstatat",
    "lseek",
    "brk",
    "munmap",
    "mremap",
    "madvise",
    "futex",
    "getpid",
    "gettid",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "restart_syscall",
    "getrandom",
    "clock_gettime", /* the clock: the vDSO answers, unless it is missing */
    "gettimeofday",
    "time",
    "sysinfo", /* qsort() */
    "exit",
    "exit_group",
};

/* A libevent loop serving network clients: epoll, accepting on the inherited listeners,
 * talking over connected sockets (clients, the auth process, the master). */
static const char *const sandbox_calls_event_loop[] = {
    "epoll_wait", "epoll_pwait", "epoll_ctl", "accept4", "recvfrom", "sendto", "recvmsg", "sendmsg",
};

/* Maildir work: both the POP3 workers and the LMTP process open, list, create, rename and remove
 * files, lock, fsync and update buzon-quota in place. Old and *at names: architectures differ. */
static const char *const sandbox_calls_mailbox[] = {
    "openat", "getdents64", "mkdir", "mkdirat", "rename",    "renameat", "renameat2",
    "unlink", "unlinkat",   "flock", "fsync",	"ftruncate", "pread64",	 "pwrite64",
};

/* Threads started after the sandbox (offload threads, hashing threads) and their wake-up
 * eventfd. */
static const char *const sandbox_calls_threads[] = {"set_robust_list", "rseq", "eventfd2"};

/* POP3 only: socket options of accepted connections, the offload threads' lower priority. */
static const char *const sandbox_calls_pop3[] = {"setsockopt", "setpriority"};

/* LMTP only: hard links for several recipients, the host name in delivered file names. */
static const char *const sandbox_calls_lmtp[] = {"link", "linkat", "uname"};

/* Admin only: the peer's credentials on the control socket (SO_PEERCRED), the HTTP server's
 * shutdown of a finished connection. fcntl() (non-blocking worker channels) has argument rules. */
static const char *const sandbox_calls_admin[] = {"getsockopt", "shutdown"};

/* Auth only: its poll() loop and the passwd-file reloads. */
static const char *const sandbox_calls_auth[] = {"poll",   "ppoll",   "recvfrom",
						 "sendto", "recvmsg", "openat"};

#if SANDBOX_SANITIZER
/* LeakSanitizer's exit-time check (measured): a tracer clone()d without CLONE_THREAD lists
 * /proc/self/task with the raw open and getdents calls, ptrace()s every thread and waits for
 * them; the runtime also sets up alternate signal stacks and asks for its CPU set. */
static const char *const sandbox_calls_sanitizer[] = {
    "clone", "ptrace",	    "wait4",	   "getppid",
    "prctl", "sigaltstack", "sched_yield", "sched_getaffinity",
    "open",  "openat",	    "getdents",	   "getdents64",
};
#endif

static const struct sandbox_calls sandbox_calls_by_kind[][5] = {
    [SANDBOX_KIND_POP3] = {SANDBOX_CALLS(sandbox_calls_common),
			   SANDBOX_CALLS(sandbox_calls_event_loop),
			   SANDBOX_CALLS(sandbox_calls_mailbox),
			   SANDBOX_CALLS(sandbox_calls_threads), SANDBOX_CALLS(sandbox_calls_pop3)},
    [SANDBOX_KIND_LMTP] = {SANDBOX_CALLS(sandbox_calls_common),
			   SANDBOX_CALLS(sandbox_calls_event_loop),
			   SANDBOX_CALLS(sandbox_calls_mailbox), SANDBOX_CALLS(sandbox_calls_lmtp)},
    [SANDBOX_KIND_AUTH] = {SANDBOX_CALLS(sandbox_calls_common),
			   SANDBOX_CALLS(sandbox_calls_threads), SANDBOX_CALLS(sandbox_calls_auth)},
    [SANDBOX_KIND_ADMIN] = {SANDBOX_CALLS(sandbox_calls_common),
			    SANDBOX_CALLS(sandbox_calls_event_loop),
			    SANDBOX_CALLS(sandbox_calls_admin)},
};

static int sandbox_seccomp_allow_list(scmp_filter_ctx ctx, const struct sandbox_calls *calls)
{
	for (size_t i = 0; i < calls->count; i++) {
		int nr = seccomp_syscall_resolve_name(calls->names[i]);
		if (nr == __NR_SCMP_ERROR)
			continue; /* not a system call on this architecture */
		int ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The calls allowed only with some arguments (the unused second datum of each comparison is
 * spelled out for clang's -Wmissing-field-initializers). */
static int sandbox_seccomp_arg_rules(scmp_filter_ctx ctx, enum sandbox_kind kind)
{
	int ret;

	/* abort() signals its own process; nothing else may be signalled */
	ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
			       SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid(), 0));
	/* memory, but never executable: no shellcode made runnable after the fact */
	if (ret == 0)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
				       SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	if (ret == 0)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
				       SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	/* libevent asks how many bytes a socket holds before reading it */
	if (ret == 0 && kind != SANDBOX_KIND_AUTH)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
				       SCMP_A1(SCMP_CMP_EQ, FIONREAD, 0));
	/* admin: worker channels arrive blocking and are made non-blocking (only the file status
	 * flags may be read and set) */
	if (ret == 0 && kind == SANDBOX_KIND_ADMIN)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(fcntl), 1,
				       SCMP_A1(SCMP_CMP_EQ, F_GETFL, 0));
	if (ret == 0 && kind == SANDBOX_KIND_ADMIN)
		ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(fcntl), 1,
				       SCMP_A1(SCMP_CMP_EQ, F_SETFL, 0));
	/* admin: opening a file fails instead of killing (Landlock refuses it too). It never opens
	 * one, but a library that tries on a rare path (glibc's time zone, locale or iconv files)
	 * then gets an error it handles, rather than taking the control socket down. */
	static const char *const opens[] = {"openat", "open"};
	for (size_t i = 0;
	     i < ARRAY_SIZE(opens) && ret == 0 && kind == SANDBOX_KIND_ADMIN && !SANDBOX_SANITIZER;
	     i++) {
		int nr = seccomp_syscall_resolve_name(opens[i]);
		if (nr != __NR_SCMP_ERROR) /* no open() on some architectures */
			ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), nr, 0);
	}
	if (ret == 0 && (kind == SANDBOX_KIND_POP3 || kind == SANDBOX_KIND_AUTH)) {
		/* glibc's pthread_create() tries clone3() first, whose flags sit in memory where
		 * seccomp cannot look: ENOSYS makes it fall back to clone(), whose flags it can */
		ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
		if (ret == 0 && !SANDBOX_SANITIZER) /* threads only, no new processes */
			ret = seccomp_rule_add(
			    ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
			    SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	}
	return ret;
}

static int sandbox_seccomp_rules(scmp_filter_ctx ctx, enum sandbox_kind kind)
{
	int ret = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SANDBOX_SECCOMP_DEFAULT);

	/* every thread of the process, also one a library started behind our back */
	if (ret == 0)
		ret = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	for (size_t i = 0; ret == 0 && i < ARRAY_SIZE(sandbox_calls_by_kind[kind]); i++) {
		if (sandbox_calls_by_kind[kind][i].names != NULL)
			ret = sandbox_seccomp_allow_list(ctx, &sandbox_calls_by_kind[kind][i]);
	}
#if SANDBOX_SANITIZER
	if (ret == 0)
		ret = sandbox_seccomp_allow_list(
		    ctx, &(struct sandbox_calls)SANDBOX_CALLS(sandbox_calls_sanitizer));
#endif
	if (ret == 0)
		ret = sandbox_seccomp_arg_rules(ctx, kind);
	return ret;
}

/* Applies seccomp. Returns 0, 1 with *degraded_r when this kernel or environment cannot have it,
 * -1 with *error_r on failure. */
static int sandbox_seccomp(enum sandbox_kind kind, const char **degraded_r, char **error_r)
{
	if (prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0 && errno == EINVAL) {
		*degraded_r = "seccomp not supported by this kernel";
		return 1;
	}
	scmp_filter_ctx ctx = seccomp_init(SANDBOX_SECCOMP_DEFAULT);
	if (ctx == NULL) {
		*error_r = xstrdup("seccomp: cannot create a filter");
		return -1;
	}
	int ret = sandbox_seccomp_rules(ctx, kind);
	if (ret == 0)
		ret = seccomp_load(ctx);
	seccomp_release(ctx);
	if (ret < 0) {
		*error_r = xasprintf("seccomp: cannot load the filter: %s", strerror(-ret));
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Test hook */

static void sandbox_probe_open(const char *process, const char *access, const char *path, int flags)
{
	/* O_NONBLOCK: a FIFO must not hang the process; nothing is ever read or written */
	int fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	int err = errno;

	if (fd >= 0) {
		close(fd);
		log_info("sandbox_probe", "process=%s access=%s path=%s result=allowed", process,
			 access, log_quote(path));
	} else {
		log_info("sandbox_probe", "process=%s access=%s path=%s result=denied errno=%s",
			 process, access, log_quote(path), strerrorname_np(err));
	}
}

/* See BUZON_SANDBOX_PROBE in sandbox.h. */
static void sandbox_probe(const char *process)
{
	const char *paths = getenv("BUZON_SANDBOX_PROBE");
	const char *syscall_kind = getenv("BUZON_SANDBOX_PROBE_SYSCALL");

	if (paths != NULL) {
		char *copy = xstrdup(paths), *saveptr = NULL;
		for (char *path = strtok_r(copy, ":", &saveptr); path != NULL;
		     path = strtok_r(NULL, ":", &saveptr)) {
			sandbox_probe_open(process, "read", path, O_RDONLY);
			sandbox_probe_open(process, "write", path, O_WRONLY | O_APPEND);
		}
		free(copy);
	}
	if (syscall_kind != NULL && strcmp(syscall_kind, process) == 0) {
		log_info("sandbox_probe", "process=%s syscall=socket", process);
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0)
			close(fd);
		log_info("sandbox_probe", "process=%s syscall=socket result=allowed", process);
	}
}

/* ------------------------------------------------------------------------------------------ */

int sandbox_apply(const struct buzon_config *config, enum sandbox_kind kind, char **error_r)
{
	const char *process = sandbox_kind_names[kind];
	const char *degraded = NULL;
	int landlock_abi = 0;

	if (!config->sandbox) {
		log_info("sandbox_off", "process=%s reason=%s", process,
			 log_quote("[server] sandbox = no"));
		sandbox_probe(process);
		return 0;
	}
	if (RUNNING_ON_VALGRIND) {
		log_warn("sandbox_degraded", "process=%s reason=%s", process,
			 log_quote("running under valgrind, which does not know the landlock calls "
				   "and makes system calls of its own"));
		log_info("sandbox", "process=%s landlock_abi=0 seccomp=no", process);
		sandbox_probe(process);
		return 0;
	}
	/* OpenSSL reads its configuration file the first time it is used: that must happen while
	 * the file can still be opened */
	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);

	int ret = sandbox_landlock(config, kind, &landlock_abi, &degraded, error_r);
	if (ret < 0)
		return -1;
	if (ret > 0)
		log_warn("sandbox_degraded", "process=%s reason=%s", process, log_quote(degraded));
	ret = sandbox_seccomp(kind, &degraded, error_r);
	if (ret < 0)
		return -1;
	if (ret > 0)
		log_warn("sandbox_degraded", "process=%s reason=%s", process, log_quote(degraded));
	log_info("sandbox", "process=%s landlock_abi=%d seccomp=%s", process, landlock_abi,
		 ret == 0 ? "yes" : "no");
	sandbox_probe(process);
	return 0;
}

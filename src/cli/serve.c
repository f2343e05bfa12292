/* `buzon serve`: the master process. It reads the config, binds every listener (one SO_REUSEPORT
 * socket per worker and address), starts the auth process and the POP3 workers, drops their
 * privileges, restarts a child that dies, and on SIGTERM/SIGINT stops them all. The master keeps
 * no client state, so it stays small and simple; it runs no event loop (a forked child must not
 * inherit one). */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth_server.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "net/ban_table.h"
#include "net/ip_limit.h"
#include "net/netlist.h"
#include "net/listener.h"
#include "lmtp/lmtp.h"
#include "net/tls.h"
#include "pop3/worker.h"

/* How long children get to exit after SIGTERM before they are killed. */
#define MASTER_STOP_TIMEOUT_MS 10000
/* A child that dies sooner than this after starting is restarted only after a pause, so a crash
 * at start-up cannot turn into a fork storm. */
#define MASTER_RESPAWN_PAUSE_SECS 1

/* Who a child runs as; unused (no change) when the server was started by an ordinary user. */
struct run_identity {
	bool change;
	char *name;
	uid_t uid;
	gid_t gid;
};

struct master {
	struct buzon_config *config;
	struct run_identity mail_identity, auth_identity;
	unsigned int worker_count;
	size_t listen_per_worker; /* [pop3] listen addresses, then listen_tls addresses */
	int *listen_fds;	  /* worker_count rows of listen_per_worker */
	struct tls_material tls;  /* certificate and key, read before dropping privileges */
	bool tls_loaded;
	pid_t *worker_pids;
	int *worker_ctl_fds;	 /* master's end of each worker's control channel (TLS reloads) */
	int64_t *worker_started; /* monotonic ms (master_now_ms) */
	pid_t auth_pid;
	/* the LMTP process, when [lmtp] listen is set: its sockets (UNIX then TCP), pid, start */
	int *lmtp_fds;
	size_t lmtp_fd_count;
	pid_t lmtp_pid;
	int64_t lmtp_started;
	int auth_control_fd;
	int signal_fd;
	struct ip_limit *ip_limit;
	struct ip_limit *session_limit;
	struct ban_table *bans; /* written by the auth process, read by the workers */
	bool stopping;
	bool child_failed;
};

static int64_t master_now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static int identity_lookup(const char *name, struct run_identity *id, char **error_r)
{
	struct passwd *pw = getpwnam(name);

	if (pw == NULL) {
		*error_r = xasprintf("user '%s' does not exist", name);
		return -1;
	}
	if (pw->pw_uid == 0) {
		*error_r =
		    xasprintf("user '%s' is root; buzon never runs its children as root", name);
		return -1;
	}
	id->change = true;
	id->name = xstrdup(name);
	id->uid = pw->pw_uid;
	id->gid = pw->pw_gid;
	return 0;
}

/* Started as root: children must run as [server] user (and [auth] user, default the same). */
static int master_identities(struct master *master, char **error_r)
{
	const struct buzon_config *config = master->config;

	if (geteuid() != 0)
		return 0;
	if (config->server_user == NULL) {
		*error_r = xasprintf("%s: started as root, but [server] user is not set; set it to "
				     "the owner of the mailboxes (e.g. vmail)",
				     config->path);
		return -1;
	}
	if (identity_lookup(config->server_user, &master->mail_identity, error_r) < 0)
		return -1;
	return identity_lookup(config->auth_user != NULL ? config->auth_user : config->server_user,
			       &master->auth_identity, error_r);
}

static void identity_drop(const struct run_identity *id)
{
	if (id->change) {
		if (initgroups(id->name, id->gid) < 0 || setgid(id->gid) < 0 || setuid(id->uid) < 0)
			fatal("cannot drop privileges to %s: %s", id->name, strerror(errno));
		if (setuid(0) == 0)
			fatal("privileges were not dropped");
	}
	/* nothing a child runs may gain privileges back (setuid binaries, file capabilities) */
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

static void master_free(struct master *master)
{
	free(master->listen_fds);
	tls_material_clear(&master->tls);
	free(master->worker_pids);
	free(master->worker_ctl_fds);
	free(master->lmtp_fds);
	free(master->worker_started);
	free(master->mail_identity.name);
	free(master->auth_identity.name);
	ip_limit_destroy(&master->ip_limit);
	ip_limit_destroy(&master->session_limit);
	ban_table_destroy(&master->bans);
	config_free(&master->config);
}

/* What a freshly forked child does first: forget the master's signal handling. SIGTERM and SIGINT
 * stay blocked (pending, not lost) until the child has its own handlers in place, so a stop that
 * arrives while a child starts cannot kill it half-way. */
static void child_reset_signals(struct master *master)
{
	sigset_t stop_signals;

	close(master->signal_fd);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigprocmask(SIG_SETMASK, &stop_signals, NULL);
}

/* A child closes the master's ends of every worker's control channel. */
static void master_close_ctl_fds(struct master *master)
{
	for (unsigned int w = 0; w < master->worker_count; w++) {
		if (master->worker_ctl_fds[w] >= 0)
			close(master->worker_ctl_fds[w]);
	}
}

static void master_close_lmtp_fds(struct master *master)
{
	for (size_t i = 0; i < master->lmtp_fd_count; i++)
		close(master->lmtp_fds[i]);
}

static void master_close_listeners(struct master *master, int keep_row)
{
	size_t per = master->listen_per_worker;

	for (unsigned int w = 0; w < master->worker_count; w++) {
		if ((int)w == keep_row)
			continue;
		for (size_t i = 0; i < per; i++)
			close(master->listen_fds[w * per + i]);
	}
}

static int master_spawn_auth(struct master *master)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(pair[0]);
		close(pair[1]);
		return -1;
	}
	if (pid == 0) {
		child_reset_signals(master);
		close(pair[0]);
		master_close_listeners(master, -1);
		master_close_ctl_fds(master);
		master_close_lmtp_fds(master);
		log_set_role("auth");
		identity_drop(&master->auth_identity);
		/* same-user workers must not be able to ptrace this process to read hashes */
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		prctl(PR_SET_NAME, "buzon-auth", 0, 0, 0);
		int status = auth_server_main(master->config, pair[1], master->bans);
		close(pair[1]);
		master_free(master);
		exit(status);
	}
	close(pair[1]);
	if (master->auth_control_fd >= 0)
		close(master->auth_control_fd);
	master->auth_control_fd = pair[0];
	master->auth_pid = pid;
	log_info("auth_spawned", "pid=%d", (int)pid);
	return 0;
}

static int master_spawn_worker(struct master *master, unsigned int index)
{
	int pair[2], ctl[2];
	size_t per = master->listen_per_worker;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) < 0) {
		close(pair[0]);
		close(pair[1]);
		return -1;
	}
	if (auth_server_send_fd(master->auth_control_fd, pair[0]) < 0) {
		log_error("auth_handoff_failed", "worker=%u error=%s", index,
			  log_quote(strerror(errno)));
	}
	close(pair[0]);
	pid_t pid = fork();
	if (pid < 0) {
		close(pair[1]);
		close(ctl[0]);
		close(ctl[1]);
		return -1;
	}
	if (pid == 0) {
		char role[32];
		child_reset_signals(master);
		close(master->auth_control_fd);
		close(ctl[0]);
		master_close_ctl_fds(master);
		master_close_lmtp_fds(master);
		master_close_listeners(master, (int)index);
		snprintf(role, sizeof(role), "pop3/%u", index);
		log_set_role(role);
		identity_drop(&master->mail_identity);
		struct pop3_worker_setup setup = {
		    .index = index,
		    .listen_fds = &master->listen_fds[index * per],
		    .listen_count = per,
		    .auth_fd = pair[1],
		    .ctl_fd = ctl[1],
		    .ip_limit = master->ip_limit,
		    .session_limit = master->session_limit,
		    .bans = master->bans,
		    .tls = master->tls_loaded ? &master->tls : NULL,
		};
		prctl(PR_SET_NAME, "buzon-pop3", 0, 0, 0);
		int status = pop3_worker_main(master->config, &setup);
		master_free(master);
		exit(status);
	}
	close(pair[1]);
	close(ctl[1]);
	if (master->worker_ctl_fds[index] >= 0)
		close(master->worker_ctl_fds[index]);
	master->worker_ctl_fds[index] = ctl[0];
	master->worker_pids[index] = pid;
	master->worker_started[index] = master_now_ms();
	log_info("worker_spawned", "worker=%u pid=%d", index, (int)pid);
	return 0;
}

/* The i-th listening address of a worker: the plain ones, then the implicit-TLS ones. */
static const struct config_listen *master_listen_at(const struct buzon_config *config, size_t i)
{
	return i < config->listen_count ? &config->listens[i]
					: &config->listens_tls[i - config->listen_count];
}

static int master_open_listeners(struct master *master, char **error_r)
{
	const struct buzon_config *config = master->config;
	size_t per = config->listen_count + config->listen_tls_count;

	for (size_t i = 0; i < per; i++) {
		if (listener_probe(master_listen_at(config, i), error_r) < 0)
			return -1;
	}
	master->listen_per_worker = per;
	master->listen_fds = xcalloc(master->worker_count * per, sizeof(int));
	for (unsigned int w = 0; w < master->worker_count; w++) {
		for (size_t i = 0; i < per; i++) {
			int fd = listener_open(master_listen_at(config, i), error_r);
			if (fd < 0)
				return -1;
			master->listen_fds[w * per + i] = fd;
		}
	}
	return 0;
}

/* Checks the login-penalty settings now, so that a bad value stops the start with a message
 * instead of killing the auth process later. */
static int master_check_penalties(struct master *master, char **error_r)
{
	struct penalty_config pc;
	struct net_list *trusted = NULL;
	int ret = auth_penalty_config(master->config, &pc, &trusted, error_r);

	net_list_free(&trusted);
	if (ret < 0) {
		char *with_file = xasprintf("%s: [auth] %s", master->config->path, *error_r);
		free(*error_r);
		*error_r = with_file;
	}
	return ret;
}

/* Reads the certificate and key (root may be the only one who can) and checks them by building a
 * context, so that a bad certificate stops the start with a clear message. */
static int master_load_tls(struct master *master, char **error_r)
{
	if (!tls_configured(master->config))
		return 0;
	if (tls_material_load(master->config, &master->tls, error_r) < 0)
		return -1;
	tls_material_new_ticket_keys(&master->tls);
	master->tls_loaded = true;
	SSL_CTX *ctx = tls_context_new(master->config, &master->tls, error_r);
	if (ctx == NULL)
		return -1;
	SSL_CTX_free(ctx);
	return 0;
}

/* A UNIX listening socket for LMTP: a stale socket file from an earlier run is replaced; mode
 * 0666 so that the MTA's delivery agent (another user) can connect, as Dovecot does. */
static int master_open_unix(const char *path, char **error_r)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct stat st;
	char *dir = xstrdup(path);

	*strrchr(dir, '/') = '\0';
	if (dir[0] != '\0' && mkdir_parents(dir, 0755) < 0) {
		*error_r = xasprintf("cannot create %s: %s", dir, strerror(errno));
		free(dir);
		return -1;
	}
	free(dir);
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    chmod(path, 0666) < 0 || listen(fd, 1024) < 0) {
		*error_r = xasprintf("cannot listen on unix:%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int master_open_lmtp(struct master *master, char **error_r)
{
	const struct buzon_config *config = master->config;
	size_t count = config->lmtp_unix_count + config->lmtp_listen_count;

	master->lmtp_fds = xcalloc(count, sizeof(int));
	for (size_t i = 0; i < config->lmtp_unix_count; i++) {
		int fd = master_open_unix(config->lmtp_unix_paths[i], error_r);
		if (fd < 0)
			return -1;
		master->lmtp_fds[master->lmtp_fd_count++] = fd;
	}
	for (size_t i = 0; i < config->lmtp_listen_count; i++) {
		if (listener_probe(&config->lmtp_listens[i], error_r) < 0)
			return -1;
		int fd = listener_open(&config->lmtp_listens[i], error_r);
		if (fd < 0)
			return -1;
		master->lmtp_fds[master->lmtp_fd_count++] = fd;
	}
	return 0;
}

static int master_spawn_lmtp(struct master *master)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return -1;
	if (auth_server_send_fd(master->auth_control_fd, pair[0]) < 0)
		log_error("auth_handoff_failed", "child=lmtp error=%s", log_quote(strerror(errno)));
	close(pair[0]);
	pid_t pid = fork();
	if (pid < 0) {
		close(pair[1]);
		return -1;
	}
	if (pid == 0) {
		child_reset_signals(master);
		close(master->auth_control_fd);
		master_close_listeners(master, -1);
		master_close_ctl_fds(master);
		log_set_role("lmtp");
		identity_drop(&master->mail_identity);
		struct lmtp_worker_setup setup = {.listen_fds = master->lmtp_fds,
						  .listen_count = master->lmtp_fd_count,
						  .auth_fd = pair[1]};
		prctl(PR_SET_NAME, "buzon-lmtp", 0, 0, 0);
		int status = lmtp_worker_main(master->config, &setup);
		master_free(master);
		exit(status);
	}
	close(pair[1]);
	master->lmtp_pid = pid;
	master->lmtp_started = master_now_ms();
	log_info("lmtp_spawned", "pid=%d", (int)pid);
	return 0;
}

static void master_signal_workers(struct master *master, int sig)
{
	for (unsigned int w = 0; w < master->worker_count; w++) {
		if (master->worker_pids[w] > 0)
			kill(master->worker_pids[w], sig);
	}
	if (master->lmtp_pid > 0)
		kill(master->lmtp_pid, sig);
}

static void master_signal_children(struct master *master, int sig)
{
	master_signal_workers(master, sig);
	if (master->auth_pid > 0)
		kill(master->auth_pid, sig);
}

/* The auth process stops when its control channel closes: it ignores SIGTERM, so that a stop
 * signal sent to the whole process group (systemd does that) cannot take it away while workers
 * still finish their sessions. */
static void master_stop_auth(struct master *master)
{
	if (master->auth_control_fd >= 0) {
		close(master->auth_control_fd);
		master->auth_control_fd = -1;
	}
}

static bool master_has_workers(const struct master *master)
{
	for (unsigned int w = 0; w < master->worker_count; w++) {
		if (master->worker_pids[w] > 0)
			return true;
	}
	return master->lmtp_pid > 0;
}

static bool master_has_children(const struct master *master)
{
	return master_has_workers(master) || master->auth_pid > 0;
}

static void master_log_exit(const char *what, pid_t pid, int status, bool expected)
{
	if (WIFEXITED(status))
		log_event(expected && WEXITSTATUS(status) == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_ERROR,
			  "child_exited", "child=%s pid=%d status=%d", what, (int)pid,
			  WEXITSTATUS(status));
	else if (WTERMSIG(status) == SIGSYS)
		/* the child's seccomp filter (core/sandbox.c) met a call it does not allow; the
		 * kernel's audit log names the call (type=1326 or SECCOMP, syscall=N) */
		log_error("child_killed", "child=%s pid=%d signal=%d reason=%s", what, (int)pid,
			  WTERMSIG(status),
			  log_quote("killed by SIGSYS (seccomp: forbidden system call)"));
	else
		log_error("child_killed", "child=%s pid=%d signal=%d", what, (int)pid,
			  WTERMSIG(status));
}

/* Whole seconds would let a child started at x.996 and dead at x+1.000 count as a second old. */
static void master_respawn_pause(int64_t started_ms)
{
	if (master_now_ms() - started_ms < MASTER_RESPAWN_PAUSE_SECS * 1000)
		sleep(MASTER_RESPAWN_PAUSE_SECS);
}

/* Reaps every exited child; restarts it unless the server is stopping. */
static void master_reap(struct master *master)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (!clean || !master->stopping)
			master->child_failed = true;
		if (pid == master->auth_pid) {
			master_log_exit("auth", pid, status, master->stopping);
			master->auth_pid = 0;
			if (master->stopping)
				continue;
			/* workers hold connections to the dead auth process: restart them too */
			master_respawn_pause(0);
			if (master_spawn_auth(master) < 0)
				fatal("cannot restart the auth process: %s", strerror(errno));
			master_signal_workers(master, SIGTERM);
			continue;
		}
		if (pid == master->lmtp_pid) {
			master_log_exit("lmtp", pid, status, master->stopping);
			master->lmtp_pid = 0;
			if (master->stopping) {
				if (!master_has_workers(master))
					master_stop_auth(master);
				continue;
			}
			master_respawn_pause(master->lmtp_started);
			if (master_spawn_lmtp(master) < 0)
				log_error("lmtp_respawn_failed", "error=%s",
					  log_quote(strerror(errno)));
			continue;
		}
		for (unsigned int w = 0; w < master->worker_count; w++) {
			if (master->worker_pids[w] != pid)
				continue;
			master_log_exit("pop3", pid, status, master->stopping);
			master->worker_pids[w] = 0;
			if (master->stopping) {
				if (!master_has_workers(master))
					master_stop_auth(master);
				break;
			}
			master_respawn_pause(master->worker_started[w]);
			if (master_spawn_worker(master, w) < 0)
				log_error("worker_respawn_failed", "worker=%u error=%s", w,
					  log_quote(strerror(errno)));
			break;
		}
	}
}

static void master_begin_stop(struct master *master, int sig)
{
	if (master->stopping)
		return;
	master->stopping = true;
	log_info("stopping", "signal=%d", sig);
	/* workers first: the auth process stays until no session can ask it anything */
	master_signal_workers(master, SIGTERM);
	if (!master_has_workers(master))
		master_stop_auth(master);
}

/* SIGHUP: re-reads the certificate and key and hands them to the workers, which use them for new
 * connections; sessions already open keep theirs. A bad new certificate keeps the old one. */
static void master_reload_tls(struct master *master)
{
	struct tls_material fresh;
	char *error = NULL;

	if (!master->tls_loaded) {
		log_info("reload", "tls=%s", "not-configured");
		return;
	}
	if (tls_material_load(master->config, &fresh, &error) < 0) {
		log_error("tls_reload_failed", "error=%s keeping=old", log_quote(error));
		free(error);
		return;
	}
	SSL_CTX *check = tls_context_new(master->config, &fresh, &error);
	if (check == NULL) {
		log_error("tls_reload_failed", "error=%s keeping=old", log_quote(error));
		free(error);
		tls_material_clear(&fresh);
		return;
	}
	SSL_CTX_free(check);
	/* the ticket keys stay: tickets issued before the reload still resume */
	memcpy(fresh.ticket_keys, master->tls.ticket_keys, sizeof(fresh.ticket_keys));
	fresh.has_ticket_keys = master->tls.has_ticket_keys;
	tls_material_clear(&master->tls);
	master->tls = fresh;
	size_t len;
	unsigned char *packed = tls_material_pack(&master->tls, &len);
	for (unsigned int w = 0; w < master->worker_count; w++) {
		if (master->worker_pids[w] > 0 &&
		    write_full(master->worker_ctl_fds[w], packed, len) < 0)
			log_error("tls_reload_send_failed", "worker=%u error=%s", w,
				  log_quote(strerror(errno)));
	}
	sodium_memzero(packed, len);
	free(packed);
	log_info("tls_reloaded", "workers=%u", master->worker_count);
}

static int master_loop(struct master *master)
{
	struct timespec stop_started = {0};

	while (!master->stopping || master_has_children(master)) {
		struct pollfd pfd = {.fd = master->signal_fd, .events = POLLIN};
		int timeout = master->stopping ? 100 : -1;
		if (poll(&pfd, 1, timeout) < 0 && errno != EINTR)
			fatal("poll failed: %s", strerror(errno));
		if (master->stopping) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			long elapsed = (now.tv_sec - stop_started.tv_sec) * 1000 +
				       (now.tv_nsec - stop_started.tv_nsec) / 1000000;
			if (elapsed > MASTER_STOP_TIMEOUT_MS) {
				log_error("stop_timeout", "action=%s", "SIGKILL");
				master_signal_children(master, SIGKILL);
			}
		}
		if (!(pfd.revents & POLLIN)) {
			master_reap(master);
			continue;
		}
		struct signalfd_siginfo info;
		if (read(master->signal_fd, &info, sizeof(info)) != sizeof(info))
			continue;
		switch (info.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			clock_gettime(CLOCK_MONOTONIC, &stop_started);
			master_begin_stop(master, (int)info.ssi_signo);
			break;
		case SIGCHLD:
			master_reap(master);
			break;
		case SIGHUP:
			master_reload_tls(master);
			break;
		}
	}
	log_info("stopped", "%s", "");
	return master->child_failed ? 1 : 0;
}

/* Descriptors a worker needs besides its sessions: listeners, the auth and control sockets, the
 * offload eventfd, logs, and a message file or directory being read. */
#define MASTER_WORKER_SPARE_FDS 64

/* Raises the file limit to the hard limit, then warns if a worker cannot hold [pop3]
 * max_connections logged-in sessions under it (two descriptors each: the socket and the maildrop
 * lock): past that, accepts fail with EMFILE and are retried, which an admin should know. */
static void master_raise_file_limit(const struct buzon_config *config)
{
	struct rlimit limit;

	if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
		return;
	if (limit.rlim_cur < limit.rlim_max) {
		limit.rlim_cur = limit.rlim_max;
		setrlimit(RLIMIT_NOFILE, &limit);
	}
	if (limit.rlim_cur == RLIM_INFINITY)
		return;
	rlim_t need = (rlim_t)config->max_connections * 2 + MASTER_WORKER_SPARE_FDS;
	if (limit.rlim_cur < need)
		log_warn("file_limit_low",
			 "limit=%llu sessions_per_worker=%llu max_connections=%u "
			 "hint=\"raise [server] workers or the file limit (LimitNOFILE)\"",
			 (unsigned long long)limit.rlim_cur,
			 (unsigned long long)(limit.rlim_cur > MASTER_WORKER_SPARE_FDS
						  ? (limit.rlim_cur - MASTER_WORKER_SPARE_FDS) / 2
						  : 0),
			 config->max_connections);
}

static int master_start(struct master *master)
{
	char *error = NULL;
	sigset_t mask;

	if (master_identities(master, &error) < 0 || master_check_penalties(master, &error) < 0 ||
	    master_load_tls(master, &error) < 0 || master_open_listeners(master, &error) < 0 ||
	    master_open_lmtp(master, &error) < 0) {
		fprintf(stderr, "buzon: %s\n", error);
		log_error("start_failed", "error=%s", log_quote(error));
		free(error);
		return 1;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	master->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (master->signal_fd < 0)
		fatal("signalfd failed: %s", strerror(errno));
	master->ip_limit = ip_limit_create();
	master->session_limit = ip_limit_create();
	master->bans = ban_table_create();
	if (master_spawn_auth(master) < 0)
		fatal("cannot start the auth process: %s", strerror(errno));
	for (unsigned int w = 0; w < master->worker_count; w++) {
		if (master_spawn_worker(master, w) < 0)
			fatal("cannot start worker %u: %s", w, strerror(errno));
	}
	if (master->lmtp_fd_count > 0 && master_spawn_lmtp(master) < 0)
		fatal("cannot start the LMTP process: %s", strerror(errno));
	for (size_t i = 0; i < master->listen_per_worker; i++)
		log_info("listening", "address=%s tls=%s workers=%u",
			 master_listen_at(master->config, i)->text,
			 i >= master->config->listen_count ? "implicit" : "no",
			 master->worker_count);
	/* The master keeps its copies of the listening sockets: a restarted worker inherits the
	 * same sockets, and connections that arrive meanwhile wait in their backlog. */
	/* a worker that exits while the master writes to it must not kill the master */
	signal(SIGPIPE, SIG_IGN);
	int status = master_loop(master);
	master_close_listeners(master, -1);
	master_close_ctl_fds(master);
	close(master->signal_fd);
	master_stop_auth(master);
	return status;
}

static void serve_usage(FILE *out)
{
	fprintf(out,
		"usage: buzon serve [-c FILE]\n"
		"Runs the POP3 server in the foreground; logs go to stderr.\n"
		"  -c, --config FILE   configuration file (default %s)\n",
		CLI_DEFAULT_CONFIG);
}

int cli_serve_main(int argc, char **argv)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'},
						{"help", no_argument, NULL, 'h'},
						{NULL, 0, NULL, 0}};
	const char *config_path = CLI_DEFAULT_CONFIG;
	struct master master = {.auth_control_fd = -1, .signal_fd = -1};
	char *error = NULL;
	int opt;

	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'h':
			serve_usage(stdout);
			return 0;
		default:
			serve_usage(stderr);
			return 64;
		}
	}
	if (optind != argc) {
		serve_usage(stderr);
		return 64;
	}
	master.config = config_load(config_path, &error);
	if (master.config == NULL) {
		fprintf(stderr, "buzon: %s\n", error);
		free(error);
		return 78; /* EX_CONFIG */
	}
	log_init("master", master.config->log_level);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	master.worker_count = master.config->workers != 0 ? master.config->workers
							  : (unsigned int)(cores > 0 ? cores : 1);
	master.worker_pids = xcalloc(master.worker_count, sizeof(pid_t));
	master.worker_started = xcalloc(master.worker_count, sizeof(*master.worker_started));
	master.worker_ctl_fds = xcalloc(master.worker_count, sizeof(int));
	for (unsigned int w = 0; w < master.worker_count; w++)
		master.worker_ctl_fds[w] = -1;
	master_raise_file_limit(master.config);
	log_info("starting", "version=%s config=%s workers=%u", BUZON_VERSION,
		 log_quote(config_path), master.worker_count);
	int status = master_start(&master);
	master_free(&master);
	return status;
}

int cli_check_config_main(int argc, char **argv)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'},
						{NULL, 0, NULL, 0}};
	const char *config_path = CLI_DEFAULT_CONFIG;
	char *error = NULL;
	int opt;

	while ((opt = getopt_long(argc, argv, "c:", options, NULL)) != -1) {
		if (opt != 'c') {
			fprintf(stderr, "usage: buzon check-config [-c FILE]\n");
			return 64;
		}
		config_path = optarg;
	}
	struct buzon_config *config = config_load(config_path, &error);
	if (config == NULL) {
		fprintf(stderr, "buzon: %s\n", error);
		free(error);
		return 78;
	}
	config_print(config, stdout);
	config_free(&config);
	return 0;
}

/* `buzon serve`: the master process. It reads the config, binds every listener (one SO_REUSEPORT
 * socket per worker and address), starts the auth process, the POP3 workers, the LMTP process and
 * the admin process, drops their privileges and restarts a child that dies. SIGHUP (or `buzon
 * reload`) starts a new generation of children with the re-read config and retires the old one;
 * SIGTERM/SIGINT lets sessions drain, then stops everything. The master keeps no client state and
 * parses nothing from the network, so it stays small and simple; it runs no event loop (a forked
 * child must not inherit one). */
#include <errno.h>
#include <fcntl.h>
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

#include "admin/admin.h"
#include "auth/auth_server.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/systemd_notify.h"
#include "core/util.h"
#include "net/ban_table.h"
#include "net/ip_limit.h"
#include "net/netlist.h"
#include "net/listener.h"
#include "net/systemd_listen.h"
#include "lmtp/lmtp.h"
#include "net/tls.h"
#include "pop3/takeover_table.h"
#include "pop3/worker.h"

/* After the drain time, children get this much longer to exit before they are killed. */
#define MASTER_STOP_GRACE_MS 10000
/* A child that dies sooner than this after starting is restarted only after a pause, so a crash
 * at start-up cannot turn into a fork storm. */
#define MASTER_RESPAWN_PAUSE_SECS 1
/* Processes that may write metrics at once: the current generation and the retiring ones of a few
 * reloads in a row. A child that finds no free slot runs without metrics (and says so). */
#define MASTER_METRICS_SLOTS 256

/* Who a child runs as; unused (no change) when the server was started by an ordinary user. */
struct run_identity {
	bool change;
	char *name;
	uid_t uid;
	gid_t gid;
};

enum master_role { MASTER_ROLE_AUTH, MASTER_ROLE_POP3, MASTER_ROLE_LMTP, MASTER_ROLE_ADMIN };

static const char *const master_role_names[] = {"auth", "pop3", "lmtp", "admin"};

/* A running child. A reload starts a new generation of children with the new configuration and
 * retires the old one: retiring children take no new connections, finish their sessions and exit,
 * and are not restarted. */
struct master_child {
	enum master_role role;
	pid_t pid;
	unsigned int index; /* POP3 worker number */
	unsigned int generation;
	int64_t started_ms; /* monotonic_ms() */
	/* the master's end of a channel: AUTH its control channel (closing it stops the auth
	 * process), POP3 the admin process's end of the worker's admin channel (kept so that a
	 * restarted admin process gets it again), ADMIN the request channel; else -1 */
	int fd;
	int metrics_slot;
	bool retiring;
};

/* What a listening socket is for. POP3 sockets are opened once per worker (SO_REUSEPORT, so the
 * kernel spreads connections over the workers); the others once. */
enum master_listen_kind {
	MASTER_LISTEN_POP3,
	MASTER_LISTEN_POP3_TLS,
	MASTER_LISTEN_POP3_PROXY,
	MASTER_LISTEN_POP3_TLS_PROXY,
	MASTER_LISTEN_LMTP_UNIX,
	MASTER_LISTEN_LMTP,
	MASTER_LISTEN_METRICS,
};

struct master_listen {
	enum master_listen_kind kind;
	unsigned int row; /* POP3 kinds: the worker that accepts on it */
	struct config_listen where; /* TCP kinds; where.text is the UNIX path for LMTP_UNIX */
	int fd;
	bool from_systemd; /* passed by socket activation: one socket that every worker shares */
};

struct master_listens {
	struct master_listen *items;
	size_t count;
};

struct master {
	struct buzon_config *config;
	struct run_identity mail_identity, auth_identity;
	unsigned int worker_count;
	unsigned int generation; /* 0 at start, one more per reload or auth restart */
	struct master_listens listens;
	struct tls_material tls; /* certificate and key, read before dropping privileges */
	bool tls_loaded;
	struct master_child *children;
	size_t child_count;
	int control_fd; /* the listening control socket, handed to each admin process */
	int signal_fd;
	struct ip_limit *ip_limit;
	struct ip_limit *session_limit;
	struct ban_table *bans;	  /* written by the auth process, read by the workers */
	struct takeover_table *takeover; /* maildrops held by POP3 sessions, for lock takeovers */
	struct metrics *metrics;  /* every child's counters, read by the admin process */
	bool stopping;
	int64_t stop_deadline_ms; /* past it, children still running are killed */
	bool child_failed;
};

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

/* ---- listening sockets ---- */

static void master_listens_close(struct master_listens *listens)
{
	for (size_t i = 0; i < listens->count; i++) {
		if (listens->items[i].fd >= 0)
			close(listens->items[i].fd);
		free(listens->items[i].where.text);
	}
	free(listens->items);
	listens->items = NULL;
	listens->count = 0;
}

static bool master_listen_same(const struct master_listen *a, const struct master_listen *b)
{
	if (a->kind != b->kind || a->row != b->row)
		return false;
	if (a->kind == MASTER_LISTEN_LMTP_UNIX)
		return strcmp(a->where.text, b->where.text) == 0;
	return a->where.addr_len == b->where.addr_len &&
	       memcmp(&a->where.addr, &b->where.addr, a->where.addr_len) == 0;
}

static bool master_listen_is_pop3(enum master_listen_kind kind)
{
	return kind <= MASTER_LISTEN_POP3_TLS_PROXY;
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

/* The socket systemd passed for item's address (socket activation), or -1. */
static int master_listen_from_systemd(const struct master_listen *item)
{
	if (item->kind != MASTER_LISTEN_LMTP_UNIX)
		return systemd_listen_take((const struct sockaddr *)&item->where.addr,
					   item->where.addr_len);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", item->where.text);
	return systemd_listen_take((const struct sockaddr *)&addr, sizeof(addr));
}

/* Opens the socket for item: a copy of the same socket in reuse (a reload keeps the sockets of
 * addresses that stay, so no connection waiting in a backlog is lost), the one systemd passed, a
 * copy of row 0's when that came from systemd (it has no SO_REUSEPORT to share the port), else
 * a new one. set holds the items opened before this one. */
static int master_listen_open(struct master_listen *item, const struct master_listens *set,
			      const struct master_listens *reuse, char **error_r)
{
	int copy_of = -1;

	for (size_t i = 0; reuse != NULL && i < reuse->count && copy_of < 0; i++) {
		if (reuse->items[i].fd >= 0 && master_listen_same(item, &reuse->items[i])) {
			copy_of = reuse->items[i].fd;
			item->from_systemd = reuse->items[i].from_systemd;
		}
	}
	for (size_t i = 0; i < set->count && copy_of < 0 && item->row > 0; i++) {
		struct master_listen row0 = set->items[i];
		row0.row = item->row;
		if (set->items[i].from_systemd && set->items[i].row == 0 &&
		    master_listen_same(item, &row0)) {
			copy_of = set->items[i].fd;
			item->from_systemd = true;
		}
	}
	if (copy_of >= 0) {
		item->fd = fcntl(copy_of, F_DUPFD_CLOEXEC, 0);
		if (item->fd < 0) {
			*error_r = xasprintf("cannot keep %s: %s", item->where.text, strerror(errno));
			return -1;
		}
		return 0;
	}
	if ((item->fd = master_listen_from_systemd(item)) >= 0) {
		item->from_systemd = true;
		return 0;
	}
	if (item->kind == MASTER_LISTEN_LMTP_UNIX) {
		item->fd = master_open_unix(item->where.text, error_r);
		return item->fd < 0 ? -1 : 0;
	}
	/* probe once per address: a second buzon started by mistake must fail loudly */
	if (item->row == 0 && listener_probe(&item->where, error_r) < 0)
		return -1;
	item->fd = listener_open(&item->where, error_r);
	return item->fd < 0 ? -1 : 0;
}

static int master_listens_add(struct master_listens *listens, enum master_listen_kind kind,
			      unsigned int row, const struct config_listen *where,
			      const char *unix_path, const struct master_listens *reuse,
			      char **error_r)
{
	listens->items = xrealloc(listens->items, (listens->count + 1) * sizeof(*listens->items));
	struct master_listen *item = &listens->items[listens->count++];
	*item = (struct master_listen){.kind = kind, .row = row, .fd = -1};
	if (where != NULL) {
		item->where.addr = where->addr;
		item->where.addr_len = where->addr_len;
		item->where.text = xstrdup(where->text);
	} else {
		item->where.text = xstrdup(unix_path);
	}
	int ret = master_listen_open(item, listens, reuse, error_r);
	if (ret < 0) /* not opened: not in the set either */
		free(listens->items[--listens->count].where.text);
	return ret;
}

/* Opens every socket config asks for, worker_count times for the POP3 addresses, taking the
 * sockets of reuse (the running set, on reload) where the address stays. On error closes what it
 * opened and returns -1 with *error_r. */
static int master_listens_build(const struct buzon_config *config, unsigned int worker_count,
				const struct master_listens *reuse, struct master_listens *out,
				char **error_r)
{
	const struct {
		enum master_listen_kind kind;
		const struct config_listen *list;
		size_t count;
	} pop3[] = {
	    {MASTER_LISTEN_POP3, config->listens, config->listen_count},
	    {MASTER_LISTEN_POP3_TLS, config->listens_tls, config->listen_tls_count},
	    {MASTER_LISTEN_POP3_PROXY, config->listens_proxy, config->listen_proxy_count},
	    {MASTER_LISTEN_POP3_TLS_PROXY, config->listens_tls_proxy,
	     config->listen_tls_proxy_count},
	};
	int ret = 0;

	*out = (struct master_listens){0};
	/* row by row, in the order a worker expects them (worker.h) */
	for (unsigned int row = 0; row < worker_count && ret == 0; row++) {
		for (size_t k = 0; k < ARRAY_SIZE(pop3) && ret == 0; k++) {
			for (size_t i = 0; i < pop3[k].count && ret == 0; i++)
				ret = master_listens_add(out, pop3[k].kind, row, &pop3[k].list[i],
							 NULL, reuse, error_r);
		}
	}
	for (size_t i = 0; i < config->lmtp_unix_count && ret == 0; i++)
		ret = master_listens_add(out, MASTER_LISTEN_LMTP_UNIX, 0, NULL,
					 config->lmtp_unix_paths[i], reuse, error_r);
	for (size_t i = 0; i < config->lmtp_listen_count && ret == 0; i++)
		ret = master_listens_add(out, MASTER_LISTEN_LMTP, 0, &config->lmtp_listens[i], NULL,
					 reuse, error_r);
	for (size_t i = 0; i < config->metrics_listen_count && ret == 0; i++)
		ret = master_listens_add(out, MASTER_LISTEN_METRICS, 0, &config->metrics_listens[i],
					 NULL, reuse, error_r);
	if (ret < 0)
		master_listens_close(out);
	return ret;
}

/* The fds of the sockets for which wanted() holds, in the set's order; *count_r of them. */
static int *master_listens_select(const struct master_listens *listens,
				  bool (*wanted)(const struct master_listen *, unsigned int),
				  unsigned int row, size_t *count_r)
{
	int *fds = xcalloc(listens->count + 1, sizeof(int));
	size_t count = 0;

	for (size_t i = 0; i < listens->count; i++) {
		if (wanted(&listens->items[i], row))
			fds[count++] = listens->items[i].fd;
	}
	*count_r = count;
	return fds;
}

static bool master_listen_for_worker(const struct master_listen *item, unsigned int row)
{
	return master_listen_is_pop3(item->kind) && item->row == row;
}

static bool master_listen_for_lmtp(const struct master_listen *item, unsigned int row)
{
	(void)row;
	return item->kind == MASTER_LISTEN_LMTP_UNIX || item->kind == MASTER_LISTEN_LMTP;
}

static bool master_listen_for_metrics(const struct master_listen *item, unsigned int row)
{
	(void)row;
	return item->kind == MASTER_LISTEN_METRICS;
}

/* ---- children ---- */

static void master_free(struct master *master)
{
	master_listens_close(&master->listens);
	tls_material_clear(&master->tls);
	free(master->children);
	free(master->mail_identity.name);
	free(master->auth_identity.name);
	ip_limit_destroy(&master->ip_limit);
	ip_limit_destroy(&master->session_limit);
	ban_table_destroy(&master->bans);
	takeover_table_destroy(&master->takeover);
	metrics_destroy(&master->metrics);
	config_free(&master->config);
}

static bool fd_in(int fd, const int *keep, size_t keep_count)
{
	for (size_t i = 0; i < keep_count; i++) {
		if (keep[i] == fd)
			return true;
	}
	return false;
}

/* What a freshly forked child does first: close every descriptor of the master's it was not given
 * (other workers' sockets and channels), and forget the master's signal handling. SIGTERM, SIGINT
 * SIGUSR1 and SIGHUP stay blocked (pending, not lost) until the child has its own handlers in place, so a
 * stop that arrives while a child starts cannot kill it half-way. */
static void master_child_begin(struct master *master, const int *keep, size_t keep_count)
{
	sigset_t stop_signals;

	close(master->signal_fd);
	for (size_t i = 0; i < master->listens.count; i++) {
		if (!fd_in(master->listens.items[i].fd, keep, keep_count))
			close(master->listens.items[i].fd);
	}
	for (size_t i = 0; i < master->child_count; i++) {
		if (master->children[i].fd >= 0)
			close(master->children[i].fd);
	}
	if (master->control_fd >= 0 && !fd_in(master->control_fd, keep, keep_count))
		close(master->control_fd);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGUSR1);
	sigaddset(&stop_signals, SIGHUP); /* reloads are the master's business */
	sigprocmask(SIG_SETMASK, &stop_signals, NULL);
}

/* Adds a record for a child about to be forked, with a metrics slot; returns its position. */
static size_t master_child_add(struct master *master, enum master_role role, unsigned int index)
{
	master->children =
	    xrealloc(master->children, (master->child_count + 1) * sizeof(*master->children));
	struct master_child *child = &master->children[master->child_count];
	*child = (struct master_child){
	    .role = role,
	    .index = index,
	    .generation = master->generation,
	    .started_ms = monotonic_ms(),
	    .fd = -1,
	    .metrics_slot = metrics_slot_claim(master->metrics, master_role_names[role]),
	};
	if (child->metrics_slot < 0)
		log_warn("metrics_slots_full", "child=%s", master_role_names[role]);
	return master->child_count++;
}

/* Forgets the record at pos (a child that was not started, or that was reaped). */
static void master_child_remove(struct master *master, size_t pos)
{
	struct master_child *child = &master->children[pos];

	if (child->fd >= 0)
		close(child->fd);
	if (child->metrics_slot >= 0)
		metrics_slot_release(master->metrics, child->metrics_slot);
	master->children[pos] = master->children[--master->child_count];
}

/* The running auth process of the current generation, or NULL. */
static struct master_child *master_current_auth(struct master *master)
{
	for (size_t i = 0; i < master->child_count; i++) {
		struct master_child *child = &master->children[i];
		if (child->role == MASTER_ROLE_AUTH && child->generation == master->generation &&
		    child->fd >= 0)
			return child;
	}
	return NULL;
}

/* The admin process that is not retiring, or NULL. */
static struct master_child *master_current_admin(struct master *master)
{
	for (size_t i = 0; i < master->child_count; i++) {
		struct master_child *child = &master->children[i];
		if (child->role == MASTER_ROLE_ADMIN && !child->retiring && child->fd >= 0)
			return child;
	}
	return NULL;
}

/* A new connection to the current auth process for a worker: the master sends one end to the
 * auth process and returns the other. */
static int master_auth_connection(struct master *master, const char *for_whom)
{
	struct master_child *auth = master_current_auth(master);
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return -1;
	if (auth == NULL || auth_server_send_fd(auth->fd, pair[0]) < 0)
		log_error("auth_handoff_failed", "child=%s error=%s", for_whom,
			  log_quote(auth == NULL ? "no auth process" : strerror(errno)));
	close(pair[0]);
	return pair[1];
}

static void master_child_started(struct master *master, size_t pos, pid_t pid)
{
	struct master_child *child = &master->children[pos];

	child->pid = pid;
	if (child->role == MASTER_ROLE_POP3)
		log_info("worker_spawned", "worker=%u pid=%d generation=%u", child->index, (int)pid,
			 child->generation);
	else
		log_info("child_spawned", "child=%s pid=%d generation=%u",
			 master_role_names[child->role], (int)pid, child->generation);
}

/* Forks the child recorded at pos (master_child_add). In the child returns 0, after the set-up
 * every child shares: the master's descriptors closed except keep (and master_end, the master's
 * end of the child's channel, closed too), the log role and process name set, its metrics slot
 * attached, privileges dropped. In the master returns the pid, or -1 with the record removed. */
static pid_t master_fork(struct master *master, size_t pos, const int *keep, size_t keep_count,
			 int master_end)
{
	const struct master_child *child = &master->children[pos];
	char role[32], name[16];
	pid_t pid = fork();

	if (pid < 0)
		master_child_remove(master, pos);
	if (pid != 0)
		return pid;
	if (master_end >= 0)
		close(master_end);
	master_child_begin(master, keep, keep_count);
	if (child->role == MASTER_ROLE_POP3)
		snprintf(role, sizeof(role), "pop3/%u", child->index);
	else
		snprintf(role, sizeof(role), "%s", master_role_names[child->role]);
	log_set_role(role);
	metrics_attach(master->metrics, child->metrics_slot);
	identity_drop(child->role == MASTER_ROLE_AUTH ? &master->auth_identity
						     : &master->mail_identity);
	snprintf(name, sizeof(name), "buzon-%s", master_role_names[child->role]);
	prctl(PR_SET_NAME, name, 0, 0, 0);
	return 0;
}

/* How a child ends: it frees what it inherited from the master and exits with status. */
static _Noreturn void master_child_exit(struct master *master, int status)
{
	master_free(master);
	exit(status);
}

static int master_spawn_auth(struct master *master)
{
	int pair[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return -1;
	size_t pos = master_child_add(master, MASTER_ROLE_AUTH, 0);
	pid_t pid = master_fork(master, pos, NULL, 0, pair[0]);
	if (pid < 0) {
		close(pair[0]);
		close(pair[1]);
		return -1;
	}
	if (pid == 0) {
		/* same-user workers must not be able to ptrace this process to read hashes */
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		int status = auth_server_main(master->config, pair[1], master->bans);
		close(pair[1]);
		master_child_exit(master, status);
	}
	close(pair[1]);
	master->children[pos].fd = pair[0];
	master_child_started(master, pos, pid);
	return 0;
}

static int master_spawn_worker(struct master *master, unsigned int index)
{
	int admin_pair[2];
	size_t listen_count;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, admin_pair) < 0)
		return -1;
	int auth_fd = master_auth_connection(master, "pop3");
	if (auth_fd < 0) {
		close(admin_pair[0]);
		close(admin_pair[1]);
		return -1;
	}
	int *listen_fds =
	    master_listens_select(&master->listens, master_listen_for_worker, index, &listen_count);
	size_t pos = master_child_add(master, MASTER_ROLE_POP3, index);
	pid_t pid = master_fork(master, pos, listen_fds, listen_count, admin_pair[0]);
	if (pid < 0) {
		close(auth_fd);
		close(admin_pair[0]);
		close(admin_pair[1]);
		free(listen_fds);
		return -1;
	}
	if (pid == 0) {
		struct pop3_worker_setup setup = {
		    .index = index,
		    .listen_fds = listen_fds,
		    .listen_count = listen_count,
		    .auth_fd = auth_fd,
		    .admin_fd = admin_pair[1],
		    .ip_limit = master->ip_limit,
		    .session_limit = master->session_limit,
		    .bans = master->bans,
		    .takeover = master->takeover,
		    .tls = master->tls_loaded ? &master->tls : NULL,
		};
		int status = pop3_worker_main(master->config, &setup);
		free(listen_fds);
		master_child_exit(master, status);
	}
	free(listen_fds);
	close(auth_fd);
	close(admin_pair[1]);
	master->children[pos].fd = admin_pair[0];
	master_child_started(master, pos, pid);
	struct master_child *admin = master_current_admin(master);
	if (admin != NULL &&
	    admin_send_worker_channel(admin->fd, index, master->generation, pid, admin_pair[0]) < 0)
		log_error("admin_handoff_failed", "worker=%u error=%s", index,
			  log_quote(strerror(errno)));
	return 0;
}

static int master_spawn_lmtp(struct master *master)
{
	size_t listen_count;
	int *listen_fds =
	    master_listens_select(&master->listens, master_listen_for_lmtp, 0, &listen_count);

	if (listen_count == 0) {
		free(listen_fds);
		return 0;
	}
	int auth_fd = master_auth_connection(master, "lmtp");
	if (auth_fd < 0) {
		free(listen_fds);
		return -1;
	}
	size_t pos = master_child_add(master, MASTER_ROLE_LMTP, 0);
	pid_t pid = master_fork(master, pos, listen_fds, listen_count, -1);
	if (pid < 0) {
		close(auth_fd);
		free(listen_fds);
		return -1;
	}
	if (pid == 0) {
		struct lmtp_worker_setup setup = {
		    .listen_fds = listen_fds, .listen_count = listen_count, .auth_fd = auth_fd};
		int status = lmtp_worker_main(master->config, &setup);
		free(listen_fds);
		master_child_exit(master, status);
	}
	free(listen_fds);
	close(auth_fd);
	master_child_started(master, pos, pid);
	return 0;
}

static int master_spawn_admin(struct master *master)
{
	int pair[2];
	size_t metrics_count;
	int *metrics_fds =
	    master_listens_select(&master->listens, master_listen_for_metrics, 0, &metrics_count);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
		free(metrics_fds);
		return -1;
	}
	size_t pos = master_child_add(master, MASTER_ROLE_ADMIN, 0);
	/* the control socket is kept too: one more slot in the array */
	metrics_fds[metrics_count] = master->control_fd;
	pid_t pid = master_fork(master, pos, metrics_fds, metrics_count + 1, pair[0]);
	if (pid < 0) {
		close(pair[0]);
		close(pair[1]);
		free(metrics_fds);
		return -1;
	}
	if (pid == 0) {
		struct admin_setup setup = {
		    .master_fd = pair[1],
		    .control_fd = master->control_fd,
		    .metrics_fds = metrics_fds,
		    .metrics_fd_count = metrics_count,
		    .metrics = master->metrics,
		    .bans = master->bans,
		};
		int status = admin_main(master->config, &setup);
		free(metrics_fds);
		master_child_exit(master, status);
	}
	free(metrics_fds);
	close(pair[1]);
	master->children[pos].fd = pair[0];
	master_child_started(master, pos, pid);
	/* every running worker's channel, the retiring ones' too: `buzon who` lists their sessions */
	for (size_t i = 0; i < master->child_count; i++) {
		const struct master_child *worker = &master->children[i];
		if (worker->role == MASTER_ROLE_POP3 && worker->fd >= 0 &&
		    admin_send_worker_channel(pair[0], worker->index, worker->generation,
					      worker->pid, worker->fd) < 0)
			log_error("admin_handoff_failed", "worker=%u error=%s", worker->index,
				  log_quote(strerror(errno)));
	}
	return 0;
}

/* Starts the auth process, the workers and the LMTP process of the current generation. */
static int master_spawn_generation(struct master *master, char **error_r)
{
	if (master_spawn_auth(master) < 0) {
		*error_r = xasprintf("cannot start the auth process: %s", strerror(errno));
		return -1;
	}
	for (unsigned int w = 0; w < master->worker_count; w++) {
		if (master_spawn_worker(master, w) < 0) {
			*error_r = xasprintf("cannot start worker %u: %s", w, strerror(errno));
			return -1;
		}
	}
	if (master_spawn_lmtp(master) < 0) {
		*error_r = xasprintf("cannot start the LMTP process: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Tells the children of generations before the current one to finish and exit (SIGUSR1). The auth
 * process of such a generation stays until its workers are gone (master_close_idle_auth). */
static void master_retire_old(struct master *master, bool admin_too)
{
	for (size_t i = 0; i < master->child_count; i++) {
		struct master_child *child = &master->children[i];
		if (child->retiring || child->role == MASTER_ROLE_AUTH)
			continue;
		if (child->role == MASTER_ROLE_ADMIN ? !admin_too
						     : child->generation == master->generation)
			continue;
		child->retiring = true;
		kill(child->pid, SIGUSR1);
		log_info("child_retiring", "child=%s pid=%d generation=%u",
			 master_role_names[child->role], (int)child->pid, child->generation);
	}
}

/* Closes the control channel of every auth process no worker or LMTP process uses any more (an
 * old generation's, or all of them when stopping); the auth process then exits. */
static void master_close_idle_auth(struct master *master)
{
	for (size_t i = 0; i < master->child_count; i++) {
		struct master_child *auth = &master->children[i];
		if (auth->role != MASTER_ROLE_AUTH || auth->fd < 0)
			continue;
		if (!master->stopping && auth->generation == master->generation)
			continue;
		bool used = false;
		for (size_t j = 0; j < master->child_count && !used; j++) {
			const struct master_child *user = &master->children[j];
			used = (user->role == MASTER_ROLE_POP3 || user->role == MASTER_ROLE_LMTP) &&
			       user->generation == auth->generation;
		}
		if (!used) {
			close(auth->fd);
			auth->fd = -1;
		}
	}
}

static void master_signal_role(struct master *master, int sig, bool auth_too)
{
	for (size_t i = 0; i < master->child_count; i++) {
		if (auth_too || master->children[i].role != MASTER_ROLE_AUTH)
			kill(master->children[i].pid, sig);
	}
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
	if (monotonic_ms() - started_ms < MASTER_RESPAWN_PAUSE_SECS * 1000)
		sleep(MASTER_RESPAWN_PAUSE_SECS);
}

/* A new generation with the same configuration: after the auth process died, the workers'
 * connections to it are gone, so they are replaced (their sessions finish first). */
static void master_restart_generation(struct master *master)
{
	char *error = NULL;

	master->generation++;
	if (master_spawn_generation(master, &error) < 0) {
		log_error("respawn_failed", "error=%s", log_quote(error));
		free(error);
	}
	master_retire_old(master, false);
}

static void master_respawn(struct master *master, const struct master_child *dead)
{
	int ret = 0;

	master_respawn_pause(dead->started_ms);
	switch (dead->role) {
	case MASTER_ROLE_AUTH:
		master_restart_generation(master);
		return;
	case MASTER_ROLE_POP3:
		ret = master_spawn_worker(master, dead->index);
		break;
	case MASTER_ROLE_LMTP:
		ret = master_spawn_lmtp(master);
		break;
	case MASTER_ROLE_ADMIN:
		ret = master_spawn_admin(master);
		break;
	}
	if (ret < 0)
		log_error("respawn_failed", "child=%s error=%s", master_role_names[dead->role],
			  log_quote(strerror(errno)));
}

/* Reaps every exited child; restarts it if it belonged to the running generation, unless the
 * server is stopping. */
static void master_reap(struct master *master)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		size_t pos = 0;
		while (pos < master->child_count && master->children[pos].pid != pid)
			pos++;
		if (pos == master->child_count)
			continue;
		struct master_child dead = master->children[pos];
		bool expected = master->stopping || dead.retiring ||
				(dead.role == MASTER_ROLE_AUTH && dead.fd < 0);
		bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (!clean || !expected)
			master->child_failed = true;
		master_log_exit(master_role_names[dead.role], pid, status, expected);
		if (dead.role == MASTER_ROLE_POP3) /* its maildrop locks died with it */
			takeover_table_forget_process(master->takeover, pid);
		master_child_remove(master, pos);
		if (!expected && dead.generation == master->generation)
			master_respawn(master, &dead);
	}
	master_close_idle_auth(master);
}

/* SIGTERM/SIGINT: children stop accepting and get drain_time to finish their sessions. */
static void master_begin_stop(struct master *master, int sig)
{
	if (master->stopping)
		return;
	master->stopping = true;
	master->stop_deadline_ms =
	    monotonic_ms() + (int64_t)master->config->drain_secs * 1000 + MASTER_STOP_GRACE_MS;
	log_info("stopping", "signal=%d drain_time=%us", sig, master->config->drain_secs);
	systemd_notify_stopping("draining sessions");
	/* new connections are refused from now on (the workers close their copies of the sockets
	 * as they start draining), instead of waiting in a backlog nobody accepts from */
	master_listens_close(&master->listens);
	/* workers first: the auth process stays until no session can ask it anything */
	master_signal_role(master, SIGTERM, false);
	master_close_idle_auth(master);
}

/* Reads the certificate and key (root may be the only one who can) and checks them by building a
 * context, so that a bad certificate is refused with a clear message. */
static int master_load_tls(const struct buzon_config *config, struct tls_material *tls,
			   bool *loaded_r, char **error_r)
{
	*loaded_r = false;
	if (!tls_configured(config))
		return 0;
	if (tls_material_load(config, tls, error_r) < 0)
		return -1;
	SSL_CTX *ctx = tls_context_new(config, tls, error_r);
	if (ctx == NULL) {
		tls_material_clear(tls);
		return -1;
	}
	SSL_CTX_free(ctx);
	*loaded_r = true;
	return 0;
}

/* Checks the login-penalty settings now, so that a bad value is refused with a message instead
 * of killing the auth process later. */
static int master_check_penalties(const struct buzon_config *config, char **error_r)
{
	struct penalty_config pc;
	struct net_list *trusted = NULL;
	int ret = auth_penalty_config(config, &pc, &trusted, error_r);

	net_list_free(&trusted);
	if (ret < 0) {
		char *with_file = xasprintf("%s: [auth] %s", config->path, *error_r);
		free(*error_r);
		*error_r = with_file;
	}
	return ret;
}

static unsigned int master_worker_count(const struct buzon_config *config)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	return config->workers != 0 ? config->workers : (unsigned int)(cores > 0 ? cores : 1);
}

static bool str_same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* What a reload cannot change: the users the children run as and the control socket are set up
 * once at start. Returns a message naming the key, or NULL. */
static char *master_reload_fixed_keys(const struct buzon_config *old, const struct buzon_config *new)
{
	if (!str_same(old->server_user, new->server_user))
		return xstrdup("[server] user changed; restart buzon to apply it");
	if (!str_same(old->auth_user, new->auth_user))
		return xstrdup("[auth] user changed; restart buzon to apply it");
	if (!str_same(old->control_socket, new->control_socket))
		return xstrdup("[server] control_socket changed; restart buzon to apply it");
	return NULL;
}

/* SIGHUP or `buzon reload`: reads the configuration file again and checks all of it (keys, TLS
 * certificates, listening addresses) before anything changes; then starts a new generation of
 * children with it and retires the old one, whose sessions go on to their end. A configuration
 * that fails a check is refused and the running one stays. Returns 0, or -1 with *error_r. */
static int master_reload(struct master *master, char **error_r)
{
	struct buzon_config *fresh = config_load(master->config->path, error_r);
	struct tls_material tls = {0};
	struct master_listens listens;
	bool tls_loaded;

	if (fresh == NULL)
		return -1;
	unsigned int worker_count = master_worker_count(fresh);
	if ((*error_r = master_reload_fixed_keys(master->config, fresh)) != NULL ||
	    master_check_penalties(fresh, error_r) < 0 ||
	    master_load_tls(fresh, &tls, &tls_loaded, error_r) < 0) {
		config_free(&fresh);
		return -1;
	}
	if (master_listens_build(fresh, worker_count, &master->listens, &listens, error_r) < 0) {
		tls_material_clear(&tls);
		config_free(&fresh);
		return -1;
	}
	/* tickets issued before the reload still resume */
	if (tls_loaded && master->tls_loaded) {
		memcpy(tls.ticket_keys, master->tls.ticket_keys, sizeof(tls.ticket_keys));
		tls.has_ticket_keys = master->tls.has_ticket_keys;
	} else if (tls_loaded) {
		tls_material_new_ticket_keys(&tls);
	}
	/* the old sockets close here; the retiring children hold their own copies until they exit,
	 * and the addresses that stay live on in the new set */
	master_listens_close(&master->listens);
	master->listens = listens;
	tls_material_clear(&master->tls);
	master->tls = tls;
	master->tls_loaded = tls_loaded;
	config_free(&master->config);
	master->config = fresh;
	master->worker_count = worker_count;
	log_set_level(fresh->log_level);
	log_configure(fresh); /* format and syslog, for the master and the new children */
	master->generation++;
	char *spawn_error = NULL;
	if (master_spawn_generation(master, &spawn_error) < 0) {
		log_error("reload_spawn_failed", "error=%s", log_quote(spawn_error));
		free(spawn_error);
	}
	master_retire_old(master, false);
	log_info("reloaded", "generation=%u workers=%u tls=%s", master->generation, worker_count,
		 tls_loaded ? "yes" : "no");
	return 0;
}

/* Reloads and tells how it went: in the log, and to the admin process that asked, if one did.
 * The admin process is replaced last, after it has the answer to pass on: it serves the new
 * [metrics] addresses, and its retiring predecessor finishes the requests it has. */
static void master_handle_reload(struct master *master, int reply_fd)
{
	char *error = NULL;
	unsigned int before = master->generation;

	systemd_notify_reloading();
	int ret = master_reload(master, &error);
	char *status_text = xasprintf("serving, %u POP3 workers, generation %u%s",
				      master->worker_count, master->generation,
				      ret < 0 ? " (last reload refused)" : "");
	systemd_notify_ready(status_text);
	free(status_text);
	if (ret < 0) {
		log_error("reload_refused", "error=%s keeping=running", log_quote(error));
		if (reply_fd >= 0)
			admin_master_reply(reply_fd, false, error);
		free(error);
		return;
	}
	if (reply_fd >= 0) {
		char *text = xasprintf("configuration reloaded (generation %u after %u, %u workers)",
				       master->generation, before, master->worker_count);
		admin_master_reply(reply_fd, true, text);
		free(text);
	}
	master_retire_old(master, true);
	if (master_spawn_admin(master) < 0)
		log_error("respawn_failed", "child=admin error=%s", log_quote(strerror(errno)));
}

/* The admin process (admin_pid) asked something: answers it. */
static void master_admin_readable(struct master *master, pid_t admin_pid)
{
	enum admin_master_request request;
	size_t pos = 0;

	while (pos < master->child_count && master->children[pos].pid != admin_pid)
		pos++;
	if (pos == master->child_count || master->children[pos].fd < 0)
		return;
	/* the reply goes out on a copy: a reload retires this admin process and a respawn may
	 * replace the record */
	int fd = fcntl(master->children[pos].fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (admin_master_read_request(fd, &request) < 0) {
		/* gone or talking nonsense: it gets no more requests through */
		close(master->children[pos].fd);
		master->children[pos].fd = -1;
	} else if (request == ADMIN_MASTER_RELOAD) {
		master_handle_reload(master, fd);
	}
	close(fd);
}

static int master_loop(struct master *master)
{
	while (!master->stopping || master->child_count > 0) {
		struct pollfd pfds[2] = {{.fd = master->signal_fd, .events = POLLIN}};
		struct master_child *admin = master_current_admin(master);
		pid_t admin_pid = admin != NULL ? admin->pid : 0;
		nfds_t nfds = 1;
		if (admin != NULL && !master->stopping)
			pfds[nfds++] = (struct pollfd){.fd = admin->fd, .events = POLLIN};
		int timeout = master->stopping ? 100 : -1;
		if (poll(pfds, nfds, timeout) < 0 && errno != EINTR)
			fatal("poll failed: %s", strerror(errno));
		if (master->stopping && monotonic_ms() > master->stop_deadline_ms) {
			log_error("stop_timeout", "action=%s", "SIGKILL");
			master_signal_role(master, SIGKILL, true);
			master->stop_deadline_ms = INT64_MAX;
		}
		if (nfds > 1 && pfds[1].revents != 0)
			master_admin_readable(master, admin_pid);
		if (!(pfds[0].revents & POLLIN)) {
			master_reap(master);
			continue;
		}
		struct signalfd_siginfo info;
		if (read(master->signal_fd, &info, sizeof(info)) != sizeof(info))
			continue;
		switch (info.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			master_begin_stop(master, (int)info.ssi_signo);
			break;
		case SIGCHLD:
			master_reap(master);
			break;
		case SIGHUP:
			if (!master->stopping)
				master_handle_reload(master, -1);
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

static void master_log_listening(const struct master *master)
{
	static const char *const kinds[] = {"pop3", "pop3s", "pop3-proxy", "pop3s-proxy",
					    "lmtp", "lmtp", "metrics"};

	for (size_t i = 0; i < master->listens.count; i++) {
		const struct master_listen *item = &master->listens.items[i];
		if (item->row != 0)
			continue;
		log_info("listening", "address=%s%s kind=%s tls=%s workers=%u",
			 item->kind == MASTER_LISTEN_LMTP_UNIX ? "unix:" : "", item->where.text,
			 kinds[item->kind],
			 item->kind == MASTER_LISTEN_POP3_TLS ||
				 item->kind == MASTER_LISTEN_POP3_TLS_PROXY
			     ? "implicit"
			     : "no",
			 master_listen_is_pop3(item->kind) ? master->worker_count : 1);
	}
}

static int master_start(struct master *master)
{
	char *error = NULL;
	sigset_t mask;

	if (master_identities(master, &error) < 0 || systemd_listen_collect(&error) < 0 ||
	    master_check_penalties(master->config, &error) < 0 ||
	    master_load_tls(master->config, &master->tls, &master->tls_loaded, &error) < 0 ||
	    master_listens_build(master->config, master->worker_count, NULL, &master->listens,
				 &error) < 0 ||
	    (master->control_fd = admin_control_socket_open(
		 master->config->control_socket, master->mail_identity.change,
		 master->mail_identity.uid, master->mail_identity.gid, &error)) < 0) {
		fprintf(stderr, "buzon: %s\n", error);
		log_error("start_failed", "error=%s", log_quote(error));
		free(error);
		systemd_listen_close_leftovers();
		return 1;
	}
	char *unclaimed = systemd_listen_leftovers();
	if (unclaimed != NULL) {
		fprintf(stderr,
			"buzon: systemd passed sockets that no listen address in %s names: %s\n",
			master->config->path, unclaimed);
		log_error("start_failed", "error=%s unclaimed=%s",
			  log_quote("socket unit and config disagree"), log_quote(unclaimed));
		free(unclaimed);
		systemd_listen_close_leftovers();
		return 1;
	}
	if (master->tls_loaded)
		tls_material_new_ticket_keys(&master->tls);
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
	master->takeover = takeover_table_create();
	master->metrics = metrics_create(MASTER_METRICS_SLOTS);
	/* a worker or the admin process that exits while the master writes to it must not kill
	 * the master */
	signal(SIGPIPE, SIG_IGN);
	if (master_spawn_generation(master, &error) < 0)
		fatal("%s", error);
	if (master_spawn_admin(master) < 0)
		fatal("cannot start the admin process: %s", strerror(errno));
	master_log_listening(master);
	char *status_text = xasprintf("serving, %u POP3 workers", master->worker_count);
	systemd_notify_ready(status_text);
	free(status_text);
	/* The master keeps its copies of the listening sockets: a restarted worker inherits the
	 * same sockets, and connections that arrive meanwhile wait in their backlog. */
	int status = master_loop(master);
	close(master->signal_fd);
	if (master->control_fd >= 0) {
		close(master->control_fd);
		unlink(master->config->control_socket);
	}
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
	struct master master = {.control_fd = -1, .signal_fd = -1};
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
	log_configure(master.config);
	master.worker_count = master_worker_count(master.config);
	master_raise_file_limit(master.config);
	log_info("starting", "version=%s config=%s workers=%u", BUZON_VERSION,
		 log_quote(config_path), master.worker_count);
	int status = master_start(&master);
	master_free(&master);
	return status;
}

static void check_config_usage(FILE *out)
{
	fprintf(out,
		"usage: buzon check-config [-c FILE]\n"
		"Checks the configuration and prints it with every default filled in.\n"
		"  -c, --config FILE   configuration file (default %s)\n",
		CLI_DEFAULT_CONFIG);
}

int cli_check_config_main(int argc, char **argv)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'},
						{"help", no_argument, NULL, 'h'},
						{NULL, 0, NULL, 0}};
	const char *config_path = CLI_DEFAULT_CONFIG;
	int opt;

	while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'h':
			check_config_usage(stdout);
			return 0;
		default:
			check_config_usage(stderr);
			return 64;
		}
	}
	if (optind != argc) {
		check_config_usage(stderr);
		return 64;
	}
	struct buzon_config *config = cli_config_load(config_path);
	if (config == NULL)
		return 78; /* EX_CONFIG */
	config_print(config, stdout);
	config_free(&config);
	return 0;
}

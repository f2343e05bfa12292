/* The admin process (see admin.h and the protocols in admin_proto.h): one libevent loop serving
 * the control socket, the Prometheus endpoint, the master's channel and one channel per POP3
 * worker. Every control request is one line in and a few lines out on a connection of its own;
 * requests that need the workers (WHO, KICK) fan out to all of them and are answered when every
 * worker has, or when ADMIN_WORKER_TIMEOUT_SECS have passed, so a stuck worker cannot hang the
 * CLI. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "admin/admin_proto.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/sandbox.h"
#include "core/util.h"
#include "net/ban_table.h"
#include "net/netlist.h"

/* Control clients served at once; more get "ERR busy". Each is one short request, so a handful
 * covers scripts running in parallel, and a local user who opens connections in a loop (root or
 * the mail user: nobody else gets this far) cannot make the process grow. */
#define ADMIN_CLIENTS_MAX 32
/* How long a client may take to send its request line. */
#define ADMIN_REQUEST_TIMEOUT_SECS 5
/* How long WHO and KICK wait for the workers: long enough for a busy loop to get round to the
 * channel, short enough for a person at a terminal. */
#define ADMIN_WORKER_TIMEOUT_SECS 3
/* How long RELOAD waits for the master, which re-reads the configuration, the users and the TLS
 * files and starts a new generation of processes before it answers. */
#define ADMIN_RELOAD_TIMEOUT_SECS 60
/* How long a client may take to read its answer. */
#define ADMIN_WRITE_TIMEOUT_SECS 10
/* Worker channels held at once: one per worker, old generations included while they drain. */
#define ADMIN_WORKERS_MAX 1024
/* Requests waiting on one worker; a worker this far behind is not asked again until it answers
 * (it counts as unanswered), so a stuck one cannot make the queue grow. */
#define ADMIN_WORKER_PENDING_MAX 16
/* Requests waiting for the master's answer to RELOAD. */
#define ADMIN_RELOADS_MAX 8
/* A retiring admin process (SIGUSR1) exits at the latest this long after the signal. */
#define ADMIN_RETIRE_MAX_SECS (ADMIN_RELOAD_TIMEOUT_SECS + 5)
/* The longest ban `buzon ban add` takes: ten years. */
#define ADMIN_BAN_MAX_SECS (3650U * 86400U)
/* How long accepting on the control socket pauses after accept() fails (out of descriptors). */
#define ADMIN_ACCEPT_PAUSE_MS 100
/* HTTP: /metrics requests are small GETs from a scraper. */
#define ADMIN_HTTP_HEADERS_MAX	8192
#define ADMIN_HTTP_TIMEOUT_SECS 10

struct admin;
struct admin_client;

/* A request sent to a worker and not yet answered, oldest first. client is NULL once nobody waits
 * for the answer any more (the client left or timed out); the entry stays until the worker's END
 * so that its answer is recognised and skipped. */
struct admin_pending {
	struct admin_pending *next;
	struct admin_client *client;
	char token[ADMIN_TOKEN_MAX + 1];
};

struct admin_worker {
	struct admin_worker *prev, *next;
	struct admin *admin;
	struct bufferevent *bev;
	unsigned int index;
	unsigned int generation;
	pid_t pid;
	struct admin_pending *pending, *pending_tail;
	unsigned int pending_count;
};

/* A RELOAD waiting for the master's answer, oldest first; client NULL as above. */
struct admin_reload {
	struct admin_reload *next;
	struct admin_client *client;
};

enum admin_client_state {
	ADMIN_CLIENT_READING,	/* waiting for the request line */
	ADMIN_CLIENT_GATHERING, /* WHO or KICK: waiting for the workers */
	ADMIN_CLIENT_RELOADING, /* waiting for the master */
	ADMIN_CLIENT_ANSWERED,	/* the final line is queued; closes once it is sent */
};

enum admin_gather_kind { ADMIN_GATHER_WHO, ADMIN_GATHER_KICK };

struct admin_client {
	struct admin_client *prev, *next;
	struct admin *admin;
	struct bufferevent *bev;
	uid_t uid;
	enum admin_client_state state;
	struct event *timer; /* the deadline of the current state */
	/* WHO and KICK */
	enum admin_gather_kind gather;
	unsigned int workers_asked;
	unsigned int workers_answered;
	unsigned int workers_waiting; /* asked, and neither answered nor given up on */
	unsigned long long sessions;  /* listed or kicked */
};

struct admin {
	const struct buzon_config *config;
	const struct admin_setup *setup;
	struct event_base *base;
	uid_t own_uid;
	pid_t pid;
	unsigned int next_token;
	struct evconnlistener *control;
	struct evhttp *http;
	struct evhttp_bound_socket **http_sockets;
	size_t http_socket_count;
	struct event *master_event;
	struct admin_client *clients;
	unsigned int client_count;
	struct admin_worker *workers;
	unsigned int worker_count;
	struct admin_reload *reloads, *reloads_tail;
	unsigned int reload_count;
	bool retiring;
	struct event *retire_deadline;
	struct event *accept_resume; /* re-enables the control listener after an accept error */
};

static void admin_client_free(struct admin_client *client);
static void admin_worker_free(struct admin_worker *worker);
static void admin_retire_check(struct admin *admin);

/* ------------------------------------------------------------------------------------------ */
/* Control clients: answers */

static void admin_client_data(struct admin_client *client, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void admin_client_finish(struct admin_client *client, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Queues one "* " data line. */
static void admin_client_data(struct admin_client *client, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(client->bev);
	va_list args;

	evbuffer_add(out, "* ", 2);
	va_start(args, fmt);
	evbuffer_add_vprintf(out, fmt, args);
	va_end(args);
	evbuffer_add(out, "\n", 1);
}

/* Queues the final line ("OK …" or "ERR …") and closes once it is sent. */
static void admin_client_finish(struct admin_client *client, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(client->bev);
	struct timeval write_timeout = {.tv_sec = ADMIN_WRITE_TIMEOUT_SECS};
	va_list args;

	va_start(args, fmt);
	evbuffer_add_vprintf(out, fmt, args);
	va_end(args);
	evbuffer_add(out, "\n", 1);
	client->state = ADMIN_CLIENT_ANSWERED;
	evtimer_del(client->timer);
	bufferevent_disable(client->bev, EV_READ);
	bufferevent_set_timeouts(client->bev, NULL, &write_timeout);
	/* the write callback frees the client once the output is empty */
	bufferevent_setwatermark(client->bev, EV_WRITE, 0, 0);
	bufferevent_enable(client->bev, EV_WRITE);
}

static void admin_client_set_deadline(struct admin_client *client, unsigned int secs)
{
	struct timeval deadline = {.tv_sec = secs};

	evtimer_add(client->timer, &deadline);
}

/* ------------------------------------------------------------------------------------------ */
/* WHO and KICK: fan-out to the workers */

/* Forgets the client in every request it still waits on. */
static void admin_detach_client(struct admin *admin, struct admin_client *client)
{
	for (struct admin_worker *w = admin->workers; w != NULL; w = w->next) {
		for (struct admin_pending *p = w->pending; p != NULL; p = p->next) {
			if (p->client == client)
				p->client = NULL;
		}
	}
	for (struct admin_reload *r = admin->reloads; r != NULL; r = r->next) {
		if (r->client == client)
			r->client = NULL;
	}
}

static void admin_gather_finish(struct admin_client *client)
{
	unsigned int unanswered = client->workers_asked - client->workers_answered;

	admin_detach_client(client->admin, client);
	if (client->gather == ADMIN_GATHER_WHO)
		admin_client_finish(client, "OK sessions=%llu workers=%u unanswered=%u",
				    client->sessions, client->workers_asked, unanswered);
	else
		admin_client_finish(client, "OK kicked=%llu workers=%u unanswered=%u",
				    client->sessions, client->workers_asked, unanswered);
}

/* Sends request (without token) to every worker channel and waits for their answers. */
static void admin_gather_start(struct admin_client *client, enum admin_gather_kind kind,
			       const char *request)
{
	struct admin *admin = client->admin;

	if (admin->retiring) {
		/* its worker channels are closed: the new admin process has them */
		admin_client_finish(client, "ERR the server is reloading, try again");
		return;
	}
	client->gather = kind;
	client->state = ADMIN_CLIENT_GATHERING;
	for (struct admin_worker *w = admin->workers; w != NULL; w = w->next) {
		client->workers_asked++;
		if (w->pending_count >= ADMIN_WORKER_PENDING_MAX)
			continue; /* far behind: counted as unanswered */
		client->workers_waiting++;
		struct admin_pending *p = xcalloc(1, sizeof(*p));
		p->client = client;
		snprintf(p->token, sizeof(p->token), "%d.%u", (int)admin->pid, admin->next_token++);
		if (w->pending_tail != NULL)
			w->pending_tail->next = p;
		else
			w->pending = p;
		w->pending_tail = p;
		w->pending_count++;
		evbuffer_add_printf(bufferevent_get_output(w->bev), "%s %s\n", p->token, request);
	}
	if (client->workers_waiting == 0) {
		admin_gather_finish(client);
		return;
	}
	admin_client_set_deadline(client, ADMIN_WORKER_TIMEOUT_SECS);
}

/* A worker answered the request at the head of its queue (END or ERR). */
static void admin_worker_answered(struct admin_worker *worker, unsigned long long count,
				  const char *error)
{
	struct admin_pending *p = worker->pending;
	struct admin_client *client = p->client;

	worker->pending = p->next;
	if (worker->pending == NULL)
		worker->pending_tail = NULL;
	worker->pending_count--;
	free(p);
	if (client == NULL)
		return;
	if (error != NULL)
		log_warn("admin_worker_error", "worker=%u pid=%d error=%s", worker->index,
			 (int)worker->pid, log_quote(error));
	if (client->gather == ADMIN_GATHER_KICK)
		client->sessions += count;
	client->workers_answered++;
	if (--client->workers_waiting == 0)
		admin_gather_finish(client);
}

/* One line from a worker: "TOKEN S …", "TOKEN END N" or "TOKEN ERR …". Lines whose token is not
 * the oldest request's are left from a request nobody waits for (an earlier admin process's). */
static void admin_worker_line(struct admin_worker *worker, char *line)
{
	char *space = strchr(line, ' ');

	if (space == NULL || worker->pending == NULL)
		return;
	*space = '\0';
	if (strcmp(line, worker->pending->token) != 0)
		return;
	char *rest = space + 1;
	struct admin_client *client = worker->pending->client;
	if (strncmp(rest, "S ", 2) == 0) {
		if (client != NULL && client->gather == ADMIN_GATHER_WHO) {
			admin_client_data(client, "%s", rest + 2);
			client->sessions++;
		}
	} else if (strncmp(rest, "END ", 4) == 0) {
		unsigned long long count = 0;
		if (str_parse_uint(rest + 4, 0, UINT32_MAX, &count) < 0)
			log_warn("admin_worker_malformed", "worker=%u line=%s", worker->index,
				 log_quote(rest));
		admin_worker_answered(worker, count, NULL);
	} else if (strncmp(rest, "ERR ", 4) == 0) {
		admin_worker_answered(worker, 0, rest + 4);
	}
}

static bool admin_line_has_controls(const char *line, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			return true;
	}
	return false;
}

static void admin_worker_read(struct bufferevent *bev, void *arg)
{
	struct admin_worker *worker = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[ADMIN_WORKER_LINE_MAX + 1];
	ssize_t len;

	while ((len = admin_proto_take_line(in, line)) >= 0) {
		/* no NUL, and nothing that would reach an operator's terminal as a control sequence
		 */
		if (admin_line_has_controls(line, (size_t)len))
			break;
		admin_worker_line(worker, line);
	}
	if (len == ADMIN_LINE_PENDING)
		return;
	log_error("admin_worker_malformed", "worker=%u pid=%d action=close", worker->index,
		  (int)worker->pid);
	admin_worker_free(worker);
}

static void admin_worker_event(struct bufferevent *bev, short what, void *arg)
{
	struct admin_worker *worker = arg;

	/* EOF: the worker exited (its requests in progress count as unanswered) */
	log_debug("admin_worker_gone", "worker=%u pid=%d", worker->index, (int)worker->pid);
	admin_worker_free(worker);
}

static void admin_worker_add(struct admin *admin, unsigned int index, unsigned int generation,
			     pid_t pid, int fd)
{
	for (struct admin_worker *w = admin->workers; w != NULL; w = w->next) {
		if (w->pid == pid) {
			/* one reader per channel, or their reads would split each other's lines */
			log_warn("admin_worker_refused", "worker=%u pid=%d reason=%s", index,
				 (int)pid, "already known");
			close(fd);
			return;
		}
	}
	if (admin->retiring || admin->worker_count >= ADMIN_WORKERS_MAX) {
		log_warn("admin_worker_refused", "worker=%u pid=%d reason=%s", index, (int)pid,
			 admin->retiring ? "retiring" : "too many workers");
		close(fd);
		return;
	}
	struct admin_worker *worker = xcalloc(1, sizeof(*worker));
	worker->admin = admin;
	worker->index = index;
	worker->generation = generation;
	worker->pid = pid;
	evutil_make_socket_nonblocking(fd);
	worker->bev = bufferevent_socket_new(admin->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (worker->bev == NULL)
		fatal("bufferevent_socket_new failed");
	bufferevent_setcb(worker->bev, admin_worker_read, NULL, admin_worker_event, worker);
	bufferevent_enable(worker->bev, EV_READ | EV_WRITE);
	worker->next = admin->workers;
	if (admin->workers != NULL)
		admin->workers->prev = worker;
	admin->workers = worker;
	admin->worker_count++;
	log_debug("admin_worker_added", "worker=%u generation=%u pid=%d", index, generation,
		  (int)pid);
}

static void admin_worker_free(struct admin_worker *worker)
{
	struct admin *admin = worker->admin;

	while (worker->pending != NULL) {
		struct admin_pending *p = worker->pending;
		worker->pending = p->next;
		/* the client stops waiting for this worker; it stays unanswered */
		if (p->client != NULL && --p->client->workers_waiting == 0)
			admin_gather_finish(p->client);
		free(p);
	}
	bufferevent_free(worker->bev);
	if (worker->prev != NULL)
		worker->prev->next = worker->next;
	else
		admin->workers = worker->next;
	if (worker->next != NULL)
		worker->next->prev = worker->prev;
	admin->worker_count--;
	free(worker);
}

/* ------------------------------------------------------------------------------------------ */
/* RELOAD: through the master */

static void admin_reload_start(struct admin_client *client)
{
	struct admin *admin = client->admin;
	unsigned char buf[ADMIN_WIRE_MAX];
	struct admin_wire_message wire = {.type = ADMIN_WIRE_REQUEST,
					  .request = ADMIN_MASTER_RELOAD};

	if (admin->master_event == NULL) {
		admin_client_finish(client, "ERR the master is gone");
		return;
	}
	if (admin->reload_count >= ADMIN_RELOADS_MAX) {
		admin_client_finish(client, "ERR too many reloads waiting, try again");
		return;
	}
	size_t len = admin_wire_encode(&wire, buf);
	if (send(admin->setup->master_fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len) {
		admin_client_finish(client, "ERR cannot reach the master: %s", strerror(errno));
		return;
	}
	struct admin_reload *r = xcalloc(1, sizeof(*r));
	r->client = client;
	if (admin->reloads_tail != NULL)
		admin->reloads_tail->next = r;
	else
		admin->reloads = r;
	admin->reloads_tail = r;
	admin->reload_count++;
	client->state = ADMIN_CLIENT_RELOADING;
	admin_client_set_deadline(client, ADMIN_RELOAD_TIMEOUT_SECS);
}

static void admin_reload_answered(struct admin *admin, bool ok, const char *text)
{
	struct admin_reload *r = admin->reloads;

	if (r == NULL) {
		log_warn("admin_master_unexpected", "what=%s", "reply without a request");
		return;
	}
	admin->reloads = r->next;
	if (admin->reloads == NULL)
		admin->reloads_tail = NULL;
	admin->reload_count--;
	if (r->client != NULL)
		admin_client_finish(r->client, "%s %s", ok ? "OK" : "ERR", text);
	free(r);
	admin_retire_check(admin);
}

/* ------------------------------------------------------------------------------------------ */
/* The master's channel */

static void admin_master_gone(struct admin *admin)
{
	event_free(admin->master_event);
	admin->master_event = NULL;
	while (admin->reloads != NULL)
		admin_reload_answered(admin, false, "the master is gone");
	/* nothing works without the master: it supervises, reloads and hands over workers */
	event_base_loopbreak(admin->base);
}

static void admin_master_read(evutil_socket_t fd, short what, void *arg)
{
	struct admin *admin = arg;
	unsigned char buf[ADMIN_WIRE_MAX + 1];
	struct admin_wire_message wire;
	int passed_fd;

	for (;;) {
		ssize_t len = admin_wire_recv(fd, buf, &passed_fd, MSG_DONTWAIT);
		if (len < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (len <= 0) {
			if (len < 0 && errno == EBADMSG) {
				log_error("admin_master_malformed", "what=%s", "control data");
				continue;
			}
			admin_master_gone(admin);
			return;
		}
		bool valid = admin_wire_decode(buf, (size_t)len, &wire) == 0 &&
			     (wire.type == ADMIN_WIRE_WORKER) == (passed_fd >= 0) &&
			     wire.type != ADMIN_WIRE_REQUEST;
		if (!valid) {
			log_error("admin_master_malformed", "length=%zd", len);
			if (passed_fd >= 0)
				close(passed_fd);
		} else if (wire.type == ADMIN_WIRE_WORKER) {
			admin_worker_add(admin, wire.index, wire.generation, wire.pid, passed_fd);
		} else {
			admin_reload_answered(admin, wire.ok, wire.text);
		}
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Control requests */

static void admin_cmd_who(struct admin_client *client, char *args)
{
	if (args[0] != '\0') {
		admin_client_finish(client, "ERR WHO takes no argument");
		return;
	}
	admin_gather_start(client, ADMIN_GATHER_WHO, "WHO");
}

static void admin_cmd_kick(struct admin_client *client, char *args)
{
	char request[ADMIN_REQUEST_LINE_MAX + 32];

	if (strncasecmp(args, "USER ", 5) == 0 && args[5] != '\0') {
		snprintf(request, sizeof(request), "KICK USER %s", args + 5);
	} else if (strncasecmp(args, "IP ", 3) == 0) {
		struct net_addr addr;
		char text[INET6_ADDRSTRLEN];
		if (net_addr_from_text(args + 3, &addr) < 0) {
			admin_client_finish(client, "ERR not an IP address: %s",
					    log_quote(args + 3));
			return;
		}
		snprintf(request, sizeof(request), "KICK IP %s",
			 net_addr_to_text(&addr, text, sizeof(text)));
	} else {
		admin_client_finish(client, "ERR usage: KICK USER <name> | KICK IP <address>");
		return;
	}
	log_info("admin_kick", "uid=%u target=%s", (unsigned int)client->uid,
		 log_quote(request + 5));
	admin_gather_start(client, ADMIN_GATHER_KICK, request);
}

static void admin_cmd_stats(struct admin_client *client, char *args)
{
	if (args[0] != '\0') {
		admin_client_finish(client, "ERR STATS takes no argument");
		return;
	}
	if (client->admin->setup->metrics == NULL) {
		admin_client_finish(client, "ERR no metrics in this server");
		return;
	}
	struct evbuffer *text = evbuffer_new();
	metrics_render(client->admin->setup->metrics, text);
	char *line;
	size_t len;
	while ((line = evbuffer_readln(text, &len, EVBUFFER_EOL_LF)) != NULL) {
		if (len > 0)
			admin_client_data(client, "%s", line);
		free(line);
	}
	evbuffer_free(text);
	admin_client_finish(client, "OK");
}

static void admin_cmd_reload(struct admin_client *client, char *args)
{
	if (args[0] != '\0') {
		admin_client_finish(client, "ERR RELOAD takes no argument");
		return;
	}
	log_info("admin_reload", "uid=%u", (unsigned int)client->uid);
	admin_reload_start(client);
}

/* A ban's end (ban_table_now() seconds) in Unix time. */
static long long admin_ban_wall_time(uint64_t until, uint64_t now)
{
	return (long long)time(NULL) + (long long)(until - now);
}

static void admin_ban_list(struct admin_client *client)
{
	struct ban_entry *entries = xcalloc(BAN_REGISTER_ENTRIES, sizeof(*entries));
	uint64_t now = ban_table_now();
	size_t count =
	    ban_table_list(client->admin->setup->bans, now, entries, BAN_REGISTER_ENTRIES);

	for (size_t i = 0; i < count && i < BAN_REGISTER_ENTRIES; i++) {
		char text[BAN_ENTRY_TEXT_MAX];
		admin_client_data(
		    client, "%s %lld %s", ban_entry_text(&entries[i], text, sizeof(text)),
		    admin_ban_wall_time(entries[i].until, now), ban_source_name(entries[i].source));
	}
	free(entries);
	admin_client_finish(client, "OK bans=%zu", count);
}

static void admin_ban_add(struct admin_client *client, const char *ip, const char *duration)
{
	unsigned int secs = client->admin->config->auth_ban_secs;
	struct net_addr addr;

	if (net_addr_from_text(ip, &addr) < 0) {
		admin_client_finish(client, "ERR not an IP address: %s", log_quote(ip));
		return;
	}
	if (duration != NULL &&
	    (str_parse_duration(duration, &secs) < 0 || secs == 0 || secs > ADMIN_BAN_MAX_SECS)) {
		admin_client_finish(client,
				    "ERR bad duration %s (1s to 3650d, e.g. 90s, 10m, 2h, 7d)",
				    log_quote(duration));
		return;
	}
	uint64_t now = ban_table_now();
	ban_table_add(client->admin->setup->bans, ip, now + secs, BAN_SOURCE_ADMIN);
	log_info("ban", "ip=%s duration=%us by=admin uid=%u", log_quote(ip), secs,
		 (unsigned int)client->uid);
	admin_client_finish(client, "OK banned %s until=%lld", ip,
			    admin_ban_wall_time(now + secs, now));
}

static void admin_ban_del(struct admin_client *client, const char *ip)
{
	int ret = ban_table_remove(client->admin->setup->bans, ip, ban_table_now());

	if (ret < 0) {
		admin_client_finish(client, "ERR not an IP address: %s", log_quote(ip));
		return;
	}
	log_info("ban_lifted", "ip=%s by=admin uid=%u was_banned=%s", log_quote(ip),
		 (unsigned int)client->uid, ret > 0 ? "yes" : "no");
	if (ret > 0)
		admin_client_finish(client, "OK lifted %s", ip);
	else
		admin_client_finish(client, "ERR not banned %s", ip);
}

static void admin_cmd_ban(struct admin_client *client, char *args)
{
	char *words[4] = {NULL};
	size_t count = 0;
	char *saveptr = NULL;

	for (char *w = strtok_r(args, " ", &saveptr); w != NULL;
	     w = strtok_r(NULL, " ", &saveptr)) {
		if (count == ARRAY_SIZE(words)) {
			admin_client_finish(client, "ERR too many arguments");
			return;
		}
		words[count++] = w;
	}
	if (client->admin->setup->bans == NULL) {
		admin_client_finish(client, "ERR no ban table in this server");
	} else if (count == 1 && strcasecmp(words[0], "LIST") == 0) {
		admin_ban_list(client);
	} else if ((count == 2 || count == 3) && strcasecmp(words[0], "ADD") == 0) {
		admin_ban_add(client, words[1], words[2]);
	} else if (count == 2 && strcasecmp(words[0], "DEL") == 0) {
		admin_ban_del(client, words[1]);
	} else {
		admin_client_finish(client,
				    "ERR usage: BAN LIST | BAN ADD <address> [<duration>] | BAN "
				    "DEL <address>");
	}
}

struct admin_command {
	const char *name;
	void (*run)(struct admin_client *client, char *args);
};

static const struct admin_command admin_commands[] = {
    {"WHO", admin_cmd_who},	  {"KICK", admin_cmd_kick}, {"STATS", admin_cmd_stats},
    {"RELOAD", admin_cmd_reload}, {"BAN", admin_cmd_ban},
};

static void admin_client_request(struct admin_client *client, char *line)
{
	char *args = line + strcspn(line, " ");

	if (*args == ' ')
		*args++ = '\0';
	log_debug("admin_request", "uid=%u command=%s", (unsigned int)client->uid, log_quote(line));
	for (size_t i = 0; i < ARRAY_SIZE(admin_commands); i++) {
		if (strcasecmp(line, admin_commands[i].name) == 0) {
			admin_commands[i].run(client, args);
			return;
		}
	}
	admin_client_finish(client, "ERR unknown command %s (WHO, KICK, STATS, RELOAD, BAN)",
			    log_quote(line));
}

/* ------------------------------------------------------------------------------------------ */
/* Control clients: connection */

static void admin_client_read(struct bufferevent *bev, void *arg)
{
	struct admin_client *client = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[ADMIN_REQUEST_LINE_MAX + 1];
	size_t eol_len = 0;
	struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);

	if (client->state != ADMIN_CLIENT_READING)
		return;
	if (eol.pos < 0) {
		if (evbuffer_get_length(in) > ADMIN_REQUEST_LINE_MAX)
			admin_client_finish(client, "ERR request line too long (at most %d octets)",
					    ADMIN_REQUEST_LINE_MAX);
		return;
	}
	if ((size_t)eol.pos > ADMIN_REQUEST_LINE_MAX) {
		admin_client_finish(client, "ERR request line too long (at most %d octets)",
				    ADMIN_REQUEST_LINE_MAX);
		return;
	}
	size_t len = (size_t)eol.pos;
	evbuffer_remove(in, line, len);
	line[len] = '\0';
	if (len > 0 && line[len - 1] == '\r')
		line[--len] = '\0';
	/* one request per connection: whatever follows is not read */
	bufferevent_disable(bev, EV_READ);
	evtimer_del(client->timer);
	if (admin_line_has_controls(line, len)) {
		admin_client_finish(client, "ERR control characters in the request");
		return;
	}
	admin_client_request(client, line);
}

static void admin_client_write(struct bufferevent *bev, void *arg)
{
	struct admin_client *client = arg;

	if (client->state == ADMIN_CLIENT_ANSWERED)
		admin_client_free(client);
}

static void admin_client_event(struct bufferevent *bev, short what, void *arg)
{
	struct admin_client *client = arg;

	if ((what & BEV_EVENT_EOF) && client->state != ADMIN_CLIENT_READING &&
	    client->state != ADMIN_CLIENT_ANSWERED)
		return; /* the client shut down its sending side and waits for the answer */
	admin_client_free(client);
}

/* The deadline of the client's current state passed. */
static void admin_client_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct admin_client *client = arg;

	switch (client->state) {
	case ADMIN_CLIENT_READING:
		admin_client_finish(client, "ERR timeout: no request within %d s",
				    ADMIN_REQUEST_TIMEOUT_SECS);
		break;
	case ADMIN_CLIENT_GATHERING:
		admin_gather_finish(client);
		break;
	case ADMIN_CLIENT_RELOADING:
		admin_detach_client(client->admin, client);
		admin_client_finish(client, "ERR no answer from the master within %d s",
				    ADMIN_RELOAD_TIMEOUT_SECS);
		break;
	case ADMIN_CLIENT_ANSWERED:
		break;
	}
}

static void admin_client_free(struct admin_client *client)
{
	struct admin *admin = client->admin;

	admin_detach_client(admin, client);
	event_free(client->timer);
	bufferevent_free(client->bev);
	if (client->prev != NULL)
		client->prev->next = client->next;
	else
		admin->clients = client->next;
	if (client->next != NULL)
		client->next->prev = client->prev;
	admin->client_count--;
	free(client);
	admin_retire_check(admin);
}

/* Answers a connection that is not served with one line and closes it. The socket is new, so a
 * short line fits in its send buffer. */
static void admin_refuse(int fd, const char *line)
{
	(void)!send(fd, line, strlen(line), MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
}

static void admin_control_accept(struct evconnlistener *listener, evutil_socket_t fd,
				 struct sockaddr *addr, int addr_len, void *arg)
{
	struct admin *admin = arg;
	struct ucred cred;
	socklen_t cred_len = sizeof(cred);

	/* the file mode keeps others out already; this holds even if the mode is changed */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) < 0 ||
	    (cred.uid != 0 && cred.uid != admin->own_uid)) {
		log_warn("control_refused", "uid=%d pid=%d reason=permission",
			 cred_len == sizeof(cred) ? (int)cred.uid : -1,
			 cred_len == sizeof(cred) ? (int)cred.pid : -1);
		admin_refuse(fd, "ERR permission denied: only root and the server's user\n");
		return;
	}
	if (admin->client_count >= ADMIN_CLIENTS_MAX) {
		log_warn("control_refused", "uid=%u reason=busy", (unsigned int)cred.uid);
		admin_refuse(fd, "ERR busy, try again\n");
		return;
	}
	struct admin_client *client = xcalloc(1, sizeof(*client));
	client->admin = admin;
	client->uid = cred.uid;
	client->state = ADMIN_CLIENT_READING;
	client->bev = bufferevent_socket_new(admin->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (client->bev == NULL)
		fatal("bufferevent_socket_new failed");
	client->timer = evtimer_new(admin->base, admin_client_timeout, client);
	bufferevent_setcb(client->bev, admin_client_read, admin_client_write, admin_client_event,
			  client);
	bufferevent_setwatermark(client->bev, EV_READ, 0, ADMIN_REQUEST_LINE_MAX + 2);
	bufferevent_enable(client->bev, EV_READ);
	admin_client_set_deadline(client, ADMIN_REQUEST_TIMEOUT_SECS);
	client->next = admin->clients;
	if (admin->clients != NULL)
		admin->clients->prev = client;
	admin->clients = client;
	admin->client_count++;
}

static void admin_control_resume(evutil_socket_t fd, short what, void *arg)
{
	struct admin *admin = arg;

	if (admin->control != NULL)
		evconnlistener_enable(admin->control);
}

static void admin_control_error(struct evconnlistener *listener, void *arg)
{
	struct admin *admin = arg;
	struct timeval pause = {.tv_usec = ADMIN_ACCEPT_PAUSE_MS * 1000};

	/* out of descriptors: the connection stays in the backlog and the socket readable, so
	 * pause rather than spin on accept() errors */
	log_error("control_accept_failed", "error=%s",
		  log_quote(evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR())));
	evconnlistener_disable(listener);
	evtimer_add(admin->accept_resume, &pause);
}

/* ------------------------------------------------------------------------------------------ */
/* Prometheus endpoint */

static void admin_http_request(struct evhttp_request *req, void *arg)
{
	struct admin *admin = arg;
	const char *uri = evhttp_request_get_uri(req);
	size_t path_len = strcspn(uri, "?#");

	if (path_len != strlen("/metrics") || strncmp(uri, "/metrics", path_len) != 0 ||
	    admin->setup->metrics == NULL) {
		evhttp_send_error(req, HTTP_NOTFOUND, NULL);
		return;
	}
	struct evbuffer *body = evbuffer_new();
	struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
	metrics_render(admin->setup->metrics, body);
	evhttp_add_header(headers, "Content-Type", "text/plain; version=0.0.4");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		/* libevent 2.1 would send the body after the headers of a HEAD reply too */
		char length[STR_U64_DIGITS_MAX + 1];
		snprintf(length, sizeof(length), "%zu", evbuffer_get_length(body));
		evhttp_add_header(headers, "Content-Length", length);
		evbuffer_drain(body, evbuffer_get_length(body));
	}
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

static void admin_http_start(struct admin *admin)
{
	if (admin->setup->metrics_fd_count == 0)
		return;
	admin->http = evhttp_new(admin->base);
	if (admin->http == NULL)
		fatal("evhttp_new failed");
	evhttp_set_allowed_methods(admin->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_max_headers_size(admin->http, ADMIN_HTTP_HEADERS_MAX);
	evhttp_set_max_body_size(admin->http, 0);
	evhttp_set_timeout(admin->http, ADMIN_HTTP_TIMEOUT_SECS);
	evhttp_set_gencb(admin->http, admin_http_request, admin);
	admin->http_sockets = xcalloc(admin->setup->metrics_fd_count, sizeof(*admin->http_sockets));
	for (size_t i = 0; i < admin->setup->metrics_fd_count; i++) {
		admin->http_sockets[i] =
		    evhttp_accept_socket_with_handle(admin->http, admin->setup->metrics_fds[i]);
		if (admin->http_sockets[i] == NULL)
			fatal("evhttp_accept_socket failed");
		admin->http_socket_count++;
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Life cycle */

static void admin_stop_accepting(struct admin *admin)
{
	/* the master keeps its copies of the listening sockets for the next admin process */
	if (admin->control != NULL) {
		evconnlistener_free(admin->control);
		admin->control = NULL;
	}
	for (size_t i = 0; i < admin->http_socket_count; i++)
		evhttp_del_accept_socket(admin->http, admin->http_sockets[i]);
	admin->http_socket_count = 0;
}

/* A retiring admin process exits once nothing is left to answer. */
static void admin_retire_check(struct admin *admin)
{
	if (admin->retiring && admin->client_count == 0 && admin->reload_count == 0)
		event_base_loopbreak(admin->base);
}

static void admin_retire_over(evutil_socket_t fd, short what, void *arg)
{
	struct admin *admin = arg;

	log_warn("admin_retire_timeout", "clients=%u", admin->client_count);
	event_base_loopbreak(admin->base);
}

static void admin_signal(evutil_socket_t sig, short what, void *arg)
{
	struct admin *admin = arg;

	if (sig != SIGUSR1) {
		log_info("admin_stopping", "signal=%d clients=%u", (int)sig, admin->client_count);
		event_base_loopbreak(admin->base);
		return;
	}
	if (admin->retiring)
		return;
	/* a reload replaced this process: the new one serves new requests. The worker channels
	 * go first, since the new process reads the same sockets and only one may; requests
	 * waiting on them are answered with what has come. RELOADs in progress keep waiting for
	 * the master, who answers before it retires us. */
	log_info("admin_retiring", "clients=%u", admin->client_count);
	admin->retiring = true;
	admin_stop_accepting(admin);
	while (admin->workers != NULL)
		admin_worker_free(admin->workers);
	struct timeval most = {.tv_sec = ADMIN_RETIRE_MAX_SECS};
	evtimer_add(admin->retire_deadline, &most);
	admin_retire_check(admin);
}

static void admin_free(struct admin *admin)
{
	while (admin->clients != NULL)
		admin_client_free(admin->clients);
	while (admin->workers != NULL)
		admin_worker_free(admin->workers);
	while (admin->reloads != NULL) {
		struct admin_reload *r = admin->reloads;
		admin->reloads = r->next;
		free(r);
	}
	if (admin->control != NULL)
		evconnlistener_free(admin->control);
	if (admin->http != NULL)
		evhttp_free(admin->http);
	free(admin->http_sockets);
	if (admin->master_event != NULL)
		event_free(admin->master_event);
	event_free(admin->retire_deadline);
	event_free(admin->accept_resume);
}

int admin_main(const struct buzon_config *config, const struct admin_setup *setup)
{
	struct admin admin = {.config = config,
			      .setup = setup,
			      .own_uid = getuid(),
			      .pid = getpid(),
			      .next_token = randombytes_random()};
	static const int stop_signals[] = {SIGTERM, SIGINT, SIGUSR1};
	struct event *signal_events[ARRAY_SIZE(stop_signals)];
	sigset_t unblock;

	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	admin.base = event_base_new();
	if (admin.base == NULL)
		fatal("event_base_new failed");
	admin.control =
	    evconnlistener_new(admin.base, admin_control_accept, &admin,
			       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, setup->control_fd);
	if (admin.control == NULL)
		fatal("evconnlistener_new failed on the control socket");
	evconnlistener_set_error_cb(admin.control, admin_control_error);
	admin_http_start(&admin);
	evutil_make_socket_nonblocking(setup->master_fd);
	admin.master_event = event_new(admin.base, setup->master_fd, EV_READ | EV_PERSIST,
				       admin_master_read, &admin);
	event_add(admin.master_event, NULL);
	admin.retire_deadline = evtimer_new(admin.base, admin_retire_over, &admin);
	admin.accept_resume = evtimer_new(admin.base, admin_control_resume, &admin);
	sigemptyset(&unblock);
	for (size_t i = 0; i < ARRAY_SIZE(stop_signals); i++) {
		signal_events[i] = evsignal_new(admin.base, stop_signals[i], admin_signal, &admin);
		event_add(signal_events[i], NULL);
		sigaddset(&unblock, stop_signals[i]);
	}
	/* set-up is done: from here on no file is opened and no socket made */
	char *sandbox_error = NULL;
	if (sandbox_apply(config, SANDBOX_KIND_ADMIN, &sandbox_error) < 0)
		fatal("sandbox: %s", sandbox_error);
	/* the master forks us with the stop signals blocked; the handlers are in place now */
	sigprocmask(SIG_UNBLOCK, &unblock, NULL);
	log_info("admin_started", "control=%s metrics_listeners=%zu",
		 log_quote(config->control_socket), setup->metrics_fd_count);

	event_base_dispatch(admin.base);
	block_stop_signals();

	admin_free(&admin);
	for (size_t i = 0; i < ARRAY_SIZE(stop_signals); i++)
		event_free(signal_events[i]);
	event_base_free(admin.base);
	close(setup->master_fd);
	log_info("admin_stopped", "%s", "");
	return 0;
}

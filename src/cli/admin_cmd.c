/* `buzon who|kick|stats|reload|ban`: the operator's commands, which ask the running server's admin
 * process over its control socket ([server] control_socket; protocol in src/admin/admin_proto.h)
 * and print the answer for a person. Exit codes per sysexits.h: 69 when the server is not running,
 * 77 when the caller may not use the socket (only root and the server's user may), 1 when the
 * server refused the request. */
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin_proto.h"
#include "cli/cli.h"
#include "core/config.h"
#include "core/util.h"
#include "net/netlist.h"

#define CLI_EXIT_OK   0
#define CLI_EXIT_FAIL 1

/* How long to wait for an answer: the admin process answers WHO and KICK within 3 s even when a
 * worker is stuck, and RELOAD within 60 s. */
#define ADMIN_CLI_TIMEOUT_SECS	      15
#define ADMIN_CLI_RELOAD_TIMEOUT_SECS 75
/* [server] control_socket's default, for a config file too broken to say otherwise. */
#define ADMIN_CLI_DEFAULT_SOCKET "/run/buzon/control.sock"
/* The most the CLI reads: WHO of a very busy server is a few MiB; past this the answer is broken.
 */
#define ADMIN_CLI_ANSWER_MAX (256UL * 1024 * 1024)

/* An answer: the data lines (without their "* ") and the final line ("OK …" or "ERR …"). */
struct admin_answer {
	char **lines;
	size_t count;
	char *final;
};

static void admin_answer_free(struct admin_answer *answer)
{
	for (size_t i = 0; i < answer->count; i++)
		free(answer->lines[i]);
	free(answer->lines);
	free(answer->final);
	memset(answer, 0, sizeof(*answer));
}

static bool admin_answer_ok(const struct admin_answer *answer)
{
	return strncmp(answer->final, "OK", 2) == 0;
}

/* The text after "OK " or "ERR ". */
static const char *admin_answer_text(const struct admin_answer *answer)
{
	const char *space = strchr(answer->final, ' ');

	return space != NULL ? space + 1 : "";
}

/* The number after "key=" in the final line, or 0. */
static unsigned long long admin_answer_value(const struct admin_answer *answer, const char *key)
{
	size_t len = strlen(key);

	for (const char *p = answer->final; (p = strstr(p, key)) != NULL; p += len) {
		if ((p == answer->final || p[-1] == ' ') && p[len] == '=')
			return strtoull(p + len + 1, NULL, 10);
	}
	return 0;
}

/* Connects to the control socket; prints why not and returns -1 with *status_r set. */
static int admin_cli_connect(const char *path, int *status_r)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "buzon: control socket path too long: %s\n", path);
		*status_r = EX_CONFIG;
		return -1;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "buzon: socket: %s\n", strerror(errno));
		*status_r = EX_OSERR;
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
		return fd;
	int err = errno;
	close(fd);
	if (err == EACCES || err == EPERM) {
		fprintf(stderr,
			"buzon: permission denied on the control socket %s: run this as root or as "
			"the server's user\n",
			path);
		*status_r = EX_NOPERM;
	} else {
		fprintf(stderr, "buzon: the server is not running (control socket %s: %s)\n", path,
			strerror(err));
		*status_r = EX_UNAVAILABLE;
	}
	return -1;
}

/* Sends the request line. MSG_NOSIGNAL: a server that refuses the connection (the peer check)
 * closes it at once, which must end in its ERR line, not in SIGPIPE. Returns -1 with errno. */
static int admin_cli_send(int fd, const char *line)
{
	size_t len = strlen(line), done = 0;

	while (done < len) {
		ssize_t n = send(fd, line + done, len - done, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

/* Splits the answer's text into lines; returns -1 if it does not end with a final line. */
static int admin_answer_parse(char *text, struct admin_answer *answer)
{
	size_t alloc = 0;

	for (char *line = text; *line != '\0';) {
		char *end = strchr(line, '\n');
		if (end == NULL)
			return -1;
		*end = '\0';
		if (answer->final != NULL)
			return -1; /* nothing may follow the final line */
		for (const char *p = line; *p != '\0'; p++) {
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return -1; /* nothing for the terminal to take as a control sequence
					    */
		}
		if (strncmp(line, "* ", 2) == 0) {
			if (answer->count == alloc) {
				alloc = alloc == 0 ? 64 : alloc * 2;
				answer->lines = xrealloc(answer->lines, alloc * sizeof(char *));
			}
			answer->lines[answer->count++] = xstrdup(line + 2);
		} else if (strncmp(line, "OK", 2) == 0 || strncmp(line, "ERR", 3) == 0) {
			answer->final = xstrdup(line);
		} else {
			return -1;
		}
		line = end + 1;
	}
	return answer->final != NULL ? 0 : -1;
}

/* Reads until the server closes; returns the text (NUL-terminated) or NULL with *status_r set. */
static char *admin_cli_read_all(int fd, const char *path, int *status_r)
{
	size_t len = 0, alloc = 4096;
	char *text = xmalloc(alloc);

	for (;;) {
		if (alloc - len < 4096) {
			alloc *= 2;
			text = xrealloc(text, alloc);
		}
		ssize_t n = read(fd, text + len, alloc - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		/* the server closes after its answer; if it did not read all that was sent (a
		 * refused connection, an over-long request), the kernel reports the rest as a reset
		 */
		if (n == 0 || (n < 0 && errno == ECONNRESET && len > 0))
			break;
		if (n < 0 || len + (size_t)n > ADMIN_CLI_ANSWER_MAX) {
			fprintf(stderr, "buzon: no complete answer on %s: %s\n", path,
				n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? "timed out"
				: n < 0						   ? strerror(errno)
					: "answer too long");
			free(text);
			*status_r = EX_UNAVAILABLE;
			return NULL;
		}
		len += (size_t)n;
	}
	text[len] = '\0';
	return text;
}

/* inih handler that keeps [server] control_socket and ignores everything else. */
static int admin_cli_ini_socket(void *arg, const char *section, const char *key, const char *value)
{
	char **path = arg;

	if (strcmp(section, "server") == 0 && strcmp(key, "control_socket") == 0) {
		free(*path);
		*path = xstrdup(value);
	}
	return 1;
}

/* The control socket of the config at config_path. A config with errors still names its socket:
 * `buzon reload` after a bad edit must reach the server to hear why it refuses the file. Returns
 * NULL (and prints why) only when the file cannot be read at all. */
static char *admin_cli_socket_path(const char *config_path)
{
	char *error = NULL;
	struct buzon_config *config = config_load(config_path, &error);

	if (config != NULL) {
		char *path = xstrdup(config->control_socket);
		config_free(&config);
		return path;
	}
	FILE *file = fopen(config_path, "r");
	if (file == NULL) {
		fprintf(stderr, "buzon: %s\n", error);
		free(error);
		return NULL;
	}
	char *path = NULL;
	(void)ini_parse_file(file, admin_cli_ini_socket, &path);
	fclose(file);
	if (path == NULL)
		path = xstrdup(ADMIN_CLI_DEFAULT_SOCKET);
	fprintf(stderr, "buzon: warning: %s\nbuzon: using the control socket %s\n", error, path);
	free(error);
	return path;
}

/* Sends request to the server of the config at config_path and reads the answer. Returns 0 with
 * *answer_r filled (OK or ERR), or an exit status after printing why there is no answer. */
static int admin_cli_ask(const char *config_path, const char *request, unsigned int timeout_secs,
			 struct admin_answer *answer_r)
{
	char *socket_path = admin_cli_socket_path(config_path);
	int status = 0;

	memset(answer_r, 0, sizeof(*answer_r));
	if (socket_path == NULL)
		return EX_CONFIG;
	int fd = admin_cli_connect(socket_path, &status);
	if (fd < 0) {
		free(socket_path);
		return status;
	}
	struct timeval timeout = {.tv_sec = timeout_secs};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
	char *line = xasprintf("%s\n", request);
	char *text = NULL;
	if (admin_cli_send(fd, line) < 0 && errno != EPIPE && errno != ECONNRESET) {
		fprintf(stderr, "buzon: cannot send to %s: %s\n", socket_path, strerror(errno));
		status = EX_UNAVAILABLE;
	} else {
		/* a refused peer gets its ERR line even if the request could not be sent */
		text = admin_cli_read_all(fd, socket_path, &status);
	}
	if (text != NULL && admin_answer_parse(text, answer_r) < 0) {
		fprintf(stderr, "buzon: malformed answer from %s\n", socket_path);
		admin_answer_free(answer_r);
		status = EX_PROTOCOL;
	} else if (text != NULL && strncmp(answer_r->final, "ERR permission denied", 21) == 0) {
		fprintf(stderr, "buzon: %s\n", admin_answer_text(answer_r));
		admin_answer_free(answer_r);
		status = EX_NOPERM;
	}
	free(text);
	free(line);
	close(fd);
	free(socket_path);
	return status;
}

/* Prints a refused request and returns 1. */
static int admin_cli_refused(const struct admin_answer *answer)
{
	fprintf(stderr, "buzon: %s\n", admin_answer_text(answer));
	return CLI_EXIT_FAIL;
}

/* ------------------------------------------------------------------------------------------ */
/* Options */

struct admin_cli_options {
	const char *config_path;
	bool prometheus; /* stats --prometheus */
	bool user;	 /* kick --user */
};

/* The long options beyond -c and --help, as flags of the commands that take them. */
enum { ADMIN_CLI_OPTION_PROMETHEUS = 256, ADMIN_CLI_OPTION_USER = 512 };

/* Parses -c and --help and the command's own options among ADMIN_CLI_OPTION_* (accepted). Returns
 * -1 to go on with the positional arguments from *first_r, else the exit status. */
static int admin_cli_options(int argc, char **argv, const char *usage, int accepted,
			     struct admin_cli_options *opts, int *first_r)
{
	static const struct option options[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {"prometheus", no_argument, NULL, ADMIN_CLI_OPTION_PROMETHEUS},
	    {"user", no_argument, NULL, ADMIN_CLI_OPTION_USER},
	    {NULL, 0, NULL, 0}};
	int opt;

	opts->config_path = CLI_DEFAULT_CONFIG;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+c:h", options, NULL)) != -1) {
		if (opt == 'c') {
			opts->config_path = optarg;
		} else if (opt == 'h') {
			printf("%s", usage);
			return CLI_EXIT_OK;
		} else if (opt == ADMIN_CLI_OPTION_PROMETHEUS && (accepted & opt)) {
			opts->prometheus = true;
		} else if (opt == ADMIN_CLI_OPTION_USER && (accepted & opt)) {
			opts->user = true;
		} else {
			fprintf(stderr, "%s", usage);
			return EX_USAGE;
		}
	}
	*first_r = optind;
	return -1;
}

/* Checks the number of positional arguments; prints the usage when it is wrong. */
static bool admin_cli_argc_ok(int count, int min, int max, const char *usage)
{
	if (count >= min && count <= max)
		return true;
	fprintf(stderr, "%s", usage);
	return false;
}

static void admin_cli_time(long long unix_time, char *buf, size_t size)
{
	time_t t = (time_t)unix_time;
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, size, "%lld", unix_time);
}

/* "3d 4h", "2h 5m", "5m 10s", "42s" */
static void admin_cli_duration(long long secs, char *buf, size_t size)
{
	if (secs < 0)
		secs = 0;
	if (secs >= 86400)
		snprintf(buf, size, "%lldd %lldh", secs / 86400, secs % 86400 / 3600);
	else if (secs >= 3600)
		snprintf(buf, size, "%lldh %lldm", secs / 3600, secs % 3600 / 60);
	else if (secs >= 60)
		snprintf(buf, size, "%lldm %llds", secs / 60, secs % 60);
	else
		snprintf(buf, size, "%llds", secs);
}

static void admin_cli_warn_unanswered(const struct admin_answer *answer)
{
	unsigned long long unanswered = admin_answer_value(answer, "unanswered");

	if (unanswered > 0)
		fprintf(stderr,
			"buzon: %llu worker(s) did not answer in time; their sessions are not "
			"included\n",
			unanswered);
}

/* ------------------------------------------------------------------------------------------ */
/* who */

/* The fields of a WHO line (admin_proto.h). */
enum {
	WHO_USER,
	WHO_IP,
	WHO_STATE,
	WHO_SINCE,
	WHO_SENT,
	WHO_RECEIVED,
	WHO_TLS,
	WHO_SESSION,
	WHO_FIELDS
};

static const char who_usage[] =
    "usage: buzon who [-c FILE]\n"
    "Lists the sessions of the running server: user (- before login), "
    "client address, state,\nconnected since, bytes sent and received, "
    "TLS, session id.\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n";

static int who_split(char *line, char *fields[WHO_FIELDS])
{
	char *saveptr = NULL;
	int n = 0;

	for (char *f = strtok_r(line, " ", &saveptr); f != NULL;
	     f = strtok_r(NULL, " ", &saveptr)) {
		if (n == WHO_FIELDS)
			return -1;
		fields[n++] = f;
	}
	return n == WHO_FIELDS ? 0 : -1;
}

static void who_print(struct admin_answer *answer)
{
	static const char *const headers[WHO_FIELDS] = {"USER", "IP",	    "STATE", "SINCE",
							"SENT", "RECEIVED", "TLS",   "SESSION"};
	char *(*rows)[WHO_FIELDS] = xcalloc(answer->count + 1, sizeof(*rows));
	char(*since)[32] = xcalloc(answer->count + 1, sizeof(*since));
	size_t width[WHO_FIELDS], count = 0;

	for (size_t f = 0; f < WHO_FIELDS; f++)
		width[f] = strlen(headers[f]);
	for (size_t i = 0; i < answer->count; i++) {
		if (who_split(answer->lines[i], rows[count]) < 0)
			continue;
		admin_cli_time(strtoll(rows[count][WHO_SINCE], NULL, 10), since[count],
			       sizeof(since[count]));
		rows[count][WHO_SINCE] = since[count];
		for (size_t f = 0; f < WHO_FIELDS; f++) {
			if (strlen(rows[count][f]) > width[f])
				width[f] = strlen(rows[count][f]);
		}
		count++;
	}
	for (size_t f = 0; f < WHO_FIELDS; f++)
		printf("%-*s%s", (int)width[f], headers[f], f + 1 < WHO_FIELDS ? "  " : "\n");
	for (size_t i = 0; i < count; i++) {
		for (size_t f = 0; f < WHO_FIELDS; f++)
			printf("%-*s%s", (int)width[f], rows[i][f],
			       f + 1 < WHO_FIELDS ? "  " : "\n");
	}
	free(rows);
	free(since);
}

int cli_who_main(int argc, char **argv)
{
	struct admin_cli_options opts = {0};
	struct admin_answer answer;
	int first, status = admin_cli_options(argc, argv, who_usage, 0, &opts, &first);

	if (status >= 0)
		return status;
	if (!admin_cli_argc_ok(argc - first, 0, 0, who_usage))
		return EX_USAGE;
	if ((status = admin_cli_ask(opts.config_path, "WHO", ADMIN_CLI_TIMEOUT_SECS, &answer)) != 0)
		return status;
	if (!admin_answer_ok(&answer)) {
		status = admin_cli_refused(&answer);
	} else {
		who_print(&answer);
		admin_cli_warn_unanswered(&answer);
	}
	admin_answer_free(&answer);
	return status;
}

/* ------------------------------------------------------------------------------------------ */
/* kick */

static const char kick_usage[] =
    "usage: buzon kick [-c FILE] [--user] USER|IP\n"
    "Ends the sessions of a logged-in user, or from a client address, without committing\n"
    "anything they did (their DELEs are not applied). Exits 1 if no session matched.\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n"
    "  --user              take the argument as a user name even if it looks like an address\n";

int cli_kick_main(int argc, char **argv)
{
	struct admin_cli_options opts = {0};
	struct admin_answer answer;
	struct net_addr addr;
	int first, status = admin_cli_options(argc, argv, kick_usage, ADMIN_CLI_OPTION_USER, &opts,
					      &first);

	if (status >= 0)
		return status;
	if (!admin_cli_argc_ok(argc - first, 1, 1, kick_usage))
		return EX_USAGE;
	const char *target = argv[first];
	bool by_ip = !opts.user && net_addr_from_text(target, &addr) == 0;
	if (target[0] == '\0' || strpbrk(target, "\r\n") != NULL) {
		fprintf(stderr, "buzon: bad user name\n");
		return EX_USAGE;
	}
	char *request = xasprintf("KICK %s %s", by_ip ? "IP" : "USER", target);
	status = admin_cli_ask(opts.config_path, request, ADMIN_CLI_TIMEOUT_SECS, &answer);
	free(request);
	if (status != 0)
		return status;
	if (!admin_answer_ok(&answer)) {
		status = admin_cli_refused(&answer);
	} else {
		unsigned long long kicked = admin_answer_value(&answer, "kicked");
		printf("kicked %llu session%s %s %s\n", kicked, kicked == 1 ? "" : "s",
		       by_ip ? "from" : "of", target);
		admin_cli_warn_unanswered(&answer);
		status = kicked > 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
	}
	admin_answer_free(&answer);
	return status;
}

/* ------------------------------------------------------------------------------------------ */
/* stats */

static const char stats_usage[] =
    "usage: buzon stats [-c FILE] [--prometheus]\n"
    "Prints a summary of the running server's counters since it started.\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n"
    "  --prometheus        print every metric in the Prometheus text format instead\n";

/* The sum of the samples of metric name whose labels contain each of the label pairs given
 * (e.g. "result=\"ok\""; NULL for none). Comment lines and other metrics are skipped. */
static double stats_sum(const struct admin_answer *answer, const char *name, const char *label)
{
	size_t len = strlen(name);
	double sum = 0;

	for (size_t i = 0; i < answer->count; i++) {
		const char *line = answer->lines[i];
		if (strncmp(line, name, len) != 0 || (line[len] != ' ' && line[len] != '{'))
			continue;
		const char *labels_end = line[len] == '{' ? strchr(line + len, '}') : line + len;
		if (labels_end == NULL)
			continue;
		if (label != NULL) {
			const char *found = strstr(line + len, label);
			if (found == NULL || found > labels_end)
				continue;
		}
		const char *value = strrchr(line, ' ');
		if (value != NULL)
			sum += strtod(value + 1, NULL);
	}
	return sum;
}

static void stats_print(const struct admin_answer *metrics, const struct admin_answer *bans)
{
#define S(name, label) ((unsigned long long)(stats_sum(metrics, name, label) + 0.5))
	double start = stats_sum(metrics, "buzon_start_time_seconds", NULL);
	char since[32], uptime[32];

	admin_cli_time((long long)start, since, sizeof(since));
	admin_cli_duration((long long)time(NULL) - (long long)start, uptime, sizeof(uptime));
	printf("up since            %s (%s)\n", since, uptime);
	printf("processes           %llu pop3, %llu lmtp, %llu auth, %llu admin\n",
	       S("buzon_processes", "role=\"pop3\""), S("buzon_processes", "role=\"lmtp\""),
	       S("buzon_processes", "role=\"auth\""), S("buzon_processes", "role=\"admin\""));
	printf("sessions now        %llu (%llu logged in)\n", S("buzon_pop3_sessions", NULL),
	       S("buzon_pop3_sessions", "state=\"authenticated\""));
	printf("connections         %llu\n", S("buzon_pop3_connections_total", NULL));
	printf(
	    "logins              %llu ok, %llu failed, %llu refused, %llu errors, %llu aborted\n",
	    S("buzon_pop3_logins_total", "result=\"ok\""),
	    S("buzon_pop3_logins_total", "result=\"failed\""),
	    S("buzon_pop3_logins_total", "result=\"refused\""),
	    S("buzon_pop3_logins_total", "result=\"error\""),
	    S("buzon_pop3_logins_total", "result=\"aborted\""));
	printf("commands            %llu\n", S("buzon_pop3_commands_total", NULL));
	printf("messages            %llu retrieved, %llu deleted\n",
	       S("buzon_pop3_retrieved_messages_total", NULL),
	       S("buzon_pop3_deleted_messages_total", NULL));
	printf("bytes               %llu sent, %llu received\n",
	       S("buzon_pop3_sent_bytes_total", NULL), S("buzon_pop3_received_bytes_total", NULL));
	printf("TLS handshakes      %llu ok, %llu failed\n",
	       S("buzon_tls_handshakes_total", "result=\"ok\""),
	       S("buzon_tls_handshakes_total", "result=\"failed\""));
	printf("maildrop in use     %llu\n", S("buzon_pop3_lock_conflicts_total", NULL));
	printf("deliveries          %llu delivered, %llu tempfail, %llu permfail, %llu over quota, "
	       "%llu no space, %llu too big\n",
	       S("buzon_lmtp_deliveries_total", "result=\"delivered\""),
	       S("buzon_lmtp_deliveries_total", "result=\"tempfail\""),
	       S("buzon_lmtp_deliveries_total", "result=\"permfail\""),
	       S("buzon_lmtp_deliveries_total", "result=\"over_quota\""),
	       S("buzon_lmtp_deliveries_total", "result=\"no_space\""),
	       S("buzon_lmtp_deliveries_total", "result=\"too_big\""));
	printf("login penalties     %llu\n", S("buzon_auth_penalties_total", NULL));
	printf("bans                %llu by the auth process", S("buzon_auth_bans_total", NULL));
	if (bans != NULL)
		printf(", %llu in force now", admin_answer_value(bans, "bans"));
	printf("\n");
#undef S
}

int cli_stats_main(int argc, char **argv)
{
	struct admin_cli_options opts = {0};
	struct admin_answer answer, bans;
	int first, status = admin_cli_options(argc, argv, stats_usage, ADMIN_CLI_OPTION_PROMETHEUS,
					      &opts, &first);

	if (status >= 0)
		return status;
	if (!admin_cli_argc_ok(argc - first, 0, 0, stats_usage))
		return EX_USAGE;
	if ((status = admin_cli_ask(opts.config_path, "STATS", ADMIN_CLI_TIMEOUT_SECS, &answer)) !=
	    0)
		return status;
	if (!admin_answer_ok(&answer)) {
		status = admin_cli_refused(&answer);
	} else if (opts.prometheus) {
		for (size_t i = 0; i < answer.count; i++)
			printf("%s\n", answer.lines[i]);
	} else {
		/* the bans in force are not a counter: the register has them */
		bool have_bans =
		    admin_cli_ask(opts.config_path, "BAN LIST", ADMIN_CLI_TIMEOUT_SECS, &bans) == 0;
		stats_print(&answer, have_bans && admin_answer_ok(&bans) ? &bans : NULL);
		if (have_bans)
			admin_answer_free(&bans);
	}
	admin_answer_free(&answer);
	return status;
}

/* ------------------------------------------------------------------------------------------ */
/* reload */

static const char reload_usage[] =
    "usage: buzon reload [-c FILE]\n"
    "Asks the running server to re-read its configuration, users and TLS files (as SIGHUP does)\n"
    "and prints its answer. Open sessions go on; new ones get the new configuration. Exits 1\n"
    "if the server refused the new configuration (it keeps running with the old one).\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n";

int cli_reload_main(int argc, char **argv)
{
	struct admin_cli_options opts = {0};
	struct admin_answer answer;
	int first, status = admin_cli_options(argc, argv, reload_usage, 0, &opts, &first);

	if (status >= 0)
		return status;
	if (!admin_cli_argc_ok(argc - first, 0, 0, reload_usage))
		return EX_USAGE;
	status = admin_cli_ask(opts.config_path, "RELOAD", ADMIN_CLI_RELOAD_TIMEOUT_SECS, &answer);
	if (status != 0)
		return status;
	if (admin_answer_ok(&answer)) {
		printf("%s\n", admin_answer_text(&answer));
	} else {
		fprintf(stderr, "buzon: reload refused: %s\n", admin_answer_text(&answer));
		status = CLI_EXIT_FAIL;
	}
	admin_answer_free(&answer);
	return status;
}

/* ------------------------------------------------------------------------------------------ */
/* ban */

static const char ban_usage[] =
    "usage: buzon ban list [-c FILE]\n"
    "       buzon ban add [-c FILE] IP [DURATION]\n"
    "       buzon ban del [-c FILE] IP\n"
    "Lists, adds or lifts bans: a banned client's connections are refused. An IPv6 address\n"
    "stands for its /64. DURATION: 90s, 10m, 2h, 7d (default [auth] ban_time).\n"
    "  -c, --config FILE   configuration file (default " CLI_DEFAULT_CONFIG ")\n";

static void ban_print_list(const struct admin_answer *answer)
{
	time_t now = time(NULL);

	printf("%-43s  %-19s  %-9s  %s\n", "ADDRESS", "UNTIL", "LEFT", "SOURCE");
	for (size_t i = 0; i < answer->count; i++) {
		char address[64], source[16], until_text[32], left[32];
		long long until;
		if (sscanf(answer->lines[i], "%63s %lld %15s", address, &until, source) != 3)
			continue;
		admin_cli_time(until, until_text, sizeof(until_text));
		admin_cli_duration(until - (long long)now, left, sizeof(left));
		printf("%-43s  %-19s  %-9s  %s\n", address, until_text, left, source);
	}
}

static int ban_list(const char *config_path)
{
	struct admin_answer answer;
	int status = admin_cli_ask(config_path, "BAN LIST", ADMIN_CLI_TIMEOUT_SECS, &answer);

	if (status != 0)
		return status;
	if (admin_answer_ok(&answer))
		ban_print_list(&answer);
	else
		status = admin_cli_refused(&answer);
	admin_answer_free(&answer);
	return status;
}

/* ban add and ban del: one request, one line of answer. */
static int ban_change(const char *config_path, const char *request)
{
	struct admin_answer answer;
	int status = admin_cli_ask(config_path, request, ADMIN_CLI_TIMEOUT_SECS, &answer);

	if (status != 0)
		return status;
	if (!admin_answer_ok(&answer)) {
		status = admin_cli_refused(&answer);
	} else {
		/* "banned ADDRESS until=T" or "lifted ADDRESS" */
		long long until = (long long)admin_answer_value(&answer, "until");
		char address[64], until_text[32], left[32];
		if (until > 0 && sscanf(admin_answer_text(&answer), "banned %63s", address) == 1) {
			admin_cli_time(until, until_text, sizeof(until_text));
			admin_cli_duration(until - (long long)time(NULL), left, sizeof(left));
			printf("banned %s until %s (%s)\n", address, until_text, left);
		} else {
			printf("%s\n", admin_answer_text(&answer));
		}
	}
	admin_answer_free(&answer);
	return status;
}

int cli_ban_main(int argc, char **argv)
{
	struct admin_cli_options opts = {0};
	int first, status;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		fprintf(argc < 2 ? stderr : stdout, "%s", ban_usage);
		return argc < 2 ? EX_USAGE : CLI_EXIT_OK;
	}
	const char *action = argv[1];
	if ((status = admin_cli_options(argc - 1, argv + 1, ban_usage, 0, &opts, &first)) >= 0)
		return status;
	char **args = argv + 1 + first;
	int count = argc - 1 - first;
	for (int i = 0; i < count; i++) {
		if (args[i][0] == '\0' || strpbrk(args[i], " \r\n") != NULL) {
			fprintf(stderr, "buzon: bad argument '%s'\n", args[i]);
			return EX_USAGE;
		}
	}
	if (strcmp(action, "list") == 0) {
		if (!admin_cli_argc_ok(count, 0, 0, ban_usage))
			return EX_USAGE;
		return ban_list(opts.config_path);
	}
	if (strcmp(action, "add") == 0 || strcmp(action, "del") == 0) {
		bool add = action[0] == 'a';
		if (!admin_cli_argc_ok(count, 1, add ? 2 : 1, ban_usage))
			return EX_USAGE;
		char *request = xasprintf("BAN %s %s%s%s", add ? "ADD" : "DEL", args[0],
					  count == 2 ? " " : "", count == 2 ? args[1] : "");
		status = ban_change(opts.config_path, request);
		free(request);
		return status;
	}
	fprintf(stderr, "buzon: unknown ban action '%s'\n%s", action, ban_usage);
	return EX_USAGE;
}

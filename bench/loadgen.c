/* POP3 load generator for buzon benchmarks: many verified sessions per thread, one JSON line out.
 *
 * Threads. The main thread parses the options, raises RLIMIT_NOFILE, starts --threads workers and
 * then only coordinates phases and watches --timeout. Each worker owns an event_base and every
 * session, timer and statistic on it; workers share nothing but a few atomics (the --sessions
 * budget, the user round-robin and busy flags, the source-address round-robin, the count of printed
 * errors) and the phase reports under one mutex. Statistics are merged after the threads end.
 *
 * Phases, each started by the main thread and acknowledged by every worker:
 *   probes   (--probe) log in the probe sessions;
 *   load     run the mode; --warmup seconds are not counted; new sessions stop at --duration or
 *            when --sessions were started; in-flight sessions finish normally;
 *   release  (idle) after "READY N" and the hold: NOOP then QUIT on every held session;
 *   stop     probes and LMTP clients say QUIT; the threads leave their loops.
 * At --timeout the main thread aborts instead: every live session counts as an error.
 *
 * Sessions. A session runs a script, a list of steps (GREETING, USER, PASS, STAT, ...); each step
 * has a begin function that sends its command and a done function that judges the reply. Replies
 * are parsed straight from the input evbuffer: status, UIDL and LIST lines into a stack buffer,
 * RETR bodies by scanning evbuffer_peek() chunks with memchr(), never copied. One command is in
 * flight per session, so anything the server sends beyond the awaited reply is an error.
 *
 * Counting. Errors always count, warmup included. Sessions and their latency count when the
 * session started after the warmup; messages, bytes, handshakes, deliveries and probe round trips
 * count when they complete after it. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* RFC 1939 caps a reply line at 512 octets with its CRLF; twice that tolerates a chatty server and
 * still bounds what a broken one can make us buffer before the line counts as an error. */
#define LOADGEN_LINE_MAX 1024

/* RFC 1939 §7: a unique-id is 1 to 70 characters from 0x21 to 0x7E. */
#define LOADGEN_UIDL_MAX 70

/* LIST entries one session keeps: 4 million sizes are 32 MB, far beyond any real maildrop. */
#define LOADGEN_MESSAGES_MAX 4000000

/* Only the first errors are printed: a broken run would otherwise flood the terminal. */
#define LOADGEN_ERRORS_PRINTED 20

/* Latency samples kept per metric over all threads (reservoir sampling beyond): at most 8 MB. */
#define LOADGEN_SAMPLES_MAX 1000000

/* Probe sessions send NOOP this often. */
#define LOADGEN_PROBE_INTERVAL_S 0.1

/* Octets read from a socket per callback: big reads mean few callbacks on a 2 GB mailbox. */
#define LOADGEN_READ_MAX 262144

/* evbuffer chunks looked at per evbuffer_peek() while scanning a RETR body. */
#define LOADGEN_PEEK_VECS 16

/* An LMTP client behind its rate catches up by at most this many seconds' worth of messages. */
#define LOADGEN_LMTP_BACKLOG_S 1.0

/* The mixed mode's blend, in percent of sessions: most clients only check for mail, some
 * download what arrived, a few (new devices, reinstalls) fetch the whole maildrop. */
#define LOADGEN_MIXED_CHECK_PERCENT    70
#define LOADGEN_MIXED_DOWNLOAD_PERCENT 25

/* LMTP message bodies are 2 to 4 KB, the size of a typical short text mail. */
#define LOADGEN_LMTP_BODY_MIN	 2048
#define LOADGEN_LMTP_BODY_SPREAD 2048

/* Bounds on options, so that a typo cannot ask for absurd resources. */
#define LOADGEN_THREADS_MAX	256
#define LOADGEN_SOURCES_MAX	64
#define LOADGEN_PROBES_MAX	10000
#define LOADGEN_CONCURRENCY_MAX 1000000
#define LOADGEN_NAME_MAX	128
#define LOADGEN_WIDTH_MAX	32

/* The --sources text: 64 addresses of up to 45 characters (IPv6) with their commas fit. */
#define LOADGEN_SOURCES_TEXT_MAX 4096

/* Descriptors beyond the sessions: stdio, and per thread its epoll fd, eventfd, LMTP socket and
 * libevent's internal notification pair. */
#define LOADGEN_FDS_SPARE      32
#define LOADGEN_FDS_PER_THREAD 6

/* Room for one error reason or one printable copy of a server line. */
#define LOADGEN_REASON_MAX 512

/* Server lines quoted in error messages are cut here. */
#define LOADGEN_QUOTE_MAX 200

/* ---- options ---- */

enum loadgen_mode { MODE_LOGIN, MODE_FETCHALL, MODE_IDLE, MODE_BIGBOX, MODE_MIXED, MODE_COUNT };

static const char *const mode_names[MODE_COUNT] = {"login", "fetchall", "idle", "bigbox", "mixed"};

/* A user name template "prefix%0Wusuffix", parsed once so that names are built with a literal
 * format string. */
struct user_format {
	char prefix[LOADGEN_NAME_MAX];
	char suffix[LOADGEN_NAME_MAX];
	int width;
	bool zero_pad;
};

struct options {
	enum loadgen_mode mode;
	const char *host;
	unsigned port;
	bool tls, tls_resume;
	struct user_format user_format, probe_format;
	const char *password;
	unsigned user_first, user_count;
	unsigned threads, concurrency;
	double duration;   /* 0: no time limit */
	uint64_t sessions; /* 0: no count limit */
	double warmup, hold, timeout;
	uint64_t seed;
	unsigned seeded; /* mixed: messages 1..seeded are the seeded ones, never deleted */
	unsigned probes, probe_first;
	unsigned lmtp_port;
	double lmtp_rate;
	const char *lmtp_domain;
	struct sockaddr_storage server, lmtp, sources[LOADGEN_SOURCES_MAX];
	socklen_t server_len, lmtp_len, source_len[LOADGEN_SOURCES_MAX];
	size_t source_count;
};

/* ---- statistics ---- */

/* Bounded reservoir of samples (milliseconds) with the exact maximum and count beside it. */
struct samples {
	double *values;
	size_t count, allocated, limit;
	uint64_t seen;
	double max;
};

enum session_kind {
	KIND_LOGIN,
	KIND_FETCHALL,
	KIND_CHECK,
	KIND_DOWNLOAD,
	KIND_IDLE,
	KIND_BIGBOX,
	KIND_PROBE,
	KIND_COUNT
};

enum metric {
	METRIC_LATENCY,
	METRIC_PROBE,
	METRIC_PASS,
	METRIC_STAT,
	METRIC_UIDL,
	METRIC_QUIT,
	METRIC_TOTAL,
	METRIC_COUNT
};

struct stats {
	uint64_t sessions, messages, bytes, wire_bytes, handshakes, resumed, noop_ok, deliveries;
	uint64_t deleted, bigbox_messages;
	uint64_t kinds[KIND_COUNT];
	struct samples metrics[METRIC_COUNT];
};

/* ---- sessions ---- */

enum step {
	STEP_GREETING,
	STEP_USER,
	STEP_PASS,
	STEP_STAT,
	STEP_UIDL,
	STEP_LIST,
	STEP_RETR,
	STEP_HOLD,
	STEP_NOOP,
	STEP_PROBE,
	STEP_QUIT,
	STEP_END,
	STEP_COUNT
};

static const enum step script_login[] = {STEP_GREETING, STEP_USER, STEP_PASS,
					 STEP_STAT,	STEP_QUIT, STEP_END};
static const enum step script_fetchall[] = {STEP_GREETING, STEP_USER, STEP_PASS, STEP_UIDL,
					    STEP_LIST,	   STEP_RETR, STEP_QUIT, STEP_END};
static const enum step script_check[] = {STEP_GREETING, STEP_USER, STEP_PASS, STEP_STAT,
					 STEP_UIDL,	STEP_QUIT, STEP_END};
static const enum step script_idle[] = {STEP_GREETING, STEP_USER, STEP_PASS, STEP_HOLD,
					STEP_NOOP,     STEP_QUIT, STEP_END};
static const enum step script_probe[] = {STEP_GREETING, STEP_USER, STEP_PASS,
					 STEP_PROBE,	STEP_QUIT, STEP_END};

struct kind_info {
	const char *name;
	const enum step *script;
	bool new_only; /* RETR only the messages after --seeded */
	bool deletes;  /* DELE each message after its RETR */
};

static const struct kind_info kind_table[KIND_COUNT] = {
    [KIND_LOGIN] = {"login", script_login, false, false},
    [KIND_FETCHALL] = {"fetchall", script_fetchall, false, false},
    [KIND_CHECK] = {"check", script_check, false, false},
    [KIND_DOWNLOAD] = {"download", script_fetchall, true, true},
    [KIND_IDLE] = {"idle", script_idle, false, false},
    [KIND_BIGBOX] = {"bigbox", script_check, false, false},
    [KIND_PROBE] = {"probe", script_probe, false, false},
};

enum expect {
	EXPECT_NOTHING, /* parked: any input is an error */
	EXPECT_STATUS,	/* one status line */
	EXPECT_LINES,	/* status line, then lines up to "." */
	EXPECT_BODY	/* status line, then a message body up to "." */
};

/* Where a RETR body scan is: octets are counted as the client would store them (un-stuffed, every
 * line with its CRLF). */
struct body_scan {
	uint64_t octets, expected;
	uint64_t line_len; /* wire octets of the current line so far */
	bool line_dot;	   /* the current line starts with "." */
	bool prev_cr;	   /* the last octet seen was CR */
};

struct session;
typedef int line_handler(struct session *s, const char *line, size_t len, const char **error_r);

struct reader {
	enum expect expect;
	bool status_seen;
	line_handler *on_line;
	struct body_scan body;
};

struct worker;

struct session {
	struct worker *worker;
	struct session *prev, *next; /* the worker's list of live sessions */
	struct bufferevent *bev;
	enum session_kind kind;
	const enum step *script;
	size_t step;
	bool parked;	   /* waits for the coordinator (HOLD) or its probe timer */
	bool measured;	   /* started after the warmup */
	bool logged_in;	   /* PASS answered +OK */
	bool user_claimed; /* holds user_busy[user_slot] */
	bool probe_ready;  /* a probe that reached its NOOP loop */
	size_t user_slot;
	char user[LOADGEN_NAME_MAX];
	double started_at, sent_at;
	double step_ms[STEP_COUNT];
	struct reader reader;
	bool have_stat, have_uidl;
	uint64_t stat_count, uidl_count, list_count;
	uint64_t *sizes; /* LIST sizes indexed by message number */
	size_t sizes_allocated;
	uint64_t msg; /* the message the RETR loop is at */
	bool dele_due, dele_sent;
	struct event *probe_timer;
	unsigned probe_number;
	double probe_due;
};

/* ---- LMTP ---- */

enum lmtp_state {
	LMTP_GREETING,
	LMTP_LHLO,
	LMTP_READY, /* between messages */
	LMTP_MAIL,
	LMTP_RCPT,
	LMTP_DATA,
	LMTP_BODY,
	LMTP_QUIT,
	LMTP_STATE_COUNT
};

/* What each state sent and the reply class it needs ('2' for 2xx, '3' for 354). */
static const struct {
	const char *name;
	char reply_class;
} lmtp_states[LMTP_STATE_COUNT] = {
    [LMTP_GREETING] = {"greeting", '2'}, [LMTP_LHLO] = {"LHLO", '2'},
    [LMTP_READY] = {"idle", 0},		 [LMTP_MAIL] = {"MAIL FROM", '2'},
    [LMTP_RCPT] = {"RCPT TO", '2'},	 [LMTP_DATA] = {"DATA", '3'},
    [LMTP_BODY] = {"message", '2'},	 [LMTP_QUIT] = {"QUIT", '2'},
};

struct lmtp_client {
	struct worker *worker;
	struct bufferevent *bev; /* NULL while disconnected */
	struct event *timer;
	enum lmtp_state state;
	double due, interval;
	uint64_t sent; /* messages begun; numbers the next one */
};

/* ---- workers and coordination ---- */

enum report {
	REPORT_PROBES_READY,
	REPORT_LOGGED_IN,
	REPORT_LOAD_DONE,
	REPORT_STOPPED,
	REPORT_COUNT
};

enum request {
	REQUEST_PROBES = 1 << 0,
	REQUEST_LOAD = 1 << 1,
	REQUEST_RELEASE = 1 << 2,
	REQUEST_STOP = 1 << 3,
	REQUEST_ABORT = 1 << 4
};

struct loadgen;

struct worker {
	struct loadgen *lg;
	const struct options *opt;
	unsigned number;
	pthread_t thread;
	bool thread_started;
	struct event_base *base;
	int wake_fd;
	struct event *wake_ev, *warmup_ev, *duration_ev, *update_ev;
	_Atomic unsigned requests;
	struct session *sessions;
	unsigned conc; /* this thread's share of --concurrency */

	bool load_running, measuring, stopping, exhausted, load_reported, filling;
	unsigned load_active;

	uint64_t idle_target, idle_started, idle_settled;
	unsigned idle_logging_in;
	bool released, idle_reported;

	unsigned probe_target, probes_settled;
	bool probes_requested, probes_active, probes_reported;

	struct lmtp_client *lmtp;

	bool stop_requested, aborted, stopped;
	SSL_SESSION *tls_session; /* --tls-resume: the newest session ticket */
	uint64_t rng, sample_rng;
	uint64_t errors;
	struct stats stats;
	char reason[LOADGEN_REASON_MAX];
};

struct loadgen {
	struct options opt;
	SSL_CTX *ssl_ctx;
	struct worker *workers;
	_Atomic uint64_t sessions_claimed, user_next, source_next, logged_in;
	_Atomic unsigned errors_printed;
	_Atomic unsigned char *user_busy;
	double started, load_start, load_end, ready_s;
	bool timed_out;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned reports[REPORT_COUNT];
};

static void session_run_step(struct session *s);
static void session_fail(struct session *s, const char *reason);
static void worker_update(struct worker *w);
static void lmtp_start(struct worker *w);
static void lmtp_stop(struct worker *w);
static void lmtp_abort(struct worker *w);

/* ---- small helpers ---- */

static double clock_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timeval timeval_from_seconds(double seconds)
{
	struct timeval tv;

	if (seconds < 0)
		seconds = 0;
	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	return tv;
}

/* splitmix64: turns the seed into well-mixed xorshift state. */
static uint64_t rng_seed(uint64_t seed)
{
	uint64_t z = seed + 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return z != 0 ? z : 1;
}

/* xorshift64*: cheap, deterministic, good enough to pick session kinds and body sizes. */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* Copies a server line for an error message: control octets become '?', long lines are cut. */
static const char *quote_line(const char *line, char *buf, size_t size)
{
	size_t i;

	for (i = 0; line[i] != '\0' && i + 1 < size && i < LOADGEN_QUOTE_MAX; i++) {
		char c = line[i];

		buf[i] = c >= 0x20 && c < 0x7f ? c : '?'; /* also non-ASCII, signed char or not */
	}
	buf[i] = '\0';
	return buf;
}

/* Parses a decimal number at *p and advances past it; -1 without digits or on overflow. */
static int parse_u64(const char **p, uint64_t *value_r)
{
	const char *s = *p;
	uint64_t value = 0;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned digit = (unsigned)(*s - '0');

		if (value > (UINT64_MAX - digit) / 10)
			return -1;
		value = value * 10 + digit;
	}
	*p = s;
	*value_r = value;
	return 0;
}

/* ---- samples ---- */

static void samples_add(struct samples *sm, double value, uint64_t *rng)
{
	if (sm->seen == 0 || value > sm->max)
		sm->max = value;
	sm->seen++;
	if (sm->count < sm->limit) {
		if (sm->count == sm->allocated) {
			size_t want = sm->allocated == 0 ? 1024 : sm->allocated * 2;
			double *grown;

			if (want > sm->limit)
				want = sm->limit;
			grown = realloc(sm->values, want * sizeof(*grown));
			if (grown == NULL)
				return; /* the sample is lost, the count and maximum stay exact */
			sm->values = grown;
			sm->allocated = want;
		}
		sm->values[sm->count++] = value;
		return;
	}
	/* Reservoir sampling (Algorithm R): every sample stays with probability limit/seen. */
	uint64_t slot = rng_next(rng) % sm->seen;
	if (slot < sm->limit)
		sm->values[slot] = value;
}

static void samples_clear(struct samples *sm)
{
	sm->count = 0;
	sm->seen = 0;
	sm->max = 0;
}

static void samples_free(struct samples *sm)
{
	free(sm->values);
	sm->values = NULL;
	sm->count = sm->allocated = 0;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values; permille 500 is the median. */
static double percentile(const double *sorted, size_t count, unsigned permille)
{
	size_t rank;

	if (count == 0)
		return 0;
	rank = (size_t)(((uint64_t)count * permille + 999) / 1000);
	return sorted[rank > 0 ? rank - 1 : 0];
}

/* ---- user names ---- */

static int user_format_append(char *buf, size_t *used, char c, const char **error_r)
{
	if (*used + 1 >= LOADGEN_NAME_MAX) {
		*error_r = "user format too long";
		return -1;
	}
	buf[(*used)++] = c;
	buf[*used] = '\0';
	return 0;
}

/* Accepts a template with exactly one %u (optionally %0Wu or %Wu) and %% for a percent sign. */
static int user_format_parse(const char *text, struct user_format *fmt, const char **error_r)
{
	char *out;
	size_t used = 0;
	bool seen = false;

	memset(fmt, 0, sizeof(*fmt));
	out = fmt->prefix;
	for (const char *p = text; *p != '\0'; p++) {
		if (*p != '%' || p[1] == '%') {
			if (user_format_append(out, &used, *p, error_r) < 0)
				return -1;
			p += *p == '%';
			continue;
		}
		if (seen) {
			*error_r = "user format has more than one %u";
			return -1;
		}
		p++;
		if (*p == '0') {
			fmt->zero_pad = true;
			p++;
		}
		for (; *p >= '0' && *p <= '9'; p++) {
			fmt->width = fmt->width * 10 + (*p - '0');
			if (fmt->width > LOADGEN_WIDTH_MAX) {
				*error_r = "user format width too large";
				return -1;
			}
		}
		if (*p != 'u') {
			*error_r = "user format supports only %u, %0Nu, %Nu and %%";
			return -1;
		}
		seen = true;
		out = fmt->suffix;
		used = 0;
	}
	if (!seen) {
		*error_r = "user format needs one %u";
		return -1;
	}
	return 0;
}

static void user_format_name(const struct user_format *fmt, unsigned number, char *buf, size_t size)
{
	snprintf(buf, size, fmt->zero_pad ? "%s%0*u%s" : "%s%*u%s", fmt->prefix, fmt->width, number,
		 fmt->suffix);
}

/* Picks the next user round-robin, skipping users another session of this run holds, so that with
 * --concurrency <= --user-count no two sessions ask for the same maildrop lock. With more
 * sessions than users it gives up and reuses one: the server's [IN-USE] is then a real error. */
static unsigned users_claim(struct loadgen *lg, size_t *slot_r, bool *claimed_r)
{
	const struct options *opt = &lg->opt;
	uint64_t slot = 0;

	for (unsigned tries = 0; tries < opt->user_count; tries++) {
		slot = atomic_fetch_add(&lg->user_next, 1) % opt->user_count;
		if (atomic_exchange(&lg->user_busy[slot], 1) == 0) {
			*claimed_r = true;
			*slot_r = slot;
			return opt->user_first + (unsigned)slot;
		}
	}
	*claimed_r = false;
	*slot_r = slot;
	return opt->user_first + (unsigned)slot;
}

/* ---- coordination ---- */

static void coord_report(struct loadgen *lg, enum report report)
{
	pthread_mutex_lock(&lg->lock);
	lg->reports[report]++;
	pthread_cond_broadcast(&lg->cond);
	pthread_mutex_unlock(&lg->lock);
}

/* Waits until every worker made the report; -1 when the overall deadline passes first. */
static int coord_wait(struct loadgen *lg, enum report report, double deadline)
{
	int ret = 0;

	pthread_mutex_lock(&lg->lock);
	while (lg->reports[report] < lg->opt.threads) {
		double left = deadline - clock_now();
		struct timespec until;

		if (left <= 0) {
			ret = -1;
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += (time_t)left;
		until.tv_nsec += (long)((left - (double)(time_t)left) * 1e9);
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&lg->cond, &lg->lock, &until);
	}
	pthread_mutex_unlock(&lg->lock);
	return ret;
}

static void coord_request(struct worker *w, enum request request)
{
	uint64_t one = 1;

	atomic_fetch_or(&w->requests, (unsigned)request);
	/* The eventfd only wakes the loop; the request bits carry the meaning. */
	if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		fprintf(stderr, "loadgen: cannot wake worker %u: %s\n", w->number, strerror(errno));
}

static void coord_request_all(struct loadgen *lg, enum request request)
{
	for (unsigned i = 0; i < lg->opt.threads; i++)
		coord_request(&lg->workers[i], request);
}

/* ---- errors ---- */

__attribute__((format(printf, 2, 3))) static void worker_error(struct worker *w, const char *fmt,
							       ...)
{
	char message[LOADGEN_REASON_MAX * 2];
	va_list ap;

	w->errors++;
	if (atomic_fetch_add(&w->lg->errors_printed, 1) >= LOADGEN_ERRORS_PRINTED)
		return;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	fprintf(stderr, "loadgen: error: %s\n", message);
}

/* Formats an error reason into the worker's buffer; valid until the next call on this worker. */
__attribute__((format(printf, 2, 3))) static const char *worker_reason(struct worker *w,
								       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->reason, sizeof(w->reason), fmt, ap);
	va_end(ap);
	return w->reason;
}

/* ---- connecting ---- */

/* A non-blocking TCP socket, bound to the next --sources address if any, not yet connected. */
static int connect_socket(struct worker *w, int family, const char **error_r)
{
	const struct options *opt = w->opt;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0) {
		*error_r = worker_reason(w, "socket: %s", strerror(errno));
		return -1;
	}
	if (opt->source_count > 0) {
		size_t i = atomic_fetch_add(&w->lg->source_next, 1) % opt->source_count;

		/* Without it bind() picks the local port at once, among ports unused by any
		 * destination, and each source address is then limited to the ~28k ephemeral
		 * ports; with it the port is chosen at connect() time per 4-tuple. */
		if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) < 0 ||
		    bind(fd, (const struct sockaddr *)&opt->sources[i], opt->source_len[i]) < 0) {
			*error_r = worker_reason(w, "bind source: %s", strerror(errno));
			close(fd);
			return -1;
		}
	}
	/* Commands are small and answered at once: never let Nagle hold one back. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Keeps the thread's newest session ticket for --tls-resume (TLS 1.3 sends tickets after the
 * handshake, so SSL_get1_session() right after it would be too early). */
static int tls_on_new_session(SSL *ssl, SSL_SESSION *session)
{
	struct worker *w = SSL_get_app_data(ssl);

	if (w == NULL || !w->opt->tls_resume)
		return 0;
	SSL_SESSION_free(w->tls_session);
	w->tls_session = session;
	return 1; /* we keep the reference */
}

/* Offers a copy of the thread's newest session: OpenSSL's TLS 1.3 client retires a session once
 * a handshake resumed with it, and connections running side by side would otherwise find the
 * kept one retired by another. The server takes a ticket more than once. */
static void tls_offer_session(struct worker *w, SSL *ssl)
{
	SSL_SESSION *copy;

	if (w->tls_session == NULL || (copy = SSL_SESSION_dup(w->tls_session)) == NULL)
		return;
	SSL_set_session(ssl, copy); /* takes its own reference */
	SSL_SESSION_free(copy);
}

/* Plain: libevent connects, so that a refused or failed connect arrives as BEV_EVENT_ERROR with
 * its errno (a socket bufferevent that did not connect by itself reports a refusal as EOF). */
static struct bufferevent *connect_plain(struct worker *w, int fd,
					 const struct sockaddr_storage *to, socklen_t to_len,
					 const char **error_r)
{
	struct bufferevent *bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);

	if (bev == NULL) {
		close(fd);
		*error_r = "bufferevent_socket_new failed";
		return NULL;
	}
	if (bufferevent_socket_connect(bev, (const struct sockaddr *)to, (int)to_len) < 0) {
		*error_r = worker_reason(w, "connect: %s", strerror(errno));
		bufferevent_free(bev);
		return NULL;
	}
	return bev;
}

/* TLS: the socket connects by itself and the handshake starts once it is writable; a failed
 * connect surfaces as a handshake error. */
static struct bufferevent *connect_tls(struct worker *w, int fd, const struct sockaddr_storage *to,
				       socklen_t to_len, const char **error_r)
{
	struct bufferevent *bev;
	SSL *ssl;

	if (connect(fd, (const struct sockaddr *)to, to_len) < 0 && errno != EINPROGRESS) {
		*error_r = worker_reason(w, "connect: %s", strerror(errno));
		close(fd);
		return NULL;
	}
	ssl = SSL_new(w->lg->ssl_ctx);
	if (ssl == NULL) {
		close(fd);
		*error_r = "SSL_new failed";
		return NULL;
	}
	SSL_set_app_data(ssl, w);
	if (w->opt->tls_resume)
		tls_offer_session(w, ssl);
	bev = bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
					     BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		close(fd);
		*error_r = "bufferevent_openssl_socket_new failed";
	}
	return bev;
}

/* Opens a connection to `to` with the callbacks set before anything can be reported. */
static struct bufferevent *connect_open(struct worker *w, const struct sockaddr_storage *to,
					socklen_t to_len, bool tls, bufferevent_data_cb on_read,
					bufferevent_event_cb on_event, void *arg,
					const char **error_r)
{
	int fd = connect_socket(w, to->ss_family, error_r);
	struct bufferevent *bev;

	if (fd < 0)
		return NULL;
	bev = tls ? connect_tls(w, fd, to, to_len, error_r)
		  : connect_plain(w, fd, to, to_len, error_r);
	if (bev == NULL)
		return NULL;
	bufferevent_setcb(bev, on_read, NULL, on_event, arg);
	bufferevent_set_max_single_read(bev, LOADGEN_READ_MAX);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	return bev;
}

/* Describes a bufferevent error or EOF for an error message. */
static const char *describe_event(struct worker *w, struct bufferevent *bev, short what, bool tls)
{
	int err = EVUTIL_SOCKET_ERROR();
	unsigned long ssl_err = 0, e;
	char text[256];

	while (tls && (e = bufferevent_get_openssl_error(bev)) != 0) {
		if (ssl_err == 0)
			ssl_err = e;
	}
	if (what & BEV_EVENT_EOF)
		return "connection closed by the server";
	/* libevent queues SSL_get_error()'s code when OpenSSL queued nothing: 5 is
	 * SSL_ERROR_SYSCALL, whose reason is in errno. */
	if (ssl_err != 0 && ERR_GET_LIB(ssl_err) == 0) {
		return worker_reason(w, "TLS: %s", err != 0 ? strerror(err) : "I/O error");
	}
	if (ssl_err != 0) {
		ERR_error_string_n(ssl_err, text, sizeof(text));
		return worker_reason(w, "TLS: %s", text);
	}
	return worker_reason(w, "%s", err != 0 ? strerror(err) : "connection error");
}

/* ---- reading replies ---- */

static void worker_count_wire(struct worker *w, size_t octets)
{
	if (w->measuring)
		w->stats.wire_bytes += octets;
}

/* Takes one CRLF-terminated line (without CRLF) into line[LOADGEN_LINE_MAX + 1]. Returns 1 with
 * a line, 0 when more input is needed, -1 on an over-long line or one holding NUL or bare LF. */
static int line_take(struct worker *w, struct evbuffer *in, char *line, size_t *len_r,
		     const char **error_r)
{
	size_t eol_len = 0;
	struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
	size_t len;

	if (eol.pos < 0) {
		if (evbuffer_get_length(in) > LOADGEN_LINE_MAX) {
			*error_r = "reply line too long or not ended by CRLF";
			return -1;
		}
		return 0;
	}
	len = (size_t)eol.pos;
	if (len > LOADGEN_LINE_MAX) {
		*error_r = "reply line too long";
		return -1;
	}
	evbuffer_remove(in, line, len);
	evbuffer_drain(in, eol_len);
	line[len] = '\0';
	worker_count_wire(w, len + eol_len);
	if (memchr(line, '\n', len) != NULL || strlen(line) != len) {
		*error_r = "reply line holds a bare LF or a NUL";
		return -1;
	}
	*len_r = len;
	return 1;
}

/* Scans one contiguous piece of a RETR body. Returns 1 after the terminating ".CRLF" (with
 * *taken_r octets used, the terminator included), 0 when the piece is used up, -1 if malformed. */
static int body_scan_chunk(struct body_scan *b, const char *data, size_t size, size_t *taken_r,
			   const char **error_r)
{
	const char *p = data, *end = data + size;
	int ret = 0;

	while (p < end) {
		const char *nl;
		bool cr;

		if (b->line_len == 0)
			b->line_dot = *p == '.';
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			b->line_len += (uint64_t)(end - p);
			b->prev_cr = end[-1] == '\r';
			p = end;
			/* The pending line could at most be the 3-octet terminator. */
			if (b->octets + b->line_len > b->expected + 3) {
				*error_r = "body longer than its LIST size";
				ret = -1;
			}
			break;
		}
		cr = nl > p ? nl[-1] == '\r' : b->prev_cr;
		b->line_len += (uint64_t)(nl - p) + 1;
		p = nl + 1;
		if (!cr) {
			*error_r = "bare LF in the body";
			ret = -1;
			break;
		}
		if (b->line_dot && b->line_len == 3) {
			ret = 1;
			break;
		}
		b->octets += b->line_len - (b->line_dot ? 1 : 0);
		b->line_len = 0;
		b->prev_cr = false;
		if (b->octets > b->expected) {
			*error_r = "body longer than its LIST size";
			ret = -1;
			break;
		}
	}
	*taken_r = (size_t)(p - data);
	return ret;
}

/* Scans RETR body octets straight from the evbuffer's chunks, draining what it has seen. */
static int body_scan(struct session *s, struct evbuffer *in, const char **error_r)
{
	struct body_scan *b = &s->reader.body;

	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec vec[LOADGEN_PEEK_VECS];
		int n = evbuffer_peek(in, -1, NULL, vec, LOADGEN_PEEK_VECS);
		size_t used = 0;
		int ret = 0;

		if (n > LOADGEN_PEEK_VECS)
			n = LOADGEN_PEEK_VECS; /* the rest on the next round */
		for (int i = 0; i < n && ret == 0; i++) {
			size_t taken = 0;

			ret = body_scan_chunk(b, vec[i].iov_base, vec[i].iov_len, &taken, error_r);
			used += taken;
		}
		evbuffer_drain(in, used);
		worker_count_wire(s->worker, used);
		if (ret < 0) {
			*error_r =
			    worker_reason(s->worker, "message %" PRIu64 ": %s", s->msg, *error_r);
			return -1;
		}
		if (ret > 0) {
			if (b->octets != b->expected) {
				*error_r = worker_reason(s->worker,
							 "message %" PRIu64 ": body of %" PRIu64
							 " octets, LIST said %" PRIu64,
							 s->msg, b->octets, b->expected);
				return -1;
			}
			return 1;
		}
	}
	return 0;
}

/* ---- steps ---- */

enum step_begin {
	BEGIN_SENT,  /* a command is out (or the greeting awaited) */
	BEGIN_SKIP,  /* nothing to do: on to the next step */
	BEGIN_PARK,  /* wait for the coordinator or a timer */
	BEGIN_FAILED /* out of memory */
};

enum step_done { DONE_NEXT, DONE_AGAIN, DONE_FAILED };

struct step_ops {
	const char *name;
	enum step_begin (*begin)(struct session *s);
	/* Checks the +OK status line; NULL when there is nothing in it to check. */
	int (*on_ok)(struct session *s, const char *line, const char **error_r);
	/* Judges the whole reply: NULL means DONE_NEXT. */
	enum step_done (*done)(struct session *s, const char **error_r);
};

static void reader_expect(struct session *s, enum expect expect)
{
	memset(&s->reader, 0, sizeof(s->reader));
	s->reader.expect = expect;
}

/* Queues one command line and sets what its reply must look like. */
__attribute__((format(printf, 3, 4))) static int session_send(struct session *s, enum expect expect,
							      const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	if (ret < 0 || evbuffer_add(out, "\r\n", 2) < 0)
		return -1;
	reader_expect(s, expect);
	s->sent_at = clock_now();
	return 0;
}

static enum step_begin sent(int ret)
{
	return ret < 0 ? BEGIN_FAILED : BEGIN_SENT;
}

static enum step_begin step_greeting_begin(struct session *s)
{
	reader_expect(s, EXPECT_STATUS);
	s->sent_at = s->started_at;
	return BEGIN_SENT;
}

static enum step_begin step_user_begin(struct session *s)
{
	return sent(session_send(s, EXPECT_STATUS, "USER %s", s->user));
}

static enum step_begin step_pass_begin(struct session *s)
{
	return sent(session_send(s, EXPECT_STATUS, "PASS %s", s->worker->opt->password));
}

static enum step_done step_pass_done(struct session *s, const char **error_r)
{
	s->logged_in = true;
	return DONE_NEXT;
}

static enum step_begin step_stat_begin(struct session *s)
{
	return sent(session_send(s, EXPECT_STATUS, "STAT"));
}

/* "+OK nn mm" (RFC 1939 §5). */
static int step_stat_ok(struct session *s, const char *line, const char **error_r)
{
	const char *p = line + 3;
	uint64_t size;

	if (*p++ != ' ' || parse_u64(&p, &s->stat_count) < 0 || *p++ != ' ' ||
	    parse_u64(&p, &size) < 0 || (*p != '\0' && *p != ' ')) {
		*error_r = "malformed STAT reply";
		return -1;
	}
	s->have_stat = true;
	return 0;
}

/* Parses "n rest" of a multi-line listing where n must be the next message number. */
static int listing_number(struct session *s, const char **p, uint64_t expected,
			  const char **error_r)
{
	uint64_t n;

	if (parse_u64(p, &n) < 0 || **p != ' ') {
		*error_r = "malformed listing line";
		return -1;
	}
	if (n != expected) {
		*error_r = worker_reason(
		    s->worker, "listing line for message %" PRIu64 " where %" PRIu64 " was due", n,
		    expected);
		return -1;
	}
	(*p)++;
	return 0;
}

static int uidl_on_line(struct session *s, const char *line, size_t len, const char **error_r)
{
	const char *p = line;
	size_t uid_len;

	if (listing_number(s, &p, s->uidl_count + 1, error_r) < 0)
		return -1;
	uid_len = len - (size_t)(p - line);
	if (uid_len < 1 || uid_len > LOADGEN_UIDL_MAX) {
		*error_r = "UIDL unique-id not 1 to 70 characters";
		return -1;
	}
	for (; *p != '\0'; p++) {
		if (*p < 0x21 || *p > 0x7e) {
			*error_r = "UIDL unique-id holds a character outside 0x21-0x7E";
			return -1;
		}
	}
	s->uidl_count++;
	return 0;
}

static enum step_begin step_uidl_begin(struct session *s)
{
	if (session_send(s, EXPECT_LINES, "UIDL") < 0)
		return BEGIN_FAILED;
	s->uidl_count = 0;
	s->reader.on_line = uidl_on_line;
	return BEGIN_SENT;
}

static enum step_done step_uidl_done(struct session *s, const char **error_r)
{
	if (s->have_stat && s->uidl_count != s->stat_count) {
		*error_r =
		    worker_reason(s->worker, "UIDL listed %" PRIu64 " messages, STAT %" PRIu64,
				  s->uidl_count, s->stat_count);
		return DONE_FAILED;
	}
	s->have_uidl = true;
	return DONE_NEXT;
}

static int list_on_line(struct session *s, const char *line, size_t len, const char **error_r)
{
	const char *p = line;
	uint64_t size;

	if (listing_number(s, &p, s->list_count + 1, error_r) < 0)
		return -1;
	if (parse_u64(&p, &size) < 0 || *p != '\0') {
		*error_r = "malformed LIST line";
		return -1;
	}
	if (s->list_count + 1 >= s->sizes_allocated) {
		size_t want = s->sizes_allocated == 0 ? 64 : s->sizes_allocated * 2;
		uint64_t *grown;

		if (s->list_count + 1 > LOADGEN_MESSAGES_MAX) {
			*error_r = "LIST lists more than 4,000,000 messages";
			return -1;
		}
		grown = realloc(s->sizes, want * sizeof(*grown));
		if (grown == NULL) {
			*error_r = "out of memory";
			return -1;
		}
		s->sizes = grown;
		s->sizes_allocated = want;
	}
	s->sizes[++s->list_count] = size;
	return 0;
}

static enum step_begin step_list_begin(struct session *s)
{
	if (session_send(s, EXPECT_LINES, "LIST") < 0)
		return BEGIN_FAILED;
	s->list_count = 0;
	s->reader.on_line = list_on_line;
	return BEGIN_SENT;
}

static enum step_done step_list_done(struct session *s, const char **error_r)
{
	const struct options *opt = s->worker->opt;

	if (s->have_uidl && s->list_count != s->uidl_count) {
		*error_r =
		    worker_reason(s->worker, "LIST listed %" PRIu64 " messages, UIDL %" PRIu64,
				  s->list_count, s->uidl_count);
		return DONE_FAILED;
	}
	s->msg = kind_table[s->kind].new_only ? opt->seeded : 0;
	return DONE_NEXT;
}

/* RETR every selected message, each followed by DELE for kinds that delete; after --duration no
 * new RETR starts, so that a huge mailbox does not hold the run open. */
static enum step_begin step_retr_begin(struct session *s)
{
	if (s->dele_due) {
		s->dele_due = false;
		s->dele_sent = true;
		return sent(session_send(s, EXPECT_STATUS, "DELE %" PRIu64, s->msg));
	}
	s->dele_sent = false;
	if (s->msg >= s->list_count || s->worker->stopping || s->worker->aborted)
		return BEGIN_SKIP;
	s->msg++;
	if (session_send(s, EXPECT_BODY, "RETR %" PRIu64, s->msg) < 0)
		return BEGIN_FAILED;
	s->reader.body.expected = s->sizes[s->msg];
	return BEGIN_SENT;
}

static enum step_done step_retr_done(struct session *s, const char **error_r)
{
	struct worker *w = s->worker;

	if (s->dele_sent) {
		if (w->measuring)
			w->stats.deleted++;
		return DONE_AGAIN;
	}
	if (w->measuring) {
		w->stats.messages++;
		w->stats.bytes += s->sizes[s->msg];
	}
	s->dele_due = kind_table[s->kind].deletes;
	return DONE_AGAIN;
}

/* Re-evaluates the worker from its loop, after the next poll. A zero timer rather than
 * event_active(): libevent runs events activated from a callback in the same pass, so sessions
 * that keep failing at once would starve every timer and socket. */
static void worker_update_soon(struct worker *w)
{
	static const struct timeval now = {0, 0};

	evtimer_add(w->update_ev, &now);
}

/* An idle session is in: it waits, without timers, for the coordinator's release. */
static enum step_begin step_hold_begin(struct session *s)
{
	struct worker *w = s->worker;

	if (s->measured)
		samples_add(&w->stats.metrics[METRIC_LATENCY], (clock_now() - s->started_at) * 1e3,
			    &w->sample_rng);
	w->idle_logging_in--;
	w->idle_settled++;
	atomic_fetch_add(&w->lg->logged_in, 1);
	worker_update_soon(w); /* a login slot is free, and all may be in */
	return w->released ? BEGIN_SKIP : BEGIN_PARK;
}

static enum step_begin step_noop_begin(struct session *s)
{
	return sent(session_send(s, EXPECT_STATUS, "NOOP"));
}

static enum step_done step_noop_done(struct session *s, const char **error_r)
{
	s->worker->stats.noop_ok++;
	return DONE_NEXT;
}

static void probe_arm(struct session *s)
{
	double now = clock_now();
	struct timeval tv;

	/* A probe that fell behind skips the NOOPs it missed rather than sending them in a burst.
	 */
	while (s->probe_due < now)
		s->probe_due += LOADGEN_PROBE_INTERVAL_S;
	tv = timeval_from_seconds(s->probe_due - now);
	evtimer_add(s->probe_timer, &tv);
}

/* A probe waits for its next NOOP; it goes on to QUIT once the coordinator stops the run. */
static enum step_begin step_probe_begin(struct session *s)
{
	struct worker *w = s->worker;

	if (!s->probe_ready) {
		s->probe_ready = true;
		w->probes_settled++;
		worker_update_soon(w); /* all probes may be in */
	}
	if (w->stop_requested)
		return BEGIN_SKIP;
	if (w->probes_active)
		probe_arm(s);
	return BEGIN_PARK;
}

static enum step_done step_probe_done(struct session *s, const char **error_r)
{
	struct worker *w = s->worker;

	if (w->measuring)
		samples_add(&w->stats.metrics[METRIC_PROBE], (clock_now() - s->sent_at) * 1e3,
			    &w->sample_rng);
	return DONE_AGAIN;
}

static enum step_begin step_quit_begin(struct session *s)
{
	return sent(session_send(s, EXPECT_STATUS, "QUIT"));
}

static const struct step_ops step_table[STEP_COUNT] = {
    [STEP_GREETING] = {"greeting", step_greeting_begin, NULL, NULL},
    [STEP_USER] = {"USER", step_user_begin, NULL, NULL},
    [STEP_PASS] = {"PASS", step_pass_begin, NULL, step_pass_done},
    [STEP_STAT] = {"STAT", step_stat_begin, step_stat_ok, NULL},
    [STEP_UIDL] = {"UIDL", step_uidl_begin, NULL, step_uidl_done},
    [STEP_LIST] = {"LIST", step_list_begin, NULL, step_list_done},
    [STEP_RETR] = {"RETR", step_retr_begin, NULL, step_retr_done},
    [STEP_HOLD] = {"hold", step_hold_begin, NULL, NULL},
    [STEP_NOOP] = {"NOOP", step_noop_begin, NULL, step_noop_done},
    [STEP_PROBE] = {"probe NOOP", step_probe_begin, NULL, step_probe_done},
    [STEP_QUIT] = {"QUIT", step_quit_begin, NULL, NULL},
    [STEP_END] = {"end", NULL, NULL, NULL},
};

static const char *session_step_name(const struct session *s)
{
	enum step step = s->script[s->step];

	if (step == STEP_RETR && s->dele_sent)
		return "DELE";
	return step_table[step].name;
}

/* ---- session life ---- */

static bool reply_is_ok(const char *line)
{
	return strncmp(line, "+OK", 3) == 0 && (line[3] == '\0' || line[3] == ' ');
}

/* Feeds input to the reply being read: 1 when the reply is complete, 0 for more, -1 on error. */
static int reader_feed(struct session *s, struct evbuffer *in, const char **error_r)
{
	struct reader *rd = &s->reader;
	char line[LOADGEN_LINE_MAX + 1], quoted[LOADGEN_QUOTE_MAX + 1];
	size_t len;
	int ret;

	if (rd->expect == EXPECT_NOTHING) {
		*error_r = "unexpected data from the server";
		return -1;
	}
	if (!rd->status_seen) {
		const struct step_ops *ops = &step_table[s->script[s->step]];

		ret = line_take(s->worker, in, line, &len, error_r);
		if (ret <= 0)
			return ret;
		if (!reply_is_ok(line)) {
			*error_r = worker_reason(s->worker, "server answered: %s",
						 quote_line(line, quoted, sizeof(quoted)));
			return -1;
		}
		if (ops->on_ok != NULL && ops->on_ok(s, line, error_r) < 0)
			return -1;
		rd->status_seen = true;
		if (rd->expect == EXPECT_STATUS)
			return 1;
	}
	if (rd->expect == EXPECT_BODY)
		return body_scan(s, in, error_r);
	while ((ret = line_take(s->worker, in, line, &len, error_r)) > 0) {
		const char *data = line;

		if (line[0] == '.') {
			if (len == 1)
				return 1;
			data++; /* dot-stuffed (RFC 1939 §3) */
			len--;
		}
		if (rd->on_line(s, data, len, error_r) < 0)
			return -1;
	}
	return ret;
}

static void session_destroy(struct session *s)
{
	struct worker *w = s->worker;

	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		w->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	if (s->probe_timer != NULL)
		event_free(s->probe_timer);
	if (s->user_claimed)
		atomic_store(&w->lg->user_busy[s->user_slot], 0);
	if (s->kind == KIND_PROBE) {
		if (!s->probe_ready)
			w->probes_settled++; /* failed before it was ready: settled all the same */
	} else {
		w->load_active--;
		if (s->kind == KIND_IDLE && !s->logged_in) {
			w->idle_logging_in--;
			w->idle_settled++;
		}
	}
	free(s->sizes);
	free(s);
	worker_update(w);
}

static void session_fail(struct session *s, const char *reason)
{
	worker_error(s->worker, "%s session %s at %s: %s", kind_table[s->kind].name, s->user,
		     session_step_name(s), reason);
	session_destroy(s);
}

/* SSL_free() without a shutdown makes OpenSSL mark the session not resumable, which would kill
 * the ticket --tls-resume keeps. A session that ended with QUIT +OK ended cleanly: say so (the
 * server closes without waiting for close_notify anyway). */
static void session_mark_clean(struct session *s)
{
	SSL *ssl = s->bev != NULL ? bufferevent_openssl_get_ssl(s->bev) : NULL;

	if (ssl != NULL)
		SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_get_shutdown(ssl));
}

/* The script ran to its end: count the session, then close it. */
static void session_finish(struct session *s)
{
	struct worker *w = s->worker;
	struct stats *st = &w->stats;

	if (s->measured) {
		double total =
		    s->step_ms[STEP_PASS] + s->step_ms[STEP_STAT] + s->step_ms[STEP_UIDL];

		st->sessions++;
		st->kinds[s->kind]++;
		if (s->kind != KIND_IDLE && s->kind != KIND_PROBE)
			samples_add(&st->metrics[METRIC_LATENCY],
				    (clock_now() - s->started_at) * 1e3, &w->sample_rng);
		if (s->kind == KIND_BIGBOX) {
			samples_add(&st->metrics[METRIC_PASS], s->step_ms[STEP_PASS],
				    &w->sample_rng);
			samples_add(&st->metrics[METRIC_STAT], s->step_ms[STEP_STAT],
				    &w->sample_rng);
			samples_add(&st->metrics[METRIC_UIDL], s->step_ms[STEP_UIDL],
				    &w->sample_rng);
			samples_add(&st->metrics[METRIC_QUIT], s->step_ms[STEP_QUIT],
				    &w->sample_rng);
			samples_add(&st->metrics[METRIC_TOTAL], total, &w->sample_rng);
			st->bigbox_messages = s->stat_count;
		}
	}
	session_mark_clean(s);
	session_destroy(s);
}

static void session_run_step(struct session *s)
{
	for (;;) {
		enum step step = s->script[s->step];

		if (step == STEP_END) {
			session_finish(s);
			return;
		}
		switch (step_table[step].begin(s)) {
		case BEGIN_SENT:
			s->parked = false;
			return;
		case BEGIN_PARK:
			s->parked = true;
			reader_expect(s, EXPECT_NOTHING);
			return;
		case BEGIN_SKIP:
			s->step++;
			break;
		case BEGIN_FAILED:
			session_fail(s, "cannot queue the command (out of memory)");
			return;
		}
	}
}

static void session_reply_done(struct session *s)
{
	enum step step = s->script[s->step];
	const char *error = "reply rejected";
	enum step_done done;

	s->step_ms[step] = (clock_now() - s->sent_at) * 1e3;
	done = step_table[step].done != NULL ? step_table[step].done(s, &error) : DONE_NEXT;
	if (done == DONE_FAILED) {
		session_fail(s, error);
		return;
	}
	if (done == DONE_NEXT)
		s->step++;
	session_run_step(s);
}

/* Moves a parked session on to the step after the one it waits in. */
static void session_resume(struct session *s)
{
	if (!s->parked)
		return;
	s->parked = false;
	s->step++;
	session_run_step(s);
}

static void session_on_read(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	const char *error = "malformed reply";
	int ret = reader_feed(s, in, &error);

	if (ret < 0) {
		session_fail(s, error);
		return;
	}
	if (ret == 0)
		return;
	if (evbuffer_get_length(in) > 0) {
		session_fail(s, "data after the end of the reply");
		return;
	}
	session_reply_done(s);
}

static void session_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;
	struct worker *w = s->worker;

	if (what & BEV_EVENT_CONNECTED) {
		/* TCP connected (plain) or TLS handshake done */
		SSL *ssl = bufferevent_openssl_get_ssl(bev);

		if (ssl == NULL)
			return;
		/* Only now: earlier, a refused connect would also pass for a dirty shutdown. The
		 * server may close after QUIT without close_notify: an EOF, not an error. */
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
		if (w->measuring) {
			w->stats.handshakes++;
			if (SSL_session_reused(ssl))
				w->stats.resumed++;
		}
		return;
	}
	session_fail(s, describe_event(w, bev, what, w->opt->tls));
}

static void probe_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (!s->parked || !s->worker->probes_active)
		return;
	s->parked = false;
	/* The next NOOP is due one interval after this one's slot, even if libevent woke us a
	 * little before it. */
	s->probe_due += LOADGEN_PROBE_INTERVAL_S;
	if (session_send(s, EXPECT_STATUS, "NOOP") < 0)
		session_fail(s, "cannot queue NOOP (out of memory)");
}

/* Who a new session is and what it does. */
struct session_params {
	enum session_kind kind;
	unsigned user_number;
	const struct user_format *format;
	bool user_claimed; /* the session takes over user_busy[user_slot] */
	size_t user_slot;
	unsigned probe_number;
};

/* Opens a session; a failure is counted and reported, and the session is gone at once. */
static void session_start(struct worker *w, const struct session_params *params)
{
	struct session *s = calloc(1, sizeof(*s));
	const char *error = NULL;

	if (s == NULL) {
		if (params->user_claimed)
			atomic_store(&w->lg->user_busy[params->user_slot], 0);
		worker_error(w, "out of memory for a session");
		return;
	}
	s->worker = w;
	s->kind = params->kind;
	s->script = kind_table[params->kind].script;
	s->user_claimed = params->user_claimed;
	s->user_slot = params->user_slot;
	s->probe_number = params->probe_number;
	s->measured = w->measuring;
	s->started_at = clock_now();
	user_format_name(params->format, params->user_number, s->user, sizeof(s->user));
	s->next = w->sessions;
	if (w->sessions != NULL)
		w->sessions->prev = s;
	w->sessions = s;
	if (s->kind != KIND_PROBE)
		w->load_active++;
	if (s->kind == KIND_IDLE)
		w->idle_logging_in++;
	if (s->kind == KIND_PROBE &&
	    (s->probe_timer = evtimer_new(w->base, probe_on_timer, s)) == NULL) {
		session_fail(s, "evtimer_new failed");
		return;
	}
	s->bev = connect_open(w, &w->opt->server, w->opt->server_len, w->opt->tls, session_on_read,
			      session_on_event, s, &error);
	if (s->bev == NULL) {
		session_fail(s, error);
		return;
	}
	session_run_step(s);
}

/* ---- the worker's load ---- */

/* Whether one more load session may start now; claims a slot of the --sessions budget. */
static bool worker_may_start(struct worker *w)
{
	const struct options *opt = w->opt;

	if (!w->load_running || w->stopping || w->exhausted || w->aborted || w->stop_requested)
		return false;
	if (opt->sessions == 0 || !w->measuring)
		return true;
	if (atomic_fetch_add(&w->lg->sessions_claimed, 1) < opt->sessions)
		return true;
	w->exhausted = true;
	return false;
}

static enum session_kind worker_pick_kind(struct worker *w)
{
	uint64_t roll;

	switch (w->opt->mode) {
	case MODE_LOGIN:
		return KIND_LOGIN;
	case MODE_FETCHALL:
		return KIND_FETCHALL;
	case MODE_BIGBOX:
		return KIND_BIGBOX;
	case MODE_IDLE:
		return KIND_IDLE;
	default:
		break;
	}
	roll = rng_next(&w->rng) % 100;
	if (roll < LOADGEN_MIXED_CHECK_PERCENT)
		return KIND_CHECK;
	if (roll < LOADGEN_MIXED_CHECK_PERCENT + LOADGEN_MIXED_DOWNLOAD_PERCENT)
		return KIND_DOWNLOAD;
	return KIND_FETCHALL;
}

static void worker_start_load_session(struct worker *w)
{
	struct session_params params = {.kind = worker_pick_kind(w),
					.format = &w->opt->user_format};

	if (params.kind == KIND_BIGBOX)
		params.user_number = w->opt->user_first; /* bigbox: always the one big maildrop */
	else
		params.user_number = users_claim(w->lg, &params.user_slot, &params.user_claimed);
	session_start(w, &params);
}

static void worker_fill_idle(struct worker *w)
{
	const struct options *opt = w->opt;

	while (!w->aborted && w->released == false && w->idle_logging_in < w->conc &&
	       w->idle_started < w->idle_target) {
		uint64_t i = w->number + w->idle_started * opt->threads; /* global session index */
		struct session_params params = {
		    .kind = KIND_IDLE,
		    .user_number = opt->user_first + (unsigned)(i % opt->user_count),
		    .format = &opt->user_format,
		};

		w->idle_started++;
		session_start(w, &params);
	}
}

/* Starts sessions up to the thread's concurrency. One round at most per call, so that sessions
 * failing at once cannot keep the loop from its timers; the rest follows from update_ev. */
static void worker_fill(struct worker *w)
{
	unsigned budget = w->conc;

	if (w->filling || !w->load_running)
		return;
	w->filling = true;
	if (w->opt->mode == MODE_IDLE) {
		worker_fill_idle(w);
	} else {
		while (budget-- > 0 && w->load_active < w->conc && worker_may_start(w))
			worker_start_load_session(w);
		if (w->load_active < w->conc && !w->exhausted && !w->stopping && !w->aborted)
			worker_update_soon(w);
	}
	w->filling = false;
}

static void worker_on_update(evutil_socket_t fd, short what, void *arg)
{
	worker_update(arg);
}

static bool worker_load_finished(const struct worker *w)
{
	if (!w->load_running || w->load_active > 0)
		return false;
	if (w->opt->mode == MODE_IDLE)
		return w->released;
	return w->conc == 0 || w->stopping || w->exhausted || w->aborted;
}

static void worker_check_probes_ready(struct worker *w)
{
	if (w->probes_requested && !w->probes_reported && w->probes_settled == w->probe_target) {
		w->probes_reported = true;
		coord_report(w->lg, REPORT_PROBES_READY);
	}
}

static void worker_check_idle_ready(struct worker *w)
{
	if (w->opt->mode == MODE_IDLE && w->load_running && !w->idle_reported &&
	    w->idle_settled == w->idle_target) {
		w->idle_reported = true;
		coord_report(w->lg, REPORT_LOGGED_IN);
	}
}

static void worker_check_stopped(struct worker *w)
{
	if (w->stop_requested && !w->stopped && w->sessions == NULL && w->lmtp == NULL) {
		w->stopped = true;
		event_base_loopbreak(w->base);
		coord_report(w->lg, REPORT_STOPPED);
	}
}

/* Re-evaluates the worker after anything changed: start sessions, report phases. */
static void worker_update(struct worker *w)
{
	if (!w->aborted)
		worker_fill(w);
	worker_check_probes_ready(w);
	worker_check_idle_ready(w);
	if (!w->load_reported && worker_load_finished(w)) {
		w->load_reported = true;
		coord_report(w->lg, REPORT_LOAD_DONE);
	}
	worker_check_stopped(w);
}

static void stats_reset(struct stats *st)
{
	struct samples metrics[METRIC_COUNT];

	memcpy(metrics, st->metrics, sizeof(metrics));
	memset(st, 0, sizeof(*st));
	memcpy(st->metrics, metrics, sizeof(metrics));
	for (int m = 0; m < METRIC_COUNT; m++)
		samples_clear(&st->metrics[m]);
}

static void worker_on_warmup(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	stats_reset(&w->stats);
	w->measuring = true;
}

static void worker_on_duration(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	w->stopping = true;
	worker_update(w);
}

static void worker_start_probes(struct worker *w)
{
	const struct options *opt = w->opt;

	w->probes_requested = true;
	for (unsigned j = w->number; j < opt->probes; j += opt->threads) {
		struct session_params params = {
		    .kind = KIND_PROBE,
		    .user_number = opt->probe_first + j,
		    .format = &opt->probe_format,
		    .probe_number = j,
		};

		w->probe_target++;
		session_start(w, &params);
	}
	worker_update(w);
}

/* Arms a timer `at` seconds after the load started, as measured by the main thread. */
static void worker_arm_at(struct worker *w, struct event *ev, double at)
{
	struct timeval tv = timeval_from_seconds(w->lg->load_start + at - clock_now());

	evtimer_add(ev, &tv);
}

static void worker_start_load(struct worker *w)
{
	const struct options *opt = w->opt;
	double now = clock_now();

	w->load_running = true;
	w->measuring = opt->warmup <= 0;
	if (opt->warmup > 0)
		worker_arm_at(w, w->warmup_ev, opt->warmup);
	if (opt->duration > 0)
		worker_arm_at(w, w->duration_ev, opt->warmup + opt->duration);
	/* Probes spread their NOOPs evenly over the interval. */
	w->probes_active = true;
	for (struct session *s = w->sessions; s != NULL; s = s->next) {
		if (s->kind != KIND_PROBE || !s->parked)
			continue;
		s->probe_due =
		    now + LOADGEN_PROBE_INTERVAL_S * (double)s->probe_number / (double)opt->probes;
		probe_arm(s);
	}
	if (opt->lmtp_port != 0)
		lmtp_start(w);
	worker_update(w);
}

static void worker_release(struct worker *w)
{
	struct session *s, *next;

	w->released = true;
	for (s = w->sessions; s != NULL; s = next) {
		next = s->next;
		if (s->kind == KIND_IDLE)
			session_resume(s);
	}
	worker_update(w);
}

static void worker_stop(struct worker *w)
{
	struct session *s, *next;

	w->stop_requested = true;
	w->probes_active = false;
	for (s = w->sessions; s != NULL; s = next) {
		next = s->next;
		if (s->kind == KIND_PROBE && s->parked) {
			evtimer_del(s->probe_timer);
			session_resume(s);
		}
	}
	lmtp_stop(w);
	worker_update(w);
}

/* The overall timeout: whatever is still open is an error. */
static void worker_abort(struct worker *w)
{
	w->aborted = true;
	w->stop_requested = true;
	w->probes_active = false;
	while (w->sessions != NULL)
		session_fail(w->sessions, "overall --timeout reached");
	lmtp_abort(w);
	worker_update(w);
	event_base_loopbreak(w->base);
}

static void worker_on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	uint64_t count;
	unsigned requests;

	if (read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		fprintf(stderr, "loadgen: eventfd read: %s\n", strerror(errno));
	requests = atomic_exchange(&w->requests, 0);
	if (requests & REQUEST_ABORT) {
		worker_abort(w);
		return;
	}
	if (requests & REQUEST_PROBES)
		worker_start_probes(w);
	if (requests & REQUEST_LOAD)
		worker_start_load(w);
	if (requests & REQUEST_RELEASE)
		worker_release(w);
	if (requests & REQUEST_STOP)
		worker_stop(w);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_loop(w->base, 0);
	return NULL;
}

/* ---- LMTP deliveries ---- */

static void lmtp_close(struct lmtp_client *lm)
{
	if (lm->bev != NULL)
		bufferevent_free(lm->bev);
	lm->bev = NULL;
}

static void lmtp_free(struct worker *w)
{
	struct lmtp_client *lm = w->lmtp;

	if (lm == NULL)
		return;
	lmtp_close(lm);
	if (lm->timer != NULL)
		event_free(lm->timer);
	free(lm);
	w->lmtp = NULL;
}

/* Arms the timer for the next message (or a reconnection) at its due time. */
static void lmtp_schedule(struct lmtp_client *lm)
{
	double now = clock_now();
	struct timeval tv;

	lm->due += lm->interval;
	if (lm->due < now - LOADGEN_LMTP_BACKLOG_S)
		lm->due = now - LOADGEN_LMTP_BACKLOG_S;
	tv = timeval_from_seconds(lm->due - now);
	evtimer_add(lm->timer, &tv);
}

static void lmtp_fail(struct lmtp_client *lm, const char *reason)
{
	struct worker *w = lm->worker;

	worker_error(w, "LMTP at %s: %s", lmtp_states[lm->state].name, reason);
	lmtp_close(lm);
	if (w->stop_requested) {
		lmtp_free(w);
		worker_update(w);
		return;
	}
	lmtp_schedule(lm); /* reconnect when the next message is due */
}

__attribute__((format(printf, 3, 4))) static void
lmtp_send(struct lmtp_client *lm, enum lmtp_state state, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(lm->bev);
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	lm->state = state;
	if (ret < 0 || evbuffer_add(out, "\r\n", 2) < 0)
		lmtp_fail(lm, "cannot queue a command (out of memory)");
}

/* The recipient of message `n` of this thread: the thread's users in turn. */
static void lmtp_recipient(const struct lmtp_client *lm, uint64_t n, char *buf, size_t size)
{
	const struct options *opt = lm->worker->opt;
	uint64_t i = lm->worker->number + n * opt->threads;
	char name[LOADGEN_NAME_MAX];

	user_format_name(&opt->user_format, opt->user_first + (unsigned)(i % opt->user_count), name,
			 sizeof(name));
	if (opt->lmtp_domain != NULL)
		snprintf(buf, size, "%s@%s", name, opt->lmtp_domain);
	else
		snprintf(buf, size, "%s", name);
}

/* A deterministic 2-4 KB message, dot-stuffed, ending with CRLF.CRLF. */
static int lmtp_add_message(struct lmtp_client *lm, struct evbuffer *out)
{
	struct worker *w = lm->worker;
	uint64_t target = LOADGEN_LMTP_BODY_MIN + rng_next(&w->rng) % LOADGEN_LMTP_BODY_SPREAD;
	uint64_t n = lm->sent;
	char rcpt[LOADGEN_NAME_MAX * 2];
	int written;

	lmtp_recipient(lm, n, rcpt, sizeof(rcpt));
	written = evbuffer_add_printf(out,
				      "From: <bench@example.org>\r\nTo: <%s>\r\n"
				      "Subject: loadgen message %u-%" PRIu64 "\r\n"
				      "Message-ID: <loadgen.%" PRIu64 ".%u.%" PRIu64
				      "@example.org>\r\n\r\n",
				      rcpt, w->number, n, w->opt->seed, w->number, n);
	for (uint64_t size = 0, line = 0; written >= 0 && size < target; line++) {
		/* Every 16th line starts with a dot, sent stuffed, to exercise transparency. */
		int len = evbuffer_add_printf(out,
					      "%sline %" PRIu64 " of message %" PRIu64
					      ": the quick brown fox jumps over the lazy dog\r\n",
					      line % 16 == 5 ? ".." : "", line, n);
		if (len < 0)
			written = -1;
		size += (uint64_t)len;
	}
	if (written < 0 || evbuffer_add(out, ".\r\n", 3) < 0)
		return -1;
	return 0;
}

static void lmtp_begin_message(struct lmtp_client *lm)
{
	lmtp_send(lm, LMTP_MAIL, "MAIL FROM:<bench@example.org>");
}

/* The reply for the current state was positive: go on. */
static void lmtp_advance(struct lmtp_client *lm)
{
	struct worker *w = lm->worker;
	char rcpt[LOADGEN_NAME_MAX * 2];

	switch (lm->state) {
	case LMTP_GREETING:
		lmtp_send(lm, LMTP_LHLO, "LHLO bench");
		return;
	case LMTP_MAIL:
		lmtp_recipient(lm, lm->sent, rcpt, sizeof(rcpt));
		lmtp_send(lm, LMTP_RCPT, "RCPT TO:<%s>", rcpt);
		return;
	case LMTP_RCPT:
		lmtp_send(lm, LMTP_DATA, "DATA");
		return;
	case LMTP_DATA:
		lm->state = LMTP_BODY;
		if (lmtp_add_message(lm, bufferevent_get_output(lm->bev)) < 0)
			lmtp_fail(lm, "cannot queue the message (out of memory)");
		return;
	case LMTP_BODY:
		lm->sent++;
		if (w->measuring)
			w->stats.deliveries++;
		break;
	case LMTP_QUIT:
		lmtp_free(w);
		worker_update(w);
		return;
	default:
		break;
	}
	lm->state = LMTP_READY;
	if (w->stop_requested)
		lmtp_send(lm, LMTP_QUIT, "QUIT");
	else
		lmtp_schedule(lm);
}

static void lmtp_on_read(struct bufferevent *bev, void *arg)
{
	struct lmtp_client *lm = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[LOADGEN_LINE_MAX + 1], quoted[LOADGEN_QUOTE_MAX + 1];
	const char *error = NULL;
	size_t len;
	int ret;

	while ((ret = line_take(lm->worker, in, line, &len, &error)) > 0) {
		char want = lmtp_states[lm->state].reply_class;

		if (len < 3 || !isdigit((unsigned char)line[0]) ||
		    !isdigit((unsigned char)line[1]) || !isdigit((unsigned char)line[2]) ||
		    (len > 3 && line[3] != ' ' && line[3] != '-')) {
			lmtp_fail(lm, worker_reason(lm->worker, "malformed reply: %s",
						    quote_line(line, quoted, sizeof(quoted))));
			return;
		}
		if (want == 0 || line[0] != want) {
			lmtp_fail(lm, worker_reason(lm->worker, "server answered: %s",
						    quote_line(line, quoted, sizeof(quoted))));
			return;
		}
		if (len > 3 && line[3] == '-')
			continue; /* a continuation line of a multi-line reply */
		if (evbuffer_get_length(in) > 0) {
			lmtp_fail(lm, "data after the end of the reply");
			return;
		}
		lmtp_advance(lm);
		return;
	}
	if (ret < 0)
		lmtp_fail(lm, error);
}

static void lmtp_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct lmtp_client *lm = arg;

	if (what & BEV_EVENT_CONNECTED)
		return; /* the greeting follows */
	lmtp_fail(lm, describe_event(lm->worker, bev, what, false));
}

static void lmtp_connect(struct lmtp_client *lm)
{
	struct worker *w = lm->worker;
	const char *error = NULL;

	lm->state = LMTP_GREETING;
	lm->bev = connect_open(w, &w->opt->lmtp, w->opt->lmtp_len, false, lmtp_on_read,
			       lmtp_on_event, lm, &error);
	if (lm->bev == NULL)
		lmtp_fail(lm, error);
}

static void lmtp_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct lmtp_client *lm = arg;

	if (lm->worker->stop_requested)
		return;
	if (lm->bev == NULL)
		lmtp_connect(lm);
	else if (lm->state == LMTP_READY)
		lmtp_begin_message(lm);
}

static void lmtp_start(struct worker *w)
{
	const struct options *opt = w->opt;
	struct lmtp_client *lm = calloc(1, sizeof(*lm));

	if (lm == NULL) {
		worker_error(w, "out of memory for the LMTP client");
		return;
	}
	lm->worker = w;
	lm->interval = (double)opt->threads / opt->lmtp_rate;
	/* Threads deliver in turn rather than all at the same instant. */
	lm->due =
	    clock_now() + lm->interval * (double)w->number / (double)opt->threads - lm->interval;
	lm->timer = evtimer_new(w->base, lmtp_on_timer, lm);
	w->lmtp = lm;
	if (lm->timer == NULL) {
		worker_error(w, "evtimer_new failed for LMTP");
		lmtp_free(w);
		return;
	}
	lmtp_connect(lm);
}

static void lmtp_stop(struct worker *w)
{
	struct lmtp_client *lm = w->lmtp;

	if (lm == NULL)
		return;
	if (lm->bev == NULL) {
		lmtp_free(w);
		return;
	}
	if (lm->state == LMTP_READY) {
		evtimer_del(lm->timer);
		lmtp_send(lm, LMTP_QUIT, "QUIT");
	}
	/* otherwise the transaction in flight ends first, then lmtp_advance() sends QUIT */
}

static void lmtp_abort(struct worker *w)
{
	struct lmtp_client *lm = w->lmtp;

	if (lm != NULL && lm->bev != NULL && lm->state != LMTP_READY)
		worker_error(w, "LMTP at %s: overall --timeout reached",
			     lmtp_states[lm->state].name);
	lmtp_free(w);
}

/* ---- command line ---- */

static const char usage_text[] =
    "usage: loadgen --mode MODE --port N --password PW [options]\n"
    "POP3 load generator for buzon benchmarks. Every reply is verified; the last line of stdout\n"
    "is one JSON object; the exit status is 0 only when there was no error.\n"
    "\n"
    "Modes (--mode):\n"
    "  login     connect, USER, PASS, STAT, QUIT\n"
    "  fetchall  login, UIDL, LIST, RETR every message (byte-exact against LIST), QUIT\n"
    "  idle      log in --sessions sessions (--concurrency logins at a time), print READY N,\n"
    "            hold, then NOOP and QUIT on each\n"
    "  bigbox    --sessions sequential logins to user --user-first: times PASS, STAT, UIDL, QUIT\n"
    "  mixed     70% check (STAT, UIDL), 25% download new (RETR and DELE messages after\n"
    "            --seeded), 5% fetch all; with --lmtp-port also LMTP deliveries\n"
    "\n"
    "Server:\n"
    "  --host ADDR              server address (default 127.0.0.1)\n"
    "  --port N                 POP3 port (required)\n"
    "  --tls                    implicit TLS from the first byte; the certificate is not checked\n"
    "  --tls-resume             resume TLS sessions: each thread offers its newest session ticket\n"
    "                           on its next connections (implies --tls)\n"
    "  --sources A,B,...        local addresses to bind before connect, in turn\n"
    "Users:\n"
    "  --user-format FMT        user name with one %u, e.g. user%05u (the default)\n"
    "  --user-first K           first user number (default 0)\n"
    "  --user-count N           users K to K+N-1 (default 1)\n"
    "  --password PW            password of every user (required)\n"
    "Load:\n"
    "  --threads N              threads, each with its own event loop (default 1)\n"
    "  --concurrency C          concurrent sessions; idle: logins in flight (default 1)\n"
    "  --duration S             start no session after S seconds (fractions allowed)\n"
    "  --sessions N             sessions to complete in total (required for idle and bigbox)\n"
    "  --warmup S               run S seconds unmeasured before measuring (default 0)\n"
    "  --hold S                 idle: hold S seconds after READY; -1 holds until a newline or\n"
    "                           EOF on stdin (default 0)\n"
    "  --seed N                 seed of the mixed-mode choices and LMTP bodies (default 1)\n"
    "  --seeded N               mixed: messages 1..N are the seeded ones (default 20)\n"
    "  --timeout S              hard limit on the whole run: past it, error and exit 1 (default "
    "600)\n"
    "Latency probes:\n"
    "  --probe N                log in N extra sessions first, then NOOP each every 100 ms\n"
    "                           while the load runs and report the round-trip times\n"
    "  --probe-user-format FMT  (default: --user-format)\n"
    "  --probe-user-first K     (default: --user-first plus --user-count)\n"
    "LMTP (one connection per thread, same host):\n"
    "  --lmtp-port P            deliver messages to the users over LMTP during the load\n"
    "  --lmtp-rate R            messages per second over all threads (default 10)\n"
    "  --lmtp-domain D          RCPT TO:<user@D> (default: RCPT TO:<user>)\n"
    "  --help                   this text\n";

enum option_id {
	OPT_MODE = 256,
	OPT_HOST,
	OPT_PORT,
	OPT_TLS,
	OPT_TLS_RESUME,
	OPT_SOURCES,
	OPT_USER_FORMAT,
	OPT_USER_FIRST,
	OPT_USER_COUNT,
	OPT_PASSWORD,
	OPT_THREADS,
	OPT_CONCURRENCY,
	OPT_DURATION,
	OPT_SESSIONS,
	OPT_WARMUP,
	OPT_HOLD,
	OPT_SEED,
	OPT_SEEDED,
	OPT_TIMEOUT,
	OPT_PROBE,
	OPT_PROBE_USER_FORMAT,
	OPT_PROBE_USER_FIRST,
	OPT_LMTP_PORT,
	OPT_LMTP_RATE,
	OPT_LMTP_DOMAIN,
	OPT_HELP
};

static const struct option long_options[] = {
    {"mode", required_argument, NULL, OPT_MODE},
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"tls", no_argument, NULL, OPT_TLS},
    {"tls-resume", no_argument, NULL, OPT_TLS_RESUME},
    {"sources", required_argument, NULL, OPT_SOURCES},
    {"user-format", required_argument, NULL, OPT_USER_FORMAT},
    {"user-first", required_argument, NULL, OPT_USER_FIRST},
    {"user-count", required_argument, NULL, OPT_USER_COUNT},
    {"password", required_argument, NULL, OPT_PASSWORD},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"sessions", required_argument, NULL, OPT_SESSIONS},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"hold", required_argument, NULL, OPT_HOLD},
    {"seed", required_argument, NULL, OPT_SEED},
    {"seeded", required_argument, NULL, OPT_SEEDED},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"probe", required_argument, NULL, OPT_PROBE},
    {"probe-user-format", required_argument, NULL, OPT_PROBE_USER_FORMAT},
    {"probe-user-first", required_argument, NULL, OPT_PROBE_USER_FIRST},
    {"lmtp-port", required_argument, NULL, OPT_LMTP_PORT},
    {"lmtp-rate", required_argument, NULL, OPT_LMTP_RATE},
    {"lmtp-domain", required_argument, NULL, OPT_LMTP_DOMAIN},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const char *option_name(int id)
{
	for (const struct option *o = long_options; o->name != NULL; o++) {
		if (o->val == id)
			return o->name;
	}
	return "?";
}

/* Strict unsigned parse of a whole argument within [min, max]. */
static int arg_unsigned(const char *text, uint64_t min, uint64_t max, uint64_t *value_r)
{
	const char *p = text;

	if (parse_u64(&p, value_r) < 0 || *p != '\0' || *value_r < min || *value_r > max)
		return -1;
	return 0;
}

/* Strict parse of a whole argument as a finite number of seconds within [min, max]. */
static int arg_seconds(const char *text, double min, double max, double *value_r)
{
	char *end;

	errno = 0;
	*value_r = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(*value_r >= min && *value_r <= max))
		return -1;
	return 0;
}

/* Resolves host:port into addr; names are allowed, the first address wins. */
static int resolve(const char *host, unsigned port, struct sockaddr_storage *addr, socklen_t *len_r)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	char service[16];

	snprintf(service, sizeof(service), "%u", port);
	if (getaddrinfo(host, service, &hints, &res) != 0)
		return -1;
	memcpy(addr, res->ai_addr, res->ai_addrlen);
	*len_r = (socklen_t)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* A source address must be one of this machine's: checked once here, rather than failing every
 * connection of the run. */
static int source_check(const struct sockaddr_storage *addr, socklen_t len)
{
	int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1, ret;

	if (fd < 0)
		return -1;
	ret = setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (ret == 0)
		ret = bind(fd, (const struct sockaddr *)addr, len);
	close(fd);
	return ret;
}

static int parse_sources(struct options *opt, const char *list)
{
	char copy[LOADGEN_SOURCES_TEXT_MAX], *save = NULL;
	size_t len = strlen(list);

	if (len >= sizeof(copy))
		return -1;
	memcpy(copy, list, len + 1);
	for (char *item = strtok_r(copy, ",", &save); item != NULL;
	     item = strtok_r(NULL, ",", &save)) {
		struct sockaddr_storage *ss = &opt->sources[opt->source_count];
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (opt->source_count == LOADGEN_SOURCES_MAX)
			return -1;
		memset(ss, 0, sizeof(*ss));
		if (inet_pton(AF_INET, item, &sin->sin_addr) == 1) {
			sin->sin_family = AF_INET;
			opt->source_len[opt->source_count] = sizeof(*sin);
		} else if (inet_pton(AF_INET6, item, &sin6->sin6_addr) == 1) {
			sin6->sin6_family = AF_INET6;
			opt->source_len[opt->source_count] = sizeof(*sin6);
		} else {
			return -1;
		}
		if (source_check(ss, opt->source_len[opt->source_count]) < 0)
			return -1;
		opt->source_count++;
	}
	return opt->source_count > 0 ? 0 : -1;
}

struct option_state {
	bool mode_set, probe_format_set, probe_first_set;
	uint64_t port, lmtp_port;
	const char *sources;
};

/* Applies one option; -1 with *error_r for a bad value. */
static int option_apply(struct options *opt, struct option_state *st, int id, const char *arg,
			const char **error_r)
{
	uint64_t v = 0;
	int bad = 0;

	switch (id) {
	case OPT_MODE:
		for (int m = 0; m < MODE_COUNT; m++) {
			if (strcmp(arg, mode_names[m]) == 0) {
				opt->mode = (enum loadgen_mode)m;
				st->mode_set = true;
			}
		}
		bad = !st->mode_set;
		break;
	case OPT_HOST:
		opt->host = arg;
		break;
	case OPT_PORT:
		bad = arg_unsigned(arg, 1, 65535, &st->port);
		break;
	case OPT_TLS:
		opt->tls = true;
		break;
	case OPT_TLS_RESUME:
		opt->tls = opt->tls_resume = true;
		break;
	case OPT_SOURCES:
		st->sources = arg;
		break;
	case OPT_USER_FORMAT:
		return user_format_parse(arg, &opt->user_format, error_r);
	case OPT_USER_FIRST:
		bad = arg_unsigned(arg, 0, UINT32_MAX / 2, &v);
		opt->user_first = (unsigned)v;
		break;
	case OPT_USER_COUNT:
		bad = arg_unsigned(arg, 1, UINT32_MAX / 2, &v);
		opt->user_count = (unsigned)v;
		break;
	case OPT_PASSWORD:
		opt->password = arg;
		break;
	case OPT_THREADS:
		bad = arg_unsigned(arg, 1, LOADGEN_THREADS_MAX, &v);
		opt->threads = (unsigned)v;
		break;
	case OPT_CONCURRENCY:
		bad = arg_unsigned(arg, 1, LOADGEN_CONCURRENCY_MAX, &v);
		opt->concurrency = (unsigned)v;
		break;
	case OPT_DURATION:
		bad = arg_seconds(arg, 0.001, 1e7, &opt->duration);
		break;
	case OPT_SESSIONS:
		bad = arg_unsigned(arg, 1, UINT64_MAX / 2, &opt->sessions);
		break;
	case OPT_WARMUP:
		bad = arg_seconds(arg, 0, 1e7, &opt->warmup);
		break;
	case OPT_HOLD:
		bad = arg_seconds(arg, -1, 1e7, &opt->hold) || (opt->hold < 0 && opt->hold != -1);
		break;
	case OPT_SEED:
		bad = arg_unsigned(arg, 0, UINT64_MAX, &opt->seed);
		break;
	case OPT_SEEDED:
		bad = arg_unsigned(arg, 0, LOADGEN_MESSAGES_MAX, &v);
		opt->seeded = (unsigned)v;
		break;
	case OPT_TIMEOUT:
		bad = arg_seconds(arg, 0.001, 1e7, &opt->timeout);
		break;
	case OPT_PROBE:
		bad = arg_unsigned(arg, 0, LOADGEN_PROBES_MAX, &v);
		opt->probes = (unsigned)v;
		break;
	case OPT_PROBE_USER_FORMAT:
		st->probe_format_set = true;
		return user_format_parse(arg, &opt->probe_format, error_r);
	case OPT_PROBE_USER_FIRST:
		bad = arg_unsigned(arg, 0, UINT32_MAX / 2, &v);
		opt->probe_first = (unsigned)v;
		st->probe_first_set = true;
		break;
	case OPT_LMTP_PORT:
		bad = arg_unsigned(arg, 1, 65535, &st->lmtp_port);
		break;
	case OPT_LMTP_RATE:
		bad = arg_seconds(arg, 0.001, 1e6, &opt->lmtp_rate);
		break;
	case OPT_LMTP_DOMAIN:
		opt->lmtp_domain = arg;
		break;
	default:
		*error_r = "unknown option";
		return -1;
	}
	if (bad)
		*error_r = "invalid value";
	return bad ? -1 : 0;
}

/* Cross-checks the options once all are known; -1 with *error_r. */
static int options_check(struct options *opt, struct option_state *st, const char **error_r)
{
	if (!st->mode_set || st->port == 0 || opt->password == NULL) {
		*error_r = "--mode, --port and --password are required";
		return -1;
	}
	opt->port = (unsigned)st->port;
	opt->lmtp_port = (unsigned)st->lmtp_port;
	if ((opt->mode == MODE_LOGIN || opt->mode == MODE_FETCHALL || opt->mode == MODE_MIXED) &&
	    opt->duration == 0 && opt->sessions == 0) {
		*error_r = "this mode needs --duration or --sessions";
		return -1;
	}
	if ((opt->mode == MODE_IDLE || opt->mode == MODE_BIGBOX) && opt->sessions == 0) {
		*error_r = "idle and bigbox need --sessions";
		return -1;
	}
	if (opt->mode == MODE_IDLE && (opt->duration > 0 || opt->warmup > 0)) {
		*error_r = "idle takes --sessions and --hold, not --duration or --warmup";
		return -1;
	}
	if (opt->mode != MODE_IDLE && opt->hold != 0) {
		*error_r = "--hold is for idle mode";
		return -1;
	}
	if (opt->mode == MODE_BIGBOX)
		opt->concurrency = 1;
	if (!st->probe_format_set)
		opt->probe_format = opt->user_format;
	if (!st->probe_first_set)
		opt->probe_first = opt->user_first + opt->user_count;
	if (resolve(opt->host, opt->port, &opt->server, &opt->server_len) < 0) {
		*error_r = "cannot resolve --host";
		return -1;
	}
	if (opt->lmtp_port != 0) {
		if (resolve(opt->host, opt->lmtp_port, &opt->lmtp, &opt->lmtp_len) < 0) {
			*error_r = "cannot resolve --host for LMTP";
			return -1;
		}
	}
	if (st->sources != NULL && parse_sources(opt, st->sources) < 0) {
		*error_r = "--sources takes up to 64 comma-separated addresses of this machine";
		return -1;
	}
	for (size_t i = 0; i < opt->source_count; i++) {
		if (opt->sources[i].ss_family != opt->server.ss_family) {
			*error_r = "--sources and --host must be of the same address family";
			return -1;
		}
	}
	return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error (reported). */
static int options_parse(int argc, char **argv, struct options *opt)
{
	struct option_state st = {0};
	const char *error = NULL;
	int id;

	*opt = (struct options){
	    .host = "127.0.0.1",
	    .user_count = 1,
	    .threads = 1,
	    .concurrency = 1,
	    .timeout = 600,
	    .seed = 1,
	    .seeded = 20,
	    .lmtp_rate = 10,
	};
	user_format_parse("user%05u", &opt->user_format, &error);
	while ((id = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		if (id == OPT_HELP) {
			fputs(usage_text, stdout);
			return 1;
		}
		if (id == '?') {
			fputs("loadgen: see --help\n", stderr);
			return -1;
		}
		if (option_apply(opt, &st, id, optarg, &error) < 0) {
			fprintf(stderr, "loadgen: --%s %s: %s\n", option_name(id),
				optarg != NULL ? optarg : "", error);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "loadgen: unexpected argument %s\n", argv[optind]);
		return -1;
	}
	if (options_check(opt, &st, &error) < 0) {
		fprintf(stderr, "loadgen: %s (see --help)\n", error);
		return -1;
	}
	return 0;
}

/* ---- setup ---- */

/* Raises the descriptor limit to the hard limit and checks the run fits in it. */
static int fds_raise(const struct options *opt)
{
	struct rlimit rl;
	uint64_t need = (opt->mode == MODE_IDLE ? opt->sessions : opt->concurrency) + opt->probes +
			(uint64_t)opt->threads * LOADGEN_FDS_PER_THREAD + LOADGEN_FDS_SPARE;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		perror("loadgen: getrlimit");
		return -1;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			perror("loadgen: setrlimit");
			return -1;
		}
	}
	if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
		fprintf(stderr,
			"loadgen: this run needs about %" PRIu64
			" file descriptors, the limit is %llu\n",
			need, (unsigned long long)rl.rlim_cur);
		return -1;
	}
	return 0;
}

static SSL_CTX *tls_context_new(const struct options *opt)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		return NULL;
	/* The bench certificate is self-signed: authentication is not what is measured. */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	if (opt->tls_resume) {
		/* The new-session callback is only called with client caching on; the internal
		 * store is useless to a client, the callback keeps what we need. */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
							SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(ctx, tls_on_new_session);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	}
	return ctx;
}

static int worker_init(struct loadgen *lg, struct worker *w, unsigned number)
{
	const struct options *opt = &lg->opt;
	unsigned threads = opt->threads;

	w->lg = lg;
	w->opt = opt;
	w->number = number;
	w->wake_fd = -1;
	w->rng = rng_seed(opt->seed * 0x100000001b3ULL + number);
	w->sample_rng = rng_seed(~opt->seed + number);
	/* --concurrency and idle --sessions are shared out as evenly as the threads allow */
	w->conc = opt->concurrency / threads + (number < opt->concurrency % threads);
	if (opt->mode == MODE_BIGBOX)
		w->conc = number == 0;
	if (opt->mode == MODE_IDLE)
		w->idle_target = opt->sessions / threads + (number < opt->sessions % threads);
	for (int m = 0; m < METRIC_COUNT; m++)
		w->stats.metrics[m].limit = LOADGEN_SAMPLES_MAX / threads;
	w->base = event_base_new();
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->base == NULL || w->wake_fd < 0)
		return -1;
	w->wake_ev = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, worker_on_wake, w);
	w->warmup_ev = evtimer_new(w->base, worker_on_warmup, w);
	w->duration_ev = evtimer_new(w->base, worker_on_duration, w);
	w->update_ev = evtimer_new(w->base, worker_on_update, w);
	if (w->wake_ev == NULL || w->warmup_ev == NULL || w->duration_ev == NULL ||
	    w->update_ev == NULL || event_add(w->wake_ev, NULL) < 0)
		return -1;
	return 0;
}

static void worker_cleanup(struct worker *w)
{
	struct event *events[] = {w->wake_ev, w->warmup_ev, w->duration_ev, w->update_ev};

	w->aborted = true;	    /* nothing may start while tearing down */
	while (w->sessions != NULL) /* only after a failed start; a finished run closed them all */
		session_destroy(w->sessions);
	lmtp_free(w);
	for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
		if (events[i] != NULL)
			event_free(events[i]);
	}
	if (w->base != NULL)
		event_base_free(w->base);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	SSL_SESSION_free(w->tls_session);
	for (int m = 0; m < METRIC_COUNT; m++)
		samples_free(&w->stats.metrics[m]);
}

/* ---- running the phases ---- */

/* Waits --hold seconds, or with -1 for a newline or EOF on stdin; -1 at the deadline. */
static int idle_hold(const struct options *opt, double deadline)
{
	double until = opt->hold >= 0 ? clock_now() + opt->hold : deadline;

	for (;;) {
		double left = (until < deadline ? until : deadline) - clock_now();
		struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
		char buf[256];
		ssize_t got;

		if (left <= 0)
			return opt->hold >= 0 && until <= deadline ? 0 : -1;
		if (opt->hold >= 0) {
			poll(NULL, 0, (int)(left * 1000) + 1);
			continue;
		}
		if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		got = read(STDIN_FILENO, buf, sizeof(buf));
		if (got <= 0 || memchr(buf, '\n', (size_t)got) != NULL)
			return 0;
	}
}

static void loadgen_abort(struct loadgen *lg)
{
	fprintf(stderr, "loadgen: error: overall --timeout of %g s reached\n", lg->opt.timeout);
	lg->timed_out = true;
	lg->load_end = clock_now();
	coord_request_all(lg, REQUEST_ABORT);
}

/* Drives the phases; on the overall deadline it aborts the workers and returns. */
static void loadgen_run(struct loadgen *lg)
{
	const struct options *opt = &lg->opt;
	double deadline = lg->started + opt->timeout;

	if (opt->probes > 0) {
		coord_request_all(lg, REQUEST_PROBES);
		if (coord_wait(lg, REPORT_PROBES_READY, deadline) < 0) {
			loadgen_abort(lg);
			return;
		}
	}
	/* Written before the requests: the atomic request bits order it for the workers. */
	lg->load_start = clock_now();
	coord_request_all(lg, REQUEST_LOAD);
	if (opt->mode == MODE_IDLE) {
		if (coord_wait(lg, REPORT_LOGGED_IN, deadline) < 0) {
			loadgen_abort(lg);
			return;
		}
		lg->ready_s = clock_now() - lg->load_start;
		printf("READY %" PRIu64 "\n", atomic_load(&lg->logged_in));
		fflush(stdout);
		if (idle_hold(opt, deadline) < 0) {
			loadgen_abort(lg);
			return;
		}
		coord_request_all(lg, REQUEST_RELEASE);
	}
	if (coord_wait(lg, REPORT_LOAD_DONE, deadline) < 0) {
		loadgen_abort(lg);
		return;
	}
	lg->load_end = clock_now();
	coord_request_all(lg, REQUEST_STOP);
	if (coord_wait(lg, REPORT_STOPPED, deadline) < 0)
		loadgen_abort(lg);
}

/* ---- the report ---- */

/* The samples of one metric over all workers, sorted. */
struct merged {
	double *values;
	size_t count;
	uint64_t seen;
	double max;
};

static void merge_metric(const struct loadgen *lg, enum metric m, struct merged *out)
{
	size_t total = 0;

	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < lg->opt.threads; i++)
		total += lg->workers[i].stats.metrics[m].count;
	out->values = malloc((total > 0 ? total : 1) * sizeof(double));
	for (unsigned i = 0; i < lg->opt.threads; i++) {
		const struct samples *sm = &lg->workers[i].stats.metrics[m];

		if (out->values != NULL && sm->count > 0) {
			memcpy(out->values + out->count, sm->values, sm->count * sizeof(double));
			out->count += sm->count;
		}
		if (sm->seen > 0 && (out->seen == 0 || sm->max > out->max))
			out->max = sm->max;
		out->seen += sm->seen;
	}
	qsort(out->values, out->count, sizeof(double), compare_doubles);
}

static void print_percentiles(const struct loadgen *lg, const char *name, enum metric m,
			      bool with_count)
{
	struct merged mg;

	merge_metric(lg, m, &mg);
	printf(",\"%s\":{", name);
	if (with_count)
		printf("\"count\":%" PRIu64 ",", mg.seen);
	printf("\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}", percentile(mg.values, mg.count, 500),
	       percentile(mg.values, mg.count, 990), mg.max);
	free(mg.values);
}

static void print_median_max(const struct loadgen *lg, const char *name, enum metric m)
{
	struct merged mg;

	merge_metric(lg, m, &mg);
	printf(",\"%s\":{\"median\":%.3f,\"max\":%.3f}", name, percentile(mg.values, mg.count, 500),
	       mg.max);
	free(mg.values);
}

static void stats_sum(const struct loadgen *lg, struct stats *sum, uint64_t *errors_r)
{
	memset(sum, 0, sizeof(*sum));
	*errors_r = lg->timed_out;
	for (unsigned i = 0; i < lg->opt.threads; i++) {
		const struct stats *st = &lg->workers[i].stats;

		sum->sessions += st->sessions;
		sum->messages += st->messages;
		sum->bytes += st->bytes;
		sum->wire_bytes += st->wire_bytes;
		sum->handshakes += st->handshakes;
		sum->resumed += st->resumed;
		sum->noop_ok += st->noop_ok;
		sum->deliveries += st->deliveries;
		sum->deleted += st->deleted;
		if (st->bigbox_messages > sum->bigbox_messages)
			sum->bigbox_messages = st->bigbox_messages;
		for (int k = 0; k < KIND_COUNT; k++)
			sum->kinds[k] += st->kinds[k];
		*errors_r += lg->workers[i].errors;
	}
}

/* Prints the one JSON line; returns the number of errors. */
static uint64_t report_print(const struct loadgen *lg)
{
	const struct options *opt = &lg->opt;
	double measure_start = lg->load_start + (opt->mode == MODE_IDLE ? 0 : opt->warmup);
	double elapsed = lg->load_end - measure_start;
	struct stats sum;
	uint64_t errors;

	stats_sum(lg, &sum, &errors);
	if (lg->load_start == 0 || elapsed < 0)
		elapsed = 0; /* aborted before the load began */
	printf("{\"mode\":\"%s\",\"tls\":%s,\"tls_resume\":%s,\"threads\":%u,\"concurrency\":%u",
	       mode_names[opt->mode], opt->tls ? "true" : "false",
	       opt->tls_resume ? "true" : "false", opt->threads, opt->concurrency);
	printf(",\"elapsed_s\":%.3f,\"sessions\":%" PRIu64 ",\"sessions_per_s\":%.1f", elapsed,
	       sum.sessions, elapsed > 0 ? (double)sum.sessions / elapsed : 0.0);
	printf(",\"errors\":%" PRIu64 ",\"timed_out\":%s", errors,
	       lg->timed_out ? "true" : "false");
	printf(",\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"wire_bytes\":%" PRIu64
	       ",\"mb_per_s\":%.1f",
	       sum.messages, sum.bytes, sum.wire_bytes,
	       elapsed > 0 ? (double)sum.bytes / 1e6 / elapsed : 0.0);
	printf(",\"resumed\":%" PRIu64 ",\"handshakes\":%" PRIu64, sum.resumed, sum.handshakes);
	print_percentiles(lg, "latency_ms", METRIC_LATENCY, false);
	if (opt->mode == MODE_IDLE)
		printf(",\"logged_in\":%" PRIu64 ",\"noop_ok\":%" PRIu64 ",\"ready_s\":%.3f",
		       atomic_load(&lg->logged_in), sum.noop_ok, lg->ready_s);
	if (opt->mode == MODE_BIGBOX) {
		printf(",\"count\":%" PRIu64, sum.bigbox_messages);
		print_median_max(lg, "pass_ms", METRIC_PASS);
		print_median_max(lg, "stat_ms", METRIC_STAT);
		print_median_max(lg, "uidl_ms", METRIC_UIDL);
		print_median_max(lg, "quit_ms", METRIC_QUIT);
		print_median_max(lg, "total_ms", METRIC_TOTAL);
	}
	if (opt->mode == MODE_MIXED)
		printf(",\"kinds\":{\"check\":%" PRIu64 ",\"download\":%" PRIu64
		       ",\"fetchall\":%" PRIu64 "},\"deleted\":%" PRIu64,
		       sum.kinds[KIND_CHECK], sum.kinds[KIND_DOWNLOAD], sum.kinds[KIND_FETCHALL],
		       sum.deleted);
	if (opt->mode == MODE_MIXED || opt->lmtp_port != 0)
		printf(",\"deliveries\":%" PRIu64, sum.deliveries);
	if (opt->probes > 0)
		print_percentiles(lg, "probe", METRIC_PROBE, true);
	printf("}\n");
	fflush(stdout);
	return errors;
}

/* ---- main ---- */

static int loadgen_start(struct loadgen *lg)
{
	const struct options *opt = &lg->opt;

	lg->user_busy = calloc(opt->user_count, sizeof(*lg->user_busy));
	lg->workers = calloc(opt->threads, sizeof(*lg->workers));
	if (lg->user_busy == NULL || lg->workers == NULL) {
		fputs("loadgen: out of memory\n", stderr);
		return -1;
	}
	if (opt->tls && (lg->ssl_ctx = tls_context_new(opt)) == NULL) {
		fputs("loadgen: cannot create the TLS context\n", stderr);
		return -1;
	}
	for (unsigned i = 0; i < opt->threads; i++) {
		if (worker_init(lg, &lg->workers[i], i) < 0) {
			fputs("loadgen: cannot set up a worker's event loop\n", stderr);
			return -1;
		}
	}
	lg->started = clock_now();
	for (unsigned i = 0; i < opt->threads; i++) {
		struct worker *w = &lg->workers[i];

		if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
			fputs("loadgen: cannot start a thread\n", stderr);
			return -1;
		}
		w->thread_started = true;
	}
	return 0;
}

static void loadgen_finish(struct loadgen *lg)
{
	if (lg->workers != NULL) {
		for (unsigned i = 0; i < lg->opt.threads; i++) {
			if (lg->workers[i].thread_started)
				pthread_join(lg->workers[i].thread, NULL);
		}
		for (unsigned i = 0; i < lg->opt.threads; i++)
			worker_cleanup(&lg->workers[i]);
	}
	free(lg->workers);
	free((void *)lg->user_busy);
	SSL_CTX_free(lg->ssl_ctx);
	pthread_mutex_destroy(&lg->lock);
	pthread_cond_destroy(&lg->cond);
}

int main(int argc, char **argv)
{
	static struct loadgen lg;
	pthread_condattr_t attr;
	uint64_t errors;
	int ret = options_parse(argc, argv, &lg.opt);

	if (ret != 0)
		return ret > 0 ? 0 : 2;
	/* A server closing first must not kill us with SIGPIPE in the middle of a write. */
	signal(SIGPIPE, SIG_IGN);
	if (fds_raise(&lg.opt) < 0)
		return 1;
	pthread_mutex_init(&lg.lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&lg.cond, &attr);
	pthread_condattr_destroy(&attr);
	if (loadgen_start(&lg) < 0) {
		if (lg.workers != NULL)
			coord_request_all(&lg, REQUEST_ABORT);
		loadgen_finish(&lg);
		return 1;
	}
	loadgen_run(&lg);
	/* Every worker leaves its loop after STOP, or after ABORT when the run timed out. */
	for (unsigned i = 0; i < lg.opt.threads; i++) {
		if (lg.workers[i].thread_started)
			pthread_join(lg.workers[i].thread, NULL);
		lg.workers[i].thread_started = false;
	}
	errors = report_print(&lg);
	loadgen_finish(&lg);
	return errors == 0 ? 0 : 1;
}

/* Logging: key=value text or JSON lines, to stderr or to the local syslog socket (see log.h). Each
 * line is handed to the kernel in one write() or send(), so that lines from several processes
 * sharing stderr do not interleave. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "core/util.h"

/* The key=value text of one event as the call site formats it; longer text is cut. */
#define LOG_PAIRS_MAX 2048
/* A line without its prefix: room for the pairs as JSON, where a control byte grows from one
 * octet to six (\u0001); a line that still does not fit is cut between two pairs. */
#define LOG_FIELDS_MAX (4 * LOG_PAIRS_MAX)
/* The longest prefix put before the fields: '{"ts":"2024-01-31T23:59:59.999Z",' or
 * "<191>buzon[4194304]: {". */
#define LOG_PREFIX_MAX 64
/* Event names are short constants; a longer one is cut in JSON, so that the fixed fields always
 * fit the line (a role is at most 31 octets). */
#define LOG_EVENT_MAX 64
/* After the fields: "}\n". */
#define LOG_SUFFIX_MAX	2
#define LOG_SYSLOG_PATH "/dev/log"
#define LOG_SYSLOG_TAG	"buzon"

static char log_role[32] = "buzon";
static enum log_level log_min_level = LOG_LEVEL_INFO;
static const char *const log_level_names[] = {"debug", "info", "warn", "error"};
/* syslog severities of the levels above */
static const int log_level_severities[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};

/* Set by log_configure() in the master, inherited by the children through fork. */
static enum log_format log_line_format = LOG_FORMAT_TEXT;
static int log_syslog_fd = -1; /* connected to the syslog socket; -1: everything to stderr */
static int log_syslog_facility = LOG_MAIL;

void log_init(const char *role, enum log_level min_level)
{
	struct tm tm;
	time_t now = time(NULL);

	log_set_role(role);
	log_min_level = min_level;
	/* glibc's first gmtime_r() reads /etc/localtime (tzset), which a sandboxed child may not
	 * open (seccomp kills the admin process for it). Done here, the children inherit the
	 * loaded state through fork, also when every line goes to syslog and the first time stamp
	 * is only needed for a line syslog did not take. */
	gmtime_r(&now, &tm);
}

void log_set_role(const char *role)
{
	snprintf(log_role, sizeof(log_role), "%s", role);
}

void log_set_level(enum log_level min_level)
{
	log_min_level = min_level;
}

int log_level_parse(const char *name, enum log_level *level_r)
{
	for (size_t i = 0; i < ARRAY_SIZE(log_level_names); i++) {
		if (strcasecmp(name, log_level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

static const char *const log_format_names[] = {"text", "json"};
static const char *const log_output_names[] = {"stderr", "syslog"};

int log_format_parse(const char *name, enum log_format *format_r)
{
	for (size_t i = 0; i < ARRAY_SIZE(log_format_names); i++) {
		if (strcasecmp(name, log_format_names[i]) == 0) {
			*format_r = (enum log_format)i;
			return 0;
		}
	}
	return -1;
}

const char *log_format_name(enum log_format format)
{
	return log_format_names[format];
}

int log_output_parse(const char *name, enum log_output *output_r)
{
	for (size_t i = 0; i < ARRAY_SIZE(log_output_names); i++) {
		if (strcasecmp(name, log_output_names[i]) == 0) {
			*output_r = (enum log_output)i;
			return 0;
		}
	}
	return -1;
}

const char *log_output_name(enum log_output output)
{
	return log_output_names[output];
}

int log_syslog_facility_parse(const char *name, int *facility_r)
{
	static const struct {
		const char *name;
		int facility;
	} facilities[] = {
	    {"mail", LOG_MAIL},	    {"daemon", LOG_DAEMON}, {"auth", LOG_AUTH},
	    {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
	    {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
	    {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
	};

	for (size_t i = 0; i < ARRAY_SIZE(facilities); i++) {
		if (strcasecmp(name, facilities[i].name) == 0) {
			if (facility_r != NULL)
				*facility_r = facilities[i].facility;
			return 0;
		}
	}
	return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* syslog */

static int log_syslog_open(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	if (strlen(path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);
	/* non-blocking: a syslog daemon that does not keep up must not stall an event loop; what
	 * it cannot take goes to stderr */
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

void log_configure(const struct buzon_config *config)
{
	log_line_format = config->log_format;
	if (log_syslog_fd >= 0) {
		close(log_syslog_fd);
		log_syslog_fd = -1;
	}
	if (config->log_output != LOG_OUTPUT_SYSLOG)
		return;
	log_syslog_facility = LOG_MAIL;
	if (config->syslog_facility != NULL)
		(void)log_syslog_facility_parse(config->syslog_facility, &log_syslog_facility);
	const char *path = getenv("BUZON_SYSLOG_SOCKET");
	if (path == NULL || path[0] == '\0')
		path = LOG_SYSLOG_PATH;
	int fd = log_syslog_open(path);
	if (fd < 0) {
		log_warn("syslog_unavailable", "socket=%s error=%s fallback=stderr",
			 log_quote(path), log_quote(strerror(errno)));
		return;
	}
	log_syslog_fd = fd;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON */

/* A bounded output buffer: once something does not fit, full is set and nothing more is added. */
struct log_out {
	char *data;
	size_t len, cap;
	bool full;
};

static void log_out_put(struct log_out *out, const void *bytes, size_t len)
{
	if (out->full || out->len > out->cap || len > out->cap - out->len) {
		out->full = true;
		return;
	}
	memcpy(out->data + out->len, bytes, len);
	out->len += len;
}

static void log_out_puts(struct log_out *out, const char *s)
{
	log_out_put(out, s, strlen(s));
}

/* Writes s (NUL-terminated; it may hold other NULs before len) as a JSON string: quotes and
 * backslashes escaped, control bytes as \u00NN, bytes that are not part of a well-formed UTF-8
 * sequence as the text \xNN (as log_quote() writes them), so the result is valid UTF-8. */
static void log_json_string(struct log_out *out, const char *s, size_t len)
{
	char escape[8];

	log_out_put(out, "\"", 1);
	for (size_t i = 0; i < len; i++) {
		const unsigned char *p = (const unsigned char *)s + i;
		size_t seq = *p >= 0x80 ? utf8_sequence_len(p) : 1;
		if (*p == '"' || *p == '\\') {
			escape[0] = '\\';
			escape[1] = (char)*p;
			log_out_put(out, escape, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(escape, sizeof(escape), "\\u%04x", *p);
			log_out_put(out, escape, 6);
		} else if (seq == 0) {
			snprintf(escape, sizeof(escape), "\\\\x%02x", *p);
			log_out_put(out, escape, 5);
		} else {
			/* utf8_sequence_len() stops at a NUL, and s ends with one */
			log_out_put(out, p, seq);
			i += seq - 1;
		}
	}
	log_out_put(out, "\"", 1);
}

static int log_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads the value at p into value (NUL-terminated, *len_r octets before it): a bare token up to
 * the next blank, or a quoted string as log_quote() writes it, decoded. Returns where the next
 * pair starts, or NULL if the value is malformed (an unknown escape, no closing quote, text
 * glued after it). value has room for strlen(p) + 1 octets. */
static const char *log_pair_value(const char *p, char *value, size_t *len_r)
{
	size_t n = 0;

	if (*p != '"') {
		n = strcspn(p, " ");
		memcpy(value, p, n);
		p += n;
	} else {
		for (p++; *p != '"'; n++) {
			int high, low;
			if (*p == '\0')
				return NULL;
			if (*p != '\\') {
				value[n] = *p++;
			} else if (p[1] == '"' || p[1] == '\\') {
				value[n] = p[1];
				p += 2;
			} else if (p[1] == 'x' && (high = log_hex_digit(p[2])) >= 0 &&
				   (low = log_hex_digit(p[3])) >= 0) {
				value[n] = (char)(high << 4 | low);
				p += 4;
			} else {
				return NULL;
			}
		}
		p++;
		if (*p != ' ' && *p != '\0')
			return NULL;
	}
	value[n] = '\0';
	*len_r = n;
	return *p == ' ' ? p + 1 : p;
}

/* The characters of a key in key=value. */
#define LOG_KEY_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

/* Appends ,"key":"value" for each pair of text; the rest of a text that stops being pairs goes
 * into "unparsed". A pair that does not fit is left out, with "truncated":"yes" instead (out->cap
 * keeps room for that). */
static void log_json_pairs(struct log_out *out, const char *text, size_t reserve)
{
	char value[LOG_PAIRS_MAX];
	const char *p = text;
	size_t mark = out->len;

	out->cap -= reserve;
	while (*p != '\0') {
		size_t key_len = strspn(p, LOG_KEY_CHARS), value_len;
		if (key_len == 0 || p[key_len] != '=')
			break;
		const char *next = log_pair_value(p + key_len + 1, value, &value_len);
		if (next == NULL)
			break;
		log_out_put(out, ",\"", 2);
		log_out_put(out, p, key_len);
		log_out_put(out, "\":", 2);
		log_json_string(out, value, value_len);
		if (out->full)
			break;
		mark = out->len;
		p = next;
	}
	if (!out->full && *p != '\0') {
		log_out_puts(out, ",\"unparsed\":");
		log_json_string(out, p, strlen(p));
	}
	out->cap += reserve;
	if (out->full) {
		out->len = mark;
		out->full = false;
		log_out_puts(out, ",\"truncated\":\"yes\"");
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Lines */

/* The fields of a line without its time stamp: "level=… proc=… event=… pairs" as text, or
 * '"level":"…","proc":"…","event":"…",…' (no braces) as JSON. */
static size_t log_fields(char *fields, size_t cap, enum log_level level, const char *event,
			 const char *pairs)
{
	if (log_line_format == LOG_FORMAT_TEXT) {
		int len =
		    snprintf(fields, cap, "level=%s proc=%s event=%s%s%s", log_level_names[level],
			     log_role, event, pairs[0] != '\0' ? " " : "", pairs);
		return len < 0 ? 0 : (size_t)len >= cap ? cap - 1 : (size_t)len;
	}
	struct log_out out = {.data = fields, .cap = cap};
	log_out_puts(&out, "\"level\":\"");
	log_out_puts(&out, log_level_names[level]);
	log_out_puts(&out, "\",\"proc\":");
	log_json_string(&out, log_role, strlen(log_role));
	log_out_puts(&out, ",\"event\":");
	log_json_string(&out, event, strnlen(event, LOG_EVENT_MAX));
	log_json_pairs(&out, pairs, sizeof(",\"truncated\":\"yes\"") - 1);
	return out.len;
}

/* Sends the line to syslog; false if it could not be. fields has LOG_PREFIX_MAX octets before it
 * and LOG_SUFFIX_MAX after its len octets for the frame. */
static bool log_send_syslog(enum log_level level, char *fields, size_t len)
{
	char prefix[LOG_PREFIX_MAX];
	bool json = log_line_format == LOG_FORMAT_JSON;
	int prefix_len = snprintf(prefix, sizeof(prefix), "<%d>%s[%d]: %s",
				  log_syslog_facility | log_level_severities[level], LOG_SYSLOG_TAG,
				  (int)getpid(), json ? "{" : "");

	memcpy(fields - prefix_len, prefix, (size_t)prefix_len);
	if (json)
		fields[len++] = '}';
	/* MSG_DONTWAIT: never wait for the daemon, whatever the flags of the socket's open file
	 * (shared with every process that inherited it) say */
	return send(log_syslog_fd, fields - prefix_len, (size_t)prefix_len + len,
		    MSG_DONTWAIT | MSG_NOSIGNAL) >= 0;
}

static void log_write_stderr(char *fields, size_t len)
{
	char prefix[LOG_PREFIX_MAX];
	struct timespec now;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	bool json = log_line_format == LOG_FORMAT_JSON;
	int prefix_len = snprintf(
	    prefix, sizeof(prefix), "%sts%s%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ%s",
	    json ? "{\"" : "", json ? "\":\"" : "=", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
	    tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000, json ? "\"," : " ");

	memcpy(fields - prefix_len, prefix, (size_t)prefix_len);
	if (json)
		fields[len++] = '}';
	fields[len++] = '\n';
	(void)write_full(STDERR_FILENO, fields - prefix_len, (size_t)prefix_len + len);
}

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
	char pairs[LOG_PAIRS_MAX] = "";
	char line[LOG_PREFIX_MAX + LOG_FIELDS_MAX + LOG_SUFFIX_MAX];
	char *fields = line + LOG_PREFIX_MAX;
	va_list args;

	if (level < log_min_level)
		return;
	/* a caller may log an error and then look at errno */
	int saved_errno = errno;
	if (fmt != NULL) {
		va_start(args, fmt);
		vsnprintf(pairs, sizeof(pairs), fmt, args);
		va_end(args);
	}
	size_t len = log_fields(fields, LOG_FIELDS_MAX, level, event, pairs);
	/* a line syslog did not take is written to stderr with its time stamp (the frame that
	 * log_send_syslog() put around the fields is replaced) */
	if (log_syslog_fd < 0 || !log_send_syslog(level, fields, len))
		log_write_stderr(fields, len);
	errno = saved_errno;
}

const char *log_quote(const char *value)
{
	/* per thread: the auth process and the delivery path may log from more than one thread */
	static _Thread_local char buffers[4][512];
	static _Thread_local unsigned next;
	char *out = buffers[next++ % ARRAY_SIZE(buffers)];
	size_t o = 0, cap = sizeof(buffers[0]);
	bool needs_quotes = value[0] == '\0';

	for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
		size_t seq = *p >= 0x80 ? utf8_sequence_len(p) : 1;
		if (*p == ' ' || *p == '"' || *p == '=' || *p < 0x20 || *p == 0x7f || seq == 0)
			needs_quotes = true;
		else
			p += seq - 1;
	}
	if (needs_quotes)
		out[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++) {
		if (o + 8 >= cap) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		size_t seq = *p >= 0x80 ? utf8_sequence_len(p) : 1;
		if (*p == '"' || *p == '\\') {
			out[o++] = '\\';
			out[o++] = (char)*p;
		} else if (*p < 0x20 || *p == 0x7f || seq == 0) {
			/* control bytes, and bytes that are not UTF-8 (a hostile user name), so
			 * that every log line stays valid UTF-8 for the journal and JSON tools */
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", *p);
		} else if (seq > 1) {
			memcpy(out + o, p, seq);
			o += seq;
			p += seq - 1;
		} else {
			out[o++] = (char)*p;
		}
	}
	if (needs_quotes)
		out[o++] = '"';
	out[o] = '\0';
	return out;
}

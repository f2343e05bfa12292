/* key=value logging to stderr: "ts=… level=… proc=… event=… key=value …", one write per line so
 * that lines from several processes sharing stderr do not interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/util.h"

static char log_role[32] = "buzon";
static enum log_level log_min_level = LOG_LEVEL_INFO;
static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *role, enum log_level min_level)
{
	log_set_role(role);
	log_min_level = min_level;
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

void log_event(enum log_level level, const char *event, const char *fmt, ...)
{
	char line[2048];
	struct timespec now;
	struct tm tm;
	va_list args;

	if (level < log_min_level)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	int len = snprintf(
	    line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s proc=%s event=%s",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    now.tv_nsec / 1000000, log_level_names[level], log_role, event);
	if (fmt != NULL && fmt[0] != '\0' && len < (int)sizeof(line) - 2) {
		line[len++] = ' ';
		va_start(args, fmt);
		int more = vsnprintf(line + len, sizeof(line) - (size_t)len, fmt, args);
		va_end(args);
		len = more < 0 ? len : len + more;
		if (more == 0)
			len--; /* nothing was formatted: no trailing blank */
	}
	if (len > (int)sizeof(line) - 2)
		len = (int)sizeof(line) - 2;
	line[len++] = '\n';
	(void)write_full(STDERR_FILENO, line, (size_t)len);
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

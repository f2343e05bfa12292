/* key=value logging to stderr, one line per event, with the process role and a session id.
 * Never pass passwords, AUTH data or message contents to these functions. */
#ifndef BUZON_CORE_LOG_H
#define BUZON_CORE_LOG_H

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
/* How a line is written: key=value text, or one JSON object per line. */
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };
/* Where lines go: stderr (the journal under systemd), or the local syslog socket. */
enum log_output { LOG_OUTPUT_STDERR, LOG_OUTPUT_SYSLOG };

/* Sets the role shown as proc=… (master, auth, pop3/0, …) and the lowest level printed. */
void log_init(const char *role, enum log_level min_level);
void log_set_role(const char *role);
void log_set_level(enum log_level min_level);
/* Parses debug|info|warn|error; returns -1 if unknown. */
int log_level_parse(const char *name, enum log_level *level_r);
/* text|json, stderr|syslog; -1 if unknown. */
int log_format_parse(const char *name, enum log_format *format_r);
const char *log_format_name(enum log_format format);
int log_output_parse(const char *name, enum log_output *output_r);
const char *log_output_name(enum log_output output);
/* mail, daemon, auth, local0…local7 into a syslog(3) facility (facility_r may be NULL); -1 if
 * unknown. */
int log_syslog_facility_parse(const char *name, int *facility_r);

/* Logs "ts=… level=… proc=… event=EVENT" followed by the formatted key=value pairs in fmt.
 * Values that may hold spaces or quotes must be passed through log_quote(). */
void log_event(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns a quoted, escaped copy of value for use as a key=value value, in one of a few rotating
 * static buffers (valid until a few more calls). Control bytes become \xNN; long values are cut. */
const char *log_quote(const char *value);

#define log_debug(event, ...) log_event(LOG_LEVEL_DEBUG, event, __VA_ARGS__)
#define log_info(event, ...)  log_event(LOG_LEVEL_INFO, event, __VA_ARGS__)
#define log_warn(event, ...)  log_event(LOG_LEVEL_WARN, event, __VA_ARGS__)
#define log_error(event, ...) log_event(LOG_LEVEL_ERROR, event, __VA_ARGS__)

#endif

/* Logging, one line per event, with the process role and a session id: key=value text or one JSON
 * object a line ([server] log_format), to stderr or to the local syslog socket ([server]
 * log_output). Never pass passwords, AUTH data or message contents to these functions.
 *
 * JSON lines carry the same keys in the same order: "ts", "level", "proc", "event", then the
 * event's own pairs. Every value is a JSON string, numbers too ("retrieved":"1"): a key keeps one
 * type whatever its value (a user named 1234 must not turn "user" into a number for the log
 * store), and ids such as session=0.10 keep their exact text. Quoted values are decoded (\" and
 * \\); log_quote()'s \xNN escapes of control bytes become JSON's \u00NN, those of bytes that are
 * not UTF-8 stay the four characters \xNN, so every line is valid UTF-8. Text that is not a
 * key=value pair (a call site that did not quote a value with a space) ends the pairs: it goes
 * whole into "unparsed". A line too long for the buffer keeps its first pairs and gets
 * "truncated":"yes". */
#ifndef BUZON_CORE_LOG_H
#define BUZON_CORE_LOG_H

struct buzon_config;

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
/* How a line is written: key=value text, or one JSON object per line. */
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };
/* Where lines go: stderr (the journal under systemd), or the local syslog socket. */
enum log_output { LOG_OUTPUT_STDERR, LOG_OUTPUT_SYSLOG };

/* Sets the role shown as proc=… (master, auth, pop3/0, …) and the lowest level printed. */
void log_init(const char *role, enum log_level min_level);
/* Applies [server] log_format, log_output and syslog_facility; call it again to apply a new config
 * (it replaces the syslog socket). With syslog it opens a datagram socket connected to /dev/log
 * now: the sandboxed children may not create or connect sockets, so each inherits this one through
 * fork (they only send on it). Lines go to the socket as RFC 3164 messages without a timestamp,
 * "<PRI>buzon[PID]: level=… proc=… event=…" (syslog stamps them); PRI is the facility and the
 * level's severity. A line that cannot be sent (no syslog daemon, its queue full: the socket never
 * blocks) goes to stderr instead, and a socket that cannot be opened is logged as
 * syslog_unavailable and leaves every line on stderr. Not glibc's syslog(3): after an error it
 * reconnects with socket() and connect(), which the sandbox forbids (the process would be
 * killed). If the syslog daemon makes a new socket (a restart without systemd's socket
 * activation), `buzon reload` connects the master and the new children again.
 *
 * Call it while the process has one thread (the master at start and on reload): it swaps the
 * socket under the other threads' feet otherwise.
 *
 * Test hook, inert unless set in the environment: BUZON_SYSLOG_SOCKET=PATH replaces /dev/log, so
 * that a test can bind its own datagram socket and read the lines. */
void log_configure(const struct buzon_config *config);
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

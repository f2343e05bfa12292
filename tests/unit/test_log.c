/* Logging: log_quote() keeps what reaches the log from a client (user names, commands) one field
 * and valid UTF-8; the JSON format turns the same key=value pairs into one valid JSON object; the
 * syslog output frames lines as RFC 3164 datagrams and falls back to stderr. Lines written to
 * stderr are captured through a pipe put in its place. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/log.h"

static void plain_values_are_left_alone(void **state)
{
	assert_string_equal(log_quote("demo"), "demo");
	assert_string_equal(log_quote("user@example.org"), "user@example.org");
}

static void spaces_quotes_and_empty_values_are_quoted(void **state)
{
	assert_string_equal(log_quote(""), "\"\"");
	assert_string_equal(log_quote("a b"), "\"a b\"");
	assert_string_equal(log_quote("k=v"), "\"k=v\"");
	assert_string_equal(log_quote("say \"hi\""), "\"say \\\"hi\\\"\"");
}

static void control_bytes_are_escaped(void **state)
{
	assert_string_equal(log_quote("a\r\nb"), "\"a\\x0d\\x0ab\"");
	assert_string_equal(log_quote("\x7f"), "\"\\x7f\"");
}

static void valid_utf8_passes_through(void **state)
{
	assert_string_equal(log_quote("ni\xc3\xb1o"), "ni\xc3\xb1o");
	assert_string_equal(log_quote("\xf0\x9f\x93\xab"), "\xf0\x9f\x93\xab");
}

static void invalid_utf8_is_escaped_byte_by_byte(void **state)
{
	assert_string_equal(log_quote("\xff"), "\"\\xff\"");
	/* an overlong '/', a lone continuation byte and a truncated sequence */
	assert_string_equal(log_quote("\xc0\xaf"), "\"\\xc0\\xaf\"");
	assert_string_equal(log_quote("a\x80"), "\"a\\x80\"");
	assert_string_equal(log_quote("\xe2\x82"), "\"\\xe2\\x82\"");
	/* a UTF-16 surrogate encoded in UTF-8 */
	assert_string_equal(log_quote("\xed\xa0\x80"), "\"\\xed\\xa0\\x80\"");
}

static void long_values_are_cut_with_an_ellipsis(void **state)
{
	char value[2000];
	memset(value, 'x', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	const char *quoted = log_quote(value);
	size_t len = strlen(quoted);
	assert_true(len < 512);
	assert_memory_equal(quoted + len - 3, "...", 3);
}

/* ---- capturing stderr ---- */

static int capture_pipe[2] = {-1, -1};
static int saved_stderr = -1;
static char captured[32768];

static void capture_begin(void)
{
	assert_int_equal(pipe(capture_pipe), 0);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_int_equal(dup2(capture_pipe[1], STDERR_FILENO), STDERR_FILENO);
	close(capture_pipe[1]);
}

/* Everything written to stderr since capture_begin(), NUL-terminated. */
static const char *capture_end(void)
{
	size_t len = 0;
	ssize_t n;

	assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
	close(saved_stderr);
	while ((n = read(capture_pipe[0], captured + len, sizeof(captured) - 1 - len)) > 0)
		len += (size_t)n;
	close(capture_pipe[0]);
	captured[len] = '\0';
	return captured;
}

#define CAPTURE(statement) (capture_begin(), (statement), capture_end())

static void configure(enum log_format format, enum log_output output, const char *facility)
{
	struct buzon_config config = {
	    .log_format = format, .log_output = output, .syslog_facility = (char *)facility};

	log_init("test", LOG_LEVEL_DEBUG);
	log_configure(&config);
}

/* "2024-01-31T23:59:59.999Z" */
static void assert_timestamp(const char *ts)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		if (shape[i] == 'd')
			assert_in_range(ts[i], '0', '9');
		else
			assert_int_equal(ts[i], shape[i]);
	}
}

/* line must be '{"ts":"<time>",' followed by rest. */
static void assert_json_line(const char *line, const char *rest)
{
	assert_memory_equal(line, "{\"ts\":\"", 7);
	assert_timestamp(line + 7);
	assert_memory_equal(line + 31, "\",", 2);
	assert_string_equal(line + 33, rest);
}

/* line must be 'ts=<time> ' followed by rest. */
static void assert_text_line(const char *line, const char *rest)
{
	assert_memory_equal(line, "ts=", 3);
	assert_timestamp(line + 3);
	assert_int_equal(line[27], ' ');
	assert_string_equal(line + 28, rest);
}

static int reset_to_text(void **state)
{
	configure(LOG_FORMAT_TEXT, LOG_OUTPUT_STDERR, "mail");
	unsetenv("BUZON_SYSLOG_SOCKET");
	return 0;
}

/* ---- text ---- */

static void text_lines_are_key_value_pairs(void **state)
{
	configure(LOG_FORMAT_TEXT, LOG_OUTPUT_STDERR, "mail");
	assert_text_line(CAPTURE(log_info("e", "user=%s n=%d", log_quote("a b"), 42)),
			 "level=info proc=test event=e user=\"a b\" n=42\n");
	assert_text_line(CAPTURE(log_warn("e", "%s", "")), "level=warn proc=test event=e\n");
}

static void levels_below_the_minimum_are_dropped(void **state)
{
	configure(LOG_FORMAT_TEXT, LOG_OUTPUT_STDERR, "mail");
	log_set_level(LOG_LEVEL_WARN);
	assert_string_equal(CAPTURE(log_info("e", "k=%d", 1)), "");
	log_set_level(LOG_LEVEL_DEBUG);
}

static void errno_survives_logging(void **state)
{
	configure(LOG_FORMAT_JSON, LOG_OUTPUT_STDERR, "mail");
	errno = EACCES;
	(void)CAPTURE(log_error("e", "error=%s", log_quote(strerror(errno))));
	assert_int_equal(errno, EACCES);
}

/* ---- JSON ---- */

static void json_keeps_keys_in_order_as_strings(void **state)
{
	configure(LOG_FORMAT_JSON, LOG_OUTPUT_STDERR, "mail");
	assert_json_line(CAPTURE(log_info("session_end", "session=%s user=%s n=%d", "0.10",
					  log_quote("demo"), 42)),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"session_end\","
			 "\"session\":\"0.10\",\"user\":\"demo\",\"n\":\"42\"}\n");
	assert_json_line(CAPTURE(log_debug("stopped", "%s", "")),
			 "\"level\":\"debug\",\"proc\":\"test\",\"event\":\"stopped\"}\n");
	assert_json_line(CAPTURE(log_info("e", "empty= next=%s", log_quote(""))),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\",\"empty\":\"\","
			 "\"next\":\"\"}\n");
}

static void json_decodes_quoted_values(void **state)
{
	configure(LOG_FORMAT_JSON, LOG_OUTPUT_STDERR, "mail");
	/* log_quote: "a \"b\"\x0d\x0a\\" */
	assert_json_line(CAPTURE(log_info("e", "v=%s", log_quote("a \"b\"\r\n\\"))),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\","
			 "\"v\":\"a \\\"b\\\"\\u000d\\u000a\\\\\"}\n");
}

static void json_stays_valid_utf8(void **state)
{
	configure(LOG_FORMAT_JSON, LOG_OUTPUT_STDERR, "mail");
	/* valid UTF-8 passes; a byte that is not UTF-8 stays the text \xff, escaped for JSON */
	assert_json_line(CAPTURE(log_info("e", "v=%s", log_quote("ni\xc3\xb1o \xff"))),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\","
			 "\"v\":\"ni\xc3\xb1o \\\\xff\"}\n");
	/* an unquoted value straight from a call site: control bytes, quotes, backslashes, and
	 * invalid UTF-8 */
	assert_json_line(CAPTURE(log_info("e", "raw=%s", "a\tb\"c\\\x80")),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\","
			 "\"raw\":\"a\\u0009b\\\"c\\\\\\\\x80\"}\n");
}

static void json_puts_what_is_not_pairs_into_unparsed(void **state)
{
	configure(LOG_FORMAT_JSON, LOG_OUTPUT_STDERR, "mail");
	/* a value with a blank that its call site did not quote */
	assert_json_line(CAPTURE(log_info("e", "error=%s", "No such file")),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\",\"error\":\"No\","
			 "\"unparsed\":\"such file\"}\n");
	/* no closing quote, an escape log_quote() never writes, text glued to a quoted value */
	assert_json_line(CAPTURE(log_info("e", "a=1 k=%s", "\"open")),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\",\"a\":\"1\","
			 "\"unparsed\":\"k=\\\"open\"}\n");
	assert_json_line(CAPTURE(log_info("e", "k=%s", "\"a\\qb\"")),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\","
			 "\"unparsed\":\"k=\\\"a\\\\qb\\\"\"}\n");
	assert_json_line(CAPTURE(log_info("e", "k=%s", "\"a\"b")),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\","
			 "\"unparsed\":\"k=\\\"a\\\"b\"}\n");
}

static void json_cuts_a_long_line_between_pairs(void **state)
{
	char controls[2001];

	configure(LOG_FORMAT_JSON, LOG_OUTPUT_STDERR, "mail");
	/* 2,000 control bytes become 12,000 octets of \u0001: more than a line holds */
	memset(controls, '\x01', sizeof(controls) - 1);
	controls[sizeof(controls) - 1] = '\0';
	assert_json_line(CAPTURE(log_info("e", "a=1 k=%s b=2", controls)),
			 "\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\",\"a\":\"1\","
			 "\"truncated\":\"yes\"}\n");
}

/* ---- syslog ---- */

/* A datagram socket bound in a new temporary directory, named by BUZON_SYSLOG_SOCKET. */
struct fake_syslog {
	char dir[64];
	char path[108];
	int fd;
};

static void fake_syslog_open(struct fake_syslog *fake)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct timeval timeout = {.tv_sec = 5};

	snprintf(fake->dir, sizeof(fake->dir), "/tmp/buzon-test-log-XXXXXX");
	assert_non_null(mkdtemp(fake->dir));
	snprintf(fake->path, sizeof(fake->path), "%s/log", fake->dir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", fake->path);
	fake->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fake->fd >= 0);
	assert_int_equal(bind(fake->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	setsockopt(fake->fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	setenv("BUZON_SYSLOG_SOCKET", fake->path, 1);
}

static void fake_syslog_close(struct fake_syslog *fake)
{
	if (fake->fd >= 0)
		close(fake->fd);
	fake->fd = -1;
	unlink(fake->path);
	rmdir(fake->dir);
}

/* The next datagram, NUL-terminated. */
static const char *fake_syslog_read(struct fake_syslog *fake)
{
	static char datagram[16384];
	ssize_t n = recv(fake->fd, datagram, sizeof(datagram) - 1, 0);

	assert_true(n >= 0);
	datagram[n] = '\0';
	return datagram;
}

static void syslog_frames_lines_with_priority_and_tag(void **state)
{
	struct fake_syslog fake;
	char expected[256];
	int pid = (int)getpid();

	fake_syslog_open(&fake);
	configure(LOG_FORMAT_TEXT, LOG_OUTPUT_SYSLOG, "mail");
	/* mail is facility 2: PRI = 2 * 8 + severity (debug 7, info 6, warning 4, err 3) */
	assert_string_equal(CAPTURE((log_debug("e", "k=%d", 1), log_info("e", "k=%d", 2),
				     log_warn("e", "k=%d", 3), log_error("e", "k=%s", "x y"))),
			    "");
	snprintf(expected, sizeof(expected), "<23>buzon[%d]: level=debug proc=test event=e k=1",
		 pid);
	assert_string_equal(fake_syslog_read(&fake), expected);
	snprintf(expected, sizeof(expected), "<22>buzon[%d]: level=info proc=test event=e k=2",
		 pid);
	assert_string_equal(fake_syslog_read(&fake), expected);
	snprintf(expected, sizeof(expected), "<20>buzon[%d]: level=warn proc=test event=e k=3",
		 pid);
	assert_string_equal(fake_syslog_read(&fake), expected);
	snprintf(expected, sizeof(expected), "<19>buzon[%d]: level=error proc=test event=e k=x y",
		 pid);
	assert_string_equal(fake_syslog_read(&fake), expected);

	/* JSON and another facility: local3 is 19, so info is 19 * 8 + 6 */
	configure(LOG_FORMAT_JSON, LOG_OUTPUT_SYSLOG, "local3");
	log_info("e", "user=%s", log_quote("demo"));
	snprintf(expected, sizeof(expected),
		 "<158>buzon[%d]: {\"level\":\"info\",\"proc\":\"test\",\"event\":\"e\","
		 "\"user\":\"demo\"}",
		 pid);
	assert_string_equal(fake_syslog_read(&fake), expected);
	fake_syslog_close(&fake);
}

static void syslog_lines_that_cannot_be_sent_go_to_stderr(void **state)
{
	struct fake_syslog fake;

	fake_syslog_open(&fake);
	configure(LOG_FORMAT_TEXT, LOG_OUTPUT_SYSLOG, "mail");
	fake_syslog_close(&fake); /* the daemon went away */
	assert_text_line(CAPTURE(log_info("e", "k=%d", 1)), "level=info proc=test event=e k=1\n");
	assert_text_line(CAPTURE(log_info("e", "k=%d", 2)), "level=info proc=test event=e k=2\n");
}

static void a_missing_syslog_socket_leaves_lines_on_stderr(void **state)
{
	setenv("BUZON_SYSLOG_SOCKET", "/nonexistent/buzon-test/log", 1);
	const char *out = CAPTURE(configure(LOG_FORMAT_TEXT, LOG_OUTPUT_SYSLOG, "mail"));
	assert_text_line(out,
			 "level=warn proc=test event=syslog_unavailable "
			 "socket=/nonexistent/buzon-test/log error=\"No such file or directory\" "
			 "fallback=stderr\n");
	assert_text_line(CAPTURE(log_info("e", "k=%d", 1)), "level=info proc=test event=e k=1\n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(plain_values_are_left_alone),
	    cmocka_unit_test(spaces_quotes_and_empty_values_are_quoted),
	    cmocka_unit_test(control_bytes_are_escaped),
	    cmocka_unit_test(valid_utf8_passes_through),
	    cmocka_unit_test(invalid_utf8_is_escaped_byte_by_byte),
	    cmocka_unit_test(long_values_are_cut_with_an_ellipsis),
	    cmocka_unit_test_teardown(text_lines_are_key_value_pairs, reset_to_text),
	    cmocka_unit_test_teardown(levels_below_the_minimum_are_dropped, reset_to_text),
	    cmocka_unit_test_teardown(errno_survives_logging, reset_to_text),
	    cmocka_unit_test_teardown(json_keeps_keys_in_order_as_strings, reset_to_text),
	    cmocka_unit_test_teardown(json_decodes_quoted_values, reset_to_text),
	    cmocka_unit_test_teardown(json_stays_valid_utf8, reset_to_text),
	    cmocka_unit_test_teardown(json_puts_what_is_not_pairs_into_unparsed, reset_to_text),
	    cmocka_unit_test_teardown(json_cuts_a_long_line_between_pairs, reset_to_text),
	    cmocka_unit_test_teardown(syslog_frames_lines_with_priority_and_tag, reset_to_text),
	    cmocka_unit_test_teardown(syslog_lines_that_cannot_be_sent_go_to_stderr, reset_to_text),
	    cmocka_unit_test_teardown(a_missing_syslog_socket_leaves_lines_on_stderr,
				      reset_to_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

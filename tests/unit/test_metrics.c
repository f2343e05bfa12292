/* Unit tests for the shared metrics: slots claimed, attached and released (counters stay
 * monotonic, also for a reader racing the releases), what each instrumentation call counts, calls
 * without a slot doing nothing, and the rendered text checked by a strict parser of the
 * Prometheus text exposition format 0.0.4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <math.h>
#include <signal.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "core/metrics.h"
#include "core/util.h"

/* ---- rendering and reading back ---- */

/* The rendered text as a NUL-terminated string (caller frees). */
static char *render(const struct metrics *metrics)
{
	struct evbuffer *out = evbuffer_new();

	metrics_render(metrics, out);
	size_t len = evbuffer_get_length(out);
	char *text = xmalloc(len + 1);
	evbuffer_remove(out, text, len);
	text[len] = '\0';
	evbuffer_free(out);
	return text;
}

/* The value of the sample whose name and labels are exactly series ("name{a=\"b\"}"); fails the
 * test if there is no such line. */
static double sample_value(const char *text, const char *series)
{
	size_t len = strlen(series);

	for (const char *line = text; *line != '\0';) {
		if (strncmp(line, series, len) == 0 && line[len] == ' ')
			return strtod(line + len + 1, NULL);
		const char *end = strchr(line, '\n');
		if (end == NULL)
			break;
		line = end + 1;
	}
	fail_msg("no sample %s in:\n%s", series, text);
	return 0;
}

static double value_of(const struct metrics *metrics, const char *series)
{
	char *text = render(metrics);
	double value = sample_value(text, series);

	free(text);
	return value;
}

/* ---- a strict parser of the exposition format ---- */

struct family {
	char name[128];
	char type[16];
	bool has_help;
};

struct histogram_state {
	char labels[512]; /* the labels without le, for the series being read */
	double last_bucket;
	bool saw_inf;
	double inf_value;
};

struct exposition {
	struct family families[64];
	size_t family_count;
	char *series[4096]; /* every sample's name and labels, to find duplicates */
	size_t series_count;
	size_t sample_count;
};

static bool is_name_char(char c, bool first)
{
	return isalpha((unsigned char)c) || c == '_' || c == ':' ||
	       (!first && isdigit((unsigned char)c));
}

/* Reads a metric or label name at *p; returns its length (0 if none). */
static size_t read_name(const char *p)
{
	size_t n = 0;

	while (is_name_char(p[n], n == 0))
		n++;
	return n;
}

static struct family *family_find(struct exposition *e, const char *name, size_t len)
{
	for (size_t i = 0; i < e->family_count; i++) {
		if (strlen(e->families[i].name) == len &&
		    memcmp(e->families[i].name, name, len) == 0)
			return &e->families[i];
	}
	return NULL;
}

/* "# HELP name text" or "# TYPE name type". */
static void parse_comment(struct exposition *e, const char *line)
{
	bool help = strncmp(line, "# HELP ", 7) == 0;
	bool type = strncmp(line, "# TYPE ", 7) == 0;

	if (!help && !type)
		return; /* any other comment is allowed and ignored */
	const char *name = line + 7;
	size_t len = read_name(name);
	assert_true(len > 0);
	assert_int_equal(name[len], ' ');
	struct family *family = family_find(e, name, len);
	if (help) {
		assert_null(family); /* HELP first, once per family */
		assert_true(e->family_count < ARRAY_SIZE(e->families));
		family = &e->families[e->family_count++];
		memcpy(family->name, name, len);
		family->has_help = true;
		assert_true(strlen(name + len + 1) > 0);
		return;
	}
	assert_non_null(family);
	assert_string_equal(family->type, ""); /* one TYPE per family */
	const char *kind = name + len + 1;
	if (strcmp(kind, "counter") != 0 && strcmp(kind, "gauge") != 0 &&
	    strcmp(kind, "histogram") != 0)
		fail_msg("unexpected type in %s", line);
	snprintf(family->type, sizeof(family->type), "%s", kind);
}

/* Checks {a="x",b="y"} at *p and moves past it; copies the labels other than le to labels_r and
 * le's value to le_r (empty if none). */
static const char *parse_labels(const char *p, char *labels_r, size_t labels_size, char *le_r,
				size_t le_size)
{
	labels_r[0] = '\0';
	le_r[0] = '\0';
	if (*p != '{')
		return p;
	p++;
	while (*p != '}') {
		size_t len = read_name(p);
		assert_true(len > 0);
		assert_true(strncmp(p, "__", 2) != 0); /* reserved */
		bool is_le = len == 2 && strncmp(p, "le", 2) == 0;
		const char *name = p;
		p += len;
		assert_int_equal(*p, '=');
		assert_int_equal(p[1], '"');
		p += 2;
		const char *value = p;
		while (*p != '"') {
			assert_int_not_equal(*p, '\0');
			assert_int_not_equal(*p, '\n');
			if (*p == '\\') {
				assert_non_null(strchr("\\\"n", p[1]));
				p++;
			}
			p++;
		}
		size_t value_len = (size_t)(p - value);
		p++;
		if (is_le) {
			assert_true(value_len < le_size);
			memcpy(le_r, value, value_len);
			le_r[value_len] = '\0';
		} else {
			size_t used = strlen(labels_r);
			assert_true(used + len + value_len + 4 < labels_size);
			snprintf(labels_r + used, labels_size - used, "%.*s=\"%.*s\",", (int)len,
				 name, (int)value_len, value);
		}
		if (*p == ',')
			p++;
		else
			assert_int_equal(*p, '}');
	}
	return p + 1;
}

static double parse_value(const char *p)
{
	if (strcmp(p, "+Inf") == 0)
		return INFINITY;
	if (strcmp(p, "-Inf") == 0)
		return -INFINITY;
	if (strcmp(p, "NaN") == 0)
		return NAN;
	char *end;
	double value = strtod(p, &end);
	if (end == p || *end != '\0')
		fail_msg("bad sample value \"%s\"", p);
	return value;
}

/* A sample must belong to the family declared last (its group), with the suffixes its type
 * allows. Returns the family. */
static struct family *sample_family(struct exposition *e, const char *name, size_t len,
				    const char **suffix_r)
{
	assert_true(e->family_count > 0);
	struct family *family = &e->families[e->family_count - 1];
	size_t flen = strlen(family->name);

	assert_true(len >= flen);
	assert_memory_equal(name, family->name, flen);
	*suffix_r = "";
	if (strcmp(family->type, "histogram") == 0) {
		static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
		for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
			if (len - flen == strlen(suffixes[i]) &&
			    memcmp(name + flen, suffixes[i], len - flen) == 0)
				*suffix_r = suffixes[i];
		}
		if (**suffix_r == '\0')
			fail_msg("%.*s is not a sample of histogram %s", (int)len, name,
				 family->name);
	} else {
		assert_int_equal(len, flen);
	}
	return family;
}

static void check_histogram_sample(struct histogram_state *h, const char *suffix,
				   const char *labels, const char *le, double value)
{
	if (strcmp(suffix, "_bucket") == 0) {
		assert_true(le[0] != '\0');
		if (strcmp(h->labels, labels) != 0 || h->saw_inf) {
			/* a new series starts with its first bucket */
			snprintf(h->labels, sizeof(h->labels), "%s", labels);
			h->last_bucket = 0;
			h->saw_inf = false;
		}
		assert_true(value >= h->last_bucket); /* cumulative */
		h->last_bucket = value;
		if (strcmp(le, "+Inf") == 0) {
			h->saw_inf = true;
			h->inf_value = value;
		} else {
			(void)parse_value(le);
		}
		return;
	}
	assert_string_equal(le, "");
	assert_string_equal(h->labels, labels); /* _sum and _count follow their buckets */
	assert_true(h->saw_inf);
	if (strcmp(suffix, "_count") == 0)
		assert_true(value == h->inf_value);
	else
		assert_true(value >= 0);
}

static void parse_sample(struct exposition *e, struct histogram_state *h, const char *line)
{
	size_t len = read_name(line);
	char labels[512], le[32];
	const char *suffix;

	assert_true(len > 0);
	struct family *family = sample_family(e, line, len, &suffix);
	assert_string_not_equal(family->type, "");
	const char *p = parse_labels(line + len, labels, sizeof(labels), le, sizeof(le));
	assert_int_equal(*p, ' ');
	double value = parse_value(p + 1);
	if (strcmp(family->type, "counter") == 0)
		assert_true(value >= 0);
	if (strcmp(family->type, "histogram") == 0)
		check_histogram_sample(h, suffix, labels, le, value);
	else
		assert_string_equal(le, "");

	char *series = xstrndup(line, (size_t)(p - line));
	for (size_t i = 0; i < e->series_count; i++) {
		if (strcmp(e->series[i], series) == 0)
			fail_msg("duplicate series %s", series);
	}
	assert_true(e->series_count < ARRAY_SIZE(e->series));
	e->series[e->series_count++] = series;
	e->sample_count++;
}

/* Parses a whole exposition, failing the test on anything out of the format. */
static void parse_exposition(const char *text, struct exposition *e)
{
	struct histogram_state h = {.labels = ""};
	char *copy = xstrdup(text);
	char *saveptr = NULL;

	memset(e, 0, sizeof(*e));
	assert_true(strlen(text) > 0);
	assert_int_equal(text[strlen(text) - 1], '\n'); /* the last line ends too */
	assert_null(strstr(text, "\n\n"));
	for (char *line = strtok_r(copy, "\n", &saveptr); line != NULL;
	     line = strtok_r(NULL, "\n", &saveptr)) {
		if (line[0] == '#')
			parse_comment(e, line);
		else
			parse_sample(e, &h, line);
	}
	free(copy);
	for (size_t i = 0; i < e->family_count; i++) {
		assert_true(e->families[i].has_help);
		assert_string_not_equal(e->families[i].type, "");
	}
}

static void exposition_free(struct exposition *e)
{
	for (size_t i = 0; i < e->series_count; i++)
		free(e->series[i]);
}

/* Some of everything, so that rendering has non-zero values in every family. */
static void count_some_of_everything(void)
{
	struct metrics_command_timer timer = {0};

	metrics_session_open(METRICS_LISTENER_POP3);
	metrics_session_open(METRICS_LISTENER_POP3S);
	metrics_session_login(METRICS_LISTENER_POP3S);
	metrics_count_login("PLAIN", METRICS_LOGIN_OK);
	metrics_count_login("USER", METRICS_LOGIN_FAILED);
	for (int i = 0; i < 3; i++) {
		metrics_command_start(&timer, "RETR");
		metrics_command_finish(&timer);
	}
	metrics_command_start(&timer, "XYZZY");
	metrics_command_finish(&timer);
	metrics_count_bytes_sent(1000);
	metrics_count_bytes_received(50);
	metrics_count_retrieved();
	metrics_count_deleted(2);
	metrics_count_lock_conflict();
	metrics_count_error_reply("[IN-USE] Mailbox is locked");
	metrics_count_tls_handshake(true, "TLSv1.3");
	metrics_count_delivery(METRICS_DELIVERY_DELIVERED, 4096);
	metrics_count_auth_penalty();
	metrics_count_auth_ban();
}

/* ---- tests ---- */

static void test_render_is_valid_exposition(void **state)
{
	struct metrics *metrics = metrics_create(4);
	int slot = metrics_slot_claim(metrics, "pop3");

	assert_int_equal(slot, 0);
	metrics_attach(metrics, slot);
	count_some_of_everything();
	char *text = render(metrics);
	struct exposition e;
	parse_exposition(text, &e);

	static const char *const expected[] = {"buzon_start_time_seconds",
					       "buzon_processes",
					       "buzon_build_info",
					       "buzon_pop3_sessions",
					       "buzon_pop3_connections_total",
					       "buzon_pop3_logins_total",
					       "buzon_pop3_commands_total",
					       "buzon_pop3_command_duration_seconds",
					       "buzon_pop3_sent_bytes_total",
					       "buzon_pop3_received_bytes_total",
					       "buzon_pop3_retrieved_messages_total",
					       "buzon_pop3_deleted_messages_total",
					       "buzon_pop3_lock_conflicts_total",
					       "buzon_pop3_error_replies_total",
					       "buzon_tls_handshakes_total",
					       "buzon_lmtp_deliveries_total",
					       "buzon_lmtp_delivered_bytes_total",
					       "buzon_auth_penalties_total",
					       "buzon_auth_bans_total"};
	assert_int_equal(e.family_count, ARRAY_SIZE(expected));
	for (size_t i = 0; i < ARRAY_SIZE(expected); i++) {
		if (family_find(&e, expected[i], strlen(expected[i])) == NULL)
			fail_msg("family %s missing", expected[i]);
	}
	assert_true(e.sample_count > 300);
	assert_true(sample_value(text, "buzon_build_info{version=\"" BUZON_VERSION "\"}") == 1);
	double start = sample_value(text, "buzon_start_time_seconds");
	assert_true(start > (double)time(NULL) - 60 && start <= (double)time(NULL));
	exposition_free(&e);
	free(text);
	metrics_attach(metrics, -1);
	metrics_destroy(&metrics);
	assert_null(metrics);
}

static void test_each_call_counts_its_series(void **state)
{
	struct metrics *metrics = metrics_create(2);

	metrics_attach(metrics, metrics_slot_claim(metrics, "pop3"));
	count_some_of_everything();
	metrics_session_close(METRICS_LISTENER_POP3, false);
	metrics_count_login("SCRAM-SHA-256-PLUS", METRICS_LOGIN_ABORTED);
	metrics_count_login("NOT-A-MECH", METRICS_LOGIN_OK); /* not counted anywhere */
	metrics_count_error_reply("-ERR [SYS/TEMP] try later");
	metrics_count_error_reply("No such message");
	metrics_count_error_reply("[SYS/PERM] gone");
	metrics_count_error_reply("[XYZ] an unknown code");
	metrics_count_error_reply("[unterminated");
	metrics_count_tls_handshake(false, "unknown");
	metrics_count_tls_handshake(false, NULL);
	metrics_count_tls_handshake(true, "TLSv1.2");
	metrics_count_tls_handshake(true, "TLSv1.1");
	metrics_count_delivery(METRICS_DELIVERY_TEMPFAIL, 999);
	char *text = render(metrics);

#define EXPECT(series, value) assert_true(sample_value(text, series) == (value))
	EXPECT("buzon_pop3_sessions{listener=\"pop3\",state=\"connected\"}", 0);
	EXPECT("buzon_pop3_sessions{listener=\"pop3s\",state=\"connected\"}", 0);
	EXPECT("buzon_pop3_sessions{listener=\"pop3s\",state=\"authenticated\"}", 1);
	EXPECT("buzon_pop3_connections_total{listener=\"pop3\"}", 1);
	EXPECT("buzon_pop3_connections_total{listener=\"pop3s\"}", 1);
	EXPECT("buzon_pop3_connections_total{listener=\"pop3_proxy\"}", 0);
	EXPECT("buzon_pop3_logins_total{mechanism=\"PLAIN\",result=\"ok\"}", 1);
	EXPECT("buzon_pop3_logins_total{mechanism=\"USER\",result=\"failed\"}", 1);
	EXPECT("buzon_pop3_logins_total{mechanism=\"SCRAM-SHA-256-PLUS\",result=\"aborted\"}", 1);
	EXPECT("buzon_pop3_commands_total{command=\"RETR\"}", 3);
	EXPECT("buzon_pop3_commands_total{command=\"unknown\"}", 1);
	EXPECT("buzon_pop3_commands_total{command=\"DELE\"}", 0);
	EXPECT("buzon_pop3_command_duration_seconds_count{command=\"RETR\"}", 3);
	EXPECT("buzon_pop3_command_duration_seconds_bucket{command=\"RETR\",le=\"+Inf\"}", 3);
	/* three back-to-back clock reads take far less than a second */
	EXPECT("buzon_pop3_command_duration_seconds_bucket{command=\"RETR\",le=\"1\"}", 3);
	assert_true(
	    sample_value(text, "buzon_pop3_command_duration_seconds_sum{command=\"RETR\"}") < 1);
	EXPECT("buzon_pop3_sent_bytes_total", 1000);
	EXPECT("buzon_pop3_received_bytes_total", 50);
	EXPECT("buzon_pop3_retrieved_messages_total", 1);
	EXPECT("buzon_pop3_deleted_messages_total", 2);
	EXPECT("buzon_pop3_lock_conflicts_total", 1);
	EXPECT("buzon_pop3_error_replies_total{code=\"IN-USE\"}", 1);
	EXPECT("buzon_pop3_error_replies_total{code=\"SYS/TEMP\"}", 1);
	EXPECT("buzon_pop3_error_replies_total{code=\"SYS/PERM\"}", 1);
	EXPECT("buzon_pop3_error_replies_total{code=\"other\"}", 1);
	EXPECT("buzon_pop3_error_replies_total{code=\"none\"}", 2);
	EXPECT("buzon_pop3_error_replies_total{code=\"AUTH\"}", 0);
	EXPECT("buzon_tls_handshakes_total{result=\"ok\",version=\"TLSv1.3\"}", 1);
	EXPECT("buzon_tls_handshakes_total{result=\"ok\",version=\"TLSv1.2\"}", 1);
	EXPECT("buzon_tls_handshakes_total{result=\"ok\",version=\"other\"}", 1);
	EXPECT("buzon_tls_handshakes_total{result=\"failed\",version=\"unknown\"}", 2);
	EXPECT("buzon_lmtp_deliveries_total{result=\"delivered\"}", 1);
	EXPECT("buzon_lmtp_deliveries_total{result=\"tempfail\"}", 1);
	EXPECT("buzon_lmtp_delivered_bytes_total", 4096); /* failed copies add no bytes */
	EXPECT("buzon_auth_penalties_total", 1);
	EXPECT("buzon_auth_bans_total", 1);
	EXPECT("buzon_processes{role=\"pop3\"}", 1);
	EXPECT("buzon_processes{role=\"auth\"}", 0);
#undef EXPECT

	/* the one sample of a mechanism that is not known went nowhere: the totals add up */
	struct exposition e;
	parse_exposition(text, &e);
	double logins = 0;
	for (size_t i = 0; i < e.series_count; i++) {
		if (strncmp(e.series[i], "buzon_pop3_logins_total{", 24) == 0)
			logins += sample_value(text, e.series[i]);
	}
	assert_true(logins == 3);
	exposition_free(&e);
	free(text);
	metrics_attach(metrics, -1);
	metrics_destroy(&metrics);
}

static void test_command_latency_lands_in_its_bucket(void **state)
{
	struct metrics *metrics = metrics_create(1);
	struct metrics_command_timer timer = {0};

	metrics_attach(metrics, metrics_slot_claim(metrics, "pop3"));
	metrics_command_start(&timer, "QUIT");
	struct timespec pause = {.tv_nsec = 30 * 1000 * 1000};
	nanosleep(&pause, NULL);
	metrics_command_finish(&timer);
	metrics_command_finish(&timer); /* a second finish has nothing to record */
	char *text = render(metrics);

	const char *q = "buzon_pop3_command_duration_seconds_bucket{command=\"QUIT\",le=";
	char series[160];
	snprintf(series, sizeof(series), "%s\"0.025\"}", q);
	assert_true(sample_value(text, series) == 0);
	snprintf(series, sizeof(series), "%s\"+Inf\"}", q);
	assert_true(sample_value(text, series) == 1);
	double sum =
	    sample_value(text, "buzon_pop3_command_duration_seconds_sum{command=\"QUIT\"}");
	assert_true(sum >= 0.030 && sum < 10);
	free(text);
	metrics_attach(metrics, -1);
	metrics_destroy(&metrics);
}

static void test_release_keeps_counters_and_drops_gauges(void **state)
{
	struct metrics *metrics = metrics_create(2);
	int first = metrics_slot_claim(metrics, "pop3");
	int second = metrics_slot_claim(metrics, "lmtp");

	assert_int_equal(metrics_slot_claim(metrics, "auth"), -1); /* full */
	metrics_attach(metrics, first);
	metrics_session_open(METRICS_LISTENER_POP3);
	metrics_count_bytes_sent(700);
	metrics_attach(metrics, second);
	metrics_count_delivery(METRICS_DELIVERY_DELIVERED, 10);
	metrics_attach(metrics, -1);
	assert_true(value_of(metrics, "buzon_processes{role=\"pop3\"}") == 1);
	assert_true(
	    value_of(metrics, "buzon_pop3_sessions{listener=\"pop3\",state=\"connected\"}") == 1);

	metrics_slot_release(metrics, first);
	metrics_slot_release(metrics, -1); /* a child that had no slot */
	assert_true(value_of(metrics, "buzon_processes{role=\"pop3\"}") == 0);
	assert_true(value_of(metrics, "buzon_processes{role=\"lmtp\"}") == 1);
	assert_true(value_of(metrics, "buzon_pop3_sent_bytes_total") == 700);
	assert_true(value_of(metrics, "buzon_pop3_connections_total{listener=\"pop3\"}") == 1);
	assert_true(
	    value_of(metrics, "buzon_pop3_sessions{listener=\"pop3\",state=\"connected\"}") == 0);

	/* the slot comes back empty to its next process, and the totals go on from the retired */
	int again = metrics_slot_claim(metrics, "auth");
	assert_int_equal(again, first);
	metrics_attach(metrics, again);
	metrics_count_bytes_sent(5);
	metrics_count_auth_ban();
	metrics_attach(metrics, -1);
	assert_true(value_of(metrics, "buzon_pop3_sent_bytes_total") == 705);
	assert_true(value_of(metrics, "buzon_auth_bans_total") == 1);
	metrics_slot_release(metrics, again);
	metrics_slot_release(metrics, second);
	assert_true(value_of(metrics, "buzon_pop3_sent_bytes_total") == 705);
	assert_true(value_of(metrics, "buzon_lmtp_delivered_bytes_total") == 10);
	assert_true(value_of(metrics, "buzon_processes{role=\"lmtp\"}") == 0);
	metrics_destroy(&metrics);
}

/* A forked child writes its slot; the parent sees the values live and after the release. */
static void test_child_writes_through_the_shared_mapping(void **state)
{
	struct metrics *metrics = metrics_create(3);
	int slot = metrics_slot_claim(metrics, "pop3");
	int ready[2];

	assert_int_equal(pipe(ready), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		metrics_attach(metrics, slot);
		metrics_session_open(METRICS_LISTENER_POP3S_PROXY);
		metrics_count_retrieved();
		metrics_count_retrieved();
		(void)!write(ready[1], "x", 1);
		pause(); /* holds its session until killed, like a worker */
		_exit(0);
	}
	char byte;
	assert_int_equal(read(ready[0], &byte, 1), 1);
	assert_true(value_of(metrics, "buzon_pop3_retrieved_messages_total") == 2);
	assert_true(value_of(metrics, "buzon_pop3_sessions{listener=\"pop3s_proxy\","
				      "state=\"connected\"}") == 1);
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	metrics_slot_release(metrics, slot);
	assert_true(value_of(metrics, "buzon_pop3_retrieved_messages_total") == 2);
	assert_true(value_of(metrics, "buzon_pop3_sessions{listener=\"pop3s_proxy\","
				      "state=\"connected\"}") == 0);
	close(ready[0]);
	close(ready[1]);
	metrics_destroy(&metrics);
}

/* Without a slot every call does nothing: before any attach, and after detaching. */
static void test_calls_without_a_slot_do_nothing(void **state)
{
	struct metrics *metrics = metrics_create(2);
	struct metrics_command_timer timer = {0};

	count_some_of_everything();
	(void)metrics_slot_claim(metrics, "pop3"); /* claimed but not attached here */
	metrics_attach(metrics, -1);
	count_some_of_everything();
	metrics_command_start(&timer, "STAT");
	assert_false(timer.running);
	metrics_command_finish(&timer);

	char *text = render(metrics);
	struct exposition e;
	parse_exposition(text, &e);
	for (size_t i = 0; i < e.series_count; i++) {
		const char *series = e.series[i];
		if (strncmp(series, "buzon_build_info", 16) == 0 ||
		    strncmp(series, "buzon_start_time_seconds", 24) == 0 ||
		    strcmp(series, "buzon_processes{role=\"pop3\"}") == 0)
			continue;
		if (sample_value(text, series) != 0)
			fail_msg("%s is not 0", series);
	}
	exposition_free(&e);
	free(text);
	metrics_destroy(&metrics);
}

/* Release cycles of the race test, and the pause between them: a real master releases a slot
 * when a child exits, rarely; one that released without pause would leave a reader no window
 * between releases (the renderer retries a bounded number of times, then takes what it read). */
#define RACE_CYCLES   10000
#define RACE_PAUSE_NS 10000

/* Waits without a system call, like the master between two reaped children (only shorter). */
static void race_pause(void)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	do
		clock_gettime(CLOCK_MONOTONIC, &now);
	while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) <
	       RACE_PAUSE_NS);
}

/* The reader's side of the race test: renders until the writer is done, checking every value.
 * Exit status 0 when all were possible ones, 1 when one was torn, 2 on the time limit. */
static int race_reader(const struct metrics *metrics, int done_fd)
{
	double last = 0;
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		double value = value_of(metrics, "buzon_pop3_sent_bytes_total");
		/* whole cycles, or one with its 1 added and its 1000 not yet */
		unsigned long long rest = (unsigned long long)value % 1001;
		if (value < last || (rest != 0 && rest != 1))
			return 1;
		last = value;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 20)
			return 2;
		fd_set set;
		FD_ZERO(&set);
		FD_SET(done_fd, &set);
		struct timeval zero = {0};
		char byte;
		if (select(done_fd + 1, &set, NULL, NULL, &zero) > 0 &&
		    read(done_fd, &byte, 1) == 0)
			break;
	}
	/* every release is done: all of it is in the retired totals */
	return value_of(metrics, "buzon_pop3_sent_bytes_total") == 1001.0 * RACE_CYCLES ? 0 : 3;
}

/* A reader that renders while the master keeps releasing slots must only ever see totals that
 * existed: a release seen half-way would count a slot twice or not at all. Each cycle adds 1 to a
 * short-lived slot, then 1000 to a long-lived one read before it, then releases the short-lived
 * one: a render that saw the 1000 but missed the released 1 (total = 1000 modulo 1001) caught a
 * release half-way. */
static void test_render_never_sees_a_release_half_way(void **state)
{
	struct metrics *metrics = metrics_create(2);
	int long_lived = metrics_slot_claim(metrics, "pop3");
	int done[2];

	assert_int_equal(long_lived, 0); /* rendered first */
	assert_int_equal(pipe(done), 0);
	pid_t reader = fork();
	assert_true(reader >= 0);
	if (reader == 0) {
		close(done[1]);
		_exit(race_reader(metrics, done[0]));
	}
	close(done[0]);
	for (int i = 0; i < RACE_CYCLES; i++) {
		int slot = metrics_slot_claim(metrics, "pop3");
		assert_int_equal(slot, 1);
		metrics_attach(metrics, slot);
		metrics_count_bytes_sent(1);
		metrics_attach(metrics, long_lived);
		metrics_count_bytes_sent(1000);
		metrics_attach(metrics, -1);
		metrics_slot_release(metrics, slot);
		race_pause();
	}
	close(done[1]);
	int status;
	assert_int_equal(waitpid(reader, &status, 0), reader);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	metrics_destroy(&metrics);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_render_is_valid_exposition),
	    cmocka_unit_test(test_each_call_counts_its_series),
	    cmocka_unit_test(test_command_latency_lands_in_its_bucket),
	    cmocka_unit_test(test_release_keeps_counters_and_drops_gauges),
	    cmocka_unit_test(test_child_writes_through_the_shared_mapping),
	    cmocka_unit_test(test_calls_without_a_slot_do_nothing),
	    cmocka_unit_test(test_render_never_sees_a_release_half_way),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

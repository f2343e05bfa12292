/* Unit tests for the RETR/TOP encoder: expected bytes for tricky messages, and the same output
 * whatever the chunking (every split point, and byte by byte). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "pop3/dotstuff.h"

/* Encoded output as a NUL-terminated string the caller frees. */
struct encoded {
	char *data;
	size_t len;
	bool limit_reached; /* some feed() returned true */
};

static struct encoded encoded_take(struct evbuffer *out, bool limit_reached)
{
	struct encoded enc;

	enc.len = evbuffer_get_length(out);
	enc.data = malloc(enc.len + 1);
	evbuffer_remove(out, enc.data, enc.len);
	enc.data[enc.len] = '\0';
	enc.limit_reached = limit_reached;
	evbuffer_free(out);
	return enc;
}

/* Feeds in as chunks of chunk bytes (0: one chunk). Like the session, stops feeding once feed()
 * says the limit is reached. */
static struct encoded encode_chunked(const char *in, size_t len, long top, size_t chunk)
{
	struct evbuffer *out = evbuffer_new();
	struct dotstuff ds;
	bool limit = false;

	dotstuff_init(&ds, top);
	if (chunk == 0)
		chunk = len;
	for (size_t off = 0; off < len && !limit; off += chunk)
		limit = dotstuff_feed(&ds, in + off, len - off < chunk ? len - off : chunk, out);
	dotstuff_finish(&ds, out);
	return encoded_take(out, limit);
}

/* Feeds in as two chunks split at split, without stopping at the limit: later feeds must add
 * nothing. */
static struct encoded encode_split(const char *in, size_t len, long top, size_t split)
{
	struct evbuffer *out = evbuffer_new();
	struct dotstuff ds;
	bool limit;

	dotstuff_init(&ds, top);
	limit = dotstuff_feed(&ds, in, split, out);
	limit = dotstuff_feed(&ds, in + split, len - split, out) || limit;
	dotstuff_finish(&ds, out);
	return encoded_take(out, limit);
}

/* Checks that in encodes to expected as one chunk, at every split point, and byte by byte. */
static void check_encoding(const char *in, long top, const char *expected)
{
	size_t len = strlen(in);
	struct encoded whole = encode_chunked(in, len, top, 0);

	assert_string_equal(whole.data, expected);
	assert_int_equal(whole.len, strlen(expected));
	for (size_t split = 0; split <= len; split++) {
		struct encoded part = encode_split(in, len, top, split);
		assert_string_equal(part.data, expected);
		free(part.data);
	}
	struct encoded bytes = encode_chunked(in, len, top, 1);
	assert_string_equal(bytes.data, expected);
	free(bytes.data);
	free(whole.data);
}

static void test_retr_plain_crlf(void **state)
{
	check_encoding("Subject: x\r\n\r\nbody\r\n", -1, "Subject: x\r\n\r\nbody\r\n.\r\n");
}

static void test_retr_bare_lf(void **state)
{
	check_encoding("Subject: x\n\nbody\nmore\n", -1, "Subject: x\r\n\r\nbody\r\nmore\r\n.\r\n");
}

static void test_retr_mixed_line_ends(void **state)
{
	check_encoding("a\r\nb\nc\r\n\nd", -1, "a\r\nb\r\nc\r\n\r\nd\r\n.\r\n");
}

static void test_retr_dot_lines(void **state)
{
	check_encoding(".\n..\n.x\nx.\n.\r\n", -1, "..\r\n...\r\n..x\r\nx.\r\n..\r\n.\r\n");
	check_encoding("a\n.", -1, "a\r\n..\r\n.\r\n");
	check_encoding(".", -1, "..\r\n.\r\n");
	check_encoding("\n.\n", -1, "\r\n..\r\n.\r\n");
}

static void test_retr_lone_cr(void **state)
{
	/* A lone CR is line content: passed through, and a '.' after it is not at line start. */
	check_encoding("a\rb\r\n", -1, "a\rb\r\n.\r\n");
	check_encoding("\r.x\n", -1, "\r.x\r\n.\r\n");
	check_encoding("a\r\r\nb\n", -1, "a\r\r\nb\r\n.\r\n");
	check_encoding("a\r", -1, "a\r\r\n.\r\n");
	check_encoding("\r", -1, "\r\r\n.\r\n");
	check_encoding("\r\r", -1, "\r\r\r\n.\r\n");
}

static void test_retr_no_final_newline(void **state)
{
	check_encoding("Subject: x\n\nlast", -1, "Subject: x\r\n\r\nlast\r\n.\r\n");
}

static void test_retr_empty(void **state)
{
	check_encoding("", -1, ".\r\n");
	check_encoding("\n", -1, "\r\n.\r\n");
	check_encoding("\r\n", -1, "\r\n.\r\n");
}

static void test_retr_large_run(void **state)
{
	/* Runs longer than the encoder's batch buffer go straight through. */
	size_t len = 100000;
	char *in = malloc(len + 1), *expected = malloc(len + 16);

	memset(in, 'x', len);
	in[0] = '.';
	in[len / 2] = '\n';
	in[len] = '\0';
	expected[0] = '.';
	memcpy(expected + 1, in, len / 2);
	memcpy(expected + 1 + len / 2, "\r\n", 2);
	memcpy(expected + 3 + len / 2, in + len / 2 + 1, len - len / 2 - 1);
	strcpy(expected + 2 + len, "\r\n.\r\n");
	struct encoded whole = encode_chunked(in, len, -1, 0);
	assert_int_equal(whole.len, strlen(expected));
	assert_memory_equal(whole.data, expected, whole.len);
	struct encoded chunks = encode_chunked(in, len, -1, 4093);
	assert_memory_equal(chunks.data, expected, chunks.len);
	free(whole.data);
	free(chunks.data);
	free(in);
	free(expected);
}

static const char top_msg[] = "From: a\nSubject: b\n\nline1\n.line2\nline3\n";

static void test_top_zero(void **state)
{
	check_encoding(top_msg, 0, "From: a\r\nSubject: b\r\n\r\n.\r\n");
	struct encoded enc = encode_chunked(top_msg, strlen(top_msg), 0, 0);
	assert_true(enc.limit_reached);
	free(enc.data);
}

static void test_top_n(void **state)
{
	check_encoding(top_msg, 1, "From: a\r\nSubject: b\r\n\r\nline1\r\n.\r\n");
	check_encoding(top_msg, 2, "From: a\r\nSubject: b\r\n\r\nline1\r\n..line2\r\n.\r\n");
	struct encoded enc = encode_chunked(top_msg, strlen(top_msg), 2, 0);
	assert_true(enc.limit_reached);
	free(enc.data);
}

static void test_top_larger_than_body(void **state)
{
	const char *all = "From: a\r\nSubject: b\r\n\r\nline1\r\n..line2\r\nline3\r\n.\r\n";

	check_encoding(top_msg, 3, all);
	check_encoding(top_msg, 100, all);
	check_encoding("H: 1\n\nno newline", 5, "H: 1\r\n\r\nno newline\r\n.\r\n");
	struct encoded enc = encode_chunked(top_msg, strlen(top_msg), 100, 0);
	assert_false(enc.limit_reached);
	free(enc.data);
}

static void test_top_no_blank_line(void **state)
{
	check_encoding("From: a\nSubject: b\n", 0, "From: a\r\nSubject: b\r\n.\r\n");
	check_encoding("From: a\nSubject: b", 2, "From: a\r\nSubject: b\r\n.\r\n");
}

static void test_top_crlf_blank_line(void **state)
{
	const char *msg = "From: a\r\n\r\nbody1\r\nbody2\r\n";

	check_encoding(msg, 0, "From: a\r\n\r\n.\r\n");
	check_encoding(msg, 1, "From: a\r\n\r\nbody1\r\n.\r\n");
}

static void test_top_cr_line_is_not_blank(void **state)
{
	/* A line holding a lone CR before its LF has content: it is a header line, not the end. */
	check_encoding("A: 1\n\r\r\nB: 2\n\nbody\n", 0, "A: 1\r\n\r\r\nB: 2\r\n\r\n.\r\n");
	check_encoding("A: 1\n \nbody\n\nx\n", 0, "A: 1\r\n \r\nbody\r\n\r\n.\r\n");
}

static void test_top_empty_headers(void **state)
{
	check_encoding("\nbody\nmore\n", 0, "\r\n.\r\n");
	check_encoding("\nbody\nmore\n", 1, "\r\nbody\r\n.\r\n");
	check_encoding("", 0, ".\r\n");
}

static void test_top_dot_in_headers_and_body(void **state)
{
	check_encoding(".H: 1\n\n.\n..\n", 1, "..H: 1\r\n\r\n..\r\n.\r\n");
}

/* The size the store reports: octets plus one per LF not preceded by CR. */
static size_t store_size_of(const char *in, size_t len)
{
	size_t size = len;

	for (size_t i = 0; i < len; i++)
		size += in[i] == '\n' && (i == 0 || in[i - 1] != '\r');
	return size;
}

/* Counts the stuffed dots in RETR output: lines of the output that begin with "..". */
static size_t stuffed_dots_in(const char *out, size_t len)
{
	size_t dots = 0;

	for (size_t i = 0; i + 1 < len; i++) {
		bool line_start = i == 0 || (out[i - 1] == '\n' && i >= 2 && out[i - 2] == '\r');
		dots += line_start && out[i] == '.' && out[i + 1] == '.';
	}
	return dots;
}

static void test_random_inputs(void **state)
{
	static const char alphabet[] = {'\r', '\n', '.', 'a'};
	uint32_t seed = 12345;
	char in[24];

	for (int round = 0; round < 3000; round++) {
		size_t len = (size_t)(round % (int)sizeof(in));
		for (size_t i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			in[i] = alphabet[(seed >> 16) & 3];
		}
		long top = round % 3 == 0 ? -1 : (long)(round % 4);
		struct encoded whole = encode_chunked(in, len, top, 0);
		for (size_t split = 0; split <= len; split++) {
			struct encoded part = encode_split(in, len, top, split);
			assert_int_equal(part.len, whole.len);
			assert_memory_equal(part.data, whole.data, whole.len);
			free(part.data);
		}
		struct encoded bytes = encode_chunked(in, len, top, 1);
		assert_int_equal(bytes.len, whole.len);
		assert_memory_equal(bytes.data, whole.data, whole.len);
		free(bytes.data);
		if (top < 0) {
			/* Output = size + stuffing + a CRLF if the message lacked a final LF +
			 * ".\r\n" */
			bool ends_lf = len == 0 || in[len - 1] == '\n';
			size_t expected = store_size_of(in, len) +
					  stuffed_dots_in(whole.data, whole.len) +
					  (ends_lf ? 0 : 2) + 3;
			assert_int_equal(whole.len, expected);
		}
		free(whole.data);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_retr_plain_crlf),
	    cmocka_unit_test(test_retr_bare_lf),
	    cmocka_unit_test(test_retr_mixed_line_ends),
	    cmocka_unit_test(test_retr_dot_lines),
	    cmocka_unit_test(test_retr_lone_cr),
	    cmocka_unit_test(test_retr_no_final_newline),
	    cmocka_unit_test(test_retr_empty),
	    cmocka_unit_test(test_retr_large_run),
	    cmocka_unit_test(test_top_zero),
	    cmocka_unit_test(test_top_n),
	    cmocka_unit_test(test_top_larger_than_body),
	    cmocka_unit_test(test_top_no_blank_line),
	    cmocka_unit_test(test_top_crlf_blank_line),
	    cmocka_unit_test(test_top_cr_line_is_not_blank),
	    cmocka_unit_test(test_top_empty_headers),
	    cmocka_unit_test(test_top_dot_in_headers_and_body),
	    cmocka_unit_test(test_random_inputs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Fuzzes the LMTP message-text readers (DATA and BDAT in src/lmtp/lmtp_session.c) and the delivery
 * behind them, through a real session (fuzz_lmtp.h) that first gets a fixed transaction:
 * LHLO, MAIL FROM:<s@example.org>, RCPT TO:<alice@example.org>.
 *
 * Input: byte 0 picks the mode, byte 1 seeds chunk sizes, the rest is the message M.
 *   mode % 3 == 0: "DATA" and then M as raw wire bytes (the fuzzer supplies stuffing and the end);
 *   mode % 3 == 1: DATA with M sent as a client must: each line CRLF-terminated, leading dots
 *                  doubled, then ".";
 *   mode % 3 == 2: BDAT chunks of M of random sizes, the last one with LAST.
 * In modes 1 and 2 the stored message must be M with CRLF (and, for DATA, any line end) turned
 * into LF and a final LF added if missing, after the Return-Path and Delivered-To headers; in every
 * mode a delivered file's name must carry S= (its size) and W= (its size as POP3 sends it, every
 * bare LF counted as two octets). Chunks are sent in separate writes, so that the session sees a
 * CR and its LF in different reads. */
#include <inttypes.h>

#include "fuzz_lmtp.h"

#define PREAMBLE "LHLO fuzz\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.org>\r\n"
#define HEADERS	 "Return-Path: <s@example.org>\nDelivered-To: alice@example.org\n"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_lmtp_init("lmtpdata");
	fuzz_lmtp_self_test();
	return 0;
}

/* The client's side of the connection, built up in pieces. */
struct wire {
	struct evbuffer *parts[4096];
	size_t count;
};

static void wire_add(struct wire *w, const void *data, size_t len)
{
	if (w->count == sizeof(w->parts) / sizeof(w->parts[0])) {
		evbuffer_add(w->parts[w->count - 1], data, len);
		return;
	}
	w->parts[w->count] = evbuffer_new();
	evbuffer_add(w->parts[w->count], data, len);
	w->count++;
}

/* DATA as a client sends it: every line of M ends in CRLF, a leading dot is doubled. */
static void wire_data_encoded(struct wire *w, const uint8_t *m, size_t len)
{
	struct evbuffer *text = evbuffer_new();
	size_t pos = 0;

	while (pos < len) {
		const uint8_t *lf = memchr(m + pos, '\n', len - pos);
		size_t line_len = lf != NULL ? (size_t)(lf - (m + pos)) : len - pos;
		size_t next = pos + line_len + (lf != NULL);
		if (lf != NULL && line_len > 0 && m[pos + line_len - 1] == '\r')
			line_len--;
		if (line_len > 0 && m[pos] == '.')
			evbuffer_add(text, ".", 1);
		evbuffer_add(text, m + pos, line_len);
		evbuffer_add(text, "\r\n", 2);
		pos = next;
	}
	evbuffer_add(text, ".\r\n", 3);
	size_t text_len = evbuffer_get_length(text);
	wire_add(w, evbuffer_pullup(text, -1), text_len);
	evbuffer_free(text);
}

/* What DATA (encoded) stores: the lines of M, each ending in LF. */
static struct evbuffer *expected_data(const uint8_t *m, size_t len)
{
	struct evbuffer *out = evbuffer_new();
	size_t pos = 0;

	while (pos < len) {
		const uint8_t *lf = memchr(m + pos, '\n', len - pos);
		size_t line_len = lf != NULL ? (size_t)(lf - (m + pos)) : len - pos;
		size_t next = pos + line_len + (lf != NULL);
		if (lf != NULL && line_len > 0 && m[pos + line_len - 1] == '\r')
			line_len--;
		evbuffer_add(out, m + pos, line_len);
		evbuffer_add(out, "\n", 1);
		pos = next;
	}
	return out;
}

/* What BDAT stores: M with each CRLF turned into LF, and a final LF if M does not end in one. */
static struct evbuffer *expected_bdat(const uint8_t *m, size_t len)
{
	struct evbuffer *out = evbuffer_new();

	for (size_t i = 0; i < len; i++) {
		if (m[i] == '\r' && i + 1 < len && m[i + 1] == '\n')
			continue;
		evbuffer_add(out, m + i, 1);
	}
	size_t out_len = evbuffer_get_length(out);
	if (out_len > 0 && evbuffer_pullup(out, -1)[out_len - 1] != '\n')
		evbuffer_add(out, "\n", 1);
	return out;
}

static void wire_bdat(struct wire *w, const uint8_t *m, size_t len, uint32_t chunk_state)
{
	size_t pos = 0;
	char command[64];

	do {
		size_t chunk = len - pos == 0 ? 0 : fuzz_chunk_len(&chunk_state, len - pos, 48);
		bool last = pos + chunk == len;
		snprintf(command, sizeof(command), "BDAT %zu%s\r\n", chunk, last ? " LAST" : "");
		wire_add(w, command, strlen(command));
		if (chunk > 0)
			wire_add(w, m + pos, chunk);
		pos += chunk;
	} while (pos < len);
}

/* A delivered file: its name's sizes, and its text if one is expected. */
static void check_file(void *context, const char *name, const char *text, size_t len)
{
	struct evbuffer *expected = context;
	uint64_t bare_lf = 0;
	char sizes[64];

	if (expected != NULL) {
		size_t headers = strlen(HEADERS), want = evbuffer_get_length(expected);
		FUZZ_CHECK(len == headers + want && memcmp(text, HEADERS, headers) == 0);
		FUZZ_CHECK(want == 0 ||
			   memcmp(text + headers, evbuffer_pullup(expected, -1), want) == 0);
	}
	for (size_t i = 0; i < len; i++)
		bare_lf += text[i] == '\n' && (i == 0 || text[i - 1] != '\r');
	snprintf(sizes, sizeof(sizes), ",S=%zu,W=%" PRIu64, len, len + bare_lf);
	FUZZ_CHECK(strstr(name, sizes) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = {data, size};
	uint8_t mode = fuzz_take_byte(&in, 0) % 3;
	uint32_t chunk_state = fuzz_take_byte(&in, 0);
	struct wire w = {.count = 0};
	struct evbuffer *expected = NULL;

	wire_add(&w, PREAMBLE, strlen(PREAMBLE));
	if (mode == 0) {
		wire_add(&w, "DATA\r\n", 6);
		for (size_t pos = 0; pos < in.len;) {
			size_t chunk = fuzz_chunk_len(&chunk_state, in.len - pos, 64);
			wire_add(&w, in.data + pos, chunk);
			pos += chunk;
		}
	} else if (mode == 1) {
		wire_add(&w, "DATA\r\n", 6);
		wire_data_encoded(&w, in.data, in.len);
		expected = expected_data(in.data, in.len);
	} else {
		wire_bdat(&w, in.data, in.len, chunk_state);
		expected = expected_bdat(in.data, in.len);
	}

	const void *parts[sizeof(w.parts) / sizeof(w.parts[0])];
	size_t lens[sizeof(w.parts) / sizeof(w.parts[0])];
	for (size_t i = 0; i < w.count; i++) {
		lens[i] = evbuffer_get_length(w.parts[i]);
		parts[i] = evbuffer_pullup(w.parts[i], -1);
	}
	fuzz_lmtp_run(parts, lens, w.count);
	size_t delivered = fuzz_lmtp_delivered("alice", check_file, expected);
	if (expected != NULL)
		FUZZ_CHECK(delivered == 1);
	fuzz_lmtp_end();
	for (size_t i = 0; i < w.count; i++)
		evbuffer_free(w.parts[i]);
	if (expected != NULL)
		evbuffer_free(expected);
	return 0;
}

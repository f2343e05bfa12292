/* Fuzzes the RETR/TOP encoder (src/pop3/dotstuff.c), fed in chunks of random sizes, against a
 * reference written the slow, obvious way: what a client gets after undoing the dot-stuffing must
 * be the message with bare LF turned into CRLF and a final CRLF added where it was missing, cut
 * after the header/body separator plus N body lines for TOP; no line of the body may read as the
 * terminating "."; and the octets before stuffing must be the size the store announces (octets
 * plus one per bare LF).
 *
 * Input: byte 0 chooses RETR (< 128) or TOP with (byte - 128) % 16 body lines; byte 1 seeds the
 * chunk sizes; the rest is the message file. */
#include <event2/buffer.h>

#include "fuzz_common.h"
#include "pop3/dotstuff.h"

/* The message as the client must receive it (before stuffing), and where each line starts. */
struct reference {
	char *text;
	size_t len;
	size_t *line_starts; /* line_count + 1 entries: the last is len */
	size_t line_count;
};

/* Bare LF becomes CRLF, a lone CR stays, and a non-empty message gets a final line end. */
static void reference_build(const uint8_t *msg, size_t len, struct reference *ref)
{
	ref->text = xmalloc(2 * len + 3);
	ref->line_starts = xmalloc((len + 2) * sizeof(size_t));
	ref->len = 0;
	ref->line_count = 0;
	bool line_open = false;
	for (size_t i = 0; i < len; i++) {
		if (!line_open)
			ref->line_starts[ref->line_count++] = ref->len;
		line_open = true;
		if (msg[i] == '\n') {
			if (i == 0 || msg[i - 1] != '\r')
				ref->text[ref->len++] = '\r';
			ref->text[ref->len++] = '\n';
			line_open = false;
		} else {
			ref->text[ref->len++] = (char)msg[i];
		}
	}
	if (line_open) {
		ref->text[ref->len++] = '\r';
		ref->text[ref->len++] = '\n';
	}
	ref->line_starts[ref->line_count] = ref->len;
}

/* How many lines TOP sends: every header line, the blank separator, then top_lines body lines. A
 * blank line has nothing but its CRLF (a lone CR is content). Without a separator: all of them. */
static size_t reference_top_lines(const struct reference *ref, long top_lines)
{
	for (size_t i = 0; i < ref->line_count; i++) {
		if (ref->line_starts[i + 1] - ref->line_starts[i] == 2) {
			size_t keep = i + 1 + (size_t)top_lines;
			return keep < ref->line_count ? keep : ref->line_count;
		}
	}
	return ref->line_count;
}

/* Undoes the stuffing of out (which must end with the terminator) like a client: splits at CRLF,
 * stops at the first line that is exactly ".", drops one leading dot of every other line. Returns
 * the unstuffed text; *stuffing_r counts the dots removed. */
static char *client_unstuff(const char *out, size_t len, size_t *text_len_r, size_t *stuffing_r)
{
	char *text = xmalloc(len + 1);
	size_t pos = 0, n = 0;

	*stuffing_r = 0;
	for (;;) {
		const char *line = out + pos;
		const char *crlf = memmem(line, len - pos, "\r\n", 2);
		FUZZ_CHECK(crlf != NULL); /* every line, the terminator included, ends in CRLF */
		size_t line_len = (size_t)(crlf - line);
		if (line_len == 1 && line[0] == '.') {
			FUZZ_CHECK(pos + 3 == len); /* the terminator is the very end */
			break;
		}
		if (line_len > 0 && line[0] == '.') {
			FUZZ_CHECK(line_len >= 2 &&
				   line[1] == '.'); /* a leading dot is always doubled */
			line++;
			line_len--;
			(*stuffing_r)++;
		}
		memcpy(text + n, line, line_len);
		memcpy(text + n + line_len, "\r\n", 2);
		n += line_len + 2;
		pos = (size_t)(crlf - out) + 2;
	}
	*text_len_r = n;
	return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = {data, size};
	uint8_t mode = fuzz_take_byte(&in, 0);
	uint32_t chunk_state = fuzz_take_byte(&in, 0);
	long top_lines = mode < 128 ? -1 : (mode - 128) % 16;
	struct evbuffer *out = evbuffer_new();
	struct dotstuff ds;
	bool done = false;

	dotstuff_init(&ds, top_lines);
	for (size_t pos = 0; pos < in.len;) {
		size_t len = fuzz_chunk_len(&chunk_state, in.len - pos, 64);
		size_t before = evbuffer_get_length(out);
		bool was_done = done;
		done = dotstuff_feed(&ds, (const char *)in.data + pos, len, out);
		if (was_done) /* once TOP's limit is reached nothing more comes out */
			FUZZ_CHECK(done && evbuffer_get_length(out) == before);
		pos += len;
	}
	dotstuff_finish(&ds, out);

	size_t out_len = evbuffer_get_length(out), text_len, stuffing;
	const char *out_text = (const char *)evbuffer_pullup(out, -1);
	char *text = client_unstuff(out_text, out_len, &text_len, &stuffing);
	struct reference ref;
	reference_build(in.data, in.len, &ref);
	size_t expected_len = ref.len;
	if (top_lines >= 0)
		expected_len = ref.line_starts[reference_top_lines(&ref, top_lines)];
	FUZZ_CHECK(text_len == expected_len && memcmp(text, ref.text, text_len) == 0);
	FUZZ_CHECK(out_len == text_len + stuffing + 3);
	if (top_lines < 0) {
		/* the store's size: every octet plus one per bare LF, without the CRLF that the
		 * encoder adds to a message whose last line has no end */
		size_t bare_lf = 0;
		for (size_t i = 0; i < in.len; i++)
			bare_lf += in.data[i] == '\n' && (i == 0 || in.data[i - 1] != '\r');
		bool added_end = in.len > 0 && in.data[in.len - 1] != '\n';
		FUZZ_CHECK(text_len == in.len + bare_lf + (added_end ? 2 : 0));
	}
	free(text);
	free(ref.text);
	free(ref.line_starts);
	evbuffer_free(out);
	return 0;
}
